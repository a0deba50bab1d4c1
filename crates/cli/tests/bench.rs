//! `bench`: the standard workload on several backends in one run.

mod common;

use common::{Cli, embedded_backends};

#[test]
fn bench_reports_every_operation_per_backend() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new("memory:", dir.path());
    let mut backends = embedded_backends();
    backends.push("memory");
    let list = backends.join(",");
    let run = cli.ok(&[
        "bench",
        "--backends",
        &list,
        "--events",
        "200",
        "--runs",
        "4",
        "--json",
        "--dir",
        dir.path().to_str().unwrap(),
        "--sync-baseline-ms",
        "50",
    ]);
    let reports = run.json_lines();
    assert_eq!(reports.len(), backends.len());
    for (report, backend) in reports.iter().zip(&backends) {
        assert_eq!(report["backend"], *backend);
        assert_eq!(report["report"]["config"]["events"], 200);
        assert_eq!(report["report"]["config"]["runs"], 4);
        let operations: Vec<&str> = report["report"]["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["operation"].as_str().unwrap())
            .collect();
        assert_eq!(
            operations,
            [
                "single_append",
                "concurrent_append",
                "batch_append",
                "preload",
                "read_tail",
                "read_feed",
                "follow_feed",
                "compact",
                "append_during_compact",
                "prune",
                "append_during_prune"
            ],
            "{backend}"
        );
        for result in report["report"]["results"].as_array().unwrap() {
            assert!(
                result["events_per_sec"].as_f64().unwrap() > 0.0,
                "{backend}: {result}"
            );
        }
        // The disk baseline is measured beside each store on disk.
        assert_eq!(
            report["raw_fdatasync"].is_null(),
            *backend == "memory",
            "{backend}"
        );
    }
    // The temporary stores are removed afterwards.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bench_prints_a_side_by_side_table() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new("memory:", dir.path());
    let run = cli.ok(&["bench", "--backends", "memory", "--events", "100"]);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with("runstore bench: 100 events"),
        "{}",
        run.stdout
    );
    assert!(
        lines[1].starts_with("operation") && lines[1].ends_with("memory"),
        "{}",
        run.stdout
    );
    for operation in [
        "single_append",
        "concurrent_append",
        "batch_append",
        "preload",
        "read_tail",
        "compact",
    ] {
        assert!(
            lines.iter().any(|line| line.starts_with(operation)),
            "{operation}: {}",
            run.stdout
        );
    }
}

#[test]
fn bench_refuses_unknown_backends() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new("memory:", dir.path());
    let err = cli.fails(&["bench", "--backends", "cassandra"]);
    assert!(err.contains("cassandra"), "{err}");
    let err = cli.fails(&["bench", "--backends", "s3"]);
    assert!(err.contains("s3://BUCKET/PREFIX"), "{err}");
}
