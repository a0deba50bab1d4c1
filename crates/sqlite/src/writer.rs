//! The writer: one connection that runs every write of the store.
//!
//! Writes arrive as [`Job`]s on a [`WriteQueue`]. Appends and snapshot puts
//! waiting together are run as one group in one `BEGIN IMMEDIATE`
//! transaction and committed once (group commit): with 64 concurrent
//! appenders, one sync serves many appends. Each request is planned on its
//! own ([`plan_append`]), so one request's `Conflict` never affects
//! another's; a failure of the transaction itself fails every request of
//! the group, and nothing of it is written. A group of appends to one stream
//! the writer has seen takes a shorter, guarded path (see
//! [`Writer::try_guarded_group`]).
//!
//! The request that finds the queue without a leader starts one and drives
//! it until its own answer arrives, so an uncontended write runs on the
//! caller's thread; a leader with more to do is then handed to the store's
//! own thread ([`Driver`]), which runs it until the queue is empty. sqlx runs
//! the connection's statements on its worker thread; a leader only awaits
//! them, so no executor is ever blocked.
//!
//! `BEGIN IMMEDIATE` takes SQLite's write lock before anything is read, so
//! the stream state a plan sees cannot change before the commit, in this
//! process or any other (CONTRACT §3). SQLITE_BUSY from another process
//! holding the lock is waited out by SQLite's busy handler and retried here
//! until the busy timeout has passed; then the requests fail with a
//! retryable error naming the lock.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::Poll,
    time::{Duration, Instant},
};

use runstore_core::{
    AppendOutcome, Error, EventId, EventRecord, MaintenanceReport, Result, RunId, SnapshotId,
    SnapshotRecord, StreamKey, Tenant,
    append::{plan_append, plan_import},
    compaction::{COMPACTION_ID_PREFIX, CompactionPolicy, compacted_ids, merge_marker},
    prune_selection,
};
use sqlx::{
    Connection, Row as _, SqliteConnection,
    sqlite::{SqliteConnectOptions, SqliteRow},
};
use tokio::sync::oneshot;

use crate::{
    conn::{self, backoff},
    error::{SqliteError, shared},
    schema::{self, INSERT_CHUNK, SqlQuery, bind_stream, to_json, to_sql_int},
};

/// How many unique-key violations a write re-plans before giving up.
const MAX_PLAN_ATTEMPTS: u32 = 3;
/// The most events one group transaction writes; more wait for the next.
const MAX_GROUP_EVENTS: usize = 8_192;
/// The most requests in one group transaction.
const MAX_GROUP_REQUESTS: usize = 1_024;
/// The most streams whose last seq the writer remembers for the guarded
/// path; past it the memory starts over.
const MAX_REMEMBERED_STREAMS: usize = 65_536;

/// One write request.
pub(crate) enum Job {
    /// `append_batch`.
    Append(AppendJob),
    /// `put` of a snapshot.
    Put(PutJob),
    /// Compaction or snapshot prune of some streams, in one transaction.
    Maintain {
        task: Maintenance,
        streams: Vec<StreamKey>,
        reply: oneshot::Sender<Result<MaintenanceReport>>,
    },
    /// `import_stream`.
    Import {
        tenant: Tenant,
        run_id: RunId,
        records: Vec<EventRecord>,
        reply: oneshot::Sender<Result<usize>>,
    },
}

/// An `append_batch` request.
pub(crate) struct AppendJob {
    pub(crate) tenant: Tenant,
    pub(crate) run_id: RunId,
    pub(crate) events: Vec<EventRecord>,
    pub(crate) expected_last_seq: Option<u64>,
    pub(crate) reply: oneshot::Sender<Result<Vec<AppendOutcome>>>,
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
    pub(crate) reply: oneshot::Sender<Result<()>>,
}

impl Job {
    /// Whether the job may share a group transaction.
    fn groupable(&self) -> bool {
        matches!(self, Self::Append(_) | Self::Put(_))
    }

    /// How many events the job writes at most.
    fn weight(&self) -> usize {
        match self {
            Self::Append(job) => job.events.len(),
            _ => 1,
        }
    }

