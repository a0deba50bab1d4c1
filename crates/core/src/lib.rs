//! The core of runstore: record types, the [`EventLog`] and [`SnapshotStore`]
//! traits every backend implements, the one [`Error`], and [`MemoryStore`],
//! the model implementation.
//!
//! A runtime records every run as a stream of events — append-only, with a
//! gapless `seq` per stream and idempotent by `event_id` — plus snapshots to
//! restore from, all scoped by [`Tenant`]. The behaviour every backend honours
//! is the storage contract (`CONTRACT §n` in the docs below); the
//! `runstore-conformance` crate is its executable form.
//!
//! # Example
//!
//! ```
//! use runstore_core::{
//!     EventLog, EventLogExt, EventRecord, EventId, MemoryStore, ReadQuery, RunId, Tenant,
//! };
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! # rt.block_on(async {
//! let store = MemoryStore::new();
//! let tenant = Tenant::new("acme", "prod", None)?;
//! let run = RunId::new("run-42")?;
//! for (id, at) in [("started", 100), ("step-1", 200)] {
//!     let event = EventRecord::new(&tenant, run.clone(), EventId::new(id)?, "demo", at);
//!     store.append(&tenant, &event).await?;
//! }
//! let tail = store.read(&tenant, &run, ReadQuery::tail(1)).await?;
//! assert_eq!(tail[0].seq, 2);
//! assert_eq!(store.compact(1_000, 1_150).await?.removed, 1);
//! # Ok::<_, runstore_core::Error>(())
//! # }).unwrap();
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod event_log;
mod ext;
mod maintenance;
mod memory;
pub mod raw;
pub mod salvage;
mod snapshot_store;
mod stream;
pub mod telemetry;
pub mod types;
pub mod validate;

pub use error::{BoxError, Error, Result, SharedError};
pub use event_log::{EventLog, FeedSignal};
pub use ext::{ErasedRun, ErasedTenant, EventLogExt, SnapshotStoreExt, StorageExt};
pub use maintenance::{MaintenanceReport, StreamFailure};
pub use memory::MemoryStore;
pub use snapshot_store::SnapshotStore;
pub use stream::StreamKey;
pub use types::{
    event::{EventRecord, SCHEMA_VERSION},
    feed::{FeedPosition, FeedRecord, FollowOptions},
    ids::{EventId, MAX_ID_BYTES, RunId, SnapshotId},
    phase::{PhaseState, PhaseTransitionRecord, RunStatus, WorkflowPhase},
    query::{AppendOutcome, ReadQuery},
    snapshot::SnapshotRecord,
    tenant::{Scope, Tenant, TenantContext},
};

/// Both traits in one object: what a backend's store type is, held as
/// `Arc<dyn Storage>` by the facade's `Store` handle (the one type named
/// `Store`, which `runstore::open` returns) and by the conformance suite.
/// Implemented for every type that implements both.
pub trait Storage: EventLog + SnapshotStore {}

impl<T: EventLog + SnapshotStore + ?Sized> Storage for T {}

/// How hard a write works to survive a crash (CONTRACT §16).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// A write that returned `Ok` survives power loss: data, and on create
    /// the parent directory, are synced. The default.
    #[default]
    Durable,
    /// Writes survive a killed process but may be lost on power loss: no
    /// fsync. Chosen explicitly, for tests and bulk loads.
    Relaxed,
}
