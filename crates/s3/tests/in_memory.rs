//! The conformance suite on `InMemory`: the same protocol code as on S3,
//! without a server. One `InMemory` holds every case, each under its own
//! prefix, so opening a location again reopens the same store.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::{ObjectStore, PutPayload, memory::InMemory, path::Path};
use runstore_conformance::{Capabilities, Harness};
use runstore_core::StreamKey;
use runstore_s3::S3Store;
use serde_json::{Value, json};

fn harness() -> Harness {
    let bucket = Arc::new(InMemory::new());
    let opened = bucket.clone();
    Harness::new(
        "s3-in-memory",
        Capabilities::persistent(),
        move |location| {
            let bucket = opened.clone();
            async move { S3Store::new(bucket, location.name) }
        },
    )
    .on_damage(move |location, stream| {
        let bucket = bucket.clone();
        async move { damage_marker(&bucket, &location.name, &stream).await }
    })
}

/// Overwrites the payload of `stream`'s compaction marker, in the segment or
/// head that holds it, found through the stream's head
/// (docs/backends/s3.md, "Key layout", "The head").
async fn damage_marker(bucket: &InMemory, prefix: &str, stream: &StreamKey) {
    let heads: Vec<Path> = bucket
        .list(Some(&Path::from(prefix)))
        .map_ok(|meta| meta.location)
        .try_filter(|path| futures::future::ready(path.filename() == Some("head")))
        .try_collect()
        .await
        .unwrap();
    let mut damaged = 0;
    for head_path in heads {
        let mut head = read_json(bucket, &head_path).await;
        let names = |field: &str, value: Option<&str>| head[field].as_str() == value;
        if !(names("org_id", Some(stream.tenant.org_id()))
            && names("workspace_id", Some(stream.tenant.workspace_id()))
            && names("deployment_id", stream.tenant.deployment_id())
            && names("run_id", Some(stream.run_id.as_str())))
        {
            continue;
        }
        if damage_records(&mut head["buffer"]) {
            write_json(bucket, &head_path, &head).await;
            damaged += 1;
        }
        let parts: Vec<_> = head_path.parts().collect();
        let dir = Path::from_iter(parts[..parts.len() - 1].iter().cloned());
        for segment in head["segments"].as_array().unwrap() {
            let name = format!(
                "{:020}-{:020}-{}",
                segment["first"].as_u64().unwrap(),
                segment["last"].as_u64().unwrap(),
                segment["token"].as_str().unwrap()
            );
            let path = dir.child("seg").child(name);
            let mut records = read_json(bucket, &path).await;
            if damage_records(&mut records) {
                write_json(bucket, &path, &records).await;
                damaged += 1;
            }
        }
    }
    assert_eq!(damaged, 1, "one object of {stream} held its marker");
}

/// Replaces the payload of every marker in `records`; whether there was one.
fn damage_records(records: &mut Value) -> bool {
    let mut found = false;
    for record in records.as_array_mut().unwrap() {
        if record["event_type"] == json!("stateful_runtime.event_log_compacted") {
            record["payload"] = json!({"not": "a marker payload"});
            found = true;
        }
    }
    found
}

async fn read_json(bucket: &InMemory, path: &Path) -> Value {
    let bytes = bucket.get(path).await.unwrap().bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn write_json(bucket: &InMemory, path: &Path, value: &Value) {
    let bytes = serde_json::to_vec(value).unwrap();
    bucket.put(path, PutPayload::from(bytes)).await.unwrap();
}

runstore_conformance::suite!(harness());