    /// Answers the job with `err` without running it.
    fn fail(self, err: Error) {
        // A caller that stopped waiting needs no answer.
        match self {
            Self::Append(job) => {
                let _ = job.reply.send(Err(err));
            }
            Self::Put(job) => {
                let _ = job.reply.send(Err(err));
            }
            Self::Maintain { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Self::Import { reply, .. } => {
                let _ = reply.send(Err(err));
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

/// What a leader runs next.
enum Batch {
    /// Appends and puts, in one group transaction.
    Group(Vec<Job>),
    /// A job that runs in a transaction of its own.
    Exclusive(Job),
}

/// Takes the next batch from the front of `jobs`: a job that runs alone, or
/// the groupable jobs queued one after another, up to the group's limits.
fn next_batch(jobs: &mut VecDeque<Job>) -> Option<Batch> {
    let first = jobs.pop_front()?;
    if !first.groupable() {
        return Some(Batch::Exclusive(first));
    }
    let mut weight = first.weight();
    let mut group = vec![first];
    while group.len() < MAX_GROUP_REQUESTS && weight < MAX_GROUP_EVENTS {
        match jobs.pop_front() {
            Some(job) if job.groupable() => {
                weight += job.weight();
                group.push(job);
            }
            Some(job) => {
                jobs.push_front(job);
                break;
            }
            None => break,
        }
    }
    Some(Batch::Group(group))
}

/// The store's write requests, and its writer while no leader runs it.
///
/// A request is queued; if no leader is running, the request starts one
/// ([`Leader`]). The leader takes batch after batch from the queue and,
/// when it finds the queue empty, parks the writer here and ends. Requests
/// that arrive while a group is being written wait for the next group
/// (group commit).
pub(crate) struct WriteQueue {
    state: Mutex<QueueState>,
    path: Arc<str>,
    /// How the writer connects again after a leader was cancelled.
    options: SqliteConnectOptions,
    busy_timeout: Duration,
    /// The thread that runs leaders their callers stopped driving; started
    /// on first need.
    driver: Mutex<Option<Driver>>,
}

/// The store's own thread, with a runtime of its own, which runs a leader
/// once the caller that drove it has its answer (or stopped waiting) while
/// requests remain. Whatever runtimes the callers use -- one that is no
/// longer driven between `block_on` calls, one that shuts down -- the queued
/// requests go on being written. The thread ends when the queue is dropped,
/// which no running leader allows, as each holds the queue.
struct Driver {
    runtime: tokio::runtime::Handle,
    /// Dropped with the queue, which ends the thread's `block_on`.
    _stop: oneshot::Sender<()>,
}

impl Driver {
    fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("runstore-sqlite-writer".to_owned())
            .spawn(move || {
                // Either way the queue is gone: stop.
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Self {
            runtime: handle,
            _stop: stop,
        })
    }
}

struct QueueState {
    jobs: VecDeque<Job>,
    /// Whether a leader task is running.
    leading: bool,
    /// The writer while no leader runs it. `None` after a leader was
    /// cancelled mid-batch (its connection, and any transaction it had
    /// open, went with it) until the next leader connects anew.
    idle: Option<Writer>,
}

impl WriteQueue {
    /// A queue whose first leader will run `writer`; `options` reconnect it
    /// should a leader be cancelled.
    pub(crate) fn new(writer: Writer, options: SqliteConnectOptions) -> Arc<Self> {
        Arc::new(Self {
            path: writer.path.clone(),
            busy_timeout: writer.busy_timeout,
            options,
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                leading: false,
                idle: Some(writer),
            }),
            driver: Mutex::new(None),
        })
    }

    /// The runtime of the store's own thread, starting it if needed; `None`
    /// if the thread cannot start.
    fn driver(&self) -> Option<tokio::runtime::Handle> {
        let mut driver = self.driver.lock().unwrap_or_else(PoisonError::into_inner);
        if driver.is_none() {
            *driver = Driver::start().ok();
        }
        driver.as_ref().map(|driver| driver.runtime.clone())
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Nothing panics while the lock is held; a poisoned lock still
        // guards a consistent queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`. If no leader is running, returns one for the caller to
    /// drive while it waits (see [`answered`]).
    ///
    /// # Errors
    /// When called outside a tokio runtime (the job is not queued).
    pub(crate) fn submit(
        self: &Arc<Self>,
        job: Job,
    ) -> std::result::Result<Option<Leader>, SqliteError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| SqliteError::NoRuntime {
                path: self.path.clone(),
            })?;
        let writer = {
            let mut state = self.lock();
            state.jobs.push_back(job);
            if state.leading {
                return Ok(None);
            }
            state.leading = true;
            state.idle.take()
        };
        Ok(Some(Leader {
            run: Some(Box::pin(Arc::clone(self).lead(writer))),
            queue: Arc::clone(self),
            runtime,
        }))
    }

    /// The leader: runs batches until the queue is empty.
    async fn lead(self: Arc<Self>, writer: Option<Writer>) {
        let mut leading = Leading {
            queue: &self,
            done: false,
        };
        let mut writer = match writer {
            Some(writer) => writer,
            None => match conn::connect(&self.path, &self.options, self.busy_timeout).await {
                Ok(conn) => Writer::new(conn, self.path.clone(), self.busy_timeout),
                Err(err) => {
                    let err = Arc::new(err);
                    let jobs = {
                        let mut state = self.lock();
                        state.leading = false;
                        std::mem::take(&mut state.jobs)
                    };
                    leading.done = true;
                    for job in jobs {
                        job.fail(shared(&err));
                    }
                    return;
                }
            },
        };
        loop {
            let batch = {
                let mut state = self.lock();
                match next_batch(&mut state.jobs) {
                    Some(batch) => batch,
                    None => {
                        state.idle = Some(writer);
                        state.leading = false;
                        leading.done = true;
                        return;
                    }
                }
            };
            match batch {
                Batch::Group(group) => writer.run_group(group).await,
                Batch::Exclusive(job) => writer.run_exclusive(job).await,
            }
        }
    }
}

/// A leader, driven by the caller that started it until that caller's own
/// request is answered: in the common case of one request at a time the
/// whole write then runs on the caller's thread, with no hand-over to
/// another thread but sqlx's. Dropped unfinished -- the caller has its
/// answer while more requests are queued, or stopped waiting -- the rest of
/// the leader is spawned on the store's own thread ([`Driver`]; on the
/// caller's runtime should that thread not start), so the group it may be
/// in the middle of and the requests queued behind it complete.
pub(crate) struct Leader {
    run: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    queue: Arc<WriteQueue>,
    /// The caller's runtime.
    runtime: tokio::runtime::Handle,
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Some(run) = self.run.take() {
            let runtime = self.queue.driver().unwrap_or_else(|| self.runtime.clone());
            // Detached: the task answers the requests itself.
            drop(runtime.spawn(run));
        }
    }
}

/// Waits for `answer`, driving `leader` (if the caller started one)
/// meanwhile.
pub(crate) async fn answered<T>(
    mut leader: Option<Leader>,
    mut answer: oneshot::Receiver<T>,
) -> std::result::Result<T, oneshot::error::RecvError> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(reply) = Pin::new(&mut answer).poll(cx) {
            return Poll::Ready(reply);
        }
        if let Some(leader) = leader.as_mut()
            && let Some(run) = leader.run.as_mut()
            && run.as_mut().poll(cx).is_ready()
        {
            // A leader ends only once the queue is empty, so the request
            // has been answered (or its reply dropped).
            leader.run = None;
            return Pin::new(&mut answer).poll(cx);
        }
        Poll::Pending
    })
    .await
}

