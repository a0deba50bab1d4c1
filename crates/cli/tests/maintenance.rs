//! `compact` and `snapshot prune` on a store with one damaged stream
//! (CONTRACT §25): every other stream is processed, the report names the bad
//! one, stderr says why in one line, and the command exits 1.

#![cfg(feature = "sqlite")]

mod common;

use std::{fs, path::Path};

use common::Cli;
use runstore_conformance::support::salvage::occurrences;
use serde_json::json;

/// Appends `run`'s events `prefix-1..=n`, all long ago.
fn append(cli: &Cli, run: &str, prefix: &str, range: std::ops::RangeInclusive<u32>) {
    for n in range {
        cli.ok(&[
            "append",
            "--run",
            run,
            "--event-id",
            &format!("{prefix}-{n}"),
            "--type",
            "t",
            "--occurred-at-ms",
            &n.to_string(),
        ]);
    }
}

/// Renames the field `compacted_event_ids` of the marker that remembers
/// `first_id`, in place: the marker still reads as a record, but compaction
/// can no longer merge it.
fn damage_marker(file: &Path, first_id: &str) {
    let needle = format!("\"compacted_event_ids\":[{{\"event_id\":\"{first_id}\"");
    let mut bytes = fs::read(file).unwrap();
    let places = occurrences(&bytes, &needle);
    assert!(
        !places.is_empty(),
        "the marker is not in {}",
        file.display()
    );
    for at in places {
        bytes[at + 19] = b'z';
    }
    fs::write(file, bytes).unwrap();
}

#[test]
fn one_damaged_stream_fails_alone_and_the_command_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.sqlite");
    let url = format!("sqlite:{}", file.display());
    let acme = Cli::new(&url, dir.path()).tenant("acme/prod");
    let local = Cli::new(&url, dir.path());
    append(&acme, "run-a", "a", 1..=2);
    append(&acme, "run-b", "b", 1..=2);
    append(&local, "run-c", "c", 1..=2);
    let first = local.ok(&["compact", "--retention-ms", "10", "--now-ms", "1000"]);
    assert_eq!(first.json(), json!({"pruned": 6, "failed": []}));

    // The damage goes into the main file: a store opened and dropped here
    // checkpoints the WAL into it (the last connection to close does).
    let wal = dir.path().join("store.sqlite-wal");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async { drop(runstore::open(&url).await.unwrap()) });
    for _ in 0..200 {
        if !wal.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(!wal.exists(), "the WAL was never checkpointed");
    damage_marker(&file, "b-1");

    append(&acme, "run-a", "a", 3..=4);
    append(&acme, "run-b", "b", 3..=4);
    append(&local, "run-c", "c", 3..=4);
    let args = ["compact", "--retention-ms", "10", "--now-ms", "2000"];
    let run = local.run(&args);
    assert_eq!(run.status, 1, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["pruned"], 4, "{report}");
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["tenant"], "acme/prod");
    assert_eq!(failed[0]["run_id"], "run-b");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert!(
        lines[0].starts_with("error: compaction failed for stream acme/prod:run-b: ")
            && lines[0].contains("run-b"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("compaction failed for 1 stream(s)"),
        "{}",
        lines[1]
    );
    // The good streams hold only their merged markers now.
    for (cli, run) in [(&acme, "run-a"), (&local, "run-c")] {
        let records = cli.ok(&["read", "--run", run]).json_lines();
        assert_eq!(records.len(), 1, "{run}");
        assert_eq!(records[0]["payload"]["pruned_events"], 4, "{run}");
    }
    // The bad stream is as it was: its marker and two live events.
    assert_eq!(acme.ok(&["read", "--run", "run-b"]).json_lines().len(), 3);
}
