//! The tenant's change feed (CONTRACT §29): order, resume, isolation,
//! compaction and erasure, restarts, imports, following, and the late
//! commit that must never be skipped.
//!
//! A backend without the capability ([`Capabilities::feed`](crate::Capabilities::feed))
//! must answer `Unsupported`; every case checks that and says the case does
//! not apply, naming why.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use runstore_core::{
    Error, EventLog, EventLogExt, EventRecord, FeedPosition, FeedRecord, FollowOptions, ReadQuery,
    SnapshotStore, Storage, Tenant,
};

use crate::{Harness, event, removed, run, snapshot, tenant};

/// How long a case waits for records it knows were committed to become
/// visible in the feed (PostgreSQL withholds records while an older
/// transaction anywhere in the cluster is still open).
const SETTLE: Duration = Duration::from_secs(60);

/// Whether `h` has the feed; when not, checks that the store says
/// `Unsupported` and says why the case does not apply.
async fn has_feed(h: &Harness, case: &str) -> bool {
    if h.capabilities().feed {
        return true;
    }
    let instance = h.fresh().await;
    let answer = instance
        .store()
        .read_feed(&tenant(1), FeedPosition::START, 10)
        .await;
    match answer {
        Err(Error::Unsupported { reason, .. }) => {
            h.not_applicable(case, &format!("the backend has no change feed: {reason}"));
        }
        other => panic!(
            "{}: declares no feed, so read_feed must answer Unsupported, got {other:?}",
            h.backend()
        ),
    }
    false
}

/// Every record of `tenant`'s feed after `after`, read `page` at a time
/// until a read answers fewer than asked.
pub async fn read_rest(
    store: &dyn Storage,
    tenant: &Tenant,
    after: FeedPosition,
    page: usize,
) -> Vec<FeedRecord> {
    let mut all = Vec::new();
    let mut position = after;
    loop {
        let batch = store
            .read_feed(tenant, position, page)
            .await
            .expect("read_feed");
        assert!(batch.len() <= page, "read_feed answered over its limit");
        let done = batch.len() < page;
        if let Some(last) = batch.last() {
            position = last.position;
        }
        all.extend(batch);
        if done {
            return all;
        }
    }
}

/// `tenant`'s feed after `after` once it holds at least `count` records
/// (records committed before the call may take a moment to become
/// visible, for up to a minute).
pub async fn settled(
    store: &dyn Storage,
    tenant: &Tenant,
    after: FeedPosition,
    count: usize,
) -> Vec<FeedRecord> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let feed = read_rest(store, tenant, after, 1_000).await;
        if feed.len() >= count || tokio::time::Instant::now() > deadline {
            assert_eq!(
                feed.len(),
                count,
                "the feed after {after} holds {} records, expected {count}: {:?}",
                feed.len(),
                keys(&feed)
            );
            return feed;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `(run, seq, event id)` of each feed record, in order.
fn keys(feed: &[FeedRecord]) -> Vec<(String, u64, String)> {
    feed.iter()
        .map(|entry| {
            (
                entry.record.run_id.to_string(),
                entry.record.seq,
                entry.record.event_id.to_string(),
            )
        })
        .collect()
}

/// Asserts that positions strictly increase.
fn assert_increasing(feed: &[FeedRecord]) {
    for pair in feed.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "feed positions must increase: {} then {}",
            pair[0].position,
            pair[1].position
        );
    }
}

