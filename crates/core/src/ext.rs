//! Conveniences over the core traits, with blanket impls.
//!
//! Do not implement these traits yourself: they are defined for every
//! [`EventLog`] and [`SnapshotStore`].

use std::collections::VecDeque;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt as _};

use crate::{
    AppendOutcome, Error, EventLog, EventRecord, FeedPosition, FeedRecord, FollowOptions,
    MaintenanceReport, Result, RunId, SnapshotRecord, SnapshotStore, Storage, Tenant,
};

/// Conveniences for every [`EventLog`].
#[async_trait]
pub trait EventLogExt: EventLog {
    /// Appends one event to its run (CONTRACT §1, §2): a batch of one.
    ///
    /// # Errors
    /// As [`EventLog::append_batch`].
    async fn append(&self, tenant: &Tenant, event: &EventRecord) -> Result<AppendOutcome> {
        self.append_expecting(tenant, event, None).await
    }

    /// Appends one event if the stream's last seq is `expected_last_seq`
    /// (CONTRACT §5).
    ///
    /// # Errors
    /// As [`EventLog::append_batch`].
    async fn append_expecting(
        &self,
        tenant: &Tenant,
        event: &EventRecord,
        expected_last_seq: Option<u64>,
    ) -> Result<AppendOutcome> {
        let outcomes = self
            .append_batch(
                tenant,
                &event.run_id,
                std::slice::from_ref(event),
                expected_last_seq,
            )
            .await?;
        Ok(outcomes
            .into_iter()
            .next()
            .expect("append_batch answers one outcome per event"))
    }

    /// The stream's last seq, 0 when empty.
    ///
    /// # Errors
    /// As [`EventLog::next_seq`].
    async fn last_seq(&self, tenant: &Tenant, run_id: &RunId) -> Result<u64> {
        Ok(self.next_seq(tenant, run_id).await? - 1)
    }

    /// Follows `tenant`'s feed from after `after` (CONTRACT §29): yields
    /// every record as it becomes visible, in feed order, and never ends on
    /// its own.
    ///
    /// It reads [`read_feed`](EventLog::read_feed) in batches of
    /// `options.batch`; when the feed has nothing new it waits for the
    /// handle's [`feed_signal`](EventLog::feed_signal) (a commit through the
    /// same handle, or a notification the backend listens for) or
    /// `options.poll_interval`, whichever comes first. A failed read is
    /// yielded as an error and the next poll reads again from the last
    /// record yielded; `Unsupported` ends the stream after it is yielded.
    /// To resume after a restart, store the position of the last record
    /// handled and follow from it.
    fn follow_feed<'a>(
        &'a self,
        tenant: &Tenant,
        after: FeedPosition,
        options: FollowOptions,
    ) -> BoxStream<'a, Result<FeedRecord>> {
        let follow = Follow {
            log: self,
            tenant: tenant.clone(),
            after,
            options,
            buffer: VecDeque::new(),
            wake: self.feed_signal().map(|signal| signal.subscribe()),
            ended: false,
        };
        stream::unfold(follow, Follow::next).boxed()
    }
}

/// The state of one [`EventLogExt::follow_feed`] stream.
struct Follow<'a, L: ?Sized> {
    log: &'a L,
    tenant: Tenant,
    after: FeedPosition,
    options: FollowOptions,
    buffer: VecDeque<FeedRecord>,
    wake: Option<tokio::sync::watch::Receiver<u64>>,
    ended: bool,
}

