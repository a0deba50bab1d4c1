//! Compaction rules and the one marker builder every backend uses
//! (CONTRACT §8-§10).
//!
//! A backend finds, per stream, the events [`CompactionPolicy::prunes`]
//! selects and the stream's current marker, asks [`merge_marker`] for the new
//! marker, then atomically deletes the pruned events and the old marker and
//! writes the new one. Each stream is its own step: a stream that fails goes
//! into the pass's [`MaintenanceReport`](crate::MaintenanceReport) and the
//! pass goes on.
//!
//! # Steps within one stream
//!
//! A backend that takes a pass in bounded steps (so that appends queued
//! meanwhile wait for one step, not for the pass) may also split one
//! stream's compaction over several steps. A step then prunes only the
//! stream's first [`stream_step_events`] pruned events by seq and merges
//! them into the marker as above; its transaction commits (or goes on, see
//! below), and the next step starts again from the stream's records as
//! they are now (its marker is the one the step before wrote). Each step leaves a stream the contract allows (one
//! marker, remembering every id pruned so far), and the last one writes
//! byte-for-byte the marker one step would have written: ids, seqs and
//! scope are the same, and a marker never counts its predecessor's id as
//! held. The rule's lower bound, the old marker's id count, keeps the total
//! cost linear: a step that leaves more to prune has pruned at least as
//! many events as the old marker remembered, so the ids it rewrites are at
//! most twice the events it prunes, and a stream whose marker already
//! remembers many ids is compacted in as few steps as that allows.
//!
//! # Several steps in one commit
//!
//! Bounded steps cost a pass one commit each, which buys nothing while no
//! write waits for the writer. A backend whose writer knows whether
//! requests are queued behind the running one may let one transaction go
//! on from step to step while none is, up to [`STEPS_PER_COMMIT`] steps,
//! and commit as soon as one is: a write that arrives meanwhile waits for
//! the rest of the step it arrives in and the commit, as with one step per
//! commit, and a pass over a store nobody writes to commits once per
//! [`STEPS_PER_COMMIT`] steps. Each step is taken exactly as it would be
//! alone (the rule above, from where the step before left off), so the
//! records a pass leaves are the same however its steps are committed.
//!
//! Within one transaction a backend need not write the marker of every
//! step of a stream: nobody sees the stream between two steps of one
//! transaction. A step that leaves its stream unfinished, with the
//! transaction going on, may delete its pruned events and carry what the
//! next step needs (the old marker as found, the events pruned so far, the
//! candidates left) instead of writing a marker the next step would read
//! back, parse and replace. The stream's marker is then written once, when
//! a step finishes the stream or the transaction is about to commit:
//! [`merge_marker`] over the old marker and every event the carried steps
//! pruned, byte-for-byte the marker the last of those steps would have
//! written (above). Each carried step counts as remembered the ids that
//! marker would remember ([`stream_step_events`]), so the steps are the
//! same as with a marker per step. A failure
//! met while a stream is carried comes after its earlier steps deleted
//! events: the transaction must roll back, never commit without the
//! marker.
//!
//! A marker's id is derived from the stream and its seq, so a user could know
//! it in advance. Appends refuse ids in the marker namespace
//! ([`COMPACTION_ID_PREFIX`]), but an import from an older store may bring
//! one; [`merge_marker`] then steps to the next candidate id, so a stream
//! never holds one id twice.

use serde::{Deserialize, Serialize};
use serde_json::Map;
use sha2::{Digest, Sha256};

use crate::{
    Error, EventId, EventRecord, Result, RunId, SCHEMA_VERSION, Tenant, validate::check_clock,
};

/// `event_type` of a compaction marker.
pub const COMPACTION_EVENT_TYPE: &str = "stateful_runtime.event_log_compacted";
/// `payload.source` of a compaction marker.
pub const COMPACTION_SOURCE: &str = "stateful_event_log_compaction";
/// Prefix of a marker's `event_id`.
pub const COMPACTION_ID_PREFIX: &str = "stateful-compaction-";

/// Which events a compaction pass prunes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    cutoff_ms: u64,
    now_ms: u64,
}

