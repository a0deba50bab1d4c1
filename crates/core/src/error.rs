//! The one error type every store returns (CONTRACT §18).

use std::{fmt, sync::Arc};

/// A boxed error from a backend's driver.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A driver's error as [`Error::Backend`] holds it: shared, so that an
/// [`Error`] is `Clone` and one failure of a group commit reaches every
/// waiter of the group as the same error (see [`crate::raw::group`]).
pub type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as its default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a store can fail with.
///
/// Backends map their driver errors into this enum once, at their boundary;
/// callers match on variants, never on messages.
///
/// Each message says its cause once (CONTRACT §26): `Io` and `Backend` write
/// the underlying error into their own text, so they do not also return it
/// from [`std::error::Error::source`] (a chain printer would say it twice);
/// match the variant to reach it.
///
/// `Clone` is cheap: the underlying errors of `Io` and `Backend` are shared
/// behind an [`Arc`], so a copy given to each waiter of a failed group
/// commit points at the one failure.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller passed something the contract rejects: an empty or oversized
    /// id, a malformed tenant, records that do not belong together.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What was wrong with the input.
        reason: String,
    },

    /// `expected_last_seq` did not match the stream's last seq (CONTRACT §5).
    #[error("conflict: expected last seq {expected}, stream is at {actual}")]
    Conflict {
        /// The last seq the caller expected.
        expected: u64,
        /// The stream's actual last seq.
        actual: u64,
    },

    /// Another process holds the embedded store open.
    #[error("store is locked by another process: {resource}")]
    Locked {
        /// The file or directory whose lock is held.
        resource: String,
    },

    /// Stored data could not be read back (CONTRACT §17).
    #[error("corrupt data at {location}: {reason}")]
    Corrupt {
        /// Where the bad record is (file and line, key, row).
        location: String,
        /// Why it could not be read.
        reason: String,
    },

    /// An I/O operation failed.
    #[error("i/o error while {context}: {error}")]
    Io {
        /// What the store was doing, naming the file.
        context: String,
        /// The underlying error, already in this error's message.
        error: Arc<std::io::Error>,
    },

    /// A previous write failed in a way that leaves the handle unsafe to
    /// write through (for example a failed fsync); reopen the store.
    #[error("store {store} refuses writes after an earlier failure: {reason}")]
    Poisoned {
        /// The store that refuses writes.
        store: String,
        /// The failure that poisoned it.
        reason: String,
    },

    /// The store does not offer what was asked (CONTRACT §29: the change
    /// feed on a backend that declares it absent).
    #[error("unsupported: {operation} on {backend}: {reason}")]
    Unsupported {
        /// What was asked (`"read_feed"`).
        operation: &'static str,
        /// Which backend (`"s3"`, ...).
        backend: &'static str,
        /// Why the backend does not offer it.
        reason: &'static str,
    },

    /// The backend's driver or server failed.
    #[error("{backend} error: {error}")]
    Backend {
        /// Which backend (`"sqlite"`, `"s3"`, ...).
        backend: &'static str,
        /// Whether the same request may succeed when retried unchanged.
        retryable: bool,
        /// The driver's error, already in this error's message.
        error: SharedError,
    },
}

impl Error {
    /// An [`Error::InvalidInput`] with the given reason.
    pub fn invalid(reason: impl fmt::Display) -> Self {
        Self::InvalidInput {
            reason: reason.to_string(),
        }
    }

    /// An [`Error::Io`] naming what was being done.
    pub fn io(context: impl fmt::Display, source: std::io::Error) -> Self {
        Self::Io {
            context: context.to_string(),
            error: Arc::new(source),
        }
    }

    /// An [`Error::Corrupt`] for data at `location`.
    pub fn corrupt(location: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Self::Corrupt {
            location: location.to_string(),
            reason: reason.to_string(),
        }
    }

    /// A non-retryable [`Error::Backend`].
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            backend,
            retryable: false,
            error: SharedError::from(source.into()),
        }
    }

    /// A retryable [`Error::Backend`]: the request may succeed when sent again.
    pub fn transient(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            backend,
            retryable: true,
            error: SharedError::from(source.into()),
        }
    }

    /// An [`Error::Backend`] holding an error that is already shared (the
    /// failure of a group commit, handed to each of its waiters).
    pub fn backend_shared(backend: &'static str, retryable: bool, error: SharedError) -> Self {
        Self::Backend {
            backend,
            retryable,
            error,
        }
    }

    /// Whether retrying the same request unchanged may succeed.
    ///
    /// Appends are idempotent by event id, so a retried append never stores
    /// an event twice.
    pub fn is_retryable(&self) -> bool {
        self.retryable()
    }

    /// The error's kind in snake case (`invalid_input`, `conflict`,
    /// `locked`, `corrupt`, `io`, `poisoned`, `unsupported`, `backend`), for metrics
    /// labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidInput { .. } => "invalid_input",
            Self::Conflict { .. } => "conflict",
            Self::Locked { .. } => "locked",
            Self::Corrupt { .. } => "corrupt",
            Self::Io { .. } => "io",
            Self::Poisoned { .. } => "poisoned",
            Self::Unsupported { .. } => "unsupported",
            Self::Backend { .. } => "backend",
        }
    }

    fn retryable(&self) -> bool {
        match self {
            Self::Backend { retryable, .. } => *retryable,
            Self::Io { error, .. } => matches!(
                error.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // CONTRACT §26: a chain printer (anyhow's `{:#}`) says each cause once.
    #[test]
    fn causes_are_said_once() {
        let backend = Error::backend("sqlite", "UNIQUE constraint failed");
        assert!(std::error::Error::source(&backend).is_none());
        assert_eq!(
            backend.to_string(),
            "sqlite error: UNIQUE constraint failed"
        );
        let io = Error::io("writing x", std::io::Error::other("disk full"));
        assert!(std::error::Error::source(&io).is_none());
        assert_eq!(io.to_string(), "i/o error while writing x: disk full");
    }
}
