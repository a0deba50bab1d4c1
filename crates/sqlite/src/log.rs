//! [`EventLog`] for [`SqliteStore`]: writes go to the writer's queue, reads
//! to a reader connection.

use async_trait::async_trait;
use runstore_core::{
    AppendOutcome, EventId, EventLog, EventRecord, ReadQuery, Result, RunId, StreamKey, Tenant,
    append::check_run, compaction::CompactionPolicy,
};
use sqlx::Row as _;

use crate::{
    SqliteStore,
    error::SqliteError,
    schema::{self, bind_stream},
    writer::{AppendJob, Job, stream_from_row},
};

/// Streams compacted per write transaction: few enough that the write lock
/// is not held for long (appends of every process wait for it), enough to
/// share one sync among several streams.
const COMPACT_STREAMS_PER_TRANSACTION: usize = 16;

#[async_trait]
impl EventLog for SqliteStore {
    /// CONTRACT §1-§5. The request joins the writer's next group
    /// transaction; see the crate docs.
    ///
    /// # Cancel safety
    /// Once sent, the request is written or rejected whether or not the
    /// future is still awaited; either way all of it or none of it.
    async fn append_batch(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        events: &[EventRecord],
        expected_last_seq: Option<u64>,
    ) -> Result<Vec<AppendOutcome>> {
        check_run(run_id, events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.submit(
            Job::Append(AppendJob {
                tenant: tenant.clone(),
                run_id: run_id.clone(),
                events: events.to_vec(),
                expected_last_seq,
                reply,
            }),
            answer,
        )
        .await
    }

    async fn read(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        query: ReadQuery,
    ) -> Result<Vec<EventRecord>> {
        let after = query.after_seq.unwrap_or(0);
        let Ok(after) = i64::try_from(after) else {
            // No stored seq exceeds i64::MAX.
            return Ok(Vec::new());
        };
        let limit = query
            .effective_limit()
            .map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX));
        let before = query
            .before_seq
            .and_then(|before| i64::try_from(before).ok());
        // Index into `schema::READ_WINDOWS` and `read_sql`.
        let window = 2 * usize::from(query.tail) + usize::from(before.is_some());
        let statement = |sql| {
            let statement = bind_stream(sqlx::query(sql), tenant, run_id.as_str())
                .bind(after)
                .bind(limit);
            match before {
                Some(before) => statement.bind(before),
                None => statement,
            }
        };
        let mut reader = self.readers().get().await?;
        if usize::try_from(limit).is_ok_and(|limit| limit <= schema::AGGREGATED_READ_MAX) {
            // A window that cannot be aggregated (past SQLite's string
            // limit) or does not parse as a whole is read again row by row,
            // which names the record at fault.
            let row = statement(&self.inner.read_sql[window])
                .fetch_one(reader.conn())
                .await
                .ok();
            if let Some(mut records) = row.and_then(|row| parse_window(&row, query.tail)) {
                if query.tail {
                    records.reverse();
                }
                return Ok(records);
            }
        }
        let rows = statement(schema::READ_WINDOWS[window])
            .fetch_all(reader.conn())
            .await
            .map_err(|err| SqliteError::driver(&self.inner.path, "read events", err))?;
        drop(reader);
        let mut records = rows
            .iter()
            .map(|row| schema::parse_event_row(row, self.path(), (tenant, run_id)))
            .collect::<Result<Vec<_>>>()?;
        if query.tail {
            records.reverse();
        }
        Ok(records)
    }

    async fn next_seq(&self, tenant: &Tenant, run_id: &RunId) -> Result<u64> {
        let mut reader = self.readers().get().await?;
        let last: Option<i64> = bind_stream(sqlx::query(schema::LAST_SEQ), tenant, run_id.as_str())
            .fetch_optional(reader.conn())
            .await
            .map_err(|err| SqliteError::driver(&self.inner.path, "read the last seq", err))?
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(|err| SqliteError::driver(&self.inner.path, "read the last seq", err))?;
        let last = last
            .map(|seq| {
                schema::from_sql_int(seq, || {
                    format!(
                        "sqlite store {}: last seq of {tenant}:{run_id}",
                        self.path()
                    )
                })
            })
            .transpose()?;
        Ok(last.unwrap_or(0) + 1)
    }

    async fn seq_of(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        event_id: &EventId,
    ) -> Result<Option<u64>> {
        let mut reader = self.readers().get().await?;
        let seq: Option<i64> = bind_stream(sqlx::query(schema::SEQ_OF), tenant, run_id.as_str())
            .bind(event_id.as_str())
            .fetch_optional(reader.conn())
            .await
            .map_err(|err| SqliteError::driver(&self.inner.path, "look up an event id", err))?
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(|err| SqliteError::driver(&self.inner.path, "look up an event id", err))?;
        seq.map(|seq| {
            schema::from_sql_int(seq, || {
                format!(
                    "sqlite store {}: seq of {event_id:?} in {tenant}:{run_id}",
                    self.path()
                )
            })
        })
        .transpose()
    }

    async fn list_runs(&self, tenant: &Tenant) -> Result<Vec<RunId>> {
        let mut reader = self.readers().get().await?;
        let rows = sqlx::query(schema::LIST_RUNS)
            .bind(tenant.org_id())
            .bind(tenant.workspace_id())
            .bind(schema::deployment_column(tenant))
            .fetch_all(reader.conn())
            .await
            .map_err(|err| SqliteError::driver(&self.inner.path, "list runs", err))?;
        drop(reader);
        let mut runs = rows
            .iter()
            .map(|row| {
                let location = || format!("sqlite store {}: runs of {tenant}", self.path());
                let run: String = row
                    .try_get(0)
                    .map_err(|err| runstore_core::Error::corrupt(location(), err))?;
                RunId::new(run).map_err(|err| runstore_core::Error::corrupt(location(), err))
            })
            .collect::<Result<Vec<_>>>()?;
        runs.sort();
        Ok(runs)
    }

    /// CONTRACT §8-§11: finds the streams with events older than the
    /// cutoff, then compacts them in write transactions of up to 16
    /// streams each, re-reading every stream's state inside its
    /// transaction.
    ///
    /// # Cancel safety
    /// Every transaction sent is committed or rolled back as a whole.
    async fn compact(&self, retention_ms: u64, now_ms: u64) -> Result<usize> {
        let Some(policy) = CompactionPolicy::new(retention_ms, now_ms) else {
            return Ok(0);
        };
        let mut streams = {
            let mut reader = self.readers().get().await?;
            let rows = sqlx::query(schema::STREAMS_WITH_OLD_EVENTS)
                .bind(schema::saturating_sql_int(policy.cutoff_ms()))
                .fetch_all(reader.conn())
                .await
                .map_err(|err| {
                    SqliteError::driver(&self.inner.path, "find streams to compact", err)
                })?;
            rows.iter()
                .map(|row| stream_from_row(row, self.path()))
                .collect::<Result<Vec<_>>>()?
        };
        streams.sort();
        let mut pruned = 0;
        for chunk in streams.chunks(COMPACT_STREAMS_PER_TRANSACTION) {
            let (reply, answer) = tokio::sync::oneshot::channel();
            pruned += self
                .submit(
                    Job::Compact {
                        streams: chunk.to_vec(),
                        policy,
                        reply,
                    },
                    answer,
                )
                .await?;
        }
        Ok(pruned)
    }

    async fn streams(&self) -> Result<Vec<StreamKey>> {
        self.list_streams(schema::ALL_STREAMS, "list streams").await
    }

    async fn import_stream(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        records: &[EventRecord],
    ) -> Result<usize> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.submit(
            Job::Import {
                tenant: tenant.clone(),
                run_id: run_id.clone(),
                records: records.to_vec(),
                reply,
            },
            answer,
        )
        .await
    }
}

/// The records of an aggregated window row ([`schema::aggregated_read`]) in
/// the window's order (descending seqs for a tail), if both arrays parse,
/// every record's seq is its row's and the seqs run in that order.
fn parse_window(row: &sqlx::sqlite::SqliteRow, tail: bool) -> Option<Vec<EventRecord>> {
    let seqs: &str = row.try_get(0).ok()?;
    let records: Option<&str> = row.try_get(1).ok()?;
    let seqs: Vec<u64> = serde_json::from_str(seqs).ok()?;
    let records: Vec<EventRecord> = match records {
        Some(text) => serde_json::from_str(text).ok()?,
        None => Vec::new(),
    };
    let ordered = seqs.windows(2).all(|pair| {
        if tail {
            pair[0] > pair[1]
        } else {
            pair[0] < pair[1]
        }
    });
    let matching = ordered
        && seqs.len() == records.len()
        && seqs
            .iter()
            .zip(&records)
            .all(|(seq, record)| *seq == record.seq);
    matching.then_some(records)
}
