//! The documented metrics are what a workload produces: with a Prometheus
//! recorder installed, the example's workload on JSONL (whose group commits
//! run on its writer thread) yields every metric name the table in
//! docs/operations.md lists, with its labels.

#[path = "../examples/prometheus.rs"]
#[allow(dead_code, reason = "the example's main is not run here")]
mod example;

use metrics_exporter_prometheus::PrometheusBuilder;

/// The metric names of docs/operations.md, as the Prometheus exporter
/// writes them (histograms as summaries: `_count` and `_sum` series).
const DOCUMENTED: [&str; 14] = [
    "runstore_calls_total",
    "runstore_call_seconds",
    "runstore_appended_events_total",
    "runstore_duplicate_events_total",
    "runstore_conflicts_total",
    "runstore_batch_events",
    "runstore_group_requests",
    "runstore_group_events",
    "runstore_commit_seconds",
    "runstore_compacted_events_total",
    "runstore_pruned_snapshots_total",
    "runstore_deleted_events_total",
    "runstore_deleted_snapshots_total",
    "runstore_maintenance_failed_streams_total",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_produces_every_documented_metric() {
    // The only test of this binary: the recorder is the process's own.
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("the first recorder of this test binary");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("jsonl:{}", dir.path().join("store").display());
    let store = runstore::open(&url).await.unwrap();
    example::workload(&store).await.unwrap();
    let scrape = handle.render();

    for name in DOCUMENTED {
        assert!(
            scrape.lines().any(|line| line.starts_with(name)),
            "{name} is missing from the scrape:\n{scrape}"
        );
    }
    let line = |prefix: &str| {
        scrape
            .lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in:\n{scrape}"))
            .to_owned()
    };
    // Nine events appended (two to the deleted run), one duplicate, one
    // conflict, all on jsonl.
    assert!(
        line("runstore_appended_events_total{").ends_with(" 9"),
        "{scrape}"
    );
    assert!(
        line("runstore_duplicate_events_total{").ends_with(" 1"),
        "{scrape}"
    );
    assert!(
        line("runstore_conflicts_total{").ends_with(" 1"),
        "{scrape}"
    );
    assert!(line("runstore_conflicts_total{").contains("backend=\"jsonl\""));
    assert!(
        scrape.contains("op=\"append_batch\",outcome=\"conflict\"")
            || scrape.contains("outcome=\"conflict\",op=\"append_batch\""),
        "{scrape}"
    );
    // The older snapshot went; the one at seq 4 is the compaction floor.
    assert!(
        line("runstore_pruned_snapshots_total{").ends_with(" 1"),
        "{scrape}"
    );
    assert!(
        line("runstore_compacted_events_total{").ends_with(" 3"),
        "{scrape}"
    );
    assert!(
        line("runstore_deleted_events_total{").ends_with(" 2"),
        "{scrape}"
    );
    assert!(
        line("runstore_deleted_snapshots_total{").ends_with(" 1"),
        "{scrape}"
    );
}
