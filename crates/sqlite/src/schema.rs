//! The SQL the store runs, and conversions between rows and records.
//!
//! The tables come from the embedded migrations in `migrations/`. Every
//! statement binds the stream as `?1..?4` = (org_id, workspace_id,
//! deployment_id, run_id); an absent deployment is bound as `''`, which no
//! present deployment id can equal (ids are never empty), so it takes part in
//! every unique key.

use std::fmt::Write as _;

use runstore_core::{Error, EventRecord, Result, RunId, SnapshotRecord, StreamKey, Tenant};
use serde::de::DeserializeOwned;
use sqlx::{
    Sqlite,
    query::Query,
    sqlite::{SqliteArguments, SqliteRow},
};

/// A row's record, as an expression in a query of `events`: an event's own `record`, a
/// marker's from `marker_records` (migration 4), where a marker's row keeps
/// an empty record. A marker row that still holds its record (one written
/// by a process of an earlier version) is read from its row.
macro_rules! record_column {
    () => {
        "CASE WHEN is_marker = 0 THEN record ELSE coalesce((\
         SELECT m.record FROM marker_records AS m \
         WHERE m.org_id = events.org_id AND m.workspace_id = events.workspace_id \
         AND m.deployment_id = events.deployment_id AND m.run_id = events.run_id \
         AND m.seq = events.seq), record) END"
    };
}
pub(crate) use record_column;

/// The embedded, versioned schema.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Rows per multi-row `INSERT` statement.
pub(crate) const INSERT_CHUNK: usize = 128;

/// A sqlx query with its arguments.
pub(crate) type SqlQuery<'q> = Query<'q, Sqlite, SqliteArguments<'q>>;

/// The stream's last seq (`kind` 0, no row when empty), and which of the ids
/// in the JSON array `?5` it holds, live (`kind` 1) or compacted (`kind` 2):
/// index lookups only (the last seq as [`LAST_SEQ`] finds it), so the cost
/// does not grow with the stream's compacted ids.
pub(crate) const STREAM_STATE: &str = "\
SELECT 0 AS kind, NULL AS event_id, seq FROM (
    SELECT seq FROM events
    WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4
    ORDER BY seq DESC LIMIT 1)
UNION ALL
SELECT 1, event_id, seq FROM events
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4
  AND event_id IN (SELECT value FROM json_each(?5))
UNION ALL
SELECT 2, event_id, seq FROM compacted_ids
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4
  AND event_id IN (SELECT value FROM json_each(?5))";

/// The stream's last seq: one seek at the end of the stream's range of
/// `events`. A seek reads every row it compares with in full, overflow pages
/// too; a compaction marker's row holds no record since migration 4
/// (`record_column!`), so no row it meets grows with the stream's history.
pub(crate) const LAST_SEQ: &str = "\
SELECT seq FROM events
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4
ORDER BY seq DESC LIMIT 1";

/// The seq of event id `?5`, live or compacted.
pub(crate) const SEQ_OF: &str = "\
SELECT seq FROM events
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4 AND event_id = ?5
UNION ALL
SELECT seq FROM compacted_ids
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4 AND event_id = ?5
LIMIT 1";

/// Records the stream exists (its first record is being written).
pub(crate) const INSERT_STREAM: &str = "\
INSERT OR IGNORE INTO streams (org_id, workspace_id, deployment_id, run_id)
VALUES (?1, ?2, ?3, ?4)";

/// Stores the record of the stream's marker at seq `?5` (migration 4): its
/// `events` row is written with an empty record. A trigger deletes it with
/// the row.
pub(crate) const INSERT_MARKER_RECORD: &str = "\
INSERT OR REPLACE INTO marker_records (org_id, workspace_id, deployment_id, run_id, seq, record)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Remembers compacted ids: `?5` is a JSON array of `[event_id, seq]`.
pub(crate) const INSERT_COMPACTED_IDS: &str = "\
INSERT OR IGNORE INTO compacted_ids (org_id, workspace_id, deployment_id, run_id, event_id, seq)
SELECT ?1, ?2, ?3, ?4, value ->> 0, value ->> 1 FROM json_each(?5)";

