//! The SQLite backend of runstore: [`SqliteStore`] implements
//! [`EventLog`](runstore_core::EventLog) and
//! [`SnapshotStore`](runstore_core::SnapshotStore) on one SQLite database
//! file, through sqlx with the tokio runtime (and rusqlite for one-row
//! snapshot reads on the caller's thread).
//!
//! # Example
//!
//! ```
//! use runstore_core::{EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, Tenant};
//! use runstore_sqlite::SqliteStore;
//! # let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! let dir = tempfile::tempdir().expect("temporary directory");
//! let store = SqliteStore::open(dir.path().join("runs.sqlite")).await?;
//! let tenant = Tenant::new("acme", "prod", None)?;
//! let run = RunId::new("run-42")?;
//! let event = EventRecord::new(&tenant, run.clone(), EventId::new("started")?, "demo", 100);
//! assert_eq!(store.append(&tenant, &event).await?.seq, 1);
//! // The same id again is not written twice (CONTRACT §2).
//! assert!(!store.append(&tenant, &event).await?.inserted);
//! let tail = store.read(&tenant, &run, ReadQuery::tail(10)).await?;
//! assert_eq!(tail.len(), 1);
//! # Ok::<_, runstore_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! # How it works
//!
//! - **Schema** from embedded, versioned migrations (`migrations/`, applied
//!   on open; no database is needed to build). Tables `events`,
//!   `compacted_ids`, `streams` and `snapshots`, each keyed by the tenant
//!   (`org_id`, `workspace_id`, `deployment_id`) and the run; an absent
//!   deployment is stored as `''`, which no present deployment id can be, so
//!   it takes part in every unique key. Each record is stored as the
//!   serde_json text of the record plus the columns keys and compaction
//!   need. See `docs/backends/sqlite.md`.
//! - **One writer**: every write runs on one connection, in write
//!   transactions. Appends and snapshot puts that are waiting together share
//!   one transaction and one commit (group commit); each request is planned
//!   on its own with the core's
//!   [`plan_append`](runstore_core::raw::append::plan_append). A group of appends
//!   to one stream the writer has written before is planned against the
//!   last seq it left and written by one guarded `INSERT` that writes
//!   nothing if the stream has moved on or an id is compacted; other groups
//!   run in `BEGIN IMMEDIATE` against the stream's last seq and an index
//!   lookup of its ids (live in `events`, compacted in `compacted_ids`).
//!   Unique keys on (stream, seq) and (stream, event_id) are the last line
//!   of defence; a violation re-plans, it is never answered as a raw
//!   database error.
//! - **Validated at the entry**: every write is checked with
//!   [`SqliteOptions::limits`] (the core's shared
//!   `Limits`) before it is queued, so a
//!   refused request writes nothing and never joins a group.
//! - **Maintenance per stream**: `compact` and `prune` take streams into a
//!   write transaction until it has pruned 256 events (or deleted
//!   as many snapshots), so a writer waits for one such transaction, not
//!   for the pass; a transaction that fails is run again with its first
//!   stream alone, so the report names only the streams that fail alone.
//! - **Erasure** (CONTRACT §27): `delete_run` is a writer job of its own,
//!   queued behind the appends already waiting: one `BEGIN IMMEDIATE`
//!   transaction deletes the run's `events` and `compacted_ids` rows and
//!   writes its erasure marker at its last seq. The freed pages keep their
//!   bytes until SQLite reuses them or a `VACUUM` rewrites the file.
//! - **Change feed** (CONTRACT §29): every record takes its tenant's next
//!   feed position (`events.feed_pos`) in the write transaction that
//!   stores it, under SQLite's write lock, so positions follow commit order
//!   across processes and a reader never skips a later commit;
//!   `read_feed` is one range scan of the index `events_by_feed`. The
//!   handle's feed signal is raised after each of its commits that wrote
//!   records; other processes' commits are seen by polling.
//! - **Reads** go through a few sqlx reader connections, except the
//!   one-row snapshot reads (`get`, and `list` of up to 16, which `latest`
//!   is): those run on the caller's thread through rusqlite over the same
//!   SQLite library, with no hand-off to wait for, and fall back to the
//!   sqlx readers whenever they cannot answer at once.
//! - **Driven by its callers**: the request that finds the writer idle
//!   drives it until its own answer arrives, so an uncontended write runs
//!   on the caller's thread; queued work left then is handed to a thread of
//!   the store's own. Writes must be made from within a tokio runtime with
//!   its time driver enabled. sqlx runs the statements on the connection's
//!   worker thread, so no executor is ever blocked.
//! - **Readers**: a few read-only connections; in WAL mode they never block
//!   the writer and see every committed write.
//! - **Several processes** may open one file: SQLite's write lock
//!   serialises their writers, SQLite's busy handler waits for the lock, and after
//!   [`SqliteOptions::busy_timeout`] a write fails with a retryable
//!   [`Error::Backend`] naming the lock.
//! - **Durability** (CONTRACT §16): WAL with `synchronous = FULL` by default
//!   (each commit syncs the WAL, and an open syncs the `-wal` and database
//!   files it finds before answering anything, so nothing it answers rests
//!   on a killed process's unsynced frames); [`Durability::Relaxed`] uses
//!   `NORMAL` and syncs nothing at open (a commit survives a killed
//!   process, not necessarily power loss).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

