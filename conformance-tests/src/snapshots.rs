//! Snapshots (CONTRACT §12-§15, §19).

use runstore_core::{
    SnapshotRecord, SnapshotStore, SnapshotStoreExt, WorkflowPhase, validate::MAX_TIMESTAMP_MS,
};
use serde_json::json;

use crate::{Harness, removed, run, sid, snapshot, tenant};

fn snapshot_seqs(list: &[SnapshotRecord]) -> Vec<u64> {
    list.iter().map(|snapshot| snapshot.seq).collect()
}

/// CONTRACT §12, §13: `put` stores and replaces by key; `get` finds it or
/// answers `None`.
pub async fn snapshot_put_replaces_and_get_finds(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let t = tenant(1);
    let r = run("run-a");
    assert_eq!(store.get(&t, &r, &sid("s1")).await.expect("get"), None);
    let first = snapshot(&t, "run-a", "s1", 3, 100);
    store.put(&t, &first).await.expect("put");
    assert_eq!(
        store.get(&t, &r, &sid("s1")).await.expect("get"),
        Some(first)
    );
    let replaced = snapshot(&t, "run-a", "s1", 7, 200).with_checkpoint(json!({"v": 2}));
    store.put(&t, &replaced).await.expect("put again");
    assert_eq!(
        store.get(&t, &r, &sid("s1")).await.expect("get"),
        Some(replaced.clone())
    );
    assert_eq!(
        store.list(&t, &r, None).await.expect("list"),
        vec![replaced]
    );
    assert_eq!(
        store.get(&t, &run("run-b"), &sid("s1")).await.expect("get"),
        None
    );
}

/// CONTRACT §13: `list` ascends by seq; a limit keeps the newest; `latest`
/// is the newest.
pub async fn snapshot_list_orders_by_seq_and_keeps_newest(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let t = tenant(1);
    let r = run("run-a");
    assert_eq!(store.latest(&t, &r).await.expect("latest"), None);
    for (id, seq) in [("c", 30), ("a", 10), ("d", 40), ("b", 20)] {
        store
            .put(&t, &snapshot(&t, "run-a", id, seq, seq * 10))
            .await
            .expect("put");
    }
    assert_eq!(
        snapshot_seqs(&store.list(&t, &r, None).await.expect("list")),
        vec![10, 20, 30, 40]
    );
    assert_eq!(
        snapshot_seqs(&store.list(&t, &r, Some(0)).await.expect("list")),
        vec![10, 20, 30, 40]
    );
    assert_eq!(
        snapshot_seqs(&store.list(&t, &r, Some(2)).await.expect("list")),
        vec![30, 40]
    );
    assert_eq!(
        snapshot_seqs(&store.list(&t, &r, Some(9)).await.expect("list")).len(),
        4
    );
    let latest = store
        .latest(&t, &r)
        .await
        .expect("latest")
        .expect("a snapshot");
    assert_eq!(latest.snapshot_id, sid("d"));
    // Equal seqs order by created_at_ms, then snapshot id.
    store
        .put(&t, &snapshot(&t, "run-a", "z-early", 40, 1))
        .await
        .expect("put");
    store
        .put(&t, &snapshot(&t, "run-a", "e-late", 40, 999))
        .await
        .expect("put");
    store
        .put(&t, &snapshot(&t, "run-a", "f-late", 40, 999))
        .await
        .expect("put");
    let ids: Vec<String> = store
        .list(&t, &r, Some(4))
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.snapshot_id.into_string())
        .collect();
    assert_eq!(ids, vec!["z-early", "d", "e-late", "f-late"]);
}

