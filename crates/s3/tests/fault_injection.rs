//! Fault injection: a wrapping `ObjectStore` fails, loses the response of,
//! delays, or "kills the writer at" a chosen request. Every interruption
//! point of an append (including the flush and segment merge it triggers)
//! and of a compaction is exercised: each append succeeds or returns a
//! retryable error, the stream stays readable and appendable by another
//! handle (another process), and retrying never duplicates an event
//! (CONTRACT §2, §3, §11; docs/backends/s3.md, "Failure cases").

use std::{
    collections::HashMap,
    fmt,
    ops::Range,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, stream::BoxStream};
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, memory::InMemory, path::Path,
};
use runstore_core::{AppendOutcome, EventId, EventLog, EventRecord, ReadQuery, RunId, Tenant};
use runstore_s3::S3Store;

/// What happens to the chosen request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// It fails before reaching the store.
    Fail,
    /// It is applied, but the caller sees a timeout.
    LoseResponse,
    /// The writer dies: this request and every later one fail unapplied.
    Die,
    /// It is held back before being applied.
    Delay,
}

/// An `InMemory` whose `at`-th request (counted from 0) suffers `fault`.
#[derive(Debug)]
struct Faulty {
    inner: Arc<InMemory>,
    seen: AtomicUsize,
    rule: Mutex<Option<(usize, Fault)>>,
}

impl fmt::Display for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

fn timeout_error() -> object_store::Error {
    object_store::Error::Generic {
        store: "Faulty",
        source: Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "injected: request timed out",
        )),
    }
}

/// What the wrapper does with the current request.
enum Action {
    Pass,
    Fail,
    LoseResponse,
}

impl Faulty {
    fn new(inner: Arc<InMemory>) -> Self {
        Self {
            inner,
            seen: AtomicUsize::new(0),
            rule: Mutex::new(None),
        }
    }

    /// Arms `fault` at the `at`-th request from now.
    fn arm(&self, at: usize, fault: Fault) {
        self.seen.store(0, Ordering::SeqCst);
        *self.rule.lock().unwrap() = Some((at, fault));
    }

    fn disarm(&self) {
        *self.rule.lock().unwrap() = None;
    }

    /// Requests seen since the last `arm`.
    fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    async fn action(&self) -> Action {
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        let rule = *self.rule.lock().unwrap();
        match rule {
            Some((at, Fault::Fail)) if n == at => Action::Fail,
            Some((at, Fault::LoseResponse)) if n == at => Action::LoseResponse,
            Some((at, Fault::Die)) if n >= at => Action::Fail,
            Some((at, Fault::Delay)) if n == at => {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Action::Pass
            }
            _ => Action::Pass,
        }
    }
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        match self.action().await {
            Action::Fail => Err(timeout_error()),
            Action::LoseResponse => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(timeout_error())
            }
            Action::Pass => self.inner.put_opts(location, payload, opts).await,
        }
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
        match self.action().await {
            Action::Fail | Action::LoseResponse => Err(timeout_error()),
            Action::Pass => self.inner.get_opts(location, options).await,
        }
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        match self.action().await {
            Action::Fail => Err(timeout_error()),
            Action::LoseResponse => {
                self.inner.delete(location).await?;
                Err(timeout_error())
            }
            Action::Pass => self.inner.delete(location).await,
        }
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        let rule = *self.rule.lock().unwrap();
        let fails = match rule {
            Some((at, Fault::Fail | Fault::LoseResponse)) => n == at,
            Some((at, Fault::Die)) => n >= at,
            _ => false,
        };
        if fails {
            futures::stream::once(async { Err(timeout_error()) }).boxed()
        } else {
            self.inner.list(prefix)
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        match self.action().await {
            Action::Fail | Action::LoseResponse => Err(timeout_error()),
            Action::Pass => self.inner.list_with_delimiter(prefix).await,
        }
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
        .with_payload(serde_json::json!({ "id": id }))
}

/// A clean handle on `bucket`: another process.
fn clean(bucket: &Arc<InMemory>) -> S3Store {
    S3Store::new(bucket.clone(), "faults").unwrap()
}

/// 255 events: one flushed segment of 128 and 127 buffered, so the next
/// append fills the buffer and its flush merges two segments.
async fn populate(bucket: &Arc<InMemory>) {
    let store = clean(bucket);
    let events: Vec<_> = (0..255).map(|i| event(&format!("old-{i}"), 10)).collect();
    for chunk in events.chunks(64) {
        store
            .append_batch(&tenant(), &run(), chunk, None)
            .await
            .unwrap();
    }
    settle(&store).await;
}

