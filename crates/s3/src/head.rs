//! The head object of a stream: the commit point of every change to it
//! (docs/backends/s3.md, "The head").

use std::collections::HashMap;

use runstore_core::{
    Error, EventId, EventRecord, Result, RunId, StreamKey, Tenant,
    raw::compaction::{compacted_ids, seq_among},
};
use serde::{Deserialize, Serialize};

/// The head's format version.
pub(crate) const FORMAT: u32 = 1;
/// The format of a head whose stream was deleted (CONTRACT §27): it has
/// [`Head::erased_through`], and its id index entries live under a prefix
/// of their own ([`Head::ids_epoch`]). A version of the store that predates
/// erasure refuses such a head as `Corrupt` instead of reading the old
/// prefix as the stream's ids; a stream never deleted keeps format 1, byte
/// for byte.
pub(crate) const FORMAT_ERASED: u32 = 2;
/// The format of a head that names a segment with an id table
/// ([`SegmentRef::index`]), deleted or not. A version of the store that
/// predates the tables refuses it as `Corrupt` rather than parse a segment
/// that starts with its table or look its ids up under `ids/`; a head
/// without such a segment keeps format 1 or 2, byte for byte.
pub(crate) const FORMAT_INDEXED: u32 = 3;
/// Most entries a segment's id table may state: 2^30 ids (2^20 pages). A
/// head stating more is `Corrupt` rather than a request for billions of
/// page objects.
const MAX_TABLE: u64 = 1 << 30;
/// How many commit tokens a head remembers.
const COMMITS_KEPT: usize = 32;
/// A flush runs once the buffer holds this many records...
pub(crate) const FLUSH_RECORDS: usize = 128;
/// ...or this many bytes of records.
pub(crate) const FLUSH_BYTES: usize = 256 * 1024;

/// One immutable segment object the head names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SegmentRef {
    /// Lowest seq it covers.
    pub(crate) first: u64,
    /// Highest seq it covers.
    pub(crate) last: u64,
    /// How many records it holds.
    pub(crate) count: u64,
    /// The unique token in its key.
    pub(crate) token: String,
    /// The earliest `occurred_at_ms` of its ordinary records (markers are
    /// never pruned), `u64::MAX` when it holds markers only; `None` for a
    /// segment written before heads recorded it. Compaction reads a segment
    /// only when this says it may hold an event old enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) oldest_ms: Option<u64>,
    /// The segment's id table ([`crate::idtable`]); `None` for a segment
    /// written before segments carried one, whose ids are found under
    /// `ids/` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) index: Option<IndexRef>,
}

/// The id table of a segment ([`crate::idtable`]): `count` entries, split
/// into `pages` objects of their own, or leading the segment object (before
/// its records) when `pages` is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IndexRef {
    pub(crate) count: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) pages: u32,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde passes a reference
fn is_zero(pages: &u32) -> bool {
    *pages == 0
}

impl IndexRef {
    /// Where the segment's records start in its object: after a table that
    /// leads it.
    pub(crate) fn records_at(self) -> u64 {
        if self.pages == 0 {
            self.count.saturating_mul(crate::idtable::ENTRY)
        } else {
            0
        }
    }
}

impl SegmentRef {
    /// What the flush's merge rule counts a segment as: its records or its
    /// table's entries, whichever is more.
    pub(crate) fn weight(&self) -> u64 {
        self.index
            .map_or(self.count, |index| self.count.max(index.count))
    }

    /// [`SegmentRef::oldest_ms`] of a segment holding `records`.
    pub(crate) fn oldest_of(records: &[EventRecord]) -> u64 {
        records
            .iter()
            .filter(|record| !record.is_compaction_marker())
            .map(|record| record.occurred_at_ms)
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// A compaction marker stored in a segment: its own id is found here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MarkerRef {
    /// The marker's seq.
    pub(crate) seq: u64,
    /// The marker's own event id.
    pub(crate) event_id: EventId,
}

/// A stream's head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Head {
    pub(crate) format: u32,
    pub(crate) org_id: String,
    pub(crate) workspace_id: String,
    #[serde(default)]
    pub(crate) deployment_id: Option<String>,
    pub(crate) run_id: RunId,
    /// The stream's last seq (markers count).
    pub(crate) last_seq: u64,
    /// Every record with a seq at or below this lives in `segments`.
    pub(crate) flushed_through: u64,
    /// Segments in ascending seq order.
    pub(crate) segments: Vec<SegmentRef>,
    /// The records above `flushed_through`, ascending.
    pub(crate) buffer: Vec<EventRecord>,
    /// Markers stored in segments.
    pub(crate) markers: Vec<MarkerRef>,
    /// Tokens of the latest commits, oldest first.
    pub(crate) commits: Vec<String>,
    /// The last seq of the stream when it was last deleted (CONTRACT §27),
    /// `None` if it never was. Seqs up to it hold nothing but the erasure
    /// marker; the stream is a deleted run while this equals `last_seq`
    /// ([`Head::is_erased`]), and the id index of the records above it
    /// lives under a prefix of its own ([`Head::ids_epoch`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) erased_through: Option<u64>,
}

