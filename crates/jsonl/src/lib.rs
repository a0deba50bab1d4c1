//! The JSON-lines backend of runstore: plain files in one directory, the
//! embedded default.
//!
//! [`JsonlStore`] implements [`EventLog`](runstore_core::EventLog) and
//! [`SnapshotStore`](runstore_core::SnapshotStore) over an append-only log
//! of JSON lines (the reference record format) and one JSON file per
//! snapshot. An index built once at open answers appends,
//! duplicate checks, `next_seq` and `seq_of` from memory, and reads of a
//! window touch only that window's bytes. Concurrent appends are committed
//! together by one writer thread with one sync.
//!
//! # Example
//!
//! ```
//! use runstore_core::{
//!     EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, Tenant,
//! };
//! use runstore_jsonl::JsonlStore;
//! # let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
//! # rt.block_on(async {
//! let dir = tempfile::tempdir().expect("temp dir");
//! let store = JsonlStore::open(dir.path().join("store")).await?;
//! let tenant = Tenant::new("acme", "prod", None)?;
//! let run = RunId::new("run-42")?;
//! for id in ["started", "step-1", "step-2"] {
//!     let event = EventRecord::new(&tenant, run.clone(), EventId::new(id)?, "demo", 100);
//!     store.append(&tenant, &event).await?;
//! }
//! let tail = store.read(&tenant, &run, ReadQuery::tail(2)).await?;
//! assert_eq!(tail.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3]);
//!
//! // Everything is on disk: a new handle sees the same stream.
//! drop(store);
//! let store = JsonlStore::open(dir.path().join("store")).await?;
//! assert_eq!(store.next_seq(&tenant, &run).await?, 4);
//! # Ok::<_, runstore_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Files
//!
//! ```text
//! <dir>/FORMAT         format marker: "runstore-jsonl 1"
//! <dir>/LOCK           OS lock held by the open handle
//! <dir>/events.jsonl   every stream's records, one JSON object per line,
//!                      each stating its tenant feed position first
//! <dir>/snapshots/t-<tenant>/r-<run>/s-<snapshot>.json
//! ```
//!
//! Names escape every byte outside `[a-z0-9-]` as `_xx`, so they are
//! injective, safe on case-insensitive file systems and never leave the
//! directory; names longer than 120 bytes become a SHA-256 (CONTRACT §19).
//! `docs/backends/jsonl.md` describes the layout, durability, locking and
//! recovery in full.
//!
//! # Durability
//!
//! [`Durability::Durable`] (the default) syncs the log before an append
//! returns, syncs directories on create and rename, and at open syncs the
//! log and directories it found (CONTRACT §16);
//! [`Durability::Relaxed`] skips the per-append sync. A torn last line is
//! repaired at open; any other unreadable line is
//! [`Error::Corrupt`] (CONTRACT §17). After a
//! failed write or sync the handle refuses writes with
//! [`Error::Poisoned`].
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

mod compact;
mod error;
mod feed;
mod fileio;
#[doc(hidden)]
pub mod fuzzing;
mod import;
mod index;
mod layout;
mod lock;
mod log;
mod recovery;
mod runlog;
pub mod salvage;
mod snapshots;
mod upgrade;
mod writer;

use std::{
    fmt,
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock, mpsc},
    thread::JoinHandle,
};

use runstore_core::{
    Durability, Error, Result,
    raw::group::{self, Reply},
    validate::Limits,
};
use runstore_fs::run_blocking;
use tokio::runtime::RuntimeFlavor;

#[doc(hidden)]
pub use fileio::{IoObserver, IoOp};
pub use import::{ImportReport, import_reference};
pub use index::IndexStats;

use crate::{
    error::{io_at, writer_gone},
    index::{IdHasher, LogFile},
    layout::{FORMAT_FILE, FORMAT_LINE, LOG_FILE, SNAPSHOT_DIR, TMP_SUFFIX},
    lock::DirLock,
    snapshots::Snapshots,
    writer::{Command, LogState, Shared},
};

