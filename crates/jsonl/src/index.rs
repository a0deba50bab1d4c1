//! The in-memory index of the event log, built once at open and kept up to
//! date by the writer: per stream its records' seqs and byte ranges, and its
//! event ids (live and compacted) as 64-bit hashes.
//!
//! Ids are kept as hashes, not strings, to stay small (CONTRACT §2 needs
//! only "is this id in the stream, and at which seq"). A hash hit is
//! confirmed by reading the record it points at, so a collision can never
//! make two ids equal; an id whose hash another id of the stream already
//! holds is kept by value in a small side map.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    fs::File,
    hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState},
    path::PathBuf,
};

use runstore_core::{EventId, EventRecord, Result, RunId, StreamKey, Tenant};
use serde::Deserialize;

use crate::error::{corrupt_at, io_at};

/// Where one record lives in the log: its seq and the byte range of its line
/// (without the newline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) seq: u64,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// The open log file, for positioned reads.
#[derive(Debug)]
pub(crate) struct LogFile {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
}

#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
}

impl LogFile {
    /// Reads the bytes of the records at `locs` (which must be adjacent in
    /// the file) with one positioned read.
    pub(crate) fn read_span(&self, locs: &[Loc]) -> Result<Vec<u8>> {
        let (Some(first), Some(last)) = (locs.first(), locs.last()) else {
            return Ok(Vec::new());
        };
        let end = last.offset + u64::from(last.len);
        let size = usize::try_from(end - first.offset)
            .map_err(|_| corrupt_at(&self.path, first.offset, "record span larger than memory"))?;
        let mut bytes = vec![0; size];
        crate::fileio::read_exact_at(&self.file, &mut bytes, first.offset)
            .map_err(|err| io_at("read", &self.path, err))?;
        Ok(bytes)
    }

    /// Reads and parses the record of `tenant`'s `run_id` at `loc`.
    pub(crate) fn read_record(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        loc: &Loc,
    ) -> Result<EventRecord> {
        let bytes = self.read_span(std::slice::from_ref(loc))?;
        self.parse_record(tenant, run_id, loc, &bytes)
    }

    /// Parses the bytes of the record of `tenant`'s `run_id` at `loc`,
    /// checking that it is the record the index placed there: its seq, run
    /// and tenant. A record never answers for another stream than the one
    /// the index holds it in, whatever its bytes now claim.
    pub(crate) fn parse_record(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        loc: &Loc,
        bytes: &[u8],
    ) -> Result<EventRecord> {
        let fail = |what: &dyn std::fmt::Display| {
            corrupt_at(
                &self.path,
                loc.offset,
                format_args!("record of {tenant}:{run_id} at seq {}: {what}", loc.seq),
            )
        };
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

    /// Whether the marker at `loc` remembers `id` at `seq`. Parses only the
    /// marker's id list, borrowing its strings.
    fn marker_remembers(&self, loc: &Loc, id: &str, seq: u64) -> Result<bool> {
        let bytes = self.read_span(std::slice::from_ref(loc))?;
        let marker: LightMarker<'_> = serde_json::from_slice(&bytes)
            .map_err(|err| corrupt_at(&self.path, loc.offset, err))?;
        Ok(marker
            .payload
            .compacted_event_ids
            .iter()
            .any(|compacted| compacted.seq == seq && compacted.event_id == id))
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
    /// Seqs of the stream's compaction markers.
    pub(crate) markers: Vec<u64>,
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

    fn loc_of(&self, seq: u64) -> Option<&Loc> {
        self.locs
            .binary_search_by_key(&seq, |loc| loc.seq)
            .ok()
            .map(|at| &self.locs[at])
    }

    /// Whether the id stored at `seq` (live or compacted) is `id`.
    fn holds(&self, seq: u64, id: &str, log: &LogFile) -> Result<bool> {
        // A marker's seq is also the seq of the last event it covers, so a
        // live record at `seq` does not rule out a compacted id there.
        if let Some(loc) = self.loc_of(seq)
            && log.read_event_id(loc)? == id
        {
            return Ok(true);
        }
        for marker in self.markers.iter().filter(|marker| **marker >= seq) {
            let Some(loc) = self.loc_of(*marker) else {
                continue;
            };
            if log.marker_remembers(loc, id, seq)? {
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

    /// Adds a record at the end of the stream.
    pub(crate) fn push(&mut self, loc: Loc, occurred_at_ms: u64, is_marker: bool) {
        debug_assert!(loc.seq > self.last_seq());
        self.locs.push(loc);
        if is_marker {
            self.markers.push(loc.seq);
        } else {
            self.oldest_ms = self.oldest_ms.min(occurred_at_ms);
        }
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
            + self.markers.capacity() * 8
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
}

impl Index {
    pub(crate) fn new(hasher: IdHasher) -> Self {
        Self {
            hasher,
            streams: Vec::new(),
            by_key: BTreeMap::new(),
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

    /// The tenant's run ids, ascending.
    pub(crate) fn runs(&self, tenant: &Tenant) -> Vec<RunId> {
        self.by_key
            .get(tenant)
            .map(|runs| runs.keys().cloned().collect())
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
                    .streams
                    .iter()
                    .map(|s| s.approx_bytes() - std::mem::size_of::<StreamIndex>() + 96)
                    .sum::<usize>(),
        }
    }
}
