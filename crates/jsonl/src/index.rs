//! The in-memory index of the event log, built once at open and kept up to
//! date by the writer: per stream its records' seqs and byte ranges, and its
//! event ids (live and compacted) as 64-bit hashes.
//!
//! Ids are kept as hashes, not strings, to stay small (CONTRACT §2 needs
//! only "is this id in the stream, and at which seq"). A hash hit is
//! confirmed by reading the record it points at, so a collision can never
//! make two ids equal; an id whose hash another id of the stream already
//! holds is kept by value in a small side map.
//!
//! A compacted id is confirmed in its marker, whose id list grows with
//! every id the stream ever compacted. So that the confirmation does not
//! grow with it, the index keeps, per marker, where every
//! [`MARKER_PAGE`]-th id of the list starts in the marker's line (its
//! pages): a lookup reads and parses the one page that holds the seq.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    fs::File,
    hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState},
    path::PathBuf,
};

use runstore_core::{EventId, EventRecord, Result, RunId, StreamKey, Tenant};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{
    error::{corrupt_at, io_at},
    feed::{FeedEntry, TenantFeed},
};

/// Where one record lives in the log: its seq, its feed position (0 for a
/// line of an earlier version not yet given one, see [`crate::feed`]) and
/// the byte range of its line (without the newline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) seq: u64,
    pub(crate) pos: u64,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// The open log file, for positioned reads.
#[derive(Debug)]
pub(crate) struct LogFile {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    /// Positioned reads of record spans, for tests of how records are
    /// grouped into reads (answers are the same however they are grouped).
    #[cfg(test)]
    pub(crate) span_reads: std::sync::atomic::AtomicU64,
}

#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
}