/// Asserts that `feed` holds exactly the records every run of `tenant`
/// holds now (as `read` answers them, byte for byte), each once, with each
/// run's events in seq order.
async fn assert_matches_the_store(store: &dyn Storage, tenant: &Tenant, feed: &[FeedRecord]) {
    assert_increasing(feed);
    let mut by_run: BTreeMap<String, Vec<EventRecord>> = BTreeMap::new();
    for entry in feed {
        by_run
            .entry(entry.record.run_id.to_string())
            .or_default()
            .push(entry.record.clone());
    }
    let mut runs: BTreeSet<String> = by_run.keys().cloned().collect();
    for run_id in store.list_runs(tenant).await.expect("list_runs") {
        runs.insert(run_id.to_string());
    }
    for run_id in runs {
        let stored = store
            .read(tenant, &run(&run_id), ReadQuery::all())
            .await
            .expect("read");
        let mut fed = by_run.remove(&run_id).unwrap_or_default();
        // Events keep seq order in the feed; a marker takes its position
        // when it is written, so compare as sets ordered by seq.
        let events: Vec<u64> = fed
            .iter()
            .filter(|record| !record.is_compaction_marker())
            .map(|record| record.seq)
            .collect();
        assert!(
            events.windows(2).all(|pair| pair[0] < pair[1]),
            "run {run_id}: the feed gives its events out of seq order: {events:?}"
        );
        fed.sort_by_key(|record| record.seq);
        assert_eq!(
            serde_json::to_string(&fed).expect("json"),
            serde_json::to_string(&stored).expect("json"),
            "run {run_id}: the feed and read disagree"
        );
    }
}

/// CONTRACT §29: the feed gives every record of the tenant once, in commit
/// order (a batch contiguous and in seq order, duplicates and conflicts
/// adding nothing), and a reader that stops after any record and resumes
/// from its position, with any page size, reads exactly the rest.
pub async fn feed_orders_every_record_and_resumes_anywhere(h: &Harness) {
    const CASE: &str = "feed_orders_every_record_and_resumes_anywhere";
    if !has_feed(h, CASE).await {
        return;
    }
    let instance = h.fresh().await;
    let store = instance.store().as_ref();
    let t = tenant(1);
    assert!(
        store
            .read_feed(&t, FeedPosition::START, 10)
            .await
            .expect("read_feed")
            .is_empty(),
        "a new store's feed is empty"
    );
    let mut expected = Vec::new();
    for round in 0..4u64 {
        for run_id in ["run-a", "run-b", "run-c"] {
            let id = format!("{run_id}-{round}");
            store
                .append(&t, &event(&t, run_id, &id, round))
                .await
                .expect("append");
            expected.push((run_id.to_owned(), id));
        }
        // A batch with an id repeated inside it and one already stored.
        let batch: Vec<EventRecord> = [
            format!("batch-{round}-1"),
            format!("batch-{round}-2"),
            format!("batch-{round}-1"),
            format!("run-b-{round}"),
            format!("batch-{round}-3"),
        ]
        .iter()
        .map(|id| event(&t, "run-b", id, round))
        .collect();
        store
            .append_batch(&t, &run("run-b"), &batch, None)
            .await
            .expect("append_batch");
        for n in 1..=3 {
            expected.push(("run-b".to_owned(), format!("batch-{round}-{n}")));
        }
        // A retry and a conflict write nothing.
        store
            .append(&t, &event(&t, "run-a", &format!("run-a-{round}"), round))
            .await
            .expect("retry");
        let conflict = store
            .append_batch(
                &t,
                &run("run-c"),
                &[event(&t, "run-c", "never", 0)],
                Some(0),
            )
            .await;
        assert!(
            matches!(conflict, Err(Error::Conflict { .. })),
            "{conflict:?}"
        );
    }
    let feed = settled(store, &t, FeedPosition::START, expected.len()).await;
    let order: Vec<(String, String)> = keys(&feed)
        .into_iter()
        .map(|(run_id, _, id)| (run_id, id))
        .collect();
    assert_eq!(order, expected, "the feed follows commit order");
    assert_matches_the_store(store, &t, &feed).await;

    for (index, entry) in feed.iter().enumerate() {
        let page = [1, 2, 3, 7, 100][index % 5];
        let rest = read_rest(store, &t, entry.position, page).await;
        assert_eq!(
            rest,
            feed[index + 1..],
            "resuming after {} with pages of {page}",
            entry.position
        );
    }
    assert!(
        store
            .read_feed(&t, FeedPosition::START, 0)
            .await
            .expect("read_feed")
            .is_empty(),
        "a limit of 0 answers nothing"
    );
    // Past every record: the last possible position, and positions past
    // the last record by their high part alone (the next high part) or by
    // their low part alone (the last record's high part, the largest low).
    let (high, _) = feed
        .last()
        .expect("the feed holds records")
        .position
        .parts();
    for past in [
        FeedPosition::from_parts(u64::MAX, u64::MAX),
        FeedPosition::from_parts(high + 1, 0),
        FeedPosition::from_parts(high, u64::MAX),
    ] {
        assert!(
            store
                .read_feed(&t, past, 10)
                .await
                .expect("read_feed")
                .is_empty(),
            "nothing follows {past}"
        );
    }
}