/// How a [`JsonlStore`] is opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonlOptions {
    /// Whether appends and file creations are synced before they return
    /// (CONTRACT §16). Default [`Durability::Durable`].
    pub durability: Durability,
    /// What every write is checked against before it is queued (CONTRACT
    /// §21-§24). Default [`Limits::default`].
    pub limits: Limits,
    /// Every change to the disk goes through this (see `fileio.rs`).
    io: fileio::Io,
    /// See [`JsonlOptions::with_test_commit_delay`].
    commit_delay: Option<std::time::Duration>,
}

impl JsonlOptions {
    /// Sets the durability; [`Durability::Relaxed`] skips the per-append
    /// sync (writes survive a killed process, not power loss).
    #[must_use]
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the limits every append, import and snapshot is checked
    /// against (only the record size can differ from the default).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Reports every operation that changes the disk to `observer`, in the
    /// order they happen (for tests that model power loss; see
    /// `tests/power_loss.rs`). Stores opened with these options do the same
    /// I/O as without.
    #[doc(hidden)]
    #[must_use]
    pub fn with_io_observer(mut self, observer: Arc<dyn IoObserver>) -> Self {
        self.io = fileio::Io::observed(observer);
        self
    }

    /// Makes every commit that writes records (appends, imports, erasure
    /// and compaction markers) wait `delay` after its records have taken
    /// their feed positions and before it writes them and makes them
    /// visible: for tests of the feed's lossless rule (CONTRACT §29).
    #[doc(hidden)]
    #[must_use]
    pub fn with_test_commit_delay(mut self, delay: std::time::Duration) -> Self {
        self.commit_delay = Some(delay);
        self
    }
}

/// A store in one directory of plain files. Cheap to clone; every clone
/// shares one index, one writer thread and one directory lock.
#[derive(Clone)]
pub struct JsonlStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Held for a whole compaction pass, from its first step until its new
    /// log is published or discarded: one pass at a time, also when the
    /// caller of one stopped waiting for it.
    compaction: Arc<tokio::sync::Mutex<()>>,
    requests: Option<mpsc::Sender<Command>>,
    writer: Option<JoinHandle<()>>,
    _lock: DirLock,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer after it has answered what was
        // queued; the directory lock is released only after that.
        //
        // The wait is kept so that a reopen right after the drop finds the
        // lock free. On a multi-thread runtime it runs in `block_in_place`,
        // so the worker's other tasks move on while the writer finishes a
        // group commit or compaction; elsewhere it is a plain join.
        drop(self.requests.take());
        let mut writer = self.writer.take();
        let on_multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|handle| handle.runtime_flavor() == RuntimeFlavor::MultiThread);
        if on_multi_thread {
            // `block_in_place` refuses (by panicking, before running the
            // closure) only inside a current-thread executor that entered a
            // multi-thread handle; the plain join below covers that case.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                tokio::task::block_in_place(|| writer.take().map(JoinHandle::join));
            }));
        }
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

impl fmt::Debug for JsonlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonlStore")
            .field("dir", &self.inner.shared.dir)
            .field("durability", &self.inner.shared.durability)
            .field("limits", &self.inner.shared.limits)
            .finish_non_exhaustive()
    }
}

/// The backend name a failed blocking task's error carries.
pub(crate) const BACKEND: &str = "jsonl";

