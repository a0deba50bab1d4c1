//! What opening a store can fail with.

use crate::Backend;

/// Why [`open`](crate::open) failed.
///
/// Converts into [`runstore_core::Error`] (URL problems become
/// `InvalidInput`), so `?` works in code that returns the core error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL names a scheme runstore does not know.
    #[error(
        "unknown store URL scheme {scheme:?} in {url:?}; expected jsonl:PATH, sqlite:PATH, \
         redb:PATH, s3://BUCKET/PREFIX, postgres://..., memory: or a bare directory path"
    )]
    UnknownScheme {
        /// The URL as given.
        url: String,
        /// The scheme found in it.
        scheme: String,
    },

    /// The scheme is known but the rest of the URL is malformed.
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The URL names a backend this build leaves out.
    #[error(
        "the {backend} backend is not built in: enable the `{feature}` feature of the `runstore` \
         crate (or of `runstore-cli`) to open {url:?}"
    )]
    FeatureDisabled {
        /// The backend the URL names.
        backend: Backend,
        /// The cargo feature that enables it.
        feature: &'static str,
        /// The URL as given.
        url: String,
    },

    /// The backend failed to open the store.
    #[error(transparent)]
    Store(#[from] runstore_core::Error),
}

impl From<OpenError> for runstore_core::Error {
    fn from(err: OpenError) -> Self {
        match err {
            OpenError::Store(err) => err,
            other => runstore_core::Error::invalid(other),
        }
    }
}
