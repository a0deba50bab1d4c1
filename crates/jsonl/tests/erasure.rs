//! A deleted run's records and snapshots leave the files, not only the
//! answers (CONTRACT §27): the log is rewritten before `delete_run`
//! returns, and a deletion cut short after its marker is finished by the
//! next rewrite.

mod common;

use std::path::{Path, PathBuf};

use common::files;
use runstore_core::{
    EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, RunStatus, SnapshotId,
    SnapshotRecord, SnapshotStore, StorageExt, Tenant, raw::erasure::erasure_marker,
};
use runstore_jsonl::JsonlStore;
use serde_json::json;

const SECRET: &str = "s3cr3t";

/// The files under `dir` whose bytes hold `needle`.
fn holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap();
            bytes
                .windows(needle.len())
                .any(|window| window == needle.as_bytes())
        })
        .collect()
}

fn event(tenant: &Tenant, run: &str, id: &str, at: u64) -> EventRecord {
    EventRecord::new(
        tenant,
        RunId::new(run).unwrap(),
        EventId::new(id).unwrap(),
        "step",
        at,
    )
    .with_payload(json!({ "note": format!("{SECRET} {id}") }))
}

/// Three events of run `gone` (ids and payloads holding the secret), one
/// of run `kept`.
async fn fill(store: &JsonlStore, tenant: &Tenant) {
    for n in 1..=3 {
        store
            .append(tenant, &event(tenant, "gone", &format!("{SECRET}-{n}"), 5))
            .await
            .unwrap();
    }
    let kept = event(tenant, "kept", "k1", 5).with_payload(json!({ "note": "public" }));
    store.append(tenant, &kept).await.unwrap();
}

#[tokio::test]
async fn a_deleted_run_leaves_no_byte_of_its_records_or_snapshots() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let tenant = Tenant::local();
    let gone = RunId::new("gone").unwrap();
    {
        let store = JsonlStore::open(&dir).await.unwrap();
        fill(&store, &tenant).await;
        let snapshot = SnapshotRecord::new(
            &tenant,
            gone.clone(),
            SnapshotId::new("snap").unwrap(),
            2,
            1,
            RunStatus::Running,
        )
        .with_checkpoint(json!({ "state": SECRET }));
        store.put(&tenant, &snapshot).await.unwrap();
        // The first event of `gone` (below its snapshot) and `kept`'s are
        // pruned into markers; `gone`'s remembers its id.
        assert_eq!(store.compact(1, 10).await.unwrap().removed, 2);
        assert!(!holding(&dir, SECRET).is_empty());

        let erased = store.erase_run(&tenant, &gone).await.unwrap();
        assert_eq!((erased.events, erased.snapshots), (2, 1));
        assert_eq!(holding(&dir, SECRET), Vec::<PathBuf>::new());
        assert!(
            !files(&dir).iter().any(|path| path
                .components()
                .any(|part| part.as_os_str().to_string_lossy().contains("gone"))),
            "the run's snapshot directory is gone: {:?}",
            files(&dir)
        );
    }
    let store = JsonlStore::open(&dir).await.unwrap();
    let records = store.read(&tenant, &gone, ReadQuery::all()).await.unwrap();
    assert_eq!(records, vec![erasure_marker(&tenant, &gone, 3)]);
    assert_eq!(
        store.list_runs(&tenant).await.unwrap(),
        vec![RunId::new("kept").unwrap()]
    );
}

#[tokio::test]
async fn a_deletion_cut_short_after_its_marker_is_finished_by_the_next_rewrite() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let tenant = Tenant::local();
    let gone = RunId::new("gone").unwrap();
    let store = JsonlStore::open(&dir).await.unwrap();
    fill(&store, &tenant).await;
    drop(store);
    // What a deletion leaves when the process dies after its first step:
    // the erasure marker appended and synced, the log not yet rewritten.
    // The marker's line states its feed position, after the tenant's last.
    let log = dir.join("events.jsonl");
    let mut bytes = std::fs::read(&log).unwrap();
    let head = bytes
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            serde_json::from_slice::<serde_json::Value>(line).unwrap()["feed_position"]
                .as_u64()
                .unwrap()
        })
        .max()
        .unwrap();
    let marker = serde_json::to_vec(&erasure_marker(&tenant, &gone, 3)).unwrap();
    bytes.extend_from_slice(format!("{{\"feed_position\":{},", head + 1).as_bytes());
    bytes.extend_from_slice(&marker[1..]);
    bytes.push(b'\n');
    std::fs::write(&log, &bytes).unwrap();

    let store = JsonlStore::open(&dir).await.unwrap();
    let records = store.read(&tenant, &gone, ReadQuery::all()).await.unwrap();
    assert_eq!(records, vec![erasure_marker(&tenant, &gone, 3)]);
    assert_eq!(
        store
            .seq_of(
                &tenant,
                &gone,
                &EventId::new(format!("{SECRET}-1")).unwrap()
            )
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.list_runs(&tenant).await.unwrap(),
        vec![RunId::new("kept").unwrap()]
    );
    assert_eq!(
        holding(&dir, SECRET),
        vec![log.clone()],
        "not rewritten yet"
    );

    // A compaction with nothing old enough still rewrites the log.
    assert_eq!(store.compact(1, 2).await.unwrap().removed, 0);
    assert_eq!(holding(&dir, SECRET), Vec::<PathBuf>::new());
    let next = store
        .append(&tenant, &event(&tenant, "gone", "new", 6))
        .await
        .unwrap();
    assert_eq!((next.seq, next.inserted), (4, true));
    drop(store);
    let store = JsonlStore::open(&dir).await.unwrap();
    let records = store.read(&tenant, &gone, ReadQuery::all()).await.unwrap();
    assert_eq!(
        records.iter().map(|record| record.seq).collect::<Vec<_>>(),
        vec![3, 4]
    );
}
