//! Maps sqlx and PostgreSQL errors into [`runstore_core::Error`], once.

use runstore_core::Error;

/// The backend name errors carry.
pub(crate) const BACKEND: &str = "postgres";

/// SQLSTATE `unique_violation`.
pub(crate) const UNIQUE_VIOLATION: &str = "23505";

/// SQLSTATEs after which the same transaction, sent again, may succeed:
/// serialization failure, deadlock, lock not available, connection
/// exceptions, too many connections, server shutting down, cannot connect now.
const RETRYABLE_STATES: &[&str] = &[
    "40001", "40P01", "55P03", "08000", "08001", "08003", "08004", "08006", "53300", "57P01",
    "57P02", "57P03",
];

/// The SQLSTATE of a database error, if `err` is one.
pub(crate) fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
        _ => None,
    }
}

/// Whether running the whole transaction again may succeed: a serialization
/// failure, a deadlock, or a unique violation raced by another writer (the
/// retry re-plans and takes the idempotent path).
pub(crate) fn is_retryable_in_tx(err: &sqlx::Error) -> bool {
    sqlstate(err)
        .is_some_and(|state| state == UNIQUE_VIOLATION || state == "40001" || state == "40P01")
}

/// Maps a driver error; `doing` says what the store was doing.
pub(crate) fn map(doing: &str, err: sqlx::Error) -> Error {
    let retryable = match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| RETRYABLE_STATES.contains(&code.as_ref())),
        _ => false,
    };
    let source = Box::new(Failure {
        doing: doing.to_owned(),
        source: err,
    });
    if retryable {
        Error::transient(BACKEND, source)
    } else {
        Error::backend(BACKEND, source)
    }
}

/// Maps a migration failure.
pub(crate) fn map_migrate(schema: &str, err: sqlx::migrate::MigrateError) -> Error {
    match err {
        sqlx::migrate::MigrateError::Execute(err) => {
            map(&format!("migrating schema {schema}"), err)
        }
        other => Error::backend(
            BACKEND,
            MigrationFailure {
                schema: schema.to_owned(),
                source: other,
            },
        ),
    }
}

/// A driver error with what the store was doing.
#[derive(Debug, thiserror::Error)]
#[error("{doing}: {source}")]
struct Failure {
    doing: String,
    #[source]
    source: sqlx::Error,
}

/// A migration that could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("migrating schema {schema}: {source}")]
struct MigrationFailure {
    schema: String,
    #[source]
    source: sqlx::migrate::MigrateError,
}

/// A failure inside a transaction: either the driver's (maybe worth running
/// the transaction again) or a contract outcome to return as is.
#[derive(Debug)]
pub(crate) enum TxError {
    /// The driver failed while doing the named step.
    Sql(&'static str, sqlx::Error),
    /// A contract outcome (`Conflict`, `InvalidInput`, `Corrupt`, ...).
    Store(Error),
}

impl From<Error> for TxError {
    fn from(err: Error) -> Self {
        Self::Store(err)
    }
}

impl TxError {
    /// Whether running the transaction again may succeed.
    pub(crate) fn retry_in_tx(&self) -> bool {
        matches!(self, Self::Sql(_, err) if is_retryable_in_tx(err))
    }

    /// The error to return to the caller; a driver's names `stream`
    /// (`tenant:run`), the stream the transaction worked on.
    pub(crate) fn into_error(self, stream: &(dyn std::fmt::Display + Sync)) -> Error {
        match self {
            Self::Sql(doing, err) => map(&format!("{doing} for stream {stream}"), err),
            Self::Store(err) => err,
        }
    }
}

/// Attaches what the store was doing to a driver error inside a transaction.
pub(crate) trait SqlContext<T> {
    /// Names the step that failed.
    fn during(self, doing: &'static str) -> Result<T, TxError>;
}

impl<T> SqlContext<T> for Result<T, sqlx::Error> {
    fn during(self, doing: &'static str) -> Result<T, TxError> {
        self.map_err(|err| TxError::Sql(doing, err))
    }
}

/// How many times a transaction runs before its retryable failure is
/// returned.
pub(crate) const TX_ATTEMPTS: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    // CONTRACT §26: the driver's text once, after what the store was doing
    // and for which stream.
    #[test]
    fn a_driver_error_is_stated_once_with_its_stream() {
        let err =
            TxError::Sql("inserting events", sqlx::Error::PoolTimedOut).into_error(&"org/ws:run-1");
        let text = err.to_string();
        assert_eq!(
            text,
            "postgres error: inserting events for stream org/ws:run-1: \
             pool timed out while waiting for an open connection"
        );
        assert!(err.is_retryable());
    }
}
