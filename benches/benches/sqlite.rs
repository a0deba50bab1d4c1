//! SQLite: the standard workload next to a bare sqlx loop on the same disk
//! (one `INSERT` per autocommit transaction, WAL, `synchronous=FULL`) and
//! the raw `fdatasync` rate (issue 4's targets).

use std::sync::Arc;

use runstore_benches::{BareSqlite, Bench, Engine, OpenFn, Targets, run_standard};
use runstore_core::{Durability, Store};
use runstore_sqlite::{SqliteOptions, SqliteStore};

fn opener(durability: Durability) -> OpenFn {
    Box::new(move |path| {
        Box::pin(async move {
            let options = SqliteOptions::default().with_durability(durability);
            let store = SqliteStore::open_with(path, options).await?;
            Ok(Arc::new(store) as Arc<dyn Store>)
        })
    })
}

fn main() {
    runstore_benches::serve_open_child(SqliteStore::open);
    let bench = Bench::from_env("sqlite", 1_000_000, 1_000);
    let mut bare = bench
        .block_on(BareSqlite::open(&bench.path("bare.sqlite")))
        .expect("the bare sqlite database opens");
    run_standard(
        &bench,
        Engine {
            name: "sqlite",
            location: "store.sqlite",
            open: opener(Durability::Durable),
            open_relaxed: opener(Durability::Relaxed),
            extra_handles: 0,
            concurrency: 64,
            fdatasync: true,
            bare: Some((
                "bare sqlx insert loop",
                Box::new(|n| bench.block_on(bare.insert(n)).expect("bare sqlite insert")),
            )),
            open_baseline: None,
            compact: true,
            targets: Targets {
                single_vs_bare: Some(0.7),
                concurrent_vs_single: Some(5.0),
                batch_rate: Some(50_000.0),
                read_tail_ms: Some(0.5),
                ..Targets::default()
            },
            requests: None,
        },
    );
}
