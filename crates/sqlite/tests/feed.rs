//! The SQLite store's change feed (CONTRACT §29) where it rests on this
//! backend's own machinery: a store of schema version 2 gets positions when
//! it is opened (also by two openers at once), a guarded append that finds
//! its stream moved on takes no position, one statement's rows of several
//! tenants each take their own tenant's next positions, and the handle
//! raises its feed signal after a commit; a long stream's compaction takes
//! several transactions, each marker its position.

use std::{borrow::Cow, collections::BTreeMap, path::Path};

use runstore_core::{
    EventId, EventLog, EventLogExt, EventRecord, FeedPosition, FeedRecord, RunId, Tenant,
};
use runstore_sqlite::SqliteStore;
use sqlx::{ConnectOptions as _, SqliteConnection, sqlite::SqliteConnectOptions};

fn event(tenant: &Tenant, run: &str, id: &str) -> EventRecord {
    EventRecord::new(
        tenant,
        RunId::new(run).unwrap(),
        EventId::new(id).unwrap(),
        "feed.test",
        1,
    )
}

async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap()
}

/// Every record of `tenant`'s feed.
async fn whole_feed(store: &SqliteStore, tenant: &Tenant) -> Vec<FeedRecord> {
    store
        .read_feed(tenant, FeedPosition::START, usize::MAX)
        .await
        .unwrap()
}

/// `(position, run, seq)` of each record.
fn keys(feed: &[FeedRecord]) -> Vec<(u64, String, u64)> {
    feed.iter()
        .map(|entry| {
            (
                entry.position.parts().1,
                entry.record.run_id.to_string(),
                entry.record.seq,
            )
        })
        .collect()
}

