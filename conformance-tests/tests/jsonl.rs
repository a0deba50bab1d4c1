//! The conformance suite on the JSONL backend, in its default (durable) mode.

use runstore_conformance::{Capabilities, Harness};
use runstore_core::{EventRecord, StreamKey};

fn harness() -> Harness {
    Harness::new("jsonl", Capabilities::persistent().with_exclusive_open(), |location| async move {
        runstore_jsonl::JsonlStore::open(location.dir.join("store")).await
    })
    .on_slow_commits(|location, delay| async move {
        let options = runstore_jsonl::JsonlOptions::default().with_test_commit_delay(delay);
        runstore_jsonl::JsonlStore::open_with(location.dir.join("store"), options).await
    })
    .on_damage(|location, stream| async move {
        let path = location.dir.join("store").join("events.jsonl");
        tokio::task::spawn_blocking(move || damage_event(&path, &stream))
            .await
            .expect("damage");
    })
}

/// Puts bytes that are not UTF-8 into a string of the payload of `stream`'s
/// last ordinary event. Open indexes a line without building its payload, so
/// the store opens; reading the record (as compaction does) finds it
/// unreadable. A marker with a malformed payload would instead fail the open:
/// open reads every marker whole.
fn damage_event(path: &std::path::Path, stream: &StreamKey) {
    const PLACEHOLDER: &[u8] = b"@@damage@@";
    const FEED_POSITION: &str = "feed_position";
    let text = std::fs::read(path).expect("read the log");
    let mut lines: Vec<Vec<u8>> = text
        .split(|byte| *byte == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    let at = lines
        .iter()
        .rposition(|line| {
            serde_json::from_slice::<EventRecord>(line).is_ok_and(|record| {
                !record.is_compaction_marker()
                    && record.run_id == stream.run_id
                    && stream.tenant.matches(&record.scope.tenant_context)
            })
        })
        .expect("the stream has an ordinary event");
    let mut record: EventRecord = serde_json::from_slice(&lines[at]).expect("record");
    record.payload = serde_json::json!(std::str::from_utf8(PLACEHOLDER).expect("ascii"));
    // The line's feed position is its first member; it stays where it is.
    let position = record.extra.remove(FEED_POSITION);
    let mut line = serde_json::to_vec(&record).expect("json");
    if let Some(position) = position {
        let mut stamped = format!("{{\"{FEED_POSITION}\":{position},").into_bytes();
        stamped.extend_from_slice(&line[1..]);
        line = stamped;
    }
    let from = line
        .windows(PLACEHOLDER.len())
        .position(|window| window == PLACEHOLDER)
        .expect("the placeholder");
    line[from..from + PLACEHOLDER.len()].fill(0xff);
    lines[at] = line;
    std::fs::write(path, lines.join(&b'\n')).expect("write the log");
}

runstore_conformance::suite!(harness());
