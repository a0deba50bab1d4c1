//! Salvage: what could be read out of a damaged store, and what could not.
//!
//! A *scan* reads a store record by record and never stops at a bad one: it
//! yields each stream's readable records in ascending seq, every readable
//! snapshot, and a [`Loss`] for each thing it could not read, naming the
//! place (file and line, table and key, stream and seq) and the reason. The
//! embedded backends scan their files directly (`runstore_jsonl::salvage`,
//! `runstore_sqlite::salvage`, `runstore_redb::salvage`), so a store that no
//! longer opens can still be scanned; [`scan_store`] scans any store that
//! opens through the ordinary API, narrowing failed reads down to the single
//! bad record. Every scanner feeds a [`ScanBuilder`], which checks each
//! record the same way.
//!
//! What of a stream can be written into a new store is decided by
//! [`split_importable`]: import refuses a seq gap that no imported
//! compaction marker covers, so a stream that lost a record is copied up to
//! the gap, and the readable records after it are reported as
//! [`LossKind::NotCopied`].

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    ops::RangeInclusive,
};

use crate::{EventRecord, SnapshotId, SnapshotRecord, StreamKey, raw::compaction::compacted_ids};

mod api;

pub use api::scan_store;

/// What a scan of a store found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SalvageScan {
    /// Every stream with at least one readable record, ascending by key.
    pub streams: Vec<SalvagedStream>,
    /// Every readable snapshot, ascending by stream and snapshot id.
    pub snapshots: Vec<SnapshotRecord>,
    /// What could not be read, in the order the scan met it.
    pub losses: Vec<Loss>,
}

/// The readable records of one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct SalvagedStream {
    /// The stream.
    pub key: StreamKey,
    /// Its readable records (events and compaction markers), ascending by
    /// seq, each seq once, each checked to belong to the stream.
    pub records: Vec<EventRecord>,
}

/// What kind of thing a [`Loss`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LossKind {
    /// One record of the event log (an event or a compaction marker) could
    /// not be read or does not belong where it is stored.
    Record,
    /// One snapshot could not be read or does not belong where it is stored.
    Snapshot,
    /// A stretch of the store could not be read and the records in it cannot
    /// be named: the rest of a table after a key, a listing of streams.
    Range,
    /// Readable records left out because an earlier seq of their stream is
    /// lost and no readable compaction marker covers it: the copy of a
    /// stream stops at its first gap.
    NotCopied,
    /// Records or a snapshot that were read but that the target refused to
    /// store.
    NotWritten,
}

impl LossKind {
    /// The kind's name in reports: `record`, `snapshot`, `range`,
    /// `not_copied`, `not_written`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Record => "record",
            Self::Snapshot => "snapshot",
            Self::Range => "range",
            Self::NotCopied => "not_copied",
            Self::NotWritten => "not_written",
        }
    }
}

impl fmt::Display for LossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing a salvage could not copy, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// What was lost.
    pub kind: LossKind,
    /// Where it was: `FILE:LINE`, a snapshot file, `FILE: table T, ...`, or
    /// the stream for [`LossKind::NotCopied`].
    pub place: String,
    /// The stream it belongs to, when known.
    pub stream: Option<StreamKey>,
    /// The seqs concerned, as ascending inclusive ranges (one seq for a
    /// [`LossKind::Record`] whose place names it); empty when unknown.
    pub seqs: Vec<RangeInclusive<u64>>,
    /// The snapshot id, for a snapshot whose id is known.
    pub snapshot_id: Option<String>,
    /// Why it could not be copied.
    pub reason: String,
}

impl Loss {
    /// A record at `place` that could not be read; `stream` and `seq` when
    /// the place tells them.
    pub fn record(
        place: impl fmt::Display,
        stream: Option<&StreamKey>,
        seq: Option<u64>,
        reason: impl fmt::Display,
    ) -> Self {
        Self {
            kind: LossKind::Record,
            place: place.to_string(),
            stream: stream.cloned(),
            seqs: seq.map(|seq| seq..=seq).into_iter().collect(),
            snapshot_id: None,
            reason: reason.to_string(),
        }
    }

