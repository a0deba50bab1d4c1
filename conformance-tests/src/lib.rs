//! The storage contract as executable tests.
//!
//! Each case is a `pub async fn` over a [`Harness`], written once and named
//! for the behaviour it checks; its doc names the contract clause. The
//! [`suite!`] macro stamps one `#[tokio::test]` per case for a backend:
//!
//! ```text
//! use runstore_conformance::{Capabilities, Harness};
//!
//! fn harness() -> Harness {
//!     Harness::new("jsonl", Capabilities::persistent(), |location| async move {
//!         runstore_jsonl::JsonlStore::open(location.dir.join("store")).await
//!     })
//! }
//!
//! runstore_conformance::suite!(harness());
//! ```
//!
//! Invoke [`suite!`] at the root of the test crate: cases that need a second
//! process run the test binary again, filtered to the ignored
//! `conformance_child_process` test it stamps.
//!
//! Cases panic on the first broken expectation, naming what differed.
//!
//! What a backend's own tests need besides the cases (a service URL or a
//! loud failure, a child process, the stream checker, a forwarding
//! `ObjectStore`) is in [`support`].
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod compaction;
pub mod concurrency;
pub mod erasure;
pub mod events;
pub mod feed;
mod fixtures;
pub mod handles;
mod harness;
pub mod hostile;
pub mod idempotency;
pub mod maintenance;
pub mod persistence;
pub mod property;
pub mod snapshots;
pub mod support;
pub mod tenancy;

pub use fixtures::*;
pub use harness::{
    ALLOW_MISSING_SERVICES, Capabilities, DEFAULT_PROPTEST_CASES, Harness, Instance, Location,
    PROPTEST_CASES_VAR,
};

/// Stamps one `#[tokio::test]` per conformance case for the harness the
/// expression builds (evaluated once per case).
#[macro_export]
macro_rules! suite {
    ($harness:expr) => {
        $crate::__stamp_cases!(
            $harness;
            events::append_assigns_consecutive_seqs,
            events::records_round_trip_unchanged,
            events::read_windows_follow_bounds_limit_and_tail,
            events::next_seq_and_seq_of_track_the_stream,
            events::list_runs_lists_the_tenants_runs,
            events::ids_are_stored_exactly_as_given,
            events::append_rejects_an_event_of_another_run,
            idempotency::duplicate_event_id_returns_original_seq,
            idempotency::batch_append_assigns_consecutive_seqs_and_dedupes,
            idempotency::expected_last_seq_conflicts_unless_all_stored,
            idempotency::empty_batch_writes_nothing,
            concurrency::concurrent_appends_are_gapless_and_unique,
            concurrency::concurrent_batches_are_gapless_and_unique,
            concurrency::concurrent_duplicate_writes_store_once,
            handles::several_handles_append_to_one_stream_gapless_and_unique,
            handles::a_second_open_is_locked_until_the_handle_is_dropped,
            compaction::compaction_prunes_old_events_and_keeps_next_seq,
            compaction::compaction_with_zero_retention_does_nothing,
            compaction::compaction_prunes_later_what_was_too_young_before,
            compaction::compaction_keeps_the_tail_from_the_newest_snapshot,
            compaction::compaction_keeps_streams_and_tenants_independent,
            compaction::compaction_markers_match_the_model_byte_for_byte,
            compaction::compacted_ids_answer_after_reopen_and_recompaction,
            compaction::compaction_of_a_long_stream_matches_the_model,
            snapshots::snapshot_put_replaces_and_get_finds,
            snapshots::snapshot_list_orders_by_seq_and_keeps_newest,
            snapshots::snapshots_are_tenant_scoped,
            snapshots::snapshot_prune_keeps_newest_per_run,
            snapshots::snapshot_put_racing_prune_is_kept,
            snapshots::snapshot_ids_with_path_characters_stay_distinct,
            snapshots::legacy_snapshots_are_hydrated,
            tenancy::tenants_never_see_each_other,
            tenancy::stores_in_one_process_are_independent,
            maintenance::streams_and_snapshot_streams_list_everything,
            maintenance::import_keeps_seqs_and_markers_and_is_repeatable,
            maintenance::import_rejects_a_diverging_stream,
            erasure::delete_run_erases_events_ids_and_snapshots,
            erasure::delete_of_a_missing_run_writes_nothing,
            erasure::delete_tenant_erases_every_run_of_that_tenant_only,
            erasure::delete_racing_appends_leaves_a_sound_stream,
            erasure::a_deleted_run_migrates_with_its_seqs,
            persistence::everything_survives_reopen,
            property::store_matches_the_model,
            property::store_matches_the_model_under_hostile_input,
            hostile::hostile_tenant_cannot_hurt_another,
            hostile::maintenance_isolates_a_failing_stream,
            handles::two_processes_append_to_one_stream_gapless_and_unique,
            feed::feed_orders_every_record_and_resumes_anywhere,
            feed::feed_keeps_each_tenant_to_itself,
            feed::feed_gives_a_compaction_marker_as_a_new_record,
            feed::feed_gives_an_erasure_as_its_marker,
            feed::feed_positions_survive_reopen,
            feed::feed_takes_imported_streams_in_seq_order,
            feed::follow_feed_yields_records_as_they_commit,
            feed::feed_never_skips_a_late_commit,
            feed::feed_stays_lossless_while_maintenance_races_writers,
        );

        /// The second process of the suite's cross-process case; the case
        /// runs this test binary again filtered to it.
        #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        #[ignore = "the child process of a conformance case; run by it"]
        async fn conformance_child_process() {
            let harness: $crate::Harness = $harness;
            $crate::handles::child_process(&harness).await;
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __stamp_cases {
    ($harness:expr; $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let harness: $crate::Harness = $harness;
                if harness.ready(stringify!($case)) {
                    $crate::$module::$case(&harness).await;
                    harness.cleanup().await;
                }
            }
        )*
    };
}
