//! Event rows: records turned into rows, bound and inserted.
//!
//! [`EventRow`] holds one record's columns, owned so that binding moves them
//! into the statement; [`insert_rows`] writes rows with the multi-row
//! statements of [`InsertSql`], a chunk of one tenant's rows at a time, so
//! that the rows take their tenant's next feed positions in the order given
//! (CONTRACT §29), and names the failing rows in its error ([`RowSpan`]); a
//! compaction marker's record goes to `marker_records` instead of its row.
//! [`insert_compacted_ids`] remembers the
//! ids a compaction marker stands for, and [`stream_from_row`] decodes a
//! stream key. Every write path uses these inside its own transaction.

use std::sync::Arc;

use runstore_core::{Error, EventId, EventRecord, Result, RunId, StreamKey, Tenant};
use sqlx::{Row as _, SqliteConnection, sqlite::SqliteRow};

use super::retry::Fail;
use crate::{
    error::SqliteError,
    schema::{self, INSERT_CHUNK, SqlQuery, bind_stream, to_json, to_sql_int},
};

/// An event row to insert. Its strings are owned, so binding moves them
/// into the statement's arguments instead of copying them.
pub(super) struct EventRow<'a> {
    tenant: &'a Tenant,
    run_id: &'a RunId,
    pub(super) seq: i64,
    pub(super) event_id: String,
    event_type: String,
    occurred_at_ms: i64,
    is_marker: bool,
    record: String,
}

impl<'a> EventRow<'a> {
    pub(super) fn new(tenant: &'a Tenant, run_id: &'a RunId, record: EventRecord) -> Result<Self> {
        let json = to_json(&record, || {
            format!("serialize event {:?}", record.event_id.as_str())
        })?;
        Ok(Self {
            tenant,
            run_id,
            seq: to_sql_int(record.seq, "seq")?,
            occurred_at_ms: to_sql_int(record.occurred_at_ms, "occurred_at_ms")?,
            is_marker: record.is_compaction_marker(),
            event_id: record.event_id.into_string(),
            event_type: record.event_type,
            record: json,
        })
    }

    /// Binds the row's [`schema::INSERT_ROW_PARAMS`] parameters, moving its
    /// strings into the query; `feed_offset` is the row's 1-based place
    /// among the statement's rows of its tenant (see
    /// [`schema::insert_events_sql`]).
    pub(super) fn bind(self, query: SqlQuery<'a>, feed_offset: i64) -> SqlQuery<'a> {
        query
            .bind(self.run_id.as_str())
            .bind(self.seq)
            .bind(self.event_id)
            .bind(self.event_type)
            .bind(self.occurred_at_ms)
            .bind(self.is_marker)
            .bind(self.record)
            .bind(feed_offset)
    }
}

/// Binds a statement of [`schema::insert_events_sql`] (or its guarded
/// form): the tenant's parameters, then `rows` (all of `tenant`) in order
/// with their feed offsets from 1.
pub(super) fn bind_rows<'a>(
    query: SqlQuery<'a>,
    tenant: &'a Tenant,
    rows: Vec<EventRow<'a>>,
) -> SqlQuery<'a> {
    let deployment = schema::deployment_column(tenant);
    let mut query = query;
    for _ in 0..3 {
        query = query
            .bind(tenant.org_id())
            .bind(tenant.workspace_id())
            .bind(deployment);
    }
    for (offset, row) in (1_i64..).zip(rows) {
        debug_assert!(row.tenant == tenant, "a statement's rows are of one tenant");
        query = row.bind(query, offset);
    }
    query
}

/// The multi-row insert statements, by row count: `plain[n - 1]` inserts
/// `n` rows, `commit[n - 1]` does the same and commits.
pub(super) struct InsertSql {
    plain: Vec<String>,
    commit: Vec<String>,
}

impl InsertSql {
    /// The statements of 1 to [`INSERT_CHUNK`] rows.
    pub(super) fn new() -> Self {
        Self {
            plain: (1..=INSERT_CHUNK).map(schema::insert_events_sql).collect(),
            commit: (1..=INSERT_CHUNK)
                .map(|rows| format!("{};\nCOMMIT", schema::insert_events_sql(rows)))
                .collect(),
        }
    }
}

/// Whether the last insert statement also commits the transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Commit {
    WithLast,
    Separately,
}

