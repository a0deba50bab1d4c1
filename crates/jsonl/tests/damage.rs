//! CONTRACT §17: damage to a store file is found, never hidden.
//!
//! A property test builds a store with several tenants, runs, batches,
//! imports, snapshots and compactions, closes it, damages one of its files
//! at a random byte (a few bytes overwritten with random values, or the file
//! truncated there) and reopens it. Either the open (or a read) answers
//! `Corrupt` naming the file and the line or byte offset, or the store reads
//! back every record the damage did not touch, unchanged and in its stream,
//! loses no record, and takes writes again. The one record-losing outcome
//! allowed is the torn tail repair: a truncation, or damage that leaves the
//! last line looking exactly like a write cut short, drops the last request
//! (a batch all or nothing, CONTRACT §4). Never a panic or another error.
//!
//! `RUNSTORE_PROPTEST_CASES` sets the number of cases (default 64).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use proptest::{prelude::*, sample::Index, test_runner::FileFailurePersistence};
use runstore_core::{
    Durability, Error, EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, RunStatus,
    SnapshotId, SnapshotRecord, SnapshotStore, StreamKey, Tenant,
};
use runstore_jsonl::{JsonlOptions, JsonlStore};
use serde_json::json;

const CASES_VAR: &str = "RUNSTORE_PROPTEST_CASES";
const DEFAULT_CASES: u32 = 64;

fn cases() -> u32 {
    std::env::var(CASES_VAR)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

fn tenant(n: u8) -> Tenant {
    match n {
        0 => Tenant::local(),
        1 => Tenant::new("acme", "prod", None).unwrap(),
        _ => Tenant::new("acme", "prod", Some(format!("d{n}"))).unwrap(),
    }
}

fn run(n: u8) -> RunId {
    RunId::new(format!("run-{n}")).unwrap()
}

/// One step that builds the store.
#[derive(Debug, Clone)]
enum Op {
    /// One event.
    Append { t: u8, r: u8 },
    /// A batch of `n` events, one request.
    Batch { t: u8, r: u8, n: u8 },
    /// A snapshot at the stream's last seq.
    Snapshot { t: u8, r: u8 },
    /// Compaction keeping the newest `keep` ms.
    Compact { keep: u8 },
    /// The stream, read back and imported under a new run of its tenant.
    Import { t: u8, r: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let (t, r) = (0u8..3, 0u8..3);
    prop_oneof![
        4 => (t.clone(), r.clone()).prop_map(|(t, r)| Op::Append { t, r }),
        3 => (t.clone(), r.clone(), 2u8..5).prop_map(|(t, r, n)| Op::Batch { t, r, n }),
        1 => (t.clone(), r.clone()).prop_map(|(t, r)| Op::Snapshot { t, r }),
        1 => (0u8..30).prop_map(|keep| Op::Compact { keep }),
        1 => (t, r).prop_map(|(t, r)| Op::Import { t, r }),
    ]
}

/// What the damage does at its offset.
#[derive(Debug, Clone)]
enum Harm {
    /// Overwrites these bytes (clipped at the end of the file).
    Overwrite(Vec<u8>),
    /// Cuts the file there.
    Truncate,
}

/// One case: the store's history, then where and how it is damaged.
#[derive(Debug, Clone)]
struct Case {
    ops: Vec<Op>,
    /// 0: `FORMAT`; 1-3: a snapshot file (the log if there is none); else
    /// the log.
    file: u8,
    which: Index,
    offset: Index,
    /// The offset counts back from the file's end, within its last eight
    /// bytes: where a torn tail and the last batch live.
    near_end: bool,
    harm: Harm,
}

fn case() -> impl Strategy<Value = Case> {
    let harm = prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 1..=4).prop_map(Harm::Overwrite),
        1 => Just(Harm::Truncate),
    ];
    (
        proptest::collection::vec(op(), 1..24),
        0u8..12,
        any::<Index>(),
        any::<Index>(),
        proptest::bool::weighted(0.25),
        harm,
    )
        .prop_map(|(ops, file, which, offset, near_end, harm)| Case {
            ops,
            file,
            which,
            offset,
            near_end,
            harm,
        })
}

fn options() -> JsonlOptions {
    JsonlOptions::default().with_durability(Durability::Relaxed)
}