impl CompactionPolicy {
    /// The policy of `compact(retention_ms, now_ms)`; `None` when
    /// `retention_ms` is 0, which compacts nothing (CONTRACT §8).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `now_ms` is above
    /// [`MAX_TIMESTAMP_MS`](crate::validate::MAX_TIMESTAMP_MS) (see
    /// [`check_clock`]).
    pub fn new(retention_ms: u64, now_ms: u64) -> Result<Option<Self>> {
        check_clock(now_ms)?;
        Ok((retention_ms > 0).then(|| Self {
            cutoff_ms: now_ms.saturating_sub(retention_ms),
            now_ms,
        }))
    }

    /// Events that occurred before this instant are old enough to prune.
    pub fn cutoff_ms(&self) -> u64 {
        self.cutoff_ms
    }

    /// The pass's `now_ms`, written into markers.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Whether the pass prunes `record` from a stream whose newest snapshot
    /// is at `snapshot_floor` (the tail from there on is kept for restore).
    /// Markers are never pruned; they are merged.
    pub fn prunes(&self, record: &EventRecord, snapshot_floor: Option<u64>) -> bool {
        self.prunes_parts(
            record.is_compaction_marker(),
            record.seq,
            record.occurred_at_ms,
            snapshot_floor,
        )
    }

    /// [`CompactionPolicy::prunes`] for a backend that has the columns, not
    /// the record.
    pub fn prunes_parts(
        &self,
        is_marker: bool,
        seq: u64,
        occurred_at_ms: u64,
        snapshot_floor: Option<u64>,
    ) -> bool {
        !is_marker
            && occurred_at_ms < self.cutoff_ms
            && snapshot_floor.is_none_or(|floor| seq < floor)
    }
}

/// How many of a stream's pruned events (lowest seqs first) one step of
/// its compaction takes at most: `budget`, the pruned events the step has
/// left, but never fewer than the ids the stream's marker remembers
/// (`remembered`: [`remembered_ids`] of its current marker, plus the
/// events the steps before pruned when they left the marker unwritten),
/// nor fewer than one. See the module doc, "Steps within one stream".
pub fn stream_step_events(budget: usize, remembered: usize) -> usize {
    budget.max(remembered).max(1)
}

/// How many ids `marker` remembers, counted without parsing them; 0 for
/// none.
pub fn remembered_ids(marker: Option<&EventRecord>) -> usize {
    marker
        .and_then(|marker| marker.payload.get("compacted_event_ids"))
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len)
}

/// The most maintenance steps one transaction takes while no other write
/// waits. See the module doc, "Several steps in one commit".
pub const STEPS_PER_COMMIT: usize = 16;

/// An id a marker remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactedId {
    /// The pruned event's id.
    pub event_id: EventId,
    /// Its seq.
    pub seq: u64,
}

/// A marker's payload (CONTRACT §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionPayload {
    /// The highest seq the marker covers; also the marker's own seq.
    pub compacted_through_seq: u64,
    /// The latest `occurred_at_ms` among the pruned events.
    pub compacted_through_ms: u64,
    /// How many events the marker stands for.
    pub pruned_events: u64,
    /// Every pruned id with its seq, ascending by seq.
    pub compacted_event_ids: Vec<CompactedId>,
    /// Always [`COMPACTION_SOURCE`].
    pub source: String,
    /// Set when the run was deleted (CONTRACT §27): every seq from 1 to this
    /// one was erased and is accounted for without an id. An erasure marker
    /// ([`erasure_marker`](crate::raw::erasure::erasure_marker)) has it at
    /// its own seq and remembers no id; a later compaction's marker carries
    /// it over. Absent (and not written) otherwise, so markers of runs never
    /// deleted stay byte-for-byte what they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased_through_seq: Option<u64>,
}

