//! Throughput, latency and requests per event of `S3Store` against a real
//! server (`RUNSTORE_S3_ENDPOINT`, `RUNSTORE_S3_BUCKET`; see
//! `scripts/services/seaweedfs.sh`). Prints a Markdown table.
//!
//! ```text
//! cargo run --release -p runstore-s3 --example bench
//! ```

use std::{
    fmt,
    ops::Range,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, aws::AmazonS3Builder, path::Path,
};
use runstore_core::{EventId, EventLog, EventRecord, ReadQuery, RunId, Tenant};
use runstore_s3::S3Store;

/// Counts the requests that reach the server.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn ObjectStore>,
    requests: AtomicU64,
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

impl Counting {
    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.count();
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.count();
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.count();
        self.inner.get_opts(location, options).await
    }
    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.count();
        self.inner.get_ranges(location, ranges).await
    }
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.count();
        self.inner.delete(location).await
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.count();
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.count();
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.count();
        self.inner.copy(from, to).await
    }
    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.count();
        self.inner.copy_if_not_exists(from, to).await
    }
}

fn tenant() -> Tenant {
    Tenant::new("bench", "s3", None).expect("valid tenant")
}

fn event(run: &RunId, id: String) -> EventRecord {
    EventRecord::new(&tenant(), run.clone(), EventId::new(id).expect("valid id"), "step", 1)
        .with_payload(serde_json::json!({"step": "work", "attempt": 1, "note": "a small payload of about a hundred bytes"}))
}

struct Figures {
    name: &'static str,
    events: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    requests: u64,
}

impl Figures {
    fn row(mut self) -> String {
        self.latencies.sort();
        // Nearest-rank percentile over the sorted latencies.
        let pick = |percent: usize| {
            let index = ((self.latencies.len() - 1) * percent + 50) / 100;
            self.latencies[index].as_secs_f64() * 1_000.0
        };
        format!(
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:.2} |",
            self.name,
            self.events,
            self.events as f64 / self.elapsed.as_secs_f64(),
            pick(50),
            pick(99),
            self.requests as f64 / self.events as f64
        )
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let endpoint = std::env::var("RUNSTORE_S3_ENDPOINT").expect("RUNSTORE_S3_ENDPOINT is not set");
    let bucket = std::env::var("RUNSTORE_S3_BUCKET").expect("RUNSTORE_S3_BUCKET is not set");
    let s3 = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_allow_http(endpoint.starts_with("http://"))
        .with_endpoint(endpoint)
        .build()
        .expect("configure the client");
    let counting = Arc::new(Counting {
        inner: Arc::new(s3),
        requests: AtomicU64::new(0),
    });
    let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let store = S3Store::new(counting.clone(), &prefix).expect("valid prefix");
    let t = tenant();
    let mut rows = Vec::new();

    // Single appends, one after another.
    let run = RunId::new("single").expect("valid run");
    let n = 500u64;
    let before = counting.requests.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut latencies = Vec::new();
    for i in 0..n {
        let at = Instant::now();
        store
            .append_batch(&t, &run, &[event(&run, format!("e{i}"))], None)
            .await
            .expect("append");
        latencies.push(at.elapsed());
    }
    rows.push(Figures {
        name: "single append",
        events: n,
        elapsed: start.elapsed(),
        latencies,
        requests: counting.requests.load(Ordering::Relaxed) - before,
    });

    // Batches of 100.
    let run = RunId::new("batch").expect("valid run");
    let batches = 50u64;
    let before = counting.requests.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut latencies = Vec::new();
    for b in 0..batches {
        let events: Vec<_> = (0..100).map(|i| event(&run, format!("b{b}-{i}"))).collect();
        let at = Instant::now();
        store
            .append_batch(&t, &run, &events, None)
            .await
            .expect("append batch");
        latencies.push(at.elapsed());
    }
    rows.push(Figures {
        name: "batch of 100 (latency per batch)",
        events: batches * 100,
        elapsed: start.elapsed(),
        latencies,
        requests: counting.requests.load(Ordering::Relaxed) - before,
    });

    // 16 concurrent appenders to one stream through one handle.
    let run = RunId::new("concurrent").expect("valid run");
    let per_task = 100u64;
    let before = counting.requests.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..16 {
        let store = store.clone();
        let run = run.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in 0..per_task {
                let at = Instant::now();
                store
                    .append_batch(&t, &run, &[event(&run, format!("t{task}-{i}"))], None)
                    .await
                    .expect("append");
                latencies.push(at.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("task"));
    }
    rows.push(Figures {
        name: "16 concurrent appenders",
        events: 16 * per_task,
        elapsed: start.elapsed(),
        latencies,
        requests: counting.requests.load(Ordering::Relaxed) - before,
    });

    // 4 handles (as 4 machines would be) x 4 tasks on one stream.
    let run = RunId::new("handles").expect("valid run");
    let per_task = 50u64;
    let before = counting.requests.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for handle in 0..4 {
        let store = S3Store::new(counting.clone(), &prefix).expect("valid prefix");
        for task in 0..4 {
            let store = store.clone();
            let run = run.clone();
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in 0..per_task {
                    let events = [event(&run, format!("h{handle}-t{task}-{i}"))];
                    let at = Instant::now();
                    loop {
                        match store.append_batch(&t, &run, &events, None).await {
                            Ok(_) => break,
                            Err(err) if err.is_retryable() => continue,
                            Err(err) => panic!("append: {err}"),
                        }
                    }
                    latencies.push(at.elapsed());
                }
                latencies
            }));
        }
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("task"));
    }
    rows.push(Figures {
        name: "4 handles x 4 appenders",
        events: 16 * per_task,
        elapsed: start.elapsed(),
        latencies,
        requests: counting.requests.load(Ordering::Relaxed) - before,
    });

    // Tail reads of 10 records from the 5,000-event stream.
    let run = RunId::new("batch").expect("valid run");
    let reads = 200u64;
    let before = counting.requests.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut latencies = Vec::new();
    for _ in 0..reads {
        let at = Instant::now();
        let tail = store
            .read(&t, &run, ReadQuery::tail(10))
            .await
            .expect("read");
        assert_eq!(tail.len(), 10);
        latencies.push(at.elapsed());
    }
    rows.push(Figures {
        name: "tail read of 10 (per read)",
        events: reads,
        elapsed: start.elapsed(),
        latencies,
        requests: counting.requests.load(Ordering::Relaxed) - before,
    });

    println!("| workload | events | events/s | p50 ms | p99 ms | requests/event |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!("{}", row.row());
    }
}
