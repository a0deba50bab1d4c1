//! Appends, reads, compacts and snapshots a run on a store, printing what
//! happens. The store is the first argument, a store URL (default: a JSONL
//! store in `./runstore-data`).
//!
//! ```text
//! cargo run -p runstore --example quickstart -- jsonl:./runstore-data
//! ```

use runstore::{
    EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, RunStatus, SnapshotId,
    SnapshotRecord, SnapshotStore, SnapshotStoreExt, Tenant,
};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "jsonl:./runstore-data".to_owned());
    let store = runstore::open(&url).await?;
    println!("opened {url}");

    let tenant = Tenant::new("acme", "prod", None)?;
    let run = RunId::new("quickstart-run")?;
    let start = store.next_seq(&tenant, &run).await?;
    println!("run {run} of tenant {tenant} continues at seq {start}");

    for (n, step) in ["started", "fetched", "summarised", "finished"]
        .iter()
        .enumerate()
    {
        let id = EventId::new(format!("{step}-{start}"))?;
        let at = 1_000 * (start + n as u64);
        let event = EventRecord::new(&tenant, run.clone(), id.clone(), "quickstart.step", at)
            .with_payload(json!({ "step": step }));
        let outcome = store.append(&tenant, &event).await?;
        println!(
            "append {id}: seq {} inserted {}",
            outcome.seq, outcome.inserted
        );
        let again = store.append(&tenant, &event).await?;
        println!("  retried:   seq {} inserted {}", again.seq, again.inserted);
    }

    let tail = store.read(&tenant, &run, ReadQuery::tail(3)).await?;
    println!("last 3 records:");
    for record in &tail {
        println!("  {} {} {}", record.seq, record.event_id, record.event_type);
    }

    let last = store.next_seq(&tenant, &run).await? - 1;
    let snapshot = SnapshotRecord::new(
        &tenant,
        run.clone(),
        SnapshotId::new(format!("at-{last}"))?,
        last - 1,
        1_000 * last,
        RunStatus::Running,
    )
    .with_checkpoint(json!({ "cursor": last - 1 }));
    store.put(&tenant, &snapshot).await?;
    let latest = store.latest(&tenant, &run).await?.expect("just stored");
    println!(
        "snapshot {} at seq {} (phase {})",
        latest.snapshot_id,
        latest.seq,
        latest.phase.as_str()
    );

    let now_ms = 1_000 * (last + 1);
    let pruned = store.compact(1_500, now_ms).await?.removed;
    println!("compacted events older than 1.5 s at now={now_ms}: {pruned} pruned");
    for record in store.read(&tenant, &run, ReadQuery::all()).await? {
        let kind = if record.is_compaction_marker() {
            "marker"
        } else {
            "event"
        };
        println!("  {} {kind} {}", record.seq, record.event_id);
    }
    println!(
        "next seq is still {}; a retried pruned event keeps its seq: {}",
        store.next_seq(&tenant, &run).await?,
        store
            .seq_of(&tenant, &run, &EventId::new(format!("started-{start}"))?)
            .await?
            .map_or("none".to_owned(), |seq| seq.to_string())
    );
    Ok(())
}
