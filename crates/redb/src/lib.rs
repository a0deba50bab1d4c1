//! redb backend of runstore: the event log and snapshot store in one
//! embedded, pure-Rust [redb](https://docs.rs/redb) file.
//!
//! [`RedbStore`] implements [`EventLog`](runstore_core::EventLog) and
//! [`SnapshotStore`](runstore_core::SnapshotStore) as the storage contract
//! describes (`CONTRACT §1-§20`). In brief:
//!
//! - One stream's events are one contiguous key range in seq order, so a
//!   read (tail or window) is one range scan; every key is prefixed by a
//!   length-prefixed encoding of tenant and run, so tenants never share keys
//!   (`docs/backends/redb.md` lists the tables and the encoding).
//! - redb is blocking, so it never runs on the async executor: reads run on
//!   tokio's blocking pool in read transactions, which never wait for
//!   writers; writes go to one writer thread that groups every request queued
//!   behind a commit into the next write transaction (*group commit*), so
//!   concurrent appenders share fsyncs.
//! - Commits are durable by default (CONTRACT §16): each group commit is
//!   synced before its requests are answered, and an open syncs the file
//!   before redb reads it, so nothing it answers rests on a killed
//!   process's unsynced commit. [`Durability::Relaxed`]
//!   (chosen with [`RedbOptions::with_durability`]) commits the same way but
//!   never syncs: an answered write is in the file, so it survives a killed
//!   process, but a power loss may lose recent commits or leave a file that
//!   does not open (see [`RedbOptions::durability`]).
//! - A file left by a creation that a power cut or a kill interrupted
//!   (sized, but without redb's magic number and with nothing past its
//!   header page) is emptied and created again instead of being refused on
//!   every open.
//! - The file is locked while open: a second process (or a second open in
//!   this one) gets [`Error::Locked`] naming the file. The lock is released
//!   when the last clone of the handle is dropped.
//!
//! # Example
//!
//! ```
//! use runstore_core::{
//!     EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, SnapshotStoreExt, Tenant,
//! };
//! use runstore_redb::RedbStore;
//! # let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
//! # rt.block_on(async {
//! let dir = tempfile::tempdir().expect("temp dir");
//! let path = dir.path().join("runs.redb");
//!
//! let store = RedbStore::open(&path).await?;
//! let tenant = Tenant::new("acme", "prod", None)?;
//! let run = RunId::new("run-42")?;
//! for (id, at) in [("started", 100), ("step-1", 200)] {
//!     let event = EventRecord::new(&tenant, run.clone(), EventId::new(id)?, "demo", at);
//!     store.append(&tenant, &event).await?;
//! }
//! // A duplicate id returns the original seq and writes nothing (CONTRACT §2).
//! let again = EventRecord::new(&tenant, run.clone(), EventId::new("started")?, "demo", 300);
//! let outcome = store.append(&tenant, &again).await?;
//! assert_eq!((outcome.seq, outcome.inserted), (1, false));
//! drop(store);
//!
//! // Reopening finds everything again.
//! let store = RedbStore::open(&path).await?;
//! let tail = store.read(&tenant, &run, ReadQuery::tail(1)).await?;
//! assert_eq!(tail[0].event_id, "step-1");
//! assert_eq!(store.next_seq(&tenant, &run).await?, 3);
//! assert!(store.latest(&tenant, &run).await?.is_none());
//! # Ok::<_, runstore_core::Error>(())
//! # }).unwrap();
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

mod backend;
mod error;
mod feed;
mod log;
pub mod salvage;
mod snapshots;
mod tables;
mod writer;

use std::{fmt, path::Path, sync::Arc};

use redb::{
    Builder, Database, ReadTransaction, ReadableDatabase, ReadableTable, StorageBackend,
    backends::FileBackend,
};
use runstore_core::{Error, FeedSignal, Result, validate::Limits};
use runstore_fs::{StdFs, run_blocking};

pub use runstore_core::Durability;

use crate::{
    backend::{UnsyncedBackend, discard_unfinished_create},
    error::{BACKEND, Failure},
    tables::{
        ERASED, EVENTS, FEED, FORMAT_BEFORE_FEED, FORMAT_KEY, FORMAT_VERSION, HEADS, IDS, META,
        SNAPSHOT_ORDER, SNAPSHOTS,
    },
    writer::{FeedHooks, Writer},
};

