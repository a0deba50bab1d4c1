//! `verify`: a store-wide consistency check.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Result, bail};
use runstore::{
    EventLog as _, EventRecord, ReadQuery, SnapshotStore as _, Store, StreamKey,
    compaction::{COMPACTION_SOURCE, marker_payload},
};
use serde::Serialize;

use crate::{Ctx, commands::migrate::PAGE};

/// One thing found wrong.
#[derive(Debug, Serialize)]
struct Problem {
    stream: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    problem: String,
}

/// The closing line of the report.
#[derive(Debug, Default, Serialize)]
struct Summary {
    streams: usize,
    records: usize,
    markers: usize,
    compacted_ids: usize,
    snapshot_streams: usize,
    snapshots: usize,
    problems: usize,
    ok: bool,
}

/// Checks every stream and snapshot of `--store`; prints each problem, then
/// a summary; fails (exit 1) when there is any problem.
pub async fn run(ctx: &Ctx) -> Result<()> {
    let store = ctx.open_store().await?;
    let mut out = ctx.output();
    let mut summary = Summary::default();
    let mut problems = Vec::new();

    let streams = store.streams().await?;
    summary.streams = streams.len();
    let mut runs_by_tenant: BTreeMap<_, BTreeSet<_>> = BTreeMap::new();
    for key in &streams {
        runs_by_tenant
            .entry(key.tenant.clone())
            .or_default()
            .insert(key.run_id.clone());
        match read_all(&store, key).await {
            Ok(records) => check_stream(&store, key, &records, &mut summary, &mut problems).await,
            Err(err) => problems.push(problem(key, None, format!("unreadable: {err:#}"))),
        }
    }
    for (tenant, runs) in &runs_by_tenant {
        match store.list_runs(tenant).await {
            Ok(listed) => {
                let listed: BTreeSet<_> = listed.into_iter().collect();
                for run in runs.difference(&listed) {
                    problems.push(Problem {
                        stream: format!("{tenant}:{run}"),
                        seq: None,
                        problem: "the stream is missing from the tenant's run list".to_owned(),
                    });
                }
            }
            Err(err) => problems.push(Problem {
                stream: tenant.to_string(),
                seq: None,
                problem: format!("listing runs failed: {err:#}"),
            }),
        }
    }

    let snapshot_streams = store.snapshot_streams().await?;
    summary.snapshot_streams = snapshot_streams.len();
    for key in &snapshot_streams {
        match store.list(&key.tenant, &key.run_id, None).await {
            Ok(snapshots) => {
                summary.snapshots += snapshots.len();
                for snapshot in &snapshots {
                    if snapshot.run_id != key.run_id
                        || !key.tenant.matches(&snapshot.scope.tenant_context)
                    {
                        problems.push(problem(
                            key,
                            Some(snapshot.seq),
                            format!(
                                "snapshot {:?} names another run or tenant",
                                snapshot.snapshot_id.as_str()
                            ),
                        ));
                    }
                    match store
                        .get(&key.tenant, &key.run_id, &snapshot.snapshot_id)
                        .await
                    {
                        Ok(Some(got)) if got == *snapshot => {}
                        Ok(_) => problems.push(problem(
                            key,
                            Some(snapshot.seq),
                            format!(
                                "snapshot {:?} is listed but get returns something else",
                                snapshot.snapshot_id.as_str()
                            ),
                        )),
                        Err(err) => problems.push(problem(
                            key,
                            Some(snapshot.seq),
                            format!(
                                "snapshot {:?} is unreadable: {err:#}",
                                snapshot.snapshot_id.as_str()
                            ),
                        )),
                    }
                }
            }
            Err(err) => problems.push(problem(key, None, format!("snapshots unreadable: {err:#}"))),
        }
    }

    summary.problems = problems.len();
    summary.ok = problems.is_empty();
    for found in &problems {
        out.emit(found)?;
    }
    out.flush()?;
    out.emit(&summary)?;
    out.flush()?;
    if !summary.ok {
        bail!("verify found {} problem(s)", summary.problems);
    }
    Ok(())
}

fn problem(key: &StreamKey, seq: Option<u64>, problem: String) -> Problem {
    Problem {
        stream: key.to_string(),
        seq,
        problem,
    }
}