/// A running leader. Dropped before it is done -- its task was cancelled
/// (the caller's runtime shut down when the store's own thread could not
/// start) or panicked -- it answers the queued requests with
/// [`SqliteError::LeaderCancelled`] and lets the next request start a
/// leader, which connects anew: the stopped leader's connection went with
/// it, and SQLite rolled back whatever it had not committed.
struct Leading<'a> {
    queue: &'a WriteQueue,
    done: bool,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let jobs = {
            let mut state = self.queue.lock();
            state.leading = false;
            std::mem::take(&mut state.jobs)
        };
        for job in jobs {
            job.fail(
                SqliteError::LeaderCancelled {
                    path: self.queue.path.clone(),
                }
                .into(),
            );
        }
    }
}

/// A failure inside a write transaction: a driver error (maybe retried) or
/// a contract error (answered as is).
enum Fail {
    Db(SqliteError),
    Core(Error),
}

impl Fail {
    /// Whether the failure stops a maintenance pass (see
    /// [`SqliteError::is_store_wide`]) rather than only the streams it was
    /// processing.
    fn is_store_wide(&self) -> bool {
        match self {
            Self::Db(err) => err.is_store_wide(),
            Self::Core(_) => false,
        }
    }
}

impl From<Error> for Fail {
    fn from(err: Error) -> Self {
        Self::Core(err)
    }
}

impl From<SqliteError> for Fail {
    fn from(err: SqliteError) -> Self {
        Self::Db(err)
    }
}

/// One stream's state inside a group transaction.
struct StreamState {
    last_seq: u64,
    was_empty: bool,
    /// Seqs of the ids the group's requests name that the stream holds
    /// (live or compacted), plus the ids the group has added.
    known: HashMap<String, u64>,
}

impl StreamState {
    /// Plans `job` against this view ([`plan_append`]) and, if it plans,
    /// adds the rows it writes to the view, so that the group's next
    /// request sees them.
    fn plan<'a>(&mut self, job: &'a AppendJob) -> Result<(Vec<AppendOutcome>, Vec<EventRow<'a>>)> {
        let plan = plan_append(
            &job.tenant,
            &job.run_id,
            self.last_seq,
            &job.events,
            job.expected_last_seq,
            |id| Ok(self.known.get(id.as_str()).copied()),
        )?;
        let rows = plan
            .new_records
            .into_iter()
            .map(|record| EventRow::new(&job.tenant, &job.run_id, record))
            .collect::<Result<Vec<_>>>()?;
        for row in &rows {
            let seq = u64::try_from(row.seq).expect("assigned seqs are positive");
            self.known.insert(row.event_id.clone(), seq);
            self.last_seq = seq;
        }
        Ok((plan.outcomes, rows))
    }
}

/// An event row to insert. Its strings are owned, so binding moves them
/// into the statement's arguments instead of copying them.
struct EventRow<'a> {
    tenant: &'a Tenant,
    run_id: &'a RunId,
    seq: i64,
    event_id: String,
    event_type: String,
    occurred_at_ms: i64,
    is_marker: bool,
    record: String,
}

impl<'a> EventRow<'a> {
    fn new(tenant: &'a Tenant, run_id: &'a RunId, record: EventRecord) -> Result<Self> {
        let json = to_json(&record, || {
            format!("serialize event {:?}", record.event_id.as_str())
        })?;
        Ok(Self {
            tenant,
            run_id,
            seq: to_sql_int(record.seq, "seq")?,
            occurred_at_ms: to_sql_int(record.occurred_at_ms, "occurred_at_ms")?,
            is_marker: record.is_compaction_marker(),
            event_id: record.event_id.into_string(),
            event_type: record.event_type,
            record: json,
        })
    }

    /// Binds the row's [`schema::INSERT_ROW_PARAMS`] parameters, moving its
    /// strings into the query.
    fn bind(self, query: SqlQuery<'a>) -> SqlQuery<'a> {
        bind_stream(query, self.tenant, self.run_id.as_str())
            .bind(self.seq)
            .bind(self.event_id)
            .bind(self.event_type)
            .bind(self.occurred_at_ms)
            .bind(self.is_marker)
            .bind(self.record)
    }
}

/// Evaluates `$attempt` (an expression using `$writer`, a [`Writer`])
/// until it succeeds, fails for good, or runs out of retries; maps the final
/// failure. SQLITE_BUSY is retried until the busy timeout; a unique-key
/// violation is planned again only with [`Replan::Yes`]. A macro rather than
/// a function taking an async closure, so that the leader's future stays
/// provably `Send`.
macro_rules! retrying {
    ($writer:ident, $action:expr, $replan:expr, $attempt:expr) => {{
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match $attempt {
                Err(Fail::Db(err)) => {
                    if $writer.should_retry(&err, $replan, started, attempts).await {
                        continue;
                    }
                    break Err(Fail::Db(
                        $writer.give_up(err, $action, $replan, started, attempts),
                    ));
                }
                other => break other,
            }
        }
    }};
}

