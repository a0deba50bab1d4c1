//! [`EventLog`] for [`RedbStore`].

use std::ops::Bound;

use async_trait::async_trait;
use redb::{ReadableTable, ReadableTableMetadata as _, StorageError};
use runstore_core::{
    AppendOutcome, Error, EventId, EventLog, EventRecord, FeedPosition, FeedRecord, FeedSignal,
    MaintenanceReport, ReadQuery, Result, RunId, StreamKey, Tenant,
    raw::append::{plan_append_owned, plan_import},
    raw::compaction::{
        CompactionPolicy, STEPS_PER_COMMIT, compacted_ids, marker_payload, merge_marker,
        remembered_ids, stream_step_events,
    },
    raw::erasure::erasure_marker,
    validate::Limits,
};

use crate::{
    RedbStore,
    error::Failure,
    feed::{self, Positions},
    tables::{
        self, ERASED, EVENTS, HEADS, IDS, decode_event, decode_stream, encode_event, event_header,
        event_key, event_position, join, prefix_end, seq_of_event_key, split_order_key, stream_key,
        tenant_len, tenant_prefix,
    },
    writer::{LogTables, SnapshotTables, WriteTables},
};

/// The stream's last seq, 0 when it holds nothing.
fn head(
    heads: &impl ReadableTable<&'static [u8], u64>,
    stream: &[u8],
) -> Result<u64, StorageError> {
    Ok(heads.get(stream)?.map_or(0, |guard| guard.value()))
}

/// The seq an id has in the stream, live or compacted.
fn stored_seq(
    ids: &impl ReadableTable<&'static [u8], u64>,
    stream: &[u8],
    event_id: &EventId,
) -> Result<Option<u64>, StorageError> {
    let key = join(stream, event_id.as_str().as_bytes());
    Ok(ids.get(key.as_slice())?.map(|guard| guard.value()))
}

/// Looks ids up for the core planners, which take a closure returning the
/// core `Result`: a redb failure is kept aside and reported as such.
fn lookup<'a>(
    ids: &'a impl ReadableTable<&'static [u8], u64>,
    stream: &'a [u8],
    failed: &'a mut Option<StorageError>,
) -> impl FnMut(&EventId) -> Result<Option<u64>> + 'a {
    move |event_id| {
        stored_seq(ids, stream, event_id).map_err(|err| {
            let message = err.to_string();
            *failed = Some(err);
            Error::backend(crate::error::BACKEND, message)
        })
    }
}

/// The seq of the stream's newest snapshot: the compaction floor.
fn newest_snapshot_seq(
    order: &impl ReadableTable<&'static [u8], ()>,
    stream: &[u8],
) -> Result<Option<u64>, Failure> {
    let end = prefix_end(stream).expect("a stream key ends in a UTF-8 byte, never 0xff");
    let last = order.range(stream..end.as_slice())?.next_back();
    match last {
        None => Ok(None),
        Some(entry) => {
            let (key, _) = entry?;
            Ok(Some(split_order_key(stream, key.value())?.0))
        }
    }
}

/// Registers the ids `record` brings -- its own and, for a marker, those it
/// remembers -- keeping any the stream already knows: the first occurrence
/// in seq order wins, as a scan of the stream would find it.
fn register_ids(
    tables: &mut LogTables<'_, '_>,
    stream: &[u8],
    record: &EventRecord,
) -> Result<(), Failure> {
    let mut put = |event_id: &EventId, seq: u64| -> Result<(), Failure> {
        let key = join(stream, event_id.as_str().as_bytes());
        if tables.ids.get(key.as_slice())?.is_none() {
            tables.ids.insert(key.as_slice(), seq)?;
        }
        Ok(())
    };
    put(&record.event_id, record.seq)?;
    if record.is_compaction_marker() {
        // An import checked the payload before anything was written. An
        // appended event that only carries the marker type without a
        // marker's payload remembers nothing.
        if let Ok(remembered) = compacted_ids(record) {
            for id in remembered {
                put(&id.event_id, id.seq)?;
            }
        }
    }
    Ok(())
}

/// What an append hands back besides its outcomes: the records it built, so
/// that they are freed on the caller's thread rather than in the one writer
/// thread every append waits for.
type Spent = (Vec<EventRecord>, Vec<Vec<u8>>);

fn append(
    tables: &mut LogTables<'_, '_>,
    stream: &[u8],
    tenant: &Tenant,
    run_id: &RunId,
    events: Vec<EventRecord>,
    expected_last_seq: Option<u64>,
) -> Result<(Vec<AppendOutcome>, Spent), Failure> {
    let last = head(&*tables.heads, stream)?;
    let mut failed = None;
    let plan = plan_append_owned(
        tenant,
        run_id,
        last,
        events,
        expected_last_seq,
        lookup(&*tables.ids, stream, &mut failed),
    );
    if let Some(err) = failed {
        return Err(err.into());
    }
    let plan = plan?;
    let Some(new_last) = plan.new_records.last().map(|record| record.seq) else {
        return Ok((plan.outcomes, (plan.new_records, Vec::new())));
    };
    let mut encoded = plan
        .new_records
        .iter()
        .map(encode_event)
        .collect::<Result<Vec<_>>>()?;
    let tenant = tenant_len(stream, run_id);
    let mut positions = Positions::start(tables, stream, tenant, encoded.len())?;
    // Nothing is written above this line, so a refusal leaves the batch
    // intact.
    for (record, bytes) in plan.new_records.iter().zip(&mut encoded) {
        positions.take(tables, record.seq, bytes)?;
        let key = event_key(stream, record.seq);
        tables.events.insert(key.as_slice(), bytes.as_slice())?;
        // The planner found the id absent; ids a marker-typed event names are
        // only added where absent.
        let key = join(stream, record.event_id.as_str().as_bytes());
        tables.ids.insert(key.as_slice(), record.seq)?;
        if record.is_compaction_marker() {
            register_ids(tables, stream, record)?;
        }
    }
    tables.heads.insert(stream, new_last)?;
    positions.finish(tables)?;
    Ok((plan.outcomes, (plan.new_records, encoded)))
}

fn import(
    tables: &mut WriteTables<'_>,
    stream: &[u8],
    tenant: &Tenant,
    run_id: &RunId,
    records: &[EventRecord],
) -> Result<usize, Failure> {
    let (mut tables, erased) = tables.log_and_erased()?;
    let tables = &mut tables;
    let last = head(&*tables.heads, stream)?;
    let mut failed = None;
    let missing = plan_import(
        tenant,
        run_id,
        last,
        records,
        lookup(&*tables.ids, stream, &mut failed),
    );
    if let Some(err) = failed {
        return Err(err.into());
    }
    let missing = missing?;
    let Some(new_last) = missing.last().map(|record| record.seq) else {
        return Ok(0);
    };
    let mut encoded = missing
        .iter()
        .map(encode_event)
        .collect::<Result<Vec<_>>>()?;
    let tenant = tenant_len(stream, run_id);
    let mut positions = Positions::start(tables, stream, tenant, encoded.len())?;
    for (record, bytes) in missing.iter().zip(&mut encoded) {
        positions.take(tables, record.seq, bytes)?;
        let key = event_key(stream, record.seq);
        tables.events.insert(key.as_slice(), bytes.as_slice())?;
        // First occurrence wins, as a scan in seq order would find it.
        register_ids(tables, stream, record)?;
    }
    tables.heads.insert(stream, new_last)?;
    positions.finish(tables)?;
    // A deleted run imported stays a deleted run: `list_runs` leaves it out
    // as the source store did. Only an empty stream can take one (a marker
    // imports into an empty stream only, `plan_import`); what an import
    // adds to a deleted run is events, which bring it back.
    if last == 0 && missing.iter().all(remembers_nothing) {
        erased.insert(stream, new_last)?;
    }
    Ok(missing.len())
}

/// Whether `record` is a marker that remembers no id: the only kind of
/// record a deleted run holds (CONTRACT §27). A marker whose payload does
/// not parse is taken to remember something.
fn remembers_nothing(record: &EventRecord) -> bool {
    record.is_compaction_marker()
        && marker_payload(record).is_ok_and(|payload| payload.compacted_event_ids.is_empty())
}

