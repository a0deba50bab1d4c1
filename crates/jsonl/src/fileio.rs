//! Every file operation of the crate that changes what is on disk, and the
//! positioned reads, per platform. Everything else in the crate is
//! platform-neutral.
//!
//! What goes through here, and nowhere else: creating a directory or a
//! file, writing (positioned, or in sequence through [`Io::writer`]),
//! setting a file's length, syncing a file's data or a directory's entries,
//! renaming and removing. Every module that changes the store directory --
//! the writer thread's group commit ([`crate::writer`]), compaction
//! ([`crate::compact`]), atomic file replacement and directory creation
//! (the `runstore_fs` steps, run on [`Io`] through its
//! [`runstore_fs::DurableFs`] implementation), snapshots ([`crate::snapshots`]), the torn tail
//! repair at open ([`crate::recovery`]), the lock file ([`crate::lock`])
//! and the open itself -- calls these methods of the store's [`Io`] rather
//! than `std::fs`.
//!
//! Why: power loss keeps what was synced and an arbitrary part of the rest,
//! so whether an acknowledged write survives depends on the exact order of
//! writes, syncs and renames. Routing them through one place lets a test
//! see that order. An [`IoObserver`] handed in with
//! `JsonlOptions::with_io_observer` is told of each operation right after it
//! succeeded, in the order they happened; `tests/power_loss.rs` replays the
//! trace to build the directory a power cut at each sync would leave. A
//! store without an observer (every production store) does exactly the
//! same system calls, plus one branch per operation; the only extra call is
//! an existence check before an open that may create a file, made only when
//! an observer is set (to tell it whether the file was created).
//!
//! Reads, and opens that create nothing, do not change the disk and are not
//! reported.

use std::{
    fmt,
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::Path,
    sync::Arc,
};

/// Reads at `offset` without moving any shared cursor; returns how many
/// bytes were read (0 at the end of the file).
pub(crate) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        std::os::windows::fs::FileExt::seek_read(file, buf, offset)
    }
}

/// Fills `buf` from `offset`.
pub(crate) fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match read_at(file, buf, offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ends before the record",
                ));
            }
            Ok(read) => {
                buf = &mut buf[read..];
                offset += read as u64;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// One operation that changed the disk, as an [`IoObserver`] is told of it.
/// Paths are as the store used them: under the directory it was opened on.
///
/// Deliberately exhaustive: an observer that models the disk must handle
/// every kind, so a new one fails its build instead of going unmodelled.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp<'a> {
    /// A directory was created: a new entry in its parent.
    CreateDir {
        /// The new directory.
        path: &'a Path,
    },
    /// An empty file was created: a new entry in its parent.
    CreateFile {
        /// The new file.
        path: &'a Path,
    },
    /// `bytes` were written at `offset` of the file at `path`.
    Write {
        /// The file written to.
        path: &'a Path,
        /// Where the bytes went.
        offset: u64,
        /// What was written.
        bytes: &'a [u8],
    },
    /// The file at `path` was cut or extended to `len` bytes.
    SetLen {
        /// The file.
        path: &'a Path,
        /// Its new length.
        len: u64,
    },
    /// The file's data, and the length needed to read it, reached the disk
    /// (`fdatasync`).
    SyncData {
        /// The file synced.
        path: &'a Path,
    },
    /// The directory's entries (files created, renamed or removed in it)
    /// reached the disk.
    SyncDir {
        /// The directory synced.
        path: &'a Path,
    },
    /// The entry `from` was renamed to `to`, replacing any entry there.
    Rename {
        /// The old name.
        from: &'a Path,
        /// The new name.
        to: &'a Path,
    },
    /// The entry at `path` was removed: a file, or an empty directory.
    Remove {
        /// The entry removed.
        path: &'a Path,
    },
}

/// Told of every operation of a store that changed the disk (see the
/// module docs of `fileio.rs`), for tests that model power loss.
///
/// Called on the thread that did the operation, right after it succeeded;
/// an operation that failed is not reported. It must not call back into
/// the store.
#[doc(hidden)]
pub trait IoObserver: Send + Sync + 'static {
    /// Takes one operation.
    fn observe(&self, op: IoOp<'_>);

    /// Asked before each directory sync and each removal, with the
    /// operation about to run: an error fails it, as a failing disk would
    /// (tests of what a store does then). The default lets everything
    /// through.
    ///
    /// # Errors
    /// The error the operation is to fail with.
    fn before(&self, _op: IoOp<'_>) -> io::Result<()> {
        Ok(())
    }
}

/// The store's file operations: `std::fs`, reported to an observer when
/// one is set. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Io {
    observer: Option<Arc<dyn IoObserver>>,
}

