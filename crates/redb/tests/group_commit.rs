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

/// redb's in-memory storage, counting the syncs asked of it.
#[derive(Debug, Default)]
struct CountingSyncs {
    inner: redb::backends::InMemoryBackend,
    syncs: Arc<std::sync::atomic::AtomicUsize>,
}

impl redb::StorageBackend for CountingSyncs {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.syncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write(offset, data)
    }
}

/// A request whose events are all stored already (live or compacted) is
/// answered without a commit, so a retry costs no sync (CONTRACT §2, §16);
/// a request that writes is still synced before its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_stored_events_costs_no_sync() {
    let backend = CountingSyncs::default();
    let syncs = Arc::clone(&backend.syncs);
    let options = RedbOptions::default().with_durability(Durability::Durable);
    let store = RedbStore::open_with_backend(backend, "counted.redb", options)
        .await
        .unwrap();
    let tenant = Tenant::local();
    let run = RunId::new("run").unwrap();
    for n in 0..4 {
        store
            .append(&tenant, &event(&tenant, &run, &format!("e-{n}")))
            .await
            .unwrap();
    }
    let report = store.compact(1, 1_000).await.unwrap();
    assert_eq!(report.removed, 4);
    let count = || syncs.load(std::sync::atomic::Ordering::SeqCst);
    let before = count();
    for n in 0..4 {
        let again = store
            .append(&tenant, &event(&tenant, &run, &format!("e-{n}")))
            .await
            .unwrap();
        assert_eq!((again.seq, again.inserted), (n + 1, false));
    }
    assert_eq!(count(), before, "duplicates of compacted ids synced");
    let new = store
        .append(&tenant, &event(&tenant, &run, "e-new"))
        .await
        .unwrap();
    assert_eq!((new.seq, new.inserted), (5, true));
    assert!(count() > before, "a write is synced");
    let again = store
        .append(&tenant, &event(&tenant, &run, "e-new"))
        .await
        .unwrap();
    assert_eq!((again.seq, again.inserted), (5, false));
    let after = count();
    let records = store.read(&tenant, &run, ReadQuery::all()).await.unwrap();
    assert_eq!(records.len(), 2, "the marker and the new event");
    assert_eq!(count(), after);
}
