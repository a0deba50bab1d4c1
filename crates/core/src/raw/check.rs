//! The stream checker: what must hold of one stream as read back
//! (CONTRACT §1-§3, §7, §9), written once for every tool that checks a store.
//!
//! The checker does no I/O. A caller reads one stream in full, ascending by
//! seq (`ReadQuery::all()`, or page after page), and hands the records to
//! [`check_stream`]; it answers a [`StreamCheck`] listing every
//! [`Problem`] found, in the order the records show them, and what the
//! stream holds. The caller then asks the store for `next_seq` and passes
//! it to [`StreamCheck::check_next_seq`], which answers one more problem
//! when it is not the last seq + 1.
//!
//! ```
//! use runstore_core::{EventId, EventRecord, RunId, StreamKey, Tenant, raw::check::check_stream};
//!
//! let tenant = Tenant::local();
//! let key = StreamKey::new(tenant.clone(), RunId::new("run-1")?);
//! let records: Vec<EventRecord> = ["a", "b"]
//!     .iter()
//!     .zip(1..)
//!     .map(|(id, seq)| {
//!         let mut record = EventRecord::new(&tenant, key.run_id.clone(), EventId::new(*id)?, "t", 1);
//!         record.seq = seq;
//!         Ok(record)
//!     })
//!     .collect::<runstore_core::Result<_>>()?;
//! let check = check_stream(&key, &records);
//! assert!(check.is_clean(), "{:?}", check.problems);
//! assert_eq!(check.last_seq, 2);
//! assert_eq!(check.check_next_seq(3), None);
//! assert_eq!(
//!     check.check_next_seq(5).map(|problem| problem.to_string()),
//!     Some("next_seq is 5 but the last seq is 2".to_owned())
//! );
//! # Ok::<_, runstore_core::Error>(())
//! ```
//!
//! Users: `runstore verify` (every stream of a store), the conformance
//! suite's concurrency cases, the kill harness, and backends' race and
//! fault-injection tests (through `runstore_conformance::support`). A check
//! that holds of every stream belongs here, so that all of them agree.
//!
//! What it checks, per record: it belongs to the stream (run and tenant),
//! seqs ascend, event ids are unique; per compaction marker: there is one,
//! its payload parses, its `compacted_through_seq` is its own seq and the
//! highest seq it remembers, its count matches the ids it remembers, its
//! source is [`COMPACTION_SOURCE`], it remembers each seq and id once, and
//! no id or seq it remembers is also live; and for the whole stream: every
//! seq from 1 to the last is live or remembered. A marker's own event id is
//! not checked: markers imported from the reference carry the reference's
//! ids.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
};

use crate::{
    EventRecord, ReadQuery, StreamKey,
    raw::compaction::{COMPACTION_SOURCE, marker_payload},
};

/// One thing found wrong with a stream, at `seq` when it concerns one.
///
/// Its `Display` is the sentence `runstore verify` prints for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The seq the problem is at, when it concerns one.
    pub seq: Option<u64>,
    /// What is wrong.
    pub kind: ProblemKind,
}

