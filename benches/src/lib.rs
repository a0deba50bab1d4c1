//! Shared plumbing of the runstore benches.
//!
//! Every bench binary (`benches/*.rs`) runs the one workload body of
//! [`runstore::bench`] against its backend, twice over:
//!
//! - as criterion benchmarks (the micro-figures, with criterion's own
//!   statistics and reports), and
//! - in interleaved rounds ([`interleave`]): a short window of the store's
//!   operation, then a short window of its baseline (raw `fdatasync`, a bare
//!   driver loop), again and again, so that each ratio compares figures
//!   measured seconds apart on a disk whose sync rate swings from minute to
//!   minute. The [`RatioTable`] printed at the end holds those ratios against
//!   each backend's targets.
//!
//! Sizes come from the environment: `RUNSTORE_BENCH_EVENTS` (events preloaded
//! for the read figures, default per backend, 1,000,000 for the embedded
//! ones), `RUNSTORE_BENCH_RUNS` (default 1,000 for those; the service
//! benches default to smaller stores), `RUNSTORE_BENCH_ROUNDS`
//! (default 4), `RUNSTORE_BENCH_WINDOW_MS` (default 500) and
//! `RUNSTORE_BENCH_DIR` (where the stores go, default the system temp dir).
//! Without `--bench` (as under `cargo test --benches`) everything runs once,
//! at a tiny size, as a smoke test.

use std::{
    cell::RefCell,
    future::Future,
    io::Write as _,
    path::{Path, PathBuf},
    pin::Pin,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use criterion::{Criterion, SamplingMode, Throughput};
use runstore::bench::{OpResult, Operation, Workload, WorkloadConfig, fdatasync_rate};
use runstore_core::{EventRecord, Store};
use tokio::runtime::Runtime;

#[cfg(feature = "s3")]
pub mod counting;

/// The child-process job of [`open_in_child`]: the store path to open.
pub const OPEN_CHILD_ENV: &str = "RUNSTORE_BENCH_OPEN_CHILD";

/// Per-binary context: runtime, sizes and a scratch directory.
#[derive(Debug)]
pub struct Bench {
    /// A multi-thread tokio runtime for the stores.
    pub rt: Runtime,
    /// Whether criterion was asked to benchmark (`--bench`); otherwise every
    /// figure runs once at a tiny size.
    pub benchmarking: bool,
    /// Events preloaded for the read figures.
    pub events: u64,
    /// Runs they are spread over.
    pub runs: u64,
    /// Interleaved rounds per ratio.
    pub rounds: u32,
    /// Length of one side of one round.
    pub window: Duration,
    /// Scratch directory for the stores, removed at the end.
    pub dir: tempfile::TempDir,
}

impl Bench {
    /// Reads the sizes from the environment (see the crate docs);
    /// `default_events` and `default_runs` apply when
    /// `RUNSTORE_BENCH_EVENTS` and `RUNSTORE_BENCH_RUNS` are unset.
    ///
    /// # Panics
    /// When the runtime or the scratch directory cannot be created, or a
    /// size variable is not a number.
    pub fn from_env(backend: &str, default_events: u64, default_runs: u64) -> Self {
        let benchmarking = std::env::args().any(|arg| arg == "--bench");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let parent =
            std::env::var_os("RUNSTORE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let dir = tempfile::Builder::new()
            .prefix(&format!("runstore-bench-{backend}-"))
            .tempdir_in(parent)
            .expect("a scratch directory for the bench stores");
        let (events, runs, rounds, window) = if benchmarking {
            (
                env_u64("RUNSTORE_BENCH_EVENTS", default_events),
                env_u64("RUNSTORE_BENCH_RUNS", default_runs).max(1),
                u32::try_from(env_u64("RUNSTORE_BENCH_ROUNDS", 4).max(1)).unwrap_or(u32::MAX),
                Duration::from_millis(env_u64("RUNSTORE_BENCH_WINDOW_MS", 500).max(1)),
            )
        } else {
            (2_000, 20, 1, Duration::from_millis(50))
        };
        Self {
            rt,
            benchmarking,
            events,
            runs,
            rounds,
            window,
            dir,
        }
    }

    /// The sizes of the write figures: 64 appenders, batches of 100, tail of
    /// 100, and the preload sizes of this bench.
    pub fn config(&self) -> WorkloadConfig {
        WorkloadConfig {
            events: self.events,
            runs: self.runs,
            concurrency: 64,
            batch_size: 100,
            tail: 100,
            preload_batch: 1_000,
            ..WorkloadConfig::default()
        }
    }

    /// A path inside the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs a future on the runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.rt.block_on(future)
    }

    /// Criterion configured from the command line, with short defaults
    /// (1 s warm-up, 3 s measurement, 10 samples) that the command line
    /// overrides.
    pub fn criterion(&self) -> Criterion {
        Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(10)
            .configure_from_args()
    }

    /// A one-line description of the sizes, for the table's title.
    pub fn describe(&self) -> String {
        format!(
            "{} events across {} runs preloaded; {} interleaved rounds of {} ms per side{}",
            self.events,
            self.runs,
            self.rounds,
            self.window.as_millis(),
            if self.benchmarking {
                ""
            } else {
                " (test mode: tiny sizes, figures meaningless)"
            }
        )
    }
}

/// A `u64` from the environment, or `default` when unset.
///
/// # Panics
/// When the variable is set but not a number.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

/// Prints a loud notice that a service bench is skipped, and why.
pub fn skip_loudly(backend: &str, variable: &str) {
    let line = "!".repeat(72);
    eprintln!(
        "{line}\n!! runstore {backend} bench SKIPPED: {variable} is not set.\n!! Start the service (see README) and set {variable} to run it.\n{line}"
    );
}

// ---------------------------------------------------------------------------
// Repeated measurements.

/// The rounds of one figure.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// One result per round.
    pub rounds: Vec<OpResult>,
}

