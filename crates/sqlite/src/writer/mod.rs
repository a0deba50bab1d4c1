//! The writer: one connection that runs every write of the store.
//!
//! Writes arrive as [`Job`]s on a [`WriteQueue`]. Appends and snapshot puts
//! waiting together are run as one group in one `BEGIN IMMEDIATE`
//! transaction and committed once (group commit): with 64 concurrent
//! appenders, one sync serves many appends. Each request is planned on its
//! own ([`plan_append`](runstore_core::raw::append::plan_append)), so one
//! request's `Conflict` never affects another's; a failure of the
//! transaction itself fails every request of the group, and nothing of it is
//! written. A group of appends to one stream the writer has seen takes a
//! shorter, guarded path (see [`Writer::try_guarded_group`]).
//!
//! The request that finds the queue without a leader starts one and drives
//! it until its own answer arrives, so an uncontended write runs on the
//! caller's thread; a leader with more to do is then handed to the store's
//! own thread (see [`queue`]), which runs it until the queue is empty. sqlx
//! runs the connection's statements on its worker thread; a leader only
//! awaits them, so no executor is ever blocked.
//!
//! `BEGIN IMMEDIATE` takes SQLite's write lock before anything is read, so
//! the stream state a plan sees cannot change before the commit, in this
//! process or any other (CONTRACT §3). SQLITE_BUSY from another process
//! holding the lock is waited out by SQLite's busy handler and retried here
//! until the busy timeout has passed; then the requests fail with a
//! retryable error naming the lock.
//!
//! Every insert of records gives them their tenant's next feed positions
//! inside its transaction (CONTRACT §29; see [`rows`]), and the writer
//! raises the handle's feed signal after each commit that wrote records
//! ([`FeedHooks`]).
//!
//! This file holds the requests ([`Job`]) and the [`Writer`]; each job it
//! runs has a file of its own:
//!
//! - [`queue`]: the queue, its leaders and the store's own thread.
//! - [`general`]: a group in one `BEGIN IMMEDIATE` transaction.
//! - [`caller`]: a lone snapshot put, on the caller's thread.
//! - [`guarded`]: a group of appends to one remembered stream, in one
//!   guarded statement.
//! - [`maintenance`]: compaction and snapshot prune.
//! - [`import`]: an exported stream written in one transaction.
//! - [`erase`]: `delete_run` and `delete_snapshots` of one run.
//!
//! and what they share:
//!
//! - [`state`]: a stream's state inside a transaction, and planning against
//!   it.
//! - [`rows`]: event rows, binding and inserting them.
//! - [`retry`]: failures inside a transaction, and retrying them.

mod caller;
mod erase;
mod general;
mod guarded;
mod import;
mod maintenance;
mod queue;
mod retry;
mod rows;
mod state;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use runstore_core::{
    AppendOutcome, Error, EventRecord, FeedSignal, RunId, SnapshotId, StreamKey, Tenant,
    raw::compaction::CompactionPolicy,
    raw::group::{Joins, Reply},
};
use sqlx::SqliteConnection;

use self::{
    caller::CallerConn,
    retry::{Replan, into_error, retrying},
    rows::{Commit, InsertSql},
};
pub(crate) use self::{
    caller::CallerPuts,
    maintenance::Maintained,
    queue::{WriteQueue, answered},
    rows::stream_from_row,
};
use crate::{
    error::SqliteError,
    schema::{self, INSERT_CHUNK},
};

/// One write request.
pub(crate) enum Job {
    /// `append_batch`.
    Append(AppendJob),
    /// `put` of a snapshot.
    Put(PutJob),
    /// Compaction or snapshot prune of the first of some streams, in one
    /// transaction of up to `steps` steps of bounded work; answers what it
    /// did ([`Maintained`]).
    Maintain {
        task: Maintenance,
        streams: Vec<StreamKey>,
        steps: usize,
        reply: Reply<Maintained>,
    },
    /// `import_stream`.
    Import {
        tenant: Tenant,
        run_id: RunId,
        records: Vec<EventRecord>,
        reply: Reply<usize>,
    },
    /// `delete_run` or `delete_snapshots` of one run, in a transaction of
    /// its own; answers how many events (snapshots) it deleted.
    Delete {
        target: Deletion,
        tenant: Tenant,
        run_id: RunId,
        reply: Reply<usize>,
    },
}

