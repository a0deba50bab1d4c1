//! The conformance suite on the redb backend, in its default (durable) mode.

use runstore_conformance::{Capabilities, Harness};
use runstore_core::{EventRecord, StreamKey};

fn harness() -> Harness {
    Harness::new("redb", Capabilities::persistent().with_exclusive_open(), |location| async move {
        runstore_redb::RedbStore::open(location.dir.join("store.redb")).await
    })
    // One handle per file: the late-commit case closes the normal handle
    // and writes through this one.
    .on_slow_commits(|location, delay| async move {
        let options = runstore_redb::RedbOptions::default().with_test_commit_delay(delay);
        runstore_redb::RedbStore::open_with(location.dir.join("store.redb"), options).await
    })
    .on_damage(|location, stream| async move {
        let path = location.dir.join("store.redb");
        tokio::task::spawn_blocking(move || damage_marker(&path, &stream))
            .await
            .expect("damage");
    })
}

/// Overwrites the payload of `stream`'s compaction marker with something
/// that is no marker payload, opening the file with redb directly. An
/// `events` value is a flags byte (1 for a marker, 2 when a feed position
/// follows), `occurred_at_ms` (8 bytes), the position (8 bytes, with flag
/// 2) and the record's JSON (see `runstore_redb`'s tables module).
fn damage_marker(path: &std::path::Path, stream: &StreamKey) {
    use redb::ReadableTable as _;
    const EVENTS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("events");
    let header = |value: &[u8]| if value[0] & 2 == 0 { 9 } else { 17 };
    let db = redb::Database::open(path).expect("open");
    let txn = db.begin_write().expect("begin");
    {
        let mut table = txn.open_table(EVENTS).expect("events");
        let mut found = None;
        for entry in table.iter().expect("iterate") {
            let (key, value) = entry.expect("entry");
            let value = value.value();
            if value[0] & 1 == 0 {
                continue;
            }
            let record: EventRecord =
                serde_json::from_slice(&value[header(value)..]).expect("record");
            if record.run_id == stream.run_id && stream.tenant.matches(&record.scope.tenant_context)
            {
                found = Some((
                    key.value().to_vec(),
                    value[..header(value)].to_vec(),
                    record,
                ));
            }
        }
        let (key, mut value, mut record) = found.expect("the stream has a marker");
        record.payload = serde_json::json!({ "compacted_event_ids": "damaged" });
        value.extend(serde_json::to_vec(&record).expect("json"));
        table.insert(&key[..], &value[..]).expect("insert");
    }
    txn.commit().expect("commit");
}

runstore_conformance::suite!(harness());
