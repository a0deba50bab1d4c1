//! Maintenance: compaction and snapshot prune, in steps of a bounded amount
//! of work.
//!
//! [`Writer::run_maintenance`] runs a task on the first streams of a list
//! in one transaction, a step of [`STEP_WORK`] after another while no other
//! job waits in the queue, up to the steps the caller allows (the core's
//! "Several steps in one commit"), and, should that fail, on the first
//! stream alone, one step, so that only the streams that fail are reported
//! (CONTRACT §25). [`compact_stream`] and [`prune_stream`] are the work on
//! one stream inside that transaction. A stream with more pruned events
//! than the step has left is split over several steps (the core's "Steps
//! within one stream", [`stream_step_events`]): the next step of the
//! transaction goes on with it, or the caller offers it again until it is
//! done. Within one transaction such a stream's marker is written once
//! (the core's "Several steps in one commit"): a step that leaves the
//! stream unfinished carries it to the next ([`Carried`]), and the step
//! that finishes it, or the transaction before it commits, writes the
//! marker ([`write_marker`]).

use std::{collections::HashSet, sync::Arc};

use runstore_core::{
    EventRecord, MaintenanceReport, Result, SnapshotRecord, StreamKey,
    raw::compaction::{
        COMPACTION_ID_PREFIX, CompactionPolicy, merge_marker, remembered_ids, stream_step_events,
    },
    raw::snapshots::prune_selection,
};
use sqlx::{Connection, Row as _, SqliteConnection};

use super::{
    Maintenance, Writer, delay_commit,
    retry::{Fail, Replan, into_error, retrying},
    rows::{Commit, EventRow, InsertSql, insert_compacted_ids, insert_rows},
    writes_waiting,
};
use crate::{
    error::SqliteError,
    schema::{self, bind_stream, to_sql_int},
};

/// How much one maintenance step does at most before its transaction
/// commits and lets the writes queued meanwhile go first (or, with none
/// queued, goes on with the next step): events pruned (compaction); for
/// prune, per stream its listing, each snapshot read and each deleted. A
/// compaction takes the pruned events of a large stream over several steps
/// ([`stream_step_events`]); a prune never splits a stream, so one with
/// more snapshots is a step of its own.
pub(crate) const STEP_WORK: usize = 256;

/// What a maintenance transaction did: per stream it took, in order, the
/// count for the report (events pruned, snapshots deleted; one count for a
/// stream its steps went on with), and whether the last one is done. A
/// stream left unfinished is offered again first.
#[derive(Debug, Default)]
struct Progress {
    counts: Vec<usize>,
    last_done: bool,
}

impl Progress {
    /// How many streams are done: every stream taken, but the last one
    /// when it is unfinished. 0 means the one stream taken made progress
    /// and must be offered again.
    fn finished(&self) -> usize {
        self.counts.len() - usize::from(!self.last_done && !self.counts.is_empty())
    }
}

/// What a maintenance job answers.
#[derive(Debug)]
pub(crate) struct Maintained {
    /// The streams' counts and failures.
    pub(crate) report: MaintenanceReport,
    /// How many of the offered streams are done ([`Progress::finished`]):
    /// the first one left unfinished is offered again.
    pub(crate) finished: usize,
    /// Whether the job's transaction failed and its first stream ran again
    /// alone: the caller then goes on one step per transaction, so that a
    /// stream further on that fails too rolls back one step's work, not up
    /// to [`STEPS_PER_COMMIT`](runstore_core::raw::compaction::STEPS_PER_COMMIT).
    pub(crate) failed_over: bool,
}

/// One stream's work inside a transaction.
struct StreamWork {
    /// Events pruned or snapshots deleted (the report's count).
    removed: usize,
    /// What it cost against [`STEP_WORK`].
    work: usize,
    /// Whether the stream is done; `false` leaves more pruned events for
    /// the next step.
    done: bool,
}