/// Whether a write that hit a unique key is planned again: a plan made
/// inside the write transaction should not hit one, so a retry may succeed
/// where state changed underneath (appends, imports). Maintenance re-reads
/// the same state and would fail the same way.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replan {
    Yes,
    No,
}

/// The writer connection and the statements it has built.
pub(crate) struct Writer {
    conn: SqliteConnection,
    path: Arc<str>,
    busy_timeout: Duration,
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
}

/// The multi-row insert statements, by row count: `plain[n - 1]` inserts
/// `n` rows, `commit[n - 1]` does the same and commits.
struct InsertSql {
    plain: Vec<String>,
    commit: Vec<String>,
}

/// Whether the last insert statement also commits the transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Commit {
    WithLast,
    Separately,
}

impl Writer {
    /// A writer over `conn`, an open connection with the writer's settings.
    pub(crate) fn new(conn: SqliteConnection, path: Arc<str>, busy_timeout: Duration) -> Self {
        Self {
            conn,
            path,
            busy_timeout,
            insert_sql: InsertSql {
                plain: (1..=INSERT_CHUNK).map(schema::insert_events_sql).collect(),
                commit: (1..=INSERT_CHUNK)
                    .map(|rows| format!("{};\nCOMMIT", schema::insert_events_sql(rows)))
                    .collect(),
            },
            begin_and_state_sql: format!("BEGIN IMMEDIATE;\n{}", schema::STREAM_STATE),
            guarded_sql: (1..=INSERT_CHUNK)
                .map(schema::guarded_insert_events_sql)
                .collect(),
            last_seqs: HashMap::new(),
        }
    }

    /// Whether to retry after `err` on attempt `attempt` of a write started
    /// at `started`; sleeps the backoff first when retrying SQLITE_BUSY.
    async fn should_retry(
        &self,
        err: &SqliteError,
        replan: Replan,
        started: Instant,
        attempt: u32,
    ) -> bool {
        if err.is_busy() {
            if started.elapsed() >= self.busy_timeout {
                return false;
            }
            tokio::time::sleep(backoff(attempt)).await;
            return true;
        }
        replan == Replan::Yes && err.is_unique_violation() && attempt < MAX_PLAN_ATTEMPTS
    }

    /// The error a write that gave up answers.
    fn give_up(
        &self,
        err: SqliteError,
        action: &'static str,
        replan: Replan,
        started: Instant,
        attempts: u32,
    ) -> SqliteError {
        if err.is_busy() {
            return SqliteError::Busy {
                path: self.path.clone(),
                action,
                waited: started.elapsed(),
                timeout: self.busy_timeout,
            };
        }
        match err {
            SqliteError::Driver { at, driver, .. }
                if replan == Replan::Yes && crate::error::is_unique_violation(&driver) =>
            {
                SqliteError::UniqueAfterPlan {
                    path: self.path.clone(),
                    action,
                    at,
                    attempts,
                    driver,
                }
            }
            other => other,
        }
    }

    async fn run_group(&mut self, group: Vec<Job>) {
        let Some(group) = self.try_guarded_group(group).await else {
            return;
        };
        let result = retrying!(self, "append", Replan::Yes, self.try_group(&group).await);
        match result {
            Ok(answers) => {
                for (job, answer) in group.into_iter().zip(answers) {
                    match (job, answer) {
                        (Job::Append(job), Answer::Append(result)) => {
                            // The caller may have stopped waiting; the write
                            // stands either way.
                            let _ = job.reply.send(result);
                        }
                        (Job::Put(job), Answer::Put) => {
                            let _ = job.reply.send(Ok(()));
                        }
                        _ => unreachable!("answers follow the group's order"),
                    }
                }
            }
            Err(fail) => {
                let fail = match fail {
                    Fail::Db(err) => GroupFailure::Db(Arc::new(err)),
                    Fail::Core(err) => GroupFailure::Core(err),
                };
                for job in group {
                    job.fail(fail.error());
                }
            }
        }
    }

    /// Remembers `stream`'s last seq after a commit of this writer.
    fn remember(&mut self, stream: StreamKey, last_seq: u64) {
        if self.last_seqs.len() >= MAX_REMEMBERED_STREAMS && !self.last_seqs.contains_key(&stream) {
            self.last_seqs.clear();
        }
        self.last_seqs.insert(stream, last_seq);
    }