mod conn;
mod error;
mod inline;
mod log;
pub mod salvage;
mod schema;
mod snapshots;
mod writer;

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use runstore_core::{
    Durability, Error, FeedSignal, MaintenanceReport, Result, StreamKey,
    raw::{compaction::STEPS_PER_COMMIT, group::Answer},
    validate::Limits,
};

use runstore_fs::{StdFs, run_blocking};

use crate::{
    conn::Readers,
    error::{BACKEND, SqliteError},
    inline::InlineReaders,
    writer::{CallerPuts, FeedHooks, Job, Maintenance, WriteQueue, Writer},
};

/// Streams offered to one maintenance transaction, which takes them in
/// steps of a bounded amount of work (`writer::STEP_WORK`), up to
/// [`STEPS_PER_COMMIT`] steps while no other job of this handle waits: few
/// enough that the write lock is not held for long (appends of every
/// process wait for it), enough to share one sync among several streams.
const MAINTENANCE_STREAMS_OFFERED: usize = 256;

/// How long a maintenance pass's transactions hold the write lock, one
/// after another, before the pass leaves it free for [`MAINTENANCE_PAUSE`]
/// (see `SqliteStore::maintain`).
const MAINTENANCE_HOLD: Duration = Duration::from_secs(1);

/// How long a maintenance pass leaves the write lock free after
/// [`MAINTENANCE_HOLD`]: twice the 100 ms between two polls of SQLite's
/// busy handler, so that a writer of another process waiting for the lock
/// polls inside the pause even when its sleep overshoots.
const MAINTENANCE_PAUSE: Duration = Duration::from_millis(200);

/// How a [`SqliteStore`] is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// How hard a write works to survive a crash (CONTRACT §16):
    /// `Durable` (default) is WAL with `synchronous = FULL`, `Relaxed` is
    /// WAL with `synchronous = NORMAL`.
    pub durability: Durability,
    /// How long a connection waits for a lock another connection or process
    /// holds (SQLite's `busy_timeout`, and the bound on retrying
    /// SQLITE_BUSY) before the operation fails. Default 5 s.
    pub busy_timeout: Duration,
    /// How many read-only connections serve reads. Default 4.
    pub readers: usize,
    /// What a write may hold (CONTRACT §21-§24): every write is checked
    /// against it before it reaches the writer, and a refused write writes
    /// nothing. Default [`Limits::default`] (records up to 4 MiB).
    pub limits: Limits,
    /// A test hook: how long every commit that writes records waits after
    /// the records have taken their feed positions and before `COMMIT`
    /// makes them visible. Set with
    /// [`with_test_commit_delay`](Self::with_test_commit_delay); not part of
    /// the supported API.
    #[doc(hidden)]
    pub test_commit_delay: Option<Duration>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Durable,
            busy_timeout: Duration::from_secs(5),
            readers: 4,
            limits: Limits::default(),
            test_commit_delay: None,
        }
    }
}

impl SqliteOptions {
    /// Sets [`SqliteOptions::durability`].
    #[must_use]
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets [`SqliteOptions::busy_timeout`].
    #[must_use]
    pub fn with_busy_timeout(mut self, busy_timeout: Duration) -> Self {
        self.busy_timeout = busy_timeout;
        self
    }

