//! The guarded path: a group of appends to one stream, in one statement.
//!
//! The writer remembers the last seq its own commits left each stream at
//! ([`Writer::remember`]). A group of appends to one remembered stream is
//! planned against that seq without reading the database, and written by
//! one guarded insert that is its own transaction, in which its rows also
//! take the tenant's next feed positions; the guard refuses the whole
//! statement if the stream moved on. What the path cannot answer goes
//! back, unwritten, to the general path ([`super::general`]).

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use sqlx::sqlite::SqliteQueryResult;

use runstore_core::StreamKey;

use super::{Job, Writer, rows::bind_rows, state::StreamState};
use crate::{
    error::{SqliteError, shared},
    schema::{self, INSERT_CHUNK, bind_stream, to_sql_int},
};

/// The most streams whose last seq the writer remembers for the guarded
/// path; past it the memory starts over.
const MAX_REMEMBERED_STREAMS: usize = 65_536;

impl Writer {
    /// Remembers `stream`'s last seq after a commit of this writer.
    pub(super) fn remember(&mut self, stream: StreamKey, last_seq: u64) {
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
    pub(super) async fn try_guarded_group(&mut self, group: Vec<Job>) -> Option<Vec<Job>> {
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
        let query = bind_rows(sqlx::query(&self.guarded_sql[count - 1]), tenant, rows);
        let query = bind_stream(query, tenant, run_id.as_str()).bind(guard_seq);
        let query = bind_stream(query, tenant, run_id.as_str()).bind(ids);
        let started = Instant::now();
        let delayed = self.feed.commit_delay.is_some();
        let written = if delayed {
            // The test hook: the statement inside a transaction of its own,
            // so that the commit can wait.
            begin_delayed(&mut self.conn, query).await
        } else {
            query.execute(&mut self.conn).await
        }
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
        let written = written.ok() == u64::try_from(count).ok();
        if delayed {
            let committed = if written {
                self.commit_records("commit").await
            } else {
                Ok(())
            };
            if !written || committed.is_err() {
                // "No transaction is active" is the answer when it did not
                // begin.
                let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
            }
            if let Err(err) = committed {
                let err = Arc::new(err);
                for job in group {
                    job.fail(shared(&err));
                }
                return None;
            }
        }
        if !written {
            self.last_seqs.remove(&stream);
            return Some(group);
        }
        self.records_committed();
        self.guarded_groups.fetch_add(1, Ordering::Relaxed);
        self.remember(stream, state.last_seq);
        for (job, outcomes) in group.into_iter().zip(outcomes) {
            if let Job::Append(job) = job {
                // The caller may have stopped waiting; the write stands
                // either way.
                job.reply.send(Ok(outcomes));
            }
        }
        None
    }
}

/// The test hook's form of the guarded statement: `BEGIN IMMEDIATE`, then
/// the statement, leaving the transaction open for
/// [`Writer::commit_records`].
async fn begin_delayed(
    conn: &mut sqlx::SqliteConnection,
    query: crate::schema::SqlQuery<'_>,
) -> Result<SqliteQueryResult, sqlx::Error> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    query.execute(conn).await
}
