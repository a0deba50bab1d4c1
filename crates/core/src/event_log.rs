//! The event log an implementor provides.

use std::{fmt::Debug, sync::Arc};

use async_trait::async_trait;

use tokio::sync::watch;

use crate::{
    AppendOutcome, Error, EventId, EventRecord, FeedPosition, FeedRecord, MaintenanceReport,
    ReadQuery, Result, RunId, StreamKey, Tenant,
};

/// An append-only, per-stream sequenced, idempotent event log.
///
/// This trait holds only what a backend must implement; conveniences such as
/// appending one event live in [`EventLogExt`](crate::EventLogExt). Every
/// method is scoped to one tenant except the store-wide maintenance calls
/// ([`compact`](Self::compact), [`streams`](Self::streams),
/// [`import_stream`](Self::import_stream)), which are explicit, and
/// [`delete_tenant`](Self::delete_tenant), which spans one tenant's runs.
///
/// Implementations must be cheap to clone handles over shared state, usable
/// from many tasks at once, and keep no process-wide state (CONTRACT §20).
/// The shared conformance suite (`runstore-conformance`) is the executable
/// form of these duties.
#[async_trait]
pub trait EventLog: Send + Sync + Debug + 'static {
    /// Appends `events` to `tenant`'s `run_id` atomically (CONTRACT §1-§5).
    ///
    /// New events get consecutive seqs after the stream's last seq, in
    /// request order; events whose id the stream already holds (live or
    /// compacted) are not written and report their original seq; an id
    /// repeated within the request is stored once. Caller-set seqs are
    /// ignored and the tenant's ids are written into each event's scope.
    /// Returns one outcome per requested event, in request order.
    ///
    /// With `expected_last_seq`, fails with `Conflict` and writes nothing if
    /// the stream's last seq differs, unless every event is already stored.
    ///
    /// # Errors
    /// `InvalidInput` when an event names another run; `Conflict` as above;
    /// `Io`, `Backend`, `Poisoned` when storage fails.
    ///
    /// # Cancel safety
    /// Dropping the future may leave the batch either fully written or not
    /// written at all, never partly; retrying the same request is safe.
    async fn append_batch(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        events: &[EventRecord],
        expected_last_seq: Option<u64>,
    ) -> Result<Vec<AppendOutcome>>;

    /// Reads a window of `tenant`'s `run_id` in ascending seq (CONTRACT §6);
    /// compaction markers are records and appear.
    ///
    /// # Errors
    /// `Corrupt` when a stored record cannot be read; `Io`, `Backend`.
    ///
    /// # Cancel safety
    /// Reads change nothing; dropping the future is harmless.
    async fn read(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        query: ReadQuery,
    ) -> Result<Vec<EventRecord>>;

    /// The stream's last seq + 1 (markers count), or 1 (CONTRACT §7).
    ///
    /// # Errors
    /// `Io`, `Backend`.
    async fn next_seq(&self, tenant: &Tenant, run_id: &RunId) -> Result<u64>;

    /// The seq of `event_id` in the stream, live or compacted (CONTRACT §7).
    ///
    /// # Errors
    /// `Io`, `Backend`.
    async fn seq_of(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        event_id: &EventId,
    ) -> Result<Option<u64>>;

    /// The tenant's run ids, ascending (CONTRACT §7).
    ///
    /// # Errors
    /// `Io`, `Backend`.
    async fn list_runs(&self, tenant: &Tenant) -> Result<Vec<RunId>>;

    /// Store-wide compaction (CONTRACT §8-§11): prunes events older than
    /// `now_ms - retention_ms` below the seq of their stream's newest
    /// snapshot, leaving one merged marker per stream built by
    /// [`merge_marker`](crate::raw::compaction::merge_marker). `retention_ms == 0`
    /// does nothing.
    ///
    /// Each stream is processed on its own (CONTRACT §25): the report counts
    /// the events pruned (markers not counted) and names every stream that
    /// failed, with its error, after all other streams were compacted.
    ///
    /// # Errors
    /// `InvalidInput` when `now_ms` is above
    /// [`MAX_TIMESTAMP_MS`](crate::validate::MAX_TIMESTAMP_MS); `Io`,
    /// `Backend` when the pass as a whole cannot run (for example the list of
    /// streams cannot be read).
    ///
    /// # Cancel safety
    /// Each stream is compacted atomically: a dropped future leaves every
    /// stream either compacted or untouched.
    async fn compact(&self, retention_ms: u64, now_ms: u64) -> Result<MaintenanceReport>;

    /// Store-wide: every stream that holds at least one record, ascending.
    ///
    /// # Errors
    /// `Io`, `Backend`.
    async fn streams(&self) -> Result<Vec<StreamKey>>;

    /// Store-wide: writes an exported stream (for example every record
    /// [`read`](Self::read) returned from another store) with its seqs,
    /// markers and compacted ids unchanged. Records the stream already holds
    /// are checked, not written again, so importing twice is harmless.
    /// Returns how many records were written. Import guarantees what append
    /// guarantees (CONTRACT §23): see
    /// [`Limits::check_import`](crate::validate::Limits::check_import) and
    /// [`plan_import`](crate::raw::append::plan_import).
    ///
    /// # Errors
    /// `InvalidInput` when the records break a limit, are not one gapless
    /// ascending stream of this tenant and run, or disagree with what the
    /// stream holds; `Io`, `Backend`.
    async fn import_stream(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        records: &[EventRecord],
    ) -> Result<usize>;

    /// Deletes `tenant`'s `run_id` (CONTRACT §27): its events, its marker
    /// and the ids that marker remembers are removed from storage, and the
    /// stream keeps one record, its erasure marker
    /// ([`erasure_marker`](crate::raw::erasure::erasure_marker)) at its last
    /// seq. `list_runs` no longer lists the run, no read or `seq_of` finds
    /// any of its events, and an append continues after its last seq; an old
    /// event id appended again is new. The run's snapshots are deleted by
    /// [`SnapshotStore::delete_snapshots`](crate::SnapshotStore::delete_snapshots)
    /// ([`StorageExt::erase_run`](crate::StorageExt::erase_run) calls both).
    /// Answers how many events were deleted (markers and the ids a
    /// marker remembered not counted); a run that holds nothing, or was
    /// deleted and not appended to since, answers 0 and is left as it is.
    /// See [`raw::erasure`](crate::raw::erasure).
    ///
    /// # Errors
    /// `Io`, `Backend` when storage fails. The run is then either untouched
    /// or deleted (a backend that cleans up after its commit point, as S3
    /// does, may fail in the clean-up); calling again finishes the
    /// deletion.
    ///
    /// # Cancel safety
    /// The run is deleted atomically: a dropped future leaves it either
    /// deleted or untouched, its old records unread either way.
    async fn delete_run(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize>;

    /// Deletes every run of `tenant` as [`delete_run`](Self::delete_run)
    /// does (CONTRACT §28), each run on its own (CONTRACT §25): the report
    /// counts the events deleted and names every run that failed. Other
    /// tenants are untouched.
    ///
    /// The trait provides it over `list_runs` and `delete_run`; a backend
    /// overrides it when it can delete the whole tenant in one pass.
    ///
    /// # Errors
    /// `Io`, `Backend` when the tenant's runs cannot be listed.
    async fn delete_tenant(&self, tenant: &Tenant) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport::default();
        for run_id in self.list_runs(tenant).await? {
            let step = self.delete_run(tenant, &run_id).await;
            report.record(&StreamKey::new(tenant.clone(), run_id), step);
        }
        Ok(report)
    }

    /// Up to `limit` of `tenant`'s records after `after`, in feed order
    /// (CONTRACT §29): events and markers of all the tenant's runs, each with
    /// its [`FeedPosition`]. Fewer than `limit` (or none) means the reader
    /// has reached what is visible now; `limit == 0` answers none. Resume
    /// from the position of the last record handled.
    ///
    /// Lossless: once a record at position `p` has been returned, no record
    /// becomes visible later at a position `<= p`. See
    /// [`types::feed`](crate::types::feed) for how a backend assigns
    /// positions.
    ///
    /// The trait provides an answer of [`Error::Unsupported`]; every backend
    /// with the capability overrides it.
    ///
    /// # Errors
    /// `Unsupported` where the backend has no feed; `Corrupt`, `Io`,
    /// `Backend`.
    ///
    /// # Cancel safety
    /// Reads change nothing; dropping the future is harmless.
    async fn read_feed(
        &self,
        tenant: &Tenant,
        after: FeedPosition,
        limit: usize,
    ) -> Result<Vec<FeedRecord>> {
        let _ = (tenant, after, limit);
        Err(Error::Unsupported {
            operation: "read_feed",
            backend: "this store",
            reason: "it has no change feed",
        })
    }

    /// A signal this handle raises after each commit that may have added
    /// feed records, so that a follower sharing the handle wakes at once
    /// instead of at its next poll. `None` (the provided answer) when the
    /// handle raises none; followers then poll.
    fn feed_signal(&self) -> Option<FeedSignal> {
        None
    }
}

