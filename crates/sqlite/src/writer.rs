//! The writer: one connection on its own thread that runs every write.
//!
//! Writes arrive as [`Job`]s on a queue. Appends and snapshot puts waiting
//! together are run as one group in one `BEGIN IMMEDIATE` transaction and
//! committed once (group commit): with 64 concurrent appenders, one sync
//! serves many appends. Each request is planned on its own
//! ([`plan_append`]), so one request's `Conflict` never affects another's;
//! a failure of the transaction itself fails every request of the group,
//! and nothing of it is written.
//!
//! `BEGIN IMMEDIATE` takes SQLite's write lock before anything is read, so
//! the stream state a plan sees cannot change before the commit, in this
//! process or any other (CONTRACT §3). SQLITE_BUSY from another process
//! holding the lock is waited out by SQLite's busy handler and retried here
//! until the busy timeout has passed; then the requests fail with a
//! retryable error naming the lock.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use runstore_core::{
    AppendOutcome, Error, EventId, EventRecord, Result, RunId, SnapshotId, StreamKey, Tenant,
    append::{plan_append, plan_import},
    compaction::{CompactionPolicy, compacted_ids, merge_marker},
    prune_selection,
};
use sqlx::{Connection, Row as _, SqliteConnection, sqlite::SqliteRow};
use tokio::sync::{mpsc, oneshot};

use crate::{
    conn::backoff,
    error::{SqliteError, shared},
    schema::{self, INSERT_CHUNK, bind_stream, to_json, to_sql_int},
};

/// How many unique-key violations a write re-plans before giving up.
const MAX_PLAN_ATTEMPTS: u32 = 3;
/// The most events one group transaction writes; more wait for the next.
const MAX_GROUP_EVENTS: usize = 8_192;
/// The most requests in one group transaction.
const MAX_GROUP_REQUESTS: usize = 1_024;

/// One write request.
pub(crate) enum Job {
    /// `append_batch`.
    Append(AppendJob),
    /// `put` of a snapshot.
    Put(PutJob),
    /// Compaction of some streams, in one transaction.
    Compact {
        streams: Vec<StreamKey>,
        policy: CompactionPolicy,
        reply: oneshot::Sender<Result<usize>>,
    },
    /// Store-wide snapshot prune.
    Prune {
        retention_ms: u64,
        keep_last_per_run: usize,
        now_ms: u64,
        reply: oneshot::Sender<Result<usize>>,
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
}

/// A failure inside a write transaction: a driver error (maybe retried) or
/// a contract error (answered as is).
enum Fail {
    Db(SqliteError),
    Core(Error),
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

