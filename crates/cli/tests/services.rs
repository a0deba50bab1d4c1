//! The CLI on the service backends, S3 and PostgreSQL, against the servers
//! `scripts/test.sh` starts (`RUNSTORE_S3_ENDPOINT` with `RUNSTORE_S3_BUCKET`
//! and the `AWS_*` variables; `RUNSTORE_POSTGRES_URL`). Without a server a
//! test fails, unless `RUNSTORE_ALLOW_MISSING_SERVICES` is set, when it says
//! loudly that it skipped. Each test uses its own S3 key prefix and
//! PostgreSQL schema; the throwaway servers of the test script take them
//! away, an external server keeps them.

#![cfg(any(feature = "s3", feature = "postgres"))]

mod common;

use common::{Cli, dataset};
use runstore_conformance::support;
use serde_json::json;

/// A name no earlier run used: `[a-z0-9_]`, so it serves as an S3 prefix
/// and a PostgreSQL schema.
fn unique_name(dir: &tempfile::TempDir, label: &str) -> String {
    let random: String = dir
        .path()
        .file_name()
        .expect("a temp dir has a name")
        .to_string_lossy()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    format!("cli_{label}_{}_{random}", std::process::id())
}

#[cfg(feature = "s3")]
fn s3_url(dir: &tempfile::TempDir, label: &str) -> Option<String> {
    let [_, bucket] = support::service_urls(
        ["RUNSTORE_S3_ENDPOINT", "RUNSTORE_S3_BUCKET"],
        &format!("services::{label}"),
    )?;
    Some(format!("s3://{bucket}/{}", unique_name(dir, label)))
}

#[cfg(feature = "postgres")]
fn postgres_url(dir: &tempfile::TempDir, label: &str) -> Option<String> {
    let url = support::service_url("RUNSTORE_POSTGRES_URL", &format!("services::{label}"))?;
    let separator = if url.contains('?') { '&' } else { '?' };
    Some(format!(
        "{url}{separator}schema={}",
        unique_name(dir, label)
    ))
}

/// The everyday commands on one store.
fn everyday_commands(cli: &Cli) {
    let out = cli.ok(&[
        "append",
        "--run",
        "r",
        "--event-id",
        "a",
        "--type",
        "t",
        "--occurred-at-ms",
        "1",
    ]);
    assert_eq!(out.stdout, "{\"seq\":1,\"inserted\":true}\n");
    let out = cli.ok_with_stdin(
        &["append", "--run", "r", "--batch", "-", "--expect-last-seq", "1"],
        "{\"event_id\":\"b\",\"event_type\":\"t\",\"occurred_at_ms\":2}\n{\"event_id\":\"a\",\"event_type\":\"t\"}\n{\"event_id\":\"c\",\"event_type\":\"t\",\"occurred_at_ms\":9000}\n",
    );
    assert_eq!(
        out.stdout,
        "{\"event_id\":\"b\",\"seq\":2,\"inserted\":true}\n{\"event_id\":\"a\",\"seq\":1,\"inserted\":false}\n{\"event_id\":\"c\",\"seq\":3,\"inserted\":true}\n"
    );
    let err = cli.fails(&[
        "append",
        "--run",
        "r",
        "--event-id",
        "d",
        "--type",
        "t",
        "--expect-last-seq",
        "1",
    ]);
    assert!(
        err.contains("conflict: expected last seq 1, stream is at 3"),
        "{err}"
    );
    cli.ok_with_stdin(
        &["snapshot", "put", "--file", "-"],
        r#"{"snapshot_id":"s","run_id":"r","seq":3,"created_at_ms":5,"status":"running"}"#,
    );
    assert_eq!(
        cli.ok(&["compact", "--retention-ms", "10", "--now-ms", "100"])
            .json(),
        json!({"pruned": 2, "failed": []})
    );
    let records = cli.ok(&["read", "--run", "r"]).json_lines();
    assert_eq!(records.len(), 2);
    assert_eq!(
        records[0]["event_type"],
        "stateful_runtime.event_log_compacted"
    );
    assert_eq!(
        cli.ok(&["read", "--run", "r", "--tail", "--limit", "1"])
            .json()["event_id"],
        "c"
    );
    assert_eq!(
        cli.ok(&["next-seq", "--run", "r"]).json(),
        json!({"next_seq": 4})
    );
    assert_eq!(
        cli.ok(&["seq-of", "--run", "r", "--event-id", "a"]).json(),
        json!({"seq": 1})
    );
    assert_eq!(cli.ok(&["runs"]).json(), json!({"run_id": "r"}));
    assert_eq!(
        cli.ok(&["snapshot", "latest", "--run", "r"]).json()["snapshot_id"],
        "s"
    );
    assert_eq!(
        cli.run(&["snapshot", "get", "--run", "r", "--id", "nope"])
            .status,
        1
    );
    assert_eq!(cli.ok(&["verify"]).json()["ok"], true);
}

#[cfg(feature = "s3")]
#[test]
fn everyday_commands_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = s3_url(&dir, "everyday") else {
        return;
    };
    everyday_commands(&Cli::new(url, dir.path()));
}

#[cfg(feature = "postgres")]
#[test]
fn everyday_commands_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = postgres_url(&dir, "everyday") else {
        return;
    };
    everyday_commands(&Cli::new(url, dir.path()));
}

/// JSONL -> each service store available -> redb, every read preserved.
#[cfg(all(feature = "jsonl", feature = "redb"))]
#[test]
fn migrate_through_the_service_backends() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = vec![format!(
        "jsonl:{}?durability=relaxed",
        dir.path().join("jsonl").display()
    )];
    #[cfg(feature = "s3")]
    chain.push(match s3_url(&dir, "migrate") {
        Some(url) => url,
        None => return,
    });
    #[cfg(feature = "postgres")]
    chain.push(match postgres_url(&dir, "migrate") {
        Some(url) => url,
        None => return,
    });
    chain.push(format!(
        "redb:{}?durability=relaxed",
        dir.path().join("store.redb").display()
    ));

    let source = Cli::new(chain[0].as_str(), dir.path());
    dataset::fill(&source);
    let expected = dataset::dump(&source);
    for pair in chain.windows(2) {
        let cli = Cli::new("memory:", dir.path());
        let summary = cli
            .ok(&["migrate", "--from", &pair[0], "--to", &pair[1]])
            .json();
        assert_eq!(summary["verified"], true, "{summary}");
        assert_eq!(summary["records_written"], summary["records"], "{summary}");
        let target = Cli::new(pair[1].as_str(), dir.path());
        assert_eq!(
            dataset::dump(&target),
            expected,
            "{} -> {} changed a read",
            pair[0],
            pair[1]
        );
    }
}