impl fmt::Debug for Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Io")
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

impl PartialEq for Io {
    /// Equal when both report to the same observer, or neither reports.
    fn eq(&self, other: &Self) -> bool {
        match (&self.observer, &other.observer) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Io {}

impl Io {
    /// File operations reported to `observer`.
    pub(crate) fn observed(observer: Arc<dyn IoObserver>) -> Self {
        Self {
            observer: Some(observer),
        }
    }

    fn before(&self, op: IoOp<'_>) -> io::Result<()> {
        match &self.observer {
            Some(observer) => observer.before(op),
            None => Ok(()),
        }
    }

    fn report(&self, op: IoOp<'_>) {
        if let Some(observer) = &self.observer {
            observer.observe(op);
        }
    }

    /// Whether opening `path` with a `create` flag would create it; asked
    /// only when someone is told.
    fn would_create(&self, path: &Path) -> bool {
        self.observer.is_some() && !path.exists()
    }

    /// Opens `path` with `options`, which may create it (never truncate
    /// it).
    pub(crate) fn open(&self, path: &Path, options: &OpenOptions) -> io::Result<File> {
        let create = self.would_create(path);
        let file = options.open(path)?;
        if create {
            self.report(IoOp::CreateFile { path });
        }
        Ok(file)
    }

    /// Creates `path` for writing, or empties the file there.
    pub(crate) fn create_truncated(&self, path: &Path) -> io::Result<File> {
        let create = self.would_create(path);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        if create {
            self.report(IoOp::CreateFile { path });
        } else {
            self.report(IoOp::SetLen { path, len: 0 });
        }
        Ok(file)
    }

    /// Creates the directory `path` (its parent must exist).
    pub(crate) fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)?;
        self.report(IoOp::CreateDir { path });
        Ok(())
    }

    /// Writes all of `buf` at `offset` of `file`, which is open at `path`.
    pub(crate) fn write_all_at(
        &self,
        file: &File,
        path: &Path,
        mut buf: &[u8],
        mut offset: u64,
    ) -> io::Result<()> {
        while !buf.is_empty() {
            #[cfg(unix)]
            let written = std::os::unix::fs::FileExt::write_at(file, buf, offset);
            #[cfg(windows)]
            let written = std::os::windows::fs::FileExt::seek_write(file, buf, offset);
            match written {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the file accepted no more bytes",
                    ));
                }
                Ok(count) => {
                    self.report(IoOp::Write {
                        path,
                        offset,
                        bytes: &buf[..count],
                    });
                    buf = &buf[count..];
                    offset += count as u64;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// A writer appending to `file` (open at `path`, its cursor at 0) with
    /// ordinary sequential writes.
    pub(crate) fn writer<'a>(&'a self, file: File, path: &'a Path) -> SeqWriter<'a> {
        SeqWriter {
            io: self,
            file,
            path,
            offset: 0,
        }
    }

    /// Sets the length of `file`, open at `path`.
    pub(crate) fn set_len(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
        file.set_len(len)?;
        self.report(IoOp::SetLen { path, len });
        Ok(())
    }

    /// Syncs the data of `file`, open at `path` (`fdatasync`).
    pub(crate) fn sync_data(&self, file: &File, path: &Path) -> io::Result<()> {
        file.sync_data()?;
        self.report(IoOp::SyncData { path });
        Ok(())
    }

    /// Syncs a directory, so that entries created, renamed or removed in it
    /// survive power loss. On Windows, where a directory cannot be opened
    /// as a file, NTFS journals the entries themselves and this does
    /// nothing.
    pub(crate) fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.before(IoOp::SyncDir { path: dir })?;
        runstore_fs::sync_dir(dir)?;
        self.report(IoOp::SyncDir { path: dir });
        Ok(())
    }

    /// Renames `from` to `to`, replacing `to`.
    pub(crate) fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)?;
        self.report(IoOp::Rename { from, to });
        Ok(())
    }

    /// Removes the file `path`.
    pub(crate) fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.before(IoOp::Remove { path })?;
        fs::remove_file(path)?;
        self.report(IoOp::Remove { path });
        Ok(())
    }

    /// Removes the empty directory `path`.
    pub(crate) fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)?;
        self.report(IoOp::Remove { path });
        Ok(())
    }
}

/// The durable steps of `runstore_fs` on the store's operations, each
/// reported like the rest.
impl runstore_fs::DurableFs for Io {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        Io::create_dir(self, path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        Io::sync_dir(self, dir)
    }

