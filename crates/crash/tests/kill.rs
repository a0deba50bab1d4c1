//! The kill harness's short pass, run with the workspace's tests: about 25
//! SIGKILLed writer processes per backend and durability (see
//! `docs/reliability.md`; `scripts/crash.sh` runs the full set, with server
//! faults). Each case runs `runstore-crash kills`, which fails when an
//! acknowledged write is missing, a stream has a gap or a repeated id, a
//! retry answers another seq, or `runstore verify` complains.
//!
//! `runstore verify` runs from the `runstore` binary beside
//! `runstore-crash`: `cargo test --workspace --all-features` builds it with
//! every backend. `RUNSTORE_CRASH_KILLS` sets the kills per case (default
//! 25). S3 and PostgreSQL read the same variables as the conformance suite
//! (`scripts/test.sh` starts both servers); without them a case fails,
//! unless `RUNSTORE_ALLOW_MISSING_SERVICES` is set, when it says SKIPPED.

use std::{path::Path, process::Command};

const DEFAULT_KILLS: u32 = 25;

fn kills() -> u32 {
    std::env::var("RUNSTORE_CRASH_KILLS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(DEFAULT_KILLS)
}

/// Runs the kill loop on `url` with `writers` processes at a time, each
/// killed 20 to `max_ms` ms after its start.
fn run(url: &str, writers: u32, max_ms: u64, dir: &Path, seed: u64) {
    let output = Command::new(env!("CARGO_BIN_EXE_runstore-crash"))
        .arg("kills")
        .args(["--store", url])
        .arg("--dir")
        .arg(dir.join("acks"))
        .args(["--writers", &writers.to_string()])
        .args(["--kills", &kills().to_string()])
        .args(["--max-ms", &max_ms.to_string()])
        .args(["--seed", &seed.to_string()])
        .output()
        .expect("run runstore-crash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{url}: {}", stdout.trim());
    assert!(
        output.status.success(),
        "kill harness failed on {url}:\n{stdout}\n{}",
        stderr
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn file_case(scheme: &str, file: &str, query: &str, writers: u32, seed: u64) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = format!("{scheme}:{}{query}", dir.path().join(file).display());
    run(&url, writers, 400, dir.path(), seed);
}

/// A service URL from `var`, or `None` after a loud SKIPPED when missing
/// services are allowed; panics otherwise.
fn service(var: &str, case: &str) -> Option<String> {
    runstore_conformance::support::service_url(var, &format!("kill::{case}"))
}

fn unique(case: &str) -> String {
    format!("crash_{case}_{}", std::process::id())
}

#[test]
fn jsonl_durable() {
    file_case("jsonl", "store", "", 1, 11);
}

#[test]
fn jsonl_relaxed() {
    file_case("jsonl", "store", "?durability=relaxed", 1, 12);
}

#[test]
fn sqlite_durable() {
    file_case("sqlite", "store.db", "", 2, 21);
}

#[test]
fn sqlite_relaxed() {
    file_case("sqlite", "store.db", "?durability=relaxed", 2, 22);
}

#[test]
fn redb_durable() {
    file_case("redb", "store.redb", "", 1, 31);
}

#[test]
fn redb_relaxed() {
    file_case("redb", "store.redb", "?durability=relaxed", 1, 32);
}

#[test]
fn s3_three_writers() {
    let Some([_, bucket]) = runstore_conformance::support::service_urls(
        ["RUNSTORE_S3_ENDPOINT", "RUNSTORE_S3_BUCKET"],
        "kill::s3_three_writers",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = format!("s3://{bucket}/{}", unique("s3"));
    // A request to a server takes milliseconds: writers live up to 1.2 s.
    run(&url, 3, 1_200, dir.path(), 41);
}

fn postgres_case(case: &str, relaxed: bool, seed: u64) {
    let Some(base) = service("RUNSTORE_POSTGRES_URL", case) else {
        return;
    };
    let separator = if base.contains('?') { '&' } else { '?' };
    let mut url = format!("{base}{separator}schema={}", unique(case));
    if relaxed {
        url.push_str("&durability=relaxed");
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    run(&url, 3, 1_200, dir.path(), seed);
}

#[test]
fn postgres_three_writers() {
    postgres_case("postgres", false, 51);
}

#[test]
fn postgres_relaxed_three_writers() {
    postgres_case("postgres_relaxed", true, 52);
}
