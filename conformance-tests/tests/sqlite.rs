//! The conformance suite on the SQLite backend, with its default (durable)
//! options: each case opens `db.sqlite` in the case's fresh directory.

use runstore_conformance::{Capabilities, Harness};
use runstore_core::StreamKey;
use runstore_sqlite::{SqliteOptions, SqliteStore};

fn harness() -> Harness {
    Harness::new(
        "sqlite",
        Capabilities::persistent().with_shared_writers(),
        |location| async move { SqliteStore::open(location.dir.join("db.sqlite")).await },
    )
    .on_damage(|location, stream| damage_marker(location.dir.join("db.sqlite"), stream))
    .on_slow_commits(|location, delay| async move {
        SqliteStore::open_with(
            location.dir.join("db.sqlite"),
            SqliteOptions::default().with_test_commit_delay(delay),
        )
        .await
    })
}

/// Overwrites the payload of `stream`'s compaction marker with something
/// that is no marker payload, through a connection of its own. The record
/// is in `marker_records` (the marker's `events` row holds none).
async fn damage_marker(path: std::path::PathBuf, stream: StreamKey) {
    use sqlx::Connection as _;
    let url = format!("sqlite://{}", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    let damaged = sqlx::query(
        "UPDATE marker_records SET record = json_set(record, '$.payload', \
         json('{\"compacted_event_ids\":\"damaged\"}')) \
         WHERE org_id = ? AND workspace_id = ? AND deployment_id = ? AND run_id = ? \
         AND seq IN (SELECT seq FROM events AS e WHERE e.org_id = marker_records.org_id \
           AND e.workspace_id = marker_records.workspace_id \
           AND e.deployment_id = marker_records.deployment_id \
           AND e.run_id = marker_records.run_id AND e.is_marker = 1)",
    )
    .bind(stream.tenant.org_id())
    .bind(stream.tenant.workspace_id())
    .bind(stream.tenant.deployment_id().unwrap_or(""))
    .bind(stream.run_id.as_str())
    .execute(&mut conn)
    .await
    .expect("damage the marker");
    assert_eq!(damaged.rows_affected(), 1, "the stream has one marker");
    conn.close().await.expect("close");
}

runstore_conformance::suite!(harness());