/// CONTRACT §12, the reference's tenant-filter test: another tenant's
/// identical ids never read, list or overwrite a snapshot.
pub async fn snapshots_are_tenant_scoped(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let (a, b) = (tenant(1), tenant(2));
    let r = run("run-a");
    for (seq, t) in [(1, &a), (2, &b), (3, &a)] {
        store
            .put(
                t,
                &snapshot(t, "run-a", &format!("snapshot-{seq}"), seq, seq * 100),
            )
            .await
            .expect("put");
    }
    store
        .put(&b, &snapshot(&b, "run-a", "snapshot-3", 99, 1))
        .await
        .expect("put same id");
    assert_eq!(
        snapshot_seqs(&store.list(&a, &r, None).await.expect("list")),
        vec![1, 3]
    );
    assert_eq!(
        snapshot_seqs(&store.list(&b, &r, None).await.expect("list")),
        vec![2, 99]
    );
    let visible = store
        .get(&a, &r, &sid("snapshot-3"))
        .await
        .expect("get")
        .expect("visible");
    assert_eq!(visible.seq, 3);
    assert_eq!(
        store.get(&a, &r, &sid("snapshot-2")).await.expect("get"),
        None
    );
    assert_eq!(
        store.latest(&a, &r).await.expect("latest").map(|s| s.seq),
        Some(3)
    );
    let deployed =
        runstore_core::Tenant::new("org-1", "workspace-1", Some("d".into())).expect("tenant");
    assert!(
        store
            .list(&deployed, &r, None)
            .await
            .expect("list")
            .is_empty()
    );
    let mut forged = snapshot(&b, "run-a", "forged", 5, 5);
    forged.scope.tenant_context = a.context();
    store.put(&b, &forged).await.expect("put");
    assert_eq!(
        store.get(&a, &r, &sid("forged")).await.expect("get"),
        None,
        "the put's tenant decides"
    );
    let stamped = store
        .get(&b, &r, &sid("forged"))
        .await
        .expect("get")
        .expect("stored under b");
    assert!(
        b.matches(&stamped.scope.tenant_context),
        "the put's tenant is written into the scope"
    );
}

/// CONTRACT §14: prune deletes snapshots older than the retention but keeps
/// the newest `keep_last_per_run` of each stream; returns the count.
pub async fn snapshot_prune_keeps_newest_per_run(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let (a, b) = (tenant(1), tenant(2));
    for n in 1..=5u64 {
        store
            .put(&a, &snapshot(&a, "run-a", &format!("a{n}"), n, n * 100))
            .await
            .expect("put");
        store
            .put(&b, &snapshot(&b, "run-a", &format!("b{n}"), n, n * 100))
            .await
            .expect("put");
    }
    store
        .put(&a, &snapshot(&a, "run-b", "only", 1, 1))
        .await
        .expect("put");
    assert_eq!(
        removed(store.prune(0, 0, MAX_TIMESTAMP_MS).await.expect("prune")),
        0,
        "zero retention prunes nothing"
    );
    // Older than 1000 - 650 = 350: seqs 1..3 of each 5-snapshot stream, but keep the newest 3.
    assert_eq!(removed(store.prune(650, 3, 1_000).await.expect("prune")), 4);
    let r = run("run-a");
    assert_eq!(
        snapshot_seqs(&store.list(&a, &r, None).await.expect("list")),
        vec![3, 4, 5]
    );
    assert_eq!(
        snapshot_seqs(&store.list(&b, &r, None).await.expect("list")),
        vec![3, 4, 5]
    );
    assert_eq!(
        store
            .list(&a, &run("run-b"), None)
            .await
            .expect("list")
            .len(),
        1
    );
    assert_eq!(removed(store.prune(650, 0, 1_000).await.expect("prune")), 3);
    assert_eq!(
        snapshot_seqs(&store.list(&a, &r, None).await.expect("list")),
        vec![4, 5]
    );
    assert!(
        store
            .list(&a, &run("run-b"), None)
            .await
            .expect("list")
            .is_empty()
    );
}