impl Tally {
    /// Events over all rounds.
    pub fn events(&self) -> u64 {
        self.rounds.iter().map(|round| round.events).sum()
    }

    /// Calls over all rounds.
    pub fn calls(&self) -> u64 {
        self.rounds.iter().map(|round| round.calls).sum()
    }

    /// Seconds over all rounds.
    pub fn secs(&self) -> f64 {
        self.rounds.iter().map(|round| round.elapsed_secs).sum()
    }

    /// Events per second over all rounds.
    pub fn rate(&self) -> f64 {
        let secs = self.secs();
        if secs > 0.0 {
            self.events() as f64 / secs
        } else {
            0.0
        }
    }

    /// The median of the rounds' p50 latencies, in microseconds.
    pub fn p50_us(&self) -> f64 {
        median(self.rounds.iter().map(|round| round.p50_us))
    }

    /// The median of the rounds' p99 latencies, in microseconds.
    pub fn p99_us(&self) -> f64 {
        median(self.rounds.iter().map(|round| round.p99_us))
    }

    /// The lowest and highest per-round rate.
    pub fn rate_range(&self) -> (f64, f64) {
        self.rounds
            .iter()
            .map(|round| round.events_per_sec)
            .fold((f64::INFINITY, 0.0_f64), |(low, high), rate| {
                (low.min(rate), high.max(rate))
            })
    }
}

/// Per-round ratios of `value`'s rate to `base`'s rate (as many as both
/// have rounds); the overall ratio when the round counts differ.
pub fn round_ratios(value: &Tally, base: &Tally) -> Vec<f64> {
    if value.rounds.len() != base.rounds.len() || value.rounds.is_empty() {
        let ratio = if base.rate() > 0.0 {
            value.rate() / base.rate()
        } else {
            0.0
        };
        return vec![ratio];
    }
    value
        .rounds
        .iter()
        .zip(&base.rounds)
        .map(|(v, b)| {
            if b.events_per_sec > 0.0 {
                v.events_per_sec / b.events_per_sec
            } else {
                0.0
            }
        })
        .collect()
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        f64::midpoint(values[mid - 1], values[mid])
    } else {
        values[mid]
    }
}

/// One side of an interleaved round.
pub trait Round {
    /// Measures for about `window` and records the result.
    fn round(&mut self, window: Duration);
    /// What was recorded.
    fn tally(&self) -> &Tally;
}

/// An operation that takes a count (`op(n)` makes `n` units of work), sized
/// each round to fill the window from the pace of the previous call.
pub struct Windowed<F> {
    op: F,
    /// Units and wall time of the previous call.
    pace: Option<(u64, Duration)>,
    min_units: u64,
    max_units: u64,
    tally: Tally,
}

impl<F: FnMut(u64) -> OpResult> Windowed<F> {
    /// Sizes `op` between `min_units` and `max_units` units per round.
    pub fn new(min_units: u64, max_units: u64, op: F) -> Self {
        Self {
            op,
            pace: None,
            min_units: min_units.max(1),
            max_units: max_units.max(min_units.max(1)),
            tally: Tally::default(),
        }
    }

    fn units_for(&self, window: Duration) -> u64 {
        let Some((units, took)) = self.pace else {
            return self.min_units;
        };
        let took = took.as_nanos().max(1);
        let wanted = u128::from(units) * window.as_nanos() / took;
        u64::try_from(wanted)
            .unwrap_or(u64::MAX)
            .clamp(self.min_units, self.max_units)
    }
}

impl<F: FnMut(u64) -> OpResult> Round for Windowed<F> {
    fn round(&mut self, window: Duration) {
        if self.pace.is_none() {
            // A probe, not recorded: it may include first-touch costs.
            let probe = (self.op)(self.min_units);
            self.pace = Some((self.min_units, probe.elapsed()));
        }
        let units = self.units_for(window);
        let result = (self.op)(units);
        self.pace = Some((units, result.elapsed()));
        self.tally.rounds.push(result);
    }

    fn tally(&self) -> &Tally {
        &self.tally
    }
}

/// The raw `fdatasync` baseline of a directory's disk, as a [`Round`].
pub struct Fdatasync<'a> {
    bench: &'a Bench,
    dir: PathBuf,
    tally: Tally,
}

impl<'a> Fdatasync<'a> {
    /// Syncs in a file in `dir`.
    pub fn new(bench: &'a Bench, dir: &Path) -> Self {
        Self {
            bench,
            dir: dir.to_path_buf(),
            tally: Tally::default(),
        }
    }
}

impl Round for Fdatasync<'_> {
    fn round(&mut self, window: Duration) {
        let result = self
            .bench
            .block_on(fdatasync_rate(&self.dir, window))
            .expect("the raw fdatasync loop runs");
        self.tally.rounds.push(result);
    }

    fn tally(&self) -> &Tally {
        &self.tally
    }
}

/// Runs `rounds` rounds, each giving every side `window` in turn, and
/// returns each side's tally in the order given.
pub fn interleave(rounds: u32, window: Duration, sides: &mut [&mut dyn Round]) -> Vec<Tally> {
    for _ in 0..rounds {
        for side in sides.iter_mut() {
            side.round(window);
        }
    }
    sides.iter().map(|side| side.tally().clone()).collect()
}

/// Criterion's `iter_custom` time for `iters` iterations of a workload call
/// that made `done` units of work in `result`.
pub fn scaled(result: &OpResult, done: u64, iters: u64) -> Duration {
    if done == 0 || done == iters {
        return result.elapsed();
    }
    result.elapsed().mul_f64(iters as f64 / done as f64)
}

// ---------------------------------------------------------------------------
// Count-based fdatasync for criterion.

/// A temp file appended to in 200-byte writes, each followed by
/// `fdatasync`: the raw baseline as a criterion routine.
#[derive(Debug)]
pub struct SyncFile {
    file: tempfile::NamedTempFile,
}