/// A database file as schema version 2 left it: migrations 1 and 2 applied
/// (recorded as sqlx records them), then rows written in that layout, with
/// no feed positions: tenant `a` gets run `r2` seqs 1-3 and then run `r1`
/// seqs 1-2, tenant `b` run `r1` seqs 1-2.
async fn version_2_store(path: &Path) -> (Tenant, Tenant) {
    let mut conn = raw(path).await;
    let mut old = sqlx::migrate!("./migrations");
    old.migrations = Cow::Owned(old.migrations[..2].to_vec());
    assert_eq!(old.migrations.last().unwrap().version, 2);
    old.run_direct(&mut conn).await.unwrap();
    let a = Tenant::new("org", "ws-a", None).unwrap();
    let b = Tenant::new("org", "ws-b", Some("dep".to_owned())).unwrap();
    for (tenant, run, seqs) in [(&a, "r2", 1..=3), (&a, "r1", 1..=2), (&b, "r1", 1..=2)] {
        sqlx::query(
            "INSERT INTO streams (org_id, workspace_id, deployment_id, run_id) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(tenant.org_id())
        .bind(tenant.workspace_id())
        .bind(tenant.deployment_id().unwrap_or(""))
        .bind(run)
        .execute(&mut conn)
        .await
        .unwrap();
        for seq in seqs {
            let mut record = event(tenant, run, &format!("{run}-{seq}"));
            record.seq = seq;
            sqlx::query(
                "INSERT INTO events (org_id, workspace_id, deployment_id, run_id, seq, \
                 event_id, event_type, occurred_at_ms, is_marker, record) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, 1, 0, ?)",
            )
            .bind(tenant.org_id())
            .bind(tenant.workspace_id())
            .bind(tenant.deployment_id().unwrap_or(""))
            .bind(run)
            .bind(i64::try_from(seq).unwrap())
            .bind(record.event_id.as_str())
            .bind(record.event_type.as_str())
            .bind(serde_json::to_string(&record).unwrap())
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
    (a, b)
}

/// The feed a version-2 store has once opened: each tenant's records in
/// (run, seq) order from position 1.
fn assert_migrated_feed(a: &[FeedRecord], b: &[FeedRecord]) {
    let at = |position: u64, run: &str, seq: u64| (position, run.to_owned(), seq);
    assert_eq!(
        keys(a),
        vec![
            at(1, "r1", 1),
            at(2, "r1", 2),
            at(3, "r2", 1),
            at(4, "r2", 2),
            at(5, "r2", 3)
        ]
    );
    assert_eq!(keys(b), vec![at(1, "r1", 1), at(2, "r1", 2)]);
}

// CONTRACT §29: a store written before the feed opens, its records take
// positions per tenant in an order that keeps each stream's seqs, once and
// durably, and new records come after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_schema_version_2_opens_with_a_feed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let (a, b) = version_2_store(&path).await;
    {
        let store = SqliteStore::open(&path).await.unwrap();
        assert_migrated_feed(&whole_feed(&store, &a).await, &whole_feed(&store, &b).await);
        let next = store.append(&a, &event(&a, "r1", "new")).await.unwrap();
        assert_eq!(next.seq, 3);
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let feed = whole_feed(&store, &a).await;
    assert_migrated_feed(&feed[..5], &whole_feed(&store, &b).await);
    assert_eq!(keys(&feed[5..]), vec![(6, "r1".to_owned(), 3)]);
}

// Two handles opening one version-2 file at the same moment both run the
// migration; one applies it, the other retries and finds it applied, and the
// records are numbered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_openers_of_a_version_2_store_migrate_it_once() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let (a, b) = version_2_store(&path).await;
        let (first, second) = tokio::join!(SqliteStore::open(&path), SqliteStore::open(&path));
        let (first, second) = (first.unwrap(), second.unwrap());
        for store in [&first, &second] {
            let (fed_a, fed_b) = (whole_feed(store, &a).await, whole_feed(store, &b).await);
            assert_migrated_feed(&fed_a, &fed_b);
        }
        let next = second.append(&b, &event(&b, "r9", "new")).await.unwrap();
        assert!(next.inserted, "round {round}");
        let feed = whole_feed(&first, &b).await;
        assert_eq!(keys(&feed[2..]), vec![(3, "r9".to_owned(), 1)]);
    }
}

// CONTRACT §29: a write that stores nothing takes no position. A handle's
// writer plans an append to a stream it wrote last against the seq it left;
// when another handle has appended since, the guarded insert writes nothing
// and the append is planned again from the database. The tenant's counter
// moves only with the rows that are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_append_that_finds_its_stream_moved_takes_no_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let (one, two) = (
        SqliteStore::open(&path).await.unwrap(),
        SqliteStore::open(&path).await.unwrap(),
    );
    let tenant = Tenant::local();
    for n in 0..6 {
        // Alternating handles: every append after the first two finds the
        // stream moved on since its writer last wrote it.
        let store = if n % 2 == 0 { &one } else { &two };
        let outcome = store
            .append(&tenant, &event(&tenant, "run", &format!("e{n}")))
            .await
            .unwrap();
        assert_eq!(outcome.seq, n + 1);
    }
    let positions: Vec<(u64, u64)> = whole_feed(&one, &tenant)
        .await
        .iter()
        .map(|entry| (entry.position.parts().1, entry.record.seq))
        .collect();
    assert_eq!(positions, (1..=6).map(|n| (n, n)).collect::<Vec<_>>());
}

