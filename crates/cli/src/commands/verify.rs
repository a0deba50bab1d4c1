//! `verify`: a store-wide consistency check.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};
use runstore::{
    EventLog as _, EventRecord, ReadQuery, SnapshotStore as _, Store, StreamKey,
    core::raw::{check, erasure::is_erased},
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
    // Each tenant's runs, and its deleted runs (CONTRACT §27), which hold
    // only their erasure marker and must not be listed.
    let mut runs_by_tenant: BTreeMap<_, (BTreeSet<_>, BTreeSet<_>)> = BTreeMap::new();
    for key in &streams {
        let (runs, deleted) = runs_by_tenant.entry(key.tenant.clone()).or_default();
        match read_all(&store, key).await {
            Ok(records) => {
                if is_erased(&records).unwrap_or(false) {
                    deleted.insert(key.run_id.clone());
                } else {
                    runs.insert(key.run_id.clone());
                }
                check_stream(&store, key, &records, &mut summary, &mut problems).await;
            }
            Err(err) => {
                runs.insert(key.run_id.clone());
                problems.push(problem(key, None, format!("unreadable: {err:#}")));
            }
        }
    }
    for (tenant, (runs, deleted)) in &runs_by_tenant {
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
                for run in deleted.intersection(&listed) {
                    problems.push(Problem {
                        stream: format!("{tenant}:{run}"),
                        seq: None,
                        problem: "the run was deleted but the tenant's run list names it"
                            .to_owned(),
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

/// Every record of `key`'s stream, read a page at a time.
pub(crate) async fn read_all(store: &Store, key: &StreamKey) -> runstore::Result<Vec<EventRecord>> {
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

/// The checks of one stream (CONTRACT §1-§3, §7, §9), by the shared
/// stream checker (`runstore_core::raw::check`), and its `next_seq`.
async fn check_stream(
    store: &Store,
    key: &StreamKey,
    records: &[EventRecord],
    summary: &mut Summary,
    problems: &mut Vec<Problem>,
) {
    let check = check::check_stream(key, records);
    summary.records += check.records;
    summary.markers += check.markers;
    summary.compacted_ids += check.compacted;
    for found in &check.problems {
        problems.push(problem(key, found.seq, found.to_string()));
    }
    match store.next_seq(&key.tenant, &key.run_id).await {
        Ok(next) => {
            if let Some(found) = check.check_next_seq(next) {
                problems.push(problem(key, found.seq, found.to_string()));
            }
        }
        Err(err) => problems.push(problem(key, None, format!("next_seq failed: {err:#}"))),
    }
}
