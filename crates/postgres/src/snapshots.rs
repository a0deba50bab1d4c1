//! [`SnapshotStore`] on PostgreSQL.

use std::fmt;

use async_trait::async_trait;
use runstore_core::{
    Error, MaintenanceReport, Result, RunId, SnapshotId, SnapshotRecord, SnapshotStore, StreamKey,
    Tenant, raw::snapshots::prune_selection, raw::snapshots::snapshot_order, validate::check_clock,
};

use crate::{
    PostgresStore,
    error::{self, SqlContext, TX_ATTEMPTS, TxError},
    keys::{self, StreamCols},
    streams,
};

const UPSERT: &str = "INSERT INTO snapshots (stream_id, snapshot_id, seq, created_at_ms, record) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (stream_id, snapshot_id) DO UPDATE \
     SET seq = EXCLUDED.seq, created_at_ms = EXCLUDED.created_at_ms, record = EXCLUDED.record";

impl PostgresStore {
    fn decode_snapshot(
        &self,
        stream: &dyn fmt::Display,
        snapshot_id: &str,
        text: &str,
    ) -> Result<SnapshotRecord> {
        serde_json::from_str(text).map_err(|err| {
            Error::corrupt(
                self.location("snapshots", stream, format!("snapshot {snapshot_id:?}")),
                err,
            )
        })
    }

    async fn put_once(
        &self,
        cols: &StreamCols<'_>,
        snapshot: &SnapshotRecord,
        text: &str,
    ) -> Result<(), TxError> {
        let mut conn = self
            .pool_ref()
            .acquire()
            .await
            .during("acquiring a connection")?;
        let stream_id = streams::ensure(&mut conn, cols).await?;
        sqlx::query(UPSERT)
            .bind(stream_id)
            .bind(snapshot.snapshot_id.as_str())
            .bind(keys::to_i64("snapshot seq", snapshot.seq)?)
            .bind(keys::clamp_i64(snapshot.created_at_ms))
            .bind(text)
            .execute(&mut *conn)
            .await
            .during("writing a snapshot")?;
        Ok(())
    }

    /// Prunes one stream's snapshots in one transaction, its rows locked.
    /// `key` names the stream whose row is `stream_id`.
    async fn prune_once(
        &self,
        stream_id: i64,
        key: &StreamKey,
        retention_ms: u64,
        keep_last_per_run: usize,
        now_ms: u64,
    ) -> Result<usize, TxError> {
        let mut tx = self.pool_ref().begin().await.during("beginning a prune")?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT snapshot_id, record FROM snapshots WHERE stream_id = $1 \
             ORDER BY seq, created_at_ms, snapshot_id FOR UPDATE",
        )
        .bind(stream_id)
        .fetch_all(&mut *tx)
        .await
        .during("reading snapshots to prune")?;
        let mut ordered = rows
            .iter()
            .map(|(id, text)| self.decode_snapshot(key, id, text))
            .collect::<Result<Vec<_>>>()?;
        // Saturated timestamps may tie in SQL; the shared order decides.
        ordered.sort_by(snapshot_order);
        let doomed: Vec<&str> = prune_selection(&ordered, retention_ms, keep_last_per_run, now_ms)
            .into_iter()
            .map(|index| ordered[index].snapshot_id.as_str())
            .collect();
        if doomed.is_empty() {
            tx.rollback().await.during("ending an empty prune")?;
            return Ok(0);
        }
        sqlx::query("DELETE FROM snapshots WHERE stream_id = $1 AND snapshot_id = ANY($2)")
            .bind(stream_id)
            .bind(&doomed)
            .execute(&mut *tx)
            .await
            .during("deleting snapshots")?;
        tx.commit().await.during("committing a prune")?;
        Ok(doomed.len())
    }
}

/// Runs `attempt` until it succeeds, fails with a contract outcome, or has
/// failed retryably [`TX_ATTEMPTS`] times; a driver's error names `stream`.
async fn retrying<T, F, Fut>(stream: &(dyn fmt::Display + Sync), mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TxError>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(err) if err.retry_in_tx() && tries < TX_ATTEMPTS => {}
            Err(err) => return Err(err.into_error(stream)),
        }
    }
}

#[async_trait]
impl SnapshotStore for PostgresStore {
    async fn put(&self, tenant: &Tenant, snapshot: &SnapshotRecord) -> Result<()> {
        // CONTRACT §21-§24: before a connection is taken.
        self.inner.limits.check_snapshot(snapshot)?;
        let mut snapshot = snapshot.clone();
        tenant.stamp(&mut snapshot.scope.tenant_context);
        let text = serde_json::to_string(&snapshot)
            .map_err(|err| Error::invalid(format!("snapshot is not serialisable: {err}")))?;
        let cols = StreamCols::new(tenant, &snapshot.run_id);
        retrying(&cols, || self.put_once(&cols, &snapshot, &text)).await
    }

