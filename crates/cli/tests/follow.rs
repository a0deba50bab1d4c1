//! `read --follow` keeps printing records as they are appended.

mod common;

use std::time::Duration;

use common::{Cli, embedded_backends, store_url};
use serde_json::Value;

#[test]
fn follow_prints_new_records_until_killed() {
    // SQLite is the embedded backend several processes may share.
    let backends: Vec<&str> = embedded_backends()
        .into_iter()
        .filter(|b| *b == "sqlite")
        .collect();
    if backends.is_empty() {
        eprintln!("follow test needs the sqlite feature: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(store_url("sqlite", dir.path()), dir.path());
    for id in ["a", "b", "c"] {
        cli.ok(&["append", "--run", "r", "--event-id", id, "--type", "t"]);
    }
    let (mut follower, lines) = common::spawn_lines(&[
        "--store",
        &cli.store,
        "read",
        "--run",
        "r",
        "--tail",
        "--limit",
        "2",
        "--follow",
        "--poll-ms",
        "20",
    ]);
    let next_seq = || -> u64 {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the follower prints a record");
        let record: Value = serde_json::from_str(&line).unwrap();
        record["seq"].as_u64().unwrap()
    };
    // First the tail, then each record appended by another process.
    assert_eq!(next_seq(), 2);
    assert_eq!(next_seq(), 3);
    cli.ok(&["append", "--run", "r", "--event-id", "d", "--type", "t"]);
    assert_eq!(next_seq(), 4);
    cli.ok_with_stdin(
        &["append", "--run", "r", "--batch", "-"],
        "{\"event_id\":\"e\",\"event_type\":\"t\"}\n{\"event_id\":\"f\",\"event_type\":\"t\"}\n",
    );
    assert_eq!(next_seq(), 5);
    assert_eq!(next_seq(), 6);
    // Another run's events do not show.
    cli.ok(&["append", "--run", "other", "--event-id", "x", "--type", "t"]);
    cli.ok(&["append", "--run", "r", "--event-id", "g", "--type", "t"]);
    assert_eq!(next_seq(), 7);
    assert!(
        follower.try_wait().unwrap().is_none(),
        "the follower keeps running"
    );
    follower.kill().unwrap();
    follower.wait().unwrap();
}