    /// The guarded path: a group of appends to one stream whose last seq
    /// this writer remembers is planned against that seq, request after
    /// request, without reading the database first, and written by one
    /// guarded statement ([`schema::guarded_insert_events_sql`]) that is its
    /// own write transaction: one round trip to the connection instead of
    /// two.
    ///
    /// Returns the group, unanswered and with nothing written, when the
    /// path does not apply or its guard failed: the stream moved on (another
    /// process appended or compacted), an id is already stored, or a plan
    /// depends on the stream's state (a conflict, an invalid request). The
    /// general path then answers it from the database's state.
    async fn try_guarded_group(&mut self, group: Vec<Job>) -> Option<Vec<Job>> {
        let Some(Job::Append(first)) = group.first() else {
            return Some(group);
        };
        let (tenant, run_id) = (&first.tenant, &first.run_id);
        let same_stream = group.iter().all(
            |job| matches!(job, Job::Append(job) if job.tenant == *tenant && job.run_id == *run_id),
        );
        if !same_stream {
            return Some(group);
        }
        let stream = StreamKey::new(tenant.clone(), run_id.clone());
        let Some(&last_seq) = self.last_seqs.get(&stream) else {
            return Some(group);
        };
        // Plan each request against the remembered seq and what the
        // requests before it in the group add; no id is assumed stored.
        let mut state = StreamState {
            last_seq,
            was_empty: false,
            known: HashMap::new(),
        };
        let mut outcomes = Vec::with_capacity(group.len());
        let mut rows = Vec::new();
        for job in &group {
            let Job::Append(job) = job else {
                return Some(group);
            };
            let Ok((answer, new_rows)) = state.plan(job) else {
                return Some(group);
            };
            outcomes.push(answer);
            rows.extend(new_rows);
        }
        let count = rows.len();
        let Ok(guard_seq) = to_sql_int(last_seq, "seq") else {
            return Some(group);
        };
        if count == 0 || count > INSERT_CHUNK {
            return Some(group);
        }
        let ids = schema::json_array(rows.iter().map(|row| row.event_id.as_str()));
        let mut query = sqlx::query(&self.guarded_sql[count - 1]);
        for row in rows {
            query = row.bind(query);
        }
        let query = bind_stream(query, tenant, run_id.as_str()).bind(guard_seq);
        let started = Instant::now();
        let written = bind_stream(query, tenant, run_id.as_str())
            .bind(ids)
            .execute(&mut self.conn)
            .await
            .map(|done| done.rows_affected());
        if let Err(err) = &written
            && crate::error::is_busy(err)
        {
            // SQLite's busy handler has already waited out the busy
            // timeout; the general path would wait all over again.
            let busy = Arc::new(SqliteError::Busy {
                path: self.path.clone(),
                action: "append",
                waited: started.elapsed(),
                timeout: self.busy_timeout,
            });
            for job in group {
                job.fail(shared(&busy));
            }
            return None;
        }
        // The statement is all or nothing: every row, or none when the
        // guard failed or a unique key refused a row.
        if written.ok() != u64::try_from(count).ok() {
            self.last_seqs.remove(&stream);
            return Some(group);
        }
        self.remember(stream, state.last_seq);
        for (job, outcomes) in group.into_iter().zip(outcomes) {
            if let Job::Append(job) = job {
                // The caller may have stopped waiting; the write stands
                // either way.
                let _ = job.reply.send(Ok(outcomes));
            }
        }
        None
    }

    /// Plans and writes a group in one transaction; answers in group order.
    /// On failure the transaction, if it began, is rolled back.
    async fn try_group(&mut self, group: &[Job]) -> std::result::Result<Vec<Answer>, Fail> {
        let result = self.group_transaction(group).await;
        if result.is_err() {
            // Whether or not the transaction began, nothing of it stays;
            // "no transaction is active" is the expected answer when it did
            // not begin.
            let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
        }
        result
    }

    /// The group's transaction in as few round trips to the connection's
    /// worker as possible: `BEGIN IMMEDIATE` travels with the first stream's
    /// state query, `COMMIT` with the last insert.
    async fn group_transaction(&mut self, group: &[Job]) -> std::result::Result<Vec<Answer>, Fail> {
        let path = self.path.clone();
        let p = &path;
        let db = |action| move |err| SqliteError::driver(p, action, err);

        // Each stream's last seq and the ids its requests name, one query
        // per stream, in the order the streams first appear.
        let mut order: Vec<(&Tenant, &RunId)> = Vec::new();
        let mut ids_by_stream: HashMap<(&Tenant, &RunId), Vec<&str>> = HashMap::new();
        for job in group {
            if let Job::Append(job) = job {
                let key = (&job.tenant, &job.run_id);
                let ids = ids_by_stream.entry(key).or_insert_with(|| {
                    order.push(key);
                    Vec::new()
                });
                ids.extend(job.events.iter().map(|event| event.event_id.as_str()));
            }
        }
        let mut states: HashMap<(&Tenant, &RunId), StreamState> = HashMap::new();
        let mut begun = false;
        for key in order {
            let ids = ids_by_stream.remove(&key).unwrap_or_default();
            let sql = if begun {
                schema::STREAM_STATE
            } else {
                self.begin_and_state_sql.as_str()
            };
            let state = stream_state(&mut self.conn, p, sql, key.0, key.1, ids).await?;
            begun = true;
            states.insert(key, state);
        }
        if !begun {
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut self.conn)
                .await
                .map_err(db("begin a write transaction"))?;
        }

        // Plan every request in order against the group's view.
        let mut answers = Vec::with_capacity(group.len());
        let mut rows: Vec<EventRow<'_>> = Vec::new();
        for job in group {
            let Job::Append(job) = job else {
                answers.push(Answer::Put);
                continue;
            };
            let state = states
                .get_mut(&(&job.tenant, &job.run_id))
                .expect("every stream of the group was looked up");
            match state.plan(job) {
                Ok((outcomes, new_rows)) => {
                    rows.extend(new_rows);
                    answers.push(Answer::Append(Ok(outcomes)));
                }
                Err(err) => answers.push(Answer::Append(Err(err))),
            }
        }