/// Reads a marker's payload.
///
/// # Errors
/// [`Error::Corrupt`] when `marker` is a marker whose payload is malformed,
/// [`Error::InvalidInput`] when it is not a marker.
pub fn marker_payload(marker: &EventRecord) -> Result<CompactionPayload> {
    if !marker.is_compaction_marker() {
        return Err(Error::invalid(format!(
            "event {:?} is not a compaction marker",
            marker.event_id.as_str()
        )));
    }
    CompactionPayload::deserialize(&marker.payload).map_err(|err| {
        Error::corrupt(
            format!(
                "compaction marker {} of run {:?}",
                marker.seq,
                marker.run_id.as_str()
            ),
            err,
        )
    })
}

/// The seq `event_id` holds among `records`: the seq of the record with
/// that id, or the seq a marker among them remembers for it; `None` when
/// none of them knows it. Records are looked at in order and the first that
/// knows the id answers.
///
/// # Errors
/// [`Error::Corrupt`] for a marker with a malformed payload met before the
/// id is found.
pub fn seq_among<'a>(
    records: impl IntoIterator<Item = &'a EventRecord>,
    event_id: &EventId,
) -> Result<Option<u64>> {
    for record in records {
        if record.event_id == *event_id {
            return Ok(Some(record.seq));
        }
        if let Some(id) = compacted_ids(record)?
            .into_iter()
            .find(|id| id.event_id == *event_id)
        {
            return Ok(Some(id.seq));
        }
    }
    Ok(None)
}

/// The ids a record remembers: a marker's compacted ids, nothing for an
/// ordinary event.
///
/// # Errors
/// [`Error::Corrupt`] for a marker with a malformed payload.
pub fn compacted_ids(record: &EventRecord) -> Result<Vec<CompactedId>> {
    if record.is_compaction_marker() {
        Ok(marker_payload(record)?.compacted_event_ids)
    } else {
        Ok(Vec::new())
    }
}

/// The deterministic `event_id` of the marker of `tenant`'s `run_id` covering
/// through `through_seq`: the prefix and a SHA-256 over the parts, each
/// followed by a NUL (ids cannot contain NUL, so the encoding is injective).
pub fn marker_event_id(tenant: &Tenant, run_id: &RunId, through_seq: u64) -> EventId {
    marker_event_id_candidate(tenant, run_id, through_seq, 0)
}

/// The `attempt`-th candidate marker id: attempt 0 is [`marker_event_id`];
/// a later attempt adds its number as one more part.
fn marker_event_id_candidate(
    tenant: &Tenant,
    run_id: &RunId,
    through_seq: u64,
    attempt: u64,
) -> EventId {
    let mut hasher = Sha256::new();
    let through = through_seq.to_string();
    let attempt_part = attempt.to_string();
    let parts = [
        tenant.org_id(),
        tenant.workspace_id(),
        tenant.deployment_id().unwrap_or(""),
        run_id.as_str(),
        through.as_str(),
        attempt_part.as_str(),
    ];
    let used = if attempt == 0 { 5 } else { 6 };
    for part in &parts[..used] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let mut id = String::with_capacity(COMPACTION_ID_PREFIX.len() + 64);
    id.push_str(COMPACTION_ID_PREFIX);
    for byte in digest {
        id.push_str(&format!("{byte:02x}"));
    }
    EventId::new(id).expect("a prefix and 64 hex digits form a valid id")
}

