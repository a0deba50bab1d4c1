//! Four connection pools -- four nodes, as far as the database can tell --
//! append to one stream at once with overlapping event ids: every id is
//! stored exactly once and the seqs are exactly 1..n (CONTRACT §2, §3).
//!
//! Needs a server: `RUNSTORE_POSTGRES_URL` (scripts/services/postgres.sh
//! starts one). Without it the test fails, unless
//! `RUNSTORE_ALLOW_MISSING_SERVICES` is set, in which case it says loudly
//! that it skipped.

use std::collections::{HashMap, HashSet};

use runstore_core::{AppendOutcome, EventId, EventLog, EventRecord, ReadQuery, RunId, Tenant};
use runstore_postgres::{PostgresOptions, PostgresStore};

const POOLS: usize = 4;
const TASKS_PER_POOL: usize = 8;
const BATCHES_PER_TASK: usize = 12;
const BATCH: usize = 5;
/// Ids are drawn from a pool smaller than the number of appends, so most
/// ids are appended by several pools at once.
const DISTINCT_IDS: usize = 600;

fn server_url() -> Option<String> {
    match std::env::var("RUNSTORE_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("RUNSTORE_ALLOW_MISSING_SERVICES").is_some() => {
            eprintln!(
                "SKIPPED postgres race test: RUNSTORE_POSTGRES_URL is not set \
                 (RUNSTORE_ALLOW_MISSING_SERVICES is set)"
            );
            None
        }
        _ => panic!(
            "RUNSTORE_POSTGRES_URL is not set: run scripts/test.sh, which starts PostgreSQL, \
             or set RUNSTORE_ALLOW_MISSING_SERVICES=1 to skip this test knowingly"
        ),
    }
}

/// The ids one task appends, in batches: a deterministic walk over the
/// shared id space that differs per pool and task.
fn task_batches(pool: usize, task: usize) -> Vec<Vec<usize>> {
    let stride = 7 + 2 * (pool * TASKS_PER_POOL + task);
    (0..BATCHES_PER_TASK)
        .map(|b| {
            (0..BATCH)
                .map(|i| (pool * 131 + task * 17 + (b * BATCH + i) * stride) % DISTINCT_IDS)
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_pools_append_to_one_stream_exactly_once_and_gapless() {
    let Some(url) = server_url() else { return };
    let schema = format!("race_{}", std::process::id());
    let mut stores = Vec::new();
    for _ in 0..POOLS {
        let options = PostgresOptions::default()
            .with_schema(schema.clone())
            .with_max_connections(4);
        stores.push(
            PostgresStore::connect_with(&url, options)
                .await
                .expect("connect"),
        );
    }
    let tenant = Tenant::new("org", "ws", None).unwrap();
    let run = RunId::new("hot").unwrap();

    let mut handles = Vec::new();
    for (pool, store) in stores.iter().enumerate() {
        for task in 0..TASKS_PER_POOL {
            let store = store.clone();
            let tenant = tenant.clone();
            let run = run.clone();
            handles.push(tokio::spawn(async move {
                let mut answers: Vec<(String, AppendOutcome)> = Vec::new();
                for batch in task_batches(pool, task) {
                    let events: Vec<EventRecord> = batch
                        .iter()
                        .map(|id| {
                            EventRecord::new(
                                &tenant,
                                run.clone(),
                                EventId::new(format!("id-{id}")).unwrap(),
                                "race",
                                1,
                            )
                        })
                        .collect();
                    let outcomes = store
                        .append_batch(&tenant, &run, &events, None)
                        .await
                        .expect("append under contention");
                    for (event, outcome) in events.iter().zip(outcomes) {
                        answers.push((event.event_id.as_str().to_owned(), outcome));
                    }
                }
                answers
            }));
        }
    }
    let mut answers = Vec::new();
    for handle in handles {
        answers.extend(handle.await.expect("task"));
    }

    // Read through a pool that did not write, as another node would.
    let reader =
        PostgresStore::connect_with(&url, PostgresOptions::default().with_schema(schema.clone()))
            .await
            .expect("connect reader");
    let records = reader
        .read(&tenant, &run, ReadQuery::all())
        .await
        .expect("read");
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    let expected: Vec<u64> = (1..=records.len() as u64).collect();
    assert_eq!(seqs, expected, "seqs must be exactly 1..n");

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
    let appended: HashSet<&str> = answers.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        stored.len(),
        appended.len(),
        "every distinct id is stored once"
    );
    let mut inserted = 0;
    for (id, outcome) in &answers {
        assert_eq!(
            stored.get(id.as_str()),
            Some(&outcome.seq),
            "the answer for {id} names another seq than the stream holds"
        );
        inserted += usize::from(outcome.inserted);
    }
    assert_eq!(
        inserted,
        records.len(),
        "exactly one answer per id says inserted"
    );
    assert!(
        answers.len() > records.len(),
        "the workload must contain cross-pool duplicates"
    );
    assert_eq!(
        reader.next_seq(&tenant, &run).await.unwrap(),
        records.len() as u64 + 1
    );

    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(reader.pool())
        .await
        .expect("drop the test schema");
    for store in stores {
        store.close().await;
    }
    reader.close().await;
}
