//! The append rules (CONTRACT §1, §2, §4, §5), written once for every backend.
//!
//! A backend first validates the request with its
//! [`Limits`](crate::validate::Limits) (outside any lock), then holds whatever
//! lock or transaction makes its stream state stable, asks [`plan_append`]
//! (or [`plan_append_owned`], which moves the events instead of copying them)
//! what to write, writes [`AppendPlan::new_records`] atomically and answers
//! [`AppendPlan::outcomes`].
//!
//! A backend that commits several requests to one stream together (a
//! group, [`raw::group`](crate::raw::group)) asks [`plan_group`] instead:
//! it plans each request in turn, each seeing what the ones before it
//! write, and answers each request on its own, so that one request's
//! conflict or invalid input refuses that request only.
//!
//! Imports go the same way through
//! [`Limits::check_import`](crate::validate::Limits::check_import) and
//! [`plan_import`], which answers the records still to write.

use std::collections::{HashMap, HashSet};

use crate::{
    AppendOutcome, Error, EventId, EventRecord, Result, RunId, Tenant,
    raw::compaction::{compacted_ids, marker_payload},
    validate::MAX_SEQ,
};

/// What an append request must write and answer.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendPlan {
    /// One outcome per requested event, in request order.
    pub outcomes: Vec<AppendOutcome>,
    /// The events to store, with their seqs assigned and the tenant written
    /// into their scope, ascending by seq and consecutive after the last seq.
    pub new_records: Vec<EventRecord>,
}

impl AppendPlan {
    /// Whether the request writes nothing.
    pub fn is_noop(&self) -> bool {
        self.new_records.is_empty()
    }
}

/// Checks that every event of a request belongs to `run_id`.
///
/// # Errors
/// [`Error::InvalidInput`] naming the first event of another run.
pub fn check_run(run_id: &RunId, events: &[EventRecord]) -> Result<()> {
    match events.iter().find(|event| event.run_id != *run_id) {
        Some(event) => Err(Error::invalid(format!(
            "event {:?} names run {:?} but was appended to run {:?}",
            event.event_id.as_str(),
            event.run_id.as_str(),
            run_id.as_str()
        ))),
        None => Ok(()),
    }
}

/// Plans an append of `events` to `tenant`'s `run_id`, whose last seq is
/// `last_seq` (0 for an empty stream).
///
/// `stored_seq` answers whether an event id is already in the stream, live or
/// compacted, and with which seq. Any `seq` the caller set is ignored. The
/// new records are copies of the events; [`plan_append_owned`] moves them
/// instead.
///
/// # Errors
/// [`Error::InvalidInput`] if an event names another run or has the
/// compaction marker's event type, or if a new event's seq would pass
/// [`MAX_SEQ`]; [`Error::Conflict`] if `expected_last_seq` differs from
/// `last_seq` and some event is new; whatever `stored_seq` returns.
pub fn plan_append(
    tenant: &Tenant,
    run_id: &RunId,
    last_seq: u64,
    events: &[EventRecord],
    expected_last_seq: Option<u64>,
    stored_seq: impl FnMut(&EventId) -> Result<Option<u64>>,
) -> Result<AppendPlan> {
    let Seqs { outcomes, new } =
        plan_seqs(run_id, last_seq, events, expected_last_seq, stored_seq)?;
    let new_records = new
        .into_iter()
        .map(|(index, seq)| assigned(tenant, events[index].clone(), seq))
        .collect();
    Ok(AppendPlan {
        outcomes,
        new_records,
    })
}

/// [`plan_append`] for a request the caller owns: the new records are the
/// request's own events, moved rather than copied. Same rules, same errors.
///
/// # Errors
/// As [`plan_append`].
pub fn plan_append_owned(
    tenant: &Tenant,
    run_id: &RunId,
    last_seq: u64,
    events: Vec<EventRecord>,
    expected_last_seq: Option<u64>,
    stored_seq: impl FnMut(&EventId) -> Result<Option<u64>>,
) -> Result<AppendPlan> {
    let Seqs { outcomes, new } =
        plan_seqs(run_id, last_seq, &events, expected_last_seq, stored_seq)?;
    let mut new_records = Vec::with_capacity(new.len());
    let mut new = new.into_iter().peekable();
    for (index, event) in events.into_iter().enumerate() {
        if let Some((_, seq)) = new.next_if(|&(new_index, _)| new_index == index) {
            new_records.push(assigned(tenant, event, seq));
        }
    }
    Ok(AppendPlan {
        outcomes,
        new_records,
    })
}