impl Writer {
    /// Runs `task` on the first of `streams`, in order, in one transaction
    /// of up to `steps` steps of [`STEP_WORK`] ([`Writer::try_maintain`]);
    /// answers the report and how many streams are done. Each stream is its
    /// own unit (CONTRACT §25): should the transaction fail, the first
    /// stream runs again alone, one step, so that only a stream that fails
    /// alone is reported, and the caller goes on after it. A failure of the
    /// store itself ([`Fail::is_store_wide`]) ends the pass.
    pub(super) async fn run_maintenance(
        &mut self,
        task: &Maintenance,
        streams: &[StreamKey],
        steps: usize,
    ) -> Result<Maintained> {
        let mut report = MaintenanceReport::default();
        let action = task.action();
        let fail = match retrying!(
            self,
            action,
            Replan::No,
            self.try_maintain(task, streams, steps).await
        ) {
            Ok(progress) => {
                for (stream, count) in streams.iter().zip(&progress.counts) {
                    report.record(stream, Ok(*count));
                }
                return Ok(Maintained {
                    report,
                    finished: progress.finished(),
                    failed_over: false,
                });
            }
            Err(fail) => fail,
        };
        if fail.is_store_wide() {
            return Err(into_error(fail));
        }
        let Some(first) = streams.first() else {
            return Ok(Maintained {
                report,
                finished: 0,
                failed_over: true,
            });
        };
        let mut finished = 1;
        if streams.len() == 1 && steps == 1 {
            report.record(first, Err(into_error(fail)));
        } else {
            match retrying!(
                self,
                action,
                Replan::No,
                self.try_maintain(task, std::slice::from_ref(first), 1)
                    .await
            ) {
                Ok(progress) => {
                    report.record(first, Ok(progress.counts.iter().sum()));
                    finished = progress.finished();
                }
                Err(fail) if fail.is_store_wide() => return Err(into_error(fail)),
                Err(fail) => report.record(first, Err(into_error(fail))),
            }
        }
        Ok(Maintained {
            report,
            finished,
            failed_over: true,
        })
    }

    /// Runs `task` on the first of `streams` in one transaction, a step of
    /// [`STEP_WORK`] after another, up to `steps` of them while no other
    /// job waits (the core's "Several steps in one commit"); returns what
    /// it did to each stream it took. On failure the transaction is rolled
    /// back.
    async fn try_maintain(
        &mut self,
        task: &Maintenance,
        streams: &[StreamKey],
        steps_at_most: usize,
    ) -> std::result::Result<Progress, Fail> {
        let path = self.path.clone();
        let mut tx = self
            .conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|err| SqliteError::driver(&path, "begin a maintenance transaction", err))?;
        let mut progress = Progress::default();
        let mut work = 0;
        let mut steps = 1;
        let mut wrote_records = false;
        let mut carried = None;
        let mut next = 0;
        while let Some(stream) = streams.get(next) {
            if let Maintenance::Compact(_) = task {
                self.last_seqs.remove(stream);
            }
            let budget = STEP_WORK.saturating_sub(work);
            let done = match *task {
                Maintenance::Compact(policy) => {
                    compact_stream(
                        &mut tx,
                        &self.insert_sql,
                        &path,
                        stream,
                        &policy,
                        budget,
                        &mut carried,
                    )
                    .await?
                }
                Maintenance::Prune {
                    retention_ms,
                    keep_last_per_run,
                    now_ms,
                } => {
                    prune_stream(&mut tx, &path, stream, |ordered| {
                        prune_selection(ordered, retention_ms, keep_last_per_run, now_ms)
                    })
                    .await?
                }
            };
            // A compaction that pruned events wrote a marker, which took a
            // feed position.
            wrote_records |= matches!(task, Maintenance::Compact(_)) && done.removed > 0;
            // A stream split over steps of this transaction keeps one count.
            match progress.counts.get_mut(next) {
                Some(count) => *count += done.removed,
                None => progress.counts.push(done.removed),
            }
            progress.last_done = done.done;
            work += done.work;
            if done.done {
                next += 1;
            }
            if work >= STEP_WORK || !done.done {
                // The step is spent: the next one goes on in this
                // transaction while no write waits (the core's "Several
                // steps in one commit"), from where this one left off.
                if steps >= steps_at_most || writes_waiting(&self.queued) {
                    break;
                }
                steps += 1;
                work = 0;
            }
        }
        // A stream the last step carried gets its marker before the
        // commit.
        if let (Some(state), Maintenance::Compact(policy)) = (carried.take(), task) {
            write_marker(&mut tx, &self.insert_sql, &path, policy, &state).await?;
        }
        if wrote_records {
            delay_commit(self.feed.commit_delay).await;
        }
        tx.commit()
            .await
            .map_err(|err| SqliteError::driver(&path, "commit a maintenance transaction", err))?;
        if wrote_records {
            self.records_committed();
        }
        Ok(progress)
    }
}