async fn read_all(store: &Store, key: &StreamKey) -> runstore::Result<Vec<EventRecord>> {
    let mut all = Vec::new();
    loop {
        let query = ReadQuery {
            after_seq: all.last().map(|record: &EventRecord| record.seq),
            limit: Some(PAGE),
            ..ReadQuery::default()
        };
        let page = store.read(&key.tenant, &key.run_id, query).await?;
        let done = page.len() < PAGE;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

/// The checks of one stream (CONTRACT §1-§3, §7, §9): records belong to it,
/// seqs ascend, ids are unique, the marker is consistent, and every seq up
/// to the last is either live or remembered by the marker. A marker's own
/// event id is not checked: markers imported from the reference carry the
/// reference's ids.
async fn check_stream(
    store: &Store,
    key: &StreamKey,
    records: &[EventRecord],
    summary: &mut Summary,
    problems: &mut Vec<Problem>,
) {
    summary.records += records.len();
    let mut report = |seq: Option<u64>, text: String| problems.push(problem(key, seq, text));

    let mut live_ids: HashMap<&str, u64> = HashMap::new();
    let mut live_seqs: BTreeSet<u64> = BTreeSet::new();
    let mut compacted: BTreeMap<u64, String> = BTreeMap::new();
    let mut marker_seq = None;
    let mut previous = 0;
    for record in records {
        let seq = record.seq;
        if seq <= previous {
            report(
                Some(seq),
                format!("seq {seq} follows seq {previous}; seqs must ascend"),
            );
        }
        previous = previous.max(seq);
        live_seqs.insert(seq);
        if record.run_id != key.run_id {
            report(
                Some(seq),
                format!("record names run {:?}", record.run_id.as_str()),
            );
        }
        if !key.tenant.matches(&record.scope.tenant_context) {
            report(Some(seq), "record names another tenant".to_owned());
        }
        if let Some(first) = live_ids.insert(record.event_id.as_str(), seq) {
            report(
                Some(seq),
                format!(
                    "event id {:?} is stored twice (also at seq {first})",
                    record.event_id.as_str()
                ),
            );
        }
        if !record.is_compaction_marker() {
            continue;
        }
        summary.markers += 1;
        if let Some(other) = marker_seq.replace(seq) {
            report(
                Some(seq),
                format!("a second compaction marker (the first is at seq {other})"),
            );
        }
        let payload = match marker_payload(record) {
            Ok(payload) => payload,
            Err(err) => {
                report(Some(seq), format!("malformed compaction marker: {err}"));
                continue;
            }
        };
        let max = payload.compacted_event_ids.iter().map(|id| id.seq).max();
        if payload.compacted_through_seq != seq || max != Some(seq) {
            report(
                Some(seq),
                format!(
                    "marker at seq {seq} says compacted_through_seq {} and its highest compacted seq is {max:?}",
                    payload.compacted_through_seq
                ),
            );
        }
        if payload.pruned_events != payload.compacted_event_ids.len() as u64 {
            report(
                Some(seq),
                format!(
                    "marker counts {} pruned events but remembers {} ids",
                    payload.pruned_events,
                    payload.compacted_event_ids.len()
                ),
            );
        }
        if payload.source != COMPACTION_SOURCE {
            report(Some(seq), format!("marker source is {:?}", payload.source));
        }
        for id in &payload.compacted_event_ids {
            if let Some(other) = compacted.insert(id.seq, id.event_id.as_str().to_owned()) {
                report(
                    Some(id.seq),
                    format!(
                        "the marker remembers seq {} twice ({other:?} and {:?})",
                        id.seq,
                        id.event_id.as_str()
                    ),
                );
            }
        }
    }
    summary.compacted_ids += compacted.len();

    let mut compacted_ids: HashMap<&str, u64> = HashMap::new();
    for (seq, id) in &compacted {
        if let Some(other) = compacted_ids.insert(id.as_str(), *seq) {
            report(
                Some(*seq),
                format!("compacted id {id:?} is remembered at seqs {other} and {seq}"),
            );
        }
        if let Some(live) = live_ids.get(id.as_str()) {
            report(
                Some(*seq),
                format!("compacted id {id:?} is also live at seq {live}"),
            );
        }
        if Some(*seq) != marker_seq && live_seqs.contains(seq) {
            report(Some(*seq), format!("seq {seq} is both live and compacted"));
        }
    }

    let last = previous;
    // Walk the occupied seqs, not the range up to `last`: a hostile seq near
    // the top of the range must not make verify loop for ages.
    let mut occupied = live_seqs.clone();
    occupied.extend(compacted.keys().copied());
    let (mut expected, mut missing, mut first_gap) = (1u64, 0u64, None);
    for seq in occupied {
        if seq > expected {
            first_gap.get_or_insert(expected);
            missing = missing.saturating_add(seq - expected);
        }
        expected = seq.saturating_add(1);
    }
    if let Some(first) = first_gap {
        report(
            Some(first),
            format!("{missing} missing seq(s) not covered by a compaction marker, first {first}"),
        );
    }

    match store.next_seq(&key.tenant, &key.run_id).await {
        Ok(next) if next == last + 1 => {}
        Ok(next) => report(
            None,
            format!("next_seq is {next} but the last seq is {last}"),
        ),
        Err(err) => report(None, format!("next_seq failed: {err:#}")),
    }
}
