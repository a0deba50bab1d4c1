//! Store-wide maintenance costs a bad stream only that stream (CONTRACT §25):
//! a stream whose compaction or prune fails is reported, and every other
//! stream -- also those sharing its write transaction -- is processed. A
//! marker never takes an id an ordinary event of its stream holds.

use std::path::Path;

use runstore_conformance::support::{corrupt_failure, failed_streams};
use runstore_core::{
    Error, EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, RunStatus, SnapshotId,
    SnapshotRecord, SnapshotStore, StreamKey, Tenant,
    raw::compaction::{COMPACTION_ID_PREFIX, marker_event_id},
};
use runstore_sqlite::SqliteStore;
use sqlx::{ConnectOptions as _, SqliteConnection, sqlite::SqliteConnectOptions};

fn tenant(name: &str) -> Tenant {
    Tenant::new(name, "prod", None).unwrap()
}

fn run(name: &str) -> RunId {
    RunId::new(name).unwrap()
}

fn event(tenant: &Tenant, run_id: &str, id: &str, at: u64) -> EventRecord {
    EventRecord::new(
        tenant,
        run(run_id),
        EventId::new(id).unwrap(),
        "isolation.test",
        at,
    )
}

/// `event` at `seq`, as an export holds it.
fn exported(tenant: &Tenant, run_id: &str, id: &str, seq: u64, at: u64) -> EventRecord {
    let mut record = event(tenant, run_id, id, at);
    record.seq = seq;
    record
}

async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

async fn ids(store: &SqliteStore, tenant: &Tenant, run_id: &str) -> Vec<(u64, String)> {
    store
        .read(tenant, &run(run_id), ReadQuery::all())
        .await
        .unwrap()
        .into_iter()
        .map(|record| (record.seq, record.event_id.into_string()))
        .collect()
}

fn assert_unique_ids(records: &[(u64, String)]) {
    let mut seen: Vec<&str> = records.iter().map(|(_, id)| id.as_str()).collect();
    seen.sort_unstable();
    let before = seen.len();
    seen.dedup();
    assert_eq!(seen.len(), before, "two records share an id: {records:?}");
}

// The case: a tenant's stream holds an ordinary event whose id is the
// marker id its next compaction would take (imported from an older store).
// Its compaction takes another id; another tenant's stream, compacted in the
// same pass and the same write transaction, is compacted too; `seq_of`
// answers the same before, after and across a reopen.
#[tokio::test]
async fn a_held_marker_id_does_not_block_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let (hostile, other) = (tenant("hostile"), tenant("other"));
    // Clashes live (seq 3, kept) in run-live and pruned (seq 1) in
    // run-pruned, each with the id a marker through seq 2 would take.
    let live_clash = marker_event_id(&hostile, &run("run-live"), 2);
    let pruned_clash = marker_event_id(&hostile, &run("run-pruned"), 2);
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .import_stream(
            &hostile,
            &run("run-live"),
            &[
                exported(&hostile, "run-live", "a-1", 1, 100),
                exported(&hostile, "run-live", "a-2", 2, 100),
                exported(&hostile, "run-live", live_clash.as_str(), 3, 900),
            ],
        )
        .await
        .unwrap();
    store
        .import_stream(
            &hostile,
            &run("run-pruned"),
            &[
                exported(&hostile, "run-pruned", pruned_clash.as_str(), 1, 100),
                exported(&hostile, "run-pruned", "p-2", 2, 100),
                exported(&hostile, "run-pruned", "p-3", 3, 900),
            ],
        )
        .await
        .unwrap();
    for (index, at) in [100, 100, 900].into_iter().enumerate() {
        store
            .append(
                &other,
                &event(&other, "run-live", &format!("o-{index}"), at),
            )
            .await
            .unwrap();
    }
    let seq_of = async |store: &SqliteStore, run_id: &str, id: &EventId| {
        store.seq_of(&hostile, &run(run_id), id).await.unwrap()
    };
    assert_eq!(seq_of(&store, "run-live", &live_clash).await, Some(3));
    assert_eq!(seq_of(&store, "run-pruned", &pruned_clash).await, Some(1));

    let report = store.compact(500, 1_000).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    assert_eq!(report.removed, 6);

    for reopened in [false, true] {
        let store = if reopened {
            SqliteStore::open(&path).await.unwrap()
        } else {
            store.clone()
        };
        for (run_id, clash, seq) in [
            ("run-live", &live_clash, 3),
            ("run-pruned", &pruned_clash, 1),
        ] {
            let records = ids(&store, &hostile, run_id).await;
            assert_unique_ids(&records);
            let (marker_seq, marker_id) = &records[0];
            assert_eq!(*marker_seq, 2, "{records:?}");
            assert_ne!(marker_id, clash.as_str());
            assert!(marker_id.starts_with(COMPACTION_ID_PREFIX), "{marker_id}");
            assert_eq!(seq_of(&store, run_id, clash).await, Some(seq), "{run_id}");
        }
        assert_eq!(ids(&store, &other, "run-live").await.len(), 2);
        assert_eq!(store.next_seq(&hostile, &run("run-live")).await.unwrap(), 4);
    }
}

