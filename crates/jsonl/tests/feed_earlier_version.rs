//! CONTRACT §29 when an earlier version (no feed positions) writes to a
//! store this version wrote: docs/backends/jsonl.md says the earlier
//! version opens it (FORMAT is unchanged), keeps the lines' positions when it
//! compacts, and that its markers take positions at this version's next
//! open. A follower that read the feed up to position `p` before the
//! earlier version ran must then see the earlier version's markers after
//! `p`, and no position may be handed out twice.
//!
//! The earlier version's writes are reproduced on the file: its erasure
//! appends the marker line (`serde_json` of the record, no position) and
//! its rewrite drops the run's lines; its compaction copies kept lines byte
//! for byte and writes the marker without a position, which is this
//! version's compaction output with the marker's `feed_position` member
//! removed.

use std::{fs, path::Path};

use runstore_core::{
    EventId, EventLog, EventLogExt, EventRecord, FeedPosition, FeedRecord, RunId, Tenant,
    raw::erasure::erasure_marker,
};
use runstore_jsonl::JsonlStore;

const MEMBER: &[u8] = b"{\"feed_position\":";

fn event(tenant: &Tenant, run: &str, id: &str, at: u64) -> EventRecord {
    EventRecord::new(
        tenant,
        RunId::new(run).unwrap(),
        EventId::new(id).unwrap(),
        "step",
        at,
    )
}

fn acme() -> Tenant {
    Tenant::new("acme", "prod", None).unwrap()
}

async fn feed_after(store: &JsonlStore, tenant: &Tenant, after: u64) -> Vec<FeedRecord> {
    store
        .read_feed(tenant, FeedPosition::new(after), usize::MAX)
        .await
        .unwrap()
}

fn summary(feed: &[FeedRecord]) -> Vec<(u64, String, u64, bool)> {
    feed.iter()
        .map(|entry| {
            (
                entry.position.parts().1,
                entry.record.run_id.to_string(),
                entry.record.seq,
                entry.record.is_compaction_marker() || entry.record.event_type != "step",
            )
        })
        .collect()
}

/// A line without its `feed_position` member, as the earlier version
/// writes it.
fn strip_position(line: &[u8]) -> Vec<u8> {
    let lead = line.len() - line.trim_ascii_start().len();
    let Some(rest) = line[lead..].strip_prefix(MEMBER) else {
        return line.to_vec();
    };
    let skip = rest
        .iter()
        .take_while(|byte| byte.is_ascii_digit() || **byte == b' ')
        .count();
    assert_eq!(rest[skip], b',');
    let mut out = line[..lead].to_vec();
    out.push(b'{');
    out.extend_from_slice(&rest[skip + 1..]);
    out
}

fn record_of(line: &[u8]) -> EventRecord {
    serde_json::from_slice(&strip_position(line)).unwrap()
}

/// Rewrites the log keeping the lines `keep` accepts, each passed through
/// `edit`, then appends `extra` lines.
fn rewrite_log(
    dir: &Path,
    keep: impl Fn(&EventRecord) -> bool,
    edit: impl Fn(&EventRecord, &[u8]) -> Vec<u8>,
    extra: &[EventRecord],
) {
    let path = dir.join("events.jsonl");
    let bytes = fs::read(&path).unwrap();
    let mut out = Vec::new();
    for line in bytes.split(|byte| *byte == b'\n') {
        if line.trim_ascii().is_empty() || line.contains(&0) {
            continue;
        }
        let record = record_of(line);
        if keep(&record) {
            out.extend_from_slice(&edit(&record, line));
            out.push(b'\n');
        }
    }
    for record in extra {
        serde_json::to_writer(&mut out, record).unwrap();
        out.push(b'\n');
    }
    fs::write(&path, out).unwrap();
}

