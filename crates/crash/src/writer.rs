//! `runstore-crash write`: one writer process. It opens the store and runs
//! every kind of write at once, until it is killed (or, with `--seconds`,
//! until the time is up):
//!
//! - three tasks appending single events;
//! - one task appending atomic batches of 2-6 events (the batch's ids are
//!   printed before the call, so the checker can tell a torn batch);
//! - one task putting snapshots of the streams' last seqs;
//! - one task running store-wide compaction and snapshot prune in turn;
//! - one task retrying ids acknowledged before, by this process or by any
//!   earlier one, each of which must answer its original seq.
//!
//! Every answer is written to the acknowledgement file as it arrives (see
//! [`crate::ack`]). A request that fails is reported with its error and
//! how long it took; one that takes longer than [`HANG`] is reported as a
//! hang. The writer never stops on an error: during a server outage it keeps
//! sending requests, so that recovery is observed, not assumed.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use runstore::{
    Error, EventLog as _, EventLogExt as _, RunStatus, SnapshotId, SnapshotRecord, SnapshotStore,
    Store,
};
use runstore_conformance::support::rng::Rng;
use serde_json::json;

use crate::{
    ack::{self, Line},
    workload::{self, KEEP_LAST, RETENTION_MS, RUNS},
};

/// A request that has not answered after this long is a hang.
pub const HANG: Duration = Duration::from_secs(60);

/// A request that answers `Ok` after this long is reported as slow.
const SLOW: Duration = Duration::from_secs(1);

/// At most this many earlier acknowledgements are kept for retries.
const HISTORY: usize = 20_000;

/// What `write` was asked to do.
#[derive(Debug, Clone, clap::Args)]
pub struct WriterArgs {
    /// The store URL.
    #[arg(long)]
    pub store: String,
    /// Where earlier writers' acknowledgement files are (read for retries).
    #[arg(long)]
    pub dir: PathBuf,
    /// This writer's acknowledgement file.
    #[arg(long)]
    pub acks: PathBuf,
    /// Writer number, unique among the processes sharing the store.
    #[arg(long)]
    pub writer: u32,
    /// How often this writer number was started before.
    #[arg(long)]
    pub incarnation: u32,
    /// Seed of the writer's choices.
    #[arg(long)]
    pub seed: u64,
    /// Stop after this long (for server-fault loads); `None` runs until killed.
    #[arg(long)]
    pub seconds: Option<u64>,
}

/// An acknowledged event, as the retry task keeps it.
#[derive(Debug, Clone)]
struct Acked {
    tenant: u8,
    run: usize,
    id: String,
    seq: u64,
}

struct Writer {
    store: Store,
    out: Mutex<File>,
    acked: Mutex<Vec<Acked>>,
    prefix: String,
    counter: std::sync::atomic::AtomicU64,
}

impl Writer {
    /// Records `line` ([`write_line`]), one writer task at a time.
    fn emit(&self, line: &Line) {
        let out = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        write_line(&out, line);
    }

    fn next_id(&self, kind: &str) -> String {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{kind}-{}-{n}", self.prefix)
    }

    fn bad(&self, msg: String) {
        self.emit(&Line::Bad { msg });
    }

    /// Runs `request` under the hang bound; reports a failure or a hang and
    /// answers `None` then.
    async fn timed<T>(
        &self,
        op: &str,
        request: impl Future<Output = runstore::Result<T>>,
    ) -> Option<T> {
        let started = Instant::now();
        match tokio::time::timeout(HANG, request).await {
            Ok(Ok(value)) => {
                let took = started.elapsed();
                if took >= SLOW {
                    self.emit(&Line::Slow {
                        op: op.to_owned(),
                        ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                    });
                }
                Some(value)
            }
            Ok(Err(err)) => {
                self.emit(&error_line(op, &err, started.elapsed()));
                tokio::time::sleep(Duration::from_millis(50)).await;
                None
            }
            Err(_) => {
                self.bad(format!("{op} did not answer within {} s", HANG.as_secs()));
                None
            }
        }
    }
}

/// Writes one line with one `write`; a failed write ends the process,
/// since an acknowledgement that cannot be recorded breaks the test.
fn write_line(mut out: &File, line: &Line) {
    let mut bytes = match serde_json::to_vec(line) {
        Ok(bytes) => bytes,
        Err(err) => fatal(&format!("encoding an acknowledgement: {err}")),
    };
    bytes.push(b'\n');
    if let Err(err) = out.write_all(&bytes).and_then(|()| out.flush()) {
        fatal(&format!("writing an acknowledgement: {err}"));
    }
}

fn fatal(msg: &str) -> ! {
    eprintln!("runstore-crash write: {msg}");
    std::process::exit(3)
}

