//! The standard workload, run against any store.
//!
//! One body of operations over `Arc<dyn Storage>`, so every backend is measured
//! by the same code: the `runstore bench` command runs it on each backend
//! named, and the criterion benches in `benches/` call the same methods.
//!
//! The operations, each returning an [`OpResult`] (events/s, calls/s,
//! p50/p99 latency per call):
//!
//! - [`Workload::single_append`]: one task, one event per `append` call, into
//!   one stream.
//! - [`Workload::concurrent_append`]: [`WorkloadConfig::concurrency`] tokio
//!   tasks appending one event per call to one shared stream.
//! - [`Workload::batch_append`]: batches of [`WorkloadConfig::batch_size`]
//!   events into one stream.
//! - [`Workload::preload`]: [`WorkloadConfig::events`] events across
//!   [`WorkloadConfig::runs`] runs through large `append_batch` calls.
//! - [`Workload::read_tail`]: the last [`WorkloadConfig::tail`] records of
//!   one preloaded run.
//! - [`Workload::read_feed`]: the tenant's feed (CONTRACT §29) walked from
//!   its start in reads of [`WorkloadConfig::tail`] records, to set beside
//!   the tail read of the same size.
//! - [`Workload::follow_feed`]: how long a record takes from the start of
//!   its `append` to its delivery by `follow_feed`, one record at a time.
//! - [`Workload::compact`]: one store-wide compaction of the preloaded runs,
//!   each with a snapshot near its end as the floor (CONTRACT §8).
//! - [`Workload::maintenance_under_load`]: that compaction, then a prune of
//!   an older snapshot per run, each while one task appends single events
//!   to another run; the appender's latencies show how long maintenance
//!   holds writers up.
//!
//! [`fdatasync_rate`] measures the raw baseline of the disk under a store
//! directory, for reporting each figure as a ratio of what the disk allows.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use runstore::bench::{Workload, WorkloadConfig};
//! use runstore_core::{MemoryStore, Storage};
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! let store: Arc<dyn Storage> = Arc::new(MemoryStore::new());
//! let config = WorkloadConfig { events: 1_000, runs: 10, ..WorkloadConfig::default() };
//! let report = Workload::new(store, config).run().await?;
//! // Seven operations, then compaction and prune, each with its appender.
//! assert_eq!(report.results.len(), 11);
//! # Ok::<_, runstore_core::Error>(())
//! # }).unwrap();
//! ```

use std::{
    fmt,
    future::Future,
    io::Write as _,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt as _, stream};
use runstore_core::{
    Error, EventId, EventLogExt as _, EventRecord, FeedPosition, FollowOptions, MaintenanceReport,
    ReadQuery, Result, RunId, RunStatus, SnapshotId, SnapshotRecord, Storage, Tenant,
};
use serde::{Deserialize, Serialize};

/// `occurred_at_ms` of the first preloaded event of each run; event `k` of a
/// run occurred at `PRELOAD_BASE_MS + k`.
const PRELOAD_BASE_MS: u64 = 1_700_000_000_000;
/// `occurred_at_ms` of the events the write operations append: far after
/// any compaction's cutoff, so compaction only touches preloaded runs.
const LIVE_MS: u64 = 4_000_000_000_000;
/// How many snapshot puts [`Workload::compact`] keeps in flight.
const SNAPSHOT_PUT_CONCURRENCY: usize = 16;

/// The sizes of the standard workload.
///
/// The defaults are small, so that `runstore bench` finishes in seconds on
/// the embedded backends; the criterion benches raise `events` to 1M.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadConfig {
    /// Events preloaded for the read and compaction operations, spread
    /// evenly over `runs`.
    pub events: u64,
    /// Runs the preloaded events are spread over.
    pub runs: u64,
    /// Concurrent appender tasks in [`Workload::concurrent_append`].
    pub concurrency: u64,
    /// Events per call in [`Workload::batch_append`].
    pub batch_size: u64,
    /// Calls of [`Workload::single_append`] in [`Workload::run`].
    pub appends: u64,
    /// Calls per task of [`Workload::concurrent_append`] in [`Workload::run`].
    pub appends_per_task: u64,
    /// Calls of [`Workload::batch_append`] in [`Workload::run`].
    pub batches: u64,
    /// Calls of [`Workload::read_tail`] in [`Workload::run`].
    pub reads: u64,
    /// Records per tail read.
    pub tail: u64,
    /// Events per `append_batch` call while preloading.
    pub preload_batch: u64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            events: 10_000,
            runs: 100,
            concurrency: 64,
            batch_size: 100,
            appends: 200,
            appends_per_task: 4,
            batches: 20,
            reads: 200,
            tail: 100,
            preload_batch: 1_000,
        }
    }
}

impl WorkloadConfig {
    /// Preloaded events per run (`events / runs`, at least 1 when `events`
    /// is not 0).
    pub fn events_per_run(&self) -> u64 {
        if self.events == 0 {
            0
        } else {
            (self.events / self.runs.max(1)).max(1)
        }
    }

    /// The seq of the snapshot [`Workload::compact`] puts in each preloaded
    /// run: the newest tenth of the run stays live.
    pub fn snapshot_seq(&self) -> u64 {
        let per_run = self.events_per_run();
        (per_run - per_run / 10).max(1)
    }