    /// A snapshot at `place` that could not be read; its stream and id when
    /// the place tells them.
    pub fn snapshot(
        place: impl fmt::Display,
        stream: Option<&StreamKey>,
        snapshot_id: Option<&str>,
        reason: impl fmt::Display,
    ) -> Self {
        Self {
            kind: LossKind::Snapshot,
            place: place.to_string(),
            stream: stream.cloned(),
            seqs: Vec::new(),
            snapshot_id: snapshot_id.map(str::to_owned),
            reason: reason.to_string(),
        }
    }

    /// A stretch of the store at `place` whose records cannot be named.
    pub fn range(
        place: impl fmt::Display,
        stream: Option<&StreamKey>,
        reason: impl fmt::Display,
    ) -> Self {
        Self {
            kind: LossKind::Range,
            place: place.to_string(),
            stream: stream.cloned(),
            seqs: Vec::new(),
            snapshot_id: None,
            reason: reason.to_string(),
        }
    }

    /// The rest of a table, from `place` on, which a scan could not read
    /// past `failure` and whose records it could not name otherwise.
    pub fn unread_rest(place: impl fmt::Display, failure: impl fmt::Display) -> Self {
        Self::range(
            place,
            None,
            format_args!("the rest of the table could not be read: {failure}"),
        )
    }

    /// Readable records of `stream` with `seqs` that are not copied.
    pub fn not_copied(
        stream: &StreamKey,
        seqs: impl IntoIterator<Item = u64>,
        reason: impl fmt::Display,
    ) -> Self {
        Self {
            kind: LossKind::NotCopied,
            place: stream.to_string(),
            stream: Some(stream.clone()),
            seqs: seq_ranges(seqs),
            snapshot_id: None,
            reason: reason.to_string(),
        }
    }

    /// Records of `stream` with `seqs`, or one of its snapshots, that the
    /// target at `place` refused.
    pub fn not_written(
        place: impl fmt::Display,
        stream: &StreamKey,
        seqs: impl IntoIterator<Item = u64>,
        snapshot_id: Option<&str>,
        reason: impl fmt::Display,
    ) -> Self {
        Self {
            kind: LossKind::NotWritten,
            place: place.to_string(),
            stream: Some(stream.clone()),
            seqs: seq_ranges(seqs),
            snapshot_id: snapshot_id.map(str::to_owned),
            reason: reason.to_string(),
        }
    }

    /// How many seqs [`Loss::seqs`] spans.
    pub fn seq_count(&self) -> u64 {
        self.seqs
            .iter()
            .map(|range| range.end() - range.start() + 1)
            .sum()
    }
}

impl fmt::Display for Loss {
    /// One line: `KIND at PLACE [(stream S seqs N-M, snapshot "ID")]: REASON`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.kind, self.place)?;
        let mut parts = Vec::new();
        if let Some(stream) = &self.stream
            && self.kind != LossKind::NotCopied
        {
            parts.push(format!("stream {stream}"));
        }
        if !self.seqs.is_empty() {
            let label = if self.seq_count() == 1 { "seq" } else { "seqs" };
            parts.push(format!("{label} {}", SeqRanges(&self.seqs)));
        }
        if let Some(id) = &self.snapshot_id {
            parts.push(format!("snapshot {id:?}"));
        }
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Shows seq ranges as `1-3,5`.
#[derive(Debug, Clone, Copy)]
pub struct SeqRanges<'a>(pub &'a [RangeInclusive<u64>]);

impl fmt::Display for SeqRanges<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, range) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            if range.start() == range.end() {
                write!(f, "{}", range.start())?;
            } else {
                write!(f, "{}-{}", range.start(), range.end())?;
            }
        }
        Ok(())
    }
}

/// Ascending seqs as inclusive ranges of consecutive seqs.
pub fn seq_ranges(seqs: impl IntoIterator<Item = u64>) -> Vec<RangeInclusive<u64>> {
    let mut ranges: Vec<RangeInclusive<u64>> = Vec::new();
    for seq in seqs {
        match ranges.last_mut() {
            Some(last) if last.end().checked_add(1) == Some(seq) => {
                *last = *last.start()..=seq;
            }
            _ => ranges.push(seq..=seq),
        }
    }
    ranges
}