/// Deletes `tenant`'s `run_id` (CONTRACT §27, `raw::erasure`) in the
/// writer's transaction, so it is serialised with the stream's appends and
/// committed with them or not at all: every `events` entry and every `ids`
/// entry of the stream go, the erasure marker is written at the last seq
/// as compaction writes a marker (in `events`, and its own id in `ids`),
/// the head keeps the last seq and `erased` records it. Answers the
/// ordinary events deleted (a stream whose events were all compacted
/// answers 0 and is deleted all the same); `None` for a stream that holds
/// nothing, or only markers that remember no id (a deleted run), which is
/// left as it is.
fn delete(
    tables: &mut WriteTables<'_>,
    stream: &[u8],
    tenant: &Tenant,
    run_id: &RunId,
) -> Result<Option<usize>, Failure> {
    let (mut tables, erased) = tables.log_and_erased()?;
    let last = head(&*tables.heads, stream)?;
    if last == 0 {
        return Ok(None);
    }
    let (first, end) = (event_key(stream, 0), event_key(stream, u64::MAX));
    let mut ordinary = 0;
    let mut remembers = false;
    // Every record leaves the feed: its position is in its header.
    let mut positions = Vec::new();
    // Headers say which records are markers; only markers are parsed.
    for entry in tables.events.range(first.as_slice()..=end.as_slice())? {
        let (entry_key, value) = entry?;
        positions.push(event_position(value.value()));
        match event_header(value.value()) {
            Some((true, _)) => {
                let seq = seq_of_event_key(stream, entry_key.value())?;
                let marker = decode_event(stream, seq, value.value());
                // A marker that does not parse is deleted like the rest.
                remembers |= !marker.as_ref().is_ok_and(remembers_nothing);
            }
            // A record whose header is cut short is deleted like any other.
            _ => ordinary += 1,
        }
    }
    if ordinary == 0 && !remembers {
        return Ok(None);
    }
    let marker = erasure_marker(tenant, run_id, last);
    let mut marker_bytes = encode_event(&marker)?;
    let tenant_bytes = tenant_len(stream, run_id);
    let mut position = Positions::start(&tables, stream, tenant_bytes, 1)?;
    // Nothing is written above this line, so a refusal leaves the batch
    // intact.
    tables
        .events
        .retain_in(first.as_slice()..=end.as_slice(), |_, _| false)?;
    // A corrupt feed entry is met only now: abandon, so that the events
    // just removed are not committed without their erasure marker.
    feed::leave(&mut tables, &stream[..tenant_bytes], positions).map_err(Failure::after_writes)?;
    // Live ids, remembered ids and the old marker's own: every key of the
    // stream's range (no stream key is a prefix of another).
    let ids_end = prefix_end(stream).expect("a stream key ends in a UTF-8 byte, never 0xff");
    tables
        .ids
        .retain_in(stream..ids_end.as_slice(), |_, _| false)?;
    // The marker is a new record: a new position, above every other.
    position.take(&mut tables, last, &mut marker_bytes)?;
    let key = event_key(stream, last);
    tables
        .events
        .insert(key.as_slice(), marker_bytes.as_slice())?;
    let key = join(stream, marker.event_id.as_str().as_bytes());
    tables.ids.insert(key.as_slice(), last)?;
    position.finish(&mut tables)?;
    // The head keeps `last`: the seqs are never reused.
    erased.insert(stream, last)?;
    Ok(Some(ordinary))
}

/// What the steps of a stream's compaction taken so far in one transaction
/// carry to the next: the core's "Several steps in one commit" lets a step
/// that leaves its stream unfinished delete its pruned events without
/// writing the marker, which the stream's last step in the transaction
/// writes once ([`write_marker`], [`flush`]).
struct Carried {
    stream: Vec<u8>,
    key: StreamKey,
    /// The stream's marker as the transaction found it, with its feed
    /// position.
    old_marker: Option<(EventRecord, Option<u64>)>,
    /// Every event the steps pruned, ascending by seq.
    pruned: Vec<EventRecord>,
    /// The seqs of the pruned events no step has taken yet, ascending.
    rest: Vec<u64>,
}

impl Carried {
    /// The ids the stream's marker would remember were it written now.
    fn remembered(&self) -> usize {
        remembered_ids(self.old_marker.as_ref().map(|(marker, _)| marker)) + self.pruned.len()
    }
}

/// One step of a stream's compaction, computed before the step writes.
struct Change {
    state: Carried,
    /// This step's pruned seqs, ascending, and their feed positions.
    seqs: Vec<u64>,
    left: Vec<Option<u64>>,
    /// The marker and its encoding, when this step writes it: computed
    /// before anything is written, so that a refusal writes nothing of a
    /// stream no earlier step of the transaction took.
    marker: Option<(EventRecord, Vec<u8>)>,
}

impl Change {
    /// Whether the stream has more to prune than its steps took.
    fn unfinished(&self) -> bool {
        !self.state.rest.is_empty()
    }
}

/// One step of a stream's compaction: its first [`stream_step_events`]
/// pruned events by seq (`budget` is what the step has left), merged into
/// its marker. `None` when nothing in it is old enough. A stream an earlier
/// step of the transaction left unfinished goes on from `carried`, without
/// reading its records again. The marker is computed now when the step
/// finishes the stream; one it leaves unfinished is carried, and its marker
/// written by a later step or as the transaction ends.
#[allow(clippy::too_many_arguments)]
fn compact_stream(
    tables: &LogTables<'_, '_>,
    snapshots: &SnapshotTables<'_, '_>,
    stream: Vec<u8>,
    key: StreamKey,
    policy: &CompactionPolicy,
    limits: &Limits,
    budget: usize,
    carried: Option<Carried>,
) -> Result<Option<Change>, Failure> {
    let mut state = match carried {
        Some(state) => state,
        None => match candidates(tables, snapshots, stream, key, policy)? {
            Some(state) => state,
            None => return Ok(None),
        },
    };
    let take = stream_step_events(budget, state.remembered()).min(state.rest.len());
    let seqs: Vec<u64> = state.rest.drain(..take).collect();
    let mut left = Vec::with_capacity(seqs.len());
    state.pruned.reserve(seqs.len());
    for &seq in &seqs {
        let entry = tables
            .events
            .get(event_key(&state.stream, seq).as_slice())?
            .ok_or_else(|| {
                Error::corrupt(
                    format!(
                        "events table, {}, seq {seq}",
                        tables::describe_stream(&state.stream)
                    ),
                    "the record vanished within one transaction",
                )
            })?;
        state
            .pruned
            .push(decode_event(&state.stream, seq, entry.value())?);
        left.push(event_position(entry.value()));
    }
    // A step writes a marker for at most this many streams; refused here,
    // before the step writes anything, when the positions left cannot
    // hold them.
    Positions::start(
        tables,
        &state.stream,
        tenant_len(&state.stream, &state.key.run_id),
        COMPACT_STEP_EVENTS,
    )?;
    let marker = if state.rest.is_empty() {
        Some(marker_of(tables, limits, policy, &state)?)
    } else {
        None
    };
    Ok(Some(Change {
        state,
        seqs,
        left,
        marker,
    }))
}

/// A stream's compaction as a transaction finds it: its old marker and the
/// seqs of the events `policy` prunes; `None` when nothing is old enough.
fn candidates(
    tables: &LogTables<'_, '_>,
    snapshots: &SnapshotTables<'_, '_>,
    stream: Vec<u8>,
    key: StreamKey,
    policy: &CompactionPolicy,
) -> Result<Option<Carried>, Failure> {
    let floor = newest_snapshot_seq(&*snapshots.order, &stream)?;
    let mut old_marker = None;
    let mut rest = Vec::new();
    let first = event_key(&stream, 0);
    let last = event_key(&stream, u64::MAX);
    // One pass over the headers says which records matter; only the marker
    // is parsed here, and the pruned events each step takes.
    for entry in tables.events.range(first.as_slice()..=last.as_slice())? {
        let (entry_key, value) = entry?;
        let seq = seq_of_event_key(&stream, entry_key.value())?;
        let (is_marker, occurred_at_ms) = event_header(value.value()).ok_or_else(|| {
            Error::corrupt(
                format!(
                    "events table, {}, seq {seq}",
                    tables::describe_stream(&stream)
                ),
                "value shorter than its header",
            )
        })?;
        if is_marker && old_marker.is_none() {
            old_marker = Some((
                decode_event(&stream, seq, value.value())?,
                event_position(value.value()),
            ));
        } else if policy.prunes_parts(is_marker, seq, occurred_at_ms, floor) {
            rest.push(seq);
        }
    }
    if rest.is_empty() {
        return Ok(None);
    }
    // The old marker's payload is read now, before the stream's first step
    // writes: a step that leaves the stream unfinished builds no marker, so
    // a malformed one would otherwise be found only after its deletes, by
    // a later step or the transaction's end, where it abandons every
    // request of the batch instead of refusing this stream.
    if let Some((marker, _)) = &old_marker {
        marker_payload(marker)?;
    }
    Ok(Some(Carried {
        stream,
        key,
        old_marker,
        pruned: Vec::new(),
        rest,
    }))
}