impl LogFile {
    /// The log `file`, open at `path`.
    pub(crate) fn new(file: File, path: PathBuf) -> Self {
        Self {
            file,
            path,
            #[cfg(test)]
            span_reads: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Reads the bytes of the records at `locs` (which must be adjacent in
    /// the file, the last starting less than [`MAX_SPAN`] after the first)
    /// with one positioned read. Callers group records into such spans so
    /// that a read's memory stays bounded; debug builds check it.
    ///
    /// [`MAX_SPAN`]: crate::writer::MAX_SPAN
    pub(crate) fn read_span(&self, locs: &[Loc]) -> Result<Vec<u8>> {
        let (Some(first), Some(last)) = (locs.first(), locs.last()) else {
            return Ok(Vec::new());
        };
        debug_assert!(
            locs.windows(2)
                .all(|pair| pair[1].offset == pair[0].offset + u64::from(pair[0].len) + 1),
            "read_span of records that are not adjacent: {locs:?}"
        );
        debug_assert!(
            last.offset - first.offset < crate::writer::MAX_SPAN,
            "read_span over more than MAX_SPAN: {first:?} to {last:?}"
        );
        let end = last.offset + u64::from(last.len);
        let size = usize::try_from(end - first.offset)
            .map_err(|_| corrupt_at(&self.path, first.offset, "record span larger than memory"))?;
        let mut bytes = vec![0; size];
        #[cfg(test)]
        self.span_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::fileio::read_exact_at(&self.file, &mut bytes, first.offset)
            .map_err(|err| io_at("read", &self.path, err))?;
        Ok(bytes)
    }

    /// Reads the lines at `locs` (ascending by offset), adjacent ones with
    /// one positioned read of at most [`MAX_SPAN`], and hands each to
    /// `each` with its place in `locs`.
    ///
    /// [`MAX_SPAN`]: crate::writer::MAX_SPAN
    pub(crate) fn read_lines(
        &self,
        locs: &[Loc],
        mut each: impl FnMut(usize, &mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let mut start = 0;
        while start < locs.len() {
            let mut stop = start + 1;
            while stop < locs.len()
                && locs[stop].offset == locs[stop - 1].offset + u64::from(locs[stop - 1].len) + 1
                && locs[stop].offset - locs[start].offset < crate::writer::MAX_SPAN
            {
                stop += 1;
            }
            let span = &locs[start..stop];
            let mut bytes = self.read_span(span)?;
            for (at, loc) in span.iter().enumerate() {
                let from =
                    usize::try_from(loc.offset - span[0].offset).expect("a span fits in memory");
                each(start + at, &mut bytes[from..from + loc.len as usize])?;
            }
            start = stop;
        }
        Ok(())
    }

    /// Reads and parses the record of `tenant`'s `run_id` at `loc`.
    pub(crate) fn read_record(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        loc: &Loc,
    ) -> Result<EventRecord> {
        let mut bytes = self.read_span(std::slice::from_ref(loc))?;
        self.parse_record(tenant, run_id, loc, &mut bytes)
    }

    /// Parses the bytes of the record of `tenant`'s `run_id` at `loc`,
    /// checking that it is the record the index placed there: its seq, feed
    /// position, run and tenant. A record never answers for another stream
    /// than the one the index holds it in, whatever its bytes now claim.
    /// The line's position is blanked out of `bytes` first
    /// ([`crate::feed::strip`]).
    pub(crate) fn parse_record(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        loc: &Loc,
        bytes: &mut [u8],
    ) -> Result<EventRecord> {
        let fail = |what: &dyn std::fmt::Display| {
            corrupt_at(
                &self.path,
                loc.offset,
                format_args!("record of {tenant}:{run_id} at seq {}: {what}", loc.seq),
            )
        };
        let position = crate::feed::strip(bytes).map_err(|err| fail(&err))?;
        if position != loc.pos {
            return Err(fail(&format_args!(
                "the line now states feed position {position}, not {}",
                loc.pos
            )));
        }
        let record: EventRecord = serde_json::from_slice(bytes).map_err(|err| fail(&err))?;
        if record.seq != loc.seq {
            return Err(fail(&format_args!("the line now holds seq {}", record.seq)));
        }
        if record.run_id != *run_id || !tenant.matches(&record.scope.tenant_context) {
            return Err(fail(&format_args!(
                "the line now names run {:?} of tenant {}/{}{}",
                record.run_id.as_str(),
                record.scope.tenant_context.org_id,
                record.scope.tenant_context.workspace_id,
                record
                    .scope
                    .tenant_context
                    .deployment_id
                    .as_deref()
                    .map(|deployment| format!("/{deployment}"))
                    .unwrap_or_default()
            )));
        }
        Ok(record)
    }

    /// Whether `marker`, whose line is at `loc`, remembers `id` at `seq`:
    /// from the one page of its id list that holds `seq` when the index has
    /// its pages, else from the whole list.
    fn marker_remembers(
        &self,
        loc: &Loc,
        marker: &MarkerEntry,
        id: &str,
        seq: u64,
    ) -> Result<bool> {
        if let Some(pages) = &marker.pages
            && let Some(found) = self.page_remembers(loc, pages, id, seq)?
        {
            return Ok(found);
        }
        // Parses only the marker's id list, borrowing its strings.
        let bytes = self.read_span(std::slice::from_ref(loc))?;
        let marker: LightMarker<'_> = serde_json::from_slice(&bytes)
            .map_err(|err| corrupt_at(&self.path, loc.offset, err))?;
        Ok(marker
            .payload
            .compacted_event_ids
            .iter()
            .any(|compacted| compacted.seq == seq && compacted.event_id == id))
    }

    /// Whether the pages of `seq` in the marker at `loc` list `id` at `seq`;
    /// `None` when the bytes there are not the ids the pages expect (then
    /// the caller reads the whole list, so a stale page can slow a lookup
    /// down but never change its answer).
    fn page_remembers(
        &self,
        loc: &Loc,
        pages: &MarkerPages,
        id: &str,
        seq: u64,
    ) -> Result<Option<bool>> {
        // Ids with `seq` lie in the last page starting below it and in the
        // pages starting at it (a list may repeat a seq across a page's end).
        let upto = pages.starts.partition_point(|(first, _)| *first <= seq);
        if upto == 0 {
            return Ok(Some(false));
        }
        let from = pages
            .starts
            .partition_point(|(first, _)| *first < seq)
            .saturating_sub(1);
        let start = pages.starts[from].1;
        let end = pages
            .starts
            .get(upto)
            .map_or(pages.end, |(_, start)| *start);
        let expected = (pages.count - from * MARKER_PAGE).min((upto - from) * MARKER_PAGE);
        let within = u64::from(pages.lead) + u64::from(end);
        if end < start || within > u64::from(loc.len) {
            return Ok(None);
        }
        let mut bytes = vec![0; (end - start) as usize + 2];
        let last = bytes.len() - 1;
        crate::fileio::read_exact_at(
            &self.file,
            &mut bytes[1..last],
            loc.offset + u64::from(pages.lead) + u64::from(start),
        )
        .map_err(|err| io_at("read", &self.path, err))?;
        // The page's ids and the separator after the last one, as a list.
        let mut close = last;
        while close > 1 && (bytes[close - 1].is_ascii_whitespace() || bytes[close - 1] == b',') {
            close -= 1;
        }
        bytes[0] = b'[';
        bytes[close] = b']';
        let Ok(ids) = serde_json::from_slice::<Vec<LightCompactedId<'_>>>(&bytes[..=close]) else {
            return Ok(None);
        };
        if ids.len() != expected || ids.first().map(|first| first.seq) != Some(pages.starts[from].0)
        {
            return Ok(None);
        }
        Ok(Some(ids.iter().any(|compacted| {
            compacted.seq == seq && compacted.event_id == id
        })))
    }

    fn read_event_id(&self, loc: &Loc) -> Result<String> {
        let bytes = self.read_span(std::slice::from_ref(loc))?;
        let id: IdOnly<'_> = serde_json::from_slice(&bytes)
            .map_err(|err| corrupt_at(&self.path, loc.offset, err))?;
        Ok(id.event_id.into_owned())
    }
}

#[derive(Deserialize)]
struct LightCompactedId<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    seq: u64,
}

#[derive(Deserialize)]
struct LightPayload<'a> {
    #[serde(borrow)]
    compacted_event_ids: Vec<LightCompactedId<'a>>,
}

/// The part of a compaction marker (CONTRACT §9) that lists its ids.
#[derive(Deserialize)]
struct LightMarker<'a> {
    #[serde(borrow)]
    payload: LightPayload<'a>,
}

