//! The figures of the standard run, one function each, over any
//! [`Engine`]. Each adds its rows to the session's [`RatioTable`] (and its
//! criterion benchmarks, where it has some); [`crate::run_standard`] calls
//! them in order.

use std::{
    cell::RefCell,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use criterion::{Criterion, SamplingMode, Throughput};
use runstore::bench::{OpResult, Workload, WorkloadConfig};
use runstore_core::{Durability, Storage};

use crate::{
    Bench,
    baseline::{BareLoop, Fdatasync, SyncFile, dir_bytes},
    checkpoints::{self, CheckpointRun, CheckpointSizes},
    engine::{Engine, open_store},
    footprint::{OpenFootprint, open_in_child},
    rounds::{Round, Tally, Windowed, interleave, median, scaled},
    table::{RatioTable, Target, human},
};

/// Opens timed for the table's open figure.
const OPENS: usize = 3;

/// What the figures of one engine share: the sizes, criterion and the table.
pub struct Session<'a, E> {
    /// Runtime, sizes and scratch directory.
    pub bench: &'a Bench,
    /// The engine measured.
    pub engine: &'a E,
    /// The workload's sizes, with the engine's concurrency.
    pub config: WorkloadConfig,
    /// Criterion, configured from the command line.
    pub criterion: Criterion,
    /// The table printed at the end.
    pub table: RatioTable,
}

impl<'a, E: Engine> Session<'a, E> {
    /// A session of `engine` with `bench`'s sizes and an empty table.
    pub fn new(bench: &'a Bench, engine: &'a E) -> Self {
        Self {
            bench,
            engine,
            config: WorkloadConfig {
                concurrency: engine.concurrency(),
                ..bench.config()
            },
            criterion: bench.criterion(),
            table: RatioTable::new(format!("{}: {}", engine.name(), bench.describe())),
        }
    }

    /// Where the store of `role` (`write`, `read`) lives.
    pub fn path(&self, role: &str) -> PathBuf {
        self.bench
            .path(&format!("{role}-{}", self.engine.location()))
    }

    /// Opens the store at `path`.
    pub fn open(&self, path: &Path, durability: Durability) -> Arc<dyn Storage> {
        open_store(self.bench, self.engine, path, durability)
    }

    /// Criterion's summary, then the table.
    pub fn finish(mut self) {
        self.criterion.final_summary();
        self.table.note(
            "ratios compare figures measured in alternating windows of the same run; \
             the machine is shared (other builds running), so absolute figures are noisy",
        );
        self.table.print();
    }
}

fn target(ratio: Option<f64>) -> Target {
    ratio.map_or(Target::None, Target::RatioAtLeast)
}

// ---------------------------------------------------------------------------
// Writes, into a fresh store.

/// The workload over a fresh write store (durable unless the bench says
/// otherwise), with the engine's extra handles for the concurrent
/// appenders.
pub fn writer<E: Engine>(s: &Session<'_, E>) -> Workload {
    let path = s.path("write");
    let durability = s.bench.write_durability;
    let store = s.open(&path, durability);
    let handles = (0..s.engine.extra_handles())
        .map(|_| s.open(&path, durability))
        .collect();
    Workload::new(store, s.config).with_handles(handles)
}

