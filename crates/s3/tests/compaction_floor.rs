//! A snapshot put that lands between a compaction's planning and its commit
//! is honoured: nothing at or above the snapshot's seq is pruned
//! (CONTRACT §8; docs/backends/s3.md, "Compaction").

use std::{
    fmt,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, memory::InMemory, path::Path,
};
use runstore_core::{
    EventId, EventLog, EventRecord, ReadQuery, RunId, RunStatus, SnapshotId, SnapshotRecord,
    SnapshotStore, Tenant,
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

/// An `InMemory` that, once armed, runs [`Interleave`] through another
/// handle right before the next conditional head update reaches the store.
struct Interleaving {
    inner: Arc<InMemory>,
    armed: Mutex<Option<Interleave>>,
}

impl fmt::Debug for Interleaving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Interleaving")
    }
}

impl fmt::Display for Interleaving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Interleaving")
    }
}

#[async_trait]
impl ObjectStore for Interleaving {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let is_head_update =
            matches!(opts.mode, PutMode::Update(_)) && location.filename() == Some("head");
        if is_head_update {
            let step = self.armed.lock().unwrap().take();
            if let Some(step) = step {
                let other = S3Store::new(self.inner.clone(), "floor").unwrap();
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
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

fn tenant() -> Tenant {
    Tenant::new("acme", "prod", None).unwrap()
}

fn run() -> RunId {
    RunId::new("run-1").unwrap()
}

fn event(id: &str, at: u64) -> EventRecord {
    EventRecord::new(&tenant(), run(), EventId::new(id).unwrap(), "step", at)
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
    let interleaving = Arc::new(Interleaving {
        inner: bucket.clone(),
        armed: Mutex::new(None),
    });
    let writer = S3Store::new(bucket.clone(), "floor").unwrap();
    let events: Vec<_> = (1..=10).map(|i| event(&format!("e{i}"), 10)).collect();
    writer
        .append_batch(&tenant(), &run(), &events, None)
        .await
        .unwrap();
    let compactor = S3Store::new(interleaving.clone(), "floor").unwrap();
    *interleaving.armed.lock().unwrap() = Some(step);
    let pruned = compactor.compact(100, 1_000).await.unwrap();
    assert!(
        interleaving.armed.lock().unwrap().is_none(),
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
