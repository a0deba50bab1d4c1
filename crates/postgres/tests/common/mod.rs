//! Stores in schemas of their own, for the integration tests.

#![allow(dead_code, reason = "each test binary uses some of these")]

use runstore_postgres::{PostgresOptions, PostgresStore};

/// A store in the schema `<name>_<pid>`, emptied of what an earlier, failed
/// run of the test left.
pub async fn connect(url: &str, name: &str) -> PostgresStore {
    let schema = format!("{name}_{}", std::process::id());
    let store = reconnect(url, &schema).await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
    reconnect(url, &schema).await
}

/// Another store on `schema`, migrating it if needed.
pub async fn reconnect(url: &str, schema: &str) -> PostgresStore {
    PostgresStore::connect_with(url, PostgresOptions::default().with_schema(schema))
        .await
        .unwrap()
}

/// Drops the store's schema and closes its pool.
pub async fn drop_schema(store: &PostgresStore) {
    sqlx::query(&format!("DROP SCHEMA {} CASCADE", store.schema()))
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
}
