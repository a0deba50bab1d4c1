//! The writer thread: the only code that changes the log.
//!
//! Requests queue on a channel. The thread takes everything queued, plans
//! each request against the index with the shared rules
//! ([`plan_append`], [`plan_import`]), writes all their lines with one
//! positioned write, syncs once (group commit, CONTRACT §16), updates the
//! index and only then answers each request. Compaction's last step
//! ([`crate::compact::finish`]) runs here too, between two groups, so it
//! never races an append (CONTRACT §11).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc::Receiver},
};

use runstore_core::{
    AppendOutcome, Durability, Error, EventId, EventRecord, FeedSignal, MaintenanceReport, Result,
    RunId, StreamKey, Tenant,
    raw::append::{plan_append, plan_import},
    raw::compaction::compacted_ids,
    raw::erasure::erasure_marker,
    raw::group::{self, Batch, Budget, Joins, Reply},
    validate::Limits,
};

use crate::{
    error::{io_at, poisoned},
    feed, fileio,
    index::{Index, Loc, LogFile, MarkerEntry},
    snapshots::Snapshots,
};

/// The byte that starts every line of a multi-record request but its last;
/// the last line starts with `{` (CONTRACT §4, §17).
pub(crate) const CONTINUED: u8 = b' ';

/// Most requests committed by one write and sync.
const MAX_GROUP: usize = 4096;

/// A group buffer larger than this is not kept for the next group.
const MAX_SCRATCH: usize = 16 << 20;

/// Reads larger than this are split.
pub(crate) const MAX_SPAN: u64 = 4 << 20;

/// The log as readers and the writer see it.
#[derive(Debug)]
pub(crate) struct LogState {
    pub(crate) log: Arc<LogFile>,
    /// Length of the log: where the next record goes.
    pub(crate) end: u64,
    pub(crate) index: Index,
    /// Bytes of lines of deleted runs (CONTRACT §27) that the log still
    /// holds and the index no longer reads; the next rewrite
    /// ([`crate::compact`]) drops them and sets this to 0.
    pub(crate) erased_bytes: u64,
}

