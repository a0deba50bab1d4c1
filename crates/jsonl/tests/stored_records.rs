//! Records in the files that no write of this version produces -- written by
//! an older version, another tool, or changed behind the handle's back --
//! are refused or read exactly as the store wrote them; never acknowledged
//! and then unreadable, never answered for another stream (CONTRACT §17,
//! §21-§25).

use std::{fs, path::Path};

use runstore_conformance::support::expect_corrupt;
use runstore_core::validate::nested_arrays;
use runstore_core::{
    EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, RunStatus, SnapshotId,
    SnapshotRecord, SnapshotStore, Tenant, validate::MAX_DEPTH,
};
use runstore_jsonl::JsonlStore;
use serde_json::{Value, json};

fn tenant(n: u32) -> Tenant {
    Tenant::new(format!("org-{n}"), format!("ws-{n}"), None).unwrap()
}

fn run(id: &str) -> RunId {
    RunId::new(id).unwrap()
}

fn event(tenant: &Tenant, run_id: &str, id: &str, seq: u64, at: u64) -> EventRecord {
    let mut record = EventRecord::new(tenant, run(run_id), EventId::new(id).unwrap(), "t", at)
        .with_payload(json!({ "id": id }));
    record.seq = seq;
    record
}

/// A store directory whose log holds exactly `records`, one line each.
async fn store_of(dir: &Path, records: &[EventRecord]) {
    drop(JsonlStore::open(dir).await.unwrap());
    let mut text = String::new();
    for record in records {
        text.push_str(&serde_json::to_string(record).unwrap());
        text.push('\n');
    }
    fs::write(dir.join("events.jsonl"), text).unwrap();
}

/// A payload 127 levels deep (the limit is 64; `serde_json` reads 128 in
/// all) stored by an older version: open indexes the line without building
/// the payload, and every read of the record is `Corrupt` naming the file,
/// the byte offset, the stream and the seq. Compaction reports the stream
/// and compacts the others (CONTRACT §25).
#[tokio::test(flavor = "multi_thread")]
async fn a_stored_record_too_deep_to_read_is_corrupt_where_read() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let a = tenant(1);
    let mut deep = event(&a, "deep", "d2", 2, 10);
    deep.payload = nested_arrays(127);
    store_of(
        &dir,
        &[
            event(&a, "deep", "d1", 1, 10),
            event(&a, "fine", "f1", 1, 10),
            deep,
            event(&a, "fine", "f2", 2, 10),
        ],
    )
    .await;
    let store = JsonlStore::open(&dir).await.unwrap();
    let (location, reason) = expect_corrupt(store.read(&a, &run("deep"), ReadQuery::all()).await);
    let offset = fs::read_to_string(dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .take(2)
        .map(|line| line.len() + 1)
        .sum::<usize>();
    assert!(
        location.ends_with(&format!("events.jsonl at byte {offset}")),
        "{location}"
    );
    assert!(
        reason.contains("org-1/ws-1:deep at seq 2") && reason.contains("recursion limit"),
        "{reason}"
    );
    // The window before it still reads.
    let first = store
        .read(&a, &run("deep"), ReadQuery::all().before(2))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);

    let report = store.compact(5, 100).await.unwrap();
    assert_eq!(report.removed, 2, "the fine stream was compacted");
    let failed: Vec<String> = report.failed.iter().map(|f| f.to_string()).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].starts_with("org-1/ws-1:deep: "), "{failed:?}");
    assert!(failed[0].contains("at seq 2"), "{failed:?}");
    let fine = store
        .read(&a, &run("fine"), ReadQuery::all())
        .await
        .unwrap();
    assert_eq!(fine.len(), 1);
    assert!(fine[0].is_compaction_marker());
    assert_eq!(
        store
            .read(&a, &run("deep"), ReadQuery::all().before(2))
            .await
            .unwrap(),
        first,
        "the failed stream is left as it was"
    );
}

/// Compaction writes its marker rather than copying it, so the marker passes
/// the write checks: a stream whose old records would give a marker beyond
/// the depth limit (an older version's event with a deep scope) is reported,
/// and its records stay as they are.
#[tokio::test(flavor = "multi_thread")]
async fn compaction_checks_the_marker_it_writes() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let a = tenant(1);
    let mut legacy = event(&a, "legacy", "l1", 1, 10);
    // The scope is level 2 of the record: this passes the depth limit (but
    // not `serde_json`'s), and a marker takes its scope from the first
    // pruned event.
    legacy
        .scope
        .extra
        .insert("trace".into(), nested_arrays(MAX_DEPTH + 5));
    store_of(
        &dir,
        &[
            legacy,
            event(&a, "legacy", "l2", 2, 10),
            event(&a, "fine", "f1", 1, 10),
        ],
    )
    .await;
    let store = JsonlStore::open(&dir).await.unwrap();
    let before = fs::read(dir.join("events.jsonl")).unwrap();
    let report = store.compact(5, 100).await.unwrap();
    assert_eq!(report.removed, 1, "the fine stream was compacted");
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    let failure = report.failed[0].to_string();
    assert!(failure.starts_with("org-1/ws-1:legacy: "), "{failure}");
    assert!(
        failure.contains("scope.trace nests deeper than 64"),
        "{failure}"
    );
    let legacy = store
        .read(&a, &run("legacy"), ReadQuery::all())
        .await
        .unwrap();
    assert_eq!(legacy.len(), 2, "left as it was");
    assert!(!legacy.iter().any(EventRecord::is_compaction_marker));
    drop(store);
    let after = fs::read(dir.join("events.jsonl")).unwrap();
    let legacy_lines = |log: &[u8]| -> Vec<Vec<u8>> {
        log.split(|byte| *byte == b'\n')
            .filter(|line| line.windows(8).any(|w| w == b"\"legacy\""))
            .map(<[u8]>::to_vec)
            .collect()
    };
    assert_eq!(legacy_lines(&after), legacy_lines(&before));
}

