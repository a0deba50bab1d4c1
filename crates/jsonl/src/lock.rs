//! The OS lock that keeps a second handle (another process, or another open
//! in this one) out of a store directory.

use std::{
    fs::{File, OpenOptions, TryLockError},
    path::Path,
};

use runstore_core::{Error, Result};

use crate::{error::io_at, fileio::Io, layout::LOCK_FILE};

/// An exclusive lock on `<dir>/LOCK`, released when dropped (or when the
/// process dies).
///
/// The lock belongs to the open file, not the process, so two opens of the
/// same directory in one process exclude each other as two processes do.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock without waiting.
    ///
    /// # Errors
    /// [`Error::Locked`] naming `dir` when another handle holds it;
    /// [`Error::Io`] when the lock file cannot be opened.
    pub(crate) fn acquire(io: &Io, dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let file = io
            .open(
                &path,
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false),
            )
            .map_err(|err| io_at("open lock file", &path, err))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(Error::Locked {
                resource: format!("jsonl store directory {}", dir.display()),
            }),
            Err(TryLockError::Error(err)) => Err(io_at("lock", &path, err)),
        }
    }
}
