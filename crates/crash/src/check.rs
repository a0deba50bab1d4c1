//! The checks after a kill (or after a server-fault load), on the store as
//! the next process finds it:
//!
//! 1. (the shared stream checker, `runstore_core::raw::check`) every stream holds
//!    each seq from 1 to its last exactly once, live or
//!    remembered by its compaction marker, with each id once, and
//!    `next_seq` is the last seq + 1;
//! 2. every acknowledged event is there at its acknowledged seq (live, or
//!    remembered by the marker); a sample is also asked through `seq_of`;
//! 3. every batch is stored whole or not at all;
//! 4. every acknowledged snapshot is readable and unchanged, unless prune
//!    was entitled to delete it: the stream then holds at least
//!    [`KEEP_LAST`] snapshots newer than it (prune deletes only snapshots
//!    outside the newest `KEEP_LAST`, so those newer ones survive it);
//! 5. a retry of a sample of acknowledged ids answers the original seq
//!    and stores nothing;
//! 6. `runstore verify` on the store is clean;
//! 7. no writer reported a broken promise, a hang, or an error it should
//!    not have had: with [`Mode::Kills`] none but a `Locked` while
//!    opening (the killed writer's lock being released), with
//!    [`Mode::Faults`] only retryable `Backend` errors, and each writer
//!    acknowledged writes after its last error (it recovered by itself);
//! 8. each tenant's feed (CONTRACT §29), where the backend has one, holds
//!    every record its streams hold exactly once, byte for byte, with
//!    positions that increase and each stream's events in seq order.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result};
use runstore::{
    EventId, EventLog as _, EventLogExt as _, EventRecord, FeedPosition, FeedRecord, ReadQuery,
    SnapshotStore as _, Store, StreamKey, Tenant, core::raw::check,
};
use runstore_conformance::support::rng::Rng;
use serde::Serialize;

use crate::{
    ack::{self, Line},
    workload::{self, KEEP_LAST},
};

/// Which errors a writer may report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Writers are killed; the store itself never fails.
    Kills,
    /// The server is killed under the writers; requests during the outage
    /// fail with retryable `Backend` errors.
    Faults,
}

/// What one check counted and found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Acknowledged events checked.
    pub acked_events: usize,
    /// Acknowledged snapshot puts checked.
    pub acked_snapshots: usize,
    /// Batches checked for atomicity.
    pub batches: usize,
    /// Retries the writers saw answered with the original seq.
    pub writer_retries: usize,
    /// Compaction and prune passes the writers finished.
    pub maintenance_passes: usize,
    /// Errors the writers reported (all allowed, or listed in `problems`).
    pub writer_errors: usize,
    /// The longest failed request, in ms.
    pub slowest_error_ms: u64,
    /// Requests that answered `Ok` after more than a second.
    pub slow_requests: usize,
    /// The longest of those, in ms.
    pub slowest_ok_ms: u64,
    /// Ids checked through `seq_of`.
    pub seq_of_checked: usize,
    /// Ids retried by the checker.
    pub retries_checked: usize,
    /// Feed records checked against the streams (0 where the backend has
    /// no feed).
    pub feed_records: usize,
    /// Acknowledged writes missing: must be 0.
    pub lost: usize,
    /// Everything found wrong, one line each.
    pub problems: Vec<String>,
}

/// How many ids the checker asks through `seq_of`, and retries, per check.
const SEQ_OF_SAMPLE: usize = 300;
const RETRY_SAMPLE: usize = 100;

