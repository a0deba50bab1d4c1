//! The conformance suite on the PostgreSQL backend.
//!
//! Reads the server from `RUNSTORE_POSTGRES_URL` (scripts/services/postgres.sh
//! starts a throwaway cluster and exports it). Each case's store lives in its
//! own schema, named after the case's location (`location.name`), so cases
//! run in parallel without seeing each other; reopening a location
//! reconnects to the same schema. The harness has no end-of-case hook, so
//! the schemas are not dropped per case: the throwaway cluster, removed by
//! `stop_postgres`, takes them away. Against a server given by URL they
//! remain, named `t` + 24 hex digits (see docs/backends/postgres.md for the
//! statement that drops them).

use runstore_conformance::{Capabilities, Harness};
use runstore_postgres::{PostgresOptions, PostgresStore};

const URL_VAR: &str = "RUNSTORE_POSTGRES_URL";

fn harness() -> Harness {
    let url = std::env::var(URL_VAR).ok().filter(|url| !url.is_empty());
    let open_url = url.clone().unwrap_or_default();
    let harness = Harness::new("postgres", Capabilities::persistent(), move |location| {
        let url = open_url.clone();
        async move {
            // A small pool per store: cases run in parallel and the
            // property test opens many stores.
            let options = PostgresOptions::default()
                .with_schema(location.name)
                .with_max_connections(8);
            PostgresStore::connect_with(&url, options).await
        }
    });
    match url {
        Some(_) => harness,
        None => harness.missing_service(format!("{URL_VAR} is not set")),
    }
}

runstore_conformance::suite!(harness());
