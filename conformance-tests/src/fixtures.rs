//! Small builders the cases share.

use runstore_core::{
    EventId, EventRecord, MaintenanceReport, RunId, RunStatus, SnapshotId, SnapshotRecord, Tenant,
};
use serde_json::json;

/// A tenant `org-<n>/workspace-<n>` without deployment.
pub fn tenant(n: u32) -> Tenant {
    Tenant::new(format!("org-{n}"), format!("workspace-{n}"), None).expect("valid tenant")
}

/// A run id.
pub fn run(id: &str) -> RunId {
    RunId::new(id).expect("valid run id")
}

/// An event id.
pub fn eid(id: &str) -> EventId {
    EventId::new(id).expect("valid event id")
}

/// A snapshot id.
pub fn sid(id: &str) -> SnapshotId {
    SnapshotId::new(id).expect("valid snapshot id")
}

/// An event of `tenant`'s `run_id` with id `id`, occurring at `at`, with a
/// payload naming it.
pub fn event(tenant: &Tenant, run_id: &str, id: &str, at: u64) -> EventRecord {
    EventRecord::new(tenant, run(run_id), eid(id), "conformance.test", at)
        .with_payload(json!({ "id": id, "at": at }))
}

/// A snapshot of `tenant`'s `run_id` at `seq`, created at `created_at_ms`.
pub fn snapshot(
    tenant: &Tenant,
    run_id: &str,
    id: &str,
    seq: u64,
    created_at_ms: u64,
) -> SnapshotRecord {
    SnapshotRecord::new(
        tenant,
        run(run_id),
        sid(id),
        seq,
        created_at_ms,
        RunStatus::Running,
    )
    .with_checkpoint(json!({ "snapshot": id }))
}

/// The seqs of `records`, in order.
pub fn seqs(records: &[EventRecord]) -> Vec<u64> {
    records.iter().map(|record| record.seq).collect()
}

/// The event ids of `records`, in order.
pub fn ids(records: &[EventRecord]) -> Vec<&str> {
    records
        .iter()
        .map(|record| record.event_id.as_str())
        .collect()
}

/// The count of a maintenance report in which every stream succeeded.
///
/// # Panics
/// When a stream failed, naming it.
pub fn removed(report: MaintenanceReport) -> usize {
    assert!(
        report.is_clean(),
        "maintenance failed for some streams: {:?}",
        report.failed
    );
    report.removed
}