impl SyncFile {
    /// A new temp file in `dir`.
    ///
    /// # Panics
    /// When the file cannot be created.
    pub fn new(dir: &Path) -> Self {
        let file = tempfile::Builder::new()
            .prefix(".bench-fdatasync-")
            .tempfile_in(dir)
            .expect("a temp file for the fdatasync baseline");
        Self { file }
    }

    /// Time for `n` write + `fdatasync` pairs.
    ///
    /// # Panics
    /// When a write or sync fails.
    pub fn sync_n(&mut self, n: u64) -> Duration {
        let record = [b'x'; 200];
        let start = Instant::now();
        for _ in 0..n {
            self.file
                .write_all(&record)
                .expect("write to the sync file");
            self.file.as_file().sync_data().expect("fdatasync");
        }
        start.elapsed()
    }
}

// ---------------------------------------------------------------------------
// Open, memory and plain-parse measurements.

/// What opening a store in a fresh process cost.
#[derive(Debug, Clone, Copy)]
pub struct OpenFootprint {
    /// Resident memory the open added.
    pub rss_bytes: u64,
    /// Wall time of the open.
    pub open_secs: f64,
}

/// Resident memory of this process, from `/proc/self/status`.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Call first in a bench's `main`: when this process is the child of
/// [`open_in_child`], opens the store with `open`, prints its footprint and
/// exits. Measuring in a fresh process keeps memory the parent freed (but
/// the allocator kept) out of the figure.
pub fn serve_open_child<S, F, Fut>(open: F)
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = runstore_core::Result<S>>,
{
    let Some(path) = std::env::var_os(OPEN_CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let before = rss_bytes().unwrap_or(0);
    let start = Instant::now();
    let store = rt
        .block_on(open(PathBuf::from(path)))
        .expect("the child opens the store");
    let open_secs = start.elapsed().as_secs_f64();
    let after = rss_bytes().unwrap_or(0);
    println!(
        "rss_bytes={} open_secs={open_secs}",
        after.saturating_sub(before)
    );
    drop(store);
    std::process::exit(0);
}

/// Opens the store at `path` in a child process (this bench binary, see
/// [`serve_open_child`]) and reports what the open cost there.
///
/// # Panics
/// When the child cannot run or reports nothing.
pub fn open_in_child(path: &Path) -> OpenFootprint {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let output = Command::new(exe)
        .env(OPEN_CHILD_ENV, path)
        .output()
        .expect("the open child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the open child failed: {}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |name: &str| {
        stdout
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("the open child printed no {name}: {stdout}"))
            .to_owned()
    };
    OpenFootprint {
        rss_bytes: field("rss_bytes").parse().expect("a byte count"),
        open_secs: field("open_secs").parse().expect("seconds"),
    }
}

/// Reads every `*.jsonl` file under `dir` and parses each line into an
/// [`EventRecord`] with plain `serde_json`: the baseline of the JSONL open.
/// Returns the records parsed and the time taken (reading included).
///
/// # Panics
/// When a file cannot be read or a line does not parse.
pub fn serde_parse_jsonl(dir: &Path) -> (u64, Duration) {
    let mut files = Vec::new();
    collect_jsonl(dir, &mut files);
    let start = Instant::now();
    let mut records = 0u64;
    for file in &files {
        let bytes = std::fs::read(file).expect("read a jsonl file");
        for line in bytes.split(|byte| *byte == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let record: EventRecord = serde_json::from_slice(line).expect("a record line");
            std::hint::black_box(&record);
            records += 1;
        }
    }
    (records, start.elapsed())
}

fn collect_jsonl(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_jsonl(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "jsonl") {
            files.push(path);
        }
    }
}

/// Bytes of all files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return std::fs::metadata(dir).map_or(0, |meta| meta.len());
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                dir_bytes(&path)
            } else {
                entry.metadata().map_or(0, |meta| meta.len())
            }
        })
        .sum()
}

// ---------------------------------------------------------------------------
// Bare driver baselines.

/// A bare sqlx loop on SQLite: one `INSERT` per autocommit transaction, WAL,
/// `synchronous=FULL`, one connection; no runstore code.
#[cfg(feature = "sqlite")]
#[derive(Debug)]
pub struct BareSqlite {
    conn: sqlx::SqliteConnection,
    next: u64,
}

#[cfg(feature = "sqlite")]
impl BareSqlite {
    /// Creates the database file at `path` with one table.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn open(path: &Path) -> sqlx::Result<Self> {
        use sqlx::{
            ConnectOptions as _,
            sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
        };
        let mut conn = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .connect()
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS bare (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, \
             event_id TEXT NOT NULL, body TEXT NOT NULL)",
        )
        .execute(&mut conn)
        .await?;
        Ok(Self { conn, next: 0 })
    }

    /// `n` single-row inserts, each its own durable transaction.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn insert(&mut self, n: u64) -> sqlx::Result<OpResult> {
        let body = bare_body();
        let mut latencies = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        let start = Instant::now();
        for _ in 0..n {
            self.next += 1;
            let began = Instant::now();
            sqlx::query("INSERT INTO bare (run_id, event_id, body) VALUES (?, ?, ?)")
                .bind("bare-run")
                .bind(format!("e-{}", self.next))
                .bind(&body)
                .execute(&mut self.conn)
                .await?;
            latencies.push(began.elapsed());
        }
        Ok(OpResult::from_latencies(
            Operation::BareInsert,
            n,
            start.elapsed(),
            latencies,
        ))
    }
}

/// A bare redb loop: one insert per durable commit; no runstore code.
/// Blocking: call it from a plain thread, not from async code.
#[cfg(feature = "redb")]
#[derive(Debug)]
pub struct BareRedb {
    db: redb::Database,
    next: u64,
}

#[cfg(feature = "redb")]
const BARE_TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("bare");

