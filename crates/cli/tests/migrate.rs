//! `migrate` JSONL -> SQLite -> redb (and back to JSONL) preserves every
//! read exactly: seqs, markers, compacted ids, snapshots, every tenant.

#![cfg(all(feature = "jsonl", feature = "sqlite", feature = "redb"))]

mod common;

use common::{
    Cli,
    dataset::{RUNS, dump, fill},
};
use serde_json::json;

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