/// The fields of a head that name its stream: read on their own when a
/// listing must learn a stream from a head under a hashed key, so that a
/// head damaged elsewhere still names the stream whose compaction fails.
#[derive(Debug, Deserialize)]
pub(crate) struct HeadName {
    org_id: String,
    workspace_id: String,
    #[serde(default)]
    deployment_id: Option<String>,
    run_id: RunId,
}

impl HeadName {
    /// The stream the head names.
    pub(crate) fn stream(self) -> Result<StreamKey> {
        let tenant = Tenant::new(self.org_id, self.workspace_id, self.deployment_id)?;
        Ok(StreamKey::new(tenant, self.run_id))
    }
}

/// How the head of `key` is named in errors.
pub(crate) fn head_what(key: &StreamKey) -> String {
    format!("the head of stream {key}")
}

impl Head {
    /// The head of a stream that holds nothing yet.
    pub(crate) fn empty(key: &StreamKey) -> Self {
        Self {
            format: FORMAT,
            org_id: key.tenant.org_id().to_owned(),
            workspace_id: key.tenant.workspace_id().to_owned(),
            deployment_id: key.tenant.deployment_id().map(str::to_owned),
            run_id: key.run_id.clone(),
            last_seq: 0,
            flushed_through: 0,
            segments: Vec::new(),
            buffer: Vec::new(),
            markers: Vec::new(),
            commits: Vec::new(),
            erased_through: None,
        }
    }

    /// Whether the stream is a deleted run not appended to since: it holds
    /// its erasure marker and nothing else.
    pub(crate) fn is_erased(&self) -> bool {
        self.erased_through
            .is_some_and(|erased| erased == self.last_seq)
    }

    /// Which id index this head's records use: `None` for the first one
    /// (`ids/`), the seq of the last deletion for the one started by it.
    /// Every entry under an older index names a deleted record.
    pub(crate) fn ids_epoch(&self) -> Option<u64> {
        self.erased_through
    }

    /// Records that the stream, whose last seq is `through`, was deleted
    /// through `through`: the head takes [`FORMAT_ERASED`].
    pub(crate) fn mark_erased(&mut self, through: u64) {
        self.erased_through = Some(through);
        self.settle_format();
    }

    /// Sets `format` to what the head holds: [`FORMAT_INDEXED`] once a
    /// segment has an id table, else [`FORMAT_ERASED`] once the stream was
    /// deleted, else [`FORMAT`]. Called wherever segments or the deletion
    /// change.
    pub(crate) fn settle_format(&mut self) {
        self.format = if self.segments.iter().any(|segment| segment.index.is_some()) {
            FORMAT_INDEXED
        } else if self.erased_through.is_some() {
            FORMAT_ERASED
        } else {
            FORMAT
        };
    }

    /// Whether a segment without an id table is named: its ids are then
    /// found under the `ids/` prefix of [`Head::ids_epoch`].
    pub(crate) fn has_unindexed(&self) -> bool {
        self.segments.iter().any(|segment| segment.index.is_none())
    }

    /// The stream this head belongs to.
    pub(crate) fn stream(&self) -> Result<StreamKey> {
        let tenant = Tenant::new(
            self.org_id.clone(),
            self.workspace_id.clone(),
            self.deployment_id.clone(),
        )?;
        Ok(StreamKey::new(tenant, self.run_id.clone()))
    }