        for ((tenant, run_id), state) in &states {
            if state.was_empty && state.last_seq > 0 {
                bind_stream(sqlx::query(schema::INSERT_STREAM), tenant, run_id.as_str())
                    .execute(&mut self.conn)
                    .await
                    .map_err(|err| {
                        SqliteError::driver_at(
                            p,
                            "record a new stream",
                            format_args!("{tenant}:{run_id}"),
                            err,
                        )
                    })?;
            }
        }
        for job in group {
            if let Job::Put(put) = job {
                bind_stream(
                    sqlx::query(schema::PUT_SNAPSHOT),
                    &put.tenant,
                    put.run_id.as_str(),
                )
                .bind(put.snapshot_id.as_str())
                .bind(put.seq)
                .bind(put.created_at_ms)
                .bind(put.record.as_str())
                .execute(&mut self.conn)
                .await
                .map_err(|err| {
                    SqliteError::driver_at(
                        p,
                        "store a snapshot",
                        format_args!(
                            "{}:{}, snapshot {:?}",
                            put.tenant,
                            put.run_id,
                            put.snapshot_id.as_str()
                        ),
                        err,
                    )
                })?;
            }
        }
        if rows.is_empty() {
            sqlx::query("COMMIT")
                .execute(&mut self.conn)
                .await
                .map_err(db("commit"))?;
        } else {
            insert_rows(
                &mut self.conn,
                &self.insert_sql,
                p,
                "insert events",
                rows,
                Commit::WithLast,
            )
            .await?;
        }
        for ((tenant, run_id), state) in states {
            if state.last_seq > 0 {
                self.remember(
                    StreamKey::new(tenant.clone(), run_id.clone()),
                    state.last_seq,
                );
            }
        }
        Ok(answers)
    }

    async fn run_exclusive(&mut self, job: Job) {
        match job {
            Job::Maintain {
                task,
                streams,
                reply,
            } => {
                let report = self.run_maintenance(&task, &streams).await;
                let _ = reply.send(report);
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
                let _ = reply.send(result.map_err(into_error));
            }
            Job::Append(_) | Job::Put(_) => unreachable!("appends and puts run in groups"),
        }
    }

    /// Runs `task` on `streams`, each stream on its own (CONTRACT §25):
    /// first all of them in one transaction; should that fail, each stream
    /// again in a transaction of its own, so that only a stream that fails
    /// alone is reported and every other one is processed. A failure of the
    /// store itself ([`Fail::is_store_wide`]) ends the pass.
    async fn run_maintenance(
        &mut self,
        task: &Maintenance,
        streams: &[StreamKey],
    ) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport::default();
        let action = task.action();
        let fail = match retrying!(
            self,
            action,
            Replan::No,
            self.try_maintain(task, streams).await
        ) {
            Ok(counts) => {
                for (stream, count) in streams.iter().zip(counts) {
                    report.record(stream, Ok(count));
                }
                return Ok(report);
            }
            Err(fail) => fail,
        };
        if fail.is_store_wide() {
            return Err(into_error(fail));
        }
        if let [stream] = streams {
            report.record(stream, Err(into_error(fail)));
            return Ok(report);
        }
        for stream in streams {
            match retrying!(
                self,
                action,
                Replan::No,
                self.try_maintain(task, std::slice::from_ref(stream)).await
            ) {
                Ok(counts) => report.record(stream, Ok(counts.iter().sum())),
                Err(fail) if fail.is_store_wide() => return Err(into_error(fail)),
                Err(fail) => report.record(stream, Err(into_error(fail))),
            }
        }
        Ok(report)
    }

    /// Runs `task` on `streams` in one transaction; returns each stream's
    /// count (events pruned, snapshots deleted). On failure the transaction
    /// is rolled back.
    async fn try_maintain(
        &mut self,
        task: &Maintenance,
        streams: &[StreamKey],
    ) -> std::result::Result<Vec<usize>, Fail> {
        if let Maintenance::Compact(_) = task {
            for stream in streams {
                self.last_seqs.remove(stream);
            }
        }
        let path = self.path.clone();
        let mut tx = self
            .conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|err| SqliteError::driver(&path, "begin a maintenance transaction", err))?;
        let mut counts = Vec::with_capacity(streams.len());
        for stream in streams {
            let count = match *task {
                Maintenance::Compact(policy) => {
                    compact_stream(&mut tx, &self.insert_sql, &path, stream, &policy).await?
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
            counts.push(count);
        }
        tx.commit()
            .await
            .map_err(|err| SqliteError::driver(&path, "commit a maintenance transaction", err))?;
        Ok(counts)
    }

    /// Imports an exported stream in one transaction.
    async fn try_import(
        &mut self,
        tenant: &Tenant,
        run_id: &RunId,
        records: &[EventRecord],
    ) -> std::result::Result<usize, Fail> {
        let path = self.path.clone();
        let p = &path;
        let stream = StreamKey::new(tenant.clone(), run_id.clone());
        let at = |action| {
            let stream = &stream;
            move |err| SqliteError::driver_at(p, action, stream, err)
        };
        self.last_seqs.remove(&stream);
        let mut tx = self
            .conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(at("begin an import transaction"))?;
        let ids = records
            .iter()
            .map(|record| record.event_id.as_str())
            .collect();
        let state = stream_state(&mut tx, &path, schema::STREAM_STATE, tenant, run_id, ids).await?;
        let missing = plan_import(tenant, run_id, state.last_seq, records, |id| {
            Ok(state.known.get(id.as_str()).copied())
        })?;
        if missing.is_empty() {
            return Ok(0);
        }
        let rows = missing
            .iter()
            .map(|record| EventRow::new(tenant, run_id, record.clone()))
            .collect::<Result<Vec<_>>>()?;
        let inserted = insert_rows(
            &mut tx,
            &self.insert_sql,
            &path,
            "insert imported events",
            rows,
            Commit::Separately,
        )
        .await;
        match inserted {
            Err(err) if err.is_unique_violation() => {
                return Err(Fail::Core(Error::invalid(format!(
                    "import of {tenant}:{run_id}: an imported event id is already stored at \
                     another seq; the stream differs from the source"
                ))));
            }
            other => other?,
        }
        for record in missing {
            let ids = compacted_ids(record)?;
            if !ids.is_empty() {
                insert_compacted_ids(
                    &mut tx,
                    &path,
                    &stream,
                    ids.iter().map(|id| (&id.event_id, id.seq)),
                )
                .await?;
            }
        }
        if state.was_empty {
            bind_stream(sqlx::query(schema::INSERT_STREAM), tenant, run_id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(at("record a new stream"))?;
        }
        tx.commit().await.map_err(at("commit an import"))?;
        Ok(missing.len())
    }
}

/// What one request of a group is answered.
enum Answer {
    Append(Result<Vec<AppendOutcome>>),
    Put,
}

/// A failure of a whole group, answered to each of its requests.
enum GroupFailure {
    Db(Arc<SqliteError>),
    Core(Error),
}

impl GroupFailure {
    /// The error one request of the group is answered.
    fn error(&self) -> Error {
        match self {
            Self::Db(err) => shared(err),
            Self::Core(Error::Corrupt { location, reason }) => Error::corrupt(location, reason),
            Self::Core(other) => Error::backend(crate::error::BACKEND, other.to_string()),
        }
    }
}

fn into_error(fail: Fail) -> Error {
    match fail {
        Fail::Db(err) => err.into(),
        Fail::Core(err) => err,
    }
}

/// Reads a stream's last seq and the seqs of `ids` it holds, with `sql`:
/// [`schema::STREAM_STATE`], possibly preceded by `BEGIN IMMEDIATE`.
async fn stream_state(
    conn: &mut SqliteConnection,
    path: &Arc<str>,
    sql: &str,
    tenant: &Tenant,
    run_id: &RunId,
    ids: Vec<&str>,
) -> std::result::Result<StreamState, Fail> {
    let db = |err| {
        SqliteError::driver_at(
            path,
            "read the stream's state",
            format_args!("{tenant}:{run_id}"),
            err,
        )
    };
    let rows = bind_stream(sqlx::query(sql), tenant, run_id.as_str())
        .bind(schema::json_array(ids))
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    let location = || format!("sqlite store {path}: seqs of {tenant}:{run_id}");
    let mut state = StreamState {
        last_seq: 0,
        was_empty: true,
        known: HashMap::new(),
    };
    for row in &rows {
        let kind: i64 = row.try_get(0).map_err(db)?;
        let seq = schema::from_sql_int(row.try_get(2).map_err(db)?, location)?;
        if kind == 0 {
            state.last_seq = seq;
            state.was_empty = false;
        } else {
            let id: String = row.try_get(1).map_err(db)?;
            // A live id wins over a compacted one (rows of kind 1 come
            // first).
            state.known.entry(id).or_insert(seq);
        }
    }
    Ok(state)
}

/// Inserts event rows, up to [`INSERT_CHUNK`] rows per statement; with
/// [`Commit::WithLast`] the last statement also commits. A failure names
/// `action` and the failing statement's rows ([`RowSpan`]).
async fn insert_rows(
    conn: &mut SqliteConnection,
    insert_sql: &InsertSql,
    path: &Arc<str>,
    action: &'static str,
    mut rows: Vec<EventRow<'_>>,
    commit: Commit,
) -> std::result::Result<(), SqliteError> {
    let mut chunks = Vec::with_capacity(rows.len().div_ceil(INSERT_CHUNK));
    while rows.len() > INSERT_CHUNK {
        let rest = rows.split_off(INSERT_CHUNK);
        chunks.push(std::mem::replace(&mut rows, rest));
    }
    chunks.push(rows);
    let count = chunks.len();
    for (index, chunk) in chunks.into_iter().enumerate() {
        let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
            continue;
        };
        let span = RowSpan {
            first: (first.tenant, first.run_id, first.seq),
            last: (last.tenant, last.run_id, last.seq),
        };
        let sql = if commit == Commit::WithLast && index + 1 == count {
            &insert_sql.commit[chunk.len() - 1]
        } else {
            &insert_sql.plain[chunk.len() - 1]
        };
        let mut query = sqlx::query(sql);
        for row in chunk {
            query = row.bind(query);
        }
        query
            .execute(&mut *conn)
            .await
            .map_err(|err| SqliteError::driver_at(path, action, span, err))?;
    }
    Ok(())
}

