//! CONTRACT §29 on the JSONL layout: positions live in the log's lines, an
//! earlier version's log takes them once at open, and no deletion lets a
//! position be handed out twice, across reopens.

use std::{collections::BTreeMap, fs, path::Path};

use runstore_core::{
    EventId, EventLog, EventLogExt, EventRecord, FeedPosition, FeedRecord, ReadQuery, RunId,
    Tenant, raw::erasure::erasure_marker,
};
use runstore_jsonl::JsonlStore;

fn event(tenant: &Tenant, run: &str, id: &str, seq: u64, at: u64) -> EventRecord {
    let mut event = EventRecord::new(
        tenant,
        RunId::new(run).unwrap(),
        EventId::new(id).unwrap(),
        "step",
        at,
    );
    event.seq = seq;
    event
}

fn acme() -> Tenant {
    Tenant::new("acme", "prod", None).unwrap()
}

async fn feed(store: &JsonlStore, tenant: &Tenant) -> Vec<FeedRecord> {
    store
        .read_feed(tenant, FeedPosition::START, usize::MAX)
        .await
        .unwrap()
}

/// `(position, run, seq)` of each record of the feed.
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

/// The log's lines, as the earlier version wrote them: `serde_json` of each
/// record, a batch's lines but its last starting with a space.
fn old_log(requests: &[Vec<EventRecord>]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for request in requests {
        for (at, record) in request.iter().enumerate() {
            if at + 1 < request.len() {
                bytes.push(b' ');
            }
            serde_json::to_writer(&mut bytes, record).unwrap();
            bytes.push(b'\n');
        }
    }
    bytes
}

fn write_old_store(dir: &Path, requests: &[Vec<EventRecord>]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("FORMAT"), "runstore-jsonl 1\n").unwrap();
    fs::write(dir.join("events.jsonl"), old_log(requests)).unwrap();
}

fn positions_in_lines(dir: &Path) -> Vec<Option<u64>> {
    fs::read(dir.join("events.jsonl"))
        .unwrap()
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            let value: serde_json::Value = serde_json::from_slice(line).unwrap();
            value["feed_position"].as_u64()
        })
        .collect()
}

