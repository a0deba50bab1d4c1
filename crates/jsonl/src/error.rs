//! How this backend's failures become [`runstore_core::Error`]: every
//! message names the store directory or file and what failed.

use std::{io, path::Path};

use runstore_core::Error;

/// An I/O failure while doing `action` on `path`.
pub(crate) fn io_at(action: &str, path: &Path, source: io::Error) -> Error {
    Error::io(format!("{action} {} (jsonl store)", path.display()), source)
}

/// A record at `path:line` that cannot be read (CONTRACT §17).
pub(crate) fn corrupt_line(path: &Path, line: u64, reason: impl std::fmt::Display) -> Error {
    Error::corrupt(format!("{}:{line}", path.display()), reason)
}

/// A record at byte `offset` of `path` that cannot be read (CONTRACT §17).
pub(crate) fn corrupt_at(path: &Path, offset: u64, reason: impl std::fmt::Display) -> Error {
    Error::corrupt(format!("{} at byte {offset}", path.display()), reason)
}

/// What `err` says, to go inside another error's reason: its reason
/// without the kind it would repeat ("invalid input: ", "corrupt data at").
pub(crate) fn cause(err: &Error) -> String {
    match err {
        Error::InvalidInput { reason } => reason.clone(),
        Error::Corrupt { location, reason } => format!("{location}: {reason}"),
        other => other.to_string(),
    }
}

/// The store at `dir` refuses writes after `reason`.
pub(crate) fn poisoned(dir: &Path, reason: &str) -> Error {
    Error::Poisoned {
        store: format!("jsonl {}", dir.display()),
        reason: reason.to_owned(),
    }
}

/// The writer thread of the store at `dir` is gone.
pub(crate) fn writer_gone(dir: &Path) -> Error {
    poisoned(dir, "its writer thread stopped")
}
