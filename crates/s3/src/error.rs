//! Mapping `object_store` errors into the one runstore error (CONTRACT §18).

use runstore_core::Error;

/// The backend name in every error this crate returns.
pub(crate) const BACKEND: &str = "s3";

/// An object store request that failed, with what the store was doing.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub(crate) struct RequestError {
    context: String,
    #[source]
    source: object_store::Error,
}

/// Maps a failed request. Configuration and permission problems are final;
/// everything else (timeouts, 5xx, connection resets) may succeed when the
/// whole operation is retried, which appends make safe (CONTRACT §2).
pub(crate) fn request(context: impl Into<String>, source: object_store::Error) -> Error {
    let retryable = !matches!(
        source,
        object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::UnknownConfigurationKey { .. }
    );
    let source = RequestError {
        context: context.into(),
        source,
    };
    if retryable {
        Error::transient(BACKEND, source)
    } else {
        Error::backend(BACKEND, source)
    }
}

/// A retryable error for an operation that lost too many races.
pub(crate) fn contended(what: impl Into<String>) -> Error {
    Error::transient(BACKEND, Contended(what.into()))
}

/// Too many concurrent writers won the race; the caller may retry.
#[derive(Debug, thiserror::Error)]
#[error("{0}: too many concurrent writers, gave up; retry")]
pub(crate) struct Contended(String);

/// Rebuilds an error for each caller of a shared round (errors are not
/// `Clone`), keeping its kind and retryability.
pub(crate) fn share(err: &Error) -> Error {
    match err {
        Error::InvalidInput { reason } => Error::invalid(reason),
        Error::Conflict { expected, actual } => Error::Conflict {
            expected: *expected,
            actual: *actual,
        },
        Error::Corrupt { location, reason } => Error::corrupt(location, reason),
        other if other.is_retryable() => Error::transient(BACKEND, Shared(other.to_string())),
        other => Error::backend(BACKEND, Shared(other.to_string())),
    }
}

/// The message of an error shared by every caller of one round.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Shared(String);
