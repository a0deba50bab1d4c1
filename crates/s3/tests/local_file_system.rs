//! `LocalFileSystem` has create-if-absent but no update-if-match: a stream's
//! first append (which creates its head) works, and every later commit fails
//! with a non-retryable backend error instead of writing unsafely
//! (docs/backends/s3.md, "Limits"). Snapshots still work.

use std::sync::Arc;

use object_store::local::LocalFileSystem;
use runstore_core::{
    Error, EventId, EventLog, EventRecord, ReadQuery, RunId, RunStatus, SnapshotId, SnapshotRecord,
    SnapshotStore, Tenant,
};
use runstore_s3::S3Store;

#[tokio::test]
async fn commits_that_need_update_if_match_fail_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let fs = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    let store = S3Store::new(Arc::new(fs), "store").unwrap();
    let tenant = Tenant::local();
    let run = RunId::new("run").unwrap();
    let event =
        |id: &str| EventRecord::new(&tenant, run.clone(), EventId::new(id).unwrap(), "step", 1);

    let first = store
        .append_batch(&tenant, &run, &[event("a")], None)
        .await
        .unwrap();
    assert_eq!(first[0].seq, 1);
    let err = store
        .append_batch(&tenant, &run, &[event("b")], None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Backend {
                retryable: false,
                ..
            }
        ),
        "{err}"
    );
    let records = store.read(&tenant, &run, ReadQuery::all()).await.unwrap();
    assert_eq!(records.len(), 1);

    // A snapshot put stores the snapshot; the head change that fences
    // compaction is not needed where no compaction can commit.
    let snapshot = SnapshotRecord::new(
        &tenant,
        run.clone(),
        SnapshotId::new("s").unwrap(),
        1,
        1,
        RunStatus::Running,
    );
    store.put(&tenant, &snapshot).await.unwrap();
    let stored = store
        .get(&tenant, &run, &snapshot.snapshot_id)
        .await
        .unwrap();
    assert_eq!(stored.map(|snapshot| snapshot.seq), Some(1));
}