/// CONTRACT §29, §19: a tenant's feed never shows another tenant's record,
/// also of a tenant that differs only in its deployment.
pub async fn feed_keeps_each_tenant_to_itself(h: &Harness) {
    const CASE: &str = "feed_keeps_each_tenant_to_itself";
    if !has_feed(h, CASE).await {
        return;
    }
    let instance = h.fresh().await;
    let store = instance.store().as_ref();
    let plain = tenant(1);
    let deployed = Tenant::new(
        plain.org_id(),
        plain.workspace_id(),
        Some("blue".to_owned()),
    )
    .expect("tenant");
    let other = tenant(2);
    let quiet = tenant(3);
    for n in 0..5u64 {
        for (t, label) in [(&plain, "plain"), (&deployed, "blue"), (&other, "other")] {
            store
                .append(t, &event(t, "shared-run", &format!("{label}-{n}"), n))
                .await
                .expect("append");
        }
    }
    for (t, label) in [(&plain, "plain"), (&deployed, "blue"), (&other, "other")] {
        let feed = settled(store, t, FeedPosition::START, 5).await;
        for entry in &feed {
            assert!(
                t.matches(&entry.record.scope.tenant_context),
                "{label}'s feed shows a record of {:?}",
                entry.record.scope.tenant_context
            );
            assert!(entry.record.event_id.as_str().starts_with(label));
        }
        assert_matches_the_store(store, t, &feed).await;
    }
    assert!(
        read_rest(store, &quiet, FeedPosition::START, 10)
            .await
            .is_empty(),
        "a tenant without records has an empty feed"
    );
}

/// CONTRACT §29, §8-§11: compaction removes the pruned events from the feed
/// and writes its marker as a new record, after every position given out
/// before; a reader that had read to the end reads the marker next, and an
/// append after it comes after the marker.
pub async fn feed_gives_a_compaction_marker_as_a_new_record(h: &Harness) {
    const CASE: &str = "feed_gives_a_compaction_marker_as_a_new_record";
    if !has_feed(h, CASE).await {
        return;
    }
    let instance = h.fresh().await;
    let store = instance.store().as_ref();
    let t = tenant(1);
    for n in 1..=6u64 {
        store
            .append(&t, &event(&t, "run-old", &format!("old-{n}"), n * 100))
            .await
            .expect("append");
        store
            .append(&t, &event(&t, "run-other", &format!("other-{n}"), 5_000))
            .await
            .expect("append");
    }
    store
        .put(&t, &snapshot(&t, "run-old", "snap", 4, 500))
        .await
        .expect("put");
    let before = settled(store, &t, FeedPosition::START, 12).await;
    let end = before.last().expect("records").position;
    assert_eq!(
        removed(store.compact(1_000, 2_000).await.expect("compact")),
        3
    );
    let after = settled(store, &t, end, 1).await;
    let marker = &after[0];
    assert!(marker.record.is_compaction_marker(), "{:?}", marker.record);
    assert_eq!(marker.record.run_id.as_str(), "run-old");
    assert!(marker.position > end);

    let whole = settled(store, &t, FeedPosition::START, 12 - 3 + 1).await;
    assert!(
        whole.iter().all(
            |entry| !entry.record.event_id.as_str().starts_with("old-") || entry.record.seq > 3
        ),
        "pruned events left the feed: {:?}",
        keys(&whole)
    );
    assert_eq!(
        whole.last(),
        Some(marker),
        "the marker is the newest record"
    );
    assert_matches_the_store(store, &t, &whole).await;

    store
        .append(&t, &event(&t, "run-old", "old-7", 5_000))
        .await
        .expect("append");
    let next = settled(store, &t, marker.position, 1).await;
    assert_eq!(next[0].record.event_id.as_str(), "old-7");

    // A second compaction merges the marker: the old one leaves the feed and
    // the merged one is written as a new record.
    store
        .put(&t, &snapshot(&t, "run-old", "snap-2", 7, 5_000))
        .await
        .expect("put");
    assert!(removed(store.compact(1_000, 1_000_000).await.expect("compact")) > 0);
    // Both runs now hold events old enough: each gets a marker.
    let last = settled(store, &t, next[0].position, 2).await;
    assert!(
        last.iter().all(|entry| entry.record.is_compaction_marker()),
        "a compaction adds only markers: {:?}",
        keys(&last)
    );
    let whole = read_rest(store, &t, FeedPosition::START, 3).await;
    let markers = whole
        .iter()
        .filter(|entry| entry.record.is_compaction_marker())
        .count();
    assert_eq!(
        markers,
        last.len(),
        "the merged marker replaced the old one"
    );
    assert_matches_the_store(store, &t, &whole).await;
}

