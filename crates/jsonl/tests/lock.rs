//! The directory lock keeps another process out (CONTRACT §18).
//!
//! Alone in its test binary: while a child is being spawned it briefly holds
//! copies of this process's descriptors, lock files included, which would
//! make a concurrent reopen in another test see `Locked`.

use runstore_conformance::support;
use runstore_core::Error;
use runstore_jsonl::JsonlStore;

/// Tells the child process which directory to open.
const CHILD_DIR: &str = "RUNSTORE_JSONL_LOCK_TEST_DIR";
/// The child's name, as the test harness knows it.
const CHILD: &str = "child_process_opens_the_store";

/// The child: opens the directory named by [`CHILD_DIR`] and reports by exit
/// code (0 opened, 3 locked, 4 other error) and a line on stdout.
#[tokio::test]
#[ignore = "the child half of a_second_process_gets_locked; run by it"]
async fn child_process_opens_the_store() {
    let dir = std::env::var_os(CHILD_DIR).expect("run by a_second_process_gets_locked");
    match JsonlStore::open(&dir).await {
        Ok(_store) => {
            println!("OPENED");
            std::process::exit(0);
        }
        Err(Error::Locked { resource }) => {
            println!("LOCKED {resource}");
            std::process::exit(3);
        }
        Err(other) => {
            println!("ERROR {other}");
            std::process::exit(4);
        }
    }
}

fn run_child(dir: &std::path::Path) -> (Option<i32>, String) {
    let output = support::rerun_as_child(CHILD, [(CHILD_DIR, dir)]).unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test]
async fn a_second_process_gets_locked() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let store = JsonlStore::open(&dir).await.unwrap();

    let (code, stdout) = run_child(&dir);
    assert_eq!(code, Some(3), "child should be locked out: {stdout}");
    let line = stdout.lines().find(|l| l.starts_with("LOCKED")).unwrap();
    assert!(line.contains(&dir.display().to_string()), "{line}");

    drop(store);
    let (code, stdout) = run_child(&dir);
    assert_eq!(
        code,
        Some(0),
        "child should open once the handle is gone: {stdout}"
    );
}