/// How a [`RedbStore`] is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedbOptions {
    /// Whether commits are synced (CONTRACT §16).
    ///
    /// - [`Durability::Durable`] (the default): every group commit is
    ///   synced (`fdatasync`) before its requests are answered, so a write
    ///   that returned `Ok` survives a killed process and a power loss; the
    ///   open syncs the file before redb reads it, so a commit a killed
    ///   process wrote but never synced is on the disk before the store
    ///   answers anything about it.
    /// - [`Durability::Relaxed`]: every group commit writes its pages and
    ///   the file's header into the file before its requests are answered,
    ///   but nothing is synced until the last handle is dropped. A write
    ///   that returned `Ok` survives a killed process (the operating system
    ///   holds it); a power loss or a crash of the machine may lose any
    ///   commit made since the store was opened or last closed cleanly, and
    ///   may leave a file that fails to open with `Corrupt`, because the
    ///   disk then holds whichever of the unsynced pages the kernel wrote
    ///   back. Meant for bulk loads and tests; a clean close (dropping the
    ///   last handle) syncs the file once, making everything durable.
    pub durability: Durability,
    /// redb's page cache, in bytes. `None` keeps redb's default (1 GiB, a
    /// ceiling, not an allocation).
    pub cache_size: Option<usize>,
    /// The most write requests one group commit takes. Default 1,024.
    pub max_batch: usize,
    /// What every write is checked against before it is queued (CONTRACT
    /// §21-§24). Default [`Limits::default`].
    pub limits: Limits,
    /// How long every commit that gives records feed positions sleeps
    /// after they took them and before it commits; a test hook for the
    /// feed's lossless rule (CONTRACT §29), `None` by default.
    #[doc(hidden)]
    pub test_commit_delay: Option<std::time::Duration>,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Durable,
            cache_size: None,
            max_batch: 1024,
            limits: Limits::default(),
            test_commit_delay: None,
        }
    }
}

impl RedbOptions {
    /// Sets the durability mode: [`Durability::Durable`] syncs every
    /// commit; [`Durability::Relaxed`] writes every commit into the file but
    /// syncs only when the last handle is dropped, so an acknowledged write
    /// survives a killed process but not a power loss, which may also leave
    /// the file unopenable (see [`RedbOptions::durability`]).
    #[must_use]
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets redb's page cache size in bytes.
    #[must_use]
    pub fn with_cache_size(mut self, bytes: usize) -> Self {
        self.cache_size = Some(bytes);
        self
    }

    /// Sets the most write requests one group commit takes (at least 1).
    #[must_use]
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// Sets the limits every append, import and snapshot is checked
    /// against (only the record size can differ from the default).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Makes every commit that gives records feed positions sleep for
    /// `delay` after they took them and before the commit makes them
    /// visible. For tests of the feed's lossless rule only.
    #[doc(hidden)]
    #[must_use]
    pub fn with_test_commit_delay(mut self, delay: std::time::Duration) -> Self {
        self.test_commit_delay = Some(delay);
        self
    }
}

