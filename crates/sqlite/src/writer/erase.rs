//! Erasure (CONTRACT §27): `delete_run` and `delete_snapshots` of one run,
//! each a write transaction of its own on the writer.
//!
//! Running on the writer orders a deletion with the group commits of the
//! run's appends, in this process; `BEGIN IMMEDIATE` (a deletion of a run)
//! or the write lock of a single statement (a deletion of snapshots) orders
//! it with the writers of other processes. An append acknowledged before the
//! deletion is deleted with the run; one acknowledged after it is planned
//! against the erasure marker's seq and lands above it.

use sqlx::{Connection, Row as _};

use runstore_core::{RunId, StreamKey, Tenant, raw::erasure::erasure_marker};

use super::{
    Deletion, Writer, delay_commit,
    retry::Fail,
    rows::{Commit, EventRow, insert_rows},
};
use crate::{
    error::SqliteError,
    schema::{self, bind_stream},
};

impl Writer {
    /// Runs one attempt of `target` on `tenant`'s `run_id`; answers how
    /// many events (snapshots) it deleted.
    pub(super) async fn try_delete(
        &mut self,
        target: Deletion,
        tenant: &Tenant,
        run_id: &RunId,
    ) -> std::result::Result<usize, Fail> {
        match target {
            Deletion::Run => self.try_delete_run(tenant, run_id).await,
            Deletion::Snapshots => self.try_delete_snapshots(tenant, run_id).await,
        }
    }

    /// Deletes a run in one `BEGIN IMMEDIATE` transaction, as
    /// [`raw::erasure`](runstore_core::raw::erasure) describes: reads the
    /// stream's last seq and whether it holds an ordinary event or
    /// remembers a compacted id ([`schema::ERASURE_STATE`]); a stream that
    /// is empty or already erased is left as it is (answers 0, writes
    /// nothing). Otherwise deletes its `events` rows and its
    /// `compacted_ids` rows, writes its erasure marker at the last seq and
    /// commits; answers how many ordinary events were deleted. The
    /// `streams` row stays: the stream still holds the marker.
    async fn try_delete_run(
        &mut self,
        tenant: &Tenant,
        run_id: &RunId,
    ) -> std::result::Result<usize, Fail> {
        let path = self.path.clone();
        let stream = StreamKey::new(tenant.clone(), run_id.clone());
        let (p, key) = (&path, &stream);
        let db = |action| move |err| SqliteError::driver_at(p, action, key, err);
        let run = run_id.as_str();
        // The stream's last seq does not change, but nothing this writer
        // remembered of it is worth keeping (as after compaction).
        self.last_seqs.remove(&stream);
        let mut tx = self
            .conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db("begin a deletion transaction"))?;
        let state = bind_stream(sqlx::query(schema::ERASURE_STATE), tenant, run)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("read the stream's state"))?;
        let last: Option<i64> = state.try_get(0).map_err(db("read the stream's state"))?;
        let holds_events: bool = state.try_get(1).map_err(db("read the stream's state"))?;
        let remembers_ids: bool = state.try_get(2).map_err(db("read the stream's state"))?;
        let last = match last {
            Some(last) if holds_events || remembers_ids => last,
            // Empty, or already erased and not appended to since.
            _ => {
                tx.rollback()
                    .await
                    .map_err(db("end a deletion that had nothing to delete"))?;
                return Ok(0);
            }
        };
        let last_seq = schema::from_sql_int(last, || {
            format!("sqlite store {path}: last seq of {stream}")
        })?;
        let deleted = bind_stream(sqlx::query(schema::DELETE_ORDINARY_EVENTS), tenant, run)
            .execute(&mut *tx)
            .await
            .map_err(db("delete the run's events"))?
            .rows_affected();
        bind_stream(sqlx::query(schema::DELETE_STREAM_EVENTS), tenant, run)
            .execute(&mut *tx)
            .await
            .map_err(db("delete the run's compaction marker"))?;
        bind_stream(sqlx::query(schema::DELETE_COMPACTED_IDS), tenant, run)
            .execute(&mut *tx)
            .await
            .map_err(db("delete the run's compacted ids"))?;
        let marker = EventRow::new(tenant, run_id, erasure_marker(tenant, run_id, last_seq))?;
        insert_rows(
            &mut tx,
            &self.insert_sql,
            &path,
            "write the erasure marker",
            vec![marker],
            Commit::Separately,
        )
        .await?;
        delay_commit(self.feed.commit_delay).await;
        tx.commit().await.map_err(db("commit a deletion"))?;
        self.records_committed();
        Ok(count(deleted))
    }

    /// Deletes every snapshot of a run in one statement (its own write
    /// transaction); answers how many.
    async fn try_delete_snapshots(
        &mut self,
        tenant: &Tenant,
        run_id: &RunId,
    ) -> std::result::Result<usize, Fail> {
        let deleted = bind_stream(
            sqlx::query(schema::DELETE_SNAPSHOTS),
            tenant,
            run_id.as_str(),
        )
        .execute(&mut self.conn)
        .await
        .map_err(|err| {
            SqliteError::driver_at(
                &self.path,
                "delete the run's snapshots",
                format_args!("{tenant}:{run_id}"),
                err,
            )
        })?
        .rows_affected();
        Ok(count(deleted))
    }
}

/// Rows affected as a count: a table holds fewer rows than `usize::MAX`
/// on every platform that can open it.
fn count(rows: u64) -> usize {
    usize::try_from(rows).unwrap_or(usize::MAX)
}
