//! PostgreSQL: the standard workload with 64 concurrent appenders across 4
//! pools, next to a pgbench-style bare insert loop on the same server
//! (issue 7). Needs `RUNSTORE_POSTGRES_URL` (`scripts/services/postgres.sh`
//! starts a throwaway cluster and exports it); without it it says so loudly
//! and exits successfully. Every schema it creates is dropped at the end.

use std::{path::PathBuf, sync::Arc};

use runstore_benches::{
    BarePostgres, Bench, Engine, OpenFn, Targets, location_name, run_standard, skip_loudly,
};
use runstore_core::{Durability, Store};
use runstore_postgres::{PostgresOptions, PostgresStore};

fn options(path: &std::path::Path, durability: Durability) -> PostgresOptions {
    PostgresOptions::default()
        .with_schema(location_name(path))
        .with_durability(durability)
        .with_max_connections(16)
}

fn opener(url: &str, durability: Durability) -> OpenFn {
    let url = url.to_owned();
    Box::new(move |path| {
        let url = url.clone();
        Box::pin(async move {
            let store = PostgresStore::connect_with(&url, options(&path, durability)).await?;
            Ok(Arc::new(store) as Arc<dyn Store>)
        })
    })
}

fn main() {
    let url = std::env::var("RUNSTORE_POSTGRES_URL").unwrap_or_default();
    if url.is_empty() {
        skip_loudly("postgres", "RUNSTORE_POSTGRES_URL");
        return;
    }
    {
        let url = url.clone();
        runstore_benches::serve_open_child(move |path: PathBuf| async move {
            PostgresStore::connect_with(&url, options(&path, Durability::Durable)).await
        });
    }
    let bench = Bench::from_env("postgres", 1_000_000, 1_000);
    let bare_schema = location_name(&bench.path("bare"));
    let mut bare = bench
        .block_on(BarePostgres::connect(&url, &bare_schema))
        .expect("the bare insert table is created");
    run_standard(
        &bench,
        Engine {
            name: "postgres",
            location: "store",
            open: opener(&url, Durability::Durable),
            open_relaxed: opener(&url, Durability::Relaxed),
            // 64 appenders across 4 pools, as 4 nodes would have.
            extra_handles: 3,
            concurrency: 64,
            fdatasync: true,
            bare: Some((
                "bare insert loop",
                Box::new(|n| bench.block_on(bare.insert(n)).expect("bare insert")),
            )),
            open_baseline: None,
            compact: true,
            targets: Targets::default(),
            requests: None,
        },
    );
    let stores = ["write-store", "read-store"].map(|name| location_name(&bench.path(name)));
    bench
        .block_on(bare.drop_schemas(&stores))
        .expect("the bench schemas are dropped");
}