// CONTRACT §29: appends of several tenants that share one group commit are
// inserted by shared statements; each tenant's records take that tenant's
// positions, contiguous from 1, each batch contiguous and in seq order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_commit_of_several_tenants_numbers_each_tenant_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite"))
        .await
        .unwrap();
    let tenants: Vec<Tenant> = (0..3)
        .map(|n| Tenant::new("org", format!("ws-{n}"), None).unwrap())
        .collect();
    let mut tasks = Vec::new();
    for task in 0..24_usize {
        let store = store.clone();
        let tenant = tenants[task % 3].clone();
        tasks.push(tokio::spawn(async move {
            let run = format!("run-{}", task % 4);
            for round in 0..10 {
                let batch: Vec<EventRecord> = (0..3)
                    .map(|k| event(&tenant, &run, &format!("t{task}-r{round}-{k}")))
                    .collect();
                store
                    .append_batch(&tenant, &RunId::new(run.as_str()).unwrap(), &batch, None)
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for tenant in &tenants {
        let feed = whole_feed(&store, tenant).await;
        assert_eq!(feed.len(), 8 * 10 * 3, "{tenant}");
        let mut last_seq: BTreeMap<String, u64> = BTreeMap::new();
        for (index, entry) in feed.iter().enumerate() {
            assert_eq!(
                entry.position.parts(),
                (0, u64::try_from(index).unwrap() + 1)
            );
            let previous = last_seq.insert(entry.record.run_id.to_string(), entry.record.seq);
            assert!(previous < Some(entry.record.seq), "{tenant}: seq order");
        }
        // A batch's three records are adjacent: its ids end in -0, -1, -2.
        for chunk in feed.chunks(3) {
            let ids: Vec<&str> = chunk.iter().map(|e| e.record.event_id.as_str()).collect();
            let stem = ids[0].strip_suffix("-0").expect("a batch starts the chunk");
            assert_eq!(
                ids,
                [
                    format!("{stem}-0"),
                    format!("{stem}-1"),
                    format!("{stem}-2")
                ]
            );
        }
    }
}

async fn put_snapshot(
    store: &SqliteStore,
    tenant: &Tenant,
    run: &RunId,
    id: &str,
    seq: u64,
    at: u64,
) {
    let snapshot = runstore_core::SnapshotRecord::new(
        tenant,
        run.clone(),
        runstore_core::SnapshotId::new(id).unwrap(),
        seq,
        at,
        runstore_core::RunStatus::Running,
    );
    runstore_core::SnapshotStore::put(store, tenant, &snapshot)
        .await
        .unwrap();
}

// The handle raises its feed signal after a commit that wrote records, so a
// follower sharing it wakes at once; a duplicate writes nothing and raises
// nothing, and neither do maintenance passes that write no record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_wrote_records_raises_the_feed_signal() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite"))
        .await
        .unwrap();
    let tenant = Tenant::local();
    let mut woken = store
        .feed_signal()
        .expect("the store has a signal")
        .subscribe();
    store
        .append(&tenant, &event(&tenant, "run", "e"))
        .await
        .unwrap();
    assert!(
        woken.has_changed().unwrap(),
        "a new record raises the signal"
    );
    woken.mark_unchanged();
    let again = store
        .append(&tenant, &event(&tenant, "run", "e"))
        .await
        .unwrap();
    assert!(!again.inserted);
    assert!(!woken.has_changed().unwrap(), "a duplicate raises nothing");
    store
        .append(&tenant, &event(&tenant, "run", "f"))
        .await
        .unwrap();
    assert!(
        woken.has_changed().unwrap(),
        "the guarded path raises it too"
    );

    // A compaction that pruned wrote a marker: it raises the signal. A pass
    // that prunes nothing, and a prune of snapshots, write no record.
    woken.mark_unchanged();
    assert!(store.compact(1, 1_000).await.unwrap().removed > 0);
    assert!(woken.has_changed().unwrap(), "a compaction's marker");
    // Old events a snapshot at seq 1 keeps: the pass takes the stream and
    // prunes nothing.
    let kept = RunId::new("kept").unwrap();
    for id in ["k1", "k2"] {
        store
            .append(&tenant, &event(&tenant, "kept", id))
            .await
            .unwrap();
    }
    put_snapshot(&store, &tenant, &kept, "at-1", 1, 1).await;
    woken.mark_unchanged();
    assert_eq!(store.compact(1, 1_000).await.unwrap().removed, 0);
    assert!(
        !woken.has_changed().unwrap(),
        "a compaction pruning nothing"
    );
    let run = RunId::new("run").unwrap();
    for (id, at) in [("s1", 1), ("s2", 2)] {
        put_snapshot(&store, &tenant, &run, id, 2, at).await;
    }
    woken.mark_unchanged();
    let pruned = runstore_core::SnapshotStore::prune(&store, 1, 0, 1_000)
        .await
        .unwrap();
    assert!(pruned.removed > 0);
    assert!(!woken.has_changed().unwrap(), "a prune of snapshots");
}

// CONTRACT §29: a position is never handed out twice, also when the records
// at the highest positions are deleted: compaction and erasure keep the
// tenant's last position in `feed_heads` before they delete, and their
// markers, like every later record, come after it, across a restart too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_of_deleted_records_are_never_handed_out_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let tenant = Tenant::local();
    let at = |run: &str, id: &str, ms: u64| {
        EventRecord::new(
            &tenant,
            RunId::new(run).unwrap(),
            EventId::new(id).unwrap(),
            "feed.test",
            ms,
        )
    };
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store
            .append(&tenant, &at("new", "n1", 10_000))
            .await
            .unwrap();
        for id in ["o1", "o2"] {
            store.append(&tenant, &at("old", id, 1)).await.unwrap();
        }
        // Positions 2 and 3, the highest, go with the compacted events.
        assert_eq!(store.compact(100, 1_000).await.unwrap().removed, 2);
        let feed = whole_feed(&store, &tenant).await;
        assert_eq!(
            keys(&feed),
            vec![(1, "new".to_owned(), 1), (4, "old".to_owned(), 2)]
        );
        assert!(feed[1].record.is_compaction_marker());
        // Position 4, the highest, goes with the erased run.
        assert_eq!(
            store
                .delete_run(&tenant, &RunId::new("old").unwrap())
                .await
                .unwrap(),
            0
        );
        let feed = whole_feed(&store, &tenant).await;
        assert_eq!(
            keys(&feed),
            vec![(1, "new".to_owned(), 1), (5, "old".to_owned(), 2)]
        );
        store
            .delete_run(&tenant, &RunId::new("new").unwrap())
            .await
            .unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    store.append(&tenant, &at("later", "l1", 1)).await.unwrap();
    let positions: Vec<u64> = whole_feed(&store, &tenant)
        .await
        .iter()
        .map(|entry| entry.position.parts().1)
        .collect();
    assert_eq!(positions, vec![5, 6, 7]);
}

// A process of the previous version still running when the file was
// upgraded inserts rows without a position and deletes rows without keeping
// their positions: the schema's triggers give such a row its tenant's next
// position, and keep a deleted row's position taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_the_old_way_still_take_and_keep_positions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    let tenant = Tenant::local();
    store
        .append(&tenant, &event(&tenant, "run", "new-1"))
        .await
        .unwrap();
    let mut old = raw(&path).await;
    let mut record = event(&tenant, "run", "old-2");
    record.seq = 2;
    sqlx::query(
        "INSERT INTO events (org_id, workspace_id, deployment_id, run_id, seq, event_id, \
         event_type, occurred_at_ms, is_marker, record) \
         VALUES (?, ?, '', 'run', 2, 'old-2', 'feed.test', 1, 0, ?)",
    )
    .bind(tenant.org_id())
    .bind(tenant.workspace_id())
    .bind(serde_json::to_string(&record).unwrap())
    .execute(&mut old)
    .await
    .unwrap();
    assert_eq!(
        keys(&whole_feed(&store, &tenant).await),
        vec![(1, "run".to_owned(), 1), (2, "run".to_owned(), 2)]
    );
    // The row at the highest position goes, as the old compaction deleted.
    sqlx::query("DELETE FROM events WHERE run_id = 'run' AND seq = 2")
        .execute(&mut old)
        .await
        .unwrap();
    store
        .append(&tenant, &event(&tenant, "other", "new-2"))
        .await
        .unwrap();
    assert_eq!(
        keys(&whole_feed(&store, &tenant).await),
        vec![(1, "run".to_owned(), 1), (3, "other".to_owned(), 1)]
    );
}

// A stream with more events to prune than one maintenance step takes is
// compacted over several (the core's "Steps within one stream"): 999 old
// events with no marker yet go in steps of 256, 256 (as many as the first
// step pruned) and the last 487. With no other write waiting they share
// one transaction (the core's "Several steps in one commit"), which writes
// the stream's marker once: it takes the one feed position after the
// events', where a marker per step would have taken three.
#[tokio::test]
async fn a_long_stream_is_compacted_over_several_steps() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite"))
        .await
        .unwrap();
    let tenant = Tenant::local();
    let run = RunId::new("long").unwrap();
    let events: Vec<_> = (1..=1_001u64)
        .map(|seq| {
            let mut record = event(&tenant, "long", &format!("e{seq}"));
            record.occurred_at_ms = seq;
            record
        })
        .collect();
    for chunk in events.chunks(100) {
        store
            .append_batch(&tenant, &run, chunk, None)
            .await
            .unwrap();
    }
    let report = store.compact(1, 1_001).await.unwrap();
    assert_eq!((report.removed, report.failed.len()), (999, 0));
    let at = |position: u64, seq: u64| (position, "long".to_owned(), seq);
    assert_eq!(
        keys(&whole_feed(&store, &tenant).await),
        vec![at(1_000, 1_000), at(1_001, 1_001), at(1_002, 999)],
        "one marker was written for the three steps"
    );
    for seq in [1, 256, 257, 512, 513, 999] {
        let id = EventId::new(format!("e{seq}")).unwrap();
        assert_eq!(store.seq_of(&tenant, &run, &id).await.unwrap(), Some(seq));
    }
}
