//! Concurrent appends to one stream (CONTRACT §3, §4).

use std::sync::Arc;

use runstore_core::{
    AppendOutcome, EventLog, EventLogExt, EventRecord, ReadQuery, Storage, StreamKey,
    raw::check::StreamCheck,
};

use crate::{Harness, event, run, support, tenant};

/// The ids task `task` appends: its own ids plus, for one in five, an id
/// another task also appends (so about 20% of appends are cross-task
/// duplicates).
fn task_ids(task: usize, tasks: usize, per_task: usize) -> Vec<String> {
    (0..per_task)
        .map(|i| {
            if i % 5 == 4 {
                format!("shared-{}", (task + i) % (tasks * per_task / 10).max(1))
            } else {
                format!("t{task}-e{i}")
            }
        })
        .collect()
}

/// Checks tenant 1's `run_id` after concurrent appends with the shared
/// stream checker, read through `store`: seqs exactly 1..n (nothing is
/// compacted), each id once, every answer (first or duplicate) naming the
/// stored seq, one inserting answer per stored event, and `next_seq` n + 1.
pub(crate) async fn check_raced_stream(
    store: &Arc<dyn Storage>,
    run_id: &str,
    answers: &[(String, AppendOutcome)],
) -> StreamCheck {
    let t = tenant(1);
    let key = StreamKey::new(t.clone(), run(run_id));
    let records = store
        .read(&t, &key.run_id, ReadQuery::all())
        .await
        .expect("read");
    let check = support::assert_sound_stream(&key, &records);
    assert_eq!(check.compacted, 0, "nothing was compacted");
    support::assert_each_event_inserted_once(
        &check,
        answers.iter().map(|(id, outcome)| (id.as_str(), outcome)),
    );
    let next = store.next_seq(&t, &key.run_id).await.expect("next_seq");
    assert_eq!(check.check_next_seq(next), None);
    check
}

/// CONTRACT §3: many tasks appending single events to one stream, with
/// cross-task duplicate ids, yield seqs 1..n and each id once.
pub async fn concurrent_appends_are_gapless_and_unique(h: &Harness) {
    let instance = h.fresh().await;
    let caps = h.capabilities();
    let tasks = caps.concurrency_tasks;
    let per_task = caps.concurrency_events.div_ceil(tasks);
    let mut handles = Vec::new();
    for task in 0..tasks {
        let store = instance.store().clone();
        handles.push(tokio::spawn(async move {
            let t = tenant(1);
            let mut answers = Vec::new();
            for id in task_ids(task, tasks, per_task) {
                let outcome = store
                    .append(&t, &event(&t, "hot", &id, 1))
                    .await
                    .expect("append");
                answers.push((id, outcome));
            }
            answers
        }));
    }
    let mut answers = Vec::new();
    for handle in handles {
        answers.extend(handle.await.expect("task"));
    }
    check_raced_stream(instance.store(), "hot", &answers).await;
}

/// CONTRACT §3, §4: the same with batches of 10, whose ids overlap across
/// tasks and repeat inside a batch.
pub async fn concurrent_batches_are_gapless_and_unique(h: &Harness) {
    let instance = h.fresh().await;
    let caps = h.capabilities();
    let tasks = caps.concurrency_tasks;
    let per_task = caps.concurrency_events.div_ceil(tasks);
    let mut handles = Vec::new();
    for task in 0..tasks {
        let store = instance.store().clone();
        handles.push(tokio::spawn(async move {
            let t = tenant(1);
            let mut answers = Vec::new();
            let ids = task_ids(task, tasks, per_task);
            for chunk in ids.chunks(10) {
                let mut batch: Vec<EventRecord> =
                    chunk.iter().map(|id| event(&t, "hot", id, 1)).collect();
                batch.push(event(&t, "hot", &chunk[0], 2));
                let got = store
                    .append_batch(&t, &run("hot"), &batch, None)
                    .await
                    .expect("append batch");
                assert_eq!(got.len(), batch.len());
                let seqs: Vec<u64> = got.iter().filter(|o| o.inserted).map(|o| o.seq).collect();
                assert!(
                    seqs.windows(2).all(|pair| pair[1] == pair[0] + 1),
                    "a batch's new events get consecutive seqs: {seqs:?}"
                );
                for (record, outcome) in batch.iter().zip(got) {
                    answers.push((record.event_id.as_str().to_owned(), outcome));
                }
            }
            answers
        }));
    }
    let mut answers = Vec::new();
    for handle in handles {
        answers.extend(handle.await.expect("task"));
    }
    check_raced_stream(instance.store(), "hot", &answers).await;
}

/// CONTRACT §2, §3: the same event appended by many tasks at once is stored
/// once and every task gets seq 1 (the reference's concurrent append-once).
pub async fn concurrent_duplicate_writes_store_once(h: &Harness) {
    let instance = h.fresh().await;
    let mut handles = Vec::new();
    for _ in 0..16 {
        let store = instance.store().clone();
        handles.push(tokio::spawn(async move {
            let t = tenant(1);
            store
                .append(&t, &event(&t, "hot", "only", 1))
                .await
                .expect("append")
        }));
    }
    let mut inserted = 0;
    for handle in handles {
        let outcome = handle.await.expect("task");
        assert_eq!(outcome.seq, 1);
        inserted += usize::from(outcome.inserted);
    }
    assert_eq!(inserted, 1);
    let records = instance
        .store()
        .read(&tenant(1), &run("hot"), ReadQuery::all())
        .await
        .expect("read");
    assert_eq!(records.len(), 1);
}
