//! Erasure: deleting a run or a tenant (CONTRACT §27, §28).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use runstore_core::{
    AppendOutcome, EventLog, EventLogExt, EventRecord, MemoryStore, ReadQuery, SnapshotStore,
    SnapshotStoreExt, Storage, StreamKey, Tenant,
    raw::{
        compaction::marker_payload,
        erasure::{erasure_marker, is_erased},
    },
};

use crate::{Harness, eid, event, ids, removed, run, seqs, snapshot, support, tenant};

/// What `store` answers about `tenant`'s `run_id`: every record, the
/// snapshots, and the seq of each of `old_ids`.
async fn seen(
    store: &dyn Storage,
    tenant: &Tenant,
    run_id: &str,
    old_ids: &[&str],
) -> (
    Vec<EventRecord>,
    Vec<runstore_core::SnapshotRecord>,
    Vec<Option<u64>>,
) {
    let r = run(run_id);
    let records = store
        .read(tenant, &r, ReadQuery::all())
        .await
        .expect("read");
    let snapshots = store.list(tenant, &r, None).await.expect("list");
    let mut found = Vec::new();
    for id in old_ids {
        found.push(store.seq_of(tenant, &r, &eid(id)).await.expect("seq_of"));
    }
    (records, snapshots, found)
}

/// Asserts that `tenant`'s `run_id` shows nothing of what it held but its
/// erasure marker at `last_seq`.
async fn assert_erased(
    store: &dyn Storage,
    tenant: &Tenant,
    run_id: &str,
    last_seq: u64,
    old_ids: &[&str],
) {
    let r = run(run_id);
    let (records, snapshots, found) = seen(store, tenant, run_id, old_ids).await;
    let marker = erasure_marker(tenant, &r, last_seq);
    assert_eq!(
        serde_json::to_string(&records).expect("json"),
        serde_json::to_string(&[&marker]).expect("json"),
        "{tenant}:{run_id}: a deleted run reads as its erasure marker alone, byte for byte"
    );
    assert!(
        found.iter().all(Option::is_none),
        "{tenant}:{run_id}: seq_of finds no deleted id: {found:?}"
    );
    assert!(snapshots.is_empty(), "{tenant}:{run_id}: snapshots remain");
    assert_eq!(
        store.latest(tenant, &r).await.expect("latest"),
        None,
        "{tenant}:{run_id}"
    );
    assert!(
        !store
            .list_runs(tenant)
            .await
            .expect("list_runs")
            .contains(&r),
        "{tenant}:{run_id}: list_runs lists a deleted run"
    );
    assert_eq!(
        store.next_seq(tenant, &r).await.expect("next_seq"),
        last_seq + 1,
        "{tenant}:{run_id}: a deleted run keeps its last seq"
    );
    support::assert_sound_stream(&StreamKey::new(tenant.clone(), r), &records);
}