/// State shared by a store's handles, its writer thread and blocking tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dir: std::path::PathBuf,
    pub(crate) durability: Durability,
    /// Every change to the disk goes through this.
    pub(crate) io: fileio::Io,
    /// What writes are checked against; compaction checks its markers too.
    pub(crate) limits: Limits,
    pub(crate) state: RwLock<LogState>,
    pub(crate) poison: Mutex<Option<String>>,
    pub(crate) snapshots: Snapshots,
    /// Raised after every commit that wrote records (CONTRACT §29).
    pub(crate) feed: FeedSignal,
    /// How long a commit that writes records waits after its records took
    /// their feed positions and before it writes them (tests of the
    /// feed's lossless rule; `None` outside them).
    pub(crate) commit_delay: Option<std::time::Duration>,
    /// Makes the next log sync fail, to test poisoning.
    #[cfg(test)]
    pub(crate) fail_next_sync: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, LogState> {
        // Only the writer thread mutates the state, after its I/O succeeded,
        // in steps that cannot panic halfway in a way readers could observe
        // as a wrong answer.
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn write_state(&self) -> RwLockWriteGuard<'_, LogState> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn poison_slot(&self) -> MutexGuard<'_, Option<String>> {
        self.poison
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The error every write gets once the store is poisoned.
    pub(crate) fn poisoned(&self) -> Option<Error> {
        self.poison_slot()
            .as_deref()
            .map(|reason| poisoned(&self.dir, reason))
    }

    pub(crate) fn poison(&self, reason: String) {
        self.poison_slot().get_or_insert(reason);
    }

    /// The test hook's wait ([`Shared::commit_delay`]): positions are
    /// taken, the records not yet written.
    pub(crate) fn delay_commit(&self) {
        if let Some(delay) = self.commit_delay {
            std::thread::sleep(delay);
        }
    }

    /// Reads a window of a stream (CONTRACT §6): only the byte ranges of the
    /// records in it.
    pub(crate) fn read(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        query: runstore_core::ReadQuery,
    ) -> Result<Vec<EventRecord>> {
        let (log, locs) = {
            let state = self.read_state();
            let Some(stream) = state.index.stream(tenant, run_id) else {
                return Ok(Vec::new());
            };
            let all = &stream.locs;
            let low = query
                .after_seq
                .map_or(0, |after| all.partition_point(|loc| loc.seq <= after));
            let high = query
                .before_seq
                .map_or(all.len(), |before| {
                    all.partition_point(|loc| loc.seq < before)
                })
                .max(low);
            let mut window = &all[low..high];
            if let Some(limit) = query.effective_limit()
                && window.len() > limit
            {
                window = if query.tail {
                    &window[window.len() - limit..]
                } else {
                    &window[..limit]
                };
            }
            (state.log.clone(), window.to_vec())
        };
        let mut records = Vec::with_capacity(locs.len());
        log.read_lines(&locs, |at, line| {
            records.push(log.parse_record(tenant, run_id, &locs[at], line)?);
            Ok(())
        })?;
        Ok(records)
    }
}

/// A request for the writer thread.
pub(crate) enum Command {
    Append {
        tenant: Tenant,
        run_id: RunId,
        events: Vec<EventRecord>,
        expected_last_seq: Option<u64>,
        reply: Reply<Vec<AppendOutcome>>,
    },
    Import {
        tenant: Tenant,
        run_id: RunId,
        records: Vec<EventRecord>,
        reply: Reply<usize>,
    },
    /// The second step of a compaction ([`crate::compact::finish`]).
    FinishCompaction {
        rewritten: Box<crate::compact::Rewritten>,
        reply: Reply<MaintenanceReport>,
    },
    /// The first step of a deletion ([`erase`]).
    Erase {
        streams: Vec<StreamKey>,
        reply: Reply<Vec<usize>>,
    },
}

impl Command {
    /// How the command joins a batch ([`group::next_batch`]): appends and
    /// imports share one write and sync; a compaction runs alone, between
    /// groups.
    fn joins(&self) -> Joins {
        match self {
            Self::Append { events, .. } => Joins::Group(events.len()),
            Self::Import { records, .. } => Joins::Group(records.len()),
            Self::FinishCompaction { .. } | Self::Erase { .. } => Joins::Alone,
        }
    }
}

/// The writer thread's loop; ends when every sender is gone.
pub(crate) fn run(shared: &Shared, requests: &Receiver<Command>) {
    // The group's lines, reused from group to group.
    let mut scratch = Vec::new();
    let budget = Budget::new(MAX_GROUP, usize::MAX);
    let mut carry = None;
    while let Some(first) = carry.take().or_else(|| requests.recv().ok()) {
        let more = || requests.try_recv().ok();
        let group = match group::next_batch(first, more, &mut carry, budget, Command::joins) {
            Batch::Alone(Command::FinishCompaction { rewritten, reply }) => {
                reply.send(crate::compact::finish(shared, *rewritten));
                continue;
            }
            Batch::Alone(Command::Erase { streams, reply }) => {
                reply.send(erase(shared, &streams));
                continue;
            }
            Batch::Group(group) => group,
            // Only a compaction or a deletion runs alone; anything else is
            // a group of one.
            Batch::Alone(command) => vec![command],
        };
        let requests = group.len();
        let events = group.iter().map(|c| c.joins().events()).sum();
        let began = std::time::Instant::now();
        commit(shared, group, &mut scratch);
        runstore_core::telemetry::group_committed("jsonl", requests, events, began.elapsed());
        if scratch.capacity() > MAX_SCRATCH {
            scratch = Vec::new();
        }
    }
}

/// A stream touched by the group being committed.
struct Pending {
    key: StreamKey,
    slot: Option<usize>,
    last_seq: u64,
    /// Whether more than one request of the group writes to the stream.
    repeated: bool,
    /// Ids this group adds, with their seqs (kept only when `repeated`).
    ids: HashMap<EventId, u64>,
    /// The group's records of the stream's first request.
    first_records: std::ops::Range<usize>,
}

/// A record of the group, to be added to the index once synced.
struct NewRecord {
    pending: usize,
    loc: Loc,
    occurred_at_ms: u64,
    /// The marker's index entry, when the record is a marker.
    marker: Option<MarkerEntry>,
    event_id: EventId,
    compacted: Vec<(EventId, u64)>,
}

fn remember(ids: &mut HashMap<EventId, u64>, record: &NewRecord) {
    ids.entry(record.event_id.clone()).or_insert(record.loc.seq);
    for (id, seq) in &record.compacted {
        ids.entry(id.clone()).or_insert(*seq);
    }
}

enum Answer {
    Append(Reply<Vec<AppendOutcome>>, Vec<AppendOutcome>),
    Import(Reply<usize>, usize),
}

impl Answer {
    /// Answers the request: its outcome, or the group's failure.
    fn send(self, failure: Option<&Error>) {
        match (self, failure) {
            (Self::Append(reply, outcomes), None) => reply.send(Ok(outcomes)),
            (Self::Import(reply, written), None) => reply.send(Ok(written)),
            (Self::Append(reply, _), Some(error)) => reply.send(Err(error.clone())),
            (Self::Import(reply, _), Some(error)) => reply.send(Err(error.clone())),
        }
    }
}

/// One group commit, planned against the index plus what earlier requests
/// of the group add.
struct Group<'a> {
    state: &'a LogState,
    pending: Vec<Pending>,
    by_key: HashMap<(Tenant, RunId), usize>,
    bytes: Vec<u8>,
    records: Vec<NewRecord>,
    /// Each tenant's last position handed out so far (CONTRACT §29): the
    /// index's head, then the group's records in commit order.
    heads: HashMap<Tenant, u64>,
    /// Records already serialized: freed after the answers go out, off the
    /// callers' wait.
    spent: Vec<EventRecord>,
}