/// What a group of append requests to one stream writes and answers.
#[derive(Debug)]
pub struct GroupPlan {
    /// The records the group writes, ascending by seq and consecutive after
    /// the stream's last seq, the requests' new events in request order.
    pub new_records: Vec<EventRecord>,
    /// Each request's answer, in request order: its outcomes, or its own
    /// refusal (a conflict, invalid input), which writes nothing of it.
    pub answers: Vec<Result<Vec<AppendOutcome>>>,
}

impl GroupPlan {
    /// The stream's last seq once the group is written, given `last_seq`
    /// before it.
    pub fn last_seq(&self, last_seq: u64) -> u64 {
        self.new_records
            .last()
            .map_or(last_seq, |record| record.seq)
    }
}

/// Plans a group of append requests to `tenant`'s stream `run_id`, each a
/// request's events and its expected last seq, as if they ran one after
/// another: each request is planned with [`plan_append`] against the last
/// seq and the ids the requests before it planned, and otherwise against
/// `stored_seq` (the stream's ids as stored before the group). A request
/// refused on its own is answered its error and the others go on.
///
/// # Errors
/// None of its own: a request's error (its own, or one `stored_seq`
/// returned for it) is that request's answer.
pub fn plan_group<'a>(
    tenant: &Tenant,
    run_id: &RunId,
    last_seq: u64,
    requests: impl IntoIterator<Item = (&'a [EventRecord], Option<u64>)>,
    mut stored_seq: impl FnMut(&EventId) -> Result<Option<u64>>,
) -> GroupPlan {
    let mut last = last_seq;
    let mut planned: HashMap<EventId, u64> = HashMap::new();
    let mut plan = GroupPlan {
        new_records: Vec::new(),
        answers: Vec::new(),
    };
    for (events, expected_last_seq) in requests {
        let request =
            plan_append(
                tenant,
                run_id,
                last,
                events,
                expected_last_seq,
                |id| match planned.get(id) {
                    Some(seq) => Ok(Some(*seq)),
                    None => stored_seq(id),
                },
            );
        match request {
            Ok(request) => {
                for record in &request.new_records {
                    planned.insert(record.event_id.clone(), record.seq);
                }
                // The plan numbers new records from `last` on.
                last = request.new_records.last().map_or(last, |record| record.seq);
                plan.new_records.extend(request.new_records);
                plan.answers.push(Ok(request.outcomes));
            }
            Err(err) => plan.answers.push(Err(err)),
        }
    }
    plan
}

/// `event` as stored: with its seq, and the tenant written into its scope.
fn assigned(tenant: &Tenant, mut event: EventRecord, seq: u64) -> EventRecord {
    event.seq = seq;
    tenant.stamp(&mut event.scope.tenant_context);
    event
}

/// What [`plan_seqs`] decides, before any record is built.
struct Seqs {
    /// One outcome per requested event, in request order.
    outcomes: Vec<AppendOutcome>,
    /// The events to store as (index in the request, assigned seq),
    /// ascending in both.
    new: Vec<(usize, u64)>,
}

