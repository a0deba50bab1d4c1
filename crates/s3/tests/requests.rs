//! Requests per operation (docs/backends/s3.md, "Requests per operation"),
//! counted on `InMemory`: an append of a warm handle is one conditional put,
//! and reading the tail never lists or fetches the whole stream.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use async_trait::async_trait;
use object_store::{ObjectStore, PutPayload, memory::InMemory, path::Path};
use runstore_conformance::support::object_store::{Forwarding, Hooks, Request, Verdict};
use runstore_core::{
    EventId, EventLog, EventRecord, ReadQuery, RunId, RunStatus, SnapshotId, SnapshotRecord,
    SnapshotStore, SnapshotStoreExt, Tenant,
};
use runstore_s3::S3Store;

/// Records each request as `"<verb> <path>"`.
#[derive(Debug, Default)]
struct Recorder {
    log: Mutex<Vec<String>>,
    lists: AtomicUsize,
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

#[async_trait]
impl Hooks for Recorder {
    async fn before(&self, _inner: &Arc<dyn ObjectStore>, request: Request<'_>) -> Verdict {
        if request.is_list() {
            self.lists.fetch_add(1, Ordering::SeqCst);
        }
        self.log
            .lock()
            .unwrap()
            .push(format!("{} {}", request.verb(), request.path()));
        Verdict::Pass
    }
}

/// An `InMemory` whose requests a [`Recorder`] records.
fn recording() -> Arc<Forwarding<Recorder>> {
    Arc::new(Forwarding::new(
        Arc::new(InMemory::new()),
        Recorder::default(),
    ))
}

fn tenant() -> Tenant {
    Tenant::new("acme", "prod", None).unwrap()
}

fn run() -> RunId {
    RunId::new("run").unwrap()
}

fn event(id: String) -> EventRecord {
    EventRecord::new(&tenant(), run(), EventId::new(id).unwrap(), "step", 1)
}

/// Waits until the handle's background flush of the stream (if any) is
/// done: an import of nothing takes the stream's leader slot and makes no
/// request of its own while the handle holds a head.
async fn settle(store: &S3Store) {
    store.import_stream(&tenant(), &run(), &[]).await.unwrap();
}

/// Appends `batches` batches of 100 events (`b<batch>-<i>`) and waits for
/// the flushes.
async fn append_batches(store: &S3Store, batches: usize) {
    for b in 0..batches {
        let batch: Vec<_> = (0..100).map(|i| event(format!("b{b}-{i}"))).collect();
        store
            .append_batch(&tenant(), &run(), &batch, None)
            .await
            .unwrap();
    }
    settle(store).await;
}

/// How many table pages (`idx/`) and segment objects (`seg/`, whose
/// leading table a lookup reads) the requests of `log` name.
fn parts_read(log: &[String]) -> (usize, usize) {
    let count = |part: &str| log.iter().filter(|line| line.contains(part)).count();
    (count("/idx/"), count("/seg/"))
}

fn verbs(log: &[String]) -> Vec<&str> {
    log.iter()
        .map(|line| line.split(' ').next().unwrap())
        .collect()
}

#[tokio::test]
async fn a_warm_append_is_one_conditional_put() {
    let recording = recording();
    let store = S3Store::new(recording.clone(), "p").unwrap();
    store
        .append_batch(&tenant(), &run(), &[event("e0".into())], None)
        .await
        .unwrap();
    assert_eq!(
        verbs(&recording.hooks().take()),
        ["GET", "PUT"],
        "first append: head GET + create"
    );
    for i in 1..100 {
        store
            .append_batch(&tenant(), &run(), &[event(format!("e{i}"))], None)
            .await
            .unwrap();
        assert_eq!(verbs(&recording.hooks().take()), ["PUT"], "append {i}");
    }
    let batch: Vec<_> = (100..127).map(|i| event(format!("e{i}"))).collect();
    store
        .append_batch(&tenant(), &run(), &batch, None)
        .await
        .unwrap();
    assert_eq!(
        verbs(&recording.hooks().take()),
        ["PUT"],
        "a batch is one put"
    );
    // The append that fills the buffer also flushes it: one segment (its
    // id table inside), one head put.
    store
        .append_batch(&tenant(), &run(), &[event("e127".into())], None)
        .await
        .unwrap();
    settle(&store).await;
    let log = recording.hooks().take();
    assert_eq!(verbs(&log), ["PUT", "PUT", "PUT"], "{log:?}");
    assert!(log[1].contains("/seg/"), "{log:?}");
    // A new handle (another process) needs the head and the segment's id
    // table (both ids in one ranged GET).
    let cold = S3Store::new(recording.clone(), "p").unwrap();
    cold.append_batch(
        &tenant(),
        &run(),
        &[event("e5".into()), event("x".into())],
        None,
    )
    .await
    .unwrap();
    let log = recording.hooks().take();
    assert_eq!(verbs(&log), ["GET", "GET", "PUT"], "{log:?}");
    assert!(log[1].contains("/seg/"), "{log:?}");
    assert_eq!(
        cold.seq_of(&tenant(), &run(), &EventId::new("e5").unwrap())
            .await
            .unwrap(),
        Some(6)
    );
}

/// Appends through a warm handle cost one head put each, plus a flush per
/// 128 records (one segment put, one head put, and the reads and one bulk
/// delete of the segments it merges): issue 15's targets of at most 1.1
/// requests per event for single appends and 0.05 for batches of 100.
#[tokio::test]
async fn appends_cost_one_put_and_flushes_a_few_requests_per_128_records() {
    let recording = recording();
    let store = S3Store::new(recording.clone(), "p").unwrap();
    append_batches(&store, 100).await;
    let batched = recording.hooks().take();
    let per_event = batched.len() as f64 / 10_000.0;
    println!(
        "batches of 100: {} requests for 10,000 events",
        batched.len()
    );
    assert!(
        per_event <= 0.05,
        "{} requests for 10,000 events",
        batched.len()
    );
    assert!(
        !batched.iter().any(|line| line.contains("/ids")),
        "no id entry objects: {batched:?}"
    );

    let single = S3Store::new(recording.clone(), "single").unwrap();
    for i in 0..2_000 {
        single
            .append_batch(&tenant(), &run(), &[event(format!("s{i}"))], None)
            .await
            .unwrap();
    }
    settle(&single).await;
    let singles = recording.hooks().take();
    let per_event = singles.len() as f64 / 2_000.0;
    println!(
        "single appends: {} requests for 2,000 events",
        singles.len()
    );
    assert!(
        per_event <= 1.1,
        "{} requests for 2,000 events",
        singles.len()
    );
    // Every id is still found, by every handle.
    let cold = S3Store::new(recording.clone(), "p").unwrap();
    for id in ["b0-0", "b42-17", "b99-99"] {
        let seq = cold
            .seq_of(&tenant(), &run(), &EventId::new(id).unwrap())
            .await
            .unwrap();
        let (batch, at) = id[1..].split_once('-').unwrap();
        let expected = batch.parse::<u64>().unwrap() * 100 + at.parse::<u64>().unwrap() + 1;
        assert_eq!(seq, Some(expected), "{id}");
    }
    // 50 flushes of 200 records leave segments of 6,400, 3,200 and 400: the
    // two larger tables are split into 7 and 4 pages, of which a lookup of
    // one id reads one each; the smallest leads its segment.
    recording.hooks().take();
    let seq = cold
        .seq_of(&tenant(), &run(), &EventId::new("b7-7").unwrap())
        .await
        .unwrap();
    assert_eq!(seq, Some(708));
    let log = recording.hooks().take();
    assert_eq!(verbs(&log), ["GET"; 4], "{log:?}");
    let (pages, tables) = parts_read(&log);
    assert_eq!((pages, tables), (2, 1), "{log:?}");
}

#[tokio::test]
async fn reading_the_tail_fetches_only_the_tail() {
    let recording = recording();
    let store = S3Store::new(recording.clone(), "p").unwrap();
    append_batches(&store, 40).await;
    recording.hooks().take();
    let lists = recording.hooks().lists.load(Ordering::SeqCst);

    let tail = store
        .read(&tenant(), &run(), ReadQuery::tail(5))
        .await
        .unwrap();
    assert_eq!(
        tail.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [3996, 3997, 3998, 3999, 4000]
    );
    let log = recording.hooks().take();
    assert!(log.len() <= 2, "tail of 5: {log:?}");

    let tail = store
        .read(&tenant(), &run(), ReadQuery::tail(300))
        .await
        .unwrap();
    assert_eq!(tail.len(), 300);
    let log = recording.hooks().take();
    assert!(log.len() <= 4, "tail of 300 from 4,000: {log:?}");

    let window = store
        .read(&tenant(), &run(), ReadQuery::all().after(3_900).limit(10))
        .await
        .unwrap();
    assert_eq!(window.first().unwrap().seq, 3_901);
    assert!(recording.hooks().take().len() <= 3);

    assert_eq!(store.next_seq(&tenant(), &run()).await.unwrap(), 4_001);
    assert_eq!(recording.hooks().take().len(), 1);
    assert_eq!(
        store
            .seq_of(&tenant(), &run(), &EventId::new("b3-7").unwrap())
            .await
            .unwrap(),
        Some(308)
    );
    // The head, then one GET per segment (every second batch fills the
    // buffer past 128: 20 flushes of 200 records leave segments of 3,200
    // and 800): the page of the larger table the id falls on, and the
    // table leading the smaller segment.
    let log = recording.hooks().take();
    assert_eq!(verbs(&log), ["GET"; 3], "{log:?}");
    assert_eq!(parts_read(&log), (1, 1), "{log:?}");
    assert_eq!(
        recording.hooks().lists.load(Ordering::SeqCst),
        lists,
        "reads never list"
    );
}

#[tokio::test]
async fn an_import_looks_up_each_id_it_brings() {
    let recording = recording();
    let store = S3Store::new(recording.clone(), "p").unwrap();
    let events: Vec<_> = (0..200).map(|i| event(format!("e{i}"))).collect();
    store
        .append_batch(&tenant(), &run(), &events, None)
        .await
        .unwrap();
    settle(&store).await;
    recording.hooks().take();
    // A handle that knows nothing of the flushed records looks up each id
    // the import brings (CONTRACT §23), then commits with one head put.
    let cold = S3Store::new(recording.clone(), "p").unwrap();
    let records: Vec<_> = (201..=203)
        .map(|seq| {
            let mut record = event(format!("imported-{seq}"));
            record.seq = seq;
            record
        })
        .collect();
    assert_eq!(
        cold.import_stream(&tenant(), &run(), &records)
            .await
            .unwrap(),
        3
    );
    // The head, the one segment's id table (all three ids in one ranged
    // GET), the head put.
    let log = recording.hooks().take();
    assert_eq!(verbs(&log), ["GET", "GET", "PUT"], "{log:?}");
    assert!(log[1].contains("/seg/"), "{log:?}");
}

fn snapshot(run_id: RunId, id: &str, seq: u64, created_at_ms: u64) -> SnapshotRecord {
    SnapshotRecord::new(
        &tenant(),
        run_id,
        SnapshotId::new(id).unwrap(),
        seq,
        created_at_ms,
        RunStatus::Running,
    )
}

#[tokio::test]
async fn snapshot_requests() {
    let recording = recording();
    let store = S3Store::new(recording.clone(), "p").unwrap();
    store
        .append_batch(&tenant(), &run(), &[event("e0".into())], None)
        .await
        .unwrap();
    recording.hooks().take();

    // A put lists the stream's snapshots (to number its version), writes
    // its own key, and changes the head (CONTRACT §8).
    store
        .put(&tenant(), &snapshot(run(), "s", 1, 10))
        .await
        .unwrap();
    let log = recording.hooks().take();
    assert_eq!(verbs(&log), ["LIST", "PUT", "GET", "PUT"], "{log:?}");
    // Replacing a snapshot also deletes the version it replaced.
    store
        .put(&tenant(), &snapshot(run(), "s", 2, 20))
        .await
        .unwrap();
    let log = recording.hooks().take();
    assert_eq!(
        verbs(&log),
        ["LIST", "PUT", "GET", "PUT", "DELETE"],
        "{log:?}"
    );
    // A stream without events has no head to change.
    let other = RunId::new("no-events").unwrap();
    store
        .put(&tenant(), &snapshot(other.clone(), "s", 1, 10))
        .await
        .unwrap();
    let log = recording.hooks().take();
    assert_eq!(verbs(&log), ["LIST", "PUT", "GET"], "{log:?}");

    let id = SnapshotId::new("s").unwrap();
    let got = store.get(&tenant(), &run(), &id).await.unwrap();
    assert_eq!(got.map(|snapshot| snapshot.seq), Some(2));
    assert_eq!(verbs(&recording.hooks().take()), ["LIST", "GET"], "get");
    assert_eq!(store.list(&tenant(), &run(), None).await.unwrap().len(), 1);
    assert_eq!(verbs(&recording.hooks().take()), ["LIST", "GET"], "list");

    // Prune: one LIST of every snapshot, then stream by stream a GET per
    // snapshot and a DELETE per snapshot it removes.
    let report = store.prune(100, 0, 1_000).await.unwrap();
    assert_eq!(report.removed, 2);
    let log = recording.hooks().take();
    assert_eq!(
        verbs(&log),
        ["LIST", "GET", "DELETE", "GET", "DELETE"],
        "{log:?}"
    );
}

/// `latest` and the compaction floor read one snapshot whatever the stream
/// holds: the keys order the stream. A prune reads only what it deletes.
#[tokio::test]
async fn latest_reads_one_snapshot_and_prune_reads_what_it_deletes() {
    let recording = recording();
    let store = S3Store::new(recording.clone(), "p").unwrap();
    for n in 1..=40 {
        store
            .put(&tenant(), &snapshot(run(), &format!("s{n:02}"), n, n * 10))
            .await
            .unwrap();
    }
    recording.hooks().take();
    let latest = store.latest(&tenant(), &run()).await.unwrap().unwrap();
    assert_eq!(latest.snapshot_id.as_str(), "s40");
    assert_eq!(verbs(&recording.hooks().take()), ["LIST", "GET"], "latest");
    let newest = store.list(&tenant(), &run(), Some(3)).await.unwrap();
    assert_eq!(newest.len(), 3);
    assert_eq!(
        verbs(&recording.hooks().take()),
        ["LIST", "GET", "GET", "GET"],
        "list of 3"
    );
    // Keep the newest 35: five old ones go, each read before any delete.
    let report = store.prune(100, 35, 1_000).await.unwrap();
    assert_eq!(report.removed, 5);
    let log = recording.hooks().take();
    assert_eq!(
        verbs(&log),
        [
            "LIST", "GET", "GET", "GET", "GET", "GET", "DELETE", "DELETE", "DELETE", "DELETE",
            "DELETE"
        ],
        "{log:?}"
    );
}

/// A compaction pass where nothing is old enough reads the head of each
/// stream and nothing else; where old events are all kept by the snapshot
/// floor, it lists the snapshots and reads the newest, and still no segment.
/// A head written before heads recorded each segment's oldest event has its
/// segments read once, and records them for the next pass.
#[tokio::test]
async fn a_compaction_with_nothing_old_enough_reads_no_segment() {
    let recording = recording();
    let store = S3Store::new(recording.clone(), "p").unwrap();
    append_batches(&store, 5).await;
    for n in 1..=3 {
        store
            .put(&tenant(), &snapshot(run(), &format!("s{n}"), 1, n))
            .await
            .unwrap();
    }
    recording.hooks().take();
    let reads = |log: &[String], what: &str| log.iter().filter(|line| line.contains(what)).count();

    // Events occurred at 1: a cutoff of 0 prunes none.
    let report = store.compact(10_000, 1_000).await.unwrap();
    assert!(report.is_clean() && report.removed == 0, "{report:?}");
    let log = recording.hooks().take();
    let stream: Vec<&String> = log.iter().filter(|line| line.contains("/vrun/")).collect();
    assert_eq!(stream, ["GET p/ev/vacme.prod/vrun/head"], "{log:?}");

    // Old enough, but at or above the newest snapshot (seq 1).
    let report = store.compact(10, 1_000).await.unwrap();
    assert!(report.is_clean() && report.removed == 0, "{report:?}");
    let log = recording.hooks().take();
    assert_eq!(reads(&log, "/seg/"), 0, "{log:?}");
    assert_eq!(
        reads(&log, "GET p/snap/"),
        1,
        "the newest snapshot: {log:?}"
    );

    // The head as a store that did not record the oldest event wrote it.
    let head = Path::from("p/ev/vacme.prod/vrun/head");
    let bytes = recording.get(&head).await.unwrap().bytes().await.unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let segments = json["segments"].as_array_mut().unwrap();
    let count = segments.len();
    for segment in segments {
        segment
            .as_object_mut()
            .unwrap()
            .remove("oldest_ms")
            .unwrap();
    }
    recording
        .put(&head, PutPayload::from(serde_json::to_vec(&json).unwrap()))
        .await
        .unwrap();
    recording.hooks().take();
    assert!(store.compact(10, 1_000).await.unwrap().is_clean());
    let log = recording.hooks().take();
    assert_eq!(
        reads(&log, "GET p/ev/vacme.prod/vrun/seg/"),
        count,
        "{log:?}"
    );
    assert_eq!(reads(&log, "PUT p/ev/vacme.prod/vrun/head"), 1, "{log:?}");
    assert!(store.compact(10, 1_000).await.unwrap().is_clean());
    let log = recording.hooks().take();
    assert_eq!(reads(&log, "/seg/"), 0, "recorded: {log:?}");
    let records = store
        .read(&tenant(), &run(), ReadQuery::all())
        .await
        .unwrap();
    assert_eq!(records.len(), 500);
}

/// A compaction that keeps few records leaves a segment whose table holds
/// every id its marker remembers: the flushes after it weigh that segment
/// by its table and write their own segments beside it, instead of reading
/// and rewriting the marker and its table pages.
#[tokio::test]
async fn flushes_after_a_compaction_leave_the_marker_segment_alone() {
    let recording = recording();
    let store = S3Store::new(recording.clone(), "p").unwrap();
    append_batches(&store, 30).await;
    store
        .put(&tenant(), &snapshot(run(), "s", 2_990, 1))
        .await
        .unwrap();
    // Every event occurred at 1: all of them before the snapshot go.
    assert_eq!(store.compact(1, 10).await.unwrap().removed, 2_989);
    recording.hooks().take();
    for i in 0..2 {
        let batch: Vec<_> = (0..100).map(|n| event(format!("late-{i}-{n}"))).collect();
        store
            .append_batch(&tenant(), &run(), &batch, None)
            .await
            .unwrap();
    }
    settle(&store).await;
    let log = recording.hooks().take();
    assert_eq!(
        verbs(&log),
        ["PUT"; 4],
        "two appends, one segment, one head: {log:?}"
    );
    assert_eq!(parts_read(&log), (0, 1), "{log:?}");
}