/// Inserts event rows, up to [`INSERT_CHUNK`] rows of one tenant per
/// statement; with [`Commit::WithLast`] the last statement also commits. A
/// failure names `action` and the failing statement's rows ([`RowSpan`]).
///
/// The rows take their tenants' next feed positions in the order given
/// (CONTRACT §29); rows of several tenants are grouped by tenant first (a
/// stable sort: each tenant's rows keep their order), so that a statement
/// finds its tenant's last position once.
pub(super) async fn insert_rows(
    conn: &mut SqliteConnection,
    insert_sql: &InsertSql,
    path: &Arc<str>,
    action: &'static str,
    mut rows: Vec<EventRow<'_>>,
    commit: Commit,
) -> std::result::Result<(), SqliteError> {
    if rows.windows(2).any(|pair| pair[0].tenant != pair[1].tenant) {
        rows.sort_by(|a, b| a.tenant.cmp(b.tenant));
    }
    // A marker's record goes to `marker_records`, its row keeps an empty
    // one (see `schema::record_column!`). First, so that the last insert
    // below can still commit.
    for row in rows.iter_mut().filter(|row| row.is_marker) {
        let record = std::mem::take(&mut row.record);
        bind_stream(
            sqlx::query(schema::INSERT_MARKER_RECORD),
            row.tenant,
            row.run_id.as_str(),
        )
        .bind(row.seq)
        .bind(record)
        .execute(&mut *conn)
        .await
        .map_err(|err| {
            let at = (row.tenant, row.run_id, row.seq);
            SqliteError::driver_at(
                path,
                action,
                RowSpan {
                    first: at,
                    last: at,
                },
                err,
            )
        })?;
    }
    let mut chunks = Vec::with_capacity(rows.len().div_ceil(INSERT_CHUNK));
    let mut rows = rows.into_iter().peekable();
    while let Some(first) = rows.next() {
        let tenant = first.tenant;
        let mut chunk = vec![first];
        while chunk.len() < INSERT_CHUNK
            && let Some(row) = rows.next_if(|row| row.tenant == tenant)
        {
            chunk.push(row);
        }
        chunks.push(chunk);
    }
    let count = chunks.len();
    for (index, chunk) in chunks.into_iter().enumerate() {
        let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
            continue;
        };
        let span = RowSpan {
            first: (first.tenant, first.run_id, first.seq),
            last: (last.tenant, last.run_id, last.seq),
        };
        let tenant = first.tenant;
        let sql = if commit == Commit::WithLast && index + 1 == count {
            &insert_sql.commit[chunk.len() - 1]
        } else {
            &insert_sql.plain[chunk.len() - 1]
        };
        bind_rows(sqlx::query(sql), tenant, chunk)
            .execute(&mut *conn)
            .await
            .map_err(|err| SqliteError::driver_at(path, action, span, err))?;
    }
    Ok(())
}

/// The first and last row of an insert statement, named in its error:
/// `acme/prod:run-1, seqs 4 to 9`, or both streams when the statement
/// spans several.
struct RowSpan<'a> {
    first: (&'a Tenant, &'a RunId, i64),
    last: (&'a Tenant, &'a RunId, i64),
}

impl std::fmt::Display for RowSpan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ((t1, r1, s1), (t2, r2, s2)) = (self.first, self.last);
        if (t1, r1) != (t2, r2) {
            write!(f, "{t1}:{r1}, seq {s1} to {t2}:{r2}, seq {s2}")
        } else if s1 == s2 {
            write!(f, "{t1}:{r1}, seq {s1}")
        } else {
            write!(f, "{t1}:{r1}, seqs {s1} to {s2}")
        }
    }
}

/// Remembers compacted ids of a stream, in one statement.
pub(super) async fn insert_compacted_ids<'a>(
    conn: &mut SqliteConnection,
    path: &Arc<str>,
    stream: &StreamKey,
    ids: impl Iterator<Item = (&'a EventId, u64)>,
) -> std::result::Result<(), Fail> {
    let pairs = ids
        .map(|(id, seq)| Ok((id.as_str(), to_sql_int(seq, "seq")?)))
        .collect::<Result<Vec<_>>>()?;
    let json = serde_json::to_string(&pairs).expect("pairs of a string and an integer serialize");
    bind_stream(
        sqlx::query(schema::INSERT_COMPACTED_IDS),
        &stream.tenant,
        stream.run_id.as_str(),
    )
    .bind(json)
    .execute(&mut *conn)
    .await
    .map_err(|err| SqliteError::driver_at(path, "remember compacted ids", stream, err))?;
    Ok(())
}

/// A stream key from a row of (org_id, workspace_id, deployment_id, run_id).
pub(crate) fn stream_from_row(row: &SqliteRow, path: &str) -> Result<StreamKey> {
    let column = |index: usize| -> Result<String> {
        row.try_get(index)
            .map_err(|err| Error::corrupt(format!("sqlite store {path}: stream key"), err))
    };
    schema::stream_from_columns(path, column(0)?, column(1)?, column(2)?, column(3)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_span_names_one_row_a_run_of_rows_or_two_streams() {
        let tenant = Tenant::new("acme", "prod", None).unwrap();
        let (a, b) = (RunId::new("a").unwrap(), RunId::new("b").unwrap());
        let span = |first, last| RowSpan { first, last }.to_string();
        assert_eq!(
            span((&tenant, &a, 4), (&tenant, &a, 4)),
            format!("{tenant}:a, seq 4")
        );
        assert_eq!(
            span((&tenant, &a, 4), (&tenant, &a, 9)),
            format!("{tenant}:a, seqs 4 to 9")
        );
        assert_eq!(
            span((&tenant, &a, 4), (&tenant, &b, 1)),
            format!("{tenant}:a, seq 4 to {tenant}:b, seq 1")
        );
    }
}