/// Criterion's write figures: `raw_fdatasync` (local disks), `bare_insert`
/// (engines with a bare loop), `single_append`, `concurrent_<n>`,
/// `batch_<size>`.
pub fn write_micro<E: Engine>(
    s: &mut Session<'_, E>,
    writer: &Workload,
    mut bare: Option<&mut (dyn BareLoop + 'static)>,
) {
    let bench = s.bench;
    let concurrency = s.config.concurrency;
    let mut group = s.criterion.benchmark_group(s.engine.name());
    group.throughput(Throughput::Elements(1));
    if s.engine.local_disk() {
        let mut file = SyncFile::new(bench.dir.path());
        group.bench_function("raw_fdatasync", |b| {
            b.iter_custom(|iters| file.sync_n(iters))
        });
    }
    if let Some(bare) = bare.as_mut() {
        group.bench_function("bare_insert", |b| {
            b.iter_custom(|iters| bare.run(bench, iters).elapsed())
        });
    }
    group.bench_function("single_append", |b| {
        b.iter_custom(|iters| {
            let result = bench.block_on(writer.single_append(iters));
            result.expect("single append").elapsed()
        });
    });
    group.bench_function(format!("concurrent_{concurrency}"), |b| {
        b.iter_custom(|iters| {
            let per_task = iters.div_ceil(concurrency);
            let result = bench
                .block_on(writer.concurrent_append(per_task))
                .expect("concurrent append");
            scaled(&result, result.events, iters)
        });
    });
    group.throughput(Throughput::Elements(s.config.batch_size));
    group.bench_function(format!("batch_{}", s.config.batch_size), |b| {
        b.iter_custom(|iters| {
            let result = bench.block_on(writer.batch_append(iters));
            result.expect("batch append").elapsed()
        });
    });
    group.finish();
}

/// The interleaved rounds of the write figures and their baselines.
#[derive(Debug, Clone)]
pub struct WriteRounds {
    /// The raw `fdatasync` loop (local disks).
    pub fdatasync: Option<Tally>,
    /// The bare driver loop, with its label.
    pub bare: Option<(&'static str, Tally)>,
    /// The bare driver loops writing the store's own tables, with their
    /// labels ([`Engine::bare_layouts`]).
    pub layouts: Vec<(&'static str, Tally)>,
    /// Single-task appends, into a store of their own.
    pub single: Tally,
    /// Concurrent appenders.
    pub concurrent: Tally,
    /// Batches.
    pub batch: Tally,
    /// Requests per event of single, concurrent and batch appends (engines
    /// that count requests).
    pub requests: Option<[f64; 3]>,
}

/// The store requests each call of one side made, read from the engine's
/// counter around the call.
struct RequestLog<'a> {
    counter: Option<&'a AtomicU64>,
    /// Requests of each call, the probe first (see [`Windowed`]).
    calls: RefCell<Vec<u64>>,
}

impl<'a> RequestLog<'a> {
    fn new(counter: Option<&'a AtomicU64>) -> Self {
        Self {
            counter,
            calls: RefCell::default(),
        }
    }

    fn count(&self, op: impl FnOnce() -> OpResult) -> OpResult {
        let read = || self.counter.map_or(0, |c| c.load(Ordering::Relaxed));
        let before = read();
        let result = op();
        self.calls.borrow_mut().push(read() - before);
        result
    }

    /// Requests per event over the recorded rounds. The probe is not in the
    /// tally, so its requests are left out too.
    fn per_event(&self, tally: &Tally) -> f64 {
        let requests: u64 = self.calls.borrow().iter().skip(1).sum();
        requests as f64 / tally.events().max(1) as f64
    }
}

/// Rounds of: the raw `fdatasync` loop (local disks), the bare driver loop,
/// single appends, concurrent appends and batches, each side sized from its
/// previous pace to fill the window.
pub fn write_rounds<E: Engine>(
    s: &Session<'_, E>,
    writer: &Workload,
    bare: Option<&mut (dyn BareLoop + 'static)>,
) -> WriteRounds {
    let bench = s.bench;
    let mut fsync = Fdatasync::new(bench, bench.dir.path());
    let mut bare = bare.map(|bare| {
        let label = bare.label();
        (
            label,
            Windowed::new(5, 1_000_000, move |n| bare.run(bench, n)),
        )
    });
    let mut layout_loops = s.engine.bare_layouts(bench);
    let mut layouts: Vec<_> = layout_loops
        .iter_mut()
        .map(|bare| {
            let label = bare.label();
            (
                label,
                Windowed::new(5, 1_000_000, move |n| bare.run(bench, n)),
            )
        })
        .collect();
    let logs = [(); 3].map(|()| RequestLog::new(s.engine.requests()));
    let [single_log, concurrent_log, batch_log] = &logs;
    // The single appends write a store of their own, as each bare loop
    // writes a file of its own: a B-tree store's commit copies a path as
    // deep as its trees, and the concurrent and batch sides fill theirs
    // with many times the events.
    let lone = Workload::new(
        s.open(&s.path("write-single"), bench.write_durability),
        s.config,
    );
    let mut single = Windowed::new(5, 1_000_000, |n| {
        single_log.count(|| {
            bench
                .block_on(lone.single_append(n))
                .expect("single append")
        })
    });
    let mut concurrent = Windowed::new(1, 100_000, |per_task| {
        concurrent_log.count(|| {
            bench
                .block_on(writer.concurrent_append(per_task))
                .expect("concurrent append")
        })
    });
    let mut batch = Windowed::new(1, 100_000, |n| {
        batch_log.count(|| {
            bench
                .block_on(writer.batch_append(n))
                .expect("batch append")
        })
    });
    {
        let mut sides: Vec<&mut dyn Round> = Vec::new();
        if s.engine.local_disk() {
            sides.push(&mut fsync);
        }
        if let Some((_, bare)) = bare.as_mut() {
            sides.push(bare);
        }
        for (_, layout) in &mut layouts {
            sides.push(layout);
        }
        sides.push(&mut single);
        sides.push(&mut concurrent);
        sides.push(&mut batch);
        interleave(bench.rounds, bench.window, &mut sides);
    }
    let (single, concurrent, batch) = (
        single.tally().clone(),
        concurrent.tally().clone(),
        batch.tally().clone(),
    );
    WriteRounds {
        fdatasync: s.engine.local_disk().then(|| fsync.tally().clone()),
        bare: bare.map(|(label, bare)| (label, bare.tally().clone())),
        layouts: layouts
            .into_iter()
            .map(|(label, layout)| (label, layout.tally().clone()))
            .collect(),
        requests: s.engine.requests().map(|_| {
            [
                single_log.per_event(&single),
                concurrent_log.per_event(&concurrent),
                batch_log.per_event(&batch),
            ]
        }),
        single,
        concurrent,
        batch,
    }
}

/// Single durable appends against the raw `fdatasync` rate and the bare
/// driver loop of the same rounds (or alone, without either).
pub fn single_append<E: Engine>(s: &mut Session<'_, E>, rounds: &WriteRounds) {
    let targets = s.engine.targets();
    let figure = "single durable append";
    if let Some(fsync) = &rounds.fdatasync {
        s.table.ratio(
            figure,
            &rounds.single,
            "raw fdatasync",
            fsync,
            target(targets.single_vs_fdatasync),
        );
    }
    if let Some((label, bare)) = &rounds.bare {
        s.table.ratio(
            figure,
            &rounds.single,
            label,
            bare,
            target(targets.single_vs_bare),
        );
    }
    for (index, (label, layout)) in rounds.layouts.iter().enumerate() {
        let goal = if index == 0 {
            target(targets.single_vs_layout)
        } else {
            Target::None
        };
        s.table.ratio(figure, &rounds.single, label, layout, goal);
    }
    if rounds.fdatasync.is_none() && rounds.bare.is_none() {
        s.table.rate(figure, &rounds.single, Target::None);
    }
}

/// Concurrent appenders against single-task appends of the same rounds.
pub fn concurrent_append<E: Engine>(s: &mut Session<'_, E>, rounds: &WriteRounds) {
    s.table.ratio(
        &format!("{} concurrent appenders", s.config.concurrency),
        &rounds.concurrent,
        "single-task append",
        &rounds.single,
        target(s.engine.targets().concurrent_vs_single),
    );
}

/// Batches: their rate, and on a local disk their share of what the disk
/// allows (a durable batch needs at least one sync, so at most batch size x
/// the raw sync rate, measured in the same rounds).
pub fn batch_append<E: Engine>(s: &mut Session<'_, E>, rounds: &WriteRounds) {
    let batch_size = s.config.batch_size;
    s.table.rate(
        &format!("batch of {batch_size}"),
        &rounds.batch,
        s.engine
            .targets()
            .batch_rate
            .map_or(Target::None, Target::RateAtLeast),
    );
    let Some(fsync) = &rounds.fdatasync else {
        return;
    };
    let ceiling = Tally {
        rounds: fsync
            .rounds
            .iter()
            .map(|round| OpResult {
                events: round.events * batch_size,
                events_per_sec: round.events_per_sec * batch_size as f64,
                ..round.clone()
            })
            .collect(),
    };
    s.table.ratio(
        &format!("batch of {batch_size} (vs the disk)"),
        &rounds.batch,
        &format!("{batch_size} x raw fdatasync"),
        &ceiling,
        Target::None,
    );
}

/// Store requests per event of each write figure (engines that count them).
pub fn requests_per_event<E: Engine>(s: &mut Session<'_, E>, rounds: &WriteRounds) {
    let Some([single, concurrent, batch]) = rounds.requests else {
        return;
    };
    let text = format!(
        "single {single:.2}, {} concurrent {concurrent:.2}, batch of {} {batch:.3}",
        s.config.concurrency, s.config.batch_size,
    );
    s.table.custom(
        "requests per event",
        text,
        "counted at the object store client".to_owned(),
        None,
        Target::None,
        0.0,
    );
}

/// A note of how far the disk's raw sync rate swung across the rounds.
pub fn disk_range<E: Engine>(s: &mut Session<'_, E>, rounds: &WriteRounds) {
    if let Some(fsync) = &rounds.fdatasync {
        let (low, high) = fsync.rate_range();
        s.table.note(format!(
            "raw fdatasync of this disk ranged {}..{}/s across the rounds",
            human(low),
            human(high)
        ));
    }
}

// ---------------------------------------------------------------------------
// The preloaded store.

/// Loads the read store through a relaxed handle and returns its path.
pub fn preload<E: Engine>(s: &mut Session<'_, E>) -> PathBuf {
    let path = s.path("read");
    let relaxed = s.open(&path, Durability::Relaxed);
    let preload = s
        .bench
        .block_on(Workload::new(relaxed, s.config).preload())
        .expect("preload");
    s.table.custom(
        "preload (relaxed, batches of 1000)",
        format!("{} ev/s", human(preload.events_per_sec)),
        format!("{} events in {:.1} s", preload.events, preload.elapsed_secs),
        None,
        Target::None,
        0.0,
    );
    path
}

/// Resident memory an open of the store at `path` adds, measured in a fresh
/// child process (no allocator leftovers of this one).
pub fn open_memory<E: Engine>(s: &mut Session<'_, E>, path: &Path) -> OpenFootprint {
    let footprint = open_in_child(path);
    let per_event = footprint.rss_bytes as f64 / s.config.events.max(1) as f64;
    s.table.custom(
        "open memory (fresh process)",
        format!("{per_event:.0} B/ev"),
        format!("{} MiB RSS added", footprint.rss_bytes / (1 << 20)),
        None,
        s.engine
            .targets()
            .bytes_per_event
            .map_or(Target::None, Target::BytesAtMost),
        per_event,
    );
    footprint
}

/// The durable open of the store at `path`: criterion's `open`, and the
/// table's median of a few opens of its own (so that the row exists whatever
/// criterion's filter selected), against the engine's plain parse of the
/// same data where it has one.
pub fn open<E: Engine>(s: &mut Session<'_, E>, path: &Path, footprint: &OpenFootprint) {
    let (bench, engine) = (s.bench, s.engine);
    let open_once = || {
        let start = Instant::now();
        let store = open_store(bench, engine, path, Durability::Durable);
        let took = start.elapsed();
        drop(store);
        took
    };
    {
        let mut group = s.criterion.benchmark_group(s.engine.name());
        group.sampling_mode(SamplingMode::Flat);
        group.throughput(Throughput::Elements(s.config.events));
        group.bench_function("open", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| open_once()).sum::<Duration>());
        });
        group.finish();
    }
    let open_secs = median((0..OPENS).map(|_| open_once().as_secs_f64()));
    let Some((records, parse_time)) = s.engine.parse_baseline(path) else {
        s.table.custom(
            "open",
            format!("{open_secs:.3} s"),
            format!("child process: {:.3} s", footprint.open_secs),
            None,
            Target::None,
            0.0,
        );
        return;
    };
    let ratio = parse_time.as_secs_f64() / open_secs.max(f64::MIN_POSITIVE);
    s.table.custom(
        "open (index rebuild)",
        format!("{open_secs:.3} s (median of {OPENS})"),
        format!(
            "plain serde_json parse {:.3} s ({} records, {} MiB)",
            parse_time.as_secs_f64(),
            records,
            dir_bytes(path) / (1 << 20)
        ),
        Some(ratio),
        target(s.engine.targets().open_vs_parse),
        ratio,
    );
}