/// The stream's new marker, from its old one and every event its steps
/// pruned, checked and encoded.
fn marker_of(
    tables: &LogTables<'_, '_>,
    limits: &Limits,
    policy: &CompactionPolicy,
    state: &Carried,
) -> Result<(EventRecord, Vec<u8>), Failure> {
    let (stream, key) = (state.stream.as_slice(), &state.key);
    let old = state.old_marker.as_ref().map(|(marker, _)| marker);
    let mut failed = None;
    // `ids` holds every id of the stream: its events', live or pruned, and
    // the old marker's own, which the new marker replaces and so does not
    // count as held.
    let marker = {
        let mut seq_of = lookup(&*tables.ids, stream, &mut failed);
        merge_marker(
            &key.tenant,
            &key.run_id,
            old,
            &state.pruned,
            policy.now_ms(),
            |id| {
                Ok(seq_of(id)?.is_some_and(|seq| {
                    old.is_none_or(|marker| marker.event_id != *id || marker.seq != seq)
                }))
            },
        )
    };
    if let Some(err) = failed {
        return Err(err.into());
    }
    let marker = marker?;
    // The marker is a record compaction writes: it passes the checks an
    // imported one does (CONTRACT §21), so nothing taken from old records
    // into it can break a limit.
    if let Err(err) = limits.check_import(&key.run_id, std::slice::from_ref(&marker)) {
        let reason = match err {
            Error::InvalidInput { reason } => reason,
            other => other.to_string(),
        };
        return Err(Error::corrupt(
            format!("events table, stream {key}"),
            format!(
                "the compaction marker at seq {} built from the stream's records breaks a limit: \
                 {reason}",
                marker.seq
            ),
        )
        .into());
    }
    let bytes = encode_event(&marker)?;
    Ok((marker, bytes))
}

/// Writes one step of a stream's compaction: deletes its pruned events and
/// takes them out of the feed, then writes the marker if the step has one.
/// Answers the stream's state when its marker is left for a later step.
fn apply(tables: &mut LogTables<'_, '_>, change: Change) -> Result<Option<Carried>, Failure> {
    let Change {
        state,
        seqs,
        left,
        marker,
    } = change;
    let stream = state.stream.as_slice();
    // The pruned ids stay in `ids`: the marker remembers them.
    if let (Some(&low), Some(&high)) = (seqs.first(), seqs.last()) {
        let (low, high) = (event_key(stream, low), event_key(stream, high));
        tables
            .events
            .retain_in(low.as_slice()..=high.as_slice(), |key: &[u8], _| {
                let seq = key
                    .len()
                    .checked_sub(8)
                    .and_then(|at| key.get(at..))
                    .and_then(|raw| <[u8; 8]>::try_from(raw).ok())
                    .map(u64::from_be_bytes);
                seq.is_none_or(|seq| seqs.binary_search(&seq).is_err())
            })?;
        let tenant = tenant_len(stream, &state.key.run_id);
        feed::leave(tables, &stream[..tenant], left)?;
    }
    match marker {
        Some(marker) => {
            write_marker(tables, &state, marker)?;
            Ok(None)
        }
        None => Ok(Some(state)),
    }
}

/// Swaps the stream's old marker for `marker`.
fn write_marker(
    tables: &mut LogTables<'_, '_>,
    state: &Carried,
    (marker, mut marker_bytes): (EventRecord, Vec<u8>),
) -> Result<(), Failure> {
    let stream = state.stream.as_slice();
    let tenant = tenant_len(stream, &state.key.run_id);
    if let Some((old, _)) = &state.old_marker {
        tables
            .events
            .remove(event_key(stream, old.seq).as_slice())?;
        let key = join(stream, old.event_id.as_str().as_bytes());
        let points_here = tables
            .ids
            .get(key.as_slice())?
            .is_some_and(|guard| guard.value() == old.seq);
        if points_here {
            tables.ids.remove(key.as_slice())?;
        }
    }
    // The marker is a new record: a new position, above every other
    // (`compact_stream` checked there is room).
    let mut position = Positions::start(tables, stream, tenant, 1)?;
    position.take(tables, marker.seq, &mut marker_bytes)?;
    let key = event_key(stream, marker.seq);
    tables
        .events
        .insert(key.as_slice(), marker_bytes.as_slice())?;
    // `merge_marker` chose an id no event of the stream holds.
    let key = join(stream, marker.event_id.as_str().as_bytes());
    tables.ids.insert(key.as_slice(), marker.seq)?;
    // The marker replaced leaves the feed.
    if let Some((_, old_position)) = &state.old_marker {
        feed::leave(tables, &stream[..tenant], [*old_position])?;
    }
    position.finish(tables)?;
    Ok(())
}

/// Writes the marker of a stream whose steps left it to a later one, as
/// the transaction ends before that step.
fn flush(
    tables: &mut WriteTables<'_>,
    policy: &CompactionPolicy,
    limits: &Limits,
    state: &Carried,
) -> Result<(), Failure> {
    let (mut tables, _) = tables.all()?;
    let marker = marker_of(&tables, limits, policy, state)?;
    write_marker(&mut tables, state, marker)
}

/// How many events one compaction step prunes at most before its
/// transaction commits and lets the writes queued meanwhile go first (or,
/// with none waiting, goes on with the next step, see [`compact`]). A
/// stream with more goes over several steps ([`stream_step_events`]).
const COMPACT_STEP_EVENTS: usize = 256;

/// Which streams one compaction step takes.
#[derive(Debug, Clone)]
enum Streams {
    /// The streams from this bound on, in key order, until
    /// [`COMPACT_STEP_EVENTS`] events are pruned.
    From(Bound<Vec<u8>>),
    /// This stream alone.
    Only(Vec<u8>),
}

/// Where a compaction pass goes on: `None` once it is done.
type Resume = Option<Bound<Vec<u8>>>;

/// The stream heads from `from` on, in key order: where a compaction pass
/// goes on.
fn heads_from<'a>(
    heads: &'a impl ReadableTable<&'static [u8], u64>,
    from: Bound<&[u8]>,
) -> Result<redb::Range<'a, &'static [u8], u64>, StorageError> {
    heads.range::<&[u8]>((from, Bound::Unbounded))
}

/// Steps of a compaction pass, in the writer's transaction: up to `steps`
/// steps ([`compact_step`]), each going on where the last left off, while
/// no other request waits ([`WriteTables::writes_waiting`]) and the pass is
/// not done (the core's "Several steps in one commit"). A stream a step
/// leaves unfinished is carried to the next step with its marker unwritten;
/// its marker is written by the step that finishes it, or before the
/// transaction ends. Answers the report and where the pass goes on.
///
/// A failure fails the transaction, with every step it took (the caller
/// then retries its streams one by one).
fn compact(
    tables: &mut WriteTables<'_>,
    policy: &CompactionPolicy,
    limits: &Limits,
    streams: Streams,
    fault: Option<&[u8]>,
    steps: usize,
) -> Result<(MaintenanceReport, Resume), Failure> {
    let mut report = MaintenanceReport::default();
    let mut streams = streams;
    // Where the running step started, when a step came before it.
    let mut started: Option<Bound<Vec<u8>>> = None;
    let mut carried = None;
    let mut taken = 0;
    loop {
        // A failure of a step that goes on with a carried stream comes
        // after the stream's earlier steps deleted events.
        let carrying = carried.is_some();
        let step =
            compact_step(tables, policy, limits, streams, fault, &mut carried).map_err(|failure| {
                if carrying {
                    failure.after_writes()
                } else {
                    failure
                }
            });
        let (step, resume) = match step {
            Ok(step) => step,
            // A refusal answers a request that wrote nothing; the steps
            // before this one have written, so they commit, and the next
            // request meets the refusal in its first step. (A step that
            // went on with a carried stream abandons instead.)
            Err(Failure::Rejected(_)) if started.is_some() => {
                report.sort();
                return Ok((report, started));
            }
            Err(failure) => return Err(failure),
        };
        report.removed += step.removed;
        report.failed.extend(step.failed);
        taken += 1;
        match resume {
            Some(from) if taken < steps && !tables.writes_waiting() => {
                started = Some(from.clone());
                streams = Streams::From(from);
            }
            resume => {
                // The transaction ends: a stream the step carried gets its
                // marker now, after its steps deleted events.
                if let Some(state) = carried.take() {
                    flush(tables, policy, limits, &state).map_err(Failure::after_writes)?;
                }
                report.sort();
                return Ok((report, resume));
            }
        }
    }
}

