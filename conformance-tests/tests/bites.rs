//! The suite bites: deliberately wrong stores must fail the cases of the
//! clauses they break. Each wrong store is the model with one fault.

use std::{
    future::Future,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use async_trait::async_trait;
use runstore_conformance::{
    Capabilities, Harness, compaction, erasure, events, feed, idempotency, persistence, property,
    snapshots, tenancy,
};
use runstore_core::{
    AppendOutcome, EventId, EventLog, EventRecord, FeedPosition, FeedRecord, FeedSignal,
    MaintenanceReport, MemoryStore, ReadQuery, Result, RunId, SnapshotId, SnapshotRecord,
    SnapshotStore, StreamKey, Tenant,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Stores every append as new (CONTRACT §2).
    IgnoreDuplicates,
    /// Reads come back newest first (CONTRACT §6).
    ReverseReads,
    /// Every tenant shares one partition ("Words").
    SharedTenant,
    /// `expected_last_seq` is ignored (CONTRACT §5).
    IgnoreExpectation,
    /// A snapshot list limit keeps the oldest (CONTRACT §13).
    OldestSnapshots,
    /// Compaction prunes below the snapshot floor too (CONTRACT §8).
    CompactIgnoresSnapshots,
    /// Claims persistence, forgets everything on reopen (CONTRACT §16).
    ForgetOnReopen,
    /// Deleting a run removes its stream whole, so its seqs start again at
    /// 1 (CONTRACT §27).
    DeleteRestartsSeqs,
    /// Deleting a run's snapshots deletes none (CONTRACT §27).
    DeleteKeepsSnapshots,
    /// Every other feed read leaves out its first record, as a feed does
    /// that reads past a commit still in flight (CONTRACT §29).
    FeedSkipsLateCommits,
}

#[derive(Debug)]
struct Wrong {
    inner: Mutex<MemoryStore>,
    fault: Fault,
    renamed: AtomicU64,
    feed_reads: AtomicU64,
}

impl Wrong {
    fn inner(&self) -> MemoryStore {
        self.inner.lock().expect("not poisoned").clone()
    }

    /// The store without `dropped`'s records: every other stream and every
    /// snapshot copied into a new model.
    async fn without_stream(&self, dropped: &StreamKey) -> Result<()> {
        let inner = self.inner();
        let rebuilt = MemoryStore::new();
        for stream in inner.streams().await? {
            if stream == *dropped {
                continue;
            }
            let records = inner
                .read(&stream.tenant, &stream.run_id, ReadQuery::all())
                .await?;
            rebuilt
                .import_stream(&stream.tenant, &stream.run_id, &records)
                .await?;
        }
        for stream in inner.snapshot_streams().await? {
            for snapshot in inner.list(&stream.tenant, &stream.run_id, None).await? {
                rebuilt.put(&stream.tenant, &snapshot).await?;
            }
        }
        *self.inner.lock().expect("not poisoned") = rebuilt;
        Ok(())
    }

    fn tenant(&self, tenant: &Tenant) -> Tenant {
        if self.fault == Fault::SharedTenant {
            Tenant::local()
        } else {
            tenant.clone()
        }
    }
}

#[async_trait]
impl EventLog for Wrong {
    async fn append_batch(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        events: &[EventRecord],
        expected_last_seq: Option<u64>,
    ) -> Result<Vec<AppendOutcome>> {
        let mut events = events.to_vec();
        if self.fault == Fault::IgnoreDuplicates {
            for event in &mut events {
                let n = self.renamed.fetch_add(1, Ordering::Relaxed);
                event.event_id = EventId::new(format!("{}#{n}", event.event_id))?;
            }
        }
        let expected = if self.fault == Fault::IgnoreExpectation {
            None
        } else {
            expected_last_seq
        };
        self.inner()
            .append_batch(&self.tenant(tenant), run_id, &events, expected)
            .await
    }

    async fn read(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        query: ReadQuery,
    ) -> Result<Vec<EventRecord>> {
        let mut records = self
            .inner()
            .read(&self.tenant(tenant), run_id, query)
            .await?;
        if self.fault == Fault::ReverseReads {
            records.reverse();
        }
        Ok(records)
    }

    async fn next_seq(&self, tenant: &Tenant, run_id: &RunId) -> Result<u64> {
        self.inner().next_seq(&self.tenant(tenant), run_id).await
    }

    async fn read_feed(
        &self,
        tenant: &Tenant,
        after: FeedPosition,
        limit: usize,
    ) -> Result<Vec<FeedRecord>> {
        let mut feed = self
            .inner()
            .read_feed(&self.tenant(tenant), after, limit)
            .await?;
        if self.fault == Fault::FeedSkipsLateCommits
            && feed.len() > 1
            && self.feed_reads.fetch_add(1, Ordering::Relaxed) % 2 == 1
        {
            feed.remove(0);
        }
        Ok(feed)
    }

    fn feed_signal(&self) -> Option<FeedSignal> {
        None
    }

    async fn seq_of(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        event_id: &EventId,
    ) -> Result<Option<u64>> {
        self.inner()
            .seq_of(&self.tenant(tenant), run_id, event_id)
            .await
    }

    async fn list_runs(&self, tenant: &Tenant) -> Result<Vec<RunId>> {
        self.inner().list_runs(&self.tenant(tenant)).await
    }

    async fn compact(&self, retention_ms: u64, now_ms: u64) -> Result<MaintenanceReport> {
        let inner = self.inner();
        if self.fault != Fault::CompactIgnoresSnapshots {
            return inner.compact(retention_ms, now_ms).await;
        }
        // Compact a copy without snapshots, then give it the snapshots back.
        let bare = MemoryStore::new();
        for stream in inner.streams().await? {
            let records = inner
                .read(&stream.tenant, &stream.run_id, ReadQuery::all())
                .await?;
            bare.import_stream(&stream.tenant, &stream.run_id, &records)
                .await?;
        }
        let pruned = bare.compact(retention_ms, now_ms).await?;
        for stream in inner.snapshot_streams().await? {
            for snapshot in inner.list(&stream.tenant, &stream.run_id, None).await? {
                bare.put(&stream.tenant, &snapshot).await?;
            }
        }
        *self.inner.lock().expect("not poisoned") = bare;
        Ok(pruned)
    }

    async fn streams(&self) -> Result<Vec<StreamKey>> {
        self.inner().streams().await
    }

    async fn import_stream(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        records: &[EventRecord],
    ) -> Result<usize> {
        self.inner()
            .import_stream(&self.tenant(tenant), run_id, records)
            .await
    }

    async fn delete_run(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
        let tenant = self.tenant(tenant);
        let deleted = self.inner().delete_run(&tenant, run_id).await?;
        if self.fault == Fault::DeleteRestartsSeqs {
            self.without_stream(&StreamKey::new(tenant, run_id.clone()))
                .await?;
        }
        Ok(deleted)
    }
}

#[async_trait]
impl SnapshotStore for Wrong {
    async fn put(&self, tenant: &Tenant, snapshot: &SnapshotRecord) -> Result<()> {
        self.inner().put(&self.tenant(tenant), snapshot).await
    }

    async fn get(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        snapshot_id: &SnapshotId,
    ) -> Result<Option<SnapshotRecord>> {
        self.inner()
            .get(&self.tenant(tenant), run_id, snapshot_id)
            .await
    }

    async fn list(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        limit: Option<usize>,
    ) -> Result<Vec<SnapshotRecord>> {
        if self.fault == Fault::OldestSnapshots {
            let mut all = self
                .inner()
                .list(&self.tenant(tenant), run_id, None)
                .await?;
            if let Some(limit) = limit.filter(|limit| *limit > 0) {
                all.truncate(limit);
            }
            return Ok(all);
        }
        self.inner().list(&self.tenant(tenant), run_id, limit).await
    }

    async fn prune(
        &self,
        retention_ms: u64,
        keep_last_per_run: usize,
        now_ms: u64,
    ) -> Result<MaintenanceReport> {
        self.inner()
            .prune(retention_ms, keep_last_per_run, now_ms)
            .await
    }

    async fn snapshot_streams(&self) -> Result<Vec<StreamKey>> {
        self.inner().snapshot_streams().await
    }

    async fn delete_snapshots(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
        if self.fault == Fault::DeleteKeepsSnapshots {
            return Ok(0);
        }
        self.inner()
            .delete_snapshots(&self.tenant(tenant), run_id)
            .await
    }
}

fn harness(fault: Fault) -> Harness {
    let capabilities = Capabilities {
        persistent: fault == Fault::ForgetOnReopen,
        // The faults are cheap to run and some (compaction ignoring the
        // snapshot floor) need a rare sequence of steps; with random seeds
        // 64 cases sometimes missed one.
        proptest_cases: Some(1_024),
        ..Capabilities::in_memory()
    };
    Harness::new("wrong", capabilities, move |_location| async move {
        Ok(Wrong {
            inner: Mutex::new(MemoryStore::new()),
            fault,
            renamed: AtomicU64::new(0),
            feed_reads: AtomicU64::new(0),
        })
    })
}

async fn must_fail<F, Fut>(fault: Fault, case: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let joined = tokio::spawn(case(harness(fault))).await;
    assert!(
        joined.as_ref().is_err_and(|err| err.is_panic()),
        "a store with fault {fault:?} passed a case that checks that very clause"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignoring_duplicates_fails_idempotency() {
    must_fail(Fault::IgnoreDuplicates, |h| async move {
        idempotency::duplicate_event_id_returns_original_seq(&h).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reversed_reads_fail_read_windows() {
    must_fail(Fault::ReverseReads, |h| async move {
        events::read_windows_follow_bounds_limit_and_tail(&h).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_tenant_fails_tenancy() {
    must_fail(Fault::SharedTenant, |h| async move {
        tenancy::tenants_never_see_each_other(&h).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignoring_expectations_fails_optimistic_concurrency() {
    must_fail(Fault::IgnoreExpectation, |h| async move {
        idempotency::expected_last_seq_conflicts_unless_all_stored(&h).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeping_the_oldest_snapshots_fails_list() {
    must_fail(Fault::OldestSnapshots, |h| async move {
        snapshots::snapshot_list_orders_by_seq_and_keeps_newest(&h).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacting_under_snapshots_fails_the_floor() {
    must_fail(Fault::CompactIgnoresSnapshots, |h| async move {
        compaction::compaction_keeps_the_tail_from_the_newest_snapshot(&h).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_on_reopen_fails_persistence() {
    must_fail(Fault::ForgetOnReopen, |h| async move {
        persistence::everything_survives_reopen(&h).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_seqs_after_a_deletion_fails_erasure() {
    must_fail(Fault::DeleteRestartsSeqs, |h| async move {
        erasure::delete_run_erases_events_ids_and_snapshots(&h).await;
    })
    .await;
    must_fail(Fault::DeleteRestartsSeqs, |h| async move {
        erasure::delete_tenant_erases_every_run_of_that_tenant_only(&h).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeping_snapshots_of_a_deleted_run_fails_erasure() {
    must_fail(Fault::DeleteKeepsSnapshots, |h| async move {
        erasure::delete_run_erases_events_ids_and_snapshots(&h).await;
    })
    .await;
    must_fail(Fault::DeleteKeepsSnapshots, |h| async move {
        erasure::delete_tenant_erases_every_run_of_that_tenant_only(&h).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_reads_past_a_commit_in_flight_fails_the_lossless_rule() {
    must_fail(Fault::FeedSkipsLateCommits, |h| async move {
        feed::feed_never_skips_a_late_commit(&h).await;
    })
    .await;
    must_fail(Fault::FeedSkipsLateCommits, |h| async move {
        feed::feed_orders_every_record_and_resumes_anywhere(&h).await;
    })
    .await;
    must_fail(Fault::FeedSkipsLateCommits, |h| async move {
        feed::feed_stays_lossless_while_maintenance_races_writers(&h).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_property_test_catches_faults() {
    for fault in [
        Fault::IgnoreDuplicates,
        Fault::ReverseReads,
        Fault::SharedTenant,
        Fault::OldestSnapshots,
        Fault::CompactIgnoresSnapshots,
        Fault::FeedSkipsLateCommits,
    ] {
        must_fail(fault, |h| async move {
            property::store_matches_the_model(&h).await;
        })
        .await;
    }
}