/// A store whose log the previous version wrote (no positions): two
/// tenants, interleaved runs, a batch, and a run deleted after its events
/// (the erasure marker hides them; their lines are still in the file).
fn earlier_requests() -> Vec<Vec<EventRecord>> {
    let local = Tenant::local();
    let acme = acme();
    let gone = RunId::new("gone").unwrap();
    vec![
        vec![event(&local, "a", "a1", 1, 10)],
        vec![event(&acme, "a", "x1", 1, 10)],
        vec![event(&local, "gone", "secret-1", 1, 10)],
        vec![
            event(&local, "b", "b1", 1, 10),
            event(&local, "b", "b2", 2, 10),
            event(&local, "b", "b3", 3, 10),
        ],
        vec![event(&local, "a", "a2", 2, 20)],
        vec![erasure_marker(&local, &gone, 1)],
        vec![event(&acme, "a", "x2", 2, 20)],
        vec![event(&local, "a", "a3", 3, 30)],
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn an_earlier_versions_log_takes_positions_once_in_file_order() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    write_old_store(&dir, &earlier_requests());
    let local = Tenant::local();

    let store = JsonlStore::open(&dir).await.unwrap();
    let first = feed(&store, &local).await;
    // Per tenant, from 1, in file order: each stream keeps its seq order;
    // the deleted run's events are gone, its marker takes a position.
    let expected = vec![
        (1, "a".to_owned(), 1),
        (2, "b".to_owned(), 1),
        (3, "b".to_owned(), 2),
        (4, "b".to_owned(), 3),
        (5, "a".to_owned(), 2),
        (6, "gone".to_owned(), 1),
        (7, "a".to_owned(), 3),
    ];
    assert_eq!(keys(&first), expected);
    assert_eq!(
        keys(&feed(&store, &acme()).await),
        vec![(1, "a".to_owned(), 1), (2, "a".to_owned(), 2)]
    );
    // The records read back as the earlier version wrote them.
    for entry in &first {
        let run = &entry.record.run_id;
        let read = store.read(&local, run, ReadQuery::all()).await.unwrap();
        assert!(read.contains(&entry.record), "{entry:?}");
    }
    drop(store);
    // Durably in the lines: every line states its position.
    let stated = positions_in_lines(&dir);
    assert_eq!(stated.len(), 9, "the deleted run's lines are dropped");
    assert!(stated.iter().all(Option::is_some), "{stated:?}");

    // The same positions at every later open, also after a compaction
    // prunes some records.
    let store = JsonlStore::open(&dir).await.unwrap();
    assert_eq!(feed(&store, &local).await, first);
    // Everything before 15 goes: a1, b1-b3, and acme's x1.
    let report = store.compact(10, 25).await.unwrap();
    assert_eq!(report.removed, 5, "{report:?}");
    let compacted = feed(&store, &local).await;
    drop(store);
    let store = JsonlStore::open(&dir).await.unwrap();
    assert_eq!(feed(&store, &local).await, compacted);
    let kept: Vec<_> = keys(&compacted)
        .into_iter()
        .filter(|(position, _, _)| *position <= 7)
        .collect();
    assert_eq!(
        kept,
        vec![
            (5, "a".to_owned(), 2),
            (6, "gone".to_owned(), 1),
            (7, "a".to_owned(), 3)
        ]
    );
    // The markers of `a` (through seq 1) and `b` (through seq 3) come
    // after, at new positions.
    let markers: Vec<_> = keys(&compacted)
        .into_iter()
        .filter(|(position, _, _)| *position > 7)
        .collect();
    assert_eq!(
        markers,
        vec![(8, "a".to_owned(), 1), (9, "b".to_owned(), 3)]
    );
    let next = store
        .append(&local, &event(&local, "c", "c1", 0, 40))
        .await
        .unwrap();
    assert!(next.inserted);
    let tail = store
        .read_feed(&local, FeedPosition::new(9), 10)
        .await
        .unwrap();
    assert_eq!(keys(&tail), vec![(10, "c".to_owned(), 1)]);
}

/// An earlier version that writes to a store this version opened leaves
/// lines without positions after lines with them: they take positions
/// above the tenant's highest at the next open.
#[tokio::test(flavor = "multi_thread")]
async fn lines_an_earlier_version_added_later_take_positions_above_the_rest() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let local = Tenant::local();
    let store = JsonlStore::open(&dir).await.unwrap();
    for (n, run) in ["a", "b", "a"].iter().enumerate() {
        store
            .append(&local, &event(&local, run, &format!("e{n}"), 0, 1))
            .await
            .unwrap();
    }
    drop(store);
    let mut log = fs::read(dir.join("events.jsonl")).unwrap();
    log.extend(old_log(&[
        vec![event(&local, "b", "old-1", 2, 1)],
        vec![
            event(&local, "c", "old-2", 1, 1),
            event(&local, "c", "old-3", 2, 1),
        ],
    ]));
    fs::write(dir.join("events.jsonl"), log).unwrap();
    let store = JsonlStore::open(&dir).await.unwrap();
    // The store had positions: the earlier version's lines start the next
    // epoch, above any position the lines it may have deleted held.
    let epoch = 1 << 40;
    assert_eq!(
        keys(&feed(&store, &local).await),
        vec![
            (1, "a".to_owned(), 1),
            (2, "b".to_owned(), 1),
            (3, "a".to_owned(), 2),
            (epoch + 1, "b".to_owned(), 2),
            (epoch + 2, "c".to_owned(), 1),
            (epoch + 3, "c".to_owned(), 2),
        ]
    );
    assert_eq!(fs::read_to_string(dir.join("FEED")).unwrap(), "1\n");
    drop(store);
    // The same positions at every later open.
    let store = JsonlStore::open(&dir).await.unwrap();
    assert_eq!(
        keys(&feed(&store, &local).await)[5],
        (epoch + 3, "c".to_owned(), 2)
    );
}

