//! Limits and seq arithmetic at the edges (CONTRACT §21): a store's own
//! record size, reads and conflicts with extreme bounds answered as the
//! model answers them, and a stored head at the end of the seq range
//! reported as corrupt rather than overflowing.

use runstore_conformance::support::records::{acme as tenant, run_1 as run, step};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::{ObjectStore, PutPayload, memory::InMemory, path::Path};
use runstore_core::{Error, EventLog, EventRecord, MemoryStore, ReadQuery, validate::Limits};
use runstore_s3::S3Store;
use serde_json::json;

fn event(id: &str) -> EventRecord {
    step(id, 10)
}

#[tokio::test]
async fn a_store_enforces_its_own_record_size() {
    let bucket = Arc::new(InMemory::new());
    let limits = Limits::with_max_record_bytes(1_000).unwrap();
    let store = S3Store::new(bucket.clone(), "limits")
        .unwrap()
        .with_limits(limits);
    assert_eq!(store.limits(), limits);
    let big = event("big").with_payload(json!("x".repeat(1_000)));
    let err = store
        .append_batch(&tenant(), &run(), &[event("small"), big], None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert!(
        err.to_string().contains("\"big\""),
        "names the event: {err}"
    );
    let objects: Vec<_> = bucket.list(None).try_collect().await.unwrap();
    assert!(objects.is_empty(), "nothing written");
    store
        .append_batch(&tenant(), &run(), &[event("small")], None)
        .await
        .unwrap();
}

#[tokio::test]
async fn extreme_bounds_answer_as_the_model() {
    let bucket = Arc::new(InMemory::new());
    let store = S3Store::new(bucket, "limits").unwrap();
    let model = MemoryStore::new();
    let events: Vec<_> = (0..200).map(|i| event(&format!("e{i}"))).collect();
    for log in [&store as &dyn EventLog, &model] {
        log.append_batch(&tenant(), &run(), &events, None)
            .await
            .unwrap();
    }
    let queries = [
        ReadQuery::all().after(u64::MAX),
        ReadQuery::all().after(0),
        ReadQuery::all().before(0),
        ReadQuery::all().before(u64::MAX),
        ReadQuery::tail(usize::MAX),
        ReadQuery::tail(usize::MAX).after(u64::MAX - 1),
        ReadQuery::all().limit(usize::MAX).before(150),
    ];
    for query in queries {
        let got = store.read(&tenant(), &run(), query).await.unwrap();
        let expected = model.read(&tenant(), &run(), query).await.unwrap();
        assert_eq!(got, expected, "{query:?}");
    }
    for log in [&store as &dyn EventLog, &model] {
        let err = log
            .append_batch(&tenant(), &run(), &[event("late")], Some(u64::MAX))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Conflict {
                    expected: u64::MAX,
                    actual: 200
                }
            ),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_head_at_the_end_of_the_seq_range_is_corrupt_not_an_overflow() {
    let bucket = Arc::new(InMemory::new());
    let store = S3Store::new(bucket.clone(), "limits").unwrap();
    store
        .append_batch(&tenant(), &run(), &[event("e")], None)
        .await
        .unwrap();
    let head: Path = bucket
        .list(Some(&Path::from("limits")))
        .map_ok(|meta| meta.location)
        .try_filter(|path| futures::future::ready(path.filename() == Some("head")))
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .remove(0);
    let bytes = bucket.get(&head).await.unwrap().bytes().await.unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    json["last_seq"] = json!(u64::MAX);
    bucket
        .put(&head, PutPayload::from(serde_json::to_vec(&json).unwrap()))
        .await
        .unwrap();
    let fresh = S3Store::new(bucket, "limits").unwrap();
    let err = fresh.next_seq(&tenant(), &run()).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("stream acme/prod:run-1"), "{err}");
}
