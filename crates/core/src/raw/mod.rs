//! What a backend uses to implement the contract; users of a store never
//! need it.
//!
//! Each rule of the contract that every backend applies lives here once,
//! with a module doc that tells a backend exactly how to use it:
//!
//! - [`append`]: planning an append or an import against a stream's last
//!   seq and stored ids (seqs, idempotency, conflicts).
//! - [`compaction`]: which events a pass prunes, and the stream's one merged
//!   marker.
//! - [`snapshots`]: snapshot order, `list` limits and prune selection.
//! - [`group`]: group commit's queue, budget and answers.
//! - [`erasure`]: the one record a deleted run keeps, and what
//!   `delete_run` does.
//! - [`check`]: the checks of one stream read back in full (gapless, unique
//!   ids, a consistent marker), used by `runstore verify`, the conformance
//!   suite and the kill harness.
//!
//! The types and traits a user needs are at the crate root; the shared
//! validation a user configures is [`crate::validate`].

pub mod append;
pub mod check;
pub mod compaction;
pub mod erasure;
pub mod group;
pub mod snapshots;
