//! Exports runstore's metrics in the Prometheus text format.
//!
//! Installs `metrics-exporter-prometheus` as the program's recorder, runs a
//! small workload (appends, a duplicate, a conflict, a snapshot, compaction
//! and prune) on the store the first argument names (`memory:` when none),
//! and prints one scrape, as a Prometheus server would read it from an
//! HTTP endpoint the program serves.
//!
//! ```sh
//! cargo run -p runstore --example prometheus -- jsonl:/tmp/runstore-metrics
//! ```

use metrics_exporter_prometheus::PrometheusBuilder;
/// What the example's steps fail with.
type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

use runstore::{
    EventId, EventLog, EventLogExt, EventRecord, RunId, RunStatus, SnapshotId, SnapshotRecord,
    SnapshotStore, StorageExt, Tenant,
};

#[tokio::main]
async fn main() -> Result<()> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory:".to_owned());
    let store = runstore::open(&url).await?;
    workload(&store).await?;
    print!("{}", handle.render());
    Ok(())
}

/// A little of everything the metrics count.
pub async fn workload(store: &runstore::Store) -> Result<()> {
    let tenant = Tenant::new("acme", "prod", None)?;
    let run = RunId::new("metrics-run")?;
    let event = |id: &str, at: u64| -> Result<EventRecord> {
        Ok(EventRecord::new(
            &tenant,
            run.clone(),
            EventId::new(id)?,
            "step",
            at,
        ))
    };
    for n in 1..=5 {
        store.append(&tenant, &event(&format!("e{n}"), n)?).await?;
    }
    let batch = [event("b1", 6)?, event("b2", 7)?];
    store.append_batch(&tenant, &run, &batch, Some(5)).await?;
    // A duplicate, answered with its seq, and a conflict, refused.
    store.append(&tenant, &event("e1", 1)?).await?;
    let stale = store
        .append_batch(&tenant, &run, &[event("late", 8)?], Some(1))
        .await;
    assert!(stale.is_err(), "the conflict is refused");
    for (id, seq, at) in [("older", 2, 1), ("s", 4, 2)] {
        let snapshot = SnapshotRecord::new(
            &tenant,
            run.clone(),
            SnapshotId::new(id)?,
            seq,
            at,
            RunStatus::Running,
        );
        store.put(&tenant, &snapshot).await?;
    }
    store
        .read(&tenant, &run, runstore::ReadQuery::all())
        .await?;
    let compacted = store.compact(1, 1_000).await?;
    let pruned = store.prune(1, 1, 1_000).await?;
    assert!(
        compacted.is_clean() && pruned.is_clean(),
        "both passes are clean"
    );
    // A second run, deleted with its snapshot.
    let gone = RunId::new("deleted-run")?;
    for id in ["d1", "d2"] {
        let event = EventRecord::new(&tenant, gone.clone(), EventId::new(id)?, "step", 9);
        store.append(&tenant, &event).await?;
    }
    let snapshot = SnapshotRecord::new(
        &tenant,
        gone.clone(),
        SnapshotId::new("s")?,
        2,
        9,
        RunStatus::Running,
    );
    store.put(&tenant, &snapshot).await?;
    store.erase_run(&tenant, &gone).await?;
    Ok(())
}