#[cfg(feature = "redb")]
impl BareRedb {
    /// Creates the database file at `path`.
    ///
    /// # Errors
    /// The driver's error.
    pub fn open(path: &Path) -> Result<Self, redb::Error> {
        Ok(Self {
            db: redb::Database::create(path)?,
            next: 0,
        })
    }

    /// `n` transactions of one insert each, committed durably.
    ///
    /// # Errors
    /// The driver's error.
    pub fn insert(&mut self, n: u64) -> Result<OpResult, redb::Error> {
        let body = bare_body();
        let mut latencies = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        let start = Instant::now();
        for _ in 0..n {
            self.next += 1;
            let began = Instant::now();
            let txn = self.db.begin_write()?;
            {
                let mut table = txn.open_table(BARE_TABLE)?;
                table.insert(self.next, body.as_bytes())?;
            }
            txn.commit()?;
            latencies.push(began.elapsed());
        }
        Ok(OpResult::from_latencies(
            Operation::BareInsert,
            n,
            start.elapsed(),
            latencies,
        ))
    }
}

/// A bare sqlx loop on PostgreSQL, pgbench style: one `INSERT` per
/// autocommit transaction on one connection; no runstore code. The table
/// lives in its own schema, dropped by [`BarePostgres::drop_schemas`].
#[cfg(feature = "postgres")]
#[derive(Debug)]
pub struct BarePostgres {
    pool: sqlx::PgPool,
    schema: String,
    next: u64,
}

#[cfg(feature = "postgres")]
impl BarePostgres {
    /// Connects and creates the table in schema `schema`.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn connect(url: &str, schema: &str) -> sqlx::Result<Self> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&pool)
            .await?;
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS \"{schema}\".bare (id BIGSERIAL PRIMARY KEY, \
             run_id TEXT NOT NULL, event_id TEXT NOT NULL, body JSONB NOT NULL)"
        ))
        .execute(&pool)
        .await?;
        Ok(Self {
            pool,
            schema: schema.to_owned(),
            next: 0,
        })
    }

    /// `n` single-row inserts, each its own transaction.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn insert(&mut self, n: u64) -> sqlx::Result<OpResult> {
        let body = bare_body();
        let sql = format!(
            "INSERT INTO \"{}\".bare (run_id, event_id, body) VALUES ($1, $2, $3::jsonb)",
            self.schema
        );
        let mut latencies = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        let start = Instant::now();
        for _ in 0..n {
            self.next += 1;
            let began = Instant::now();
            sqlx::query(&sql)
                .bind("bare-run")
                .bind(format!("e-{}", self.next))
                .bind(&body)
                .execute(&self.pool)
                .await?;
            latencies.push(began.elapsed());
        }
        Ok(OpResult::from_latencies(
            Operation::BareInsert,
            n,
            start.elapsed(),
            latencies,
        ))
    }

    /// Drops this baseline's schema and the schemas in `also` (the stores'
    /// schemas), with everything in them.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn drop_schemas(self, also: &[String]) -> sqlx::Result<()> {
        for schema in std::iter::once(&self.schema).chain(also) {
            sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .execute(&self.pool)
                .await?;
        }
        self.pool.close().await;
        Ok(())
    }
}

/// A bare object-store loop: one create-if-absent `PUT` of a new key per
/// event, the request every durable S3 append needs at least; no runstore
/// code.
#[cfg(feature = "s3")]
#[derive(Debug)]
pub struct BareObjectPut {
    store: Arc<dyn object_store::ObjectStore>,
    prefix: String,
    next: u64,
}

#[cfg(feature = "s3")]
impl BareObjectPut {
    /// Puts under `prefix` in `store`.
    pub fn new(store: Arc<dyn object_store::ObjectStore>, prefix: &str) -> Self {
        Self {
            store,
            prefix: prefix.to_owned(),
            next: 0,
        }
    }

    /// `n` conditional puts, one after another.
    ///
    /// # Errors
    /// The client's error.
    pub async fn insert(&mut self, n: u64) -> object_store::Result<OpResult> {
        use object_store::{PutMode, PutOptions, PutPayload, path::Path as ObjectPath};
        let body = bytes::Bytes::from(bare_body());
        let mut latencies = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        let start = Instant::now();
        for _ in 0..n {
            self.next += 1;
            let location = ObjectPath::from(format!("{}/e-{}", self.prefix, self.next));
            let options = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            let began = Instant::now();
            self.store
                .put_opts(&location, PutPayload::from_bytes(body.clone()), options)
                .await?;
            latencies.push(began.elapsed());
        }
        Ok(OpResult::from_latencies(
            Operation::BareInsert,
            n,
            start.elapsed(),
            latencies,
        ))
    }
}

/// A name for the store at `path` that is the same in the bench process and
/// in its open child: the scratch directory's random suffix and the file
/// name, lowercase, with everything but `[a-z0-9]` as `_` (a valid
/// PostgreSQL schema name or S3 key segment).
pub fn location_name(path: &Path) -> String {
    let part = |path: Option<&Path>| {
        path.and_then(Path::file_name)
            .map(|name| name.to_string_lossy().to_lowercase())
            .unwrap_or_default()
    };
    let scratch = part(path.parent());
    let tag = scratch.rsplit('-').next().unwrap_or_default().to_owned();
    format!("bench_{tag}_{}", part(Some(path)))
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A record body of the size the workload's events serialize to.
#[cfg(any(
    feature = "sqlite",
    feature = "redb",
    feature = "postgres",
    feature = "s3"
))]
fn bare_body() -> String {
    let tenant = runstore::bench::bench_tenant();
    let run = runstore_core::RunId::new("bare-run").expect("a valid id");
    let id = runstore_core::EventId::new("e-0").expect("a valid id");
    let event = EventRecord::new(&tenant, run, id, "bench.live", 0)
        .with_payload(serde_json::json!({"step": 0, "status": "ok",
            "detail": "benchmark event with a short human-readable detail"}));
    serde_json::to_string(&event).expect("a record serializes")
}