    fn checked(self) -> Result<Self> {
        let positive = [
            ("runs", self.runs),
            ("concurrency", self.concurrency),
            ("batch_size", self.batch_size),
            ("tail", self.tail),
            ("preload_batch", self.preload_batch),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(Error::invalid(format!(
                "bench workload: {name} must be at least 1"
            )));
        }
        Ok(self)
    }
}

/// One operation of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// One task appending one event per call.
    SingleAppend,
    /// Many tasks appending one event per call to one stream.
    ConcurrentAppend,
    /// Batches into one stream.
    BatchAppend,
    /// Loading the read and compaction data set in large batches.
    Preload,
    /// The last records of one run of the preloaded store.
    ReadTail,
    /// Pages of the tenant's feed, walked from its start.
    ReadFeed,
    /// From the start of an append to the record's delivery by
    /// `follow_feed`.
    FollowFeed,
    /// Store-wide compaction of the preloaded store.
    Compact,
    /// Single appends to another run while [`Operation::Compact`] runs.
    AppendDuringCompact,
    /// Store-wide snapshot prune: one older snapshot per preloaded run.
    Prune,
    /// Single appends to another run while [`Operation::Prune`] runs.
    AppendDuringPrune,
    /// The raw baseline: 200-byte write and `fdatasync` in a loop.
    RawFdatasync,
    /// A backend's bare driver baseline: one insert per durable commit, no
    /// runstore code (for example an autocommit `INSERT` loop in SQLite).
    BareInsert,
}

impl Operation {
    /// The operation's name as it appears in JSON and tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::SingleAppend => "single_append",
            Self::ConcurrentAppend => "concurrent_append",
            Self::BatchAppend => "batch_append",
            Self::Preload => "preload",
            Self::ReadTail => "read_tail",
            Self::ReadFeed => "read_feed",
            Self::FollowFeed => "follow_feed",
            Self::Compact => "compact",
            Self::AppendDuringCompact => "append_during_compact",
            Self::Prune => "prune",
            Self::AppendDuringPrune => "append_during_prune",
            Self::RawFdatasync => "raw_fdatasync",
            Self::BareInsert => "bare_insert",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What one operation measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpResult {
    /// The operation.
    pub operation: Operation,
    /// Store calls made (appends, batches, reads, compactions, syncs).
    pub calls: u64,
    /// Events written, read or pruned by those calls.
    pub events: u64,
    /// Wall time of the whole operation, in seconds.
    pub elapsed_secs: f64,
    /// `events / elapsed_secs`.
    pub events_per_sec: f64,
    /// `calls / elapsed_secs`.
    pub calls_per_sec: f64,
    /// Median latency of one call, in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency of one call, in microseconds.
    pub p99_us: f64,
}

impl OpResult {
    /// Builds a result from per-call latencies and the operation's wall time.
    pub fn from_latencies(
        operation: Operation,
        events: u64,
        elapsed: Duration,
        mut latencies: Vec<Duration>,
    ) -> Self {
        latencies.sort_unstable();
        let calls = u64::try_from(latencies.len()).unwrap_or(u64::MAX);
        let secs = elapsed.as_secs_f64();
        let rate = |n: u64| {
            if secs > 0.0 { n as f64 / secs } else { 0.0 }
        };
        Self {
            operation,
            calls,
            events,
            elapsed_secs: secs,
            events_per_sec: rate(events),
            calls_per_sec: rate(calls),
            p50_us: percentile_us(&latencies, 50),
            p99_us: percentile_us(&latencies, 99),
        }
    }

    /// The operation's wall time.
    pub fn elapsed(&self) -> Duration {
        Duration::from_secs_f64(self.elapsed_secs.max(0.0))
    }
}

/// Nearest-rank percentile of sorted latencies, in microseconds; 0 when empty.
fn percentile_us(sorted: &[Duration], percent: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank - 1].as_secs_f64() * 1e6
}

/// Every operation of one [`Workload::run`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadReport {
    /// The sizes used.
    pub config: WorkloadConfig,
    /// One result per operation, in the order run.
    pub results: Vec<OpResult>,
}

impl WorkloadReport {
    /// The result of `operation`, if it ran.
    pub fn get(&self, operation: Operation) -> Option<&OpResult> {
        self.results
            .iter()
            .find(|result| result.operation == operation)
    }
}

/// Progress within one operation: `done` of `total` steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressUpdate {
    /// The operation running.
    pub operation: Operation,
    /// Steps finished so far.
    pub done: u64,
    /// Steps the operation takes.
    pub total: u64,
}

/// A callback told of each finished step (for a progress bar); cheap to
/// clone and callable from any task.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<dyn Fn(ProgressUpdate) + Send + Sync>>);

impl Progress {
    /// No reporting.
    pub fn none() -> Self {
        Self(None)
    }

    /// Calls `report` after each step of each operation.
    pub fn new(report: impl Fn(ProgressUpdate) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(report)))
    }

    fn report(&self, operation: Operation, done: u64, total: u64) {
        if let Some(report) = &self.0 {
            report(ProgressUpdate {
                operation,
                done,
                total,
            });
        }
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Progress")
            .field(&self.0.as_ref().map(|_| "callback"))
            .finish()
    }
}

/// The workload bound to one store.
///
/// The write operations append to three fixed runs (`bench-single`,
/// `bench-concurrent`, `bench-batch`) with fresh event ids on every call, so
/// they may be called any number of times on one store. The preloaded runs
/// are `bench-run-00000`, ... with event ids `e-<k>`; any [`Workload`] with
/// the same [`WorkloadConfig`] finds them, on this store or on the same
/// store reopened.
#[derive(Debug)]
pub struct Workload {
    store: Arc<dyn Storage>,
    tenant: Tenant,
    config: WorkloadConfig,
    progress: Progress,
    next_id: Arc<AtomicU64>,
    /// Further handles on the same store for the concurrent appenders.
    handles: Vec<Arc<dyn Storage>>,
    instance: String,
}