fn error_line(op: &str, err: &Error, took: Duration) -> Line {
    let kind = match err {
        Error::InvalidInput { .. } => "InvalidInput",
        Error::Conflict { .. } => "Conflict",
        Error::Locked { .. } => "Locked",
        Error::Corrupt { .. } => "Corrupt",
        Error::Io { .. } => "Io",
        Error::Poisoned { .. } => "Poisoned",
        Error::Backend { .. } => "Backend",
        _ => "other",
    };
    Line::Error {
        op: op.to_owned(),
        kind: kind.to_owned(),
        retryable: err.is_retryable(),
        ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        msg: err.to_string().replace('\n', " "),
        at: workload::now_ms(),
    }
}

/// Runs the writer until it is killed or its time is up.
pub fn run(args: WriterArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(write(args))
}

async fn write(args: WriterArgs) -> Result<()> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.acks)
        .with_context(|| format!("opening {}", args.acks.display()))?;
    let history = history(&args)?;
    let store = open(&args, &out).await;
    let writer = Arc::new(Writer {
        store,
        out: Mutex::new(out),
        acked: Mutex::new(history),
        prefix: format!("w{}i{}", args.writer, args.incarnation),
        counter: std::sync::atomic::AtomicU64::new(0),
    });
    writer.emit(&Line::Started {
        writer: args.writer,
        incarnation: args.incarnation,
    });

    let mut seeds = Rng::new(args.seed);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..3 {
        tasks.spawn(appender(writer.clone(), Rng::new(seeds.next_u64())));
    }
    tasks.spawn(batcher(writer.clone(), Rng::new(seeds.next_u64())));
    tasks.spawn(snapshotter(writer.clone(), Rng::new(seeds.next_u64())));
    tasks.spawn(maintainer(writer.clone(), Rng::new(seeds.next_u64())));
    tasks.spawn(retrier(writer.clone(), Rng::new(seeds.next_u64())));
    match args.seconds {
        Some(seconds) => {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            tasks.abort_all();
        }
        None => while tasks.join_next().await.is_some() {},
    }
    Ok(())
}

/// Earlier acknowledged events, the newest [`HISTORY`] of them.
fn history(args: &WriterArgs) -> Result<Vec<Acked>> {
    let mut acked: Vec<Acked> = ack::read_all(&args.dir)?
        .into_iter()
        .filter_map(|(_, line)| match line {
            Line::Event { t, r, id, seq, .. } => Some(Acked {
                tenant: t,
                run: r,
                id,
                seq,
            }),
            _ => None,
        })
        .collect();
    if acked.len() > HISTORY {
        acked.drain(..acked.len() - HISTORY);
    }
    Ok(acked)
}

