//! [`SnapshotStore`] on PostgreSQL.

use std::fmt;

use async_trait::async_trait;
use runstore_core::{
    Error, MaintenanceReport, Result, RunId, SnapshotId, SnapshotRecord, SnapshotStore, StreamKey,
    Tenant, raw::snapshots::prune_selection, raw::snapshots::snapshot_order, validate::check_clock,
};

use sqlx::Row;

use crate::{
    PostgresStore,
    error::{self, SqlContext, TX_ATTEMPTS, TxError},
    keys::{self, PgQuery, StreamCols},
    streams,
};

const UPSERT: &str = "INSERT INTO snapshots (stream_id, snapshot_id, seq, created_at_ms, record) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (stream_id, snapshot_id) DO UPDATE \
     SET seq = EXCLUDED.seq, created_at_ms = EXCLUDED.created_at_ms, record = EXCLUDED.record";

/// The put in one statement (migration 0003): the stream's row, then the
/// same upsert as [`UPSERT`].
const PUT_ONE: &str = "SELECT put_snapshot($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

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

    /// Stores one snapshot: one call of `put_snapshot` (migration 0003),
    /// or, should it find no stream row after creating one, the
    /// two-statement path it replaces.
    async fn put_once(
        &self,
        cols: &StreamCols<'_>,
        snapshot: &SnapshotRecord,
        text: &str,
    ) -> Result<(), TxError> {
        if self.put_one(cols, snapshot, text).await? {
            return Ok(());
        }
        self.put_general(cols, snapshot, text).await
    }

    /// One autocommit statement, `SELECT put_snapshot(...)`: finds (or
    /// creates) the stream's row without locking it and upserts the
    /// snapshot, as [`PostgresStore::put_general`] does in two. `false` if
    /// it wrote nothing (no stream row after creating one).
    pub(crate) async fn put_one(
        &self,
        cols: &StreamCols<'_>,
        snapshot: &SnapshotRecord,
        text: &str,
    ) -> Result<bool, TxError> {
        let stream_id: Option<i64> =
            bind_snapshot(cols.bind(sqlx::query(PUT_ONE)), snapshot, text)?
                .fetch_one(self.pool_ref())
                .await
                .and_then(|row| row.try_get(0))
                .during("writing a snapshot")?;
        Ok(stream_id.is_some())
    }

    /// The put as two autocommit statements on one connection: the stream
    /// row's look-up (creating it if missing), then the upsert.
    pub(crate) async fn put_general(
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
        bind_snapshot(sqlx::query(UPSERT).bind(stream_id), snapshot, text)?
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

/// Binds the snapshot's columns as the next four parameters of `query`:
/// `snapshot_id`, `seq`, `created_at_ms` (saturated) and the record's text.
fn bind_snapshot<'q>(
    query: PgQuery<'q>,
    snapshot: &'q SnapshotRecord,
    text: &'q str,
) -> Result<PgQuery<'q>, TxError> {
    Ok(query
        .bind(snapshot.snapshot_id.as_str())
        .bind(keys::to_i64("snapshot seq", snapshot.seq)?)
        .bind(keys::clamp_i64(snapshot.created_at_ms))
        .bind(text))
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

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use runstore_conformance::support::records::{acme, run_1, step, tenant};
    use runstore_core::{EventLogExt, RunStatus, SnapshotId, SnapshotStoreExt};
    use serde_json::json;

    use super::*;
    use crate::{
        PostgresOptions,
        testing::{drop_store, fresh_store},
    };

    fn server_url(what: &str) -> Option<String> {
        runstore_conformance::support::service_url("RUNSTORE_POSTGRES_URL", what)
    }

    fn snapshot(tenant: &Tenant, run: &RunId, id: &str, seq: u64, at: u64) -> SnapshotRecord {
        SnapshotRecord::new(
            tenant,
            run.clone(),
            SnapshotId::new(id).unwrap(),
            seq,
            at,
            RunStatus::Running,
        )
        .with_checkpoint(json!({"step": seq, "text": "caf\u{e9} \"quoted\" \\ line\nbreak"}))
    }

    /// Counts the statements sqlx sends (its `sqlx::query` log events) on
    /// this thread while installed.
    struct Statements(Arc<AtomicUsize>);

    impl tracing::Subscriber for Statements {
        fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
            metadata.target() == "sqlx::query"
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            if event.metadata().target() == "sqlx::query" {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    /// A put is one statement, on a stream's first put and on later ones
    /// (the stream row's look-up and the upsert were two).
    #[tokio::test]
    async fn a_put_is_one_statement() {
        let Some(url) = server_url("postgres snapshot put statement count") else {
            return;
        };
        let store = fresh_store(&url, &format!("put_count_{}", std::process::id())).await;
        let (tenant, run) = (acme(), run_1());
        let sent = Arc::new(AtomicUsize::new(0));
        // The counter must see a statement of the test's own. Tests on
        // other threads registering sqlx's log call sites at the same time
        // may leave them without interest in it; installing it again
        // rebuilds their interest.
        let mut guard = None;
        for _ in 0..20 {
            guard = Some(tracing::subscriber::set_default(Statements(Arc::clone(
                &sent,
            ))));
            let before = sent.load(Ordering::SeqCst);
            sqlx::query("SELECT 1").execute(store.pool()).await.unwrap();
            if sent.load(Ordering::SeqCst) - before == 1 {
                break;
            }
            drop(guard.take());
        }
        assert!(guard.is_some(), "sqlx's statement log is not seen");
        for (id, seq) in [("s1", 1), ("s2", 2), ("s1", 3)] {
            let before = sent.load(Ordering::SeqCst);
            store
                .put(&tenant, &snapshot(&tenant, &run, id, seq, 100 + seq))
                .await
                .unwrap();
            assert_eq!(sent.load(Ordering::SeqCst) - before, 1, "put {id} at {seq}");
        }
        drop(guard);
        let latest = store.latest(&tenant, &run).await.unwrap().unwrap();
        assert_eq!((latest.snapshot_id.as_str(), latest.seq), ("s1", 3));
        drop_store(store).await;
    }

    /// Every row both tables hold, as text, the stream id left out.
    async fn rows(store: &PostgresStore) -> Vec<String> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT * FROM ( \
                SELECT (key_hash, tenant_hash, org_id, workspace_id, has_deployment, \
                        deployment_id, run_id, last_seq)::TEXT FROM streams \
                UNION ALL \
                SELECT (s.key_hash, n.snapshot_id, n.seq, n.created_at_ms, n.record)::TEXT \
                FROM snapshots n JOIN streams s USING (stream_id)) r ORDER BY 1",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        rows.into_iter().map(|(row,)| row).collect()
    }

    /// The same puts through `put` on one store and through the
    /// two-statement path on another leave identical rows: new streams
    /// (with and without a deployment), a stream that holds events, a
    /// replaced snapshot, another tenant's identical ids.
    #[tokio::test]
    async fn one_statement_stores_what_two_did() {
        let Some(url) = server_url("postgres snapshot put paths test") else {
            return;
        };
        let pid = std::process::id();
        let fast = fresh_store(&url, &format!("put_fast_{pid}")).await;
        let general = fresh_store(&url, &format!("put_general_{pid}")).await;
        let acme = acme();
        let other = tenant("globex");
        let deployed = Tenant::new("acme", "prod", Some("eu-1".to_owned())).unwrap();
        let run = run_1();
        let run_2 = RunId::new("run-\u{e9}\u{20ac} 2").unwrap();
        for store in [&fast, &general] {
            store.append(&acme, &step("a", 10)).await.unwrap();
        }
        let puts = [
            (&acme, &run, "s1", 1, 100),
            (&acme, &run, "s2", 2, 200),
            (&acme, &run, "s1", 5, 50),
            (&acme, &run_2, "s/1 \u{1f600}", 0, 0),
            (&other, &run, "s1", 1, 100),
            (&deployed, &run, "s1", 7, u64::try_from(i64::MAX).unwrap()),
            (&deployed, &run, "s1", 8, 1),
        ];
        for (tenant, run, id, seq, at) in puts {
            let record = snapshot(tenant, run, id, seq, at);
            fast.put(tenant, &record).await.unwrap();
            // As `put` prepares it, then the two statements.
            let mut stamped = record.clone();
            tenant.stamp(&mut stamped.scope.tenant_context);
            let text = serde_json::to_string(&stamped).unwrap();
            let cols = StreamCols::new(tenant, run);
            general.put_general(&cols, &stamped, &text).await.unwrap();
            assert_eq!(
                rows(&fast).await,
                rows(&general).await,
                "{tenant}:{run} {id}"
            );
        }
        assert_eq!(rows(&fast).await.len(), 4 + 5);
        for store in [fast, general] {
            drop_store(store).await;
        }
    }

    /// A put waits only for its snapshot's row, as the two statements did:
    /// it does not wait while a compaction or a deletion holds the stream's
    /// row (`FOR NO KEY UPDATE`), and it waits for a prune holding the
    /// snapshot's row (`FOR UPDATE`), then stores its snapshot after the
    /// prune deleted the old one (CONTRACT §14).
    #[tokio::test]
    async fn a_put_waits_for_the_rows_it_waited_for() {
        let Some(url) = server_url("postgres snapshot put locks test") else {
            return;
        };
        let store = fresh_store(&url, &format!("put_locks_{}", std::process::id())).await;
        let (tenant, run) = (acme(), run_1());
        let cols = StreamCols::new(&tenant, &run);
        store
            .put(&tenant, &snapshot(&tenant, &run, "s1", 1, 100))
            .await
            .unwrap();

        let mut writer = store.pool().begin().await.unwrap();
        sqlx::query("SELECT 1 FROM streams WHERE key_hash = $1 FOR NO KEY UPDATE")
            .bind(&cols.key_hash)
            .execute(&mut *writer)
            .await
            .unwrap();
        for (id, seq) in [("s2", 2), ("s1", 3)] {
            let record = snapshot(&tenant, &run, id, seq, 100);
            let put = store.put(&tenant, &record);
            tokio::time::timeout(std::time::Duration::from_secs(60), put)
                .await
                .expect("a put must not wait for the stream row's lock")
                .unwrap();
        }
        writer.rollback().await.unwrap();

        let mut prune = store.pool().begin().await.unwrap();
        let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
            .fetch_one(&mut *prune)
            .await
            .unwrap();
        sqlx::query(
            "SELECT snapshot_id FROM snapshots \
             WHERE stream_id = (SELECT stream_id FROM streams WHERE key_hash = $1) FOR UPDATE",
        )
        .bind(&cols.key_hash)
        .execute(&mut *prune)
        .await
        .unwrap();
        let replaced = snapshot(&tenant, &run, "s1", 9, 900);
        let put = tokio::spawn({
            let (store, tenant, replaced) = (store.clone(), tenant.clone(), replaced.clone());
            async move { store.put(&tenant, &replaced).await }
        });
        loop {
            let (waiting,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
            )
            .bind(pid)
            .fetch_one(store.pool())
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(
                !put.is_finished(),
                "the put must wait for the prune's row lock"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        sqlx::query("DELETE FROM snapshots WHERE snapshot_id = 's1'")
            .execute(&mut *prune)
            .await
            .unwrap();
        prune.commit().await.unwrap();
        put.await.unwrap().unwrap();
        let s1 = SnapshotId::new("s1").unwrap();
        assert_eq!(store.get(&tenant, &run, &s1).await.unwrap(), Some(replaced));
        drop_store(store).await;
    }

    /// A store written before migration 0003 (its schema at version 2,
    /// its snapshots put by the two statements) takes the migration when a
    /// store connects to it, keeps its snapshots, and puts in one statement.
    #[tokio::test]
    async fn a_store_at_version_2_takes_migration_3() {
        let Some(url) = server_url("postgres snapshot put migration test") else {
            return;
        };
        let schema = format!("put_upgrade_{}", std::process::id());
        let store = fresh_store(&url, &schema).await;
        sqlx::query("DROP FUNCTION put_snapshot")
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 3")
            .execute(store.pool())
            .await
            .unwrap();
        let (tenant, run) = (acme(), run_1());
        let cols = StreamCols::new(&tenant, &run);
        let old = snapshot(&tenant, &run, "s1", 1, 100);
        let text = serde_json::to_string(&old).unwrap();
        store.put_general(&cols, &old, &text).await.unwrap();
        store.close().await;

        let store =
            PostgresStore::connect_with(&url, PostgresOptions::default().with_schema(&schema))
                .await
                .unwrap();
        let new = snapshot(&tenant, &run, "s2", 2, 200);
        let text = serde_json::to_string(&new).unwrap();
        assert!(store.put_one(&cols, &new, &text).await.unwrap());
        assert_eq!(
            store.list(&tenant, &run, None).await.unwrap(),
            vec![old, new]
        );
        drop_store(store).await;
    }
}