/// The first and last row of an insert statement, named in its error:
/// `acme/prod:run-1, seqs 4 to 9`, or both streams when the statement
/// spans several.
struct RowSpan<'a> {
    first: (&'a Tenant, &'a RunId, i64),
    last: (&'a Tenant, &'a RunId, i64),
}

impl std::fmt::Display for RowSpan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ((t1, r1, s1), (t2, r2, s2)) = (self.first, self.last);
        if (t1, r1) != (t2, r2) {
            write!(f, "{t1}:{r1}, seq {s1} to {t2}:{r2}, seq {s2}")
        } else if s1 == s2 {
            write!(f, "{t1}:{r1}, seq {s1}")
        } else {
            write!(f, "{t1}:{r1}, seqs {s1} to {s2}")
        }
    }
}

/// Compacts one stream inside the caller's transaction (CONTRACT §8-§11):
/// re-reads its snapshot floor, candidates and marker, merges the marker and
/// swaps it in. Returns how many events were pruned.
async fn compact_stream(
    conn: &mut SqliteConnection,
    insert_sql: &InsertSql,
    path: &Arc<str>,
    stream: &StreamKey,
    policy: &CompactionPolicy,
) -> std::result::Result<usize, Fail> {
    let (tenant, run_id) = (&stream.tenant, &stream.run_id);
    let run = run_id.as_str();
    let db = |action| move |err| SqliteError::driver_at(path, action, stream, err);
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
    // Events below the floor: at most seq floor - 1 (a stored floor is at
    // most i64::MAX, so this cannot overflow), any seq without a snapshot --
    // including i64::MAX itself.
    let highest = floor.map_or(i64::MAX, |floor| schema::saturating_sql_int(floor) - 1);
    let candidates = bind_stream(sqlx::query(schema::PRUNE_CANDIDATES), tenant, run)
        .bind(schema::saturating_sql_int(policy.cutoff_ms()))
        .bind(highest)
        .fetch_all(&mut *conn)
        .await
        .map_err(db("read compaction candidates"))?;
    let mut pruned = Vec::with_capacity(candidates.len());
    for row in &candidates {
        let record = schema::parse_event_row(row, path, (tenant, run_id))?;
        if policy.prunes(&record, floor) {
            pruned.push(record);
        }
    }
    if pruned.is_empty() {
        return Ok(0);
    }
    let old_marker = bind_stream(sqlx::query(schema::MARKER), tenant, run)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db("read the compaction marker"))?
        .map(|row| schema::parse_event_row(&row, path, (tenant, run_id)))
        .transpose()?;
    // The ids in the marker namespace the stream's ordinary events hold,
    // live or compacted: the new marker must not take one of them.
    let held = bind_stream(sqlx::query(schema::HELD_MARKER_IDS), tenant, run)
        .bind(COMPACTION_ID_PREFIX)
        .bind(schema::prefix_end(COMPACTION_ID_PREFIX))
        .fetch_all(&mut *conn)
        .await
        .map_err(db("read the ids in the marker namespace"))?
        .iter()
        .map(|row| row.try_get::<String, _>(0))
        .collect::<std::result::Result<HashSet<String>, _>>()
        .map_err(db("read the ids in the marker namespace"))?;
    let marker = merge_marker(
        tenant,
        run_id,
        old_marker.as_ref(),
        &pruned,
        policy.now_ms(),
        |id| Ok(held.contains(id.as_str())),
    )?;
    let doomed = pruned
        .iter()
        .chain(old_marker.as_ref())
        .map(|record| to_sql_int(record.seq, "seq"))
        .collect::<Result<Vec<_>>>()?;
    bind_stream(sqlx::query(schema::DELETE_SEQS), tenant, run)
        .bind(schema::json_int_array(doomed))
        .execute(&mut *conn)
        .await
        .map_err(db("delete compacted events"))?;
    let marker_row = EventRow::new(tenant, run_id, marker)?;
    insert_rows(
        conn,
        insert_sql,
        path,
        "write the compaction marker",
        vec![marker_row],
        Commit::Separately,
    )
    .await?;
    insert_compacted_ids(
        conn,
        path,
        stream,
        pruned.iter().map(|record| (&record.event_id, record.seq)),
    )
    .await?;
    Ok(pruned.len())
}