/// How much of a salvaged stream can be imported: a prefix, and why the
/// rest cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSplit {
    /// How many of the stream's first records can be imported.
    pub importable: usize,
    /// Why the records after them cannot, if there are any.
    pub stop: Option<SplitStop>,
}

/// Why a salvaged stream's import stops before its last record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SplitStop {
    /// `seq` is lost and no readable compaction marker covers it.
    Gap {
        /// The first seq that is neither readable nor covered.
        seq: u64,
    },
    /// The record at `seq` repeats an event id of an earlier record (live or
    /// remembered by a marker).
    RepeatedId {
        /// The record's seq.
        seq: u64,
        /// The repeated id.
        event_id: String,
    },
    /// The record at `seq` is a second compaction marker; a stream holds at
    /// most one.
    SecondMarker {
        /// The second marker's seq.
        seq: u64,
    },
    /// The compaction marker at `seq` remembers `covered`, a seq an earlier
    /// record of the stream holds as a live event.
    CoversLive {
        /// The marker's seq.
        seq: u64,
        /// The live event's seq.
        covered: u64,
    },
}

impl fmt::Display for SplitStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gap { seq } => write!(
                f,
                "seq {seq} is lost and no readable compaction marker covers it, so the copy of \
                 the stream stops before it (an import must not leave a gap)"
            ),
            Self::RepeatedId { seq, event_id } => write!(
                f,
                "the record at seq {seq} repeats event id {event_id:?} of an earlier record, so \
                 the copy of the stream stops before it"
            ),
            Self::SecondMarker { seq } => write!(
                f,
                "the record at seq {seq} is a second compaction marker (a stream holds at most \
                 one), so the copy of the stream stops before it"
            ),
            Self::CoversLive { seq, covered } => write!(
                f,
                "the compaction marker at seq {seq} remembers seq {covered}, which a live event \
                 holds, so the copy of the stream stops before the marker"
            ),
        }
    }
}

/// The longest prefix of `records` (one stream, ascending seqs) that an
/// import into an empty stream accepts (see
/// [`plan_import`](crate::raw::append::plan_import)): every seq from 1 to the
/// prefix's last seq is one of its records or is covered by one of its
/// compaction markers (a marker's `compacted_event_ids` lists the seqs it
/// covers); no event id appears twice, live or remembered; at most one
/// marker; no marker remembers a seq a live event of the prefix holds.
///
/// A marker may cover seqs below records that precede it, so a prefix that
/// has a gap can become gapless again further on; the longest gapless one is
/// taken. A record that breaks one of the other rules ends the search.
pub fn split_importable(records: &[EventRecord]) -> ImportSplit {
    let mut covered: HashSet<u64> = HashSet::new();
    let mut live: HashSet<u64> = HashSet::new();
    let mut ids = HashSet::new();
    let mut marker_seen = false;
    let mut importable = 0;
    let mut broken = None;
    for (index, record) in records.iter().enumerate() {
        // Marker payloads were checked when the scan took the record.
        let remembered = compacted_ids(record).unwrap_or_default();
        if let Some(stop) = breaks_import(record, &remembered, &live, &ids, marker_seen) {
            broken = Some((index, stop));
            break;
        }
        ids.insert(record.event_id.as_str().to_owned());
        ids.extend(remembered.iter().map(|id| id.event_id.as_str().to_owned()));
        if record.is_compaction_marker() {
            marker_seen = true;
        } else {
            live.insert(record.seq);
        }
        covered.insert(record.seq);
        covered.extend(
            remembered
                .iter()
                .map(|id| id.seq)
                .filter(|seq| (1..=record.seq).contains(seq)),
        );
        if covered.len() as u64 == record.seq && !covered.contains(&0) {
            importable = index + 1;
        }
    }
    if importable == records.len() {
        return ImportSplit {
            importable,
            stop: None,
        };
    }
    let stop = match broken {
        Some((index, stop)) if index == importable => stop,
        _ => {
            // Every readable record and marker counted, the first seq
            // nothing stands for; it lies above the prefix, which is
            // gapless.
            let mut all: HashSet<u64> = HashSet::new();
            for record in records {
                all.insert(record.seq);
                all.extend(
                    compacted_ids(record)
                        .unwrap_or_default()
                        .iter()
                        .map(|id| id.seq),
                );
            }
            let from = importable
                .checked_sub(1)
                .map_or(1, |last| records[last].seq + 1);
            let seq = (from..).find(|seq| !all.contains(seq)).unwrap_or(from);
            SplitStop::Gap { seq }
        }
    };
    ImportSplit {
        importable,
        stop: Some(stop),
    }
}