/// CONTRACT §12, §19: a snapshot log's place names its tenant and run; a
/// line whose record claims another tenant (moved, or written by a tool) is
/// `Corrupt` at open, never indexed under the tenant it claims.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_claiming_another_tenant_is_corrupt() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let (a, b) = (tenant(1), tenant(2));
    let store = JsonlStore::open(&dir).await.unwrap();
    let snapshot = SnapshotRecord::new(
        &a,
        run("r"),
        SnapshotId::new("s").unwrap(),
        1,
        1,
        RunStatus::Running,
    );
    store.put(&a, &snapshot).await.unwrap();
    drop(store);
    let file = dir
        .join("snapshots")
        .join("t-org-1.ws-1")
        .join("r-r")
        .join("snapshots.jsonl");
    // The log's one line, then the log's spare space (zeros).
    let bytes = fs::read(&file).unwrap();
    let newline = bytes.iter().position(|byte| *byte == b'\n').unwrap();
    let mut claimed: Value = serde_json::from_slice(&bytes[..newline]).unwrap();
    claimed["scope"]["tenant_context"]["org_id"] = json!(b.org_id());
    claimed["scope"]["tenant_context"]["workspace_id"] = json!(b.workspace_id());
    let mut line = serde_json::to_vec(&claimed).unwrap();
    line.push(b'\n');
    fs::write(&file, line).unwrap();
    let (location, reason) = expect_corrupt(JsonlStore::open(&dir).await);
    assert_eq!(location, file.display().to_string());
    assert!(reason.contains("org-2/ws-2"), "{reason}");
}

/// The index decides which stream a line belongs to; a line changed behind
/// the open handle to name another run is `Corrupt`, never returned as a
/// record of the stream it was read for.
#[tokio::test(flavor = "multi_thread")]
async fn a_line_changed_behind_the_handle_never_answers_for_another_stream() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let a = tenant(1);
    let store = JsonlStore::open(&dir).await.unwrap();
    store
        .append(&a, &event(&a, "run-a", "e1", 0, 10))
        .await
        .unwrap();
    let log = dir.join("events.jsonl");
    let changed = String::from_utf8(fs::read(&log).unwrap())
        .unwrap()
        .replace("\"run-a\"", "\"run-b\"");
    fs::write(&log, changed).unwrap();
    let (location, reason) = expect_corrupt(store.read(&a, &run("run-a"), ReadQuery::all()).await);
    assert!(location.ends_with("events.jsonl at byte 0"), "{location}");
    assert!(reason.contains("\"run-b\""), "{reason}");
}

/// CONTRACT §25: prune deletes stream by stream; a stream whose snapshot
/// log cannot be rewritten is reported with nothing deleted, and the other
/// streams are pruned.
#[tokio::test(flavor = "multi_thread")]
async fn prune_isolates_a_stream_whose_log_cannot_be_rewritten() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let a = tenant(1);
    let store = JsonlStore::open(&dir).await.unwrap();
    for r in ["a-first", "b-stuck", "c-last"] {
        for (n, at) in [("s1", 1), ("s2", 2), ("s3", 3)] {
            let snapshot = SnapshotRecord::new(
                &a,
                run(r),
                SnapshotId::new(n).unwrap(),
                at,
                at,
                RunStatus::Running,
            );
            store.put(&a, &snapshot).await.unwrap();
        }
    }
    // Behind the handle's back, the temp file b-stuck's log is rewritten
    // through becomes a directory: the new log cannot be written.
    let stuck = dir
        .join("snapshots")
        .join("t-org-1.ws-1")
        .join("r-b-stuck")
        .join("snapshots.jsonl.tmp");
    fs::create_dir(&stuck).unwrap();
    fs::write(stuck.join("keep"), b"x").unwrap();
    let report = store.prune(1, 1, 100).await.unwrap();
    let failed: Vec<String> = report.failed.iter().map(|f| f.to_string()).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].starts_with("org-1/ws-1:b-stuck: "), "{failed:?}");
    assert!(failed[0].contains("snapshots.jsonl"), "{failed:?}");
    assert_eq!(report.removed, 4, "two of each other stream");
    for r in ["a-first", "c-last"] {
        let left = store.list(&a, &run(r), None).await.unwrap();
        assert_eq!(left.len(), 1, "{r}");
    }
}
