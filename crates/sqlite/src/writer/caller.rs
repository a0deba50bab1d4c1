//! A lone snapshot put committed on the caller's thread.
//!
//! Through sqlx, a put is a round trip to the connection's worker thread,
//! which runs the upsert and its sync and hands the answer back: two
//! thread wake-ups per put, which on a machine whose cores sleep between
//! calls cost about a quarter of a durable put. Measured in chunks
//! alternated in the same seconds (`docs/benchmarks.md`, the peer
//! comparison's SQLite put floor): a bare sqlx loop of the store's upsert
//! at 1.16-1.21x a synchronous checkpointer's put, the same upsert through
//! rusqlite on the calling thread at 1.53-1.54x.
//!
//! So a put that is alone in its group ([`super::Writer::try_lone_put`])
//! runs its upsert, as its own autocommit transaction, through a rusqlite
//! connection of the writer, on the thread that drives the writer, inside
//! [`tokio::task::block_in_place`]: the runtime moves its other tasks to
//! another thread while this one waits for the sync. That is only allowed
//! on a multi-threaded runtime; on any other (a current-thread runtime, the
//! store's own driver thread) the put goes through sqlx as before.
//!
//! The connection has the writer's settings (WAL, the `synchronous` level
//! of the store's durability) but a busy timeout of zero: it never waits
//! for a lock on the caller's thread. The writer runs one job at a time,
//! so this connection and the sqlx one never write at once; to other
//! processes (and other handles on the file) they are two writers like any
//! other, ordered by SQLite's write lock. A put that finds the database
//! locked, or fails for any other reason, runs again through sqlx, which
//! waits for the lock off the caller's thread and answers with its own
//! error (the upsert writes the same row either way). A runtime that does
//! not allow `block_in_place` where the flavor check lets it through (a
//! multi-threaded runtime's handle entered inside a current-thread
//! runtime's `block_on`) is caught the same way: its panic unwinds before
//! the upsert runs, and the put goes through sqlx.

use std::{
    panic::AssertUnwindSafe,
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use runstore_core::Durability;
use rusqlite::{Connection, OpenFlags};
use tokio::runtime::{Handle, RuntimeFlavor};

use super::PutJob;
use crate::schema;

/// What the caller-thread connection needs; cloned into a writer that
/// connects anew.
#[derive(Debug, Clone)]
pub(crate) struct CallerPuts {
    /// The database file.
    pub(crate) file: PathBuf,
    pub(crate) durability: Durability,
    /// Puts written on the caller's thread, shared with the store handle
    /// (for tests: which path a put took is not otherwise visible).
    pub(crate) written: Arc<AtomicU64>,
}

/// The writer's caller-thread connection, opened on first use. (Behind a
/// mutex, which only the writer takes, so that the writer stays `Sync`.)
pub(super) struct CallerConn {
    config: CallerPuts,
    conn: Mutex<Option<Connection>>,
}

impl CallerConn {
    pub(super) fn new(config: CallerPuts) -> Self {
        Self {
            config,
            conn: Mutex::new(None),
        }
    }

    pub(super) fn config(&self) -> &CallerPuts {
        &self.config
    }

    /// Runs `put`'s upsert on this thread. `None` when this path does not
    /// apply (not on a multi-threaded runtime) or did not write (a locked
    /// database, any failure): the caller then puts through sqlx.
    pub(super) fn put(&mut self, put: &PutJob) -> Option<()> {
        let multi_threaded = Handle::try_current()
            .is_ok_and(|handle| handle.runtime_flavor() == RuntimeFlavor::MultiThread);
        if !multi_threaded {
            return None;
        }
        let mut slot = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let deployment = schema::deployment_column(&put.tenant);
        let upsert = |slot: &mut Option<Connection>| -> Option<()> {
            if slot.is_none() {
                *slot = open(&self.config);
            }
            let conn = slot.as_ref()?;
            let written = conn
                .prepare_cached(schema::PUT_SNAPSHOT)
                .and_then(|mut upsert| {
                    upsert.execute(rusqlite::params![
                        put.tenant.org_id(),
                        put.tenant.workspace_id(),
                        deployment,
                        put.run_id.as_str(),
                        put.snapshot_id.as_str(),
                        put.seq,
                        put.created_at_ms,
                        put.record.as_str(),
                    ])
                });
            // A failed autocommit statement leaves the connection as it
            // was; the put goes through sqlx.
            written.ok().map(|_| {
                self.config.written.fetch_add(1, Ordering::Relaxed);
            })
        };
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            tokio::task::block_in_place(|| upsert(&mut slot))
        }))
        .ok()
        .flatten()
    }
}

/// A write connection with the writer's settings (the writer has created
/// the file and put it into WAL mode).
fn open(config: &CallerPuts) -> Option<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE.union(OpenFlags::SQLITE_OPEN_NO_MUTEX);
    let conn = Connection::open_with_flags(&config.file, flags).ok()?;
    let synchronous = match config.durability {
        Durability::Durable => "FULL",
        Durability::Relaxed => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous).ok()?;
    conn.busy_timeout(Duration::ZERO).ok()?;
    conn.set_prepared_statement_cache_capacity(4);
    Some(conn)
}
