//! A snapshot put that lands between a compaction's planning and its commit
//! is honoured: nothing at or above the snapshot's seq is pruned
//! (CONTRACT §8; docs/backends/s3.md, "Compaction").

use runstore_conformance::support::records::{acme as tenant, run_1 as run, step as event};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use object_store::{ObjectStore, PutMode, memory::InMemory};
use runstore_conformance::support::object_store::{Forwarding, Hooks, Request, Verdict};
use runstore_core::{
    EventLog, EventRecord, ReadQuery, RunStatus, SnapshotId, SnapshotRecord, SnapshotStore,
};
use runstore_s3::S3Store;

/// What another process does just before the armed head update is applied.
#[derive(Debug, Clone, Copy)]
struct Interleave {
    /// Put a snapshot at this seq.
    snapshot_seq: u64,
    /// Then append this many events.
    appends: usize,
}

/// Once armed, runs [`Interleave`] through another handle right before the
/// next conditional head update reaches the store.
struct Interleaving {
    armed: Mutex<Option<Interleave>>,
}

#[async_trait]
impl Hooks for Interleaving {
    async fn before(&self, inner: &Arc<dyn ObjectStore>, request: Request<'_>) -> Verdict {
        let Request::Put { location, opts } = request else {
            return Verdict::Pass;
        };
        let is_head_update =
            matches!(opts.mode, PutMode::Update(_)) && location.filename() == Some("head");
        if is_head_update {
            let step = self.armed.lock().unwrap().take();
            if let Some(step) = step {
                let other = S3Store::new(inner.clone(), "floor").unwrap();
                other
                    .put(&tenant(), &snapshot(step.snapshot_seq))
                    .await
                    .unwrap();
                for i in 0..step.appends {
                    other
                        .append_batch(&tenant(), &run(), &[event(&format!("late-{i}"), 10)], None)
                        .await
                        .unwrap();
                }
            }
        }
        Verdict::Pass
    }
}

fn snapshot(seq: u64) -> SnapshotRecord {
    SnapshotRecord::new(
        &tenant(),
        run(),
        SnapshotId::new("snap").unwrap(),
        seq,
        1,
        RunStatus::Running,
    )
}

/// Appends 10 old events, then compacts them while `step` interleaves; returns
/// what the compaction pruned and the stream afterwards.
async fn compact_with(step: Interleave) -> (usize, Vec<EventRecord>) {
    let bucket = Arc::new(InMemory::new());
    let interleaving = Arc::new(Forwarding::new(
        bucket.clone(),
        Interleaving {
            armed: Mutex::new(None),
        },
    ));
    let writer = S3Store::new(bucket.clone(), "floor").unwrap();
    let events: Vec<_> = (1..=10).map(|i| event(&format!("e{i}"), 10)).collect();
    writer
        .append_batch(&tenant(), &run(), &events, None)
        .await
        .unwrap();
    let compactor = S3Store::new(interleaving.clone(), "floor").unwrap();
    *interleaving.hooks().armed.lock().unwrap() = Some(step);
    let report = compactor.compact(100, 1_000).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    let pruned = report.removed;
    assert!(
        interleaving.hooks().armed.lock().unwrap().is_none(),
        "the interleaving ran"
    );
    let records = writer
        .read(&tenant(), &run(), ReadQuery::default())
        .await
        .unwrap();
    (pruned, records)
}

fn assert_kept_from(records: &[EventRecord], floor: u64, last: u64) {
    let kept: Vec<u64> = records
        .iter()
        .filter(|record| !record.is_compaction_marker())
        .map(|record| record.seq)
        .collect();
    assert_eq!(kept, (floor..=last).collect::<Vec<_>>(), "{records:?}");
    let marker = records
        .iter()
        .find(|record| record.is_compaction_marker())
        .expect("a marker");
    assert!(marker.seq < floor, "marker at {}", marker.seq);
}

#[tokio::test]
async fn a_snapshot_put_before_the_commit_is_honoured() {
    let (pruned, records) = compact_with(Interleave {
        snapshot_seq: 5,
        appends: 0,
    })
    .await;
    assert_eq!(pruned, 4);
    assert_kept_from(&records, 5, 10);
}

#[tokio::test]
async fn a_snapshot_put_and_an_append_before_the_commit_are_honoured() {
    let (pruned, records) = compact_with(Interleave {
        snapshot_seq: 5,
        appends: 1,
    })
    .await;
    assert_eq!(pruned, 4);
    assert_kept_from(&records, 5, 11);
}
