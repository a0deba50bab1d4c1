//! `migrate` JSONL -> SQLite -> redb (and back to JSONL) preserves every
//! read exactly: seqs, markers, compacted ids, snapshots, every tenant.

#![cfg(all(feature = "jsonl", feature = "sqlite", feature = "redb"))]

mod common;

use common::Cli;
use serde_json::json;

const TENANTS: [&str; 3] = ["local/local", "acme/prod", "acme/prod/eu-1"];
const RUNS: [&str; 3] = ["run-a", "Run A/../ü 🦀", "run-c"];

/// Fills `cli`'s store with events, markers (merged twice) and snapshots.
fn fill(cli: &Cli) {
    for (t, tenant) in TENANTS.iter().enumerate() {
        let cli = cli.tenant(tenant);
        for (r, run) in RUNS.iter().enumerate() {
            let mut batch = String::new();
            for k in 0..20u64 {
                let at = 1_000 + k * 100;
                let line = json!({
                    "event_id": format!("{run}-e{k}"),
                    "event_type": if k % 3 == 0 { "step.started" } else { "step.done" },
                    "occurred_at_ms": at,
                    "payload": {"k": k, "f": 0.5 + k as f64, "text": "naïve ✓", "big": u64::MAX - k, "nested": [{"t": t, "r": r}]},
                    "phase_id": format!("node-{k}"),
                    "causation_id": format!("cause-{k}"),
                    "an_unknown_field": {"kept": true},
                });
                batch.push_str(&line.to_string());
                batch.push('\n');
            }
            cli.ok_with_stdin(&["append", "--run", run, "--batch", "-"], &batch);
            let snapshot = json!({
                "snapshot_id": format!("snap-{r}"), "run_id": run, "seq": 15,
                "created_at_ms": 5_000 + r as u64, "status": "running",
                "checkpoint": {"cursor": 15}, "metadata": {"who": tenant}
            });
            cli.ok_with_stdin(&["snapshot", "put", "--file", "-"], &snapshot.to_string());
        }
        // A legacy snapshot (no phase fields) on one run.
        let legacy = json!({
            "snapshot_id": "legacy", "run_id": RUNS[0], "seq": 3, "created_at_ms": 10,
            "status": "awaiting_approval", "phase_id": "node-a"
        });
        cli.ok_with_stdin(&["snapshot", "put", "--file", "-"], &legacy.to_string());
    }
    // Two compactions: the second merges the first marker (CONTRACT §9).
    assert_eq!(
        cli.ok(&["compact", "--retention-ms", "1000", "--now-ms", "2500"])
            .json()["pruned"],
        9 * 5
    );
    assert_eq!(
        cli.ok(&["compact", "--retention-ms", "1000", "--now-ms", "2900"])
            .json()["pruned"],
        9 * 4
    );
}

/// Every read a user can make, as the CLI prints it.
fn dump(cli: &Cli) -> String {
    let mut out = String::new();
    for tenant in TENANTS {
        let cli = cli.tenant(tenant);
        out.push_str(&cli.ok(&["runs"]).stdout);
        for run in RUNS {
            for args in [
                &["read", "--run", run][..],
                &["read", "--run", run, "--after", "3", "--limit", "4"],
                &["read", "--run", run, "--tail", "--limit", "3"],
                &["next-seq", "--run", run],
                &["seq-of", "--run", run, "--event-id", &format!("{run}-e2")],
                &["seq-of", "--run", run, "--event-id", &format!("{run}-e19")],
                &["snapshot", "list", "--run", run],
                &["snapshot", "latest", "--run", run],
            ] {
                out.push_str(&cli.ok(args).stdout);
            }
        }
        out.push_str(
            &cli.ok(&["snapshot", "get", "--run", RUNS[0], "--id", "legacy"])
                .stdout,
        );
    }
    out
}

#[test]
fn jsonl_to_sqlite_to_redb_preserves_every_read() {
    let dir = tempfile::tempdir().unwrap();
    // Relaxed durability: this test is about what is stored, not fsync.
    let path = |name: &str| format!("{}?durability=relaxed", dir.path().join(name).display());
    let jsonl = format!("jsonl:{}", path("jsonl"));
    let sqlite = format!("sqlite:{}", path("store.sqlite"));
    let redb = format!("redb:{}", path("store.redb"));
    let back = format!("jsonl:{}", path("jsonl-again"));
    let source = Cli::new(&jsonl, dir.path());
    fill(&source);
    let expected = dump(&source);
    assert!(expected.contains("stateful_runtime.event_log_compacted"));
    assert!(expected.contains("an_unknown_field"));

    let steps = [(&jsonl, &sqlite), (&sqlite, &redb), (&redb, &back)];
    for (from, to) in steps {
        let cli = Cli::new("memory:", dir.path());
        let summary = cli.ok(&["migrate", "--from", from, "--to", to]).json();
        assert_eq!(summary["streams"], 9, "{summary}");
        // 20 events per stream, 9 pruned twice over: 11 live + 1 marker.
        assert_eq!(summary["records"], 9 * 12, "{summary}");
        assert_eq!(summary["records_written"], 9 * 12, "{summary}");
        assert_eq!(summary["snapshot_streams"], 9, "{summary}");
        assert_eq!(summary["snapshots"], 12, "{summary}");
        assert_eq!(summary["verified"], true);
        let target = Cli::new(to.as_str(), dir.path());
        assert_eq!(dump(&target), expected, "{from} -> {to} changed a read");
        assert_eq!(target.ok(&["verify"]).json()["ok"], true);

        // Running it twice is harmless: nothing new is written.
        let again = cli.ok(&["migrate", "--from", from, "--to", to]).json();
        assert_eq!(again["records_written"], 0, "{again}");
        assert_eq!(again["verified"], true);
    }

    // The migrated store carries on as the source would: dedupe of a
    // compacted id, and the next seq.
    for url in [&jsonl, &redb] {
        let cli = Cli::new(url.as_str(), dir.path()).tenant("acme/prod");
        let dup = cli.ok(&[
            "append",
            "--run",
            RUNS[1],
            "--event-id",
            &format!("{}-e0", RUNS[1]),
            "--type",
            "t",
        ]);
        assert_eq!(dup.json(), json!({"seq": 1, "inserted": false}));
        let new = cli.ok(&[
            "append",
            "--run",
            RUNS[1],
            "--event-id",
            "after-migration",
            "--type",
            "t",
        ]);
        assert_eq!(new.json(), json!({"seq": 21, "inserted": true}));
    }
}

#[test]
fn migrate_refuses_a_diverged_target() {
    let dir = tempfile::tempdir().unwrap();
    let source = Cli::new(
        format!("jsonl:{}", dir.path().join("a").display()),
        dir.path(),
    );
    let target = Cli::new(
        format!("sqlite:{}", dir.path().join("b.sqlite").display()),
        dir.path(),
    );
    source.ok(&["append", "--run", "r", "--event-id", "one", "--type", "t"]);
    target.ok(&["append", "--run", "r", "--event-id", "other", "--type", "t"]);
    let err = Cli::new("memory:", dir.path()).fails(&[
        "migrate",
        "--from",
        &source.store,
        "--to",
        &target.store,
    ]);
    assert!(err.contains("differs"), "{err}");
    // The target's own event is untouched.
    assert!(
        target
            .ok(&["read", "--run", "r"])
            .stdout
            .contains("\"other\"")
    );
}
