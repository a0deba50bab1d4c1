//! The conformance suite on the PostgreSQL backend.
//!
//! Reads the server from `RUNSTORE_POSTGRES_URL` (scripts/services/postgres.sh
//! starts a throwaway cluster and exports it). Each case's store lives in its
//! own schema, named after the case's location (`location.name`), so cases
//! run in parallel without seeing each other; reopening a location
//! reconnects to the same schema. A case that passes drops its schemas; a
//! failed one leaves them for inspection (named `t` + 24 hex digits).

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
    let drop_url = url.clone().unwrap_or_default();
    let harness = harness.on_cleanup(move |location| {
        let url = drop_url.clone();
        async move { drop_schema(&url, &location.name).await }
    });
    match url {
        Some(_) => harness,
        None => harness.missing_service(format!("{URL_VAR} is not set")),
    }
}

/// Drops a case's schema; the name is the harness's own `t` + hex digits.
async fn drop_schema(url: &str, schema: &str) {
    use sqlx::Connection;
    assert!(
        schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "schema names come from the harness"
    );
    let mut connection = sqlx::PgConnection::connect(url)
        .await
        .expect("connect to drop a case's schema");
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&mut connection)
        .await
        .expect("drop a case's schema");
}

runstore_conformance::suite!(harness());
