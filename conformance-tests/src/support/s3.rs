//! Damage done by hand to the objects `runstore-s3` writes, found as its
//! docs lay them out (docs/backends/s3.md, "Key layout", "The head"), for
//! the `on_damage` hook of the S3 harnesses.

use futures::TryStreamExt;
use object_store::{ObjectStore, PutPayload, path::Path};
use runstore_core::StreamKey;
use serde_json::{Value, json};

/// Overwrites the payload of `stream`'s compaction marker, in whichever
/// object of the store under `prefix` holds it (a segment, or the head's
/// buffer), with something that is not a marker payload. Found through the
/// stream's head.
///
/// # Panics
/// When a request fails, an object is not the JSON the layout describes, or
/// not exactly one object of the stream held its marker.
pub async fn damage_marker(store: &dyn ObjectStore, prefix: &str, stream: &StreamKey) {
    let root = Path::from(prefix).child("ev");
    let objects: Vec<Path> = store
        .list(Some(&root))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await
        .expect("list the stream heads");
    let mut damaged = 0;
    for head_path in objects
        .iter()
        .filter(|path| path.filename() == Some("head"))
    {
        let mut head = read_json(store, head_path).await;
        let names = |field: &str, value: Option<&str>| head[field].as_str() == value;
        if !(names("org_id", Some(stream.tenant.org_id()))
            && names("workspace_id", Some(stream.tenant.workspace_id()))
            && names("deployment_id", stream.tenant.deployment_id())
            && names("run_id", Some(stream.run_id.as_str())))
        {
            continue;
        }
        if damage_records(&mut head["buffer"]) {
            write_json(store, head_path, &head).await;
            damaged += 1;
        }
        let dir: Vec<_> = head_path.parts().collect();
        let dir = Path::from_iter(dir[..dir.len() - 1].iter().cloned());
        for segment in head["segments"].as_array().expect("segments") {
            let name = format!(
                "{:020}-{:020}-{}",
                segment["first"].as_u64().expect("first"),
                segment["last"].as_u64().expect("last"),
                segment["token"].as_str().expect("token")
            );
            let path = dir.child("seg").child(name);
            let mut records = read_json(store, &path).await;
            if damage_records(&mut records) {
                write_json(store, &path, &records).await;
                damaged += 1;
            }
        }
    }
    assert_eq!(damaged, 1, "one object of {stream} held its marker");
}

/// Replaces the payload of every marker in `records`; whether there was one.
fn damage_records(records: &mut Value) -> bool {
    let mut found = false;
    for record in records.as_array_mut().expect("an array of records") {
        if record["event_type"] == json!("stateful_runtime.event_log_compacted") {
            record["payload"] = json!({"not": "a marker payload"});
            found = true;
        }
    }
    found
}

/// The first JSON value of the object at `path`, and the byte offset where
/// it ends: a segment's id table follows its records (docs/backends/s3.md,
/// "Key layout").
async fn read_value(store: &dyn ObjectStore, path: &Path) -> (Value, Vec<u8>, usize) {
    let bytes = store
        .get(path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("read");
    let mut values = serde_json::Deserializer::from_slice(&bytes).into_iter::<Value>();
    let value = values.next().expect("a JSON value").expect("JSON");
    let end = values.byte_offset();
    (value, bytes[end..].to_vec(), end)
}

/// The JSON of the object at `path` (a segment's records, without the id
/// table after them).
///
/// # Panics
/// When the GET fails or the object does not start with JSON.
pub async fn read_json(store: &dyn ObjectStore, path: &Path) -> Value {
    read_value(store, path).await.0
}

/// Writes `value` over the JSON of the object at `path`. An object with
/// bytes after its JSON (a segment's id table, which the head locates by
/// offset) keeps them at the same offset: the JSON is padded with spaces to
/// its old length, and must not grow past it.
///
/// # Panics
/// When a request fails, or the new JSON is longer than the old one of an
/// object with a table.
pub async fn write_json(store: &dyn ObjectStore, path: &Path, value: &Value) {
    let mut bytes = serde_json::to_vec(value).expect("JSON");
    if store.head(path).await.is_ok() {
        let (_, tail, end) = read_value(store, path).await;
        if !tail.is_empty() {
            assert!(
                bytes.len() <= end,
                "the new JSON of {path} is longer than the old"
            );
            bytes.resize(end, b' ');
            bytes.extend_from_slice(&tail);
        }
    }
    store
        .put(path, PutPayload::from(bytes))
        .await
        .expect("put the damaged object");
}