/// Checks `store_url` against the acknowledgement files in `dir`; `recent`
/// names the files of the writers just stopped, whose ids are all asked
/// through `seq_of`. `verify` is the `runstore` binary to run.
pub async fn check(
    store_url: &str,
    dir: &Path,
    recent: &[String],
    mode: Mode,
    verify: &Path,
    seed: u64,
) -> Result<Report> {
    let lines = ack::read_all(dir)?;
    let mut report = Report::default();
    writer_lines(&lines, mode, &mut report);

    let store = open(store_url).await?;
    let mut rng = Rng::new(seed);
    let streams = read_streams(&store, &mut report).await?;

    let mut events = Vec::new();
    for (file, line) in &lines {
        match line {
            Line::Event { t, r, id, seq, .. } => {
                report.acked_events += 1;
                match streams.get(&(*t, *r)).and_then(|ids| ids.get(id)) {
                    Some(found) if found == seq => {}
                    found => {
                        report.lost += 1;
                        report.problems.push(format!(
                            "lost: event {id} of tenant {t} run-{r} was acknowledged at seq {seq}, the store has {found:?} ({file})"
                        ));
                    }
                }
                events.push((file.as_str(), *t, *r, id.as_str(), *seq));
            }
            Line::Batch { t, r, ids } => {
                report.batches += 1;
                let stored = streams.get(&(*t, *r));
                let present = ids
                    .iter()
                    .filter(|id| stored.is_some_and(|stored| stored.contains_key(*id)))
                    .count();
                if present != 0 && present != ids.len() {
                    report.problems.push(format!(
                        "torn batch: {present} of {} ids stored ({ids:?}, {file})",
                        ids.len()
                    ));
                }
            }
            _ => {}
        }
    }
    check_snapshots(&store, &lines, &mut report).await?;
    check_feed(&store, &mut report).await?;
    ask_seq_of(&store, &events, recent, &mut rng, &mut report).await?;
    retry(&store, &events, &mut rng, &mut report).await?;
    drop(store);
    run_verify(store_url, verify, &mut report)?;
    Ok(report)
}

/// Counts the writers' own lines and judges their errors.
fn writer_lines(lines: &[(String, Line)], mode: Mode, report: &mut Report) {
    // The last error and the last acknowledgement of each file.
    let mut last_error: HashMap<&str, u64> = HashMap::new();
    let mut last_ack: HashMap<&str, u64> = HashMap::new();
    for (file, line) in lines {
        match line {
            Line::Retry { .. } => report.writer_retries += 1,
            Line::Maintenance { .. } => report.maintenance_passes += 1,
            Line::Slow { ms, .. } => {
                report.slow_requests += 1;
                report.slowest_ok_ms = report.slowest_ok_ms.max(*ms);
            }
            Line::Bad { msg } => report.problems.push(format!("writer {file}: {msg}")),
            Line::Event { at, .. } => {
                last_ack.insert(file, *at);
            }
            Line::Error {
                op,
                kind,
                retryable,
                ms,
                msg,
                at,
            } => {
                report.writer_errors += 1;
                report.slowest_error_ms = report.slowest_error_ms.max(*ms);
                last_error.insert(file, *at);
                let allowed = match mode {
                    Mode::Kills => op == "open" && kind == "Locked",
                    Mode::Faults => kind == "Backend" && *retryable,
                };
                if !allowed {
                    report.problems.push(format!(
                        "writer {file}: {op} failed after {ms} ms with {kind} (retryable {retryable}): {msg}"
                    ));
                }
            }
            _ => {}
        }
    }
    if mode == Mode::Faults {
        for (file, failed_at) in last_error {
            if last_ack.get(file).is_none_or(|acked| acked < &failed_at) {
                report.problems.push(format!(
                    "writer {file} acknowledged nothing after its last error: it did not recover"
                ));
            }
        }
    }
}

/// Opens the store; a `Locked` answer (the killed writer's lock on its way
/// out) is retried for a few seconds.
async fn open(url: &str) -> Result<Store> {
    let mut tries = 0;
    loop {
        match runstore::open(url).await {
            Ok(store) => return Ok(store),
            Err(runstore::OpenError::Store(runstore::Error::Locked { .. })) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => return Err(err).with_context(|| format!("reopening {url}")),
        }
    }
}

type Streams = BTreeMap<(u8, usize), HashMap<String, u64>>;

