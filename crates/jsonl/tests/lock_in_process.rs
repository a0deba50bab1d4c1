//! A second open of a locked directory in the same process fails too, and
//! the lock is released when the last clone of the handle is dropped
//! (CONTRACT §18, §20).

use runstore_core::Error;
use runstore_jsonl::JsonlStore;

#[tokio::test]
async fn a_second_open_in_one_process_gets_locked() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let store = JsonlStore::open(&dir).await.unwrap();
    let clone = store.clone();
    match JsonlStore::open(&dir).await {
        Err(Error::Locked { resource }) => {
            assert!(resource.contains(&dir.display().to_string()), "{resource}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(store);
    assert!(
        matches!(JsonlStore::open(&dir).await, Err(Error::Locked { .. })),
        "a live clone keeps the lock"
    );
    drop(clone);
    JsonlStore::open(&dir).await.unwrap();
}

/// The last handle dropped inside a task of a multi-thread runtime waits for
/// the writer off the worker's other tasks, and the lock is free as soon as
/// the drop returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_inside_a_task_releases_the_lock_for_a_reopen() {
    use runstore_core::{EventId, EventLogExt, EventRecord, RunId, Tenant};

    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    for round in 0..3u64 {
        let dir = dir.clone();
        tokio::spawn(async move {
            let store = JsonlStore::open(&dir).await.unwrap();
            let tenant = Tenant::local();
            let id = EventId::new(format!("e{round}")).unwrap();
            let event = EventRecord::new(&tenant, RunId::new("run").unwrap(), id, "t", 1);
            assert_eq!(store.append(&tenant, &event).await.unwrap().seq, round + 1);
            drop(store);
            JsonlStore::open(&dir).await.unwrap();
        })
        .await
        .unwrap();
    }
    // On the runtime's own `block_on` thread too.
    drop(JsonlStore::open(&dir).await.unwrap());
    JsonlStore::open(&dir).await.unwrap();
}

/// On a current-thread runtime the drop is a plain join.
#[tokio::test]
async fn dropping_on_a_current_thread_runtime_releases_the_lock() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            drop(JsonlStore::open(&dir).await.unwrap());
            JsonlStore::open(&dir).await.unwrap();
        })
        .await;
}