/// One step of a compaction pass, in the writer's transaction: compacts
/// `streams` and answers the report and where the pass goes on (`None`
/// once it is done): after the last stream the step took, or at it again
/// when the step left it unfinished. `carried` is the stream the step
/// before left unfinished, its marker unwritten, which the step goes on
/// with; the step leaves there the stream it leaves unfinished (the
/// caller writes its marker before the transaction ends).
///
/// A stream that cannot be compacted (an unreadable record, a malformed
/// marker) is reported and left as it is; the others are compacted
/// (CONTRACT §25). A redb failure fails the transaction, and with it the
/// step (the caller then retries its streams one by one); so must any
/// failure of a step that goes on with a carried stream, whose earlier
/// steps have deleted events (the caller abandons the transaction).
fn compact_step(
    tables: &mut WriteTables<'_>,
    policy: &CompactionPolicy,
    limits: &Limits,
    streams: Streams,
    fault: Option<&[u8]>,
    carried: &mut Option<Carried>,
) -> Result<(MaintenanceReport, Resume), Failure> {
    let (mut tables, snapshots) = tables.all()?;
    let mut report = MaintenanceReport::default();
    // Every stream's change is computed before the first write, so a
    // refusal writes nothing of its stream (one carried has written).
    let mut changes = Vec::new();
    let mut pruned = 0;
    let mut resume = None;
    let mut step = |stream: Vec<u8>,
                    budget: usize,
                    changes: &mut Vec<Change>|
     -> Result<(usize, bool), Failure> {
        let (key, _) = decode_stream(&stream)?;
        let carry = carried.take_if(|state| state.stream == stream);
        let went_on = carry.is_some();
        match compact_stream(
            &tables,
            &snapshots,
            stream,
            key.clone(),
            policy,
            limits,
            budget,
            carry,
        ) {
            Ok(Some(change)) => {
                let taken = (change.seqs.len(), change.unfinished());
                changes.push(change);
                Ok(taken)
            }
            Ok(None) => Ok((0, false)),
            Err(Failure::Rejected(err)) if !went_on => {
                report.record(&key, Err(err));
                Ok((0, false))
            }
            Err(failure) => Err(failure.after_writes()),
        }
    };
    match streams {
        Streams::Only(stream) => {
            let (_, unfinished) = step(stream.clone(), COMPACT_STEP_EVENTS, &mut changes)?;
            resume = unfinished.then_some(Bound::Included(stream));
        }
        Streams::From(from) => {
            let mut range = heads_from(&*tables.heads, from.as_ref().map(Vec::as_slice))?;
            let mut last = None;
            for entry in range.by_ref() {
                let stream = entry?.0.value().to_vec();
                let (count, unfinished) =
                    step(stream.clone(), COMPACT_STEP_EVENTS - pruned, &mut changes)?;
                pruned += count;
                if unfinished {
                    resume = Some(Bound::Included(stream));
                    break;
                }
                last = Some(stream);
                if pruned >= COMPACT_STEP_EVENTS {
                    break;
                }
            }
            if resume.is_none() && range.next().is_some() {
                resume = last.map(Bound::Excluded);
            }
        }
    }
    // A carried stream is the first the step meets; one the step did not
    // meet is a bug, which must not commit without its marker.
    if let Some(state) = carried.as_ref() {
        return Err(Failure::Abandon(Error::corrupt(
            format!("events table, stream {}", state.key),
            "a compaction step did not go on with the stream the step before left unfinished",
        )));
    }
    for change in changes {
        if fault == Some(change.state.stream.as_slice()) {
            return Err(Failure::Redb(redb::Error::ValueTooLarge(usize::MAX)));
        }
        let (key, count) = (change.state.key.clone(), change.seqs.len());
        // `apply` writes before it can meet a corrupt feed head or entry:
        // such a refusal must not let the batch commit the half.
        *carried = apply(&mut tables, change).map_err(Failure::after_writes)?;
        report.record(&key, Ok(count));
    }
    report.sort();
    Ok((report, resume))
}

fn decode_entry(stream: &[u8], key: &[u8], value: &[u8]) -> Result<EventRecord, Failure> {
    decode_event(stream, seq_of_event_key(stream, key)?, value)
}

/// The inclusive seq bounds of a read window, or `None` when it is empty.
fn seq_bounds(query: &ReadQuery) -> Option<(u64, u64)> {
    let low = match query.after_seq {
        Some(after) => after.checked_add(1)?,
        None => 0,
    };
    let high = match query.before_seq {
        Some(before) => before.checked_sub(1)?,
        None => u64::MAX,
    };
    (low <= high).then_some((low, high))
}

fn streams_of(
    heads: &impl ReadableTable<&'static [u8], u64>,
    prefix: &[u8],
) -> Result<Vec<StreamKey>, Failure> {
    let mut streams = Vec::new();
    let end = prefix_end(prefix);
    let range = match &end {
        Some(end) => heads.range(prefix..end.as_slice())?,
        None => heads.range(prefix..)?,
    };
    for entry in range {
        let (key, _) = entry?;
        streams.push(decode_stream(key.value())?.0);
    }
    streams.sort();
    Ok(streams)
}

/// The streams of `prefix` ([`streams_of`]) less the deleted runs: those
/// whose head equals their `erased` entry. The tenant's `erased` range is
/// read once beside its `heads` range, so a listing costs one more range
/// scan over the tenant's deleted runs, never a probe per run.
fn live_streams_of(
    heads: &impl ReadableTable<&'static [u8], u64>,
    erased: &impl ReadableTable<&'static [u8], u64>,
    prefix: &[u8],
) -> Result<Vec<StreamKey>, Failure> {
    let end = prefix_end(prefix);
    let mut deleted = std::collections::HashMap::new();
    let erased_range = match &end {
        Some(end) => erased.range(prefix..end.as_slice())?,
        None => erased.range(prefix..)?,
    };
    for entry in erased_range {
        let (key, seq) = entry?;
        deleted.insert(key.value().to_vec(), seq.value());
    }
    let heads_range = match &end {
        Some(end) => heads.range(prefix..end.as_slice())?,
        None => heads.range(prefix..)?,
    };
    let mut streams = Vec::new();
    for entry in heads_range {
        let (key, last) = entry?;
        if deleted.get(key.value()) == Some(&last.value()) {
            continue;
        }
        streams.push(decode_stream(key.value())?.0);
    }
    streams.sort();
    Ok(streams)
}

impl RedbStore {
    /// The first stream from the bound `from` on, with its key, if any.
    async fn stream_from(&self, from: Bound<Vec<u8>>) -> Result<Option<(StreamKey, Vec<u8>)>> {
        self.read_txn(move |txn| {
            let heads = txn.open_table(HEADS)?;
            match heads_from(&heads, from.as_ref().map(Vec::as_slice))?.next() {
                Some(entry) => {
                    let stream = entry?.0.value().to_vec();
                    Ok(Some((decode_stream(&stream)?.0, stream)))
                }
                None => Ok(None),
            }
        })
        .await
    }
}