/// Deletes the snapshots of one stream that `select` picks from them in
/// snapshot order, inside the caller's transaction (CONTRACT §14). Returns
/// how many were deleted.
async fn prune_stream(
    conn: &mut SqliteConnection,
    path: &Arc<str>,
    stream: &StreamKey,
    select: impl FnOnce(&[SnapshotRecord]) -> Vec<usize>,
) -> std::result::Result<usize, Fail> {
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
    ordered.sort_by(runstore_core::snapshot_order);
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
    Ok(doomed.len())
}

/// Remembers compacted ids of a stream, in one statement.
async fn insert_compacted_ids<'a>(
    conn: &mut SqliteConnection,
    path: &Arc<str>,
    stream: &StreamKey,
    ids: impl Iterator<Item = (&'a EventId, u64)>,
) -> std::result::Result<(), Fail> {
    let pairs = ids
        .map(|(id, seq)| Ok((id.as_str(), to_sql_int(seq, "seq")?)))
        .collect::<Result<Vec<_>>>()?;
    let json = serde_json::to_string(&pairs).expect("pairs of a string and an integer serialize");
    bind_stream(
        sqlx::query(schema::INSERT_COMPACTED_IDS),
        &stream.tenant,
        stream.run_id.as_str(),
    )
    .bind(json)
    .execute(&mut *conn)
    .await
    .map_err(|err| SqliteError::driver_at(path, "remember compacted ids", stream, err))?;
    Ok(())
}

/// A stream key from a row of (org_id, workspace_id, deployment_id, run_id).
pub(crate) fn stream_from_row(row: &SqliteRow, path: &str) -> Result<StreamKey> {
    let column = |index: usize| -> Result<String> {
        row.try_get(index)
            .map_err(|err| Error::corrupt(format!("sqlite store {path}: stream key"), err))
    };
    schema::stream_from_columns(path, column(0)?, column(1)?, column(2)?, column(3)?)
}
