//! The writer's shortcuts against what could make them wrong: the guarded
//! path's remembered seq going stale under another handle's writes (CONTRACT
//! §1, §2, §10), and a leader cancelled with its runtime.

use runstore_conformance::support::records::{acme as tenant, run_1 as run};
use std::{
    sync::mpsc,
    task::Poll,
    time::{Duration, Instant},
};

use runstore_core::{AppendOutcome, EventId, EventLog, EventLogExt, EventRecord, ReadQuery};
use runstore_sqlite::{SqliteOptions, SqliteStore};
use sqlx::{ConnectOptions as _, sqlite::SqliteConnectOptions};

fn event(id: &str, at: u64) -> EventRecord {
    EventRecord::new(
        &tenant(),
        run(),
        EventId::new(id).unwrap(),
        "writer.test",
        at,
    )
}

fn current() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Holds SQLite's write lock on `path` from a thread of its own for `hold`;
/// the receiver hears once the lock is taken.
fn hold_write_lock(
    path: std::path::PathBuf,
    hold: Duration,
) -> (mpsc::Receiver<()>, std::thread::JoinHandle<()>) {
    let (locked, taken) = mpsc::channel();
    let holder = std::thread::spawn(move || {
        current().block_on(async move {
            let mut conn = SqliteConnectOptions::new()
                .filename(&path)
                .connect()
                .await
                .unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .unwrap();
            locked.send(()).unwrap();
            tokio::time::sleep(hold).await;
            sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
        });
    });
    (taken, holder)
}

fn inserted(seq: u64) -> AppendOutcome {
    AppendOutcome {
        seq,
        inserted: true,
    }
}

async fn seqs_and_ids(store: &SqliteStore) -> Vec<(u64, String)> {
    store
        .read(&tenant(), &run(), ReadQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|record| (record.seq, record.event_id.as_str().to_owned()))
        .collect()
}

// Each handle has its own writer and remembers the seq its own last commit
// left; the other handle's appends make that memory stale, and the next
// append must still take the next seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_of_another_handle_are_not_overwritten_or_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let first = SqliteStore::open(&path).await.unwrap();
    let second = SqliteStore::open(&path).await.unwrap();
    let t = tenant();
    for round in 0..5u64 {
        let a = first.append(&t, &event(&format!("a{round}"), 1)).await;
        assert_eq!(a.unwrap(), inserted(2 * round + 1));
        let b = second.append(&t, &event(&format!("b{round}"), 1)).await;
        assert_eq!(b.unwrap(), inserted(2 * round + 2));
    }
    // A batch on a stale memory, and a retry of an id the other handle
    // wrote, answered with the stored seq.
    let batch = [event("c0", 1), event("b4", 1), event("c1", 1)];
    let outcomes = first.append_batch(&t, &run(), &batch, None).await.unwrap();
    assert_eq!(
        outcomes,
        [
            inserted(11),
            AppendOutcome {
                seq: 10,
                inserted: false
            },
            inserted(12)
        ]
    );
    let stored = seqs_and_ids(&second).await;
    let seqs: Vec<u64> = stored.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
}

// An append to a stream whose last seq the writer remembers from its own
// last commit there takes the guarded path; the first append to a stream
// does not. Appends alternating between two streams keep both remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_to_a_remembered_stream_take_the_guarded_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("db.sqlite"))
        .await
        .unwrap();
    let t = tenant();
    let other = runstore_core::RunId::new("run-2").unwrap();
    let on_other = |id: &str| {
        let mut record = event(id, 1);
        record.run_id = other.clone();
        record
    };
    let steps = [
        (event("a1", 1), 0, 1),
        (event("a2", 1), 1, 2),
        (on_other("o1"), 1, 1),
        (event("a3", 1), 2, 3),
        (on_other("o2"), 3, 2),
        (event("a4", 1), 4, 4),
    ];
    for (record, guarded, seq) in steps {
        let outcome = store.append(&t, &record).await.unwrap();
        assert_eq!(outcome.seq, seq, "{}", record.event_id.as_str());
        assert_eq!(
            store.guarded_appends(),
            guarded,
            "after {}",
            record.event_id.as_str()
        );
    }
    assert_eq!(store.next_seq(&t, &other).await.unwrap(), 3);
}

