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
    let harness = Harness::new(
        "postgres",
        Capabilities::persistent().with_shared_writers(),
        move |location| {
            let url = open_url.clone();
            async move {
                // A small pool per store: cases run in parallel and the
                // property test opens many stores.
                let options = PostgresOptions::default()
                    .with_schema(location.name)
                    .with_max_connections(8);
                PostgresStore::connect_with(&url, options).await
            }
        },
    );
    // The late-commit case: a handle whose commits sleep after their rows
    // took their feed positions and before COMMIT.
    let slow_url = url.clone().unwrap_or_default();
    let harness = harness.on_slow_commits(move |location, delay| {
        let url = slow_url.clone();
        async move {
            let options = PostgresOptions::default()
                .with_schema(location.name)
                .with_max_connections(8)
                .with_test_commit_delay(delay);
            PostgresStore::connect_with(&url, options).await
        }
    });
    let drop_url = url.clone().unwrap_or_default();
    let harness = harness.on_cleanup(move |location| {
        let url = drop_url.clone();
        async move { drop_schema(&url, &location.name).await }
    });
    let damage_url = url.clone().unwrap_or_default();
    let harness = harness.on_damage(move |location, stream| {
        let url = damage_url.clone();
        async move { damage_marker(&url, &location.name, &stream).await }
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

/// Overwrites the payload of `stream`'s compaction marker with something
/// that is not a marker payload (docs/backends/postgres.md, "Schema").
async fn damage_marker(url: &str, schema: &str, stream: &runstore_core::StreamKey) {
    use sqlx::Connection;
    assert!(
        schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "schema names come from the harness"
    );
    let mut connection = sqlx::PgConnection::connect(url)
        .await
        .expect("connect to damage a stream");
    let damaged = sqlx::query(&format!(
        "UPDATE \"{schema}\".events e \
         SET record = (e.record::jsonb || '{{\"payload\": {{\"not\": \"a marker payload\"}}}}')::text \
         FROM \"{schema}\".streams s \
         WHERE e.stream_id = s.stream_id AND e.is_marker \
         AND s.org_id = $1 AND s.workspace_id = $2 AND s.has_deployment = $3 \
         AND s.deployment_id = $4 AND s.run_id = $5"
    ))
    .bind(stream.tenant.org_id())
    .bind(stream.tenant.workspace_id())
    .bind(stream.tenant.deployment_id().is_some())
    .bind(stream.tenant.deployment_id().unwrap_or(""))
    .bind(stream.run_id.as_str())
    .execute(&mut connection)
    .await
    .expect("damage the marker");
    assert_eq!(damaged.rows_affected(), 1, "{stream} holds one marker");
}

runstore_conformance::suite!(harness());