/// Which rule other than "no gap" `record` breaks, following the records
/// before it (their live seqs, their ids, whether one is a marker).
fn breaks_import(
    record: &EventRecord,
    remembered: &[crate::raw::compaction::CompactedId],
    live: &HashSet<u64>,
    ids: &HashSet<String>,
    marker_seen: bool,
) -> Option<SplitStop> {
    let mut seen_here = HashSet::new();
    let repeat = std::iter::once(record.event_id.as_str())
        .chain(remembered.iter().map(|id| id.event_id.as_str()))
        .find(|id| ids.contains(*id) || !seen_here.insert(*id));
    if let Some(id) = repeat {
        return Some(SplitStop::RepeatedId {
            seq: record.seq,
            event_id: id.to_owned(),
        });
    }
    if !record.is_compaction_marker() {
        return None;
    }
    if marker_seen {
        return Some(SplitStop::SecondMarker { seq: record.seq });
    }
    remembered
        .iter()
        .find(|id| live.contains(&id.seq))
        .map(|id| SplitStop::CoversLive {
            seq: record.seq,
            covered: id.seq,
        })
}

/// Collects what a scan reads, checking every record the same way whatever
/// the backend, and builds the [`SalvageScan`].
///
/// A record is taken when its tenant context is valid, it names the stream
/// and seq its storage key says (for stores that key records), its seq is
/// above 0, a compaction marker's payload parses and remembers only seqs
/// from 1 to its own, and no record with the same seq in the stream was
/// taken before; otherwise it becomes a [`LossKind::Record`]. Snapshots
/// likewise.
#[derive(Debug, Default)]
pub struct ScanBuilder {
    streams: BTreeMap<StreamKey, BTreeMap<u64, EventRecord>>,
    snapshots: BTreeMap<(StreamKey, SnapshotId), SnapshotRecord>,
    losses: Vec<Loss>,
}

impl ScanBuilder {
    /// An empty scan.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes `record`, read at `place`. `stored_as` is the stream and seq
    /// the store filed it under, for stores whose keys say so.
    pub fn record(
        &mut self,
        place: impl fmt::Display,
        stored_as: Option<(&StreamKey, u64)>,
        record: EventRecord,
    ) {
        let lose = |reason: String| {
            Loss::record(
                &place,
                stored_as.map(|(key, _)| key),
                stored_as.map(|(_, seq)| seq),
                reason,
            )
        };
        let tenant = match record.scope.tenant() {
            Ok(tenant) => tenant,
            Err(err) => {
                self.losses.push(lose(format!(
                    "the record's tenant context is invalid: {err}"
                )));
                return;
            }
        };
        let key = StreamKey::new(tenant, record.run_id.clone());
        if let Some((stored_key, stored_seq)) = stored_as
            && (*stored_key != key || stored_seq != record.seq)
        {
            self.losses.push(lose(format!(
                "the record says it is seq {} of {key}",
                record.seq
            )));
            return;
        }
        if record.seq == 0 {
            self.losses.push(Loss::record(
                &place,
                Some(&key),
                None,
                "the record has seq 0; seqs start at 1",
            ));
            return;
        }
        let remembered = match compacted_ids(&record) {
            Ok(remembered) => remembered,
            Err(err) => {
                self.losses
                    .push(Loss::record(&place, Some(&key), Some(record.seq), err));
                return;
            }
        };
        if let Some(id) = remembered
            .iter()
            .find(|id| id.seq == 0 || id.seq > record.seq)
        {
            self.losses.push(Loss::record(
                &place,
                Some(&key),
                Some(record.seq),
                format!(
                    "the compaction marker remembers event {:?} at seq {}, outside 1 to its own \
                     seq {}",
                    id.event_id.as_str(),
                    id.seq,
                    record.seq
                ),
            ));
            return;
        }
        let seq = record.seq;
        let stream = self.streams.entry(key.clone()).or_default();
        if stream.contains_key(&seq) {
            self.losses.push(Loss::record(
                &place,
                Some(&key),
                Some(seq),
                format!("another record of {key} with seq {seq} was read first and is kept"),
            ));
            return;
        }
        stream.insert(seq, record);
    }

