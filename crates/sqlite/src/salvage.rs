//! Salvage: reads what can be read of a database file row by row, so that a
//! damaged row or page costs only the rows on it.
//!
//! The file is opened read-only, without the migrations or the writer. Each
//! table is read in key order in pages of rows. When a page fails, the scan
//! steps one row at a time to the failure; past it, it goes on from the next
//! key the table's index knows (`events_by_event_id` holds every row's key,
//! `snapshots_in_order` every rowid), reading each such key on its own: a key
//! that fails is a [`Loss`] naming it, and the first that reads resumes the
//! ordered scan. Indexes live in pages of their own, so damage to the table's
//! pages leaves them readable. When an index cannot be read, the keys are
//! guessed (seqs 1 to the last of each stream the `streams` table lists,
//! rowids 1 to the largest), and a failure no guessed key accounts for is
//! reported as a lost stretch of the table.

use std::{collections::BTreeSet, fmt, path::Path};

use runstore_core::{
    Error, EventRecord, Result, SnapshotRecord, StreamKey,
    salvage::{Loss, SalvageScan, ScanBuilder},
};
use sqlx::{
    ConnectOptions as _, Row as _, SqliteConnection,
    sqlite::{SqliteConnectOptions, SqliteRow},
};

use crate::{error::SqliteError, schema};

/// Rows per ordered read.
const PAGE: i64 = 512;

/// Scans the database file at `path`: every readable event row and
/// snapshot row, and a loss for each row (or stretch of rows) that cannot
/// be read.
///
/// # Errors
/// [`Error::InvalidInput`] when there is no file at `path` or it holds no
/// runstore tables; `Backend` or `Io` when it cannot be opened as a
/// database or its schema cannot be read.
pub async fn scan(path: impl AsRef<Path>) -> Result<SalvageScan> {
    let path = path.as_ref();
    if !path.is_file() {
        return Err(Error::invalid(format!(
            "no sqlite store at {}: there is no such file",
            path.display()
        )));
    }
    let name: std::sync::Arc<str> = std::sync::Arc::from(path.display().to_string());
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false)
        .disable_statement_logging();
    let mut conn = options
        .connect()
        .await
        .map_err(|err| SqliteError::driver(&name, "open the database read-only", err))?;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&mut conn)
            .await
            .map_err(|err| SqliteError::driver(&name, "read the schema", err))?;
    if !["events", "snapshots"]
        .iter()
        .all(|table| tables.iter().any(|name| name == table))
    {
        return Err(Error::invalid(format!(
            "{name} is not a runstore sqlite store: it has no events and snapshots tables"
        )));
    }
    // One read transaction: the scan sees one state of the file even if
    // another process writes meanwhile. A failed begin only loses that.
    let _ = sqlx::query("BEGIN").execute(&mut conn).await;
    let mut scan = ScanBuilder::new();
    let columns = if tables.iter().any(|name| name == "marker_records") {
        EVENT_COLUMNS
    } else {
        EVENT_COLUMNS_V3
    };
    let events = Events {
        path: &name,
        columns,
    };
    let candidates = events.candidates(&mut conn).await;
    scan_table(&events, &mut conn, &candidates, &mut scan).await;
    let snapshots = Snapshots { path: &name };
    let candidates = snapshots.candidates(&mut conn).await;
    scan_table(&snapshots, &mut conn, &candidates, &mut scan).await;
    let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
    Ok(scan.finish())
}

/// A table the scan reads in key order.
trait Table {
    /// A row's key, in the table's order.
    type Key: Ord + Clone + fmt::Display;

    /// Up to `limit` rows after `after` (from the start for `None`), in key
    /// order.
    async fn page(
        &self,
        conn: &mut SqliteConnection,
        after: Option<&Self::Key>,
        limit: i64,
    ) -> Result<Vec<SqliteRow>, sqlx::Error>;

    /// The row with `key`.
    async fn point(
        &self,
        conn: &mut SqliteConnection,
        key: &Self::Key,
    ) -> Result<Option<SqliteRow>, sqlx::Error>;

    /// A row's key.
    fn key(&self, row: &SqliteRow) -> Result<Self::Key, sqlx::Error>;

