//! Compaction (CONTRACT §8-§10).

use runstore_core::{
    EventLog, EventLogExt, MemoryStore, ReadQuery, SnapshotStore, Storage,
    raw::compaction::{COMPACTION_EVENT_TYPE, COMPACTION_SOURCE, marker_event_id, marker_payload},
    validate::MAX_TIMESTAMP_MS,
};

use crate::{Harness, eid, event, ids, removed, run, seqs, snapshot, tenant};

fn compacted(record: &runstore_core::EventRecord) -> Vec<(String, u64)> {
    marker_payload(record)
        .expect("marker payload")
        .compacted_event_ids
        .into_iter()
        .map(|id| (id.event_id.into_string(), id.seq))
        .collect()
}

/// CONTRACT §8-§10, the reference's compaction test: old events are pruned
/// into one marker at the highest pruned seq; `next_seq` is unchanged;
/// duplicates of pruned ids answer their original seq; a later compaction
/// merges the old marker and counts only events.
pub async fn compaction_prunes_old_events_and_keeps_next_seq(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let t = tenant(1);
    let r = run("run-a");
    for n in 1..=3u64 {
        store
            .append(&t, &event(&t, "run-a", &format!("event-{n}"), n * 100))
            .await
            .expect("append");
    }
    store
        .append(&t, &event(&t, "run-a", "event-4", 900))
        .await
        .expect("append");
    assert_eq!(
        removed(store.compact(500, 1_000).await.expect("compact")),
        3
    );
    let records = store.read(&t, &r, ReadQuery::all()).await.expect("read");
    assert_eq!(seqs(&records), vec![3, 4]);
    let marker = &records[0];
    assert_eq!(marker.event_type, COMPACTION_EVENT_TYPE);
    assert_eq!(marker.occurred_at_ms, 1_000);
    assert!(t.matches(&marker.scope.tenant_context));
    let payload = marker_payload(marker).expect("payload");
    assert_eq!(payload.compacted_through_seq, 3);
    assert_eq!(payload.compacted_through_ms, 300);
    assert_eq!(payload.pruned_events, 3);
    assert_eq!(payload.source, COMPACTION_SOURCE);
    assert_eq!(
        compacted(marker),
        vec![
            ("event-1".into(), 1),
            ("event-2".into(), 2),
            ("event-3".into(), 3)
        ]
    );
    assert_eq!(store.next_seq(&t, &r).await.expect("next_seq"), 5);
    assert_eq!(
        store.seq_of(&t, &r, &eid("event-2")).await.expect("seq_of"),
        Some(2)
    );
    let dup = store
        .append(&t, &event(&t, "run-a", "event-2", 5_000))
        .await
        .expect("append");
    assert_eq!((dup.seq, dup.inserted), (2, false));
    let next = store
        .append(&t, &event(&t, "run-a", "event-next", 950))
        .await
        .expect("append");
    assert_eq!((next.seq, next.inserted), (5, true));

    assert_eq!(
        removed(store.compact(500, 2_000).await.expect("compact again")),
        2
    );
    let records = store.read(&t, &r, ReadQuery::all()).await.expect("read");
    assert_eq!(records.len(), 1, "one marker remains");
    assert_eq!(records[0].seq, 5);
    let all: Vec<_> = compacted(&records[0]);
    assert_eq!(
        all.iter().map(|(_, seq)| *seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert!(all.contains(&("event-next".into(), 5)));
    assert_eq!(
        marker_payload(&records[0]).expect("payload").pruned_events,
        5
    );
    let old = store
        .append(&t, &event(&t, "run-a", "event-1", 1))
        .await
        .expect("append");
    assert_eq!((old.seq, old.inserted), (1, false));
    assert_eq!(store.next_seq(&t, &r).await.expect("next_seq"), 6);
    assert_eq!(
        removed(store.compact(500, 3_000).await.expect("nothing left")),
        0
    );
    let after = store.read(&t, &r, ReadQuery::all()).await.expect("read");
    assert_eq!(
        after, records,
        "a pass with nothing to prune leaves the marker alone"
    );
}

/// CONTRACT §8: what a pass left because it was too young is pruned by a
/// later pass once it is old enough, through the same handle and with
/// nothing appended in between (a store that remembers which streams hold
/// nothing old enough must update that after its own pass).
pub async fn compaction_prunes_later_what_was_too_young_before(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let t = tenant(1);
    let r = run("run-a");
    for n in 1..=4u64 {
        store
            .append(&t, &event(&t, "run-a", &format!("event-{n}"), n * 100))
            .await
            .expect("append");
    }
    // Cutoff 250: events 1 and 2 are old enough, 3 and 4 are not.
    assert_eq!(removed(store.compact(150, 400).await.expect("compact")), 2);
    let records = store.read(&t, &r, ReadQuery::all()).await.expect("read");
    assert_eq!(seqs(&records), vec![2, 3, 4]);
    // Cutoff 350: event 3 is old enough now.
    assert_eq!(
        removed(store.compact(150, 500).await.expect("compact later")),
        1,
        "the later pass prunes the event that has grown old enough"
    );
    let records = store.read(&t, &r, ReadQuery::all()).await.expect("read");
    assert_eq!(seqs(&records), vec![3, 4]);
    assert_eq!(
        compacted(&records[0]),
        vec![
            ("event-1".into(), 1),
            ("event-2".into(), 2),
            ("event-3".into(), 3)
        ]
    );
    assert_eq!(store.next_seq(&t, &r).await.expect("next_seq"), 5);
}

/// CONTRACT §8: `retention_ms == 0` compacts nothing.
pub async fn compaction_with_zero_retention_does_nothing(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let t = tenant(1);
    store
        .append(&t, &event(&t, "run-a", "e", 1))
        .await
        .expect("append");
    assert_eq!(
        removed(store.compact(0, MAX_TIMESTAMP_MS).await.expect("compact")),
        0
    );
    let records = store
        .read(&t, &run("run-a"), ReadQuery::all())
        .await
        .expect("read");
    assert_eq!(ids(&records), vec!["e"]);
}

/// CONTRACT §8: events at or above the newest snapshot's seq are kept.
pub async fn compaction_keeps_the_tail_from_the_newest_snapshot(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let t = tenant(1);
    let r = run("run-a");
    for n in 1..=6u64 {
        store
            .append(&t, &event(&t, "run-a", &format!("e{n}"), 10))
            .await
            .expect("append");
    }
    store
        .put(&t, &snapshot(&t, "run-a", "older", 2, 10))
        .await
        .expect("put");
    store
        .put(&t, &snapshot(&t, "run-a", "newest", 4, 10))
        .await
        .expect("put");
    // Another tenant's snapshot of the same run must not protect this stream.
    let other = tenant(2);
    store
        .put(&other, &snapshot(&other, "run-a", "foreign", 1, 10))
        .await
        .expect("put");
    assert_eq!(removed(store.compact(10, 1_000).await.expect("compact")), 3);
    let records = store.read(&t, &r, ReadQuery::all()).await.expect("read");
    assert_eq!(seqs(&records), vec![3, 4, 5, 6]);
    assert_eq!(records[0].event_type, COMPACTION_EVENT_TYPE);
    assert_eq!(ids(&records)[1..], ["e4", "e5", "e6"]);
}

/// CONTRACT §10, the reference's tenant test: each stream gets its own
/// marker and seqs; untouched streams stay as they were.
pub async fn compaction_keeps_streams_and_tenants_independent(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let (a, b) = (tenant(1), tenant(2));
    store
        .append(&a, &event(&a, "shared-run", "a-1", 100))
        .await
        .expect("append");
    store
        .append(&b, &event(&b, "shared-run", "b-1", 100))
        .await
        .expect("append");
    store
        .append(&b, &event(&b, "shared-run", "b-2", 100))
        .await
        .expect("append");
    store
        .append(&a, &event(&a, "fresh-run", "f-1", 5_000))
        .await
        .expect("append");
    assert_eq!(
        removed(store.compact(500, 1_000).await.expect("compact")),
        3
    );
    let r = run("shared-run");
    assert_eq!(store.next_seq(&a, &r).await.expect("next_seq"), 2);
    assert_eq!(store.next_seq(&b, &r).await.expect("next_seq"), 3);
    let marker_a = store.read(&a, &r, ReadQuery::all()).await.expect("read");
    let marker_b = store.read(&b, &r, ReadQuery::all()).await.expect("read");
    assert_eq!(compacted(&marker_a[0]), vec![("a-1".into(), 1)]);
    assert_eq!(
        compacted(&marker_b[0]),
        vec![("b-1".into(), 1), ("b-2".into(), 2)]
    );
    assert_ne!(marker_a[0].event_id, marker_b[0].event_id);
    assert!(a.matches(&marker_a[0].scope.tenant_context));
    assert!(b.matches(&marker_b[0].scope.tenant_context));
    assert_eq!(
        store.seq_of(&b, &r, &eid("a-1")).await.expect("seq_of"),
        None
    );
    let fresh = store
        .read(&a, &run("fresh-run"), ReadQuery::all())
        .await
        .expect("read");
    assert_eq!(ids(&fresh), vec!["f-1"]);
}

async fn marker_scenario(store: &dyn Storage) -> Vec<Vec<u8>> {
    let t = runstore_core::Tenant::new("org", "ws", Some("dep".into())).expect("tenant");
    for n in 1..=5u64 {
        let mut e = event(&t, "run-m", &format!("m{n}"), n * 10);
        e.scope.tenant_context.actor_id = Some(format!("actor-{n}"));
        store.append(&t, &e).await.expect("append");
    }
    // An older store's stream compacted through seq 2 whose marker carries
    // the id this store derives for a marker through seq 4: the next pass
    // replaces that marker, so its id is free for the new one.
    let older = MemoryStore::new();
    for (at, id) in [(10, "c1"), (20, "c2")] {
        older
            .append(&t, &event(&t, "run-c", id, at))
            .await
            .expect("append");
    }
    removed(older.compact(25, 50).await.expect("compact"));
    let mut clash = older
        .read(&t, &run("run-c"), ReadQuery::all())
        .await
        .expect("read");
    clash[0].event_id = marker_event_id(&t, &run("run-c"), 4);
    for (at, seq) in [(60, 3), (70, 4)] {
        let mut e = event(&t, "run-c", &format!("c{seq}"), at);
        e.seq = seq;
        clash.push(e);
    }
    store
        .import_stream(&t, &run("run-c"), &clash)
        .await
        .expect("import");
    removed(store.compact(25, 50).await.expect("compact"));
    let first_marker = store
        .read(&t, &run("run-m"), ReadQuery::all())
        .await
        .expect("read")[0]
        .event_id
        .clone();
    store
        .append(&t, &event(&t, "run-m", "m6", 60))
        .await
        .expect("append");
    removed(store.compact(25, 100).await.expect("compact"));
    // The replaced marker's id went with it.
    let replaced = store
        .seq_of(&t, &run("run-m"), &first_marker)
        .await
        .expect("seq_of");
    let mut records = vec![format!("seq_of the replaced marker's id: {replaced:?}").into_bytes()];
    records.extend(stored(store, &t, &["run-m", "run-c"]).await);
    records
}

/// Every record of `runs` of tenant `t`, in order, serialized.
async fn stored(store: &dyn Storage, t: &runstore_core::Tenant, runs: &[&str]) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    for r in runs {
        records.extend(
            store
                .read(t, &run(r), ReadQuery::all())
                .await
                .expect("read")
                .iter()
                .map(|record| serde_json::to_vec(record).expect("serialize")),
        );
    }
    records
}

/// Asserts that serialized records are the model's, one by one.
fn assert_records_match_the_model(got: &[Vec<u8>], model: &[Vec<u8>]) {
    for (got, want) in got.iter().zip(model) {
        assert_eq!(
            String::from_utf8_lossy(got),
            String::from_utf8_lossy(want),
            "records differ from the model's"
        );
    }
}

/// CONTRACT §9: every backend writes byte-for-byte the same marker as the
/// model for the same history, also where the marker it replaces holds the
/// id it derives.
pub async fn compaction_markers_match_the_model_byte_for_byte(h: &Harness) {
    let instance = h.fresh().await;
    let got = marker_scenario(instance.store().as_ref()).await;
    let model = marker_scenario(&MemoryStore::new()).await;
    assert_eq!(got.len(), model.len());
    assert_records_match_the_model(&got, &model);
}

/// A stream of 1,200 events, compacted once through its first 300, then
/// again with 900 more old enough, one young event among them and a
/// snapshot above them: more than a backend prunes in one step (a backend
/// may split a stream over several, CONTRACT §11). In the second pass a
/// stream of 100 old events comes first (`run-a` sorts first by name and
/// by length), so a step may meet the long stream with part of its budget
/// spent. Answers the pass's count, then the streams as stored.
async fn long_stream_scenario(store: &dyn Storage) -> (usize, Vec<Vec<u8>>) {
    let t = tenant(1);
    let early: Vec<_> = (1..=100u64)
        .map(|n| event(&t, "run-a", &format!("a-{n}"), 1_500))
        .collect();
    store
        .append_batch(&t, &run("run-a"), &early, None)
        .await
        .expect("append");
    for first in (1..=1_200u64).step_by(100) {
        let batch: Vec<_> = (first..first + 100)
            .map(|seq| {
                let at = if seq == 777 { 5_000 } else { seq };
                event(&t, "run-long", &format!("long-{seq}"), at)
            })
            .collect();
        store
            .append_batch(&t, &run("run-long"), &batch, None)
            .await
            .expect("append");
    }
    for seq in 1..=3u64 {
        store
            .append(&t, &event(&t, "run-short", &format!("short-{seq}"), seq))
            .await
            .expect("append");
    }
    assert_eq!(
        removed(store.compact(1_000, 1_301).await.expect("compact")),
        303
    );
    store
        .put(&t, &snapshot(&t, "run-long", "snap", 1_190, 2_000))
        .await
        .expect("put");
    let pruned = removed(store.compact(1_000, 3_000).await.expect("compact"));
    (
        pruned,
        stored(store, &t, &["run-a", "run-long", "run-short"]).await,
    )
}

/// CONTRACT §9, §11: a stream with more events to prune than a backend
/// takes in one step ends with byte-for-byte the model's marker (merged
/// with the older one, skipping the young event, stopping below the
/// snapshot), and every id of it answers its seq.
pub async fn compaction_of_a_long_stream_matches_the_model(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let (pruned, got) = long_stream_scenario(store.as_ref()).await;
    let (model_pruned, model) = long_stream_scenario(&MemoryStore::new()).await;
    assert_eq!((pruned, got.len()), (model_pruned, model.len()));
    assert_eq!(pruned, 100 + 1_189 - 300 - 1);
    assert_records_match_the_model(&got, &model);
    let t = tenant(1);
    let r = run("run-long");
    for seq in 1..=1_200u64 {
        let id = format!("long-{seq}");
        assert_eq!(
            store.seq_of(&t, &r, &eid(&id)).await.expect("seq_of"),
            Some(seq),
            "seq_of {id}"
        );
    }
    let dup = store
        .append(&t, &event(&t, "run-long", "long-5", 9_999))
        .await
        .expect("duplicate append");
    assert_eq!((dup.seq, dup.inserted), (5, false));
    assert_eq!(store.next_seq(&t, &r).await.expect("next_seq"), 1_201);
}

/// Checks that every one of the stream's `total` ids (`id-<seq>`) answers
/// its seq by `seq_of` and as a duplicate append, and that ids it never
/// held answer `None`.
async fn assert_every_id_answers(store: &dyn Storage, when: &str, total: u64) {
    let t = tenant(1);
    let r = run("run-a");
    for seq in 1..=total {
        let id = format!("id-{seq}");
        assert_eq!(
            store.seq_of(&t, &r, &eid(&id)).await.expect("seq_of"),
            Some(seq),
            "seq_of {id} {when}"
        );
        if seq % 7 == 1 || seq == total {
            let dup = store
                .append(&t, &event(&t, "run-a", &id, 99_999))
                .await
                .expect("duplicate append");
            assert_eq!((dup.seq, dup.inserted), (seq, false), "{id} {when}");
        }
    }
    let beyond = format!("id-{}", total + 5);
    for missing in ["id-0", "id-00001", "missing", beyond.as_str()] {
        assert_eq!(
            store.seq_of(&t, &r, &eid(missing)).await.expect("seq_of"),
            None,
            "seq_of {missing} {when}"
        );
    }
    assert_eq!(
        store.next_seq(&t, &r).await.expect("next_seq"),
        total + 1,
        "{when}"
    );
}

/// CONTRACT §7, §10: a stream with hundreds of compacted ids answers each
/// one's seq, by `seq_of` and to a duplicate append, after the compaction,
/// after a reopen, after a second compaction that merges the marker, and
/// after a reopen again (reopens on persistent backends); ids it never held
/// stay unknown.
pub async fn compacted_ids_answer_after_reopen_and_recompaction(h: &Harness) {
    let mut instance = h.fresh().await;
    let t = tenant(1);
    let total = 300;
    for first in (1..=total).step_by(100) {
        let batch: Vec<_> = (first..first + 100)
            .map(|seq| event(&t, "run-a", &format!("id-{seq}"), seq))
            .collect();
        instance
            .store()
            .append_batch(&t, &run("run-a"), &batch, None)
            .await
            .expect("append");
    }
    // Prunes seqs 1..=150 (occurred before 151).
    let persistent = h.capabilities().persistent;
    let pruned = instance
        .store()
        .compact(1_000, 1_151)
        .await
        .expect("compact");
    assert_eq!(removed(pruned), 150);
    assert_every_id_answers(instance.store().as_ref(), "after compaction", total).await;
    if persistent {
        instance.reopen().await;
        assert_every_id_answers(instance.store().as_ref(), "after a reopen", total).await;
    }
    // Prunes seqs 151..=260 into the merged marker.
    let pruned = instance
        .store()
        .compact(1_000, 1_261)
        .await
        .expect("compact");
    assert_eq!(removed(pruned), 110);
    assert_every_id_answers(
        instance.store().as_ref(),
        "after a second compaction",
        total,
    )
    .await;
    if persistent {
        instance.reopen().await;
        assert_every_id_answers(instance.store().as_ref(), "after a second reopen", total).await;
    }
    let next = instance
        .store()
        .append(&t, &event(&t, "run-a", "id-new", 5_000))
        .await
        .expect("append");
    assert_eq!((next.seq, next.inserted), (total + 1, true));
}
