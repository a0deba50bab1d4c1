//! Conveniences over the core traits, with blanket impls.
//!
//! Do not implement these traits yourself: they are defined for every
//! [`EventLog`] and [`SnapshotStore`].

use async_trait::async_trait;

use crate::{
    AppendOutcome, EventLog, EventRecord, Result, RunId, SnapshotRecord, SnapshotStore, Tenant,
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
