//! CONTRACT §18: while a store is open, another process opening the same
//! file gets `Locked` naming the file; once the handle is dropped, it opens.
//!
//! The other process is this test binary again, running only the ignored
//! `child_opens_the_store` case with the path and the expected outcome in
//! environment variables. A second open in the same process is the
//! conformance suite's `a_second_open_is_locked_until_the_handle_is_dropped`.

use std::{ffi::OsStr, path::Path};

use runstore_conformance::support;
use runstore_core::{Error, EventId, EventLog, EventLogExt, EventRecord, RunId, Tenant};
use runstore_redb::RedbStore;

const PATH_VAR: &str = "RUNSTORE_REDB_CHILD_PATH";
const EXPECT_VAR: &str = "RUNSTORE_REDB_CHILD_EXPECT";
const CHILD: &str = "child_opens_the_store";

/// Runs `CHILD` in a new process against `path`, expecting `expect`
/// (`locked` or `open`); returns its stdout.
fn run_child(path: &Path, expect: &str) -> String {
    let output = support::rerun_as_child(
        CHILD,
        [
            (PATH_VAR, path.as_os_str()),
            (EXPECT_VAR, OsStr::new(expect)),
        ],
    )
    .expect("spawn the child process");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "child expecting {expect} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran no case:\n{stdout}"
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_gets_locked_until_the_handle_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.redb");
    let store = RedbStore::open(&path).await.unwrap();
    let tenant = Tenant::local();
    let run = RunId::new("run-1").unwrap();
    let event = EventRecord::new(&tenant, run.clone(), EventId::new("e-1").unwrap(), "t", 1);
    store.append(&tenant, &event).await.unwrap();

    let stdout = run_child(&path, "locked");
    assert!(stdout.contains("child: locked"), "{stdout}");

    // The lock goes with the last clone of the handle.
    let clone = store.clone();
    drop(store);
    assert_eq!(clone.next_seq(&tenant, &run).await.unwrap(), 2);
    drop(clone);
    let stdout = run_child(&path, "open");
    assert!(stdout.contains("child: opened, next seq 2"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in a child process by a_second_process_gets_locked_until_the_handle_is_dropped"]
async fn child_opens_the_store() {
    let path = std::env::var_os(PATH_VAR)
        .unwrap_or_else(|| panic!("{PATH_VAR} names the store; this case runs as a child"));
    let expect = std::env::var(EXPECT_VAR).unwrap_or_default();
    let opened = RedbStore::open(&path).await;
    match (expect.as_str(), opened) {
        ("locked", Err(Error::Locked { resource })) => {
            assert_eq!(
                Path::new(&resource),
                Path::new(&path),
                "Locked names the file"
            );
            println!("child: locked ({resource})");
        }
        ("open", Ok(store)) => {
            let next = store
                .next_seq(&Tenant::local(), &RunId::new("run-1").unwrap())
                .await
                .unwrap();
            println!("child: opened, next seq {next}");
        }
        (expect, other) => panic!("child expected {expect:?}, got {other:?}"),
    }
}
