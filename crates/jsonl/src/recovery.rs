//! Opening the log: one pass that repairs a torn tail (CONTRACT §17) and
//! builds the [`Index`].
//!
//! Each line is parsed only as far as the index needs (ids, seq, type,
//! time, tenant); payloads are skipped without being built. A marker's
//! payload is read for the ids it remembers, borrowing them from the line.

use std::{borrow::Cow, collections::HashMap, hash::BuildHasher};

use runstore_core::{
    Durability, Error, EventRecord, MAX_ID_BYTES, Result, RunId, Tenant,
    raw::compaction::COMPACTION_EVENT_TYPE, validate::MAX_SEQ,
};
use serde::Deserialize;

use crate::{
    error::{cause, corrupt_line, io_at},
    fileio::{self, Io},
    index::{IdHasher, Index, Loc, LogFile, MarkerEntry},
    writer::CONTINUED,
};

/// Bytes read per step of the scan.
const CHUNK: usize = 8 << 20;

#[derive(Deserialize)]
struct LightTenant<'a> {
    #[serde(borrow)]
    org_id: Cow<'a, str>,
    #[serde(borrow)]
    workspace_id: Cow<'a, str>,
    #[serde(borrow, default)]
    deployment_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct LightScope<'a> {
    #[serde(borrow)]
    tenant_context: LightTenant<'a>,
}

/// The fields of an event record the index needs; the rest is skipped.
#[derive(Deserialize)]
struct LightRecord<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    run_id: Cow<'a, str>,
    #[serde(default)]
    seq: u64,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(default)]
    occurred_at_ms: u64,
    #[serde(borrow)]
    scope: LightScope<'a>,
}

#[derive(Deserialize)]
struct OpenCompactedId<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    seq: u64,
}

/// A marker's payload as `CompactionPayload` requires it (CONTRACT §9),
/// its ids borrowed from the line: a marker remembering a million ids is
/// read without building a `serde_json::Value` of them.
#[derive(Deserialize)]
struct OpenPayload<'a> {
    #[serde(rename = "compacted_through_seq")]
    _through_seq: u64,
    #[serde(rename = "compacted_through_ms")]
    _through_ms: u64,
    #[serde(rename = "pruned_events")]
    _pruned_events: u64,
    #[serde(borrow)]
    compacted_event_ids: Vec<OpenCompactedId<'a>>,
    #[serde(borrow, rename = "source")]
    _source: Cow<'a, str>,
    #[serde(default)]
    erased_through_seq: Option<u64>,
}

#[derive(Deserialize)]
struct OpenMarker<'a> {
    #[serde(borrow)]
    payload: OpenPayload<'a>,
}

/// What the open pass found.
#[derive(Debug)]
pub(crate) struct Scanned {
    pub(crate) index: Index,
    /// The log's length after repair: where the next record goes.
    pub(crate) end: u64,
    /// Bytes of lines that deleted runs left in the log, unread.
    pub(crate) erased_bytes: u64,
    /// Records whose lines state no feed position (an earlier version's):
    /// the index's feeds are built only when there are none.
    pub(crate) unpositioned: usize,
}

fn id_ok(value: &str) -> bool {
    !value.is_empty() && value.len() <= MAX_ID_BYTES && !value.contains('\0')
}

/// Finds a line's stream without allocating when it is already known.
#[derive(Default)]
struct StreamCache {
    hasher: std::hash::RandomState,
    slots: HashMap<u64, usize>,
}

impl StreamCache {
    fn slot(&mut self, index: &mut Index, record: &LightRecord<'_>) -> Result<usize> {
        let context = &record.scope.tenant_context;
        let hash = self.hasher.hash_one((
            &*context.org_id,
            &*context.workspace_id,
            context.deployment_id.as_deref(),
            &*record.run_id,
        ));
        if let Some(&slot) = self.slots.get(&hash) {
            let key = &index.streams[slot].key;
            if key.tenant.org_id() == context.org_id
                && key.tenant.workspace_id() == context.workspace_id
                && key.tenant.deployment_id() == context.deployment_id.as_deref()
                && key.run_id == *record.run_id
            {
                return Ok(slot);
            }
        }
        let tenant = Tenant::new(
            context.org_id.as_ref(),
            context.workspace_id.as_ref(),
            context.deployment_id.as_deref().map(str::to_owned),
        )?;
        let run_id = RunId::new(record.run_id.as_ref())?;
        let slot = index.slot_or_create(&tenant, &run_id);
        self.slots.insert(hash, slot);
        Ok(slot)
    }
}