/// A record text that parses as the event `id` at `seq` of `run_id`.
fn record_text(tenant: &Tenant, run_id: &str, id: &str, seq: u64) -> String {
    serde_json::to_string(&exported(tenant, run_id, id, seq, 10_000)).unwrap()
}

// A stream the store could not have written -- a second marker row holding
// the id the stream's next marker takes -- fails its compaction on the
// unique key. Only that stream is reported and left as it was; the streams
// before and after it in the same write transaction are compacted. The
// error names the tenant, the run and the seq, and states its cause once.
#[tokio::test]
async fn a_constraint_error_fails_only_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let t = tenant("acme");
    let store = SqliteStore::open(&path).await.unwrap();
    let runs = ["run-a", "run-bad", "run-c"];
    for run_id in runs {
        for id in ["e1", "e2"] {
            store.append(&t, &event(&t, run_id, id, 100)).await.unwrap();
        }
    }
    assert_eq!(store.compact(500, 1_000).await.unwrap().removed, 6);
    for run_id in runs {
        for (id, at) in [("e3", 100), ("e4", 100), ("e5", 900)] {
            store.append(&t, &event(&t, run_id, id, at)).await.unwrap();
        }
    }
    // The second compaction of run-bad would write its marker at seq 4 with
    // this id; a hostile row at seq 100 already holds it.
    let taken = marker_event_id(&t, &run("run-bad"), 4);
    sqlx::query(
        "INSERT INTO events (org_id, workspace_id, deployment_id, run_id, seq, event_id, \
         event_type, occurred_at_ms, is_marker, record) \
         VALUES ('acme', 'prod', '', 'run-bad', 100, ?1, 'x', 10000, 1, ?2)",
    )
    .bind(taken.as_str())
    .bind(record_text(&t, "run-bad", taken.as_str(), 100))
    .execute(&mut raw(&path).await)
    .await
    .unwrap();
    let before = ids(&store, &t, "run-bad").await;

    let report = store.compact(500, 1_000).await.unwrap();
    assert_eq!(failed_streams(&report), vec!["acme/prod:run-bad"]);
    assert_eq!(report.removed, 4, "run-a and run-c are compacted");
    for run_id in ["run-a", "run-c"] {
        let seqs: Vec<u64> = ids(&store, &t, run_id)
            .await
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        assert_eq!(seqs, vec![4, 5], "{run_id}");
    }
    assert_eq!(ids(&store, &t, "run-bad").await, before, "rolled back");

    let error = &report.failed[0].error;
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    let text = error.to_string();
    let cause = "UNIQUE constraint failed";
    assert_eq!(text.matches(cause).count(), 1, "{text}");
    for part in ["acme/prod:run-bad", "seq 4", "(sqlite code 2067)"] {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }
    // Nothing below the store's error repeats it: the driver's error is
    // stated in the text, not chained again as a source (CONTRACT §26).
    assert!(std::error::Error::source(error).is_none());
    let Error::Backend { error: driver, .. } = error else {
        unreachable!("matched above")
    };
    assert_eq!(driver.to_string().matches(cause).count(), 1, "{driver}");
    assert!(driver.source().is_none(), "{:?}", driver.source());
}

