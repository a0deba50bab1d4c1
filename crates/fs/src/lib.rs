//! The durable file steps of runstore's file backends (CONTRACT §11, §16),
//! written once for JSONL, SQLite and redb.
//!
//! Power loss keeps what was synced and an arbitrary part of the rest. A
//! new file or directory survives only once the directory holding its entry
//! is synced; a replaced file is whole only if its data was synced before
//! the rename that published it. Each step below does its writes and syncs
//! in the one order that gives its promise, and skips exactly the
//! directory syncs under [`Durability::Relaxed`].
//!
//! A backend uses them as follows:
//!
//! - [`create_dirs`] before it creates anything in a directory that may not
//!   exist yet (the store directory, the parent of a database file, a
//!   snapshot directory). With [`Durability::Durable`] every directory it
//!   creates has its parent synced right after, top-down, so a path is
//!   never left reachable below a level a power cut can drop. A directory
//!   that already exists is not synced again: a backend that must make an
//!   existing entry durable (one a killed process created) calls
//!   [`DurableFs::sync_dir`] on it itself.
//! - [`sync_dir`] (or [`DurableFs::sync_dir`]) after creating, renaming or
//!   removing an entry, in durable mode, before answering the request that
//!   depends on it. [`parent_dir`] names the directory that holds a path's
//!   entry (`.` for a bare file name).
//! - [`write_atomic`] to replace a small file whole: the old content or the
//!   new one survives a crash, never a mix. Its temp file is
//!   `<name>`[`TMP_SUFFIX`]; one left by a crash is the backend's to remove
//!   at its next open.
//! - [`run_blocking`] to run any of these (or other blocking work) from an
//!   async method, off the executor's threads.
//!
//! The steps reach the disk only through a [`DurableFs`]. [`StdFs`] is plain
//! `std::fs`; a backend that must show each disk-changing operation to a
//! test (JSONL's power-loss tests replay them) implements [`DurableFs`] on
//! its own layer, doing the same system calls.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::Path,
};

use runstore_core::{Durability, Error, Result};

/// What [`write_atomic`] appends to a file's name for its temp file.
pub const TMP_SUFFIX: &str = ".tmp";

/// The file operations the steps are made of: each changes the disk (or
/// makes a change durable) and nothing else.
pub trait DurableFs {
    /// Creates the directory `path`; its parent must exist.
    ///
    /// # Errors
    /// As [`std::fs::create_dir`]; `AlreadyExists` when there is an entry
    /// at `path`.
    fn create_dir(&self, path: &Path) -> io::Result<()>;

    /// Makes the entries of the directory `dir` (created, renamed, removed)
    /// survive power loss, as [`sync_dir`].
    ///
    /// # Errors
    /// When `dir` cannot be opened or synced.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Creates the file `path`, or empties the one there, writes all of
    /// `bytes` to it from the start and returns it, open for writing.
    ///
    /// # Errors
    /// When the file cannot be opened or written.
    fn write_new(&self, path: &Path, bytes: &[u8]) -> io::Result<File>;

    /// Syncs the data of `file`, open at `path` (`fdatasync`).
    ///
    /// # Errors
    /// When the sync fails.
    fn sync_data(&self, file: &File, path: &Path) -> io::Result<()>;

    /// Renames `from` to `to`, replacing any entry at `to`.
    ///
    /// # Errors
    /// As [`std::fs::rename`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes the file `path`.
    ///
    /// # Errors
    /// As [`std::fs::remove_file`].
    fn remove_file(&self, path: &Path) -> io::Result<()>;
}

/// [`DurableFs`] on `std::fs`, with nothing else.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StdFs;

impl DurableFs for StdFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        sync_dir(dir)
    }

    fn write_new(&self, path: &Path, bytes: &[u8]) -> io::Result<File> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.write_all(bytes)?;
        Ok(file)
    }

    fn sync_data(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_data()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
}