/// Tail reads of the preloaded store: criterion's `read_tail_<n>`, then
/// rounds for the table's latency row.
pub fn read_tail<E: Engine>(s: &mut Session<'_, E>, reader: &Workload) {
    let bench = s.bench;
    let tail = s.config.tail;
    {
        let mut group = s.criterion.benchmark_group(s.engine.name());
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("read_tail_{tail}"), |b| {
            b.iter_custom(|iters| {
                let result = bench.block_on(reader.read_tail(iters));
                result.expect("tail read").elapsed()
            });
        });
        group.finish();
    }
    let mut reads = Windowed::new(10, 1_000_000, |n| {
        bench.block_on(reader.read_tail(n)).expect("tail read")
    });
    interleave(bench.rounds, bench.window, &mut [&mut reads]);
    s.table.latency(
        &format!("read tail-{tail} at {} events", s.config.events),
        reads.tally(),
        s.engine
            .targets()
            .read_tail_ms
            .map_or(Target::None, Target::MillisAtMost),
    );
}

/// One store-wide compaction of the preloaded store.
pub fn compact<E: Engine>(s: &mut Session<'_, E>, reader: &Workload) {
    let result = s.bench.block_on(reader.compact()).expect("compaction");
    s.table.custom(
        "compact (one store-wide pass)",
        format!("{} ev/s pruned", human(result.events_per_sec)),
        format!(
            "{} events pruned in {:.2} s",
            result.events, result.elapsed_secs
        ),
        None,
        Target::None,
        0.0,
    );
}

