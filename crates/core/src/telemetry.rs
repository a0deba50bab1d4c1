//! Tracing spans and metrics for any store, in one place.
//!
//! [`Instrumented`] wraps a store and gives every call of both traits a
//! `tracing` span and the call metrics below; `runstore::open` puts it
//! around every store it opens, and a store built directly is wrapped with
//! [`Instrumented::new`]. A backend reports each group commit with
//! [`group_committed`] from its commit step. Spans carry the backend, the
//! tenant, the run and counts, never payloads or snapshot bodies. Metrics go
//! through the `metrics` facade: nothing is recorded until the program
//! installs a recorder (an exporter), and the libraries depend on none.
//!
//! # Metrics
//!
//! Every metric has the label `backend` (`jsonl`, `sqlite`, `redb`, `s3`,
//! `postgres`, `memory`, or the name given to [`Instrumented::new`]).
//!
//! | name | kind | more labels | what |
//! |---|---|---|---|
//! | `runstore_calls_total` | counter | `op`, `outcome` | calls of each trait method; `outcome` is `ok` or the error's kind ([`Error::kind`]) |
//! | `runstore_call_seconds` | histogram | `op` | how long each call took, failed ones included |
//! | `runstore_appended_events_total` | counter | | events stored by `append_batch` (`inserted`) |
//! | `runstore_duplicate_events_total` | counter | | events `append_batch` answered as already stored |
//! | `runstore_conflicts_total` | counter | | `append_batch` calls refused with `Conflict` |
//! | `runstore_batch_events` | histogram | | events per `append_batch` call |
//! | `runstore_group_requests` | histogram | | requests per group commit |
//! | `runstore_group_events` | histogram | | events (or records) written per group commit |
//! | `runstore_commit_seconds` | histogram | | one group commit, its sync included |
//! | `runstore_compacted_events_total` | counter | | events pruned by `compact` |
//! | `runstore_pruned_snapshots_total` | counter | | snapshots deleted by `prune` |
//! | `runstore_deleted_events_total` | counter | | events deleted by `delete_run` and `delete_tenant` |
//! | `runstore_deleted_snapshots_total` | counter | | snapshots deleted by `delete_snapshots` and `delete_tenant_snapshots` |
//! | `runstore_maintenance_failed_streams_total` | counter | `op` | streams a `compact`, `prune`, `delete_tenant` or `delete_tenant_snapshots` pass reported as failed |
//!
//! `op` is the trait method's name (`append_batch`, `read`, `next_seq`,
//! `seq_of`, `list_runs`, `compact`, `streams`, `import_stream`,
//! `delete_run`, `delete_tenant`, `put`, `get`, `list`, `prune`,
//! `snapshot_streams`, `delete_snapshots`, `delete_tenant_snapshots`).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::Instrument as _;

use crate::{
    AppendOutcome, Error, EventId, EventLog, EventRecord, FeedPosition, FeedRecord, FeedSignal,
    MaintenanceReport, ReadQuery, Result, RunId, SnapshotId, SnapshotRecord, SnapshotStore,
    StreamKey, Tenant,
};

/// A store whose every call is traced and counted (see the module doc).
#[derive(Debug, Clone)]
pub struct Instrumented<S> {
    inner: S,
    backend: &'static str,
}