/// Waits until the handle's background flush of the stream (if any) is
/// done: an import of nothing takes the stream's leader slot.
async fn settle(store: &S3Store) {
    store.import_stream(&tenant(), &run(), &[]).await.unwrap();
}

/// Checks the stream: seqs exactly 1..n, each id once; returns id -> seq.
async fn check_stream(store: &S3Store) -> HashMap<String, u64> {
    let records = store
        .read(&tenant(), &run(), ReadQuery::all())
        .await
        .unwrap();
    let seqs: Vec<u64> = records.iter().map(|record| record.seq).collect();
    assert_eq!(
        seqs,
        (1..=records.len() as u64).collect::<Vec<_>>(),
        "gapless seqs"
    );
    let mut ids = HashMap::new();
    for record in &records {
        assert!(
            ids.insert(record.event_id.as_str().to_owned(), record.seq)
                .is_none(),
            "{} stored twice",
            record.event_id
        );
    }
    assert_eq!(
        store.next_seq(&tenant(), &run()).await.unwrap(),
        records.len() as u64 + 1
    );
    ids
}

/// The interruption points to test among `total` requests: every request
/// except the middle of a flush's run of id entry puts, which are alike and
/// issued in parallel (so their order is arbitrary anyway); of those, every
/// 9th.
fn points(total: usize) -> Vec<usize> {
    (0..total)
        .filter(|at| *at < 12 || at % 9 == 0 || at + 16 > total)
        .collect()
}

/// The request: two new events and one already stored.
fn request() -> Vec<EventRecord> {
    vec![event("new-a", 20), event("old-3", 20), event("new-b", 20)]
}

/// Checks a retry's answers against the stream.
fn check_answers(answers: &[AppendOutcome], stored: &HashMap<String, u64>) {
    for (event, answer) in request().iter().zip(answers) {
        assert_eq!(
            stored.get(event.event_id.as_str()),
            Some(&answer.seq),
            "answer for {}",
            event.event_id
        );
    }
}

/// Runs the request cleanly once and returns how many requests it made.
async fn requests_of_one_append() -> usize {
    let bucket = Arc::new(InMemory::new());
    populate(&bucket).await;
    let faulty = Arc::new(Faulty::new(bucket.clone()));
    let store = S3Store::new(faulty.clone(), "faults").unwrap();
    faulty.arm(usize::MAX, Fault::Fail);
    store
        .append_batch(&tenant(), &run(), &request(), None)
        .await
        .unwrap();
    settle(&store).await;
    faulty.seen()
}

#[tokio::test]
async fn every_interruption_point_of_an_append_is_safe() {
    let total = requests_of_one_append().await;
    assert!(
        total > 100,
        "the append should flush and merge ({total} requests)"
    );
    for fault in [Fault::Fail, Fault::LoseResponse, Fault::Die, Fault::Delay] {
        for at in points(total) {
            let bucket = Arc::new(InMemory::new());
            populate(&bucket).await;
            let faulty = Arc::new(Faulty::new(bucket.clone()));
            let writer = S3Store::new(faulty.clone(), "faults").unwrap();
            faulty.arm(at, fault);
            let first = writer
                .append_batch(&tenant(), &run(), &request(), None)
                .await;
            if let Err(err) = &first {
                assert!(err.is_retryable(), "{fault:?} at {at}: {err}");
            }
            // Another process finds a consistent stream...
            let other = clean(&bucket);
            let stored = check_stream(&other).await;
            assert!(
                stored.len() == 255 || stored.len() == 257,
                "{fault:?} at {at}"
            );
            if let Ok(answers) = &first {
                assert_eq!(stored.len(), 257, "{fault:?} at {at}: acknowledged");
                check_answers(answers, &stored);
                assert_eq!(
                    answers[1],
                    AppendOutcome {
                        seq: 4,
                        inserted: false
                    }
                );
            }
            // ...retrying through it never duplicates...
            let retried = other
                .append_batch(&tenant(), &run(), &request(), None)
                .await
                .unwrap();
            let stored = check_stream(&other).await;
            assert_eq!(stored.len(), 257, "{fault:?} at {at}");
            check_answers(&retried, &stored);
            // ...and both it and the interrupted writer keep appending.
            let more = other
                .append_batch(&tenant(), &run(), &[event("after-other", 30)], None)
                .await
                .unwrap();
            assert_eq!(
                more[0],
                AppendOutcome {
                    seq: 258,
                    inserted: true
                }
            );
            faulty.disarm();
            let again = writer
                .append_batch(&tenant(), &run(), &request(), None)
                .await
                .unwrap();
            check_answers(&again, &check_stream(&other).await);
            let last = writer
                .append_batch(&tenant(), &run(), &[event("after-writer", 30)], None)
                .await
                .unwrap();
            assert_eq!(
                last[0],
                AppendOutcome {
                    seq: 259,
                    inserted: true
                }
            );
            let stored = check_stream(&clean(&bucket)).await;
            assert_eq!(stored.len(), 259, "{fault:?} at {at}");
        }
    }
}