    /// Checks that a head read from `key`'s location names `key` (a hashed
    /// key segment could in theory collide).
    pub(crate) fn check(&self, key: &StreamKey, location: &impl std::fmt::Display) -> Result<()> {
        let fail =
            |reason: String| Error::corrupt(format!("{location} ({})", head_what(key)), reason);
        match (self.format, self.erased_through) {
            (FORMAT, None) | (FORMAT_ERASED, Some(_)) | (FORMAT_INDEXED, _) => {}
            (FORMAT_ERASED, None) => {
                return Err(fail(format!(
                    "head format {FORMAT_ERASED} without erased_through"
                )));
            }
            (format, _) => {
                return Err(fail(format!(
                    "head format {format} is not {FORMAT}, {FORMAT_ERASED} or {FORMAT_INDEXED}"
                )));
            }
        }
        for segment in &self.segments {
            if let Some(index) = segment.index {
                if self.format != FORMAT_INDEXED {
                    return Err(fail(format!(
                        "head format {} names a segment with an id table",
                        self.format
                    )));
                }
                let pages_fit = index.pages == crate::idtable::pages_for(index.count);
                // Every ordinary record has an entry; a marker may remember
                // none, and its own id is not in the table.
                let markers = self
                    .markers
                    .iter()
                    .filter(|marker| (segment.first..=segment.last).contains(&marker.seq))
                    .count() as u64;
                let too_few = index.count.saturating_add(markers) < segment.count;
                let too_many = index.count > MAX_TABLE;
                if !pages_fit || too_few || too_many {
                    return Err(fail(format!(
                        "the id table of the segment holding seqs {} to {} ({} records) states \
                         {} entries in {} pages",
                        segment.first, segment.last, segment.count, index.count, index.pages
                    )));
                }
            }
        }
        let named = self.stream().map_err(|err| fail(err.to_string()))?;
        if named != *key {
            return Err(fail(format!("the head names stream {named}")));
        }
        Ok(())
    }

    /// Records a commit token.
    pub(crate) fn remember(&mut self, token: &str) {
        self.commits.push(token.to_owned());
        if self.commits.len() > COMMITS_KEPT {
            let excess = self.commits.len() - COMMITS_KEPT;
            self.commits.drain(..excess);
        }
    }

    /// Whether the commit with `token` is part of this head.
    pub(crate) fn has_commit(&self, token: &str) -> bool {
        self.commits.iter().any(|commit| commit == token)
    }

    /// The seq of `event_id` if the head itself knows it: a buffered record
    /// or a marker. `None` means "look in the id index".
    pub(crate) fn find(&self, event_id: &EventId) -> Result<Option<u64>> {
        if let Some(seq) = seq_among(&self.buffer, event_id)? {
            return Ok(Some(seq));
        }
        Ok(self
            .markers
            .iter()
            .find(|marker| marker.event_id == *event_id)
            .map(|marker| marker.seq))
    }

    /// Replays a change that moved `base`'s buffer into segments (a flush or
    /// a compaction, giving `changed`) onto `current`, the head that won the
    /// race meanwhile. Possible only when `current` differs from `base` by
    /// appended records alone: same segments and markers, and a buffer that
    /// starts with `base`'s. The result keeps those appended records in its
    /// buffer, so nothing committed since `base` is lost.
    pub(crate) fn rebase(base: &Head, changed: &Head, current: &Head) -> Option<Head> {
        let appended_only = current.erased_through == base.erased_through
            && current.segments == base.segments
            && current.markers == base.markers
            && current.flushed_through == base.flushed_through
            && current.buffer.len() >= base.buffer.len()
            && current.buffer[..base.buffer.len()] == base.buffer[..];
        if !appended_only {
            return None;
        }
        let mut rebased = current.clone();
        rebased.segments.clone_from(&changed.segments);
        rebased.markers.clone_from(&changed.markers);
        rebased.flushed_through = changed.flushed_through;
        rebased.buffer.drain(..base.buffer.len());
        rebased.settle_format();
        if let Some(token) = changed.commits.last() {
            rebased.remember(token);
        }
        Some(rebased)
    }

    /// Whether the buffer is due to be flushed into a segment.
    pub(crate) fn needs_flush(&self) -> bool {
        if self.buffer.len() >= FLUSH_RECORDS {
            return true;
        }
        let bytes: usize = self
            .buffer
            .iter()
            .map(|record| serde_json::to_vec(record).map_or(0, |bytes| bytes.len()))
            .sum();
        bytes >= FLUSH_BYTES
    }
}

/// The id index entries records need once they live in a segment: an
/// ordinary record's own id, a marker's remembered ids. A marker's own id is
/// kept in [`Head::markers`] instead.
pub(crate) fn index_entries(records: &[EventRecord]) -> Result<Vec<(EventId, u64)>> {
    let mut entries = Vec::with_capacity(records.len());
    for record in records {
        if record.is_compaction_marker() {
            entries.extend(
                compacted_ids(record)?
                    .into_iter()
                    .map(|id| (id.event_id, id.seq)),
            );
        } else {
            entries.push((record.event_id.clone(), record.seq));
        }
    }
    Ok(entries)
}

/// The contents of an id index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdEntry {
    /// The seq the id was stored at.
    pub(crate) seq: u64,
    /// The full id, compared on read: an entry under a hashed key segment
    /// that names another id is `Corrupt`, never a match. Absent in entries
    /// written before it was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<EventId>,
}

