//! One-row snapshot reads served on the caller's thread.
//!
//! A statement through sqlx is a round trip to the connection's worker
//! thread: the caller sends it, the worker wakes, steps it, and sends the
//! rows back. On a machine whose cores sleep between calls, each round trip
//! waits for a thread to wake: a bare sqlx `SELECT 1` measured 36 us p50 on
//! an idle machine, twice the whole `latest` read of a checkpointer that
//! calls SQLite on its own thread (`docs/benchmarks.md`, "SQLite on an idle
//! machine"). The snapshot reads that answer one row or a few -- `get`, and
//! `list` with a small limit, which `latest` is -- run instead on the
//! calling thread, through a rusqlite connection over the same SQLite
//! library, read-only in effect (`query_only`): a few microseconds of
//! SQLite's own work, done where the caller already is.
//!
//! **An accelerator, never an answer of its own.** Whatever this path cannot
//! do -- open a connection, find the database unlocked at once (its busy
//! timeout is zero: it never waits out a lock on the executor's thread),
//! prepare or step the statement -- it returns `None`, and the caller reads
//! through the sqlx readers as before, which answer with their own errors
//! and wait their busy timeout off the executor. The rows it returns are
//! parsed by the same code as the sqlx path's. In WAL mode a reader sees
//! every committed write, on either path. What it does cost the calling
//! thread: a connection's opening, once (the file's open and schema read),
//! and, rarely, SQLite's own short retries when a read starts while the WAL
//! is being checkpointed or restarted.
//!
//! At most [`MAX_IDLE`] connections: opened on first use, kept for reuse,
//! one per concurrent caller; a caller that finds all of them in use reads
//! through sqlx instead of opening another.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use runstore_core::{RunId, Tenant};
use rusqlite::{Connection, OpenFlags, ToSql};

/// Connections, in use or idle.
const MAX_IDLE: usize = 4;

/// The most rows a read on this path may ask for.
pub(crate) const MAX_ROWS: usize = 16;

/// Statements each connection keeps prepared (the snapshot reads are two).
const STATEMENT_CACHE: usize = 8;

/// The caller-thread connections of one store handle.
pub(crate) struct InlineReaders {
    file: PathBuf,
    pool: Mutex<Pool>,
}

/// The idle connections, and how many there are in all.
#[derive(Default)]
struct Pool {
    idle: Vec<Connection>,
    open: usize,
}

impl InlineReaders {
    /// No connection yet: the first read opens one.
    pub(crate) fn new(file: &Path) -> Self {
        Self {
            file: file.to_path_buf(),
            pool: Mutex::new(Pool::default()),
        }
    }

    /// Runs `sql` with `params` and returns each row's first `columns`
    /// columns as text, at most [`MAX_ROWS`] rows; `None` when this path
    /// cannot answer (see the module doc).
    pub(crate) fn text_rows(
        &self,
        sql: &str,
        params: &[&dyn ToSql],
        columns: usize,
    ) -> Option<Vec<Vec<String>>> {
        let conn = self.take()?;
        let rows = query(&conn, sql, params, columns);
        let mut pool = self.lock();
        if rows.is_some() {
            pool.idle.push(conn);
        } else {
            // A connection whose statement failed is dropped, not reused.
            pool.open -= 1;
        }
        rows
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`InlineReaders::text_rows`] of a statement that binds the stream
    /// as `?1..?4` (the crate's convention, see [`crate::schema`]) and
    /// `last` as `?5`.
    pub(crate) fn stream_rows(
        &self,
        sql: &str,
        tenant: &Tenant,
        run_id: &RunId,
        last: &dyn ToSql,
        columns: usize,
    ) -> Option<Vec<Vec<String>>> {
        let deployment = crate::schema::deployment_column(tenant);
        let params: [&dyn ToSql; 5] = [
            &tenant.org_id(),
            &tenant.workspace_id(),
            &deployment,
            &run_id.as_str(),
            last,
        ];
        self.text_rows(sql, &params, columns)
    }

