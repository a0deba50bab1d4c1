//! Connections: the writer's settings, and the reader connections reads are
//! served from.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use runstore_core::Durability;
use sqlx::{
    ConnectOptions, SqliteConnection,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
};
use tokio::sync::{Mutex, MutexGuard};

use crate::error::{SqliteError, is_busy};

/// Statements each connection keeps prepared: the writer's multi-row insert
/// statements come in up to [`crate::schema::INSERT_CHUNK`] sizes.
const STATEMENT_CACHE: usize = 512;

/// The connect options every connection shares.
fn base_options(path: &Path, busy_timeout: Duration) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(busy_timeout)
        // No foreign keys in the schema: skip the per-statement checks.
        .foreign_keys(false)
        .statement_cache_capacity(STATEMENT_CACHE)
        .disable_statement_logging()
}

/// The writer's options: creates the file, WAL mode, and the synchronous
/// level of `durability` (CONTRACT §16). In WAL mode `FULL` syncs the WAL on
/// every commit, so a committed write survives power loss; `NORMAL` syncs
/// only at checkpoints, so a commit survives a killed process but may be
/// lost on power loss.
pub(crate) fn writer_options(
    path: &Path,
    durability: Durability,
    busy_timeout: Duration,
) -> SqliteConnectOptions {
    let synchronous = match durability {
        Durability::Durable => SqliteSynchronous::Full,
        Durability::Relaxed => SqliteSynchronous::Normal,
    };
    base_options(path, busy_timeout)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
}

/// A reader's options: the writer has already put the file into WAL mode
/// (a persistent setting); `query_only` keeps reader connections from ever
/// writing.
fn reader_options(path: &Path, busy_timeout: Duration) -> SqliteConnectOptions {
    base_options(path, busy_timeout).pragma("query_only", "ON")
}

/// Connects with `options`, retrying SQLITE_BUSY (another process creating
/// the file or switching it to WAL) until `busy_timeout` has passed.
pub(crate) async fn connect(
    path: &Arc<str>,
    options: &SqliteConnectOptions,
    busy_timeout: Duration,
) -> Result<SqliteConnection, SqliteError> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        match options.connect().await {
            Ok(conn) => return Ok(conn),
            Err(err) if is_busy(&err) && started.elapsed() < busy_timeout => {
                attempt += 1;
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(err) if is_busy(&err) => {
                return Err(SqliteError::Busy {
                    path: path.clone(),
                    action: "open a connection",
                    waited: started.elapsed(),
                    timeout: busy_timeout,
                });
            }
            Err(err) => return Err(SqliteError::driver(path, "open a connection", err)),
        }
    }
}

/// The pause before retry `attempt` (from 1) after SQLITE_BUSY: 2 ms,
/// doubling, at most 50 ms.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((1u64 << attempt.min(6)).min(50))
}

/// A few read-only connections, opened on first use. A read takes a free
/// one, or waits for one in turn. In WAL mode readers never block the
/// writer and always see every committed write.
pub(crate) struct Readers {
    path: Arc<str>,
    options: SqliteConnectOptions,
    busy_timeout: Duration,
    slots: Vec<Mutex<Option<SqliteConnection>>>,
    next: AtomicUsize,
}

impl Readers {
    /// Up to `count` (at least 1) reader connections to `path`.
    pub(crate) fn new(path: Arc<str>, file: &Path, count: usize, busy_timeout: Duration) -> Self {
        Self {
            options: reader_options(file, busy_timeout),
            path,
            busy_timeout,
            slots: (0..count.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A reader connection, exclusively for the caller until the guard drops.
    pub(crate) async fn get(&self) -> Result<Reader<'_>, SqliteError> {
        let mut guard = self.free_slot().await;
        if guard.is_none() {
            *guard = Some(connect(&self.path, &self.options, self.busy_timeout).await?);
        }
        Ok(Reader { guard })
    }

    /// The first free slot, lowest first: reads one after another keep
    /// using the same connection (its sqlx thread, statement cache and
    /// page cache stay warm), and only concurrent reads open or wake
    /// others. With none free, waits in turn on one of them.
    async fn free_slot(&self) -> MutexGuard<'_, Option<SqliteConnection>> {
        for slot in &self.slots {
            if let Ok(guard) = slot.try_lock() {
                return guard;
            }
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        self.slots[start % self.slots.len()].lock().await
    }
}

/// One reader connection on loan.
pub(crate) struct Reader<'a> {
    guard: MutexGuard<'a, Option<SqliteConnection>>,
}

impl Reader<'_> {
    /// The connection.
    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        self.guard
            .as_mut()
            .expect("Readers::get fills the slot before lending it")
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row as _;

