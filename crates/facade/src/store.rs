//! [`Store`]: the handle [`open`](crate::open) returns.

use std::sync::Arc;

use async_trait::async_trait;
use runstore_core::{
    AppendOutcome, EventId, EventLog, EventRecord, FeedPosition, FeedRecord, FeedSignal,
    MaintenanceReport, ReadQuery, Result, RunId, SnapshotId, SnapshotRecord, SnapshotStore,
    StreamKey, Tenant, telemetry::Instrumented,
};

use crate::Backend;

/// A store of any backend: an [`EventLog`] and a [`SnapshotStore`] at once.
///
/// Cheap to clone (an `Arc` inside), `Send + Sync`, and usable from many
/// tasks (CONTRACT §20). Every trait method forwards to the backend's store
/// through [`Instrumented`], so each call has a `tracing` span and counts in
/// the metrics of [`runstore_core::telemetry`] (docs/operations.md); the
/// conveniences of [`EventLogExt`](runstore_core::EventLogExt) and
/// [`SnapshotStoreExt`](runstore_core::SnapshotStoreExt) apply too.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    inner: Arc<dyn runstore_core::Storage>,
}

impl Store {
    /// Wraps a backend's store, traced and counted under the backend's
    /// name ([`Instrumented`]).
    pub fn new(backend: Backend, store: impl runstore_core::Storage) -> Self {
        Self {
            backend,
            inner: Arc::new(Instrumented::new(backend.name(), store)),
        }
    }

    /// Wraps a store already shared behind an `Arc`, traced and counted
    /// under the backend's name ([`Instrumented`]).
    pub fn from_arc(backend: Backend, store: Arc<dyn runstore_core::Storage>) -> Self {
        Self {
            backend,
            inner: Arc::new(Instrumented::new(backend.name(), store)),
        }
    }

    /// Which backend holds the data.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The backend's store as a trait object.
    pub fn as_dyn(&self) -> &Arc<dyn runstore_core::Storage> {
        &self.inner
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl EventLog for Store {
    async fn append_batch(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        events: &[EventRecord],
        expected_last_seq: Option<u64>,
    ) -> Result<Vec<AppendOutcome>> {
        EventLog::append_batch(&*self.inner, tenant, run_id, events, expected_last_seq).await
    }

    async fn read(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        query: ReadQuery,
    ) -> Result<Vec<EventRecord>> {
        EventLog::read(&*self.inner, tenant, run_id, query).await
    }

    async fn next_seq(&self, tenant: &Tenant, run_id: &RunId) -> Result<u64> {
        EventLog::next_seq(&*self.inner, tenant, run_id).await
    }

    async fn seq_of(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        event_id: &EventId,
    ) -> Result<Option<u64>> {
        EventLog::seq_of(&*self.inner, tenant, run_id, event_id).await
    }

    async fn list_runs(&self, tenant: &Tenant) -> Result<Vec<RunId>> {
        EventLog::list_runs(&*self.inner, tenant).await
    }

    async fn compact(&self, retention_ms: u64, now_ms: u64) -> Result<MaintenanceReport> {
        EventLog::compact(&*self.inner, retention_ms, now_ms).await
    }

    async fn streams(&self) -> Result<Vec<StreamKey>> {
        EventLog::streams(&*self.inner).await
    }

    async fn import_stream(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        records: &[EventRecord],
    ) -> Result<usize> {
        EventLog::import_stream(&*self.inner, tenant, run_id, records).await
    }

    async fn delete_run(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
        EventLog::delete_run(&*self.inner, tenant, run_id).await
    }

    async fn delete_tenant(&self, tenant: &Tenant) -> Result<MaintenanceReport> {
        EventLog::delete_tenant(&*self.inner, tenant).await
    }

    async fn read_feed(
        &self,
        tenant: &Tenant,
        after: FeedPosition,
        limit: usize,
    ) -> Result<Vec<FeedRecord>> {
        EventLog::read_feed(&*self.inner, tenant, after, limit).await
    }

    fn feed_signal(&self) -> Option<FeedSignal> {
        EventLog::feed_signal(&*self.inner)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl SnapshotStore for Store {
    async fn put(&self, tenant: &Tenant, snapshot: &SnapshotRecord) -> Result<()> {
        SnapshotStore::put(&*self.inner, tenant, snapshot).await
    }

    async fn get(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        snapshot_id: &SnapshotId,
    ) -> Result<Option<SnapshotRecord>> {
        SnapshotStore::get(&*self.inner, tenant, run_id, snapshot_id).await
    }

    async fn list(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        limit: Option<usize>,
    ) -> Result<Vec<SnapshotRecord>> {
        SnapshotStore::list(&*self.inner, tenant, run_id, limit).await
    }

    async fn prune(
        &self,
        retention_ms: u64,
        keep_last_per_run: usize,
        now_ms: u64,
    ) -> Result<MaintenanceReport> {
        SnapshotStore::prune(&*self.inner, retention_ms, keep_last_per_run, now_ms).await
    }

    async fn snapshot_streams(&self) -> Result<Vec<StreamKey>> {
        SnapshotStore::snapshot_streams(&*self.inner).await
    }

    async fn delete_snapshots(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
        SnapshotStore::delete_snapshots(&*self.inner, tenant, run_id).await
    }

    async fn delete_tenant_snapshots(&self, tenant: &Tenant) -> Result<MaintenanceReport> {
        SnapshotStore::delete_tenant_snapshots(&*self.inner, tenant).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_send_sync_clone_and_both_traits() {
        // CONTRACT §20, checked at compile time.
        fn assert_handle<T: Send + Sync + Clone + std::fmt::Debug + runstore_core::Storage>() {}
        assert_handle::<Store>();
        fn assert_send<T: Send>(_: &T) {}
        let store = Store::new(Backend::Memory, runstore_core::MemoryStore::new());
        let tenant = Tenant::local();
        let run = RunId::new("r").expect("a valid id");
        assert_send(&store.read(&tenant, &run, ReadQuery::all()));
        assert_send(&store.list(&tenant, &run, None));
        assert_eq!(store.backend(), Backend::Memory);
    }
}
