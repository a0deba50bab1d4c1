//! [`EventLog`] on PostgreSQL.

use std::{
    collections::{HashMap, HashSet},
    fmt,
};

use async_trait::async_trait;
use runstore_core::{
    AppendOutcome, Error, EventId, EventLog, EventRecord, FeedPosition, FeedRecord, FeedSignal,
    MaintenanceReport, ReadQuery, Result, RunId, StreamKey, Tenant,
    raw::append::{plan_append, plan_import},
    raw::compaction::{COMPACTION_ID_PREFIX, CompactionPolicy, compacted_ids, merge_marker},
    raw::erasure::erasure_marker,
};
use sqlx::PgConnection;

use crate::{
    PostgresStore,
    error::{self, SqlContext, TxError, UNIQUE_VIOLATION},
    group::retrying,
    keys::{self, StreamCols},
    lone::Lone,
    streams,
};

/// A stream's id from its key hash, as a scalar subquery: the planner runs
/// it once and then scans `events` by its primary key, in seq order.
const STREAM_ID: &str = "(SELECT stream_id FROM streams WHERE key_hash = $1)";

const KNOWN_IDS: &str = "SELECT event_id, seq FROM events WHERE stream_id = $1 AND event_id = ANY($2) \
     UNION ALL \
     SELECT event_id, seq FROM compacted_ids WHERE stream_id = $1 AND event_id = ANY($2)";

/// Inserts a stream's records (their `tx` and `feed_seq` from the columns'
/// defaults, `feed_seq` taken row by row in the order `UNNEST` gives them,
/// which is seq order) and moves its last seq; answers the transaction's id.
const INSERT_EVENTS: &str = "WITH inserted AS ( \
       INSERT INTO events (stream_id, tenant_key, seq, event_id, is_marker, occurred_at_ms, record) \
       SELECT $1, $8, * FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::BOOLEAN[], $5::BIGINT[], $6::TEXT[]) \
     ) \
     UPDATE streams SET last_seq = GREATEST(last_seq, $7) WHERE stream_id = $1 \
     RETURNING txid_current()";

/// Locks an existing stream (its advisory lock, then its row) as appends
/// and compaction do, without creating it: `(stream_id, last_seq)`.
const LOCK_EXISTING: &str = streams::LOCK;

/// Whether the stream holds an ordinary event, and whether it remembers a
/// compacted id: two lookups by primary key prefix.
const ERASABLE: &str = "SELECT \
       EXISTS (SELECT 1 FROM events WHERE stream_id = $1 AND NOT is_marker), \
       EXISTS (SELECT 1 FROM compacted_ids WHERE stream_id = $1)";

/// Deletes every record and every compacted id of the stream in one
/// statement; answers how many of the records were ordinary events.
const DELETE_STREAM: &str = "WITH records AS ( \
       DELETE FROM events WHERE stream_id = $1 RETURNING is_marker \
     ), ids AS ( \
       DELETE FROM compacted_ids WHERE stream_id = $1 \
     ) \
     SELECT count(*) FILTER (WHERE NOT is_marker) FROM records";

const INSERT_COMPACTED_IDS: &str = "INSERT INTO compacted_ids (stream_id, event_id, seq) \
     SELECT $1, * FROM UNNEST($2::TEXT[], $3::BIGINT[]) ON CONFLICT DO NOTHING";

/// Rows ready to bind as arrays, one entry per record.
#[derive(Default)]
pub(crate) struct EventRows {
    seqs: Vec<i64>,
    event_ids: Vec<String>,
    markers: Vec<bool>,
    occurred: Vec<i64>,
    records: Vec<String>,
    /// Ids that markers among the records remember, with their seqs.
    compacted: (Vec<String>, Vec<i64>),
}