#[derive(Deserialize)]
struct RawPayload<'a> {
    #[serde(borrow)]
    compacted_event_ids: Vec<&'a RawValue>,
}

/// A marker's id list as the slices of its line that hold each id.
#[derive(Deserialize)]
struct RawMarker<'a> {
    #[serde(borrow)]
    payload: RawPayload<'a>,
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// Ids per page of a marker's id list: a lookup of a compacted id parses
/// at most a page (about 2 KiB for ids as long as a UUID), and the pages
/// cost the index 16 bytes per 32 compacted ids.
pub(crate) const MARKER_PAGE: usize = 32;

/// A compaction marker of a stream: its seq, its own id, and where its
/// compacted ids lie in its line.
#[derive(Debug, Clone)]
pub(crate) struct MarkerEntry {
    pub(crate) seq: u64,
    event_id: Box<str>,
    /// `None` when the list is not ascending by seq (no write makes such a
    /// marker; a lookup then parses the whole list).
    pages: Option<MarkerPages>,
}

#[derive(Debug, Clone)]
struct MarkerPages {
    /// Bytes before the record's `{` in the line as its [`Loc`] spans it
    /// (a batch's leading space; 0 once compaction rewrote the log).
    lead: u32,
    /// The seq and start (from the `{`) of every [`MARKER_PAGE`]-th id.
    starts: Box<[(u64, u32)]>,
    /// The end of the last id, from the `{`.
    end: u32,
    /// Ids in the list.
    count: usize,
}

impl MarkerEntry {
    /// The entry of the marker with `seq` and `event_id` whose line (as its
    /// [`Loc`] spans it) is `line`, a record the caller has checked.
    pub(crate) fn new(line: &[u8], seq: u64, event_id: &str) -> Self {
        Self {
            seq,
            event_id: event_id.into(),
            pages: MarkerPages::of(line),
        }
    }

    /// The marker's line was rewritten without what preceded its `{`.
    pub(crate) fn trimmed(&mut self) {
        if let Some(pages) = &mut self.pages {
            pages.lead = 0;
        }
    }

    /// Bytes before the `{` of the marker's line, as its pages have them.
    #[cfg(test)]
    pub(crate) fn lead(&self) -> Option<u32> {
        self.pages.as_ref().map(|pages| pages.lead)
    }

    fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.event_id.len()
            + self.pages.as_ref().map_or(0, |pages| {
                pages.starts.len() * std::mem::size_of::<(u64, u32)>()
            })
    }
}

impl MarkerPages {
    fn of(line: &[u8]) -> Option<Self> {
        let body = line.trim_ascii_start();
        let lead = u32::try_from(line.len() - body.len()).ok()?;
        let marker: RawMarker<'_> = serde_json::from_slice(body).ok()?;
        let list = marker.payload.compacted_event_ids;
        let base = body.as_ptr().addr();
        let start = |raw: &RawValue| u32::try_from(raw.get().as_ptr().addr() - base).ok();
        let mut starts = Vec::with_capacity(list.len().div_ceil(MARKER_PAGE));
        let mut previous = 0;
        for (at, raw) in list.iter().enumerate() {
            let seq = serde_json::from_str::<SeqOnly>(raw.get()).ok()?.seq;
            if seq < previous {
                return None;
            }
            previous = seq;
            if at % MARKER_PAGE == 0 {
                starts.push((seq, start(raw)?));
            }
        }
        let end = match list.last() {
            Some(raw) => start(raw)?.checked_add(u32::try_from(raw.get().len()).ok()?)?,
            None => 0,
        };
        Some(Self {
            lead,
            starts: starts.into_boxed_slice(),
            end,
            count: list.len(),
        })
    }
}

/// A [`Hasher`] for keys that already are well-mixed hashes.
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type IdMap = HashMap<u64, u64, BuildHasherDefault<PassThrough>>;

/// How ids are hashed: randomly keyed per store.
#[derive(Debug, Clone)]
pub(crate) enum IdHasher {
    Random(RandomState),
    /// Every id hashes alike: exercises the collision path in tests.
    #[cfg(test)]
    Constant,
}

impl IdHasher {
    pub(crate) fn new() -> Self {
        Self::Random(RandomState::new())
    }

    pub(crate) fn hash(&self, id: &str) -> u64 {
        match self {
            Self::Random(state) => state.hash_one(id),
            #[cfg(test)]
            Self::Constant => 7,
        }
    }
}