/// Runs the history; every step must succeed.
async fn build(dir: &Path, ops: &[Op]) {
    let store = JsonlStore::open_with(dir, options()).await.unwrap();
    let mut clock = 0u64;
    let mut ids = 0u32;
    let mut imports = 0u32;
    let mut next_event = |t: &Tenant, r: &RunId, clock: &mut u64| {
        ids += 1;
        *clock += 1;
        EventRecord::new(
            t,
            r.clone(),
            EventId::new(format!("e{ids}")).unwrap(),
            "step",
            *clock,
        )
        .with_payload(json!({ "n": ids, "text": "a \"quoted\"\nline", "list": [1, 2.5, null] }))
    };
    for op in ops {
        match *op {
            Op::Append { t, r } => {
                let (t, r) = (tenant(t), run(r));
                let event = next_event(&t, &r, &mut clock);
                store.append(&t, &event).await.unwrap();
            }
            Op::Batch { t, r, n } => {
                let (t, r) = (tenant(t), run(r));
                let events: Vec<EventRecord> =
                    (0..n).map(|_| next_event(&t, &r, &mut clock)).collect();
                store.append_batch(&t, &r, &events, None).await.unwrap();
            }
            Op::Snapshot { t, r } => {
                let (t, r) = (tenant(t), run(r));
                clock += 1;
                let seq = store.next_seq(&t, &r).await.unwrap() - 1;
                let snapshot = SnapshotRecord::new(
                    &t,
                    r,
                    SnapshotId::new(format!("s{clock}")).unwrap(),
                    seq,
                    clock,
                    RunStatus::Running,
                )
                .with_checkpoint(json!({ "at": clock }));
                store.put(&t, &snapshot).await.unwrap();
            }
            Op::Compact { keep } => {
                let report = store.compact(u64::from(keep) + 1, clock).await.unwrap();
                assert!(report.is_clean(), "{:?}", report.failed);
            }
            Op::Import { t, r } => {
                let (t, r) = (tenant(t), run(r));
                let mut records = store.read(&t, &r, ReadQuery::all()).await.unwrap();
                if records.is_empty() {
                    continue;
                }
                imports += 1;
                let copy = RunId::new(format!("copy-{imports}")).unwrap();
                for record in &mut records {
                    record.run_id = copy.clone();
                }
                store.import_stream(&t, &copy, &records).await.unwrap();
            }
        }
    }
}

/// Everything a store holds, as its reads return it.
#[derive(Debug, Default, PartialEq)]
struct Contents {
    events: Vec<(StreamKey, EventRecord)>,
    snapshots: Vec<(StreamKey, SnapshotRecord)>,
}

/// Reads everything; a read error is returned as it is.
async fn contents(store: &JsonlStore) -> Result<Contents, Error> {
    let mut found = Contents::default();
    for stream in store.streams().await? {
        for record in store
            .read(&stream.tenant, &stream.run_id, ReadQuery::all())
            .await?
        {
            found.events.push((stream.clone(), record));
        }
    }
    for stream in store.snapshot_streams().await? {
        for snapshot in store.list(&stream.tenant, &stream.run_id, None).await? {
            found.snapshots.push((stream.clone(), snapshot));
        }
    }
    Ok(found)
}

/// One line of the undamaged log.
#[derive(Debug)]
struct Line {
    start: usize,
    /// Where its newline is.
    end: usize,
    /// Whether it closes its request (a batch's other lines start with a
    /// space).
    closes: bool,
    stream: StreamKey,
    record: EventRecord,
}

fn lines(log: &[u8]) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut start = 0;
    for end in memchr_all(log) {
        let bytes = &log[start..end];
        let mut record: EventRecord = serde_json::from_slice(bytes).unwrap();
        // The line's feed position is no part of the record reads answer.
        record.extra.remove("feed_position");
        let tenant = record.scope.tenant().unwrap();
        lines.push(Line {
            start,
            end,
            closes: bytes[0] != b' ',
            stream: StreamKey::new(tenant, record.run_id.clone()),
            record,
        });
        start = end + 1;
    }
    assert_eq!(start, log.len(), "a closed store's log ends with a newline");
    lines
}

fn memchr_all(bytes: &[u8]) -> Vec<usize> {
    bytes
        .iter()
        .enumerate()
        .filter(|(_, byte)| **byte == b'\n')
        .map(|(at, _)| at)
        .collect()
}