/// A runstore backed by one redb file.
///
/// Cheap to clone (an [`Arc`] inside), `Send + Sync`, usable from many tasks
/// at once; two stores on different files are independent (CONTRACT §20).
/// The file stays open, and locked against other opens, until the last
/// clone is dropped; dropping it waits for queued writes to finish.
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: Arc<Path>,
    durability: Durability,
    limits: Limits,
    /// Raised by the writer after each commit that gave records feed
    /// positions.
    feed_signal: FeedSignal,
    /// A stream whose compaction or prune writes fail as redb would, to
    /// test the stream-by-stream retry.
    #[cfg(test)]
    maintenance_fault: std::sync::Mutex<Option<Vec<u8>>>,
    /// Reads [`RedbStore::read_txn_inline`] answered, to test which path a
    /// read took.
    #[cfg(test)]
    inline_reads: std::sync::atomic::AtomicUsize,
    db: Arc<Database>,
    // Declared last: dropped after `db`'s reference, it stops and joins the
    // writer thread, which holds the last other reference, so the file is
    // closed by the time the handle's drop returns.
    writer: Writer,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.inner.path)
            .field("durability", &self.inner.durability)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (creating if needed) the store in the redb file at `path`, with
    /// durable commits.
    ///
    /// # Errors
    /// `Locked` when another handle, in this or another process, has the
    /// file open; `Io` when the file or its directory cannot be created;
    /// `Corrupt` when the file is not a redb file of this layout.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, RedbOptions::default()).await
    }

    /// Opens (creating if needed) the store at `path` with `options`.
    ///
    /// # Errors
    /// As [`RedbStore::open`].
    pub async fn open_with(path: impl AsRef<Path>, options: RedbOptions) -> Result<Self> {
        let path: Arc<Path> = Arc::from(path.as_ref());
        let open_path = Arc::clone(&path);
        let open_options = options.clone();
        let db = run_blocking(BACKEND, move || open_database(&open_path, &open_options)).await?;
        Self::start(path, db, options)
    }

    /// Opens (creating if it is empty) the store held by `backend`, a redb
    /// [`StorageBackend`], with `options`; `name` stands for the file in
    /// errors and [`RedbStore::path`]. In durable mode the backend's
    /// `sync_data` is called first, before redb reads it; in relaxed mode
    /// only on close, as for a file.
    ///
    /// For tests that run the store on storage of their own (a simulated
    /// disk); not part of the supported API.
    ///
    /// # Errors
    /// As [`RedbStore::open`], without the directory handling.
    #[doc(hidden)]
    pub async fn open_with_backend<B: StorageBackend>(
        backend: B,
        name: impl AsRef<Path>,
        options: RedbOptions,
    ) -> Result<Self> {
        let path: Arc<Path> = Arc::from(name.as_ref());
        let open_path = Arc::clone(&path);
        let open_options = options.clone();
        let db = run_blocking(BACKEND, move || {
            open_backend(backend, &open_path, &open_options)
        })
        .await?;
        Self::start(path, db, options)
    }

    /// Starts the writer of the opened `db`.
    fn start(path: Arc<Path>, db: Database, options: RedbOptions) -> Result<Self> {
        let db = Arc::new(db);
        let feed_signal = FeedSignal::new();
        let hooks = FeedHooks {
            signal: feed_signal.clone(),
            commit_delay: options.test_commit_delay,
        };
        let writer = Writer::start(
            Arc::clone(&db),
            path.to_path_buf(),
            options.durability,
            options.max_batch,
            hooks,
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                durability: options.durability,
                limits: options.limits,
                feed_signal,
                #[cfg(test)]
                maintenance_fault: std::sync::Mutex::new(None),
                #[cfg(test)]
                inline_reads: std::sync::atomic::AtomicUsize::new(0),
                db,
                writer,
            }),
        })
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The durability mode the store was opened with.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// Runs `work` in a read transaction on the blocking pool.
    async fn read_txn<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, Failure> + Send + 'static,
    {
        let db = Arc::clone(&self.inner.db);
        let path = Arc::clone(&self.inner.path);
        run_blocking(BACKEND, move || {
            let txn = db
                .begin_read()
                .map_err(|err| Failure::from(err).into_error(&path))?;
            work(&txn).map_err(|failure| failure.into_error(&path))
        })
        .await
    }

    /// [`Self::read_txn`] on the calling task, for a read of one record:
    /// cheaper there than the hand-off to the blocking pool and back.
    fn read_txn_inline<T, F>(&self, work: F) -> Result<T>
    where
        F: FnOnce(&ReadTransaction) -> Result<T, Failure>,
    {
        #[cfg(test)]
        self.inner
            .inline_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(|err| Failure::from(err).into_error(&self.inner.path))?;
        work(&txn).map_err(|failure| failure.into_error(&self.inner.path))
    }

    fn writer(&self) -> &Writer {
        &self.inner.writer
    }

    fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The stream key whose compaction or prune writes fail (tests only;
    /// `None` otherwise).
    fn maintenance_fault(&self) -> Option<Vec<u8>> {
        #[cfg(test)]
        {
            self.inner
                .maintenance_fault
                .lock()
                .expect("not poisoned")
                .clone()
        }
        #[cfg(not(test))]
        {
            None
        }
    }
}

