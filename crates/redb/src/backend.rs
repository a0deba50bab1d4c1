//! The storage backend of relaxed mode: every write goes to the file, no
//! write is synced.
//!
//! [`Durability::Relaxed`](runstore_core::Durability) must keep one promise
//! of CONTRACT §16 -- a write that returned `Ok` survives a killed process
//! -- while skipping the fsync. redb's own non-durable commits cannot: they
//! keep the commit's pages and header in redb's write buffer, in the
//! process, until a later durable commit flushes them, so a killed process
//! takes them along.
//!
//! So relaxed mode commits the way durable mode does (redb's
//! `Durability::Immediate`) through [`UnsyncedBackend`], which wraps another
//! [`StorageBackend`] and turns [`sync_data`](StorageBackend::sync_data)
//! into nothing. A commit then returns once redb has handed every page and
//! the new header to the backend's `write`, which for the file backend is a
//! `pwrite` into the operating system's page cache; a killed process cannot
//! take that back, only a crash of the machine can.
//!
//! A process killed in the middle of a commit leaves a prefix of that
//! commit's writes, in whatever order redb's write buffer issued them (the
//! header is not necessarily last). That is a case redb's commit already
//! handles for power loss: the header holds two slots, the new commit and
//! the one before, each with the checksum of its root; a live writer keeps
//! the header's recovery flag set, so the next open walks the newest slot's
//! trees, checks every page's checksum, and falls back to the previous slot
//! when one fails. Pages of the previous commit are never overwritten by the
//! next one (copy-on-write), so the fallback is intact.
//!
//! What relaxed mode gives up is power loss: without a sync, the kernel
//! writes dirty pages back in any order, so after a crash of the machine the
//! file may miss recent commits, or hold a header whose both slots point at
//! pages that never reached the disk (the open then fails with `Corrupt`).
//! Dropping the last handle syncs the file once ([`close`](StorageBackend::close)),
//! so a store closed cleanly is durable.
//!
//! Every other method, the lock methods included, is the wrapped backend's.
//!
//! [`discard_unfinished_create`] is for every mode: it empties a file that
//! a power cut or a kill left in the middle of redb's creation of a new
//! database, which redb would otherwise refuse on every later open.

use std::{fmt, io, ops::Bound};

use redb::{BackendError, StorageBackend};

/// A [`StorageBackend`] whose `sync_data` does nothing; `close` syncs once
/// before it closes the wrapped backend. See the [module docs](self).
pub(crate) struct UnsyncedBackend<B> {
    inner: B,
}

impl<B> UnsyncedBackend<B> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: B) -> Self {
        Self { inner }
    }
}

