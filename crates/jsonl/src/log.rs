//! [`EventLog`] for [`JsonlStore`]: writes are queued for the writer
//! thread ([`crate::writer`]), reads are answered from the index, and the
//! log's bytes are read on a blocking task.
//!
//! Every write is checked against the store's limits before it is queued;
//! the writer plans, writes and syncs it, and compacts the log in its turn
//! ([`crate::compact`]), so nothing here changes the file itself.

use async_trait::async_trait;
use runstore_core::{
    AppendOutcome, Error, EventId, EventLog, EventRecord, FeedPosition, FeedRecord, FeedSignal,
    MaintenanceReport, ReadQuery, Result, RunId, StreamKey, Tenant,
    raw::compaction::CompactionPolicy,
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
            .blocking(move |shared| compact::prepare(shared, Some(&policy), pass))
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

    async fn read_feed(
        &self,
        tenant: &Tenant,
        after: FeedPosition,
        limit: usize,
    ) -> Result<Vec<FeedRecord>> {
        let tenant = tenant.clone();
        self.blocking(move |shared| crate::feed::read(shared, &tenant, after, limit))
            .await
    }

    fn feed_signal(&self) -> Option<FeedSignal> {
        Some(self.inner.shared.feed.clone())
    }

    async fn delete_run(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
        let counts = self
            .erase(vec![StreamKey::new(tenant.clone(), run_id.clone())])
            .await?;
        Ok(counts.into_iter().sum())
    }

    /// One erasure step and one rewrite of the log for the whole tenant,
    /// rather than one rewrite per run.
    async fn delete_tenant(&self, tenant: &Tenant) -> Result<MaintenanceReport> {
        let runs = self.inner.shared.read_state().index.runs(tenant);
        let streams: Vec<StreamKey> = runs
            .into_iter()
            .map(|run_id| StreamKey::new(tenant.clone(), run_id))
            .collect();
        let counts = self.erase(streams.clone()).await?;
        let mut report = MaintenanceReport::default();
        for (stream, count) in streams.iter().zip(counts) {
            report.record(stream, Ok(count));
        }
        Ok(report)
    }
}

impl JsonlStore {
    /// Deletes `streams` (CONTRACT §27): their erasure markers are appended
    /// and synced on the writer, which forgets everything else of them;
    /// then the log is rewritten without their old lines, before the call
    /// returns. Answers each stream's deleted events.
    ///
    /// Holds the compaction lock throughout, so no compaction pass copies a
    /// line while its run is deleted. A call that stops after the first
    /// step (a dropped future, a killed process) leaves the old lines in
    /// the file, unread (the markers hide them at the next open too), until
    /// the next `compact` or deletion rewrites the log; either does so even
    /// when it has nothing else to do.
    async fn erase(&self, streams: Vec<StreamKey>) -> Result<Vec<usize>> {
        let pass = self.inner.compaction.clone().lock_owned().await;
        let counts = self
            .request(|reply| Command::Erase { streams, reply })
            .await?;
        match self
            .blocking(move |shared| compact::prepare(shared, None, pass))
            .await?
        {
            Prepared::Done(_) => {}
            Prepared::Rewritten(rewritten) => {
                let report = self
                    .request(|reply| Command::FinishCompaction { rewritten, reply })
                    .await?;
                debug_assert!(
                    report.is_clean(),
                    "a rewrite without a policy plans no stream"
                );
            }
        }
        Ok(counts)
    }
}