#[async_trait]
impl EventLog for RedbStore {
    async fn append_batch(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        events: &[EventRecord],
        expected_last_seq: Option<u64>,
    ) -> Result<Vec<AppendOutcome>> {
        // CONTRACT §21: checked before anything is queued.
        self.limits().check_append(run_id, events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let stream = stream_key(tenant, run_id);
        let (tenant, run_id, events) = (tenant.clone(), run_id.clone(), events.to_vec());
        let (outcomes, spent) = self
            .writer()
            .submit(move |tables| {
                let appended = append(
                    &mut tables.log()?,
                    &stream,
                    &tenant,
                    &run_id,
                    events,
                    expected_last_seq,
                )?;
                if appended.0.iter().all(|outcome| !outcome.inserted) {
                    // Every event was stored already (CONTRACT §2).
                    tables.wrote_nothing();
                }
                Ok(appended)
            })
            .await?;
        drop(spent);
        Ok(outcomes)
    }

    async fn read(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        query: ReadQuery,
    ) -> Result<Vec<EventRecord>> {
        let Some((low, high)) = seq_bounds(&query) else {
            return Ok(Vec::new());
        };
        let stream = stream_key(tenant, run_id);
        self.read_txn(move |txn| {
            let table = txn.open_table(EVENTS)?;
            let (first, last) = (event_key(&stream, low), event_key(&stream, high));
            let range = table.range(first.as_slice()..=last.as_slice())?;
            let limit = query.effective_limit().unwrap_or(usize::MAX);
            let mut records = Vec::with_capacity(limit.min(1024));
            if query.tail {
                for entry in range.rev().take(limit) {
                    let (key, value) = entry?;
                    records.push(decode_entry(&stream, key.value(), value.value())?);
                }
                records.reverse();
            } else {
                for entry in range.take(limit) {
                    let (key, value) = entry?;
                    records.push(decode_entry(&stream, key.value(), value.value())?);
                }
            }
            Ok(records)
        })
        .await
    }

    async fn next_seq(&self, tenant: &Tenant, run_id: &RunId) -> Result<u64> {
        let stream = stream_key(tenant, run_id);
        self.read_txn(move |txn| {
            let heads = txn.open_table(HEADS)?;
            let last = head(&heads, &stream)?;
            // Writes never pass `MAX_SEQ`; a head above it came from
            // elsewhere, and at `u64::MAX` it has no next seq.
            last.checked_add(1).ok_or_else(|| {
                Error::corrupt(
                    format!("heads table, {}", tables::describe_stream(&stream)),
                    format!("last seq {last} leaves no next seq"),
                )
                .into()
            })
        })
        .await
    }

    async fn seq_of(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        event_id: &EventId,
    ) -> Result<Option<u64>> {
        let stream = stream_key(tenant, run_id);
        let event_id = event_id.clone();
        self.read_txn(move |txn| {
            let ids = txn.open_table(IDS)?;
            Ok(stored_seq(&ids, &stream, &event_id)?)
        })
        .await
    }

    async fn list_runs(&self, tenant: &Tenant) -> Result<Vec<RunId>> {
        let prefix = tenant_prefix(tenant);
        let tenant = tenant.clone();
        self.read_txn(move |txn| {
            let heads = txn.open_table(HEADS)?;
            let erased = txn.open_table(ERASED)?;
            let streams = live_streams_of(&heads, &erased, &prefix)?;
            Ok(streams
                .into_iter()
                .filter(|stream| stream.tenant == tenant)
                .map(|stream| stream.run_id)
                .collect())
        })
        .await
    }

    async fn compact(&self, retention_ms: u64, now_ms: u64) -> Result<MaintenanceReport> {
        let Some(policy) = CompactionPolicy::new(retention_ms, now_ms)? else {
            return Ok(MaintenanceReport::default());
        };
        let limits = *self.limits();
        // The pass walks the streams in key order, in steps of a few
        // hundred pruned events (a long stream over several steps), so
        // writes queued meanwhile wait for one step, not for the whole pass;
        // a request takes up to `steps` of them while no write waits.
        let mut report = MaintenanceReport::default();
        let mut from: Bound<Vec<u8>> = Bound::Unbounded;
        let mut steps = STEPS_PER_COMMIT;
        loop {
            let fault = self.maintenance_fault();
            let streams = Streams::From(from.clone());
            let step = self
                .writer()
                .submit(move |tables| {
                    compact(tables, &policy, &limits, streams, fault.as_deref(), steps)
                })
                .await;
            let resume = match step {
                Ok((done, resume)) => {
                    report.removed += done.removed;
                    report.failed.extend(done.failed);
                    resume
                }
                Err(err @ Error::Poisoned { .. }) => return Err(err),
                // redb failed the request's transaction: the next stream goes
                // alone, so that only a stream whose own writes fail is
                // reported (CONTRACT §25), and the pass goes on after it, a
                // step per transaction, so that a failure further on
                // rolls back one step's work, not many.
                Err(_) => {
                    steps = 1;
                    let Some((key, stream)) = self.stream_from(from.clone()).await? else {
                        break;
                    };
                    let fault = self.maintenance_fault();
                    let only = Streams::Only(stream.clone());
                    let one = self
                        .writer()
                        .submit(move |tables| {
                            compact(tables, &policy, &limits, only, fault.as_deref(), 1)
                        })
                        .await;
                    match one {
                        // Unfinished: the next step starts at it again.
                        Ok((one, Some(again))) => {
                            report.removed += one.removed;
                            report.failed.extend(one.failed);
                            Some(again)
                        }
                        Ok((one, None)) => {
                            report.removed += one.removed;
                            report.failed.extend(one.failed);
                            Some(Bound::Excluded(stream))
                        }
                        Err(err @ Error::Poisoned { .. }) => return Err(err),
                        Err(err) => {
                            report.record(&key, Err(err));
                            Some(Bound::Excluded(stream))
                        }
                    }
                }
            };
            match resume {
                Some(next) => from = next,
                None => break,
            }
        }
        report.sort();
        Ok(report)
    }

    async fn streams(&self) -> Result<Vec<StreamKey>> {
        self.read_txn(move |txn| {
            let heads = txn.open_table(HEADS)?;
            if heads.is_empty()? {
                return Ok(Vec::new());
            }
            streams_of(&heads, &[])
        })
        .await
    }

    async fn import_stream(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        records: &[EventRecord],
    ) -> Result<usize> {
        // CONTRACT §23: checked before anything is queued.
        self.limits().check_import(run_id, records)?;
        if records.is_empty() {
            return Ok(0);
        }
        let stream = stream_key(tenant, run_id);
        let (tenant, run_id, records) = (tenant.clone(), run_id.clone(), records.to_vec());
        self.writer()
            .submit(move |tables| import(tables, &stream, &tenant, &run_id, &records))
            .await
    }

    async fn read_feed(
        &self,
        tenant: &Tenant,
        after: FeedPosition,
        limit: usize,
    ) -> Result<Vec<FeedRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let prefix = tenant_prefix(tenant);
        self.read_txn(move |txn| feed::read(txn, &prefix, after, limit))
            .await
    }

    fn feed_signal(&self) -> Option<FeedSignal> {
        Some(self.inner.feed_signal.clone())
    }

