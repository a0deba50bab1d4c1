//! What the writers write: two tenants, a few runs shared by every writer
//! process, event and snapshot ids unique per writer incarnation, and the
//! maintenance settings. The checker rebuilds events from here to retry them.

use anyhow::Result;
use runstore::{EventId, EventRecord, RunId, Tenant};
use serde_json::json;

/// Runs per tenant; every writer process writes to all of them, so writers
/// of the shared-store backends race on the same streams.
pub const RUNS: usize = 4;

/// Compaction prunes events older than this below the stream's newest
/// snapshot; snapshot prune deletes snapshots older than this.
pub const RETENTION_MS: u64 = 150;

/// Snapshot prune keeps this many newest snapshots of each stream.
pub const KEEP_LAST: usize = 2;

/// The tenant with index `index` (0 or 1).
pub fn tenant(index: u8) -> Result<Tenant> {
    Ok(match index {
        0 => Tenant::new("crash-a", "prod", None)?,
        _ => Tenant::new("crash-b", "prod", Some("blue".to_owned()))?,
    })
}

/// The run with index `index`.
pub fn run(index: usize) -> Result<RunId> {
    Ok(RunId::new(format!("run-{index}"))?)
}

/// Every stream of the workload: tenant index, run index, tenant, run.
pub fn streams() -> Result<Vec<(u8, usize, Tenant, RunId)>> {
    let mut streams = Vec::new();
    for t in 0..2u8 {
        for r in 0..RUNS {
            streams.push((t, r, tenant(t)?, run(r)?));
        }
    }
    Ok(streams)
}

/// The event a writer appends under `id`; a retry rebuilds it from the id.
pub fn event(tenant: &Tenant, run: &RunId, id: &str, now_ms: u64) -> Result<EventRecord> {
    Ok(
        EventRecord::new(tenant, run.clone(), EventId::new(id)?, "crash.step", now_ms)
            .with_payload(json!({ "id": id, "pad": "x".repeat(96) })),
    )
}

/// Wall-clock milliseconds: the harness stamps events, snapshots and
/// maintenance passes with real time, as a runtime would.
#[allow(clippy::disallowed_methods)]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