impl Group<'_> {
    fn pending(&mut self, tenant: &Tenant, run_id: &RunId) -> usize {
        if let Some(&at) = self.by_key.get(&(tenant.clone(), run_id.clone())) {
            let pending = &mut self.pending[at];
            if !pending.repeated {
                pending.repeated = true;
                for record in &self.records[pending.first_records.clone()] {
                    remember(&mut pending.ids, record);
                }
            }
            return at;
        }
        let slot = self.state.index.slot(tenant, run_id);
        let last_seq = slot.map_or(0, |slot| self.state.index.streams[slot].last_seq());
        self.pending.push(Pending {
            key: StreamKey::new(tenant.clone(), run_id.clone()),
            slot,
            last_seq,
            repeated: false,
            ids: HashMap::new(),
            first_records: 0..0,
        });
        let at = self.pending.len() - 1;
        self.by_key.insert((tenant.clone(), run_id.clone()), at);
        at
    }

    fn stored_seq(&self, at: usize, id: &EventId) -> Result<Option<u64>> {
        let pending = &self.pending[at];
        if let Some(seq) = pending.ids.get(id) {
            return Ok(Some(*seq));
        }
        match pending.slot {
            Some(slot) => self.state.index.streams[slot].seq_of(
                id.as_str(),
                &self.state.index.hasher,
                &self.state.log,
            ),
            None => Ok(None),
        }
    }

    /// Serializes `records` (new, ascending) after what the group holds and
    /// records them as pending.
    fn add(&mut self, at: usize, records: Vec<EventRecord>) -> Result<()> {
        let rollback = self.bytes.len();
        let first_new = self.records.len();
        let base = self.state.end;
        let mut result = Ok(());
        let count = records.len();
        let tenant = &self.pending[at].key.tenant;
        let mut head = match self.heads.get(tenant) {
            Some(head) => *head,
            None => self.state.index.feed_head(tenant),
        };
        for (position, record) in records.into_iter().enumerate() {
            let compacted = if record.is_compaction_marker() {
                match compacted_ids(&record) {
                    Ok(ids) => ids.into_iter().map(|id| (id.event_id, id.seq)).collect(),
                    // `plan_import` read every marker it let through; this
                    // is the same error, should it ever differ.
                    Err(err) => {
                        result = Err(err);
                        break;
                    }
                }
            } else {
                Vec::new()
            };
            let start = self.bytes.len();
            // Batch framing: every line of a request but its last starts
            // with a space, so recovery can drop a batch whose closing line
            // never made it to disk, wherever the write stopped (CONTRACT
            // §4, §17). The space is part of the record's bytes.
            if position + 1 < count {
                self.bytes.push(CONTINUED);
            }
            // The tenant's next feed position, in commit order: a batch's
            // records take consecutive ones in seq order (CONTRACT §29).
            let pos = match feed::next(head) {
                Ok(pos) => pos,
                Err(err) => {
                    result = Err(err);
                    break;
                }
            };
            if let Err(err) = feed::write_record(&mut self.bytes, pos, &record) {
                result = Err(Error::invalid(err));
                break;
            }
            let Ok(len) = u32::try_from(self.bytes.len() - start) else {
                result = Err(Error::invalid("record longer than 4 GiB"));
                break;
            };
            self.bytes.push(b'\n');
            self.records.push(NewRecord {
                pending: at,
                loc: Loc {
                    seq: record.seq,
                    pos,
                    offset: base + start as u64,
                    len,
                },
                occurred_at_ms: record.occurred_at_ms,
                marker: record.is_compaction_marker().then(|| {
                    MarkerEntry::new(
                        &self.bytes[start..start + len as usize],
                        record.seq,
                        record.event_id.as_str(),
                    )
                }),
                event_id: record.event_id.clone(),
                compacted,
            });
            self.spent.push(record);
            head = pos;
        }
        if result.is_err() {
            self.bytes.truncate(rollback);
            self.records.truncate(first_new);
            return result;
        }
        if first_new < self.records.len() {
            let tenant = self.pending[at].key.tenant.clone();
            self.heads.insert(tenant, head);
        }
        let pending = &mut self.pending[at];
        if let Some(last) = self.records[first_new..].last() {
            pending.last_seq = last.loc.seq;
        }
        // Later requests of this group for the same stream must see these
        // ids, which the index learns only after the sync.
        if pending.repeated {
            for record in &self.records[first_new..] {
                remember(&mut pending.ids, record);
            }
        } else {
            pending.first_records = first_new..self.records.len();
        }
        Ok(())
    }

    fn append(
        &mut self,
        tenant: &Tenant,
        run_id: &RunId,
        events: &[EventRecord],
        expected_last_seq: Option<u64>,
    ) -> Result<Vec<AppendOutcome>> {
        let at = self.pending(tenant, run_id);
        let last_seq = self.pending[at].last_seq;
        let plan = plan_append(tenant, run_id, last_seq, events, expected_last_seq, |id| {
            self.stored_seq(at, id)
        })?;
        self.add(at, plan.new_records)?;
        Ok(plan.outcomes)
    }

    fn import(
        &mut self,
        tenant: &Tenant,
        run_id: &RunId,
        records: &[EventRecord],
    ) -> Result<usize> {
        let at = self.pending(tenant, run_id);
        let last_seq = self.pending[at].last_seq;
        let missing = plan_import(tenant, run_id, last_seq, records, |id| {
            self.stored_seq(at, id)
        })?;
        self.add(at, missing.to_vec())?;
        Ok(missing.len())
    }
}

