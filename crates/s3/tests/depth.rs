//! Records at the depth limit (CONTRACT §21): the head object wraps its
//! buffered records two levels deeper than the record (head, `buffer`
//! array), a segment one level deeper (the array), so a record of 64 levels
//! must read back from the head, from a segment, as the scope of a
//! compaction marker, and imported into the head's buffer, through a handle
//! that has nothing cached. A deeper record is refused before any request,
//! so it can never make a head unreadable.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::{ObjectStore, memory::InMemory, path::Path};
use runstore_conformance::support::s3::leading_table;
use runstore_core::{
    Error, EventId, EventLog, EventRecord, ReadQuery, RunId, SnapshotId, SnapshotRecord,
    SnapshotStore, Tenant,
    validate::{MAX_DEPTH, nested_arrays, text_depth},
};
use runstore_s3::S3Store;

fn tenant() -> Tenant {
    Tenant::new("acme", "prod", None).unwrap()
}

fn run(name: &str) -> RunId {
    RunId::new(name).unwrap()
}

fn event(run_id: &str, id: &str, at: u64) -> EventRecord {
    EventRecord::new(
        &tenant(),
        run(run_id),
        EventId::new(id).unwrap(),
        "step",
        at,
    )
}

/// A handle with nothing cached: another process.
fn fresh(bucket: &Arc<InMemory>) -> S3Store {
    S3Store::new(bucket.clone(), "depth").unwrap()
}

/// The deepest object under the store's prefix whose key ends in `name`.
async fn deepest_object(bucket: &InMemory, name: &str) -> usize {
    let objects: Vec<Path> = bucket
        .list(Some(&Path::from("depth")))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await
        .unwrap();
    let mut deepest = 0;
    for path in objects.iter().filter(|path| {
        path.parts()
            .any(|part| part.as_ref() == name || path.filename() == Some(name))
    }) {
        let bytes = bucket.get(path).await.unwrap().bytes().await.unwrap();
        let skip = leading_table(bucket, path).await;
        deepest = deepest.max(text_depth(&bytes[skip..]));
    }
    deepest
}

/// A deep event's payload at level 2 reaches level 64 with 63 arrays.
fn deepest_event(run_id: &str, id: &str, at: u64) -> EventRecord {
    let record = event(run_id, id, at).with_payload(nested_arrays(MAX_DEPTH - 1));
    assert_eq!(
        text_depth(&serde_json::to_vec(&record).unwrap()),
        MAX_DEPTH,
        "the record nests exactly at the limit"
    );
    record
}

async fn read_all(store: &S3Store, run_id: &str) -> Vec<EventRecord> {
    store
        .read(&tenant(), &run(run_id), ReadQuery::all())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_record_at_the_depth_limit_reads_back_from_head_and_segment() {
    let bucket = Arc::new(InMemory::new());
    let store = fresh(&bucket);
    let batch = vec![
        event("deep", "before", 10),
        deepest_event("deep", "deepest", 10),
        event("deep", "after", 10),
    ];
    store
        .append_batch(&tenant(), &run("deep"), &batch, None)
        .await
        .unwrap();
    // In the head's buffer: the head nests two levels deeper.
    assert_eq!(deepest_object(&bucket, "head").await, MAX_DEPTH + 2);
    let buffered = read_all(&fresh(&bucket), "deep").await;
    assert_eq!(buffered.len(), 3);
    assert_eq!(buffered[1].payload, nested_arrays(MAX_DEPTH - 1));

    // Enough appends to flush it into a segment.
    let more: Vec<_> = (0..200)
        .map(|i| event("deep", &format!("more-{i}"), 10))
        .collect();
    store
        .append_batch(&tenant(), &run("deep"), &more, None)
        .await
        .unwrap();
    // Wait for the background flush: an empty import takes the leader slot.
    store
        .import_stream(&tenant(), &run("deep"), &[])
        .await
        .unwrap();
    assert_eq!(deepest_object(&bucket, "seg").await, MAX_DEPTH + 1);
    assert!(deepest_object(&bucket, "head").await < MAX_DEPTH);
    let flushed = read_all(&fresh(&bucket), "deep").await;
    assert_eq!(flushed.len(), 203);
    assert_eq!(flushed[1], buffered[1]);
}

#[tokio::test]
async fn a_marker_at_the_depth_limit_reads_back_from_segment_and_head() {
    let bucket = Arc::new(InMemory::new());
    let store = fresh(&bucket);
    // A tenant context is level 3; its extra values are fields of it, so 61
    // arrays there reach level 64. The marker takes the first pruned
    // event's scope, so it nests as deep.
    let mut scoped = event("marked", "scoped", 10);
    scoped
        .scope
        .tenant_context
        .extra
        .insert("deep".into(), nested_arrays(MAX_DEPTH - 3));
    assert_eq!(text_depth(&serde_json::to_vec(&scoped).unwrap()), MAX_DEPTH);
    store
        .append_batch(
            &tenant(),
            &run("marked"),
            &[scoped, event("marked", "kept", 5_000)],
            None,
        )
        .await
        .unwrap();
    let report = store.compact(100, 1_000).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    assert_eq!(report.removed, 1);
    let compacted = read_all(&fresh(&bucket), "marked").await;
    assert!(compacted[0].is_compaction_marker());
    assert_eq!(
        text_depth(&serde_json::to_vec(&compacted[0]).unwrap()),
        MAX_DEPTH
    );

    // Imported elsewhere, the marker sits in the head's buffer.
    let copy = compacted
        .iter()
        .map(|record| {
            let mut record = record.clone();
            record.run_id = run("copy");
            record
        })
        .collect::<Vec<_>>();
    assert_eq!(
        store
            .import_stream(&tenant(), &run("copy"), &copy)
            .await
            .unwrap(),
        2
    );
    assert_eq!(read_all(&fresh(&bucket), "copy").await, copy);
}

#[tokio::test]
async fn a_record_past_the_depth_limit_is_refused_before_any_request() {
    let bucket = Arc::new(InMemory::new());
    let store = fresh(&bucket);
    for levels in [MAX_DEPTH, 125, 126] {
        let batch = vec![
            event("refused", "fine", 10),
            event("refused", "deep", 10).with_payload(nested_arrays(levels)),
        ];
        let err = store
            .append_batch(&tenant(), &run("refused"), &batch, None)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
        let mut record = event("refused", "deep", 10).with_payload(nested_arrays(levels));
        record.seq = 1;
        let err = store
            .import_stream(&tenant(), &run("refused"), &[record])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
        let snapshot = SnapshotRecord::new(
            &tenant(),
            run("refused"),
            SnapshotId::new("s").unwrap(),
            0,
            10,
            runstore_core::RunStatus::Running,
        )
        .with_checkpoint(nested_arrays(levels));
        let err = store.put(&tenant(), &snapshot).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    }
    let objects: Vec<_> = bucket.list(None).try_collect().await.unwrap();
    assert!(objects.is_empty(), "nothing written: {objects:?}");
    assert!(read_all(&fresh(&bucket), "refused").await.is_empty());
}
