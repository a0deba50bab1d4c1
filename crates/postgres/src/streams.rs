//! The `streams` table: one row per stream, created on first use and never
//! deleted. Its row is the stream's append lock and holds its last seq.

use sqlx::PgConnection;

use crate::{
    error::{SqlContext, TxError},
    keys::StreamCols,
};

const LOCK: &str = "SELECT stream_id, last_seq FROM streams WHERE key_hash = $1 FOR NO KEY UPDATE";

const CREATE: &str = "INSERT INTO streams \
     (key_hash, tenant_hash, org_id, workspace_id, has_deployment, deployment_id, run_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (key_hash) DO NOTHING";

const FIND: &str = "SELECT stream_id FROM streams WHERE key_hash = $1";

/// Inserts the stream's row unless it exists. `ON CONFLICT DO NOTHING`
/// waits for a concurrent inserter and never fails on the race.
async fn create(conn: &mut PgConnection, cols: &StreamCols<'_>) -> Result<(), TxError> {
    cols.bind(sqlx::query(CREATE))
        .execute(conn)
        .await
        .during("creating a stream row")?;
    Ok(())
}

/// Locks the stream's row (creating it first if needed) until the
/// transaction on `conn` ends, and returns `(stream_id, last_seq)`.
///
/// `SELECT ... FOR NO KEY UPDATE` under `READ COMMITTED` waits for the holder of
/// the lock and then reads the newest committed row, so the last seq it
/// returns includes every earlier append. `NO KEY UPDATE` rather than
/// `UPDATE`: writers of the stream still exclude each other, but the
/// foreign-key checks of a concurrent snapshot put (`KEY SHARE`) do not wait.
pub(crate) async fn lock(
    conn: &mut PgConnection,
    cols: &StreamCols<'_>,
) -> Result<(i64, i64), TxError> {
    for _ in 0..2 {
        let row: Option<(i64, i64)> = sqlx::query_as(LOCK)
            .bind(&cols.key_hash)
            .fetch_optional(&mut *conn)
            .await
            .during("locking a stream row")?;
        if let Some(row) = row {
            return Ok(row);
        }
        create(conn, cols).await?;
    }
    Err(TxError::Store(runstore_core::Error::backend(
        crate::error::BACKEND,
        format!(
            "stream row of {}/{}:{} vanished after it was created",
            cols.org_id, cols.workspace_id, cols.run_id
        ),
    )))
}

/// The stream's id, creating its row if needed, without locking it.
pub(crate) async fn ensure(conn: &mut PgConnection, cols: &StreamCols<'_>) -> Result<i64, TxError> {
    for _ in 0..2 {
        let row: Option<(i64,)> = sqlx::query_as(FIND)
            .bind(&cols.key_hash)
            .fetch_optional(&mut *conn)
            .await
            .during("finding a stream row")?;
        if let Some((stream_id,)) = row {
            return Ok(stream_id);
        }
        create(conn, cols).await?;
    }
    Err(TxError::Store(runstore_core::Error::backend(
        crate::error::BACKEND,
        format!(
            "stream row of {}/{}:{} vanished after it was created",
            cols.org_id, cols.workspace_id, cols.run_id
        ),
    )))
}