#[tokio::test]
async fn every_interruption_point_of_a_compaction_leaves_old_or_new() {
    // The expected outcome, from an undisturbed run.
    let reference = Arc::new(InMemory::new());
    populate(&reference).await;
    let before = clean(&reference)
        .read(&tenant(), &run(), ReadQuery::all())
        .await
        .unwrap();
    let report = clean(&reference).compact(100, 1_000).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    assert_eq!(report.removed, 255);
    let after = clean(&reference)
        .read(&tenant(), &run(), ReadQuery::all())
        .await
        .unwrap();
    assert_eq!(after.len(), 1, "one marker remains");

    let faulty_probe = Arc::new(Faulty::new(Arc::new(InMemory::new())));
    let probe_bucket = faulty_probe.inner.clone();
    populate(&probe_bucket).await;
    faulty_probe.arm(usize::MAX, Fault::Fail);
    let report = S3Store::new(faulty_probe.clone(), "faults")
        .unwrap()
        .compact(100, 1_000)
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    let total = faulty_probe.seen();

    for fault in [Fault::Fail, Fault::LoseResponse, Fault::Die] {
        for at in points(total) {
            let bucket = Arc::new(InMemory::new());
            populate(&bucket).await;
            let faulty = Arc::new(Faulty::new(bucket.clone()));
            let store = S3Store::new(faulty.clone(), "faults").unwrap();
            faulty.arm(at, fault);
            // The stream's failure is in the report; the pass itself fails
            // only when the streams cannot be listed.
            let result = store.compact(100, 1_000).await.and_then(|report| {
                match report.failed.into_iter().next() {
                    Some(failure) => Err(failure.error),
                    None => Ok(report.removed),
                }
            });
            if let Err(err) = &result {
                assert!(err.is_retryable(), "{fault:?} at {at}: {err}");
            }
            let other = clean(&bucket);
            let now = other
                .read(&tenant(), &run(), ReadQuery::all())
                .await
                .unwrap();
            assert!(now == before || now == after, "{fault:?} at {at}: a mix");
            if result.is_ok() && fault != Fault::LoseResponse {
                assert_eq!(now, after, "{fault:?} at {at}: acknowledged");
            }
            // Finishing the job from another process converges.
            let report = other.compact(100, 1_000).await.unwrap();
            assert!(report.is_clean(), "{fault:?} at {at}: {:?}", report.failed);
            let done = other
                .read(&tenant(), &run(), ReadQuery::all())
                .await
                .unwrap();
            assert_eq!(done, after, "{fault:?} at {at}");
            // Pruned ids still answer their original seq (CONTRACT §10).
            let dup = other
                .append_batch(&tenant(), &run(), &[event("old-7", 50)], None)
                .await
                .unwrap();
            assert_eq!(
                dup[0],
                AppendOutcome {
                    seq: 8,
                    inserted: false
                }
            );
            let next = other
                .append_batch(&tenant(), &run(), &[event("fresh", 50)], None)
                .await
                .unwrap();
            assert_eq!(
                next[0],
                AppendOutcome {
                    seq: 256,
                    inserted: true
                }
            );
        }
    }
}