/// A window of the stream: seqs after `?5`, at most `?6` (-1: all), first
/// ones first.
pub(crate) const READ_HEAD: &str = concat!(
    "SELECT seq, ",
    record_column!(),
    " AS record FROM events
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4 AND seq > ?5
ORDER BY seq ASC LIMIT ?6"
);

/// [`READ_HEAD`] with seqs also below `?7`.
pub(crate) const READ_HEAD_BEFORE: &str = concat!(
    "SELECT seq, ",
    record_column!(),
    " AS record FROM events
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4
  AND seq > ?5 AND seq < ?7
ORDER BY seq ASC LIMIT ?6"
);

/// [`READ_HEAD`], last ones first (a tail read; the caller reverses).
pub(crate) const READ_TAIL: &str = concat!(
    "SELECT seq, ",
    record_column!(),
    " AS record FROM events
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4 AND seq > ?5
ORDER BY seq DESC LIMIT ?6"
);

/// [`READ_TAIL`] with seqs also below `?7`.
pub(crate) const READ_TAIL_BEFORE: &str = concat!(
    "SELECT seq, ",
    record_column!(),
    " AS record FROM events
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4
  AND seq > ?5 AND seq < ?7
ORDER BY seq DESC LIMIT ?6"
);

/// The window reads, by `2 * tail + has_before`: [`READ_HEAD`],
/// [`READ_HEAD_BEFORE`], [`READ_TAIL`], [`READ_TAIL_BEFORE`].
pub(crate) const READ_WINDOWS: [&str; 4] =
    [READ_HEAD, READ_HEAD_BEFORE, READ_TAIL, READ_TAIL_BEFORE];

/// The most records a read fetches as one aggregated row
/// ([`aggregated_read`]); larger reads fetch row by row.
pub(crate) const AGGREGATED_READ_MAX: usize = 4_096;

/// `window` (one of the `READ_*` queries, or [`READ_FEED`]) as one row: a
/// JSON array of its `key` column (the seqs, the feed positions) and a JSON
/// array of the records (empty window: `'[]'` and `NULL`).
/// One row crosses from the connection's worker thread instead of one per
/// record. The arrays follow the order the window's rows are produced in,
/// which the reader checks rather than assumes.
pub(crate) fn aggregated_read(window: &str, key: &str) -> String {
    format!(
        "SELECT json_group_array({key}), '[' || group_concat(record, ',') || ']'\n\
         FROM ({window})"
    )
}

/// The tenant's runs (`?4` unused), leaving out a deleted run not appended
/// to since (CONTRACT §27): one that remembers no compacted id and holds no
/// ordinary event (its one record is its erasure marker). Both are lookups
/// of the stream's first matching row by primary key; the compacted ids are
/// asked first, so a stream whose large marker leads its rows is answered
/// before any of its `events` rows is read.
pub(crate) const LIST_RUNS: &str = "\
SELECT s.run_id FROM streams AS s
WHERE s.org_id = ?1 AND s.workspace_id = ?2 AND s.deployment_id = ?3
  AND (EXISTS (SELECT 1 FROM compacted_ids AS c
               WHERE c.org_id = s.org_id AND c.workspace_id = s.workspace_id
                 AND c.deployment_id = s.deployment_id AND c.run_id = s.run_id)
       OR EXISTS (SELECT 1 FROM events AS e
                  WHERE e.org_id = s.org_id AND e.workspace_id = s.workspace_id
                    AND e.deployment_id = s.deployment_id AND e.run_id = s.run_id
                    AND e.is_marker = 0))
ORDER BY s.run_id";

/// Every stream with a record.
pub(crate) const ALL_STREAMS: &str = "\
SELECT org_id, workspace_id, deployment_id, run_id FROM streams
ORDER BY org_id, workspace_id, deployment_id, run_id";

/// Streams holding an event that occurred before `?1` (compaction
/// candidates).
pub(crate) const STREAMS_WITH_OLD_EVENTS: &str = "\
SELECT DISTINCT org_id, workspace_id, deployment_id, run_id FROM events
WHERE is_marker = 0 AND occurred_at_ms < ?1";

/// The seq of the stream's newest snapshot: its compaction floor.
pub(crate) const SNAPSHOT_FLOOR: &str = "\
SELECT MAX(seq) FROM snapshots
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4";