/// Wakes feed followers: a counter a store bumps after commits, watched by
/// [`EventLogExt::follow_feed`](crate::EventLogExt::follow_feed).
///
/// Cheap to clone (one shared sender); raising it never blocks and never
/// fails, with or without followers. A wake-up says only "read again": the
/// follower's read decides what is new.
#[derive(Debug, Clone)]
pub struct FeedSignal {
    sender: std::sync::Arc<watch::Sender<u64>>,
}

impl Default for FeedSignal {
    fn default() -> Self {
        Self::new()
    }
}

impl FeedSignal {
    /// A signal nobody watches yet.
    pub fn new() -> Self {
        Self {
            sender: std::sync::Arc::new(watch::channel(0).0),
        }
    }

    /// Wakes every follower waiting on this signal.
    pub fn raise(&self) {
        self.sender
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// A receiver whose `changed()` completes after the next
    /// [`raise`](Self::raise).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }
}

macro_rules! forward_event_log {
    ($ty:ty) => {
        #[async_trait]
        impl<T: EventLog + ?Sized> EventLog for $ty {
            async fn append_batch(
                &self,
                tenant: &Tenant,
                run_id: &RunId,
                events: &[EventRecord],
                expected_last_seq: Option<u64>,
            ) -> Result<Vec<AppendOutcome>> {
                (**self)
                    .append_batch(tenant, run_id, events, expected_last_seq)
                    .await
            }
            async fn read(
                &self,
                tenant: &Tenant,
                run_id: &RunId,
                query: ReadQuery,
            ) -> Result<Vec<EventRecord>> {
                (**self).read(tenant, run_id, query).await
            }
            async fn next_seq(&self, tenant: &Tenant, run_id: &RunId) -> Result<u64> {
                (**self).next_seq(tenant, run_id).await
            }
            async fn seq_of(
                &self,
                tenant: &Tenant,
                run_id: &RunId,
                event_id: &EventId,
            ) -> Result<Option<u64>> {
                (**self).seq_of(tenant, run_id, event_id).await
            }
            async fn list_runs(&self, tenant: &Tenant) -> Result<Vec<RunId>> {
                (**self).list_runs(tenant).await
            }
            async fn compact(&self, retention_ms: u64, now_ms: u64) -> Result<MaintenanceReport> {
                (**self).compact(retention_ms, now_ms).await
            }
            async fn streams(&self) -> Result<Vec<StreamKey>> {
                (**self).streams().await
            }
            async fn import_stream(
                &self,
                tenant: &Tenant,
                run_id: &RunId,
                records: &[EventRecord],
            ) -> Result<usize> {
                (**self).import_stream(tenant, run_id, records).await
            }
            async fn delete_run(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
                (**self).delete_run(tenant, run_id).await
            }
            async fn delete_tenant(&self, tenant: &Tenant) -> Result<MaintenanceReport> {
                (**self).delete_tenant(tenant).await
            }
            async fn read_feed(
                &self,
                tenant: &Tenant,
                after: FeedPosition,
                limit: usize,
            ) -> Result<Vec<FeedRecord>> {
                (**self).read_feed(tenant, after, limit).await
            }
            fn feed_signal(&self) -> Option<FeedSignal> {
                (**self).feed_signal()
            }
        }
    };
}

forward_event_log!(Arc<T>);
forward_event_log!(Box<T>);