// A stream whose compaction fails in a later step of a transaction keeps the
// steps before it: the failed transaction is rolled back, the stream runs
// again alone, one step, and the pass goes on one step per transaction
// until the step that meets the bad record, which is reported.
#[tokio::test]
async fn a_stream_failing_in_a_later_step_keeps_the_steps_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let t = tenant("acme");
    let store = SqliteStore::open(&path).await.unwrap();
    let events: Vec<EventRecord> = (1..=600)
        .map(|n| event(&t, "run-long", &format!("e{n}"), 100))
        .collect();
    for chunk in events.chunks(100) {
        store
            .append_batch(&t, &run("run-long"), chunk, None)
            .await
            .unwrap();
    }
    // The first step takes seqs 1-256; the second meets seq 300.
    sqlx::query("UPDATE events SET record = 'not json' WHERE run_id = 'run-long' AND seq = 300")
        .execute(&mut raw(&path).await)
        .await
        .unwrap();

    let report = store.compact(500, 1_000).await.unwrap();
    corrupt_failure(&report, "acme/prod:run-long");
    assert_eq!(report.removed, 256, "the first step stands");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE run_id = 'run-long'")
        .fetch_one(&mut raw(&path).await)
        .await
        .unwrap();
    assert_eq!(
        rows,
        600 - 256 + 1,
        "the events left and the first step's marker"
    );
    let first = EventId::new("e1").unwrap();
    assert_eq!(
        store.seq_of(&t, &run("run-long"), &first).await.unwrap(),
        Some(1)
    );
}

// A stream whose snapshots cannot be read fails its prune alone.
#[tokio::test]
async fn prune_skips_only_an_unreadable_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let t = tenant("acme");
    let store = SqliteStore::open(&path).await.unwrap();
    for run_id in ["run-a", "run-bad", "run-c"] {
        for (n, at) in [(1, 100), (2, 200), (3, 300)] {
            let snapshot = SnapshotRecord::new(
                &t,
                run(run_id),
                SnapshotId::new(format!("s{n}")).unwrap(),
                n,
                at,
                RunStatus::Running,
            );
            store.put(&t, &snapshot).await.unwrap();
        }
    }
    sqlx::query("UPDATE snapshots SET record = 'not json' WHERE run_id = 'run-bad' AND seq = 1")
        .execute(&mut raw(&path).await)
        .await
        .unwrap();

    let report = store.prune(50, 1, 1_000).await.unwrap();
    corrupt_failure(&report, "acme/prod:run-bad");
    assert_eq!(report.removed, 4);
    for (run_id, left) in [("run-a", 1), ("run-c", 1)] {
        assert_eq!(
            store.list(&t, &run(run_id), None).await.unwrap().len(),
            left
        );
    }
    let stream = StreamKey::new(t.clone(), run("run-bad"));
    assert_eq!(report.failed[0].stream, stream);
}

// The clock is checked first, as the model does, whatever the retention.
#[tokio::test]
async fn maintenance_refuses_a_clock_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite"))
        .await
        .unwrap();
    for retention in [0, 1] {
        let err = store.prune(retention, 0, u64::MAX).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
        let err = store.compact(retention, u64::MAX).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    }
}

// A store that stays locked past the busy timeout fails the pass as a
// whole (retryable), instead of every stream in turn waiting the timeout
// and being reported.
#[tokio::test]
async fn a_locked_store_fails_the_whole_pass() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let options = runstore_sqlite::SqliteOptions::default()
        .with_busy_timeout(std::time::Duration::from_millis(100));
    let store = SqliteStore::open_with(&path, options).await.unwrap();
    let t = tenant("acme");
    for run_id in ["run-a", "run-b"] {
        store.append(&t, &event(&t, run_id, "e1", 1)).await.unwrap();
    }
    let mut holder = raw(&path).await;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let err = store.compact(5, 1_000).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("SQLITE_BUSY"), "{err}");
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    assert_eq!(store.compact(5, 1_000).await.unwrap().removed, 2);
}
