//! Erasure (CONTRACT §27-§28): deleting a run, or every run of a tenant,
//! written once for every backend.
//!
//! A deleted run keeps exactly one record, its **erasure marker**
//! ([`erasure_marker`]): a compaction marker at the run's last seq that
//! remembers no id, has no timestamp and says `erased_through_seq` (its own
//! seq). Everything else of the stream (its events, its old marker, the ids
//! that marker remembered) is removed from storage, not hidden. The marker
//! keeps what erasure may keep, the run's key and its last seq, and
//! nothing of what the run held. That is enough for every other rule:
//!
//! - the marker is the stream's last record, so `next_seq` and
//!   [`plan_append`](crate::raw::append::plan_append) continue after it and
//!   a deleted run's seqs are never reused; an old event id appended again
//!   is new (nothing remembers it);
//! - seqs 1 to the marker's are accounted for, so
//!   [`check_stream`](crate::raw::check::check_stream) and
//!   [`plan_import`](crate::raw::append::plan_import) accept the stream, and
//!   `migrate` carries the marker like any other record;
//! - a later compaction merges the marker like any older marker
//!   ([`merge_marker`](crate::raw::compaction::merge_marker) keeps
//!   `erased_through_seq`).
//!
//! # What a backend does
//!
//! `EventLog::delete_run`, under the lock or transaction that makes the
//! stream stable:
//!
//! 1. read the stream's last seq; at 0 the run has nothing: answer 0 and
//!    write nothing;
//! 2. when the stream holds no ordinary event and remembers no id, it is
//!    already erased (its one record is its erasure marker): answer 0 and
//!    write nothing;
//! 3. otherwise delete every record of the stream and every compacted id it
//!    remembers, write `erasure_marker(tenant, run_id, last_seq)`, and commit
//!    both in one atomic step; answer how many ordinary events were deleted
//!    (markers and remembered ids not counted, as in compaction's count).
//!
//! `list_runs` leaves out a run that holds no ordinary event and remembers
//! no id (a deleted run, until it is appended to again); [`is_erased`] says
//! so of a stream read in full, and a backend with an index of events and
//! compacted ids asks the index instead. `streams` still lists it: the
//! store-wide tools (compaction, `verify`, `migrate`) see its marker.
//!
//! `SnapshotStore::delete_snapshots` deletes every snapshot of the run.
//! `delete_tenant` and `delete_tenant_snapshots` run the per-run step for
//! each of the tenant's runs, each on its own (CONTRACT §25); the traits
//! provide them, and a backend overrides them only when it can do the whole
//! tenant in one pass (JSONL rewrites its log once).

use crate::{
    EventRecord, Result, RunId, Tenant,
    raw::compaction::{
        COMPACTION_EVENT_TYPE, COMPACTION_SOURCE, CompactionPayload, marker_event_id,
        marker_payload,
    },
};

/// The one record a deleted run keeps: a compaction marker at `last_seq`
/// (the run's last seq when it was deleted) that remembers no id, with
/// `erased_through_seq = last_seq`, `occurred_at_ms = 0` and
/// `compacted_through_ms = 0`, and a scope that holds only the tenant.
///
/// Its id is [`marker_event_id`]`(tenant, run_id, last_seq)`; the stream
/// holds nothing else when it is written, so the id is free. Every backend
/// writes byte-for-byte the same marker.
pub fn erasure_marker(tenant: &Tenant, run_id: &RunId, last_seq: u64) -> EventRecord {
    let payload = CompactionPayload {
        compacted_through_seq: last_seq,
        compacted_through_ms: 0,
        pruned_events: 0,
        compacted_event_ids: Vec::new(),
        source: COMPACTION_SOURCE.to_owned(),
        erased_through_seq: Some(last_seq),
    };
    let mut marker = EventRecord::new(
        tenant,
        run_id.clone(),
        marker_event_id(tenant, run_id, last_seq),
        COMPACTION_EVENT_TYPE,
        0,
    );
    marker.seq = last_seq;
    marker.payload = serde_json::to_value(payload).expect("a payload of numbers and strings");
    marker
}

/// Whether a stream, read in full, is a deleted run not appended to since:
/// it holds records, none of them an ordinary event, and its marker
/// remembers no id.
///
/// # Errors
/// [`Error::Corrupt`](crate::Error::Corrupt) for a marker whose payload is
/// malformed.
pub fn is_erased(records: &[EventRecord]) -> Result<bool> {
    if records.is_empty() {
        return Ok(false);
    }
    for record in records {
        if !record.is_compaction_marker() || !marker_payload(record)?.compacted_event_ids.is_empty()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        EventId,
        raw::{
            check::check_stream,
            compaction::{CompactionPolicy, compact_stream},
        },
    };

    fn event(run: &RunId, seq: u64, at: u64) -> EventRecord {
        let mut record = EventRecord::new(
            &Tenant::local(),
            run.clone(),
            EventId::new(format!("event-{seq}")).unwrap(),
            "t",
            at,
        );
        record.seq = seq;
        record
    }

    #[test]
    fn a_deleted_run_checks_clean_before_and_after_it_is_appended_to_and_compacted() {
        let tenant = Tenant::local();
        let run = RunId::new("run-a").unwrap();
        let key = crate::StreamKey::new(tenant.clone(), run.clone());
        let marker = erasure_marker(&tenant, &run, 7);
        assert_eq!(marker.seq, 7);
        assert!(is_erased(std::slice::from_ref(&marker)).unwrap());
        let alone = check_stream(&key, std::slice::from_ref(&marker));
        assert!(alone.is_clean(), "{:?}", alone.problems);
        assert_eq!(alone.last_seq, 7);

        let mut stream = vec![marker, event(&run, 8, 100), event(&run, 9, 900)];
        assert!(!is_erased(&stream).unwrap());
        let appended = check_stream(&key, &stream);
        assert!(appended.is_clean(), "{:?}", appended.problems);

        let policy = CompactionPolicy::new(500, 1_000).unwrap().unwrap();
        let change = compact_stream(&tenant, &run, &stream, None, &policy)
            .unwrap()
            .unwrap();
        assert_eq!(change.remove_seqs, vec![7, 8]);
        let payload = marker_payload(&change.marker).unwrap();
        assert_eq!(payload.erased_through_seq, Some(7));
        assert_eq!(payload.compacted_event_ids.len(), 1);
        stream.retain(|record| change.remove_seqs.binary_search(&record.seq).is_err());
        stream.insert(0, change.marker);
        let compacted = check_stream(&key, &stream);
        assert!(compacted.is_clean(), "{:?}", compacted.problems);
        assert!(!is_erased(&stream).unwrap());
    }

    #[test]
    fn the_marker_is_the_same_for_the_same_run_and_seq() {
        let tenant = Tenant::local();
        let run = RunId::new("run-a").unwrap();
        let a = serde_json::to_string(&erasure_marker(&tenant, &run, 3)).unwrap();
        let b = serde_json::to_string(&erasure_marker(&tenant, &run, 3)).unwrap();
        assert_eq!(a, b);
        assert!(a.contains("\"erased_through_seq\":3"), "{a}");
        assert!(!is_erased(&[]).unwrap());
    }
}