/// Events of the stream that occurred before `?5`, at seq `?6` or below,
/// the first `?7` by seq.
pub(crate) const PRUNE_CANDIDATES: &str = "\
SELECT seq, record FROM events
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4
  AND is_marker = 0 AND occurred_at_ms < ?5 AND seq <= ?6
ORDER BY seq LIMIT ?7";

/// The ids from `?5` (inclusive) to `?6` (exclusive) that the stream's
/// ordinary events hold, live or compacted: with [`prefix_end`], the ids
/// that start with a prefix. Both are index range scans.
pub(crate) const HELD_MARKER_IDS: &str = "\
SELECT event_id FROM events
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4
  AND event_id >= ?5 AND event_id < ?6 AND is_marker = 0
UNION
SELECT event_id FROM compacted_ids
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4
  AND event_id >= ?5 AND event_id < ?6";

/// The stream's compaction marker, if any (the first, should there be more).
pub(crate) const MARKER: &str = concat!(
    "SELECT seq, ",
    record_column!(),
    " AS record FROM events
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4 AND is_marker = 1
ORDER BY seq LIMIT 1"
);

/// Deletes the stream's records whose seqs are in the JSON array `?5`.
pub(crate) const DELETE_SEQS: &str = "\
DELETE FROM events
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4
  AND seq IN (SELECT value FROM json_each(?5))";

/// What `delete_run` decides on (CONTRACT §27), as one row: the stream's
/// last seq (NULL when empty, found as [`LAST_SEQ`] finds it), whether it
/// holds an ordinary event, and whether it remembers a compacted id.
pub(crate) const ERASURE_STATE: &str = "\
SELECT
    (SELECT seq FROM events
     WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4
     ORDER BY seq DESC LIMIT 1),
    EXISTS (SELECT 1 FROM events
            WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4
              AND is_marker = 0),
    EXISTS (SELECT 1 FROM compacted_ids
            WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4)";

/// Deletes the stream's ordinary events; the rows affected are what
/// `delete_run` answers.
pub(crate) const DELETE_ORDINARY_EVENTS: &str = "\
DELETE FROM events
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4 AND is_marker = 0";

/// Deletes every record the stream still holds (after
/// [`DELETE_ORDINARY_EVENTS`], its markers).
pub(crate) const DELETE_STREAM_EVENTS: &str = "\
DELETE FROM events
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4";

/// Deletes every compacted id the stream remembers.
pub(crate) const DELETE_COMPACTED_IDS: &str = "\
DELETE FROM compacted_ids
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4";

/// Deletes every snapshot of the stream.
pub(crate) const DELETE_SNAPSHOTS: &str = "\
DELETE FROM snapshots
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4";

/// Stores a snapshot, replacing one with the same key.
pub(crate) const PUT_SNAPSHOT: &str = "\
INSERT INTO snapshots
    (org_id, workspace_id, deployment_id, run_id, snapshot_id, seq, created_at_ms, record)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
ON CONFLICT (org_id, workspace_id, deployment_id, run_id, snapshot_id)
DO UPDATE SET seq = excluded.seq, created_at_ms = excluded.created_at_ms, record = excluded.record";

/// One snapshot.
pub(crate) const GET_SNAPSHOT: &str = "\
SELECT record FROM snapshots
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4 AND snapshot_id = ?5";

/// The stream's snapshots, newest first, at most `?5` (-1: all).
pub(crate) const LIST_SNAPSHOTS_NEWEST_FIRST: &str = "\
SELECT snapshot_id, record FROM snapshots
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4
ORDER BY seq DESC, created_at_ms DESC, snapshot_id DESC LIMIT ?5";

/// The stream's snapshots in snapshot order.
pub(crate) const LIST_SNAPSHOTS: &str = "\
SELECT snapshot_id, record FROM snapshots
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4
ORDER BY seq, created_at_ms, snapshot_id";

/// Deletes one snapshot.
pub(crate) const DELETE_SNAPSHOT: &str = "\
DELETE FROM snapshots
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4 AND snapshot_id = ?5";

/// Streams with a snapshot created before `?1` (prune candidates).
pub(crate) const SNAPSHOT_STREAMS_OLDER_THAN: &str = "\
SELECT DISTINCT org_id, workspace_id, deployment_id, run_id FROM snapshots
WHERE created_at_ms < ?1";

