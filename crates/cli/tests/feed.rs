//! `feed`: the tenant's records of every run, each with its position, and
//! resuming from a printed position (CONTRACT §29).

mod common;

use std::time::Duration;

use common::{Cli, embedded_backends, store_url};
use serde_json::Value;

/// `(position, run_id, event_id)` of each line.
fn entries(lines: &[Value]) -> Vec<(String, String, String)> {
    lines
        .iter()
        .map(|line| {
            (
                line["position"].as_str().expect("position").to_owned(),
                line["run_id"].as_str().expect("run_id").to_owned(),
                line["event_id"].as_str().expect("event_id").to_owned(),
            )
        })
        .collect()
}

#[test]
fn feed_prints_positions_and_resumes_after_one() {
    for backend in embedded_backends() {
        let dir = tempfile::tempdir().unwrap();
        let cli = Cli::new(store_url(backend, dir.path()), dir.path());
        for (run, id) in [("a", "a-1"), ("b", "b-1"), ("a", "a-2"), ("c", "c-1")] {
            cli.ok(&["append", "--run", run, "--event-id", id, "--type", "t"]);
        }
        cli.tenant("other/tenant").ok(&[
            "append",
            "--run",
            "a",
            "--event-id",
            "secret",
            "--type",
            "t",
        ]);

        let all = entries(&cli.ok(&["feed"]).json_lines());
        let ids: Vec<&str> = all.iter().map(|(_, _, id)| id.as_str()).collect();
        assert_eq!(ids, ["a-1", "b-1", "a-2", "c-1"], "{backend}");
        let first_two = entries(&cli.ok(&["feed", "--limit", "2"]).json_lines());
        assert_eq!(first_two, all[..2], "{backend}");
        let rest = entries(&cli.ok(&["feed", "--after", &all[1].0]).json_lines());
        assert_eq!(
            rest,
            all[2..],
            "{backend}: resuming after a printed position"
        );
        assert!(
            cli.ok(&["feed", "--after", &all[3].0]).stdout.is_empty(),
            "{backend}"
        );
        let table = cli.ok(&["--format", "table", "feed"]).stdout;
        assert!(table.starts_with("position"), "{backend}: {table}");

        let error = cli.fails(&["feed", "--after", "seven"]);
        assert!(error.contains("--after"), "{backend}: {error}");
        cli.fails(&["feed", "--limit", "2", "--follow"]);
    }
}

#[test]
fn feed_follow_prints_records_of_every_run_as_they_commit() {
    // SQLite is the embedded backend several processes may share.
    if !embedded_backends().contains(&"sqlite") {
        eprintln!("feed --follow test needs the sqlite feature: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(store_url("sqlite", dir.path()), dir.path());
    cli.ok(&[
        "append",
        "--run",
        "r",
        "--event-id",
        "before",
        "--type",
        "t",
    ]);
    let (mut follower, lines) =
        common::spawn_lines(&["--store", &cli.store, "feed", "--follow", "--poll-ms", "20"]);
    let next_id = || -> String {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the follower prints a record");
        let record: Value = serde_json::from_str(&line).unwrap();
        assert!(record["position"].is_string(), "{line}");
        record["event_id"].as_str().unwrap().to_owned()
    };
    assert_eq!(next_id(), "before");
    cli.ok(&["append", "--run", "r", "--event-id", "one", "--type", "t"]);
    assert_eq!(next_id(), "one");
    cli.ok(&[
        "append",
        "--run",
        "other",
        "--event-id",
        "two",
        "--type",
        "t",
    ]);
    assert_eq!(next_id(), "two", "every run of the tenant shows");
    cli.tenant("other/tenant").ok(&[
        "append",
        "--run",
        "r",
        "--event-id",
        "hidden",
        "--type",
        "t",
    ]);
    cli.ok(&["append", "--run", "r", "--event-id", "three", "--type", "t"]);
    assert_eq!(next_id(), "three", "another tenant's record does not show");
    assert!(
        follower.try_wait().unwrap().is_none(),
        "the follower keeps running"
    );
    follower.kill().unwrap();
    follower.wait().unwrap();
}