/// Whether a `Corrupt` location names `file` and a line or byte offset in
/// it.
fn names_log_position(location: &str, file: &Path) -> bool {
    let Some(rest) = location.strip_prefix(&*file.display().to_string()) else {
        return false;
    };
    let number = rest
        .strip_prefix(':')
        .or_else(|| rest.strip_prefix(" at byte "));
    number.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether the last line of `damaged`, which has no newline, is what a
/// write cut short leaves: up to its first NUL (space never written),
/// nothing or JSON that ends early.
fn looks_torn(damaged: &[u8]) -> bool {
    let last = damaged
        .iter()
        .rposition(|byte| *byte == b'\n')
        .map_or(damaged, |at| &damaged[at + 1..]);
    if last.is_empty() {
        return false;
    }
    let body = &last[..last
        .iter()
        .position(|byte| *byte == 0)
        .unwrap_or(last.len())];
    body.is_empty() || serde_json::from_slice::<serde_json::Value>(body).is_err_and(|e| e.is_eof())
}

/// The multiset of `(stream, record as JSON)`.
fn bag<'a>(
    events: impl IntoIterator<Item = (&'a StreamKey, &'a EventRecord)>,
) -> HashMap<String, usize> {
    let mut bag = HashMap::new();
    for (stream, record) in events {
        let key = format!("{stream} {}", serde_json::to_string(record).unwrap());
        *bag.entry(key).or_insert(0) += 1;
    }
    bag
}

/// Checks the store reopened after damage to the log at bytes `changed`
/// (ascending; a truncation changes everything from its offset on).
fn check_log_damage(
    original: &Contents,
    log_lines: &[Line],
    damaged: &[u8],
    changed: &[usize],
    truncated_at: Option<usize>,
    found: &Contents,
) {
    assert_eq!(found.snapshots, original.snapshots, "snapshots untouched");
    let touched = |line: &Line| {
        changed
            .iter()
            .any(|at| (line.start..=line.end).contains(at))
    };
    // The last request: the last line (a closed store's log ends with a
    // closing line) and the batch lines before it.
    assert!(log_lines.last().is_none_or(|line| line.closes));
    let mut last_request = log_lines.len().saturating_sub(1);
    while last_request > 0 && !log_lines[last_request - 1].closes {
        last_request -= 1;
    }
    if let Some(cut) = truncated_at {
        // A write cut short: exactly the requests whose closing record is
        // whole survive (its newline may be missing).
        let mut kept = Vec::new();
        let mut request = Vec::new();
        for line in log_lines {
            request.push(line);
            if line.closes {
                if line.end <= cut {
                    kept.append(&mut request);
                } else {
                    request.clear();
                }
            }
        }
        let expected = bag(kept.iter().map(|line| (&line.stream, &line.record)));
        let got = bag(found.events.iter().map(|(s, r)| (s, r)));
        assert_eq!(
            got, expected,
            "a truncation at byte {cut} keeps whole requests"
        );
        return;
    }
    let key = |line: &Line| {
        format!(
            "{} {}",
            line.stream,
            serde_json::to_string(&line.record).unwrap()
        )
    };
    let mut got = bag(found.events.iter().map(|(s, r)| (s, r)));
    // The torn tail repair may have dropped the last request whole, if the
    // damage left its last line looking like a write cut short.
    let torn_tail_dropped = looks_torn(damaged)
        && log_lines[last_request..]
            .iter()
            .filter(|line| !touched(line))
            .all(|line| !got.contains_key(&key(line)));
    let survivors = if torn_tail_dropped {
        &log_lines[..last_request]
    } else {
        log_lines
    };
    for line in survivors.iter().filter(|line| !touched(line)) {
        let present = match got.get_mut(&key(line)) {
            Some(count) if *count > 0 => {
                *count -= 1;
                true
            }
            _ => false,
        };
        assert!(
            present,
            "record {} of {} (line at byte {}) untouched by the damage at {changed:?} is missing \
             or changed",
            line.record.seq, line.stream, line.start
        );
    }
    let left: usize = got.values().sum();
    let damaged_records = survivors.iter().filter(|line| touched(line)).count();
    assert_eq!(
        left, damaged_records,
        "every damaged record is read back (changed or not), none lost: damage at {changed:?}"
    );
}