impl EventRows {
    pub(crate) fn new<'a>(records: impl IntoIterator<Item = &'a EventRecord>) -> Result<Self> {
        let mut rows = Self::default();
        for record in records {
            rows.seqs.push(keys::to_i64("seq", record.seq)?);
            rows.event_ids.push(record.event_id.as_str().to_owned());
            rows.markers.push(record.is_compaction_marker());
            rows.occurred.push(keys::clamp_i64(record.occurred_at_ms));
            rows.records.push(
                serde_json::to_string(record)
                    .map_err(|err| Error::invalid(format!("event is not serialisable: {err}")))?,
            );
            // A marker's ids are found by seq_of and the duplicate check
            // (CONTRACT §2, §10). A malformed one is refused before writing.
            for id in compacted_ids(record).map_err(|err| Error::invalid(err.to_string()))? {
                rows.compacted.0.push(id.event_id.into_string());
                rows.compacted.1.push(keys::to_i64("seq", id.seq)?);
            }
        }
        Ok(rows)
    }

    fn last_seq(&self) -> i64 {
        self.seqs.last().copied().unwrap_or(0)
    }

    /// Inserts the rows into the stream `stream_id` of the tenant whose
    /// hash `cols` holds; answers the transaction's id.
    pub(crate) async fn insert(
        self,
        conn: &mut PgConnection,
        stream_id: i64,
        cols: &StreamCols<'_>,
    ) -> Result<i64, TxError> {
        let last_seq = self.last_seq();
        let (txid,): (i64,) = sqlx::query_as(INSERT_EVENTS)
            .bind(stream_id)
            .bind(&self.seqs)
            .bind(&self.event_ids)
            .bind(&self.markers)
            .bind(&self.occurred)
            .bind(&self.records)
            .bind(last_seq)
            .bind(keys::tenant_key(&cols.tenant_hash))
            .fetch_one(&mut *conn)
            .await
            .during("inserting events")?;
        if !self.compacted.0.is_empty() {
            sqlx::query(INSERT_COMPACTED_IDS)
                .bind(stream_id)
                .bind(&self.compacted.0)
                .bind(&self.compacted.1)
                .execute(&mut *conn)
                .await
                .during("inserting compacted ids")?;
        }
        Ok(txid)
    }
}

/// The seqs under which `ids` are stored in the stream `stream` (its id and
/// name), live or compacted.
pub(crate) async fn known_ids(
    conn: &mut PgConnection,
    stream_id: i64,
    stream: &(dyn fmt::Display + Sync),
    ids: &[&str],
) -> Result<HashMap<String, u64>, TxError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(KNOWN_IDS)
        .bind(stream_id)
        .bind(ids)
        .fetch_all(conn)
        .await
        .during("looking up event ids")?;
    let mut known = HashMap::with_capacity(rows.len());
    for (id, seq) in rows {
        let seq = keys::to_u64(|| format!("postgres stream {stream} event {id:?}"), seq)?;
        // Live ids come first; a live id wins over a remembered one.
        known.entry(id).or_insert(seq);
    }
    Ok(known)
}

