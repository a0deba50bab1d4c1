//! `salvage` out of a store damaged on disk, for each embedded backend: the
//! damaged store fails to open or read; salvage copies every readable
//! stream, compaction marker and snapshot (seqs unchanged) into a new store,
//! names the lost record, reports what a gap kept from being copied, and
//! exits 1.

mod common;

use std::{fs, path::Path};

use common::Cli;
use serde_json::{Value, json};

/// Fills the store: `acme/prod:run-a` with 6 events (seqs 1-3 compacted into
/// a marker at seq 3) and snapshot `snap-1`; `other/ws/eu:run-b` with 3
/// events and snapshot `snap-b`.
fn fill(store: &str, dir: &Path) {
    let cli = Cli::new(store, dir).tenant("acme/prod");
    let mut batch = String::new();
    for k in 0..6u64 {
        let line = json!({
            "event_id": format!("a-{k}"),
            "event_type": "step",
            "occurred_at_ms": 1_000 + k * 100,
            "payload": {"k": k},
        });
        batch.push_str(&format!("{line}\n"));
    }
    cli.ok_with_stdin(&["append", "--run", "run-a", "--batch", "-"], &batch);
    let snapshot = json!({
        "snapshot_id": "snap-1", "run_id": "run-a", "seq": 4, "created_at_ms": 3_000,
        "status": "running"
    });
    cli.ok_with_stdin(&["snapshot", "put", "--file", "-"], &snapshot.to_string());
    let other = cli.tenant("other/ws/eu");
    for k in 0..3u64 {
        other.ok(&[
            "append",
            "--run",
            "run-b",
            "--event-id",
            &format!("b-{k}"),
            "--type",
            "step",
            "--occurred-at-ms",
            "5000",
        ]);
    }
    let snapshot = json!({
        "snapshot_id": "snap-b", "run_id": "run-b", "seq": 2, "created_at_ms": 5_000,
        "status": "running"
    });
    other.ok_with_stdin(&["snapshot", "put", "--file", "-"], &snapshot.to_string());
    // Seqs 1-3 of run-a are older than 1250 and below the snapshot's seq 4.
    let pruned = cli.ok(&["compact", "--retention-ms", "1000", "--now-ms", "2250"]);
    assert_eq!(pruned.json(), json!({"pruned": 3, "failed": []}));
}

/// Breaks the JSON of the record of run-a seq 5 (event `a-4`) wherever its
/// bytes are in `file`: `"event_id":"a-4"` becomes `"event_id"#"a-4"`, the
/// same length. Returns the line of the first place, counted from 1.
fn damage(file: &Path) -> usize {
    let needle = br#""event_id":"a-4""#;
    let mut bytes = fs::read(file).unwrap();
    let places: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, window)| *window == needle)
        .map(|(at, _)| at)
        .collect();
    assert!(
        !places.is_empty(),
        "the record is not in {}",
        file.display()
    );
    for at in &places {
        bytes[at + 10] = b'#';
    }
    fs::write(file, &bytes).unwrap();
    1 + bytes[..places[0]]
        .iter()
        .filter(|byte| **byte == b'\n')
        .count()
}

fn seqs(cli: &Cli, run: &str) -> Vec<u64> {
    cli.ok(&["read", "--run", run])
        .json_lines()
        .iter()
        .map(|record| record["seq"].as_u64().unwrap())
        .collect()
}