/// One stream's part of the index.
#[derive(Debug)]
pub(crate) struct StreamIndex {
    pub(crate) key: StreamKey,
    /// Its records (events and markers), ascending by seq.
    pub(crate) locs: Vec<Loc>,
    /// Id hash -> seq, for live and compacted ids.
    ids: IdMap,
    /// Ids whose hash another id of the stream holds in `ids`.
    collided: HashMap<EventId, u64>,
    /// The stream's compaction markers, ascending by seq.
    pub(crate) markers: Vec<MarkerEntry>,
    /// The earliest `occurred_at_ms` of its live events (not markers);
    /// `u64::MAX` when it has none. Lets compaction skip streams with nothing
    /// old enough without reading them.
    pub(crate) oldest_ms: u64,
}

impl StreamIndex {
    /// The stream's last seq; 0 when empty.
    pub(crate) fn last_seq(&self) -> u64 {
        self.locs.last().map_or(0, |loc| loc.seq)
    }

    pub(crate) fn loc_of(&self, seq: u64) -> Option<&Loc> {
        self.locs
            .binary_search_by_key(&seq, |loc| loc.seq)
            .ok()
            .map(|at| &self.locs[at])
    }

    fn marker_at(&self, seq: u64) -> Option<&MarkerEntry> {
        self.markers
            .binary_search_by_key(&seq, |marker| marker.seq)
            .ok()
            .map(|at| &self.markers[at])
    }

    /// Whether the id stored at `seq` (live or compacted) is `id`.
    fn holds(&self, seq: u64, id: &str, log: &LogFile) -> Result<bool> {
        // A marker's seq is also the seq of the last event it covers, so a
        // live record at `seq` does not rule out a compacted id there.
        if let Some(loc) = self.loc_of(seq) {
            // A marker's own id is in the index: its line can be large.
            let here = match self.marker_at(seq) {
                Some(marker) => *marker.event_id == *id,
                None => log.read_event_id(loc)? == id,
            };
            if here {
                return Ok(true);
            }
        }
        let first = self.markers.partition_point(|marker| marker.seq < seq);
        for marker in &self.markers[first..] {
            let Some(loc) = self.loc_of(marker.seq) else {
                continue;
            };
            if log.marker_remembers(loc, marker, id, seq)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The seq of `id` in the stream, live or compacted (CONTRACT §7).
    pub(crate) fn seq_of(&self, id: &str, hasher: &IdHasher, log: &LogFile) -> Result<Option<u64>> {
        if let Some(seq) = self.collided.get(id) {
            return Ok(Some(*seq));
        }
        match self.ids.get(&hasher.hash(id)) {
            Some(&seq) if self.holds(seq, id, log)? => Ok(Some(seq)),
            _ => Ok(None),
        }
    }

    /// Remembers that `id` is at `seq`. An id the stream already holds keeps
    /// its first seq.
    pub(crate) fn insert_id(
        &mut self,
        id: &str,
        seq: u64,
        hasher: &IdHasher,
        log: &LogFile,
    ) -> Result<()> {
        let hash = hasher.hash(id);
        match self.ids.get(&hash) {
            None => {
                self.ids.insert(hash, seq);
            }
            Some(&held) => {
                if !self.collided.contains_key(id) && !self.holds(held, id, log)? {
                    let id = EventId::new(id)?;
                    self.collided.insert(id, seq);
                }
            }
        }
        Ok(())
    }

    /// Forgets that `id` is at `seq` (a marker replaced by compaction).
    pub(crate) fn remove_id(&mut self, id: &str, seq: u64, hasher: &IdHasher) {
        if self.collided.get(id) == Some(&seq) {
            self.collided.remove(id);
            return;
        }
        let hash = hasher.hash(id);
        if self.ids.get(&hash) == Some(&seq) {
            self.ids.remove(&hash);
        }
    }

    /// Adds a record at the end of the stream: an event, or the marker
    /// `marker`.
    pub(crate) fn push(&mut self, loc: Loc, occurred_at_ms: u64, marker: Option<MarkerEntry>) {
        debug_assert!(loc.seq > self.last_seq());
        debug_assert!(marker.as_ref().is_none_or(|marker| marker.seq == loc.seq));
        self.locs.push(loc);
        match marker {
            Some(marker) => self.markers.push(marker),
            None => self.oldest_ms = self.oldest_ms.min(occurred_at_ms),
        }
    }

    /// Forgets every record and id of the stream (a deletion, CONTRACT
    /// §27); answers the bytes its lines took in the log, newlines
    /// included, which the log now holds unread.
    pub(crate) fn clear(&mut self) -> u64 {
        let bytes = self.locs.iter().map(|loc| u64::from(loc.len) + 1).sum();
        self.locs = Vec::new();
        self.ids = IdMap::default();
        self.collided = HashMap::new();
        self.markers = Vec::new();
        self.oldest_ms = u64::MAX;
        bytes
    }

    /// Whether the stream is a deleted run not appended to since: its one
    /// record is a marker and the only id it answers for is the marker's
    /// own (an erasure marker remembers none; a compaction marker at least
    /// one).
    pub(crate) fn is_erased(&self) -> bool {
        self.locs.len() == 1 && self.markers.len() == 1 && self.ids.len() + self.collided.len() == 1
    }

    fn approx_bytes(&self) -> usize {
        let buckets = |capacity: usize| {
            if capacity == 0 {
                0
            } else {
                (capacity * 8 / 7).next_power_of_two()
            }
        };
        std::mem::size_of::<Self>()
            + self.key.tenant.org_id().len()
            + self.key.tenant.workspace_id().len()
            + self.key.tenant.deployment_id().map_or(0, str::len)
            + self.key.run_id.as_str().len()
            + self.locs.capacity() * std::mem::size_of::<Loc>()
            + buckets(self.ids.capacity()) * (std::mem::size_of::<(u64, u64)>() + 1)
            + self
                .collided
                .keys()
                .map(|id| id.as_str().len() + 48)
                .sum::<usize>()
            + (self.markers.capacity() - self.markers.len()) * std::mem::size_of::<MarkerEntry>()
            + self
                .markers
                .iter()
                .map(MarkerEntry::approx_bytes)
                .sum::<usize>()
    }
}

/// Sizes of the index, for capacity planning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Streams in the log.
    pub streams: usize,
    /// Records (events and markers) in the log.
    pub records: usize,
    /// Ids the index answers for, live and compacted.
    pub ids: usize,
    /// Approximate heap and inline bytes the index occupies.
    pub approx_bytes: usize,
}

/// The whole log's index.
#[derive(Debug)]
pub(crate) struct Index {
    pub(crate) hasher: IdHasher,
    pub(crate) streams: Vec<StreamIndex>,
    by_key: BTreeMap<Tenant, BTreeMap<RunId, usize>>,
    /// Each tenant's feed (CONTRACT §29): position -> (stream, seq).
    feeds: BTreeMap<Tenant, TenantFeed>,
}

impl Index {
    pub(crate) fn new(hasher: IdHasher) -> Self {
        Self {
            hasher,
            streams: Vec::new(),
            by_key: BTreeMap::new(),
            feeds: BTreeMap::new(),
        }
    }

