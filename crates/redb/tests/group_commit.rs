//! Group commit: requests sharing one write transaction stay independent.
//! A refused request (a conflict) writes nothing and does not fail the
//! others it was batched with (CONTRACT §3, §5).

use std::sync::Arc;

use runstore_core::{
    Durability, Error, EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, Tenant,
};
use runstore_redb::{RedbOptions, RedbStore};

fn event(tenant: &Tenant, run: &RunId, id: &str) -> EventRecord {
    EventRecord::new(tenant, run.clone(), EventId::new(id).unwrap(), "t", 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflicts_in_a_batch_leave_the_other_requests_intact() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(dir.path().join("runs.redb")).await.unwrap());
    let tenant = Tenant::local();
    let run = RunId::new("run").unwrap();
    let tasks: Vec<_> = (0..48)
        .map(|n| {
            let (store, tenant, run) = (Arc::clone(&store), tenant.clone(), run.clone());
            tokio::spawn(async move {
                let event = event(&tenant, &run, &format!("e-{n}"));
                // Every third request expects a position the stream never has.
                let expected = (n % 3 == 0).then_some(10_000);
                (n, store.append_expecting(&tenant, &event, expected).await)
            })
        })
        .collect();
    let mut inserted = 0;
    for task in tasks {
        let (n, outcome) = task.await.unwrap();
        match outcome {
            Ok(outcome) => {
                assert_ne!(n % 3, 0, "request {n} should have conflicted");
                assert!(outcome.inserted);
                inserted += 1;
            }
            Err(Error::Conflict { expected, .. }) => {
                assert_eq!(n % 3, 0, "request {n} conflicted");
                assert_eq!(expected, 10_000);
            }
            Err(other) => panic!("request {n}: {other}"),
        }
    }
    assert_eq!(inserted, 32);
    let records = store.read(&tenant, &run, ReadQuery::all()).await.unwrap();
    let seqs: Vec<u64> = records.iter().map(|record| record.seq).collect();
    assert_eq!(
        seqs,
        (1..=32).collect::<Vec<_>>(),
        "gapless, conflicts wrote nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_writes_survive_a_clean_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.redb");
    let tenant = Tenant::local();
    let run = RunId::new("run").unwrap();
    {
        let options = RedbOptions::default().with_durability(Durability::Relaxed);
        let store = RedbStore::open_with(&path, options).await.unwrap();
        assert_eq!(store.durability(), Durability::Relaxed);
        for n in 0..10 {
            store
                .append(&tenant, &event(&tenant, &run, &format!("e-{n}")))
                .await
                .unwrap();
        }
    }
    let store = RedbStore::open(&path).await.unwrap();
    assert_eq!(store.next_seq(&tenant, &run).await.unwrap(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_another_layout_version_is_corrupt() {
    const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("format", 99).unwrap();
        txn.commit().unwrap();
    }
    match RedbStore::open(&path).await {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("99"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