/// What is wrong, with what the checker saw.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A record's seq is not above the seq before it.
    NotAscending {
        /// The highest seq before it.
        previous: u64,
    },
    /// A record names another run.
    OtherRun {
        /// The run it names.
        run_id: String,
    },
    /// A record names another tenant.
    OtherTenant,
    /// An event id is stored at two live seqs.
    DuplicateId {
        /// The id.
        event_id: String,
        /// The seq it was stored at before this one.
        first_seq: u64,
    },
    /// A second compaction marker.
    SecondMarker {
        /// The first marker's seq.
        first_seq: u64,
    },
    /// A compaction marker whose payload does not parse.
    MalformedMarker {
        /// Why it does not.
        reason: String,
    },
    /// A marker's `compacted_through_seq`, or the highest seq it remembers,
    /// is not its own seq.
    MarkerThrough {
        /// What the payload says.
        compacted_through_seq: u64,
        /// The highest seq it remembers, if any.
        highest: Option<u64>,
    },
    /// A marker's `pruned_events` is not the number of ids it remembers.
    MarkerCount {
        /// What the payload says.
        pruned_events: u64,
        /// The ids it remembers.
        remembered: usize,
    },
    /// A marker's source is not [`COMPACTION_SOURCE`].
    MarkerSource {
        /// What the payload says.
        source: String,
    },
    /// The marker remembers one seq twice.
    SeqRememberedTwice {
        /// The id remembered there first.
        first: String,
        /// The id remembered there again.
        second: String,
    },
    /// The marker remembers one id at two seqs.
    IdRememberedTwice {
        /// The id.
        event_id: String,
        /// The lower seq it is remembered at.
        first_seq: u64,
    },
    /// A remembered id is also live.
    CompactedIdLive {
        /// The id.
        event_id: String,
        /// The seq it is live at.
        live_seq: u64,
    },
    /// A seq is live and remembered by the marker (other than the
    /// marker's own).
    LiveAndCompacted,
    /// A marker says the run was erased through a seq above its own.
    ErasedAbove {
        /// What the payload says.
        erased_through_seq: u64,
    },
    /// A seq holds a record or a remembered id although the run was erased
    /// through it (CONTRACT §27).
    ErasedSeqHeld {
        /// The marker's `erased_through_seq`.
        erased_through_seq: u64,
    },
    /// Seqs between 1 and the last are neither live nor remembered.
    Gap {
        /// How many.
        missing: u64,
    },
    /// The store's `next_seq` is not the last seq + 1.
    NextSeq {
        /// What the store answered.
        next_seq: u64,
        /// The stream's last seq.
        last_seq: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seq = self.seq.unwrap_or_default();
        match &self.kind {
            ProblemKind::NotAscending { previous } => {
                write!(f, "seq {seq} follows seq {previous}; seqs must ascend")
            }
            ProblemKind::OtherRun { run_id } => write!(f, "record names run {run_id:?}"),
            ProblemKind::OtherTenant => f.write_str("record names another tenant"),
            ProblemKind::DuplicateId {
                event_id,
                first_seq,
            } => write!(
                f,
                "event id {event_id:?} is stored twice (also at seq {first_seq})"
            ),
            ProblemKind::SecondMarker { first_seq } => write!(
                f,
                "a second compaction marker (the first is at seq {first_seq})"
            ),
            ProblemKind::MalformedMarker { reason } => {
                write!(f, "malformed compaction marker: {reason}")
            }
            ProblemKind::MarkerThrough {
                compacted_through_seq,
                highest,
            } => write!(
                f,
                "marker at seq {seq} says compacted_through_seq {compacted_through_seq} and its \
                 highest compacted seq is {highest:?}"
            ),
            ProblemKind::MarkerCount {
                pruned_events,
                remembered,
            } => write!(
                f,
                "marker counts {pruned_events} pruned events but remembers {remembered} ids"
            ),
            ProblemKind::MarkerSource { source } => write!(f, "marker source is {source:?}"),
            ProblemKind::SeqRememberedTwice { first, second } => write!(
                f,
                "the marker remembers seq {seq} twice ({first:?} and {second:?})"
            ),
            ProblemKind::IdRememberedTwice {
                event_id,
                first_seq,
            } => write!(
                f,
                "compacted id {event_id:?} is remembered at seqs {first_seq} and {seq}"
            ),
            ProblemKind::CompactedIdLive { event_id, live_seq } => write!(
                f,
                "compacted id {event_id:?} is also live at seq {live_seq}"
            ),
            ProblemKind::LiveAndCompacted => write!(f, "seq {seq} is both live and compacted"),
            ProblemKind::ErasedAbove { erased_through_seq } => write!(
                f,
                "marker at seq {seq} says erased_through_seq {erased_through_seq}, above its own seq"
            ),
            ProblemKind::ErasedSeqHeld { erased_through_seq } => write!(
                f,
                "seq {seq} is held although the run was erased through seq {erased_through_seq}"
            ),
            ProblemKind::Gap { missing } => write!(
                f,
                "{missing} missing seq(s) not covered by a compaction marker, first {seq}"
            ),
            ProblemKind::NextSeq { next_seq, last_seq } => {
                write!(f, "next_seq is {next_seq} but the last seq is {last_seq}")
            }
        }
    }
}