/// What a [`Job::Delete`] deletes (CONTRACT §27).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deletion {
    /// `delete_run`: the run's events and compacted ids, leaving its
    /// erasure marker.
    Run,
    /// `delete_snapshots`: the run's snapshots.
    Snapshots,
}

impl Deletion {
    fn action(self) -> &'static str {
        match self {
            Self::Run => "delete a run",
            Self::Snapshots => "delete a run's snapshots",
        }
    }
}

/// An `append_batch` request.
pub(crate) struct AppendJob {
    pub(crate) tenant: Tenant,
    pub(crate) run_id: RunId,
    pub(crate) events: Vec<EventRecord>,
    pub(crate) expected_last_seq: Option<u64>,
    pub(crate) reply: Reply<Vec<AppendOutcome>>,
}

/// A snapshot `put`: its key, order columns and record, serialized with
/// the tenant already stamped.
pub(crate) struct PutJob {
    pub(crate) tenant: Tenant,
    pub(crate) run_id: RunId,
    pub(crate) snapshot_id: SnapshotId,
    pub(crate) seq: i64,
    pub(crate) created_at_ms: i64,
    pub(crate) record: String,
    pub(crate) reply: Reply<()>,
}

impl Job {
    /// How the job joins a batch: appends and puts share a group
    /// transaction, counting the events they write at most; any other job
    /// runs in a transaction of its own.
    pub(super) fn joins(&self) -> Joins {
        match self {
            Self::Append(job) => Joins::Group(job.events.len()),
            Self::Put(_) => Joins::Group(1),
            _ => Joins::Alone,
        }
    }

    /// Answers the job with `err` without running it.
    fn fail(self, err: Error) {
        // A caller that stopped waiting needs no answer.
        match self {
            Self::Append(job) => {
                job.reply.send(Err(err));
            }
            Self::Put(job) => {
                job.reply.send(Err(err));
            }
            Self::Maintain { reply, .. } => {
                reply.send(Err(err));
            }
            Self::Import { reply, .. } | Self::Delete { reply, .. } => {
                reply.send(Err(err));
            }
        }
    }
}

/// Store-wide maintenance, run on a few streams at a time.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Maintenance {
    /// `compact` (CONTRACT §8-§11).
    Compact(CompactionPolicy),
    /// `prune` of snapshots (CONTRACT §14).
    Prune {
        retention_ms: u64,
        keep_last_per_run: usize,
        now_ms: u64,
    },
}

impl Maintenance {
    fn action(&self) -> &'static str {
        match self {
            Self::Compact(_) => "compact",
            Self::Prune { .. } => "prune snapshots",
        }
    }
}

/// What the writer does around the commits that write records (CONTRACT
/// §29).
#[derive(Debug, Clone)]
pub(crate) struct FeedHooks {
    /// Raised after each commit that wrote records.
    pub(crate) signal: FeedSignal,
    /// The test hook: how long each commit that writes records waits after
    /// its rows (and their feed positions) are written and before `COMMIT`.
    pub(crate) commit_delay: Option<Duration>,
}