/// What the steps of a stream's compaction taken so far in one transaction
/// carry to the next: the core's "Several steps in one commit" lets a step
/// that leaves its stream unfinished delete its pruned events without
/// writing the marker, which the stream's last step in the transaction
/// writes once ([`write_marker`]).
pub(super) struct Carried {
    stream: StreamKey,
    floor: Option<u64>,
    /// The stream's marker as the transaction found it (deleted by the
    /// first step).
    old_marker: Option<EventRecord>,
    /// The ids in the marker namespace the stream's ordinary events hold.
    held: HashSet<String>,
    /// Every event the steps pruned, ascending by seq.
    pruned: Vec<EventRecord>,
}

impl Carried {
    /// The ids the stream's marker would remember were it written now.
    fn remembered(&self) -> usize {
        remembered_ids(self.old_marker.as_ref()) + self.pruned.len()
    }
}

/// Compacts one stream inside the caller's transaction (CONTRACT §8-§11):
/// re-reads its snapshot floor, candidates and marker, merges the marker and
/// swaps it in. Prunes the stream's first [`stream_step_events`] pruned
/// events by seq (`budget` is what the step has left), and says
/// whether more are left for the next step. A stream the step before left
/// unfinished goes on from `carried`; one this step leaves unfinished is
/// left there, its marker unwritten (the caller writes it before the
/// commit, [`write_marker`]).
async fn compact_stream(
    conn: &mut SqliteConnection,
    insert_sql: &InsertSql,
    path: &Arc<str>,
    stream: &StreamKey,
    policy: &CompactionPolicy,
    budget: usize,
    carried: &mut Option<Carried>,
) -> std::result::Result<StreamWork, Fail> {
    let (tenant, run_id) = (&stream.tenant, &stream.run_id);
    let run = run_id.as_str();
    let db = |action| move |err| SqliteError::driver_at(path, action, stream, err);
    let went_on = carried.take_if(|state| state.stream == *stream);
    let first_step = went_on.is_none();
    let mut state = match went_on {
        Some(state) => state,
        None => {
            let floor: Option<i64> = bind_stream(sqlx::query(schema::SNAPSHOT_FLOOR), tenant, run)
                .fetch_one(&mut *conn)
                .await
                .map_err(db("read the snapshot floor"))?
                .try_get(0)
                .map_err(db("read the snapshot floor"))?;
            let floor = floor
                .map(|seq| {
                    schema::from_sql_int(seq, || {
                        format!("sqlite store {path}: snapshot seq of {stream}")
                    })
                })
                .transpose()?;
            Carried {
                stream: stream.clone(),
                floor,
                old_marker: None,
                held: HashSet::new(),
                pruned: Vec::new(),
            }
        }
    };
    // One more than a step takes, to learn whether the stream is done: a
    // carried stream's step knows how many it takes; a first step learns
    // it from the marker, read only when there is something to prune.
    let budget = budget.max(1);
    let first_limit = if first_step {
        budget
    } else {
        stream_step_events(budget, state.remembered())
    };
    let mut pruned = candidates(
        conn,
        path,
        stream,
        policy,
        state.floor,
        first_limit.saturating_add(1),
    )
    .await?;
    if pruned.is_empty() {
        // A carried stream has more (its last step said so); should it
        // not, its marker is written all the same.
        if !first_step {
            write_marker(conn, insert_sql, path, policy, &state).await?;
        }
        return Ok(StreamWork {
            removed: 0,
            work: 0,
            done: true,
        });
    }
    if first_step {
        state.old_marker = bind_stream(sqlx::query(schema::MARKER), tenant, run)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db("read the compaction marker"))?
            .map(|row| schema::parse_event_row(&row, path, (tenant, run_id)))
            .transpose()?;
        // The ids in the marker namespace the stream's ordinary events
        // hold, live or compacted: the new marker must not take one of
        // them. The steps move ids from events to compacted ids, so the
        // set holds for the steps that follow.
        state.held = bind_stream(sqlx::query(schema::HELD_MARKER_IDS), tenant, run)
            .bind(COMPACTION_ID_PREFIX)
            .bind(schema::prefix_end(COMPACTION_ID_PREFIX))
            .fetch_all(&mut *conn)
            .await
            .map_err(db("read the ids in the marker namespace"))?
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<std::result::Result<HashSet<String>, _>>()
            .map_err(db("read the ids in the marker namespace"))?;
    }
    let limit = stream_step_events(budget, state.remembered());
    if limit > first_limit && pruned.len() > first_limit {
        pruned = candidates(
            conn,
            path,
            stream,
            policy,
            state.floor,
            limit.saturating_add(1),
        )
        .await?;
    }
    let done = pruned.len() <= limit;
    pruned.truncate(limit);
    // The old marker goes with the first step; the new one is written by
    // the last step of the transaction.
    let doomed = pruned
        .iter()
        .chain(state.old_marker.as_ref().filter(|_| first_step))
        .map(|record| to_sql_int(record.seq, "seq"))
        .collect::<Result<Vec<_>>>()?;
    bind_stream(sqlx::query(schema::DELETE_SEQS), tenant, run)
        .bind(schema::json_int_array(doomed))
        .execute(&mut *conn)
        .await
        .map_err(db("delete compacted events"))?;
    insert_compacted_ids(
        conn,
        path,
        stream,
        pruned.iter().map(|record| (&record.event_id, record.seq)),
    )
    .await?;
    let removed = pruned.len();
    state.pruned.extend(pruned);
    if done {
        write_marker(conn, insert_sql, path, policy, &state).await?;
    } else {
        *carried = Some(state);
    }
    Ok(StreamWork {
        removed,
        work: removed,
        done,
    })
}

