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
use runstore_core::{EventLog, EventLogExt, FeedPosition};

mod common;
use common::{connect, drop_schema};

fn server_url() -> Option<String> {
    runstore_conformance::support::service_url("RUNSTORE_POSTGRES_URL", "postgres feed test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_store_keeps_its_feed_readable_and_ordered() {
    let Some(url) = server_url() else { return };
    let store = connect(&url, "feed_moved").await;
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