// The guarded path under the commit-delay test hook (its statement in a
// transaction of its own, so that the commit can wait): a remembered stream
// takes it; after another handle moved the stream on, the guard fails, the
// transaction is rolled back and the general path appends. A group of
// exactly 128 new rows, the most one statement takes, still goes guarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_guard_under_delayed_commits_rolls_back_to_the_general_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let options = SqliteOptions::default().with_test_commit_delay(Duration::from_millis(1));
    let slow = SqliteStore::open_with(&path, options).await.unwrap();
    let other = SqliteStore::open(&path).await.unwrap();
    let t = tenant();
    assert_eq!(slow.append(&t, &event("a1", 1)).await.unwrap(), inserted(1));
    assert_eq!(slow.append(&t, &event("a2", 1)).await.unwrap(), inserted(2));
    assert_eq!(slow.guarded_appends(), 1);
    assert_eq!(
        other.append(&t, &event("b1", 1)).await.unwrap(),
        inserted(3)
    );
    assert_eq!(slow.append(&t, &event("a3", 1)).await.unwrap(), inserted(4));
    assert_eq!(slow.guarded_appends(), 1, "the guard failed");
    let batch: Vec<EventRecord> = (0..128).map(|n| event(&format!("c{n}"), 1)).collect();
    let outcomes = slow.append_batch(&t, &run(), &batch, None).await.unwrap();
    assert_eq!(outcomes.last(), Some(&inserted(132)));
    assert_eq!(
        slow.guarded_appends(),
        2,
        "128 rows in one guarded statement"
    );
    assert_eq!(seqs_and_ids(&other).await.len(), 132);
}

// After another handle compacted the stream, the stream's last seq is what
// this handle remembers, but the pruned ids live on only in the marker: an
// append of one of them is a duplicate, not a new event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_another_handle_compacted_stay_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let first = SqliteStore::open(&path).await.unwrap();
    let second = SqliteStore::open(&path).await.unwrap();
    let t = tenant();
    for (index, id) in ["e1", "e2", "e3"].into_iter().enumerate() {
        let outcome = first.append(&t, &event(id, 10)).await.unwrap();
        assert_eq!(outcome, inserted(index as u64 + 1));
    }
    let pruned = second.compact(5, 1_000).await.unwrap().removed;
    assert_eq!(pruned, 3);

    let again = first.append(&t, &event("e2", 10)).await.unwrap();
    assert_eq!(
        again,
        AppendOutcome {
            seq: 2,
            inserted: false
        }
    );
    let batch = [event("e4", 2_000), event("e1", 10)];
    let outcomes = first.append_batch(&t, &run(), &batch, None).await.unwrap();
    assert_eq!(
        outcomes,
        [
            inserted(4),
            AppendOutcome {
                seq: 1,
                inserted: false
            }
        ]
    );
    let stored = seqs_and_ids(&first).await;
    assert_eq!(stored.len(), 2, "the marker and e4: {stored:?}");
    assert_eq!(stored[0].0, 3);
    assert_eq!(stored[1], (4, "e4".to_owned()));
}

// A request whose caller stops waiting mid-write is still written (the
// rest of its leader runs on the store's own thread), whatever becomes of
// the caller's runtime; the store goes on serving another runtime.
#[test]
fn a_leader_cancelled_with_its_runtime_leaves_the_store_usable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let current = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let first = current();
    let store = first.block_on(SqliteStore::open(&path)).unwrap();
    let t = tenant();
    first.block_on(async {
        assert_eq!(store.append(&t, &event("a", 1)).await.unwrap(), inserted(1));
        // Polled once, then dropped: the caller's leader is handed on.
        let b = event("b", 1);
        let mut append = std::pin::pin!(store.append(&t, &b));
        let first_poll = std::future::poll_fn(|cx| Poll::Ready(append.as_mut().poll(cx))).await;
        assert!(first_poll.is_pending(), "an append waits for the database");
    });
    drop(first);

    let second = current();
    second.block_on(async {
        let c = store.append(&t, &event("c", 1)).await.unwrap();
        let b = store.append(&t, &event("b", 1)).await.unwrap();
        let stored = seqs_and_ids(&store).await;
        let seqs: Vec<u64> = stored.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=3).collect::<Vec<_>>(), "{stored:?}");
        assert!(c.inserted);
        assert_eq!(stored[usize::try_from(b.seq).unwrap() - 1].1, "b");
        let ids: Vec<&str> = stored.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(ids.iter().filter(|id| **id == "b").count(), 1, "{ids:?}");
    });
}