/// The append rules proper: which events are new and which seqs they get.
fn plan_seqs(
    run_id: &RunId,
    last_seq: u64,
    events: &[EventRecord],
    expected_last_seq: Option<u64>,
    mut stored_seq: impl FnMut(&EventId) -> Result<Option<u64>>,
) -> Result<Seqs> {
    check_run(run_id, events)?;
    if let Some(event) = events.iter().find(|event| event.is_compaction_marker()) {
        return Err(Error::invalid(format!(
            "event {:?} has the event type {:?}, which only compaction writes",
            event.event_id.as_str(),
            event.event_type
        )));
    }
    let mut outcomes = Vec::with_capacity(events.len());
    let mut new = Vec::new();
    let mut in_request: HashMap<&EventId, u64> = HashMap::new();
    let mut next = last_seq;
    for (index, event) in events.iter().enumerate() {
        if let Some(&seq) = in_request.get(&event.event_id) {
            outcomes.push(AppendOutcome {
                seq,
                inserted: false,
            });
            continue;
        }
        if let Some(seq) = stored_seq(&event.event_id)? {
            in_request.insert(&event.event_id, seq);
            outcomes.push(AppendOutcome {
                seq,
                inserted: false,
            });
            continue;
        }
        next = match next.checked_add(1).filter(|seq| *seq <= MAX_SEQ) {
            Some(seq) => seq,
            None => {
                return Err(Error::invalid(format!(
                    "run {:?} is full: event {:?} would pass the highest seq {MAX_SEQ}",
                    run_id.as_str(),
                    event.event_id.as_str()
                )));
            }
        };
        in_request.insert(&event.event_id, next);
        new.push((index, next));
        outcomes.push(AppendOutcome {
            seq: next,
            inserted: true,
        });
    }
    if let Some(expected) = expected_last_seq {
        // CONTRACT §5: a request whose events are all stored already is a
        // safe retry and succeeds whatever the stream's position.
        if expected != last_seq && !new.is_empty() {
            return Err(Error::Conflict {
                expected,
                actual: last_seq,
            });
        }
    }
    Ok(Seqs { outcomes, new })
}

/// Checks an exported stream before import, and returns the records a store
/// whose last seq is `last_seq` still lacks (CONTRACT §23).
///
/// Call it after [`Limits::check_import`](crate::validate::Limits::check_import),
/// under the lock or transaction that makes the stream stable. Records at or
/// below `last_seq` must already be stored with the same seq (so importing the
/// same export twice writes nothing). The rest are written with their seqs
/// unchanged, and must keep what append guarantees:
///
/// - no id is stored twice: neither a record's id nor an id a marker
///   remembers may be in the stream already (`stored_seq`), or twice in the
///   records;
/// - no gap: the new seqs, with those the new marker remembers, are exactly
///   `last_seq + 1 ..= top`, and no live event sits at a remembered seq;
/// - at most one marker per stream: a marker is imported only into an empty
///   stream, and at most one per import;
/// - room to append: every seq is below [`MAX_SEQ`].
///
/// # Errors
/// [`Error::InvalidInput`] naming the tenant, run and seq when a rule is
/// broken or the records differ from what the store already holds;
/// [`Error::Corrupt`] for a marker whose payload is malformed; whatever
/// `stored_seq` returns.
pub fn plan_import<'a>(
    tenant: &Tenant,
    run_id: &RunId,
    last_seq: u64,
    records: &'a [EventRecord],
    mut stored_seq: impl FnMut(&EventId) -> Result<Option<u64>>,
) -> Result<&'a [EventRecord]> {
    let refuse = |what: std::fmt::Arguments<'_>| {
        Error::invalid(format!("import of {tenant}:{run_id}: {what}"))
    };
    check_run(run_id, records)?;
    let mut previous = 0;
    let mut seen = HashSet::new();
    let mut markers = 0;
    for record in records {
        if record.seq <= previous {
            return Err(refuse(format_args!(
                "seq {} follows seq {previous}; seqs must ascend",
                record.seq
            )));
        }
        if record.seq >= MAX_SEQ {
            return Err(refuse(format_args!(
                "seq {} leaves no room to append; seqs must be below {MAX_SEQ}",
                record.seq
            )));
        }
        previous = record.seq;
        if !tenant.matches(&record.scope.tenant_context) {
            return Err(refuse(format_args!(
                "record {} names another tenant",
                record.seq
            )));
        }
        if record.is_compaction_marker() {
            markers += 1;
            if markers > 1 {
                return Err(refuse(format_args!(
                    "record {} is a second compaction marker; a stream holds at most one",
                    record.seq
                )));
            }
        }
        let remembered = compacted_ids(record)?;
        for id in std::iter::once(&record.event_id).chain(remembered.iter().map(|id| &id.event_id))
        {
            if !seen.insert(id.clone()) {
                return Err(refuse(format_args!(
                    "event id {:?} appears twice (again at record {})",
                    id.as_str(),
                    record.seq
                )));
            }
        }
    }
    let split = records.partition_point(|record| record.seq <= last_seq);
    for record in &records[..split] {
        if stored_seq(&record.event_id)? != Some(record.seq) {
            return Err(refuse(format_args!(
                "the target already holds seq {} but not event {:?} at it; \
                 the stream differs from the source",
                record.seq,
                record.event_id.as_str()
            )));
        }
    }
    let missing = &records[split..];
    check_new_records(last_seq, missing, &mut stored_seq, refuse)?;
    Ok(missing)
}