    /// An idle connection, or a new one while there are fewer than
    /// [`MAX_IDLE`].
    fn take(&self) -> Option<Connection> {
        let mut pool = self.lock();
        if let Some(conn) = pool.idle.pop() {
            return Some(conn);
        }
        if pool.open >= MAX_IDLE {
            return None;
        }
        pool.open += 1;
        drop(pool);
        let conn = open(&self.file);
        if conn.is_none() {
            self.lock().open -= 1;
        }
        conn
    }
}

/// A connection to the store's file that never writes and never waits for
/// a lock: the writer has created the file and put it into WAL mode (a
/// persistent setting) before any read.
fn open(file: &Path) -> Option<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(file, flags).ok()?;
    conn.pragma_update(None, "query_only", "ON").ok()?;
    conn.busy_timeout(std::time::Duration::ZERO).ok()?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Some(conn)
}

fn query(
    conn: &Connection,
    sql: &str,
    params: &[&dyn ToSql],
    columns: usize,
) -> Option<Vec<Vec<String>>> {
    let mut statement = conn.prepare_cached(sql).ok()?;
    let mut rows = statement.query(params).ok()?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().ok()? {
        if out.len() == MAX_ROWS {
            return None;
        }
        let mut texts = Vec::with_capacity(columns);
        for column in 0..columns {
            texts.push(row.get_ref(column).ok()?.as_str().ok()?.to_owned());
        }
        out.push(texts);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(dir: &Path) -> PathBuf {
        let file = dir.join("db.sqlite");
        let conn = Connection::open(&file).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(
            "CREATE TABLE t (k INTEGER, v TEXT); \
             INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three');",
        )
        .unwrap();
        file
    }

    #[test]
    fn rows_come_back_as_text_and_connections_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let readers = InlineReaders::new(&database(dir.path()));
        for _ in 0..3 {
            let rows = readers
                .text_rows(
                    "SELECT v, k || '' FROM t WHERE k >= ?1 ORDER BY k",
                    &[&2],
                    2,
                )
                .unwrap();
            assert_eq!(rows, vec![vec!["two", "2"], vec!["three", "3"]]);
        }
        let pool = readers.lock();
        assert_eq!(
            (pool.idle.len(), pool.open),
            (1, 1),
            "one connection, reused"
        );
    }

    #[test]
    fn at_most_max_idle_connections_then_none() {
        let dir = tempfile::tempdir().unwrap();
        let readers = InlineReaders::new(&database(dir.path()));
        let held: Vec<_> = (0..MAX_IDLE).map(|_| readers.take().unwrap()).collect();
        assert!(
            readers.take().is_none(),
            "a fifth caller reads through sqlx"
        );
        assert_eq!(readers.text_rows("SELECT v FROM t", &[], 1), None);
        readers.lock().idle.extend(held);
        assert_eq!(
            readers.text_rows("SELECT v FROM t WHERE k = 1", &[], 1),
            Some(vec![vec!["one".to_owned()]])
        );
    }

    // Whatever this path cannot answer is `None`, for the sqlx path to
    // answer: a failing statement, a non-text column, more than MAX_ROWS
    // rows, a write, a file that is not there.
    #[test]
    fn what_it_cannot_answer_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let readers = InlineReaders::new(&database(dir.path()));
        assert_eq!(readers.text_rows("SELECT v FROM missing", &[], 1), None);
        assert_eq!(readers.text_rows("SELECT k FROM t", &[], 1), None);
        let many = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 17) \
                    SELECT 'x' FROM n";
        assert_eq!(readers.text_rows(many, &[], 1), None);
        assert_eq!(
            readers.text_rows("INSERT INTO t VALUES (4, 'four') RETURNING v", &[], 1),
            None,
            "query_only refuses writes"
        );
        let gone = InlineReaders::new(&dir.path().join("nothing-here.sqlite"));
        assert_eq!(gone.text_rows("SELECT 1", &[], 1), None);
        assert!(!dir.path().join("nothing-here.sqlite").exists());
    }
}