impl IdEntry {
    /// The seq an entry read for `event_id` at `location` states.
    pub(crate) fn seq_for(
        &self,
        event_id: &EventId,
        location: &impl std::fmt::Display,
    ) -> Result<u64> {
        match &self.id {
            Some(id) if id != event_id => Err(Error::corrupt(
                location,
                format!("the entry names event {:?}", id.as_str()),
            )),
            _ => Ok(self.seq),
        }
    }
}

/// Most ids a handle remembers per stream before it stops caching.
const ID_CACHE_LIMIT: usize = 1_000_000;

/// Every id (per [`index_entries`]) of the records with seq up to
/// `through`: a shortcut for id index lookups, used only while a head proves
/// it complete (docs/backends/s3.md, "Id cache").
#[derive(Debug, Default)]
pub(crate) struct IdCache {
    /// The [`Head::ids_epoch`] the cache was built for: a deletion empties
    /// the stream's id set, so a cache of another epoch covers nothing.
    epoch: Option<u64>,
    through: u64,
    ids: HashMap<EventId, u64>,
    disabled: bool,
}

impl IdCache {
    /// Whether the cache plus `head`'s buffer is the stream's whole id set.
    pub(crate) fn covers(&self, head: &Head) -> bool {
        !self.disabled && self.epoch == head.ids_epoch() && head.flushed_through <= self.through
    }

    /// The cached seq of `event_id`.
    pub(crate) fn get(&self, event_id: &EventId) -> Option<u64> {
        self.ids.get(event_id).copied()
    }

    /// Adds the ids of `records` (ascending, all committed) and moves
    /// `through` to `through`.
    pub(crate) fn extend(&mut self, records: &[EventRecord], through: u64) -> Result<()> {
        if self.disabled {
            return Ok(());
        }
        for (id, seq) in index_entries(records)? {
            self.ids.entry(id).or_insert(seq);
        }
        self.through = self.through.max(through);
        if self.ids.len() > ID_CACHE_LIMIT {
            self.ids = HashMap::new();
            self.disabled = true;
        }
        Ok(())
    }