/// CONTRACT §27: `delete_snapshots` and `delete_run` remove the run's
/// events, the ids its marker remembers and its snapshots; the run keeps
/// its erasure marker only, is not listed, finds none of its ids, and
/// answers the same after a reopen; deleting it again does nothing; other
/// runs and the same run id of another tenant are untouched; an append
/// continues after the last seq, where an old id is new, and the run is
/// listed again; compaction merges the erasure marker.
pub async fn delete_run_erases_events_ids_and_snapshots(h: &Harness) {
    let mut instance = h.fresh().await;
    let (t, other) = (tenant(1), tenant(2));
    let old_ids = ["e1", "e2", "e3", "e4", "e5", "e6"];
    {
        let store = instance.store();
        for (n, id) in (1..).zip(old_ids) {
            store
                .append(&t, &event(&t, "run-a", id, n * 10))
                .await
                .expect("append");
        }
        store
            .put(&t, &snapshot(&t, "run-a", "s1", 4, 1))
            .await
            .expect("put");
        store
            .put(&t, &snapshot(&t, "run-a", "s2", 5, 2))
            .await
            .expect("put");
        // e1-e3 are pruned behind the snapshot floor: the marker remembers
        // them; e4-e6 stay live.
        assert_eq!(removed(store.compact(40, 75).await.expect("compact")), 3);
        for (tn, r) in [(&t, "run-b"), (&other, "run-a")] {
            store
                .append(tn, &event(tn, r, "e1", 10))
                .await
                .expect("append");
            store
                .put(tn, &snapshot(tn, r, "s1", 1, 1))
                .await
                .expect("put");
        }
    }
    let store = instance.store().clone();
    let untouched_before = [
        seen(&*store, &t, "run-b", &["e1"]).await,
        seen(&*store, &other, "run-a", &old_ids).await,
    ];

    assert_eq!(
        store
            .delete_snapshots(&t, &run("run-a"))
            .await
            .expect("delete_snapshots"),
        2
    );
    assert_eq!(
        store
            .delete_run(&t, &run("run-a"))
            .await
            .expect("delete_run"),
        3,
        "delete_run counts the live events it deleted"
    );
    assert_erased(&*store, &t, "run-a", 6, &old_ids).await;
    assert_eq!(
        store.list_runs(&t).await.expect("list_runs"),
        vec![run("run-b")]
    );
    assert!(
        store
            .streams()
            .await
            .expect("streams")
            .contains(&StreamKey::new(t.clone(), run("run-a"))),
        "streams lists the deleted run's marker, so that migrate carries it"
    );
    assert!(
        !store
            .snapshot_streams()
            .await
            .expect("snapshot_streams")
            .contains(&StreamKey::new(t.clone(), run("run-a")))
    );
    let untouched_after = [
        seen(&*store, &t, "run-b", &["e1"]).await,
        seen(&*store, &other, "run-a", &old_ids).await,
    ];
    assert_eq!(
        untouched_after, untouched_before,
        "other runs and tenants are untouched"
    );
    assert_eq!(
        store.delete_run(&t, &run("run-a")).await.expect("again"),
        0,
        "deleting a deleted run does nothing"
    );
    assert_eq!(
        store
            .delete_snapshots(&t, &run("run-a"))
            .await
            .expect("again"),
        0
    );
    drop(store);

    if h.capabilities().persistent {
        instance.reopen().await;
        assert_erased(&**instance.store(), &t, "run-a", 6, &old_ids).await;
    }
    let store = instance.store();
    let again = store
        .append(&t, &event(&t, "run-a", "e1", 70))
        .await
        .expect("append after delete");
    assert_eq!(
        (again.seq, again.inserted),
        (7, true),
        "an append continues after the deleted run's last seq, and an old id is new"
    );
    let dup = store
        .append(&t, &event(&t, "run-a", "e1", 70))
        .await
        .expect("append");
    assert_eq!((dup.seq, dup.inserted), (7, false));
    assert_eq!(
        store.list_runs(&t).await.expect("list_runs"),
        vec![run("run-a"), run("run-b")]
    );
    store
        .append(&t, &event(&t, "run-a", "e8", 80))
        .await
        .expect("append");
    store
        .put(&t, &snapshot(&t, "run-a", "s8", 8, 3))
        .await
        .expect("put");
    let records = store
        .read(&t, &run("run-a"), ReadQuery::all())
        .await
        .expect("read");
    assert_eq!(seqs(&records), vec![6, 7, 8]);
    let key = StreamKey::new(t.clone(), run("run-a"));
    support::assert_sound_stream(&key, &records);
    // Compaction merges the erasure marker: seqs up to 6 stay accounted for.
    assert_eq!(removed(store.compact(5, 100).await.expect("compact")), 1);
    let records = store
        .read(&t, &run("run-a"), ReadQuery::all())
        .await
        .expect("read");
    assert_eq!(seqs(&records), vec![7, 8]);
    let payload = marker_payload(&records[0]).expect("marker");
    assert_eq!(payload.erased_through_seq, Some(6));
    assert_eq!(
        store
            .seq_of(&t, &run("run-a"), &eid("e1"))
            .await
            .expect("seq_of"),
        Some(7)
    );
    let check = support::assert_sound_stream(&key, &records);
    assert_eq!(
        check.check_next_seq(store.next_seq(&t, &run("run-a")).await.expect("next_seq")),
        None
    );
}