    /// `tenant`'s feed, if it ever had a record.
    pub(crate) fn feed(&self, tenant: &Tenant) -> Option<&TenantFeed> {
        self.feeds.get(tenant)
    }

    /// The highest position `tenant` has handed out (0 for none).
    pub(crate) fn feed_head(&self, tenant: &Tenant) -> u64 {
        self.feeds.get(tenant).map_or(0, |feed| feed.head)
    }

    /// Adds the record at `loc` of the stream in `slot` at the end of its
    /// tenant's feed.
    pub(crate) fn push_to_feed(&mut self, slot: usize, loc: &Loc) {
        let tenant = &self.streams[slot].key.tenant;
        match self.feeds.get_mut(tenant) {
            Some(feed) => feed.push(slot, loc),
            None => {
                let mut feed = TenantFeed::default();
                feed.push(slot, loc);
                self.feeds.insert(tenant.clone(), feed);
            }
        }
    }

    /// Builds every tenant's feed from its streams' records (at open, once
    /// every record has a position). Answers the first position two
    /// records of a tenant share, which no write produces.
    pub(crate) fn build_feeds(&mut self) -> std::result::Result<(), (StreamKey, u64)> {
        let mut feeds: BTreeMap<Tenant, TenantFeed> = BTreeMap::new();
        for (slot, stream) in self.streams.iter().enumerate() {
            if stream.locs.is_empty() {
                continue;
            }
            let feed = match feeds.get_mut(&stream.key.tenant) {
                Some(feed) => feed,
                None => feeds.entry(stream.key.tenant.clone()).or_default(),
            };
            feed.entries.extend(stream.locs.iter().map(|loc| FeedEntry {
                position: loc.pos,
                seq: loc.seq,
                slot,
            }));
        }
        for feed in feeds.values_mut() {
            feed.entries.sort_unstable_by_key(|entry| entry.position);
            feed.entries.shrink_to_fit();
            if let Some(pair) = feed
                .entries
                .windows(2)
                .find(|pair| pair[0].position == pair[1].position)
            {
                return Err((self.streams[pair[1].slot].key.clone(), pair[1].position));
            }
            feed.head = feed.entries.last().map_or(0, |entry| entry.position);
        }
        self.feeds = feeds;
        Ok(())
    }

    /// Drops from `tenant`'s feed every entry `gone` names (records a
    /// rewrite pruned or a deletion erased); its head stays.
    pub(crate) fn forget_in_feed(
        &mut self,
        tenant: &Tenant,
        mut gone: impl FnMut(&FeedEntry) -> bool,
    ) {
        if let Some(feed) = self.feeds.get_mut(tenant) {
            feed.entries.retain(|entry| !gone(entry));
        }
    }

    /// The slot of `tenant`'s `run_id`, if the stream has records.
    pub(crate) fn slot(&self, tenant: &Tenant, run_id: &RunId) -> Option<usize> {
        self.by_key.get(tenant)?.get(run_id).copied()
    }

    pub(crate) fn stream(&self, tenant: &Tenant, run_id: &RunId) -> Option<&StreamIndex> {
        self.slot(tenant, run_id).map(|slot| &self.streams[slot])
    }