struct Scan<'a> {
    log: &'a LogFile,
    index: Index,
    cache: StreamCache,
    /// Lines of a batch whose last line has not been seen yet: their bytes,
    /// and each one's end, offset and line number.
    open_batch: Vec<u8>,
    open_lines: Vec<(usize, u64, u64)>,
    /// Bytes of lines a later erasure marker made unread.
    erased_bytes: u64,
}

impl Scan<'_> {
    /// Takes one line. Lines of a multi-record batch but its last start
    /// with [`CONTINUED`]; they are indexed once the batch's last line (one
    /// that does not) arrives, so such a line in the middle of the log is an
    /// ordinary record.
    fn line(&mut self, bytes: &[u8], offset: u64, line_no: u64) -> Result<()> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        if bytes.first() == Some(&CONTINUED) {
            self.open_batch.extend_from_slice(bytes);
            self.open_lines
                .push((self.open_batch.len(), offset, line_no));
            return Ok(());
        }
        if !self.open_lines.is_empty() {
            let batch = std::mem::take(&mut self.open_batch);
            let lines = std::mem::take(&mut self.open_lines);
            let mut start = 0;
            for (end, offset, line_no) in &lines {
                self.index_line(&batch[start..*end], *offset, *line_no)?;
                start = *end;
            }
            self.open_batch = batch;
            self.open_batch.clear();
        }
        self.index_line(bytes, offset, line_no)
    }

    /// Where an unfinished batch at the end of the log starts.
    fn open_batch_start(&self) -> Option<u64> {
        self.open_lines.first().map(|(_, offset, _)| *offset)
    }

    /// Checks that the lines of the unfinished batch at the end of the log
    /// are whole records, as a write cut short by a crash leaves them: a
    /// crash keeps a prefix of what was written, so every line of it that
    /// ends in a newline is complete. Anything else is damage, reported
    /// rather than truncated away with the batch.
    fn check_open_batch(&self) -> Result<()> {
        let mut start = 0;
        for (end, _, line_no) in &self.open_lines {
            serde_json::from_slice::<EventRecord>(&self.open_batch[start..*end])
                .map_err(|err| corrupt_line(&self.log.path, *line_no, err))?;
            start = *end;
        }
        Ok(())
    }

    fn index_line(&mut self, bytes: &[u8], offset: u64, line_no: u64) -> Result<()> {
        let path = &self.log.path;
        let record: LightRecord<'_> =
            serde_json::from_slice(bytes).map_err(|err| corrupt_line(path, line_no, err))?;
        let pos = crate::feed::split(bytes)
            .map_err(|reason| corrupt_line(path, line_no, reason))?
            .map_or(0, |(pos, _)| pos);
        if !id_ok(&record.event_id) {
            return Err(corrupt_line(path, line_no, "invalid event_id"));
        }
        let slot = self
            .cache
            .slot(&mut self.index, &record)
            .map_err(|err| corrupt_line(path, line_no, cause(&err)))?;
        let stream = &mut self.index.streams[slot];
        if record.seq > MAX_SEQ {
            // No write reaches it; a stream holding it could not answer
            // `next_seq` or take another append.
            return Err(corrupt_line(
                path,
                line_no,
                format!(
                    "seq {} of stream {} is above the highest seq {MAX_SEQ}",
                    record.seq, stream.key
                ),
            ));
        }
        let is_marker = record.event_type == COMPACTION_EVENT_TYPE;
        let open_marker = if is_marker {
            Some(
                serde_json::from_slice::<OpenMarker<'_>>(bytes)
                    .map_err(|err| corrupt_line(path, line_no, err))?,
            )
        } else {
            None
        };
        // A deletion appends the run's erasure marker at its last seq
        // (CONTRACT §27): the records before it are gone, though their lines
        // stay in the file until the next rewrite.
        let erases = open_marker.as_ref().is_some_and(|marker| {
            marker.payload.erased_through_seq == Some(record.seq)
                && marker.payload.compacted_event_ids.is_empty()
        });
        if erases && record.seq == stream.last_seq() {
            self.erased_bytes += stream.clear();
        }
        if record.seq <= stream.last_seq() {
            return Err(corrupt_line(
                path,
                line_no,
                format!(
                    "seq {} does not follow seq {} of stream {}",
                    record.seq,
                    stream.last_seq(),
                    stream.key
                ),
            ));
        }
        let len = u32::try_from(bytes.len())
            .map_err(|_| corrupt_line(path, line_no, "record longer than 4 GiB"))?;
        let loc = Loc {
            seq: record.seq,
            pos,
            offset,
            len,
        };
        let marker = is_marker.then(|| MarkerEntry::new(bytes, record.seq, &record.event_id));
        stream.push(loc, record.occurred_at_ms, marker);
        let hasher = &self.index.hasher;
        stream.insert_id(&record.event_id, record.seq, hasher, self.log)?;
        if let Some(marker) = open_marker {
            for id in &marker.payload.compacted_event_ids {
                if !id_ok(&id.event_id) {
                    return Err(corrupt_line(path, line_no, "invalid compacted event_id"));
                }
                stream.insert_id(&id.event_id, id.seq, hasher, self.log)?;
            }
        }
        Ok(())
    }
}