#[tokio::test]
async fn two_processes_with_delays_and_failures_never_duplicate() {
    let bucket = Arc::new(InMemory::new());
    let mut tasks = Vec::new();
    for writer in 0..2usize {
        let bucket = bucket.clone();
        tasks.push(tokio::spawn(async move {
            let faulty = Arc::new(Faulty::new(bucket));
            let store = S3Store::new(faulty.clone(), "faults").unwrap();
            let mut answers = Vec::new();
            for i in 0..150usize {
                // One request of every append is delayed, fails, or is
                // applied with its response lost; the writer retries
                // until the append succeeds.
                let fault = match i % 3 {
                    0 => Fault::Delay,
                    1 => Fault::Fail,
                    _ => Fault::LoseResponse,
                };
                faulty.arm(3 + (i + writer) % 5, fault);
                let id = format!("e{}", (i * 7 + writer * 3) % 200);
                let batch = [event(&id, 1)];
                let outcome = loop {
                    match store.append_batch(&tenant(), &run(), &batch, None).await {
                        Ok(outcome) => break outcome[0],
                        Err(err) => assert!(err.is_retryable(), "{err}"),
                    }
                };
                answers.push((id, outcome));
            }
            answers
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.unwrap());
    }
    let stored = check_stream(&clean(&bucket)).await;
    for (id, outcome) in answers {
        assert_eq!(stored.get(&id), Some(&outcome.seq), "{id}");
    }
}

#[tokio::test]
async fn every_interruption_point_of_an_import_is_safe() {
    // An export with a compaction marker: 140 records after compacting 255,
    // imported in two chunks.
    let source = Arc::new(InMemory::new());
    populate(&source).await;
    let exporter = clean(&source);
    let report = exporter.compact(100, 1_000).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    let more: Vec<_> = (0..139)
        .map(|i| event(&format!("late-{i}"), 5_000))
        .collect();
    exporter
        .append_batch(&tenant(), &run(), &more, None)
        .await
        .unwrap();
    let export = exporter
        .read(&tenant(), &run(), ReadQuery::all())
        .await
        .unwrap();
    assert_eq!(export.len(), 140);

    let probe = Arc::new(Faulty::new(Arc::new(InMemory::new())));
    probe.arm(usize::MAX, Fault::Fail);
    let probe_store = S3Store::new(probe.clone(), "faults").unwrap();
    assert_eq!(
        probe_store
            .import_stream(&tenant(), &run(), &export)
            .await
            .unwrap(),
        140
    );
    let total = probe.seen();

    for fault in [Fault::Fail, Fault::LoseResponse, Fault::Die] {
        for at in points(total) {
            let bucket = Arc::new(InMemory::new());
            let faulty = Arc::new(Faulty::new(bucket.clone()));
            let importer = S3Store::new(faulty.clone(), "faults").unwrap();
            faulty.arm(at, fault);
            if let Err(err) = importer.import_stream(&tenant(), &run(), &export).await {
                assert!(err.is_retryable(), "{fault:?} at {at}: {err}");
            }
            let other = clean(&bucket);
            let now = other
                .read(&tenant(), &run(), ReadQuery::all())
                .await
                .unwrap();
            assert_eq!(now, export[..now.len()], "{fault:?} at {at}: a prefix");
            // Importing again from another process completes it...
            other
                .import_stream(&tenant(), &run(), &export)
                .await
                .unwrap();
            let done = other
                .read(&tenant(), &run(), ReadQuery::all())
                .await
                .unwrap();
            assert_eq!(done, export, "{fault:?} at {at}");
            // ...and the ids it holds, live and compacted, are known.
            let dup = other
                .append_batch(
                    &tenant(),
                    &run(),
                    &[event("old-7", 1), event("late-5", 1)],
                    None,
                )
                .await
                .unwrap();
            assert_eq!(
                dup[0],
                AppendOutcome {
                    seq: 8,
                    inserted: false
                }
            );
            assert_eq!(dup[1].seq, export[6].seq);
            assert!(!dup[1].inserted);
        }
    }
}

/// CONTRACT §26: no part of an error's text repeats.
fn assert_states_each_cause_once(text: &str) {
    let parts: Vec<&str> = text.split(": ").collect();
    for (index, part) in parts.iter().enumerate() {
        assert!(
            !parts[index + 1..].contains(part),
            "{part:?} is stated twice in {text:?}"
        );
    }
}

#[tokio::test]
async fn a_failed_request_names_the_stream_and_states_its_cause_once() {
    let bucket = Arc::new(InMemory::new());
    populate(&bucket).await;
    let faulty = Arc::new(Faulty::new(bucket.clone()));
    // Each request in turn fails: the head read of the round, then the id
    // lookups of a handle that has nothing cached.
    for at in 0..3 {
        let store = S3Store::new(faulty.clone(), "faults").unwrap();
        faulty.arm(at, Fault::Die);
        let err = store
            .append_batch(&tenant(), &run(), &[event(&format!("e{at}"), 1)], None)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(err.is_retryable(), "{text}");
        assert!(text.contains("stream acme/prod:run-1"), "{text}");
        assert_eq!(text.matches("injected").count(), 1, "{text}");
        assert_states_each_cause_once(&text);
    }
    // A stream's failure in a compaction's report, likewise.
    let store = S3Store::new(faulty.clone(), "faults").unwrap();
    // Requests 0 and 1 list the streams; 2 reads the stream's head.
    faulty.arm(2, Fault::Die);
    let report = store
        .compact(100, 1_000)
        .await
        .expect("the streams are listed");
    assert_eq!(report.failed.len(), 1);
    let text = report.failed[0].error.to_string();
    assert!(text.contains("stream acme/prod:run-1"), "{text}");
    assert_states_each_cause_once(&text);
    faulty.disarm();
}
