//! Pluggable storage for durable workflow and agent runs: pick a backend by
//! cargo feature, open it by URL.
//!
//! A runtime records every run as a stream of events (append-only, a gapless
//! `seq` per stream, idempotent by `event_id`) plus snapshots to restore
//! from, all scoped by [`Tenant`]. Every backend honours one storage
//! contract (`CONTRACT §n` in the docs); this crate re-exports the core
//! types and traits, each enabled backend as a module, and [`open`], which
//! turns a store URL into a [`Store`] of whichever backend it names.
//!
//! # Example
//!
//! ```
//! use runstore::{EventLog, EventLogExt, EventId, EventRecord, ReadQuery, RunId, Tenant};
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! # if !cfg!(feature = "jsonl") { return Ok(()); }
//! let dir = tempfile::tempdir().expect("a temp dir");
//! let store = runstore::open(&format!("jsonl:{}", dir.path().join("store").display())).await?;
//!
//! let tenant = Tenant::new("acme", "prod", None)?;
//! let run = RunId::new("run-42")?;
//! for (id, at) in [("started", 100), ("step-1", 200)] {
//!     let event = EventRecord::new(&tenant, run.clone(), EventId::new(id)?, "demo", at);
//!     store.append(&tenant, &event).await?;
//! }
//! // A retried append is answered with the original seq (CONTRACT §2).
//! let again = EventRecord::new(&tenant, run.clone(), EventId::new("started")?, "demo", 100);
//! assert!(!store.append(&tenant, &again).await?.inserted);
//!
//! let tail = store.read(&tenant, &run, ReadQuery::tail(1)).await?;
//! assert_eq!(tail[0].seq, 2);
//! assert_eq!(store.next_seq(&tenant, &run).await?, 3);
//! # Ok::<_, runstore::OpenError>(())
//! # }).unwrap();
//! ```
//!
//! # Store URLs
//!
//! | URL | backend | feature |
//! |---|---|---|
//! | `jsonl:PATH` or a bare `PATH` | JSON-lines files in a directory | `jsonl` (default) |
//! | `sqlite:PATH` | one SQLite file | `sqlite` |
//! | `redb:PATH` | one redb file | `redb` |
//! | `s3://BUCKET/PREFIX` | S3 or an S3-compatible server; `AWS_*` variables give endpoint, region, credentials (a plain `http://` endpoint is allowed) | `s3` |
//! | `postgres://...`, `postgresql://...` (`?schema=NAME` picks the schema, default `runstore`) | PostgreSQL | `postgres` |
//! | `memory:` | the in-memory model store, gone with the process | always |
//!
//! The file backends and PostgreSQL accept `?durability=relaxed` (no fsync,
//! or no synchronous commit; CONTRACT §16).
//! Every scheme is recognised whatever the features: one whose feature is off
//! fails with [`OpenError::FeatureDisabled`], naming the feature to enable.
//! See [`StoreUrl`] for the details.
//!
//! # Features
//!
//! Each backend feature pulls in only its backend and re-exports it as a
//! module.
//!
//! - `jsonl` (default): `runstore::jsonl`, the embedded default; one directory of
//!   JSON-lines files in the reference record format.
//! - `sqlite`: `runstore::sqlite`, one SQLite file via sqlx; several processes may
//!   share it.
//! - `redb`: `runstore::redb`, one redb file; embedded, pure Rust.
//! - `s3`: `runstore::s3`, any S3-compatible bucket; many writers on many machines.
//! - `postgres`: `runstore::postgres`, PostgreSQL via sqlx; many application nodes.
//!
//! One more, not a backend: `bench` adds `runstore::bench`, the standard
//! workload that `runstore bench` and the benches crate run (off by default;
//! it brings in `futures`, `serde`, `tempfile` and tokio's runtime).
//!
//! This build enables:
#![cfg_attr(feature = "jsonl", doc = "- `jsonl`")]
#![cfg_attr(feature = "sqlite", doc = "- `sqlite`")]
#![cfg_attr(feature = "redb", doc = "- `redb`")]
#![cfg_attr(feature = "s3", doc = "- `s3`")]
#![cfg_attr(feature = "postgres", doc = "- `postgres`")]
#![cfg_attr(
    not(any(
        feature = "jsonl",
        feature = "sqlite",
        feature = "redb",
        feature = "s3",
        feature = "postgres"
    )),
    doc = "- no backend but `memory:`"
)]
//!
//! # Support tiers
//!
//! | tier | backends | what it means |
//! |---|---|---|
//! | 1 | `jsonl`, `sqlite`, `redb` | embedded, no service needed; the whole conformance suite runs on every CI run |
//! | 2 | `s3`, `postgres` | need a server; the whole conformance suite runs in CI against a local SeaweedFS / PostgreSQL started by the test script |
//! | model | `memory:` | the reference model the property tests compare against; for unit tests, not for data |
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "bench")]
#[cfg_attr(docsrs, doc(cfg(feature = "bench")))]
pub mod bench;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod open;
pub mod salvage;
mod store;
mod url;

/// The core crate: traits, types and shared rules (`runstore::core::Storage` is
/// the trait both halves of a store make up).
pub use runstore_core as core;
pub use runstore_core::{
    AppendOutcome, BoxError, Durability, ErasedRun, ErasedTenant, Error, EventId, EventLog,
    EventLogExt, EventRecord, FeedPosition, FeedRecord, FeedSignal, FollowOptions, MAX_ID_BYTES,
    MaintenanceReport, MemoryStore, PhaseState, PhaseTransitionRecord, ReadQuery, Result, RunId,
    RunStatus, SCHEMA_VERSION, Scope, SnapshotId, SnapshotRecord, SnapshotStore, SnapshotStoreExt,
    StorageExt, StreamFailure, StreamKey, Tenant, TenantContext, WorkflowPhase, types, validate,
};

pub use error::OpenError;
pub use open::{open, open_url};
pub use salvage::{SalvageReport, salvage};
pub use store::Store;
pub use url::{Backend, StoreUrl};

/// The JSON-lines files backend (feature `jsonl`).
#[cfg(feature = "jsonl")]
#[cfg_attr(docsrs, doc(cfg(feature = "jsonl")))]
#[doc(inline)]
pub use runstore_jsonl as jsonl;

/// The SQLite backend (feature `sqlite`).
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
#[doc(inline)]
pub use runstore_sqlite as sqlite;

/// The redb backend (feature `redb`).
#[cfg(feature = "redb")]
#[cfg_attr(docsrs, doc(cfg(feature = "redb")))]
#[doc(inline)]
pub use runstore_redb as redb;

/// The S3 backend (feature `s3`).
#[cfg(feature = "s3")]
#[cfg_attr(docsrs, doc(cfg(feature = "s3")))]
#[doc(inline)]
pub use runstore_s3 as s3;

/// The PostgreSQL backend (feature `postgres`).
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
#[doc(inline)]
pub use runstore_postgres as postgres;
