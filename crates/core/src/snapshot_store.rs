//! The snapshot store an implementor provides, and the ordering rules every
//! backend shares.

use std::{fmt::Debug, sync::Arc};

use async_trait::async_trait;

use crate::{MaintenanceReport, Result, RunId, SnapshotId, SnapshotRecord, StreamKey, Tenant};

/// Snapshots keyed by `(tenant, run_id, snapshot_id)` (CONTRACT §12-§15).
///
/// Conveniences such as `latest` live in
/// [`SnapshotStoreExt`](crate::SnapshotStoreExt).
#[async_trait]
pub trait SnapshotStore: Send + Sync + Debug + 'static {
    /// Stores `snapshot` under `tenant`, replacing one with the same key
    /// (CONTRACT §12). The tenant's ids are written into its scope.
    ///
    /// # Errors
    /// `InvalidInput` when the snapshot breaks a limit
    /// ([`Limits::check_snapshot`](crate::validate::Limits::check_snapshot));
    /// `Io`, `Backend`.
    ///
    /// # Cancel safety
    /// A dropped future leaves either the old or the new snapshot.
    async fn put(&self, tenant: &Tenant, snapshot: &SnapshotRecord) -> Result<()>;

    /// The snapshot with this key, or `None` (CONTRACT §13). Legacy records
    /// are hydrated (CONTRACT §15).
    ///
    /// # Errors
    /// `Corrupt` for an unreadable record; `Io`, `Backend`.
    async fn get(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        snapshot_id: &SnapshotId,
    ) -> Result<Option<SnapshotRecord>>;

    /// The stream's snapshots in [`snapshot_order`](crate::raw::snapshots::snapshot_order); a `limit` (other than
    /// `None` or 0) keeps the newest `limit` (CONTRACT §13).
    ///
    /// # Errors
    /// `Corrupt` for an unreadable record; `Io`, `Backend`.
    async fn list(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        limit: Option<usize>,
    ) -> Result<Vec<SnapshotRecord>>;

    /// Store-wide: deletes snapshots created before `now_ms - retention_ms`,
    /// always keeping the newest `keep_last_per_run` of each stream
    /// (CONTRACT §14). `retention_ms == 0` deletes nothing. See
    /// [`prune_selection`](crate::raw::snapshots::prune_selection).
    ///
    /// Each stream is processed on its own (CONTRACT §25): the report counts
    /// the snapshots deleted and names every stream that failed, with its
    /// error, after all other streams were pruned.
    ///
    /// # Errors
    /// `InvalidInput` when `now_ms` is above
    /// [`MAX_TIMESTAMP_MS`](crate::validate::MAX_TIMESTAMP_MS); `Io`,
    /// `Backend` when the pass as a whole cannot run.
    async fn prune(
        &self,
        retention_ms: u64,
        keep_last_per_run: usize,
        now_ms: u64,
    ) -> Result<MaintenanceReport>;

    /// Store-wide: every stream that has at least one snapshot, ascending.
    ///
    /// # Errors
    /// `Io`, `Backend`.
    async fn snapshot_streams(&self) -> Result<Vec<StreamKey>>;

    /// Deletes every snapshot of `tenant`'s `run_id` from storage (CONTRACT
    /// §27); answers how many. A `put` that races the deletion may be
    /// stored after it.
    ///
    /// # Errors
    /// `Io`, `Backend`.
    async fn delete_snapshots(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize>;

    /// Deletes every snapshot of `tenant` (CONTRACT §28), each run on its own
    /// (CONTRACT §25): the report counts the snapshots deleted and names
    /// every run that failed.
    ///
    /// The trait provides it over `snapshot_streams` and
    /// [`delete_snapshots`](Self::delete_snapshots).
    ///
    /// # Errors
    /// `Io`, `Backend` when the streams cannot be listed.
    async fn delete_tenant_snapshots(&self, tenant: &Tenant) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport::default();
        for stream in self.snapshot_streams().await? {
            if stream.tenant != *tenant {
                continue;
            }
            let step = self.delete_snapshots(tenant, &stream.run_id).await;
            report.record(&stream, step);
        }
        Ok(report)
    }
}

macro_rules! forward_snapshot_store {
    ($ty:ty) => {
        #[async_trait]
        impl<T: SnapshotStore + ?Sized> SnapshotStore for $ty {
            async fn put(&self, tenant: &Tenant, snapshot: &SnapshotRecord) -> Result<()> {
                (**self).put(tenant, snapshot).await
            }
            async fn get(
                &self,
                tenant: &Tenant,
                run_id: &RunId,
                snapshot_id: &SnapshotId,
            ) -> Result<Option<SnapshotRecord>> {
                (**self).get(tenant, run_id, snapshot_id).await
            }
            async fn list(
                &self,
                tenant: &Tenant,
                run_id: &RunId,
                limit: Option<usize>,
            ) -> Result<Vec<SnapshotRecord>> {
                (**self).list(tenant, run_id, limit).await
            }
            async fn prune(
                &self,
                retention_ms: u64,
                keep_last_per_run: usize,
                now_ms: u64,
            ) -> Result<MaintenanceReport> {
                (**self)
                    .prune(retention_ms, keep_last_per_run, now_ms)
                    .await
            }
            async fn snapshot_streams(&self) -> Result<Vec<StreamKey>> {
                (**self).snapshot_streams().await
            }
            async fn delete_snapshots(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
                (**self).delete_snapshots(tenant, run_id).await
            }
            async fn delete_tenant_snapshots(&self, tenant: &Tenant) -> Result<MaintenanceReport> {
                (**self).delete_tenant_snapshots(tenant).await
            }
        }
    };
}

forward_snapshot_store!(Arc<T>);
forward_snapshot_store!(Box<T>);