/// What [`check_stream`] found in one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamCheck {
    /// Everything wrong, in the order the records show it; empty when the
    /// stream is sound.
    pub problems: Vec<Problem>,
    /// The highest seq read (0 for no records): what `next_seq` must
    /// exceed by one.
    pub last_seq: u64,
    /// Records read, markers included.
    pub records: usize,
    /// Compaction markers among them.
    pub markers: usize,
    /// Distinct seqs the markers remember.
    pub compacted: usize,
    /// Every id the stream holds with its seq: live ordinary events and the
    /// ids the marker remembers (a marker's own id is not among them). An
    /// id held twice (a problem already) maps to the later seq.
    pub ids: HashMap<String, u64>,
}

impl StreamCheck {
    /// Whether no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Live ordinary events: records that are not markers.
    pub fn live(&self) -> usize {
        self.records - self.markers
    }

    /// The problem with the store answering `next_seq` for this stream,
    /// if any: it must be [`last_seq`](Self::last_seq) + 1.
    pub fn check_next_seq(&self, next_seq: u64) -> Option<Problem> {
        (next_seq != self.last_seq.saturating_add(1)).then_some(Problem {
            seq: None,
            kind: ProblemKind::NextSeq {
                next_seq,
                last_seq: self.last_seq,
            },
        })
    }
}

/// Eight read windows (CONTRACT §6) over a stream read in full as
/// `records`, ascending by seq: the last record, the last two, the first,
/// everything after the first seq, everything before the last, those two
/// bounds together with a limit of two, the three records up to the middle
/// one, and everything after the middle one. A checker reads each window
/// from the store and compares it with [`ReadQuery::apply`] on the full
/// read; an empty read gives the windows at seq 0.
#[must_use]
pub fn sample_windows(records: &[EventRecord]) -> [ReadQuery; 8] {
    let first = records.first().map_or(0, |record| record.seq);
    let last = records.last().map_or(0, |record| record.seq);
    let middle = records
        .get(records.len() / 2)
        .map_or(0, |record| record.seq);
    [
        ReadQuery::tail(1),
        ReadQuery::tail(2),
        ReadQuery::all().limit(1),
        ReadQuery::all().after(first),
        ReadQuery::all().before(last),
        ReadQuery::all().after(first).before(last).limit(2),
        ReadQuery::tail(3).before(middle.saturating_add(1)),
        ReadQuery::all().after(middle),
    ]
}