/// Plans, writes, syncs and answers a group of appends and imports.
fn commit(shared: &Shared, group: Vec<Command>, scratch: &mut Vec<u8>) {
    if group.is_empty() {
        return;
    }
    if let Some(error) = shared.poisoned() {
        for command in group {
            match command {
                Command::Append { reply, .. } => reply.send(Err(error.clone())),
                Command::Import { reply, .. } => reply.send(Err(error.clone())),
                Command::FinishCompaction { reply, .. } => reply.send(Err(error.clone())),
                Command::Erase { reply, .. } => reply.send(Err(error.clone())),
            }
        }
        return;
    }
    let state = shared.read_state();
    let mut planned = Group {
        state: &state,
        pending: Vec::new(),
        by_key: HashMap::new(),
        bytes: std::mem::take(scratch),
        records: Vec::new(),
        heads: HashMap::new(),
        spent: Vec::new(),
    };
    // Requests' events, freed after the answers go out.
    let mut requests_spent = Vec::with_capacity(group.len());
    let mut answers = Vec::with_capacity(group.len());
    for command in group {
        match command {
            Command::Append {
                tenant,
                run_id,
                events,
                expected_last_seq,
                reply,
            } => {
                match planned.append(&tenant, &run_id, &events, expected_last_seq) {
                    Ok(outcomes) => answers.push(Answer::Append(reply, outcomes)),
                    Err(err) => reply.send(Err(err)),
                }
                requests_spent.push(events);
            }
            Command::Import {
                tenant,
                run_id,
                records,
                reply,
            } => match planned.import(&tenant, &run_id, &records) {
                Ok(written) => answers.push(Answer::Import(reply, written)),
                Err(err) => reply.send(Err(err)),
            },
            Command::FinishCompaction { reply, .. } => {
                reply.send(Err(Error::invalid("compaction is not part of a group")));
            }
            Command::Erase { reply, .. } => {
                reply.send(Err(Error::invalid("a deletion is not part of a group")));
            }
        }
    }
    let Group {
        pending,
        mut bytes,
        records,
        spent: _records_spent,
        ..
    } = planned;
    let log = state.log.clone();
    let end = state.end;
    drop(state);
    let length = bytes.len() as u64;
    if bytes.is_empty() {
        *scratch = bytes;
        for answer in answers {
            answer.send(None);
        }
        return;
    }
    shared.delay_commit();
    let written = shared
        .io
        .write_all_at(&log.file, &log.path, &bytes, end)
        .and_then(|()| {
            #[cfg(test)]
            if shared
                .fail_next_sync
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                return Err(std::io::Error::other("injected sync failure"));
            }
            if shared.durability == Durability::Durable {
                shared.io.sync_data(&log.file, &log.path)
            } else {
                Ok(())
            }
        });
    bytes.clear();
    *scratch = bytes;
    if let Err(err) = written {
        shared.poison(format!("append to {} failed: {err}", log.path.display()));
        // Each request gets a clone of the one failure, stated once.
        let error = io_at("append to", &log.path, err);
        for answer in answers {
            answer.send(Some(&error));
        }
        return;
    }
    let applied = apply(shared, &log, pending, records, end + length);
    match applied {
        Ok(()) => {
            shared.feed.raise();
            for answer in answers {
                answer.send(None);
            }
        }
        Err(err) => {
            let reason = format!("indexing appended records failed: {err}");
            shared.poison(reason);
            let error = shared.poisoned().expect("just poisoned");
            for answer in answers {
                answer.send(Some(&error));
            }
        }
    }
}