/// Reads every stream of the workload; checks it with the shared stream
/// checker (gapless, unique ids, one sound marker, `next_seq` the last seq
/// + 1), and answers each stream's ids, live or compacted, with their seqs.
async fn read_streams(store: &Store, report: &mut Report) -> Result<Streams> {
    let mut streams = Streams::new();
    for (t, r, tenant, run) in workload::streams()? {
        let records = store
            .read(&tenant, &run, ReadQuery::all())
            .await
            .with_context(|| format!("reading tenant {t} run-{r}"))?;
        let key = StreamKey::new(tenant.clone(), run.clone());
        let checked = check::check_stream(&key, &records);
        let next = store.next_seq(&tenant, &run).await?;
        for problem in checked.problems.iter().chain(&checked.check_next_seq(next)) {
            let at = problem
                .seq
                .map(|seq| format!(" (seq {seq})"))
                .unwrap_or_default();
            report
                .problems
                .push(format!("tenant {t} run-{r}: {problem}{at}"));
        }
        streams.insert((t, r), checked.ids);
    }
    Ok(streams)
}

/// How long the feed may take to show what the streams hold (PostgreSQL
/// withholds records while an older transaction of the cluster is open,
/// for example a killed writer's until the server notices).
const FEED_SETTLE: Duration = Duration::from_secs(30);

