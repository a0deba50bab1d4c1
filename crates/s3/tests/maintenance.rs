//! Store-wide maintenance on damaged and hostile data (CONTRACT §25):
//! `compact` and `prune` process every stream and report each one that
//! fails; objects belong to the stream their key names, never to the one
//! their record claims, so a record claiming another tenant fails its own
//! stream and never costs the other tenant anything.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::{ObjectStore, PutPayload, memory::InMemory, path::Path};
use runstore_conformance::support::records::{event, run, tenant};
use runstore_conformance::support::{
    corrupt_failure, failed_streams,
    s3::{read_json, write_json},
};
use runstore_core::{
    Error, EventLog, EventLogExt, ReadQuery, RunStatus, SnapshotId, SnapshotRecord, SnapshotStore,
    StreamKey, Tenant,
};
use runstore_s3::S3Store;
use serde_json::json;

fn snapshot(t: &Tenant, run_id: &str, id: &str, seq: u64, at: u64) -> SnapshotRecord {
    SnapshotRecord::new(
        t,
        run(run_id),
        SnapshotId::new(id).unwrap(),
        seq,
        at,
        RunStatus::Running,
    )
}

fn store(bucket: &Arc<InMemory>) -> S3Store {
    S3Store::new(bucket.clone(), "maint").unwrap()
}

/// Every object under the store's prefix whose key has `part` in it.
async fn objects(bucket: &InMemory, part: &str) -> Vec<Path> {
    bucket
        .list(Some(&Path::from("maint")))
        .map_ok(|meta| meta.location)
        .try_filter(|path| futures::future::ready(path.parts().any(|p| p.as_ref() == part)))
        .try_collect()
        .await
        .unwrap()
}

/// The key of the object under `part` (`"head"` or `"snap"`) whose JSON
/// has `field` equal to `value`.
async fn object_where(bucket: &InMemory, part: &str, field: &str, value: &str) -> Path {
    for path in objects(bucket, part).await {
        let json = read_json(bucket, &path).await;
        let found =
            json[field] == json!(value) || json["scope"]["tenant_context"][field] == json!(value);
        if found {
            return path;
        }
    }
    panic!("no object under {part} with {field} = {value}");
}

/// Overwrites the payload of the compaction marker in `org`'s segments.
async fn damage_marker(bucket: &InMemory, org: &str) {
    let mut damaged = 0;
    for path in objects(bucket, "seg").await {
        let mut records = read_json(bucket, &path).await;
        let mut changed = false;
        for record in records.as_array_mut().unwrap() {
            if record["scope"]["tenant_context"]["org_id"] == json!(org)
                && record["event_type"] == json!("stateful_runtime.event_log_compacted")
            {
                record["payload"] = json!({"compacted_event_ids": "damaged"});
                changed = true;
            }
        }
        if changed {
            write_json(bucket, &path, &records).await;
            damaged += 1;
        }
    }
    assert_eq!(damaged, 1);
}

#[tokio::test]
async fn compaction_reports_a_damaged_stream_and_compacts_every_other() {
    let bucket = Arc::new(InMemory::new());
    let orgs = ["a-first", "b-damaged", "c-headless", "d-last"];
    {
        let store = store(&bucket);
        for org in orgs {
            let t = tenant(org);
            for n in 1..=2 {
                let e = event(&t, "r", &format!("e{n}"), n);
                store.append(&t, &e).await.unwrap();
            }
        }
        let report = store.compact(10, 1_000).await.unwrap();
        assert!(report.is_clean(), "{:?}", report.failed);
        assert_eq!(report.removed, 8);
        for org in orgs {
            let t = tenant(org);
            store
                .append_batch(&t, &run("r"), &[event(&t, "r", "e3", 3)], None)
                .await
                .unwrap();
        }
    }
    // Behind the store's back: one marker's payload, one head's bytes.
    damage_marker(&bucket, "b-damaged").await;
    let head = object_where(&bucket, "head", "org_id", "c-headless").await;
    bucket
        .put(
            &head,
            PutPayload::from_static(b"{\"format\": 1, \"org_id\": "),
        )
        .await
        .unwrap();

    let store = store(&bucket);
    let report = store.compact(10, 2_000).await.expect("the pass runs");
    assert_eq!(
        failed_streams(&report),
        vec![
            "b-damaged/prod:r".to_owned(),
            "c-headless/prod:r".to_owned()
        ],
    );
    assert_eq!(
        report.removed, 2,
        "the first and last streams were compacted"
    );
    for failure in &report.failed {
        let text = failure.error.to_string();
        assert!(matches!(failure.error, Error::Corrupt { .. }), "{text}");
        assert!(
            text.contains(&failure.stream.to_string()),
            "names the stream: {text}"
        );
    }
    let marker = report.failed[0].error.to_string();
    assert!(
        marker.contains("marker at seq 2"),
        "names the seq: {marker}"
    );
    for org in ["a-first", "d-last"] {
        let records = store
            .read(&tenant(org), &run("r"), ReadQuery::all())
            .await
            .unwrap();
        assert_eq!(records.len(), 1, "{org}");
        assert!(records[0].is_compaction_marker(), "{org}");
    }
}

