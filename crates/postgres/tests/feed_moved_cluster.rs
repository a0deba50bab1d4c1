//! CONTRACT §29 when a store's tables move to another PostgreSQL cluster
//! (`pg_dump` and restore, the usual logical backup or a move to a new
//! server): the rows keep their `tx` column, the transaction ids of the
//! cluster that wrote them, while the new cluster counts its own
//! transaction ids from wherever it stands, typically far below.
//!
//! Reproduced here in one cluster by giving the store's rows the ids of a
//! cluster 10^9 transactions ahead (what a restore of that cluster's dump
//! into this one holds), with a follower that had read the whole feed
//! there.
//!
//! Needs `RUNSTORE_POSTGRES_URL`; fails without it unless
//! `RUNSTORE_ALLOW_MISSING_SERVICES` is set.

use runstore_conformance::support::records::{event, tenant};
use runstore_core::{EventLog, EventLogExt, FeedPosition, FeedRecord, Tenant};
use runstore_postgres::PostgresStore;

mod common;
use common::{connect, drop_schema, reconnect};

fn server_url() -> Option<String> {
    runstore_conformance::support::service_url("RUNSTORE_POSTGRES_URL", "postgres feed test")
}

/// A store named `name` holding three events of one run (tenant `acme`),
/// with its rows as the dump of a cluster 10^9 transactions ahead restores
/// them; and the rows' `(tx, feed_seq)` in feed order.
async fn restored(url: &str, name: &str) -> (PostgresStore, Tenant, Vec<(i64, i64)>) {
    let store = connect(url, name).await;
    let t = tenant("acme");
    for n in 1..=3 {
        store
            .append(&t, &event(&t, "run-a", &format!("e{n}"), n))
            .await
            .unwrap();
    }
    // The rows as the dump of a cluster 10^9 transactions ahead restores
    // them.
    sqlx::query("UPDATE events SET tx = tx + 1000000000")
        .execute(store.pool())
        .await
        .unwrap();
    let stored: Vec<(i64, i64)> =
        sqlx::query_as("SELECT tx, feed_seq FROM events ORDER BY tx, feed_seq")
            .fetch_all(store.pool())
            .await
            .unwrap();
    (store, t, stored)
}

/// The feed after `after` once it holds `n` records (or what it holds after
/// two seconds: a transaction elsewhere in the cluster may hold the
/// horizon back for a while).
async fn settled(
    store: &PostgresStore,
    t: &Tenant,
    after: FeedPosition,
    n: usize,
) -> Vec<FeedRecord> {
    let mut feed = Vec::new();
    for _ in 0..100 {
        feed = store.read_feed(t, after, 100).await.unwrap();
        if feed.len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    feed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_store_keeps_its_feed_readable_and_ordered() {
    let Some(url) = server_url() else { return };
    let (store, t, stored) = restored(&url, "feed_moved").await;
    // The follower read the whole feed on the old cluster: its position is
    // the last record's there.
    let (tx, seq) = *stored.last().unwrap();
    let followed = FeedPosition::from_parts(tx as u64, seq as u64);

    let whole = store.read_feed(&t, FeedPosition::START, 100).await.unwrap();
    let appended = store
        .append(&t, &event(&t, "run-a", "after-the-move", 4))
        .await
        .unwrap();
    assert!(appended.inserted);
    let mut new = Vec::new();
    for _ in 0..100 {
        new = store.read_feed(&t, followed, 100).await.unwrap();
        if !new.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let all_now = store
        .read_feed(&t, FeedPosition::START, 100)
        .await
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry.position.to_string(),
                entry.record.event_id.to_string(),
            )
        })
        .collect::<Vec<_>>();
    drop_schema(&store).await;
    assert_eq!(
        whole.len(),
        3,
        "the restored records are not in the feed (rows {stored:?}); feed now {all_now:?}"
    );
    assert_eq!(
        new.len(),
        1,
        "a follower resuming after {followed} never gets the event appended after the move; \
         feed now {all_now:?}"
    );
}

/// A node that connects to the store on its new cluster re-bases the feed
/// before it writes: a record it appends before anyone read the feed sorts
/// after every restored one (its stream's seq order holds), and a
/// follower's position from the old cluster still counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_connecting_to_a_restored_store_writes_after_every_restored_record() {
    let Some(url) = server_url() else { return };
    let (store, t, stored) = restored(&url, "feed_moved_connect").await;
    let (tx, seq) = *stored.last().unwrap();
    let followed = FeedPosition::from_parts(tx as u64, seq as u64);
    // The old cluster's identifier, as the dump restores the store's own
    // record of it.
    sqlx::query("UPDATE feed_shift SET system_identifier = system_identifier # 1")
        .execute(store.pool())
        .await
        .unwrap();
    let node = reconnect(&url, store.schema()).await;
    let appended = node
        .append(&t, &event(&t, "run-a", "after-the-move", 4))
        .await
        .unwrap();
    assert!(appended.inserted);
    let feed = settled(&node, &t, FeedPosition::START, 4).await;
    let after = node.read_feed(&t, followed, 100).await.unwrap();
    let shown = feed
        .iter()
        .map(|entry| (entry.position.to_string(), entry.record.seq))
        .collect::<Vec<_>>();
    node.close().await;
    drop_schema(&store).await;
    assert_eq!(
        feed.iter()
            .map(|entry| entry.record.seq)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "feed {shown:?}"
    );
    assert!(feed[3].position > followed, "feed {shown:?}");
    assert_eq!(
        after.len(),
        1,
        "after {followed}: {after:?}; feed {shown:?}"
    );
}

/// A writer that got its transaction id before the re-base and writes
/// after it still sorts after every restored record: the re-base moves the
/// rows below the oldest transaction in progress, not merely below its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_older_than_the_rebase_sorts_after_the_restored_records() {
    let Some(url) = server_url() else { return };
    let (store, t, _) = restored(&url, "feed_moved_writer").await;
    let mut writer = store.pool().begin().await.unwrap();
    let (writer_id,): (i64,) = sqlx::query_as("SELECT txid_current()")
        .fetch_one(&mut *writer)
        .await
        .unwrap();
    // Later transactions took ids too: the writer's is not the newest.
    for _ in 0..2 {
        sqlx::query("SELECT txid_current()")
            .execute(store.pool())
            .await
            .unwrap();
    }
    // The read meets the restored rows and re-bases.
    let before = store.read_feed(&t, FeedPosition::START, 100).await.unwrap();
    sqlx::query(
        "INSERT INTO events (stream_id, seq, event_id, is_marker, occurred_at_ms, record, \
         tenant_key) SELECT stream_id, 4, 'late', false, 4, \
         replace(replace(record, '\"e3\"', '\"late\"'), '\"seq\":3', '\"seq\":4'), tenant_key \
         FROM events WHERE seq = 3",
    )
    .execute(&mut *writer)
    .await
    .unwrap();
    sqlx::query("UPDATE streams SET last_seq = 4")
        .execute(&mut *writer)
        .await
        .unwrap();
    writer.commit().await.unwrap();
    let feed = settled(&store, &t, FeedPosition::START, 4).await;
    let shown = feed
        .iter()
        .map(|entry| (entry.position.to_string(), entry.record.seq))
        .collect::<Vec<_>>();
    drop_schema(&store).await;
    assert!(before.len() <= 3, "writer {writer_id}: before {before:?}");
    assert_eq!(
        feed.iter()
            .map(|entry| entry.record.seq)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "writer {writer_id}: feed {shown:?}"
    );
}
