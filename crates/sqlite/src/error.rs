//! The store's private error, mapped once into [`runstore_core::Error`]
//! (CONTRACT §18).

use std::{fmt, sync::Arc, time::Duration};

use runstore_core::Error;

/// The backend name in [`Error::Backend`].
pub(crate) const BACKEND: &str = "sqlite";

/// SQLite's primary result codes for "another connection holds a lock"; the
/// driver reports extended codes, whose low byte is the primary code.
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;

/// What went wrong inside the SQLite store.
///
/// Each variant states its cause once, in its own text: a driver error is
/// written out ([`Cause`]) rather than chained as a `source`, because sqlx's
/// errors repeat the text of their own sources, and every layer that both
/// printed and chained it made the cause appear again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SqliteError {
    /// The driver failed while the store was doing `action`, on `at` (the
    /// stream, seq or snapshot concerned) when there is one.
    #[error("sqlite store {path}: {action}{}: {}", At(at), Cause(driver))]
    Driver {
        path: Arc<str>,
        action: &'static str,
        at: Option<String>,
        driver: sqlx::Error,
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
    #[error("sqlite store {path}: applying the schema migrations failed: {migrate}")]
    Migrate {
        path: Arc<str>,
        migrate: sqlx::migrate::MigrateError,
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
        "sqlite store {path}: {action}{}: unique key violated although the plan saw no such \
         row, after {attempts} attempts: {}",
        At(at),
        Cause(driver)
    )]
    UniqueAfterPlan {
        path: Arc<str>,
        action: &'static str,
        at: Option<String>,
        attempts: u32,
        driver: sqlx::Error,
    },
}

/// Where a driver error happened, as ` (acme/prod:run-1, seq 4)`.
struct At<'a>(&'a Option<String>);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(at) => write!(f, " ({at})"),
            None => Ok(()),
        }
    }
}

/// A driver error's cause, once: for a database error SQLite's message and
/// extended result code, otherwise the driver's own text.
struct Cause<'a>(&'a sqlx::Error);

impl fmt::Display for Cause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_database_error() {
            Some(db) => {
                f.write_str(db.message())?;
                match db.code() {
                    Some(code) => write!(f, " (sqlite code {code})"),
                    None => Ok(()),
                }
            }
            None => write!(f, "{}", self.0),
        }
    }
}

impl SqliteError {
    /// A driver error raised while doing `action`.
    pub(crate) fn driver(path: &Arc<str>, action: &'static str, driver: sqlx::Error) -> Self {
        Self::Driver {
            path: path.clone(),
            action,
            at: None,
            driver,
        }
    }

    /// A driver error raised while doing `action` on `at` (a stream, with
    /// its seq or snapshot id where one applies).
    pub(crate) fn driver_at(
        path: &Arc<str>,
        action: &'static str,
        at: impl fmt::Display,
        driver: sqlx::Error,
    ) -> Self {
        Self::Driver {
            path: path.clone(),
            action,
            at: Some(at.to_string()),
            driver,
        }
    }

    /// Whether this is SQLITE_BUSY or SQLITE_LOCKED (retry after a wait).
    pub(crate) fn is_busy(&self) -> bool {
        matches!(self, Self::Driver { driver, .. } if is_busy(driver))
            || matches!(self, Self::Busy { .. })
    }

    /// Whether a unique or primary key fired.
    pub(crate) fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Driver { driver, .. } if is_unique_violation(driver))
    }

    /// Whether the failure concerns the store rather than the data a
    /// statement touched: the database stayed locked, the connection or the
    /// file failed, the disk is full. Maintenance stops its pass on such a
    /// failure instead of trying stream after stream.
    pub(crate) fn is_store_wide(&self) -> bool {
        match self {
            Self::Driver { driver, .. } => match driver {
                sqlx::Error::Database(db) => db
                    .code()
                    .and_then(|code| code.parse::<i64>().ok())
                    .is_some_and(|code| STORE_WIDE_CODES.contains(&(code & 0xff))),
                sqlx::Error::Io(_)
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Protocol(_)
                | sqlx::Error::Configuration(_) => true,
                _ => false,
            },
            Self::Busy { .. }
            | Self::Migrate { .. }
            | Self::NoRuntime { .. }
            | Self::LeaderCancelled { .. } => true,
            Self::UniqueAfterPlan { .. } => false,
        }
    }

    /// Whether retrying the same request unchanged may succeed.
    fn retryable(&self) -> bool {
        match self {
            Self::Driver { driver, .. } => {
                is_busy(driver)
                    || matches!(
                        driver,
                        sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed
                    )
            }
            Self::Busy { .. } | Self::LeaderCancelled { .. } => true,
            Self::Migrate { .. } | Self::NoRuntime { .. } | Self::UniqueAfterPlan { .. } => false,
        }
    }
}

/// Primary result codes that concern the whole database, not one stream's
/// rows: BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN, NOTADB.
const STORE_WIDE_CODES: [i64; 8] = [SQLITE_BUSY, SQLITE_LOCKED, 7, 8, 10, 13, 14, 26];

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
                at,
                driver: sqlx::Error::Io(source),
            } => Error::io(
                format!("{action}{} in sqlite store {path}", At(&at)),
                source,
            ),
            other => {
                let retryable = other.retryable();
                Error::backend_shared(BACKEND, retryable, Arc::new(other))
            }
        }
    }
}

/// The same failure answered to every request of a group commit: the error
/// is shared, each caller gets its own [`Error::Backend`] pointing at it.
pub(crate) fn shared(err: &Arc<SqliteError>) -> Error {
    Error::backend_shared(BACKEND, err.retryable(), err.clone())
}