/// CONTRACT §27: deleting a run that holds nothing answers 0 and writes
/// nothing: the run appears nowhere and starts at seq 1.
pub async fn delete_of_a_missing_run_writes_nothing(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let t = tenant(1);
    assert_eq!(
        store
            .delete_run(&t, &run("nope"))
            .await
            .expect("delete_run"),
        0
    );
    assert_eq!(
        store
            .delete_snapshots(&t, &run("nope"))
            .await
            .expect("delete_snapshots"),
        0
    );
    assert_eq!(removed(store.delete_tenant(&t).await.expect("tenant")), 0);
    assert!(store.streams().await.expect("streams").is_empty());
    assert!(store.list_runs(&t).await.expect("list_runs").is_empty());
    assert_eq!(store.next_seq(&t, &run("nope")).await.expect("next"), 1);
}

/// CONTRACT §28: `delete_tenant_snapshots` and `delete_tenant` delete every
/// run of the tenant (those with only snapshots too) and nothing of another
/// tenant; each deleted run keeps its last seq.
pub async fn delete_tenant_erases_every_run_of_that_tenant_only(h: &Harness) {
    let mut instance = h.fresh().await;
    let (t, other) = (tenant(1), tenant(2));
    let store = instance.store().clone();
    for (tn, r, events) in [(&t, "r1", 3u64), (&t, "r2", 2), (&other, "r1", 2)] {
        for n in 1..=events {
            store
                .append(tn, &event(tn, r, &format!("e{n}"), n))
                .await
                .expect("append");
        }
        store
            .put(tn, &snapshot(tn, r, "s", 1, 1))
            .await
            .expect("put");
    }
    store
        .put(&t, &snapshot(&t, "r3", "s", 1, 1))
        .await
        .expect("put");
    let other_before = seen(&*store, &other, "r1", &["e1", "e2"]).await;

    assert_eq!(
        removed(
            store
                .delete_tenant_snapshots(&t)
                .await
                .expect("delete_tenant_snapshots")
        ),
        3
    );
    assert_eq!(
        removed(store.delete_tenant(&t).await.expect("delete_tenant")),
        5
    );
    drop(store);
    if h.capabilities().persistent {
        instance.reopen().await;
    }
    let store = instance.store();
    assert!(store.list_runs(&t).await.expect("list_runs").is_empty());
    assert_erased(&**store, &t, "r1", 3, &["e1", "e2", "e3"]).await;
    assert_erased(&**store, &t, "r2", 2, &["e1", "e2"]).await;
    assert_eq!(
        store.snapshot_streams().await.expect("snapshot_streams"),
        vec![StreamKey::new(other.clone(), run("r1"))]
    );
    assert_eq!(
        seen(&**store, &other, "r1", &["e1", "e2"]).await,
        other_before
    );
    assert_eq!(
        store.list_runs(&other).await.expect("list_runs"),
        vec![run("r1")]
    );
    assert_eq!(removed(store.delete_tenant(&t).await.expect("again")), 0);
}

