//! The baselines every figure is compared with, measured without runstore:
//! the raw `fdatasync` rate of the disk, a plain `serde_json` parse of a
//! JSONL store's files, and each backend's bare driver loop (one insert per
//! durable commit).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

#[cfg(feature = "s3")]
use std::sync::Arc;

#[cfg(any(
    feature = "sqlite",
    feature = "redb",
    feature = "postgres",
    feature = "s3"
))]
use runstore::bench::Operation;
use runstore::bench::{OpResult, fdatasync_rate};
use runstore_core::EventRecord;

use crate::{
    Bench,
    rounds::{Round, Tally},
};

/// The latencies of a bare loop's `n` writes and the loop's own time, as
/// one [`OpResult`] of [`Operation::BareInsert`].
#[cfg(any(
    feature = "sqlite",
    feature = "redb",
    feature = "postgres",
    feature = "s3"
))]
struct Timed {
    n: u64,
    start: Instant,
    latencies: Vec<Duration>,
}

#[cfg(any(
    feature = "sqlite",
    feature = "redb",
    feature = "postgres",
    feature = "s3"
))]
impl Timed {
    /// Starts the loop's clock.
    fn start(n: u64) -> Self {
        Self {
            n,
            start: Instant::now(),
            latencies: Vec::with_capacity(usize::try_from(n).unwrap_or(0)),
        }
    }

    /// One write that began at `began` has returned.
    fn record(&mut self, began: Instant) {
        self.latencies.push(began.elapsed());
    }

    fn finish(self) -> OpResult {
        OpResult::from_latencies(
            Operation::BareInsert,
            self.n,
            self.start.elapsed(),
            self.latencies,
        )
    }
}

/// A bare driver loop: the backend's plainest durable write, no runstore
/// code; the baseline a store's single append is compared with.
pub trait BareLoop {
    /// The baseline's name in the table.
    fn label(&self) -> &'static str;

    /// `n` writes, one durable commit each.
    ///
    /// # Panics
    /// When the driver fails; a bench has no one to return an error to.
    fn run(&mut self, bench: &Bench, n: u64) -> OpResult;

    /// The bare counterpart of a batch append, with its label: `batches`
    /// writes of `size` rows each, one durable commit per write; `None`
    /// for a driver without one.
    fn batch(
        &mut self,
        _bench: &Bench,
        _batches: u64,
        _size: u64,
    ) -> Option<(&'static str, OpResult)> {
        None
    }
}

// ---------------------------------------------------------------------------
// The raw fdatasync rate.

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
// The plain parse of a JSONL store.

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
        let mut timed = Timed::start(n);
        for _ in 0..n {
            self.next += 1;
            let began = Instant::now();
            sqlx::query("INSERT INTO bare (run_id, event_id, body) VALUES (?, ?, ?)")
                .bind("bare-run")
                .bind(format!("e-{}", self.next))
                .bind(&body)
                .execute(&mut self.conn)
                .await?;
            timed.record(began);
        }
        Ok(timed.finish())
    }
}

#[cfg(feature = "sqlite")]
impl BareLoop for BareSqlite {
    fn label(&self) -> &'static str {
        "bare sqlx insert loop"
    }

    fn run(&mut self, bench: &Bench, n: u64) -> OpResult {
        bench.block_on(self.insert(n)).expect("bare sqlite insert")
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
        let mut timed = Timed::start(n);
        for _ in 0..n {
            self.next += 1;
            let began = Instant::now();
            let txn = self.db.begin_write()?;
            {
                let mut table = txn.open_table(BARE_TABLE)?;
                table.insert(self.next, body.as_bytes())?;
            }
            txn.commit()?;
            timed.record(began);
        }
        Ok(timed.finish())
    }
}

#[cfg(feature = "redb")]
impl BareLoop for BareRedb {
    fn label(&self) -> &'static str {
        "bare redb durable commit loop"
    }

    fn run(&mut self, _bench: &Bench, n: u64) -> OpResult {
        self.insert(n).expect("bare redb insert")
    }
}

/// The bare redb loop with the store's own layout (issue 15): with no
/// runstore code, one durable commit per event writing what a single
/// append writes -- the record (a 9-byte header and the JSON) into an
/// `events` table keyed by stream key and big-endian seq, the event id into
/// an `ids` table (stream key and id bytes to the seq) and the stream's last
/// seq into a `heads` table -- into one stream of a fresh file, as the
/// bench's single appends do. The one-table [`BareRedb`] stays as a
/// reference.
#[cfg(feature = "redb")]
pub struct BareRedbLog {
    db: redb::Database,
    next: u64,
    /// Whether each commit also writes the `feed` table as the store does
    /// since the change feed (issue 16): the record's entry under its
    /// tenant and position, and the tenant's last position.
    feed: bool,
    keys: LogKeys,
}

/// What every commit of a [`BareRedbLog`] writes the same: the stream key,
/// the record, the tenant's key prefix and its feed head key.
#[cfg(feature = "redb")]
struct LogKeys {
    stream: Vec<u8>,
    value: Vec<u8>,
    tenant: Vec<u8>,
    head_key: Vec<u8>,
}

