//! Idempotency, batches and optimistic concurrency (CONTRACT §2, §4, §5).

use runstore_core::{AppendOutcome, Error, EventLog, EventLogExt, ReadQuery};

use crate::{Harness, event, ids, run, seqs, tenant};

fn outcomes(pairs: &[(u64, bool)]) -> Vec<AppendOutcome> {
    pairs
        .iter()
        .map(|&(seq, inserted)| AppendOutcome { seq, inserted })
        .collect()
}

/// CONTRACT §2: a duplicate id writes nothing and answers the original seq;
/// first write wins; another tenant's identical id is unrelated.
pub async fn duplicate_event_id_returns_original_seq(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let t = tenant(1);
    let first = event(&t, "run-a", "event-1", 100);
    assert_eq!(store.append(&t, &first).await.expect("append").seq, 1);
    store
        .append(&t, &event(&t, "run-a", "event-2", 100))
        .await
        .expect("append");
    let changed = event(&t, "run-a", "event-1", 999).with_payload(serde_json::json!("changed"));
    let again = store.append(&t, &changed).await.expect("duplicate append");
    assert_eq!((again.seq, again.inserted), (1, false));
    let records = store
        .read(&t, &run("run-a"), ReadQuery::all())
        .await
        .expect("read");
    assert_eq!(ids(&records), vec!["event-1", "event-2"]);
    assert_eq!(records[0].payload, first.payload, "first write wins");
    assert_eq!(records[0].occurred_at_ms, 100);
    let other = tenant(2);
    let foreign = store
        .append(&other, &event(&other, "run-a", "event-1", 1))
        .await
        .expect("append");
    assert_eq!(
        (foreign.seq, foreign.inserted),
        (1, true),
        "other tenant is unrelated"
    );
    let elsewhere = store
        .append(&t, &event(&t, "run-b", "event-1", 1))
        .await
        .expect("append");
    assert_eq!(
        (elsewhere.seq, elsewhere.inserted),
        (1, true),
        "other run is unrelated"
    );
}

/// CONTRACT §4: new events get consecutive seqs, stored ones report their
/// original seq, an id repeated in the batch is stored once.
pub async fn batch_append_assigns_consecutive_seqs_and_dedupes(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let t = tenant(1);
    let r = run("run-a");
    store
        .append(&t, &event(&t, "run-a", "old", 1))
        .await
        .expect("append");
    let batch = [
        event(&t, "run-a", "new-1", 2),
        event(&t, "run-a", "old", 2),
        event(&t, "run-a", "new-2", 2),
        event(&t, "run-a", "new-1", 3),
        event(&t, "run-a", "new-3", 2),
    ];
    let got = store
        .append_batch(&t, &r, &batch, None)
        .await
        .expect("batch");
    assert_eq!(
        got,
        outcomes(&[(2, true), (1, false), (3, true), (2, false), (4, true)])
    );
    let records = store.read(&t, &r, ReadQuery::all()).await.expect("read");
    assert_eq!(seqs(&records), vec![1, 2, 3, 4]);
    assert_eq!(ids(&records), vec!["old", "new-1", "new-2", "new-3"]);
    assert_eq!(
        records[1].occurred_at_ms, 2,
        "first occurrence in the batch wins"
    );
    let replay = store
        .append_batch(&t, &r, &batch, None)
        .await
        .expect("replay");
    assert!(replay.iter().all(|outcome| !outcome.inserted));
    assert_eq!(store.next_seq(&t, &r).await.expect("next_seq"), 5);
}

/// CONTRACT §5: a stale `expected_last_seq` is `Conflict` and writes
/// nothing, unless every event is already stored.
pub async fn expected_last_seq_conflicts_unless_all_stored(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let t = tenant(1);
    let r = run("run-a");
    let first = [event(&t, "run-a", "a", 1), event(&t, "run-a", "b", 1)];
    let got = store
        .append_batch(&t, &r, &first, Some(0))
        .await
        .expect("expected 0 on empty");
    assert_eq!(got, outcomes(&[(1, true), (2, true)]));
    let next = [event(&t, "run-a", "c", 1), event(&t, "run-a", "a", 1)];
    let err = store
        .append_batch(&t, &r, &next, Some(1))
        .await
        .expect_err("stale expectation");
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected: 1,
                actual: 2
            }
        ),
        "{err}"
    );
    assert_eq!(
        store.next_seq(&t, &r).await.expect("next_seq"),
        3,
        "nothing written"
    );
    let err = store
        .append_expecting(&t, &event(&t, "run-a", "c", 1), Some(5))
        .await
        .expect_err("expectation ahead of the stream");
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected: 5,
                actual: 2
            }
        ),
        "{err}"
    );
    let retry = store
        .append_batch(&t, &r, &first, Some(0))
        .await
        .expect("a retry of stored events");
    assert_eq!(retry, outcomes(&[(1, false), (2, false)]));
    let ok = store
        .append_batch(&t, &r, &next, Some(2))
        .await
        .expect("current expectation");
    assert_eq!(ok, outcomes(&[(3, true), (1, false)]));
    let records = store.read(&t, &r, ReadQuery::all()).await.expect("read");
    assert_eq!(ids(&records), vec!["a", "b", "c"]);
}

/// CONTRACT §4: an empty batch writes nothing and answers nothing.
pub async fn empty_batch_writes_nothing(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let t = tenant(1);
    let r = run("run-a");
    assert!(
        store
            .append_batch(&t, &r, &[], None)
            .await
            .expect("empty")
            .is_empty()
    );
    assert!(
        store
            .append_batch(&t, &r, &[], Some(7))
            .await
            .expect("empty")
            .is_empty()
    );
    assert_eq!(store.next_seq(&t, &r).await.expect("next_seq"), 1);
    assert!(store.list_runs(&t).await.expect("list_runs").is_empty());
}