    use super::*;

    async fn pragma(conn: &mut SqliteConnection, name: &str) -> String {
        let row = sqlx::query(&format!("PRAGMA {name}"))
            .fetch_one(conn)
            .await
            .unwrap();
        row.try_get::<String, _>(0)
            .or_else(|_| row.try_get::<i64, _>(0).map(|value| value.to_string()))
            .unwrap()
    }

    // CONTRACT §16: durable is WAL + FULL, relaxed is WAL + NORMAL; both
    // wait for locks.
    #[tokio::test]
    async fn writer_settings_follow_the_durability() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db.sqlite");
        let path: Arc<str> = Arc::from("test");
        let timeout = Duration::from_millis(1_234);
        for (durability, synchronous) in [(Durability::Durable, "2"), (Durability::Relaxed, "1")] {
            let options = writer_options(&file, durability, timeout);
            let mut conn = connect(&path, &options, timeout).await.unwrap();
            assert_eq!(pragma(&mut conn, "journal_mode").await, "wal");
            assert_eq!(pragma(&mut conn, "synchronous").await, synchronous);
            assert_eq!(pragma(&mut conn, "busy_timeout").await, "1234");
        }
        let mut reader = connect(&path, &reader_options(&file, timeout), timeout)
            .await
            .unwrap();
        assert_eq!(pragma(&mut reader, "query_only").await, "1");
        let denied = sqlx::query("CREATE TABLE t (x)").execute(&mut reader).await;
        assert!(denied.is_err(), "reader connections cannot write");
    }

    /// `count` reader slots over a database the writer has just created.
    async fn readers_of_a_new_database(count: usize) -> (tempfile::TempDir, Readers) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db.sqlite");
        let path: Arc<str> = Arc::from("test");
        let timeout = Duration::from_secs(5);
        let options = writer_options(&file, Durability::Durable, timeout);
        drop(connect(&path, &options, timeout).await.unwrap());
        let readers = Readers::new(path, &file, count, timeout);
        (dir, readers)
    }

    #[test]
    fn the_busy_backoff_doubles_from_2_ms_up_to_50_ms() {
        let pauses: Vec<Duration> = (1..=8).map(backoff).collect();
        let expected = [2, 4, 8, 16, 32, 50, 50, 50].map(Duration::from_millis);
        assert_eq!(pauses, expected);
        assert_eq!(backoff(u32::MAX), Duration::from_millis(50));
    }

    // More concurrent reads than connections: each waits in turn on one of
    // the connections and every read is answered.
    #[tokio::test]
    async fn reads_beyond_the_connections_wait_for_one() {
        let (_dir, readers) = readers_of_a_new_database(2).await;
        let readers: &'static Readers = Box::leak(Box::new(readers));
        let held = (readers.get().await.unwrap(), readers.get().await.unwrap());
        let waiting: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(async move {
                    let mut reader = readers.get().await.unwrap();
                    let row = sqlx::query("SELECT 1")
                        .fetch_one(reader.conn())
                        .await
                        .unwrap();
                    row.get::<i64, _>(0)
                })
            })
            .collect();
        // On this current-thread runtime the waiting reads run while this
        // task sleeps: each finds both connections taken and waits.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(readers.next.load(Ordering::Relaxed), 8);
        drop(held);
        for read in waiting {
            assert_eq!(read.await.unwrap(), 1);
        }
    }

    #[tokio::test]
    async fn reads_one_after_another_reuse_one_connection() {
        let (_dir, readers) = readers_of_a_new_database(4).await;
        for _ in 0..3 {
            let mut reader = readers.get().await.unwrap();
            sqlx::query("SELECT 1")
                .fetch_one(reader.conn())
                .await
                .unwrap();
        }
        let opened = readers
            .slots
            .iter()
            .filter(|slot| slot.try_lock().unwrap().is_some())
            .count();
        assert_eq!(opened, 1, "sequential reads opened {opened} connections");

        // Concurrent reads take further connections.
        let (a, b) = (readers.get().await.unwrap(), readers.get().await.unwrap());
        drop((a, b));
        let opened = readers
            .slots
            .iter()
            .filter(|slot| slot.try_lock().unwrap().is_some())
            .count();
        assert_eq!(opened, 2);
    }
}
