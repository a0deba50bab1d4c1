//! Store-wide maintenance on damaged and hostile data (CONTRACT §22, §25,
//! §26): `compact` and `prune` process every stream in a transaction of its
//! own and report each one that fails, naming it; a stream imported with an
//! ordinary event holding the id its next marker would take compacts into a
//! marker with another id instead of failing the pass for good.
//!
//! Needs `RUNSTORE_POSTGRES_URL`; fails without it unless
//! `RUNSTORE_ALLOW_MISSING_SERVICES` is set.

use runstore_conformance::support::records::{event, run, tenant};
use runstore_conformance::support::{
    assert_states_each_cause_once, corrupt_failure, failed_streams,
};
use runstore_core::{
    Error, EventLog, EventLogExt, EventRecord, ReadQuery, RunStatus, SnapshotId, SnapshotRecord,
    SnapshotStore, Tenant, raw::compaction::marker_event_id,
};

mod common;
use common::{connect, drop_schema};

fn server_url() -> Option<String> {
    runstore_conformance::support::service_url("RUNSTORE_POSTGRES_URL", "postgres maintenance test")
}

#[tokio::test]
async fn compaction_reports_a_damaged_stream_and_steps_past_a_held_marker_id() {
    let Some(url) = server_url() else { return };
    let store = connect(&url, "maint_compact").await;
    let orgs = ["a-first", "b-damaged", "c-clash", "d-last"];
    for org in ["a-first", "b-damaged", "d-last"] {
        let t = tenant(org);
        for n in 1..=2 {
            let e = event(&t, "r", &format!("e{n}"), n);
            store.append(&t, &e).await.unwrap();
        }
    }
    // An older store's stream: its third event holds the id the marker of
    // its first two would take.
    let c = tenant("c-clash");
    let clash = marker_event_id(&c, &run("r"), 2);
    let mut records: Vec<EventRecord> = (1..=3)
        .map(|n| {
            let mut record = event(&c, "r", &format!("e{n}"), n);
            record.seq = n;
            record
        })
        .collect();
    records[2].event_id = clash.clone();
    records[2].occurred_at_ms = 900_000;
    assert_eq!(
        store.import_stream(&c, &run("r"), &records).await.unwrap(),
        3
    );
    let report = store.compact(10, 1_000).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    assert_eq!(report.removed, 8);
    // The clash stream's marker took another id; the event keeps its own.
    let records = store.read(&c, &run("r"), ReadQuery::all()).await.unwrap();
    assert_eq!(records.len(), 2);
    assert!(records[0].is_compaction_marker());
    assert_eq!(records[0].seq, 2);
    assert_ne!(records[0].event_id, clash);
    assert_eq!(records[1].event_id, clash);

    // Behind the store's back: one marker's payload.
    let damaged = sqlx::query(
        "UPDATE events e SET record = (e.record::jsonb || \
         '{\"payload\": {\"compacted_event_ids\": \"damaged\"}}')::text \
         FROM streams s WHERE e.stream_id = s.stream_id AND e.is_marker AND s.org_id = $1",
    )
    .bind("b-damaged")
    .execute(store.pool())
    .await
    .unwrap();
    assert_eq!(damaged.rows_affected(), 1);
    for org in orgs {
        let t = tenant(org);
        store
            .append_batch(&t, &run("r"), &[event(&t, "r", "e4", 3)], None)
            .await
            .unwrap();
    }
    let report = store.compact(10, 2_000).await.expect("the pass runs");
    let text = corrupt_failure(&report, "b-damaged/prod:r");
    assert!(text.contains("stream b-damaged/prod:r"), "{text}");
    assert!(text.contains("marker at seq 2"), "names the seq: {text}");
    assert_eq!(report.removed, 3, "every other stream was compacted");

    // One id, one record, each answering its own seq.
    let records = store.read(&c, &run("r"), ReadQuery::all()).await.unwrap();
    let seqs: Vec<u64> = records.iter().map(|record| record.seq).collect();
    assert_eq!(seqs, vec![3, 4]);
    assert!(records[1].is_compaction_marker());
    for record in &records {
        assert_eq!(
            store.seq_of(&c, &run("r"), &record.event_id).await.unwrap(),
            Some(record.seq)
        );
    }
    assert_eq!(store.seq_of(&c, &run("r"), &clash).await.unwrap(), Some(3));
    drop_schema(&store).await;
}

fn snapshot(t: &Tenant, id: &str, seq: u64, at: u64) -> SnapshotRecord {
    SnapshotRecord::new(
        t,
        run("r"),
        SnapshotId::new(id).unwrap(),
        seq,
        at,
        RunStatus::Running,
    )
}

#[tokio::test]
async fn prune_reports_a_stream_it_cannot_read_and_prunes_every_other() {
    let Some(url) = server_url() else { return };
    let store = connect(&url, "maint_prune").await;
    for org in ["a", "b-damaged", "c"] {
        let t = tenant(org);
        store.put(&t, &snapshot(&t, "old", 1, 10)).await.unwrap();
        store.put(&t, &snapshot(&t, "new", 2, 20)).await.unwrap();
    }
    sqlx::query(
        "UPDATE snapshots sn SET record = 'not a snapshot' FROM streams s \
         WHERE sn.stream_id = s.stream_id AND s.org_id = 'b-damaged' AND sn.snapshot_id = 'old'",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let err = store.prune(5, 1, u64::MAX).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidInput { .. }),
        "a clock past the limit: {err}"
    );
    let report = store.prune(5, 1, 1_000).await.expect("the pass runs");
    assert_eq!(failed_streams(&report), vec!["b-damaged/prod:r".to_owned()]);
    let text = report.failed[0].error.to_string();
    assert!(
        text.contains("stream b-damaged/prod:r, snapshot \"old\""),
        "{text}"
    );
    assert_states_each_cause_once(&text);
    assert_eq!(report.removed, 2);
    assert_eq!(
        store
            .list(&tenant("b-damaged"), &run("r"), None)
            .await
            .unwrap_err()
            .to_string(),
        text,
        "the damaged stream is left as it was"
    );
    drop_schema(&store).await;
}