/// Opens or creates the file, creates the tables and checks the layout
/// version. A new file's directory is synced in durable mode (CONTRACT §16).
fn open_database(path: &Path, options: &RedbOptions) -> Result<Database> {
    let parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty());
    if let Some(parent) = parent {
        runstore_fs::create_dirs(&StdFs, parent, options.durability).map_err(|err| {
            Error::io(
                format!("creating the directory of redb store {}", path.display()),
                err,
            )
        })?;
    }
    let existed = path
        .try_exists()
        .map_err(|err| Error::io(format!("checking redb store {}", path.display()), err))?;
    // What `Builder::create` opens.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|err| Error::io(format!("opening redb store {}", path.display()), err))?;
    let backend = FileBackend::new(file).map_err(|err| Failure::from(err).into_error(path))?;
    let db = open_backend(backend, path, options)?;
    if !existed && options.durability == Durability::Durable {
        // A bare file name lives in the current directory.
        runstore_fs::sync_dir(parent.unwrap_or(Path::new("."))).map_err(|err| {
            Error::io(
                format!("syncing the directory of new redb store {}", path.display()),
                err,
            )
        })?;
    }
    Ok(db)
}

/// Opens the database on `backend` (behind [`UnsyncedBackend`] in relaxed
/// mode), after emptying an unfinished creation, and creates the tables.
///
/// In durable mode the backend is synced first, before anything is read
/// from it (CONTRACT §16). A process killed after writing a commit but
/// before syncing it leaves that commit in the operating system's page
/// cache, and redb's recovery accepts it when its checksums are right; a
/// read or a retry answered from it would rest on writes a power loss can
/// still drop. For a file, `fdatasync` on this descriptor writes back every
/// dirty page of the file, whichever process wrote it, so after this sync
/// everything the open can see is on the disk. (redb 4 also syncs while it
/// opens a database for writing; this sync does not rely on that.)
fn open_backend<B: StorageBackend>(
    backend: B,
    path: &Path,
    options: &RedbOptions,
) -> Result<Database> {
    if options.durability == Durability::Durable {
        backend.sync_data().map_err(|err| {
            Error::io(
                format!("syncing redb store {} before opening it", path.display()),
                err,
            )
        })?;
    }
    discard_unfinished_create(&backend).map_err(|err| {
        Error::io(
            format!(
                "checking for an unfinished creation of redb store {}",
                path.display()
            ),
            err,
        )
    })?;
    let builder = builder(options);
    let created = match options.durability {
        Durability::Durable => builder.create_with_backend(backend),
        Durability::Relaxed => builder.create_with_backend(UnsyncedBackend::new(backend)),
    };
    let db = created.map_err(|err| Failure::from(err).into_error(path))?;
    init_tables(&db, path).map_err(|failure| failure.into_error(path))?;
    Ok(db)
}

/// redb's builder with the options' cache size.
fn builder(options: &RedbOptions) -> Builder {
    let mut builder = Database::builder();
    if let Some(bytes) = options.cache_size {
        builder.set_cache_size(bytes);
    }
    builder
}

fn init_tables(db: &Database, path: &Path) -> Result<(), Failure> {
    let txn = db.begin_write()?;
    {
        txn.open_table(EVENTS)?;
        txn.open_table(IDS)?;
        txn.open_table(HEADS)?;
        // Created on the first open of a file older than erasure too (see
        // `ERASED`).
        txn.open_table(ERASED)?;
        txn.open_table(SNAPSHOTS)?;
        txn.open_table(SNAPSHOT_ORDER)?;
        txn.open_table(FEED)?;
        let mut meta = txn.open_table(META)?;
        let format = meta.get(FORMAT_KEY)?.map(|guard| guard.value());
        match format {
            None => {
                meta.insert(FORMAT_KEY, FORMAT_VERSION)?;
            }
            Some(FORMAT_VERSION) => {}
            // Written before the feed: its records get their positions
            // now, in this transaction, so the upgrade happens once and
            // whole or not at all.
            Some(FORMAT_BEFORE_FEED) => {
                feed::give_positions(&txn)?;
                meta.insert(FORMAT_KEY, FORMAT_VERSION)?;
            }
            Some(other) => {
                return Err(Failure::Rejected(Error::corrupt(
                    format!("meta table of redb store {}", path.display()),
                    format!("layout version {other} is not the supported version {FORMAT_VERSION}"),
                )));
            }
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_a_handle() {
        runstore_conformance::support::assert_handle::<RedbStore>();
    }

    #[test]
    fn options_setters() {
        let options = RedbOptions::default()
            .with_durability(Durability::Relaxed)
            .with_cache_size(1 << 20)
            .with_max_batch(0);
        assert_eq!(options.durability, Durability::Relaxed);
        assert_eq!(options.cache_size, Some(1 << 20));
        assert_eq!(options.max_batch, 1);
    }
}