/// Builds the stream's new marker from its old one (if any) and the events
/// pruned now (non-empty).
///
/// Ids accumulate, ascending by seq; `pruned_events` counts every id the
/// marker remembers; the scope is the old marker's, else the first pruned
/// event's; an old marker's `erased_through_seq` is kept. Every backend calls this, so every backend writes byte-for-byte
/// the same marker.
///
/// `held` answers whether an ordinary event of the stream (pruned or not)
/// has a given id. The marker takes [`marker_event_id`] unless an event holds
/// that id or the marker remembers it; then the next candidate, so no two
/// records of the stream share an id.
///
/// # Errors
/// [`Error::InvalidInput`] if `pruned` is empty or holds a marker;
/// [`Error::Corrupt`] if the old marker's payload is malformed; whatever
/// `held` returns.
pub fn merge_marker<'a>(
    tenant: &Tenant,
    run_id: &RunId,
    old_marker: Option<&EventRecord>,
    pruned: impl IntoIterator<Item = &'a EventRecord>,
    now_ms: u64,
    mut held: impl FnMut(&EventId) -> Result<bool>,
) -> Result<EventRecord> {
    let (mut ids, mut through_seq, mut through_ms, mut scope, erased_through_seq) = match old_marker
    {
        Some(marker) => {
            let payload = marker_payload(marker)?;
            (
                payload.compacted_event_ids,
                payload.compacted_through_seq,
                payload.compacted_through_ms,
                Some(marker.scope.clone()),
                payload.erased_through_seq,
            )
        }
        None => (Vec::new(), 0, 0, None, None),
    };
    let before = ids.len();
    for event in pruned {
        if event.is_compaction_marker() {
            return Err(Error::invalid("a compaction marker cannot be pruned"));
        }
        through_seq = through_seq.max(event.seq);
        through_ms = through_ms.max(event.occurred_at_ms);
        if scope.is_none() {
            scope = Some(event.scope.clone());
        }
        ids.push(CompactedId {
            event_id: event.event_id.clone(),
            seq: event.seq,
        });
    }
    let Some(mut scope) = scope.filter(|_| ids.len() > before) else {
        return Err(Error::invalid("compaction needs at least one pruned event"));
    };
    tenant.stamp(&mut scope.tenant_context);
    ids.sort_by_key(|id| id.seq);
    let mut attempt = 0;
    let event_id = loop {
        let candidate = marker_event_id_candidate(tenant, run_id, through_seq, attempt);
        if !ids.iter().any(|id| id.event_id == candidate) && !held(&candidate)? {
            break candidate;
        }
        attempt += 1;
    };
    let payload = CompactionPayload {
        compacted_through_seq: through_seq,
        compacted_through_ms: through_ms,
        pruned_events: ids.len() as u64,
        compacted_event_ids: ids,
        source: COMPACTION_SOURCE.to_owned(),
        erased_through_seq,
    };
    Ok(EventRecord {
        schema_version: SCHEMA_VERSION,
        event_id,
        run_id: run_id.clone(),
        seq: through_seq,
        event_type: COMPACTION_EVENT_TYPE.to_owned(),
        occurred_at_ms: now_ms,
        scope,
        actor: None,
        phase_id: None,
        phase_transition: None,
        wait_kind: None,
        causation_id: None,
        correlation_id: None,
        payload: serde_json::to_value(payload).map_err(|err| Error::invalid(err.to_string()))?,
        extra: Map::new(),
    })
}

/// One stream's compaction, for backends that hold the stream in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamCompaction {
    /// The seqs to delete: the pruned events and the old marker.
    pub remove_seqs: Vec<u64>,
    /// How many events (markers not counted) were pruned.
    pub pruned: usize,
    /// The marker to write.
    pub marker: EventRecord,
}

