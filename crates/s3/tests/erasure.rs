//! Erasure removes objects, not only what reads show (CONTRACT §27,
//! docs/backends/s3.md, "Erasure"): after `delete_snapshots` and
//! `delete_run`, a listing of the bucket under the run's keys finds only
//! its head (which holds the erasure marker) and the erased hint beside
//! its directory; objects a deletion cut short left behind are never read
//! and the next `delete_run` removes them.
//!
//! The cases run on `InMemory`, and the listing case again on a real S3
//! server when `RUNSTORE_S3_ENDPOINT` and `RUNSTORE_S3_BUCKET` are set (see
//! `scripts/services/seaweedfs.sh`); without them that run fails, unless
//! `RUNSTORE_ALLOW_MISSING_SERVICES` is set.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::{ObjectStore, PutPayload, memory::InMemory, path::Path};
use runstore_conformance::support::{
    self,
    records::{event, run, tenant},
};
use runstore_core::{
    EventId, EventLog, EventLogExt, ReadQuery, RunStatus, SnapshotId, SnapshotRecord,
    SnapshotStore, Tenant, raw::erasure::erasure_marker,
};
use runstore_s3::S3Store;

/// Events appended to the deleted run: more than one flush's worth, so it
/// has segments and id index entries.
const EVENTS: u64 = 300;

fn snapshot(t: &Tenant, run_id: &str, id: &str, seq: u64) -> SnapshotRecord {
    SnapshotRecord::new(
        t,
        run(run_id),
        SnapshotId::new(id).unwrap(),
        seq,
        seq,
        RunStatus::Running,
    )
}

/// Every object under `prefix`, as keys relative to it.
async fn listed(bucket: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    let root = Path::from(prefix);
    let mut keys: Vec<String> = bucket
        .list(Some(&root))
        .map_ok(|meta| {
            let rest: Vec<String> = meta
                .location
                .prefix_match(&root)
                .expect("listed under the prefix")
                .map(|part| part.as_ref().to_owned())
                .collect();
            rest.join("/")
        })
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

/// The keys of `keys` under the run `run_id` of tenant `org-1` (its stream
/// directory, its hint and its snapshots).
fn of_run<'a>(keys: &'a [String], run_id: &str) -> Vec<&'a str> {
    let run_segment = format!("/v{run_id}");
    keys.iter()
        .map(String::as_str)
        .filter(|key| {
            key.contains(&format!("{run_segment}/")) || key.contains(&format!("{run_segment}."))
        })
        .collect()
}

