//! Erasure in the SQLite file itself (CONTRACT §27): after `delete_run` and
//! `delete_snapshots` the run's rows are gone from every table, not hidden
//! behind a filter -- `events` holds its erasure marker alone,
//! `compacted_ids` and `snapshots` nothing of it -- and once the file is
//! vacuumed none of its payload bytes is left in it.

use std::path::Path;

use runstore_core::{
    EventId, EventLog, EventLogExt, EventRecord, RunId, RunStatus, SnapshotId, SnapshotRecord,
    SnapshotStore, Tenant, raw::erasure::erasure_marker,
};
use runstore_sqlite::SqliteStore;
use serde_json::json;
use sqlx::{ConnectOptions as _, Row as _, SqliteConnection, sqlite::SqliteConnectOptions};

/// What the deleted run's records and snapshots carry, and nothing else.
const GONE: &str = "ERASE-ME-7f3a";
/// What the run left alone carries.
const KEPT: &str = "KEEP-ME-91c2";

fn tenant() -> Tenant {
    Tenant::new("acme", "prod", None).unwrap()
}

fn run(name: &str) -> RunId {
    RunId::new(name).unwrap()
}

fn event(run_id: &str, id: &str, at: u64, secret: &str) -> EventRecord {
    EventRecord::new(
        &tenant(),
        run(run_id),
        EventId::new(id).unwrap(),
        "erasure.test",
        at,
    )
    .with_payload(json!({ "secret": format!("{secret}-{id}") }))
}

fn snapshot(run_id: &str, id: &str, seq: u64, secret: &str) -> SnapshotRecord {
    SnapshotRecord::new(
        &tenant(),
        run(run_id),
        SnapshotId::new(id).unwrap(),
        seq,
        1,
        RunStatus::Running,
    )
    .with_checkpoint(json!({ "secret": format!("{secret}-{id}") }))
}

async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

async fn count(conn: &mut SqliteConnection, sql: &str, bind: &str) -> i64 {
    sqlx::query(sql)
        .bind(bind)
        .fetch_one(conn)
        .await
        .unwrap()
        .get(0)
}

/// Six events of `gone` (three of them compacted, so `compacted_ids` holds
/// their ids) and two snapshots, then two events and a snapshot of `kept`.
async fn populate(store: &SqliteStore) {
    let t = tenant();
    for n in 1..=6u64 {
        store
            .append(&t, &event("gone", &format!("e{n}"), n * 10, GONE))
            .await
            .unwrap();
    }
    store
        .put(&t, &snapshot("gone", "s1", 4, GONE))
        .await
        .unwrap();
    store
        .put(&t, &snapshot("gone", "s2", 5, GONE))
        .await
        .unwrap();
    let report = store.compact(40, 75).await.unwrap();
    assert_eq!(report.removed, 3, "{report:?}");
    for n in 1..=2u64 {
        store
            .append(&t, &event("kept", &format!("e{n}"), 100, KEPT))
            .await
            .unwrap();
    }
    store
        .put(&t, &snapshot("kept", "s1", 1, KEPT))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_run_keeps_no_row_but_its_marker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    populate(&store).await;
    let t = tenant();
    let mut conn = raw(&path).await;
    let compacted = "SELECT COUNT(*) FROM compacted_ids WHERE run_id = ?1";
    assert_eq!(count(&mut conn, compacted, "gone").await, 3, "set-up");

    assert_eq!(store.delete_snapshots(&t, &run("gone")).await.unwrap(), 2);
    assert_eq!(store.delete_run(&t, &run("gone")).await.unwrap(), 3);

    // A marker's row keeps an empty record; the record is in
    // `marker_records` (migration 4).
    let rows = sqlx::query(
        "SELECT e.seq, e.is_marker, e.record, m.record FROM events AS e \
         LEFT JOIN marker_records AS m ON m.run_id = e.run_id AND m.seq = e.seq \
         WHERE e.run_id = 'gone'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let rows: Vec<(i64, bool, String, Option<String>)> = rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect();
    let marker = serde_json::to_string(&erasure_marker(&t, &run("gone"), 6)).unwrap();
    assert_eq!(
        rows,
        vec![(6, true, String::new(), Some(marker))],
        "the run's one row is its erasure marker, serialized as every record is"
    );
    let side = "SELECT COUNT(*) FROM marker_records WHERE run_id = ?1";
    assert_eq!(
        count(&mut conn, side, "gone").await,
        1,
        "the compaction marker's record went with its row"
    );
    assert_eq!(count(&mut conn, compacted, "gone").await, 0);
    let snapshots = "SELECT COUNT(*) FROM snapshots WHERE run_id = ?1";
    assert_eq!(count(&mut conn, snapshots, "gone").await, 0);
    let streams = "SELECT COUNT(*) FROM streams WHERE run_id = ?1";
    assert_eq!(
        count(&mut conn, streams, "gone").await,
        1,
        "the stream still holds the marker"
    );
    // No row of any table holds what the run held; the other run's rows
    // are untouched.
    for table in ["events", "snapshots", "marker_records"] {
        let holding = format!("SELECT COUNT(*) FROM {table} WHERE instr(record, ?1) > 0");
        assert_eq!(count(&mut conn, &holding, GONE).await, 0, "{table}");
        if table != "marker_records" {
            assert!(count(&mut conn, &holding, KEPT).await > 0, "{table}");
        }
    }
    let ids = "SELECT COUNT(*) FROM compacted_ids WHERE event_id = ?1";
    assert_eq!(count(&mut conn, ids, "e1").await, 0);
    assert_eq!(count(&mut conn, compacted, "kept").await, 0);
    assert_eq!(count(&mut conn, snapshots, "kept").await, 1);
}

// The deletion frees the run's pages; SQLite reuses them and `VACUUM`
// rebuilds the file without them. After it (and a checkpoint that empties
// the WAL) not one byte of the run's payloads is in the database file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_vacuum_no_byte_of_a_deleted_run_is_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    populate(&store).await;
    let t = tenant();
    store.delete_snapshots(&t, &run("gone")).await.unwrap();
    store.delete_run(&t, &run("gone")).await.unwrap();
    drop(store);

    let mut conn = raw(&path).await;
    sqlx::query("VACUUM").execute(&mut conn).await.unwrap();
    let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(busy, 0, "the checkpoint ran to the end");
    drop(conn);

    let mut bytes = std::fs::read(&path).unwrap();
    let wal = dir.path().join("db.sqlite-wal");
    if wal.exists() {
        bytes.extend(std::fs::read(&wal).unwrap());
    }
    let holds = |needle: &str| {
        bytes
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
    };
    assert!(holds(KEPT), "the other run's payloads are in the file");
    assert!(!holds(GONE), "a deleted run's payload is left in the file");
}