/// Every stream with a snapshot.
pub(crate) const ALL_SNAPSHOT_STREAMS: &str = "\
SELECT DISTINCT org_id, workspace_id, deployment_id, run_id FROM snapshots";

/// Parameters per row of [`insert_events_sql`].
pub(crate) const INSERT_ROW_PARAMS: usize = 8;

/// The multi-row insert of `rows` events of one tenant. It first binds nine
/// parameters, the tenant's three columns three times (the rows' tenant
/// columns, then the two lookups of its last feed position); then each row
/// binds [`INSERT_ROW_PARAMS`]: run_id, seq, event_id, event_type,
/// occurred_at_ms, is_marker, record and the row's feed offset, its 1-based
/// place among the statement's rows. The tenant is bound once per statement,
/// not once per row: fewer values to bind, and narrower rows in the
/// temporary table below.
///
/// A row's `feed_pos` is the tenant's last position plus its offset. The
/// last position is the larger of the tenant's highest `feed_pos` (one
/// seek at the end of its `events_by_feed` range) and its `feed_heads` row,
/// which a trigger raises to the position of every record deleted
/// (migration 3). An `INSERT ... SELECT` evaluates its `SELECT` on
/// the table as it was before the statement (SQLite stores the rows in a
/// temporary table first when the `SELECT` reads the table inserted into),
/// so every row sees the same last position.
///
/// The parameters are anonymous (`?`): SQLite looks a numbered parameter's
/// name up by a linear scan per bind, which made binding a many-row
/// statement quadratic in its rows.
pub(crate) fn insert_events_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO events (org_id, workspace_id, deployment_id, run_id, seq, event_id, \
         event_type, occurred_at_ms, is_marker, record, feed_pos)\n\
         SELECT ?, ?, ?, column1, column2, column3, column4, column5, column6, column7,\n\
         \x20   max(coalesce((SELECT feed_pos FROM events INDEXED BY events_by_feed\n\
         \x20                 WHERE org_id = ? AND workspace_id = ? AND deployment_id = ?\n\
         \x20                 ORDER BY feed_pos DESC LIMIT 1), 0),\n\
         \x20       coalesce((SELECT last_position FROM feed_heads\n\
         \x20                 WHERE org_id = ? AND workspace_id = ? AND deployment_id = ?), 0))\n\
         \x20   + column8\n\
         FROM (VALUES ",
    );
    let row = format!("({})", ["?"; INSERT_ROW_PARAMS].join(", "));
    for index in 0..rows {
        if index > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&row);
    }
    sql.push(')');
    sql
}

/// A tenant's records after feed position `?4`, at most `?5`, in position
/// order: one range scan of `events_by_feed`, each row's record then found
/// by its primary key.
pub(crate) const READ_FEED: &str = concat!(
    "SELECT feed_pos, ",
    record_column!(),
    " AS record FROM events INDEXED BY events_by_feed
WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND feed_pos > ?4
ORDER BY feed_pos ASC LIMIT ?5"
);

/// [`insert_events_sql`] guarded by what the rows were planned against.
/// After the rows' parameters come the guard's: the stream's four columns
/// and its planned last seq, then the stream's four columns again and a
/// JSON array of the rows' ids. The rows are written only if the stream's
/// last seq is still the planned one and no id in the array is among the
/// stream's compacted ids; otherwise the statement writes nothing. The
/// last seq is found as [`LAST_SEQ`] finds it.
///
/// Run on its own (autocommit), the statement is one write transaction:
/// SQLite takes the write lock before the guard reads anything, exactly as
/// `BEGIN IMMEDIATE` would, so the guard, the feed's last position and the
/// insert see one state (CONTRACT §3, §29). A live id that is already
/// stored fails the statement on the unique index instead, and it too
/// writes nothing.
pub(crate) fn guarded_insert_events_sql(rows: usize) -> String {
    format!(
        "{}\n\
         WHERE (SELECT seq FROM events\n\
         \x20   WHERE org_id = ? AND workspace_id = ? AND deployment_id = ? AND run_id = ?\n\
         \x20   ORDER BY seq DESC LIMIT 1) = ?\n\
         \x20 AND NOT EXISTS (SELECT 1 FROM compacted_ids\n\
         \x20   WHERE org_id = ? AND workspace_id = ? AND deployment_id = ? AND run_id = ?\n\
         \x20     AND event_id IN (SELECT value FROM json_each(?)))",
        insert_events_sql(rows)
    )
}