impl<S> Instrumented<S> {
    /// Wraps `inner`, naming its backend `backend` in spans and metrics.
    pub fn new(backend: &'static str, inner: S) -> Self {
        Self { inner, backend }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The backend name of its spans and metrics.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Counts and times one call of `op`.
    fn finish<T>(&self, op: &'static str, began: Instant, result: &Result<T>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(err) => err.kind(),
        };
        metrics::counter!("runstore_calls_total", "backend" => self.backend, "op" => op, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("runstore_call_seconds", "backend" => self.backend, "op" => op)
            .record(began.elapsed());
    }

    /// Counts what a maintenance pass did.
    fn maintained(&self, op: &'static str, report: &Result<MaintenanceReport>, done: &'static str) {
        if let Ok(report) = report {
            metrics::counter!(done, "backend" => self.backend).increment(report.removed as u64);
            metrics::counter!("runstore_maintenance_failed_streams_total", "backend" => self.backend, "op" => op)
                .increment(report.failed.len() as u64);
        }
    }
}

/// Reports one group commit of `backend`: `requests` requests writing
/// `events` events (or records), committed (and synced) in `took`. Called
/// by a backend from its commit step, once per commit that wrote anything;
/// also records a `runstore.group_commit` span event with the sizes.
pub fn group_committed(backend: &'static str, requests: usize, events: usize, took: Duration) {
    tracing::debug!(
        target: "runstore::group_commit",
        backend,
        requests,
        events,
        micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        "group commit"
    );
    metrics::histogram!("runstore_group_requests", "backend" => backend).record(requests as f64);
    metrics::histogram!("runstore_group_events", "backend" => backend).record(events as f64);
    metrics::histogram!("runstore_commit_seconds", "backend" => backend).record(took);
}

/// A span of one call of `op`, with the backend and the stream, and any
/// further fields.
macro_rules! stream_span {
    ($self:ident, $op:literal, $tenant:expr, $run:expr $(, $($fields:tt)*)?) => {
        tracing::info_span!(
            concat!("runstore.", $op),
            backend = $self.backend,
            tenant = %$tenant,
            run = %$run
            $(, $($fields)*)?
        )
    };
}

/// A span of one store-wide call of `op`, and any further fields.
macro_rules! store_span {
    ($self:ident, $op:literal $(, $($fields:tt)*)?) => {
        tracing::info_span!(concat!("runstore.", $op), backend = $self.backend $(, $($fields)*)?)
    };
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<S: EventLog> EventLog for Instrumented<S> {
    async fn append_batch(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        events: &[EventRecord],
        expected_last_seq: Option<u64>,
    ) -> Result<Vec<AppendOutcome>> {
        let span = stream_span!(self, "append_batch", tenant, run_id, events = events.len());
        let began = Instant::now();
        let result = self
            .inner
            .append_batch(tenant, run_id, events, expected_last_seq)
            .instrument(span)
            .await;
        self.finish("append_batch", began, &result);
        metrics::histogram!("runstore_batch_events", "backend" => self.backend)
            .record(events.len() as f64);
        match &result {
            Ok(outcomes) => {
                let inserted = outcomes.iter().filter(|o| o.inserted).count() as u64;
                metrics::counter!("runstore_appended_events_total", "backend" => self.backend)
                    .increment(inserted);
                metrics::counter!("runstore_duplicate_events_total", "backend" => self.backend)
                    .increment(outcomes.len() as u64 - inserted);
            }
            Err(Error::Conflict { .. }) => {
                metrics::counter!("runstore_conflicts_total", "backend" => self.backend)
                    .increment(1);
            }
            Err(_) => {}
        }
        result
    }

    async fn read(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        query: ReadQuery,
    ) -> Result<Vec<EventRecord>> {
        let span = stream_span!(self, "read", tenant, run_id);
        let began = Instant::now();
        let result = self
            .inner
            .read(tenant, run_id, query)
            .instrument(span)
            .await;
        self.finish("read", began, &result);
        result
    }

    async fn next_seq(&self, tenant: &Tenant, run_id: &RunId) -> Result<u64> {
        let span = stream_span!(self, "next_seq", tenant, run_id);
        let began = Instant::now();
        let result = self.inner.next_seq(tenant, run_id).instrument(span).await;
        self.finish("next_seq", began, &result);
        result
    }

    async fn seq_of(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        event_id: &EventId,
    ) -> Result<Option<u64>> {
        let span = stream_span!(self, "seq_of", tenant, run_id);
        let began = Instant::now();
        let result = self
            .inner
            .seq_of(tenant, run_id, event_id)
            .instrument(span)
            .await;
        self.finish("seq_of", began, &result);
        result
    }

    async fn list_runs(&self, tenant: &Tenant) -> Result<Vec<RunId>> {
        let span = store_span!(self, "list_runs", tenant = %tenant);
        let began = Instant::now();
        let result = self.inner.list_runs(tenant).instrument(span).await;
        self.finish("list_runs", began, &result);
        result
    }

    async fn compact(&self, retention_ms: u64, now_ms: u64) -> Result<MaintenanceReport> {
        let span = store_span!(self, "compact", retention_ms);
        let began = Instant::now();
        let result = self
            .inner
            .compact(retention_ms, now_ms)
            .instrument(span)
            .await;
        self.finish("compact", began, &result);
        self.maintained("compact", &result, "runstore_compacted_events_total");
        result
    }

    async fn streams(&self) -> Result<Vec<StreamKey>> {
        let span = store_span!(self, "streams");
        let began = Instant::now();
        let result = self.inner.streams().instrument(span).await;
        self.finish("streams", began, &result);
        result
    }

    async fn import_stream(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        records: &[EventRecord],
    ) -> Result<usize> {
        let span = stream_span!(
            self,
            "import_stream",
            tenant,
            run_id,
            records = records.len()
        );
        let began = Instant::now();
        let result = self
            .inner
            .import_stream(tenant, run_id, records)
            .instrument(span)
            .await;
        self.finish("import_stream", began, &result);
        result
    }

    async fn delete_run(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
        let span = stream_span!(self, "delete_run", tenant, run_id);
        let began = Instant::now();
        let result = self.inner.delete_run(tenant, run_id).instrument(span).await;
        self.finish("delete_run", began, &result);
        if let Ok(deleted) = &result {
            metrics::counter!("runstore_deleted_events_total", "backend" => self.backend)
                .increment(*deleted as u64);
        }
        result
    }

    async fn delete_tenant(&self, tenant: &Tenant) -> Result<MaintenanceReport> {
        let span = store_span!(self, "delete_tenant", tenant = %tenant);
        let began = Instant::now();
        let result = self.inner.delete_tenant(tenant).instrument(span).await;
        self.finish("delete_tenant", began, &result);
        self.maintained("delete_tenant", &result, "runstore_deleted_events_total");
        result
    }

    async fn read_feed(
        &self,
        tenant: &Tenant,
        after: FeedPosition,
        limit: usize,
    ) -> Result<Vec<FeedRecord>> {
        let span = store_span!(self, "read_feed", tenant = %tenant, after = %after, limit);
        let began = Instant::now();
        let result = self
            .inner
            .read_feed(tenant, after, limit)
            .instrument(span)
            .await;
        self.finish("read_feed", began, &result);
        result
    }

    fn feed_signal(&self) -> Option<FeedSignal> {
        self.inner.feed_signal()
    }
}

#[async_trait]
impl<S: SnapshotStore> SnapshotStore for Instrumented<S> {
    async fn put(&self, tenant: &Tenant, snapshot: &SnapshotRecord) -> Result<()> {
        let span = stream_span!(self, "put", tenant, snapshot.run_id, seq = snapshot.seq);
        let began = Instant::now();
        let result = self.inner.put(tenant, snapshot).instrument(span).await;
        self.finish("put", began, &result);
        result
    }

    async fn get(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        snapshot_id: &SnapshotId,
    ) -> Result<Option<SnapshotRecord>> {
        let span = stream_span!(self, "get", tenant, run_id);
        let began = Instant::now();
        let result = self
            .inner
            .get(tenant, run_id, snapshot_id)
            .instrument(span)
            .await;
        self.finish("get", began, &result);
        result
    }

    async fn list(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        limit: Option<usize>,
    ) -> Result<Vec<SnapshotRecord>> {
        let span = stream_span!(self, "list", tenant, run_id);
        let began = Instant::now();
        let result = self
            .inner
            .list(tenant, run_id, limit)
            .instrument(span)
            .await;
        self.finish("list", began, &result);
        result
    }

    async fn prune(
        &self,
        retention_ms: u64,
        keep_last_per_run: usize,
        now_ms: u64,
    ) -> Result<MaintenanceReport> {
        let span = store_span!(self, "prune", retention_ms, keep_last_per_run);
        let began = Instant::now();
        let result = self
            .inner
            .prune(retention_ms, keep_last_per_run, now_ms)
            .instrument(span)
            .await;
        self.finish("prune", began, &result);
        self.maintained("prune", &result, "runstore_pruned_snapshots_total");
        result
    }

    async fn snapshot_streams(&self) -> Result<Vec<StreamKey>> {
        let span = store_span!(self, "snapshot_streams");
        let began = Instant::now();
        let result = self.inner.snapshot_streams().instrument(span).await;
        self.finish("snapshot_streams", began, &result);
        result
    }

    async fn delete_snapshots(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
        let span = stream_span!(self, "delete_snapshots", tenant, run_id);
        let began = Instant::now();
        let result = self
            .inner
            .delete_snapshots(tenant, run_id)
            .instrument(span)
            .await;
        self.finish("delete_snapshots", began, &result);
        if let Ok(deleted) = &result {
            metrics::counter!("runstore_deleted_snapshots_total", "backend" => self.backend)
                .increment(*deleted as u64);
        }
        result
    }

    async fn delete_tenant_snapshots(&self, tenant: &Tenant) -> Result<MaintenanceReport> {
        let span = store_span!(self, "delete_tenant_snapshots", tenant = %tenant);
        let began = Instant::now();
        let result = self
            .inner
            .delete_tenant_snapshots(tenant)
            .instrument(span)
            .await;
        self.finish("delete_tenant_snapshots", began, &result);
        self.maintained(
            "delete_tenant_snapshots",
            &result,
            "runstore_deleted_snapshots_total",
        );
        result
    }
}
