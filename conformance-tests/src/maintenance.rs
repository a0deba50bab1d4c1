//! Store-wide listing and import, what a migration needs (CONTRACT §7, §9,
//! §10, and the maintenance calls of the traits).

use runstore_core::{
    Error, EventLog, EventLogExt, MemoryStore, ReadQuery, SnapshotStore, Storage, StreamKey,
};

use crate::{Harness, eid, event, removed, run, snapshot, tenant};

/// Store-wide `streams` and `snapshot_streams` name every stream, ascending.
pub async fn streams_and_snapshot_streams_list_everything(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let (a, b) = (tenant(1), tenant(2));
    assert!(store.streams().await.expect("streams").is_empty());
    assert!(
        store
            .snapshot_streams()
            .await
            .expect("snapshot_streams")
            .is_empty()
    );
    for (t, r) in [(&b, "r1"), (&a, "r2"), (&a, "r1")] {
        store.append(t, &event(t, r, "e", 1)).await.expect("append");
    }
    store
        .put(&b, &snapshot(&b, "r9", "s", 1, 1))
        .await
        .expect("put");
    store
        .put(&a, &snapshot(&a, "r1", "s", 1, 1))
        .await
        .expect("put");
    store
        .put(&a, &snapshot(&a, "r1", "s2", 2, 1))
        .await
        .expect("put");
    let key = |t: &runstore_core::Tenant, r: &str| StreamKey::new(t.clone(), run(r));
    assert_eq!(
        store.streams().await.expect("streams"),
        vec![key(&a, "r1"), key(&a, "r2"), key(&b, "r1")]
    );
    assert_eq!(
        store.snapshot_streams().await.expect("snapshot_streams"),
        vec![key(&a, "r1"), key(&b, "r9")]
    );
}

async fn history(store: &dyn Storage) {
    let t = tenant(1);
    for n in 1..=6u64 {
        store
            .append(&t, &event(&t, "run-a", &format!("e{n}"), n * 10))
            .await
            .expect("append");
    }
    removed(store.compact(25, 50).await.expect("compact"));
    store
        .append(&t, &event(&t, "run-b", "other", 1))
        .await
        .expect("append");
}

/// Import writes an exported stream with its seqs, markers and compacted
/// ids unchanged; importing it again writes nothing; appends continue from
/// the imported position and still dedupe compacted ids.
pub async fn import_keeps_seqs_and_markers_and_is_repeatable(h: &Harness) {
    let source = MemoryStore::new();
    history(&source).await;
    let instance = h.fresh().await;
    let store = instance.store();
    for stream in source.streams().await.expect("streams") {
        let records = source
            .read(&stream.tenant, &stream.run_id, ReadQuery::all())
            .await
            .expect("read");
        let written = store
            .import_stream(&stream.tenant, &stream.run_id, &records)
            .await
            .expect("import");
        assert_eq!(written, records.len());
        let again = store
            .import_stream(&stream.tenant, &stream.run_id, &records)
            .await
            .expect("import again");
        assert_eq!(again, 0, "a second import writes nothing");
        let copied = store
            .read(&stream.tenant, &stream.run_id, ReadQuery::all())
            .await
            .expect("read");
        assert_eq!(copied, records, "{stream}");
    }
    let t = tenant(1);
    let r = run("run-a");
    assert_eq!(store.next_seq(&t, &r).await.expect("next_seq"), 7);
    assert_eq!(
        store.seq_of(&t, &r, &eid("e2")).await.expect("seq_of"),
        Some(2)
    );
    let dup = store
        .append(&t, &event(&t, "run-a", "e1", 1))
        .await
        .expect("append");
    assert_eq!((dup.seq, dup.inserted), (1, false));
    let next = store
        .append(&t, &event(&t, "run-a", "e7", 70))
        .await
        .expect("append");
    assert_eq!((next.seq, next.inserted), (7, true));
    // A source that moved on imports only what is new.
    source
        .append(&t, &event(&t, "run-a", "e7", 70))
        .await
        .expect("append");
    source
        .append(&t, &event(&t, "run-a", "e8", 80))
        .await
        .expect("append");
    let records = source.read(&t, &r, ReadQuery::all()).await.expect("read");
    assert_eq!(
        store.import_stream(&t, &r, &records).await.expect("import"),
        1
    );
    assert_eq!(
        store.read(&t, &r, ReadQuery::all()).await.expect("read"),
        records
    );
}

/// Import refuses records that are not one ascending stream of the named
/// tenant and run, or that disagree with what the target holds.
pub async fn import_rejects_a_diverging_stream(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let t = tenant(1);
    let r = run("run-a");
    store
        .append(&t, &event(&t, "run-a", "mine", 1))
        .await
        .expect("append");
    let mut theirs = event(&t, "run-a", "theirs", 1);
    theirs.seq = 1;
    let err = store
        .import_stream(&t, &r, &[theirs.clone()])
        .await
        .expect_err("diverges");
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    let mut unordered = vec![event(&t, "run-z", "x", 1), event(&t, "run-z", "y", 1)];
    unordered[0].seq = 5;
    unordered[1].seq = 4;
    let err = store
        .import_stream(&t, &run("run-z"), &unordered)
        .await
        .expect_err("unordered");
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    let err = store
        .import_stream(&tenant(2), &r, &[theirs])
        .await
        .expect_err("other tenant");
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    let records = store.read(&t, &r, ReadQuery::all()).await.expect("read");
    assert_eq!(records.len(), 1);
    assert!(
        store
            .read(&t, &run("run-z"), ReadQuery::all())
            .await
            .expect("read")
            .is_empty()
    );
}
