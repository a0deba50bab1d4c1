//! Importing a directory in the reference layout keeps every seq, marker
//! and snapshot, hydrating legacy snapshots (CONTRACT §9, §15).

use std::fs;

use runstore_core::{
    EventId, EventLog, EventRecord, ReadQuery, RunId, RunStatus, SnapshotId, SnapshotRecord,
    SnapshotStore, Tenant, WorkflowPhase, raw::compaction::merge_marker,
};
use runstore_jsonl::{JsonlStore, import_reference};
use serde_json::json;

fn event(tenant: &Tenant, run: &str, id: &str, seq: u64) -> EventRecord {
    let mut record = EventRecord::new(
        tenant,
        RunId::new(run).unwrap(),
        EventId::new(id).unwrap(),
        "step",
        seq * 100,
    )
    .with_payload(json!({"seq": seq}));
    record.seq = seq;
    record
}

#[tokio::test]
async fn a_reference_directory_imports_with_seqs_markers_and_snapshots() {
    let temp = tempfile::tempdir().unwrap();
    let source = temp.path().join("runtime");
    fs::create_dir_all(source.join("stateful_snapshots/run-a")).unwrap();

    let acme = Tenant::new("acme", "prod", None).unwrap();
    let other = Tenant::new("other", "prod", None).unwrap();
    let run_a = RunId::new("run-a").unwrap();
    // run-a of acme was compacted through seq 2 in the reference.
    let pruned = [
        event(&acme, "run-a", "a1", 1),
        event(&acme, "run-a", "a2", 2),
    ];
    let marker = merge_marker(&acme, &run_a, None, pruned.iter(), 5_000, |_| Ok(false)).unwrap();
    let mut lines = vec![
        serde_json::to_string(&marker).unwrap(),
        serde_json::to_string(&event(&other, "run-a", "same-id", 1)).unwrap(),
        serde_json::to_string(&event(&acme, "run-a", "a4", 4)).unwrap(),
        serde_json::to_string(&event(&acme, "run-a", "a3", 3)).unwrap(),
        serde_json::to_string(&event(&acme, "run-b", "same-id", 1)).unwrap(),
    ];
    // A torn tail: the reference crashed mid-write.
    lines.push(r#"{"schema_version":1,"event_id":"a5""#.to_owned());
    fs::write(source.join("stateful_events.jsonl"), lines.join("\n")).unwrap();

    let legacy = json!({
        "schema_version": 1, "snapshot_id": "snap-1", "run_id": "run-a", "seq": 3,
        "created_at_ms": 4200,
        "scope": {"tenant_context": {"org_id": "acme", "workspace_id": "prod", "source": "explicit"}},
        "status": "running", "phase_id": "node-a", "checkpoint": {"step": 3}
    });
    fs::write(
        source.join("stateful_snapshots/run-a/snap-1.json"),
        serde_json::to_vec_pretty(&legacy).unwrap(),
    )
    .unwrap();
    let modern = SnapshotRecord::new(
        &other,
        run_a.clone(),
        SnapshotId::new("snap-2").unwrap(),
        1,
        4300,
        RunStatus::Completed,
    );
    fs::write(
        source.join("stateful_snapshots/run-a/snap-2.json"),
        serde_json::to_vec_pretty(&modern).unwrap(),
    )
    .unwrap();

    let store = JsonlStore::open(temp.path().join("store")).await.unwrap();
    let report = import_reference(&source, &store).await.unwrap();
    assert_eq!(report.records_read, 5);
    assert_eq!(report.records_written, 5);
    assert_eq!(report.streams, 3);
    assert_eq!(report.snapshots, 2);
    assert!(report.torn_tail_skipped);

    let records = store.read(&acme, &run_a, ReadQuery::all()).await.unwrap();
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(records[0], marker, "the marker is kept byte for byte");
    assert_eq!(store.next_seq(&acme, &run_a).await.unwrap(), 5);
    let compacted = store
        .seq_of(&acme, &run_a, &EventId::new("a1").unwrap())
        .await;
    assert_eq!(compacted.unwrap(), Some(1));
    let theirs = store.read(&other, &run_a, ReadQuery::all()).await.unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].event_id, "same-id");

    let snapshot = store
        .get(&acme, &run_a, &SnapshotId::new("snap-1").unwrap())
        .await
        .unwrap()
        .expect("legacy snapshot imported under its tenant");
    assert_eq!(snapshot.phase, WorkflowPhase::RunningPhase);
    assert_eq!(snapshot.phase_history.len(), 1);
    assert_eq!(snapshot.checkpoint, Some(json!({"step": 3})));
    assert!(
        store
            .get(&acme, &run_a, &SnapshotId::new("snap-2").unwrap())
            .await
            .unwrap()
            .is_none(),
        "snap-2 belongs to the other tenant"
    );
    assert_eq!(store.list(&other, &run_a, None).await.unwrap().len(), 1);

    let again = import_reference(&source, &store).await.unwrap();
    assert_eq!(again.records_written, 0, "a second import writes nothing");
}

