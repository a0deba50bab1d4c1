//! Maintenance: compaction and snapshot prune, a bounded amount of work per
//! transaction.
//!
//! [`Writer::run_maintenance`] runs a task on the first streams of a list
//! in one transaction, until [`STEP_WORK`] is done, and, should that fail,
//! on the first stream alone, so that only the streams that fail are
//! reported (CONTRACT §25). [`compact_stream`] and
//! [`prune_stream`] are the work on one stream inside that transaction.

use std::{collections::HashSet, sync::Arc};

use runstore_core::{
    MaintenanceReport, Result, SnapshotRecord, StreamKey,
    raw::compaction::{COMPACTION_ID_PREFIX, CompactionPolicy, merge_marker},
    raw::snapshots::prune_selection,
};
use sqlx::{Connection, Row as _, SqliteConnection};

use super::{
    Maintenance, Writer, delay_commit,
    retry::{Fail, Replan, into_error, retrying},
    rows::{Commit, EventRow, InsertSql, insert_compacted_ids, insert_rows},
};
use crate::{
    error::SqliteError,
    schema::{self, bind_stream, to_sql_int},
};

/// How much one maintenance transaction does at most before it commits and
/// lets the writes queued meanwhile go first: events pruned (compaction) or
/// snapshots deleted (prune). A stream is never split: one with more is a
/// transaction of its own.
pub(crate) const STEP_WORK: usize = 256;

impl Writer {
    /// Runs `task` on the first of `streams`, in order, in one
    /// transaction, until [`STEP_WORK`] is done; answers the report and how
    /// many streams it took. Each stream is its own step (CONTRACT §25):
    /// should the transaction fail, the first stream runs again alone, so
    /// that only a stream that fails alone is reported, and the caller goes
    /// on after it. A failure of the store itself ([`Fail::is_store_wide`])
    /// ends the pass.
    pub(super) async fn run_maintenance(
        &mut self,
        task: &Maintenance,
        streams: &[StreamKey],
    ) -> Result<(MaintenanceReport, usize)> {
        let mut report = MaintenanceReport::default();
        let action = task.action();
        let fail = match retrying!(
            self,
            action,
            Replan::No,
            self.try_maintain(task, streams).await
        ) {
            Ok(counts) => {
                for (stream, count) in streams.iter().zip(&counts) {
                    report.record(stream, Ok(*count));
                }
                return Ok((report, counts.len()));
            }
            Err(fail) => fail,
        };
        if fail.is_store_wide() {
            return Err(into_error(fail));
        }
        let Some(first) = streams.first() else {
            return Ok((report, 0));
        };
        if streams.len() == 1 {
            report.record(first, Err(into_error(fail)));
            return Ok((report, 1));
        }
        match retrying!(
            self,
            action,
            Replan::No,
            self.try_maintain(task, std::slice::from_ref(first)).await
        ) {
            Ok(counts) => report.record(first, Ok(counts.iter().sum())),
            Err(fail) if fail.is_store_wide() => return Err(into_error(fail)),
            Err(fail) => report.record(first, Err(into_error(fail))),
        }
        Ok((report, 1))
    }

    /// Runs `task` on the first of `streams` in one transaction, until
    /// [`STEP_WORK`] is done; returns the count of each stream it took
    /// (events pruned, snapshots deleted). On failure the transaction is
    /// rolled back.
    async fn try_maintain(
        &mut self,
        task: &Maintenance,
        streams: &[StreamKey],
    ) -> std::result::Result<Vec<usize>, Fail> {
        let path = self.path.clone();
        let mut tx = self
            .conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|err| SqliteError::driver(&path, "begin a maintenance transaction", err))?;
        let mut counts = Vec::new();
        let mut work = 0;
        for stream in streams {
            if let Maintenance::Compact(_) = task {
                self.last_seqs.remove(stream);
            }
            let count = match *task {
                Maintenance::Compact(policy) => {
                    compact_stream(&mut tx, &self.insert_sql, &path, stream, &policy).await?
                }
                Maintenance::Prune {
                    retention_ms,
                    keep_last_per_run,
                    now_ms,
                } => {
                    prune_stream(&mut tx, &path, stream, |ordered| {
                        prune_selection(ordered, retention_ms, keep_last_per_run, now_ms)
                    })
                    .await?
                }
            };
            counts.push(count);
            work += count;
            if work >= STEP_WORK {
                break;
            }
        }
        // A compaction that pruned events wrote markers, which took feed
        // positions.
        let wrote_records = matches!(task, Maintenance::Compact(_)) && work > 0;
        if wrote_records {
            delay_commit(self.feed.commit_delay).await;
        }
        tx.commit()
            .await
            .map_err(|err| SqliteError::driver(&path, "commit a maintenance transaction", err))?;
        if wrote_records {
            self.records_committed();
        }
        Ok(counts)
    }
}

