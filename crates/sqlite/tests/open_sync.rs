//! CONTRACT §16 at open: a durable open makes the WAL it finds durable
//! before it answers anything, by checkpointing it through SQLite's own
//! connection (SQLite syncs the WAL before copying frames and the database
//! file before recording them as copied); a relaxed open does not.
//!
//! A process killed after writing a commit's WAL frames but before syncing
//! the WAL leaves the frames in the page cache, and the next open's WAL
//! recovery accepts them. The leftovers are made here by copying a live
//! store's database and `-wal` files (without its `-shm`, as a killed
//! process's stale one would be rebuilt): the copies are written and never
//! synced, as the killed process's writes were. Power loss cannot be
//! simulated under SQLite here, so the test checks that the open's
//! checkpoint copied every frame it found ([`SqliteStore::open_checkpoint`])
//! and that the open answered from the copied WAL: a read of the killed
//! store's events and a retry of one, answered "already stored at seq N".

use std::path::{Path, PathBuf};

use runstore_core::{Durability, EventId, EventLog, EventRecord, RunId, Tenant};
use runstore_sqlite::{SqliteOptions, SqliteStore};

fn event(tenant: &Tenant, run: &RunId, n: u64) -> EventRecord {
    EventRecord::new(
        tenant,
        run.clone(),
        EventId::new(format!("e-{n}")).expect("event id"),
        "step",
        n,
    )
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Copies the database and its `-wal` file into `dir`, as a process killed
/// before syncing its WAL leaves them: written, never synced, no `-shm`.
fn copy_leftovers(db: &Path, dir: &Path) -> PathBuf {
    let copy = dir.join("db.sqlite");
    std::fs::write(&copy, std::fs::read(db).expect("read the database")).expect("copy");
    let wal = std::fs::read(with_suffix(db, "-wal")).expect("read the WAL");
    assert!(!wal.is_empty(), "the live store's WAL holds its commits");
    std::fs::write(with_suffix(&copy, "-wal"), wal).expect("copy the WAL");
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_open_checkpoints_the_wal_it_finds_and_a_relaxed_open_does_not() {
    let live_dir = tempfile::tempdir().expect("temp dir");
    let live_path = live_dir.path().join("db.sqlite");
    let live = SqliteStore::open(&live_path).await.expect("open");
    let (tenant, run) = (Tenant::local(), RunId::new("run").expect("run id"));
    let events: Vec<EventRecord> = (1..=5).map(|n| event(&tenant, &run, n)).collect();
    live.append_batch(&tenant, &run, &events, None)
        .await
        .expect("append");

    for durability in [Durability::Relaxed, Durability::Durable] {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = copy_leftovers(&live_path, dir.path());
        let store =
            SqliteStore::open_with(&path, SqliteOptions::default().with_durability(durability))
                .await
                .expect("open the leftovers");
        match (durability, store.open_checkpoint()) {
            (Durability::Durable, Some((busy, frames, copied))) => {
                assert_eq!(busy, 0, "nothing blocks the checkpoint");
                assert!(frames > 0, "the open found the killed store's frames");
                assert_eq!(copied, frames, "every frame found was copied and synced");
            }
            (Durability::Relaxed, None) => {}
            (durability, checkpoint) => {
                panic!("{durability:?} open checkpointed {checkpoint:?}")
            }
        }

        // The open answers from the WAL it found: a read, and a retry.
        for (n, sent) in events.iter().enumerate() {
            let seq = store
                .seq_of(&tenant, &run, &sent.event_id)
                .await
                .expect("seq_of");
            assert_eq!(seq, Some(n as u64 + 1), "{durability:?}: read from the WAL");
        }
        let mut again = events[2].clone();
        again.seq = 0;
        let outcome = store
            .append_batch(&tenant, &run, &[again], None)
            .await
            .expect("retry");
        assert_eq!((outcome[0].seq, outcome[0].inserted), (3, false));
    }
    drop(live);
}
