//! The change feed in the PostgreSQL tables (CONTRACT §29, migration
//! 0004): a stream's events keep seq order in the feed when a writer took
//! its transaction id before waiting for the stream; a store at schema
//! version 3 gets a feed when it is opened; a follower on one handle wakes
//! for another handle's commit through LISTEN/NOTIFY.
//!
//! Needs `RUNSTORE_POSTGRES_URL`; fails without it unless
//! `RUNSTORE_ALLOW_MISSING_SERVICES` is set.

use std::time::Duration;

use tokio::task::JoinHandle;

use futures::StreamExt as _;
use runstore_conformance::support::records::{event, run, tenant};
use runstore_core::{
    EventLog, EventLogExt, EventRecord, FeedPosition, FeedRecord, FollowOptions, ReadQuery, Tenant,
};
use runstore_postgres::PostgresStore;

mod common;
use common::{connect, drop_schema, reconnect};

fn server_url() -> Option<String> {
    runstore_conformance::support::service_url("RUNSTORE_POSTGRES_URL", "postgres feed test")
}

/// The whole feed of `tenant` once it holds `count` records (committed
/// records wait for older transactions of the cluster to end).
async fn settled(store: &PostgresStore, tenant: &Tenant, count: usize) -> Vec<FeedRecord> {
    for _ in 0..600 {
        let feed = store
            .read_feed(tenant, FeedPosition::START, 10_000)
            .await
            .unwrap();
        if feed.len() >= count {
            assert_eq!(feed.len(), count, "{feed:?}");
            return feed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the feed of {tenant} never held {count} records");
}

/// `(run, seq)` of each record, in feed order.
fn runs_and_seqs(feed: &[FeedRecord]) -> Vec<(String, u64)> {
    feed.iter()
        .map(|entry| (entry.record.run_id.to_string(), entry.record.seq))
        .collect()
}

/// The interleaving a row lock alone does not order: a writer takes its
/// transaction id (here in a trigger on `streams`, standing for the id the
/// speculative insert of a new stream's row takes before it meets the
/// conflicting row) and then pauses; a second writer of the same new
/// stream, with a larger id, writes the stream's first event and commits;
/// the first writer then writes the second event under its smaller id.
/// Ordered by transaction id, the stream's events would come out of seq
/// order. The stream's advisory lock, taken before anything that assigns
/// an id, makes the second writer wait for the first, so its id is larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_keeps_seq_order_when_a_writer_took_its_id_before_waiting() {
    let Some(url) = server_url() else { return };
    let first = connect(&url, "feed_order").await;
    let second = reconnect(&url, first.schema()).await;
    // The first inserter of a streams row takes its transaction id and
    // pauses while it holds advisory lock 77 (only the first of the two
    // gets it); the second goes straight through.
    sqlx::raw_sql(
        "CREATE FUNCTION pause_first() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN \
           PERFORM txid_current(); \
           IF pg_try_advisory_xact_lock(77) THEN PERFORM pg_sleep(1); END IF; \
           RETURN NEW; \
         END $$; \
         CREATE TRIGGER pause_first BEFORE INSERT ON streams \
           FOR EACH ROW EXECUTE FUNCTION pause_first();",
    )
    .execute(first.pool())
    .await
    .unwrap();
    let t = tenant("acme");
    let slow = {
        let (store, t) = (first.clone(), t.clone());
        tokio::spawn(async move { store.append(&t, &event(&t, "new-run", "a", 1)).await })
    };
    // Let the first writer reach its pause.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fast = second
        .append(&t, &event(&t, "new-run", "b", 1))
        .await
        .unwrap();
    let slow = slow.await.unwrap().unwrap();
    assert_ne!(slow.seq, fast.seq);

    let feed = settled(&first, &t, 2).await;
    assert_eq!(
        runs_and_seqs(&feed),
        [("new-run".to_owned(), 1), ("new-run".to_owned(), 2)],
        "the feed gives a stream's events in seq order: {feed:?}"
    );
    assert!(feed[0].position < feed[1].position);
    second.close().await;
    drop_schema(&first).await;
}

/// Takes a store's schema back to version 3, as the previous version
/// left it: no feed columns, sequence, index, functions or shift table,
/// `append_one` as migration 0002 wrote it, and no record of migrations 4
/// and 5.
async fn downgrade_to_version_3(store: &PostgresStore) {
    let append_one = include_str!("../migrations/0002_append_one.sql")
        .replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION");
    sqlx::raw_sql(
        "DROP INDEX events_feed; \
         ALTER TABLE events DROP COLUMN tenant_key, DROP COLUMN tx, DROP COLUMN feed_seq; \
         DROP FUNCTION tenant_key(BYTEA); \
         DROP FUNCTION stream_lock_key(BYTEA); \
         DROP FUNCTION feed_channel(); \
         DROP TABLE feed_shift; \
         DELETE FROM _sqlx_migrations WHERE version IN (4, 5);",
    )
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::raw_sql(&append_one)
        .execute(store.pool())
        .await
        .unwrap();
}

/// A store at schema version 3 (no positions) takes migration 0004 when a
/// store connects: every record gets a position, each stream's in seq
/// order, each tenant's feed holds only its own, and what is written
/// afterwards (appends, a compaction marker) comes after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_at_version_3_gets_a_feed_on_open() {
    let Some(url) = server_url() else { return };
    let store = connect(&url, "feed_upgrade").await;
    let (t1, t2) = (tenant("acme"), tenant("globex"));
    for n in 1..=4u64 {
        for (t, run_id) in [(&t1, "run-a"), (&t1, "run-b"), (&t2, "run-a")] {
            let batch: Vec<EventRecord> = (0..n)
                .map(|k| event(t, run_id, &format!("{run_id}-{n}-{k}"), n))
                .collect();
            store
                .append_batch(t, &run(run_id), &batch, None)
                .await
                .unwrap();
        }
    }
    // 1 + 2 + 3 + 4 events per stream.
    let schema = store.schema().to_owned();
    downgrade_to_version_3(&store).await;
    // The old layout takes writes as the previous version made them.
    let (version,): (i64,) = sqlx::query_as("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(version, 3);
    store.close().await;

    let store = reconnect(&url, &schema).await;
    for (t, runs) in [(&t1, &["run-a", "run-b"][..]), (&t2, &["run-a"][..])] {
        let feed = settled(&store, t, 10 * runs.len()).await;
        for entry in &feed {
            assert!(t.matches(&entry.record.scope.tenant_context));
            assert_eq!(entry.position.parts().0, 0, "old records sort first");
        }
        for run_id in runs {
            let fed: Vec<EventRecord> = feed
                .iter()
                .filter(|entry| entry.record.run_id.as_str() == *run_id)
                .map(|entry| entry.record.clone())
                .collect();
            let stored = store.read(t, &run(run_id), ReadQuery::all()).await.unwrap();
            assert_eq!(fed, stored, "{t}:{run_id} in the feed, in seq order");
        }
    }
    let before = settled(&store, &t1, 20).await;
    // Connecting again migrates nothing: the same positions.
    store.close().await;
    let store = reconnect(&url, &schema).await;
    assert_eq!(settled(&store, &t1, 20).await, before);

    store
        .append(&t1, &event(&t1, "run-a", "after", 5))
        .await
        .unwrap();
    // Prunes the first event of every stream (occurred at 1): two of t1's,
    // whose two markers come after everything before.
    assert_eq!(store.compact(1, 3).await.unwrap().removed, 3);
    let after = settled(&store, &t1, 20 - 2 + 1 + 2).await;
    let end = before.last().unwrap().position;
    let tail: Vec<(String, String)> = after
        .iter()
        .filter(|entry| entry.position > end)
        .map(|entry| {
            (
                entry.record.event_id.to_string(),
                entry.record.event_type.clone(),
            )
        })
        .collect();
    assert_eq!(tail.len(), 3, "{tail:?}");
    assert_eq!(tail[0].0, "after");
    for (_, event_type) in &tail[1..] {
        assert_eq!(event_type, "stateful_runtime.event_log_compacted");
    }
    drop_schema(&store).await;
}

/// A task that follows `t`'s feed from the start on `reader`, with an
/// hour's poll interval (so only wake-ups deliver in time), and answers the
/// event ids of the first `count` records.
fn follow(reader: &PostgresStore, t: &Tenant, count: usize) -> JoinHandle<Vec<String>> {
    let (reader, t) = (reader.clone(), t.clone());
    let options = FollowOptions {
        poll_interval: Duration::from_secs(3_600),
        batch: 16,
    };
    tokio::spawn(async move {
        reader
            .follow_feed(&t, FeedPosition::START, options)
            .take(count)
            .map(|entry| entry.unwrap().record.event_id.to_string())
            .collect::<Vec<String>>()
            .await
    })
}

/// A follower on one handle wakes for a commit through another handle (or
/// another node) through LISTEN/NOTIFY, long before its poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_wakes_for_another_handles_commit() {
    let Some(url) = server_url() else { return };
    let reader = connect(&url, "feed_notify").await;
    let writer = reconnect(&url, reader.schema()).await;
    let t = tenant("acme");
    // The follower reads (nothing yet) and then waits, before each append.
    let follower = follow(&reader, &t, 3);
    for n in 0..3u64 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer
            .append(&t, &event(&t, "run-a", &format!("e{n}"), n))
            .await
            .unwrap();
    }
    let followed = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .expect("woken by the other handle's notifications")
        .unwrap();
    assert_eq!(followed, ["e0", "e1", "e2"]);
    writer.close().await;
    drop_schema(&reader).await;
}

