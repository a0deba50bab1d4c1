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

/// The bytes of the id table that leads the segment at `path` (binary, not
/// JSON; docs/backends/s3.md, "The head"), as its stream's head states them;
/// 0 for any other object, and for a segment whose table is in pages or
/// that has none.
///
/// # Panics
/// When the stream's head cannot be read or does not name the segment.
pub async fn leading_table(store: &dyn ObjectStore, path: &Path) -> usize {
    let parts: Vec<_> = path.parts().collect();
    let [.., dir, name] = parts.as_slice() else {
        return 0;
    };
    if dir.as_ref() != "seg" {
        return 0;
    }
    let head_path = Path::from_iter(parts[..parts.len() - 2].iter().cloned()).child("head");
    let head = read_value(store, &head_path, 0).await.0;
    let token = name.as_ref().rsplit('-').next().expect("a segment token");
    let segment = head["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .find(|segment| segment["token"] == token)
        .expect("the head names the segment");
    let count = segment["index"]["count"].as_u64().unwrap_or(0);
    let pages = segment["index"]["pages"].as_u64().unwrap_or(0);
    if pages == 0 {
        usize::try_from(40 * count).expect("a table length")
    } else {
        0
    }
}

/// The JSON of the object at `path` after its first `skip` bytes, and
/// those bytes.
async fn read_value(store: &dyn ObjectStore, path: &Path, skip: usize) -> (Value, Vec<u8>) {
    let bytes = store
        .get(path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("read");
    let value = serde_json::from_slice(&bytes[skip..]).expect("JSON");
    (value, bytes[..skip].to_vec())
}

/// The JSON of the object at `path` (a segment's records, without the id
/// table that leads them).
///
/// # Panics
/// When a GET fails or the object is not the JSON the layout describes.
pub async fn read_json(store: &dyn ObjectStore, path: &Path) -> Value {
    let skip = leading_table(store, path).await;
    read_value(store, path, skip).await.0
}

/// Writes `value` as the JSON of the object at `path`; a segment keeps the
/// id table that leads it.
///
/// # Panics
/// When a request fails.
pub async fn write_json(store: &dyn ObjectStore, path: &Path, value: &Value) {
    let skip = leading_table(store, path).await;
    let mut bytes = if skip > 0 {
        read_value(store, path, skip).await.1
    } else {
        Vec::new()
    };
    bytes.extend(serde_json::to_vec(value).expect("JSON"));
    store
        .put(path, PutPayload::from(bytes))
        .await
        .expect("put the damaged object");
}
