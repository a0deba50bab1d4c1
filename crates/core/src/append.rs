//! The append rules (CONTRACT §1, §2, §4, §5), written once for every backend.
//!
//! A backend holds whatever lock or transaction makes its stream state stable,
//! asks [`plan_append`] what to write, writes [`AppendPlan::new_records`]
//! atomically and answers [`AppendPlan::outcomes`].

use std::collections::HashMap;

use crate::{AppendOutcome, Error, EventId, EventRecord, Result, RunId, Tenant};

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
/// compacted, and with which seq. Any `seq` the caller set is ignored.
///
/// # Errors
/// [`Error::InvalidInput`] if an event names another run or has the
/// compaction marker's event type; [`Error::Conflict`]
/// if `expected_last_seq` differs from `last_seq` and some event is new;
/// whatever `stored_seq` returns.
pub fn plan_append(
    tenant: &Tenant,
    run_id: &RunId,
    last_seq: u64,
    events: &[EventRecord],
    expected_last_seq: Option<u64>,
    mut stored_seq: impl FnMut(&EventId) -> Result<Option<u64>>,
) -> Result<AppendPlan> {
    check_run(run_id, events)?;
    if let Some(event) = events.iter().find(|event| event.is_compaction_marker()) {
        return Err(Error::invalid(format!(
            "event {:?} has the event type {:?}, which only compaction writes",
            event.event_id.as_str(),
            event.event_type
        )));
    }
    let mut outcomes = Vec::with_capacity(events.len());
    let mut new_records = Vec::new();
    let mut in_request: HashMap<&EventId, u64> = HashMap::new();
    let mut next = last_seq;
    for event in events {
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
        next += 1;
        let mut record = event.clone();
        record.seq = next;
        tenant.stamp(&mut record.scope.tenant_context);
        in_request.insert(&event.event_id, next);
        new_records.push(record);
        outcomes.push(AppendOutcome {
            seq: next,
            inserted: true,
        });
    }
    if let Some(expected) = expected_last_seq {
        // CONTRACT §5: a request whose events are all stored already is a
        // safe retry and succeeds whatever the stream's position.
        if expected != last_seq && !new_records.is_empty() {
            return Err(Error::Conflict {
                expected,
                actual: last_seq,
            });
        }
    }
    Ok(AppendPlan {
        outcomes,
        new_records,
    })
}

/// Checks an exported stream before import, and returns the records a store
/// whose last seq is `last_seq` still lacks.
///
/// Records at or below `last_seq` must already be stored with the same seq
/// (so importing the same export twice writes nothing); the rest are written
/// with their seqs unchanged.
///
/// # Errors
/// [`Error::InvalidInput`] when the records are not one stream in strictly
/// ascending seq order, or differ from what the store already holds.
pub fn plan_import<'a>(
    tenant: &Tenant,
    run_id: &RunId,
    last_seq: u64,
    records: &'a [EventRecord],
    mut stored_seq: impl FnMut(&EventId) -> Result<Option<u64>>,
) -> Result<&'a [EventRecord]> {
    check_run(run_id, records)?;
    let mut previous = 0;
    let mut seen = std::collections::HashSet::new();
    for record in records {
        if record.seq <= previous {
            return Err(Error::invalid(format!(
                "import of {tenant}:{run_id}: seq {} follows seq {previous}; seqs must ascend",
                record.seq
            )));
        }
        previous = record.seq;
        if !tenant.matches(&record.scope.tenant_context) {
            return Err(Error::invalid(format!(
                "import of {tenant}:{run_id}: record {} names another tenant",
                record.seq
            )));
        }
        let remembered = crate::compaction::compacted_ids(record)?;
        for id in std::iter::once(&record.event_id).chain(remembered.iter().map(|id| &id.event_id))
        {
            if !seen.insert(id.clone()) {
                return Err(Error::invalid(format!(
                    "import of {tenant}:{run_id}: event id {:?} appears twice",
                    id.as_str()
                )));
            }
        }
    }
    let split = records.partition_point(|record| record.seq <= last_seq);
    for record in &records[..split] {
        if stored_seq(&record.event_id)? != Some(record.seq) {
            return Err(Error::invalid(format!(
                "import of {tenant}:{run_id}: the target already holds seq {} but not event {:?} at it; \
                 the stream differs from the source",
                record.seq,
                record.event_id.as_str()
            )));
        }
    }
    Ok(&records[split..])
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
}
