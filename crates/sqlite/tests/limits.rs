//! The shared validation runs at the entry of every write (CONTRACT §21-§24),
//! so SQLite answers hostile input as every backend does, before anything
//! reaches the writer; and seqs at the edges of SQLite's signed integers
//! behave as in the model store.

use runstore_conformance::support::records::{acme as tenant, run_1 as run};
use std::path::Path;

use runstore_core::validate::nested_arrays;
use runstore_core::{
    AppendOutcome, Error, EventId, EventLog, EventLogExt, EventRecord, MemoryStore, ReadQuery,
    RunStatus, SnapshotId, SnapshotRecord, SnapshotStore, SnapshotStoreExt,
    raw::compaction::{COMPACTION_EVENT_TYPE, COMPACTION_ID_PREFIX},
    validate::{Limits, MAX_DEPTH, MAX_SEQ, MAX_TIMESTAMP_MS},
};
use runstore_sqlite::{SqliteOptions, SqliteStore};
use serde_json::json;
use sqlx::{ConnectOptions as _, sqlite::SqliteConnectOptions};

fn event(id: &str, at: u64) -> EventRecord {
    EventRecord::new(
        &tenant(),
        run(),
        EventId::new(id).unwrap(),
        "limits.test",
        at,
    )
}

async fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path).await.unwrap()
}

fn assert_invalid(err: &Error, part: &str) {
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    assert!(
        err.to_string().contains(part),
        "{part:?} missing from {err}"
    );
}

// The CLI's `--occurred-at-ms 9223372036854775808`: refused by the shared
// validation (the same message as every backend), for appends, imports and
// snapshots alike, and nothing is written.
#[tokio::test]
async fn timestamps_past_the_limit_are_refused_by_the_shared_validation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("db.sqlite")).await;
    let (t, r) = (tenant(), run());
    let late = event("late", MAX_TIMESTAMP_MS + 1);
    let err = store.append(&t, &late).await.unwrap_err();
    assert_invalid(
        &err,
        "occurred_at_ms 9223372036854775808 is above the limit",
    );
    let mut exported = late.clone();
    exported.seq = 1;
    let err = store.import_stream(&t, &r, &[exported]).await.unwrap_err();
    assert_invalid(
        &err,
        "occurred_at_ms 9223372036854775808 is above the limit",
    );
    let snapshot = SnapshotRecord::new(
        &t,
        r.clone(),
        SnapshotId::new("s").unwrap(),
        1,
        MAX_TIMESTAMP_MS + 1,
        RunStatus::Running,
    );
    let err = store.put(&t, &snapshot).await.unwrap_err();
    assert_invalid(&err, "created_at_ms 9223372036854775808 is above the limit");
    assert_eq!(store.next_seq(&t, &r).await.unwrap(), 1);
    assert!(store.latest(&t, &r).await.unwrap().is_none());

    // The limit itself is stored and read back.
    let edge = event("edge", MAX_TIMESTAMP_MS);
    assert_eq!(store.append(&t, &edge).await.unwrap().seq, 1);
    let read = store.read(&t, &r, ReadQuery::all()).await.unwrap();
    assert_eq!(read[0].occurred_at_ms, MAX_TIMESTAMP_MS);
}

// Appends may not take the marker's type or id namespace; imports may.
#[tokio::test]
async fn the_marker_namespace_is_refused_to_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("db.sqlite")).await;
    let (t, r) = (tenant(), run());
    let named = event(&format!("{COMPACTION_ID_PREFIX}x"), 1);
    let err = store.append(&t, &named).await.unwrap_err();
    assert_invalid(&err, "reserved for compaction markers");
    let mut typed = event("typed", 1);
    typed.event_type = COMPACTION_EVENT_TYPE.to_owned();
    let err = store.append(&t, &typed).await.unwrap_err();
    assert_invalid(&err, "reserved for compaction markers");
    assert_eq!(store.next_seq(&t, &r).await.unwrap(), 1);
    let mut imported = named;
    imported.seq = 1;
    assert_eq!(store.import_stream(&t, &r, &[imported]).await.unwrap(), 1);
}

// A record nested past the limit is refused, not acknowledged and then
// unreadable; one at the limit reads back through the per-row read (no
// limit) and the aggregated one (a small limit), and compacts.
#[tokio::test]
async fn depth_is_limited_and_the_deepest_record_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("db.sqlite")).await;
    let (t, r) = (tenant(), run());
    // The record is level 1, its payload level 2.
    let too_deep = event("deep", 1).with_payload(nested_arrays(MAX_DEPTH));
    let err = store.append(&t, &too_deep).await.unwrap_err();
    assert_invalid(&err, "payload nests deeper than 64");
    let hostile = event("hostile", 1).with_payload(nested_arrays(126));
    assert_invalid(
        &store.append(&t, &hostile).await.unwrap_err(),
        "nests deeper",
    );
    assert_eq!(store.next_seq(&t, &r).await.unwrap(), 1);

    let deepest = event("deepest", 1).with_payload(nested_arrays(MAX_DEPTH - 1));
    store.append(&t, &deepest).await.unwrap();
    store.append(&t, &event("after", 2)).await.unwrap();
    for query in [
        ReadQuery::all(),
        ReadQuery::tail(2),
        ReadQuery::all().limit(5),
    ] {
        let records = store.read(&t, &r, query).await.unwrap();
        assert_eq!(records[0].payload, deepest.payload, "{query:?}");
    }
    assert_eq!(store.compact(1, 100).await.unwrap().removed, 2);
    assert_eq!(
        store.seq_of(&t, &r, &deepest.event_id).await.unwrap(),
        Some(1)
    );
}