/// Writes the marker of a stream compacted in steps of one transaction:
/// [`merge_marker`] over the marker the first step found and every event
/// the steps pruned.
pub(super) async fn write_marker(
    conn: &mut SqliteConnection,
    insert_sql: &InsertSql,
    path: &Arc<str>,
    policy: &CompactionPolicy,
    state: &Carried,
) -> std::result::Result<(), Fail> {
    let stream = &state.stream;
    let marker = merge_marker(
        &stream.tenant,
        &stream.run_id,
        state.old_marker.as_ref(),
        &state.pruned,
        policy.now_ms(),
        |id| Ok(state.held.contains(id.as_str())),
    )?;
    let marker_row = EventRow::new(&stream.tenant, &stream.run_id, marker)?;
    insert_rows(
        conn,
        insert_sql,
        path,
        "write the compaction marker",
        vec![marker_row],
        Commit::Separately,
    )
    .await?;
    Ok(())
}

/// The first `limit` events of the stream that `policy` prunes below the
/// snapshot floor, by seq.
async fn candidates(
    conn: &mut SqliteConnection,
    path: &Arc<str>,
    stream: &StreamKey,
    policy: &CompactionPolicy,
    floor: Option<u64>,
    limit: usize,
) -> std::result::Result<Vec<runstore_core::EventRecord>, Fail> {
    let (tenant, run_id) = (&stream.tenant, &stream.run_id);
    // Events below the floor: at most seq floor - 1 (a stored floor is at
    // most i64::MAX, so this cannot overflow), any seq without a snapshot --
    // including i64::MAX itself.
    let highest = floor.map_or(i64::MAX, |floor| schema::saturating_sql_int(floor) - 1);
    let rows = bind_stream(
        sqlx::query(schema::PRUNE_CANDIDATES),
        tenant,
        run_id.as_str(),
    )
    .bind(schema::saturating_sql_int(policy.cutoff_ms()))
    .bind(highest)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await
    .map_err(|err| SqliteError::driver_at(path, "read compaction candidates", stream, err))?;
    // The query selects what `policy.prunes` does (an ordinary event, old
    // enough, below the floor), so its `LIMIT` counts pruned events; the
    // check below repeats the policy on the parsed record.
    let mut pruned = Vec::with_capacity(rows.len());
    for row in &rows {
        let record = schema::parse_event_row(row, path, (tenant, run_id))?;
        if policy.prunes(&record, floor) {
            pruned.push(record);
        }
    }
    Ok(pruned)
}