impl<L: EventLog + ?Sized> Follow<'_, L> {
    async fn next(mut self) -> Option<(Result<FeedRecord>, Self)> {
        if self.ended {
            return None;
        }
        loop {
            if let Some(record) = self.buffer.pop_front() {
                self.after = record.position;
                return Some((Ok(record), self));
            }
            // Marks every raise so far as seen before reading: a commit
            // after this point wakes the wait below.
            if let Some(wake) = &mut self.wake {
                wake.borrow_and_update();
            }
            match self
                .log
                .read_feed(&self.tenant, self.after, self.options.batch.max(1))
                .await
            {
                Ok(records) if !records.is_empty() => self.buffer.extend(records),
                Ok(_) => self.wait().await,
                Err(error) => {
                    self.ended = matches!(error, Error::Unsupported { .. });
                    return Some((Err(error), self));
                }
            }
        }
    }

    async fn wait(&mut self) {
        let pause = tokio::time::sleep(self.options.poll_interval);
        tokio::pin!(pause);
        if let Some(wake) = &mut self.wake {
            tokio::select! {
                changed = wake.changed() => match changed {
                    Ok(()) => return,
                    // The handle is gone; poll from now on.
                    Err(_) => self.wake = None,
                },
                () = &mut pause => return,
            }
        }
        pause.await;
    }
}

impl<T: EventLog + ?Sized> EventLogExt for T {}

/// Conveniences for every [`SnapshotStore`].
#[async_trait]
pub trait SnapshotStoreExt: SnapshotStore {
    /// The stream's newest snapshot (CONTRACT §13).
    ///
    /// # Errors
    /// As [`SnapshotStore::list`].
    async fn latest(&self, tenant: &Tenant, run_id: &RunId) -> Result<Option<SnapshotRecord>> {
        Ok(self.list(tenant, run_id, Some(1)).await?.pop())
    }
}

impl<T: SnapshotStore + ?Sized> SnapshotStoreExt for T {}

/// What [`StorageExt::erase_run`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErasedRun {
    /// Events deleted (markers and the ids a marker remembered not
    /// counted), as [`EventLog::delete_run`] answers.
    pub events: usize,
    /// Snapshots deleted.
    pub snapshots: usize,
}

/// What [`StorageExt::erase_tenant`] deleted, and the runs that failed.
#[derive(Debug, Default)]
#[must_use]
pub struct ErasedTenant {
    /// [`SnapshotStore::delete_tenant_snapshots`]'s report.
    pub snapshots: MaintenanceReport,
    /// [`EventLog::delete_tenant`]'s report.
    pub events: MaintenanceReport,
}

impl ErasedTenant {
    /// Whether every run was deleted.
    pub fn is_clean(&self) -> bool {
        self.snapshots.is_clean() && self.events.is_clean()
    }
}

/// Erasure of a run's or a tenant's events and snapshots together
/// (CONTRACT §27, §28), for every store that implements both traits.
#[async_trait]
pub trait StorageExt: Storage {
    /// Deletes the run's snapshots, then its events
    /// ([`SnapshotStore::delete_snapshots`], [`EventLog::delete_run`]).
    /// Snapshots go first: a failure between the two leaves a run with
    /// events and no snapshot, as a `prune` could, never snapshots of a
    /// deleted run. Calling it again finishes an interrupted deletion.
    ///
    /// # Errors
    /// As the two calls; the events are left as they were when the
    /// snapshots could not be deleted.
    async fn erase_run(&self, tenant: &Tenant, run_id: &RunId) -> Result<ErasedRun> {
        let snapshots = self.delete_snapshots(tenant, run_id).await?;
        let events = self.delete_run(tenant, run_id).await?;
        Ok(ErasedRun { events, snapshots })
    }

    /// Deletes every snapshot of the tenant, then every run
    /// ([`SnapshotStore::delete_tenant_snapshots`],
    /// [`EventLog::delete_tenant`]), each run on its own (CONTRACT §25).
    ///
    /// # Errors
    /// As the two calls.
    async fn erase_tenant(&self, tenant: &Tenant) -> Result<ErasedTenant> {
        let snapshots = self.delete_tenant_snapshots(tenant).await?;
        let events = self.delete_tenant(tenant).await?;
        Ok(ErasedTenant { snapshots, events })
    }
}

impl<T: Storage + ?Sized> StorageExt for T {}
