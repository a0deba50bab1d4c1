//! [`EventLog`] for [`JsonlStore`]: writes are queued for the writer
//! thread ([`crate::writer`]), reads are answered from the index, and the
//! log's bytes are read on a blocking task.
//!
//! Every write is checked against the store's limits before it is queued;
//! the writer plans, writes and syncs it, and compacts the log in its turn
//! ([`crate::compact`]), so nothing here changes the file itself.

use async_trait::async_trait;
use runstore_core::{
    AppendOutcome, Error, EventId, EventLog, EventRecord, MaintenanceReport, ReadQuery, Result,
    RunId, StreamKey, Tenant, raw::compaction::CompactionPolicy,
};

use crate::{
    JsonlStore,
    compact::{self, Prepared},
    index,
    writer::Command,
};

#[async_trait]
impl EventLog for JsonlStore {
    async fn append_batch(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        events: &[EventRecord],
        expected_last_seq: Option<u64>,
    ) -> Result<Vec<AppendOutcome>> {
        // CONTRACT §21: checked before anything is queued.
        self.inner.shared.limits.check_append(run_id, events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.request(|reply| Command::Append {
            tenant: tenant.clone(),
            run_id: run_id.clone(),
            events: events.to_vec(),
            expected_last_seq,
            reply,
        })
        .await
    }

    async fn read(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        query: ReadQuery,
    ) -> Result<Vec<EventRecord>> {
        let (tenant, run_id) = (tenant.clone(), run_id.clone());
        self.blocking(move |shared| shared.read(&tenant, &run_id, query))
            .await
    }

    async fn next_seq(&self, tenant: &Tenant, run_id: &RunId) -> Result<u64> {
        let state = self.inner.shared.read_state();
        let last = state
            .index
            .stream(tenant, run_id)
            .map_or(0, index::StreamIndex::last_seq);
        // Open refuses seqs above `MAX_SEQ` and writes never pass it, so
        // this cannot overflow; checked all the same.
        last.checked_add(1).ok_or_else(|| {
            Error::corrupt(
                state.log.path.display(),
                format!("stream {tenant}:{run_id} ends at seq {last}, which leaves no next seq"),
            )
        })
    }

    async fn seq_of(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        event_id: &EventId,
    ) -> Result<Option<u64>> {
        let (tenant, run_id, event_id) = (tenant.clone(), run_id.clone(), event_id.clone());
        self.blocking(move |shared| {
            let state = shared.read_state();
            match state.index.stream(&tenant, &run_id) {
                Some(stream) => stream.seq_of(event_id.as_str(), &state.index.hasher, &state.log),
                None => Ok(None),
            }
        })
        .await
    }

    async fn list_runs(&self, tenant: &Tenant) -> Result<Vec<RunId>> {
        Ok(self.inner.shared.read_state().index.runs(tenant))
    }

    async fn compact(&self, retention_ms: u64, now_ms: u64) -> Result<MaintenanceReport> {
        let Some(policy) = CompactionPolicy::new(retention_ms, now_ms)? else {
            return Ok(MaintenanceReport::default());
        };
        // One pass at a time; the first step runs beside the writer, the
        // second on it (crate::compact).
        let pass = self.inner.compaction.clone().lock_owned().await;
        match self
            .blocking(move |shared| compact::prepare(shared, &policy, pass))
            .await?
        {
            Prepared::Done(report) => Ok(report),
            Prepared::Rewritten(rewritten) => {
                self.request(|reply| Command::FinishCompaction { rewritten, reply })
                    .await
            }
        }
    }

    async fn streams(&self) -> Result<Vec<StreamKey>> {
        Ok(self.inner.shared.read_state().index.keys())
    }

    async fn import_stream(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        records: &[EventRecord],
    ) -> Result<usize> {
        // CONTRACT §23: checked before anything is queued.
        self.inner.shared.limits.check_import(run_id, records)?;
        if records.is_empty() {
            return Ok(0);
        }
        self.request(|reply| Command::Import {
            tenant: tenant.clone(),
            run_id: run_id.clone(),
            records: records.to_vec(),
            reply,
        })
        .await
    }
}
