//! Snapshot versions (docs/backends/s3.md, "Key layout", "Snapshots"): a
//! snapshot stored at the bare id key, as before keys carried versions,
//! stays readable and is the oldest version of its id; a version that a
//! put replaced but did not delete is never read, and prune removes it
//! without counting it.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::{ObjectStore, PutPayload, memory::InMemory, path::Path};
use runstore_core::{
    RunId, RunStatus, SnapshotId, SnapshotRecord, SnapshotStore, SnapshotStoreExt, Tenant,
};
use runstore_s3::S3Store;

fn tenant() -> Tenant {
    Tenant::new("acme", "prod", None).unwrap()
}

fn run() -> RunId {
    RunId::new("run").unwrap()
}

fn snapshot(id: &str, seq: u64, created_at_ms: u64) -> SnapshotRecord {
    SnapshotRecord::new(
        &tenant(),
        run(),
        SnapshotId::new(id).unwrap(),
        seq,
        created_at_ms,
        RunStatus::Running,
    )
}

/// The stream's snapshot directory under prefix `p`.
fn dir() -> Path {
    Path::from("p/snap/vacme.prod/vrun")
}

/// Stores `record` at the bare key of its id, as a store that wrote no
/// versions did.
async fn put_legacy(bucket: &InMemory, record: &SnapshotRecord) {
    let path = dir().child(format!("v{}", record.snapshot_id.as_str()));
    let bytes = serde_json::to_vec(record).unwrap();
    bucket.put(&path, PutPayload::from(bytes)).await.unwrap();
}

/// The names of the objects in the stream's snapshot directory, sorted.
async fn names(bucket: &InMemory) -> Vec<String> {
    let mut names: Vec<String> = bucket
        .list(Some(&dir()))
        .map_ok(|meta| meta.location.filename().unwrap().to_owned())
        .try_collect()
        .await
        .unwrap();
    names.sort();
    names
}

#[tokio::test]
async fn a_snapshot_stored_without_a_version_is_read_replaced_and_pruned() {
    let bucket = Arc::new(InMemory::new());
    let store = S3Store::new(bucket.clone(), "p").unwrap();
    let old = snapshot("s", 1, 10);
    put_legacy(&bucket, &old).await;
    let id = SnapshotId::new("s").unwrap();
    assert_eq!(
        store.get(&tenant(), &run(), &id).await.unwrap(),
        Some(old.clone())
    );
    assert_eq!(
        store.list(&tenant(), &run(), None).await.unwrap(),
        std::slice::from_ref(&old)
    );
    assert_eq!(
        store.latest(&tenant(), &run()).await.unwrap(),
        Some(old.clone())
    );

    // Pruned like any other snapshot.
    let report = store.prune(100, 0, 1_000).await.unwrap();
    assert_eq!(report.removed, 1);
    assert_eq!(store.get(&tenant(), &run(), &id).await.unwrap(), None);
    assert!(names(&bucket).await.is_empty());

    // Replaced by a put, which deletes it.
    put_legacy(&bucket, &old).await;
    let new = snapshot("s", 2, 20);
    store.put(&tenant(), &new).await.unwrap();
    assert_eq!(
        store.get(&tenant(), &run(), &id).await.unwrap(),
        Some(new.clone())
    );
    let stored = names(&bucket).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(
        stored[0].starts_with("vs.00000000000000000001."),
        "{stored:?}"
    );
}

#[tokio::test]
async fn a_replaced_version_left_behind_is_never_read_and_prune_removes_it() {
    let bucket = Arc::new(InMemory::new());
    let store = S3Store::new(bucket.clone(), "p").unwrap();
    let new = snapshot("s", 2, 20);
    store.put(&tenant(), &new).await.unwrap();
    store.put(&tenant(), &snapshot("t", 1, 10)).await.unwrap();
    // An older version of `s` still there, as when the replacing put's
    // delete failed: the newest version is the snapshot.
    put_legacy(&bucket, &snapshot("s", 9, 90)).await;
    assert_eq!(names(&bucket).await.len(), 3);
    let id = SnapshotId::new("s").unwrap();
    assert_eq!(
        store.get(&tenant(), &run(), &id).await.unwrap(),
        Some(new.clone())
    );
    let listed = store.list(&tenant(), &run(), None).await.unwrap();
    let seqs: Vec<u64> = listed.iter().map(|snapshot| snapshot.seq).collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(
        store.latest(&tenant(), &run()).await.unwrap(),
        Some(new.clone())
    );

    // Nothing is old enough to go; the replaced version goes uncounted.
    let report = store.prune(100, 0, 100).await.unwrap();
    assert_eq!(report.removed, 0);
    assert_eq!(names(&bucket).await.len(), 2);
    assert_eq!(store.get(&tenant(), &run(), &id).await.unwrap(), Some(new));
    // The next put of `s` numbers its version after the newest it lists.
    store.put(&tenant(), &snapshot("s", 3, 30)).await.unwrap();
    let stored = names(&bucket).await;
    assert!(
        stored[0].starts_with("vs.00000000000000000002."),
        "{stored:?}"
    );
    assert!(
        stored[1].starts_with("vt.00000000000000000001."),
        "{stored:?}"
    );
}