// ---------------------------------------------------------------------------
// The standard run: one body for every engine.

/// A future that opens a store.
pub type OpenFuture = Pin<Box<dyn Future<Output = runstore_core::Result<Arc<dyn Store>>> + Send>>;

/// Opens a store at a path.
pub type OpenFn = Box<dyn Fn(PathBuf) -> OpenFuture>;

/// Parses a store's data plainly: records parsed and time taken.
pub type ParseFn = fn(&Path) -> (u64, Duration);

/// A count-taking baseline routine (see [`Windowed`]).
pub type BareFn<'a> = Box<dyn FnMut(u64) -> OpResult + 'a>;

/// What each figure must reach; `None` shows the figure without a target.
#[derive(Debug, Clone, Copy, Default)]
pub struct Targets {
    /// Single durable append events/s over the raw `fdatasync` rate.
    pub single_vs_fdatasync: Option<f64>,
    /// Single durable append events/s over the bare driver loop.
    pub single_vs_bare: Option<f64>,
    /// Concurrent appenders events/s over single-task events/s.
    pub concurrent_vs_single: Option<f64>,
    /// Batch events/s.
    pub batch_rate: Option<f64>,
    /// Median tail read, ms.
    pub read_tail_ms: Option<f64>,
    /// Open speed over the plain-parse speed of the same data.
    pub open_vs_parse: Option<f64>,
    /// Resident memory an open adds, bytes per event.
    pub bytes_per_event: Option<f64>,
}

/// One backend, as the standard run sees it.
pub struct Engine<'a> {
    /// The backend's name (criterion group and table title).
    pub name: &'static str,
    /// The store's location inside a scratch directory (a directory name or
    /// a file name).
    pub location: &'static str,
    /// Opens the store durably (CONTRACT §16).
    pub open: OpenFn,
    /// Opens the store relaxed, for the preload.
    pub open_relaxed: OpenFn,
    /// Extra handles for the concurrent appenders (separate pools, as
    /// separate nodes would have); 0 for one shared handle.
    pub extra_handles: usize,
    /// Concurrent appender tasks.
    pub concurrency: u64,
    /// Whether the raw `fdatasync` rate is a baseline (local disks).
    pub fdatasync: bool,
    /// The bare driver loop, with its label.
    pub bare: Option<(&'static str, BareFn<'a>)>,
    /// The plain parse of the stored data an open is compared with (JSONL):
    /// records parsed and time taken.
    pub open_baseline: Option<ParseFn>,
    /// Whether to measure compaction of the preloaded store.
    pub compact: bool,
    /// The issue's targets.
    pub targets: Targets,
    /// A request counter the engine's stores add to (S3), for a
    /// requests-per-event row.
    pub requests: Option<Arc<AtomicU64>>,
}

/// Opens timed for the table's open figure.
const OPENS: usize = 3;

fn target(ratio: Option<f64>) -> Target {
    ratio.map_or(Target::None, Target::RatioAtLeast)
}

/// Opens with retries while a just-dropped handle still holds the lock.
fn open_store(bench: &Bench, open: &OpenFn, path: &Path) -> Arc<dyn Store> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match bench.block_on(open(path.to_path_buf())) {
            Ok(store) => return store,
            Err(runstore_core::Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => panic!("opening {}: {err}", path.display()),
        }
    }
}

