//! Two processes append to one stream of one database file at the same
//! time (CONTRACT §3): seqs stay gapless and unique, each id is stored once,
//! and every answer names the stored seq.
//!
//! The parent test re-runs this test binary as the second process, running
//! only the ignored `child_appender` test, with environment variables naming
//! the database and where to write its answers. Unlike the conformance
//! suite's cross-process case, both processes open the new file at about
//! the same moment, so the schema migration races too.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use runstore_conformance::support;
use runstore_core::{
    AppendOutcome, EventId, EventLog, EventLogExt, EventRecord, FeedPosition, ReadQuery, RunId,
    StreamKey, Tenant,
};
use runstore_sqlite::SqliteStore;
use serde_json::json;

const DB_VAR: &str = "RUNSTORE_SQLITE_MP_DB";
const ROLE_VAR: &str = "RUNSTORE_SQLITE_MP_ROLE";
const TASKS: usize = 8;
const PER_TASK: usize = 40;

fn tenant() -> Tenant {
    Tenant::new("org-mp", "ws-mp", Some("deploy".to_owned())).expect("valid tenant")
}

fn run() -> RunId {
    RunId::new("shared-run").expect("valid run id")
}

/// The ids task `task` of process `role` appends: mostly its own, and every
/// fourth one an id both processes append.
fn ids(role: &str, task: usize) -> Vec<String> {
    (0..PER_TASK)
        .map(|i| {
            if i % 4 == 3 {
                format!("shared-{task}-{i}")
            } else {
                format!("{role}-{task}-{i}")
            }
        })
        .collect()
}

fn ready_file(db: &Path, role: &str) -> PathBuf {
    db.with_file_name(format!("{role}.ready"))
}

fn answers_file(db: &Path, role: &str) -> PathBuf {
    db.with_file_name(format!("{role}.answers.json"))
}

/// Opens the store, waits until the other process has too, appends with
/// `TASKS` concurrent tasks and writes `{id: [seq, inserted]}` answers.
fn append_as(db: &Path, role: &str, other: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let answers: Vec<(String, u64, bool)> = runtime.block_on(async {
        let store = SqliteStore::open(db)
            .await
            .expect("open the shared database");
        std::fs::write(ready_file(db, role), b"ready").expect("write the ready file");
        let started = Instant::now();
        while !ready_file(db, other).exists() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the other process never opened the database"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut handles = Vec::new();
        for task in 0..TASKS {
            let store = store.clone();
            let role = role.to_owned();
            handles.push(tokio::spawn(async move {
                let tenant = tenant();
                let mut answers = Vec::new();
                for id in ids(&role, task) {
                    let event = EventRecord::new(
                        &tenant,
                        run(),
                        EventId::new(id.clone()).expect("valid id"),
                        "mp.test",
                        1,
                    )
                    .with_payload(json!({ "by": role }));
                    let outcome = store.append(&tenant, &event).await.expect("append");
                    answers.push((id, outcome.seq, outcome.inserted));
                }
                answers
            }));
        }
        let mut answers = Vec::new();
        for handle in handles {
            answers.extend(handle.await.expect("appender task"));
        }
        answers
    });
    let text = serde_json::to_string(&answers).expect("answers serialize");
    std::fs::write(answers_file(db, role), text).expect("write the answers");
}

#[test]
#[ignore = "the second process of two_processes_append_to_one_stream; run by it"]
fn child_appender() {
    let db = std::env::var_os(DB_VAR)
        .map(PathBuf::from)
        .expect("RUNSTORE_SQLITE_MP_DB names the database (set by the parent test)");
    let role = std::env::var(ROLE_VAR).expect("RUNSTORE_SQLITE_MP_ROLE is set by the parent");
    append_as(&db, &role, "parent");
}

#[test]
fn two_processes_append_to_one_stream() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("shared.sqlite");
    let mut child = support::child_command(
        "child_appender",
        [(DB_VAR, db.as_os_str()), (ROLE_VAR, OsStr::new("child"))],
    )
    .expect("the test binary's path")
    .spawn()
    .expect("spawn the second process");
    // Both processes open the new file at about the same moment, so the
    // schema migration races too.
    append_as(&db, "parent", "child");
    let status = child.wait().expect("wait for the second process");
    assert!(status.success(), "the second process failed: {status}");

    let mut answers: Vec<(String, u64, bool)> = Vec::new();
    for role in ["parent", "child"] {
        let text = std::fs::read_to_string(answers_file(&db, role)).expect("read answers");
        answers.extend(serde_json::from_str::<Vec<(String, u64, bool)>>(&text).expect("parse"));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (records, feed) = runtime.block_on(async {
        let store = SqliteStore::open(&db).await.expect("reopen");
        let records = store
            .read(&tenant(), &run(), ReadQuery::all())
            .await
            .expect("read");
        let feed = store
            .read_feed(&tenant(), FeedPosition::START, usize::MAX)
            .await
            .expect("read the feed");
        (records, feed)
    });
    // CONTRACT §29: the two processes' commits took the tenant's positions
    // one after another, under SQLite's write lock: one stream's records
    // have positions 1..n in seq order, and no write that stored nothing
    // (a duplicate, a guard that found the stream moved on) took one.
    let positions: Vec<(u64, u64)> = feed
        .iter()
        .map(|entry| (entry.position.parts().1, entry.record.seq))
        .collect();
    let expected: Vec<(u64, u64)> = (1..=u64::try_from(records.len()).unwrap())
        .map(|n| (n, n))
        .collect();
    assert_eq!(positions, expected, "feed positions across both processes");

    let check = support::assert_sound_stream(&StreamKey::new(tenant(), run()), &records);
    assert_eq!(
        check.compacted, 0,
        "seqs are exactly 1..n across both processes"
    );
    let answers: Vec<(String, AppendOutcome)> = answers
        .into_iter()
        .map(|(id, seq, inserted)| (id, AppendOutcome { seq, inserted }))
        .collect();
    support::assert_each_event_inserted_once(
        &check,
        answers.iter().map(|(id, outcome)| (id.as_str(), outcome)),
    );
    let by_child = records
        .iter()
        .filter(|record| record.payload["by"] == "child")
        .count();
    let by_parent = records
        .iter()
        .filter(|record| record.payload["by"] == "parent")
        .count();
    assert!(
        by_child > 0 && by_parent > 0,
        "both processes stored events"
    );
    // Each process appends TASKS * PER_TASK ids; the shared quarter is common.
    let distinct = TASKS * PER_TASK * 2 - TASKS * (PER_TASK / 4);
    assert_eq!(records.len(), distinct);
}
