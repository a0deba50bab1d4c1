//! S3 backend of runstore, via `object_store`, for many writers sharing one
//! bucket.
//!
//! [`S3Store`] implements [`EventLog`](runstore_core::EventLog) and
//! [`SnapshotStore`](runstore_core::SnapshotStore) on any
//! [`ObjectStore`] with create-if-absent and update-if-match puts: `AmazonS3`
//! (AWS S3, SeaweedFS, MinIO, ...) in production, `InMemory` in tests. Any
//! number of processes on any number of machines may append to the same
//! stream through one bucket: seqs stay gapless and each event id is stored
//! once (CONTRACT §3), because every change to a stream is committed by one
//! conditional put of the stream's head object. Nothing a process remembers
//! is needed for correctness; a writer that dies between any two requests
//! leaves every stream readable and appendable. The protocol, key layout,
//! failure cases and request counts are in `docs/backends/s3.md`.
//!
//! Concurrent appends to one stream through one handle are grouped into one
//! protocol round, so throughput grows with concurrency and batch size.
//!
//! An append answers `inserted = false` for an event it stored itself only
//! when the outcome of its own commit could not be confirmed: the client
//! library retried the head put after a lost response and more than 32 other
//! commits followed before the head was read again, or the round's leading
//! call was cancelled off a Tokio runtime (or the round panicked) after the
//! put landed. The seq answered is still the event's one, and nothing is
//! duplicated (CONTRACT §1-§3; docs/backends/s3.md, "Append").
//!
//! Every write is checked against the store's
//! [`Limits`] before any request
//! ([`S3Store::with_limits`]; CONTRACT §21-§24). Store-wide `compact` and
//! `prune` process each stream on its own and report the ones that fail
//! (CONTRACT §25); an object always belongs to the stream its key names,
//! never to the one its record claims.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//!
//! use object_store::memory::InMemory;
//! use runstore_core::{EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, Tenant};
//! use runstore_s3::S3Store;
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! let store = S3Store::new(Arc::new(InMemory::new()), "runs/prod")?;
//! let tenant = Tenant::new("acme", "prod", None)?;
//! let run = RunId::new("run-42")?;
//! for (id, at) in [("started", 100), ("step-1", 200)] {
//!     let event = EventRecord::new(&tenant, run.clone(), EventId::new(id)?, "demo", at);
//!     store.append(&tenant, &event).await?;
//! }
//! let again = EventRecord::new(&tenant, run.clone(), EventId::new("started")?, "demo", 300);
//! assert_eq!(store.append(&tenant, &again).await?.seq, 1); // CONTRACT §2
//! let tail = store.read(&tenant, &run, ReadQuery::tail(1)).await?;
//! assert_eq!(tail[0].seq, 2);
//! # Ok::<_, runstore_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! Against a real bucket, [`S3Store::from_env`] reads the usual `AWS_*`
//! variables (`AWS_ENDPOINT_URL` or `AWS_ENDPOINT`, credentials, region).
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
#[doc(hidden)]
pub mod fuzzing;
mod head;
mod idtable;
mod keys;
mod log;
mod objects;
mod snapshots;

/// The `object_store` this crate is built on, for building stores of the
/// matching version.
pub use object_store;

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, MutexGuard},
};

use object_store::{ObjectStore, aws::AmazonS3Builder};
use runstore_core::{Result, StreamKey, validate::Limits};

use crate::{keys::Keys, log::StreamState};

/// An event log and snapshot store in an object store bucket, under a key
/// prefix (CONTRACT §1-§20). Cheap to clone; clones share one handle.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    keys: Keys,
    /// What a write may carry (CONTRACT §21-§24), checked before any request.
    limits: Limits,
    /// Per-stream append queues and caches of this handle (speed only).
    streams: Mutex<HashMap<StreamKey, Arc<StreamState>>>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("store", &self.inner.store.to_string())
            .field("prefix", &self.inner.keys.root().as_ref())
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// A store on `store` under the key prefix `prefix` (`""` for the root).
    ///
    /// The object store must support `PutMode::Create` and
    /// `PutMode::Update`; writes through one that does not fail with a
    /// non-retryable `Backend` error.
    ///
    /// # Errors
    /// `InvalidInput` when `prefix` is not a valid object path.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: impl AsRef<str>) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                keys: Keys::new(prefix.as_ref())?,
                limits: Limits::default(),
                streams: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// This store enforcing `limits` on every write (CONTRACT §21) instead
    /// of [`Limits::default`]. Meant right after construction: clones made
    /// before keep the limits they had.
    #[must_use]
    pub fn with_limits(self, limits: Limits) -> Self {
        let inner = match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.limits = limits;
                inner
            }
            Err(shared) => Inner {
                store: shared.store.clone(),
                keys: shared.keys.clone(),
                limits,
                streams: Mutex::new(HashMap::new()),
            },
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The limits this store enforces on writes.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// A store in `bucket` under `prefix`, configured from the environment
    /// as [`AmazonS3Builder::from_env`] does (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL` or
    /// `AWS_ENDPOINT`, ...). Plain HTTP is allowed when the endpoint starts
    /// with `http://` (a local server).
    ///
    /// # Errors
    /// `InvalidInput` for an invalid prefix; `Backend` when the client cannot
    /// be configured.
    pub fn from_env(bucket: impl AsRef<str>, prefix: impl AsRef<str>) -> Result<Self> {
        let endpoint = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()));
        Self::from_env_with_endpoint(bucket, endpoint, prefix)
    }

    /// As [`S3Store::from_env`], with the endpoint given explicitly (for
    /// example a local server's `http://127.0.0.1:8333`); `None` keeps the
    /// client's default (AWS).
    ///
    /// # Errors
    /// As [`S3Store::from_env`].
    pub fn from_env_with_endpoint(
        bucket: impl AsRef<str>,
        endpoint: Option<String>,
        prefix: impl AsRef<str>,
    ) -> Result<Self> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket.as_ref());
        if let Some(endpoint) = endpoint {
            if endpoint.starts_with("http://") {
                builder = builder.with_allow_http(true);
            }
            builder = builder.with_endpoint(endpoint);
        }
        let store = builder
            .build()
            .map_err(|err| error::request("configure the S3 client", err))?;
        Self::new(Arc::new(store), prefix)
    }

    /// The object store underneath.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }
}

impl Inner {
    fn store(&self) -> &dyn ObjectStore {
        self.store.as_ref()
    }

    fn stream_map(&self) -> MutexGuard<'_, HashMap<StreamKey, Arc<StreamState>>> {
        // The map only holds Arcs; a panic elsewhere cannot leave it torn.
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This handle's state for `key`.
    fn stream_state(&self, key: &StreamKey) -> Arc<StreamState> {
        let mut map = self.stream_map();
        if let Some(state) = map.get(key) {
            return state.clone();
        }
        if map.len() >= 4096 {
            // Forget idle streams: nothing but caches is lost.
            map.retain(|_, state| Arc::strong_count(state) > 1);
        }
        map.entry(key.clone()).or_default().clone()
    }
}

/// A random token for keys and commits.
fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Waits a little before retrying a lost race: randomized, growing with the
/// attempt, at most about 200 ms.
async fn backoff(attempt: u32) {
    let ceiling_ms = 2u64 << attempt.min(6);
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    let random = u64::from(u16::from_le_bytes([bytes[0], bytes[1]]));
    let ms = 1 + random % ceiling_ms.max(1);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}