/// Runs the standard figures on `engine` (criterion benchmarks, then the
/// interleaved ratio rounds) and prints the ratio table.
///
/// # Panics
/// When the store fails; a bench has no one to return an error to.
pub fn run_standard(bench: &Bench, mut engine: Engine<'_>) {
    let mut criterion = bench.criterion();
    let mut table = RatioTable::new(format!("{}: {}", engine.name, bench.describe()));
    let config = WorkloadConfig {
        concurrency: engine.concurrency,
        ..bench.config()
    };
    let concurrency = config.concurrency;

    // --- Writes, into a fresh durable store.
    let write_path = bench.path(&format!("write-{}", engine.location));
    let store = open_store(bench, &engine.open, &write_path);
    let handles = (0..engine.extra_handles)
        .map(|_| open_store(bench, &engine.open, &write_path))
        .collect();
    let workload = Workload::new(store, config).with_handles(handles);
    let sync_dir = bench.dir.path().to_path_buf();
    {
        let mut group = criterion.benchmark_group(engine.name);
        group.throughput(Throughput::Elements(1));
        if engine.fdatasync {
            let mut file = SyncFile::new(&sync_dir);
            group.bench_function("raw_fdatasync", |b| {
                b.iter_custom(|iters| file.sync_n(iters))
            });
        }
        if let Some((_, bare)) = engine.bare.as_mut() {
            group.bench_function("bare_insert", |b| {
                b.iter_custom(|iters| bare(iters).elapsed())
            });
        }
        group.bench_function("single_append", |b| {
            b.iter_custom(|iters| {
                let result = bench.block_on(workload.single_append(iters));
                result.expect("single append").elapsed()
            });
        });
        group.bench_function(format!("concurrent_{concurrency}"), |b| {
            b.iter_custom(|iters| {
                let per_task = iters.div_ceil(concurrency);
                let result = bench
                    .block_on(workload.concurrent_append(per_task))
                    .expect("concurrent append");
                scaled(&result, result.events, iters)
            });
        });
        group.throughput(Throughput::Elements(config.batch_size));
        group.bench_function(format!("batch_{}", config.batch_size), |b| {
            b.iter_custom(|iters| {
                let result = bench.block_on(workload.batch_append(iters));
                result.expect("batch append").elapsed()
            });
        });
        group.finish();
    }

    let mut fsync = Fdatasync::new(bench, &sync_dir);
    let mut bare = engine
        .bare
        .as_mut()
        .map(|(label, bare)| (*label, Windowed::new(5, 1_000_000, bare)));
    let counter = engine.requests.clone();
    // Requests of each call, the probe first (see `Windowed`).
    let single_requests = RefCell::new(Vec::new());
    let concurrent_requests = RefCell::new(Vec::new());
    let batch_requests = RefCell::new(Vec::new());
    let counted = |calls: &RefCell<Vec<u64>>, op: &mut dyn FnMut() -> OpResult| {
        let before = counter.as_ref().map_or(0, |c| c.load(Ordering::Relaxed));
        let result = op();
        let after = counter.as_ref().map_or(0, |c| c.load(Ordering::Relaxed));
        calls.borrow_mut().push(after - before);
        result
    };
    let mut single = Windowed::new(5, 1_000_000, |n| {
        counted(&single_requests, &mut || {
            bench
                .block_on(workload.single_append(n))
                .expect("single append")
        })
    });
    let mut concurrent = Windowed::new(1, 100_000, |per_task| {
        counted(&concurrent_requests, &mut || {
            bench
                .block_on(workload.concurrent_append(per_task))
                .expect("concurrent append")
        })
    });
    let mut batch = Windowed::new(1, 100_000, |n| {
        counted(&batch_requests, &mut || {
            bench
                .block_on(workload.batch_append(n))
                .expect("batch append")
        })
    });
    {
        let mut sides: Vec<&mut dyn Round> = Vec::new();
        if engine.fdatasync {
            sides.push(&mut fsync);
        }
        if let Some((_, bare)) = bare.as_mut() {
            sides.push(bare);
        }
        sides.push(&mut single);
        sides.push(&mut concurrent);
        sides.push(&mut batch);
        interleave(bench.rounds, bench.window, &mut sides);
    }
    let targets = engine.targets;
    let single = single.tally().clone();
    let fsync = fsync.tally().clone();
    if engine.fdatasync {
        table.ratio(
            "single durable append",
            &single,
            "raw fdatasync",
            &fsync,
            target(targets.single_vs_fdatasync),
        );
    }
    if let Some((label, bare)) = &bare {
        table.ratio(
            "single durable append",
            &single,
            label,
            bare.tally(),
            target(targets.single_vs_bare),
        );
    }
    if !engine.fdatasync && bare.is_none() {
        table.rate("single durable append", &single, Target::None);
    }
    table.ratio(
        &format!("{concurrency} concurrent appenders"),
        concurrent.tally(),
        "single-task append",
        &single,
        target(targets.concurrent_vs_single),
    );
    table.rate(
        &format!("batch of {}", config.batch_size),
        batch.tally(),
        targets.batch_rate.map_or(Target::None, Target::RateAtLeast),
    );
    if engine.fdatasync {
        // A durable batch needs at least one sync: the disk allows at most
        // batch_size x the raw sync rate, measured in the same rounds.
        let ceiling = Tally {
            rounds: fsync
                .rounds
                .iter()
                .map(|round| OpResult {
                    events: round.events * config.batch_size,
                    events_per_sec: round.events_per_sec * config.batch_size as f64,
                    ..round.clone()
                })
                .collect(),
        };
        table.ratio(
            &format!("batch of {} (vs the disk)", config.batch_size),
            batch.tally(),
            &format!("{} x raw fdatasync", config.batch_size),
            &ceiling,
            Target::None,
        );
    }
    if engine.requests.is_some() {
        // The probe is not in the tally, so its requests are left out too.
        let per_event = |calls: &RefCell<Vec<u64>>, tally: &Tally| {
            let requests: u64 = calls.borrow().iter().skip(1).sum();
            requests as f64 / tally.events().max(1) as f64
        };
        let text = format!(
            "single {:.2}, {concurrency} concurrent {:.2}, batch of {} {:.3}",
            per_event(&single_requests, &single),
            per_event(&concurrent_requests, concurrent.tally()),
            config.batch_size,
            per_event(&batch_requests, batch.tally()),
        );
        table.custom(
            "requests per event",
            text,
            "counted at the object store client".to_owned(),
            None,
            Target::None,
            0.0,
        );
    }
    if engine.fdatasync {
        let (low, high) = fsync.rate_range();
        table.note(format!(
            "raw fdatasync of this disk ranged {}..{}/s across the rounds",
            human(low),
            human(high)
        ));
    }
    drop(workload);

    // --- The preloaded store: load relaxed, reopen durable.
    let read_path = bench.path(&format!("read-{}", engine.location));
    let relaxed = open_store(bench, &engine.open_relaxed, &read_path);
    let preload = bench
        .block_on(Workload::new(relaxed, config).preload())
        .expect("preload");
    table.custom(
        "preload (relaxed, batches of 1000)",
        format!("{} ev/s", human(preload.events_per_sec)),
        format!("{} events in {:.1} s", preload.events, preload.elapsed_secs),
        None,
        Target::None,
        0.0,
    );

    let footprint = open_in_child(&read_path);
    let per_event = footprint.rss_bytes as f64 / config.events.max(1) as f64;
    table.custom(
        "open memory (fresh process)",
        format!("{per_event:.0} B/ev"),
        format!("{} MiB RSS added", footprint.rss_bytes / (1 << 20)),
        None,
        targets
            .bytes_per_event
            .map_or(Target::None, Target::BytesAtMost),
        per_event,
    );
    {
        let mut group = criterion.benchmark_group(engine.name);
        group.sampling_mode(SamplingMode::Flat);
        group.throughput(Throughput::Elements(config.events));
        group.bench_function("open", |b| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let store = open_store(bench, &engine.open, &read_path);
                    took += start.elapsed();
                    drop(store);
                }
                took
            });
        });
        group.finish();
    }
    // The table's figure: the median of a few opens of its own, so that it
    // exists whatever criterion's filter selected.
    let open_secs = median((0..OPENS).map(|_| {
        let start = Instant::now();
        let store = open_store(bench, &engine.open, &read_path);
        let took = start.elapsed().as_secs_f64();
        drop(store);
        took
    }));
    match engine.open_baseline {
        Some(parse) => {
            let (records, parse_time) = parse(&read_path);
            let ratio = parse_time.as_secs_f64() / open_secs.max(f64::MIN_POSITIVE);
            table.custom(
                "open (index rebuild)",
                format!("{open_secs:.3} s (median of {OPENS})"),
                format!(
                    "plain serde_json parse {:.3} s ({} records, {} MiB)",
                    parse_time.as_secs_f64(),
                    records,
                    dir_bytes(&read_path) / (1 << 20)
                ),
                Some(ratio),
                target(targets.open_vs_parse),
                ratio,
            );
        }
        None => table.custom(
            "open",
            format!("{:.3} s", open_secs),
            format!("child process: {:.3} s", footprint.open_secs),
            None,
            Target::None,
            0.0,
        ),
    }

    let store = open_store(bench, &engine.open, &read_path);
    let reader = Workload::new(store, config);
    {
        let mut group = criterion.benchmark_group(engine.name);
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("read_tail_{}", config.tail), |b| {
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
    table.latency(
        &format!("read tail-{} at {} events", config.tail, config.events),
        reads.tally(),
        targets
            .read_tail_ms
            .map_or(Target::None, Target::MillisAtMost),
    );

    if engine.compact {
        let result = bench.block_on(reader.compact()).expect("compaction");
        table.custom(
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
    drop(reader);

    criterion.final_summary();
    table.note(
        "ratios compare figures measured in alternating windows of the same run; \
         the machine is shared (other builds running), so absolute figures are noisy",
    );
    table.print();
}

// ---------------------------------------------------------------------------
// The ratio table.

/// What a figure must reach.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// The ratio to the baseline is at least this.
    RatioAtLeast(f64),
    /// The figure (events/s) is at least this.
    RateAtLeast(f64),
    /// The figure (ms) is at most this.
    MillisAtMost(f64),
    /// The figure (bytes) is at most this.
    BytesAtMost(f64),
    /// No target; shown for context.
    None,
}

impl Target {
    fn text(self) -> String {
        match self {
            Self::RatioAtLeast(x) => format!(">= {x}x"),
            Self::RateAtLeast(x) => format!(">= {} ev/s", human(x)),
            Self::MillisAtMost(x) => format!("<= {x} ms"),
            Self::BytesAtMost(x) => format!("<= {x:.0} B/ev"),
            Self::None => "-".to_owned(),
        }
    }

    /// "met", or "MISSED" with how far off (in percent of the target).
    fn verdict(self, value: f64) -> String {
        let (met, off) = match self {
            Self::RatioAtLeast(x) | Self::RateAtLeast(x) => (value >= x, (x - value) / x),
            Self::MillisAtMost(x) | Self::BytesAtMost(x) => (value <= x, (value - x) / x),
            Self::None => return String::new(),
        };
        if met {
            "met".to_owned()
        } else {
            format!("MISSED by {:.0}%", off * 100.0)
        }
    }
}

#[derive(Debug, Clone)]
struct Row {
    figure: String,
    value: String,
    latency: String,
    baseline: String,
    ratio: String,
    target: String,
    verdict: String,
}

/// The compact table of figures, baselines, ratios and targets printed at
/// the end of a bench run.
#[derive(Debug, Clone)]
pub struct RatioTable {
    title: String,
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl RatioTable {
    /// An empty table.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A figure against a baseline measured in the same rounds; `target`
    /// applies to the ratio `figure / baseline` (events/s).
    pub fn ratio(
        &mut self,
        figure: &str,
        value: &Tally,
        baseline: &str,
        base: &Tally,
        target: Target,
    ) {
        // Each round measured both sides seconds apart: the median of the
        // per-round ratios is what the disk's swings disturb least.
        let per_round = round_ratios(value, base);
        let ratio = median(per_round.iter().copied());
        let (low, high) = per_round
            .iter()
            .fold((f64::INFINITY, 0.0_f64), |(low, high), r| {
                (low.min(*r), high.max(*r))
            });
        let spread = if per_round.len() > 1 {
            format!(" [{low:.2}..{high:.2}]")
        } else {
            String::new()
        };
        self.rows.push(Row {
            figure: figure.to_owned(),
            value: format!("{} ev/s", human(value.rate())),
            latency: latency(value),
            baseline: format!("{baseline} {}/s", human(base.rate())),
            ratio: format!("{ratio:.2}x{spread}"),
            target: target.text(),
            verdict: target.verdict(ratio),
        });
    }

    /// A throughput figure (events/s) against an absolute target.
    pub fn rate(&mut self, figure: &str, value: &Tally, target: Target) {
        self.rows.push(Row {
            figure: figure.to_owned(),
            value: format!("{} ev/s", human(value.rate())),
            latency: latency(value),
            baseline: String::new(),
            ratio: String::new(),
            target: target.text(),
            verdict: target.verdict(value.rate()),
        });
    }

    /// A latency figure: the target applies to the median call (p50).
    pub fn latency(&mut self, figure: &str, value: &Tally, target: Target) {
        let p50_ms = value.p50_us() / 1e3;
        self.rows.push(Row {
            figure: figure.to_owned(),
            value: format!("{p50_ms:.3} ms p50"),
            latency: latency(value),
            baseline: String::new(),
            ratio: String::new(),
            target: target.text(),
            verdict: target.verdict(p50_ms),
        });
    }

    /// A free-form row; `ratio` is checked against `target`.
    pub fn custom(
        &mut self,
        figure: &str,
        value: String,
        baseline: String,
        ratio: Option<f64>,
        target: Target,
        checked: f64,
    ) {
        self.rows.push(Row {
            figure: figure.to_owned(),
            value,
            latency: String::new(),
            baseline,
            ratio: ratio.map_or_else(String::new, |ratio| format!("{ratio:.2}x")),
            target: target.text(),
            verdict: target.verdict(checked),
        });
    }

    /// A line printed under the table.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The table as text.
    pub fn render(&self) -> String {
        let header = Row {
            figure: "figure".to_owned(),
            value: "value".to_owned(),
            latency: "p50 / p99 per call".to_owned(),
            baseline: "baseline (same rounds)".to_owned(),
            ratio: "ratio".to_owned(),
            target: "target".to_owned(),
            verdict: "verdict".to_owned(),
        };
        let all: Vec<&Row> = std::iter::once(&header).chain(&self.rows).collect();
        let width = |get: fn(&Row) -> &str| all.iter().map(|row| get(row).len()).max().unwrap_or(0);
        let widths = [
            width(|r| &r.figure),
            width(|r| &r.value),
            width(|r| &r.latency),
            width(|r| &r.baseline),
            width(|r| &r.ratio),
            width(|r| &r.target),
        ];
        let mut out = format!("\n== {} ==\n", self.title);
        for row in all {
            let cells = [
                &row.figure,
                &row.value,
                &row.latency,
                &row.baseline,
                &row.ratio,
                &row.target,
            ];
            for (cell, width) in cells.iter().zip(widths) {
                out.push_str(&format!("{cell:<width$}  "));
            }
            out.push_str(&row.verdict);
            out.push('\n');
        }
        for note in &self.notes {
            out.push_str(&format!("  * {note}\n"));
        }
        out
    }

    /// Prints the table to stdout.
    pub fn print(&self) {
        println!("{}", self.render());
    }
}

fn latency(tally: &Tally) -> String {
    format!("{} / {}", micros(tally.p50_us()), micros(tally.p99_us()))
}

fn micros(us: f64) -> String {
    if us >= 1_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} us")
    }
}

/// A rate with a k/M suffix.
pub fn human(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if value >= 1e4 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(events: u64, secs: f64, p50: f64) -> OpResult {
        OpResult {
            operation: Operation::SingleAppend,
            calls: events,
            events,
            elapsed_secs: secs,
            events_per_sec: events as f64 / secs,
            calls_per_sec: events as f64 / secs,
            p50_us: p50,
            p99_us: p50 * 2.0,
        }
    }

    #[test]
    fn tallies_sum_rounds_and_take_median_latencies() {
        let tally = Tally {
            rounds: vec![
                result(100, 1.0, 10.0),
                result(300, 1.0, 30.0),
                result(200, 2.0, 20.0),
            ],
        };
        assert_eq!(tally.events(), 600);
        assert_eq!(tally.rate(), 150.0);
        assert_eq!(tally.p50_us(), 20.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
        assert_eq!(tally.rate_range(), (100.0, 300.0));
        let base = Tally {
            rounds: vec![
                result(200, 1.0, 1.0),
                result(100, 1.0, 1.0),
                result(400, 1.0, 1.0),
            ],
        };
        assert_eq!(round_ratios(&tally, &base), vec![0.5, 3.0, 0.25]);
        let short = Tally {
            rounds: vec![result(300, 1.0, 1.0)],
        };
        assert_eq!(round_ratios(&tally, &short), vec![0.5]);
    }

    #[test]
    fn verdicts_say_by_how_much_a_target_is_missed() {
        assert_eq!(Target::RatioAtLeast(0.8).verdict(0.6), "MISSED by 25%");
        assert_eq!(Target::RatioAtLeast(0.8).verdict(0.9), "met");
        assert_eq!(Target::MillisAtMost(0.5).verdict(0.75), "MISSED by 50%");
        assert_eq!(Target::None.verdict(1.0), "");
    }

    #[test]
    fn windowed_sizes_rounds_from_the_previous_rate() {
        let mut sizes = Vec::new();
        let mut side = Windowed::new(10, 1_000, |n| {
            sizes.push(n);
            // 1,000 units per second.
            result(n, n as f64 / 1_000.0, 1.0)
        });
        interleave(2, Duration::from_millis(500), &mut [&mut side]);
        assert_eq!(side.tally().rounds.len(), 2);
        drop(side);
        assert_eq!(sizes, vec![10, 500, 500]);
    }

    #[test]
    fn table_renders_every_row() {
        let mut table = RatioTable::new("t");
        let tally = Tally {
            rounds: vec![result(100, 1.0, 10.0)],
        };
        table.ratio("single", &tally, "raw", &tally, Target::RatioAtLeast(0.8));
        table.latency("read", &tally, Target::MillisAtMost(0.5));
        table.note("noisy");
        let text = table.render();
        assert!(text.contains("1.00x"), "{text}");
        assert!(text.contains("0.010 ms p50"), "{text}");
        assert!(text.contains("* noisy"), "{text}");
    }

    #[test]
    fn location_names_are_stable_and_plain() {
        let name = location_name(Path::new("/tmp/runstore-bench-postgres-AbC123/read-store"));
        assert_eq!(name, "bench_abc123_read_store");
    }

    #[test]
    fn sync_file_and_plain_parse_work_on_a_temp_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = SyncFile::new(dir.path());
        assert!(file.sync_n(3) > Duration::ZERO);
        let tenant = runstore::bench::bench_tenant();
        let event = EventRecord::new(
            &tenant,
            runstore_core::RunId::new("r").unwrap(),
            runstore_core::EventId::new("e").unwrap(),
            "t",
            1,
        );
        let line = serde_json::to_string(&event).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.jsonl"), format!("{line}\n{line}\n")).unwrap();
        assert_eq!(serde_parse_jsonl(dir.path()).0, 2);
        assert!(dir_bytes(dir.path()) >= 2 * line.len() as u64);
        assert!(rss_bytes().unwrap() > 0);
    }
}