/// Compacts one stream given all its records in ascending seq order;
/// `None` when nothing in it is old enough.
///
/// # Errors
/// [`Error::Corrupt`] if the stream's marker payload is malformed.
pub fn compact_stream(
    tenant: &Tenant,
    run_id: &RunId,
    records: &[EventRecord],
    snapshot_floor: Option<u64>,
    policy: &CompactionPolicy,
) -> Result<Option<StreamCompaction>> {
    let pruned: Vec<&EventRecord> = records
        .iter()
        .filter(|record| policy.prunes(record, snapshot_floor))
        .collect();
    if pruned.is_empty() {
        return Ok(None);
    }
    let old_marker = records.iter().find(|record| record.is_compaction_marker());
    let marker = merge_marker(
        tenant,
        run_id,
        old_marker,
        pruned.iter().copied(),
        policy.now_ms(),
        |id| {
            Ok(records
                .iter()
                .any(|record| !record.is_compaction_marker() && record.event_id == *id))
        },
    )?;
    let mut remove_seqs: Vec<u64> = pruned.iter().map(|record| record.seq).collect();
    remove_seqs.extend(old_marker.map(|marker| marker.seq));
    remove_seqs.sort_unstable();
    Ok(Some(StreamCompaction {
        remove_seqs,
        pruned: pruned.len(),
        marker,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, at: u64) -> EventRecord {
        let mut record = EventRecord::new(
            &Tenant::local(),
            RunId::new("run-a").unwrap(),
            EventId::new(format!("event-{seq}")).unwrap(),
            "t",
            at,
        );
        record.seq = seq;
        record
    }

    #[test]
    fn markers_merge_and_accumulate_ids() {
        assert_eq!(
            CompactionPolicy::new(500, 1_000)
                .unwrap()
                .unwrap()
                .cutoff_ms(),
            500
        );
        let tenant = Tenant::local();
        let run = RunId::new("run-a").unwrap();
        let policy = CompactionPolicy::new(500, 1_000).unwrap().unwrap();
        let records: Vec<_> = [(1, 100), (2, 200), (3, 300), (4, 900)]
            .into_iter()
            .map(|(s, at)| event(s, at))
            .collect();
        let first = compact_stream(&tenant, &run, &records, None, &policy)
            .unwrap()
            .unwrap();
        assert_eq!(first.pruned, 3);
        assert_eq!(first.marker.seq, 3);
        let mut after = vec![first.marker.clone(), records[3].clone(), event(5, 950)];
        after.sort_by_key(|r| r.seq);
        let policy = CompactionPolicy::new(500, 2_000).unwrap().unwrap();
        let second = compact_stream(&tenant, &run, &after, None, &policy)
            .unwrap()
            .unwrap();
        assert_eq!(second.pruned, 2);
        assert_eq!(second.remove_seqs, vec![3, 4, 5]);
        let payload = marker_payload(&second.marker).unwrap();
        let seqs: Vec<_> = payload
            .compacted_event_ids
            .iter()
            .map(|id| id.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        assert_eq!(payload.pruned_events, 5);
        assert_eq!(second.marker.seq, 5);
        assert_ne!(second.marker.event_id, first.marker.event_id);
    }

    #[test]
    fn snapshot_floor_and_zero_retention_protect() {
        assert!(CompactionPolicy::new(0, 1_000).unwrap().is_none());
        assert!(CompactionPolicy::new(1, u64::MAX).is_err());
        let policy = CompactionPolicy::new(500, 1_000).unwrap().unwrap();
        assert!(policy.prunes(&event(1, 100), Some(2)));
        assert!(!policy.prunes(&event(2, 100), Some(2)));
        assert!(!policy.prunes(&event(3, 500), None));
    }

    // An event imported from an older store may hold the id the marker would
    // take; the marker steps to the next candidate instead of sharing it.
    #[test]
    fn marker_ids_never_clash_with_held_ids() {
        let tenant = Tenant::local();
        let run = RunId::new("run-a").unwrap();
        let policy = CompactionPolicy::new(500, 1_000).unwrap().unwrap();
        let plain = marker_event_id(&tenant, &run, 2);
        // Pruned at seq 1, and live at seq 3: both clash with the plain id.
        for clash_seq in [1, 3] {
            let mut records: Vec<_> = (1..=3).map(|seq| event(seq, 100)).collect();
            records[2].occurred_at_ms = 900;
            records[clash_seq as usize - 1].event_id = plain.clone();
            let change = compact_stream(&tenant, &run, &records, None, &policy)
                .unwrap()
                .unwrap();
            assert_eq!(change.marker.seq, 2);
            assert_ne!(change.marker.event_id, plain);
            assert!(
                change
                    .marker
                    .event_id
                    .as_str()
                    .starts_with(COMPACTION_ID_PREFIX)
            );
            let again = compact_stream(&tenant, &run, &records, None, &policy)
                .unwrap()
                .unwrap();
            assert_eq!(again.marker, change.marker, "deterministic");
        }
        let clean: Vec<_> = (1..=2).map(|seq| event(seq, 100)).collect();
        let change = compact_stream(&tenant, &run, &clean, None, &policy)
            .unwrap()
            .unwrap();
        assert_eq!(change.marker.event_id, plain);
    }

    /// A stream compacted in steps of [`stream_step_events`] ends with
    /// byte-for-byte the marker one step writes: with an older marker, an
    /// event kept between pruned ones, and an ordinary event holding the
    /// id the final marker would take.
    #[test]
    fn steps_within_a_stream_write_the_marker_one_step_writes() {
        let tenant = Tenant::local();
        let run = RunId::new("run-a").unwrap();
        let first = CompactionPolicy::new(500, 1_000).unwrap().unwrap();
        let mut records: Vec<_> = (1..=40).map(|seq| event(seq, 100)).collect();
        records[2].occurred_at_ms = 900;
        records[6].occurred_at_ms = 600;
        let earlier = compact_stream(&tenant, &run, &records[..5], None, &first)
            .unwrap()
            .unwrap();
        let mut start: Vec<_> = records
            .iter()
            .filter(|record| !earlier.remove_seqs.contains(&record.seq))
            .cloned()
            .chain([earlier.marker])
            .collect();
        start.sort_by_key(|record| record.seq);
        let policy = CompactionPolicy::new(500, 2_000).unwrap().unwrap();
        // The event at seq 40 is kept, and holds the id the final marker
        // (through seq 39) would take.
        assert_eq!(start[36].seq, 40);
        start[36].event_id = marker_event_id(&tenant, &run, 39);
        start[36].occurred_at_ms = 1_900;
        let whole = compact_stream(&tenant, &run, &start, None, &policy)
            .unwrap()
            .unwrap();
        for budget in [1, 3, 7, 100] {
            let mut stream = start.clone();
            let mut pruned = 0;
            let mut steps = 0;
            loop {
                let old = stream.iter().find(|record| record.is_compaction_marker());
                let take = stream_step_events(budget, remembered_ids(old));
                let remembered = old.map_or(0, |marker| compacted_ids(marker).unwrap().len());
                assert_eq!(take, budget.max(remembered));
                let doomed: Vec<&EventRecord> = stream
                    .iter()
                    .filter(|record| policy.prunes(record, None))
                    .take(take)
                    .collect();
                if doomed.is_empty() {
                    break;
                }
                let marker = merge_marker(
                    &tenant,
                    &run,
                    old,
                    doomed.iter().copied(),
                    policy.now_ms(),
                    |id| {
                        Ok(stream
                            .iter()
                            .any(|record| !record.is_compaction_marker() && record.event_id == *id)
                            || compacted_ids(old.unwrap_or(&records[0]))?
                                .iter()
                                .any(|known| known.event_id == *id))
                    },
                )
                .unwrap();
                let gone: Vec<u64> = doomed
                    .iter()
                    .map(|record| record.seq)
                    .chain(old.map(|marker| marker.seq))
                    .collect();
                pruned += doomed.len();
                steps += 1;
                stream.retain(|record| !gone.contains(&record.seq));
                stream.push(marker);
                stream.sort_by_key(|record| record.seq);
            }
            assert!(steps > 1 || budget >= whole.pruned, "budget {budget}");
            assert_eq!(pruned, whole.pruned, "budget {budget}");
            let last = stream
                .iter()
                .find(|record| record.is_compaction_marker())
                .unwrap();
            assert_eq!(
                serde_json::to_string(last).unwrap(),
                serde_json::to_string(&whole.marker).unwrap(),
                "budget {budget}"
            );
        }
        assert_eq!(stream_step_events(0, remembered_ids(None)), 1);
    }

    /// The id is SHA-256 over the parts, each followed by NUL (CONTRACT §9):
    /// pinned here, computed outside this code, so that every backend and
    /// every version derive the same marker id.
    #[test]
    fn marker_ids_are_the_documented_hash() {
        let run = RunId::new("run-a").unwrap();
        assert_eq!(
            marker_event_id(&Tenant::local(), &run, 2).as_str(),
            format!(
                "{COMPACTION_ID_PREFIX}132a05efef57130be13bf01e4714c58589a9bf57069d655271fb4437e2f363b4"
            )
        );
        assert_eq!(
            marker_event_id_candidate(&Tenant::local(), &run, 2, 1).as_str(),
            format!(
                "{COMPACTION_ID_PREFIX}b474af0b87f1c1d1f6ffd1ed2e5fc8ced42b1b004ae6c94c61653bd9157b1d66"
            )
        );
    }
}
