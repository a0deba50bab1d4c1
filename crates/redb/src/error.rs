//! redb's errors, mapped once into [`runstore_core::Error`] (CONTRACT §18).

use std::path::Path;

use runstore_core::Error;

/// The backend name in [`Error::Backend`].
pub(crate) const BACKEND: &str = "redb";

/// Why an operation inside the store failed, before the store's path is
/// attached.
///
/// Inside a group-commit transaction the variants mean different things:
/// a [`Failure::Rejected`] job wrote nothing, so the batch goes on without it;
/// a [`Failure::Redb`] or [`Failure::Abandon`] failure may have left the
/// transaction half-written, so the whole batch is abandoned.
#[derive(Debug)]
pub(crate) enum Failure {
    /// redb failed.
    Redb(redb::Error),
    /// The request was refused (conflict, invalid input, corrupt record)
    /// before anything was written.
    Rejected(Error),
    /// The request failed after it had written (a corrupt record met
    /// half-way): its transaction must not commit.
    Abandon(Error),
}

impl Failure {
    /// The public error, naming the store's file.
    pub(crate) fn into_error(self, path: &Path) -> Error {
        match self {
            Self::Redb(err) => map(path, err),
            Self::Rejected(err) | Self::Abandon(err) => err,
        }
    }

    /// The failure of work that may have written already: a refusal then
    /// abandons the transaction instead of letting the batch commit.
    pub(crate) fn after_writes(self) -> Self {
        match self {
            Self::Rejected(err) => Self::Abandon(err),
            other => other,
        }
    }
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        Self::Rejected(err)
    }
}

macro_rules! from_redb {
    ($($ty:ty),* $(,)?) => {
        $(
            impl From<$ty> for Failure {
                fn from(err: $ty) -> Self {
                    Self::Redb(err.into())
                }
            }
        )*
    };
}

from_redb!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError,
);

/// Maps a redb error into the public error, naming the store's file. A
/// failed group commit maps its error once; every request of the group
/// gets a clone ([`runstore_core::raw::group`]).
pub(crate) fn map(path: &Path, err: redb::Error) -> Error {
    let file = path.display();
    match err {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => Error::Locked {
            resource: file.to_string(),
        },
        redb::Error::Io(io) => Error::io(format!("accessing redb store {file}"), io),
        redb::Error::Corrupted(reason) => Error::corrupt(format!("redb store {file}"), reason),
        redb::Error::PreviousIo | redb::Error::TransactionPoisoned => Error::Poisoned {
            store: file.to_string(),
            reason: err.to_string(),
        },
        redb::Error::WouldBlock => Error::transient(BACKEND, err),
        _ => Error::backend(BACKEND, err),
    }
}

/// The error of a request sent to a writer that is no longer running.
pub(crate) fn writer_gone(path: &Path) -> Error {
    Error::Poisoned {
        store: path.display().to_string(),
        reason: "the redb writer thread has stopped".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn already_open_is_locked_naming_the_file() {
        let err = map(
            Path::new("/data/runs.redb"),
            redb::Error::DatabaseAlreadyOpen,
        );
        match err {
            Error::Locked { resource } => assert_eq!(resource, "/data/runs.redb"),
            other => panic!("expected Locked, got {other:?}"),
        }
    }

    #[test]
    fn io_failures_keep_their_kind() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow disk");
        let err = map(Path::new("x.redb"), redb::Error::Io(io));
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("x.redb"), "{err}");
    }
}
