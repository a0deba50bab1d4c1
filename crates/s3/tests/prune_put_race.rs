//! A `prune` racing `put`s of the same snapshot ids never undoes an
//! acknowledged put (docs/backends/s3.md, "Snapshots"): prune deletes only
//! the object versions it listed and judged, never one a put wrote after.
//!
//! The interleaving tests run on `InMemory` behind a store that holds a
//! request until the test lets it go. The randomized race runs on a real S3
//! server and needs `RUNSTORE_S3_ENDPOINT` and `RUNSTORE_S3_BUCKET` (see
//! `scripts/services/seaweedfs.sh`); without them it fails, unless
//! `RUNSTORE_ALLOW_MISSING_SERVICES` is set.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, memory::InMemory, path::Path,
};
use runstore_core::{
    RunId, RunStatus, SnapshotId, SnapshotRecord, SnapshotStore, SnapshotStoreExt, Tenant,
};
use runstore_s3::S3Store;
use tokio::sync::{Notify, oneshot};

/// The request a [`Gated`] store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// The first DELETE.
    Delete,
    /// The first GET of a snapshot object (not of a head).
    SnapshotGet,
}

/// `InMemory` whose first request of one kind waits, once it has been
/// made, until the test releases it; every other request passes straight
/// through, the held one included once released.
struct Gated {
    inner: InMemory,
    held: Held,
    /// Signalled when the held request arrives.
    arrived: Notify,
    /// Taken by the held request; the test sends to let it go on.
    release: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Gated {
    fn new(held: Held) -> (Arc<Self>, oneshot::Sender<()>) {
        let (release, receiver) = oneshot::channel();
        let gated = Arc::new(Self {
            inner: InMemory::new(),
            held,
            arrived: Notify::new(),
            release: Mutex::new(Some(receiver)),
        });
        (gated, release)
    }

    /// Waits here if this is the held request.
    async fn gate(&self, kind: Held) {
        if kind != self.held {
            return;
        }
        let receiver = self.release.lock().unwrap().take();
        if let Some(receiver) = receiver {
            self.arrived.notify_one();
            receiver.await.expect("the test releases the held request");
        }
    }
}

impl fmt::Debug for Gated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Gated")
    }
}

impl fmt::Display for Gated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Gated")
    }
}

#[async_trait]
impl ObjectStore for Gated {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
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
        if location.parts().any(|part| part.as_ref() == "snap") {
            self.gate(Held::SnapshotGet).await;
        }
        self.inner.get_opts(location, options).await
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.gate(Held::Delete).await;
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
    RunId::new("run").unwrap()
}

fn snapshot(id: &str, seq: u64, created_at_ms: u64) -> SnapshotRecord {
    SnapshotRecord::new(
        &tenant(),
        run(),
        SnapshotId::new(id).unwrap(),
        seq,
        created_at_ms,
        RunStatus::Running,
    )
}

/// Puts an old snapshot, starts a prune that would delete it (retention
/// 100 at 1,000: everything created before 900 goes; nothing is kept by
/// count), lets the prune run up to the held request, puts a fresh
/// snapshot of the same id, and lets the prune finish. The fresh put was
/// acknowledged while the prune ran, after the prune listed the stream:
/// the prune must not remove it.
async fn a_put_during_a_prune_survives(held: Held) {
    let (gated, release) = Gated::new(held);
    let store = S3Store::new(gated.clone(), "p").unwrap();
    store.put(&tenant(), &snapshot("s", 1, 10)).await.unwrap();

    let arrived = gated.arrived.notified();
    let prune = tokio::spawn({
        let store = store.clone();
        async move { store.prune(100, 0, 1_000).await }
    });
    arrived.await;

    let fresh = snapshot("s", 2, 950);
    store.put(&tenant(), &fresh).await.unwrap();
    release.send(()).unwrap();
    let report = prune.await.unwrap().unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    assert!(report.removed <= 1, "{report:?}");

    let id = SnapshotId::new("s").unwrap();
    let got = store.get(&tenant(), &run(), &id).await.unwrap();
    assert_eq!(got.as_ref().map(|s| s.seq), Some(2), "get after the prune");
    let latest = store.latest(&tenant(), &run()).await.unwrap();
    assert_eq!(latest.map(|s| s.seq), Some(2), "latest after the prune");
    let listed = store.list(&tenant(), &run(), None).await.unwrap();
    let seqs: Vec<u64> = listed.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, [2], "list after the prune");
    // A second prune finds nothing to delete: the fresh snapshot is within
    // the retention.
    let report = store.prune(100, 0, 1_000).await.unwrap();
    assert_eq!(report.removed, 0, "{report:?}");
    assert_eq!(
        store.get(&tenant(), &run(), &id).await.unwrap(),
        got,
        "get after a second prune"
    );
}

// The prune has read the old snapshot and chosen it; its delete waits while
// the put lands.
#[tokio::test]
async fn a_put_between_a_prunes_choice_and_its_delete_survives() {
    a_put_during_a_prune_survives(Held::Delete).await;
}

// The prune has listed the stream; its read of the snapshot waits while the
// put lands.
#[tokio::test]
async fn a_put_between_a_prunes_listing_and_its_read_survives() {
    a_put_during_a_prune_survives(Held::SnapshotGet).await;
}
