//! Four independent store instances -- separate clients, as four machines
//! would be -- append to one stream on a real S3 server at once, with
//! overlapping event ids: every id is stored exactly once and seqs are
//! gapless (CONTRACT §2, §3).
//!
//! Needs `RUNSTORE_S3_ENDPOINT` and `RUNSTORE_S3_BUCKET` (see
//! `scripts/services/seaweedfs.sh`); without them the test fails, unless
//! `RUNSTORE_ALLOW_MISSING_SERVICES` is set.

use std::collections::HashMap;

use runstore_core::{AppendOutcome, EventId, EventLog, EventRecord, ReadQuery, RunId, Tenant};
use runstore_s3::S3Store;

const WRITERS: usize = 4;
const ROUNDS: usize = 30;

fn server() -> Option<(String, String)> {
    let endpoint = std::env::var("RUNSTORE_S3_ENDPOINT").ok();
    let bucket = std::env::var("RUNSTORE_S3_BUCKET").ok();
    match (endpoint, bucket) {
        (Some(endpoint), Some(bucket)) => Some((endpoint, bucket)),
        _ if std::env::var_os("RUNSTORE_ALLOW_MISSING_SERVICES").is_some() => {
            eprintln!(
                "SKIPPED s3 race: RUNSTORE_S3_ENDPOINT / RUNSTORE_S3_BUCKET are not set \
                 (RUNSTORE_ALLOW_MISSING_SERVICES is set)"
            );
            None
        }
        _ => panic!(
            "s3 race test cannot run: RUNSTORE_S3_ENDPOINT / RUNSTORE_S3_BUCKET are not set. \
             Start the server with scripts/services/seaweedfs.sh, or set \
             RUNSTORE_ALLOW_MISSING_SERVICES=1 to skip it knowingly"
        ),
    }
}

fn tenant() -> Tenant {
    Tenant::new("race", "machines", None).unwrap()
}

fn run() -> RunId {
    RunId::new("shared run").unwrap()
}

/// Writer `w`'s batch in round `r`: one id of its own and one shared with
/// the next writer, so every shared id is raced by two machines.
fn batch(w: usize, r: usize) -> Vec<EventRecord> {
    [
        format!("w{w}-r{r}"),
        format!("shared-{}-r{r}", (w + r) % WRITERS),
    ]
    .iter()
    .map(|id| {
        EventRecord::new(
            &tenant(),
            run(),
            EventId::new(id.clone()).unwrap(),
            "step",
            1,
        )
        .with_payload(serde_json::json!({ "writer": w }))
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_machines_append_to_one_stream() {
    let Some((endpoint, bucket)) = server() else {
        return;
    };
    let prefix = format!("race-{}", uuid::Uuid::new_v4().simple());
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        // Its own client and handle: nothing shared but the bucket.
        let store =
            S3Store::from_env_with_endpoint(&bucket, Some(endpoint.clone()), &prefix).unwrap();
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for r in 0..ROUNDS {
                let events = batch(w, r);
                let outcomes = loop {
                    match store.append_batch(&tenant(), &run(), &events, None).await {
                        Ok(outcomes) => break outcomes,
                        Err(err) if err.is_retryable() => continue,
                        Err(err) => panic!("writer {w}: {err}"),
                    }
                };
                for (event, outcome) in events.iter().zip(outcomes) {
                    answers.push((event.event_id.as_str().to_owned(), outcome));
                }
            }
            answers
        }));
    }
    let mut answers: Vec<(String, AppendOutcome)> = Vec::new();
    for task in tasks {
        answers.extend(task.await.unwrap());
    }

    let reader = S3Store::from_env_with_endpoint(&bucket, Some(endpoint.clone()), &prefix).unwrap();
    let records = reader
        .read(&tenant(), &run(), ReadQuery::all())
        .await
        .unwrap();
    let seqs: Vec<u64> = records.iter().map(|record| record.seq).collect();
    assert_eq!(
        seqs,
        (1..=records.len() as u64).collect::<Vec<_>>(),
        "gapless"
    );
    let mut stored: HashMap<&str, u64> = HashMap::new();
    for record in &records {
        assert!(
            stored
                .insert(record.event_id.as_str(), record.seq)
                .is_none(),
            "{} stored twice",
            record.event_id
        );
    }
    let distinct: std::collections::HashSet<&str> =
        answers.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(stored.len(), distinct.len(), "each distinct id stored once");
    let mut inserted = 0;
    for (id, outcome) in &answers {
        assert_eq!(stored.get(id.as_str()), Some(&outcome.seq), "{id}");
        inserted += usize::from(outcome.inserted);
    }
    assert_eq!(
        inserted,
        records.len(),
        "one inserting answer per stored event"
    );
}