/// Fills run `gone` (segments, ids, a compaction marker that remembers ids,
/// buffered events, snapshots) and run `kept` of the same tenant, deletes
/// `gone`, and checks what the bucket holds afterwards.
async fn deletion_leaves_only_the_head_and_the_hint(bucket: Arc<dyn ObjectStore>, prefix: &str) {
    let store = S3Store::new(bucket.clone(), prefix).unwrap();
    let t = tenant("org-1");
    for n in 1..=EVENTS {
        store
            .append(&t, &event(&t, "gone", &format!("e{n}"), n))
            .await
            .unwrap();
    }
    store
        .put(&t, &snapshot(&t, "gone", "s1", 100))
        .await
        .unwrap();
    store
        .put(&t, &snapshot(&t, "gone", "s1", 150))
        .await
        .unwrap();
    store
        .put(&t, &snapshot(&t, "gone", "s2", 200))
        .await
        .unwrap();
    // e1-e49 pruned behind the snapshot floor (200): a marker remembering
    // their ids.
    assert!(store.compact(EVENTS - 50, EVENTS).await.unwrap().removed > 0);
    store
        .append(&t, &event(&t, "gone", "late", EVENTS + 1))
        .await
        .unwrap();
    for n in 1..=3 {
        store
            .append(&t, &event(&t, "kept", &format!("e{n}"), n))
            .await
            .unwrap();
    }
    store.put(&t, &snapshot(&t, "kept", "s1", 1)).await.unwrap();

    let before = listed(&*bucket, prefix).await;
    let gone_before = of_run(&before, "gone");
    for part in ["/seg/", "/head"] {
        assert!(
            gone_before.iter().any(|key| key.contains(part)),
            "the run has {part} objects before: {gone_before:?}"
        );
    }
    let kept_before: Vec<String> = of_run(&before, "kept")
        .into_iter()
        .map(str::to_owned)
        .collect();

    assert_eq!(store.delete_snapshots(&t, &run("gone")).await.unwrap(), 2);
    let deleted = store.delete_run(&t, &run("gone")).await.unwrap();
    assert!(deleted > 0 && deleted < usize::try_from(EVENTS).unwrap());

    let after = listed(&*bucket, prefix).await;
    let tenant_dir = before
        .iter()
        .find_map(|key| key.strip_suffix("/vgone/head"))
        .expect("the run's head");
    assert_eq!(
        of_run(&after, "gone"),
        vec![
            format!("{tenant_dir}/vgone.erased"),
            format!("{tenant_dir}/vgone/head"),
        ],
        "only the head (holding the marker) and the erased hint remain"
    );
    assert_eq!(
        of_run(&after, "kept"),
        kept_before,
        "the other run is untouched"
    );
    let last = EVENTS + 1;
    assert_eq!(
        store
            .read(&t, &run("gone"), ReadQuery::all())
            .await
            .unwrap(),
        vec![erasure_marker(&t, &run("gone"), last)]
    );
    assert_eq!(store.list_runs(&t).await.unwrap(), vec![run("kept")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_leaves_only_the_head_and_the_hint_in_memory() {
    deletion_leaves_only_the_head_and_the_hint(Arc::new(InMemory::new()), "erase").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_leaves_only_the_head_and_the_hint_on_a_real_server() {
    let Some([endpoint, bucket]) = support::service_urls(
        ["RUNSTORE_S3_ENDPOINT", "RUNSTORE_S3_BUCKET"],
        "s3 erasure listing",
    ) else {
        return;
    };
    let prefix = format!("erase-{}", uuid::Uuid::new_v4().simple());
    let store = S3Store::from_env_with_endpoint(&bucket, Some(endpoint), "").unwrap();
    deletion_leaves_only_the_head_and_the_hint(store.object_store().clone(), &prefix).await;
}

/// A run with segments whose id tables are split into pages: a flush that
/// merges such a segment deletes its pages with it, and the deletion
/// removes the rest.
#[tokio::test]
async fn deletion_removes_the_pages_of_a_large_id_table() {
    let bucket = Arc::new(InMemory::new());
    let store = S3Store::new(bucket.clone(), "pages").unwrap();
    let t = tenant("org-1");
    // 17 flushes of 1,000: the 16th merges every segment before it into
    // one of 16,000 ids (16 pages), replacing the paged ones it merges; the
    // 17th leads its own table.
    let events: Vec<_> = (1..=17_000)
        .map(|n| event(&t, "big", &format!("e{n}"), n))
        .collect();
    for chunk in events.chunks(1_000) {
        store
            .append_batch(&t, &run("big"), chunk, None)
            .await
            .unwrap();
    }
    // Wait for the last flush: an import of nothing takes the leader slot.
    store.import_stream(&t, &run("big"), &[]).await.unwrap();
    let before = listed(&*bucket, "pages").await;
    let segments: Vec<&str> = before
        .iter()
        .filter_map(|key| key.split_once("/seg/").map(|(_, name)| name))
        .collect();
    let paged: Vec<&str> = before
        .iter()
        .filter_map(|key| key.split_once("/idx/").map(|(_, rest)| rest))
        .map(|rest| rest.split_once('/').unwrap().0)
        .collect();
    assert_eq!(
        paged.len(),
        16,
        "one segment's 16 pages, no others: {before:?}"
    );
    assert!(
        paged.iter().all(|name| segments.contains(name)),
        "{before:?}"
    );
    assert_eq!(store.delete_run(&t, &run("big")).await.unwrap(), 17_000);
    let after = listed(&*bucket, "pages").await;
    assert_eq!(after.len(), 2, "the head and the hint: {after:?}");
}

/// A deletion cut short after its head was put leaves objects of the run:
/// reads and appends never take them for live data, and the next
/// `delete_run` (answering 0) removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_deletion_are_never_read_and_the_next_delete_removes_them() {
    let bucket = Arc::new(InMemory::new());
    let store = S3Store::new(bucket.clone(), "erase").unwrap();
    let t = tenant("org-1");
    for n in 1..=EVENTS {
        store
            .append(&t, &event(&t, "gone", &format!("e{n}"), n))
            .await
            .unwrap();
    }
    let before = listed(&*bucket, "erase").await;
    let mut saved = Vec::new();
    for key in of_run(&before, "gone") {
        if key.contains("/seg/") {
            let path = Path::from(format!("erase/{key}"));
            let bytes = bucket.get(&path).await.unwrap().bytes().await.unwrap();
            // An id index entry as a version of the store before segments
            // carried id tables wrote it, beside the segment.
            let (dir, _) = key.split_once("/seg/").unwrap();
            let entry = Path::from(format!("erase/{dir}/ids/ve1"));
            saved.push((entry, bytes::Bytes::from_static(br#"{"seq":1,"id":"e1"}"#)));
            saved.push((path, bytes));
        }
    }
    assert!(saved.len() >= 2, "segments: {}", saved.len());
    let flushed = store.delete_run(&t, &run("gone")).await.unwrap();
    assert_eq!(flushed, usize::try_from(EVENTS).unwrap());
    // What a crash between the head's put and the sweep leaves behind.
    for (path, bytes) in &saved {
        bucket
            .put(path, PutPayload::from(bytes.clone()))
            .await
            .unwrap();
    }

    let fresh = S3Store::new(bucket.clone(), "erase").unwrap();
    assert_eq!(
        fresh
            .read(&t, &run("gone"), ReadQuery::all())
            .await
            .unwrap(),
        vec![erasure_marker(&t, &run("gone"), EVENTS)]
    );
    assert_eq!(
        fresh
            .seq_of(&t, &run("gone"), &EventId::new("e1").unwrap())
            .await
            .unwrap(),
        None
    );
    assert!(fresh.list_runs(&t).await.unwrap().is_empty());

    assert_eq!(fresh.delete_run(&t, &run("gone")).await.unwrap(), 0);
    let after = listed(&*bucket, "erase").await;
    assert_eq!(of_run(&after, "gone").len(), 2, "{after:?}");

    // Appended again, an old id is new, and the ids live in the index the
    // deletion started.
    let again = fresh.append(&t, &event(&t, "gone", "e1", 1)).await.unwrap();
    assert_eq!((again.seq, again.inserted), (EVENTS + 1, true));
    assert_eq!(fresh.list_runs(&t).await.unwrap(), vec![run("gone")]);
}
