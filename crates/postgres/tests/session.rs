//! The settings every pooled connection carries: the store's schema as
//! `search_path`, `READ COMMITTED` transactions whatever the server's
//! default, and `synchronous_commit = off` only in relaxed mode; and that
//! two stores in two schemas of one database do not see each other.
//!
//! Needs `RUNSTORE_POSTGRES_URL`; fails without it unless
//! `RUNSTORE_ALLOW_MISSING_SERVICES` is set.

use runstore_core::{Durability, EventId, EventLog, EventLogExt, EventRecord, RunId, Tenant};
use runstore_postgres::{PostgresOptions, PostgresStore};

mod common;
use common::drop_schema;

fn server_url() -> Option<String> {
    runstore_conformance::support::service_url("RUNSTORE_POSTGRES_URL", "postgres session test")
}

async fn setting(store: &PostgresStore, name: &str) -> String {
    let (value,): (String,) = sqlx::query_as(&format!("SHOW {name}"))
        .fetch_one(store.pool())
        .await
        .unwrap();
    value
}

#[tokio::test]
async fn connections_carry_schema_isolation_and_durability() {
    let Some(url) = server_url() else { return };
    let pid = std::process::id();
    let durable = PostgresStore::connect_with(
        &url,
        PostgresOptions::default().with_schema(format!("session_a_{pid}")),
    )
    .await
    .unwrap();
    let relaxed = PostgresStore::connect_with(
        &url,
        PostgresOptions::default()
            .with_schema(format!("session_b_{pid}"))
            .with_durability(Durability::Relaxed),
    )
    .await
    .unwrap();

    assert_eq!(
        setting(&durable, "search_path").await,
        format!("session_a_{pid}")
    );
    assert_eq!(
        setting(&durable, "default_transaction_isolation").await,
        "read committed"
    );
    assert_eq!(setting(&durable, "synchronous_commit").await, "on");
    assert_eq!(setting(&relaxed, "synchronous_commit").await, "off");

    // The migrations ran inside each schema, bookkeeping included.
    let (tables,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_tables WHERE schemaname = $1 \
         AND tablename IN ('streams', 'events', 'compacted_ids', 'snapshots', '_sqlx_migrations')",
    )
    .bind(durable.schema())
    .fetch_one(durable.pool())
    .await
    .unwrap();
    assert_eq!(tables, 5);

    // Two schemas are two stores.
    let tenant = Tenant::local();
    let run = RunId::new("r").unwrap();
    let event = EventRecord::new(&tenant, run.clone(), EventId::new("e").unwrap(), "t", 1);
    assert_eq!(durable.append(&tenant, &event).await.unwrap().seq, 1);
    assert_eq!(relaxed.next_seq(&tenant, &run).await.unwrap(), 1);

    // Connecting again migrates nothing and sees the data.
    let again = PostgresStore::connect_with(
        &url,
        PostgresOptions::default().with_schema(format!("session_a_{pid}")),
    )
    .await
    .unwrap();
    assert_eq!(again.next_seq(&tenant, &run).await.unwrap(), 2);
    again.close().await;

    drop_schema(&durable).await;
    drop_schema(&relaxed).await;
}

#[tokio::test]
async fn nodes_starting_together_migrate_once() {
    let Some(url) = server_url() else { return };
    let schema = format!("session_c_{}", std::process::id());
    let mut handles = Vec::new();
    for _ in 0..6 {
        let url = url.clone();
        let schema = schema.clone();
        handles.push(tokio::spawn(async move {
            PostgresStore::connect_with(&url, PostgresOptions::default().with_schema(schema)).await
        }));
    }
    let mut stores = Vec::new();
    for handle in handles {
        stores.push(handle.await.unwrap().expect("every node connects"));
    }
    let (applied,): (i64,) = sqlx::query_as("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(stores[0].pool())
        .await
        .unwrap();
    // Each embedded migration (a file of `migrations/`) once.
    let embedded = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|ext| ext == "sql")
        })
        .count();
    assert_eq!(usize::try_from(applied).unwrap(), embedded);
    drop_schema(&stores[0]).await;
}

#[tokio::test]
async fn bad_schema_names_are_invalid_input() {
    // No server needed: the name is checked before connecting.
    let err = PostgresStore::connect_with(
        "postgres://127.0.0.1:1/x",
        PostgresOptions::default().with_schema("Robert'); DROP TABLE students;--"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, runstore_core::Error::InvalidInput { .. }),
        "{err}"
    );
}
