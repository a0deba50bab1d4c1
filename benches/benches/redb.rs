//! redb: the standard workload next to a bare redb loop of one insert per
//! durable commit on the same disk, and the raw `fdatasync` rate (issue 5's
//! targets).

use std::sync::Arc;

use runstore_benches::{BareRedb, Bench, Engine, OpenFn, Targets, run_standard};
use runstore_core::{Durability, Store};
use runstore_redb::{RedbOptions, RedbStore};

fn opener(durability: Durability) -> OpenFn {
    Box::new(move |path| {
        Box::pin(async move {
            let options = RedbOptions::default().with_durability(durability);
            let store = RedbStore::open_with(path, options).await?;
            Ok(Arc::new(store) as Arc<dyn Store>)
        })
    })
}

fn main() {
    runstore_benches::serve_open_child(RedbStore::open);
    let bench = Bench::from_env("redb", 1_000_000, 1_000);
    let mut bare = BareRedb::open(&bench.path("bare.redb")).expect("the bare redb file opens");
    run_standard(
        &bench,
        Engine {
            name: "redb",
            location: "store.redb",
            open: opener(Durability::Durable),
            open_relaxed: opener(Durability::Relaxed),
            extra_handles: 0,
            concurrency: 64,
            fdatasync: true,
            bare: Some((
                "bare redb durable commit loop",
                Box::new(|n| bare.insert(n).expect("bare redb insert")),
            )),
            open_baseline: None,
            compact: true,
            targets: Targets {
                single_vs_bare: Some(0.8),
                concurrent_vs_single: Some(5.0),
                batch_rate: Some(50_000.0),
                read_tail_ms: Some(0.3),
                ..Targets::default()
            },
            requests: None,
        },
    );
}