/// Checks the records of `key`'s stream, read in full and in the order the
/// store answered them; see the [module docs](self) for what is checked.
pub fn check_stream(key: &StreamKey, records: &[EventRecord]) -> StreamCheck {
    let mut check = StreamCheck {
        records: records.len(),
        ..StreamCheck::default()
    };
    let mut report = |seq: u64, kind: ProblemKind| {
        check.problems.push(Problem {
            seq: Some(seq),
            kind,
        });
    };

    let mut live_ids: HashMap<&str, u64> = HashMap::new();
    let mut live_seqs: BTreeSet<u64> = BTreeSet::new();
    let mut compacted: BTreeMap<u64, String> = BTreeMap::new();
    let mut markers = 0;
    let mut marker_seq = None;
    let mut erased_through = 0;
    let mut previous = 0;
    for record in records {
        let seq = record.seq;
        if seq <= previous {
            report(seq, ProblemKind::NotAscending { previous });
        }
        previous = previous.max(seq);
        live_seqs.insert(seq);
        if record.run_id != key.run_id {
            report(
                seq,
                ProblemKind::OtherRun {
                    run_id: record.run_id.as_str().to_owned(),
                },
            );
        }
        if !key.tenant.matches(&record.scope.tenant_context) {
            report(seq, ProblemKind::OtherTenant);
        }
        if let Some(first_seq) = live_ids.insert(record.event_id.as_str(), seq) {
            report(
                seq,
                ProblemKind::DuplicateId {
                    event_id: record.event_id.as_str().to_owned(),
                    first_seq,
                },
            );
        }
        if !record.is_compaction_marker() {
            continue;
        }
        markers += 1;
        if let Some(first_seq) = marker_seq.replace(seq) {
            report(seq, ProblemKind::SecondMarker { first_seq });
        }
        let payload = match marker_payload(record) {
            Ok(payload) => payload,
            Err(err) => {
                report(
                    seq,
                    ProblemKind::MalformedMarker {
                        reason: err.to_string(),
                    },
                );
                continue;
            }
        };
        let highest = payload.compacted_event_ids.iter().map(|id| id.seq).max();
        // An erasure marker remembers no id: its seq is the one it erased
        // through (crate::raw::erasure).
        let erasure_only = highest.is_none() && payload.erased_through_seq == Some(seq);
        if payload.compacted_through_seq != seq || (highest != Some(seq) && !erasure_only) {
            report(
                seq,
                ProblemKind::MarkerThrough {
                    compacted_through_seq: payload.compacted_through_seq,
                    highest,
                },
            );
        }
        if payload.pruned_events != payload.compacted_event_ids.len() as u64 {
            report(
                seq,
                ProblemKind::MarkerCount {
                    pruned_events: payload.pruned_events,
                    remembered: payload.compacted_event_ids.len(),
                },
            );
        }
        if payload.source != COMPACTION_SOURCE {
            report(
                seq,
                ProblemKind::MarkerSource {
                    source: payload.source.clone(),
                },
            );
        }
        if let Some(erased) = payload.erased_through_seq {
            if erased > seq {
                report(
                    seq,
                    ProblemKind::ErasedAbove {
                        erased_through_seq: erased,
                    },
                );
            }
            erased_through = erased_through.max(erased.min(seq));
        }
        for id in &payload.compacted_event_ids {
            let second = id.event_id.as_str().to_owned();
            if let Some(first) = compacted.insert(id.seq, second.clone()) {
                report(id.seq, ProblemKind::SeqRememberedTwice { first, second });
            }
        }
    }

    let mut compacted_ids: HashMap<&str, u64> = HashMap::new();
    for (seq, id) in &compacted {
        if let Some(first_seq) = compacted_ids.insert(id.as_str(), *seq) {
            report(
                *seq,
                ProblemKind::IdRememberedTwice {
                    event_id: id.clone(),
                    first_seq,
                },
            );
        }
        if let Some(live_seq) = live_ids.get(id.as_str()) {
            report(
                *seq,
                ProblemKind::CompactedIdLive {
                    event_id: id.clone(),
                    live_seq: *live_seq,
                },
            );
        }
        if Some(*seq) != marker_seq && live_seqs.contains(seq) {
            report(*seq, ProblemKind::LiveAndCompacted);
        }
    }

    // Walk the occupied seqs, not the range up to the last: a hostile seq
    // near the top of the range must not make the check loop for ages.
    // Seqs a deleted run's marker erased are accounted for, and nothing but
    // that marker may sit at or below them.
    let mut occupied = live_seqs;
    occupied.extend(compacted.keys().copied());
    let (mut expected, mut missing, mut first_gap) = (erased_through.saturating_add(1), 0u64, None);
    for seq in occupied {
        if seq <= erased_through {
            if Some(seq) != marker_seq || compacted.contains_key(&seq) {
                report(
                    seq,
                    ProblemKind::ErasedSeqHeld {
                        erased_through_seq: erased_through,
                    },
                );
            }
            continue;
        }
        if seq > expected {
            first_gap.get_or_insert(expected);
            missing = missing.saturating_add(seq - expected);
        }
        expected = seq.saturating_add(1);
    }
    if let Some(first) = first_gap {
        report(first, ProblemKind::Gap { missing });
    }

    check.markers = markers;
    check.compacted = compacted.len();
    check.last_seq = previous;
    check.ids = records
        .iter()
        .filter(|record| !record.is_compaction_marker())
        .map(|record| (record.event_id.as_str().to_owned(), record.seq))
        .chain(compacted.into_iter().map(|(seq, id)| (id, seq)))
        .collect();
    check
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        EventId, RunId, Tenant,
        raw::compaction::{COMPACTION_EVENT_TYPE, CompactedId, CompactionPayload},
    };

    fn key() -> StreamKey {
        StreamKey::new(tenant(), RunId::new("run").unwrap())
    }

    fn tenant() -> Tenant {
        Tenant::new("acme", "prod", None).unwrap()
    }

    #[test]
    fn a_stream_with_a_problem_is_not_clean() {
        assert!(check_stream(&key(), &[event("a", 1), event("b", 2)]).is_clean());
        assert!(!check_stream(&key(), &[event("a", 1), event("b", 3)]).is_clean());
    }

    #[test]
    fn sample_windows_are_fixed_by_the_first_middle_and_last_seq() {
        let records: Vec<_> = (3..=9).map(|seq| event(&format!("e{seq}"), seq)).collect();
        // Seven records: first 3, middle (index 3) 6, last 9.
        assert_eq!(
            sample_windows(&records),
            [
                ReadQuery::tail(1),
                ReadQuery::tail(2),
                ReadQuery::all().limit(1),
                ReadQuery::all().after(3),
                ReadQuery::all().before(9),
                ReadQuery::all().after(3).before(9).limit(2),
                ReadQuery::tail(3).before(7),
                ReadQuery::all().after(6),
            ]
        );
        assert_eq!(sample_windows(&[])[7], ReadQuery::all().after(0));
    }

    fn event(id: &str, seq: u64) -> EventRecord {
        let mut record = EventRecord::new(
            &tenant(),
            key().run_id,
            EventId::new(id).unwrap(),
            "step",
            1,
        );
        record.seq = seq;
        record
    }

    /// A marker at `seq` remembering `ids` (id, seq), with a sound payload
    /// `edit` may change.
    fn marker(
        seq: u64,
        ids: &[(&str, u64)],
        edit: impl FnOnce(&mut CompactionPayload),
    ) -> EventRecord {
        let mut payload = CompactionPayload {
            compacted_through_seq: seq,
            compacted_through_ms: 1,
            pruned_events: ids.len() as u64,
            compacted_event_ids: ids
                .iter()
                .map(|(id, seq)| CompactedId {
                    event_id: EventId::new(*id).unwrap(),
                    seq: *seq,
                })
                .collect(),
            source: COMPACTION_SOURCE.to_owned(),
            erased_through_seq: None,
        };
        edit(&mut payload);
        let mut record = EventRecord::new(
            &tenant(),
            key().run_id,
            EventId::new(format!("marker-{seq}")).unwrap(),
            COMPACTION_EVENT_TYPE,
            1,
        )
        .with_payload(serde_json::to_value(payload).unwrap());
        record.seq = seq;
        record
    }

    /// The problems found in `records`, as (seq, sentence).
    fn problems(records: &[EventRecord]) -> Vec<(Option<u64>, String)> {
        check_stream(&key(), records)
            .problems
            .iter()
            .map(|problem| (problem.seq, problem.to_string()))
            .collect()
    }

    fn one(seq: u64, text: &str) -> Vec<(Option<u64>, String)> {
        vec![(Some(seq), text.to_owned())]
    }

    #[test]
    fn a_sound_stream_has_no_problem() {
        let records = [
            marker(2, &[("a", 1), ("b", 2)], |_| {}),
            event("c", 3),
            event("d", 4),
        ];
        let check = check_stream(&key(), &records);
        assert!(check.is_clean(), "{:?}", check.problems);
        assert_eq!(
            (
                check.last_seq,
                check.records,
                check.markers,
                check.compacted,
                check.live()
            ),
            (4, 3, 1, 2, 2)
        );
        let mut ids: Vec<(&str, u64)> = check
            .ids
            .iter()
            .map(|(id, seq)| (id.as_str(), *seq))
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, [("a", 1), ("b", 2), ("c", 3), ("d", 4)]);
        assert_eq!(check.check_next_seq(5), None);
        assert!(check_stream(&key(), &[]).is_clean());
    }

    #[test]
    fn seqs_must_ascend() {
        assert_eq!(
            problems(&[event("a", 1), event("b", 2), event("c", 2)]),
            one(2, "seq 2 follows seq 2; seqs must ascend")
        );
        assert_eq!(
            problems(&[event("a", 2), event("b", 1)]),
            one(1, "seq 1 follows seq 2; seqs must ascend")
        );
    }

    #[test]
    fn records_must_belong_to_the_stream() {
        let mut other_run = event("a", 1);
        other_run.run_id = RunId::new("other").unwrap();
        assert_eq!(problems(&[other_run]), one(1, "record names run \"other\""));
        let other = Tenant::new("acme", "staging", None).unwrap();
        let mut other_tenant = event("a", 1);
        other_tenant.scope = crate::Scope::for_tenant(&other);
        assert_eq!(
            problems(&[other_tenant]),
            one(1, "record names another tenant")
        );
    }

    #[test]
    fn ids_must_be_unique() {
        assert_eq!(
            problems(&[event("a", 1), event("a", 2)]),
            one(2, "event id \"a\" is stored twice (also at seq 1)")
        );
    }

    #[test]
    fn one_marker_only() {
        assert_eq!(
            problems(&[
                marker(1, &[("a", 1)], |_| {}),
                marker(2, &[("b", 2)], |_| {})
            ]),
            [
                (
                    Some(2),
                    "a second compaction marker (the first is at seq 1)".to_owned()
                ),
                // The first marker's own seq is remembered by the second.
                (Some(1), "seq 1 is both live and compacted".to_owned()),
            ]
        );
    }

    #[test]
    fn a_marker_payload_must_parse() {
        let mut broken = marker(1, &[("a", 1)], |_| {});
        broken.payload = json!({ "compacted_event_ids": "damaged" });
        let found = problems(&[broken]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, Some(1));
        assert!(
            found[0].1.starts_with("malformed compaction marker: "),
            "{found:?}"
        );
    }

    #[test]
    fn a_marker_sits_at_its_highest_seq() {
        assert_eq!(
            problems(&[marker(2, &[("a", 1), ("b", 2)], |p| p
                .compacted_through_seq =
                3)]),
            one(
                2,
                "marker at seq 2 says compacted_through_seq 3 and its highest compacted seq is Some(2)"
            )
        );
        assert_eq!(
            problems(&[marker(3, &[("a", 1), ("b", 2)], |_| {})]),
            one(
                3,
                "marker at seq 3 says compacted_through_seq 3 and its highest compacted seq is Some(2)"
            )
        );
    }

    #[test]
    fn a_marker_counts_what_it_remembers() {
        assert_eq!(
            problems(&[marker(1, &[("a", 1)], |p| p.pruned_events = 5)]),
            one(1, "marker counts 5 pruned events but remembers 1 ids")
        );
    }

    #[test]
    fn a_marker_names_its_source() {
        assert_eq!(
            problems(&[marker(1, &[("a", 1)], |p| p.source = "elsewhere".to_owned())]),
            one(1, "marker source is \"elsewhere\"")
        );
    }

    #[test]
    fn a_marker_remembers_each_seq_and_id_once() {
        assert_eq!(
            problems(&[marker(2, &[("a", 1), ("b", 1), ("c", 2)], |_| {})]),
            one(1, "the marker remembers seq 1 twice (\"a\" and \"b\")")
        );
        assert_eq!(
            problems(&[marker(2, &[("a", 1), ("a", 2)], |_| {})]),
            one(2, "compacted id \"a\" is remembered at seqs 1 and 2")
        );
    }

    #[test]
    fn what_a_marker_remembers_is_not_live() {
        assert_eq!(
            problems(&[marker(2, &[("a", 1), ("b", 2)], |_| {}), event("a", 3)]),
            one(1, "compacted id \"a\" is also live at seq 3")
        );
        assert_eq!(
            problems(&[event("x", 1), marker(2, &[("a", 1), ("b", 2)], |_| {})]),
            one(1, "seq 1 is both live and compacted")
        );
    }

    #[test]
    fn every_seq_up_to_the_last_is_held() {
        assert_eq!(
            problems(&[event("a", 1), event("b", 4), event("c", 6)]),
            one(
                2,
                "3 missing seq(s) not covered by a compaction marker, first 2"
            )
        );
        assert_eq!(
            problems(&[marker(2, &[("b", 2)], |_| {}), event("c", 3)]),
            one(
                1,
                "1 missing seq(s) not covered by a compaction marker, first 1"
            )
        );
        // A seq near the top of the range is checked without walking it.
        assert_eq!(
            problems(&[event("a", 1), event("b", u64::MAX)]),
            one(
                2,
                &format!(
                    "{} missing seq(s) not covered by a compaction marker, first 2",
                    u64::MAX - 2
                )
            )
        );
    }

    #[test]
    fn an_erased_run_accounts_for_its_seqs_and_holds_nothing_below_them() {
        let erased = |seq, ids: &[(&str, u64)], through| {
            marker(seq, ids, |payload| {
                payload.erased_through_seq = Some(through)
            })
        };
        // The deleted run's marker alone, then with events after it, then
        // merged by a later compaction.
        assert_eq!(problems(&[erased(5, &[], 5)]), vec![]);
        assert_eq!(problems(&[erased(5, &[], 5), event("a", 6)]), vec![]);
        assert_eq!(
            problems(&[erased(7, &[("a", 6), ("b", 7)], 5), event("c", 8)]),
            vec![]
        );
        // Without the erasure, the same marker leaves seqs 1-4 uncovered.
        assert_eq!(
            problems(&[marker(5, &[], |_| {})]),
            vec![
                (
                    Some(5),
                    "marker at seq 5 says compacted_through_seq 5 and its highest compacted \
                     seq is None"
                        .to_owned()
                ),
                (
                    Some(1),
                    "4 missing seq(s) not covered by a compaction marker, first 1".to_owned()
                ),
            ]
        );
        assert_eq!(
            problems(&[erased(5, &[], 6)]),
            vec![
                (
                    Some(5),
                    "marker at seq 5 says compacted_through_seq 5 and its highest compacted \
                     seq is None"
                        .to_owned()
                ),
                (
                    Some(5),
                    "marker at seq 5 says erased_through_seq 6, above its own seq".to_owned()
                ),
            ]
        );
        assert_eq!(
            problems(&[event("a", 2), erased(5, &[], 5)]),
            one(2, "seq 2 is held although the run was erased through seq 5")
        );
        assert_eq!(
            problems(&[erased(7, &[("a", 3), ("b", 7)], 5)]),
            vec![
                (
                    Some(3),
                    "seq 3 is held although the run was erased through seq 5".to_owned()
                ),
                (
                    Some(6),
                    "1 missing seq(s) not covered by a compaction marker, first 6".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn next_seq_is_the_last_plus_one() {
        let check = check_stream(&key(), &[event("a", 1), event("b", 2)]);
        let problem = check.check_next_seq(2).expect("a problem");
        assert_eq!(problem.seq, None);
        assert_eq!(problem.to_string(), "next_seq is 2 but the last seq is 2");
        assert_eq!(check_stream(&key(), &[]).check_next_seq(1), None);
    }
}