/// The earlier version deletes the run at the tenant's highest positions:
/// its erasure marker has no position, and this version's next open gives
/// it the position after the highest remaining record, which a follower
/// has already read past (and which the deleted run's first event held).
#[tokio::test(flavor = "multi_thread")]
async fn an_earlier_versions_erasure_of_the_highest_run_is_not_skipped_by_a_follower() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let t = acme();
    let store = JsonlStore::open(&dir).await.unwrap();
    store.append(&t, &event(&t, "a", "a1", 1)).await.unwrap();
    store.append(&t, &event(&t, "b", "b1", 2)).await.unwrap();
    store.append(&t, &event(&t, "b", "b2", 3)).await.unwrap();
    let read = feed_after(&store, &t, 0).await;
    let followed = read.last().unwrap().position.parts().1;
    assert_eq!(followed, 3, "{:?}", summary(&read));
    drop(store);

    // The earlier version's delete_run("b"): marker appended, b's lines
    // dropped by its rewrite; a's line copied as it is.
    let b = RunId::new("b").unwrap();
    rewrite_log(
        &dir,
        |record| record.run_id != b,
        |_, line| line.to_vec(),
        &[erasure_marker(&t, &b, 2)],
    );

    let store = JsonlStore::open(&dir).await.unwrap();
    let all = feed_after(&store, &t, 0).await;
    let new = feed_after(&store, &t, followed).await;
    assert!(
        new.iter().any(|entry| entry.record.run_id == b),
        "the follower, resuming after {followed}, never sees b's erasure marker; \
         whole feed now {:?}",
        summary(&all)
    );
}

/// The earlier version compacts every record of the tenant's only run:
/// its marker has no position, and this version's next open numbers it
/// from the highest remaining record (none), so it lands at position 1,
/// below what a follower read.
#[tokio::test(flavor = "multi_thread")]
async fn an_earlier_versions_compaction_marker_is_not_skipped_by_a_follower() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let t = acme();
    let store = JsonlStore::open(&dir).await.unwrap();
    for n in 1..=3 {
        store
            .append(&t, &event(&t, "a", &format!("a{n}"), n))
            .await
            .unwrap();
    }
    let read = feed_after(&store, &t, 0).await;
    let followed = read.last().unwrap().position.parts().1;
    assert_eq!(followed, 3);
    // What the earlier version's compaction writes: the same lines, with
    // the marker carrying no position (made here by this version's
    // compaction, its marker's member removed).
    assert_eq!(store.compact(10, 100).await.unwrap().removed, 3);
    drop(store);
    rewrite_log(
        &dir,
        |_| true,
        |record, line| {
            if record.is_compaction_marker() {
                strip_position(line)
            } else {
                line.to_vec()
            }
        },
        &[],
    );

    let store = JsonlStore::open(&dir).await.unwrap();
    let all = feed_after(&store, &t, 0).await;
    let new = feed_after(&store, &t, followed).await;
    assert!(
        new.iter().any(|entry| entry.record.is_compaction_marker()),
        "the follower, resuming after {followed}, never sees the compaction marker; \
         whole feed now {:?}",
        summary(&all)
    );
}

/// The earlier version deletes every run that held a position: no line
/// states one any more, so only the feed's epoch, recorded in `FEED` when
/// this version first opened the store, tells that positions were handed
/// out. The marker takes a position in the next epoch.
#[tokio::test(flavor = "multi_thread")]
async fn an_earlier_versions_erasure_of_every_positioned_run_is_not_skipped() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let t = acme();
    let store = JsonlStore::open(&dir).await.unwrap();
    store.append(&t, &event(&t, "b", "b1", 1)).await.unwrap();
    store.append(&t, &event(&t, "b", "b2", 2)).await.unwrap();
    let followed = feed_after(&store, &t, 0)
        .await
        .last()
        .unwrap()
        .position
        .parts()
        .1;
    assert_eq!(followed, 2);
    drop(store);
    assert_eq!(fs::read_to_string(dir.join("FEED")).unwrap(), "0\n");

    let b = RunId::new("b").unwrap();
    rewrite_log(
        &dir,
        |_| false,
        |_, line| line.to_vec(),
        &[erasure_marker(&t, &b, 2)],
    );

    let store = JsonlStore::open(&dir).await.unwrap();
    let new = feed_after(&store, &t, followed).await;
    assert_eq!(
        summary(&new),
        vec![((1 << 40) + 1, "b".to_owned(), 2, true)],
        "the erasure marker comes after what the follower read"
    );
}
