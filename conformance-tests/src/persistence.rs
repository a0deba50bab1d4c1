//! Reopen (CONTRACT §2, §10, §16): what a write returned `Ok` for survives
//! dropping the store and opening it again.

use runstore_core::{EventLog, EventLogExt, ReadQuery, SnapshotStore, StreamKey};

use crate::{Harness, eid, event, removed, run, snapshot, tenant};

/// CONTRACT §16, §10: events, markers, snapshots and the dedupe of compacted
/// ids all survive reopen; appends continue where they left off.
pub async fn everything_survives_reopen(h: &Harness) {
    if !h.capabilities().persistent {
        h.not_applicable(
            "everything_survives_reopen",
            "the backend declares no persistence (its data lives only as long as its handles)",
        );
        return;
    }
    let mut instance = h.fresh().await;
    let (a, b) = (tenant(1), tenant(2));
    {
        let store = instance.store();
        for n in 1..=4u64 {
            store
                .append(&a, &event(&a, "run-a", &format!("e{n}"), n * 100))
                .await
                .expect("append");
        }
        let batch = [event(&b, "run-a", "b1", 1), event(&b, "run-a", "b2", 1)];
        store
            .append_batch(&b, &run("run-a"), &batch, None)
            .await
            .expect("batch");
        store
            .put(&a, &snapshot(&a, "run-a", "s1", 3, 10))
            .await
            .expect("put");
        store
            .put(&b, &snapshot(&b, "run-a", "s1", 1, 10))
            .await
            .expect("put");
        assert_eq!(removed(store.compact(150, 400).await.expect("compact")), 2);
    }
    let before = snapshot_of_everything(&instance).await;
    instance.reopen().await;
    let after = snapshot_of_everything(&instance).await;
    assert_eq!(after, before, "state after reopen");
    let store = instance.store();
    let r = run("run-a");
    let dup = store
        .append(&a, &event(&a, "run-a", "e1", 1))
        .await
        .expect("append");
    assert_eq!(
        (dup.seq, dup.inserted),
        (1, false),
        "compacted ids dedupe after reopen"
    );
    let live = store
        .append(&a, &event(&a, "run-a", "e4", 1))
        .await
        .expect("append");
    assert_eq!((live.seq, live.inserted), (4, false));
    let next = store
        .append(&a, &event(&a, "run-a", "e5", 500))
        .await
        .expect("append");
    assert_eq!((next.seq, next.inserted), (5, true));
    assert_eq!(
        store.seq_of(&a, &r, &eid("e2")).await.expect("seq_of"),
        Some(2)
    );
    instance.reopen().await;
    let store = instance.store();
    assert_eq!(store.next_seq(&a, &r).await.expect("next_seq"), 6);
    assert_eq!(store.next_seq(&b, &r).await.expect("next_seq"), 3);
}

type Everything = Vec<(
    StreamKey,
    Vec<runstore_core::EventRecord>,
    Vec<runstore_core::SnapshotRecord>,
)>;

async fn snapshot_of_everything(instance: &crate::Instance) -> Everything {
    let store = instance.store();
    let mut out = Vec::new();
    let mut keys = store.streams().await.expect("streams");
    keys.extend(store.snapshot_streams().await.expect("snapshot_streams"));
    keys.sort();
    keys.dedup();
    for key in keys {
        let events = store
            .read(&key.tenant, &key.run_id, ReadQuery::all())
            .await
            .expect("read");
        let snapshots = store
            .list(&key.tenant, &key.run_id, None)
            .await
            .expect("list");
        out.push((key, events, snapshots));
    }
    out
}