/// CONTRACT §29, §27: deleting a run removes its records from the feed and
/// writes its erasure marker as a new record; other runs keep their
/// positions.
pub async fn feed_gives_an_erasure_as_its_marker(h: &Harness) {
    const CASE: &str = "feed_gives_an_erasure_as_its_marker";
    if !has_feed(h, CASE).await {
        return;
    }
    let instance = h.fresh().await;
    let store = instance.store().as_ref();
    let t = tenant(1);
    // The doomed run holds the tenant's highest position: its erasure
    // marker must still come after it.
    for n in 1..=3u64 {
        for run_id in ["kept", "doomed"] {
            store
                .append(&t, &event(&t, run_id, &format!("{run_id}-{n}"), n))
                .await
                .expect("append");
        }
    }
    let before = settled(store, &t, FeedPosition::START, 6).await;
    let end = before.last().expect("records").position;
    assert_eq!(
        store.delete_run(&t, &run("doomed")).await.expect("delete"),
        3
    );
    let after = settled(store, &t, end, 1).await;
    assert_eq!(after[0].record.run_id.as_str(), "doomed");
    assert_eq!(
        after[0].record.seq, 3,
        "the erasure marker keeps the last seq"
    );
    let whole = settled(store, &t, FeedPosition::START, 4).await;
    let kept: Vec<&FeedRecord> = before
        .iter()
        .filter(|entry| entry.record.run_id.as_str() == "kept")
        .collect();
    assert_eq!(
        whole[..3].iter().collect::<Vec<_>>(),
        kept,
        "the other run keeps its records and positions"
    );
    assert_matches_the_store(store, &t, &whole).await;
    store
        .append(&t, &event(&t, "doomed", "doomed-1", 9))
        .await
        .expect("append");
    let next = settled(store, &t, after[0].position, 1).await;
    assert_eq!(next[0].record.seq, 4);
}

/// CONTRACT §29: positions survive a restart, and records written after it
/// come after every position given out before, also when the newest
/// records were compacted away.
pub async fn feed_positions_survive_reopen(h: &Harness) {
    const CASE: &str = "feed_positions_survive_reopen";
    if !has_feed(h, CASE).await {
        return;
    }
    if !h.capabilities().persistent {
        h.not_applicable(CASE, "nothing survives the last handle");
        return;
    }
    let mut instance = h.fresh().await;
    let t = tenant(1);
    for n in 1..=5u64 {
        for run_id in ["run-a", "run-b"] {
            instance
                .store()
                .append(&t, &event(&t, run_id, &format!("{run_id}-{n}"), n * 100))
                .await
                .expect("append");
        }
    }
    instance
        .store()
        .put(&t, &snapshot(&t, "run-b", "snap", 5, 500))
        .await
        .expect("put");
    // run-a has no snapshot: all five go; run-b keeps its seq 5.
    let pruned = instance
        .store()
        .compact(100, 10_000)
        .await
        .expect("compact");
    assert_eq!(removed(pruned), 9);
    let before = settled(instance.store().as_ref(), &t, FeedPosition::START, 3).await;
    instance.reopen().await;
    let store = instance.store().as_ref();
    let again = settled(store, &t, FeedPosition::START, 3).await;
    assert_eq!(again, before, "positions survive a restart");
    let end = before.last().expect("records").position;
    store
        .append(&t, &event(&t, "run-c", "run-c-1", 1))
        .await
        .expect("append");
    let next = settled(store, &t, end, 1).await;
    assert_eq!(next[0].record.event_id.as_str(), "run-c-1");
}