/// Compacts one stream inside the caller's transaction (CONTRACT §8-§11):
/// re-reads its snapshot floor, candidates and marker, merges the marker and
/// swaps it in. Returns how many events were pruned.
async fn compact_stream(
    conn: &mut SqliteConnection,
    insert_sql: &InsertSql,
    path: &Arc<str>,
    stream: &StreamKey,
    policy: &CompactionPolicy,
) -> std::result::Result<usize, Fail> {
    let (tenant, run_id) = (&stream.tenant, &stream.run_id);
    let run = run_id.as_str();
    let db = |action| move |err| SqliteError::driver_at(path, action, stream, err);
    let floor: Option<i64> = bind_stream(sqlx::query(schema::SNAPSHOT_FLOOR), tenant, run)
        .fetch_one(&mut *conn)
        .await
        .map_err(db("read the snapshot floor"))?
        .try_get(0)
        .map_err(db("read the snapshot floor"))?;
    let floor = floor
        .map(|seq| {
            schema::from_sql_int(seq, || {
                format!("sqlite store {path}: snapshot seq of {stream}")
            })
        })
        .transpose()?;
    // Events below the floor: at most seq floor - 1 (a stored floor is at
    // most i64::MAX, so this cannot overflow), any seq without a snapshot --
    // including i64::MAX itself.
    let highest = floor.map_or(i64::MAX, |floor| schema::saturating_sql_int(floor) - 1);
    let candidates = bind_stream(sqlx::query(schema::PRUNE_CANDIDATES), tenant, run)
        .bind(schema::saturating_sql_int(policy.cutoff_ms()))
        .bind(highest)
        .fetch_all(&mut *conn)
        .await
        .map_err(db("read compaction candidates"))?;
    let mut pruned = Vec::with_capacity(candidates.len());
    for row in &candidates {
        let record = schema::parse_event_row(row, path, (tenant, run_id))?;
        if policy.prunes(&record, floor) {
            pruned.push(record);
        }
    }
    if pruned.is_empty() {
        return Ok(0);
    }
    let old_marker = bind_stream(sqlx::query(schema::MARKER), tenant, run)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db("read the compaction marker"))?
        .map(|row| schema::parse_event_row(&row, path, (tenant, run_id)))
        .transpose()?;
    // The ids in the marker namespace the stream's ordinary events hold,
    // live or compacted: the new marker must not take one of them.
    let held = bind_stream(sqlx::query(schema::HELD_MARKER_IDS), tenant, run)
        .bind(COMPACTION_ID_PREFIX)
        .bind(schema::prefix_end(COMPACTION_ID_PREFIX))
        .fetch_all(&mut *conn)
        .await
        .map_err(db("read the ids in the marker namespace"))?
        .iter()
        .map(|row| row.try_get::<String, _>(0))
        .collect::<std::result::Result<HashSet<String>, _>>()
        .map_err(db("read the ids in the marker namespace"))?;
    let marker = merge_marker(
        tenant,
        run_id,
        old_marker.as_ref(),
        &pruned,
        policy.now_ms(),
        |id| Ok(held.contains(id.as_str())),
    )?;
    let doomed = pruned
        .iter()
        .chain(old_marker.as_ref())
        .map(|record| to_sql_int(record.seq, "seq"))
        .collect::<Result<Vec<_>>>()?;
    bind_stream(sqlx::query(schema::DELETE_SEQS), tenant, run)
        .bind(schema::json_int_array(doomed))
        .execute(&mut *conn)
        .await
        .map_err(db("delete compacted events"))?;
    let marker_row = EventRow::new(tenant, run_id, marker)?;
    insert_rows(
        conn,
        insert_sql,
        path,
        "write the compaction marker",
        vec![marker_row],
        Commit::Separately,
    )
    .await?;
    insert_compacted_ids(
        conn,
        path,
        stream,
        pruned.iter().map(|record| (&record.event_id, record.seq)),
    )
    .await?;
    Ok(pruned.len())
}

/// Deletes the snapshots of one stream that `select` picks from them in
/// snapshot order, inside the caller's transaction (CONTRACT §14). Returns
/// how many were deleted.
async fn prune_stream(
    conn: &mut SqliteConnection,
    path: &Arc<str>,
    stream: &StreamKey,
    select: impl FnOnce(&[SnapshotRecord]) -> Vec<usize>,
) -> std::result::Result<usize, Fail> {
    let (tenant, run) = (&stream.tenant, stream.run_id.as_str());
    let db = |action| move |err| SqliteError::driver_at(path, action, stream, err);
    let rows = bind_stream(sqlx::query(schema::LIST_SNAPSHOTS), tenant, run)
        .fetch_all(&mut *conn)
        .await
        .map_err(db("list snapshots"))?;
    let mut ordered = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: &str = row.try_get(0).map_err(db("list snapshots"))?;
        let text: &str = row.try_get(1).map_err(db("list snapshots"))?;
        ordered.push(schema::parse_snapshot(
            text,
            path,
            (tenant, &stream.run_id),
            id,
        )?);
    }
    ordered.sort_by(runstore_core::raw::snapshots::snapshot_order);
    let doomed = select(&ordered);
    for &index in &doomed {
        let id = ordered[index].snapshot_id.as_str();
        bind_stream(sqlx::query(schema::DELETE_SNAPSHOT), tenant, run)
            .bind(id)
            .execute(&mut *conn)
            .await
            .map_err(|err| {
                SqliteError::driver_at(
                    path,
                    "delete a snapshot",
                    format_args!("{stream}, snapshot {id:?}"),
                    err,
                )
            })?;
    }
    Ok(doomed.len())
}