#[cfg(feature = "redb")]
const LOG_FEED: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("feed");

#[cfg(feature = "redb")]
const LOG_EVENTS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("events");
#[cfg(feature = "redb")]
const LOG_IDS: redb::TableDefinition<&[u8], u64> = redb::TableDefinition::new("ids");
#[cfg(feature = "redb")]
const LOG_HEADS: redb::TableDefinition<&[u8], u64> = redb::TableDefinition::new("heads");

/// The store's stream key of the bench tenant's run `run` (tenant ids and
/// run id length-prefixed, no deployment; see docs/backends/redb.md).
#[cfg(feature = "redb")]
pub fn redb_stream_key(run: &str) -> Vec<u8> {
    let mut key = Vec::new();
    for id in ["bench", "bench"] {
        key.extend_from_slice(&u16::try_from(id.len()).unwrap_or(0).to_be_bytes());
        key.extend_from_slice(id.as_bytes());
    }
    key.push(0);
    key.extend_from_slice(&u16::try_from(run.len()).unwrap_or(0).to_be_bytes());
    key.extend_from_slice(run.as_bytes());
    key
}

#[cfg(feature = "redb")]
impl BareRedbLog {
    /// Creates the database file at `path`.
    ///
    /// # Errors
    /// The driver's error.
    pub fn open(path: &Path) -> Result<Self, redb::Error> {
        Self::create(path, false)
    }

    /// Creates the database file at `path`, for a loop that also writes
    /// the `feed` table.
    ///
    /// # Errors
    /// The driver's error.
    pub fn open_with_feed(path: &Path) -> Result<Self, redb::Error> {
        Self::create(path, true)
    }

    fn create(path: &Path, feed: bool) -> Result<Self, redb::Error> {
        // The store's header: flags and `occurred_at_ms`, then the feed
        // position when there is a feed.
        let mut value = vec![0_u8; if feed { 17 } else { 9 }];
        value.extend_from_slice(bare_body().as_bytes());
        let mut tenant = redb_stream_key("");
        tenant.truncate(tenant.len() - 2);
        let mut head_key = tenant.clone();
        head_key.extend_from_slice(&[0xff; 9]);
        Ok(Self {
            db: redb::Database::create(path)?,
            next: 0,
            feed,
            keys: LogKeys {
                stream: redb_stream_key("bare-run"),
                value,
                tenant,
                head_key,
            },
        })
    }

    /// `n` appends, one durable commit each.
    ///
    /// # Errors
    /// The driver's error.
    pub fn append(&mut self, n: u64) -> Result<OpResult, redb::Error> {
        let mut timed = Timed::start(n);
        for _ in 0..n {
            let began = Instant::now();
            self.commit_one()?;
            timed.record(began);
        }
        Ok(timed.finish())
    }

