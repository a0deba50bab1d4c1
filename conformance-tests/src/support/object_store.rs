//! A forwarding [`ObjectStore`] with hooks, for tests of backends built on
//! `object_store`: it passes every request to an inner store, letting a
//! test see, hold, fail, or lose the answer to any of them.
//!
//! ```
//! use std::sync::Arc;
//!
//! use object_store::{ObjectStore, memory::InMemory};
//! use runstore_conformance::support::object_store::{Forwarding, Hooks, Request, Verdict, injected};
//!
//! /// Deletes fail; everything else passes.
//! struct FailDeletes;
//!
//! #[async_trait::async_trait]
//! impl Hooks for FailDeletes {
//!     async fn before(&self, _inner: &Arc<dyn ObjectStore>, request: Request<'_>) -> Verdict {
//!         match request {
//!             Request::Delete { .. } => Verdict::Fail(injected("delete refused")),
//!             _ => Verdict::Pass,
//!         }
//!     }
//! }
//!
//! let store: Arc<dyn ObjectStore> =
//!     Arc::new(Forwarding::new(Arc::new(InMemory::new()), FailDeletes));
//! # let _ = store;
//! ```

use std::{fmt, ops::Range, sync::Arc};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt as _, stream::BoxStream};
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, path::Path,
};

/// One request a [`Forwarding`] store passes on, as its hooks see it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Request<'a> {
    /// `put_opts` (and `put`).
    Put {
        /// Where.
        location: &'a Path,
        /// Its options (the mode says whether it is conditional).
        opts: &'a PutOptions,
    },
    /// `put_multipart_opts` (and `put_multipart`).
    PutMultipart {
        /// Where.
        location: &'a Path,
    },
    /// `get_opts` (and `get`, `get_range`, `head`).
    Get {
        /// Where.
        location: &'a Path,
        /// Its options.
        options: &'a GetOptions,
    },
    /// `get_ranges`.
    GetRanges {
        /// Where.
        location: &'a Path,
    },
    /// `delete`.
    Delete {
        /// Where.
        location: &'a Path,
    },
    /// `list` (and `list_with_offset`).
    List {
        /// Under which prefix.
        prefix: Option<&'a Path>,
    },
    /// `list_with_delimiter`.
    ListWithDelimiter {
        /// Under which prefix.
        prefix: Option<&'a Path>,
    },
    /// `copy` (and `rename`).
    Copy {
        /// From where.
        from: &'a Path,
        /// To where.
        to: &'a Path,
    },
    /// `copy_if_not_exists`.
    CopyIfNotExists {
        /// From where.
        from: &'a Path,
        /// To where.
        to: &'a Path,
    },
}

impl Request<'_> {
    /// The HTTP-like verb: `PUT`, `MULTIPART`, `GET`, `DELETE`, `LIST` or
    /// `COPY`.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Put { .. } => "PUT",
            Self::PutMultipart { .. } => "MULTIPART",
            Self::Get { .. } | Self::GetRanges { .. } => "GET",
            Self::Delete { .. } => "DELETE",
            Self::List { .. } | Self::ListWithDelimiter { .. } => "LIST",
            Self::Copy { .. } | Self::CopyIfNotExists { .. } => "COPY",
        }
    }

    /// The path the request is about: its location, a list's prefix (the
    /// root for none), a copy's destination.
    pub fn path(&self) -> Path {
        match self {
            Self::Put { location, .. }
            | Self::PutMultipart { location }
            | Self::Get { location, .. }
            | Self::GetRanges { location }
            | Self::Delete { location } => (*location).clone(),
            Self::List { prefix } | Self::ListWithDelimiter { prefix } => {
                prefix.cloned().unwrap_or_default()
            }
            Self::Copy { to, .. } | Self::CopyIfNotExists { to, .. } => (*to).clone(),
        }
    }

    /// Whether this is a list request.
    pub fn is_list(&self) -> bool {
        matches!(self, Self::List { .. } | Self::ListWithDelimiter { .. })
    }
}