/// Opens the store, retrying while it fails (the previous writer's lock
/// may still be held for a moment, or the server may be down); each
/// failure is reported.
async fn open(args: &WriterArgs, out: &File) -> Store {
    let started = Instant::now();
    loop {
        let attempt = Instant::now();
        match runstore::open(&args.store).await {
            Ok(store) => return store,
            Err(err) => {
                let line = match err {
                    runstore::OpenError::Store(err) => error_line("open", &err, attempt.elapsed()),
                    other => fatal(&format!("opening {}: {other}", args.store)),
                };
                write_line(out, &line);
                if started.elapsed() > HANG {
                    fatal(&format!(
                        "could not open {} for {} s",
                        args.store,
                        HANG.as_secs()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn pick(rng: &mut Rng) -> (u8, usize) {
    (u8::from(rng.range(0, 2) == 1), rng.index(RUNS))
}

async fn appender(writer: Arc<Writer>, mut rng: Rng) {
    loop {
        let (t, r) = pick(&mut rng);
        let id = writer.next_id("e");
        let (Ok(tenant), Ok(run)) = (workload::tenant(t), workload::run(r)) else {
            fatal("the workload's tenants and runs are valid");
        };
        let Ok(event) = workload::event(&tenant, &run, &id, workload::now_ms()) else {
            fatal("the workload's event ids are valid");
        };
        if let Some(outcome) = writer
            .timed("append", writer.store.append(&tenant, &event))
            .await
        {
            if !outcome.inserted {
                writer.bad(format!("new id {id} was answered as a duplicate"));
            }
            writer.emit(&Line::Event {
                t,
                r,
                id: id.clone(),
                seq: outcome.seq,
                at: workload::now_ms(),
            });
            remember(&writer, t, r, id, outcome.seq);
        }
        tokio::time::sleep(Duration::from_millis(rng.range(0, 3))).await;
    }
}

fn remember(writer: &Writer, tenant: u8, run: usize, id: String, seq: u64) {
    let mut acked = writer
        .acked
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if acked.len() >= HISTORY {
        acked.swap_remove(0);
    }
    acked.push(Acked {
        tenant,
        run,
        id,
        seq,
    });
}

async fn batcher(writer: Arc<Writer>, mut rng: Rng) {
    loop {
        let (t, r) = pick(&mut rng);
        let (Ok(tenant), Ok(run)) = (workload::tenant(t), workload::run(r)) else {
            fatal("the workload's tenants and runs are valid");
        };
        let size = rng.range(2, 7);
        let ids: Vec<String> = (0..size).map(|_| writer.next_id("b")).collect();
        let now = workload::now_ms();
        let Ok(events) = ids
            .iter()
            .map(|id| workload::event(&tenant, &run, id, now))
            .collect::<Result<Vec<_>>>()
        else {
            fatal("the workload's event ids are valid");
        };
        writer.emit(&Line::Batch {
            t,
            r,
            ids: ids.clone(),
        });
        if let Some(outcomes) = writer
            .timed(
                "append_batch",
                writer.store.append_batch(&tenant, &run, &events, None),
            )
            .await
        {
            let first = outcomes.first().map_or(0, |outcome| outcome.seq);
            let contiguous = outcomes.len() == ids.len()
                && outcomes.iter().enumerate().all(|(index, outcome)| {
                    outcome.inserted && outcome.seq == first + index as u64
                });
            if !contiguous {
                writer.bad(format!(
                    "batch {ids:?} was answered {:?}",
                    outcomes
                        .iter()
                        .map(|outcome| (outcome.seq, outcome.inserted))
                        .collect::<Vec<_>>()
                ));
            }
            let at = workload::now_ms();
            for (id, outcome) in ids.into_iter().zip(outcomes) {
                writer.emit(&Line::Event {
                    t,
                    r,
                    id: id.clone(),
                    seq: outcome.seq,
                    at,
                });
                remember(&writer, t, r, id, outcome.seq);
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.range(0, 5))).await;
    }
}

async fn snapshotter(writer: Arc<Writer>, mut rng: Rng) {
    loop {
        tokio::time::sleep(Duration::from_millis(rng.range(10, 30))).await;
        let (t, r) = pick(&mut rng);
        let (Ok(tenant), Ok(run)) = (workload::tenant(t), workload::run(r)) else {
            fatal("the workload's tenants and runs are valid");
        };
        let Some(next) = writer
            .timed("next_seq", writer.store.next_seq(&tenant, &run))
            .await
        else {
            continue;
        };
        let seq = next.saturating_sub(1);
        if seq == 0 {
            continue;
        }
        let id = writer.next_id("s");
        let Ok(snapshot_id) = SnapshotId::new(id.clone()) else {
            fatal("the workload's snapshot ids are valid");
        };
        let created = workload::now_ms();
        let snapshot = SnapshotRecord::new(
            &tenant,
            run.clone(),
            snapshot_id,
            seq,
            created,
            RunStatus::Running,
        )
        .with_checkpoint(json!({ "id": id, "seq": seq }));
        if writer
            .timed("put", SnapshotStore::put(&writer.store, &tenant, &snapshot))
            .await
            .is_some()
        {
            writer.emit(&Line::Snapshot {
                t,
                r,
                id,
                seq,
                created,
            });
        }
    }
}

async fn maintainer(writer: Arc<Writer>, mut rng: Rng) {
    let mut compact = rng.range(0, 2) == 0;
    loop {
        tokio::time::sleep(Duration::from_millis(rng.range(30, 120))).await;
        let now = workload::now_ms();
        let (op, report) = if compact {
            (
                "compact",
                writer
                    .timed("compact", writer.store.compact(RETENTION_MS, now))
                    .await,
            )
        } else {
            (
                "prune",
                writer
                    .timed("prune", writer.store.prune(RETENTION_MS, KEEP_LAST, now))
                    .await,
            )
        };
        compact = !compact;
        let Some(report) = report else { continue };
        for failure in &report.failed {
            writer.emit(&error_line(
                &format!("{op} {}", failure.stream),
                &failure.error,
                Duration::ZERO,
            ));
        }
        writer.emit(&Line::Maintenance {
            op: op.to_owned(),
            removed: report.removed,
            failed: report.failed.len(),
        });
    }
}

async fn retrier(writer: Arc<Writer>, mut rng: Rng) {
    loop {
        tokio::time::sleep(Duration::from_millis(rng.range(2, 8))).await;
        let chosen = {
            let acked = writer
                .acked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if acked.is_empty() {
                None
            } else {
                Some(acked[rng.index(acked.len())].clone())
            }
        };
        let Some(chosen) = chosen else { continue };
        let (Ok(tenant), Ok(run)) = (workload::tenant(chosen.tenant), workload::run(chosen.run))
        else {
            fatal("the workload's tenants and runs are valid");
        };
        let Ok(event) = workload::event(&tenant, &run, &chosen.id, workload::now_ms()) else {
            fatal("the workload's event ids are valid");
        };
        if let Some(outcome) = writer
            .timed("retry", writer.store.append(&tenant, &event))
            .await
        {
            if outcome.inserted || outcome.seq != chosen.seq {
                writer.bad(format!(
                    "retry of {} (acknowledged at seq {}) answered seq {} inserted {}",
                    chosen.id, chosen.seq, outcome.seq, outcome.inserted
                ));
            } else {
                writer.emit(&Line::Retry { id: chosen.id });
            }
        }
    }
}