impl JsonlStore {
    /// Opens (creating if needed) the store in `dir` with durable writes.
    ///
    /// # Errors
    /// [`Error::Locked`] naming `dir` when another handle, in this or
    /// another process, has it open; [`Error::Corrupt`] for an unreadable
    /// record or an unknown format version; [`Error::Io`].
    pub async fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, JsonlOptions::default()).await
    }

    /// Opens (creating if needed) the store in `dir` with `options`.
    ///
    /// Reads the log once to repair a torn tail (CONTRACT §17) and build the
    /// index.
    ///
    /// # Errors
    /// As [`JsonlStore::open`].
    pub async fn open_with(dir: impl AsRef<Path>, options: JsonlOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        run_blocking(BACKEND, move || {
            Self::open_blocking(dir, &options, IdHasher::new())
        })
        .await
    }

    fn open_blocking(dir: PathBuf, options: &JsonlOptions, hasher: IdHasher) -> Result<Self> {
        let durability = options.durability;
        let io = &options.io;
        runstore_fs::create_dirs(io, &dir, durability).map_err(|err| io_at("create", &dir, err))?;
        let lock = DirLock::acquire(io, &dir)?;
        let format = dir.join(FORMAT_FILE);
        // Read as bytes: a damaged marker need not be UTF-8, and is
        // `Corrupt` like any other.
        match std::fs::read(&format) {
            Ok(found) if found == FORMAT_LINE.as_bytes() => {}
            Ok(found) => {
                return Err(Error::corrupt(
                    format.display(),
                    format!(
                        "format marker is {:?}; this version reads {:?}",
                        String::from_utf8_lossy(&found).trim_end(),
                        FORMAT_LINE.trim_end()
                    ),
                ));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                runstore_fs::write_atomic(
                    io,
                    &dir,
                    FORMAT_FILE,
                    FORMAT_LINE.as_bytes(),
                    durability,
                )
                .map_err(|err| io_at("write", &format, err))?;
            }
            Err(err) => return Err(io_at("read", &format, err)),
        }
        // A compaction that crashed before its rename left only a temp file.
        let leftover = dir.join(format!("{LOG_FILE}{TMP_SUFFIX}"));
        match io.remove_file(&leftover) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_at("remove", &leftover, err)),
        }
        let path = dir.join(LOG_FILE);
        let file = io
            .open(&path, fileio::log_options().create(true).truncate(false))
            .map_err(|err| io_at("open", &path, err))?;
        let mut log = LogFile::new(file, path);
        let mut scanned = recovery::scan(io, &log, hasher.clone(), durability)?;
        let recorded = feed::read_epoch(&dir)?;
        let used = scanned
            .index
            .streams
            .iter()
            .flat_map(|stream| &stream.locs)
            .filter(|loc| loc.pos != 0)
            .map(|loc| feed::epoch_of(loc.pos))
            .max();
        if scanned.unpositioned > 0 {
            // Records an earlier version wrote: they take their feed
            // positions once, in the log's lines (crate::upgrade). In a
            // store that never had positions they start the feed; in one
            // that had (an earlier version wrote to it after a roll-back,
            // and may have deleted the lines that held the highest
            // positions) they start a new epoch, above every position
            // handed out before (crate::feed::read_epoch).
            let epoch = match (recorded, used) {
                (None, None) => 0,
                (recorded, used) => recorded.max(used).unwrap_or(0) + 1,
            };
            feed::write_epoch(io, &dir, epoch)?;
            let floor = epoch << feed::EPOCH_BITS;
            upgrade::give_positions(io, &dir, &log, &scanned.index, floor)?;
            let file = io
                .open(&log.path, &fileio::log_options())
                .map_err(|err| io_at("reopen", &log.path, err))?;
            log = LogFile::new(file, log.path);
            scanned = recovery::scan(io, &log, hasher, durability)?;
            if scanned.unpositioned > 0 {
                return Err(Error::corrupt(
                    log.path.display(),
                    format!(
                        "{} records still have no feed position after the log was rewritten \
                         with them",
                        scanned.unpositioned
                    ),
                ));
            }
        } else if recorded.is_none() {
            // A store this version opens for the first time records the
            // epoch its lines use, before it hands out any position.
            feed::write_epoch(io, &dir, used.unwrap_or(0))?;
        }
        let snapshots = Snapshots::open(dir.join(SNAPSHOT_DIR), durability, io.clone())?;
        if durability == Durability::Durable {
            // The directory's entries (the log, `FORMAT`, `snapshots`) and
            // its own entry in its parent are synced at every open, not only
            // when this open created them: a process killed before its
            // syncs leaves them in the page cache, where this handle would
            // find them and build on them (CONTRACT §16).
            if let Some(parent) = runstore_fs::parent_dir(&dir) {
                io.sync_dir(parent)
                    .map_err(|err| io_at("sync", parent, err))?;
            }
            io.sync_dir(&dir).map_err(|err| io_at("sync", &dir, err))?;
        }
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            durability,
            io: io.clone(),
            limits: options.limits,
            state: RwLock::new(LogState {
                log: Arc::new(log),
                end: scanned.end,
                index: scanned.index,
                erased_bytes: scanned.erased_bytes,
            }),
            poison: Mutex::new(None),
            snapshots,
            feed: runstore_core::FeedSignal::new(),
            commit_delay: options.commit_delay,
            #[cfg(test)]
            fail_next_sync: std::sync::atomic::AtomicBool::new(false),
        });
        let (requests, queue) = mpsc::channel();
        let thread_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("runstore-jsonl-writer".to_owned())
            .spawn(move || writer::run(&thread_shared, &queue))
            .map_err(|err| io_at("start the writer thread for", &dir, err))?;
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                compaction: Arc::new(tokio::sync::Mutex::new(())),
                requests: Some(requests),
                writer: Some(writer),
                _lock: lock,
            }),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// The durability the store was opened with.
    pub fn durability(&self) -> Durability {
        self.inner.shared.durability
    }

    /// Sizes of the in-memory index (streams, records, ids, approximate
    /// bytes).
    pub fn index_stats(&self) -> IndexStats {
        self.inner.shared.read_state().index.stats()
    }

    async fn request<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T> {
        let (reply, answer) = group::reply();
        let shared = &self.inner.shared;
        self.inner
            .requests
            .as_ref()
            .expect("the sender lives until the store is dropped")
            .send(command(reply))
            .map_err(|_| writer_gone(&shared.dir))?;
        answer.wait(|| writer_gone(&shared.dir)).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.inner.shared.clone();
        run_blocking(BACKEND, move || work(&shared)).await
    }
}