    /// Takes `snapshot`, read at `place`. `stored_as` is the stream and
    /// snapshot id the store filed it under, for stores whose keys say so.
    pub fn snapshot(
        &mut self,
        place: impl fmt::Display,
        stored_as: Option<(&StreamKey, &str)>,
        snapshot: SnapshotRecord,
    ) {
        let lose = |reason: String| {
            Loss::snapshot(
                &place,
                stored_as.map(|(key, _)| key),
                stored_as.map(|(_, id)| id),
                reason,
            )
        };
        let tenant = match snapshot.scope.tenant() {
            Ok(tenant) => tenant,
            Err(err) => {
                self.losses.push(lose(format!(
                    "the snapshot's tenant context is invalid: {err}"
                )));
                return;
            }
        };
        let key = StreamKey::new(tenant, snapshot.run_id.clone());
        if let Some((stored_key, stored_id)) = stored_as
            && (*stored_key != key || stored_id != snapshot.snapshot_id.as_str())
        {
            self.losses.push(lose(format!(
                "the record says it is snapshot {:?} of {key}",
                snapshot.snapshot_id.as_str()
            )));
            return;
        }
        let id = snapshot.snapshot_id.clone();
        match self.snapshots.entry((key, id)) {
            std::collections::btree_map::Entry::Occupied(taken) => {
                let (key, id) = taken.key();
                self.losses.push(Loss::snapshot(
                    &place,
                    Some(key),
                    Some(id.as_str()),
                    "another record of this snapshot was read first and is kept",
                ));
            }
            std::collections::btree_map::Entry::Vacant(free) => {
                free.insert(snapshot);
            }
        }
    }

    /// Records something the scan could not read.
    pub fn lose(&mut self, loss: Loss) {
        self.losses.push(loss);
    }

    /// The losses recorded so far.
    pub fn losses(&self) -> &[Loss] {
        &self.losses
    }