// The record size comes from the options; the default is 4 MiB.
#[tokio::test]
async fn the_record_size_is_the_options_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::with_max_record_bytes(400).unwrap();
    let options = SqliteOptions::default().with_limits(limits);
    assert_eq!(options.limits, limits);
    assert_eq!(SqliteOptions::default().limits, Limits::default());
    let store = SqliteStore::open_with(dir.path().join("db.sqlite"), options)
        .await
        .unwrap();
    let (t, r) = (tenant(), run());
    let big = event("big", 1).with_payload(json!("x".repeat(400)));
    let err = store.append(&t, &big).await.unwrap_err();
    assert_invalid(&err, "larger than the limit of 400 bytes");
    let mut snapshot = SnapshotRecord::new(
        &t,
        r.clone(),
        SnapshotId::new("s").unwrap(),
        1,
        1,
        RunStatus::Running,
    );
    snapshot.metadata = Some(json!("x".repeat(400)));
    assert_invalid(
        &store.put(&t, &snapshot).await.unwrap_err(),
        "larger than the limit",
    );
    assert_eq!(store.next_seq(&t, &r).await.unwrap(), 1);
    store.append(&t, &event("small", 1)).await.unwrap();
}

/// The three events of [`extreme_bounds_answer_as_the_model`], in `store`.
async fn three_events(store: &dyn EventLog) {
    for (id, at) in [("e1", 1), ("e2", 2), ("e3", 3)] {
        store.append(&tenant(), &event(id, at)).await.unwrap();
    }
}

// Reads at the edges of u64 and usize, and a conflict against u64::MAX,
// answer exactly what the model store answers.
#[tokio::test]
async fn extreme_bounds_answer_as_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("db.sqlite")).await;
    let model = MemoryStore::new();
    three_events(&store).await;
    three_events(&model).await;
    let (t, r) = (tenant(), run());
    let bounds = [None, Some(0), Some(1), Some(MAX_SEQ), Some(u64::MAX)];
    for after_seq in bounds {
        for before_seq in bounds {
            for limit in [None, Some(0), Some(1), Some(usize::MAX)] {
                for tail in [false, true] {
                    let query = ReadQuery {
                        after_seq,
                        before_seq,
                        limit,
                        tail,
                    };
                    let ours = store.read(&t, &r, query).await.unwrap();
                    let theirs = model.read(&t, &r, query).await.unwrap();
                    assert_eq!(ours, theirs, "{query:?}");
                }
            }
        }
    }
    let again = [event("e4", 4)];
    let ours = store
        .append_batch(&t, &r, &again, Some(u64::MAX))
        .await
        .unwrap_err();
    let theirs = model
        .append_batch(&t, &r, &again, Some(u64::MAX))
        .await
        .unwrap_err();
    assert!(
        matches!(
            ours,
            Error::Conflict {
                expected: u64::MAX,
                actual: 3
            }
        ),
        "{ours:?}"
    );
    assert_eq!(ours.to_string(), theirs.to_string());
    assert_eq!(
        store.append_batch(&t, &r, &again, Some(3)).await.unwrap(),
        vec![AppendOutcome {
            seq: 4,
            inserted: true
        }]
    );
}

// A stream holding seq i64::MAX (written by hand: no store call can reach
// it) is full for appends, answers next_seq 2^63, and compacts its old event
// at that seq as the model would.
#[tokio::test]
async fn the_highest_seq_is_full_and_compacts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = open(&path).await;
    let (t, r) = (tenant(), run());
    store.append(&t, &event("e1", 10)).await.unwrap();
    let mut top = event("top", 10);
    top.seq = MAX_SEQ;
    let mut conn = SqliteConnectOptions::new()
        .filename(&path)
        .connect()
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (org_id, workspace_id, deployment_id, run_id, seq, event_id, \
         event_type, occurred_at_ms, is_marker, record) \
         VALUES ('acme', 'prod', '', 'run-1', ?1, 'top', 'limits.test', 10, 0, ?2)",
    )
    .bind(i64::MAX)
    .bind(serde_json::to_string(&top).unwrap())
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(store.next_seq(&t, &r).await.unwrap(), MAX_SEQ + 1);
    let err = store.append(&t, &event("more", 11)).await.unwrap_err();
    assert_invalid(&err, "is full");
    assert_eq!(
        store.seq_of(&t, &r, &top.event_id).await.unwrap(),
        Some(MAX_SEQ)
    );

    let report = store.compact(5, 100).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    assert_eq!(report.removed, 2);
    let records = store.read(&t, &r, ReadQuery::all()).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].seq, MAX_SEQ);
    assert_eq!(records[0].event_type, COMPACTION_EVENT_TYPE);
    assert_eq!(
        store.seq_of(&t, &r, &top.event_id).await.unwrap(),
        Some(MAX_SEQ)
    );
    assert_eq!(store.next_seq(&t, &r).await.unwrap(), MAX_SEQ + 1);
}