async fn run_case(case: Case) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    build(&dir, &case.ops).await;
    let original = {
        let store = JsonlStore::open_with(&dir, options()).await.unwrap();
        contents(&store).await.unwrap()
    };
    let log_path = dir.join("events.jsonl");
    let log = std::fs::read(&log_path).unwrap();
    let log_lines = lines(&log);

    let mut snapshot_files: Vec<PathBuf> = Vec::new();
    let mut pending = vec![dir.join("snapshots")];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                snapshot_files.push(path);
            }
        }
    }
    snapshot_files.sort();
    let target = match case.file {
        0 => dir.join("FORMAT"),
        1..=3 if !snapshot_files.is_empty() => case.which.get(&snapshot_files).clone(),
        _ => log_path.clone(),
    };
    let bytes = std::fs::read(&target).unwrap();
    if bytes.is_empty() {
        return;
    }
    let offset = if case.near_end {
        bytes.len() - 1 - case.offset.index(bytes.len().min(8))
    } else {
        case.offset.index(bytes.len())
    };
    let mut damaged = bytes.clone();
    let (changed, truncated_at): (Vec<usize>, Option<usize>) = match &case.harm {
        Harm::Overwrite(new) => {
            let mut changed = Vec::new();
            for (at, byte) in (offset..bytes.len()).zip(new) {
                if damaged[at] != *byte {
                    changed.push(at);
                }
                damaged[at] = *byte;
            }
            (changed, None)
        }
        Harm::Truncate => {
            damaged.truncate(offset);
            ((offset..bytes.len()).collect(), Some(offset))
        }
    };
    std::fs::write(&target, &damaged).unwrap();

    let reopened = JsonlStore::open_with(&dir, options()).await;
    let store = match reopened {
        Ok(store) => store,
        Err(Error::Corrupt { location, reason }) => {
            assert!(
                truncated_at.is_none() || target != log_path,
                "a truncated log is a torn write, repaired: {location}: {reason}"
            );
            assert!(!changed.is_empty(), "nothing changed: {location}: {reason}");
            if target == log_path {
                assert!(
                    names_log_position(&location, &log_path),
                    "{location}: {reason}"
                );
            } else {
                assert_eq!(location, target.display().to_string(), "{reason}");
            }
            return;
        }
        Err(other) => panic!("damage at {offset} of {} gave {other:?}", target.display()),
    };
    let found = match contents(&store).await {
        Ok(found) => found,
        Err(Error::Corrupt { location, reason }) => {
            // Open indexes a line without building its payload; a read
            // finds a payload the damage made unreadable.
            assert_eq!(target, log_path, "{location}: {reason}");
            assert!(
                names_log_position(&location, &log_path),
                "{location}: {reason}"
            );
            return;
        }
        Err(other) => panic!("read after damage at {offset}: {other:?}"),
    };
    let _ = &original;
    if changed.is_empty() {
        assert_eq!(found, original, "nothing changed");
    } else if target == log_path {
        check_log_damage(
            &original,
            &log_lines,
            &damaged,
            &changed,
            truncated_at,
            &found,
        );
    } else if target
        .file_name()
        .is_some_and(|name| name == "snapshots.jsonl")
    {
        // A run's snapshot log: a cut or a lost newline at its end reads as
        // a put a crash tore, so the snapshots of its last lines may be
        // gone; every snapshot found is the original of its key, but for
        // the one whose line the damage changed and still parses.
        assert_eq!(found.events, original.events, "events untouched");
        let run_dir = target.parent().unwrap();
        let mut differs = 0;
        for (stream, got) in &found.snapshots {
            let expected = original
                .snapshots
                .iter()
                .find(|(s, o)| s == stream && o.snapshot_id == got.snapshot_id)
                .map(|(_, o)| o);
            assert!(expected.is_some(), "a snapshot no one put: {got:?}");
            differs += usize::from(expected != Some(got));
        }
        assert!(differs <= 1, "only the damaged snapshot may differ");
        for (stream, expected) in &original.snapshots {
            let kept = found
                .snapshots
                .iter()
                .any(|(s, got)| s == stream && got.snapshot_id == expected.snapshot_id);
            // The cases' run ids are plain: their directories are `r-<id>`.
            let in_damaged_log = run_dir.ends_with(format!("r-{}", expected.run_id.as_str()));
            assert!(kept || in_damaged_log, "a snapshot of another run was lost");
        }
    } else {
        // A snapshot file that still opens holds the same key; the format
        // marker accepts nothing but itself.
        assert_ne!(target, dir.join("FORMAT"), "a changed FORMAT opened");
        assert_eq!(found.events, original.events, "events untouched");
        assert_eq!(found.snapshots.len(), original.snapshots.len());
        let differs = found
            .snapshots
            .iter()
            .zip(&original.snapshots)
            .filter(|(a, b)| a != b)
            .count();
        assert!(differs <= 1, "only the damaged snapshot may differ");
        for ((stream, got), (expected_stream, expected)) in
            found.snapshots.iter().zip(&original.snapshots)
        {
            assert_eq!(stream, expected_stream);
            assert_eq!(got.snapshot_id, expected.snapshot_id);
        }
    }

    // The repaired store takes writes, and they survive a reopen.
    let t = tenant(1);
    let r = RunId::new("after-damage").unwrap();
    let event = EventRecord::new(&t, r.clone(), EventId::new("late").unwrap(), "step", 1);
    let outcome = store.append(&t, &event).await.unwrap();
    drop(store);
    let store = JsonlStore::open_with(&dir, options()).await.unwrap();
    let again = store.read(&t, &r, ReadQuery::all()).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].seq, outcome.seq);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn damage_is_found_or_harmless(case in case()) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(run_case(case));
    }
}