/// Syncs the directory `dir`, so that entries created, renamed or removed
/// in it survive power loss. On other platforms than Unix, where a
/// directory cannot be opened as a file, the file system journals the
/// entries itself and this does nothing.
///
/// # Errors
/// When `dir` cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// The directory that holds `path`'s entry: its parent, `.` for a bare
/// name, `None` for a root.
pub fn parent_dir(path: &Path) -> Option<&Path> {
    match path.parent() {
        Some(parent) if parent.as_os_str().is_empty() => Some(Path::new(".")),
        other => other,
    }
}

/// Creates `dir` and its missing ancestors, top-down. With
/// [`Durability::Durable`] the parent of each directory it creates is
/// synced right after creating it, so a new path survives power loss level
/// by level (CONTRACT §16); [`Durability::Relaxed`] syncs nothing.
///
/// Nothing is done for a directory that exists already, nor for one that
/// another thread or process creates first (`AlreadyExists`).
///
/// # Errors
/// The first creation or sync that fails.
pub fn create_dirs(
    fs: &(impl DurableFs + ?Sized),
    dir: &Path,
    durability: Durability,
) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        create_dirs(fs, parent, durability)?;
    }
    match fs.create_dir(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(err) => return Err(err),
    }
    if durability == Durability::Durable
        && let Some(parent) = parent_dir(dir)
    {
        fs.sync_dir(parent)?;
    }
    Ok(())
}

/// Replaces `dir/name` with `bytes` atomically: writes
/// `dir/name`[`TMP_SUFFIX`], syncs its data, renames it over `name` and
/// (with [`Durability::Durable`]) syncs `dir`. A crash leaves the old file
/// or the new one, never a mix (CONTRACT §11); once this returns in durable
/// mode, the new one survives power loss.
///
/// The file's data is synced in both modes: a rename published before its
/// data could otherwise leave an empty file after power loss.
///
/// # Errors
/// The first step that fails. A failure before the rename removes the temp
/// file (best effort: a crash can still leave it behind).
pub fn write_atomic(
    fs: &(impl DurableFs + ?Sized),
    dir: &Path,
    name: &str,
    bytes: &[u8],
    durability: Durability,
) -> io::Result<()> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let result = (|| {
        let file = fs.write_new(&tmp, bytes)?;
        fs.sync_data(&file, &tmp)?;
        drop(file);
        fs.rename(&tmp, &dir.join(name))
    })();
    if let Err(err) = result {
        let _ = fs.remove_file(&tmp);
        return Err(err);
    }
    if durability == Durability::Durable {
        fs.sync_dir(dir)?;
    }
    Ok(())
}

