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
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use object_store::{ObjectStore, memory::InMemory};
use runstore_conformance::support::{
    self,
    object_store::{Forwarding, Hooks, Request, Verdict},
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

/// The hooks of a [`Gated`] store: the first request of one kind waits,
/// once it has been made, until the test releases it; every other request
/// passes straight through, the held one included once released.
struct Gate {
    held: Held,
    /// Signalled when the held request arrives.
    arrived: Notify,
    /// Taken by the held request; the test sends to let it go on.
    release: Mutex<Option<oneshot::Receiver<()>>>,
}

/// `InMemory` behind a [`Gate`].
type Gated = Forwarding<Gate>;

fn gated(held: Held) -> (Arc<Gated>, oneshot::Sender<()>) {
    let (release, receiver) = oneshot::channel();
    let gate = Gate {
        held,
        arrived: Notify::new(),
        release: Mutex::new(Some(receiver)),
    };
    (
        Arc::new(Forwarding::new(Arc::new(InMemory::new()), gate)),
        release,
    )
}

impl Gate {
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

#[async_trait]
impl Hooks for Gate {
    async fn before(&self, _inner: &Arc<dyn ObjectStore>, request: Request<'_>) -> Verdict {
        match request {
            Request::Get { location, .. }
                if location.parts().any(|part| part.as_ref() == "snap") =>
            {
                self.gate(Held::SnapshotGet).await;
            }
            Request::Delete { .. } => self.gate(Held::Delete).await,
            _ => {}
        }
        Verdict::Pass
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
    let (gated, release) = gated(held);
    let store = S3Store::new(gated.clone(), "p").unwrap();
    store.put(&tenant(), &snapshot("s", 1, 10)).await.unwrap();

    let arrived = gated.hooks().arrived.notified();
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

fn server() -> Option<(String, String)> {
    support::service_urls(
        ["RUNSTORE_S3_ENDPOINT", "RUNSTORE_S3_BUCKET"],
        "s3 prune/put race",
    )
    .map(|[endpoint, bucket]| (endpoint, bucket))
}

/// A random number below `bound`.
fn random_below(bound: u64) -> u64 {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    u64::from_le_bytes(bytes[..8].try_into().unwrap()) % bound.max(1)
}

const IDS: usize = 24;
const WRITERS: usize = 3;
const PUTS_PER_WRITER: usize = 16;
const PRUNERS: usize = 2;
const PRUNES_PER_PRUNER: usize = 6;
const ROUNDS: u64 = 10;
/// Every prune runs at this time with this retention: a snapshot created
/// before 900 may go, one created at 950 never does.
const NOW_MS: u64 = 1_000;
const RETENTION_MS: u64 = 100;
const OLD_MS: u64 = 10;
const FRESH_MS: u64 = 950;

/// An acknowledged put of a fresh snapshot: its `seq` names it.
#[derive(Debug, Clone, Copy)]
struct Acked {
    id: usize,
    seq: u64,
    started: Instant,
    acked: Instant,
}

fn id(n: usize) -> SnapshotId {
    SnapshotId::new(format!("snap-{n}")).unwrap()
}

/// Puts until the put is acknowledged (a retryable error is retried with
/// the same snapshot, as a caller would).
async fn put_acked(store: &S3Store, snapshot: &SnapshotRecord) {
    loop {
        match store.put(&tenant(), snapshot).await {
            Ok(()) => return,
            Err(err) if err.is_retryable() => continue,
            Err(err) => panic!("put of {}: {err}", snapshot.snapshot_id),
        }
    }
}

// Each round stores an old snapshot under every id, then several handles
// (separate clients, as separate machines would be) put fresh snapshots of
// the same ids while other handles prune with a retention that removes the
// old ones and never a fresh one. Afterwards, for each id, `get`, `list`
// and `latest` answer a fresh snapshot from an acknowledged put that no
// other acknowledged put of the id started after: nothing acknowledged is
// lost, and the newest write wins. An old snapshot left anywhere would
// mean a put was undone, since every id got fresh puts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prunes_racing_puts_of_the_same_ids_on_a_real_server() {
    let Some((endpoint, bucket)) = server() else {
        return;
    };
    let prefix = format!("prune-race-{}", uuid::Uuid::new_v4().simple());
    let handle = || S3Store::from_env_with_endpoint(&bucket, Some(endpoint.clone()), &prefix);
    let reader = handle().unwrap();
    let begun = Instant::now();
    let mut removed = 0;
    for round in 0..ROUNDS {
        for n in 0..IDS {
            let seq = round * 100_000 + n as u64;
            put_acked(&reader, &snapshot(id(n).as_str(), seq, OLD_MS)).await;
        }
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let store = handle().unwrap();
            writers.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for k in 0..PUTS_PER_WRITER {
                    tokio::time::sleep(Duration::from_millis(random_below(6))).await;
                    let n = usize::try_from(random_below(IDS as u64)).unwrap();
                    let seq = round * 100_000 + 1_000 * (w as u64 + 1) + k as u64;
                    let started = Instant::now();
                    put_acked(&store, &snapshot(id(n).as_str(), seq, FRESH_MS)).await;
                    acked.push(Acked {
                        id: n,
                        seq,
                        started,
                        acked: Instant::now(),
                    });
                }
                acked
            }));
        }
        let mut pruners = Vec::new();
        for _ in 0..PRUNERS {
            let store = handle().unwrap();
            pruners.push(tokio::spawn(async move {
                let mut removed = 0;
                for _ in 0..PRUNES_PER_PRUNER {
                    tokio::time::sleep(Duration::from_millis(random_below(12))).await;
                    let report = store.prune(RETENTION_MS, 0, NOW_MS).await.unwrap();
                    assert!(report.is_clean(), "{:?}", report.failed);
                    removed += report.removed;
                }
                removed
            }));
        }
        let mut acked: Vec<Acked> = Vec::new();
        for writer in writers {
            acked.extend(writer.await.unwrap());
        }
        for pruner in pruners {
            removed += pruner.await.unwrap();
        }

        let listed = reader.list(&tenant(), &run(), None).await.unwrap();
        let mut expected = Vec::new();
        for n in 0..IDS {
            let puts: Vec<&Acked> = acked.iter().filter(|put| put.id == n).collect();
            let got = reader.get(&tenant(), &run(), &id(n)).await.unwrap();
            let Some(got) = got else {
                assert!(puts.is_empty(), "round {round}: {} lost: {puts:?}", id(n));
                continue;
            };
            if puts.is_empty() {
                // No fresh put of this id: the prunes (or the last one of
                // them) may have left the old snapshot or removed it.
                assert_eq!(got.created_at_ms, OLD_MS, "round {round}");
                expected.push(got);
                continue;
            }
            let winner = puts
                .iter()
                .find(|put| put.seq == got.seq)
                .unwrap_or_else(|| panic!("round {round}: {} is {got:?}, no fresh put", id(n)));
            let later: Vec<&&Acked> = puts
                .iter()
                .filter(|put| put.started > winner.acked)
                .collect();
            assert!(
                later.is_empty(),
                "round {round}: {} answers put {winner:?}, but these started after it was \
                 acknowledged: {later:?}",
                id(n)
            );
            expected.push(got);
        }
        expected.sort_by(runstore_core::raw::snapshots::snapshot_order);
        assert_eq!(listed, expected, "round {round}: list agrees with get");
        let latest = reader.latest(&tenant(), &run()).await.unwrap();
        assert_eq!(latest.as_ref(), expected.last(), "round {round}: latest");
    }
    eprintln!(
        "{ROUNDS} rounds of {} puts and {} prunes: the prunes removed {removed} old \
         snapshots, in {:?}",
        WRITERS * PUTS_PER_WRITER,
        PRUNERS * PRUNES_PER_PRUNER,
        begun.elapsed()
    );
}
