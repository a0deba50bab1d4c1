//! JSONL: the standard workload next to the raw `fdatasync` rate of the same
//! disk, and the open (index rebuild) next to a plain `serde_json` parse of
//! the same file (issue 3's targets).

use std::sync::Arc;

use runstore_benches::{Bench, Engine, OpenFn, Targets, run_standard, serde_parse_jsonl};
use runstore_core::{Durability, Store};
use runstore_jsonl::{JsonlOptions, JsonlStore};

fn opener(durability: Durability) -> OpenFn {
    Box::new(move |path| {
        Box::pin(async move {
            let options = JsonlOptions::default().with_durability(durability);
            let store = JsonlStore::open_with(path, options).await?;
            Ok(Arc::new(store) as Arc<dyn Store>)
        })
    })
}

fn main() {
    runstore_benches::serve_open_child(JsonlStore::open);
    let bench = Bench::from_env("jsonl", 1_000_000, 1_000);
    run_standard(
        &bench,
        Engine {
            name: "jsonl",
            location: "store",
            open: opener(Durability::Durable),
            open_relaxed: opener(Durability::Relaxed),
            extra_handles: 0,
            concurrency: 64,
            fdatasync: true,
            bare: None,
            open_baseline: Some(serde_parse_jsonl),
            compact: true,
            targets: Targets {
                single_vs_fdatasync: Some(0.8),
                concurrent_vs_single: Some(10.0),
                batch_rate: Some(100_000.0),
                read_tail_ms: Some(0.5),
                open_vs_parse: Some(0.5),
                bytes_per_event: Some(150.0),
                ..Targets::default()
            },
            requests: None,
        },
    );
}
