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

#[cfg(test)]
mod tests {
    use super::*;

    // CONTRACT §26: every caller of a shared round gets the error as the
    // round saw it, with each cause stated once.
    #[test]
    fn a_shared_error_keeps_its_text_kind_and_retryability() {
        let original = request(
            "get the head of stream o/w:r",
            object_store::Error::Generic {
                store: "S3",
                source: "connection reset".into(),
            },
        );
        let shared = original.clone();
        assert_eq!(shared.to_string(), original.to_string());
        assert_eq!(
            shared.to_string().matches("s3 error").count(),
            1,
            "{shared}"
        );
        assert!(shared.is_retryable());
        let corrupt = Error::corrupt("p/head (the head of stream o/w:r)", "bad");
        assert_eq!(corrupt.clone().to_string(), corrupt.to_string());
        let conflict = Error::Conflict {
            expected: u64::MAX,
            actual: 3,
        };
        assert!(matches!(
            conflict.clone(),
            Error::Conflict {
                expected: u64::MAX,
                actual: 3
            }
        ));
    }
}