// ---------------------------------------------------------------------------
// Figures only some engines have.

/// Batches against the bare driver's multi-row insert of the same size, in
/// rounds of their own (engines whose bare loop has one).
pub fn batch_vs_bare<E: Engine>(
    s: &mut Session<'_, E>,
    writer: &Workload,
    bare: Option<&mut (dyn BareLoop + 'static)>,
) {
    let bench = s.bench;
    let size = s.config.batch_size;
    let Some(bare) = bare else {
        return;
    };
    let Some((label, _probe)) = bare.batch(bench, 1, size) else {
        return;
    };
    let mut batch = Windowed::new(1, 100_000, |n| {
        bench
            .block_on(writer.batch_append(n))
            .expect("batch append")
    });
    let mut bare_batch = Windowed::new(1, 100_000, |n| {
        bare.batch(bench, n, size)
            .map(|(_, result)| result)
            .expect("the bare loop has a batch")
    });
    interleave(
        bench.rounds,
        bench.window,
        &mut [&mut batch, &mut bare_batch],
    );
    s.table.ratio(
        &format!("batch of {size}"),
        batch.tally(),
        label,
        bare_batch.tally(),
        Target::None,
    );
}

/// Appenders spread over several handles of the write store, on one stream
/// or a stream each, retrying retryable errors (engines with a
/// [`Spread`](crate::engine::Spread)).
pub fn spread_append<E: Engine>(s: &mut Session<'_, E>) {
    let Some(spread) = s.engine.spread() else {
        return;
    };
    let bench = s.bench;
    let path = s.path("write");
    let handles: Vec<_> = (0..spread.handles.max(1))
        .map(|_| s.open(&path, bench.write_durability))
        .collect();
    let next = AtomicU64::new(0);
    let mut side = Windowed::new(1, 100_000, |per_task| {
        bench.block_on(spread_round(&handles, spread, per_task, &next))
    });
    interleave(bench.rounds, bench.window, &mut [&mut side]);
    s.table.rate(
        &format!(
            "{} appenders over {} handles, {}",
            spread.tasks,
            handles.len(),
            if spread.own_streams {
                "a stream each"
            } else {
                "one stream"
            }
        ),
        side.tally(),
        Target::None,
    );
}

/// `Operation::ConcurrentAppend` of [`spread_append`]: `per_task` appends
/// by each task, each retried until it is not a retryable error.
async fn spread_round(
    handles: &[Arc<dyn Storage>],
    spread: crate::engine::Spread,
    per_task: u64,
    next: &AtomicU64,
) -> OpResult {
    use runstore_core::EventLogExt as _;
    let tenant = runstore::bench::bench_tenant();
    let tasks: Vec<_> = (0..spread.tasks)
        .map(|task| {
            let slot = usize::try_from(task).unwrap_or(0) % handles.len();
            let run = if spread.own_streams {
                format!("bench-spread-{task}")
            } else {
                "bench-spread".to_owned()
            };
            let events: Vec<_> = (0..per_task)
                .map(|_| {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    crate::baseline::bench_event(&run, &format!("spread-{n}"), LIVE_MS)
                })
                .collect();
            (Arc::clone(&handles[slot]), tenant.clone(), events)
        })
        .collect();
    let start = Instant::now();
    let tasks: Vec<_> = tasks
        .into_iter()
        .map(|(store, tenant, events)| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(events.len());
                for event in &events {
                    let began = Instant::now();
                    loop {
                        match store.append(&tenant, event).await {
                            Ok(_) => break,
                            Err(err) if err.is_retryable() => {}
                            Err(err) => panic!("spread append: {err}"),
                        }
                    }
                    latencies.push(began.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("an appender task"));
    }
    OpResult::from_latencies(
        runstore::bench::Operation::ConcurrentAppend,
        spread.tasks.saturating_mul(per_task),
        start.elapsed(),
        latencies,
    )
}

/// `occurred_at_ms` of the spread appenders' events: far after the
/// preloaded events, as the workload's own write events are.
const LIVE_MS: u64 = 4_000_000_000_000;

// ---------------------------------------------------------------------------
// Lookups of compacted ids (issue 15).

/// Compacted ids per stream of the compacted-lookup figure
/// (`RUNSTORE_BENCH_COMPACTED`, comma-separated; default 10k, 100k, 1M).
///
/// # Panics
/// When the variable holds something else than numbers.
pub fn compacted_sizes(bench: &Bench) -> Vec<u64> {
    if !bench.benchmarking {
        return vec![1_000];
    }
    match std::env::var("RUNSTORE_BENCH_COMPACTED") {
        Ok(list) => {
            list.split(',')
                .map(|part| {
                    part.trim().replace('_', "").parse().unwrap_or_else(|_| {
                        panic!("RUNSTORE_BENCH_COMPACTED: {part:?} is no number")
                    })
                })
                .collect()
        }
        Err(_) => vec![10_000, 100_000, 1_000_000],
    }
}

/// Timed calls per size: `seq_of` and duplicate appends.
const LOOKUPS: usize = 400;
const DUPLICATES: usize = 200;

/// The id of the compacted event at `seq` (as long as a UUID).
fn compacted_event_id(seq: u64) -> runstore_core::EventId {
    runstore_core::EventId::new(format!("compacted-event-{seq:020}")).expect("a valid id")
}

/// One stream whose first `n` events were compacted: its marker (remembering
/// all `n` ids, as compaction behind a snapshot at `n + 1` leaves it) and one
/// live event after it, as an export of that stream would hold them.
fn compacted_stream(run: &str, n: u64) -> Vec<runstore_core::EventRecord> {
    use runstore_core::raw::compaction::{
        COMPACTION_SOURCE, CompactedId, CompactionPayload, marker_event_id, merge_marker,
    };
    let tenant = runstore::bench::bench_tenant();
    let run_id = runstore_core::RunId::new(run).expect("a valid run id");
    let mut first = crate::baseline::bench_event(run, compacted_event_id(1).as_str(), 1_000);
    first.seq = 1;
    let mut marker = merge_marker(&tenant, &run_id, None, [&first], 2_000, |_| Ok(false))
        .expect("a marker of one event");
    let payload = CompactionPayload {
        compacted_through_seq: n,
        compacted_through_ms: 1_000,
        pruned_events: n,
        compacted_event_ids: (1..=n)
            .map(|seq| CompactedId {
                event_id: compacted_event_id(seq),
                seq,
            })
            .collect(),
        source: COMPACTION_SOURCE.to_owned(),
        erased_through_seq: None,
    };
    marker.seq = n;
    marker.event_id = marker_event_id(&tenant, &run_id, n);
    marker.payload = serde_json::to_value(payload).expect("a payload serializes");
    let mut live = crate::baseline::bench_event(run, "live-event-1", LIVE_MS);
    live.seq = n + 1;
    vec![marker, live]
}

/// `seq_of` and a duplicate append of compacted ids, in one stream holding
/// 10k, 100k and 1M of them (issue 15: p50 <= 50 us and <= 1 ms, not
/// growing with the number of compacted ids), with `next_seq` of the same
/// stream as the floor of one call that asks the store something (a round
/// trip for the service backends). Each stream is written by an
/// import through a relaxed handle; the calls go through a durable one.
pub fn compacted_lookup<E: Engine>(s: &mut Session<'_, E>) {
    use runstore_core::EventLogExt as _;
    let bench = s.bench;
    let tenant = runstore::bench::bench_tenant();
    for n in compacted_sizes(bench) {
        let path = s.path(&format!("compacted-{n}"));
        let run = "bench-compacted";
        let run_id = runstore_core::RunId::new(run).expect("a valid run id");
        let setup = Instant::now();
        {
            let relaxed = s.open(&path, Durability::Relaxed);
            let records = compacted_stream(run, n);
            bench
                .block_on(relaxed.import_stream(&tenant, &run_id, &records))
                .expect("importing the compacted stream");
        }
        let setup = setup.elapsed();
        // The memory an open adds, for the stores that keep an index in
        // this process.
        let footprint = s.engine.local_disk().then(|| open_in_child(&path));
        let store = s.open(&path, Durability::Durable);
        // A fixed sequence of ids spread over the whole marker.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ n;
        let mut pick = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            1 + (state >> 11) % n
        };
        let (mut lookups, started) = (Vec::with_capacity(LOOKUPS), Instant::now());
        for _ in 0..LOOKUPS {
            let seq = pick();
            let id = compacted_event_id(seq);
            let began = Instant::now();
            let found = bench
                .block_on(store.seq_of(&tenant, &run_id, &id))
                .expect("seq_of");
            lookups.push(began.elapsed());
            assert_eq!(found, Some(seq), "seq_of {id:?} at {n} compacted ids");
        }
        let lookups = OpResult::from_latencies(
            runstore::bench::Operation::ReadTail,
            LOOKUPS as u64,
            started.elapsed(),
            lookups,
        );
        // The same store's cheapest call that asks it something (one query
        // or one index lookup): the floor `seq_of` is compared with.
        let (mut floor, started) = (Vec::with_capacity(LOOKUPS), Instant::now());
        for _ in 0..LOOKUPS {
            let began = Instant::now();
            let next = bench
                .block_on(store.next_seq(&tenant, &run_id))
                .expect("next_seq");
            floor.push(began.elapsed());
            assert_eq!(next, n + 2, "next_seq at {n} compacted ids");
        }
        let floor = OpResult::from_latencies(
            runstore::bench::Operation::ReadTail,
            LOOKUPS as u64,
            started.elapsed(),
            floor,
        );
        let (mut appends, started) = (Vec::with_capacity(DUPLICATES), Instant::now());
        for _ in 0..DUPLICATES {
            let seq = pick();
            let event =
                crate::baseline::bench_event(run, compacted_event_id(seq).as_str(), LIVE_MS);
            let began = Instant::now();
            let outcome = bench
                .block_on(store.append(&tenant, &event))
                .expect("duplicate append");
            appends.push(began.elapsed());
            assert!(
                outcome.seq == seq && !outcome.inserted,
                "a duplicate of the compacted id at seq {seq} answered {outcome:?}"
            );
        }
        let appends = OpResult::from_latencies(
            runstore::bench::Operation::SingleAppend,
            DUPLICATES as u64,
            started.elapsed(),
            appends,
        );
        drop(store);
        s.table.latency(
            &format!("seq_of compacted id, {} compacted", human(n as f64)),
            &Tally {
                rounds: vec![lookups],
            },
            Target::MillisAtMost(0.05),
        );
        s.table.latency(
            &format!("  floor: next_seq, {} compacted", human(n as f64)),
            &Tally {
                rounds: vec![floor],
            },
            Target::None,
        );
        s.table.latency(
            &format!("duplicate append of one, {} compacted", human(n as f64)),
            &Tally {
                rounds: vec![appends],
            },
            Target::MillisAtMost(1.0),
        );
        if let Some(footprint) = footprint {
            let per_id = footprint.rss_bytes as f64 / n as f64;
            s.table.custom(
                &format!("open memory, {} compacted", human(n as f64)),
                format!("{per_id:.0} B/id"),
                format!(
                    "fresh process: {} MiB RSS added, open {:.2} s",
                    footprint.rss_bytes / (1 << 20),
                    footprint.open_secs
                ),
                None,
                // Below a million ids the open's fixed costs dominate.
                if n >= 1_000_000 {
                    Target::BytesAtMost(150.0)
                } else {
                    Target::None
                },
                per_id,
            );
        }
        s.table.note(format!(
            "{} compacted ids: setup (relaxed import of the marker) {:.1} s; \
             {LOOKUPS} seq_of and {DUPLICATES} duplicate appends of random compacted ids, durable handle",
            human(n as f64),
            setup.as_secs_f64()
        ));
    }
}

// ---------------------------------------------------------------------------
// The peer comparison (issue 19).

/// One round of the checkpoint workload on `engine`, on a fresh durable
/// store named `name` in the scratch directory.
///
/// # Panics
/// When the store fails.
pub fn checkpoint_round<E: Engine>(
    bench: &Bench,
    engine: &E,
    name: &str,
    sizes: CheckpointSizes,
) -> CheckpointRun {
    let path = bench.path(&format!("{name}-{}", engine.location()));
    let store = open_store(bench, engine, &path, Durability::Durable);
    let run = bench
        .block_on(checkpoints::run_on_store(&store, sizes))
        .unwrap_or_else(|err| panic!("{}: checkpoint workload: {err}", engine.name()));
    drop(store);
    run
}

/// The checkpoint figures of one backend against the peer's, round by
/// round (`ours[i]` and `peer[i]` were measured in the same round, seconds
/// apart): snapshot puts, latest p50 (as the peer's p50 over ours, so
/// above 1 is faster) and single appends of the same payload against the
/// peer's puts.
pub fn checkpoints_vs_peer(
    table: &mut RatioTable,
    backend: &str,
    peer_name: &str,
    ours: &[CheckpointRun],
    peer: &[CheckpointRun],
    targets: PeerTargets,
) {
    let per_round = |f: &dyn Fn(&CheckpointRun, &CheckpointRun) -> f64| -> Vec<f64> {
        ours.iter().zip(peer).map(|(o, p)| f(o, p)).collect()
    };
    let mid =
        |f: &dyn Fn(&CheckpointRun) -> f64, runs: &[CheckpointRun]| median(runs.iter().map(f));
    let puts = |run: &CheckpointRun| run.puts_per_sec;
    let p50 = |run: &CheckpointRun| run.latest_p50_us;
    table.ratio_of_rounds(
        &format!("{backend}: snapshot put, one after another"),
        format!("{}/s", human(mid(&puts, ours))),
        format!("{peer_name} put {}/s", human(mid(&puts, peer))),
        &per_round(&|o, p| o.puts_per_sec / p.puts_per_sec.max(f64::MIN_POSITIVE)),
        target(targets.put),
    );
    table.ratio_of_rounds(
        &format!("{backend}: latest snapshot, p50 (peer / ours)"),
        format!("{:.1} us", mid(&p50, ours)),
        format!("{peer_name} {:.1} us", mid(&p50, peer)),
        &per_round(&|o, p| p.latest_p50_us / o.latest_p50_us.max(f64::MIN_POSITIVE)),
        target(targets.latest),
    );
    let appends = |run: &CheckpointRun| run.appends_per_sec.unwrap_or(0.0);
    table.ratio_of_rounds(
        &format!("{backend}: single event append, same payload"),
        format!("{}/s", human(mid(&appends, ours))),
        format!("{peer_name} put {}/s", human(mid(&puts, peer))),
        &per_round(&|o, p| {
            o.appends_per_sec.unwrap_or(0.0) / p.puts_per_sec.max(f64::MIN_POSITIVE)
        }),
        target(targets.append),
    );
}

/// The ratios one backend's checkpoint figures must reach against the peer.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerTargets {
    /// Snapshot puts/s over the peer's puts/s.
    pub put: Option<f64>,
    /// The peer's latest p50 over ours.
    pub latest: Option<f64>,
    /// Single appends/s over the peer's puts/s.
    pub append: Option<f64>,
}
