//! The general path: a group of appends and snapshot puts in one
//! `BEGIN IMMEDIATE` transaction.
//!
//! [`Writer::run_group`] offers the group to the guarded path first
//! ([`super::guarded`]); otherwise it reads each stream's state, plans every
//! request in order against it ([`StreamState::plan`]), records new streams,
//! stores the snapshots, inserts the rows and commits once, retrying busy
//! and unique-key failures ([`retrying!`](retrying)). A request's contract
//! error is its own answer; a failure of the transaction fails the whole
//! group ([`GroupFailure`]).

use std::{collections::HashMap, sync::Arc};

use runstore_core::{AppendOutcome, Error, Result, RunId, StreamKey, Tenant};

use super::{
    Job, PutJob, Writer,
    retry::{Fail, Replan, into_error, retrying},
    rows::{Commit, EventRow, insert_rows},
    state::{StreamState, stream_state},
};
use crate::{
    error::{SqliteError, shared},
    schema::{self, bind_stream},
};

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

impl Writer {
    pub(super) async fn run_group(&mut self, group: Vec<Job>) {
        let requests = group.len();
        let events = group.iter().map(|job| job.joins().events()).sum();
        let began = std::time::Instant::now();
        self.run_group_once(group).await;
        runstore_core::telemetry::group_committed("sqlite", requests, events, began.elapsed());
    }

    async fn run_group_once(&mut self, group: Vec<Job>) {
        let Some(group) = self.try_lone_put(group).await else {
            return;
        };
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
                            job.reply.send(result);
                        }
                        (Job::Put(job), Answer::Put) => {
                            job.reply.send(Ok(()));
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

    /// A group of one snapshot put: its upsert alone, as its own
    /// (autocommit) write transaction, committed and synced like any other:
    /// on the caller's thread where the runtime allows it ([`super::caller`]),
    /// else one round trip to the connection instead of three (`BEGIN
    /// IMMEDIATE`, the upsert, `COMMIT`). Returns any other group
    /// unanswered.
    async fn try_lone_put(&mut self, group: Vec<Job>) -> Option<Vec<Job>> {
        if !matches!(group.as_slice(), [Job::Put(_)]) {
            return Some(group);
        }
        let Some(Job::Put(put)) = group.into_iter().next() else {
            unreachable!("a group of one put");
        };
        let path = self.path.clone();
        if self.feed.commit_delay.is_none() && self.caller.put(&put).is_some() {
            put.reply.send(Ok(()));
            return None;
        }
        let result = retrying!(
            self,
            "store a snapshot",
            Replan::No,
            put_snapshot(&mut self.conn, &path, &put)
                .await
                .map_err(Fail::Db)
        );
        // The caller may have stopped waiting; the write stands either way.
        put.reply.send(result.map_err(into_error));
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
                put_snapshot(&mut self.conn, p, put).await?;
            }
        }
        if rows.is_empty() {
            sqlx::query("COMMIT")
                .execute(&mut self.conn)
                .await
                .map_err(db("commit"))?;
        } else {
            let commit = self.last_insert_commits();
            insert_rows(
                &mut self.conn,
                &self.insert_sql,
                p,
                "insert events",
                rows,
                commit,
            )
            .await?;
            if commit == Commit::Separately {
                self.commit_records("commit").await?;
            }
            self.records_committed();
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
}

/// Runs the snapshot upsert of `put` on `conn` (inside the caller's
/// transaction, or as its own).
async fn put_snapshot(
    conn: &mut sqlx::SqliteConnection,
    path: &Arc<str>,
    put: &PutJob,
) -> std::result::Result<(), SqliteError> {
    bind_stream(
        sqlx::query(schema::PUT_SNAPSHOT),
        &put.tenant,
        put.run_id.as_str(),
    )
    .bind(put.snapshot_id.as_str())
    .bind(put.seq)
    .bind(put.created_at_ms)
    .bind(put.record.as_str())
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(|err| {
        SqliteError::driver_at(
            path,
            "store a snapshot",
            format_args!(
                "{}:{}, snapshot {:?}",
                put.tenant,
                put.run_id,
                put.snapshot_id.as_str()
            ),
            err,
        )
    })
}
