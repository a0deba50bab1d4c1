//! SQLITE_BUSY: a write waits for a lock another connection holds, and
//! after the busy timeout fails with a clear, retryable error.

use std::time::{Duration, Instant};

use runstore_core::{
    Error, EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, RunStatus, SnapshotId,
    SnapshotRecord, SnapshotStore, SnapshotStoreExt, Tenant,
};
use runstore_sqlite::{SqliteOptions, SqliteStore};
use sqlx::{ConnectOptions as _, Connection as _, SqliteConnection, sqlite::SqliteConnectOptions};

fn event(id: &str) -> EventRecord {
    EventRecord::new(
        &Tenant::local(),
        RunId::new("run").unwrap(),
        EventId::new(id).unwrap(),
        "busy.test",
        1,
    )
}

/// Another connection (as another process would) holding the write lock.
async fn hold_write_lock(path: &std::path::Path) -> SqliteConnection {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_gives_up_after_the_busy_timeout_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let timeout = Duration::from_millis(300);
    let store = SqliteStore::open_with(&path, SqliteOptions::default().with_busy_timeout(timeout))
        .await
        .unwrap();
    let mut locker = hold_write_lock(&path).await;

    let started = Instant::now();
    let err = store
        .append(&Tenant::local(), &event("a"))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(
            err,
            Error::Backend {
                retryable: true,
                ..
            }
        ),
        "expected a retryable backend error, got {err:?}"
    );
    assert!(err.is_retryable());
    let message = err.to_string();
    assert!(
        message.contains("locked") && message.contains("SQLITE_BUSY"),
        "the error names the lock: {message}"
    );
    assert!(
        waited >= timeout,
        "gave up after {waited:?}, before the timeout"
    );

    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    let outcome = store.append(&Tenant::local(), &event("a")).await.unwrap();
    assert_eq!((outcome.seq, outcome.inserted), (1, true));
    locker.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waits_for_a_lock_released_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    let mut locker = hold_write_lock(&path).await;

    let writer = tokio::spawn({
        let store = store.clone();
        async move { store.append(&Tenant::local(), &event("a")).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!writer.is_finished(), "the append waits for the lock");
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    let outcome = writer.await.unwrap().unwrap();
    assert_eq!((outcome.seq, outcome.inserted), (1, true));
    let records = store
        .read(
            &Tenant::local(),
            &RunId::new("run").unwrap(),
            ReadQuery::all(),
        )
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_on_while_another_connection_holds_the_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    store.append(&Tenant::local(), &event("a")).await.unwrap();
    store.put(&Tenant::local(), &snapshot("s1")).await.unwrap();
    let _locker = hold_write_lock(&path).await;
    let run = RunId::new("run").unwrap();
    let latest = store.latest(&Tenant::local(), &run).await.unwrap();
    assert_eq!(
        latest.map(|s| s.snapshot_id),
        Some(SnapshotId::new("s1").unwrap())
    );
    let id = SnapshotId::new("s1").unwrap();
    assert!(
        store
            .get(&Tenant::local(), &run, &id)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.next_seq(&Tenant::local(), &run).await.unwrap(), 2);
    assert_eq!(
        store
            .read(&Tenant::local(), &run, ReadQuery::all())
            .await
            .unwrap()
            .len(),
        1
    );
}

fn snapshot(id: &str) -> SnapshotRecord {
    SnapshotRecord::new(
        &Tenant::local(),
        RunId::new("run").unwrap(),
        SnapshotId::new(id).unwrap(),
        1,
        1,
        RunStatus::Running,
    )
}

/// A lone snapshot put runs on the caller's thread on a multi-threaded
/// runtime and through sqlx on a current-thread one. The caller's thread
/// never waits for a lock: a locked database sends the put through sqlx,
/// which waits; either way it gives up after the busy timeout with the same
/// retryable error, and goes through once the lock is released.
fn a_lone_put_gives_up_after_the_busy_timeout(runtime: tokio::runtime::Runtime) {
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let timeout = Duration::from_millis(300);
        let options = SqliteOptions::default().with_busy_timeout(timeout);
        let store = SqliteStore::open_with(&path, options).await.unwrap();
        let mut locker = hold_write_lock(&path).await;

        let started = Instant::now();
        let err = store
            .put(&Tenant::local(), &snapshot("s1"))
            .await
            .unwrap_err();
        let waited = started.elapsed();
        assert!(err.is_retryable(), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("locked") && message.contains("SQLITE_BUSY"),
            "the error names the lock: {message}"
        );
        assert!(waited >= timeout, "gave up after {waited:?}");

        assert_eq!(
            store.caller_thread_puts(),
            0,
            "a locked database is not written"
        );
        sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
        store.put(&Tenant::local(), &snapshot("s1")).await.unwrap();
        let run = RunId::new("run").unwrap();
        let latest = store.latest(&Tenant::local(), &run).await.unwrap().unwrap();
        assert_eq!(latest.snapshot_id.as_str(), "s1");
        locker.close().await.unwrap();
    });
}

