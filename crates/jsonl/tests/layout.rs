//! Snapshot logs stay inside the store directory, one per run, whatever
//! the ids (CONTRACT §19).

mod common;

use std::path::PathBuf;

use common::files;
use runstore_core::{RunId, RunStatus, SnapshotId, SnapshotRecord, SnapshotStore, Tenant};
use runstore_jsonl::JsonlStore;

#[tokio::test]
async fn hostile_ids_map_to_distinct_files_under_the_snapshot_root() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("nested").join("store");
    let store = JsonlStore::open(&dir).await.unwrap();
    let long = "L".repeat(1024);
    let tenants = [
        Tenant::new("../org", "..", None).unwrap(),
        Tenant::new("ORG", "w/s", Some("d".into())).unwrap(),
    ];
    let ids = [
        "../../escape",
        "a/b",
        "a_b",
        "A",
        "a",
        ".",
        "CON",
        "nul",
        &long,
        "🦀 x",
    ];
    for tenant in &tenants {
        for id in ids {
            let snapshot = SnapshotRecord::new(
                tenant,
                RunId::new(id).unwrap(),
                SnapshotId::new(id).unwrap(),
                1,
                1,
                RunStatus::Running,
            );
            store.put(tenant, &snapshot).await.unwrap();
        }
    }
    let snapshot_files: Vec<PathBuf> = files(&dir.join("snapshots"));
    assert_eq!(snapshot_files.len(), tenants.len() * ids.len());
    let folded: std::collections::HashSet<String> = snapshot_files
        .iter()
        .map(|p| p.display().to_string().to_lowercase())
        .collect();
    assert_eq!(
        folded.len(),
        snapshot_files.len(),
        "distinct even case-folded"
    );
    for file in &snapshot_files {
        let relative = file.strip_prefix(dir.join("snapshots")).unwrap();
        assert_eq!(relative.components().count(), 3, "{}", file.display());
        assert!(file.ends_with("snapshots.jsonl"), "{}", file.display());
    }
    // Nothing was written outside the store directory.
    let outside: Vec<PathBuf> = files(temp.path())
        .into_iter()
        .filter(|p| !p.starts_with(&dir))
        .collect();
    assert!(outside.is_empty(), "{outside:?}");
    drop(store);
    // Reopen indexes the same snapshots.
    let store = JsonlStore::open(&dir).await.unwrap();
    for tenant in &tenants {
        for id in ids {
            let run = RunId::new(id).unwrap();
            let found = store.list(tenant, &run, None).await.unwrap();
            assert_eq!(found.len(), 1, "{tenant} {id}");
            assert_eq!(found[0].snapshot_id, id);
        }
    }
}
