//! CONTRACT §16: an append that returned `Ok` survives the process dying
//! without closing the store, in the default (durable) mode and in the
//! relaxed one, which skips the fsync but not the write to the file.
//!
//! A child process (this test binary again, running only the ignored
//! `child_appends_then_aborts` case) opens the store in the mode the parent
//! names, appends events, reports each one it got `Ok` for, and aborts
//! without dropping the store. The parent then reopens the file and finds
//! every reported event.

use std::{ffi::OsStr, path::Path};

use runstore_conformance::support;

use runstore_core::{
    Durability, EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, Tenant,
};
use runstore_redb::{RedbOptions, RedbStore};

const PATH_VAR: &str = "RUNSTORE_REDB_CRASH_PATH";
const MODE_VAR: &str = "RUNSTORE_REDB_CRASH_MODE";
const CHILD: &str = "child_appends_then_aborts";
const EVENTS: u64 = 200;

fn run_id() -> RunId {
    RunId::new("crash-run").unwrap()
}

fn run_child(path: &Path, mode: &str) -> Vec<u64> {
    let output = support::rerun_as_child(
        CHILD,
        [(PATH_VAR, path.as_os_str()), (MODE_VAR, OsStr::new(mode))],
    )
    .expect("spawn the child process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success(),
        "the child should have aborted:\n{stdout}"
    );
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("acked "))
        .map(|seq| seq.trim().parse().expect("a seq"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_an_aborted_process() {
    check_after_abort("durable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_relaxed_appends_survive_an_aborted_process() {
    check_after_abort("relaxed").await;
}

/// Runs the child in `mode`, then reopens its file and checks that every
/// append it reported is stored at its seq.
async fn check_after_abort(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.redb");
    let acked = run_child(&path, mode);
    assert_eq!(
        acked,
        (1..=EVENTS).collect::<Vec<_>>(),
        "the child reported"
    );

    let store = RedbStore::open(&path).await.unwrap();
    let tenant = Tenant::local();
    let records = store
        .read(&tenant, &run_id(), ReadQuery::all())
        .await
        .unwrap();
    let seqs: Vec<u64> = records.iter().map(|record| record.seq).collect();
    assert_eq!(seqs, acked, "every acknowledged append is stored");
    let again = EventRecord::new(&tenant, run_id(), EventId::new("e-1").unwrap(), "t", 0);
    let outcome = store.append(&tenant, &again).await.unwrap();
    assert_eq!((outcome.seq, outcome.inserted), (1, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in a child process by acknowledged_appends_survive_an_aborted_process"]
async fn child_appends_then_aborts() {
    let path = std::env::var_os(PATH_VAR)
        .unwrap_or_else(|| panic!("{PATH_VAR} names the store; this case runs as a child"));
    let durability = match std::env::var(MODE_VAR).as_deref() {
        Ok("relaxed") => Durability::Relaxed,
        Ok("durable") => Durability::Durable,
        other => panic!("{MODE_VAR} is durable or relaxed, not {other:?}"),
    };
    let options = RedbOptions::default().with_durability(durability);
    let store = RedbStore::open_with(&path, options).await.unwrap();
    let tenant = Tenant::local();
    for n in 1..=EVENTS {
        let event = EventRecord::new(
            &tenant,
            run_id(),
            EventId::new(format!("e-{n}")).unwrap(),
            "t",
            n,
        );
        let outcome = store.append(&tenant, &event).await.unwrap();
        println!("acked {}", outcome.seq);
    }
    // No drop, no clean close: the process dies with the store open.
    std::process::abort();
}