/// Stores `record` as version `number` with `token`, at the key a store
/// wrote before keys stated the snapshot's seq and creation time:
/// `<id>.<number:020>.<token>`.
async fn put_unordered(bucket: &InMemory, record: &SnapshotRecord, number: u64, token: &str) {
    let path = dir().child(format!(
        "v{}.{number:020}.{token}",
        record.snapshot_id.as_str()
    ));
    let bytes = serde_json::to_vec(record).unwrap();
    bucket.put(&path, PutPayload::from(bytes)).await.unwrap();
}

#[tokio::test]
async fn versions_written_before_keys_stated_the_order_are_read_among_new_ones() {
    let bucket = Arc::new(InMemory::new());
    let store = S3Store::new(bucket.clone(), "p").unwrap();
    // The previous layout: `a` is the newest snapshot, `b` was replaced
    // (its version 2 is newest), `c` is at the bare key.
    put_unordered(&bucket, &snapshot("a", 9, 90), 1, "t1").await;
    put_unordered(&bucket, &snapshot("b", 8, 5), 1, "t2").await;
    put_unordered(&bucket, &snapshot("b", 3, 30), 2, "t3").await;
    put_legacy(&bucket, &snapshot("c", 1, 10)).await;
    // New puts, whose keys state seq and creation time.
    store.put(&tenant(), &snapshot("d", 5, 50)).await.unwrap();
    store.put(&tenant(), &snapshot("e", 7, 70)).await.unwrap();
    let seqs = |listed: Vec<SnapshotRecord>| -> Vec<(String, u64)> {
        listed
            .into_iter()
            .map(|snapshot| (snapshot.snapshot_id.as_str().to_owned(), snapshot.seq))
            .collect()
    };
    let all = store.list(&tenant(), &run(), None).await.unwrap();
    assert_eq!(
        seqs(all),
        [("c", 1), ("b", 3), ("d", 5), ("e", 7), ("a", 9)].map(|(id, seq)| (id.to_owned(), seq))
    );
    let latest = store.latest(&tenant(), &run()).await.unwrap().unwrap();
    assert_eq!(latest.snapshot_id.as_str(), "a");
    let newest = store.list(&tenant(), &run(), Some(2)).await.unwrap();
    assert_eq!(
        seqs(newest),
        [("e", 7), ("a", 9)].map(|(id, seq)| (id.to_owned(), seq))
    );
    // A new put of `a`, at a lower seq, replaces the old-layout version.
    store.put(&tenant(), &snapshot("a", 2, 95)).await.unwrap();
    let latest = store.latest(&tenant(), &run()).await.unwrap().unwrap();
    assert_eq!(latest.snapshot_id.as_str(), "e");
    // Prune keeps the newest two by order (`d`, `e`), and deletes the old
    // ones of both layouts and `b`'s replaced version.
    let report = store.prune(100, 2, 1_000).await.unwrap();
    assert_eq!(report.removed, 3, "{report:?}");
    let all = store.list(&tenant(), &run(), None).await.unwrap();
    assert_eq!(
        seqs(all),
        [("d", 5), ("e", 7)].map(|(id, seq)| (id.to_owned(), seq))
    );
    assert_eq!(names(&bucket).await.len(), 2);
}

#[tokio::test]
async fn a_snapshot_whose_key_misstates_its_order_is_corrupt() {
    let bucket = Arc::new(InMemory::new());
    let store = S3Store::new(bucket.clone(), "p").unwrap();
    store.put(&tenant(), &snapshot("s", 4, 40)).await.unwrap();
    let name = names(&bucket).await.remove(0);
    // The same key with another seq: the object there says 4.
    let (kept, _) = name.rsplit_once('.').unwrap();
    let (kept, _) = kept.rsplit_once('.').unwrap();
    let moved = dir().child(format!("{kept}.{:020}.{:020}", 99, 40));
    let bytes = bucket.get(&dir().child(name.as_str())).await.unwrap();
    bucket
        .put(&moved, PutPayload::from(bytes.bytes().await.unwrap()))
        .await
        .unwrap();
    let err = store.latest(&tenant(), &run()).await.unwrap_err();
    assert!(
        err.to_string().contains("its key states 99 and 40"),
        "{err}"
    );
}