/// The `deployment_id` column value of `tenant`.
pub(crate) fn deployment_column(tenant: &Tenant) -> &str {
    tenant.deployment_id().unwrap_or("")
}

/// Binds `?1..?4`: the tenant's three columns and the run.
pub(crate) fn bind_stream<'q>(
    query: SqlQuery<'q>,
    tenant: &'q Tenant,
    run: &'q str,
) -> SqlQuery<'q> {
    query
        .bind(tenant.org_id())
        .bind(tenant.workspace_id())
        .bind(deployment_column(tenant))
        .bind(run)
}

/// A stream from its key columns, read back from the database.
pub(crate) fn stream_from_columns(
    path: &str,
    org_id: String,
    workspace_id: String,
    deployment_id: String,
    run_id: String,
) -> Result<StreamKey> {
    let deployment = (!deployment_id.is_empty()).then_some(deployment_id);
    let location = || format!("sqlite store {path}: stream key {org_id:?}/{workspace_id:?}");
    let tenant = Tenant::new(org_id.clone(), workspace_id.clone(), deployment)
        .map_err(|err| Error::corrupt(location(), err))?;
    let run_id = RunId::new(run_id).map_err(|err| Error::corrupt(location(), err))?;
    Ok(StreamKey::new(tenant, run_id))
}

/// The first text after every text that starts with the ASCII `prefix`, in
/// SQLite's byte order (`BINARY` collation): the prefix with its last byte
/// raised by one.
pub(crate) fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    let last = bytes.last_mut().expect("the prefix is not empty");
    assert!(*last < 0x7f, "the prefix ends in ASCII below DEL");
    *last += 1;
    String::from_utf8(bytes).expect("ASCII stays UTF-8")
}

/// A u64 field as an SQLite INTEGER (signed 64-bit).
///
/// # Errors
/// [`Error::InvalidInput`] for values above `i64::MAX`.
pub(crate) fn to_sql_int(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| {
        Error::invalid(format!(
            "{what} {value} exceeds the largest value the sqlite store holds ({})",
            i64::MAX
        ))
    })
}

/// A u64 bound as an SQLite INTEGER, saturating at `i64::MAX` (no stored
/// value exceeds it).
pub(crate) fn saturating_sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored INTEGER back as u64.
pub(crate) fn from_sql_int(value: i64, location: impl FnOnce() -> String) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::corrupt(location(), format!("negative value {value}")))
}

/// Parses a stored record.
pub(crate) fn parse<T: DeserializeOwned>(
    text: &str,
    location: impl FnOnce() -> String,
) -> Result<T> {
    serde_json::from_str(text).map_err(|err| Error::corrupt(location(), err))
}

/// Parses an event row `(seq, record)`, checking the record's seq matches.
pub(crate) fn parse_event_row(
    row: &SqliteRow,
    path: &str,
    stream: (&Tenant, &RunId),
) -> Result<EventRecord> {
    use sqlx::Row as _;
    let location = |seq: &dyn std::fmt::Display| {
        format!(
            "sqlite store {path}: events of {}:{} at seq {seq}",
            stream.0, stream.1
        )
    };
    let seq: i64 = row
        .try_get(0)
        .map_err(|err| Error::corrupt(location(&"?"), err))?;
    let text: &str = row
        .try_get(1)
        .map_err(|err| Error::corrupt(location(&seq), err))?;
    let record: EventRecord = parse(text, || location(&seq))?;
    if i64::try_from(record.seq).ok() != Some(seq) {
        return Err(Error::corrupt(
            location(&seq),
            format!("the record says seq {}", record.seq),
        ));
    }
    Ok(record)
}

/// Serializes a record for the `record` column.
pub(crate) fn to_json<T: serde::Serialize>(
    value: &T,
    what: impl FnOnce() -> String,
) -> Result<String> {
    serde_json::to_string(value).map_err(|err| Error::invalid(format!("{}: {err}", what())))
}