    /// Brings the cache up to `head` when every record above `through` is in
    /// its buffer.
    ///
    /// A head of another epoch (the stream was deleted since the cache was
    /// built) starts the cache again, empty and complete through the
    /// deletion's seq: records up to it hold no id but the erasure
    /// marker's, which the head knows itself.
    pub(crate) fn catch_up(&mut self, head: &Head) -> Result<()> {
        if self.epoch != head.ids_epoch() {
            *self = Self {
                epoch: head.ids_epoch(),
                through: head.erased_through.unwrap_or(0),
                ids: HashMap::new(),
                disabled: false,
            };
        }
        if self.covers(head) && head.last_seq > self.through {
            let from = head
                .buffer
                .partition_point(|record| record.seq <= self.through);
            self.extend(&head.buffer[from..], head.last_seq)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use runstore_core::{EventId, Tenant};

    use super::*;

    fn record(seq: u64) -> EventRecord {
        let tenant = Tenant::local();
        let mut record = EventRecord::new(
            &tenant,
            RunId::new("r").unwrap(),
            EventId::new(format!("e{seq}")).unwrap(),
            "t",
            0,
        );
        record.seq = seq;
        record
    }

    fn head(buffer: &[u64]) -> Head {
        let mut head = Head::empty(&StreamKey::new(Tenant::local(), RunId::new("r").unwrap()));
        head.buffer = buffer.iter().copied().map(record).collect();
        head.last_seq = buffer.last().copied().unwrap_or(0);
        head
    }

    #[test]
    fn the_format_follows_the_tables_and_the_deletion() {
        let key = StreamKey::new(Tenant::local(), RunId::new("r").unwrap());
        let segment = |index| SegmentRef {
            first: 1,
            last: 2,
            count: 2,
            token: "t".into(),
            oldest_ms: Some(1),
            index,
        };
        let mut plain = head(&[3]);
        plain.segments.push(segment(None));
        plain.settle_format();
        assert_eq!(plain.format, FORMAT);
        assert!(plain.has_unindexed());
        let mut erased = plain.clone();
        erased.mark_erased(3);
        assert_eq!(erased.format, FORMAT_ERASED);
        let mut indexed = plain.clone();
        indexed
            .segments
            .push(segment(Some(IndexRef { count: 2, pages: 0 })));
        indexed.settle_format();
        assert_eq!(indexed.format, FORMAT_INDEXED);
        indexed.mark_erased(3);
        assert_eq!(
            indexed.format, FORMAT_INDEXED,
            "a table outranks the deletion"
        );
        for head in [&plain, &erased, &indexed] {
            head.check(&key, &"head").unwrap();
        }
        let mut stale = plain.clone();
        stale
            .segments
            .push(segment(Some(IndexRef { count: 2, pages: 0 })));
        let err = stale.check(&key, &"head").unwrap_err();
        assert!(
            err.to_string()
                .contains("format 1 names a segment with an id table"),
            "{err}"
        );
        let mut wrong = indexed.clone();
        wrong.segments[1].index = Some(IndexRef {
            count: 5_000,
            pages: 0,
        });
        let err = wrong.check(&key, &"head").unwrap_err();
        assert!(
            err.to_string().contains("states 5000 entries in 0 pages"),
            "{err}"
        );
        wrong.segments[1].index = Some(IndexRef {
            count: u64::MAX,
            pages: u32::MAX,
        });
        assert!(wrong.check(&key, &"head").is_err());
        let count = MAX_TABLE + 1;
        let pages = crate::idtable::pages_for(count);
        wrong.segments[1].index = Some(IndexRef { count, pages });
        assert!(wrong.check(&key, &"head").is_err());
        let mut unknown = plain.clone();
        unknown.format = 4;
        let err = unknown.check(&key, &"head").unwrap_err();
        assert!(
            err.to_string().contains("head format 4 is not 1, 2 or 3"),
            "{err}"
        );
        // An id table of another shape (a field this version does not
        // know) is refused, never read as one it knows.
        assert!(serde_json::from_str::<IndexRef>(r#"{"at": 9, "count": 1}"#).is_err());
        // A head without tables serializes exactly as before them.
        let written = serde_json::to_value(&plain).unwrap();
        assert!(written["segments"][0].get("index").is_none(), "{written}");
    }

    #[test]
    fn an_id_entry_naming_another_id_is_corrupt() {
        let mine = EventId::new("mine").unwrap();
        let other = EventId::new("other").unwrap();
        let entry = IdEntry {
            seq: 7,
            id: Some(mine.clone()),
        };
        assert_eq!(entry.seq_for(&mine, &"ids/h").unwrap(), 7);
        assert!(matches!(
            entry.seq_for(&other, &"ids/h"),
            Err(Error::Corrupt { .. })
        ));
        let legacy: IdEntry = serde_json::from_str(r#"{"seq": 3}"#).unwrap();
        assert_eq!(legacy.seq_for(&other, &"ids/h").unwrap(), 3);
        let written = serde_json::to_value(&entry).unwrap();
        assert_eq!(written, serde_json::json!({"seq": 7, "id": "mine"}));
    }

    #[test]
    fn a_head_naming_an_invalid_tenant_is_corrupt() {
        // Found by the s3_head fuzz target: a stored head with an empty
        // org_id made reads answer InvalidInput, as if the caller erred.
        let key = StreamKey::new(Tenant::local(), RunId::new("r").unwrap());
        let mut head = Head::empty(&key);
        head.org_id = String::new();
        assert!(matches!(
            head.check(&key, &"ev/h/head"),
            Err(Error::Corrupt { .. })
        ));
        assert!(Head::empty(&key).check(&key, &"ev/h/head").is_ok());
    }

    #[test]
    fn a_flush_rebases_onto_appended_records_only() {
        let base = head(&[1, 2]);
        let mut flushed = base.clone();
        flushed.buffer.clear();
        flushed.flushed_through = 2;
        flushed.segments.push(SegmentRef {
            first: 1,
            last: 2,
            count: 2,
            token: "t".into(),
            oldest_ms: Some(1),
            index: None,
        });
        flushed.remember("flush");
        let current = head(&[1, 2, 3]);
        let rebased = Head::rebase(&base, &flushed, &current).unwrap();
        assert_eq!(rebased.segments, flushed.segments);
        assert_eq!(rebased.flushed_through, 2);
        assert_eq!(rebased.last_seq, 3);
        assert_eq!(rebased.buffer, vec![record(3)]);
        assert!(rebased.has_commit("flush"));

        let mut flushed_elsewhere = current.clone();
        flushed_elsewhere.segments.push(SegmentRef {
            first: 1,
            last: 3,
            count: 3,
            token: "other".into(),
            oldest_ms: None,
            index: None,
        });
        flushed_elsewhere.buffer.clear();
        flushed_elsewhere.flushed_through = 3;
        assert!(Head::rebase(&base, &flushed, &flushed_elsewhere).is_none());
        assert!(Head::rebase(&base, &flushed, &head(&[1, 5])).is_none());
    }
}
