//! The `streams` table: one row per stream, created on first use and never
//! deleted. Its row is the stream's append lock and holds its last seq.

use sqlx::PgConnection;

use crate::{
    error::{SqlContext, TxError},
    keys::StreamCols,
};

/// Takes the stream's advisory lock, then locks its row. The advisory lock
/// is a one-time filter (an uncorrelated subquery the executor runs once,
/// before the scan and whether or not the row exists), so it is held before
/// the row lock or a row insert assigns the transaction its id (migration
/// 0004, `stream_lock_key`).
pub(crate) const LOCK: &str = "SELECT stream_id, last_seq FROM streams WHERE key_hash = $1 \
     AND (SELECT pg_advisory_xact_lock(stream_lock_key($1))) IS NOT NULL FOR NO KEY UPDATE";

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