/// A JSON array of strings, for `json_each` parameters.
pub(crate) fn json_array<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.into_iter().collect();
    serde_json::to_string(&items).expect("a list of strings always serializes")
}

/// A JSON array of integers, for `json_each` parameters.
pub(crate) fn json_int_array(items: impl IntoIterator<Item = i64>) -> String {
    let mut out = String::from("[");
    for (index, item) in items.into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write!(out, "{item}").expect("writing to a String cannot fail");
    }
    out.push(']');
    out
}

/// Parses a snapshot row's record.
pub(crate) fn parse_snapshot(
    text: &str,
    path: &str,
    stream: (&Tenant, &RunId),
    snapshot_id: &str,
) -> Result<SnapshotRecord> {
    parse(text, || {
        format!(
            "sqlite store {path}: snapshot {snapshot_id:?} of {}:{}",
            stream.0, stream.1
        )
    })
}

#[cfg(test)]
mod tests {
    use sqlx::{ConnectOptions as _, Row as _, sqlite::SqliteConnectOptions};

    use super::*;

    #[test]
    fn a_prefix_ends_at_its_last_byte_raised_by_one() {
        assert_eq!(prefix_end("ab"), "ac");
        assert_eq!(
            prefix_end(runstore_core::raw::compaction::COMPACTION_ID_PREFIX),
            "stateful-compaction."
        );
    }

    /// An in-memory database with the schema.
    async fn migrated() -> sqlx::SqliteConnection {
        let mut conn = SqliteConnectOptions::new()
            .in_memory(true)
            .connect()
            .await
            .unwrap();
        MIGRATOR.run_direct(&mut conn).await.unwrap();
        conn
    }

    /// Column `column` of each row `explain` (`EXPLAIN` or `EXPLAIN QUERY
    /// PLAN`) answers for `sql`.
    async fn explained(
        conn: &mut sqlx::SqliteConnection,
        explain: &str,
        sql: &str,
        column: usize,
    ) -> Vec<String> {
        sqlx::query(&format!("{explain} {sql}"))
            .fetch_all(conn)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(column))
            .collect()
    }

    // A row's feed position is the tenant's last position plus its offset:
    // the last position must be found once per statement, from the table as
    // it was before the statement (an uncorrelated subquery, and the rows
    // stored in a temporary table before they are inserted), and the seek
    // for it must use `events_by_feed`.
    #[tokio::test]
    async fn the_insert_finds_the_last_position_once_before_inserting() {
        let mut conn = migrated().await;
        for sql in [insert_events_sql(3), guarded_insert_events_sql(3)] {
            let plan = explained(&mut conn, "EXPLAIN QUERY PLAN", &sql, 3).await;
            assert!(
                plan.iter().all(|line| !line.contains("CORRELATED")),
                "{plan:?}"
            );
            assert!(
                plan.iter()
                    .any(|line| line.contains("USING COVERING INDEX events_by_feed")),
                "{plan:?}"
            );
            let program = explained(&mut conn, "EXPLAIN", &sql, 1).await;
            assert!(
                program.iter().any(|op| op == "OpenEphemeral"),
                "the rows are stored in a temporary table first: {program:?}"
            );
        }
    }

    // The guarded insert's claim to be one write transaction rests on SQLite
    // starting the statement with a write transaction on the main database
    // (`Transaction` with p2 = 1), reached from `Init` before the guard's
    // first read.
    #[tokio::test]
    async fn the_guarded_insert_writes_from_its_first_read() {
        let mut conn = migrated().await;
        for rows in [1, 3] {
            let program = sqlx::query(&format!("EXPLAIN {}", guarded_insert_events_sql(rows)))
                .fetch_all(&mut conn)
                .await
                .unwrap();
            let ops: Vec<(String, i64, i64)> = program
                .iter()
                .map(|row| (row.get(1), row.get(2), row.get(3)))
                .collect();
            assert_eq!(ops[0].0, "Init");
            let start = usize::try_from(ops[0].2).unwrap();
            assert_eq!(ops[start], ("Transaction".to_owned(), 0, 1), "{ops:?}");
            let transactions = ops.iter().filter(|op| op.0 == "Transaction").count();
            assert_eq!(transactions, 1, "{ops:?}");
        }
    }
}