    /// Sets [`SqliteOptions::readers`] (at least 1 is used).
    #[must_use]
    pub fn with_readers(mut self, readers: usize) -> Self {
        self.readers = readers;
        self
    }

    /// Sets [`SqliteOptions::limits`].
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Makes every commit that writes records wait `delay` after the records
    /// have taken their feed positions and before `COMMIT` (CONTRACT §29's
    /// late commit, for tests). The waiting transaction holds SQLite's write
    /// lock, so every other writer of the file waits with it.
    ///
    /// For tests; not part of the supported API.
    #[doc(hidden)]
    #[must_use]
    pub fn with_test_commit_delay(mut self, delay: Duration) -> Self {
        self.test_commit_delay = Some(delay);
        self
    }
}

/// A runstore on one SQLite database file.
///
/// Cheap to clone (an `Arc` inside); clones share the writer and the reader
/// connections. Any number of handles, in this process or others, may open
/// the same file (CONTRACT §3, §20). The connections close when the last
/// clone is dropped and no write is in flight.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: Arc<str>,
    options: SqliteOptions,
    writes: Arc<WriteQueue>,
    readers: Readers,
    /// One-row snapshot reads on the caller's thread ([`inline`]).
    inline: InlineReaders,
    /// Lone snapshot puts the writer committed on the caller's thread.
    caller_puts: Arc<AtomicU64>,
    /// Event and feed reads answered from one aggregated row.
    aggregated_reads: AtomicU64,
    /// Append groups the writer wrote on the guarded path.
    guarded_groups: Arc<AtomicU64>,
    /// [`schema::aggregated_read`] of each of [`schema::READ_WINDOWS`].
    read_sql: [String; 4],
    /// [`schema::aggregated_read`] of [`schema::READ_FEED`].
    feed_sql: String,
    /// Raised by the writer after each commit that wrote records.
    signal: FeedSignal,
    /// What the durable open's checkpoint answered: (busy, frames in the
    /// WAL, frames checkpointed); `None` in relaxed mode.
    open_checkpoint: Option<(i64, i64, i64)>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with the default
    /// options: durable, 5 s busy timeout.
    ///
    /// # Errors
    /// As [`SqliteStore::open_with`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens (creating if needed, with its parent directory) the database at
    /// `path`, applies the embedded migrations and starts the writer.
    ///
    /// With [`Durability::Durable`] the parent directory is synced after
    /// open, so a newly created file's directory entry survives power loss,
    /// and the open checkpoints the WAL it found (`PRAGMA
    /// wal_checkpoint(PASSIVE)`) before the store answers anything: a
    /// process killed after writing a commit's WAL frames but before
    /// syncing them leaves frames that this open's WAL recovery accepts,
    /// and a read or a retry answered from them would otherwise rest on
    /// writes a power loss can still drop (CONTRACT §16). SQLite syncs the
    /// WAL before it copies frames into the database file, and the database
    /// file before it records them as copied, so the found frames are on
    /// the disk once the checkpoint has copied them; a reader of another
    /// process holding an older snapshot can keep a passive checkpoint from
    /// copying (and so from syncing) the frames after its snapshot.
    ///
    /// The sync goes through SQLite's own connection on purpose: closing
    /// any other descriptor of the database file would drop every POSIX
    /// lock this process holds on it, SQLite's included, and another
    /// process could then take this one's connections for gone and reset
    /// the WAL under them. [`Durability::Relaxed`] syncs nothing at open.
    ///
    /// # Errors
    /// `Io` when the directory cannot be created or synced; `Backend` when
    /// the file cannot be opened as a database or the migrations fail
    /// (retryable when another process held the lock past the busy
    /// timeout).
    pub async fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let file = path.as_ref().to_path_buf();
        let name: Arc<str> = Arc::from(file.display().to_string());
        let parent = file
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .map(Path::to_path_buf);
        if let Some(parent) = &parent {
            let dir = parent.clone();
            let durability = options.durability;
            run_blocking(BACKEND, move || {
                runstore_fs::create_dirs(&StdFs, &dir, durability).map_err(|err| {
                    Error::io(format!("create the directory {}", dir.display()), err)
                })
            })
            .await?;
        }
        let writer_options = conn::writer_options(&file, options.durability, options.busy_timeout);
        let mut conn = conn::connect(&name, &writer_options, options.busy_timeout).await?;
        migrate(&name, &mut conn, options.busy_timeout).await?;
        let mut open_checkpoint = None;
        if options.durability == Durability::Durable {
            let dir = parent.unwrap_or_else(|| PathBuf::from("."));
            run_blocking(BACKEND, move || {
                runstore_fs::sync_dir(&dir)
                    .map_err(|err| Error::io(format!("sync the directory {}", dir.display()), err))
            })
            .await?;
            open_checkpoint = Some(
                sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_one(&mut conn)
                    .await
                    .map_err(|err| {
                        SqliteError::driver(&name, "checkpoint the WAL found at open", err)
                    })?,
            );
        }
        let caller_puts = Arc::new(AtomicU64::new(0));
        let guarded_groups = Arc::new(AtomicU64::new(0));
        let signal = FeedSignal::new();
        let feed = FeedHooks {
            signal: signal.clone(),
            commit_delay: options.test_commit_delay,
        };
        let writes = WriteQueue::new(
            Writer::new(
                conn,
                name.clone(),
                options.busy_timeout,
                feed,
                CallerPuts {
                    file: file.clone(),
                    durability: options.durability,
                    written: Arc::clone(&caller_puts),
                },
                Arc::clone(&guarded_groups),
                Arc::new(AtomicUsize::new(0)),
            ),
            writer_options,
        );
        let readers = Readers::new(name.clone(), &file, options.readers, options.busy_timeout);
        Ok(Self {
            inner: Arc::new(Inner {
                path: name,
                options,
                writes,
                readers,
                inline: InlineReaders::new(&file),
                caller_puts,
                aggregated_reads: AtomicU64::new(0),
                guarded_groups,
                read_sql: schema::READ_WINDOWS.map(|window| schema::aggregated_read(window, "seq")),
                feed_sql: schema::aggregated_read(schema::READ_FEED, "feed_pos"),
                signal,
                open_checkpoint,
            }),
        })
    }

    /// The database file's path, as given.
    pub fn path(&self) -> &str {
        &self.inner.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &SqliteOptions {
        &self.inner.options
    }

    /// What the durable open's `PRAGMA wal_checkpoint(PASSIVE)` answered:
    /// (busy, frames in the WAL, frames checkpointed); `None` in relaxed
    /// mode.
    ///
    /// For tests of the open's syncs; not part of the supported API.
    #[doc(hidden)]
    pub fn open_checkpoint(&self) -> Option<(i64, i64, i64)> {
        self.inner.open_checkpoint
    }

    /// How many snapshot puts this handle committed on the caller's thread
    /// (see `docs/backends/sqlite.md`, "A lone snapshot put on the caller's
    /// thread").
    ///
    /// For tests of which path a put took; not part of the supported API.
    #[doc(hidden)]
    pub fn caller_thread_puts(&self) -> u64 {
        self.inner.caller_puts.load(Ordering::Relaxed)
    }

    /// How many event and feed reads this handle answered from one
    /// aggregated row (see `docs/backends/sqlite.md`, "Reads"); the others
    /// were read row by row.
    ///
    /// For tests of which path a read took; not part of the supported API.
    #[doc(hidden)]
    pub fn aggregated_reads(&self) -> u64 {
        self.inner.aggregated_reads.load(Ordering::Relaxed)
    }

    /// How many append groups this handle's writer wrote on the guarded
    /// path (see `docs/backends/sqlite.md`, "The guarded path"); the others
    /// took the general one.
    ///
    /// For tests of which path an append took; not part of the supported
    /// API.
    #[doc(hidden)]
    pub fn guarded_appends(&self) -> u64 {
        self.inner.guarded_groups.load(Ordering::Relaxed)
    }

    /// Counts a read answered from one aggregated row.
    fn aggregated_read(&self) {
        self.inner.aggregated_reads.fetch_add(1, Ordering::Relaxed);
    }

    fn readers(&self) -> &Readers {
        &self.inner.readers
    }

    fn inline(&self) -> &InlineReaders {
        &self.inner.inline
    }

    /// The streams `query` lists (rows of the four key columns), ascending
    /// and without repeats.
    async fn list_streams(
        &self,
        query: schema::SqlQuery<'_>,
        action: &'static str,
    ) -> Result<Vec<StreamKey>> {
        let mut reader = self.readers().get().await?;
        let rows = query
            .fetch_all(reader.conn())
            .await
            .map_err(|err| SqliteError::driver(&self.inner.path, action, err))?;
        drop(reader);
        let mut streams = rows
            .iter()
            .map(|row| writer::stream_from_row(row, self.path()))
            .collect::<Result<Vec<_>>>()?;
        streams.sort();
        streams.dedup();
        Ok(streams)
    }

    /// Runs `task` on `streams` (ascending), a few streams per write
    /// transaction so that the write lock, which the appends of every
    /// process wait for, is not held for long. Each stream is processed on
    /// its own (CONTRACT §25): a stream that fails is in the report, and the
    /// pass goes on.
    ///
    /// After its transactions have held the write lock for
    /// [`MAINTENANCE_HOLD`], the pass leaves it free for
    /// [`MAINTENANCE_PAUSE`]. Appends of this handle go first anyway (the
    /// writer takes queued jobs in order); a writer of another process is
    /// not queued: SQLite's busy handler polls the lock, 100 ms apart once
    /// it has waited a third of a second, and would find it taken at every
    /// poll if the transactions followed each other at once, until its
    /// busy timeout ran out. A pause longer than that interval holds one of
    /// its polls, so it waits about [`MAINTENANCE_HOLD`] at most
    /// (`tests/maintenance_beside_a_process.rs`).
    ///
    /// # Errors
    /// When the store itself fails (locked past the busy timeout, the
    /// connection or the file failed); streams compacted by then stay so.
    async fn maintain(
        &self,
        task: Maintenance,
        streams: &[StreamKey],
    ) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport::default();
        let mut rest = streams;
        let mut held = Duration::ZERO;
        let mut steps = STEPS_PER_COMMIT;
        while !rest.is_empty() {
            let offered = &rest[..rest.len().min(MAINTENANCE_STREAMS_OFFERED)];
            let (reply, answer) = runstore_core::raw::group::reply();
            let started = Instant::now();
            let done = self
                .submit(
                    Job::Maintain {
                        task,
                        streams: offered.to_vec(),
                        steps,
                        reply,
                    },
                    answer,
                )
                .await?;
            report.removed += done.report.removed;
            report.failed.extend(done.report.failed);
            if done.failed_over {
                steps = 1;
            }
            // A transaction finishes at least one stream, or prunes some of
            // the first one's events and leaves it first for the next.
            rest = &rest[done.finished.min(offered.len())..];
            held += started.elapsed();
            if held >= MAINTENANCE_HOLD && !rest.is_empty() {
                tokio::time::sleep(MAINTENANCE_PAUSE).await;
                held = Duration::ZERO;
            }
        }
        report.sort();
        Ok(report)
    }

    /// Queues `job` for the writer and waits for its answer.
    async fn submit<T>(&self, job: Job, answer: Answer<T>) -> Result<T> {
        let leader = self.inner.writes.submit(job)?;
        writer::answered(leader, answer).await.unwrap_or_else(|| {
            Err(SqliteError::LeaderCancelled {
                path: self.inner.path.clone(),
            }
            .into())
        })
    }
}

/// Applies the embedded migrations. Two processes creating the same file at
/// once may both try; the loser's error is retried (the statements are
/// idempotent) until the busy timeout has passed.
async fn migrate(
    path: &Arc<str>,
    conn: &mut sqlx::SqliteConnection,
    busy_timeout: Duration,
) -> Result<(), SqliteError> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        // `run_direct` takes the connection itself: `run` goes through `Acquire`,
        // whose lifetime bound makes the open future not `Send`.
        match schema::MIGRATOR.run_direct(&mut *conn).await {
            Ok(()) => return Ok(()),
            Err(source) => {
                // A concurrent opener's schema change shows up as a database
                // error (busy, "already exists", a duplicate version row).
                let retry = match &source {
                    sqlx::migrate::MigrateError::Execute(err)
                    | sqlx::migrate::MigrateError::ExecuteMigration(err, _) => {
                        err.as_database_error().is_some()
                    }
                    _ => false,
                };
                if retry && started.elapsed() < busy_timeout && attempt < 20 {
                    attempt += 1;
                    tokio::time::sleep(conn::backoff(attempt)).await;
                    continue;
                }
                return Err(SqliteError::Migrate {
                    path: path.clone(),
                    migrate: source,
                });
            }
        }
    }
}
