//! A second process appending while this one compacts and prunes a store
//! never waits out its busy timeout (CONTRACT §25; the write lock is held
//! for one bounded maintenance step at a time, never for a whole pass).
//!
//! The parent test preloads a store, starts this test binary again as the
//! second process, running only the ignored `child_appends_until_told`
//! test, and compacts and prunes while the child appends single durable
//! events to a run of its own with a busy timeout of three seconds, well
//! below what the whole pass takes. The child writes down every answer and every
//! error; the parent then checks there was no error and that every
//! acknowledged event is stored at its seq.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use runstore_conformance::support;
use runstore_core::{
    Durability, EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, RunStatus,
    SnapshotId, SnapshotRecord, SnapshotStore, Tenant,
};
use runstore_sqlite::{SqliteOptions, SqliteStore};

const DB_VAR: &str = "RUNSTORE_SQLITE_MAINT_DB";
const STREAMS: u64 = 100;
const EVENTS_PER_STREAM: u64 = 2_500;
const SNAPSHOTS_PER_STREAM: u64 = 40;
/// The child's busy timeout, well below what the pass takes and above the
/// second the pass holds the lock before a pause: a maintenance
/// transaction holding the lock this long, or transactions following each
/// other with no gap its busy handler can find, would fail its append.
const CHILD_BUSY_TIMEOUT: Duration = Duration::from_secs(3);

fn tenant() -> Tenant {
    Tenant::new("org-maint", "ws-maint", None).expect("valid tenant")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn marker_file(db: &Path, name: &str) -> PathBuf {
    db.with_file_name(name)
}

/// What the child saw: each appended id with its seq, and each error.
type ChildReport = (Vec<(String, u64)>, Vec<String>);

/// The second process, killed should the parent test fail before it tells
/// the child to stop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
#[ignore = "the second process of a_second_process_appends_through_compaction_and_prune; run by it"]
fn child_appends_until_told() {
    let db = std::env::var_os(DB_VAR)
        .map(PathBuf::from)
        .expect("RUNSTORE_SQLITE_MAINT_DB names the database (set by the parent test)");
    let report: ChildReport = runtime().block_on(async {
        let options = SqliteOptions::default().with_busy_timeout(CHILD_BUSY_TIMEOUT);
        let store = SqliteStore::open_with(&db, options)
            .await
            .expect("open the shared database");
        std::fs::write(marker_file(&db, "child.ready"), b"ready").expect("write the ready file");
        let (tenant, run) = (tenant(), RunId::new("child-run").expect("run id"));
        let (mut stored, mut errors) = (Vec::new(), Vec::new());
        let started = Instant::now();
        let mut n = 0u64;
        while !marker_file(&db, "parent.done").exists() {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "the parent never finished its maintenance"
            );
            n += 1;
            let id = format!("child-{n}");
            let event = EventRecord::new(
                &tenant,
                run.clone(),
                EventId::new(id.clone()).expect("valid id"),
                "maintenance.beside",
                u64::MAX >> 2,
            );
            match store.append(&tenant, &event).await {
                Ok(outcome) => stored.push((id, outcome.seq)),
                Err(err) => errors.push(err.to_string()),
            }
        }
        (stored, errors)
    });
    let text = serde_json::to_string(&report).expect("report serializes");
    std::fs::write(marker_file(&db, "child.json"), text).expect("write the report");
}

#[test]
fn a_second_process_appends_through_compaction_and_prune() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("shared.sqlite");
    let runtime = runtime();
    let tenant = tenant();
    runtime.block_on(async {
        let relaxed = SqliteOptions::default().with_durability(Durability::Relaxed);
        let store = SqliteStore::open_with(&db, relaxed).await.expect("open");
        for stream in 0..STREAMS {
            let run = RunId::new(format!("run-{stream}")).expect("run id");
            let events: Vec<_> = (1..=EVENTS_PER_STREAM)
                .map(|n| {
                    EventRecord::new(
                        &tenant,
                        run.clone(),
                        EventId::new(format!("e-{stream}-{n}")).expect("id"),
                        "maintenance.beside",
                        n,
                    )
                })
                .collect();
            for chunk in events.chunks(500) {
                store
                    .append_batch(&tenant, &run, chunk, None)
                    .await
                    .expect("preload");
            }
            for n in 1..=SNAPSHOTS_PER_STREAM {
                let snapshot = SnapshotRecord::new(
                    &tenant,
                    run.clone(),
                    SnapshotId::new(format!("s-{n}")).expect("id"),
                    EVENTS_PER_STREAM,
                    n,
                    RunStatus::Running,
                );
                store.put(&tenant, &snapshot).await.expect("put");
            }
        }
    });
    let mut child = Child(
        support::child_command("child_appends_until_told", [(DB_VAR, db.as_os_str())])
            .expect("the test binary's path")
            .spawn()
            .expect("spawn the second process"),
    );
    let started = Instant::now();
    while !marker_file(&db, "child.ready").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the second process never opened the database"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (pruned, deleted) = runtime.block_on(async {
        let store = SqliteStore::open(&db).await.expect("open durable");
        // Every preloaded event but each stream's last is below the
        // snapshot floor and old enough.
        let pruned = store
            .compact(1, EVENTS_PER_STREAM + 1)
            .await
            .expect("compact");
        let deleted = store.prune(1, 1, 1_000).await.expect("prune");
        (pruned, deleted)
    });
    let pass = started.elapsed();
    std::fs::write(marker_file(&db, "parent.done"), b"done").expect("write the done file");
    let status = child.0.wait().expect("wait for the second process");
    assert!(status.success(), "the second process failed: {status}");
    // A pass shorter than the child's busy timeout could not make it give
    // up, whatever it did with the lock.
    assert!(
        pass > CHILD_BUSY_TIMEOUT,
        "the pass took {pass:?}, too short to test the busy timeout"
    );
    assert!(
        pruned.is_clean() && deleted.is_clean(),
        "{pruned:?} {deleted:?}"
    );
    assert_eq!(pruned.removed as u64, STREAMS * (EVENTS_PER_STREAM - 1));
    assert_eq!(deleted.removed as u64, STREAMS * (SNAPSHOTS_PER_STREAM - 1));

    let text = std::fs::read_to_string(marker_file(&db, "child.json")).expect("child report");
    let (stored, errors): ChildReport = serde_json::from_str(&text).expect("parse the report");
    eprintln!(
        "maintenance took {pass:?} beside {} appends of the second process",
        stored.len()
    );
    assert!(
        errors.is_empty(),
        "the second process was refused: {errors:?}"
    );
    assert!(!stored.is_empty(), "the second process appended nothing");
    let records = runtime.block_on(async {
        let store = SqliteStore::open(&db).await.expect("reopen");
        let run = RunId::new("child-run").expect("run id");
        store
            .read(&tenant, &run, ReadQuery::all())
            .await
            .expect("read")
    });
    let read: Vec<(String, u64)> = records
        .iter()
        .map(|record| (record.event_id.as_str().to_owned(), record.seq))
        .collect();
    assert_eq!(read, stored, "every acknowledged append, at its seq");
}