/// Check 8: each tenant's feed against its streams.
async fn check_feed(store: &Store, report: &mut Report) -> Result<()> {
    let mut tenants: BTreeMap<u8, (Tenant, Vec<EventRecord>)> = BTreeMap::new();
    for (t, r, tenant, run) in workload::streams()? {
        let records = store
            .read(&tenant, &run, ReadQuery::all())
            .await
            .with_context(|| format!("reading tenant {t} run-{r}"))?;
        let entry = tenants
            .entry(t)
            .or_insert_with(|| (tenant.clone(), Vec::new()));
        entry.1.extend(records);
    }
    for (t, (tenant, stored)) in tenants {
        let deadline = tokio::time::Instant::now() + FEED_SETTLE;
        let feed = loop {
            let Some(feed) = whole_feed(store, &tenant).await? else {
                return Ok(());
            };
            if feed.len() >= stored.len() || tokio::time::Instant::now() > deadline {
                break feed;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        report.feed_records += feed.len();
        if feed
            .windows(2)
            .any(|pair| pair[0].position >= pair[1].position)
        {
            report
                .problems
                .push(format!("tenant {t}: feed positions do not increase"));
        }
        let mut runs: BTreeMap<String, Vec<&EventRecord>> = BTreeMap::new();
        for entry in &feed {
            let seqs = runs.entry(entry.record.run_id.to_string()).or_default();
            if !entry.record.is_compaction_marker()
                && seqs
                    .iter()
                    .rev()
                    .find(|record| !record.is_compaction_marker())
                    .is_some_and(|before| before.seq >= entry.record.seq)
            {
                report.problems.push(format!(
                    "tenant {t} {}: the feed gives seq {} after a later seq",
                    entry.record.run_id, entry.record.seq
                ));
            }
            seqs.push(&entry.record);
        }
        let mut fed: Vec<&EventRecord> = runs.into_values().flatten().collect();
        fed.sort_by(|a, b| (&a.run_id, a.seq).cmp(&(&b.run_id, b.seq)));
        let mut held: Vec<&EventRecord> = stored.iter().collect();
        held.sort_by(|a, b| (&a.run_id, a.seq).cmp(&(&b.run_id, b.seq)));
        if serde_json::to_string(&fed)? != serde_json::to_string(&held)? {
            report.problems.push(format!(
                "tenant {t}: the feed holds {} records, the streams {}, and they differ",
                fed.len(),
                held.len()
            ));
        }
    }
    Ok(())
}

/// Every record of `tenant`'s feed, or `None` where the backend has none.
async fn whole_feed(store: &Store, tenant: &Tenant) -> Result<Option<Vec<FeedRecord>>> {
    let mut feed = Vec::new();
    let mut after = FeedPosition::START;
    loop {
        let page = match store.read_feed(tenant, after, 1_000).await {
            Ok(page) => page,
            Err(runstore::Error::Unsupported { .. }) => return Ok(None),
            Err(err) => return Err(err).context("reading the feed"),
        };
        let done = page.len() < 1_000;
        if let Some(last) = page.last() {
            after = last.position;
        }
        feed.extend(page);
        if done {
            return Ok(Some(feed));
        }
    }
}

async fn check_snapshots(
    store: &Store,
    lines: &[(String, Line)],
    report: &mut Report,
) -> Result<()> {
    let mut stored = BTreeMap::new();
    for (t, r, tenant, run) in workload::streams()? {
        let list = store
            .list(&tenant, &run, None)
            .await
            .with_context(|| format!("listing snapshots of tenant {t} run-{r}"))?;
        stored.insert((t, r), list);
    }
    for (file, line) in lines {
        let Line::Snapshot {
            t,
            r,
            id,
            seq,
            created,
        } = line
        else {
            continue;
        };
        report.acked_snapshots += 1;
        let list = stored.get(&(*t, *r)).map_or(&[][..], Vec::as_slice);
        match list
            .iter()
            .find(|snapshot| snapshot.snapshot_id.as_str() == id)
        {
            Some(snapshot) => {
                let checkpoint_id = snapshot
                    .checkpoint
                    .as_ref()
                    .and_then(|checkpoint| checkpoint.get("id"))
                    .and_then(|id| id.as_str());
                if snapshot.seq != *seq
                    || snapshot.created_at_ms != *created
                    || checkpoint_id != Some(id.as_str())
                {
                    report.problems.push(format!(
                        "snapshot {id} of tenant {t} run-{r} reads back changed ({file})"
                    ));
                }
            }
            None => {
                let newer = list
                    .iter()
                    .filter(|snapshot| {
                        (
                            snapshot.seq,
                            snapshot.created_at_ms,
                            snapshot.snapshot_id.as_str(),
                        ) > (*seq, *created, id.as_str())
                    })
                    .count();
                if newer < KEEP_LAST {
                    report.lost += 1;
                    report.problems.push(format!(
                        "lost: snapshot {id} of tenant {t} run-{r} was acknowledged and is gone with only {newer} newer ({file})"
                    ));
                }
            }
        }
    }
    Ok(())
}

type Acked<'a> = (&'a str, u8, usize, &'a str, u64);

/// Every id of the `recent` files and a random sample of the rest, asked
/// through `seq_of`.
async fn ask_seq_of(
    store: &Store,
    events: &[Acked<'_>],
    recent: &[String],
    rng: &mut Rng,
    report: &mut Report,
) -> Result<()> {
    let mut chosen: Vec<&Acked<'_>> = events
        .iter()
        .filter(|(file, ..)| recent.iter().any(|recent| recent == file))
        .collect();
    if !events.is_empty() {
        for _ in 0..SEQ_OF_SAMPLE {
            chosen.push(&events[rng.index(events.len())]);
        }
    }
    for (file, t, r, id, seq) in chosen {
        let tenant = workload::tenant(*t)?;
        let run = workload::run(*r)?;
        let found = store.seq_of(&tenant, &run, &EventId::new(*id)?).await?;
        report.seq_of_checked += 1;
        if found != Some(*seq) {
            report.problems.push(format!(
                "seq_of({id}) of tenant {t} run-{r} answers {found:?}, acknowledged at {seq} ({file})"
            ));
        }
    }
    Ok(())
}

/// Retries a sample of acknowledged ids: each must answer its seq, stored
/// nothing.
async fn retry(
    store: &Store,
    events: &[Acked<'_>],
    rng: &mut Rng,
    report: &mut Report,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    for _ in 0..RETRY_SAMPLE {
        let (file, t, r, id, seq) = events[rng.index(events.len())];
        let tenant = workload::tenant(t)?;
        let run = workload::run(r)?;
        let event = workload::event(&tenant, &run, id, workload::now_ms())?;
        let outcome = store.append(&tenant, &event).await?;
        report.retries_checked += 1;
        if outcome.inserted || outcome.seq != seq {
            report.problems.push(format!(
                "retry of {id} (acknowledged at seq {seq}, {file}) answered seq {} inserted {}",
                outcome.seq, outcome.inserted
            ));
        }
    }
    Ok(())
}

/// `runstore verify --store URL`, which must exit 0.
fn run_verify(store_url: &str, verify: &Path, report: &mut Report) -> Result<()> {
    let output = Command::new(verify)
        .args(["verify", "--store", store_url])
        .output()
        .with_context(|| format!("running {}", verify.display()))?;
    if !output.status.success() {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stdout.lines().rev().take(5).collect();
        report.problems.push(format!(
            "runstore verify failed ({}): {} {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
            stderr.trim()
        ));
    }
    Ok(())
}