pub(crate) fn distinct_ids(records: &[EventRecord]) -> Vec<&str> {
    let mut ids: Vec<&str> = records.iter().map(|r| r.event_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

impl PostgresStore {
    fn decode_event(&self, stream: &dyn fmt::Display, seq: i64, text: &str) -> Result<EventRecord> {
        serde_json::from_str(text).map_err(|err| {
            Error::corrupt(self.location("events", stream, format!("seq {seq}")), err)
        })
    }

    /// One attempt at an append: a lone new event in one statement
    /// ([`Lone`], `append_one`), and any request the fast path does not
    /// take or declines on the general path ([`Self::append_general`]).
    pub(crate) async fn append_once(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        cols: &StreamCols<'_>,
        events: &[EventRecord],
        expected_last_seq: Option<u64>,
    ) -> Result<Vec<AppendOutcome>, TxError> {
        if let Some(lone) = Lone::new(tenant, run_id, events, expected_last_seq)
            && let Some(outcomes) = self.append_lone(cols, &lone).await?
        {
            return Ok(outcomes);
        }
        self.append_general(tenant, run_id, cols, events, expected_last_seq)
            .await
    }

    /// One attempt at an append on the general path, in one transaction:
    /// lock the stream row, look the ids up, plan with the shared rules,
    /// insert, commit.
    pub(crate) async fn append_general(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        cols: &StreamCols<'_>,
        events: &[EventRecord],
        expected_last_seq: Option<u64>,
    ) -> Result<Vec<AppendOutcome>, TxError> {
        let mut tx = self
            .pool_ref()
            .begin()
            .await
            .during("beginning an append")?;
        let (stream_id, last_seq) = streams::lock(&mut tx, cols).await?;
        let last_seq = keys::to_u64(|| self.location("streams", cols, "last_seq"), last_seq)?;
        // Ids are only ever stored in a stream that has a last seq.
        let known = if last_seq == 0 {
            HashMap::new()
        } else {
            known_ids(&mut tx, stream_id, cols, &distinct_ids(events)).await?
        };
        let plan = plan_append(tenant, run_id, last_seq, events, expected_last_seq, |id| {
            Ok(known.get(id.as_str()).copied())
        })?;
        if plan.is_noop() {
            tx.rollback().await.during("ending a read-only append")?;
            return Ok(plan.outcomes);
        }
        let txid = EventRows::new(&plan.new_records)?
            .insert(&mut tx, stream_id, cols)
            .await?;
        self.commit_records(tx, cols, txid, "committing an append")
            .await?;
        Ok(plan.outcomes)
    }

    /// One attempt at importing a stream, in one transaction.
    async fn import_once(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        cols: &StreamCols<'_>,
        records: &[EventRecord],
    ) -> Result<usize, TxError> {
        let mut tx = self
            .pool_ref()
            .begin()
            .await
            .during("beginning an import")?;
        let (stream_id, last_seq) = streams::lock(&mut tx, cols).await?;
        let last_seq = keys::to_u64(|| self.location("streams", cols, "last_seq"), last_seq)?;
        // Every id the import brings is looked up (a marker is imported only
        // into an empty stream, which holds none of the ids it remembers).
        let known = if last_seq == 0 {
            HashMap::new()
        } else {
            known_ids(&mut tx, stream_id, cols, &distinct_ids(records)).await?
        };
        // CONTRACT §23: ids new to the stream, live or compacted; no gap.
        let missing = plan_import(tenant, run_id, last_seq, records, |id| {
            Ok(known.get(id.as_str()).copied())
        })?;
        if missing.is_empty() {
            tx.rollback().await.during("ending a read-only import")?;
            return Ok(0);
        }
        let txid = match EventRows::new(missing)?
            .insert(&mut tx, stream_id, cols)
            .await
        {
            Err(TxError::Sql(_, err))
                if error::sqlstate(&err).as_deref() == Some(UNIQUE_VIOLATION) =>
            {
                return Err(Error::invalid(format!(
                    "import of {tenant}:{run_id}: the records hold an event id twice"
                ))
                .into());
            }
            other => other?,
        };
        self.commit_records(tx, cols, txid, "committing an import")
            .await?;
        Ok(missing.len())
    }

    /// Compacts one stream in one transaction; returns how many events it
    /// pruned. `key` names the stream whose row is `stream_id`.
    async fn compact_once(
        &self,
        stream_id: i64,
        key: &StreamKey,
        policy: &CompactionPolicy,
    ) -> Result<usize, TxError> {
        let mut tx = self
            .pool_ref()
            .begin()
            .await
            .during("beginning a compaction")?;
        let cols = StreamCols::new(&key.tenant, &key.run_id);
        let locked: Option<(i64, i64)> = sqlx::query_as(streams::LOCK)
            .bind(&cols.key_hash)
            .fetch_optional(&mut *tx)
            .await
            .during("locking a stream row for compaction")?;
        if locked.map(|(id, _)| id) != Some(stream_id) {
            return Err(Error::backend(
                error::BACKEND,
                format!("the streams row of {key} is not row {stream_id}"),
            )
            .into());
        }
        // The compaction floor is the seq of the stream's newest snapshot.
        let (floor,): (Option<i64>,) =
            sqlx::query_as("SELECT max(seq) FROM snapshots WHERE stream_id = $1")
                .bind(stream_id)
                .fetch_one(&mut *tx)
                .await
                .during("reading the compaction floor")?;
        let floor = floor
            .map(|seq| keys::to_u64(|| self.location("snapshots", key, "seq"), seq))
            .transpose()?;
        // The SQL filter is a superset (timestamps saturate); the shared
        // rule decides on the records.
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, record FROM events \
             WHERE stream_id = $1 AND NOT is_marker AND occurred_at_ms <= $2 AND seq < $3 \
             ORDER BY seq",
        )
        .bind(stream_id)
        .bind(keys::clamp_i64(policy.cutoff_ms()))
        .bind(floor.map_or(i64::MAX, keys::clamp_i64))
        .fetch_all(&mut *tx)
        .await
        .during("reading events to compact")?;
        let mut pruned = Vec::with_capacity(rows.len());
        for (seq, text) in &rows {
            let record = self.decode_event(key, *seq, text)?;
            if policy.prunes(&record, floor) {
                pruned.push(record);
            }
        }
        if pruned.is_empty() {
            tx.rollback().await.during("ending an empty compaction")?;
            return Ok(0);
        }
        let old: Option<(i64, String)> = sqlx::query_as(
            "SELECT seq, record FROM events WHERE stream_id = $1 AND is_marker ORDER BY seq LIMIT 1",
        )
        .bind(stream_id)
        .fetch_optional(&mut *tx)
        .await
        .during("reading the compaction marker")?;
        let old = old
            .map(|(seq, text)| self.decode_event(key, seq, &text))
            .transpose()?;
        // CONTRACT §22: the marker never takes an id an ordinary event of the
        // stream holds. Appends refuse the marker namespace, so only events
        // imported from older stores can hold such ids: fetch those once.
        let held: Vec<(String,)> = sqlx::query_as(
            "SELECT event_id FROM events \
             WHERE stream_id = $1 AND NOT is_marker AND starts_with(event_id, $2)",
        )
        .bind(stream_id)
        .bind(COMPACTION_ID_PREFIX)
        .fetch_all(&mut *tx)
        .await
        .during("reading ids in the marker namespace")?;
        let held: HashSet<String> = held.into_iter().map(|(id,)| id).collect();
        let marker = merge_marker(
            &key.tenant,
            &key.run_id,
            old.as_ref(),
            &pruned,
            policy.now_ms(),
            |id| Ok(held.contains(id.as_str())),
        )
        .map_err(|err| match (err, &old) {
            // Only the old marker's payload can be malformed: name its row.
            (Error::Corrupt { reason, .. }, Some(old)) => Error::corrupt(
                self.location(
                    "events",
                    key,
                    format_args!("the compaction marker at seq {}", old.seq),
                ),
                reason,
            ),
            (other, _) => other,
        })?;
        let mut remove: Vec<i64> = Vec::with_capacity(pruned.len() + 1);
        for record in pruned.iter().chain(old.as_ref()) {
            remove.push(keys::to_i64("seq", record.seq)?);
        }
        sqlx::query("DELETE FROM events WHERE stream_id = $1 AND seq = ANY($2)")
            .bind(stream_id)
            .bind(&remove)
            .execute(&mut *tx)
            .await
            .during("deleting compacted events")?;
        // The marker's rows: itself, and the ids pruned now (the ids the
        // old marker remembered are stored already).
        let mut rows = EventRows::new([&marker])?;
        rows.compacted = (
            Vec::with_capacity(pruned.len()),
            Vec::with_capacity(pruned.len()),
        );
        for record in &pruned {
            rows.compacted.0.push(record.event_id.as_str().to_owned());
            rows.compacted.1.push(keys::to_i64("seq", record.seq)?);
        }
        let txid = rows.insert(&mut tx, stream_id, &cols).await?;
        self.commit_records(tx, &cols, txid, "committing a compaction")
            .await?;
        Ok(pruned.len())
    }

    /// Deletes a run in one transaction (CONTRACT §27, see
    /// [`raw::erasure`](runstore_core::raw::erasure)); answers how many
    /// ordinary events it deleted.
    ///
    /// The stream's row is locked `FOR NO KEY UPDATE` first, as an append
    /// and a compaction lock it, so the deletion is serialised with both:
    /// it sees every append committed before it, and an append waiting for
    /// the lock reads the last seq after it and lands above the erasure
    /// marker. A run without a row, with last seq 0, or already erased
    /// (no ordinary event, no compacted id) is left as it is and answers 0.
    /// Otherwise one statement deletes the stream's `events` and
    /// `compacted_ids` rows, and the erasure marker is written at the last
    /// seq, which `streams.last_seq` keeps.
    async fn delete_run_once(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        cols: &StreamCols<'_>,
    ) -> Result<usize, TxError> {
        let mut tx = self
            .pool_ref()
            .begin()
            .await
            .during("beginning a deletion")?;
        let row: Option<(i64, i64)> = sqlx::query_as(LOCK_EXISTING)
            .bind(&cols.key_hash)
            .fetch_optional(&mut *tx)
            .await
            .during("locking a stream row for deletion")?;
        let Some((stream_id, last_seq)) = row else {
            tx.rollback().await.during("ending an empty deletion")?;
            return Ok(0);
        };
        let last_seq = keys::to_u64(|| self.location("streams", cols, "last_seq"), last_seq)?;
        let (holds_events, remembers_ids): (bool, bool) = if last_seq == 0 {
            (false, false)
        } else {
            sqlx::query_as(ERASABLE)
                .bind(stream_id)
                .fetch_one(&mut *tx)
                .await
                .during("reading what a stream holds")?
        };
        if !holds_events && !remembers_ids {
            tx.rollback().await.during("ending an empty deletion")?;
            return Ok(0);
        }
        let (deleted,): (i64,) = sqlx::query_as(DELETE_STREAM)
            .bind(stream_id)
            .fetch_one(&mut *tx)
            .await
            .during("deleting a stream's events and compacted ids")?;
        let marker = erasure_marker(tenant, run_id, last_seq);
        let txid = EventRows::new([&marker])?
            .insert(&mut tx, stream_id, cols)
            .await?;
        self.commit_records(tx, cols, txid, "committing a deletion")
            .await?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    /// The streams that hold an ordinary event at or before `cutoff_ms`
    /// (a superset of those a compaction prunes), with their row ids.
    async fn compaction_candidates(&self, cutoff_ms: u64) -> Result<Vec<(i64, StreamKey)>> {
        let rows: Vec<(i64, String, String, bool, String, String)> = sqlx::query_as(
            "SELECT s.stream_id, s.org_id, s.workspace_id, s.has_deployment, s.deployment_id, \
                    s.run_id \
             FROM streams s \
             JOIN (SELECT DISTINCT stream_id FROM events \
                   WHERE NOT is_marker AND occurred_at_ms <= $1) c USING (stream_id) \
             ORDER BY s.stream_id",
        )
        .bind(keys::clamp_i64(cutoff_ms))
        .fetch_all(self.pool_ref())
        .await
        .map_err(|err| error::map("finding streams to compact", err))?;
        rows.into_iter()
            .map(|(stream_id, org, workspace, has, deployment, run)| {
                Ok((
                    stream_id,
                    keys::stream_key(org, workspace, has, deployment, run)?,
                ))
            })
            .collect()
    }
}

#[async_trait]
impl EventLog for PostgresStore {
    async fn append_batch(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        events: &[EventRecord],
        expected_last_seq: Option<u64>,
    ) -> Result<Vec<AppendOutcome>> {
        // CONTRACT §21-§24: before a connection is taken or work queued.
        self.inner.limits.check_append(run_id, events)?;
        if events.is_empty() {
            // Nothing to write; still answer a conflict as the contract says.
            return plan_append(tenant, run_id, 0, events, None, |_| Ok(None))
                .map(|plan| plan.outcomes);
        }
        self.append_grouped(tenant, run_id, events, expected_last_seq)
            .await
    }

    async fn read(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        query: ReadQuery,
    ) -> Result<Vec<EventRecord>> {
        let cols = StreamCols::new(tenant, run_id);
        let order = if query.tail { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT stream_id, seq, record FROM events \
             WHERE stream_id = {STREAM_ID} AND seq > $2 AND seq < $3 \
             ORDER BY seq {order} LIMIT $4"
        );
        let limit = query
            .effective_limit()
            .map(|limit| i64::try_from(limit).unwrap_or(i64::MAX));
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(&sql)
            .bind(&cols.key_hash)
            .bind(query.after_seq.map_or(0, keys::clamp_i64))
            .bind(query.before_seq.map_or(i64::MAX, keys::clamp_i64))
            .bind(limit)
            .fetch_all(self.pool_ref())
            .await
            .map_err(|err| error::map(&format!("reading events of stream {cols}"), err))?;
        let mut records = rows
            .iter()
            .map(|(_, seq, text)| self.decode_event(&cols, *seq, text))
            .collect::<Result<Vec<_>>>()?;
        if query.tail {
            records.reverse();
        }
        // `before_seq` beyond i64::MAX saturates; the window rule decides.
        Ok(query.apply(records, |record| record.seq))
    }

    async fn next_seq(&self, tenant: &Tenant, run_id: &RunId) -> Result<u64> {
        let cols = StreamCols::new(tenant, run_id);
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT last_seq FROM streams WHERE key_hash = $1")
                .bind(&cols.key_hash)
                .fetch_optional(self.pool_ref())
                .await
                .map_err(|err| {
                    error::map(&format!("reading the last seq of stream {cols}"), err)
                })?;
        let last = match row {
            Some((last,)) => keys::to_u64(|| self.location("streams", &cols, "last_seq"), last)?,
            None => 0,
        };
        // A BIGINT holds at most i64::MAX, so the next seq always fits.
        last.checked_add(1).ok_or_else(|| {
            Error::corrupt(
                self.location("streams", &cols, "last_seq"),
                format!("last seq {last} leaves no next seq"),
            )
        })
    }

    async fn seq_of(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        event_id: &EventId,
    ) -> Result<Option<u64>> {
        let cols = StreamCols::new(tenant, run_id);
        let sql = format!(
            "SELECT seq, 0 AS rank FROM events WHERE stream_id = {STREAM_ID} AND event_id = $2 \
             UNION ALL \
             SELECT seq, 1 AS rank FROM compacted_ids WHERE stream_id = {STREAM_ID} AND event_id = $2 \
             ORDER BY rank LIMIT 1"
        );
        let row: Option<(i64, i32)> = sqlx::query_as(&sql)
            .bind(&cols.key_hash)
            .bind(event_id.as_str())
            .fetch_optional(self.pool_ref())
            .await
            .map_err(|err| {
                error::map(
                    &format!("looking up event {:?} in stream {cols}", event_id.as_str()),
                    err,
                )
            })?;
        row.map(|(seq, _)| {
            let row = format!("event {:?}", event_id.as_str());
            keys::to_u64(|| self.location("events", &cols, row), seq)
        })
        .transpose()
    }

    /// A run is listed once it holds a record, unless it is a deleted run
    /// not appended to since (CONTRACT §27): one whose stream holds no
    /// ordinary event and remembers no compacted id. Both are lookups by
    /// primary key prefix per stream of the tenant.
    async fn list_runs(&self, tenant: &Tenant) -> Result<Vec<RunId>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT run_id FROM streams s WHERE tenant_hash = $1 AND last_seq > 0 \
             AND (EXISTS (SELECT 1 FROM events e WHERE e.stream_id = s.stream_id AND NOT e.is_marker) \
                  OR EXISTS (SELECT 1 FROM compacted_ids c WHERE c.stream_id = s.stream_id)) \
             ORDER BY run_id",
        )
        .bind(keys::tenant_hash(tenant))
        .fetch_all(self.pool_ref())
        .await
        .map_err(|err| error::map(&format!("listing the runs of tenant {tenant}"), err))?;
        rows.into_iter()
            .map(|(run,)| {
                RunId::new(run.clone()).map_err(|err| {
                    Error::corrupt(
                        format!("postgres {}.streams run {run:?}", self.schema()),
                        err,
                    )
                })
            })
            .collect()
    }

    /// CONTRACT §8-§11, §25: each stream is compacted in a transaction of
    /// its own; one that fails is in the report, left as it was, and the
    /// pass goes on.
    async fn compact(&self, retention_ms: u64, now_ms: u64) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport::default();
        let Some(policy) = CompactionPolicy::new(retention_ms, now_ms)? else {
            return Ok(report);
        };
        for (stream_id, key) in self.compaction_candidates(policy.cutoff_ms()).await? {
            let step = retrying!(&key, self.compact_once(stream_id, &key, &policy));
            report.record(&key, step);
        }
        report.sort();
        Ok(report)
    }

    async fn streams(&self) -> Result<Vec<StreamKey>> {
        let rows: Vec<(String, String, bool, String, String)> = sqlx::query_as(
            "SELECT org_id, workspace_id, has_deployment, deployment_id, run_id FROM streams \
             WHERE last_seq > 0 \
             ORDER BY org_id, workspace_id, has_deployment, deployment_id, run_id",
        )
        .fetch_all(self.pool_ref())
        .await
        .map_err(|err| error::map("listing streams", err))?;
        rows.into_iter()
            .map(|(org, workspace, has, deployment, run)| {
                keys::stream_key(org, workspace, has, deployment, run)
            })
            .collect()
    }

    async fn import_stream(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        records: &[EventRecord],
    ) -> Result<usize> {
        // CONTRACT §23: before a connection is taken.
        self.inner.limits.check_import(run_id, records)?;
        if records.is_empty() {
            return Ok(0);
        }
        let cols = StreamCols::new(tenant, run_id);
        retrying!(&cols, self.import_once(tenant, run_id, &cols, records))
    }

    /// CONTRACT §27: one transaction under the stream row's lock; see
    /// `delete_run_once`. A deadlock or serialization failure runs it again.
    ///
    /// # Cancel safety
    /// The transaction commits or rolls back as a whole; a dropped future
    /// leaves the run deleted or untouched.
    async fn delete_run(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
        let cols = StreamCols::new(tenant, run_id);
        retrying!(&cols, self.delete_run_once(tenant, run_id, &cols))
    }

    /// CONTRACT §29: see `docs/backends/postgres.md`, "Change feed". Also
    /// records the tenant as one
    /// this handle's listener wakes followers for.
    async fn read_feed(
        &self,
        tenant: &Tenant,
        after: FeedPosition,
        limit: usize,
    ) -> Result<Vec<FeedRecord>> {
        self.read_feed_rows(tenant, after, limit).await
    }

    /// Raised after this handle's commits that wrote records, and for
    /// other handles' and nodes' commits through `LISTEN` on a connection
    /// of the handle's own, started on the first call.
    fn feed_signal(&self) -> Option<FeedSignal> {
        Some(self.feed().signal())
    }
}
