//! Erasure in the PostgreSQL tables (CONTRACT §27): after `delete_run` and
//! `delete_snapshots` the run's rows are deleted, not filtered -- `events`
//! holds its erasure marker alone, `compacted_ids` and `snapshots` nothing
//! of it, and `streams.last_seq` is kept -- and a deletion waits for the
//! stream row's lock, so an append committing under that lock is deleted
//! with the run rather than left above a marker at an older seq.
//!
//! Needs `RUNSTORE_POSTGRES_URL`; fails without it unless
//! `RUNSTORE_ALLOW_MISSING_SERVICES` is set.

use std::time::Duration;

use runstore_conformance::support::records::{event, run, tenant};
use runstore_core::{
    EventLog, EventLogExt, EventRecord, ReadQuery, RunStatus, SnapshotId, SnapshotRecord,
    SnapshotStore, Tenant, raw::erasure::erasure_marker,
};
use runstore_postgres::{PostgresOptions, PostgresStore};
use serde_json::json;

/// What the deleted run's records and snapshots carry, and nothing else.
const GONE: &str = "ERASE-ME-7f3a";
/// What the run left alone carries.
const KEPT: &str = "KEEP-ME-91c2";

mod common;
use common::{connect, drop_schema};

fn server_url() -> Option<String> {
    runstore_conformance::support::service_url("RUNSTORE_POSTGRES_URL", "postgres erasure test")
}

fn secret_event(t: &Tenant, run_id: &str, id: &str, at: u64, secret: &str) -> EventRecord {
    event(t, run_id, id, at).with_payload(json!({ "secret": format!("{secret}-{id}") }))
}

fn snapshot(t: &Tenant, run_id: &str, id: &str, seq: u64, secret: &str) -> SnapshotRecord {
    SnapshotRecord::new(
        t,
        run(run_id),
        SnapshotId::new(id).unwrap(),
        seq,
        1,
        RunStatus::Running,
    )
    .with_checkpoint(json!({ "secret": format!("{secret}-{id}") }))
}

/// Rows of `sql` counted, with `$1` bound to `bind`.
async fn count(store: &PostgresStore, sql: &str, bind: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql)
        .bind(bind)
        .fetch_one(store.pool())
        .await
        .unwrap();
    n
}

const STREAM_OF: &str = "(SELECT stream_id FROM streams WHERE run_id = $1)";

#[tokio::test]
async fn a_deleted_run_keeps_only_its_marker_row_and_its_last_seq() {
    let Some(url) = server_url() else { return };
    let store = connect(&url, "erase_rows").await;
    let t = tenant("acme");
    for n in 1..=6u64 {
        let e = secret_event(&t, "gone", &format!("e{n}"), n * 10, GONE);
        store.append(&t, &e).await.unwrap();
    }
    store
        .put(&t, &snapshot(&t, "gone", "s1", 4, GONE))
        .await
        .unwrap();
    store
        .put(&t, &snapshot(&t, "gone", "s2", 5, GONE))
        .await
        .unwrap();
    assert_eq!(store.compact(40, 75).await.unwrap().removed, 3);
    for n in 1..=2u64 {
        let e = secret_event(&t, "kept", &format!("e{n}"), 100, KEPT);
        store.append(&t, &e).await.unwrap();
    }
    store
        .put(&t, &snapshot(&t, "kept", "s1", 1, KEPT))
        .await
        .unwrap();
    let compacted = format!("SELECT count(*) FROM compacted_ids WHERE stream_id = {STREAM_OF}");
    assert_eq!(count(&store, &compacted, "gone").await, 3, "set-up");

    assert_eq!(store.delete_snapshots(&t, &run("gone")).await.unwrap(), 2);
    assert_eq!(store.delete_run(&t, &run("gone")).await.unwrap(), 3);

    let rows: Vec<(i64, bool, String)> = sqlx::query_as(&format!(
        "SELECT seq, is_marker, record FROM events WHERE stream_id = {STREAM_OF}"
    ))
    .bind("gone")
    .fetch_all(store.pool())
    .await
    .unwrap();
    let marker = serde_json::to_string(&erasure_marker(&t, &run("gone"), 6)).unwrap();
    assert_eq!(
        rows,
        vec![(6, true, marker)],
        "the run's one row is its erasure marker, serialized as every record is"
    );
    assert_eq!(count(&store, &compacted, "gone").await, 0);
    let snapshots = format!("SELECT count(*) FROM snapshots WHERE stream_id = {STREAM_OF}");
    assert_eq!(count(&store, &snapshots, "gone").await, 0);
    let (last_seq,): (i64,) = sqlx::query_as("SELECT last_seq FROM streams WHERE run_id = 'gone'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(last_seq, 6, "the stream row keeps its last seq");
    for table in ["events", "snapshots"] {
        let holding = format!("SELECT count(*) FROM {table} WHERE strpos(record, $1) > 0");
        assert_eq!(count(&store, &holding, GONE).await, 0, "{table}");
        assert!(count(&store, &holding, KEPT).await > 0, "{table}");
    }
    assert_eq!(count(&store, &snapshots, "kept").await, 1);
    drop_schema(&store).await;
}

// A transaction that holds the stream row's lock, as an append does, and
// commits an event at seq 4 while a deletion from another handle waits:
// the deletion runs after it, deletes the event and writes its marker at
// seq 4. A deletion that read the last seq without the lock would write
// its marker at 3 and leave the committed event above it.
#[tokio::test]
async fn a_deletion_waits_for_an_append_holding_the_stream_row() {
    let Some(url) = server_url() else { return };
    let store = connect(&url, "erase_lock").await;
    let other =
        PostgresStore::connect_with(&url, PostgresOptions::default().with_schema(store.schema()))
            .await
            .unwrap();
    let t = tenant("acme");
    for n in 1..=3u64 {
        store
            .append(&t, &event(&t, "r", &format!("e{n}"), n))
            .await
            .unwrap();
    }
    let mut append = store.pool().begin().await.unwrap();
    let (stream_id, last): (i64, i64) = sqlx::query_as(
        "SELECT stream_id, last_seq FROM streams WHERE run_id = 'r' FOR NO KEY UPDATE",
    )
    .fetch_one(&mut *append)
    .await
    .unwrap();
    assert_eq!(last, 3);
    let mut late = event(&t, "r", "e4", 4);
    late.seq = 4;
    sqlx::query(
        "INSERT INTO events (stream_id, seq, event_id, is_marker, occurred_at_ms, record, tenant_key) \
         SELECT $1, 4, 'e4', false, 4, $2, tenant_key(tenant_hash) FROM streams WHERE stream_id = $1",
    )
    .bind(stream_id)
    .bind(serde_json::to_string(&late).unwrap())
    .execute(&mut *append)
    .await
    .unwrap();
    sqlx::query("UPDATE streams SET last_seq = 4 WHERE stream_id = $1")
        .bind(stream_id)
        .execute(&mut *append)
        .await
        .unwrap();

    let deletion = {
        let t = t.clone();
        tokio::spawn(async move { other.delete_run(&t, &run("r")).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !deletion.is_finished(),
        "the deletion waits for the stream row's lock"
    );
    append.commit().await.unwrap();
    assert_eq!(deletion.await.unwrap().unwrap(), 4);

    let records = store.read(&t, &run("r"), ReadQuery::all()).await.unwrap();
    assert_eq!(records, vec![erasure_marker(&t, &run("r"), 4)]);
    assert_eq!(store.next_seq(&t, &run("r")).await.unwrap(), 5);
    drop_schema(&store).await;
}