/// Data written before validation refused reserved keys: tenant B's
/// snapshot object, under B's key, claims A's stream.
async fn plant_a_claim(bucket: &InMemory, store: &S3Store, a: &Tenant, b: &Tenant) {
    store
        .put(b, &snapshot(b, "r", "planted", 9, 50))
        .await
        .unwrap();
    let path = object_where(bucket, "snap", "org_id", b.org_id()).await;
    let mut planted = read_json(bucket, &path).await;
    planted["scope"]["tenant_context"]["org_id"] = json!(a.org_id());
    write_json(bucket, &path, &planted).await;
}

#[tokio::test]
async fn prune_groups_snapshots_by_their_key_and_fails_a_stream_that_claims_another() {
    let bucket = Arc::new(InMemory::new());
    let store = store(&bucket);
    let (a, b, c) = (tenant("a"), tenant("b"), tenant("c"));
    // A's only snapshot is old: keeping the newest one per stream keeps it.
    store
        .put(&a, &snapshot(&a, "r", "only", 1, 10))
        .await
        .unwrap();
    store
        .put(&c, &snapshot(&c, "r", "old", 1, 10))
        .await
        .unwrap();
    store
        .put(&c, &snapshot(&c, "r", "new", 2, 20))
        .await
        .unwrap();
    plant_a_claim(&bucket, &store, &a, &b).await;
    // B's planted snapshot is old and not its newest: the prune chooses it,
    // and reads it before deleting anything.
    store
        .put(&b, &snapshot(&b, "r", "newer", 10, 950))
        .await
        .unwrap();

    let report = store.prune(100, 1, 1_000).await.expect("the pass runs");
    let text = corrupt_failure(&report, "b/prod:r");
    assert!(text.contains("claims stream a/prod:r"), "{text}");
    assert_eq!(report.removed, 1, "C's older snapshot");
    let kept = store.list(&a, &run("r"), None).await.unwrap();
    assert_eq!(kept.len(), 1, "A's snapshot is untouched");
    assert_eq!(kept[0].snapshot_id.as_str(), "only");
    assert_eq!(store.list(&c, &run("r"), None).await.unwrap().len(), 1);

    // The planted object is B's stream's, as its key says, and reads of it
    // fail rather than hand B's object out as A's.
    let streams = store.snapshot_streams().await.unwrap();
    let names: Vec<String> = streams.iter().map(ToString::to_string).collect();
    assert_eq!(names, vec!["a/prod:r", "b/prod:r", "c/prod:r"]);
    let err = store.list(&b, &run("r"), None).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    let err = store
        .get(&b, &run("r"), &SnapshotId::new("planted").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn compaction_reads_the_floor_of_the_stream_the_key_names() {
    let bucket = Arc::new(InMemory::new());
    let store = store(&bucket);
    let (a, b) = (tenant("a"), tenant("b"));
    for t in [&a, &b] {
        let events: Vec<_> = (1..=3)
            .map(|n| event(t, "r", &format!("e{n}"), 1))
            .collect();
        store
            .append_batch(t, &run("r"), &events, None)
            .await
            .unwrap();
    }
    // A's floor is seq 2; B's planted object claims A's stream at seq 9.
    store
        .put(&a, &snapshot(&a, "r", "floor", 2, 1))
        .await
        .unwrap();
    plant_a_claim(&bucket, &store, &a, &b).await;
    let report = store.compact(10, 1_000).await.expect("the pass runs");
    assert_eq!(failed_streams(&report), vec!["b/prod:r".to_owned()]);
    assert_eq!(report.removed, 1, "A pruned below its own floor only");
    let records = store.read(&a, &run("r"), ReadQuery::all()).await.unwrap();
    let seqs: Vec<u64> = records.iter().map(|record| record.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert!(records[0].is_compaction_marker());
    assert_eq!(
        store
            .read(&b, &run("r"), ReadQuery::all())
            .await
            .unwrap()
            .len(),
        3,
        "B's stream is left as it was"
    );
}

#[tokio::test]
async fn hashed_keys_name_the_stream_their_objects_prove() {
    let bucket = Arc::new(InMemory::new());
    let store = store(&bucket);
    let a = tenant("a");
    // Run ids this long are stored under a hashed key segment.
    let long = "x".repeat(300);
    store
        .append_batch(&a, &run(&long), &[event(&a, &long, "e1", 1)], None)
        .await
        .unwrap();
    store
        .put(&a, &snapshot(&a, &long, "s1", 1, 1))
        .await
        .unwrap();
    let key = StreamKey::new(a.clone(), run(&long));
    assert_eq!(store.streams().await.unwrap(), vec![key.clone()]);
    assert_eq!(store.snapshot_streams().await.unwrap(), vec![key]);

    // Another long run's head copied under this one's key names a stream
    // whose key is elsewhere: the list of streams cannot be read.
    let other = "y".repeat(300);
    store
        .append_batch(&a, &run(&other), &[event(&a, &other, "e1", 1)], None)
        .await
        .unwrap();
    let heads = objects(&bucket, "head").await;
    let copied = read_json(&*bucket, &heads[0]).await;
    write_json(&*bucket, &heads[1], &copied).await;
    let err = store.streams().await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("whose key is elsewhere"), "{err}");
    let err = store.compact(10, 1_000).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}
