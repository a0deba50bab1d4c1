//! A stream's state as a write transaction sees it, and planning against it.
//!
//! [`stream_state`] reads a stream's last seq and the seqs of the ids a
//! write names, in one query inside the transaction;
//! [`StreamState::plan`] plans one append request against that view
//! ([`plan_append`]) and adds what it writes, so that the next request of a
//! group sees it. The general path and import read the state from the
//! database; the guarded path starts from the last seq the writer
//! remembers.

use std::{collections::HashMap, sync::Arc};

use runstore_core::{AppendOutcome, Result, RunId, Tenant, raw::append::plan_append};
use sqlx::{Row as _, SqliteConnection};

use super::{AppendJob, retry::Fail, rows::EventRow};
use crate::{
    error::SqliteError,
    schema::{self, bind_stream},
};

/// One stream's state inside a group transaction.
pub(super) struct StreamState {
    pub(super) last_seq: u64,
    pub(super) was_empty: bool,
    /// Seqs of the ids the group's requests name that the stream holds
    /// (live or compacted), plus the ids the group has added.
    pub(super) known: HashMap<String, u64>,
}

impl StreamState {
    /// Plans `job` against this view ([`plan_append`]) and, if it plans,
    /// adds the rows it writes to the view, so that the group's next
    /// request sees them.
    pub(super) fn plan<'a>(
        &mut self,
        job: &'a AppendJob,
    ) -> Result<(Vec<AppendOutcome>, Vec<EventRow<'a>>)> {
        let plan = plan_append(
            &job.tenant,
            &job.run_id,
            self.last_seq,
            &job.events,
            job.expected_last_seq,
            |id| Ok(self.known.get(id.as_str()).copied()),
        )?;
        let rows = plan
            .new_records
            .into_iter()
            .map(|record| EventRow::new(&job.tenant, &job.run_id, record))
            .collect::<Result<Vec<_>>>()?;
        for row in &rows {
            let seq = u64::try_from(row.seq).expect("assigned seqs are positive");
            self.known.insert(row.event_id.clone(), seq);
            self.last_seq = seq;
        }
        Ok((plan.outcomes, rows))
    }
}

/// Reads a stream's last seq and the seqs of `ids` it holds, with `sql`:
/// [`schema::STREAM_STATE`], possibly preceded by `BEGIN IMMEDIATE`.
pub(super) async fn stream_state(
    conn: &mut SqliteConnection,
    path: &Arc<str>,
    sql: &str,
    tenant: &Tenant,
    run_id: &RunId,
    ids: Vec<&str>,
) -> std::result::Result<StreamState, Fail> {
    let db = |err| {
        SqliteError::driver_at(
            path,
            "read the stream's state",
            format_args!("{tenant}:{run_id}"),
            err,
        )
    };
    let rows = bind_stream(sqlx::query(sql), tenant, run_id.as_str())
        .bind(schema::json_array(ids))
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    let location = || format!("sqlite store {path}: seqs of {tenant}:{run_id}");
    let mut state = StreamState {
        last_seq: 0,
        was_empty: true,
        known: HashMap::new(),
    };
    for row in &rows {
        let kind: i64 = row.try_get(0).map_err(db)?;
        let seq = schema::from_sql_int(row.try_get(2).map_err(db)?, location)?;
        if kind == 0 {
            state.last_seq = seq;
            state.was_empty = false;
        } else {
            let id: String = row.try_get(1).map_err(db)?;
            // A live id wins over a compacted one (rows of kind 1 come
            // first).
            state.known.entry(id).or_insert(seq);
        }
    }
    Ok(state)
}