#[cfg(test)]
mod tests {
    use runstore_core::{
        EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, Tenant,
        raw::compaction::COMPACTION_EVENT_TYPE,
    };

    use super::*;

    fn event(tenant: &Tenant, id: &str, at: u64) -> EventRecord {
        EventRecord::new(
            tenant,
            RunId::new("run").unwrap(),
            EventId::new(id).unwrap(),
            "t",
            at,
        )
    }

    /// Every id hashes alike, so every lookup and insert takes the
    /// verify-on-disk and collision paths (CONTRACT §2, §7, §10).
    #[tokio::test(flavor = "multi_thread")]
    async fn colliding_id_hashes_never_confuse_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let open = |path: PathBuf| {
            tokio::task::spawn_blocking(move || {
                JsonlStore::open_blocking(path, &JsonlOptions::default(), IdHasher::Constant)
            })
        };
        let store = open(path.clone()).await.unwrap().unwrap();
        let tenant = Tenant::local();
        let run = RunId::new("run").unwrap();
        for (n, id) in ["a", "b", "c", "d"].iter().enumerate() {
            let outcome = store
                .append(&tenant, &event(&tenant, id, n as u64))
                .await
                .unwrap();
            assert_eq!((outcome.seq, outcome.inserted), (n as u64 + 1, true));
        }
        let again = store
            .append(&tenant, &event(&tenant, "c", 0))
            .await
            .unwrap();
        assert_eq!((again.seq, again.inserted), (3, false));
        assert_eq!(store.compact(10, 12).await.unwrap().removed, 2);
        drop(store);
        let store = open(path).await.unwrap().unwrap();
        for (id, seq) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
            let found = store
                .seq_of(&tenant, &run, &EventId::new(id).unwrap())
                .await
                .unwrap();
            assert_eq!(found, Some(seq), "{id}");
        }
        assert_eq!(
            store
                .seq_of(&tenant, &run, &EventId::new("e").unwrap())
                .await
                .unwrap(),
            None
        );
        let pruned = store
            .append(&tenant, &event(&tenant, "a", 0))
            .await
            .unwrap();
        assert_eq!((pruned.seq, pruned.inserted), (1, false));
        let records = store.read(&tenant, &run, ReadQuery::all()).await.unwrap();
        assert_eq!(records[0].event_type, COMPACTION_EVENT_TYPE);
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(store.next_seq(&tenant, &run).await.unwrap(), 5);

        // Every event compacted away: the marker's own id and the four it
        // remembers share one hash. The run is not a deleted one until it
        // is deleted, and a second deletion writes nothing.
        assert_eq!(store.compact(1, 1_000).await.unwrap().removed, 2);
        let erased = || {
            let state = store.inner.shared.read_state();
            state.index.stream(&tenant, &run).unwrap().is_erased()
        };
        assert!(!erased(), "compacted, not deleted");
        store.delete_run(&tenant, &run).await.unwrap();
        assert!(erased(), "deleted");
        let end = store.inner.shared.read_state().end;
        store.delete_run(&tenant, &run).await.unwrap();
        assert_eq!(store.inner.shared.read_state().end, end, "nothing written");
    }

    /// The index's size counts at least each record's place, its entry in
    /// the tenant's feed, and its id's slot in the hash table (the id's
    /// hash, its seq and a control byte).
    #[tokio::test(flavor = "multi_thread")]
    async fn index_stats_count_every_record_and_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = JsonlStore::open(dir.path().join("store")).await.unwrap();
        let tenant = Tenant::local();
        let batch: Vec<EventRecord> = (0..1_000)
            .map(|n| event(&tenant, &format!("e{n}"), 1))
            .collect();
        let run = RunId::new("run").unwrap();
        store
            .append_batch(&tenant, &run, &batch, None)
            .await
            .unwrap();
        let stats = store.index_stats();
        assert_eq!((stats.records, stats.ids), (1_000, 1_000));
        let floor = 1_000
            * (std::mem::size_of::<index::Loc>() + std::mem::size_of::<feed::FeedEntry>() + 17);
        assert!(stats.approx_bytes >= floor, "{stats:?} below {floor}");
        assert!(
            stats.approx_bytes <= 3 * floor,
            "{stats:?} above {}",
            3 * floor
        );
    }

    /// CONTRACT §16, STYLE 2.3: after a failed sync the handle refuses
    /// writes; reads keep working and a reopen writes again.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_sync_poisons_the_handle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let store = JsonlStore::open(&path).await.unwrap();
        let tenant = Tenant::local();
        let run = RunId::new("run").unwrap();
        store
            .append(&tenant, &event(&tenant, "a", 1))
            .await
            .unwrap();
        store
            .inner
            .shared
            .fail_next_sync
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let failed = store.append(&tenant, &event(&tenant, "b", 2)).await;
        assert!(matches!(failed, Err(Error::Io { .. })), "{failed:?}");
        // Each cause is stated once (STYLE 2.3): the action, the file and the
        // failure, none repeated.
        let text = failed.unwrap_err().to_string();
        for part in ["append to", "events.jsonl", "injected sync failure"] {
            assert_eq!(text.matches(part).count(), 1, "{part} in {text}");
        }
        let refused = store.append(&tenant, &event(&tenant, "c", 3)).await;
        assert!(
            matches!(refused, Err(Error::Poisoned { .. })),
            "{refused:?}"
        );
        let text = refused.unwrap_err().to_string();
        assert_eq!(text.matches("injected sync failure").count(), 1, "{text}");
        let compact = store.compact(1, 100).await;
        assert!(
            matches!(compact, Err(Error::Poisoned { .. })),
            "{compact:?}"
        );
        assert_eq!(store.next_seq(&tenant, &run).await.unwrap(), 2);
        assert_eq!(
            store
                .read(&tenant, &run, ReadQuery::all())
                .await
                .unwrap()
                .len(),
            1
        );
        drop(store);
        // The failed group's line reached the file (only its sync failed);
        // a reopen indexes it and accepts writes again.
        let store = JsonlStore::open(&path).await.unwrap();
        let outcome = store
            .append(&tenant, &event(&tenant, "c", 3))
            .await
            .unwrap();
        assert_eq!((outcome.seq, outcome.inserted), (3, true));
    }

    /// CONTRACT §20: handles and their futures cross threads.
    #[test]
    fn handles_and_futures_are_send_and_sync() {
        fn send_sync<T: Send + Sync + Clone + fmt::Debug + 'static>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread().build().unwrap();
        let store = runtime
            .block_on(JsonlStore::open(dir.path().join("store")))
            .unwrap();
        send_sync(&store);
        let tenant = Tenant::local();
        let run = RunId::new("run").unwrap();
        send(store.append(&tenant, &event(&tenant, "a", 1)));
        send(store.read(&tenant, &run, ReadQuery::all()));
        send(JsonlStore::open(dir.path().join("other")));
    }
}