/// CONTRACT §29, §23: an imported stream enters the target's feed with the
/// target's own positions, in seq order, after what the target held.
pub async fn feed_takes_imported_streams_in_seq_order(h: &Harness) {
    const CASE: &str = "feed_takes_imported_streams_in_seq_order";
    if !has_feed(h, CASE).await {
        return;
    }
    let source = runstore_core::MemoryStore::new();
    let t = tenant(1);
    for n in 1..=6u64 {
        source
            .append(&t, &event(&t, "moved", &format!("moved-{n}"), n * 100))
            .await
            .expect("append");
    }
    source
        .put(&t, &snapshot(&t, "moved", "snap", 3, 300))
        .await
        .expect("put");
    assert_eq!(
        removed(source.compact(100, 1_000).await.expect("compact")),
        2
    );
    let exported = source
        .read(&t, &run("moved"), ReadQuery::all())
        .await
        .expect("read");

    let instance = h.fresh().await;
    let store = instance.store().as_ref();
    store
        .append(&t, &event(&t, "local", "local-1", 1))
        .await
        .expect("append");
    let first = settled(store, &t, FeedPosition::START, 1).await;
    let written = store
        .import_stream(&t, &run("moved"), &exported)
        .await
        .expect("import");
    assert_eq!(written, exported.len());
    let imported = settled(store, &t, first[0].position, exported.len()).await;
    let seqs: Vec<u64> = imported.iter().map(|entry| entry.record.seq).collect();
    let expected: Vec<u64> = exported.iter().map(|record| record.seq).collect();
    assert_eq!(seqs, expected, "an import enters the feed in seq order");
    assert_eq!(
        store
            .import_stream(&t, &run("moved"), &exported)
            .await
            .expect("import again"),
        0
    );
    let whole = read_rest(store, &t, FeedPosition::START, 1_000).await;
    assert_eq!(
        whole.len(),
        1 + exported.len(),
        "importing again adds nothing"
    );
    assert_matches_the_store(store, &t, &whole).await;
}