/// What the last line of the log, which has no newline, is.
pub(crate) enum Tail {
    /// A whole record that closes its request: kept, its newline added.
    Whole,
    /// What a crash leaves of a write: a record cut short, or a whole record
    /// that is not the last line of its batch. Dropped.
    Torn,
    /// Neither: bytes no write cut short could have left, such as a whole
    /// record followed by more bytes. Reported, never truncated away.
    Damaged(String),
}

/// The part of the last line a write put there: up to its first NUL.
///
/// The writer never writes NUL (JSON escapes it): a NUL is space a crash
/// left allocated but unwritten (a whole page, or the sectors of one that did
/// not reach the disk), so what was written ends before the first one, and
/// the rest goes with the torn tail.
pub(crate) fn written_part(line: &[u8]) -> &[u8] {
    &line[..line
        .iter()
        .position(|byte| *byte == 0)
        .unwrap_or(line.len())]
}

/// Classifies the last line (its [`written_part`]). A crash keeps a prefix
/// of what was written, and the writer writes compact JSON lines starting
/// with `{` or the continuation byte; a prefix of one is JSON that ends
/// early, which `serde_json` reports as an end-of-input error.
pub(crate) fn torn_tail(body: &[u8]) -> Tail {
    match body.first() {
        None => return Tail::Torn,
        Some(&first) if first != b'{' && first != CONTINUED => {
            return Tail::Damaged(format!(
                "it starts with byte {first:#04x}, not with a record"
            ));
        }
        Some(_) => {}
    }
    match serde_json::from_slice::<EventRecord>(body) {
        Ok(_) if body[0] == CONTINUED => Tail::Torn,
        Ok(_) => Tail::Whole,
        Err(err) if err.is_eof() => Tail::Torn,
        Err(err) => Tail::Damaged(err.to_string()),
    }
}