/// Adds a synced group's records to the index.
fn apply(
    shared: &Shared,
    log: &LogFile,
    mut pending: Vec<Pending>,
    records: Vec<NewRecord>,
    new_end: u64,
) -> Result<()> {
    let mut state = shared.write_state();
    let state = &mut *state;
    state.end = new_end;
    let index = &mut state.index;
    for record in records {
        let pending = &mut pending[record.pending];
        let slot = match pending.slot {
            Some(slot) => slot,
            None => {
                let slot = index.slot_or_create(&pending.key.tenant, &pending.key.run_id);
                pending.slot = Some(slot);
                slot
            }
        };
        let stream = &mut index.streams[slot];
        stream.push(record.loc, record.occurred_at_ms, record.marker);
        stream.insert_id(record.event_id.as_str(), record.loc.seq, &index.hasher, log)?;
        for (id, seq) in &record.compacted {
            stream.insert_id(id.as_str(), *seq, &index.hasher, log)?;
        }
        index.push_to_feed(slot, &record.loc);
    }
    Ok(())
}

/// A deleted stream's erasure marker, written and waiting to be indexed.
struct Erased {
    slot: usize,
    marker: EventRecord,
    /// The marker's feed position.
    pos: u64,
    /// Where its line starts in the written bytes, and its length without
    /// the newline.
    start: usize,
    len: u32,
}