    fn same_stream(&self, other: &Self) -> bool {
        self.tenant == other.tenant && self.run_id == other.run_id
    }
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
        }
    }

    /// Starts the writer thread; it runs until every sender is dropped.
    ///
    /// # Errors
    /// [`Error::Io`] when the thread or its runtime cannot start.
    pub(crate) fn spawn(self) -> Result<mpsc::UnboundedSender<Job>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| Error::io("start the sqlite writer's runtime", err))?;
        std::thread::Builder::new()
            .name("runstore-sqlite-writer".to_owned())
            .spawn(move || runtime.block_on(self.run(receiver)))
            .map_err(|err| Error::io("start the sqlite writer thread", err))?;
        Ok(sender)
    }

    async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        let mut held: Option<Job> = None;
        loop {
            let job = match held.take() {
                Some(job) => job,
                None => match jobs.recv().await {
                    Some(job) => job,
                    None => break,
                },
            };
            if !job.groupable() {
                self.run_exclusive(job).await;
                continue;
            }
            let mut weight = job.weight();
            let mut group = vec![job];
            while group.len() < MAX_GROUP_REQUESTS && weight < MAX_GROUP_EVENTS {
                match jobs.try_recv() {
                    Ok(job) if job.groupable() => {
                        weight += job.weight();
                        group.push(job);
                    }
                    Ok(job) => {
                        held = Some(job);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.run_group(group).await;
        }
        // Closing only releases resources; a failure leaves nothing to do.
        let _ = self.conn.close().await;
    }

    /// Whether to retry after `err` on attempt `attempt` of a write started
    /// at `started`; sleeps the backoff first when retrying SQLITE_BUSY.
    async fn should_retry(&self, err: &SqliteError, started: Instant, attempt: u32) -> bool {
        if err.is_busy() {
            if started.elapsed() >= self.busy_timeout {
                return false;
            }
            tokio::time::sleep(backoff(attempt)).await;
            return true;
        }
        err.is_unique_violation() && attempt < MAX_PLAN_ATTEMPTS
    }

    /// The error a write that gave up answers.
    fn give_up(
        &self,
        err: SqliteError,
        action: &'static str,
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
            SqliteError::Driver { source, .. } if crate::error::is_unique_violation(&source) => {
                SqliteError::UniqueAfterPlan {
                    path: self.path.clone(),
                    action,
                    attempts,
                    source,
                }
            }
            other => other,
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or runs out of
    /// retries; maps the final failure.
    async fn retrying<T>(
        &mut self,
        action: &'static str,
        mut attempt: impl AsyncFnMut(&mut Self) -> std::result::Result<T, Fail>,
    ) -> std::result::Result<T, Fail> {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match attempt(self).await {
                Err(Fail::Db(err)) => {
                    if self.should_retry(&err, started, attempts).await {
                        continue;
                    }
                    return Err(Fail::Db(self.give_up(err, action, started, attempts)));
                }
                other => return other,
            }
        }
    }

    async fn run_group(&mut self, group: Vec<Job>) {
        let result = self
            .retrying("append", async |writer| writer.try_group(&group).await)
            .await;
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
                    match job {
                        Job::Append(job) => {
                            let _ = job.reply.send(Err(fail.error()));
                        }
                        Job::Put(job) => {
                            let _ = job.reply.send(Err(fail.error()));
                        }
                        _ => unreachable!("groups hold appends and puts only"),
                    }
                }
            }
        }
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
            let planned = plan_append(
                &job.tenant,
                &job.run_id,
                state.last_seq,
                &job.events,
                job.expected_last_seq,
                |id| Ok(state.known.get(id.as_str()).copied()),
            )
            .and_then(|plan| {
                let new_rows = plan
                    .new_records
                    .into_iter()
                    .map(|record| EventRow::new(&job.tenant, &job.run_id, record))
                    .collect::<Result<Vec<_>>>()?;
                Ok((plan.outcomes, new_rows))
            });
            match planned {
                Ok((outcomes, new_rows)) => {
                    for row in &new_rows {
                        let seq = u64::try_from(row.seq).expect("assigned seqs are positive");
                        state.known.insert(row.event_id.clone(), seq);
                        state.last_seq = seq;
                    }
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
                    .map_err(db("record a new stream"))?;
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
                .map_err(db("store a snapshot"))?;
            }
        }
        if rows.is_empty() {
            sqlx::query("COMMIT")
                .execute(&mut self.conn)
                .await
                .map_err(db("commit"))?;
        } else {
            insert_rows(&mut self.conn, &self.insert_sql, p, rows, Commit::WithLast).await?;
        }
        Ok(answers)
    }

    async fn run_exclusive(&mut self, job: Job) {
        match job {
            Job::Compact {
                streams,
                policy,
                reply,
            } => {
                let result = self
                    .retrying("compact", async |writer| {
                        writer.try_compact(&streams, &policy).await
                    })
                    .await;
                let _ = reply.send(result.map_err(into_error));
            }
            Job::Prune {
                retention_ms,
                keep_last_per_run,
                now_ms,
                reply,
            } => {
                let result = self
                    .retrying("prune snapshots", async |writer| {
                        writer
                            .try_prune(retention_ms, keep_last_per_run, now_ms)
                            .await
                    })
                    .await;
                let _ = reply.send(result.map_err(into_error));
            }
            Job::Import {
                tenant,
                run_id,
                records,
                reply,
            } => {
                let result = self
                    .retrying("import a stream", async |writer| {
                        writer.try_import(&tenant, &run_id, &records).await
                    })
                    .await;
                let _ = reply.send(result.map_err(into_error));
            }
            Job::Append(_) | Job::Put(_) => unreachable!("appends and puts run in groups"),
        }
    }

    /// Compacts `streams` in one transaction (CONTRACT §8-§11); returns how
    /// many events were pruned.
    async fn try_compact(
        &mut self,
        streams: &[StreamKey],
        policy: &CompactionPolicy,
    ) -> std::result::Result<usize, Fail> {
        let path = self.path.clone();
        let p = &path;
        let db = |action| move |err| SqliteError::driver(p, action, err);
        let mut tx = self
            .conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db("begin a compaction transaction"))?;
        let mut pruned_total = 0;
        for stream in streams {
            let (tenant, run) = (&stream.tenant, stream.run_id.as_str());
            let floor: Option<i64> = bind_stream(sqlx::query(schema::SNAPSHOT_FLOOR), tenant, run)
                .fetch_one(&mut *tx)
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
            let candidates = bind_stream(sqlx::query(schema::PRUNE_CANDIDATES), tenant, run)
                .bind(schema::saturating_sql_int(policy.cutoff_ms()))
                .bind(floor.map_or(i64::MAX, schema::saturating_sql_int))
                .fetch_all(&mut *tx)
                .await
                .map_err(db("read compaction candidates"))?;
            let mut pruned = Vec::with_capacity(candidates.len());
            for row in &candidates {
                let record = schema::parse_event_row(row, &path, (tenant, &stream.run_id))?;
                if policy.prunes(&record, floor) {
                    pruned.push(record);
                }
            }
            if pruned.is_empty() {
                continue;
            }
            let old_marker = bind_stream(sqlx::query(schema::MARKER), tenant, run)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("read the compaction marker"))?
                .map(|row| schema::parse_event_row(&row, &path, (tenant, &stream.run_id)))
                .transpose()?;
            let marker = merge_marker(
                tenant,
                &stream.run_id,
                old_marker.as_ref(),
                &pruned,
                policy.now_ms(),
            )?;
            let doomed = pruned
                .iter()
                .chain(old_marker.as_ref())
                .map(|record| to_sql_int(record.seq, "seq"))
                .collect::<Result<Vec<_>>>()?;
            bind_stream(sqlx::query(schema::DELETE_SEQS), tenant, run)
                .bind(schema::json_int_array(doomed))
                .execute(&mut *tx)
                .await
                .map_err(db("delete compacted events"))?;
            let marker_row = EventRow::new(tenant, &stream.run_id, marker)?;
            insert_rows(
                &mut tx,
                &self.insert_sql,
                &path,
                vec![marker_row],
                Commit::Separately,
            )
            .await?;
            insert_compacted_ids(
                &mut tx,
                &path,
                tenant,
                run,
                pruned.iter().map(|record| (&record.event_id, record.seq)),
            )
            .await?;
            pruned_total += pruned.len();
        }
        tx.commit().await.map_err(db("commit a compaction"))?;
        Ok(pruned_total)
    }

    /// Deletes old snapshots store-wide in one transaction (CONTRACT §14).
    async fn try_prune(
        &mut self,
        retention_ms: u64,
        keep_last_per_run: usize,
        now_ms: u64,
    ) -> std::result::Result<usize, Fail> {
        let path = self.path.clone();
        let p = &path;
        let db = |action| move |err| SqliteError::driver(p, action, err);
        let cutoff = now_ms.saturating_sub(retention_ms);
        let mut tx = self
            .conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db("begin a prune transaction"))?;
        // Snapshot times are at most i64::MAX; a larger cutoff selects all.
        let candidates = match i64::try_from(cutoff) {
            Ok(cutoff) => sqlx::query(schema::SNAPSHOT_STREAMS_OLDER_THAN).bind(cutoff),
            Err(_) => sqlx::query(schema::ALL_SNAPSHOT_STREAMS),
        }
        .fetch_all(&mut *tx)
        .await
        .map_err(db("find streams with old snapshots"))?;
        let mut deleted = 0;
        for row in &candidates {
            let stream = stream_from_row(row, &path)?;
            let (tenant, run) = (&stream.tenant, stream.run_id.as_str());
            let rows = bind_stream(sqlx::query(schema::LIST_SNAPSHOTS), tenant, run)
                .fetch_all(&mut *tx)
                .await
                .map_err(db("list snapshots"))?;
            let mut ordered = Vec::with_capacity(rows.len());
            for row in &rows {
                let id: &str = row.try_get(0).map_err(db("list snapshots"))?;
                let text: &str = row.try_get(1).map_err(db("list snapshots"))?;
                ordered.push(schema::parse_snapshot(
                    text,
                    &path,
                    (tenant, &stream.run_id),
                    id,
                )?);
            }
            ordered.sort_by(runstore_core::snapshot_order);
            for index in prune_selection(&ordered, retention_ms, keep_last_per_run, now_ms) {
                bind_stream(sqlx::query(schema::DELETE_SNAPSHOT), tenant, run)
                    .bind(ordered[index].snapshot_id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db("delete a snapshot"))?;
                deleted += 1;
            }
        }
        tx.commit().await.map_err(db("commit a prune"))?;
        Ok(deleted)
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
        let db = |action| move |err| SqliteError::driver(p, action, err);
        let mut tx = self
            .conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db("begin an import transaction"))?;
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
        match insert_rows(&mut tx, &self.insert_sql, &path, rows, Commit::Separately).await {
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
                    tenant,
                    run_id.as_str(),
                    ids.iter().map(|id| (&id.event_id, id.seq)),
                )
                .await?;
            }
        }
        if state.was_empty {
            bind_stream(sqlx::query(schema::INSERT_STREAM), tenant, run_id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db("record a new stream"))?;
        }
        tx.commit().await.map_err(db("commit an import"))?;
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
    let db = |err| SqliteError::driver(path, "read the stream's state", err);
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