    /// The slot of a stream, created empty if new.
    pub(crate) fn slot_or_create(&mut self, tenant: &Tenant, run_id: &RunId) -> usize {
        if let Some(slot) = self.slot(tenant, run_id) {
            return slot;
        }
        let slot = self.streams.len();
        self.streams.push(StreamIndex {
            key: StreamKey::new(tenant.clone(), run_id.clone()),
            locs: Vec::new(),
            ids: IdMap::default(),
            collided: HashMap::new(),
            markers: Vec::new(),
            oldest_ms: u64::MAX,
        });
        self.by_key
            .entry(tenant.clone())
            .or_default()
            .insert(run_id.clone(), slot);
        slot
    }

    /// The tenant's run ids, ascending, without deleted runs (CONTRACT
    /// §27).
    pub(crate) fn runs(&self, tenant: &Tenant) -> Vec<RunId> {
        self.by_key
            .get(tenant)
            .map(|runs| {
                runs.iter()
                    .filter(|(_, slot)| !self.streams[**slot].is_erased())
                    .map(|(run, _)| run.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every stream, ascending.
    pub(crate) fn keys(&self) -> Vec<StreamKey> {
        self.by_key
            .iter()
            .flat_map(|(tenant, runs)| {
                runs.keys()
                    .map(|run| StreamKey::new(tenant.clone(), run.clone()))
            })
            .collect()
    }

    /// Releases spare capacity after a bulk build.
    pub(crate) fn shrink(&mut self) {
        for stream in &mut self.streams {
            stream.locs.shrink_to_fit();
            stream.ids.shrink_to_fit();
        }
    }

    pub(crate) fn stats(&self) -> IndexStats {
        IndexStats {
            streams: self.streams.len(),
            records: self.streams.iter().map(|s| s.locs.len()).sum(),
            ids: self
                .streams
                .iter()
                .map(|s| s.ids.len() + s.collided.len())
                .sum(),
            approx_bytes: std::mem::size_of::<Self>()
                + self.streams.capacity() * std::mem::size_of::<StreamIndex>()
                + self
                    .feeds
                    .iter()
                    .map(|(tenant, feed)| {
                        96 + tenant.org_id().len()
                            + tenant.workspace_id().len()
                            + tenant.deployment_id().map_or(0, str::len)
                            + feed.entries.capacity() * std::mem::size_of::<FeedEntry>()
                    })
                    .sum::<usize>()
                + self
                    .streams
                    .iter()
                    .map(|s| s.approx_bytes() - std::mem::size_of::<StreamIndex>() + 96)
                    .sum::<usize>(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// A marker line remembering `count` ids (`id-<seq>`, seq = 2 * n).
    fn marker_line(count: u64) -> String {
        let ids: Vec<String> = (1..=count)
            .map(|n| format!(r#"{{"event_id":"id-{}","seq":{}}}"#, 2 * n, 2 * n))
            .collect();
        format!(
            r#"{{"event_id":"m","seq":{},"payload":{{"compacted_event_ids":[{}],"source":"s"}}}}"#,
            2 * count,
            ids.join(",")
        )
    }

    /// The log holding `line` and the loc of the line.
    fn log_with(line: &str) -> (tempfile::TempDir, LogFile, Loc) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut file = File::create(&path).unwrap();
        writeln!(file, "{{}}\n{line}").unwrap();
        let loc = Loc {
            seq: 1,
            pos: 1,
            offset: 3,
            len: u32::try_from(line.len()).unwrap(),
        };
        let file = File::open(&path).unwrap();
        (dir, LogFile::new(file, path), loc)
    }

    /// A log of `lines`, each followed by a newline, and the loc of each.
    fn log_of(lines: &[Vec<u8>]) -> (tempfile::TempDir, LogFile, Vec<Loc>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut file = File::create(&path).unwrap();
        let mut locs = Vec::new();
        let mut offset = 0;
        for (seq, line) in (1..).zip(lines) {
            file.write_all(line).unwrap();
            file.write_all(b"\n").unwrap();
            let len = u32::try_from(line.len()).unwrap();
            locs.push(Loc {
                seq,
                pos: seq,
                offset,
                len,
            });
            offset += u64::from(len) + 1;
        }
        let file = File::open(&path).unwrap();
        (dir, LogFile::new(file, path), locs)
    }

    /// Reads the lines at `locs` with `read_lines`: the lines handed out,
    /// in order, and how many reads it took.
    fn read_lines_of(log: &LogFile, locs: &[Loc]) -> (Vec<(usize, Vec<u8>)>, u64) {
        let before = log.span_reads.load(std::sync::atomic::Ordering::Relaxed);
        let mut got = Vec::new();
        log.read_lines(locs, |at, line| {
            got.push((at, line.to_vec()));
            Ok(())
        })
        .unwrap();
        let reads = log.span_reads.load(std::sync::atomic::Ordering::Relaxed) - before;
        (got, reads)
    }

    // Adjacent lines are read together, a gap starts a new read, and a read
    // starts no line MAX_SPAN or more after its first.
    #[test]
    fn read_lines_reads_adjacent_lines_together_within_max_span() {
        let short: Vec<Vec<u8>> = (b'a'..=b'd').map(|byte| vec![byte; 10]).collect();
        let (_dir, log, locs) = log_of(&short);
        let wanted = [locs[0], locs[1], locs[3]];
        let (got, reads) = read_lines_of(&log, &wanted);
        let expected: Vec<(usize, Vec<u8>)> = vec![
            (0, short[0].clone()),
            (1, short[1].clone()),
            (2, short[3].clone()),
        ];
        assert_eq!((got, reads), (expected, 2));

        // A gap as long as the next line is longer than the last one is
        // still a gap.
        let varied = vec![vec![b'a'; 10], vec![b'b'; 9], vec![b'c'; 20]];
        let (_dir, log, locs) = log_of(&varied);
        let (got, reads) = read_lines_of(&log, &[locs[0], locs[2]]);
        let expected = vec![(0, varied[0].clone()), (1, varied[2].clone())];
        assert_eq!((got, reads), (expected, 2));

        // Lines a quarter of MAX_SPAN long, newline included: the fifth
        // starts exactly MAX_SPAN after the first, so it starts the second
        // read, which takes the sixth too.
        let quarter = usize::try_from(crate::writer::MAX_SPAN / 4).unwrap() - 1;
        let long: Vec<Vec<u8>> = (b'a'..=b'f').map(|byte| vec![byte; quarter]).collect();
        let (_dir, log, locs) = log_of(&long);
        let (got, reads) = read_lines_of(&log, &locs);
        assert_eq!(reads, 2);
        assert_eq!(got.len(), long.len());
        for ((at, line), (want_at, want)) in got.iter().zip(long.iter().enumerate()) {
            assert!(*at == want_at && line == want, "line {want_at}");
        }
    }

    /// Every id answers from its page (never the whole list), every other
    /// id or seq is refused from a page too.
    fn assert_pages_answer(line: &str, count: u64) {
        let (_dir, log, loc) = log_with(line);
        let entry = MarkerEntry::new(line.as_bytes(), 2 * count, "m");
        let pages = entry.pages.as_ref().expect("an ascending list has pages");
        for n in 1..=count {
            let (id, seq) = (format!("id-{}", 2 * n), 2 * n);
            assert_eq!(
                log.page_remembers(&loc, pages, &id, seq).unwrap(),
                Some(true),
                "{id}"
            );
            assert_eq!(
                log.page_remembers(&loc, pages, &id, seq + 1).unwrap(),
                Some(false)
            );
            assert_eq!(
                log.page_remembers(&loc, pages, "id-x", seq).unwrap(),
                Some(false)
            );
            assert_eq!(
                log.page_remembers(&loc, pages, &id, seq - 1).unwrap(),
                Some(false)
            );
        }
        assert_eq!(
            log.page_remembers(&loc, pages, "id-0", 0).unwrap(),
            Some(false)
        );
    }

    #[test]
    fn pages_locate_every_id_of_a_marker() {
        for count in [0, 1, 31, 32, 33, 64, 100] {
            assert_pages_answer(&marker_line(count), count);
            // A batch's leading space, and spaces around the ids.
            assert_pages_answer(&format!(" {}", marker_line(count)), count);
            let spaced = marker_line(count)
                .replace("},{", "} , {")
                .replace("[{", "[ \t{");
            assert_pages_answer(&spaced, count);
        }
    }

    // A list may hold one seq twice, across a page's end: an id at that
    // seq answers from either page.
    #[test]
    fn a_seq_repeated_across_a_page_end_is_found_in_both_pages() {
        let seqs: Vec<u64> = (1..=64)
            .map(|n| {
                if n == MARKER_PAGE as u64 + 1 {
                    n - 1
                } else {
                    n
                }
            })
            .collect();
        let ids: Vec<String> = seqs
            .iter()
            .enumerate()
            .map(|(at, seq)| format!(r#"{{"event_id":"id-{at}","seq":{seq}}}"#))
            .collect();
        let line = format!(
            r#"{{"event_id":"m","seq":64,"payload":{{"compacted_event_ids":[{}],"source":"s"}}}}"#,
            ids.join(",")
        );
        let (_dir, log, loc) = log_with(&line);
        let entry = MarkerEntry::new(line.as_bytes(), 64, "m");
        let pages = entry.pages.as_ref().expect("an ascending list has pages");
        let repeated = MARKER_PAGE as u64;
        for at in [MARKER_PAGE - 1, MARKER_PAGE] {
            assert_eq!(
                log.page_remembers(&loc, pages, &format!("id-{at}"), repeated)
                    .unwrap(),
                Some(true),
                "id-{at}"
            );
        }
    }

    // Pages of a longer list than the line holds (stale pages) are no
    // answer, and read nothing past the line.
    #[test]
    fn pages_reaching_past_the_line_are_no_answer() {
        let entry = MarkerEntry::new(marker_line(70).as_bytes(), 140, "m");
        let pages = entry.pages.as_ref().unwrap();
        let (_dir, log, loc) = log_with(&marker_line(10));
        for seq in [2, 70, 140] {
            assert_eq!(
                log.page_remembers(&loc, pages, &format!("id-{seq}"), seq)
                    .unwrap(),
                None,
                "{seq}"
            );
        }
    }

    // What a marker adds to the index's size: its entry and id, and one
    // page start (a seq and an offset) per MARKER_PAGE ids (none without
    // pages).
    #[test]
    fn a_marker_costs_its_entry_its_id_and_its_pages() {
        let entry = MarkerEntry::new(marker_line(70).as_bytes(), 140, "marker-id");
        let pages = 70_usize.div_ceil(MARKER_PAGE);
        assert_eq!(
            entry.approx_bytes(),
            std::mem::size_of::<MarkerEntry>()
                + "marker-id".len()
                + std::mem::size_of::<(u64, u32)>() * pages
        );
        let unsorted = marker_line(3).replace(r#""seq":2}"#, r#""seq":9}"#);
        let entry = MarkerEntry::new(unsorted.as_bytes(), 6, "m");
        assert_eq!(entry.lead(), None, "no pages");
        assert_eq!(entry.approx_bytes(), std::mem::size_of::<MarkerEntry>() + 1);
    }

    // Keys are already hashes: a u64 passes through as it is; bytes are
    // folded in whole.
    #[test]
    fn pass_through_keeps_a_u64_and_folds_bytes() {
        let mut hasher = PassThrough::default();
        hasher.write_u64(0x0123_4567_89ab_cdef);
        assert_eq!(hasher.finish(), 0x0123_4567_89ab_cdef);
        let mut hasher = PassThrough::default();
        hasher.write(&[0xff; 9]);
        assert_eq!(hasher.finish(), 0xffff_ffff_ffff_ff00);
    }

    // Clearing a stream answers the bytes its lines took, newlines
    // included.
    #[test]
    fn clearing_a_stream_answers_its_lines_bytes() {
        let mut index = Index::new(IdHasher::new());
        let slot = index.slot_or_create(&Tenant::local(), &RunId::new("r").unwrap());
        let stream = &mut index.streams[slot];
        for (seq, offset, len) in [(1, 0, 10), (2, 11, 20)] {
            let loc = Loc {
                seq,
                pos: seq,
                offset,
                len,
            };
            stream.push(loc, 1, None);
        }
        assert_eq!(stream.clear(), 11 + 21);
        assert_eq!(stream.last_seq(), 0);
        assert_eq!(stream.clear(), 0);
    }

    #[test]
    fn a_trimmed_line_keeps_its_pages() {
        let line = marker_line(70);
        let mut entry = MarkerEntry::new(format!(" {line}").as_bytes(), 140, "m");
        entry.trimmed();
        let (_dir, log, loc) = log_with(&line);
        let pages = entry.pages.as_ref().unwrap();
        assert_eq!(
            log.page_remembers(&loc, pages, "id-100", 100).unwrap(),
            Some(true)
        );
    }

    /// A page whose bytes are not what the index expects is no answer, so
    /// the caller reads the whole list.
    #[test]
    fn stale_pages_are_no_answer() {
        let line = marker_line(70);
        let entry = MarkerEntry::new(format!("  {line}").as_bytes(), 140, "m");
        let (_dir, log, loc) = log_with(&line);
        let pages = entry.pages.as_ref().unwrap();
        assert_eq!(
            log.page_remembers(&loc, pages, "id-100", 100).unwrap(),
            None
        );
        let marker = MarkerEntry {
            pages: None,
            ..entry.clone()
        };
        assert!(log.marker_remembers(&loc, &entry, "id-100", 100).unwrap());
        assert!(log.marker_remembers(&loc, &marker, "id-100", 100).unwrap());
        assert!(!log.marker_remembers(&loc, &entry, "id-100", 101).unwrap());

        // Ids where the pages expect them, as many as expected, at other
        // seqs (each one higher, in as many digits).
        let shifted = (1..=70).fold(line.clone(), |line, n| {
            line.replace(
                &format!(r#""seq":{}}}"#, 2 * n),
                &format!(r#""seq":{}}}"#, 2 * n + 1),
            )
        });
        assert_eq!(shifted.len(), line.len());
        let entry = MarkerEntry::new(line.as_bytes(), 140, "m");
        let (_dir, log, loc) = log_with(&shifted);
        let pages = entry.pages.as_ref().unwrap();
        assert_eq!(log.page_remembers(&loc, pages, "id-2", 2).unwrap(), None);
    }

    #[test]
    fn an_unsorted_list_has_no_pages() {
        let line = marker_line(40).replace(r#"{"event_id":"id-2","seq":2},"#, "");
        let line = line.replace("]", r#",{"event_id":"id-2","seq":2}]"#);
        let entry = MarkerEntry::new(line.as_bytes(), 80, "m");
        assert!(entry.pages.is_none());
        let (_dir, log, loc) = log_with(&line);
        assert!(log.marker_remembers(&loc, &entry, "id-2", 2).unwrap());
        assert!(log.marker_remembers(&loc, &entry, "id-80", 80).unwrap());
    }
}