/// CONTRACT §14: a `put` that returned `Ok` is never undone by a
/// concurrent `prune`. Each round stores an old snapshot under each of 24
/// ids, then puts a fresh snapshot of every id while prunes run whose
/// retention covers the old ones and never a fresh one; afterwards every
/// id reads back its fresh snapshot, through `get`, `list` and `latest`.
pub async fn snapshot_put_racing_prune_is_kept(h: &Harness) {
    const IDS: u64 = 24;
    const ROUNDS: u64 = 4;
    let instance = h.fresh().await;
    let store = instance.store();
    let t = tenant(1);
    let r = run("run-a");
    for round in 0..ROUNDS {
        for n in 0..IDS {
            store
                .put(&t, &snapshot(&t, "run-a", &format!("s{n}"), n + 1, 100))
                .await
                .expect("put an old snapshot");
        }
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..IDS {
            let (store, t) = (store.clone(), t.clone());
            tasks.spawn(async move {
                let fresh = snapshot(&t, "run-a", &format!("s{n}"), 1_000 + round, 10_000)
                    .with_checkpoint(json!({ "round": round, "id": n }));
                store.put(&t, &fresh).await.expect("put a fresh snapshot");
            });
        }
        for _ in 0..3 {
            let store = store.clone();
            tasks.spawn(async move {
                // Cutoff 10_000 - 5_000: the old snapshots (100) are past it,
                // the fresh ones (10_000) never.
                removed(store.prune(5_000, 0, 10_000).await.expect("prune"));
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.expect("a racing task");
        }
        let listed = store.list(&t, &r, None).await.expect("list");
        assert_eq!(
            listed.len(),
            usize::try_from(IDS).expect("small"),
            "round {round}: every id keeps one snapshot: {:?}",
            snapshot_seqs(&listed)
        );
        for n in 0..IDS {
            let got = store
                .get(&t, &r, &sid(&format!("s{n}")))
                .await
                .expect("get");
            assert_eq!(
                got.map(|snapshot| (snapshot.seq, snapshot.created_at_ms)),
                Some((1_000 + round, 10_000)),
                "round {round}: the acknowledged fresh put of s{n} was undone"
            );
        }
        let latest = store.latest(&t, &r).await.expect("latest");
        assert_eq!(latest.map(|snapshot| snapshot.seq), Some(1_000 + round));
    }
}

/// CONTRACT §19, the reference's path tests: ids with path characters,
/// case differences, dots and great length stay distinct and retrievable.
pub async fn snapshot_ids_with_path_characters_stay_distinct(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let t = tenant(1);
    let long_a = format!("{}a", "x".repeat(1023));
    let long_b = format!("{}b", "x".repeat(1023));
    let odd = [
        "snapshot/../a",
        "run/../a",
        "..",
        ".",
        "a/b",
        "a_b",
        "a\\b",
        "A",
        "a",
        "CON",
        "con.json",
        "trailing.",
        " lead",
        "%2F",
        "🦀",
        long_a.as_str(),
        long_b.as_str(),
    ];
    for (n, r) in odd.iter().enumerate() {
        for (m, s) in odd.iter().enumerate() {
            let seq = (n * 100 + m) as u64;
            store
                .put(&t, &snapshot(&t, r, s, seq, 1))
                .await
                .expect("put odd ids");
        }
    }
    for (n, r) in odd.iter().enumerate() {
        let list = store.list(&t, &run(r), None).await.expect("list");
        assert_eq!(list.len(), odd.len(), "run {r:?}");
        for (m, s) in odd.iter().enumerate() {
            let got = store
                .get(&t, &run(r), &sid(s))
                .await
                .expect("get")
                .expect("stored");
            assert_eq!(got.seq, (n * 100 + m) as u64, "run {r:?} snapshot {s:?}");
            assert_eq!(got.snapshot_id.as_str(), *s);
            assert_eq!(got.run_id.as_str(), *r);
        }
    }
}

/// CONTRACT §15: legacy records without phase fields read back hydrated
/// from their status.
pub async fn legacy_snapshots_are_hydrated(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let t = tenant(1);
    let legacy = json!({
        "schema_version": 1,
        "snapshot_id": "snapshot-1",
        "run_id": "run-1",
        "seq": 42,
        "created_at_ms": 4200,
        "scope": {"tenant_context": t.context()},
        "status": "running",
        "phase_id": "node-a",
        "checkpoint": {"step": "legacy"}
    });
    let record: SnapshotRecord = serde_json::from_value(legacy).expect("legacy parses");
    store.put(&t, &record).await.expect("put");
    let got = store
        .get(&t, &run("run-1"), &sid("snapshot-1"))
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(got.phase, WorkflowPhase::RunningPhase);
    assert_eq!(
        got.allowed_next_phases,
        WorkflowPhase::RunningPhase.allowed_next_phases()
    );
    assert_eq!(got.phase_history.len(), 1);
    assert_eq!(
        got.phase_history[0].reason.as_deref(),
        Some("observed_status:running")
    );
    assert_eq!(got.phase_history[0].phase_id.as_deref(), Some("node-a"));
    assert_eq!(got, record);
}