impl<B: fmt::Debug> fmt::Debug for UnsyncedBackend<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnsyncedBackend")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<B: StorageBackend> StorageBackend for UnsyncedBackend<B> {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }

    /// Does nothing: the writes are in the operating system's hands already.
    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write(offset, data)
    }

    /// Syncs the wrapped backend once, then closes it; it is closed (and its
    /// locks released) even when the sync fails.
    fn close(&self) -> std::io::Result<()> {
        let synced = self.inner.sync_data();
        let closed = self.inner.close();
        synced.and(closed)
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// The bytes at the start of a redb file that hold its magic number, the
/// last thing redb writes when it creates a database.
const MAGIC_LEN: usize = 9;
/// The header page: all an unfinished creation has written.
const HEADER_PAGE: u64 = 4096;
/// redb's lock bytes (its `docs/design.md`, "lock bytes"): every handle
/// holds a lock in this range while the database is open. The range ends
/// where the bytes reserved to the backend begin.
const LOCK_BYTES: (Bound<u64>, Bound<u64>) =
    (Bound::Included(1 << 62), Bound::Excluded((1 << 62) + 896));

/// Empties `backend` when it holds an unfinished creation of a redb
/// database, so that redb creates the database again; returns whether it
/// did.
///
/// redb creates a database by sizing the file, writing and syncing its
/// header without the magic number, then writing the magic number. A power
/// cut or a kill in between leaves a file that is not empty and has no
/// magic number, which redb refuses ("Not a redb database") on every open,
/// although it never held a commit. Such a file is recognised narrowly: the
/// magic number's bytes are zero and so is every byte after the header
/// page; any other file is left to redb. It is not touched while another
/// handle holds redb's locks on it (a creation in progress), where the
/// backend can tell.
///
/// # Errors
/// The backend's I/O errors.
pub(crate) fn discard_unfinished_create<B: StorageBackend>(backend: &B) -> io::Result<bool> {
    let len = backend.len()?;
    if len == 0 {
        return Ok(false);
    }
    let mut magic = [0u8; MAGIC_LEN];
    let head = usize::try_from(len).map_or(MAGIC_LEN, |len| len.min(MAGIC_LEN));
    backend.read(0, &mut magic[..head])?;
    if magic.iter().any(|byte| *byte != 0) {
        return Ok(false);
    }
    if backend
        .query_lock_range(LOCK_BYTES.0, LOCK_BYTES.1)
        .unwrap_or(false)
    {
        return Ok(false);
    }
    let mut chunk = vec![0u8; 64 * 1024];
    let mut at = HEADER_PAGE;
    while at < len {
        let take = usize::try_from(len - at).map_or(chunk.len(), |left| left.min(chunk.len()));
        backend.read(at, &mut chunk[..take])?;
        if chunk[..take].iter().any(|byte| *byte != 0) {
            return Ok(false);
        }
        at += take as u64;
    }
    backend.set_len(0)?;
    backend.sync_data()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use redb::backends::InMemoryBackend;

    use super::*;

    /// Counts the syncs and closes that reach the wrapped backend.
    #[derive(Debug, Default)]
    struct Counting {
        inner: InMemoryBackend,
        syncs: Arc<AtomicUsize>,
        closes: Arc<AtomicUsize>,
    }

    impl StorageBackend for Counting {
        fn len(&self) -> std::io::Result<u64> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.inner.write(offset, data)
        }
        fn close(&self) -> std::io::Result<()> {
            self.closes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn commits_never_sync_and_close_syncs_once() {
        let counting = Counting::default();
        let (syncs, closes) = (Arc::clone(&counting.syncs), Arc::clone(&counting.closes));
        let db = redb::Database::builder()
            .create_with_backend(UnsyncedBackend::new(counting))
            .expect("create");
        let table: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("t");
        for n in 0..10 {
            let txn = db.begin_write().expect("begin");
            txn.open_table(table)
                .expect("table")
                .insert(n, n)
                .expect("insert");
            txn.commit().expect("commit");
        }
        assert_eq!(syncs.load(Ordering::SeqCst), 0, "no commit synced");
        drop(db);
        assert_eq!(syncs.load(Ordering::SeqCst), 1, "the close synced once");
        assert_eq!(closes.load(Ordering::SeqCst), 1, "the close was passed on");
    }

    /// The lock methods are the wrapped file backend's: what the wrapper
    /// takes, another descriptor of the file (as another process) sees.
    #[test]
    fn locks_are_the_wrapped_backends() {
        use std::ops::Bound::Included;

        use redb::backends::FileBackend;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks");
        let descriptor = || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap();
            FileBackend::new(file).unwrap()
        };
        let ours = UnsyncedBackend::new(descriptor());
        let peer = descriptor();

        let b100 = Included(100);
        assert!(ours.try_lock_range(b100, b100).unwrap());
        assert!(!peer.try_lock_range(b100, b100).unwrap());
        ours.unlock_range(b100, b100).unwrap();
        assert!(peer.try_lock_range(b100, b100).unwrap());
        assert!(ours.query_lock_range(b100, b100).unwrap());
        assert!(!ours.try_lock_shared_range(b100, b100).unwrap());
        peer.unlock_range(b100, b100).unwrap();
        assert!(!ours.query_lock_range(b100, b100).unwrap());

        let (b101, b102, b103) = (Included(101), Included(102), Included(103));
        assert!(ours.try_lock_shared_range(b101, b101).unwrap());
        assert!(!peer.try_lock_range(b101, b101).unwrap());
        ours.lock_range(b102, b102).unwrap();
        assert!(!peer.try_lock_shared_range(b102, b102).unwrap());
        ours.lock_shared_range(b103, b103).unwrap();
        assert!(!peer.try_lock_range(b103, b103).unwrap());
        assert!(peer.try_lock_shared_range(b103, b103).unwrap());

        let debug = format!("{ours:?}");
        assert!(
            debug.starts_with("UnsyncedBackend") && debug.contains("inner: FileBackend"),
            "{debug}"
        );
    }

    /// A file that looks like an unfinished creation is left alone while
    /// another handle holds one of redb's lock bytes on it, and emptied
    /// otherwise.
    #[test]
    fn an_unfinished_creation_another_handle_holds_is_left_alone() {
        use std::ops::Bound::Included;

        use redb::backends::FileBackend;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creating");
        std::fs::write(&path, vec![0u8; 3 * 4096]).unwrap();
        let descriptor = || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            FileBackend::new(file).unwrap()
        };
        let ours = descriptor();
        let creator = descriptor();
        // A lock outside redb's lock bytes is not a creation in progress.
        let foreign = Included(100);
        assert!(creator.try_lock_range(foreign, foreign).unwrap());
        assert!(discard_unfinished_create(&ours).unwrap());
        creator.unlock_range(foreign, foreign).unwrap();
        ours.set_len(3 * 4096).unwrap();
        let held = Included((1 << 62) + 10);
        assert!(creator.try_lock_shared_range(held, held).unwrap());
        assert!(!discard_unfinished_create(&ours).unwrap());
        assert_eq!(ours.len().unwrap(), 3 * 4096, "left alone");
        creator.unlock_range(held, held).unwrap();
        assert!(discard_unfinished_create(&ours).unwrap());
        assert_eq!(ours.len().unwrap(), 0, "emptied");
    }

    /// Every byte after the header page is looked at, also past the first
    /// chunk the check reads.
    #[test]
    fn a_byte_set_anywhere_after_the_header_page_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-creation");
        let len = 4096 + 3 * 64 * 1024;
        let mut image = vec![0u8; len];
        image[len - 1] = 1;
        std::fs::write(&path, &image).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let backend = redb::backends::FileBackend::new(file).unwrap();
        assert!(!discard_unfinished_create(&backend).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), image, "left alone");
    }
}
