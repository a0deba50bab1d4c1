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

async fn read_json(store: &dyn ObjectStore, path: &Path) -> Value {
    let bytes = store
        .get(path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("read");
    serde_json::from_slice(&bytes).expect("JSON")
}

async fn write_json(store: &dyn ObjectStore, path: &Path, value: &Value) {
    let bytes = serde_json::to_vec(value).expect("JSON");
    store
        .put(path, PutPayload::from(bytes))
        .await
        .expect("put the damaged object");
}