/// CONTRACT §29: `follow_feed` yields records as they commit, in feed
/// order, from after the position it is given.
pub async fn follow_feed_yields_records_as_they_commit(h: &Harness) {
    const CASE: &str = "follow_feed_yields_records_as_they_commit";
    if !has_feed(h, CASE).await {
        return;
    }
    let instance = h.fresh().await;
    let store = instance.store().clone();
    let t = tenant(1);
    store
        .append(&t, &event(&t, "run-a", "before", 1))
        .await
        .expect("append");
    let start = settled(store.as_ref(), &t, FeedPosition::START, 1).await[0].position;
    let writer = {
        let store = store.clone();
        let t = t.clone();
        tokio::spawn(async move {
            for n in 0..20u64 {
                let run_id = if n % 2 == 0 { "run-a" } else { "run-b" };
                store
                    .append(&t, &event(&t, run_id, &format!("live-{n}"), n))
                    .await
                    .expect("append");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let options = FollowOptions {
        poll_interval: Duration::from_millis(20),
        batch: 3,
    };
    let followed: Vec<FeedRecord> = tokio::time::timeout(
        SETTLE,
        store
            .follow_feed(&t, start, options)
            .take(20)
            .map(|item| item.expect("follow"))
            .collect(),
    )
    .await
    .expect("the follower receives all 20 records");
    writer.await.expect("writer");
    let ids: Vec<String> = followed
        .iter()
        .map(|entry| entry.record.event_id.to_string())
        .collect();
    let expected: Vec<String> = (0..20).map(|n| format!("live-{n}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(followed, read_rest(store.as_ref(), &t, start, 100).await);
}

/// `writers` tasks, each on the handle after the previous one's, each
/// writing `rounds` times to `run-{(writer + round) % runs}`: every
/// `batch_every`-th round a batch of 3, else a single event, all occurring
/// at 1. Returns when every write is acknowledged.
async fn write_rounds(
    handles: &[Arc<dyn Storage>],
    t: &Tenant,
    writers: usize,
    rounds: usize,
    runs: usize,
    batch_every: usize,
) {
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = handles[writer % handles.len()].clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..rounds {
                let run_id = format!("run-{}", (writer + round) % runs);
                let id = format!("w{writer}-r{round}");
                if round % batch_every == 0 {
                    let batch: Vec<EventRecord> = (0..3)
                        .map(|n| event(&t, &run_id, &format!("{id}-{n}"), 1))
                        .collect();
                    store
                        .append_batch(&t, &run(&run_id), &batch, None)
                        .await
                        .expect("append_batch");
                } else {
                    store
                        .append(&t, &event(&t, &run_id, &id, 1))
                        .await
                        .expect("append");
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
}

/// What one reader of the late-commit case saw.
type Seen = Vec<FeedRecord>;

/// CONTRACT §29, the lossless rule: many writers on many runs (through
/// several handles where the backend allows it, one of them slowed between
/// taking feed positions and committing), while readers poll the feed with
/// small pages and store their position. Every reader's sequence must equal
/// the final feed, which must hold every acknowledged record once: a reader
/// that was given a position never misses a record committed later below
/// it.
pub async fn feed_never_skips_a_late_commit(h: &Harness) {
    const CASE: &str = "feed_never_skips_a_late_commit";
    if !has_feed(h, CASE).await {
        return;
    }
    const WRITERS: usize = 8;
    const ROUNDS: usize = 12;
    const READERS: usize = 3;
    let mut instance = h.fresh().await;
    let delay = Duration::from_millis(25);
    let mut handles: Vec<Arc<dyn Storage>> = Vec::new();
    let slowed = if h.capabilities().shared_writers {
        handles.push(instance.store().clone());
        handles.push(instance.open_again().await.expect("open again"));
        let slow = h.open_slow(&instance, delay).await;
        if let Some(slow) = &slow {
            handles.push(slow.clone());
        }
        slow.is_some()
    } else if h.has_slow_commits() {
        // One handle per location: every commit goes through the slowed one.
        instance.close();
        let slow = h.open_slow(&instance, delay).await.expect("hook");
        instance.put_back(slow.clone());
        handles.push(slow);
        true
    } else {
        handles.push(instance.store().clone());
        false
    };
    if slowed {
        // The hook does slow commits: a lone append through the slowed
        // handle (the last) waits at least the delay. Another tenant's, so
        // that the feed below stays the writers' own.
        let other = tenant(2);
        let started = Instant::now();
        handles[handles.len() - 1]
            .append(&other, &event(&other, "slowed", "slowed-1", 1))
            .await
            .expect("append");
        assert!(
            started.elapsed() >= delay,
            "a commit through the slowed handle took {:?}, less than its delay",
            started.elapsed()
        );
    } else {
        h.not_applicable(
            CASE,
            "no slowed-commit hook: the writers run at full speed, unslowed",
        );
    }
    let t = tenant(1);
    let done = Arc::new(AtomicBool::new(false));

    let mut readers = Vec::new();
    for reader in 0..READERS {
        let store = handles[reader % handles.len()].clone();
        let t = t.clone();
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            let mut seen: Seen = Vec::new();
            let mut position = FeedPosition::START;
            let mut page = 1 + reader;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let batch = store
                    .read_feed(&t, position, page)
                    .await
                    .expect("read_feed");
                if let Some(last) = batch.last() {
                    position = last.position;
                }
                let drained = batch.len() < page;
                seen.extend(batch);
                if finished && drained {
                    return (seen, position);
                }
                page = page % 13 + 1;
                if drained {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }

    write_rounds(&handles, &t, WRITERS, ROUNDS, 5, 3).await;
    let expected = WRITERS * ROUNDS + WRITERS * ROUNDS.div_ceil(3) * 2;
    let store = instance.store().clone();
    // Every write is acknowledged: wait until the feed shows all of them,
    // then let the readers drain.
    let last = settled(store.as_ref(), &t, FeedPosition::START, expected).await;
    done.store(true, Ordering::SeqCst);
    assert_matches_the_store(store.as_ref(), &t, &last).await;
    for reader in readers {
        let (seen, position) = reader.await.expect("reader");
        let rest = read_rest(store.as_ref(), &t, position, 1_000).await;
        let mut whole = seen;
        whole.extend(rest);
        assert_eq!(
            keys(&whole),
            keys(&last),
            "a reader's feed differs from the final feed: it skipped or repeated a record"
        );
        assert_eq!(whole, last);
    }
}

/// CONTRACT §29 with maintenance in the race: writers on shared runs
/// (through every handle the backend allows), compactions that prune them
/// and a run's deletion, while a reader polls the feed with small pages.
/// The reader's positions only go up; every record the final feed holds at
/// or below the reader's last position is one the reader was given there
/// (none became visible behind it); and the final feed holds each run's
/// records as `read` does.
pub async fn feed_stays_lossless_while_maintenance_races_writers(h: &Harness) {
    const CASE: &str = "feed_stays_lossless_while_maintenance_races_writers";
    if !has_feed(h, CASE).await {
        return;
    }
    const WRITERS: usize = 4;
    const ROUNDS: usize = 25;
    let instance = h.fresh().await;
    let mut handles: Vec<Arc<dyn Storage>> = vec![instance.store().clone()];
    if h.capabilities().shared_writers {
        handles.push(instance.open_again().await.expect("open again"));
    }
    let t = tenant(1);
    let done = Arc::new(AtomicBool::new(false));

    let reader = {
        let store = handles[handles.len() - 1].clone();
        let t = t.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen: Seen = Vec::new();
            let mut position = FeedPosition::START;
            let mut page = 1;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let batch = store
                    .read_feed(&t, position, page)
                    .await
                    .expect("read_feed");
                for entry in &batch {
                    assert!(entry.position > position, "positions go up");
                    position = entry.position;
                }
                let drained = batch.len() < page;
                seen.extend(batch);
                if finished && drained {
                    return (seen, position);
                }
                page = page % 7 + 1;
                if drained {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    let maintenance = {
        let store = handles[0].clone();
        let t = t.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut passes = 0u64;
            while !done.load(Ordering::SeqCst) {
                passes += 1;
                // Every event occurred at 1: each pass prunes what is there.
                let report = store.compact(1, 1_000 + passes).await.expect("compact");
                assert!(report.is_clean(), "{:?}", report.failed);
                if passes == 3 {
                    store.delete_run(&t, &run("run-3")).await.expect("delete");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            passes
        })
    };
    write_rounds(&handles, &t, WRITERS, ROUNDS, 4, 4).await;
    done.store(true, Ordering::SeqCst);
    let passes = maintenance.await.expect("maintenance");
    assert!(passes >= 1);
    let (seen, last) = reader.await.expect("reader");
    let store = instance.store().clone();
    // The writers' runs, run-3 deleted on the way (its erasure marker and
    // what came after it stay records of the stream).
    let mut held = 0;
    for n in 0..4 {
        held += store
            .read(&t, &run(&format!("run-{n}")), ReadQuery::all())
            .await
            .expect("read")
            .len();
    }
    let whole = settled(store.as_ref(), &t, FeedPosition::START, held).await;
    let given: BTreeMap<FeedPosition, &FeedRecord> =
        seen.iter().map(|entry| (entry.position, entry)).collect();
    for entry in whole.iter().take_while(|entry| entry.position <= last) {
        assert_eq!(
            given.get(&entry.position),
            Some(&entry),
            "the feed holds {:?} at {} behind the reader's position {last}: \
             it became visible after the reader passed it",
            entry.record.event_id.as_str(),
            entry.position
        );
    }
    assert_matches_the_store(store.as_ref(), &t, &whole).await;
}
