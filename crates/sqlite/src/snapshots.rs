//! [`SnapshotStore`] for [`SqliteStore`].

use async_trait::async_trait;
use runstore_core::{
    MaintenanceReport, Result, RunId, SnapshotId, SnapshotRecord, SnapshotStore, StreamKey, Tenant,
    raw::snapshots::snapshot_order, validate::check_clock,
};
use sqlx::Row as _;

use crate::{
    SqliteStore,
    error::SqliteError,
    inline,
    schema::{self, bind_stream, to_json, to_sql_int},
    writer::{Deletion, Job, Maintenance, PutJob},
};

#[async_trait]
impl SnapshotStore for SqliteStore {
    /// CONTRACT §12: an upsert on (tenant, run_id, snapshot_id), run by the
    /// writer (it may share a group transaction with appends).
    ///
    /// # Cancel safety
    /// Once sent, the put is committed or not whether or not the future is
    /// still awaited.
    async fn put(&self, tenant: &Tenant, snapshot: &SnapshotRecord) -> Result<()> {
        self.inner.options.limits.check_snapshot(snapshot)?;
        let mut snapshot = snapshot.clone();
        tenant.stamp(&mut snapshot.scope.tenant_context);
        let seq = to_sql_int(snapshot.seq, "snapshot seq")?;
        let created_at_ms = to_sql_int(snapshot.created_at_ms, "snapshot created_at_ms")?;
        let record = to_json(&snapshot, || {
            format!("serialize snapshot {:?}", snapshot.snapshot_id.as_str())
        })?;
        let (reply, answer) = runstore_core::raw::group::reply();
        self.submit(
            Job::Put(PutJob {
                tenant: tenant.clone(),
                run_id: snapshot.run_id,
                snapshot_id: snapshot.snapshot_id,
                seq,
                created_at_ms,
                record,
                reply,
            }),
            answer,
        )
        .await
    }

    async fn get(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        snapshot_id: &SnapshotId,
    ) -> Result<Option<SnapshotRecord>> {
        let inline = self.inline().stream_rows(
            schema::GET_SNAPSHOT,
            tenant,
            run_id,
            &snapshot_id.as_str(),
            1,
        );
        if let Some(rows) = inline {
            return rows
                .first()
                .map(|row| {
                    schema::parse_snapshot(
                        &row[0],
                        self.path(),
                        (tenant, run_id),
                        snapshot_id.as_str(),
                    )
                })
                .transpose();
        }
        let mut reader = self.readers().get().await?;
        let row = bind_stream(sqlx::query(schema::GET_SNAPSHOT), tenant, run_id.as_str())
            .bind(snapshot_id.as_str())
            .fetch_optional(reader.conn())
            .await
            .map_err(|err| SqliteError::driver(&self.inner.path, "read a snapshot", err))?;
        drop(reader);
        row.map(|row| {
            let text: &str = row
                .try_get(0)
                .map_err(|err| SqliteError::driver(&self.inner.path, "read a snapshot", err))?;
            schema::parse_snapshot(text, self.path(), (tenant, run_id), snapshot_id.as_str())
        })
        .transpose()
    }

    async fn list(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        limit: Option<usize>,
    ) -> Result<Vec<SnapshotRecord>> {
        let limit = limit
            .filter(|limit| *limit > 0)
            .map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX));
        if (1..=inline::MAX_ROWS as i64).contains(&limit) {
            let rows = self.inline().stream_rows(
                schema::LIST_SNAPSHOTS_NEWEST_FIRST,
                tenant,
                run_id,
                &limit,
                2,
            );
            if let Some(rows) = rows {
                let mut snapshots = rows
                    .iter()
                    .map(|row| {
                        schema::parse_snapshot(&row[1], self.path(), (tenant, run_id), &row[0])
                    })
                    .collect::<Result<Vec<_>>>()?;
                snapshots.sort_by(snapshot_order);
                return Ok(snapshots);
            }
        }
        let mut reader = self.readers().get().await?;
        let rows = bind_stream(
            sqlx::query(schema::LIST_SNAPSHOTS_NEWEST_FIRST),
            tenant,
            run_id.as_str(),
        )
        .bind(limit)
        .fetch_all(reader.conn())
        .await
        .map_err(|err| SqliteError::driver(&self.inner.path, "list snapshots", err))?;
        drop(reader);
        let mut snapshots = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: &str = row
                .try_get(0)
                .map_err(|err| SqliteError::driver(&self.inner.path, "list snapshots", err))?;
            let text: &str = row
                .try_get(1)
                .map_err(|err| SqliteError::driver(&self.inner.path, "list snapshots", err))?;
            snapshots.push(schema::parse_snapshot(
                text,
                self.path(),
                (tenant, run_id),
                id,
            )?);
        }
        // The query already orders them; sorting here keeps the one rule
        // (`snapshot_order`) the only authority.
        snapshots.sort_by(snapshot_order);
        Ok(snapshots)
    }

    /// CONTRACT §14, §25: finds the streams with a snapshot older than the
    /// cutoff, then prunes them in write transactions of up to 16 streams
    /// each, choosing with [`prune_selection`](runstore_core::raw::snapshots::prune_selection)
    /// inside the transaction. Should a transaction fail, its streams are
    /// pruned again one by one, so only a stream that fails alone is
    /// reported as failed.
    async fn prune(
        &self,
        retention_ms: u64,
        keep_last_per_run: usize,
        now_ms: u64,
    ) -> Result<MaintenanceReport> {
        check_clock(now_ms)?;
        if retention_ms == 0 {
            return Ok(MaintenanceReport::default());
        }
        let cutoff = schema::saturating_sql_int(now_ms.saturating_sub(retention_ms));
        let streams = self
            .list_streams(
                sqlx::query(schema::SNAPSHOT_STREAMS_OLDER_THAN).bind(cutoff),
                "find streams with old snapshots",
            )
            .await?;
        self.maintain(
            Maintenance::Prune {
                retention_ms,
                keep_last_per_run,
                now_ms,
            },
            &streams,
        )
        .await
    }

    /// CONTRACT §27: one `DELETE` of the run's snapshots, run by the writer
    /// as a transaction of its own.
    ///
    /// # Cancel safety
    /// Once sent, the deletion is committed or not whether or not the
    /// future is still awaited.
    async fn delete_snapshots(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
        let (reply, answer) = runstore_core::raw::group::reply();
        self.submit(
            Job::Delete {
                target: Deletion::Snapshots,
                tenant: tenant.clone(),
                run_id: run_id.clone(),
                reply,
            },
            answer,
        )
        .await
    }

    async fn snapshot_streams(&self) -> Result<Vec<StreamKey>> {
        self.list_streams(
            sqlx::query(schema::ALL_SNAPSHOT_STREAMS),
            "list snapshot streams",
        )
        .await
    }
}
