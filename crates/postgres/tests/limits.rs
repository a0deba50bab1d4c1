//! The shared validation runs at the entry of every write, before a
//! connection is taken (CONTRACT §21-§24), with the store's own limits; and
//! a driver's error names the stream and states its cause once (§26).
//!
//! Needs `RUNSTORE_POSTGRES_URL`; fails without it unless
//! `RUNSTORE_ALLOW_MISSING_SERVICES` is set.

use runstore_conformance::support::records::{acme as tenant, run_1 as run, step};
use runstore_core::validate::nested_arrays;
use runstore_core::{
    Error, EventLog, EventRecord, RunStatus, SnapshotId, SnapshotRecord, SnapshotStore,
    validate::{Limits, MAX_DEPTH},
};
use runstore_postgres::{PostgresOptions, PostgresStore};
use serde_json::json;

fn server_url() -> Option<String> {
    runstore_conformance::support::service_url("RUNSTORE_POSTGRES_URL", "postgres limits test")
}

fn event(id: &str) -> EventRecord {
    step(id, 10)
}

#[tokio::test]
async fn refusals_take_no_connection_and_driver_errors_name_the_stream() {
    let Some(url) = server_url() else { return };
    let schema = format!("limits_{}", std::process::id());
    let limits = Limits::with_max_record_bytes(1_000).unwrap();
    let store = PostgresStore::connect_with(
        &url,
        PostgresOptions::default()
            .with_schema(&schema)
            .with_limits(limits),
    )
    .await
    .unwrap();
    assert_eq!(store.limits(), limits);
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(store.pool())
        .await
        .unwrap();
    // With the pool closed, anything that reached the database would fail
    // as a backend error: refusals answer first.
    store.close().await;
    let deep = event("deep").with_payload(nested_arrays(MAX_DEPTH));
    let big = event("big").with_payload(json!("x".repeat(1_000)));
    for batch in [vec![event("fine"), deep.clone()], vec![big]] {
        let err = store
            .append_batch(&tenant(), &run(), &batch, None)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    }
    let mut imported = deep;
    imported.seq = 1;
    let err = store
        .import_stream(&tenant(), &run(), &[imported])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    let snapshot = SnapshotRecord::new(
        &tenant(),
        run(),
        SnapshotId::new("s").unwrap(),
        u64::MAX,
        10,
        RunStatus::Running,
    );
    let err = store.put(&tenant(), &snapshot).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");

    // A write that passes reaches the closed pool: the driver's error, once,
    // after what the store was doing and for which stream.
    let err = store
        .append_batch(&tenant(), &run(), &[event("fine")], None)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Backend { .. }), "{text}");
    assert!(text.contains("for stream acme/prod:run-1: "), "{text}");
    assert_eq!(text.matches("postgres error").count(), 1, "{text}");
    assert_eq!(text.matches("closed pool").count(), 1, "{text}");
}
