//! Snapshot ordering and prune selection: the one definition of which
//! snapshot is newest and which a prune deletes (CONTRACT §13, §14).
//!
//! A backend lists a stream's snapshots, sorts them with [`snapshot_order`]
//! (or reads them in an index kept in that order), answers `list` with
//! [`keep_newest`] and `latest` with the last one, and deletes in `prune`
//! exactly the indexes [`prune_selection`] returns for each stream, so every
//! backend keeps and deletes the same snapshots.

use std::cmp::Ordering;

use crate::SnapshotRecord;

/// The order of a stream's snapshots, oldest first: by `seq`, then
/// `created_at_ms`, then `snapshot_id` (byte order). The newest is last.
pub fn snapshot_order(a: &SnapshotRecord, b: &SnapshotRecord) -> Ordering {
    (a.seq, a.created_at_ms, a.snapshot_id.as_str()).cmp(&(
        b.seq,
        b.created_at_ms,
        b.snapshot_id.as_str(),
    ))
}

/// Keeps the newest `limit` of snapshots already in [`snapshot_order`].
pub fn keep_newest<T>(mut ordered: Vec<T>, limit: Option<usize>) -> Vec<T> {
    if let Some(limit) = limit.filter(|limit| *limit > 0)
        && ordered.len() > limit
    {
        ordered.drain(..ordered.len() - limit);
    }
    ordered
}

/// Which of one stream's snapshots (in [`snapshot_order`]) a prune deletes:
/// returns their indexes.
pub fn prune_selection(
    ordered: &[SnapshotRecord],
    retention_ms: u64,
    keep_last_per_run: usize,
    now_ms: u64,
) -> Vec<usize> {
    if retention_ms == 0 {
        return Vec::new();
    }
    let cutoff = now_ms.saturating_sub(retention_ms);
    let protected_from = ordered.len().saturating_sub(keep_last_per_run);
    (0..protected_from)
        .filter(|index| ordered[*index].created_at_ms < cutoff)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RunId, RunStatus, SnapshotId, Tenant};

    #[test]
    fn prune_keeps_a_snapshot_created_at_the_cutoff() {
        let snapshots: Vec<SnapshotRecord> = [399, 400, 401]
            .iter()
            .map(|at| {
                SnapshotRecord::new(
                    &Tenant::local(),
                    RunId::new("r").unwrap(),
                    SnapshotId::new(format!("s{at}")).unwrap(),
                    1,
                    *at,
                    RunStatus::Running,
                )
            })
            .collect();
        // Retention 600 at 1,000: the cutoff is 400, and only what was
        // created before it goes.
        assert_eq!(prune_selection(&snapshots, 600, 0, 1_000), vec![0]);
    }
}