/// What a [`Hooks::before`] hook decides for a request.
#[derive(Debug)]
pub enum Verdict {
    /// Pass it on.
    Pass,
    /// Fail it unapplied, with this error.
    Fail(object_store::Error),
    /// Apply it, then answer this error instead of its answer (a lost
    /// response). For `list`, the same as [`Verdict::Fail`].
    Lose(object_store::Error),
}

/// What a test does around the requests of a [`Forwarding`] store. Both
/// hooks default to letting the request through.
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// Runs before `request` reaches `inner`; it may wait, or act on `inner`
    /// itself, and decides what becomes of the request.
    async fn before(&self, inner: &Arc<dyn ObjectStore>, request: Request<'_>) -> Verdict {
        let _ = (inner, request);
        Verdict::Pass
    }

    /// Runs after `inner` applied `request` successfully, before its caller
    /// gets the answer; it may wait. Not called for `list`, whose answer is
    /// a stream.
    async fn after(&self, inner: &Arc<dyn ObjectStore>, request: Request<'_>) {
        let _ = (inner, request);
    }
}

/// The hooks that do nothing.
impl Hooks for () {}

/// An [`ObjectStore`] that passes every request to `inner` through `hooks`.
pub struct Forwarding<H> {
    inner: Arc<dyn ObjectStore>,
    hooks: Arc<H>,
}

impl<H: Hooks> Forwarding<H> {
    /// `inner` with its requests passed through `hooks`.
    pub fn new(inner: Arc<dyn ObjectStore>, hooks: H) -> Self {
        Self {
            inner,
            hooks: Arc::new(hooks),
        }
    }

    /// The store requests go to.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// The hooks.
    pub fn hooks(&self) -> &H {
        &self.hooks
    }

    /// Runs `request` through the hooks around `apply`.
    async fn around<T>(
        &self,
        request: Request<'_>,
        apply: impl Future<Output = object_store::Result<T>> + Send,
    ) -> object_store::Result<T> {
        let lost = match self.hooks.before(&self.inner, request).await {
            Verdict::Pass => None,
            Verdict::Fail(err) => return Err(err),
            Verdict::Lose(err) => Some(err),
        };
        let answer = apply.await?;
        self.hooks.after(&self.inner, request).await;
        match lost {
            Some(err) => Err(err),
            None => Ok(answer),
        }
    }
}

/// An error a hook answers, as a store would for a request that failed
/// with `message` (a generic, retryable-looking I/O failure).
pub fn injected(message: impl Into<String>) -> object_store::Error {
    object_store::Error::Generic {
        store: "Forwarding",
        source: Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            message.into(),
        )),
    }
}

impl<H> fmt::Debug for Forwarding<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forwarding")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<H> fmt::Display for Forwarding<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Forwarding({})", self.inner)
    }
}

#[async_trait]
impl<H: Hooks> ObjectStore for Forwarding<H> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let request = Request::Put {
            location,
            opts: &opts,
        };
        self.around(
            request,
            self.inner.put_opts(location, payload, opts.clone()),
        )
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.around(
            Request::PutMultipart { location },
            self.inner.put_multipart_opts(location, opts),
        )
        .await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let request = Request::Get {
            location,
            options: &options,
        };
        self.around(request, self.inner.get_opts(location, options.clone()))
            .await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.around(
            Request::GetRanges { location },
            self.inner.get_ranges(location, ranges),
        )
        .await
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.around(Request::Delete { location }, self.inner.delete(location))
            .await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = self.inner.clone();
        let hooks = self.hooks.clone();
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            let request = Request::List {
                prefix: prefix.as_ref(),
            };
            match hooks.before(&inner, request).await {
                Verdict::Pass => inner.list(prefix.as_ref()),
                Verdict::Fail(err) | Verdict::Lose(err) => {
                    futures::stream::once(async move { Err(err) }).boxed()
                }
            }
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.around(
            Request::ListWithDelimiter { prefix },
            self.inner.list_with_delimiter(prefix),
        )
        .await
    }

    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.around(Request::Copy { from, to }, self.inner.copy(from, to))
            .await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.around(
            Request::CopyIfNotExists { from, to },
            self.inner.copy_if_not_exists(from, to),
        )
        .await
    }
}