    async fn delete_run(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
        let stream = stream_key(tenant, run_id);
        let (tenant, run_id) = (tenant.clone(), run_id.clone());
        self.writer()
            .submit(move |tables| {
                let deleted = delete(tables, &stream, &tenant, &run_id)?;
                if deleted.is_none() {
                    // Nothing to delete: a batch of such jobs commits
                    // nothing and costs no sync.
                    tables.wrote_nothing();
                }
                Ok(deleted.unwrap_or(0))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use runstore_conformance::support::expect_corrupt;

    use super::*;

    #[test]
    fn seq_bounds_follow_the_window() {
        assert_eq!(seq_bounds(&ReadQuery::all()), Some((0, u64::MAX)));
        assert_eq!(
            seq_bounds(&ReadQuery::all().after(3).before(5)),
            Some((4, 4))
        );
        assert_eq!(seq_bounds(&ReadQuery::all().after(4).before(5)), None);
        assert_eq!(seq_bounds(&ReadQuery::all().before(0)), None);
        assert_eq!(seq_bounds(&ReadQuery::all().after(u64::MAX)), None);
    }

    use runstore_core::{
        EventLogExt,
        validate::{MAX_DEPTH, nested_arrays},
    };

    use std::sync::atomic::Ordering;

    use crate::RedbOptions;

    fn tenant() -> Tenant {
        Tenant::new("org", "ws", None).unwrap()
    }

    fn event(run: &str, id: &str, seq: u64, at: u64) -> EventRecord {
        let mut record = EventRecord::new(
            &tenant(),
            RunId::new(run).unwrap(),
            EventId::new(id).unwrap(),
            "t",
            at,
        );
        record.seq = seq;
        record
    }

    /// Appends `count` events that occurred at 10 to each run of `runs`.
    async fn old_streams(store: &RedbStore, runs: &[(&str, usize)]) {
        for &(r, count) in runs {
            let events: Vec<EventRecord> = (0..count)
                .map(|n| event(r, &format!("{r}{n}"), 0, 10))
                .collect();
            let run = RunId::new(r).unwrap();
            for chunk in events.chunks(500) {
                store
                    .append_batch(&tenant(), &run, chunk, None)
                    .await
                    .unwrap();
            }
        }
    }

    /// A store whose run `a` holds 10 old events and whose feed entry of
    /// them is corrupt (a value too short to decode).
    async fn with_a_corrupt_feed_entry(dir: &tempfile::TempDir) -> (RedbStore, RunId) {
        let store = open(dir).await;
        let run = RunId::new("a").unwrap();
        old_streams(&store, &[("a", 10)]).await;
        let a = stream_key(&tenant(), &run);
        let entry = crate::tables::feed_key(&a[..crate::tables::tenant_len(&a, &run)], 1);
        store
            .writer()
            .submit(move |tables| {
                tables
                    .log()?
                    .feed
                    .insert(entry.as_slice(), [1_u8, 2, 3].as_slice())?;
                Ok(())
            })
            .await
            .unwrap();
        (store, run)
    }

    async fn open(dir: &tempfile::TempDir) -> RedbStore {
        let options = RedbOptions::default().with_durability(runstore_core::Durability::Relaxed);
        RedbStore::open_with(dir.path().join("store.redb"), options)
            .await
            .unwrap()
    }

    /// Stores `records` as an older version or another tool could have:
    /// straight into the tables, past every check.
    fn store_raw(store: &RedbStore, records: &[EventRecord]) {
        let txn = store.inner.db.begin_write().unwrap();
        {
            let mut events = txn.open_table(EVENTS).unwrap();
            let mut ids = txn.open_table(IDS).unwrap();
            let mut heads = txn.open_table(HEADS).unwrap();
            for record in records {
                let stream = stream_key(&tenant(), &record.run_id);
                let key = event_key(&stream, record.seq);
                let value = encode_event(record).unwrap();
                events.insert(key.as_slice(), value.as_slice()).unwrap();
                let key = join(&stream, record.event_id.as_str().as_bytes());
                ids.insert(key.as_slice(), record.seq).unwrap();
                heads.insert(stream.as_slice(), record.seq).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    /// The keys `table` holds under `stream`.
    fn keys_of<V: redb::Value + 'static>(
        store: &RedbStore,
        table: redb::TableDefinition<&'static [u8], V>,
        stream: &[u8],
    ) -> Vec<Vec<u8>> {
        use redb::ReadableDatabase as _;
        let txn = store.inner.db.begin_read().unwrap();
        let table = txn.open_table(table).unwrap();
        let end = prefix_end(stream).unwrap();
        table
            .range(stream..end.as_slice())
            .unwrap()
            .map(|entry| entry.unwrap().0.value().to_vec())
            .collect()
    }

    /// CONTRACT §27: a deletion leaves the stream's marker and the marker's
    /// own id, nothing else, in `events` and `ids` (the ids its old marker
    /// remembered included, although no live event was left to count); the
    /// head keeps the last seq and `erased` records it, so `list_runs`
    /// leaves the run out until an append raises the head past it.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_deletion_leaves_only_the_marker_and_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let t = tenant();
        let run = RunId::new("gone").unwrap();
        for n in 1..=3 {
            store
                .append(&t, &event("gone", &format!("e{n}"), 0, 10))
                .await
                .unwrap();
        }
        // Every event pruned: the stream holds a marker remembering e1-e2
        // (e3's seq is the marker's) and nothing to count.
        assert_eq!(store.compact(5, 100).await.unwrap().removed, 3);
        let stream = stream_key(&t, &run);
        assert!(keys_of(&store, IDS, &stream).len() > 1);
        assert_eq!(store.delete_run(&t, &run).await.unwrap(), 0);
        let marker = erasure_marker(&t, &run, 3);
        assert_eq!(
            keys_of(&store, EVENTS, &stream),
            vec![event_key(&stream, 3)]
        );
        assert_eq!(
            keys_of(&store, IDS, &stream),
            vec![join(&stream, marker.event_id.as_str().as_bytes())]
        );
        assert_eq!(
            store.read(&t, &run, ReadQuery::all()).await.unwrap(),
            vec![marker]
        );
        assert!(store.list_runs(&t).await.unwrap().is_empty());
        assert_eq!(store.next_seq(&t, &run).await.unwrap(), 4);
        let again = store.append(&t, &event("gone", "e1", 0, 10)).await.unwrap();
        assert_eq!((again.seq, again.inserted), (4, true));
        // The `erased` entry is stale now, and harmless.
        assert_eq!(store.list_runs(&t).await.unwrap(), vec![run.clone()]);
        assert_eq!(store.delete_run(&t, &run).await.unwrap(), 1);
        assert!(store.list_runs(&t).await.unwrap().is_empty());
        assert_eq!(store.delete_run(&t, &run).await.unwrap(), 0);
    }

    /// A file written before erasure has no `erased` table: it opens (the
    /// open creates the table), lists its runs, and its runs can be
    /// deleted.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_file_without_the_erased_table_opens_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        let t = tenant();
        let run = RunId::new("old").unwrap();
        {
            let store = open(&dir).await;
            store.append(&t, &event("old", "e1", 0, 10)).await.unwrap();
            let txn = store.inner.db.begin_write().unwrap();
            assert!(txn.delete_table(ERASED).unwrap());
            txn.commit().unwrap();
        }
        let store = open(&dir).await;
        assert_eq!(store.list_runs(&t).await.unwrap(), vec![run.clone()]);
        assert_eq!(store.delete_run(&t, &run).await.unwrap(), 1);
        assert!(store.list_runs(&t).await.unwrap().is_empty());
    }

    /// A step that redb fails is retried stream by stream: only the stream
    /// whose own writes fail is reported (CONTRACT §25), and it is left as
    /// it was.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_compaction_is_retried_stream_by_stream() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let t = tenant();
        for r in ["a", "b-stuck", "c"] {
            for n in 1..=2 {
                store
                    .append(&t, &event(r, &format!("{r}{n}"), 0, 10))
                    .await
                    .unwrap();
            }
        }
        let stuck = stream_key(&t, &RunId::new("b-stuck").unwrap());
        *store.inner.maintenance_fault.lock().unwrap() = Some(stuck);
        let report = store.compact(5, 100).await.unwrap();
        let failed: Vec<String> = report.failed.iter().map(ToString::to_string).collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(
            failed[0].starts_with("org/ws:b-stuck: redb error"),
            "{failed:?}"
        );
        assert_eq!(report.removed, 4, "the other streams were compacted");
        for (r, records) in [("a", 1), ("b-stuck", 2), ("c", 1)] {
            let read = store
                .read(&t, &RunId::new(r).unwrap(), ReadQuery::all())
                .await
                .unwrap();
            assert_eq!(read.len(), records, "{r}");
        }
        *store.inner.maintenance_fault.lock().unwrap() = None;
        assert_eq!(store.compact(5, 100).await.unwrap().removed, 2);
    }

    /// A pass takes the streams in steps of [`COMPACT_STEP_EVENTS`] pruned
    /// events (here one per request), so writes queued meanwhile wait for
    /// one step: a stream with more than the step has left is split, and
    /// the next step starts at it again; the last step says the pass is
    /// done.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_pass_commits_in_steps_of_bounded_work() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let t = tenant();
        let per_stream = COMPACT_STEP_EVENTS * 3 / 4;
        old_streams(
            &store,
            &[("a", per_stream), ("b", per_stream), ("c", per_stream)],
        )
        .await;
        let policy = CompactionPolicy::new(5, 100).unwrap().unwrap();
        let limits = *store.limits();
        let step = |from| {
            store
                .writer()
                .submit(move |tables| compact(tables, &policy, &limits, from, None, 1))
        };
        let [b, c] = ["b", "c"].map(|r| stream_key(&t, &RunId::new(r).unwrap()));
        // Every event is old enough, and no snapshot holds any back: a
        // whole, then b's first events up to the budget.
        let (first, next) = step(Streams::From(Bound::Unbounded)).await.unwrap();
        assert_eq!(first.removed, COMPACT_STEP_EVENTS);
        assert_eq!(next, Some(Bound::Included(b.clone())), "b goes on");
        // The rest of b, then c up to the budget.
        let (second, next) = step(Streams::From(Bound::Included(b))).await.unwrap();
        assert_eq!(second.removed, COMPACT_STEP_EVENTS);
        assert_eq!(next, Some(Bound::Included(c.clone())), "c goes on");
        let (third, next) = step(Streams::From(Bound::Included(c))).await.unwrap();
        assert_eq!(third.removed, 3 * per_stream - 2 * COMPACT_STEP_EVENTS);
        assert_eq!(next, None, "c was the last stream");
        for r in ["a", "b", "c"] {
            let run = RunId::new(r).unwrap();
            let read = store.read(&t, &run, ReadQuery::all()).await.unwrap();
            assert_eq!(read.len(), 1, "{r}: one marker");
            let remembered = compacted_ids(&read[0]).unwrap();
            assert_eq!(remembered.len(), per_stream, "{r}");
        }
    }

    /// A stream with exactly as many events to prune as the step has left
    /// is done in that step: the next one starts after it.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_stream_that_fills_the_step_exactly_is_done_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let t = tenant();
        old_streams(&store, &[("a", COMPACT_STEP_EVENTS), ("b", 1)]).await;
        let policy = CompactionPolicy::new(5, 100).unwrap().unwrap();
        let limits = *store.limits();
        let from = Streams::From(Bound::Unbounded);
        let (first, next) = store
            .writer()
            .submit(move |tables| compact(tables, &policy, &limits, from, None, 1))
            .await
            .unwrap();
        assert_eq!(first.removed, COMPACT_STEP_EVENTS);
        let a = stream_key(&t, &RunId::new("a").unwrap());
        assert_eq!(next, Some(Bound::Excluded(a)), "a is done, b is next");
    }