/// The first step of deleting `streams` (CONTRACT §27, [`raw::erasure`]):
/// appends the erasure marker of each one that holds an event or a
/// remembered id, one closed line each, syncs them with one write, and
/// makes the index forget everything else of those streams. Answers each
/// stream's deleted events (0 for one with nothing to delete).
///
/// The old lines stay in the log until the rewrite that follows
/// ([`crate::compact::prepare`] without a policy); a reopen before it
/// forgets them again, when it reads the marker
/// ([`crate::recovery`]).
///
/// [`raw::erasure`]: runstore_core::raw::erasure
fn erase(shared: &Shared, streams: &[StreamKey]) -> Result<Vec<usize>> {
    if let Some(error) = shared.poisoned() {
        return Err(error);
    }
    let mut counts = vec![0; streams.len()];
    let mut bytes = Vec::new();
    let mut erased = Vec::new();
    let mut heads: HashMap<Tenant, u64> = HashMap::new();
    let (log, end) = {
        let state = shared.read_state();
        for (count, key) in counts.iter_mut().zip(streams) {
            let Some(slot) = state.index.slot(&key.tenant, &key.run_id) else {
                continue;
            };
            let stream = &state.index.streams[slot];
            let last_seq = stream.last_seq();
            if last_seq == 0 || stream.is_erased() {
                continue;
            }
            let marker = erasure_marker(&key.tenant, &key.run_id, last_seq);
            // A new position above every earlier one (CONTRACT §29).
            let head = heads
                .entry(key.tenant.clone())
                .or_insert_with(|| state.index.feed_head(&key.tenant));
            *head = feed::next(*head)?;
            let pos = *head;
            let start = bytes.len();
            feed::write_record(&mut bytes, pos, &marker).map_err(Error::invalid)?;
            let len = u32::try_from(bytes.len() - start).expect("a marker without ids is short");
            bytes.push(b'\n');
            *count = stream.locs.len() - stream.markers.len();
            erased.push(Erased {
                slot,
                marker,
                pos,
                start,
                len,
            });
        }
        (state.log.clone(), state.end)
    };
    if erased.is_empty() {
        return Ok(counts);
    }
    shared.delay_commit();
    let written = shared
        .io
        .write_all_at(&log.file, &log.path, &bytes, end)
        .and_then(|()| {
            if shared.durability == Durability::Durable {
                shared.io.sync_data(&log.file, &log.path)
            } else {
                Ok(())
            }
        });
    if let Err(err) = written {
        shared.poison(format!("deletion in {} failed: {err}", log.path.display()));
        return Err(io_at("append to", &log.path, err));
    }
    let mut state = shared.write_state();
    let state = &mut *state;
    state.end = end + bytes.len() as u64;
    let index = &mut state.index;
    let mut result = Ok(());
    // The erased records leave their tenants' feeds, one pass per tenant.
    let mut by_tenant: HashMap<Tenant, std::collections::HashSet<usize>> = HashMap::new();
    for gone in &erased {
        by_tenant
            .entry(index.streams[gone.slot].key.tenant.clone())
            .or_default()
            .insert(gone.slot);
    }
    for (tenant, slots) in &by_tenant {
        index.forget_in_feed(tenant, |entry| slots.contains(&entry.slot));
    }
    for Erased {
        slot,
        marker,
        pos,
        start,
        len,
    } in erased
    {
        let stream = &mut index.streams[slot];
        state.erased_bytes += stream.clear();
        let line = &bytes[start..start + len as usize];
        let loc = Loc {
            seq: marker.seq,
            pos,
            offset: end + start as u64,
            len,
        };
        stream.push(
            loc,
            marker.occurred_at_ms,
            Some(MarkerEntry::new(line, marker.seq, marker.event_id.as_str())),
        );
        if let Err(err) =
            stream.insert_id(marker.event_id.as_str(), marker.seq, &index.hasher, &log)
        {
            result = Err(err);
        }
        index.push_to_feed(slot, &loc);
    }
    shared.feed.raise();
    if let Err(err) = result {
        shared.poison(format!("indexing a deletion failed: {err}"));
        return Err(err);
    }
    Ok(counts)
}