/// Runs the blocking `work` on tokio's blocking pool and answers what it
/// returns.
///
/// # Errors
/// Whatever `work` returns; [`Error::Backend`] naming `backend` when the
/// task panicked or the runtime cancelled it.
pub async fn run_blocking<T: Send + 'static>(
    backend: &'static str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Error::backend(backend, err))?
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, sync::Mutex};

    use super::*;

    /// `StdFs`, writing down each operation that succeeded.
    #[derive(Default)]
    struct Recorded {
        ops: Mutex<Vec<String>>,
        fail_rename: bool,
    }

    impl Recorded {
        fn note(&self, root: &Path, op: &str, path: &Path) {
            let shown = path.strip_prefix(root).unwrap_or(path);
            self.ops
                .lock()
                .unwrap()
                .push(format!("{op} {}", shown.display()));
        }

        fn take(&self) -> Vec<String> {
            std::mem::take(&mut self.ops.lock().unwrap())
        }
    }

    struct InDir<'a>(&'a Recorded, PathBuf);

    impl DurableFs for InDir<'_> {
        fn create_dir(&self, path: &Path) -> io::Result<()> {
            StdFs.create_dir(path)?;
            self.0.note(&self.1, "create_dir", path);
            Ok(())
        }

        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            StdFs.sync_dir(dir)?;
            self.0.note(&self.1, "sync_dir", dir);
            Ok(())
        }

        fn write_new(&self, path: &Path, bytes: &[u8]) -> io::Result<File> {
            let file = StdFs.write_new(path, bytes)?;
            self.0.note(&self.1, "write_new", path);
            Ok(file)
        }

        fn sync_data(&self, file: &File, path: &Path) -> io::Result<()> {
            StdFs.sync_data(file, path)?;
            self.0.note(&self.1, "sync_data", path);
            Ok(())
        }

        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            if self.0.fail_rename {
                return Err(io::Error::other("rename refused"));
            }
            StdFs.rename(from, to)?;
            self.0.note(&self.1, "rename", from);
            Ok(())
        }

        fn remove_file(&self, path: &Path) -> io::Result<()> {
            StdFs.remove_file(path)?;
            self.0.note(&self.1, "remove_file", path);
            Ok(())
        }
    }

    #[test]
    fn create_dirs_creates_top_down_and_syncs_each_parent_when_durable() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let recorded = Recorded::default();
        let fs = InDir(&recorded, root.clone());
        create_dirs(&fs, &root.join("a/b/c"), Durability::Durable).unwrap();
        assert!(root.join("a/b/c").is_dir());
        assert_eq!(
            recorded.take(),
            [
                "create_dir a",
                "sync_dir ",
                "create_dir a/b",
                "sync_dir a",
                "create_dir a/b/c",
                "sync_dir a/b",
            ]
        );
        // An existing directory: nothing to do.
        create_dirs(&fs, &root.join("a/b"), Durability::Durable).unwrap();
        assert!(recorded.take().is_empty());
    }

    #[test]
    fn create_dirs_relaxed_syncs_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let recorded = Recorded::default();
        let fs = InDir(&recorded, root.clone());
        create_dirs(&fs, &root.join("a/b"), Durability::Relaxed).unwrap();
        assert_eq!(recorded.take(), ["create_dir a", "create_dir a/b"]);
    }

    #[test]
    fn write_atomic_syncs_data_before_the_rename_and_the_dir_after() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let recorded = Recorded::default();
        let fs = InDir(&recorded, root.clone());
        std::fs::write(root.join("f"), b"old").unwrap();
        write_atomic(&fs, &root, "f", b"new", Durability::Durable).unwrap();
        assert_eq!(std::fs::read(root.join("f")).unwrap(), b"new");
        assert_eq!(
            recorded.take(),
            [
                "write_new f.tmp",
                "sync_data f.tmp",
                "rename f.tmp",
                "sync_dir "
            ]
        );
        write_atomic(&fs, &root, "f", b"newer", Durability::Relaxed).unwrap();
        assert_eq!(
            recorded.take(),
            ["write_new f.tmp", "sync_data f.tmp", "rename f.tmp"]
        );
    }

    #[test]
    fn a_failed_write_atomic_removes_its_temp_file_and_keeps_the_old_one() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let recorded = Recorded {
            fail_rename: true,
            ..Recorded::default()
        };
        let fs = InDir(&recorded, root.clone());
        std::fs::write(root.join("f"), b"old").unwrap();
        let err = write_atomic(&fs, &root, "f", b"new", Durability::Durable).unwrap_err();
        assert_eq!(err.to_string(), "rename refused");
        assert_eq!(std::fs::read(root.join("f")).unwrap(), b"old");
        assert!(!root.join("f.tmp").exists());
        assert_eq!(
            recorded.take(),
            ["write_new f.tmp", "sync_data f.tmp", "remove_file f.tmp"]
        );
    }

    #[test]
    fn parent_dir_of_a_bare_name_is_the_current_directory() {
        assert_eq!(parent_dir(Path::new("f")), Some(Path::new(".")));
        assert_eq!(parent_dir(Path::new("a/f")), Some(Path::new("a")));
        assert_eq!(parent_dir(Path::new("/")), None);
    }

    #[tokio::test]
    async fn run_blocking_answers_the_work_and_names_the_backend_of_a_panic() {
        assert_eq!(run_blocking("test", || Ok(7)).await.unwrap(), 7);
        let err = run_blocking::<()>("test", || panic!("boom"))
            .await
            .unwrap_err();
        match err {
            Error::Backend { backend, .. } => assert_eq!(backend, "test"),
            other => panic!("expected Backend, got {other:?}"),
        }
    }
}
