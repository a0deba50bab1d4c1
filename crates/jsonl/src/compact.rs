//! Compaction (CONTRACT §8-§11) in two steps, so that appends wait for
//! neither the reading nor the rewriting of the log:
//!
//! 1. [`prepare`], on a blocking task beside the writer thread: takes the
//!    log's end and every stream's records as they are at that moment,
//!    plans each stream, and writes the new log up to that end (without the
//!    pruned records and old markers, each compacted stream's new marker in
//!    its place) into a temporary file, synced. The writer goes on
//!    appending to the old log meanwhile; the index, and every read and
//!    duplicate check, still follow the old log.
//! 2. [`finish`], on the writer thread between two group commits: copies
//!    what was appended since that end (whole groups, as written) to the
//!    new log, syncs it, publishes it with one rename and a directory sync,
//!    and swaps the index. Appends wait for this step only: the tail
//!    written during the first step, not the whole log.
//!
//! One pass runs at a time (the handle's compaction lock). A deletion
//! (CONTRACT §27) takes the same lock, appends its erasure markers on the
//! writer ([`crate::writer::Command::Erase`]) and then runs a pass without
//! a policy, which rewrites the log without the deleted runs' lines.

use std::{
    collections::HashMap,
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use runstore_core::{
    Durability, Error, EventId, EventRecord, MaintenanceReport, Result, StreamKey,
    raw::compaction::{CompactionPolicy, StreamCompaction, compact_stream},
};
use tokio::sync::OwnedMutexGuard;

use crate::{
    error::io_at,
    fileio::{self, SeqWriter},
    index::{Loc, LogFile, MarkerEntry},
    layout::{LOG_FILE, TMP_SUFFIX},
    writer::{MAX_SPAN, Shared},
};

/// What the index keeps of a compacted stream's old records.
struct Settled {
    /// The earliest `occurred_at_ms` of the events that stay.
    oldest_ms: u64,
    /// The markers the new one replaces.
    old_markers: Vec<(EventId, u64)>,
}

/// One stream's change, computed (and its marker serialized and checked)
/// before the rewrite starts, so that the rewrite itself can fail only as a
/// whole (I/O), never because of one stream.
struct Planned {
    change: StreamCompaction,
    settled: Settled,
    /// The new marker's line, without its newline.
    marker_line: Vec<u8>,
}

/// Reads one stream and computes its change; `None` when nothing in it is
/// old enough. Every failure here is the stream's own (CONTRACT §25).
fn plan(
    shared: &Shared,
    old: &LogFile,
    stream: &Taken,
    floor: Option<u64>,
    policy: &CompactionPolicy,
) -> Result<Option<Planned>> {
    let key = &stream.key;
    let records = stream
        .locs
        .iter()
        .map(|loc| old.read_record(&key.tenant, &key.run_id, loc))
        .collect::<Result<Vec<_>>>()?;
    let Some(change) = compact_stream(&key.tenant, &key.run_id, &records, floor, policy)? else {
        return Ok(None);
    };
    // The marker is the one record compaction writes rather than copies: it
    // passes the same checks as an imported one (CONTRACT §21), so that
    // nothing in it (a scope taken from an old record) can break a limit.
    let refuse = |reason: &dyn std::fmt::Display| {
        Error::corrupt(
            format_args!("{}, stream {key}", old.path.display()),
            format_args!(
                "the compaction marker at seq {} built from the stream's records {reason}",
                change.marker.seq
            ),
        )
    };
    match shared
        .limits
        .check_import(&key.run_id, std::slice::from_ref(&change.marker))
    {
        Ok(()) => {}
        Err(Error::InvalidInput { reason }) => {
            return Err(refuse(&format_args!("breaks a limit: {reason}")));
        }
        Err(err) => return Err(err),
    }
    // Its feed position is not known yet: the last step fills it in
    // (crate::feed).
    let mut marker_line = Vec::new();
    crate::feed::write_reserved(&mut marker_line, &change.marker)
        .map_err(|err| refuse(&format_args!("{err}")))?;
    if u32::try_from(marker_line.len()).is_err() {
        return Err(refuse(&"is longer than 4 GiB"));
    }
    // Keep only what the index needs afterwards, not the records.
    let removed = |record: &EventRecord| change.remove_seqs.binary_search(&record.seq).is_ok();
    let settled = Settled {
        oldest_ms: records
            .iter()
            .filter(|record| !record.is_compaction_marker() && !removed(record))
            .map(|record| record.occurred_at_ms)
            .min()
            .unwrap_or(u64::MAX),
        old_markers: records
            .iter()
            .filter(|record| record.is_compaction_marker() && removed(record))
            .map(|record| (record.event_id.clone(), record.seq))
            .collect(),
    };
    Ok(Some(Planned {
        change,
        settled,
        marker_line,
    }))
}

/// A stream as the first step took it: its key, its records up to the
/// log's end then, and the earliest event time the index knew.
struct Taken {
    key: StreamKey,
    locs: Vec<Loc>,
    oldest_ms: u64,
}

/// What [`prepare`] leaves for [`finish`]: the new log written up to the
/// old log's end at the time, synced, and what the index must learn.
pub(crate) struct Rewritten {
    /// The pass's hold on the handle's compaction lock, released when the
    /// new log is published or discarded (a dropped `Rewritten` removes
    /// nothing: the next pass truncates the temporary file).
    _pass: OwnedMutexGuard<()>,
    /// The log the new one replaces, and how much of it was rewritten.
    old: Arc<LogFile>,
    end: u64,
    /// The new log, at `tmp`, and its length so far.
    file: File,
    written: u64,
    /// The new places of each stream's surviving records, by index slot
    /// (the streams the first step took).
    new_locs: Vec<Vec<Loc>>,
    /// Where each compacted stream's new marker starts in the new log, by
    /// slot: its feed position is filled in there by [`finish`].
    marker_offsets: HashMap<usize, u64>,
    changes: HashMap<usize, Planned>,
    report: MaintenanceReport,
}

/// What [`prepare`] found.
pub(crate) enum Prepared {
    /// Nothing to rewrite: the report (of the streams that failed, if any).
    Done(MaintenanceReport),
    /// A rewritten log for [`finish`].
    Rewritten(Box<Rewritten>),
}

fn paths(shared: &Shared) -> (PathBuf, PathBuf) {
    (
        shared.dir.join(LOG_FILE),
        shared.dir.join(format!("{LOG_FILE}{TMP_SUFFIX}")),
    )
}

/// The first step of store-wide compaction (CONTRACT §8-§11), off the
/// writer thread: plans every stream with something old enough and writes
/// the new log up to the old log's current end.
///
/// A stream that cannot be compacted (an unreadable record, a malformed
/// marker, a marker that would break a limit) is reported and left as it is;
/// the others are compacted (CONTRACT §25). Only a failure of the rewrite
/// itself (I/O) fails the pass.
///
/// `pass` is the handle's compaction lock, held until the pass ends: a
/// pass whose caller stopped waiting still holds it while it writes the
/// temporary file, so no second pass writes that file at the same time.
///
/// Without a `policy` the pass prunes nothing: it rewrites the log only to
/// drop the lines of deleted runs ([`LogState::erased_bytes`]), and answers
/// `Done` when there are none. With one, it drops them too.
///
/// [`LogState::erased_bytes`]: crate::writer::LogState::erased_bytes
pub(crate) fn prepare(
    shared: &Shared,
    policy: Option<&CompactionPolicy>,
    pass: OwnedMutexGuard<()>,
) -> Result<Prepared> {
    if let Some(error) = shared.poisoned() {
        return Err(error);
    }
    let floors = shared.snapshots.floors();
    // What the pass works on, taken under the read lock in one go; the
    // writer appends after `end` meanwhile.
    let (old, end, streams, erased_bytes) = {
        let state = shared.read_state();
        let streams: Vec<Taken> = state
            .index
            .streams
            .iter()
            .map(|stream| Taken {
                key: stream.key.clone(),
                locs: stream.locs.clone(),
                oldest_ms: stream.oldest_ms,
            })
            .collect();
        (state.log.clone(), state.end, streams, state.erased_bytes)
    };
    let mut report = MaintenanceReport::default();
    let mut changes: HashMap<usize, Planned> = HashMap::new();
    for (slot, stream) in streams.iter().enumerate() {
        let Some(policy) = policy else {
            break;
        };
        if stream.oldest_ms >= policy.cutoff_ms() {
            continue;
        }
        let floor = floors.get(&stream.key).copied();
        if floor.is_some_and(|floor| stream.locs.first().is_none_or(|loc| loc.seq >= floor)) {
            continue;
        }
        match plan(shared, &old, stream, floor, policy) {
            Ok(Some(planned)) => {
                changes.insert(slot, planned);
            }
            Ok(None) => {}
            Err(err) => report.record(&stream.key, Err(err)),
        }
    }
    if changes.is_empty() && erased_bytes == 0 {
        report.sort();
        return Ok(Prepared::Done(report));
    }

    // Every record in file order, to copy the survivors in that order.
    let mut order: Vec<(Loc, usize)> = streams
        .iter()
        .enumerate()
        .flat_map(|(slot, stream)| stream.locs.iter().map(move |loc| (*loc, slot)))
        .collect();
    order.sort_unstable_by_key(|(loc, _)| loc.offset);
    let mut new_locs: Vec<Vec<Loc>> = streams
        .iter()
        .map(|stream| Vec::with_capacity(stream.locs.len()))
        .collect();
    let mut marker_offsets: HashMap<usize, u64> = HashMap::new();
    drop(streams);

    let io = &shared.io;
    let (_, tmp) = paths(shared);
    let written = (|| -> Result<(File, u64)> {
        let file = io
            .create_truncated(&tmp)
            .map_err(|err| io_at("create", &tmp, err))?;
        let mut out = BufWriter::with_capacity(1 << 20, io.writer(file, &tmp));
        let mut position = 0u64;
        let mut run: Vec<(Loc, usize)> = Vec::new();
        let flush_run = |run: &mut Vec<(Loc, usize)>,
                         out: &mut BufWriter<SeqWriter<'_>>,
                         position: &mut u64,
                         new_locs: &mut Vec<Vec<Loc>>|
         -> Result<()> {
            if run.is_empty() {
                return Ok(());
            }
            let locs: Vec<Loc> = run.iter().map(|(loc, _)| *loc).collect();
            let bytes = old.read_span(&locs)?;
            let base = locs[0].offset;
            // The new log is published whole by one rename, so it needs no
            // batch framing: every line is written closed.
            for (loc, slot) in run.drain(..) {
                let from = usize::try_from(loc.offset - base).expect("a span fits in memory");
                let line = bytes[from..from + loc.len as usize].trim_ascii();
                out.write_all(line)
                    .and_then(|()| out.write_all(b"\n"))
                    .map_err(|err| io_at("write", &tmp, err))?;
                let len = u32::try_from(line.len()).expect("no longer than before");
                new_locs[slot].push(Loc {
                    seq: loc.seq,
                    pos: loc.pos,
                    offset: *position,
                    len,
                });
                *position += u64::from(len) + 1;
            }
            Ok(())
        };
        for (loc, slot) in order {
            let removed = changes.get(&slot).and_then(|planned| {
                planned
                    .change
                    .remove_seqs
                    .binary_search(&loc.seq)
                    .is_ok()
                    .then_some(planned)
            });
            match removed {
                None => {
                    let adjacent = run.last().is_none_or(|(last, _)| {
                        loc.offset == last.offset + u64::from(last.len) + 1
                            && loc.offset - run[0].0.offset < MAX_SPAN
                    });
                    if !adjacent {
                        flush_run(&mut run, &mut out, &mut position, &mut new_locs)?;
                    }
                    run.push((loc, slot));
                }
                Some(planned) => {
                    flush_run(&mut run, &mut out, &mut position, &mut new_locs)?;
                    if planned.change.marker.seq == loc.seq {
                        let line = &planned.marker_line;
                        let len = u32::try_from(line.len()).expect("checked when planned");
                        out.write_all(line)
                            .and_then(|()| out.write_all(b"\n"))
                            .map_err(|err| io_at("write", &tmp, err))?;
                        // Its position is filled in by `finish`.
                        new_locs[slot].push(Loc {
                            seq: loc.seq,
                            pos: 0,
                            offset: position,
                            len,
                        });
                        marker_offsets.insert(slot, position);
                        position += u64::from(len) + 1;
                    }
                }
            }
        }
        flush_run(&mut run, &mut out, &mut position, &mut new_locs)?;
        Ok((synced(out, io, &tmp)?, position))
    })();
    match written {
        Ok((file, written)) => Ok(Prepared::Rewritten(Box::new(Rewritten {
            _pass: pass,
            old,
            end,
            file,
            written,
            new_locs,
            marker_offsets,
            changes,
            report,
        }))),
        Err(err) => {
            let _ = io.remove_file(&tmp);
            Err(err)
        }
    }
}

/// Flushes a new log's last bytes and syncs it.
pub(crate) fn synced(out: BufWriter<SeqWriter<'_>>, io: &fileio::Io, tmp: &Path) -> Result<File> {
    let file = out
        .into_inner()
        .map_err(|err| io_at("write", tmp, err.into_error()))?
        .into_file();
    io.sync_data(&file, tmp)
        .map_err(|err| io_at("sync", tmp, err))?;
    Ok(file)
}

/// The second step, on the writer thread: copies what was appended to the
/// old log since [`prepare`] took its end, publishes the new log and swaps
/// the index. Answers the pass's report.
pub(crate) fn finish(shared: &Shared, rewritten: Rewritten) -> Result<MaintenanceReport> {
    let Rewritten {
        _pass,
        old,
        end,
        file,
        written,
        mut new_locs,
        marker_offsets,
        mut changes,
        mut report,
    } = rewritten;
    let io = &shared.io;
    let (path, tmp) = paths(shared);
    let discard = |err: Error| {
        let _ = io.remove_file(&tmp);
        err
    };
    if let Some(error) = shared.poisoned() {
        return Err(discard(error));
    }
    let (tail_end, mut tail, positions) = {
        let state = shared.read_state();
        if !Arc::ptr_eq(&state.log, &old) {
            return Err(discard(Error::corrupt(
                old.path.display(),
                "the log was replaced while compaction rewrote it",
            )));
        }
        // Each compacted stream's records appended since, and whether one
        // of them is a marker (an import's): the new marker cannot stand
        // beside it, and the pass is given up rather than guessed at.
        let mut tail: HashMap<usize, (StreamKey, Vec<Loc>)> = HashMap::new();
        for (slot, stream) in state.index.streams.iter().enumerate() {
            let after = stream.locs.partition_point(|loc| loc.offset < end);
            if after == stream.locs.len() {
                continue;
            }
            if changes.contains_key(&slot) {
                let first_tail_seq = stream.locs[after].seq;
                if stream.markers.iter().any(|m| m.seq >= first_tail_seq) {
                    return Err(discard(Error::invalid(format_args!(
                        "a compaction marker was imported into stream {} while compaction \
                         rewrote the log; run compaction again",
                        stream.key
                    ))));
                }
            }
            tail.insert(slot, (stream.key.clone(), stream.locs[after..].to_vec()));
        }
        // Each new marker takes its tenant's next feed position, above
        // every one handed out before (CONTRACT §29); nothing else takes
        // positions meanwhile: this runs on the writer thread.
        let mut slots: Vec<usize> = changes.keys().copied().collect();
        slots.sort_unstable();
        let mut heads: HashMap<&runstore_core::Tenant, u64> = HashMap::new();
        let mut positions: Vec<(usize, u64)> = Vec::with_capacity(slots.len());
        for slot in slots {
            let tenant = &state.index.streams[slot].key.tenant;
            let head = heads
                .entry(tenant)
                .or_insert_with(|| state.index.feed_head(tenant));
            *head = match crate::feed::next(*head) {
                Ok(next) => next,
                Err(err) => return Err(discard(err)),
            };
            positions.push((slot, *head));
        }
        (state.end, tail, positions)
    };
    // The appended groups, copied as written (batch framing included) after
    // the rewritten part, then synced.
    let shift = |loc: &Loc| Loc {
        offset: loc.offset - end + written,
        ..*loc
    };
    let copied = (|| -> Result<()> {
        shared.delay_commit();
        for (slot, position) in &positions {
            let at = marker_offsets[slot] + crate::feed::MEMBER.len() as u64;
            io.write_all_at(&file, &tmp, &crate::feed::fill_reserved(*position), at)
                .map_err(|err| io_at("write", &tmp, err))?;
        }
        let mut from = end;
        while from < tail_end {
            let len = (tail_end - from).min(MAX_SPAN);
            let mut bytes = vec![0; usize::try_from(len).expect("a span fits in memory")];
            fileio::read_exact_at(&old.file, &mut bytes, from)
                .map_err(|err| io_at("read", &old.path, err))?;
            io.write_all_at(&file, &tmp, &bytes, from - end + written)
                .map_err(|err| io_at("write", &tmp, err))?;
            from += len;
        }
        if tail_end > end || !positions.is_empty() {
            io.sync_data(&file, &tmp)
                .map_err(|err| io_at("sync", &tmp, err))?;
        }
        Ok(())
    })();
    copied.map_err(discard)?;
    // The earliest time among a compacted stream's records appended since.
    let mut tail_oldest: HashMap<usize, u64> = HashMap::new();
    for slot in changes.keys() {
        let Some((key, locs)) = tail.get(slot) else {
            continue;
        };
        for loc in locs {
            let record = old
                .read_record(&key.tenant, &key.run_id, loc)
                .map_err(discard)?;
            if !record.is_compaction_marker() {
                let oldest = tail_oldest.entry(*slot).or_insert(u64::MAX);
                *oldest = (*oldest).min(record.occurred_at_ms);
            }
        }
    }
    drop(file);
    io.rename(&tmp, &path)
        .map_err(|err| discard(io_at("replace", &path, err)))?;
    // From here the file on disk is the compacted one: the index must follow
    // it, and any failure leaves the handle unfit for writing.
    let reopened = (|| -> Result<Arc<LogFile>> {
        if shared.durability == Durability::Durable {
            io.sync_dir(&shared.dir)
                .map_err(|err| io_at("sync", &shared.dir, err))?;
        }
        let file = io
            .open(&path, &fileio::log_options())
            .map_err(|err| io_at("reopen", &path, err))?;
        Ok(Arc::new(LogFile::new(file, path.clone())))
    })();
    let log = match reopened {
        Ok(log) => log,
        Err(err) => {
            shared.poison(format!("compaction could not finish: {err}"));
            return Err(err);
        }
    };
    let mut state = shared.write_state();
    let state = &mut *state;
    state.log = log.clone();
    state.end = tail_end - end + written;
    // The rewrite copied only what the index holds. No deletion ran since
    // the first step: it waits for the compaction lock this pass holds.
    state.erased_bytes = 0;
    let index = &mut state.index;
    let mut result = Ok(());
    // The pruned records and the replaced markers leave the feed; the new
    // markers join it at the end, in position order.
    let mut tenants: HashMap<runstore_core::Tenant, Vec<usize>> = HashMap::new();
    for slot in changes.keys() {
        tenants
            .entry(index.streams[*slot].key.tenant.clone())
            .or_default()
            .push(*slot);
    }
    for tenant in tenants.keys() {
        index.forget_in_feed(tenant, |entry| {
            changes
                .get(&entry.slot)
                .is_some_and(|planned| planned.change.remove_seqs.binary_search(&entry.seq).is_ok())
        });
    }
    let positions: HashMap<usize, u64> = positions.into_iter().collect();
    let mut new_markers: Vec<(usize, Loc)> = Vec::with_capacity(positions.len());
    new_locs.resize_with(index.streams.len(), Vec::new);
    for (slot, mut locs) in new_locs.into_iter().enumerate() {
        let stream = &mut index.streams[slot];
        let tail_locs = tail.remove(&slot).map(|(_, locs)| locs).unwrap_or_default();
        // The markers of the rewritten part lost what preceded their `{`;
        // those of the tail were copied as they were.
        let first_tail_seq = tail_locs.first().map_or(u64::MAX, |loc| loc.seq);
        for marker in &mut stream.markers {
            if marker.seq < first_tail_seq {
                marker.trimmed();
            }
        }
        if let (Some(position), Some(planned)) = (positions.get(&slot), changes.get(&slot))
            && let Ok(at) = locs.binary_search_by_key(&planned.change.marker.seq, |loc| loc.seq)
        {
            locs[at].pos = *position;
            new_markers.push((slot, locs[at]));
        }
        locs.extend(tail_locs.iter().map(shift));
        stream.locs = locs;
        let Some(Planned {
            change,
            settled,
            marker_line: planned_line,
        }) = changes.remove(&slot)
        else {
            continue;
        };
        report.record(&stream.key, Ok(change.pruned));
        for (event_id, seq) in &settled.old_markers {
            stream.remove_id(event_id.as_str(), *seq, &index.hasher);
            stream.markers.retain(|marker| marker.seq != *seq);
        }
        stream.markers.push(MarkerEntry::new(
            &planned_line,
            change.marker.seq,
            change.marker.event_id.as_str(),
        ));
        stream.markers.sort_unstable_by_key(|marker| marker.seq);
        stream.oldest_ms = settled
            .oldest_ms
            .min(tail_oldest.get(&slot).copied().unwrap_or(u64::MAX));
        if let Err(err) = stream.insert_id(
            change.marker.event_id.as_str(),
            change.marker.seq,
            &index.hasher,
            &log,
        ) {
            result = Err(err);
        }
    }
    new_markers.sort_unstable_by_key(|(_, loc)| loc.pos);
    for (slot, loc) in &new_markers {
        index.push_to_feed(*slot, loc);
    }
    shared.feed.raise();
    if let Err(err) = result {
        shared.poison(format!("indexing the compacted log failed: {err}"));
        return Err(err);
    }
    report.sort();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use runstore_core::{
        EventId, EventLog, EventLogExt, ReadQuery, RunId, RunStatus, SnapshotId, SnapshotRecord,
        SnapshotStore, Tenant,
    };

    use super::*;
    use crate::{JsonlStore, index::StreamIndex, writer::Command};

    fn event(run: &str, id: &str, at: u64) -> EventRecord {
        EventRecord::new(
            &Tenant::local(),
            RunId::new(run).unwrap(),
            EventId::new(id).unwrap(),
            "step",
            at,
        )
    }

    fn ids(records: &[EventRecord]) -> Vec<(u64, String)> {
        records
            .iter()
            .map(|r| (r.seq, r.event_id.as_str().to_owned()))
            .collect()
    }

    // Appends made between the two steps -- to the stream being compacted,
    // to another one, to a new one, as a batch -- land in the new log after
    // the rewritten part, as written: the index and a reopen read the same
    // streams, and a retried id of each answers its seq.
    #[tokio::test(flavor = "multi_thread")]
    async fn appends_between_the_steps_are_carried_into_the_new_log() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tenant::local();
        let store = JsonlStore::open(dir.path().join("store")).await.unwrap();
        for n in 1..=4 {
            store
                .append(&t, &event("a", &format!("a{n}"), n))
                .await
                .unwrap();
            store
                .append(&t, &event("b", &format!("b{n}"), n))
                .await
                .unwrap();
        }
        let floor = SnapshotRecord::new(
            &t,
            RunId::new("a").unwrap(),
            SnapshotId::new("s").unwrap(),
            3,
            10,
            RunStatus::Running,
        );
        store.put(&t, &floor).await.unwrap();
        let policy = CompactionPolicy::new(1, 100).unwrap().unwrap();
        let pass = store.inner.compaction.clone().lock_owned().await;
        let rewritten = first_step(&store, Some(policy), pass).await;
        // The rewritten log holds the pass's lock until it is published,
        // whoever still waits for it: no second pass writes the temporary
        // file meanwhile.
        assert!(store.inner.compaction.try_lock().is_err());

        store.append(&t, &event("a", "a5", 200)).await.unwrap();
        store.append(&t, &event("b", "b5", 200)).await.unwrap();
        let batch = [event("c", "c1", 1), event("c", "c2", 2)];
        let c = RunId::new("c").unwrap();
        store.append_batch(&t, &c, &batch, None).await.unwrap();
        let report = store
            .request(|reply| Command::FinishCompaction { rewritten, reply })
            .await
            .unwrap();
        assert!(store.inner.compaction.try_lock().is_ok(), "released");
        // `a` below its floor at seq 3; `b` has no snapshot and every event
        // was old enough when the pass began.
        assert_eq!(report.removed, 2 + 4, "{report:?}");

        check(&store).await;
        drop(store);
        let reopened = JsonlStore::open(dir.path().join("store")).await.unwrap();
        check(&reopened).await;
    }

    // After a pass, the index's oldest live event of a compacted stream is
    // the oldest event the pass kept: not a pruned one, not the marker.
    // Lower, later passes would rewrite the stream for nothing; higher,
    // they would skip events grown old enough (the suite's
    // `compaction_prunes_later_what_was_too_young_before`).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_pass_leaves_the_oldest_kept_event_in_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tenant::local();
        let store = JsonlStore::open(dir.path().join("store")).await.unwrap();
        for n in 1..=4 {
            store
                .append(&t, &event("a", &format!("a{n}"), n * 100))
                .await
                .unwrap();
        }
        // Cutoff 250: a1 and a2 go, a3 (300) is the oldest kept.
        let report = store.compact(150, 400).await.unwrap();
        assert_eq!(report.removed, 2, "{report:?}");
        assert_eq!(with_stream(&store, "a", |a| a.oldest_ms), 300);
    }

    // A marker imported as the first line of a batch starts with the
    // batch's space. A rewrite drops the space from the lines it writes,
    // and the index's pages of such a marker follow; a marker copied in
    // the tail keeps its space and its pages. (Pages that miss their line
    // still answer, from the whole list, only slower.)
    #[tokio::test(flavor = "multi_thread")]
    async fn the_pages_of_a_rewritten_marker_follow_its_trimmed_line() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tenant::local();
        let store = JsonlStore::open(dir.path().join("store")).await.unwrap();
        let import = |run: &'static str| {
            let store = store.clone();
            let t = t.clone();
            async move {
                let run_id = RunId::new(run).unwrap();
                let pruned: Vec<EventRecord> = (1..=2)
                    .map(|seq| {
                        let mut record = event(run, &format!("{run}{seq}"), 1);
                        record.seq = seq;
                        record
                    })
                    .collect();
                let marker = runstore_core::raw::compaction::merge_marker(
                    &t,
                    &run_id,
                    None,
                    pruned.iter(),
                    5_000,
                    |_| Ok(false),
                )
                .unwrap();
                let mut young = event(run, &format!("{run}3"), 10_000);
                young.seq = 3;
                store
                    .import_stream(&t, &run_id, &[marker, young])
                    .await
                    .unwrap();
            }
        };
        let leads = |run: &str| -> Vec<Option<u32>> {
            with_stream(&store, run, |stream| {
                stream.markers.iter().map(MarkerEntry::lead).collect()
            })
        };
        import("m").await;
        assert_eq!(leads("m"), [Some(1)]);
        append_old(&store, "a", 2).await;
        let policy = CompactionPolicy::new(1, 100).unwrap().unwrap();
        let pass = store.inner.compaction.clone().lock_owned().await;
        let rewritten = first_step(&store, Some(policy), pass).await;
        import("n").await;
        let report = store
            .request(|reply| Command::FinishCompaction { rewritten, reply })
            .await
            .unwrap();
        assert_eq!(report.removed, 2, "only a is compacted: {report:?}");
        assert_eq!(leads("m"), [Some(0)], "rewritten");
        assert_eq!(leads("n"), [Some(1)], "copied as it was");
        for run in ["m", "n"] {
            let again = store
                .append(&t, &event(run, &format!("{run}1"), 1))
                .await
                .unwrap();
            assert_eq!((again.seq, again.inserted), (1, false), "{run}");
        }
    }

    // The rewrite reads kept records that lie next to each other with one
    // read, and starts a new read at a record MAX_SPAN or more after the
    // read's first (answers are the same however the reads are grouped).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_rewrite_reads_adjacent_kept_records_together_within_max_span() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tenant::local();
        let store = JsonlStore::open(dir.path().join("store")).await.unwrap();
        let sized = |id: &str, at: u64, chars: usize| {
            event(if id == "a1" { "a" } else { "k" }, id, at)
                .with_payload(serde_json::json!("x".repeat(chars)))
        };
        // a1, pruned, puts k's records 2 MiB into the log.
        store.append(&t, &sized("a1", 1, 2 << 20)).await.unwrap();
        let locs =
            |run: &str| -> Vec<Loc> { with_stream(&store, run, |stream| stream.locs.clone()) };
        // k1 shows how long a line is around its payload; k2-k4 then fill
        // MAX_SPAN exactly, so that k5 starts MAX_SPAN after k1.
        store.append(&t, &sized("k1", 10_000, 100)).await.unwrap();
        let frame = usize::try_from(locs("k")[0].len).unwrap() - 100;
        let k1_line = usize::try_from(locs("k")[0].len).unwrap() + 1;
        let left = usize::try_from(MAX_SPAN).unwrap() - k1_line;
        for (n, line) in [(2, left / 3), (3, left / 3), (4, left - 2 * (left / 3))] {
            let record = sized(&format!("k{n}"), 10_000, line - 1 - frame);
            store.append(&t, &record).await.unwrap();
        }
        for n in 5..=6 {
            store
                .append(&t, &sized(&format!("k{n}"), 10_000, 100))
                .await
                .unwrap();
        }
        let k = locs("k");
        assert_eq!(
            k[4].offset - k[0].offset,
            MAX_SPAN,
            "sized as planned: {k:?}"
        );

        let log = store.inner.shared.read_state().log.clone();
        let before = log.span_reads.load(std::sync::atomic::Ordering::Relaxed);
        let policy = CompactionPolicy::new(1, 100).unwrap().unwrap();
        let pass = store.inner.compaction.clone().lock_owned().await;
        let rewritten = first_step(&store, Some(policy), pass).await;
        let reads = log.span_reads.load(std::sync::atomic::Ordering::Relaxed) - before;
        // One read of a1 (its id goes into the marker), then k1-k4 and
        // k5-k6.
        assert_eq!(reads, 3);
        let report = store
            .request(|reply| Command::FinishCompaction { rewritten, reply })
            .await
            .unwrap();
        assert_eq!(report.removed, 1, "{report:?}");
        let records = store
            .read(&t, &RunId::new("k").unwrap(), ReadQuery::all())
            .await
            .unwrap();
        assert_eq!(records.len(), 6);
    }

    // A marker's own id is confirmed from the index, without reading its
    // line (which can be large); a live event's id is read from its line.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_markers_own_id_answers_without_reading_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tenant::local();
        let store = JsonlStore::open(dir.path().join("store")).await.unwrap();
        append_old(&store, "a", 2).await;
        store
            .append(&t, &event("a", "young", 10_000))
            .await
            .unwrap();
        let report = store.compact(1, 100).await.unwrap();
        assert_eq!(report.removed, 2, "{report:?}");
        let a = RunId::new("a").unwrap();
        let records = store.read(&t, &a, ReadQuery::all()).await.unwrap();
        let marker = records[0].event_id.clone();
        assert!(records[0].is_compaction_marker());
        let log = store.inner.shared.read_state().log.clone();
        let reads = || log.span_reads.load(std::sync::atomic::Ordering::Relaxed);
        let before = reads();
        assert_eq!(store.seq_of(&t, &a, &marker).await.unwrap(), Some(2));
        assert_eq!(reads(), before, "the marker's id came from the index");
        let young = EventId::new("young").unwrap();
        assert_eq!(store.seq_of(&t, &a, &young).await.unwrap(), Some(3));
        assert_eq!(reads(), before + 1, "the event's id came from its line");
    }

    // A marker replaced by a later pass leaves the index: it answers for
    // the compacted ids and the new marker's own id, no more (CONTRACT §9).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_replaced_markers_id_leaves_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tenant::local();
        let store = JsonlStore::open(dir.path().join("store")).await.unwrap();
        append_old(&store, "a", 3).await;
        assert_eq!(store.compact(1, 100).await.unwrap().removed, 3);
        for n in 4..=5 {
            store
                .append(&t, &event("a", &format!("a{n}"), n))
                .await
                .unwrap();
        }
        assert_eq!(store.compact(1, 100).await.unwrap().removed, 2);
        let stats = store.index_stats();
        assert_eq!((stats.records, stats.ids), (1, 5 + 1), "{stats:?}");
    }

    /// Answers `f` of the local tenant's stream `run` in the index.
    fn with_stream<T>(store: &JsonlStore, run: &str, f: impl FnOnce(&StreamIndex) -> T) -> T {
        let state = store.inner.shared.read_state();
        let run = RunId::new(run).unwrap();
        f(state.index.stream(&Tenant::local(), &run).unwrap())
    }

    /// Appends `count` events to `run`, at times 1, 2, ...
    async fn append_old(store: &JsonlStore, run: &str, count: u64) {
        for n in 1..=count {
            store
                .append(&Tenant::local(), &event(run, &format!("{run}{n}"), n))
                .await
                .unwrap();
        }
    }

    /// Runs a pass's first step, which must rewrite the log.
    async fn first_step(
        store: &JsonlStore,
        policy: Option<CompactionPolicy>,
        pass: OwnedMutexGuard<()>,
    ) -> Box<Rewritten> {
        let shared = store.inner.shared.clone();
        let prepared = tokio::task::spawn_blocking(move || prepare(&shared, policy.as_ref(), pass))
            .await
            .unwrap()
            .unwrap();
        let Prepared::Rewritten(rewritten) = prepared else {
            panic!("the first step rewrote nothing");
        };
        rewritten
    }

    /// The file operations of a store, in order, as `(kind, file name,
    /// bytes written)`.
    #[derive(Default)]
    struct Ops(std::sync::Mutex<Vec<(&'static str, String, usize)>>);

    impl crate::fileio::IoObserver for Ops {
        fn observe(&self, op: crate::fileio::IoOp<'_>) {
            use crate::fileio::IoOp;
            let name = |path: &Path| path.file_name().unwrap().to_string_lossy().into_owned();
            let entry = match op {
                IoOp::Write { path, bytes, .. } => ("write", name(path), bytes.len()),
                IoOp::SyncData { path } => ("sync", name(path), 0),
                IoOp::Rename { from, .. } => ("rename", name(from), 0),
                _ => return,
            };
            self.0.lock().unwrap().push(entry);
        }
    }

    impl Ops {
        fn len(&self) -> usize {
            self.0.lock().unwrap().len()
        }

        /// The operations on the temporary log from the `from`-th on, up to
        /// its rename.
        fn on_tmp_since(&self, from: usize) -> Vec<(&'static str, usize)> {
            let tmp = format!("{LOG_FILE}{TMP_SUFFIX}");
            self.0.lock().unwrap()[from..]
                .iter()
                .filter(|(_, name, _)| *name == tmp)
                .map(|(kind, _, len)| (*kind, *len))
                .collect()
        }
    }

    async fn observed_store(dir: &Path) -> (JsonlStore, Arc<Ops>) {
        let ops = Arc::new(Ops::default());
        let options = crate::JsonlOptions::default().with_io_observer(ops.clone());
        let store = JsonlStore::open_with(dir.join("store"), options)
            .await
            .unwrap();
        (store, ops)
    }

    // What is appended between the steps is copied in reads of at most
    // MAX_SPAN, each written once, then synced before the rename; and a
    // compacted stream whose every event was pruned takes the time of the
    // oldest event appended meanwhile as its oldest.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_tail_longer_than_a_read_is_copied_in_spans_then_synced() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tenant::local();
        let (store, ops) = observed_store(dir.path()).await;
        append_old(&store, "a", 3).await;
        let policy = CompactionPolicy::new(1, 100).unwrap().unwrap();
        let pass = store.inner.compaction.clone().lock_owned().await;
        let rewritten = first_step(&store, Some(policy), pass).await;
        let end = store.inner.shared.write_state().end;
        // Three records of 3 MiB: a tail over three spans.
        let big = "x".repeat(3 << 20);
        for n in 1..=3 {
            let record = event("t", &format!("t{n}"), 1).with_payload(serde_json::json!(big));
            store.append(&t, &record).await.unwrap();
        }
        store.append(&t, &event("a", "a4", 200)).await.unwrap();
        let tail = store.inner.shared.write_state().end - end;
        assert!(tail > MAX_SPAN, "{tail}");
        let before = ops.len();
        let report = store
            .request(|reply| Command::FinishCompaction { rewritten, reply })
            .await
            .unwrap();
        assert_eq!(report.removed, 3, "{report:?}");

        let on_tmp = ops.on_tmp_since(before);
        // The marker's feed position, filled in; the tail span by span; the
        // sync; the rename.
        let copies: Vec<usize> = on_tmp[1..on_tmp.len() - 2]
            .iter()
            .map(|(kind, len)| {
                assert_eq!(*kind, "write", "{on_tmp:?}");
                *len
            })
            .collect();
        assert_eq!(on_tmp[0].0, "write", "{on_tmp:?}");
        let full = usize::try_from(tail / MAX_SPAN).unwrap();
        let mut spans = vec![usize::try_from(MAX_SPAN).unwrap(); full];
        spans.push(usize::try_from(tail % MAX_SPAN).unwrap());
        assert_eq!(copies, spans);
        assert_eq!(on_tmp[on_tmp.len() - 2..], [("sync", 0), ("rename", 0)]);
        assert_eq!(
            with_stream(&store, "a", |a| a.oldest_ms),
            200,
            "a4 is a's oldest event"
        );

        drop(store);
        let store = JsonlStore::open(dir.path().join("store")).await.unwrap();
        let run = RunId::new("t").unwrap();
        let records = store.read(&t, &run, ReadQuery::all()).await.unwrap();
        assert_eq!(
            ids(&records),
            [(1, "t1".into()), (2, "t2".into()), (3, "t3".into())]
        );
        assert!(records.iter().all(|r| r.payload == serde_json::json!(big)));
        let run = RunId::new("a").unwrap();
        let records = store.read(&t, &run, ReadQuery::all()).await.unwrap();
        assert_eq!(records.len(), 2, "the marker and a4");
    }

    // A deletion's pass (no policy, no marker) syncs the new log again only
    // when something was appended since its first step.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_deletion_pass_syncs_the_tail_it_copied_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tenant::local();
        let (store, ops) = observed_store(dir.path()).await;
        for run in ["x", "y", "z"] {
            store
                .append(&t, &event(run, &format!("{run}1"), 1))
                .await
                .unwrap();
        }
        for (run, appended) in [("x", true), ("y", false)] {
            let key = StreamKey::new(t.clone(), RunId::new(run).unwrap());
            let pass = store.inner.compaction.clone().lock_owned().await;
            let counts = store
                .request(|reply| Command::Erase {
                    streams: vec![key],
                    reply,
                })
                .await
                .unwrap();
            assert_eq!(counts, [1]);
            let rewritten = first_step(&store, None, pass).await;
            if appended {
                store.append(&t, &event("z", "z2", 2)).await.unwrap();
            }
            let before = ops.len();
            let report = store
                .request(|reply| Command::FinishCompaction { rewritten, reply })
                .await
                .unwrap();
            assert!(report.is_clean(), "{report:?}");
            let on_tmp = ops.on_tmp_since(before);
            if appended {
                assert_eq!(on_tmp.len(), 3, "{on_tmp:?}");
                assert_eq!(on_tmp[0].0, "write", "{on_tmp:?}");
                assert_eq!(on_tmp[1..], [("sync", 0), ("rename", 0)]);
            } else {
                assert_eq!(on_tmp, [("rename", 0)], "synced when it was written");
            }
        }
        drop(store);
        let store = JsonlStore::open(dir.path().join("store")).await.unwrap();
        let z = RunId::new("z").unwrap();
        let records = store.read(&t, &z, ReadQuery::all()).await.unwrap();
        assert_eq!(ids(&records), [(1, "z1".into()), (2, "z2".into())]);
        assert_eq!(store.list_runs(&t).await.unwrap(), [z]);
    }

    /// The streams of [`appends_between_the_steps_are_carried_into_the_new_log`]
    /// after the pass, read and retried.
    async fn check(store: &JsonlStore) {
        let t = Tenant::local();
        let expected = [
            (
                "a",
                vec![(2, "stateful-compaction-"), (3, "a3"), (4, "a4"), (5, "a5")],
            ),
            ("b", vec![(4, "stateful-compaction-"), (5, "b5")]),
            ("c", vec![(1, "c1"), (2, "c2")]),
        ];
        for (run, want) in &expected {
            let run = RunId::new(*run).unwrap();
            let got = ids(&store.read(&t, &run, ReadQuery::all()).await.unwrap());
            assert_eq!(got.len(), want.len(), "{run}: {got:?}");
            for ((seq, id), (want_seq, prefix)) in got.iter().zip(want) {
                assert!(seq == want_seq && id.starts_with(prefix), "{run}: {got:?}");
            }
        }
        for (run, id, seq) in [
            ("a", "a1", 1),
            ("a", "a5", 5),
            ("b", "b5", 5),
            ("c", "c2", 2),
        ] {
            let again = store.append(&t, &event(run, id, 1)).await.unwrap();
            assert_eq!((again.seq, again.inserted), (seq, false), "{run} {id}");
        }
    }
}
