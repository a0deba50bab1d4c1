//! What maintenance and `latest` cost against a real S3 server, counted
//! at the client: a store of many streams, each with flushed segments and
//! several snapshots, then a compaction pass with nothing old enough, one
//! whose old events are all kept by the snapshot floor, `latest` of every
//! stream, and prunes. Prints its figures (docs/benchmarks.md); ignored by
//! default, run with
//! `cargo test -p runstore-s3 --test maintenance_cost -- --ignored --nocapture`
//! with `RUNSTORE_S3_ENDPOINT` and `RUNSTORE_S3_BUCKET` set.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use async_trait::async_trait;
use object_store::ObjectStore;
use runstore_conformance::support::{
    self,
    object_store::{Forwarding, Hooks, Request, Verdict},
};
use runstore_core::{
    EventId, EventLog, EventRecord, RunId, RunStatus, SnapshotId, SnapshotRecord, SnapshotStore,
    SnapshotStoreExt, Tenant,
};
use runstore_s3::S3Store;

const STREAMS: usize = 40;
const EVENTS: usize = 600;
const SNAPSHOTS: u64 = 10;

/// Counts requests (a listing counts once per call, not per page).
#[derive(Debug, Default)]
struct Counter {
    requests: AtomicU64,
}

#[async_trait]
impl Hooks for Counter {
    async fn before(&self, _inner: &Arc<dyn ObjectStore>, _request: Request<'_>) -> Verdict {
        self.requests.fetch_add(1, Ordering::SeqCst);
        Verdict::Pass
    }
}

fn tenant() -> Tenant {
    Tenant::new("acme", "prod", None).unwrap()
}

fn run(n: usize) -> RunId {
    RunId::new(format!("run-{n:03}")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement against a real server; run explicitly"]
async fn maintenance_cost_on_a_real_server() {
    let Some([endpoint, bucket]) = support::service_urls(
        ["RUNSTORE_S3_ENDPOINT", "RUNSTORE_S3_BUCKET"],
        "s3 maintenance cost",
    ) else {
        return;
    };
    let prefix = format!("maintenance-cost-{}", uuid::Uuid::new_v4().simple());
    let plain = S3Store::from_env_with_endpoint(&bucket, Some(endpoint), &prefix).unwrap();
    let counting = Arc::new(Forwarding::new(
        Arc::clone(plain.object_store()),
        Counter::default(),
    ));
    let store = S3Store::new(counting.clone(), &prefix).unwrap();
    let begun = Instant::now();
    for n in 0..STREAMS {
        for b in 0..EVENTS / 100 {
            let batch: Vec<_> = (0..100)
                .map(|i| {
                    let id = EventId::new(format!("e{b}-{i}")).unwrap();
                    EventRecord::new(&tenant(), run(n), id, "step", 1)
                })
                .collect();
            store
                .append_batch(&tenant(), &run(n), &batch, None)
                .await
                .unwrap();
        }
        // Every snapshot at seq 1: old events, all at or above the floor.
        for s in 1..=SNAPSHOTS {
            let snapshot = SnapshotRecord::new(
                &tenant(),
                run(n),
                SnapshotId::new(format!("s{s:02}")).unwrap(),
                1,
                s,
                RunStatus::Running,
            );
            store.put(&tenant(), &snapshot).await.unwrap();
        }
    }
    println!(
        "setup: {STREAMS} streams x {EVENTS} events, {SNAPSHOTS} snapshots each, in {:.1} s",
        begun.elapsed().as_secs_f64()
    );
    let count = || counting.hooks().requests.swap(0, Ordering::SeqCst);
    count();
    // Prints what happened since `at`: requests, per stream, and time.
    let line = |what: &str, at: Instant| {
        let requests = count();
        println!(
            "{what}: {requests} requests ({:.2} per stream), {:.0} ms",
            requests as f64 / STREAMS as f64,
            at.elapsed().as_secs_f64() * 1e3
        );
    };

    let at = Instant::now();
    let report = store.compact(10_000, 1_000).await.unwrap();
    assert!(report.is_clean() && report.removed == 0);
    line("compaction pass, nothing old enough", at);

    let at = Instant::now();
    let report = store.compact(10, 1_000).await.unwrap();
    assert!(report.is_clean() && report.removed == 0);
    line("compaction pass, old events all above the floor", at);

    let at = Instant::now();
    for n in 0..STREAMS {
        let latest = store.latest(&tenant(), &run(n)).await.unwrap().unwrap();
        assert_eq!(latest.created_at_ms, SNAPSHOTS);
    }
    line(
        &format!("latest of each stream ({SNAPSHOTS} snapshots)"),
        at,
    );

    let at = Instant::now();
    let report = store.prune(10_000, 0, 1_000).await.unwrap();
    assert!(report.is_clean() && report.removed == 0);
    line("prune, nothing old enough", at);

    let at = Instant::now();
    let keep = usize::try_from(SNAPSHOTS).unwrap() - 1;
    let report = store.prune(10, keep, 1_000).await.unwrap();
    assert!(report.is_clean());
    assert_eq!(report.removed, STREAMS);
    line(&format!("prune deleting 1 of {SNAPSHOTS} per stream"), at);
}