impl Workload {
    /// The workload over `store` with the given sizes, reporting no progress.
    pub fn new(store: Arc<dyn Storage>, config: WorkloadConfig) -> Self {
        Self {
            store,
            tenant: bench_tenant(),
            config,
            progress: Progress::none(),
            next_id: Arc::new(AtomicU64::new(0)),
            handles: Vec::new(),
            instance: instance_tag(),
        }
    }

    /// Spreads the appenders of [`Workload::concurrent_append`] over the
    /// main handle and `handles` (appender `i` uses handle `i % (n + 1)`), as
    /// separate processes or nodes would be: each handle must be another
    /// connection to the same store (for example another connection pool).
    #[must_use]
    pub fn with_handles(mut self, handles: Vec<Arc<dyn Storage>>) -> Self {
        self.handles = handles;
        self
    }

    /// Reports each step to `progress`.
    #[must_use]
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }

    /// The sizes in use.
    pub fn config(&self) -> &WorkloadConfig {
        &self.config
    }

    /// The store under test.
    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    /// The tenant every bench record belongs to.
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// Runs every operation once with the configured counts, in order:
    /// single, concurrent and batch appends, preload, tail reads, feed reads
    /// and follow latency (left out where the store has no feed), then
    /// compaction and prune, each with an appender beside it.
    ///
    /// # Errors
    /// The first error of the store, or `InvalidInput` for a config with a
    /// zero `runs`, `concurrency`, `batch_size`, `tail` or `preload_batch`.
    pub async fn run(&self) -> Result<WorkloadReport> {
        let config = self.config.checked()?;
        let results = vec![
            self.single_append(config.appends).await?,
            self.concurrent_append(config.appends_per_task).await?,
            self.batch_append(config.batches).await?,
            self.preload().await?,
            self.read_tail(config.reads).await?,
        ];
        let mut results = results;
        results.extend(self.read_feed(config.reads).await?);
        results.extend(self.follow_feed(config.appends.clamp(1, 100)).await?);
        results.extend(self.maintenance_under_load().await?);
        Ok(WorkloadReport { config, results })
    }

    /// `appends` calls of `append`, one event each, one after another, into
    /// the run `bench-single`. Against a durable store each call waits for
    /// its own sync (CONTRACT §16).
    ///
    /// # Errors
    /// The store's error; `Corrupt` if the store reports an event as a
    /// duplicate that was never appended.
    pub async fn single_append(&self, appends: u64) -> Result<OpResult> {
        let run = run_id("bench-single")?;
        let operation = Operation::SingleAppend;
        let mut latencies = Vec::with_capacity(capacity(appends));
        let start = Instant::now();
        for done in 1..=appends {
            let event = self.live_event(&run)?;
            let began = Instant::now();
            let outcome = self.store.append(&self.tenant, &event).await?;
            latencies.push(began.elapsed());
            check_inserted(outcome.inserted, &run)?;
            self.progress.report(operation, done, appends);
        }
        Ok(OpResult::from_latencies(
            operation,
            appends,
            start.elapsed(),
            latencies,
        ))
    }

    /// [`WorkloadConfig::concurrency`] tokio tasks, each making
    /// `appends_per_task` calls of `append` (one event each) into the one run
    /// `bench-concurrent`. A store that groups concurrent commits shows it
    /// here.
    ///
    /// # Errors
    /// The first store error of any task; `Corrupt` if an event is reported
    /// as a duplicate or the stream's seqs are not gapless afterwards.
    pub async fn concurrent_append(&self, appends_per_task: u64) -> Result<OpResult> {
        let config = self.config.checked()?;
        let run = run_id("bench-concurrent")?;
        let operation = Operation::ConcurrentAppend;
        let total = config.concurrency.saturating_mul(appends_per_task);
        let before = self.store.next_seq(&self.tenant, &run).await?;
        let done = Arc::new(AtomicU64::new(0));

        let mut tasks = Vec::with_capacity(capacity(config.concurrency));
        for _ in 0..config.concurrency {
            let events = (0..appends_per_task)
                .map(|_| self.live_event(&run))
                .collect::<Result<Vec<_>>>()?;
            tasks.push((events, Arc::clone(&done)));
        }
        let start = Instant::now();
        let handles: Vec<_> = tasks
            .into_iter()
            .enumerate()
            .map(|(index, (events, done))| {
                let store = Arc::clone(self.handle(index));
                let tenant = self.tenant.clone();
                let progress = self.progress.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(events.len());
                    for event in &events {
                        let began = Instant::now();
                        let outcome = store.append(&tenant, event).await?;
                        latencies.push(began.elapsed());
                        check_inserted(outcome.inserted, &event.run_id)?;
                        let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                        progress.report(operation, finished, total);
                    }
                    Ok::<_, Error>(latencies)
                })
            })
            .collect();
        let mut latencies = Vec::with_capacity(capacity(total));
        let mut first_error = None;
        for handle in handles {
            match join(handle).await {
                Ok(task) => latencies.extend(task),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        let elapsed = start.elapsed();
        if let Some(err) = first_error {
            return Err(err);
        }
        let after = self.store.next_seq(&self.tenant, &run).await?;
        if after.checked_sub(before) != Some(total) {
            return Err(Error::corrupt(
                format!("bench run {run}"),
                format!(
                    "{total} concurrent appends moved next_seq from {before} to {after} (CONTRACT §1)"
                ),
            ));
        }
        Ok(OpResult::from_latencies(
            operation, total, elapsed, latencies,
        ))
    }

    /// `batches` calls of `append_batch` with [`WorkloadConfig::batch_size`]
    /// new events each, into the run `bench-batch`.
    ///
    /// # Errors
    /// The store's error; `Corrupt` if an event is reported as a duplicate.
    pub async fn batch_append(&self, batches: u64) -> Result<OpResult> {
        let config = self.config.checked()?;
        let run = run_id("bench-batch")?;
        let operation = Operation::BatchAppend;
        let mut latencies = Vec::with_capacity(capacity(batches));
        let mut elapsed = Duration::ZERO;
        for done in 1..=batches {
            let events = (0..config.batch_size)
                .map(|_| self.live_event(&run))
                .collect::<Result<Vec<_>>>()?;
            let began = Instant::now();
            let outcomes = self
                .store
                .append_batch(&self.tenant, &run, &events, None)
                .await?;
            let took = began.elapsed();
            elapsed += took;
            latencies.push(took);
            for outcome in outcomes {
                check_inserted(outcome.inserted, &run)?;
            }
            self.progress.report(operation, done, batches);
        }
        // Building the events is not the store's work: the wall time is the
        // sum of the calls.
        Ok(OpResult::from_latencies(
            operation,
            batches.saturating_mul(config.batch_size),
            elapsed,
            latencies,
        ))
    }

    /// Loads [`WorkloadConfig::events`] events spread over
    /// [`WorkloadConfig::runs`] runs, [`WorkloadConfig::preload_batch`]
    /// events per `append_batch` call, run after run. Events already present
    /// are skipped by the store (CONTRACT §2), so preloading twice is
    /// harmless. For the fastest load, pass a store opened with
    /// `Durability::Relaxed` and reopen it durable afterwards.
    ///
    /// # Errors
    /// The store's error.
    pub async fn preload(&self) -> Result<OpResult> {
        let config = self.config.checked()?;
        let operation = Operation::Preload;
        let per_run = config.events_per_run();
        let runs = if per_run == 0 { 0 } else { config.runs };
        let chunks_per_run = per_run.div_ceil(config.preload_batch);
        let total = runs * chunks_per_run;
        let mut latencies = Vec::with_capacity(capacity(total));
        let mut elapsed = Duration::ZERO;
        let mut written = 0u64;
        let mut done = 0u64;
        for index in 0..runs {
            let run = preload_run(index)?;
            let mut from = 0;
            while from < per_run {
                let to = (from + config.preload_batch).min(per_run);
                let events = (from..to)
                    .map(|k| self.preload_event(&run, k))
                    .collect::<Result<Vec<_>>>()?;
                let began = Instant::now();
                let outcomes = self
                    .store
                    .append_batch(&self.tenant, &run, &events, None)
                    .await?;
                let took = began.elapsed();
                elapsed += took;
                latencies.push(took);
                written += outcomes.iter().filter(|outcome| outcome.inserted).count() as u64;
                done += 1;
                self.progress.report(operation, done, total);
                from = to;
            }
        }
        Ok(OpResult::from_latencies(
            operation, written, elapsed, latencies,
        ))
    }

    /// `reads` calls of `read` with `ReadQuery::tail(tail)`, each on another
    /// preloaded run (a fixed stride through the runs, so reads do not keep
    /// hitting one cached run). Call after [`Workload::preload`].
    ///
    /// # Errors
    /// The store's error; `Corrupt` when a run returns fewer records than
    /// the preload wrote (before compaction) or out of order.
    pub async fn read_tail(&self, reads: u64) -> Result<OpResult> {
        let config = self.config.checked()?;
        let operation = Operation::ReadTail;
        let per_run = config.events_per_run();
        if per_run == 0 {
            return Err(Error::invalid(
                "bench workload: read_tail needs preloaded events (events >= 1)",
            ));
        }
        let expected = usize::try_from(config.tail.min(per_run)).unwrap_or(usize::MAX);
        let runs = (0..config.runs.min(reads.max(1)))
            .map(|index| preload_run(stride(index, config.runs)))
            .collect::<Result<Vec<_>>>()?;
        let limit = usize::try_from(config.tail).unwrap_or(usize::MAX);
        let mut latencies = Vec::with_capacity(capacity(reads));
        let mut events = 0u64;
        let start = Instant::now();
        for done in 0..reads {
            let slot = usize::try_from(done % runs.len() as u64).unwrap_or(0);
            let run = &runs[slot];
            let began = Instant::now();
            let records = self
                .store
                .read(&self.tenant, run, ReadQuery::tail(limit))
                .await?;
            latencies.push(began.elapsed());
            let ascending = records.windows(2).all(|pair| pair[0].seq < pair[1].seq);
            if records.len() < expected.min(limit) || !ascending {
                return Err(Error::corrupt(
                    format!("bench run {run}"),
                    format!(
                        "tail read returned {} records (ascending: {ascending}), expected {expected}",
                        records.len()
                    ),
                ));
            }
            events += records.len() as u64;
            self.progress.report(operation, done + 1, reads);
        }
        Ok(OpResult::from_latencies(
            operation,
            events,
            start.elapsed(),
            latencies,
        ))
    }

    /// `reads` calls of `read_feed`, each of [`WorkloadConfig::tail`]
    /// records after the last position the previous call returned, from the
    /// start of the tenant's feed (and from the start again when a call
    /// reaches its end): a reader catching up, read for read beside
    /// [`Workload::read_tail`]. `None` when the store has no feed.
    ///
    /// # Errors
    /// The store's error; `Corrupt` when a page is out of order or the feed
    /// is empty.
    pub async fn read_feed(&self, reads: u64) -> Result<Option<OpResult>> {
        let config = self.config.checked()?;
        let operation = Operation::ReadFeed;
        let limit = usize::try_from(config.tail).unwrap_or(usize::MAX);
        let mut after = FeedPosition::START;
        let mut latencies = Vec::with_capacity(capacity(reads));
        let mut events = 0u64;
        let start = Instant::now();
        for done in 0..reads {
            let began = Instant::now();
            let page = match self.store.read_feed(&self.tenant, after, limit).await {
                Ok(page) => page,
                Err(Error::Unsupported { .. }) => return Ok(None),
                Err(error) => return Err(error),
            };
            latencies.push(began.elapsed());
            let ascending = page
                .windows(2)
                .all(|pair| pair[0].position < pair[1].position);
            if !ascending || (page.is_empty() && after == FeedPosition::START) {
                return Err(Error::corrupt(
                    "bench feed",
                    format!(
                        "a feed read returned {} records (ascending: {ascending})",
                        page.len()
                    ),
                ));
            }
            events += page.len() as u64;
            after = match page.last() {
                Some(last) if page.len() == limit => last.position,
                _ => FeedPosition::START,
            };
            self.progress.report(operation, done + 1, reads);
        }
        Ok(Some(OpResult::from_latencies(
            operation,
            events,
            start.elapsed(),
            latencies,
        )))
    }

    /// `appends` single appends to a tenant of their own, each waited for
    /// at a `follow_feed` of that tenant before the next: the latency of
    /// each is from the start of its `append` to its delivery. `None` when
    /// the store has no feed.
    ///
    /// # Errors
    /// The store's error; `Corrupt` when the follower delivers another
    /// record than the one appended, or nothing within a minute.
    pub async fn follow_feed(&self, appends: u64) -> Result<Option<OpResult>> {
        let operation = Operation::FollowFeed;
        let tenant = Tenant::new("bench", format!("follow-{}", self.instance), None)?;
        match self.store.read_feed(&tenant, FeedPosition::START, 1).await {
            Err(Error::Unsupported { .. }) => return Ok(None),
            other => other?,
        };
        let run = run_id("bench-follow")?;
        let options = FollowOptions {
            poll_interval: Duration::from_millis(100),
            batch: 16,
        };
        let mut follower = self
            .store
            .follow_feed(&tenant, FeedPosition::START, options);
        let mut latencies = Vec::with_capacity(capacity(appends));
        let start = Instant::now();
        for done in 1..=appends {
            let mut event = self.live_event(&run)?;
            tenant.stamp(&mut event.scope.tenant_context);
            let began = Instant::now();
            let outcome = self.store.append(&tenant, &event).await?;
            check_inserted(outcome.inserted, &run)?;
            let delivered = tokio::time::timeout(Duration::from_secs(60), follower.next()).await;
            let latency = began.elapsed();
            match delivered {
                Ok(Some(Ok(entry))) if entry.record.event_id == event.event_id => {}
                other => {
                    return Err(Error::corrupt(
                        "bench follow",
                        format!(
                            "the follower delivered {:?} instead of {}",
                            other.map(|next| next.map(|entry| entry.map(|e| e.record.event_id))),
                            event.event_id
                        ),
                    ));
                }
            }
            latencies.push(latency);
            self.progress.report(operation, done, appends);
        }
        Ok(Some(OpResult::from_latencies(
            operation,
            appends,
            start.elapsed(),
            latencies,
        )))
    }

    /// One store-wide `compact` call over the preloaded store. First (not
    /// timed) puts in each preloaded run a snapshot at
    /// [`WorkloadConfig::snapshot_seq`], the floor below which old events
    /// are pruned (CONTRACT §8); then compacts with a cutoff after every
    /// preloaded event and before every event of the write operations.
    /// `events` of the result is the number of events pruned.
    ///
    /// # Errors
    /// The store's error.
    pub async fn compact(&self) -> Result<OpResult> {
        let config = self.config.checked()?;
        let operation = Operation::Compact;
        let per_run = config.events_per_run();
        let runs = if per_run == 0 { 0 } else { config.runs };
        let snapshot_seq = config.snapshot_seq();
        let total = runs + 1;
        let snapshots = (0..runs)
            .map(|index| {
                let run = preload_run(index)?;
                Ok(SnapshotRecord::new(
                    &self.tenant,
                    run,
                    SnapshotId::new("bench-floor")?,
                    snapshot_seq,
                    PRELOAD_BASE_MS + per_run,
                    RunStatus::Running,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let put_done = AtomicU64::new(0);
        let mut puts = stream::iter(snapshots.iter())
            .map(|snapshot| async {
                self.store.put(&self.tenant, snapshot).await?;
                let finished = put_done.fetch_add(1, Ordering::Relaxed) + 1;
                self.progress.report(operation, finished, total);
                Ok::<_, Error>(())
            })
            .buffer_unordered(SNAPSHOT_PUT_CONCURRENCY);
        while let Some(put) = puts.next().await {
            put?;
        }

        let now_ms = PRELOAD_BASE_MS + per_run + 1;
        let began = Instant::now();
        let report = self.store.compact(1, now_ms).await?;
        let took = began.elapsed();
        check_clean(&report, "compaction")?;
        let pruned = report.removed;
        self.progress.report(operation, total, total);
        Ok(OpResult::from_latencies(
            operation,
            pruned as u64,
            took,
            vec![took],
        ))
    }

    /// [`Workload::compact`], then a prune that deletes one older snapshot
    /// of each preloaded run (put before it, not timed), each while one task
    /// appends single events, one after another, to the run
    /// `bench-during-<operation>` until the pass returns. Answers the
    /// compaction, the appends during it, the prune and the appends during
    /// it. Compare the appends' p99 with [`Workload::single_append`]'s: the
    /// difference is how long maintenance holds a writer up.
    ///
    /// # Errors
    /// The store's error; `Corrupt` if a pass reports a failed stream.
    pub async fn maintenance_under_load(&self) -> Result<[OpResult; 4]> {
        let config = self.config.checked()?;
        let per_run = config.events_per_run();
        let runs = if per_run == 0 { 0 } else { config.runs };
        let older = (0..runs)
            .map(|index| {
                Ok(SnapshotRecord::new(
                    &self.tenant,
                    preload_run(index)?,
                    SnapshotId::new("bench-older")?,
                    1,
                    PRELOAD_BASE_MS,
                    RunStatus::Running,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut puts = stream::iter(older.iter())
            .map(|snapshot| self.store.put(&self.tenant, snapshot))
            .buffer_unordered(SNAPSHOT_PUT_CONCURRENCY);
        while let Some(put) = puts.next().await {
            put?;
        }
        let (compact, during_compact) = self
            .with_appender(Operation::AppendDuringCompact, self.compact())
            .await?;
        let now_ms = PRELOAD_BASE_MS + per_run + 1;
        let prune = async {
            let began = Instant::now();
            let report = self.store.prune(1, 1, now_ms).await?;
            let took = began.elapsed();
            check_clean(&report, "prune")?;
            self.progress.report(Operation::Prune, 1, 1);
            Ok(OpResult::from_latencies(
                Operation::Prune,
                report.removed as u64,
                took,
                vec![took],
            ))
        };
        let (prune, during_prune) = self
            .with_appender(Operation::AppendDuringPrune, prune)
            .await?;
        Ok([compact, during_compact, prune, during_prune])
    }

    /// Runs `pass` while one task appends single events to the run
    /// `bench-during-<operation>` until `pass` returns (at least one
    /// append); answers the pass's result and the appends' figures.
    async fn with_appender(
        &self,
        operation: Operation,
        pass: impl Future<Output = Result<OpResult>>,
    ) -> Result<(OpResult, OpResult)> {
        let run = run_id(&format!("bench-during-{}", operation.name()))?;
        let done = AtomicBool::new(false);
        let pass = async {
            let result = pass.await;
            done.store(true, Ordering::Release);
            result
        };
        let appender = async {
            let mut latencies = Vec::new();
            let start = Instant::now();
            while latencies.is_empty() || !done.load(Ordering::Acquire) {
                let event = self.live_event(&run)?;
                let began = Instant::now();
                let outcome = self.store.append(&self.tenant, &event).await?;
                latencies.push(began.elapsed());
                check_inserted(outcome.inserted, &run)?;
            }
            let appends = u64::try_from(latencies.len()).unwrap_or(u64::MAX);
            Ok::<_, Error>(OpResult::from_latencies(
                operation,
                appends,
                start.elapsed(),
                latencies,
            ))
        };
        let (pass, appends) = futures::future::join(pass, appender).await;
        Ok((pass?, appends?))
    }

    /// The handle of concurrent appender `index`.
    fn handle(&self, index: usize) -> &Arc<dyn Storage> {
        match index % (self.handles.len() + 1) {
            0 => &self.store,
            other => &self.handles[other - 1],
        }
    }

    fn live_event(&self, run: &RunId) -> Result<EventRecord> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = EventId::new(format!("live-{}-{n}", self.instance))?;
        Ok(
            EventRecord::new(&self.tenant, run.clone(), id, "bench.live", LIVE_MS)
                .with_payload(payload(n)),
        )
    }

    fn preload_event(&self, run: &RunId, k: u64) -> Result<EventRecord> {
        let id = EventId::new(format!("e-{k}"))?;
        Ok(EventRecord::new(
            &self.tenant,
            run.clone(),
            id,
            "bench.preloaded",
            PRELOAD_BASE_MS + k,
        )
        .with_payload(payload(k)))
    }
}

/// `Corrupt` naming the first stream `report` failed, if any.
fn check_clean(report: &MaintenanceReport, pass: &str) -> Result<()> {
    match report.failed.first() {
        Some(failure) => Err(Error::corrupt(
            format!("stream {}", failure.stream),
            format!("the bench's {pass} failed: {}", failure.error),
        )),
        None => Ok(()),
    }
}

/// A tag that keeps the event ids of this workload's write operations apart
/// from those of any earlier workload on the same (reopened) store, so that
/// appends never turn into duplicate checks. std's `RandomState` is seeded
/// randomly per process and differs per instance, which is all a tag needs.
fn instance_tag() -> String {
    use std::hash::{BuildHasher as _, RandomState};
    format!("{:016x}", RandomState::new().hash_one(0u8))
}

/// The tenant of every bench record.
pub fn bench_tenant() -> Tenant {
    Tenant::new("bench", "bench", None).expect("constant ids are valid")
}

/// The run id of the preloaded run `index`.
///
/// # Errors
/// Never for in-range indexes; typed for symmetry with `RunId::new`.
pub fn preload_run(index: u64) -> Result<RunId> {
    run_id(&format!("bench-run-{index:05}"))
}

fn run_id(value: &str) -> Result<RunId> {
    RunId::new(value)
}

/// The i-th run of a fixed stride through `runs` runs, visiting each once
/// per `runs` steps when the stride is coprime with `runs`.
fn stride(index: u64, runs: u64) -> u64 {
    const STRIDE: u64 = 7_919;
    let step = if runs.is_multiple_of(STRIDE) {
        1
    } else {
        STRIDE
    };
    (index.wrapping_mul(step)) % runs
}

/// A small, typical payload (about 100 bytes of JSON).
fn payload(n: u64) -> serde_json::Value {
    serde_json::json!({
        "step": n,
        "status": "ok",
        "detail": "benchmark event with a short human-readable detail",
    })
}

fn check_inserted(inserted: bool, run: &RunId) -> Result<()> {
    if inserted {
        Ok(())
    } else {
        Err(Error::corrupt(
            format!("bench run {run}"),
            "a fresh event id was reported as a duplicate (CONTRACT §2)",
        ))
    }
}

fn capacity(n: u64) -> usize {
    usize::try_from(n.min(1 << 20)).unwrap_or(0)
}

async fn join<T>(handle: tokio::task::JoinHandle<Result<T>>) -> Result<T> {
    match handle.await {
        Ok(result) => result,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => Err(Error::io(
            "joining a bench appender task",
            std::io::Error::other(err),
        )),
    }
}

/// The raw baseline: for `duration`, writes 200 bytes to the end of a
/// temporary file in `dir` and calls `fdatasync` (`File::sync_data`), in a
/// loop. `events` and `calls` of the result are the number of synced writes.
///
/// This is the most a store that syncs each append on its own can reach on
/// that disk; an appending file also makes each sync flush the file size, as
/// a log's append does. The blocking loop runs on tokio's blocking pool. The
/// file is removed at the end.
///
/// # Errors
/// `Io` when the file cannot be created, written or synced.
pub async fn fdatasync_rate(dir: &Path, duration: Duration) -> Result<OpResult> {
    let dir = dir.to_path_buf();
    let handle = tokio::task::spawn_blocking(move || fdatasync_loop(&dir, duration));
    join(handle).await
}

fn fdatasync_loop(dir: &Path, duration: Duration) -> Result<OpResult> {
    let mut file = tempfile::Builder::new()
        .prefix(".runstore-fdatasync-")
        .tempfile_in(dir)
        .map_err(|err| Error::io(format!("creating a file in {}", dir.display()), err))?;
    let path = file.path().display().to_string();
    let record = [b'x'; 200];
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration || latencies.is_empty() {
        let began = Instant::now();
        file.write_all(&record)
            .map_err(|err| Error::io(format!("writing {path}"), err))?;
        file.as_file()
            .sync_data()
            .map_err(|err| Error::io(format!("syncing {path}"), err))?;
        latencies.push(began.elapsed());
    }
    let elapsed = start.elapsed();
    let syncs = latencies.len() as u64;
    file.close()
        .map_err(|err| Error::io(format!("removing {path}"), err))?;
    Ok(OpResult::from_latencies(
        Operation::RawFdatasync,
        syncs,
        elapsed,
        latencies,
    ))
}

#[cfg(test)]
mod tests {
    use runstore_core::{EventLog as _, MemoryStore, SnapshotStoreExt as _};

    use super::*;

    fn small() -> WorkloadConfig {
        WorkloadConfig {
            events: 1_000,
            runs: 10,
            concurrency: 8,
            batch_size: 10,
            appends: 20,
            appends_per_task: 3,
            batches: 5,
            reads: 30,
            tail: 50,
            preload_batch: 40,
        }
    }

    fn memory() -> Arc<dyn Storage> {
        Arc::new(MemoryStore::new())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_reports_every_operation_with_its_counts() {
        let store = memory();
        let updates = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&updates);
        let workload = Workload::new(Arc::clone(&store), small()).with_progress(Progress::new(
            move |update| seen.lock().unwrap().push(update),
        ));
        let report = workload.run().await.unwrap();

        let counts: Vec<_> = report
            .results
            .iter()
            .map(|r| (r.operation, r.calls, r.events))
            .collect();
        // The appenders beside compaction and prune append until the pass
        // returns: at least once, one event per call.
        for (during, (operation, calls, events)) in [
            (Operation::AppendDuringCompact, counts[8]),
            (Operation::AppendDuringPrune, counts[10]),
        ] {
            assert_eq!(operation, during);
            assert!(calls >= 1 && events == calls, "{operation}: {calls}");
        }
        // One older snapshot of each of the 10 runs.
        assert_eq!(counts[9], (Operation::Prune, 1, 10));
        assert_eq!(counts.len(), 11);
        // The feed holds the 94 events appended before it and the 1,000
        // preloaded: 21 full reads of 50, one of the last 44, then from the
        // start again, 8 more.
        assert_eq!(counts[5], (Operation::ReadFeed, 30, 21 * 50 + 44 + 8 * 50));
        assert_eq!(counts[6], (Operation::FollowFeed, 20, 20));
        assert_eq!(
            [&counts[..5], &counts[7..8]].concat(),
            vec![
                (Operation::SingleAppend, 20, 20),
                (Operation::ConcurrentAppend, 24, 24),
                (Operation::BatchAppend, 5, 50),
                // 100 events per run in chunks of 40: 3 calls per run.
                (Operation::Preload, 30, 1_000),
                (Operation::ReadTail, 30, 30 * 50),
                // Snapshot floor at seq 90: seqs 1..=89 of each run pruned.
                (Operation::Compact, 1, 890),
            ]
        );
        for result in &report.results {
            assert!(result.p50_us <= result.p99_us, "{result:?}");
            assert!(result.events_per_sec > 0.0, "{result:?}");
        }

        let tenant = bench_tenant();
        let single = RunId::new("bench-single").unwrap();
        assert_eq!(store.next_seq(&tenant, &single).await.unwrap(), 21);
        let concurrent = RunId::new("bench-concurrent").unwrap();
        assert_eq!(store.next_seq(&tenant, &concurrent).await.unwrap(), 25);
        let batch = RunId::new("bench-batch").unwrap();
        assert_eq!(store.next_seq(&tenant, &batch).await.unwrap(), 51);
        // The write runs are not touched by compaction.
        assert_eq!(
            store
                .read(&tenant, &single, ReadQuery::all())
                .await
                .unwrap()
                .len(),
            20
        );
        // A preloaded run: one marker, then seqs 90..=100.
        let run = preload_run(3).unwrap();
        let records = store.read(&tenant, &run, ReadQuery::all()).await.unwrap();
        assert!(records[0].is_compaction_marker());
        assert_eq!(records.len(), 12);
        assert_eq!(store.latest(&tenant, &run).await.unwrap().unwrap().seq, 90);

        let updates = updates.lock().unwrap();
        for operation in [
            Operation::SingleAppend,
            Operation::ConcurrentAppend,
            Operation::BatchAppend,
            Operation::Preload,
            Operation::ReadTail,
            Operation::Compact,
        ] {
            let last = updates
                .iter()
                .rfind(|u| u.operation == operation)
                .unwrap_or_else(|| panic!("no progress for {operation}"));
            assert_eq!(last.done, last.total, "{operation}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appenders_share_extra_handles() {
        let store = memory();
        let handles = vec![Arc::clone(&store), Arc::clone(&store)];
        let workload = Workload::new(Arc::clone(&store), small()).with_handles(handles);
        let result = workload.concurrent_append(5).await.unwrap();
        assert_eq!((result.calls, result.events), (40, 40));
        let run = RunId::new("bench-concurrent").unwrap();
        assert_eq!(store.next_seq(&bench_tenant(), &run).await.unwrap(), 41);
    }

    #[tokio::test]
    async fn write_operations_can_repeat_on_one_store() {
        let store = memory();
        let first = Workload::new(Arc::clone(&store), small());
        first.single_append(3).await.unwrap();
        first.single_append(3).await.unwrap();
        // A second workload on the same store appends fresh events too.
        let second = Workload::new(Arc::clone(&store), small());
        let result = second.single_append(4).await.unwrap();
        assert_eq!(result.events, 4);
        let run = RunId::new("bench-single").unwrap();
        assert_eq!(store.next_seq(&bench_tenant(), &run).await.unwrap(), 11);
    }

    #[tokio::test]
    async fn preload_twice_writes_nothing_new_and_reads_find_the_runs() {
        let store = memory();
        let workload = Workload::new(Arc::clone(&store), small());
        assert_eq!(workload.preload().await.unwrap().events, 1_000);
        assert_eq!(workload.preload().await.unwrap().events, 0);
        let again = Workload::new(store, small());
        let reads = again.read_tail(7).await.unwrap();
        assert_eq!((reads.calls, reads.events), (7, 7 * 50));
    }

    #[tokio::test]
    async fn read_tail_without_preload_fails_as_corrupt() {
        let workload = Workload::new(memory(), small());
        let err = workload.read_tail(1).await.unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }

    #[tokio::test]
    async fn zero_sizes_are_rejected() {
        let config = WorkloadConfig {
            concurrency: 0,
            ..small()
        };
        let err = Workload::new(memory(), config).run().await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let latencies: Vec<_> = (1..=100).map(Duration::from_micros).collect();
        let result =
            OpResult::from_latencies(Operation::ReadTail, 100, Duration::from_secs(2), latencies);
        assert_eq!(result.p50_us.round(), 50.0);
        assert_eq!(result.p99_us.round(), 99.0);
        assert_eq!(result.events_per_sec, 50.0);
        assert_eq!(result.calls, 100);
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["operation"], "read_tail");
    }

    #[test]
    fn stride_visits_every_run() {
        for runs in [1, 7, 10, 1_000, 7_919] {
            let mut seen: Vec<_> = (0..runs).map(|i| stride(i, runs)).collect();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len() as u64, runs);
        }
    }

    #[tokio::test]
    async fn fdatasync_rate_syncs_in_the_directory_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let result = fdatasync_rate(dir.path(), Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(result.operation, Operation::RawFdatasync);
        assert!(result.calls >= 1);
        assert_eq!(result.calls, result.events);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let missing = dir.path().join("missing");
        let err = fdatasync_rate(&missing, Duration::from_millis(1))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }
}
