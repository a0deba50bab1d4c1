//! [`EventLog`] for [`SqliteStore`]: writes go to the writer's queue, reads
//! to a reader connection.

use async_trait::async_trait;
use runstore_core::{
    AppendOutcome, EventId, EventLog, EventRecord, FeedPosition, FeedRecord, FeedSignal,
    MaintenanceReport, ReadQuery, Result, RunId, StreamKey, Tenant,
    raw::compaction::CompactionPolicy,
};
use sqlx::Row as _;

use crate::{
    SqliteStore,
    error::SqliteError,
    schema::{self, bind_stream},
    writer::{AppendJob, Deletion, Job, Maintenance},
};

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
        // Before anything is queued: a refused request costs the writer
        // nothing and writes nothing.
        self.inner.options.limits.check_append(run_id, events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = runstore_core::raw::group::reply();
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
                self.aggregated_read();
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
        // A stored seq is at most i64::MAX, so the next one fits a u64 (a
        // full stream answers 2^63, as the model does).
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

    /// CONTRACT §8-§11, §25: finds the streams with events older than the
    /// cutoff, then compacts them in write transactions of up to 16 streams
    /// each, re-reading every stream's state inside its transaction. Should
    /// a transaction fail, its streams are compacted again one by one, so
    /// only a stream that fails alone is reported as failed.
    ///
    /// # Cancel safety
    /// Every transaction sent is committed or rolled back as a whole.
    async fn compact(&self, retention_ms: u64, now_ms: u64) -> Result<MaintenanceReport> {
        let Some(policy) = CompactionPolicy::new(retention_ms, now_ms)? else {
            return Ok(MaintenanceReport::default());
        };
        let cutoff = schema::saturating_sql_int(policy.cutoff_ms());
        let streams = self
            .list_streams(
                sqlx::query(schema::STREAMS_WITH_OLD_EVENTS).bind(cutoff),
                "find streams to compact",
            )
            .await?;
        self.maintain(Maintenance::Compact(policy), &streams).await
    }

    async fn streams(&self) -> Result<Vec<StreamKey>> {
        self.list_streams(sqlx::query(schema::ALL_STREAMS), "list streams")
            .await
    }

    /// CONTRACT §23: checked with the store's limits, then planned with
    /// [`plan_import`](runstore_core::raw::append::plan_import) in the writer's
    /// transaction.
    async fn import_stream(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        records: &[EventRecord],
    ) -> Result<usize> {
        self.inner.options.limits.check_import(run_id, records)?;
        let (reply, answer) = runstore_core::raw::group::reply();
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

    /// CONTRACT §29: one range scan of the tenant's `events_by_feed` keys
    /// after `after`, each record found by its primary key, on a reader
    /// connection (one snapshot). Positions are taken inside the write
    /// transaction that stores the records, under SQLite's write lock, so a
    /// transaction this snapshot does not see takes positions above every
    /// one it does: the feed is lossless, across processes too.
    ///
    /// # Cancel safety
    /// Reads change nothing; dropping the future is harmless.
    async fn read_feed(
        &self,
        tenant: &Tenant,
        after: FeedPosition,
        limit: usize,
    ) -> Result<Vec<FeedRecord>> {
        let (high, low) = after.parts();
        // Positions here are single counters, at most i64::MAX: none is
        // after a larger position.
        let Ok(after) = i64::try_from(low) else {
            return Ok(Vec::new());
        };
        if high != 0 || limit == 0 {
            return Ok(Vec::new());
        }
        let sql_limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let statement = |sql| {
            sqlx::query(sql)
                .bind(tenant.org_id())
                .bind(tenant.workspace_id())
                .bind(schema::deployment_column(tenant))
                .bind(after)
                .bind(sql_limit)
        };
        let mut reader = self.readers().get().await?;
        if limit <= schema::AGGREGATED_READ_MAX {
            // As in `read`: a window that cannot be aggregated or parsed as
            // a whole is read again row by row, which names the record at
            // fault.
            let row = statement(&self.inner.feed_sql)
                .fetch_one(reader.conn())
                .await
                .ok();
            if let Some(records) = row.and_then(|row| parse_feed_window(&row)) {
                self.aggregated_read();
                return Ok(records);
            }
        }
        let rows = statement(schema::READ_FEED)
            .fetch_all(reader.conn())
            .await
            .map_err(|err| SqliteError::driver(&self.inner.path, "read the feed", err))?;
        drop(reader);
        rows.iter()
            .map(|row| parse_feed_row(row, self.path(), tenant))
            .collect()
    }

    fn feed_signal(&self) -> Option<FeedSignal> {
        Some(self.inner.signal.clone())
    }

    /// CONTRACT §27: one `BEGIN IMMEDIATE` transaction on the writer, queued
    /// behind the appends already waiting (so ordered with their group
    /// commits) and holding SQLite's write lock (so ordered with other
    /// processes): reads the stream's last seq, deletes its `events` and
    /// `compacted_ids` rows and writes its erasure marker at that seq. An
    /// empty or already erased run is left as it is and answers 0.
    ///
    /// # Cancel safety
    /// Once sent, the deletion is committed or rolled back as a whole
    /// whether or not the future is still awaited.
    async fn delete_run(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
        let (reply, answer) = runstore_core::raw::group::reply();
        self.submit(
            Job::Delete {
                target: Deletion::Run,
                tenant: tenant.clone(),
                run_id: run_id.clone(),
                reply,
            },
            answer,
        )
        .await
    }
}

/// The two arrays of an aggregated row ([`schema::aggregated_read`]): the
/// key column's values and the records, if both parse and are as long as
/// each other.
fn parse_aggregated(row: &sqlx::sqlite::SqliteRow) -> Option<(Vec<u64>, Vec<EventRecord>)> {
    let keys: &str = row.try_get(0).ok()?;
    let records: Option<&str> = row.try_get(1).ok()?;
    let keys: Vec<u64> = serde_json::from_str(keys).ok()?;
    let records: Vec<EventRecord> = match records {
        Some(text) => serde_json::from_str(text).ok()?,
        None => Vec::new(),
    };
    (keys.len() == records.len()).then_some((keys, records))
}

/// The records of an aggregated window row ([`schema::aggregated_read`]) in
/// the window's order (descending seqs for a tail), if both arrays parse,
/// every record's seq is its row's and the seqs run in that order.
fn parse_window(row: &sqlx::sqlite::SqliteRow, tail: bool) -> Option<Vec<EventRecord>> {
    let (seqs, records) = parse_aggregated(row)?;
    let ordered = seqs.windows(2).all(|pair| {
        if tail {
            pair[0] > pair[1]
        } else {
            pair[0] < pair[1]
        }
    });
    let matching = ordered
        && seqs
            .iter()
            .zip(&records)
            .all(|(seq, record)| *seq == record.seq);
    matching.then_some(records)
}

/// The records of an aggregated feed row ([`schema::aggregated_read`] of
/// [`schema::READ_FEED`]), if both arrays parse, are as long as each other
/// and the positions ascend.
fn parse_feed_window(row: &sqlx::sqlite::SqliteRow) -> Option<Vec<FeedRecord>> {
    let (positions, records) = parse_aggregated(row)?;
    positions.windows(2).all(|pair| pair[0] < pair[1]).then(|| {
        positions
            .into_iter()
            .zip(records)
            .map(|(position, record)| FeedRecord {
                position: FeedPosition::new(position),
                record,
            })
            .collect()
    })
}

/// A feed row `(feed_pos, record)` of `tenant`.
fn parse_feed_row(
    row: &sqlx::sqlite::SqliteRow,
    path: &str,
    tenant: &Tenant,
) -> Result<FeedRecord> {
    let location = |position: &dyn std::fmt::Display| {
        format!("sqlite store {path}: feed of {tenant} at position {position}")
    };
    let position: i64 = row
        .try_get(0)
        .map_err(|err| runstore_core::Error::corrupt(location(&"?"), err))?;
    let text: &str = row
        .try_get(1)
        .map_err(|err| runstore_core::Error::corrupt(location(&position), err))?;
    let record = schema::parse(text, || location(&position))?;
    let position = schema::from_sql_int(position, || location(&position))?;
    Ok(FeedRecord {
        position: FeedPosition::new(position),
        record,
    })
}

#[cfg(test)]
mod tests {
    use runstore_core::{
        EventLogExt as _,
        validate::{MAX_DEPTH, nested_arrays},
    };

    use super::*;

    /// How deep JSON text without strings nests.
    fn depth(text: &str) -> usize {
        let (mut depth, mut deepest) = (0_usize, 0);
        for byte in text.bytes() {
            match byte {
                b'[' | b'{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b']' | b'}' => depth -= 1,
                _ => {}
            }
        }
        deepest
    }

    // CONTRACT §22: a record at the deepest nesting the limits allow reads
    // back through the aggregated window, whose array wraps it one level
    // deeper, and through the per-row read; `read` would fall back from the
    // first to the second silently, so each is run here on its own.
    #[tokio::test]
    async fn the_deepest_record_reads_through_both_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db.sqlite"))
            .await
            .unwrap();
        let tenant = Tenant::local();
        let run = RunId::new("deep").unwrap();
        let deepest = EventRecord::new(
            &tenant,
            run.clone(),
            EventId::new("deepest").unwrap(),
            "t",
            1,
        )
        .with_payload(nested_arrays(MAX_DEPTH - 1));
        store.append(&tenant, &deepest).await.unwrap();

        let mut reader = store.readers().get().await.unwrap();
        let bind = |sql| {
            bind_stream(sqlx::query(sql), &tenant, run.as_str())
                .bind(0_i64)
                .bind(10_i64)
        };
        let row = bind(&store.inner.read_sql[0])
            .fetch_one(reader.conn())
            .await
            .unwrap();
        let text: &str = row.try_get(1).unwrap();
        assert_eq!(
            depth(text),
            MAX_DEPTH + 1,
            "the window's array adds a level"
        );
        let aggregated = parse_window(&row, false).expect("the aggregated window parses");
        assert_eq!(aggregated[0].payload, deepest.payload);

        let rows = bind(schema::READ_WINDOWS[0])
            .fetch_all(reader.conn())
            .await
            .unwrap();
        let record = schema::parse_event_row(&rows[0], store.path(), (&tenant, &run)).unwrap();
        assert_eq!(record, aggregated[0]);
    }
}