    /// Takes a row: its record, or a loss.
    fn take(&self, key: &Self::Key, row: &SqliteRow, scan: &mut ScanBuilder);

    /// A loss for the row with `key`, which could not be read.
    fn lost(&self, key: &Self::Key, reason: String) -> Loss;

    /// Where the rows after `key` (or all rows) are.
    fn after(&self, key: Option<&Self::Key>) -> String;
}

/// Reads `table` in key order; see the module docs.
async fn scan_table<T: Table>(
    table: &T,
    conn: &mut SqliteConnection,
    candidates: &Candidates<T::Key>,
    scan: &mut ScanBuilder,
) {
    let mut cursor: Option<T::Key> = None;
    // Rows still to read one at a time after a page failed.
    let mut stepping: i64 = 0;
    loop {
        let limit = if stepping > 0 { 1 } else { PAGE };
        let failure = match table.page(conn, cursor.as_ref(), limit).await {
            Ok(rows) => {
                let fetched = rows.len();
                let mut unkeyed = None;
                for row in &rows {
                    match table.key(row) {
                        Ok(key) => {
                            table.take(&key, row, scan);
                            cursor = Some(key);
                        }
                        Err(err) => {
                            unkeyed = Some(err.to_string());
                            break;
                        }
                    }
                }
                match unkeyed {
                    Some(reason) => format!("a row's key could not be read: {reason}"),
                    // The end of the table.
                    None if i64::try_from(fetched).is_ok_and(|fetched| fetched < limit) => return,
                    None => {
                        stepping = stepping.saturating_sub(1);
                        continue;
                    }
                }
            }
            Err(_) if stepping == 0 => {
                stepping = PAGE;
                continue;
            }
            Err(err) => err.to_string(),
        };
        stepping = 0;
        if !skip(table, conn, candidates, &mut cursor, &failure, scan).await {
            return;
        }
    }
}

/// The keys a table holds, as far as its index tells.
struct Candidates<K> {
    keys: BTreeSet<K>,
    /// Whether `keys` is every key of the table (read from an index kept in
    /// the same transactions as the table), not a guess.
    complete: bool,
}

/// Past a row after `cursor` that cannot be read: reads the known keys
/// after it one by one until one reads, and moves `cursor` there; each
/// known key that fails is a loss. Returns false when no known key is
/// left. A failure that no known key accounts for is a loss of the stretch
/// it lies in, unless the known keys are all the table holds (then the
/// failure was in the pages between rows, not in a row).
async fn skip<T: Table>(
    table: &T,
    conn: &mut SqliteConnection,
    candidates: &Candidates<T::Key>,
    cursor: &mut Option<T::Key>,
    failure: &str,
    scan: &mut ScanBuilder,
) -> bool {
    let from = cursor.clone();
    let mut named = false;
    let next = |cursor: &Option<T::Key>| match cursor {
        Some(key) => candidates
            .keys
            .range((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))
            .next()
            .cloned(),
        None => candidates.keys.first().cloned(),
    };
    while let Some(key) = next(cursor) {
        *cursor = Some(key.clone());
        match table.point(conn, &key).await {
            Ok(Some(row)) => {
                if !named && !candidates.complete {
                    // The failed read's row is not one of the known keys.
                    scan.lose(Loss::range(
                        format!("{} and before {key}", table.after(from.as_ref())),
                        None,
                        format!("a row there could not be read: {failure}"),
                    ));
                }
                table.take(&key, &row, scan);
                return true;
            }
            // A key the index knows but the table does not hold.
            Ok(None) => {}
            Err(err) => {
                named = true;
                scan.lose(table.lost(&key, err.to_string()));
            }
        }
    }
    if !named && !candidates.complete {
        scan.lose(Loss::unread_rest(table.after(from.as_ref()), failure));
    }
    false
}

/// An `events` row's key: the stream's columns and the seq.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct EventKey {
    org_id: String,
    workspace_id: String,
    deployment_id: String,
    run_id: String,
    seq: i64,
}

impl EventKey {
    fn stream(&self, path: &str) -> Result<StreamKey> {
        schema::stream_from_columns(
            path,
            self.org_id.clone(),
            self.workspace_id.clone(),
            self.deployment_id.clone(),
            self.run_id.clone(),
        )
    }

    fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            org_id: row.try_get(0)?,
            workspace_id: row.try_get(1)?,
            deployment_id: row.try_get(2)?,
            run_id: row.try_get(3)?,
            seq: row.try_get(4)?,
        })
    }
}

impl fmt::Display for EventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.org_id, self.workspace_id)?;
        if !self.deployment_id.is_empty() {
            write!(f, "/{}", self.deployment_id)?;
        }
        write!(f, ":{} seq {}", self.run_id, self.seq)
    }
}

/// Every row's columns, the record as bytes (damaged text need not be
/// UTF-8), in a file written before migration 4.
const EVENT_COLUMNS_V3: &str =
    "org_id, workspace_id, deployment_id, run_id, seq, CAST(record AS BLOB)";

/// [`EVENT_COLUMNS_V3`] from migration 4 on: a marker's record is in
/// `marker_records` ([`schema::record_column`]); if that table's pages are
/// damaged, only the marker's row is lost.
const EVENT_COLUMNS: &str = concat!(
    "org_id, workspace_id, deployment_id, run_id, seq, CAST((",
    schema::record_column!(),
    ") AS BLOB)"
);
const EVENT_ORDER: &str = "ORDER BY org_id, workspace_id, deployment_id, run_id, seq";

/// Up to `?6` rows after the key `?1..?5`. A row value: SQLite seeks the
/// primary key to it, so a resumed scan starts there instead of reading
/// from the start (and meeting a damaged page again).
fn events_after(columns: &str) -> String {
    format!(
        "SELECT {columns} FROM events \
         WHERE (org_id, workspace_id, deployment_id, run_id, seq) > (?1, ?2, ?3, ?4, ?5) \
         {EVENT_ORDER} LIMIT ?6"
    )
}

struct Events<'a> {
    path: &'a str,
    /// [`EVENT_COLUMNS`], or [`EVENT_COLUMNS_V3`] for a file without
    /// `marker_records`.
    columns: &'static str,
}

impl Events<'_> {
    /// Every key `events_by_event_id` holds; if that index cannot be read,
    /// seqs 1 to the last of every stream the `streams` table lists.
    async fn candidates(&self, conn: &mut SqliteConnection) -> Candidates<EventKey> {
        let indexed = sqlx::query(
            "SELECT org_id, workspace_id, deployment_id, run_id, seq \
             FROM events INDEXED BY events_by_event_id",
        )
        .fetch_all(&mut *conn)
        .await
        .and_then(|rows| rows.iter().map(EventKey::from_row).collect());
        if let Ok(keys) = indexed {
            return Candidates {
                keys,
                complete: true,
            };
        }
        let mut keys = BTreeSet::new();
        let streams = sqlx::query(
            "SELECT org_id, workspace_id, deployment_id, run_id, \
             (SELECT MAX(seq) FROM events AS e WHERE e.org_id = s.org_id \
              AND e.workspace_id = s.workspace_id AND e.deployment_id = s.deployment_id \
              AND e.run_id = s.run_id) FROM streams AS s",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_default();
        for row in &streams {
            if let Ok(last) = EventKey::from_row(row) {
                for seq in 1..=last.seq {
                    keys.insert(EventKey {
                        seq,
                        ..last.clone()
                    });
                }
            }
        }
        Candidates {
            keys,
            complete: false,
        }
    }

    fn place(&self, key: &EventKey) -> String {
        format!("{}: table events, row {key}", self.path)
    }
}