    /// One compaction request of up to `steps` steps from `from` (policy:
    /// retention 5 at 100), with a write counted as waiting when `waiting`.
    async fn compact_request(
        store: &RedbStore,
        from: Streams,
        steps: usize,
        waiting: bool,
    ) -> (MaintenanceReport, Resume) {
        let policy = CompactionPolicy::new(5, 100).unwrap().unwrap();
        let limits = *store.limits();
        let count = usize::from(waiting);
        store.writer().waiting().fetch_add(count, Ordering::Relaxed);
        let done = store
            .writer()
            .submit(move |tables| compact(tables, &policy, &limits, from, None, steps))
            .await;
        store.writer().waiting().fetch_sub(count, Ordering::Relaxed);
        done.unwrap()
    }

    /// How many ids run `r`'s marker remembers (`None`: no marker), and how
    /// many records the run holds.
    async fn marker_of(store: &RedbStore, r: &str) -> (Option<usize>, usize) {
        let records = store
            .read(&tenant(), &RunId::new(r).unwrap(), ReadQuery::all())
            .await
            .unwrap();
        let marker = records
            .iter()
            .find(|record| record.is_compaction_marker())
            .map(|marker| compacted_ids(marker).unwrap().len());
        (marker, records.len())
    }

    /// While no other write waits, one transaction goes on from step to
    /// step, up to its limit; a write queued behind it ends it after the
    /// step it is in.
    #[tokio::test(flavor = "multi_thread")]
    async fn steps_share_a_commit_until_a_write_waits() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let t = tenant();
        let runs = ["a", "b", "c", "d", "e"].map(|r| (r, COMPACT_STEP_EVENTS));
        old_streams(&store, &runs).await;
        let key = |r| stream_key(&t, &RunId::new(r).unwrap());
        // Nothing waits: three steps (a, b, c) in one transaction.
        let (first, next) =
            compact_request(&store, Streams::From(Bound::Unbounded), 3, false).await;
        assert_eq!(first.removed, 3 * COMPACT_STEP_EVENTS);
        assert_eq!(next, Some(Bound::Excluded(key("c"))));
        // A write waits (counted as the writer counts a queued request):
        // one step, d, then the transaction commits.
        let from = Streams::From(Bound::Excluded(key("c")));
        let (second, next) = compact_request(&store, from, 3, true).await;
        assert_eq!(second.removed, COMPACT_STEP_EVENTS);
        assert_eq!(next, Some(Bound::Excluded(key("d"))));
        // The last step ends the transaction however many it may take.
        let from = Streams::From(Bound::Excluded(key("d")));
        let (third, next) = compact_request(&store, from, 3, false).await;
        assert_eq!(third.removed, COMPACT_STEP_EVENTS);
        assert_eq!(next, None);
        // The store-wide pass finds nothing left.
        assert_eq!(store.compact(5, 100).await.unwrap().removed, 0);
    }

    /// The steps of one stream in one transaction write its marker once:
    /// a stream a step leaves unfinished is carried to the next step with
    /// its marker unwritten, and gets it when the transaction ends before
    /// the stream does (the step limit, or a write waiting), or when a
    /// later step finishes it.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_carried_stream_gets_its_marker_when_the_transaction_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let t = tenant();
        old_streams(&store, &[("a", 1_000), ("b", 1_000)]).await;
        let key = |r| stream_key(&t, &RunId::new(r).unwrap());
        // Three steps: a's 256, 256 and its last 488 (as many as the ids
        // the unwritten marker would remember allow), one marker.
        let (first, next) =
            compact_request(&store, Streams::From(Bound::Unbounded), 3, false).await;
        assert_eq!(first.removed, 1_000);
        assert_eq!(next, Some(Bound::Excluded(key("a"))));
        assert_eq!(marker_of(&store, "a").await, (Some(1_000), 1));
        // A write waits: b's first step, carried, gets its marker as the
        // waiting write ends the transaction.
        let from = Streams::From(Bound::Excluded(key("a")));
        let (second, next) = compact_request(&store, from, 3, true).await;
        assert_eq!(second.removed, COMPACT_STEP_EVENTS);
        assert_eq!(next, Some(Bound::Included(key("b"))));
        assert_eq!(marker_of(&store, "b").await, (Some(256), 1 + 744));
        // One step at most: b's next 256, its marker written as the limit
        // ends the transaction.
        let from = Streams::From(Bound::Included(key("b")));
        let (third, next) = compact_request(&store, from, 1, false).await;
        assert_eq!(third.removed, COMPACT_STEP_EVENTS);
        assert_eq!(next, Some(Bound::Included(key("b"))));
        assert_eq!(marker_of(&store, "b").await, (Some(512), 1 + 488));
        assert_eq!(store.compact(5, 100).await.unwrap().removed, 488);
        assert_eq!(marker_of(&store, "b").await, (Some(1_000), 1));
    }

    /// A stream a step takes first and cannot compact is reported within
    /// the request, which compacts the other streams of its step: only a
    /// stream carried from an earlier step abandons the transaction.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_stream_refused_in_its_first_step_leaves_the_request_to_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let mut deep = event("deep", "d1", 1, 10);
        deep.payload = nested_arrays(127);
        store_raw(
            &store,
            &[deep, event("fine", "f1", 1, 10), event("fine", "f2", 2, 10)],
        );
        let (report, next) =
            compact_request(&store, Streams::From(Bound::Unbounded), 3, false).await;
        assert_eq!((report.removed, report.failed.len(), next), (2, 1, None));
        assert_eq!(marker_of(&store, "fine").await, (Some(2), 1));
    }

    /// A stream whose stored marker does not parse is refused before its
    /// first step writes, even when that step would leave it unfinished
    /// and a waiting write ends the transaction after it: the request
    /// compacts the other streams and reports this one, which keeps every
    /// record.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_malformed_marker_is_refused_before_an_unfinished_step_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let mut marker = event("bad", "m", 1, 10);
        marker.event_type = runstore_core::raw::compaction::COMPACTION_EVENT_TYPE.into();
        marker.payload = serde_json::json!({ "compacted_event_ids": "not a list" });
        let mut records = vec![marker];
        records.extend((2..=601).map(|seq| event("bad", &format!("b{seq}"), seq, 10)));
        records.extend([event("fine", "f1", 1, 10), event("fine", "f2", 2, 10)]);
        store_raw(&store, &records);
        let (report, next) =
            compact_request(&store, Streams::From(Bound::Unbounded), 3, true).await;
        let failed: Vec<String> = report.failed.iter().map(ToString::to_string).collect();
        assert_eq!(
            (report.removed, failed.len(), next),
            (2, 1, None),
            "{failed:?}"
        );
        assert!(failed[0].contains("compaction marker"), "{failed:?}");
        assert_eq!(marker_of(&store, "fine").await, (Some(2), 1));
        let bad = store
            .read(&tenant(), &RunId::new("bad").unwrap(), ReadQuery::all())
            .await
            .unwrap();
        assert_eq!(bad.len(), 601);
    }

    /// A stream carried from one step to the next, failing in the later
    /// one, abandons the transaction (its first step has deleted events
    /// whose marker is not written yet); the pass goes on one step per
    /// transaction, so the first step commits with its marker and the
    /// stream is reported.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_stream_failing_in_a_later_step_keeps_the_steps_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let records: Vec<EventRecord> = (1..=600)
            .map(|seq| {
                let mut record = event("long", &format!("l{seq}"), seq, 10);
                if seq == 300 {
                    record.payload = nested_arrays(127);
                }
                record
            })
            .collect();
        store_raw(&store, &records);
        let report = store.compact(5, 100).await.unwrap();
        assert_eq!(report.removed, COMPACT_STEP_EVENTS);
        let failed: Vec<String> = report.failed.iter().map(ToString::to_string).collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].contains("seq 300"), "{failed:?}");
        let before = store
            .read(
                &tenant(),
                &RunId::new("long").unwrap(),
                ReadQuery::all().before(300),
            )
            .await
            .unwrap();
        assert_eq!(
            before.len(),
            1 + 43,
            "the first step's marker and 257..=299"
        );
        assert!(before[0].is_compaction_marker());
        assert_eq!(
            compacted_ids(&before[0]).unwrap().len(),
            COMPACT_STEP_EVENTS
        );
    }

    /// A write in the same batch as the compaction waits for its commit as
    /// much as one queued behind it: the transaction ends after one step.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_write_sharing_the_batch_ends_the_steps() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let t = tenant();
        old_streams(&store, &["a", "b", "c"].map(|r| (r, COMPACT_STEP_EVENTS))).await;
        let policy = CompactionPolicy::new(5, 100).unwrap().unwrap();
        let limits = *store.limits();
        // A request that holds the writer until released, so that the
        // compaction and an append queue up behind it and share a batch.
        let (started, has_started) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let holding = store.writer().submit(move |tables| {
            started.send(()).unwrap();
            released.recv().unwrap();
            tables.wrote_nothing();
            Ok(())
        });
        let queued = async {
            while has_started.try_recv().is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            let compaction = store.writer().submit(move |tables| {
                compact(
                    tables,
                    &policy,
                    &limits,
                    Streams::From(Bound::Unbounded),
                    None,
                    3,
                )
            });
            let (z, late) = (RunId::new("z").unwrap(), [event("z", "z0", 0, 200)]);
            let append = store.append_batch(&t, &z, &late, None);
            let releasing = async {
                while store.writer().waiting().load(Ordering::Relaxed) < 2 {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                release.send(()).unwrap();
            };
            tokio::join!(compaction, append, releasing)
        };
        let (held, (compacted, appended, ())) = tokio::join!(holding, queued);
        held.unwrap();
        appended.unwrap();
        let (report, next) = compacted.unwrap();
        assert_eq!(report.removed, COMPACT_STEP_EVENTS, "one step");
        assert_eq!(
            next,
            Some(Bound::Excluded(stream_key(&t, &RunId::new("a").unwrap())))
        );
    }

    /// A refusal met in a later step of a transaction ends the transaction
    /// before that step: the steps before it commit. Here the pass then
    /// fails, as the stream key it meets cannot be read.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_refusal_in_a_later_step_keeps_the_steps_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let t = tenant();
        old_streams(&store, &[("a", 600)]).await;
        let a = stream_key(&t, &RunId::new("a").unwrap());
        // A head after a's whose key does not decode: its run id's length
        // runs past the key's end. a goes over three steps, the third
        // meeting that head too: a transaction that carried a from step to
        // step is abandoned, never committed without a's marker.
        let mut bad = a[..a.len() - 3].to_vec();
        bad.extend_from_slice(&[0x00, 0xff, b'z']);
        store
            .writer()
            .submit(move |tables| {
                tables.log()?.heads.insert(bad.as_slice(), 1)?;
                Ok(())
            })
            .await
            .unwrap();
        let err = store.compact(5, 100).await.unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
        let read = store
            .read(&t, &RunId::new("a").unwrap(), ReadQuery::all())
            .await
            .unwrap();
        assert_eq!(read.len(), 1, "a was compacted to its marker");
        assert_eq!(
            compacted_ids(&read[0]).unwrap().len(),
            600,
            "remembering every id"
        );
    }

    /// A corrupt feed entry is met only after a step has deleted the
    /// stream's pruned events (taking them out of the feed): the refusal
    /// abandons the transaction, so nothing of the stream is lost, and the
    /// stream is reported.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_corrupt_feed_entry_met_half_way_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, run) = with_a_corrupt_feed_entry(&dir).await;
        let t = tenant();
        let report = store.compact(5, 100).await.unwrap();
        assert_eq!((report.removed, report.failed.len()), (0, 1), "{report:?}");
        assert!(matches!(report.failed[0].error, Error::Corrupt { .. }));
        let read = store.read(&t, &run, ReadQuery::all()).await.unwrap();
        assert_eq!(read.len(), 10, "every event is still there");
    }

    /// `delete_run` meets a corrupt feed entry only after it has removed the
    /// run's events: it abandons the transaction, so the run keeps every
    /// event, and answers `Corrupt`.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_deletion_meeting_a_corrupt_feed_entry_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, run) = with_a_corrupt_feed_entry(&dir).await;
        let t = tenant();
        let err = store.delete_run(&t, &run).await.unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
        let read = store.read(&t, &run, ReadQuery::all()).await.unwrap();
        assert_eq!(read.len(), 10, "every event is still there");
        assert_eq!(store.list_runs(&t).await.unwrap(), vec![run]);
    }

    /// A head at `u64::MAX` (an older version's import) has no next seq:
    /// `next_seq` answers `Corrupt` naming the stream instead of
    /// overflowing.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_head_at_the_last_u64_has_no_next_seq() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        store_raw(&store, &[event("full", "e", u64::MAX, 10)]);
        let run = RunId::new("full").unwrap();
        let (location, reason) = expect_corrupt(store.next_seq(&tenant(), &run).await);
        assert_eq!(location, "heads table, stream org/ws:full");
        assert!(reason.contains(&u64::MAX.to_string()), "{reason}");
        let refused = store.append(&tenant(), &event("full", "f", 0, 10)).await;
        assert!(
            matches!(refused, Err(Error::InvalidInput { .. })),
            "{refused:?}"
        );
    }

    /// A payload too deep to parse (an older version acknowledged 127
    /// levels) reads as `Corrupt` naming the stream and seq; compaction
    /// reports that stream and compacts the others.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_stored_record_too_deep_to_read_is_corrupt_naming_stream_and_seq() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let mut deep = event("deep", "d2", 2, 10);
        deep.payload = nested_arrays(127);
        store_raw(
            &store,
            &[event("deep", "d1", 1, 10), deep, event("fine", "f1", 1, 10)],
        );
        let run = RunId::new("deep").unwrap();
        let (location, reason) =
            expect_corrupt(store.read(&tenant(), &run, ReadQuery::all()).await);
        assert_eq!(location, "events table, stream org/ws:deep, seq 2");
        assert!(reason.contains("recursion limit"), "{reason}");
        let report = store.compact(5, 100).await.unwrap();
        assert_eq!(report.removed, 1);
        let failed: Vec<String> = report.failed.iter().map(ToString::to_string).collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].starts_with("org/ws:deep: "), "{failed:?}");
        assert!(failed[0].contains("seq 2"), "{failed:?}");
    }

    /// The marker compaction writes passes the write checks: a stream whose
    /// first pruned event has a scope beyond the depth limit (an older
    /// version's record) is reported and left as it was.
    #[tokio::test(flavor = "multi_thread")]
    async fn compaction_checks_the_marker_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let mut legacy = event("legacy", "l1", 1, 10);
        legacy
            .scope
            .extra
            .insert("trace".into(), nested_arrays(MAX_DEPTH + 5));
        store_raw(
            &store,
            &[
                legacy,
                event("legacy", "l2", 2, 10),
                event("fine", "f1", 1, 10),
            ],
        );
        let report = store.compact(5, 100).await.unwrap();
        assert_eq!(report.removed, 1);
        let failed: Vec<String> = report.failed.iter().map(ToString::to_string).collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].starts_with("org/ws:legacy: "), "{failed:?}");
        assert!(failed[0].contains("scope.trace nests deeper"), "{failed:?}");
        let run = RunId::new("legacy").unwrap();
        let left = store.read(&tenant(), &run, ReadQuery::all()).await.unwrap();
        assert_eq!(left.len(), 2, "left as it was");
    }
}
