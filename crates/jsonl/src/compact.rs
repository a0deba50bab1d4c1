//! Compaction (CONTRACT §8-§11): run by the writer thread between group
//! commits, it rewrites the log without the pruned records and old markers,
//! with each compacted stream's new marker in its place, publishes the new
//! log with one rename and swaps the index.

use std::{
    collections::HashMap,
    io::{BufWriter, Write},
    sync::Arc,
};

use runstore_core::{
    Durability, Error, EventId, EventRecord, MaintenanceReport, Result,
    raw::compaction::{CompactionPolicy, StreamCompaction, compact_stream},
};

use crate::{
    error::io_at,
    fileio::{self, SeqWriter},
    index::{Loc, LogFile, MarkerEntry, StreamIndex},
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
    stream: &StreamIndex,
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
    let marker_line =
        serde_json::to_vec(&change.marker).map_err(|err| refuse(&format_args!("{err}")))?;
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

/// Store-wide compaction (CONTRACT §8-§11): rewrites the log without the
/// pruned records and old markers, with each compacted stream's new marker
/// in its place, then swaps the index.
///
/// A stream that cannot be compacted (an unreadable record, a malformed
/// marker, a marker that would break a limit) is reported and left as it is;
/// the others are compacted (CONTRACT §25). Only a failure of the rewrite
/// itself (I/O) fails the pass.
pub(crate) fn compact(shared: &Shared, policy: &CompactionPolicy) -> Result<MaintenanceReport> {
    if let Some(error) = shared.poisoned() {
        return Err(error);
    }
    let floors = shared.snapshots.floors();
    let state = shared.read_state();
    let old = state.log.clone();
    let mut report = MaintenanceReport::default();
    let mut changes: HashMap<usize, Planned> = HashMap::new();
    for (slot, stream) in state.index.streams.iter().enumerate() {
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
    if changes.is_empty() {
        report.sort();
        return Ok(report);
    }

    // Every record in file order, to copy the survivors in that order.
    let mut order: Vec<(Loc, usize)> = state
        .index
        .streams
        .iter()
        .enumerate()
        .flat_map(|(slot, stream)| stream.locs.iter().map(move |loc| (*loc, slot)))
        .collect();
    order.sort_unstable_by_key(|(loc, _)| loc.offset);
    let mut new_locs: Vec<Vec<Loc>> = state
        .index
        .streams
        .iter()
        .map(|stream| Vec::with_capacity(stream.locs.len()))
        .collect();
    drop(state);

    let io = &shared.io;
    let path = shared.dir.join(LOG_FILE);
    let tmp = shared.dir.join(format!("{LOG_FILE}{TMP_SUFFIX}"));
    let written = (|| -> Result<u64> {
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
                        new_locs[slot].push(Loc {
                            seq: loc.seq,
                            offset: position,
                            len,
                        });
                        position += u64::from(len) + 1;
                    }
                }
            }
        }
        flush_run(&mut run, &mut out, &mut position, &mut new_locs)?;
        let file = out
            .into_inner()
            .map_err(|err| io_at("write", &tmp, err.into_error()))?
            .into_file();
        io.sync_data(&file, &tmp)
            .map_err(|err| io_at("sync", &tmp, err))?;
        Ok(position)
    })();
    let new_end = match written {
        Ok(end) => end,
        Err(err) => {
            let _ = io.remove_file(&tmp);
            return Err(err);
        }
    };
    io.rename(&tmp, &path).map_err(|err| {
        let _ = io.remove_file(&tmp);
        io_at("replace", &path, err)
    })?;
    // From here the file on disk is the compacted one: the index must follow
    // it, and any failure leaves the handle unfit for writing.
    let finish = (|| -> Result<Arc<LogFile>> {
        if shared.durability == Durability::Durable {
            io.sync_dir(&shared.dir)
                .map_err(|err| io_at("sync", &shared.dir, err))?;
        }
        let file = io
            .open(&path, &fileio::log_options())
            .map_err(|err| io_at("reopen", &path, err))?;
        Ok(Arc::new(LogFile {
            file,
            path: path.clone(),
        }))
    })();
    let log = match finish {
        Ok(log) => log,
        Err(err) => {
            shared.poison(format!("compaction could not finish: {err}"));
            return Err(err);
        }
    };
    let mut state = shared.write_state();
    let state = &mut *state;
    state.log = log.clone();
    state.end = new_end;
    let index = &mut state.index;
    let mut result = Ok(());
    for (slot, locs) in new_locs.into_iter().enumerate() {
        let stream = &mut index.streams[slot];
        stream.locs = locs;
        // Every line was copied trimmed.
        stream.markers.iter_mut().for_each(MarkerEntry::trimmed);
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
        stream.oldest_ms = settled.oldest_ms;
        if let Err(err) = stream.insert_id(
            change.marker.event_id.as_str(),
            change.marker.seq,
            &index.hasher,
            &log,
        ) {
            result = Err(err);
        }
    }
    if let Err(err) = result {
        shared.poison(format!("indexing the compacted log failed: {err}"));
        return Err(err);
    }
    report.sort();
    Ok(report)
}