    /// The scan's result.
    pub fn finish(self) -> SalvageScan {
        SalvageScan {
            streams: self
                .streams
                .into_iter()
                .map(|(key, records)| SalvagedStream {
                    key,
                    records: records.into_values().collect(),
                })
                .collect(),
            snapshots: self.snapshots.into_values().collect(),
            losses: self.losses,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        EventId, RunId, Tenant,
        raw::compaction::{COMPACTION_EVENT_TYPE, merge_marker},
    };

    fn event(seq: u64) -> EventRecord {
        let mut record = EventRecord::new(
            &Tenant::local(),
            RunId::new("run").unwrap(),
            EventId::new(format!("e-{seq}")).unwrap(),
            "t",
            seq,
        );
        record.seq = seq;
        record
    }

    fn marker(pruned: &[u64]) -> EventRecord {
        let events: Vec<EventRecord> = pruned.iter().map(|seq| event(*seq)).collect();
        merge_marker(
            &Tenant::local(),
            &RunId::new("run").unwrap(),
            None,
            &events,
            99,
            |_| Ok(false),
        )
        .unwrap()
    }

    fn seqs(records: &[EventRecord]) -> Vec<u64> {
        records.iter().map(|record| record.seq).collect()
    }

    #[test]
    fn a_gapless_stream_is_imported_whole() {
        let records = vec![event(1), event(2), event(3)];
        assert_eq!(
            split_importable(&records),
            ImportSplit {
                importable: 3,
                stop: None
            }
        );
        assert_eq!(split_importable(&[]).importable, 0);
    }

    #[test]
    fn a_gap_stops_the_copy_and_names_the_lost_seq() {
        let records = vec![event(1), event(2), event(4), event(5)];
        let split = split_importable(&records);
        assert_eq!(split.importable, 2);
        assert_eq!(split.stop, Some(SplitStop::Gap { seq: 3 }));
        // The first record lost: nothing can be copied.
        let split = split_importable(&[event(2), event(3)]);
        assert_eq!(split.importable, 0);
        assert_eq!(split.stop, Some(SplitStop::Gap { seq: 1 }));
    }

    // A marker covers the seqs it remembers, even ones below records that
    // come before it in seq order (events pruned out of order).
    #[test]
    fn markers_cover_their_seqs() {
        let records = vec![marker(&[1, 2, 3]), event(4), event(5)];
        assert_eq!(split_importable(&records).importable, 3);
        let out_of_order = vec![event(2), marker(&[1, 3]), event(4)];
        assert_eq!(split_importable(&out_of_order).importable, 3);
        // The marker that covers seq 1 is itself after a lost seq.
        let lost_before_marker = vec![event(2), marker(&[1, 4]), event(5)];
        let split = split_importable(&lost_before_marker);
        assert_eq!(split.importable, 0);
        assert_eq!(split.stop, Some(SplitStop::Gap { seq: 3 }));
    }

    // The import rules besides the gap: one marker per stream, and no
    // marker over a live event's seq.
    #[test]
    fn a_second_marker_or_one_over_a_live_event_stops_the_copy() {
        let records = vec![marker(&[1]), event(2), marker(&[3]), event(4)];
        let split = split_importable(&records);
        assert_eq!(split.importable, 2);
        assert_eq!(split.stop, Some(SplitStop::SecondMarker { seq: 3 }));
        let mut over = marker(&[1, 3]);
        over.payload["compacted_event_ids"][0]["event_id"] = json!("other");
        over.payload["compacted_event_ids"][0]["seq"] = json!(2);
        let records = vec![event(1), event(2), over, event(4)];
        let split = split_importable(&records);
        assert_eq!(split.importable, 2);
        assert_eq!(
            split.stop,
            Some(SplitStop::CoversLive { seq: 3, covered: 2 })
        );
    }

    #[test]
    fn a_repeated_id_stops_the_copy() {
        let mut twin = event(3);
        twin.event_id = EventId::new("e-1").unwrap();
        let split = split_importable(&[event(1), event(2), twin, event(4)]);
        assert_eq!(split.importable, 2);
        assert_eq!(
            split.stop,
            Some(SplitStop::RepeatedId {
                seq: 3,
                event_id: "e-1".to_owned()
            })
        );
    }

    #[test]
    fn seq_ranges_merge_runs() {
        assert_eq!(seq_ranges([1, 2, 3, 5, 7, 8]), vec![1..=3, 5..=5, 7..=8]);
        let loss = Loss::not_copied(
            &StreamKey::new(Tenant::local(), RunId::new("r").unwrap()),
            [4, 5, 9],
            "gap",
        );
        assert_eq!(loss.seq_count(), 3);
        assert_eq!(
            loss.to_string(),
            "not_copied at local/local:r (seqs 4-5,9): gap"
        );
    }

    #[test]
    fn the_builder_checks_records_against_their_keys() {
        let key = StreamKey::new(Tenant::local(), RunId::new("run").unwrap());
        let other = StreamKey::new(Tenant::local(), RunId::new("other").unwrap());
        let mut scan = ScanBuilder::new();
        scan.record("a", Some((&key, 1)), event(1));
        scan.record("b", Some((&key, 3)), event(2));
        scan.record("c", Some((&other, 3)), event(3));
        scan.record("d", None, event(1));
        let mut bad_marker = event(4);
        bad_marker.event_type = COMPACTION_EVENT_TYPE.to_owned();
        bad_marker.payload = json!({"not": "a marker"});
        scan.record("e", None, bad_marker);
        let mut stranger = event(5);
        stranger.scope.tenant_context.org_id = String::new();
        scan.record("f", None, stranger);
        let mut beyond = marker(&[5]);
        beyond.seq = 4;
        scan.record("h", None, beyond);
        scan.record("g", None, event(6));
        let scan = scan.finish();
        assert_eq!(scan.streams.len(), 1);
        assert_eq!(seqs(&scan.streams[0].records), [1, 6]);
        let places: Vec<&str> = scan.losses.iter().map(|loss| loss.place.as_str()).collect();
        assert_eq!(places, ["b", "c", "d", "e", "f", "h"]);
        assert!(
            scan.losses[5].reason.contains("outside 1 to its own seq 4"),
            "{}",
            scan.losses[5]
        );
        assert!(
            scan.losses[3].to_string().contains("seq 4"),
            "{}",
            scan.losses[3]
        );
    }
}