/// Inserts event rows: each statement holds up to [`INSERT_CHUNK`] rows of
/// one stream (the stream's columns are bound once per statement); with
/// [`Commit::WithLast`] the last statement also commits.
async fn insert_rows(
    conn: &mut SqliteConnection,
    insert_sql: &InsertSql,
    path: &Arc<str>,
    rows: Vec<EventRow<'_>>,
    commit: Commit,
) -> std::result::Result<(), SqliteError> {
    let mut statements: Vec<Vec<EventRow<'_>>> = Vec::new();
    for row in rows {
        match statements.last_mut() {
            Some(current) if current.len() < INSERT_CHUNK && current[0].same_stream(&row) => {
                current.push(row);
            }
            _ => statements.push(vec![row]),
        }
    }
    let count = statements.len();
    for (index, chunk) in statements.into_iter().enumerate() {
        let sql = if commit == Commit::WithLast && index + 1 == count {
            &insert_sql.commit[chunk.len() - 1]
        } else {
            &insert_sql.plain[chunk.len() - 1]
        };
        let (tenant, run_id) = (chunk[0].tenant, chunk[0].run_id);
        let mut query = bind_stream(sqlx::query(sql), tenant, run_id.as_str());
        for row in chunk {
            query = query
                .bind(row.seq)
                .bind(row.event_id)
                .bind(row.event_type)
                .bind(row.occurred_at_ms)
                .bind(row.is_marker)
                .bind(row.record);
        }
        query
            .execute(&mut *conn)
            .await
            .map_err(|err| SqliteError::driver(path, "insert events", err))?;
    }
    Ok(())
}

/// Remembers compacted ids of a stream, in one statement.
async fn insert_compacted_ids<'a>(
    conn: &mut SqliteConnection,
    path: &Arc<str>,
    tenant: &Tenant,
    run: &str,
    ids: impl Iterator<Item = (&'a EventId, u64)>,
) -> std::result::Result<(), Fail> {
    let pairs = ids
        .map(|(id, seq)| Ok((id.as_str(), to_sql_int(seq, "seq")?)))
        .collect::<Result<Vec<_>>>()?;
    let json = serde_json::to_string(&pairs).expect("pairs of a string and an integer serialize");
    bind_stream(sqlx::query(schema::INSERT_COMPACTED_IDS), tenant, run)
        .bind(json)
        .execute(&mut *conn)
        .await
        .map_err(|err| SqliteError::driver(path, "remember compacted ids", err))?;
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