#[tokio::test]
async fn a_bad_line_in_the_middle_is_corrupt() {
    let temp = tempfile::tempdir().unwrap();
    let source = temp.path().join("runtime");
    fs::create_dir_all(&source).unwrap();
    let tenant = Tenant::local();
    let good = serde_json::to_string(&event(&tenant, "r", "e", 1)).unwrap();
    fs::write(
        source.join("stateful_events.jsonl"),
        format!("{good}\nnot json\n{good}\n"),
    )
    .unwrap();
    let store = JsonlStore::open(temp.path().join("store")).await.unwrap();
    match import_reference(&source, &store).await {
        Err(runstore_core::Error::Corrupt { location, .. }) => {
            assert!(location.ends_with("stateful_events.jsonl:2"), "{location}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Writes a legacy snapshot of run-a, `snap-1.json`, into `run_dir`.
fn write_legacy_snapshot(run_dir: &std::path::Path) {
    fs::create_dir_all(run_dir).unwrap();
    let legacy = json!({
        "schema_version": 1, "snapshot_id": "snap-1", "run_id": "run-a", "seq": 0,
        "created_at_ms": 4200,
        "scope": {"tenant_context": {"org_id": "acme", "workspace_id": "prod", "source": "explicit"}},
        "status": "running", "phase_id": "node-a"
    });
    fs::write(
        run_dir.join("snap-1.json"),
        serde_json::to_vec(&legacy).unwrap(),
    )
    .unwrap();
}

#[tokio::test]
async fn a_directory_without_an_event_log_imports_its_snapshots() {
    let temp = tempfile::tempdir().unwrap();
    let source = temp.path().join("runtime");
    write_legacy_snapshot(&source.join("stateful_snapshots/run-a"));
    let store = JsonlStore::open(temp.path().join("store")).await.unwrap();
    let report = import_reference(&source, &store).await.unwrap();
    assert_eq!(
        (report.streams, report.records_written, report.snapshots),
        (0, 0, 1)
    );
}

#[tokio::test]
async fn an_event_log_that_cannot_be_read_fails_the_import() {
    let temp = tempfile::tempdir().unwrap();
    let source = temp.path().join("runtime");
    // A directory where the log should be: reading it fails, and only a
    // missing log counts as an empty one.
    fs::create_dir_all(source.join("stateful_events.jsonl")).unwrap();
    let store = JsonlStore::open(temp.path().join("store")).await.unwrap();
    match import_reference(&source, &store).await {
        Err(runstore_core::Error::Io { context, .. }) => {
            assert!(context.contains("stateful_events.jsonl"), "{context}");
        }
        other => panic!("expected an i/o error naming the log, got {other:?}"),
    }
}

/// Imports `lines`, joined by newlines, as a reference log.
async fn import_lines(lines: &[String], trailing_newline: bool) -> runstore_core::Result<usize> {
    let temp = tempfile::tempdir().unwrap();
    let source = temp.path().join("runtime");
    fs::create_dir_all(&source).unwrap();
    let mut text = lines.join("\n");
    if trailing_newline {
        text.push('\n');
    }
    fs::write(source.join("stateful_events.jsonl"), text).unwrap();
    let store = JsonlStore::open(temp.path().join("store")).await.unwrap();
    let report = import_reference(&source, &store).await?;
    Ok(report.records_written)
}

#[tokio::test]
async fn only_the_last_line_of_an_unfinished_log_may_be_torn() {
    let tenant = Tenant::local();
    let good = |seq| serde_json::to_string(&event(&tenant, "r", &format!("e{seq}"), seq)).unwrap();
    let torn = |seq: u64| {
        let line = good(seq);
        line[..line.len() / 2].to_owned()
    };
    // A torn line in the middle is damage, whether or not the file ends
    // with a newline.
    for trailing_newline in [true, false] {
        match import_lines(&[good(1), torn(2), good(3)], trailing_newline).await {
            Err(runstore_core::Error::Corrupt { location, .. }) => {
                assert!(location.ends_with("stateful_events.jsonl:2"), "{location}");
            }
            other => panic!("expected Corrupt at line 2, got {other:?}"),
        }
    }
    // A last line that is not a prefix of JSON is damage too.
    match import_lines(&[good(1), "not json".to_owned()], false).await {
        Err(runstore_core::Error::Corrupt { location, .. }) => {
            assert!(location.ends_with("stateful_events.jsonl:2"), "{location}");
        }
        other => panic!("expected Corrupt at line 2, got {other:?}"),
    }
    assert_eq!(import_lines(&[good(1), torn(2)], false).await.unwrap(), 1);
}

#[tokio::test]
async fn a_repeated_line_imports_once_and_two_events_at_one_seq_do_not_import() {
    let tenant = Tenant::local();
    let line = |id: &str, seq| serde_json::to_string(&event(&tenant, "r", id, seq)).unwrap();
    let written = import_lines(&[line("e1", 1), line("e2", 2), line("e1", 1)], true)
        .await
        .unwrap();
    assert_eq!(written, 2);
    match import_lines(&[line("e1", 1), line("other", 1)], true).await {
        Err(runstore_core::Error::InvalidInput { .. }) => {}
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[tokio::test]
async fn snapshots_are_read_from_json_files_in_run_directories_only() {
    let temp = tempfile::tempdir().unwrap();
    let source = temp.path().join("runtime");
    let run_dir = source.join("stateful_snapshots/run-a");
    write_legacy_snapshot(&run_dir);
    // Neither a file beside the run directories nor a file of another kind
    // is a snapshot.
    fs::write(
        source.join("stateful_snapshots/notes.json"),
        b"not a snapshot",
    )
    .unwrap();
    fs::write(run_dir.join("snap-1.json.bak"), b"not a snapshot").unwrap();
    let store = JsonlStore::open(temp.path().join("store")).await.unwrap();
    let report = import_reference(&source, &store).await.unwrap();
    assert_eq!(report.snapshots, 1);

    // A snapshot directory that cannot be listed fails the import.
    let other = temp.path().join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("stateful_snapshots"), b"a file").unwrap();
    match import_reference(&other, &store).await {
        Err(runstore_core::Error::Io { context, .. }) => {
            assert!(context.contains("stateful_snapshots"), "{context}");
        }
        other => panic!("expected an i/o error naming the directory, got {other:?}"),
    }
}