/// CONTRACT §27, §3: deletions of a run racing appends to it (and to
/// another run) leave a sound stream: every append acknowledged after the
/// last deletion's seq is stored at its seq, nothing at or below it is,
/// and the other run lost nothing. Where several handles may write one
/// location, the deletions come from a second handle, so they race the
/// appends' commits rather than queue behind them.
pub async fn delete_racing_appends_leaves_a_sound_stream(h: &Harness) {
    let instance = h.fresh().await;
    let deleting: Arc<dyn Storage> = if h.capabilities().shared_writers {
        instance.open_again().await.expect("a second handle")
    } else {
        instance.store().clone()
    };
    let t = tenant(1);
    let tasks = 8;
    let per_task = 40;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let store: Arc<dyn Storage> = instance.store().clone();
        let t = t.clone();
        handles.push(tokio::spawn(async move {
            let mut answers: Vec<(&'static str, String, AppendOutcome)> = Vec::new();
            for n in 0..per_task {
                let r = if n % 4 == 3 { "cold" } else { "hot" };
                let id = format!("t{task}-{n}");
                let outcome = store
                    .append(&t, &event(&t, r, &id, 1))
                    .await
                    .expect("append");
                answers.push((r, id, outcome));
            }
            answers
        }));
    }
    // Deletions one after another, for as long as the appends go on.
    let appending = Arc::new(AtomicBool::new(true));
    let deleter = {
        let store = deleting.clone();
        let t = t.clone();
        let appending = appending.clone();
        tokio::spawn(async move {
            let mut deletions = 0;
            while appending.load(Ordering::Relaxed) || deletions == 0 {
                store.delete_run(&t, &run("hot")).await.expect("delete_run");
                deletions += 1;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        })
    };
    let mut answers = Vec::new();
    for handle in handles {
        answers.extend(handle.await.expect("task"));
    }
    appending.store(false, Ordering::Relaxed);
    deleter.await.expect("deleter");
    drop(deleting);
    let store = instance.store();

    let hot = store
        .read(&t, &run("hot"), ReadQuery::all())
        .await
        .expect("read");
    let key = StreamKey::new(t.clone(), run("hot"));
    let check = support::assert_sound_stream(&key, &hot);
    assert_eq!(
        check.check_next_seq(store.next_seq(&t, &run("hot")).await.expect("next")),
        None
    );
    let erased_through = hot
        .iter()
        .filter(|record| record.is_compaction_marker())
        .map(|marker| {
            marker_payload(marker)
                .expect("marker")
                .erased_through_seq
                .expect("only erasure markers here")
        })
        .max()
        .unwrap_or(0);
    let by_seq: HashMap<u64, &str> = hot
        .iter()
        .map(|record| (record.seq, record.event_id.as_str()))
        .collect();
    let cold = store
        .read(&t, &run("cold"), ReadQuery::all())
        .await
        .expect("read");
    support::assert_sound_stream(&StreamKey::new(t.clone(), run("cold")), &cold);
    let cold_ids: Vec<&str> = ids(&cold);
    for (r, id, outcome) in &answers {
        assert!(outcome.inserted, "{id} was new");
        if *r == "cold" {
            assert!(cold_ids.contains(&id.as_str()), "cold lost {id}");
        } else if outcome.seq > erased_through {
            assert_eq!(
                by_seq.get(&outcome.seq).copied(),
                Some(id.as_str()),
                "{id} acknowledged at seq {} after the last deletion",
                outcome.seq
            );
        } else {
            assert_ne!(
                by_seq.get(&outcome.seq).copied(),
                Some(id.as_str()),
                "{id} at seq {} survived a deletion through seq {erased_through}",
                outcome.seq
            );
        }
    }
}

/// CONTRACT §23, §27: a deleted run moves between stores with its seqs:
/// the model's deleted runs (one appended to since) import into the store,
/// read back the same and continue at the same seq; the store's own
/// deleted run imports into the model.
pub async fn a_deleted_run_migrates_with_its_seqs(h: &Harness) {
    let source = MemoryStore::new();
    let t = tenant(1);
    for r in ["gone", "back"] {
        for n in 1..=4u64 {
            source
                .append(&t, &event(&t, r, &format!("e{n}"), n))
                .await
                .expect("append");
        }
        source.delete_run(&t, &run(r)).await.expect("delete_run");
    }
    source
        .append(&t, &event(&t, "back", "e1", 9))
        .await
        .expect("append");
    let instance = h.fresh().await;
    let store = instance.store();
    for stream in source.streams().await.expect("streams") {
        let records = source
            .read(&stream.tenant, &stream.run_id, ReadQuery::all())
            .await
            .expect("read");
        assert_eq!(
            store
                .import_stream(&stream.tenant, &stream.run_id, &records)
                .await
                .expect("import"),
            records.len()
        );
        assert_eq!(
            store
                .read(&stream.tenant, &stream.run_id, ReadQuery::all())
                .await
                .expect("read"),
            records,
            "{stream}"
        );
    }
    assert_eq!(
        store.list_runs(&t).await.expect("list_runs"),
        vec![run("back")]
    );
    assert_eq!(store.next_seq(&t, &run("gone")).await.expect("next"), 5);
    let next = store
        .append(&t, &event(&t, "gone", "e1", 10))
        .await
        .expect("append");
    assert_eq!((next.seq, next.inserted), (5, true));

    store
        .delete_run(&t, &run("back"))
        .await
        .expect("delete_run");
    let exported = store
        .read(&t, &run("back"), ReadQuery::all())
        .await
        .expect("read");
    assert!(is_erased(&exported).expect("marker"), "{exported:?}");
    let target = MemoryStore::new();
    target
        .import_stream(&t, &run("back"), &exported)
        .await
        .expect("the store's erasure marker imports into the model");
    assert_eq!(target.next_seq(&t, &run("back")).await.expect("next"), 6);
}