/// The writer connection and the statements it has built.
pub(crate) struct Writer {
    conn: SqliteConnection,
    path: Arc<str>,
    busy_timeout: Duration,
    feed: FeedHooks,
    /// Lone snapshot puts on the caller's thread ([`caller`]).
    caller: CallerConn,
    /// `insert_sql[n - 1]` inserts `n` event rows; see [`InsertSql`].
    insert_sql: InsertSql,
    /// `BEGIN IMMEDIATE` followed by [`schema::STREAM_STATE`].
    begin_and_state_sql: String,
    /// `guarded_sql[n - 1]` is [`schema::guarded_insert_events_sql`] of `n`
    /// rows.
    guarded_sql: Vec<String>,
    /// The last seq of streams as this writer's own commits left them. A
    /// hint for the guarded path only: another process may have appended
    /// since, which the guard detects.
    last_seqs: HashMap<StreamKey, u64>,
    /// Groups the guarded path wrote, shared with the store handle (for
    /// tests: which path a group took is not otherwise visible).
    guarded_groups: Arc<AtomicU64>,
    /// How many jobs wait in the queue ([`WriteQueue`] keeps it).
    queued: Arc<AtomicUsize>,
}

/// Whether a job waits in the queue behind the one running (`queued` is
/// [`Writer`]'s count): work that could go on in the running transaction
/// should let it commit instead.
fn writes_waiting(queued: &AtomicUsize) -> bool {
    queued.load(Ordering::Relaxed) > 0
}

/// Waits the test hook's commit delay, if any: called after a transaction
/// has written its records (and they their feed positions) and before it
/// commits.
async fn delay_commit(delay: Option<Duration>) {
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
}

impl Writer {
    /// A writer over `conn`, an open connection with the writer's settings.
    pub(crate) fn new(
        conn: SqliteConnection,
        path: Arc<str>,
        busy_timeout: Duration,
        feed: FeedHooks,
        caller: CallerPuts,
        guarded_groups: Arc<AtomicU64>,
        queued: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            caller: CallerConn::new(caller),
            conn,
            path,
            busy_timeout,
            insert_sql: InsertSql::new(),
            begin_and_state_sql: format!("BEGIN IMMEDIATE;\n{}", schema::STREAM_STATE),
            guarded_sql: (1..=INSERT_CHUNK)
                .map(schema::guarded_insert_events_sql)
                .collect(),
            last_seqs: HashMap::new(),
            feed,
            guarded_groups,
            queued,
        }
    }

    /// How the last insert of a group ends: with `COMMIT` in the same
    /// round trip, unless commits are delayed (the test hook), when
    /// [`Writer::commit_records`] commits after the delay.
    fn last_insert_commits(&self) -> Commit {
        if self.feed.commit_delay.is_some() {
            Commit::Separately
        } else {
            Commit::WithLast
        }
    }

    /// Commits a transaction that wrote records and took feed positions:
    /// waits the test hook's delay first, if any.
    async fn commit_records(&mut self, action: &'static str) -> Result<(), SqliteError> {
        delay_commit(self.feed.commit_delay).await;
        sqlx::query("COMMIT")
            .execute(&mut self.conn)
            .await
            .map(|_| ())
            .map_err(|err| SqliteError::driver(&self.path, action, err))
    }

    /// Says a commit wrote records: wakes the handle's feed followers.
    fn records_committed(&self) {
        self.feed.signal.raise();
    }

    /// Runs a job that has a transaction of its own: maintenance
    /// ([`maintenance`]), an import ([`import`]) or a deletion
    /// ([`erase`]).
    async fn run_exclusive(&mut self, job: Job) {
        match job {
            Job::Maintain {
                task,
                streams,
                steps,
                reply,
            } => {
                let report = self.run_maintenance(&task, &streams, steps).await;
                reply.send(report);
            }
            Job::Import {
                tenant,
                run_id,
                records,
                reply,
            } => {
                let result = retrying!(
                    self,
                    "import a stream",
                    Replan::Yes,
                    self.try_import(&tenant, &run_id, &records).await
                );
                reply.send(result.map_err(into_error));
            }
            Job::Delete {
                target,
                tenant,
                run_id,
                reply,
            } => {
                let result = retrying!(
                    self,
                    target.action(),
                    Replan::No,
                    self.try_delete(target, &tenant, &run_id).await
                );
                reply.send(result.map_err(into_error));
            }
            Job::Append(_) | Job::Put(_) => unreachable!("appends and puts run in groups"),
        }
    }
}