    async fn get(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        snapshot_id: &SnapshotId,
    ) -> Result<Option<SnapshotRecord>> {
        let cols = StreamCols::new(tenant, run_id);
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT stream_id, record FROM snapshots \
             WHERE stream_id = (SELECT stream_id FROM streams WHERE key_hash = $1) \
             AND snapshot_id = $2",
        )
        .bind(&cols.key_hash)
        .bind(snapshot_id.as_str())
        .fetch_optional(self.pool_ref())
        .await
        .map_err(|err| {
            let doing = format!(
                "reading snapshot {:?} of stream {cols}",
                snapshot_id.as_str()
            );
            error::map(&doing, err)
        })?;
        row.map(|(_, text)| self.decode_snapshot(&cols, snapshot_id.as_str(), &text))
            .transpose()
    }

    async fn list(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        limit: Option<usize>,
    ) -> Result<Vec<SnapshotRecord>> {
        let cols = StreamCols::new(tenant, run_id);
        let limit = limit
            .filter(|limit| *limit > 0)
            .map(|limit| i64::try_from(limit).unwrap_or(i64::MAX));
        // Newest first so a limit keeps the newest; reversed below.
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT stream_id, snapshot_id, record FROM snapshots \
             WHERE stream_id = (SELECT stream_id FROM streams WHERE key_hash = $1) \
             ORDER BY seq DESC, created_at_ms DESC, snapshot_id DESC LIMIT $2",
        )
        .bind(&cols.key_hash)
        .bind(limit)
        .fetch_all(self.pool_ref())
        .await
        .map_err(|err| error::map(&format!("listing the snapshots of stream {cols}"), err))?;
        let mut list = rows
            .iter()
            .rev()
            .map(|(_, id, text)| self.decode_snapshot(&cols, id, text))
            .collect::<Result<Vec<_>>>()?;
        // Saturated timestamps may tie in SQL; the shared order decides.
        list.sort_by(snapshot_order);
        Ok(list)
    }

    /// CONTRACT §14, §25: each stream is pruned in a transaction of its
    /// own; one that fails is in the report, left as it was, and the pass
    /// goes on.
    async fn prune(
        &self,
        retention_ms: u64,
        keep_last_per_run: usize,
        now_ms: u64,
    ) -> Result<MaintenanceReport> {
        check_clock(now_ms)?;
        let mut report = MaintenanceReport::default();
        if retention_ms == 0 {
            return Ok(report);
        }
        let keep = i64::try_from(keep_last_per_run).unwrap_or(i64::MAX);
        let cutoff = keys::clamp_i64(now_ms.saturating_sub(retention_ms));
        // Streams with more snapshots than they keep and one old enough;
        // the shared rule decides per stream.
        let candidates: Vec<(i64, String, String, bool, String, String)> = sqlx::query_as(
            "SELECT s.stream_id, s.org_id, s.workspace_id, s.has_deployment, s.deployment_id, \
                    s.run_id \
             FROM streams s \
             JOIN (SELECT stream_id FROM snapshots GROUP BY stream_id \
                   HAVING count(*) > $1 AND min(created_at_ms) <= $2) c USING (stream_id) \
             ORDER BY s.stream_id",
        )
        .bind(keep)
        .bind(cutoff)
        .fetch_all(self.pool_ref())
        .await
        .map_err(|err| error::map("finding snapshots to prune", err))?;
        for (stream_id, org, workspace, has, deployment, run) in candidates {
            let key = keys::stream_key(org, workspace, has, deployment, run)?;
            let step = retrying(&key, || {
                self.prune_once(stream_id, &key, retention_ms, keep_last_per_run, now_ms)
            })
            .await;
            report.record(&key, step);
        }
        report.sort();
        Ok(report)
    }

    /// CONTRACT §27: one `DELETE` of the run's snapshots. A `put` racing it
    /// may be stored after it, as the contract allows.
    async fn delete_snapshots(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
        let cols = StreamCols::new(tenant, run_id);
        let done = sqlx::query(
            "DELETE FROM snapshots \
             WHERE stream_id = (SELECT stream_id FROM streams WHERE key_hash = $1)",
        )
        .bind(&cols.key_hash)
        .execute(self.pool_ref())
        .await
        .map_err(|err| error::map(&format!("deleting the snapshots of stream {cols}"), err))?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }

    async fn snapshot_streams(&self) -> Result<Vec<StreamKey>> {
        let rows: Vec<(String, String, bool, String, String)> = sqlx::query_as(
            "SELECT org_id, workspace_id, has_deployment, deployment_id, run_id FROM streams s \
             WHERE EXISTS (SELECT 1 FROM snapshots sn WHERE sn.stream_id = s.stream_id) \
             ORDER BY org_id, workspace_id, has_deployment, deployment_id, run_id",
        )
        .fetch_all(self.pool_ref())
        .await
        .map_err(|err| error::map("listing snapshot streams", err))?;
        rows.into_iter()
            .map(|(org, workspace, has, deployment, run)| {
                keys::stream_key(org, workspace, has, deployment, run)
            })
            .collect()
    }
}
