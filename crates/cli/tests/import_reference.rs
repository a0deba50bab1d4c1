//! `import-reference DIR`: the reference layout into any store.

#![cfg(feature = "jsonl")]

mod common;

use common::{Cli, embedded_backends, store_url};
use serde_json::json;

/// A directory as the reference store leaves it: one log for every tenant
/// and run (with a compaction marker), and snapshots per run, one legacy.
fn reference_dir(dir: &std::path::Path) -> std::path::PathBuf {
    let root = dir.join("reference");
    let local = json!({"org_id": "local", "workspace_id": "local", "source": "local_implicit"});
    let acme =
        json!({"org_id": "acme", "workspace_id": "prod", "actor_id": "u1", "source": "explicit"});
    let event = |tenant: &serde_json::Value, run: &str, id: &str, seq: u64| {
        json!({
            "schema_version": 1, "event_id": id, "run_id": run, "seq": seq,
            "event_type": "step", "occurred_at_ms": 1000 + seq,
            "scope": {"tenant_context": tenant}, "payload": {"seq": seq}
        })
    };
    let marker = json!({
        "schema_version": 1,
        "event_id": "stateful-compaction-reference-1",
        "run_id": "run-1", "seq": 2,
        "event_type": "stateful_runtime.event_log_compacted",
        "occurred_at_ms": 9000,
        "scope": {"tenant_context": local},
        "payload": {
            "compacted_through_seq": 2, "compacted_through_ms": 1002, "pruned_events": 2,
            "compacted_event_ids": [{"event_id": "e1", "seq": 1}, {"event_id": "e2", "seq": 2}],
            "source": "stateful_event_log_compaction"
        }
    });
    let lines = [
        marker,
        event(&acme, "run-1", "e1", 1),
        event(&local, "run-1", "e3", 3),
        event(&acme, "run-1", "e2", 2),
        event(&local, "run-1", "e4", 4),
        event(&local, "run-2", "x1", 1),
    ];
    std::fs::create_dir_all(root.join("stateful_snapshots/run-1")).unwrap();
    let log: String = lines.iter().map(|line| format!("{line}\n")).collect();
    std::fs::write(root.join("stateful_events.jsonl"), log).unwrap();
    let legacy = json!({
        "schema_version": 1, "snapshot_id": "snapshot-1", "run_id": "run-1", "seq": 3,
        "created_at_ms": 4200, "scope": {"tenant_context": local},
        "status": "running", "phase_id": "node-a", "checkpoint": {"step": "legacy"}
    });
    std::fs::write(
        root.join("stateful_snapshots/run-1/snapshot-1.json"),
        legacy.to_string(),
    )
    .unwrap();
    root
}

#[test]
fn reference_directories_import_into_every_embedded_backend() {
    for backend in embedded_backends() {
        let dir = tempfile::tempdir().unwrap();
        let root = reference_dir(dir.path());
        let root = root.to_str().unwrap();
        let cli = Cli::new(store_url(backend, dir.path()), dir.path());
        let report = cli.ok(&["import-reference", root]).json();
        assert_eq!(
            report,
            json!({"records_read": 6, "records_written": 6, "streams": 3, "snapshots": 1, "torn_tail_skipped": false}),
            "{backend}"
        );
        // Seqs and the marker as they were; compacted ids still deduplicate.
        let records = cli.ok(&["read", "--run", "run-1"]).json_lines();
        let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, vec![2, 3, 4], "{backend}");
        assert_eq!(
            records[0]["event_type"],
            "stateful_runtime.event_log_compacted"
        );
        assert_eq!(
            cli.ok(&["seq-of", "--run", "run-1", "--event-id", "e1"])
                .json(),
            json!({"seq": 1})
        );
        assert_eq!(
            cli.ok(&["next-seq", "--run", "run-1"]).json(),
            json!({"next_seq": 5})
        );
        let acme = cli.tenant("acme/prod");
        let acme_records = acme.ok(&["read", "--run", "run-1"]).json_lines();
        assert_eq!(acme_records.len(), 2, "{backend}");
        assert_eq!(acme_records[0]["scope"]["tenant_context"]["actor_id"], "u1");
        // The legacy snapshot is hydrated (CONTRACT §15).
        let snapshot = cli
            .ok(&["snapshot", "get", "--run", "run-1", "--id", "snapshot-1"])
            .json();
        assert_eq!(snapshot["phase"], "running_phase");
        assert_eq!(
            snapshot["phase_history"][0]["event_id"],
            "run-1:phase:running_phase:4200"
        );
        // Importing twice writes nothing new.
        let again = cli.ok(&["import-reference", root]).json();
        assert_eq!(again["records_written"], 0, "{backend}");
        assert_eq!(cli.ok(&["verify"]).json()["ok"], true, "{backend}");
    }
}

#[test]
fn a_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(store_url(embedded_backends()[0], dir.path()), dir.path());
    let err = cli.fails(&["import-reference", "/no/such/reference"]);
    assert!(
        err.contains("/no/such/reference is not a directory"),
        "{err}"
    );
}