/// Reads the whole log once: repairs a torn last line and indexes every
/// record.
///
/// # Errors
/// [`runstore_core::Error::Corrupt`] naming `<file>:<line>` for any bad line
/// but a torn last one (including a last line or an unfinished last batch
/// that a crash could not have left); `Io`.
pub(crate) fn scan(
    io: &Io,
    log: &LogFile,
    hasher: IdHasher,
    durability: Durability,
) -> Result<Scanned> {
    let path = &log.path;
    let mut scan = Scan {
        log,
        index: Index::new(hasher),
        cache: StreamCache::default(),
        open_batch: Vec::new(),
        open_lines: Vec::new(),
        erased_bytes: 0,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut buf_offset = 0u64;
    let mut line_no = 0u64;
    let file_len = log
        .file
        .metadata()
        .map_err(|err| io_at("read the length of", path, err))?
        .len();
    loop {
        let held = buf.len();
        let read_at = buf_offset + held as u64;
        // No more than the file holds, so a small log needs a small buffer;
        // at least one byte, so the end of the file is seen.
        let step =
            usize::try_from(file_len.saturating_sub(read_at)).map_or(CHUNK, |left| left.min(CHUNK));
        buf.resize(held + step.max(1), 0);
        let read = loop {
            match fileio::read_at(&log.file, &mut buf[held..], read_at) {
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other.map_err(|err| io_at("read", path, err))?,
            }
        };
        buf.truncate(held + read);
        if read == 0 {
            break;
        }
        let mut start = 0;
        for newline in memchr::memchr_iter(b'\n', &buf[held..]) {
            let newline = newline + held;
            line_no += 1;
            scan.line(&buf[start..newline], buf_offset + start as u64, line_no)?;
            start = newline + 1;
        }
        buf.drain(..start);
        buf_offset += start as u64;
    }
    let mut end = buf_offset + buf.len() as u64;
    if !buf.is_empty() {
        // CONTRACT §17: the last line has no newline.
        line_no += 1;
        let body = written_part(&buf).len();
        match torn_tail(&buf[..body]) {
            Tail::Whole => {
                // Indexed first, so a record that does not fit its stream
                // leaves the file untouched.
                scan.line(&buf[..body], buf_offset, line_no)?;
                let body_end = buf_offset + body as u64;
                if body < buf.len() {
                    io.set_len(&log.file, path, body_end)
                        .map_err(|err| io_at("truncate the torn tail of", path, err))?;
                }
                io.write_all_at(&log.file, path, b"\n", body_end)
                    .map_err(|err| io_at("repair the torn tail of", path, err))?;
                end = body_end + 1;
            }
            Tail::Torn => {
                io.set_len(&log.file, path, buf_offset)
                    .map_err(|err| io_at("truncate the torn tail of", path, err))?;
                end = buf_offset;
            }
            Tail::Damaged(reason) => {
                return Err(corrupt_line(
                    path,
                    line_no,
                    format!(
                        "the last line ends without a newline but is not a record cut short \
                         by a crash: {reason}"
                    ),
                ));
            }
        }
    }
    if let Some(start) = scan.open_batch_start() {
        // The log ends with lines starting with the continuation byte: a
        // batch whose closing line never reached the disk. It is dropped
        // whole, back to the last line that closed a request (CONTRACT §4).
        scan.check_open_batch()?;
        io.set_len(&log.file, path, start)
            .map_err(|err| io_at("drop the unfinished batch at the end of", path, err))?;
        end = start;
    }
    if durability == Durability::Durable {
        // Synced whether or not it was repaired: what was read may be
        // writes of a process killed before it synced them, still only in
        // the page cache, and this handle answers retries of those records
        // without writing (CONTRACT §16).
        io.sync_data(&log.file, path)
            .map_err(|err| io_at("sync", path, err))?;
    }
    let erased_bytes = scan.erased_bytes;
    let mut index = scan.index;
    index.shrink();
    let unpositioned = index
        .streams
        .iter()
        .map(|stream| stream.locs.iter().filter(|loc| loc.pos == 0).count())
        .sum();
    if unpositioned == 0 {
        index.build_feeds().map_err(|(stream, position)| {
            Error::corrupt(
                path.display(),
                format!(
                    "two records of tenant {} hold feed position {position}",
                    stream.tenant
                ),
            )
        })?;
    }
    Ok(Scanned {
        index,
        end,
        erased_bytes,
        unpositioned,
    })
}