/// A listener whose connection is terminated connects again, names itself
/// again (notifiers look for it by name) and listens again: the follower
/// keeps waking for the other handle's commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_keeps_waking_after_its_listener_lost_its_connection() {
    let Some(url) = server_url() else { return };
    let reader = connect(&url, "feed_relisten").await;
    let writer = reconnect(&url, reader.schema()).await;
    let t = tenant("acme");
    let follower = follow(&reader, &t, 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer
        .append(&t, &event(&t, "run-a", "e0", 0))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (terminated,): (i64,) = sqlx::query_as(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = 'runstore-feed ' || feed_channel()",
    )
    .fetch_one(writer.pool())
    .await
    .unwrap();
    assert_eq!(terminated, 1, "the reader's listener");
    // Past the notifier's look for listeners (once a second) and the
    // listener's reconnect.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    writer
        .append(&t, &event(&t, "run-a", "e1", 1))
        .await
        .unwrap();
    let followed = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .expect("woken after the listener connected again")
        .unwrap();
    assert_eq!(followed, ["e0", "e1"]);
    writer.close().await;
    drop_schema(&reader).await;
}

/// Every path that writes a stream's records -- a lone append, a batch,
/// an import, a compaction (its marker), a deletion (its erasure marker)
/// -- waits while another transaction holds the stream's advisory lock
/// (see "Change feed" in docs/backends/postgres.md), so none can take its
/// transaction id before the stream is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_writer_of_a_stream_waits_for_its_advisory_lock() {
    let Some(url) = server_url() else { return };
    let store = connect(&url, "feed_locks").await;
    let t = tenant("acme");
    for id in ["old-1", "old-2"] {
        store.append(&t, &event(&t, "r", id, 1)).await.unwrap();
    }
    // After the two above, the lone append and the batch: seq 6.
    let mut imported = event(&t, "r", "imported", 5);
    imported.seq = 6;
    type Write = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    type Writer = Box<dyn Fn(PostgresStore, Tenant) -> Write>;
    let writes: Vec<(&str, Writer)> = vec![
        (
            "a lone append",
            Box::new(|s, t| {
                Box::pin(async move {
                    s.append(&t, &event(&t, "r", "lone", 5)).await.unwrap();
                })
            }),
        ),
        (
            "a batch",
            Box::new(|s, t| {
                Box::pin(async move {
                    let batch = [event(&t, "r", "b1", 5), event(&t, "r", "b2", 5)];
                    s.append_batch(&t, &run("r"), &batch, None).await.unwrap();
                })
            }),
        ),
        (
            "an import",
            Box::new(move |s, t| {
                let imported = imported.clone();
                Box::pin(async move {
                    let stored = s.import_stream(&t, &run("r"), &[imported]).await;
                    assert_eq!(stored.unwrap(), 1);
                })
            }),
        ),
        (
            "a compaction",
            Box::new(|s, _| {
                Box::pin(async move {
                    assert_eq!(s.compact(1, 3).await.unwrap().removed, 2);
                })
            }),
        ),
        (
            "a deletion",
            Box::new(|s, t| {
                Box::pin(async move {
                    assert!(s.delete_run(&t, &run("r")).await.unwrap() > 0);
                })
            }),
        ),
    ];
    for (what, write) in writes {
        let mut holder = store.pool().begin().await.unwrap();
        sqlx::query(
            "SELECT pg_advisory_xact_lock(stream_lock_key(key_hash)) FROM streams WHERE run_id = 'r'",
        )
        .execute(&mut *holder)
        .await
        .unwrap();
        let task = tokio::spawn(write(store.clone(), t.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!task.is_finished(), "{what} waits for the stream's lock");
        holder.commit().await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap_or_else(|_| panic!("{what} goes on once the lock is free"))
            .unwrap();
    }
    drop_schema(&store).await;
}
