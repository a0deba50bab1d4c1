//! The store's private error, mapped once into [`runstore_core::Error`]
//! (CONTRACT §18).

use std::{sync::Arc, time::Duration};

use runstore_core::Error;

/// The backend name in [`Error::Backend`].
pub(crate) const BACKEND: &str = "sqlite";

/// SQLite's primary result codes for "another connection holds a lock"; the
/// driver reports extended codes, whose low byte is the primary code.
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;

/// What went wrong inside the SQLite store.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SqliteError {
    /// The driver failed while the store was doing `action`.
    #[error("sqlite store {path}: {action}: {source}")]
    Driver {
        path: Arc<str>,
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },

    /// SQLITE_BUSY outlasted the busy timeout.
    #[error(
        "sqlite store {path}: {action}: the database stayed locked by another connection or \
         process for {waited:?} (SQLITE_BUSY, busy timeout {timeout:?}); gave up"
    )]
    Busy {
        path: Arc<str>,
        action: &'static str,
        waited: Duration,
        timeout: Duration,
    },

    /// The embedded schema migrations could not be applied.
    #[error("sqlite store {path}: applying the schema migrations failed: {source}")]
    Migrate {
        path: Arc<str>,
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    /// A write was requested outside a tokio runtime, where the store's
    /// writer cannot run.
    #[error("sqlite store {path}: writes must be made from within a tokio runtime")]
    NoRuntime { path: Arc<str> },

    /// The task writing a request stopped before it answered (it was
    /// cancelled, or it panicked). The request may or may not have been
    /// written; retrying it is safe, as event ids make appends idempotent.
    #[error(
        "sqlite store {path}: the task writing this request stopped before answering (it was \
         cancelled or panicked); it may or may not have been written, and retrying it is safe"
    )]
    LeaderCancelled { path: Arc<str> },

    /// A unique key fired although the write plan, made inside the same
    /// write transaction, saw no such row: the index and the table disagree.
    #[error(
        "sqlite store {path}: {action}: unique key violated although the plan saw no such row, \
         after {attempts} attempts: {source}"
    )]
    UniqueAfterPlan {
        path: Arc<str>,
        action: &'static str,
        attempts: u32,
        #[source]
        source: sqlx::Error,
    },
}

impl SqliteError {
    /// A driver error raised while doing `action`.
    pub(crate) fn driver(path: &Arc<str>, action: &'static str, source: sqlx::Error) -> Self {
        Self::Driver {
            path: path.clone(),
            action,
            source,
        }
    }

    /// Whether this is SQLITE_BUSY or SQLITE_LOCKED (retry after a wait).
    pub(crate) fn is_busy(&self) -> bool {
        matches!(self, Self::Driver { source, .. } if is_busy(source))
            || matches!(self, Self::Busy { .. })
    }

    /// Whether a unique or primary key fired.
    pub(crate) fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Driver { source, .. } if is_unique_violation(source))
    }

    /// Whether retrying the same request unchanged may succeed.
    fn retryable(&self) -> bool {
        match self {
            Self::Driver { source, .. } => {
                is_busy(source)
                    || matches!(
                        source,
                        sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed
                    )
            }
            Self::Busy { .. } | Self::LeaderCancelled { .. } => true,
            Self::Migrate { .. } | Self::NoRuntime { .. } | Self::UniqueAfterPlan { .. } => false,
        }
    }
}

/// Whether the driver reported SQLITE_BUSY or SQLITE_LOCKED (any extended
/// variant).
pub(crate) fn is_busy(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.code())
        .and_then(|code| code.parse::<i64>().ok())
        .is_some_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED))
}

/// Whether the driver reported a unique or primary key violation.
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|db| matches!(db.kind(), sqlx::error::ErrorKind::UniqueViolation))
}

impl From<SqliteError> for Error {
    fn from(err: SqliteError) -> Self {
        match err {
            SqliteError::Driver {
                path,
                action,
                source: sqlx::Error::Io(source),
            } => Error::io(format!("{action} in sqlite store {path}"), source),
            other => {
                let retryable = other.retryable();
                Error::Backend {
                    backend: BACKEND,
                    retryable,
                    source: Box::new(other),
                }
            }
        }
    }
}

/// The same failure answered to every request of a group commit: the error
/// is shared, each caller gets its own [`Error::Backend`] pointing at it.
pub(crate) fn shared(err: &Arc<SqliteError>) -> Error {
    Error::Backend {
        backend: BACKEND,
        retryable: err.retryable(),
        source: Box::new(err.clone()),
    }
}
