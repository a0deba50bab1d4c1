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