    /// One append: one durable commit.
    fn commit_one(&mut self) -> Result<(), redb::Error> {
        let LogKeys {
            stream,
            value,
            tenant,
            head_key,
        } = &self.keys;
        self.next += 1;
        let mut event_key = stream.clone();
        event_key.extend_from_slice(&self.next.to_be_bytes());
        let mut id_key = stream.clone();
        id_key.extend_from_slice(format!("e-{}", self.next).as_bytes());
        let txn = self.db.begin_write()?;
        {
            txn.open_table(LOG_EVENTS)?
                .insert(event_key.as_slice(), value.as_slice())?;
            txn.open_table(LOG_IDS)?
                .insert(id_key.as_slice(), self.next)?;
            txn.open_table(LOG_HEADS)?
                .insert(stream.as_slice(), self.next)?;
            if self.feed {
                let mut feed = txn.open_table(LOG_FEED)?;
                let mut feed_key = tenant.to_vec();
                feed_key.extend_from_slice(&self.next.to_be_bytes());
                let mut entry = event_key[tenant.len()..].to_vec();
                entry.extend_from_slice(&1_u64.to_be_bytes());
                feed.insert(feed_key.as_slice(), entry.as_slice())?;
                feed.insert(head_key.as_slice(), self.next.to_be_bytes().as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

/// [`BareRedbLog`] with the feed, its commits made on a thread of its own:
/// each append sends a request over a channel and waits for the answer on
/// the bench's runtime, the hand-off the store's writer thread makes.
#[cfg(feature = "redb")]
pub struct HandedOffRedbLog {
    requests: Option<std::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Result<(), String>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(feature = "redb")]
impl HandedOffRedbLog {
    /// Creates the database file at `path` and starts the thread.
    ///
    /// # Errors
    /// The driver's error.
    pub fn open(path: &Path) -> Result<Self, redb::Error> {
        let mut log = BareRedbLog::open_with_feed(path)?;
        let (requests, received) =
            std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<Result<(), String>>>();
        let thread = std::thread::spawn(move || {
            while let Ok(reply) = received.recv() {
                let _ = reply.send(log.commit_one().map_err(|err| err.to_string()));
            }
        });
        Ok(Self {
            requests: Some(requests),
            thread: Some(thread),
        })
    }
}

#[cfg(feature = "redb")]
impl Drop for HandedOffRedbLog {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(feature = "redb")]
impl BareLoop for HandedOffRedbLog {
    fn label(&self) -> &'static str {
        "bare redb loop, store's tables and feed, handed to a thread"
    }

    fn run(&mut self, bench: &Bench, n: u64) -> OpResult {
        let requests = self.requests.as_ref().expect("the sender lives until drop");
        let mut timed = Timed::start(n);
        for _ in 0..n {
            let began = Instant::now();
            let (reply, answer) = tokio::sync::oneshot::channel();
            requests.send(reply).expect("the bare thread runs");
            bench
                .block_on(answer)
                .expect("the bare thread answers")
                .expect("bare redb append");
            timed.record(began);
        }
        timed.finish()
    }
}

#[cfg(feature = "redb")]
impl BareLoop for BareRedbLog {
    fn label(&self) -> &'static str {
        if self.feed {
            "bare redb loop, store's tables and feed"
        } else {
            "bare redb loop, store's tables"
        }
    }

    fn run(&mut self, _bench: &Bench, n: u64) -> OpResult {
        self.append(n).expect("bare redb append")
    }
}

/// A bare sqlx loop on PostgreSQL, pgbench style: one `INSERT` per
/// autocommit transaction on one connection; no runstore code. The table
/// lives in its own schema, which the postgres engine drops at the end.
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
        let mut timed = Timed::start(n);
        for _ in 0..n {
            self.next += 1;
            let began = Instant::now();
            sqlx::query(&sql)
                .bind("bare-run")
                .bind(format!("e-{}", self.next))
                .bind(&body)
                .execute(&self.pool)
                .await?;
            timed.record(began);
        }
        Ok(timed.finish())
    }

    /// `batches` inserts of `size` rows each (`INSERT ... SELECT ...
    /// UNNEST`), each its own transaction; `events` of the result counts
    /// rows.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn insert_rows(&mut self, batches: u64, size: u64) -> sqlx::Result<OpResult> {
        let body = bare_body();
        let sql = format!(
            "INSERT INTO \"{}\".bare (run_id, event_id, body) \
             SELECT 'bare-run', id, body::jsonb FROM UNNEST($1::TEXT[], $2::TEXT[]) AS u(id, body)",
            self.schema
        );
        let bodies = vec![body; usize::try_from(size).unwrap_or(0)];
        let mut latencies = Vec::with_capacity(usize::try_from(batches).unwrap_or(0));
        let mut elapsed = Duration::ZERO;
        for _ in 0..batches {
            let ids: Vec<String> = (0..size)
                .map(|_| {
                    self.next += 1;
                    format!("e-{}", self.next)
                })
                .collect();
            let began = Instant::now();
            sqlx::query(&sql)
                .bind(&ids)
                .bind(&bodies)
                .execute(&self.pool)
                .await?;
            let took = began.elapsed();
            elapsed += took;
            latencies.push(took);
        }
        Ok(OpResult::from_latencies(
            Operation::BareInsert,
            batches.saturating_mul(size),
            elapsed,
            latencies,
        ))
    }
}

#[cfg(feature = "postgres")]
impl BareLoop for BarePostgres {
    fn label(&self) -> &'static str {
        "bare insert loop"
    }

    fn run(&mut self, bench: &Bench, n: u64) -> OpResult {
        bench.block_on(self.insert(n)).expect("bare insert")
    }

    fn batch(
        &mut self,
        bench: &Bench,
        batches: u64,
        size: u64,
    ) -> Option<(&'static str, OpResult)> {
        let result = bench
            .block_on(self.insert_rows(batches, size))
            .expect("bare batch insert");
        Some(("bare multi-row insert loop", result))
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
        let mut timed = Timed::start(n);
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
            timed.record(began);
        }
        Ok(timed.finish())
    }
}

#[cfg(feature = "s3")]
impl BareLoop for BareObjectPut {
    fn label(&self) -> &'static str {
        "bare conditional PUT loop"
    }

    fn run(&mut self, bench: &Bench, n: u64) -> OpResult {
        bench.block_on(self.insert(n)).expect("bare put")
    }
}

/// An event of the bench tenant shaped like the workload's (about 100
/// bytes of payload), in `run` with id `id`, occurred at `at_ms`.
///
/// # Panics
/// When `run` or `id` is not a valid id.
pub fn bench_event(run: &str, id: &str, at_ms: u64) -> EventRecord {
    let tenant = runstore::bench::bench_tenant();
    let run = runstore_core::RunId::new(run).expect("a valid run id");
    let id = runstore_core::EventId::new(id).expect("a valid event id");
    EventRecord::new(&tenant, run, id, "bench.live", at_ms).with_payload(serde_json::json!({
        "step": 0,
        "status": "ok",
        "detail": "benchmark event with a short human-readable detail",
    }))
}

/// A record body of the size the workload's events serialize to.
#[cfg(any(
    feature = "sqlite",
    feature = "redb",
    feature = "postgres",
    feature = "s3"
))]
fn bare_body() -> String {
    serde_json::to_string(&bench_event("bare-run", "e-0", 0)).expect("a record serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(crate::footprint::rss_bytes().unwrap() > 0);
    }
}