/// Deletes the snapshots of one stream that `select` picks from them in
/// snapshot order, inside the caller's transaction (CONTRACT §14). Counts
/// the snapshots deleted for the report; its work is the listing, each
/// snapshot read and each deleted (one statement each, or a parse).
async fn prune_stream(
    conn: &mut SqliteConnection,
    path: &Arc<str>,
    stream: &StreamKey,
    select: impl FnOnce(&[SnapshotRecord]) -> Vec<usize>,
) -> std::result::Result<StreamWork, Fail> {
    let (tenant, run) = (&stream.tenant, stream.run_id.as_str());
    let db = |action| move |err| SqliteError::driver_at(path, action, stream, err);
    let rows = bind_stream(sqlx::query(schema::LIST_SNAPSHOTS), tenant, run)
        .fetch_all(&mut *conn)
        .await
        .map_err(db("list snapshots"))?;
    let mut ordered = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: &str = row.try_get(0).map_err(db("list snapshots"))?;
        let text: &str = row.try_get(1).map_err(db("list snapshots"))?;
        ordered.push(schema::parse_snapshot(
            text,
            path,
            (tenant, &stream.run_id),
            id,
        )?);
    }
    ordered.sort_by(runstore_core::raw::snapshots::snapshot_order);
    let doomed = select(&ordered);
    for &index in &doomed {
        let id = ordered[index].snapshot_id.as_str();
        bind_stream(sqlx::query(schema::DELETE_SNAPSHOT), tenant, run)
            .bind(id)
            .execute(&mut *conn)
            .await
            .map_err(|err| {
                SqliteError::driver_at(
                    path,
                    "delete a snapshot",
                    format_args!("{stream}, snapshot {id:?}"),
                    err,
                )
            })?;
    }
    Ok(StreamWork {
        removed: doomed.len(),
        work: 1 + ordered.len() + doomed.len(),
        done: true,
    })
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicU64, AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use runstore_core::{
        Durability, EventId, EventLog, EventRecord, FeedSignal, ReadQuery, RunId, Tenant,
        raw::compaction::{CompactionPolicy, compacted_ids},
    };

    use super::{Maintenance, STEP_WORK, Writer};
    use crate::{
        SqliteStore, conn,
        writer::{CallerPuts, FeedHooks},
    };

    /// A store in `dir` holding `runs` of old events (each its count), and
    /// a writer of its own on it whose count of queued jobs the test sets.
    async fn store_with_writer(
        dir: &tempfile::TempDir,
        runs: &[(&str, usize)],
    ) -> (SqliteStore, Writer, Arc<AtomicUsize>) {
        let file = dir.path().join("db.sqlite");
        let store = SqliteStore::open(&file).await.unwrap();
        let tenant = Tenant::local();
        for &(run, count) in runs {
            let events: Vec<EventRecord> = (0..count)
                .map(|n| {
                    let id = EventId::new(format!("{run}{n}")).unwrap();
                    let mut record =
                        EventRecord::new(&tenant, RunId::new(run).unwrap(), id, "test", 1);
                    record.occurred_at_ms = 10;
                    record
                })
                .collect();
            let run = RunId::new(run).unwrap();
            store
                .append_batch(&tenant, &run, &events, None)
                .await
                .unwrap();
        }
        let name = file.display().to_string().into();
        let busy = Duration::from_secs(5);
        let options = conn::writer_options(&file, Durability::Durable, busy);
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = Writer::new(
            conn::connect(&name, &options, busy).await.unwrap(),
            name,
            busy,
            FeedHooks {
                signal: FeedSignal::new(),
                commit_delay: None,
            },
            CallerPuts {
                file,
                durability: Durability::Durable,
                written: Arc::new(AtomicU64::new(0)),
            },
            Arc::new(AtomicU64::new(0)),
            Arc::clone(&queued),
        );
        (store, writer, queued)
    }

    /// While no job waits in the queue, one transaction takes step after
    /// step, up to its limit, going on with a stream a step left unfinished
    /// (one count per stream); with one waiting, it commits after the step
    /// it is in.
    #[tokio::test(flavor = "multi_thread")]
    async fn steps_share_a_transaction_until_a_job_waits() {
        let dir = tempfile::tempdir().unwrap();
        let runs = [
            ("a", 600),
            ("b", 256),
            ("c", 256),
            ("d", 256),
            ("e", 256),
            ("f", 256),
        ];
        let (store, mut writer, queued) = store_with_writer(&dir, &runs).await;
        let streams = store.streams().await.unwrap();
        let task = Maintenance::Compact(CompactionPolicy::new(5, 100).unwrap().unwrap());
        // Nothing waits, three steps at most: a in steps of 256, 256 and
        // its last 88, then b takes the third step's other 168, and is left
        // unfinished as the last step is spent.
        let Ok(progress) = writer.try_maintain(&task, &streams[..4], 3).await else {
            panic!("the transaction failed");
        };
        assert_eq!(progress.counts, vec![600, STEP_WORK - 88]);
        assert_eq!(progress.finished(), 1, "b goes on");
        // A job waits: b's last 88 and c's first 168, one step, then the
        // commit.
        queued.store(1, Ordering::Relaxed);
        let Ok(progress) = writer.try_maintain(&task, &streams[1..4], 3).await else {
            panic!("the transaction failed");
        };
        assert_eq!(progress.counts, vec![88, STEP_WORK - 88]);
        assert_eq!(progress.finished(), 1, "c goes on");
        // One step at most: e fills it exactly, and f is left whole.
        queued.store(0, Ordering::Relaxed);
        let Ok(progress) = writer.try_maintain(&task, &streams[4..], 1).await else {
            panic!("the transaction failed");
        };
        assert_eq!(progress.finished(), 1);
        assert_eq!(progress.counts, vec![STEP_WORK]);
        let report = store.compact(5, 100).await.unwrap();
        assert_eq!(report.removed, 88 + 2 * STEP_WORK, "c's rest, d and f");
    }

    /// The steps of one stream in one transaction write its marker once,
    /// taking as many events as the unwritten marker would remember; a
    /// stream the last step leaves unfinished gets its marker before the
    /// commit.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_carried_stream_gets_its_marker_before_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut writer, _) = store_with_writer(&dir, &[("a", 1_000), ("b", 1_000)]).await;
        let streams = store.streams().await.unwrap();
        let tenant = Tenant::local();
        let marker_of = |run: &'static str| {
            let store = &store;
            let tenant = tenant.clone();
            async move {
                let records = store
                    .read(&tenant, &RunId::new(run).unwrap(), ReadQuery::all())
                    .await
                    .unwrap();
                let marker = records
                    .iter()
                    .find(|record| record.is_compaction_marker())
                    .map(|marker| compacted_ids(marker).unwrap().len());
                (marker, records.len())
            }
        };
        let task = Maintenance::Compact(CompactionPolicy::new(5, 100).unwrap().unwrap());
        // Three steps: a's 256, 256 and its last 488.
        let Ok(progress) = writer.try_maintain(&task, &streams[..1], 3).await else {
            panic!("the transaction failed");
        };
        assert_eq!((progress.finished(), progress.counts), (1, vec![1_000]));
        assert_eq!(marker_of("a").await, (Some(1_000), 1));
        // One step: b's first 256, carried, its marker written before the
        // commit.
        let Ok(progress) = writer.try_maintain(&task, &streams[1..], 1).await else {
            panic!("the transaction failed");
        };
        assert_eq!((progress.finished(), progress.counts), (0, vec![STEP_WORK]));
        assert_eq!(marker_of("b").await, (Some(256), 1 + 744));
    }
}