/// The rules for the records an import writes: ids new to the stream, seqs
/// gapless after `last_seq`, a marker only into an empty stream.
fn check_new_records(
    last_seq: u64,
    missing: &[EventRecord],
    stored_seq: &mut impl FnMut(&EventId) -> Result<Option<u64>>,
    refuse: impl Fn(std::fmt::Arguments<'_>) -> Error,
) -> Result<()> {
    // Every seq the new records occupy: live events' own, and those a marker
    // remembers (which may repeat among themselves in stores written by the
    // reference, whose merged markers remember their predecessor).
    let mut live = Vec::with_capacity(missing.len());
    let mut remembered = Vec::new();
    let mut erased = 0;
    for record in missing {
        if let Some(seq) = stored_seq(&record.event_id)? {
            return Err(refuse(format_args!(
                "record {} has event id {:?}, which the stream already holds at seq {seq}",
                record.seq,
                record.event_id.as_str()
            )));
        }
        if !record.is_compaction_marker() {
            live.push(record.seq);
            continue;
        }
        if last_seq > 0 {
            return Err(refuse(format_args!(
                "record {} is a compaction marker, which can only be imported into an empty \
                 stream; the target already holds seqs 1 to {last_seq}",
                record.seq
            )));
        }
        let payload = marker_payload(record)?;
        if let Some(through) = payload.erased_through_seq {
            if through > record.seq {
                return Err(refuse(format_args!(
                    "the marker at seq {} says the run was erased through seq {through}, \
                     above its own",
                    record.seq
                )));
            }
            erased = through;
        }
        let ids = payload.compacted_event_ids;
        if !ids.iter().any(|id| id.seq == record.seq) {
            remembered.push(record.seq);
        }
        for id in ids {
            if id.seq == 0 || id.seq > record.seq {
                return Err(refuse(format_args!(
                    "the marker at seq {} remembers event {:?} at seq {}, outside 1 to {}",
                    record.seq,
                    id.event_id.as_str(),
                    id.seq,
                    record.seq
                )));
            }
            if let Some(seq) = stored_seq(&id.event_id)? {
                return Err(refuse(format_args!(
                    "the marker at seq {} remembers event id {:?}, which the stream already \
                     holds at seq {seq}",
                    record.seq,
                    id.event_id.as_str()
                )));
            }
            remembered.push(id.seq);
        }
    }
    remembered.sort_unstable();
    remembered.dedup();
    if let Some(seq) = live
        .iter()
        .find(|seq| remembered.binary_search(seq).is_ok())
    {
        return Err(refuse(format_args!(
            "seq {seq} holds an event and is also remembered by the compaction marker"
        )));
    }
    let mut occupied = live;
    occupied.extend(remembered);
    occupied.sort_unstable();
    // A deleted run's marker accounts for every seq up to the one it erased
    // through; only the erasure marker itself sits there (raw::erasure).
    let mut expected = last_seq.max(erased);
    for seq in occupied {
        if seq <= erased {
            if seq < erased || !erasure_marker_at(missing, seq) {
                return Err(refuse(format_args!(
                    "seq {seq} is held although the run was erased through seq {erased}"
                )));
            }
            continue;
        }
        expected += 1;
        if seq != expected {
            return Err(refuse(format_args!(
                "seq {expected} is missing: the records jump to seq {seq} and no compaction \
                 marker remembers the seqs between"
            )));
        }
    }
    Ok(())
}

/// Whether the record at `seq` among `records` is a compaction marker.
fn erasure_marker_at(records: &[EventRecord], seq: u64) -> bool {
    records
        .iter()
        .any(|record| record.seq == seq && record.is_compaction_marker())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> EventRecord {
        EventRecord::new(
            &Tenant::local(),
            RunId::new("r").unwrap(),
            EventId::new(id).unwrap(),
            "t",
            0,
        )
    }

    #[test]
    fn repeated_ids_in_a_batch_are_stored_once() {
        let events = [event("a"), event("b"), event("a")];
        let plan = plan_append(
            &Tenant::local(),
            &events[0].run_id,
            4,
            &events,
            None,
            |_| Ok(None),
        )
        .unwrap();
        let seqs: Vec<_> = plan.outcomes.iter().map(|o| (o.seq, o.inserted)).collect();
        assert_eq!(seqs, vec![(5, true), (6, true), (5, false)]);
        assert_eq!(plan.new_records.len(), 2);
    }

    #[test]
    fn conflict_unless_everything_is_stored() {
        let events = [event("a")];
        let run = events[0].run_id.clone();
        let err =
            plan_append(&Tenant::local(), &run, 3, &events, Some(2), |_| Ok(None)).unwrap_err();
        assert!(matches!(
            err,
            Error::Conflict {
                expected: 2,
                actual: 3
            }
        ));
        let plan =
            plan_append(&Tenant::local(), &run, 3, &events, Some(2), |_| Ok(Some(1))).unwrap();
        assert!(plan.is_noop());
    }

    // A group plans as its requests would run one after another: a later
    // request sees the ids and the last seq the earlier ones planned, and
    // a request refused on its own writes nothing and stops nothing else.
    #[test]
    fn a_group_plans_its_requests_in_turn() {
        let run = event("a").run_id;
        let first = [event("a"), event("b")];
        let again = [event("b"), event("stored")];
        let stale = [event("c")];
        let after = [event("c")];
        let requests: [(&[EventRecord], Option<u64>); 4] = [
            (&first, Some(3)),
            (&again, Some(3)),
            (&stale, Some(3)),
            (&after, Some(5)),
        ];
        let plan = plan_group(&Tenant::local(), &run, 3, requests, |id| {
            Ok((id.as_str() == "stored").then_some(2))
        });
        let seqs: Vec<u64> = plan.new_records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [4, 5, 6]);
        assert_eq!(plan.last_seq(3), 6);
        let answers: Vec<_> = plan
            .answers
            .iter()
            .map(|answer| match answer {
                Ok(outcomes) => Ok(outcomes.iter().map(|o| (o.seq, o.inserted)).collect()),
                Err(err) => Err(err.to_string()),
            })
            .collect::<Vec<Result<Vec<_>, _>>>();
        assert_eq!(answers[0], Ok(vec![(4, true), (5, true)]));
        // Nothing of it is new: no conflict, the seqs stored and planned.
        assert_eq!(answers[1], Ok(vec![(5, false), (2, false)]));
        assert!(matches!(
            plan.answers[2],
            Err(Error::Conflict {
                expected: 3,
                actual: 5
            })
        ));
        assert_eq!(answers[3], Ok(vec![(6, true)]));
    }

    // The owned planner follows the same rules: stored ids, ids repeated in
    // the request, seqs after the last one, the tenant stamped, conflicts.
    #[test]
    fn owned_plan_matches_borrowed_plan() {
        let tenant = Tenant::new("acme", "prod", Some("eu".to_owned())).unwrap();
        let events = vec![
            event("a"),
            event("stored"),
            event("b"),
            event("a"),
            event("c"),
        ];
        let run = events[0].run_id.clone();
        let stored = |id: &EventId| Ok((id.as_str() == "stored").then_some(2));
        let borrowed = plan_append(&tenant, &run, 7, &events, None, stored).unwrap();
        let owned = plan_append_owned(&tenant, &run, 7, events.clone(), None, stored).unwrap();
        assert_eq!(owned, borrowed);
        let seqs: Vec<_> = owned.outcomes.iter().map(|o| (o.seq, o.inserted)).collect();
        assert_eq!(
            seqs,
            vec![(8, true), (2, false), (9, true), (8, false), (10, true)]
        );
        let new: Vec<_> = owned
            .new_records
            .iter()
            .map(|record| (record.event_id.as_str(), record.seq))
            .collect();
        assert_eq!(new, vec![("a", 8), ("b", 9), ("c", 10)]);
        assert!(
            owned
                .new_records
                .iter()
                .all(|record| tenant.matches(&record.scope.tenant_context))
        );

        let err = plan_append_owned(&tenant, &run, 7, events, Some(6), |_| Ok(None)).unwrap_err();
        assert!(matches!(
            err,
            Error::Conflict {
                expected: 6,
                actual: 7
            }
        ));
    }

    fn at(id: &str, seq: u64) -> EventRecord {
        let mut record = event(id);
        record.seq = seq;
        record
    }

    fn import(last: u64, records: &[EventRecord], stored: &[(&str, u64)]) -> Result<usize> {
        let run = RunId::new("r").unwrap();
        plan_import(&Tenant::local(), &run, last, records, |id| {
            Ok(stored
                .iter()
                .find(|(held, _)| id.as_str() == *held)
                .map(|(_, seq)| *seq))
        })
        .map(<[EventRecord]>::len)
    }

    fn marker(seqs: &[u64]) -> EventRecord {
        let pruned: Vec<_> = seqs
            .iter()
            .map(|seq| at(&format!("m{seq}"), *seq))
            .collect();
        crate::raw::compaction::merge_marker(
            &Tenant::local(),
            &RunId::new("r").unwrap(),
            None,
            &pruned,
            9,
            |_| Ok(false),
        )
        .unwrap()
    }

    fn refused(result: Result<usize>, words: &str) {
        match result {
            Err(Error::InvalidInput { reason }) => {
                assert!(reason.contains(words), "{reason:?} lacks {words:?}");
                assert!(reason.contains("import of local/local:r"), "{reason}");
            }
            other => panic!("expected a refusal naming {words:?}, got {other:?}"),
        }
    }

    #[test]
    fn import_keeps_what_append_guarantees() {
        assert_eq!(import(0, &[at("a", 1), at("b", 2)], &[]).unwrap(), 2);
        assert_eq!(
            import(
                2,
                &[at("a", 1), at("b", 2), at("c", 3)],
                &[("a", 1), ("b", 2)]
            )
            .unwrap(),
            1
        );
        refused(import(0, &[at("a", 2)], &[]), "seq 1 is missing");
        refused(import(1, &[at("b", 3)], &[("a", 1)]), "seq 2 is missing");
        refused(
            import(1, &[at("a", 2)], &[("a", 1)]),
            "already holds at seq 1",
        );
        refused(import(0, &[at("a", MAX_SEQ)], &[]), "leaves no room");
        refused(import(0, &[at("a", u64::MAX)], &[]), "leaves no room");
        refused(import(0, &[at("a", 1), at("a", 2)], &[]), "appears twice");
        // A marker covers the seqs it remembers; events go on after it.
        assert_eq!(import(0, &[marker(&[1, 2]), at("c", 3)], &[]).unwrap(), 2);
        assert_eq!(import(0, &[at("b", 1), marker(&[2])], &[]).unwrap(), 2);
        refused(
            import(0, &[marker(&[2]), at("c", 3)], &[]),
            "seq 1 is missing",
        );
        refused(
            import(0, &[marker(&[1]), marker(&[2])], &[]),
            "second compaction marker",
        );
        refused(
            import(1, &[marker(&[2])], &[("a", 1)]),
            "only be imported into an empty",
        );
        refused(
            import(0, &[marker(&[1, 2]), at("m1", 3)], &[]),
            "appears twice",
        );
    }

    /// A marker remembering ids at `seqs` whose list is then rewritten to
    /// claim one of them at `claimed` instead.
    fn marker_claiming(seqs: &[u64], claimed: u64) -> EventRecord {
        let mut record = marker(seqs);
        let mut payload = crate::raw::compaction::marker_payload(&record).unwrap();
        payload.compacted_event_ids[0].seq = claimed;
        record.payload = serde_json::to_value(payload).unwrap();
        record
    }

    #[test]
    fn an_imported_marker_remembers_ids_only_from_seq_1_to_its_own() {
        assert_eq!(import(0, &[marker_claiming(&[1, 2], 1)], &[]).unwrap(), 1);
        refused(
            import(0, &[marker_claiming(&[1, 2], 0)], &[]),
            "remembers event \"m1\" at seq 0, outside 1 to 2",
        );
        refused(
            import(0, &[marker_claiming(&[1, 2], 3)], &[]),
            "remembers event \"m1\" at seq 3, outside 1 to 2",
        );
    }

    /// A marker that erased the run through `through` and remembers `seqs`.
    fn erased(through: u64, seqs: &[u64]) -> EventRecord {
        let run = RunId::new("r").unwrap();
        let mut record = crate::raw::erasure::erasure_marker(&Tenant::local(), &run, through);
        if !seqs.is_empty() {
            let pruned: Vec<_> = seqs
                .iter()
                .map(|seq| at(&format!("m{seq}"), *seq))
                .collect();
            record = crate::raw::compaction::merge_marker(
                &Tenant::local(),
                &run,
                Some(&record),
                &pruned,
                9,
                |_| Ok(false),
            )
            .unwrap();
        }
        record
    }

    #[test]
    fn an_erased_run_imports_with_its_seqs_and_nothing_below_them() {
        // A deleted run alone, then appended to, then compacted since.
        assert_eq!(import(0, &[erased(4, &[])], &[]).unwrap(), 1);
        assert_eq!(import(0, &[erased(4, &[]), at("a", 5)], &[]).unwrap(), 2);
        assert_eq!(
            import(0, &[erased(4, &[5, 6]), at("a", 7)], &[]).unwrap(),
            2
        );
        // Seqs it erased hold nothing else; seqs above it are still gapless.
        refused(
            import(0, &[erased(4, &[3, 5])], &[]),
            "seq 3 is held although the run was erased through seq 4",
        );
        refused(
            import(0, &[erased(4, &[4, 5])], &[]),
            "seq 4 is held although the run was erased through seq 4",
        );
        refused(import(0, &[erased(4, &[6])], &[]), "seq 5 is missing");
        refused(
            import(0, &[erased(4, &[]), at("a", 6)], &[]),
            "seq 5 is missing",
        );
        let mut above = erased(4, &[]);
        let mut payload = crate::raw::compaction::marker_payload(&above).unwrap();
        payload.erased_through_seq = Some(5);
        above.payload = serde_json::to_value(payload).unwrap();
        refused(
            import(0, &[above], &[]),
            "erased through seq 5, above its own",
        );
    }

    #[test]
    fn append_never_passes_the_highest_seq() {
        let events = [event("a"), event("b")];
        let run = events[0].run_id.clone();
        let plan = plan_append(
            &Tenant::local(),
            &run,
            MAX_SEQ - 1,
            &events[..1],
            None,
            |_| Ok(None),
        )
        .unwrap();
        assert_eq!(plan.outcomes[0].seq, MAX_SEQ);
        let err = plan_append(&Tenant::local(), &run, MAX_SEQ - 1, &events, None, |_| {
            Ok(None)
        })
        .unwrap_err();
        assert!(err.to_string().contains("is full"), "{err}");
        assert!(
            plan_append(
                &Tenant::local(),
                &run,
                u64::MAX,
                &events[..1],
                None,
                |_| Ok(None)
            )
            .is_err()
        );
    }
}