/// Deleting the record at a tenant's highest position, by compaction, by
/// deleting its run or the whole tenant, never lets a later record take a
/// position at or below it, across reopens (the deletion's marker holds a
/// new position above it in the same rewrite).
#[tokio::test(flavor = "multi_thread")]
async fn no_deletion_lets_a_position_be_handed_out_again() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let t = acme();
    let mut highest = 0;
    let mut check = |feed: &[FeedRecord], when: &str| {
        let top = feed.last().map_or(0, |entry| entry.position.parts().1);
        assert!(top > highest, "{when}: {top} after {highest}");
        highest = top;
    };
    let store = JsonlStore::open(&dir).await.unwrap();
    for n in 1..=3 {
        store
            .append(&t, &event(&t, "a", &format!("a{n}"), 0, n))
            .await
            .unwrap();
    }
    check(&feed(&store, &t).await, "appends");
    assert_eq!(store.compact(1, 100).await.unwrap().removed, 3);
    drop(store);
    let store = JsonlStore::open(&dir).await.unwrap();
    check(&feed(&store, &t).await, "compaction");
    store.append(&t, &event(&t, "b", "b1", 0, 1)).await.unwrap();
    check(&feed(&store, &t).await, "append");
    store
        .delete_run(&t, &RunId::new("b").unwrap())
        .await
        .unwrap();
    drop(store);
    let store = JsonlStore::open(&dir).await.unwrap();
    check(&feed(&store, &t).await, "deleted run");
    assert!(store.delete_tenant(&t).await.unwrap().is_clean());
    drop(store);
    let store = JsonlStore::open(&dir).await.unwrap();
    let after_tenant = feed(&store, &t).await;
    check(&after_tenant, "deleted tenant");
    store.append(&t, &event(&t, "c", "c1", 0, 1)).await.unwrap();
    check(&feed(&store, &t).await, "append after all");
    // Every stream's records are in the feed once.
    let mut by_run: BTreeMap<String, usize> = BTreeMap::new();
    for entry in feed(&store, &t).await {
        *by_run.entry(entry.record.run_id.to_string()).or_default() += 1;
    }
    assert_eq!(by_run.values().sum::<usize>(), by_run.len(), "{by_run:?}");
}

/// The feed index costs a bounded number of bytes per record.
#[tokio::test(flavor = "multi_thread")]
async fn the_index_stays_within_its_memory_per_record() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let t = Tenant::local();
    let store = JsonlStore::open_with(
        &dir,
        runstore_jsonl::JsonlOptions::default().with_durability(runstore_core::Durability::Relaxed),
    )
    .await
    .unwrap();
    for round in 0..20 {
        for run in 0..10 {
            let name = format!("run-{run}");
            let batch: Vec<EventRecord> = (0..250)
                .map(|n| event(&t, &name, &format!("{round}-{n}"), 0, 1))
                .collect();
            store
                .append_batch(&t, &RunId::new(name).unwrap(), &batch, None)
                .await
                .unwrap();
        }
    }
    drop(store);
    let store = JsonlStore::open(&dir).await.unwrap();
    let stats = store.index_stats();
    assert_eq!(stats.records, 50_000);
    let per_record = stats.approx_bytes / stats.records;
    assert!(
        per_record <= 150,
        "{per_record} bytes per record: {stats:?}"
    );
}

/// An open that gave positions but stopped before its rename (a crash)
/// leaves the old log and a temp file: the next open gives the same
/// positions as an upgrade that was never interrupted.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_upgrade_gives_the_same_positions_again() {
    let temp = tempfile::tempdir().unwrap();
    let clean = temp.path().join("clean");
    let cut = temp.path().join("cut");
    write_old_store(&clean, &earlier_requests());
    write_old_store(&cut, &earlier_requests());
    let mut partial = old_log(&earlier_requests());
    partial.truncate(partial.len() / 2);
    fs::write(cut.join("events.jsonl.tmp"), partial).unwrap();
    let a = JsonlStore::open(&clean).await.unwrap();
    let b = JsonlStore::open(&cut).await.unwrap();
    for tenant in [Tenant::local(), acme()] {
        let feed_a = feed(&a, &tenant).await;
        assert!(!feed_a.is_empty());
        assert_eq!(feed_a, feed(&b, &tenant).await, "{tenant}");
    }
    assert!(!cut.join("events.jsonl.tmp").exists());
}

/// A log edited by hand to hold the highest position: the next record of
/// that tenant is refused, nothing wraps around to position 0.
#[tokio::test(flavor = "multi_thread")]
async fn the_highest_position_is_never_passed() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let t = Tenant::local();
    write_old_store(&dir, &[]);
    let line = serde_json::to_vec(&event(&t, "a", "a1", 1, 1)).unwrap();
    let mut log = format!("{{\"feed_position\":{},", u64::MAX).into_bytes();
    log.extend_from_slice(&line[1..]);
    log.push(b'\n');
    fs::write(dir.join("events.jsonl"), log).unwrap();
    let store = JsonlStore::open(&dir).await.unwrap();
    assert_eq!(
        keys(&feed(&store, &t).await),
        vec![(u64::MAX, "a".to_owned(), 1)]
    );
    let refused = store.append(&t, &event(&t, "a", "a2", 0, 1)).await;
    assert!(
        matches!(refused, Err(runstore_core::Error::InvalidInput { .. })),
        "{refused:?}"
    );
    // Another tenant's feed is its own.
    let other = store
        .append(&acme(), &event(&acme(), "a", "x1", 0, 1))
        .await
        .unwrap();
    assert!(other.inserted);
}
