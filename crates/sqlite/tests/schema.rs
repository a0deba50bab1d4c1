//! What the SQLite schema itself guarantees: the deployment encoding in the
//! unique keys, the compacted-id table, WAL mode, and the auto traits of the
//! store (CONTRACT §20).

use std::fmt::Debug;

use runstore_core::{
    EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, SnapshotStore, Tenant,
};
use runstore_sqlite::SqliteStore;
use sqlx::{ConnectOptions as _, Row as _, SqliteConnection, sqlite::SqliteConnectOptions};

fn event(tenant: &Tenant, run: &str, id: &str, at: u64) -> EventRecord {
    EventRecord::new(
        tenant,
        RunId::new(run).unwrap(),
        EventId::new(id).unwrap(),
        "schema.test",
        at,
    )
}

async fn raw(path: &std::path::Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

#[test]
fn the_store_and_its_futures_are_send_and_sync() {
    fn store<T: Send + Sync + Clone + Debug + 'static>() {}
    fn send<T: Send>(_: &T) {}
    store::<SqliteStore>();
    let open = SqliteStore::open("never-polled.sqlite");
    send(&open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_deployment_takes_part_in_the_unique_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    let bare = Tenant::new("org", "ws", None).unwrap();
    let deployed = Tenant::new("org", "ws", Some("d".to_owned())).unwrap();
    for tenant in [&bare, &deployed] {
        let outcome = store
            .append(tenant, &event(tenant, "r", "e", 1))
            .await
            .unwrap();
        assert_eq!((outcome.seq, outcome.inserted), (1, true), "{tenant}");
    }
    // Without a deployment the same id is a duplicate, not a second row.
    let again = store
        .append(&bare, &event(&bare, "r", "e", 1))
        .await
        .unwrap();
    assert_eq!((again.seq, again.inserted), (1, false));

    let mut conn = raw(&path).await;
    let rows = sqlx::query(
        "SELECT deployment_id, seq FROM events WHERE run_id = 'r' ORDER BY deployment_id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let got: Vec<(String, i64)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(got, vec![(String::new(), 1), ("d".to_owned(), 1)]);
    // The unique key rejects a second row for the absent deployment.
    let dup = sqlx::query(
        "INSERT INTO events (org_id, workspace_id, deployment_id, run_id, seq, event_id, \
         event_type, occurred_at_ms, is_marker, record) \
         VALUES ('org', 'ws', '', 'r', 1, 'other', 't', 1, 0, '{}')",
    )
    .execute(&mut conn)
    .await
    .unwrap_err();
    assert!(
        dup.as_database_error()
            .is_some_and(|err| err.is_unique_violation()),
        "{dup}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_ids_are_indexed_in_their_own_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    let tenant = Tenant::local();
    for (id, at) in [("old-1", 100), ("old-2", 200), ("new", 5_000)] {
        store
            .append(&tenant, &event(&tenant, "r", id, at))
            .await
            .unwrap();
    }
    assert_eq!(store.compact(1_000, 5_000).await.unwrap().removed, 2);

    let mut conn = raw(&path).await;
    let rows = sqlx::query("SELECT event_id, seq FROM compacted_ids ORDER BY seq")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let got: Vec<(String, i64)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(got, vec![("old-1".to_owned(), 1), ("old-2".to_owned(), 2)]);
    let markers: i64 = sqlx::query("SELECT COUNT(*) FROM events WHERE is_marker = 1")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(markers, 1);

    // A duplicate of a pruned id answers its original seq (CONTRACT §10).
    let again = store
        .append(&tenant, &event(&tenant, "r", "old-2", 100))
        .await
        .unwrap();
    assert_eq!((again.seq, again.inserted), (2, false));
    let run = RunId::new("r").unwrap();
    assert_eq!(
        store
            .seq_of(&tenant, &run, &EventId::new("old-1").unwrap())
            .await
            .unwrap(),
        Some(1)
    );

    // A second compaction adds only the newly pruned ids.
    store
        .append(&tenant, &event(&tenant, "r", "later", 6_000))
        .await
        .unwrap();
    assert_eq!(store.compact(1, 10_000).await.unwrap().removed, 2);
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM compacted_ids")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 4);
    let records = store.read(&tenant, &run, ReadQuery::all()).await.unwrap();
    assert_eq!(records.len(), 1, "one merged marker remains");
    assert!(records[0].is_compaction_marker());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_in_wal_mode_with_the_migration_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("db.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    let mut conn = raw(&path).await;
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, "wal");
    let versions: Vec<i64> = sqlx::query("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    // Reopening an existing file applies nothing twice.
    drop(store);
    let again = SqliteStore::open(&path).await.unwrap();
    assert!(again.snapshot_streams().await.unwrap().is_empty());
}

/// A new store at `path` whose run `r` holds four events, seqs 1 to 4.
async fn four_events(path: &std::path::Path) -> (SqliteStore, Tenant, RunId) {
    let store = SqliteStore::open(path).await.unwrap();
    let tenant = Tenant::new("org", "ws", None).unwrap();
    for id in ["a", "b", "c", "d"] {
        store
            .append(&tenant, &event(&tenant, "r", id, 1))
            .await
            .unwrap();
    }
    (store, tenant, RunId::new("r").unwrap())
}

// A read fetches its window as one aggregated row; a record in it that does
// not parse, or says another seq than its row, makes the read `Corrupt`
// naming that seq, whether it is read as a window or alone (CONTRACT §18).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_makes_reads_corrupt_naming_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let (store, tenant, run) = four_events(&path).await;
    let mut conn = raw(&path).await;
    for (damage, seq) in [
        ("'{\"not\": json'", 2),
        ("(SELECT record FROM events WHERE seq = 1)", 3),
    ] {
        let original: String = sqlx::query(&format!(
            "SELECT record FROM events WHERE run_id = 'r' AND seq = {seq}"
        ))
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
        sqlx::query(&format!(
            "UPDATE events SET record = {damage} WHERE run_id = 'r' AND seq = {seq}"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        for query in [
            ReadQuery::tail(10),
            ReadQuery::default(),
            ReadQuery::tail(1).before(seq + 1),
        ] {
            let err = store.read(&tenant, &run, query).await.unwrap_err();
            let shown = err.to_string();
            assert!(
                matches!(err, runstore_core::Error::Corrupt { .. })
                    && shown.contains(&format!("at seq {seq}")),
                "{query:?}: {shown}"
            );
        }
        sqlx::query(&format!(
            "UPDATE events SET record = ? WHERE run_id = 'r' AND seq = {seq}"
        ))
        .bind(original)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let all = store
        .read(&tenant, &run, ReadQuery::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
}

// A read of at most 4,096 records, and a feed read, fetches its window as
// one aggregated row whose seqs run in the window's order; an unbounded or
// larger read goes row by row. Both answer the same records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_reads_come_from_one_aggregated_row() {
    let dir = tempfile::tempdir().unwrap();
    let (store, tenant, run) = four_events(&dir.path().join("db.sqlite")).await;
    let seqs = |records: Vec<runstore_core::EventRecord>| -> Vec<u64> {
        records.iter().map(|record| record.seq).collect()
    };
    for (query, expected, aggregated) in [
        (ReadQuery::tail(10), vec![1, 2, 3, 4], true),
        (ReadQuery::tail(2).before(4), vec![2, 3], true),
        (ReadQuery::all().after(1).limit(2), vec![2, 3], true),
        (ReadQuery::all().limit(3).before(4), vec![1, 2, 3], true),
        (ReadQuery::all().limit(4_096), vec![1, 2, 3, 4], true),
        (ReadQuery::all().limit(4_097), vec![1, 2, 3, 4], false),
        (ReadQuery::all(), vec![1, 2, 3, 4], false),
    ] {
        let before = store.aggregated_reads();
        let read = store.read(&tenant, &run, query).await.unwrap();
        assert_eq!(seqs(read), expected, "{query:?}");
        assert_eq!(
            store.aggregated_reads() - before,
            u64::from(aggregated),
            "{query:?} aggregated: {aggregated}"
        );
    }
    let before = store.aggregated_reads();
    let feed = store
        .read_feed(&tenant, runstore_core::FeedPosition::START, 10)
        .await
        .unwrap();
    let positions: Vec<u64> = feed.iter().map(|entry| entry.position.parts().1).collect();
    assert_eq!(positions, [1, 2, 3, 4]);
    assert_eq!(store.aggregated_reads() - before, 1, "the feed read");
}

/// A compacted stream of 100 events plus one live one, compacted by a
/// second pass too, so that the marker is a merged one.
async fn compacted_store(path: &std::path::Path, tenant: &Tenant, run: &RunId) {
    let store = SqliteStore::open(path).await.unwrap();
    let events: Vec<_> = (1..=100)
        .map(|n| event(tenant, run.as_str(), &format!("e{n}"), n))
        .collect();
    store
        .append_batch(tenant, run, &events[..50], None)
        .await
        .unwrap();
    assert_eq!(store.compact(1_000, 1_101).await.unwrap().removed, 50);
    store
        .append_batch(tenant, run, &events[50..], None)
        .await
        .unwrap();
    store
        .append(tenant, &event(tenant, run.as_str(), "live", 10_000))
        .await
        .unwrap();
    assert_eq!(store.compact(1_000, 1_101).await.unwrap().removed, 50);
}

/// `(is_marker, length(record))` of every row of `events`, and the number
/// of rows of `marker_records`.
async fn marker_layout(conn: &mut SqliteConnection) -> (Vec<(i64, i64)>, i64) {
    let rows = event_rows(conn).await;
    let side: i64 = sqlx::query("SELECT count(*) FROM marker_records")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
        .get(0);
    (rows, side)
}

/// `(is_marker, length(record))` of every row of `events`.
async fn event_rows(conn: &mut SqliteConnection) -> Vec<(i64, i64)> {
    sqlx::query("SELECT is_marker, length(record) FROM events ORDER BY seq")
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// A compaction marker's record lives in `marker_records`, and its row in
/// `events` holds an empty one: no row of `events` grows with the ids a
/// stream compacted, so a seek in `events` (the last seq of appends, their
/// guard, `next_seq`) never reads a marker's record. Erasing the run takes
/// the record with the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_markers_record_lives_outside_the_events_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let (tenant, run) = (Tenant::local(), RunId::new("run").unwrap());
    compacted_store(&path, &tenant, &run).await;
    let mut conn = raw(&path).await;
    let (rows, side) = marker_layout(&mut conn).await;
    assert_eq!(rows.len(), 2, "the marker and the live event: {rows:?}");
    assert_eq!(rows[0], (1, 0), "the marker's row holds no record");
    assert!(rows[1].0 == 0 && rows[1].1 > 0, "{rows:?}");
    assert_eq!(side, 1, "one marker record, the merged one");
    let record: String = sqlx::query("SELECT record FROM marker_records")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert!(
        record.contains("\"e100\""),
        "the merged marker names every id"
    );

    let store = SqliteStore::open(&path).await.unwrap();
    let read = store.read(&tenant, &run, ReadQuery::all()).await.unwrap();
    assert!(read[0].is_compaction_marker());
    assert_eq!(serde_json::to_string(&read[0]).unwrap(), record);
    assert_eq!(store.delete_run(&tenant, &run).await.unwrap(), 1);
    let (rows, side) = marker_layout(&mut conn).await;
    assert_eq!(
        (rows.len(), side),
        (1, 1),
        "only the erasure marker: {rows:?}"
    );
    let read = store.read(&tenant, &run, ReadQuery::all()).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(
        serde_json::to_string(&read[0]).unwrap(),
        sqlx::query_scalar::<_, String>("SELECT record FROM marker_records")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    );
}

/// A store written with schema version 3 (markers' records in `events`,
/// the keys copied in `events_by_seq`) opens: migration 4 moves the marker's
/// record and drops the index, and reads, the compacted ids and the
/// stream's last seq answer as before (CONTRACT §7, §10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_schema_version_3_opens_and_keeps_its_markers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let (tenant, run) = (Tenant::local(), RunId::new("run").unwrap());
    compacted_store(&path, &tenant, &run).await;
    let before = {
        let store = SqliteStore::open(&path).await.unwrap();
        store.read(&tenant, &run, ReadQuery::all()).await.unwrap()
    };
    {
        // What version 3 left: the record in the marker's row, no
        // `marker_records`, `events_by_seq`, no record of migration 4.
        let mut conn = raw(&path).await;
        for sql in [
            "UPDATE events SET record = (SELECT m.record FROM marker_records AS m \
             WHERE m.run_id = events.run_id AND m.seq = events.seq) WHERE is_marker = 1",
            "DROP TRIGGER events_drop_marker_record",
            "DROP TABLE marker_records",
            "CREATE INDEX events_by_seq ON events (org_id, workspace_id, deployment_id, run_id, seq)",
            "DELETE FROM _sqlx_migrations WHERE version = 4",
        ] {
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
        let rows = event_rows(&mut conn).await;
        assert!(rows[0].0 == 1 && rows[0].1 > 1_000, "{rows:?}");
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let mut conn = raw(&path).await;
    let (rows, side) = marker_layout(&mut conn).await;
    assert_eq!((rows[0], side), ((1, 0), 1), "the record moved: {rows:?}");
    let indexes: i64 = sqlx::query(
        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'events_by_seq'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
    .get(0);
    assert_eq!(indexes, 0, "the migration dropped the index");
    assert_eq!(
        store.read(&tenant, &run, ReadQuery::all()).await.unwrap(),
        before
    );
    for n in 1..=100 {
        let id = EventId::new(format!("e{n}")).unwrap();
        assert_eq!(store.seq_of(&tenant, &run, &id).await.unwrap(), Some(n));
        let dup = store
            .append(&tenant, &event(&tenant, "run", &format!("e{n}"), 5))
            .await
            .unwrap();
        assert_eq!((dup.seq, dup.inserted), (n, false));
    }
    assert_eq!(store.next_seq(&tenant, &run).await.unwrap(), 102);
    let next = store
        .append(&tenant, &event(&tenant, "run", "next", 20_000))
        .await
        .unwrap();
    assert_eq!((next.seq, next.inserted), (102, true));
}
