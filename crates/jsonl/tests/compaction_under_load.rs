//! Compaction runs on the writer thread between group commits, so appends
//! and reads racing it see either the old log or the new one (CONTRACT §3,
//! §10, §11).

use std::sync::Arc;

use runstore_core::{
    EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, Tenant,
    raw::compaction::marker_payload,
};
use runstore_jsonl::JsonlStore;

const RUNS: u64 = 4;
const PER_RUN: u64 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_and_reads_racing_compaction_stay_gapless() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let store = Arc::new(JsonlStore::open(&dir).await.unwrap());
    let tenant = Tenant::local();
    let mut tasks = Vec::new();
    for run in 0..RUNS {
        let store = store.clone();
        let tenant = tenant.clone();
        tasks.push(tokio::spawn(async move {
            let run_id = RunId::new(format!("run-{run}")).unwrap();
            for n in 0..PER_RUN {
                let id = EventId::new(format!("e-{n}")).unwrap();
                // occurred_at_ms = n: older events become prunable as the
                // compaction clock below advances.
                let event = EventRecord::new(&tenant, run_id.clone(), id, "step", n);
                let outcome = store.append(&tenant, &event).await.unwrap();
                assert_eq!((outcome.seq, outcome.inserted), (n + 1, true));
                if n % 10 == 0 {
                    let tail = store
                        .read(&tenant, &run_id, ReadQuery::tail(5))
                        .await
                        .unwrap();
                    assert_eq!(tail.last().unwrap().seq, n + 1);
                    assert!(tail.windows(2).all(|w| w[0].seq < w[1].seq));
                }
            }
        }));
    }
    let compactor = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut pruned = 0;
            for now in (20..=PER_RUN).step_by(10) {
                pruned += store.compact(10, now).await.unwrap().removed;
                tokio::task::yield_now().await;
            }
            pruned
        })
    };
    for task in tasks {
        task.await.unwrap();
    }
    let mut pruned = compactor.await.unwrap();
    pruned += store.compact(10, PER_RUN + 10).await.unwrap().removed;
    assert_eq!(pruned as u64, RUNS * PER_RUN);

    let store = Arc::into_inner(store).unwrap();
    drop(store);
    let store = JsonlStore::open(&dir).await.unwrap();
    for run in 0..RUNS {
        let run_id = RunId::new(format!("run-{run}")).unwrap();
        let records = store
            .read(&tenant, &run_id, ReadQuery::all())
            .await
            .unwrap();
        // Everything is pruned: one marker remembering every id, in order.
        assert_eq!(records.len(), 1);
        let payload = marker_payload(&records[0]).unwrap();
        let seqs: Vec<u64> = payload
            .compacted_event_ids
            .iter()
            .map(|id| id.seq)
            .collect();
        assert_eq!(seqs, (1..=PER_RUN).collect::<Vec<_>>());
        assert_eq!(store.next_seq(&tenant, &run_id).await.unwrap(), PER_RUN + 1);
        let again = EventRecord::new(
            &tenant,
            run_id.clone(),
            EventId::new("e-7").unwrap(),
            "step",
            0,
        );
        let outcome = store.append(&tenant, &again).await.unwrap();
        assert_eq!((outcome.seq, outcome.inserted), (8, false));
    }
}