    fn write_new(&self, path: &Path, bytes: &[u8]) -> io::Result<File> {
        let mut file = self.writer(self.create_truncated(path)?, path);
        file.write_all(bytes)?;
        Ok(file.into_file())
    }

    fn sync_data(&self, file: &File, path: &Path) -> io::Result<()> {
        Io::sync_data(self, file, path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        Io::rename(self, from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        Io::remove_file(self, path)
    }
}

/// Sequential writes to a file, each reported with its offset. Wrapped in
/// a `BufWriter` by its users.
pub(crate) struct SeqWriter<'a> {
    io: &'a Io,
    file: File,
    path: &'a Path,
    offset: u64,
}

impl SeqWriter<'_> {
    /// The file, once everything is written.
    pub(crate) fn into_file(self) -> File {
        self.file
    }
}

impl Write for SeqWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let count = (&self.file).write(buf)?;
        self.io.report(IoOp::Write {
            path: self.path,
            offset: self.offset,
            bytes: &buf[..count],
        });
        self.offset += count as u64;
        Ok(count)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&self.file).flush()
    }
}

/// Options to open the log for reading and writing. On Windows the handle
/// lets a compaction rename the new log over it while it is open.
pub(crate) fn log_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    #[cfg(windows)]
    {
        // FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
        std::os::windows::fs::OpenOptionsExt::share_mode(&mut options, 0x7);
    }
    options
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Mutex, mpsc},
        time::Duration,
    };

    use super::*;

    /// Records the offset and bytes of every write.
    #[derive(Default)]
    struct Writes(Mutex<Vec<(u64, Vec<u8>)>>);

    impl IoObserver for Writes {
        fn observe(&self, op: IoOp<'_>) {
            if let IoOp::Write { offset, bytes, .. } = op {
                self.0.lock().unwrap().push((offset, bytes.to_vec()));
            }
        }
    }

    /// Runs `call` on a thread of its own: a loop that retries a lasting
    /// error fails the test instead of hanging it.
    fn within_seconds<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(call()).unwrap());
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the call returned within 10 s")
    }

    #[test]
    fn a_read_past_the_end_fails_instead_of_reading_the_start_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"0123456789").unwrap();
        let file = File::open(&path).unwrap();
        let mut buf = [0; 15];
        let err = read_exact_at(&file, &mut buf, 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let mut buf = [0; 4];
        read_exact_at(&file, &mut buf, 6).unwrap();
        assert_eq!(&buf, b"6789");
    }

    #[test]
    fn lasting_read_and_write_errors_are_returned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"0123456789").unwrap();
        let write_only = OpenOptions::new().write(true).open(&path).unwrap();
        let read = within_seconds(move || read_exact_at(&write_only, &mut [0; 4], 0));
        assert!(read.is_err(), "a read through a write-only handle fails");
        let read_only = File::open(&path).unwrap();
        let written = within_seconds(move || {
            Io::default().write_all_at(&read_only, Path::new("f"), b"ab", 0)
        });
        assert!(written.is_err(), "a write through a read-only handle fails");
    }

    #[test]
    fn sequential_writes_are_reported_at_their_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let writes = Arc::new(Writes::default());
        let io = Io::observed(writes.clone());
        let mut writer = io.writer(File::create(&path).unwrap(), &path);
        writer.write_all(b"ab").unwrap();
        writer.write_all(b"cde").unwrap();
        writer.flush().unwrap();
        drop(writer);
        assert_eq!(
            *writes.0.lock().unwrap(),
            [(0, b"ab".to_vec()), (2, b"cde".to_vec())]
        );
        assert_eq!(fs::read(&path).unwrap(), b"abcde");
    }

    #[test]
    fn removals_remove() {
        let dir = tempfile::tempdir().unwrap();
        let io = Io::default();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        io.remove_dir(&sub).unwrap();
        assert!(!sub.exists());
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        runstore_fs::DurableFs::remove_file(&io, &file).unwrap();
        assert!(!file.exists());
    }

    #[test]
    fn handles_are_equal_when_they_report_to_the_same_observer() {
        let one: Arc<dyn IoObserver> = Arc::new(Writes::default());
        let other: Arc<dyn IoObserver> = Arc::new(Writes::default());
        assert_eq!(Io::default(), Io::default());
        assert_eq!(Io::observed(one.clone()), Io::observed(one.clone()));
        assert_ne!(Io::observed(one.clone()), Io::observed(other));
        assert_ne!(Io::observed(one.clone()), Io::default());
        assert_ne!(Io::default(), Io::observed(one.clone()));
        assert_eq!(format!("{:?}", Io::observed(one)), "Io { observed: true }");
        assert_eq!(format!("{:?}", Io::default()), "Io { observed: false }");
    }
}
