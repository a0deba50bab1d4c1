//! Fault injection: a wrapping `ObjectStore` fails, loses the response of,
//! delays, or "kills the writer at" a chosen request. Every interruption
//! point of an append (including the flush and segment merge it triggers)
//! and of a compaction is exercised: each append succeeds or returns a
//! retryable error, the stream stays readable and appendable by another
//! handle (another process), and retrying never duplicates an event
//! (CONTRACT §2, §3, §11; docs/backends/s3.md, "Failure cases").

use runstore_conformance::support::records::{acme as tenant, run_1 as run};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use object_store::{ObjectStore, memory::InMemory};
use runstore_conformance::support::{
    self, assert_states_each_cause_once,
    object_store::{Forwarding, Hooks, Request, Verdict, injected},
};
use runstore_core::{AppendOutcome, EventId, EventLog, EventRecord, ReadQuery, StreamKey};
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

/// The hooks of a [`Faulty`] store: the `at`-th request (counted from 0)
/// of those counted (puts, gets, deletes, lists) suffers `fault`.
#[derive(Debug, Default)]
struct Faults {
    seen: AtomicUsize,
    rule: Mutex<Option<(usize, Fault)>>,
}

/// An `InMemory` whose requests go through [`Faults`].
type Faulty = Forwarding<Faults>;

fn faulty(inner: Arc<InMemory>) -> Arc<Faulty> {
    Arc::new(Forwarding::new(inner, Faults::default()))
}

fn timeout_error() -> object_store::Error {
    injected("injected: request timed out")
}

impl Faults {
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
}

#[async_trait]
impl Hooks for Faults {
    async fn before(&self, _inner: &Arc<dyn ObjectStore>, request: Request<'_>) -> Verdict {
        // A lost response needs a request that changes something.
        let writes = match request {
            Request::Put { .. } | Request::Delete { .. } => true,
            Request::Get { .. } | Request::List { .. } | Request::ListWithDelimiter { .. } => false,
            _ => return Verdict::Pass,
        };
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        let rule = *self.rule.lock().unwrap();
        match rule {
            Some((at, Fault::Fail)) if n == at => Verdict::Fail(timeout_error()),
            Some((at, Fault::LoseResponse)) if n == at && writes => Verdict::Lose(timeout_error()),
            Some((at, Fault::LoseResponse)) if n == at => Verdict::Fail(timeout_error()),
            Some((at, Fault::Die)) if n >= at => Verdict::Fail(timeout_error()),
            Some((at, Fault::Delay)) if n == at && !request.is_list() => {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Verdict::Pass
            }
            _ => Verdict::Pass,
        }
    }
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

/// Checks the stream with the shared stream checker: seqs exactly 1..n
/// (nothing is compacted), each id once, `next_seq` n + 1; returns
/// id -> seq.
async fn check_stream(store: &S3Store) -> HashMap<String, u64> {
    let records = store
        .read(&tenant(), &run(), ReadQuery::all())
        .await
        .unwrap();
    let check = support::assert_sound_stream(&StreamKey::new(tenant(), run()), &records);
    assert_eq!(check.compacted, 0, "gapless seqs, nothing compacted");
    let next = store.next_seq(&tenant(), &run()).await.unwrap();
    assert_eq!(check.check_next_seq(next), None);
    check.ids
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
    let faulty = faulty(bucket.clone());
    let store = S3Store::new(faulty.clone(), "faults").unwrap();
    faulty.hooks().arm(usize::MAX, Fault::Fail);
    store
        .append_batch(&tenant(), &run(), &request(), None)
        .await
        .unwrap();
    settle(&store).await;
    faulty.hooks().seen()
}

#[tokio::test]
async fn every_interruption_point_of_an_append_is_safe() {
    let total = requests_of_one_append().await;
    // Head, id table, head put, then the flush: the older segment's
    // records, the merged segment, the head, the bulk delete.
    assert!(
        total >= 7,
        "the append should look ids up, flush and merge ({total} requests)"
    );
    for fault in [Fault::Fail, Fault::LoseResponse, Fault::Die, Fault::Delay] {
        for at in points(total) {
            let bucket = Arc::new(InMemory::new());
            populate(&bucket).await;
            let faulty = faulty(bucket.clone());
            let writer = S3Store::new(faulty.clone(), "faults").unwrap();
            faulty.hooks().arm(at, fault);
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
            faulty.hooks().disarm();
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

    let probe_bucket = Arc::new(InMemory::new());
    let faulty_probe = faulty(probe_bucket.clone());
    populate(&probe_bucket).await;
    faulty_probe.hooks().arm(usize::MAX, Fault::Fail);
    let report = S3Store::new(faulty_probe.clone(), "faults")
        .unwrap()
        .compact(100, 1_000)
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    let total = faulty_probe.hooks().seen();

    for fault in [Fault::Fail, Fault::LoseResponse, Fault::Die] {
        for at in points(total) {
            let bucket = Arc::new(InMemory::new());
            populate(&bucket).await;
            let faulty = faulty(bucket.clone());
            let store = S3Store::new(faulty.clone(), "faults").unwrap();
            faulty.hooks().arm(at, fault);
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
            let faulty = faulty(bucket);
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
                faulty.hooks().arm(3 + (i + writer) % 5, fault);
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

    let probe = faulty(Arc::new(InMemory::new()));
    probe.hooks().arm(usize::MAX, Fault::Fail);
    let probe_store = S3Store::new(probe.clone(), "faults").unwrap();
    assert_eq!(
        probe_store
            .import_stream(&tenant(), &run(), &export)
            .await
            .unwrap(),
        140
    );
    let total = probe.hooks().seen();

    for fault in [Fault::Fail, Fault::LoseResponse, Fault::Die] {
        for at in points(total) {
            let bucket = Arc::new(InMemory::new());
            let faulty = faulty(bucket.clone());
            let importer = S3Store::new(faulty.clone(), "faults").unwrap();
            faulty.hooks().arm(at, fault);
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

#[tokio::test]
async fn a_failed_request_names_the_stream_and_states_its_cause_once() {
    let bucket = Arc::new(InMemory::new());
    populate(&bucket).await;
    let faulty = faulty(bucket.clone());
    // Each request in turn fails: the head read of the round, then the id
    // lookups of a handle that has nothing cached.
    for at in 0..3 {
        let store = S3Store::new(faulty.clone(), "faults").unwrap();
        faulty.hooks().arm(at, Fault::Die);
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
    faulty.hooks().arm(2, Fault::Die);
    let report = store
        .compact(100, 1_000)
        .await
        .expect("the streams are listed");
    assert_eq!(report.failed.len(), 1);
    let text = report.failed[0].error.to_string();
    assert!(text.contains("stream acme/prod:run-1"), "{text}");
    assert_states_each_cause_once(&text);
    faulty.hooks().disarm();
}