impl Table for Events<'_> {
    type Key = EventKey;

    async fn page(
        &self,
        conn: &mut SqliteConnection,
        after: Option<&EventKey>,
        limit: i64,
    ) -> Result<Vec<SqliteRow>, sqlx::Error> {
        match after {
            None => {
                sqlx::query(&format!(
                    "SELECT {} FROM events {EVENT_ORDER} LIMIT ?1",
                    self.columns
                ))
                .bind(limit)
                .fetch_all(conn)
                .await
            }
            Some(key) => {
                sqlx::query(&events_after(self.columns))
                    .bind(&key.org_id)
                    .bind(&key.workspace_id)
                    .bind(&key.deployment_id)
                    .bind(&key.run_id)
                    .bind(key.seq)
                    .bind(limit)
                    .fetch_all(conn)
                    .await
            }
        }
    }

    /// The row with `key`; if that read fails, a descending seek to it.
    /// The table is an index b-tree (`WITHOUT ROWID`), whose interior pages
    /// hold rows too: a lookup of such a row goes on down into the child
    /// page before it and fails when that page is damaged, while a
    /// descending seek stops at the row.
    async fn point(
        &self,
        conn: &mut SqliteConnection,
        key: &EventKey,
    ) -> Result<Option<SqliteRow>, sqlx::Error> {
        let bind = |sql| {
            sqlx::query(sql)
                .bind(&key.org_id)
                .bind(&key.workspace_id)
                .bind(&key.deployment_id)
                .bind(&key.run_id)
                .bind(key.seq)
        };
        let exact = format!(
            "SELECT {} FROM events WHERE org_id = ?1 AND workspace_id = ?2 \
             AND deployment_id = ?3 AND run_id = ?4 AND seq = ?5",
            self.columns
        );
        let failed = match bind(&exact).fetch_optional(&mut *conn).await {
            Ok(row) => return Ok(row),
            Err(err) => err,
        };
        let descending = format!(
            "SELECT {} FROM events \
             WHERE (org_id, workspace_id, deployment_id, run_id, seq) <= (?1, ?2, ?3, ?4, ?5) \
             ORDER BY org_id DESC, workspace_id DESC, deployment_id DESC, run_id DESC, seq DESC \
             LIMIT 1",
            self.columns
        );
        match bind(&descending).fetch_optional(&mut *conn).await {
            Ok(Some(row)) if EventKey::from_row(&row).is_ok_and(|found| found == *key) => {
                Ok(Some(row))
            }
            _ => Err(failed),
        }
    }

    fn key(&self, row: &SqliteRow) -> Result<EventKey, sqlx::Error> {
        EventKey::from_row(row)
    }

    fn take(&self, key: &EventKey, row: &SqliteRow, scan: &mut ScanBuilder) {
        let place = self.place(key);
        let stream = match key.stream(self.path) {
            Ok(stream) => stream,
            Err(err) => {
                scan.lose(Loss::record(place, None, None, err));
                return;
            }
        };
        let Ok(seq) = u64::try_from(key.seq) else {
            scan.lose(Loss::record(place, Some(&stream), None, "negative seq"));
            return;
        };
        let parsed = row
            .try_get::<Vec<u8>, _>(5)
            .map_err(|err| err.to_string())
            .and_then(|bytes| {
                serde_json::from_slice::<EventRecord>(&bytes).map_err(|err| err.to_string())
            });
        match parsed {
            Ok(record) => scan.record(place, Some((&stream, seq)), record),
            Err(reason) => scan.lose(Loss::record(place, Some(&stream), Some(seq), reason)),
        }
    }

    fn lost(&self, key: &EventKey, reason: String) -> Loss {
        let stream = key.stream(self.path).ok();
        Loss::record(
            self.place(key),
            stream.as_ref(),
            u64::try_from(key.seq).ok(),
            reason,
        )
    }

    fn after(&self, key: Option<&EventKey>) -> String {
        match key {
            Some(key) => format!("{}: table events, the rows after {key}", self.path),
            None => format!("{}: table events, the rows from the first", self.path),
        }
    }
}

const SNAPSHOT_COLUMNS: &str =
    "rowid, org_id, workspace_id, deployment_id, run_id, snapshot_id, CAST(record AS BLOB)";

struct Snapshots<'a> {
    path: &'a str,
}