fn snapshot_ids(cli: &Cli, run: &str) -> Vec<String> {
    cli.ok(&["snapshot", "list", "--run", run])
        .json_lines()
        .iter()
        .map(|snapshot| snapshot["snapshot_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Runs salvage of the damaged `from` into a new store of the same backend
/// and checks the report and the target; `record_loss` is the expected
/// first loss line.
fn salvage_and_check(from: &str, to: &str, dir: &Path, record_loss: &Value) {
    let run = Cli::new("memory:", dir).run(&["salvage", "--from", from, "--to", to]);
    assert_eq!(run.status, 1, "stdout {} stderr {}", run.stdout, run.stderr);
    common::assert_one_line_error(&run, &["salvage"]);
    assert!(
        run.stderr.contains("salvage could not copy 2 item(s)"),
        "{}",
        run.stderr
    );
    let lines = run.json_lines();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert_eq!(&lines[0], record_loss);
    assert_eq!(lines[1]["loss"], "not_copied");
    assert_eq!(lines[1]["place"], "acme/prod:run-a");
    assert_eq!(lines[1]["stream"], "acme/prod:run-a");
    assert_eq!(lines[1]["seqs"], "6");
    let reason = lines[1]["reason"].as_str().unwrap();
    assert!(reason.starts_with("seq 5 is lost"), "{reason}");
    assert_eq!(
        lines[2],
        json!({"from": from, "to": to, "streams": 2, "events": 5, "snapshots": 2, "lost": 2})
    );

    // The target: run-a up to the lost record (its marker included),
    // run-b whole, both snapshots under their own tenants.
    let target = Cli::new(to, dir).tenant("acme/prod");
    let run_a = target.ok(&["read", "--run", "run-a"]).json_lines();
    assert_eq!(
        run_a[0]["event_type"],
        "stateful_runtime.event_log_compacted"
    );
    assert_eq!(seqs(&target, "run-a"), [3, 4]);
    assert_eq!(
        target
            .ok(&["seq-of", "--run", "run-a", "--event-id", "a-0"])
            .json(),
        json!({"seq": 1})
    );
    assert_eq!(snapshot_ids(&target, "run-a"), ["snap-1"]);
    let other = target.tenant("other/ws/eu");
    assert_eq!(seqs(&other, "run-b"), [1, 2, 3]);
    assert_eq!(snapshot_ids(&other, "run-b"), ["snap-b"]);
    assert_eq!(
        target.ok(&["verify"]).json_lines().last().unwrap()["ok"],
        true
    );

    // A target that now holds streams is refused.
    let again = Cli::new("memory:", dir).fails(&["salvage", "--from", from, "--to", to]);
    assert!(again.contains("already holds 2 stream(s)"), "{again}");
}

#[cfg(feature = "jsonl")]
#[test]
fn a_jsonl_store_with_a_corrupt_line_in_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("damaged");
    let from = format!("jsonl:{}", store_dir.display());
    fill(&from, dir.path());
    let log = store_dir.join("events.jsonl");
    let line = damage(&log);
    let total = fs::read_to_string(&log).unwrap().lines().count();
    assert!(line > 1 && line < total, "line {line} of {total}");

    let failed = Cli::new(&from, dir.path())
        .tenant("acme/prod")
        .fails(&["read", "--run", "run-b"]);
    assert!(
        failed.contains(&format!("corrupt data at {}:{line}", log.display())),
        "{failed}"
    );

    let to = format!("jsonl:{}", dir.path().join("salvaged").display());
    let place = format!("{}:{line}", log.display());
    // The column counts from the start of the line, which states the
    // record's feed position first (`{"feed_position":3,`).
    let loss = json!({
        "loss": "record",
        "place": place,
        "reason": "expected `:` at line 1 column 49 (the line looks like seq 5 of acme/prod:run-a)",
    });
    salvage_and_check(&from, &to, dir.path(), &loss);
}

#[cfg(feature = "sqlite")]
#[test]
fn a_sqlite_store_with_a_damaged_row() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("damaged.sqlite");
    let from = format!("sqlite:{}", file.display());
    fill(&from, dir.path());
    // The damage goes into the main file, so every row must be there. The
    // last connection to close checkpoints the WAL into it and removes it;
    // an exiting CLI process does not always get that far, so a store is
    // opened and dropped here, and the test waits for the close.
    let wal = dir.path().join("damaged.sqlite-wal");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async { drop(runstore::open(&from).await.unwrap()) });
    for _ in 0..200 {
        if !wal.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(!wal.exists(), "the WAL was never checkpointed");
    damage(&file);

    let failed = Cli::new(&from, dir.path())
        .tenant("acme/prod")
        .fails(&["read", "--run", "run-a"]);
    assert!(failed.contains("corrupt data at"), "{failed}");
    assert!(failed.contains("acme/prod:run-a at seq 5"), "{failed}");

    let to = format!("sqlite:{}", dir.path().join("salvaged.sqlite").display());
    let loss = json!({
        "loss": "record",
        "place": format!("{}: table events, row acme/prod:run-a seq 5", file.display()),
        "stream": "acme/prod:run-a",
        "seqs": "5",
        "reason": "expected `:` at line 1 column 31",
    });
    salvage_and_check(&from, &to, dir.path(), &loss);
}

#[cfg(feature = "redb")]
#[test]
fn a_redb_store_with_a_damaged_record() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("damaged.redb");
    let from = format!("redb:{}", file.display());
    fill(&from, dir.path());
    damage(&file);

    let failed = Cli::new(&from, dir.path())
        .tenant("acme/prod")
        .fails(&["read", "--run", "run-a"]);
    assert!(failed.contains("corrupt data at"), "{failed}");
    assert!(failed.contains("seq 5"), "{failed}");

    let to = format!("redb:{}", dir.path().join("salvaged.redb").display());
    let loss = json!({
        "loss": "record",
        "place": format!("{}: table events, key acme/prod:run-a seq 5", file.display()),
        "stream": "acme/prod:run-a",
        "seqs": "5",
        "reason": "expected `:` at line 1 column 31",
    });
    salvage_and_check(&from, &to, dir.path(), &loss);
}

// An intact store: everything copied, exit 0; across backends too.
#[cfg(all(feature = "jsonl", feature = "sqlite"))]
#[test]
fn an_intact_store_is_copied_whole_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let from = format!("jsonl:{}", dir.path().join("intact").display());
    fill(&from, dir.path());
    let to = format!("sqlite:{}", dir.path().join("copy.sqlite").display());
    let run = Cli::new("memory:", dir.path()).ok(&["salvage", "--from", &from, "--to", &to]);
    assert_eq!(
        run.json(),
        json!({"from": from, "to": to, "streams": 2, "events": 7, "snapshots": 2, "lost": 0})
    );
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    let target = Cli::new(&to, dir.path()).tenant("acme/prod");
    assert_eq!(seqs(&target, "run-a"), [3, 4, 5, 6]);
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = Cli::new("memory:", dir.path()).run(&["salvage", "--from", "memory:"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    common::assert_one_line_error(&run, &["salvage"]);
    assert!(run.stderr.contains("--to"), "{}", run.stderr);
}