#[test]
fn a_lone_put_on_the_callers_thread_gives_up_after_the_busy_timeout() {
    a_lone_put_gives_up_after_the_busy_timeout(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
}

#[test]
fn a_lone_put_through_sqlx_gives_up_after_the_busy_timeout() {
    a_lone_put_gives_up_after_the_busy_timeout(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    );
}

/// Which path a lone put takes: the caller's thread on a multi-threaded
/// runtime (each put counted, readable back through another handle, and
/// durable like any other), sqlx on a current-thread runtime (none counted).
fn lone_puts(runtime: &tokio::runtime::Runtime) -> u64 {
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = SqliteStore::open(&path).await.unwrap();
        for n in 1..=5 {
            store
                .put(&Tenant::local(), &snapshot(&format!("s{n}")))
                .await
                .unwrap();
        }
        let other = SqliteStore::open(&path).await.unwrap();
        let run = RunId::new("run").unwrap();
        let all = other.list(&Tenant::local(), &run, None).await.unwrap();
        assert_eq!(all.len(), 5);
        store.caller_thread_puts()
    })
}

#[test]
fn lone_puts_commit_on_the_callers_thread_only_on_a_multi_threaded_runtime() {
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(lone_puts(&multi), 5);
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(lone_puts(&current), 0);
}

/// Opening a database whose file another connection holds exclusively (as
/// another process in the middle of a rollback-journal write would) waits
/// out the busy timeout, then fails with the busy error, which names the
/// open and is retryable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_gives_up_after_the_busy_timeout_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker
        .execute_batch(
            "PRAGMA journal_mode = DELETE; CREATE TABLE t (x); \
             BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);",
        )
        .unwrap();
    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    let opened = tokio::time::timeout(
        Duration::from_secs(30),
        SqliteStore::open_with(&path, SqliteOptions::default().with_busy_timeout(timeout)),
    )
    .await
    .expect("the open gives up after its busy timeout, not never");
    let waited = started.elapsed();
    let Err(err) = opened else {
        panic!("opened a database another connection holds exclusively");
    };
    let message = err.to_string();
    assert!(err.is_retryable(), "{message}");
    assert!(
        message.contains("open a connection")
            && message.contains("SQLITE_BUSY")
            && message.contains("gave up"),
        "the error names the open and the lock: {message}"
    );
    assert!(waited >= timeout, "gave up after {waited:?}");

    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    SqliteStore::open(&path).await.unwrap();
}

/// A file that is not a database fails the open with SQLite's own error:
/// only SQLITE_BUSY is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_file_that_is_not_a_database_fails_without_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    // A busy timeout longer than the test waits: a retry of this error
    // would outlast it.
    let options = SqliteOptions::default().with_busy_timeout(Duration::from_secs(120));
    let opened = tokio::time::timeout(
        Duration::from_secs(30),
        SqliteStore::open_with(&path, options),
    )
    .await
    .expect("the open fails, it does not retry");
    let Err(err) = opened else {
        panic!("opened a file that is not a database");
    };
    let message = err.to_string();
    assert!(!err.is_retryable(), "{message}");
    assert!(
        message.contains("not a database") && !message.contains("SQLITE_BUSY"),
        "the error is SQLite's own: {message}"
    );
}

/// A deletion or a maintenance pass that meets the lock past the busy
/// timeout fails with the busy error naming what it was doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_and_maintenance_give_up_after_the_busy_timeout_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let options = SqliteOptions::default().with_busy_timeout(Duration::from_millis(200));
    let store = SqliteStore::open_with(&path, options).await.unwrap();
    store.append(&Tenant::local(), &event("a")).await.unwrap();
    for id in ["s1", "s2"] {
        store.put(&Tenant::local(), &snapshot(id)).await.unwrap();
    }
    let mut locker = hold_write_lock(&path).await;
    let run = RunId::new("run").unwrap();
    let run_err = store.delete_run(&Tenant::local(), &run).await.unwrap_err();
    let snapshots_err = store
        .delete_snapshots(&Tenant::local(), &run)
        .await
        .unwrap_err();
    let compact_err = store.compact(1, 1_000).await.unwrap_err();
    let prune_err = store.prune(1, 0, 1_000).await.unwrap_err();
    for (err, action) in [
        (run_err, ": delete a run: "),
        (snapshots_err, ": delete a run's snapshots: "),
        (compact_err, ": compact: "),
        (prune_err, ": prune snapshots: "),
    ] {
        let message = err.to_string();
        assert!(
            err.is_retryable() && message.contains(action) && message.contains("SQLITE_BUSY"),
            "{message}"
        );
    }
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    locker.close().await.unwrap();
}