// Another handle appends past what this one remembers, then compaction
// deletes those seqs (the marker takes the highest): the seq after the
// remembered one is free in the table again, yet must never be reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seqs_freed_by_another_handles_compaction_are_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let first = SqliteStore::open(&path).await.unwrap();
    let second = SqliteStore::open(&path).await.unwrap();
    let t = tenant();
    assert_eq!(
        first.append(&t, &event("a", 10)).await.unwrap(),
        inserted(1)
    );
    assert_eq!(
        second.append(&t, &event("b", 10)).await.unwrap(),
        inserted(2)
    );
    assert_eq!(
        second.append(&t, &event("c", 10)).await.unwrap(),
        inserted(3)
    );
    assert_eq!(second.compact(5, 1_000).await.unwrap().removed, 3);

    let d = first.append(&t, &event("d", 2_000)).await.unwrap();
    assert_eq!(d, inserted(4));
    let stored = seqs_and_ids(&second).await;
    assert_eq!(stored.len(), 2, "the marker and d: {stored:?}");
    assert_eq!(stored[0].0, 3);
    assert_eq!(stored[1], (4, "d".to_owned()));
}

// The caller that led a write has its answer and leaves its runtime idle
// (a current-thread runtime between `block_on` calls) while another
// runtime's request is still queued: that request is written all the same.
#[test]
fn a_request_queued_from_another_runtime_does_not_wait_for_an_idle_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let first = current();
    let store = first.block_on(SqliteStore::open(&path)).unwrap();
    let t = tenant();
    first.block_on(store.append(&t, &event("warm", 1))).unwrap();

    let (taken, holder) = hold_write_lock(path.clone(), Duration::from_millis(500));
    taken.recv().unwrap();
    let (done, answered) = mpsc::channel();
    let other = store.clone();
    let queued = std::thread::spawn(move || {
        // Queues behind the first runtime's write, which waits for the lock.
        std::thread::sleep(Duration::from_millis(150));
        let outcome = current().block_on(other.append(&tenant(), &event("b", 1)));
        done.send(outcome).unwrap();
    });
    let a = first.block_on(store.append(&t, &event("a", 1))).unwrap();
    assert!(a.inserted);
    holder.join().unwrap();
    // `first` is alive but no longer driven. A generous bound, only so that
    // a regression fails instead of hanging the suite.
    let b = answered
        .recv_timeout(Duration::from_secs(60))
        .expect("the queued append was answered while the leader's runtime sat idle");
    assert!(b.unwrap().inserted);
    queued.join().unwrap();
}

// A write that finds the database locked gives up once the busy timeout has
// passed in total, on the guarded path as on the general one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_is_waited_for_once_not_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let timeout = Duration::from_secs(1);
    let options = SqliteOptions::default().with_busy_timeout(timeout);
    let store = SqliteStore::open_with(&path, options).await.unwrap();
    let t = tenant();
    // The writer now remembers the stream: the next append is guarded.
    store.append(&t, &event("first", 1)).await.unwrap();
    let (taken, holder) = hold_write_lock(path.clone(), Duration::from_secs(4));
    taken.recv().unwrap();
    let started = Instant::now();
    let err = store.append(&t, &event("second", 1)).await.unwrap_err();
    let waited = started.elapsed();
    holder.join().unwrap();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("SQLITE_BUSY"), "{err}");
    assert!(
        waited >= timeout && waited < timeout * 19 / 10,
        "gave up after {waited:?} with a busy timeout of {timeout:?}: {err}"
    );
}
