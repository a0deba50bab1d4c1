//! Records round-trip through JSON unchanged, payload and unknown fields
//! included: every store writes back what it decoded, so a number that
//! decodes to one value and encodes to another would change stored data.

use runstore_core::{EventRecord, SnapshotRecord};

/// Found by the `cli_batch` fuzz target: without correctly rounded float
/// parsing, `1111111111111111111111` (past `u64`, so a float) decoded to a
/// value that encodes as text which decodes to a neighbouring float.
#[test]
fn numbers_decode_to_what_they_encode_to() {
    let line = r#"{"event_id":"e","run_id":"r","event_type":"t","scope":{"tenant_context":{"org_id":"o","workspace_id":"w"}},"payload":{"big":1111111111111111111111,"float":1.1111111111111111e113},"":1111111111111111111111}"#;
    let record: EventRecord = serde_json::from_str(line).unwrap();
    let again: EventRecord =
        serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
    assert_eq!(again, record);

    let snapshot = r#"{"snapshot_id":"s","run_id":"r","seq":1,"created_at_ms":1,"scope":{"tenant_context":{"org_id":"o","workspace_id":"w"}},"status":"running","checkpoint":{"n":1111111111111111111111}}"#;
    let snapshot: SnapshotRecord = serde_json::from_str(snapshot).unwrap();
    let again: SnapshotRecord =
        serde_json::from_str(&serde_json::to_string(&snapshot).unwrap()).unwrap();
    assert_eq!(again, snapshot);
}
