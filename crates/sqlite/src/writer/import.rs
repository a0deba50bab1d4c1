//! `import_stream`: an exported stream, checked with [`plan_import`] and
//! written in one transaction.
//!
//! Import reads the stream's state ([`stream_state`]), inserts the records
//! the stream lacks (taking the tenant's next feed positions in seq order)
//! and the ids their compaction markers stand for, and records a new
//! stream. The leader retries it as it does a group
//! ([`Writer::run_exclusive`]).

use runstore_core::{
    Error, EventRecord, Result, RunId, StreamKey, Tenant, raw::append::plan_import,
    raw::compaction::compacted_ids,
};
use sqlx::Connection;

use super::{
    Writer, delay_commit,
    retry::Fail,
    rows::{Commit, EventRow, insert_compacted_ids, insert_rows},
    state::stream_state,
};
use crate::{
    error::SqliteError,
    schema::{self, bind_stream},
};

impl Writer {
    /// Imports an exported stream in one transaction.
    pub(super) async fn try_import(
        &mut self,
        tenant: &Tenant,
        run_id: &RunId,
        records: &[EventRecord],
    ) -> std::result::Result<usize, Fail> {
        let path = self.path.clone();
        let p = &path;
        let stream = StreamKey::new(tenant.clone(), run_id.clone());
        let at = |action| {
            let stream = &stream;
            move |err| SqliteError::driver_at(p, action, stream, err)
        };
        self.last_seqs.remove(&stream);
        let mut tx = self
            .conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(at("begin an import transaction"))?;
        let ids = records
            .iter()
            .map(|record| record.event_id.as_str())
            .collect();
        let state = stream_state(&mut tx, &path, schema::STREAM_STATE, tenant, run_id, ids).await?;
        let missing = plan_import(tenant, run_id, state.last_seq, records, |id| {
            Ok(state.known.get(id.as_str()).copied())
        })?;
        if missing.is_empty() {
            return Ok(0);
        }
        let rows = missing
            .iter()
            .map(|record| EventRow::new(tenant, run_id, record.clone()))
            .collect::<Result<Vec<_>>>()?;
        let inserted = insert_rows(
            &mut tx,
            &self.insert_sql,
            &path,
            "insert imported events",
            rows,
            Commit::Separately,
        )
        .await;
        match inserted {
            Err(err) if err.is_unique_violation() => {
                return Err(Fail::Core(Error::invalid(format!(
                    "import of {tenant}:{run_id}: an imported event id is already stored at \
                     another seq; the stream differs from the source"
                ))));
            }
            other => other?,
        }
        for record in missing {
            let ids = compacted_ids(record)?;
            if !ids.is_empty() {
                insert_compacted_ids(
                    &mut tx,
                    &path,
                    &stream,
                    ids.iter().map(|id| (&id.event_id, id.seq)),
                )
                .await?;
            }
        }
        if state.was_empty {
            bind_stream(sqlx::query(schema::INSERT_STREAM), tenant, run_id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(at("record a new stream"))?;
        }
        delay_commit(self.feed.commit_delay).await;
        tx.commit().await.map_err(at("commit an import"))?;
        self.records_committed();
        Ok(missing.len())
    }
}