impl Snapshots<'_> {
    /// Every rowid `snapshots_in_order` holds; if that index cannot be read,
    /// 1 to the largest rowid.
    async fn candidates(&self, conn: &mut SqliteConnection) -> Candidates<i64> {
        let indexed: Result<Vec<i64>, _> =
            sqlx::query_scalar("SELECT rowid FROM snapshots INDEXED BY snapshots_in_order")
                .fetch_all(&mut *conn)
                .await;
        if let Ok(rowids) = indexed {
            return Candidates {
                keys: rowids.into_iter().collect(),
                complete: true,
            };
        }
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(rowid) FROM snapshots")
            .fetch_one(&mut *conn)
            .await
            .unwrap_or_default();
        Candidates {
            keys: (1..=last.unwrap_or(0)).collect(),
            complete: false,
        }
    }

    fn place(&self, rowid: i64) -> String {
        format!("{}: table snapshots, rowid {rowid}", self.path)
    }
}

impl Table for Snapshots<'_> {
    type Key = i64;

    async fn page(
        &self,
        conn: &mut SqliteConnection,
        after: Option<&i64>,
        limit: i64,
    ) -> Result<Vec<SqliteRow>, sqlx::Error> {
        match after {
            None => {
                sqlx::query(&format!(
                    "SELECT {SNAPSHOT_COLUMNS} FROM snapshots ORDER BY rowid LIMIT ?1"
                ))
                .bind(limit)
                .fetch_all(conn)
                .await
            }
            Some(rowid) => {
                sqlx::query(&format!(
                    "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE rowid > ?1 \
                     ORDER BY rowid LIMIT ?2"
                ))
                .bind(rowid)
                .bind(limit)
                .fetch_all(conn)
                .await
            }
        }
    }

    async fn point(
        &self,
        conn: &mut SqliteConnection,
        rowid: &i64,
    ) -> Result<Option<SqliteRow>, sqlx::Error> {
        sqlx::query(&format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE rowid = ?1"
        ))
        .bind(rowid)
        .fetch_optional(conn)
        .await
    }

    fn key(&self, row: &SqliteRow) -> Result<i64, sqlx::Error> {
        row.try_get(0)
    }

    fn take(&self, rowid: &i64, row: &SqliteRow, scan: &mut ScanBuilder) {
        let place = self.place(*rowid);
        let columns = (|| -> Result<(String, String, String, String, String), sqlx::Error> {
            Ok((
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
                row.try_get(4)?,
                row.try_get(5)?,
            ))
        })();
        let (org, workspace, deployment, run, snapshot_id) = match columns {
            Ok(columns) => columns,
            Err(err) => {
                scan.lose(Loss::snapshot(place, None, None, err));
                return;
            }
        };
        let stream = match schema::stream_from_columns(self.path, org, workspace, deployment, run) {
            Ok(stream) => stream,
            Err(err) => {
                scan.lose(Loss::snapshot(place, None, Some(&snapshot_id), err));
                return;
            }
        };
        let parsed = row
            .try_get::<Vec<u8>, _>(6)
            .map_err(|err| err.to_string())
            .and_then(|bytes| {
                serde_json::from_slice::<SnapshotRecord>(&bytes).map_err(|err| err.to_string())
            });
        match parsed {
            Ok(snapshot) => scan.snapshot(place, Some((&stream, &snapshot_id)), snapshot),
            Err(reason) => scan.lose(Loss::snapshot(
                place,
                Some(&stream),
                Some(&snapshot_id),
                reason,
            )),
        }
    }

    fn lost(&self, rowid: &i64, reason: String) -> Loss {
        Loss::snapshot(self.place(*rowid), None, None, reason)
    }

    fn after(&self, rowid: Option<&i64>) -> String {
        match rowid {
            Some(rowid) => format!(
                "{}: table snapshots, the rows after rowid {rowid}",
                self.path
            ),
            None => format!("{}: table snapshots, the rows from the first", self.path),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use runstore_conformance::support::{
        expect_corrupt,
        records::acme as tenant,
        salvage::{
            OneRecordAndOneSnapshotLost, fill, find_once, lost_records, numbered, numbered_on_page,
            overwrite, seqs,
        },
    };
    use runstore_core::{EventLog, ReadQuery, RunId};

    use super::*;
    use crate::SqliteStore;

    fn event(run: &str, n: u64, pad: usize) -> EventRecord {
        numbered(run, n).with_payload(serde_json::json!({ "pad": "x".repeat(pad) }))
    }

    /// A store with `count` events in run `a`, 3 in run `b` and two
    /// snapshots of `a`, closed and checkpointed so that every row is in
    /// the main file.
    async fn store(path: &Path, count: u64, pad: usize) {
        let store = SqliteStore::open(path).await.unwrap();
        let a: Vec<EventRecord> = (1..=count).map(|n| event("a", n, pad)).collect();
        let b: Vec<EventRecord> = (1..=3).map(|n| event("b", n, 10)).collect();
        fill(&store, &a, &b, &[("snap-1", 2), ("snap-2", 3)]).await;
        drop(store);
        let mut conn = SqliteConnectOptions::new()
            .filename(path)
            .connect()
            .await
            .unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::Connection::close(conn).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_intact_store_is_read_whole() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("store.sqlite");
        store(&path, 1200, 10).await;
        let scan = scan(&path).await.unwrap();
        assert!(scan.losses.is_empty(), "{:?}", scan.losses);
        assert_eq!(seqs(&scan, "a"), (1..=1200).collect::<Vec<_>>());
        assert_eq!(seqs(&scan, "b"), [1, 2, 3]);
        assert_eq!(scan.snapshots.len(), 2);
    }

    // A row's JSON bytes overwritten in the file: reads of the stream fail,
    // the scan loses that row only.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_damaged_record_costs_only_its_row() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("store.sqlite");
        store(&path, 5, 10).await;
        let at = find_once(&path, "\"event_id\":\"a-003\"");
        overwrite(&path, at + 10, b"#");
        let at = find_once(&path, "\"snapshot_id\":\"snap-2\"");
        overwrite(&path, at, b"{");
        let opened = SqliteStore::open(&path).await.unwrap();
        let (t, a) = (tenant(), RunId::new("a").unwrap());
        expect_corrupt(opened.read(&t, &a, ReadQuery::all()).await);
        drop(opened);

        OneRecordAndOneSnapshotLost {
            a: &[1, 2, 4, 5],
            b: &[1, 2, 3],
            kept: "snap-1",
            lost: (
                3,
                format!("{}: table events, row acme/prod:a seq 3", path.display()),
            ),
            lost_snapshot: "snap-2",
        }
        .check(&scan(&path).await.unwrap());
    }

    // A damaged page of the events table: the rows on it are lost, each
    // named, and the rows after it are read.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_damaged_page_costs_only_its_rows() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("store.sqlite");
        store(&path, 200, 150).await;
        let page_size = {
            let bytes = fs::read(&path).unwrap();
            usize::from(u16::from_be_bytes([bytes[16], bytes[17]]))
        };
        let at = find_once(&path, "\"event_id\":\"a-100\"");
        let page = at / page_size;
        let bytes = fs::read(&path).unwrap();
        let on_page = numbered_on_page(&bytes, page, page_size, "a", 1..=200);
        assert!(on_page.len() > 1 && on_page.len() < 50, "{on_page:?}");
        // An invalid b-tree page type.
        overwrite(&path, page * page_size, &[0x77]);

        let scan = scan(&path).await.unwrap();
        let expected: Vec<u64> = (1..=200).filter(|n| !on_page.contains(n)).collect();
        assert_eq!(seqs(&scan, "a"), expected);
        assert_eq!(seqs(&scan, "b"), [1, 2, 3]);
        assert_eq!(scan.snapshots.len(), 2);
        assert_eq!(lost_records(&scan), on_page);
    }

    // The resumed read seeks the primary key instead of scanning from the
    // start, which would meet a damaged page again on every resume.
    #[tokio::test]
    async fn a_resumed_read_seeks_the_key() {
        let mut conn = SqliteConnectOptions::new()
            .in_memory(true)
            .connect()
            .await
            .unwrap();
        schema::MIGRATOR.run_direct(&mut conn).await.unwrap();
        let detail: Vec<String> = sqlx::query(&format!(
            "EXPLAIN QUERY PLAN {}",
            events_after(EVENT_COLUMNS)
        ))
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<String, _>(3))
        .collect();
        assert!(
            detail
                .iter()
                .any(|line| line.starts_with("SEARCH events USING PRIMARY KEY")),
            "{detail:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_missing_file_is_refused_and_not_created() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("none.sqlite");
        let err = scan(&path).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
        assert!(!path.exists());
    }
}
