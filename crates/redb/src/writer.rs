//! Group commit: one thread owns every write transaction.
//!
//! Requests queue on a channel. The writer takes the first, drains whatever
//! else is queued (up to [`RedbOptions::max_batch`](crate::RedbOptions)),
//! runs them one after another in ONE write transaction, commits once and
//! then answers each. Appends that arrive while a commit is syncing therefore
//! share the next commit: 64 concurrent appenders pay for a handful of
//! fsyncs, not 64 (CONTRACT §3, §16).
//!
//! A request that is refused (a conflict, invalid input) writes nothing and
//! gets its error while the rest of the batch commits. If redb itself fails,
//! the transaction is dropped uncommitted and every request of the batch gets
//! the error: nothing of the batch was written.

use std::{
    path::PathBuf,
    sync::{Arc, mpsc},
    thread::JoinHandle,
};

use redb::{Database, Table, WriteTransaction};
use runstore_core::{Durability, Error, Result};
use tokio::sync::oneshot;

use crate::{
    error::{self, Failure},
    tables::{EVENTS, HEADS, IDS, SNAPSHOT_ORDER, SNAPSHOTS},
};

/// In relaxed mode, every this many commits one is made durable anyway, so
/// that redb can reuse the pages freed since the last durable commit.
const RELAXED_SYNC_EVERY: u64 = 1024;

/// The tables of one write transaction, open for the whole batch.
pub(crate) struct WriteTables<'t> {
    pub(crate) events: Table<'t, &'static [u8], &'static [u8]>,
    pub(crate) ids: Table<'t, &'static [u8], u64>,
    pub(crate) heads: Table<'t, &'static [u8], u64>,
    pub(crate) snapshots: Table<'t, &'static [u8], &'static [u8]>,
    pub(crate) order: Table<'t, &'static [u8], ()>,
}

impl<'t> WriteTables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, Failure> {
        Ok(Self {
            events: txn.open_table(EVENTS)?,
            ids: txn.open_table(IDS)?,
            heads: txn.open_table(HEADS)?,
            snapshots: txn.open_table(SNAPSHOTS)?,
            order: txn.open_table(SNAPSHOT_ORDER)?,
        })
    }
}

/// One queued write: its work, and where its answer goes.
trait Job: Send {
    /// Runs the work inside the batch's transaction. `Err` means redb
    /// failed and the batch must be abandoned; a refusal is kept as the
    /// job's answer and returns `Ok`.
    fn run(&mut self, tables: &mut WriteTables<'_>) -> Result<(), redb::Error>;

    /// Answers the caller once the batch committed (`Ok`) or failed.
    fn finish(self: Box<Self>, committed: Result<(), Error>);
}

struct Task<T, F> {
    work: Option<F>,
    answer: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Task<T, F>
where
    T: Send,
    F: FnOnce(&mut WriteTables<'_>) -> Result<T, Failure> + Send,
{
    fn run(&mut self, tables: &mut WriteTables<'_>) -> Result<(), redb::Error> {
        let work = self.work.take().expect("a job runs once");
        match work(tables) {
            Ok(value) => self.answer = Some(Ok(value)),
            Err(Failure::Rejected(err)) => self.answer = Some(Err(err)),
            Err(Failure::Redb(err)) => return Err(err),
        }
        Ok(())
    }

    fn finish(self: Box<Self>, committed: Result<(), Error>) {
        let answer = match (committed, self.answer) {
            // A refused request wrote nothing whatever became of the batch.
            (_, Some(Err(refused))) => Err(refused),
            (Ok(()), Some(Ok(value))) => Ok(value),
            (Err(err), _) => Err(err),
            (Ok(()), None) => unreachable!("a committed batch ran every job"),
        };
        // The caller may have stopped waiting (a dropped future); the write
        // stands either way.
        let _ = self.reply.send(answer);
    }
}

/// The handle's side of the writer thread: sends jobs, and on drop stops
/// the thread and waits for it, so the database file is closed when the last
/// handle is gone.
pub(crate) struct Writer {
    sender: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer thread of `db`.
    pub(crate) fn start(
        db: Arc<Database>,
        path: PathBuf,
        durability: Durability,
        max_batch: usize,
    ) -> Result<Self> {
        let (sender, receiver) = mpsc::channel::<Box<dyn Job>>();
        let thread_path = path.clone();
        let thread = std::thread::Builder::new()
            .name("runstore-redb-writer".to_owned())
            .spawn(move || {
                let mut loop_state = WriterLoop {
                    db,
                    path: thread_path,
                    durability,
                    max_batch: max_batch.max(1),
                    commits: 0,
                };
                loop_state.run(&receiver);
            })
            .map_err(|err| {
                Error::io(
                    format!(
                        "starting the writer thread of redb store {}",
                        path.display()
                    ),
                    err,
                )
            })?;
        Ok(Self {
            sender: Some(sender),
            thread: Some(thread),
            path,
        })
    }

    /// Runs `work` in the next group commit and returns its answer once that
    /// commit is durable (or as durable as the store's mode makes it).
    ///
    /// `work` must return [`Failure::Rejected`] only before it has written
    /// anything.
    pub(crate) async fn submit<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteTables<'_>) -> Result<T, Failure> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Task {
            work: Some(work),
            answer: None,
            reply,
        });
        let sender = self.sender.as_ref().expect("the sender lives until drop");
        sender
            .send(job)
            .map_err(|_| error::writer_gone(&self.path))?;
        answer.await.map_err(|_| error::writer_gone(&self.path))?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop after the jobs already
        // queued; joining it releases its database handle.
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            // The wait is at most one group commit, but on a runtime worker
            // it is still blocking: let the runtime move its other tasks
            // away first where it can.
            let on_multi_thread = tokio::runtime::Handle::try_current().is_ok_and(|handle| {
                handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
            });
            if on_multi_thread {
                tokio::task::block_in_place(|| {
                    let _ = thread.join();
                });
            } else {
                let _ = thread.join();
            }
        }
    }
}

struct WriterLoop {
    db: Arc<Database>,
    path: PathBuf,
    durability: Durability,
    max_batch: usize,
    commits: u64,
}

impl WriterLoop {
    fn run(&mut self, receiver: &mpsc::Receiver<Box<dyn Job>>) {
        let mut batch: Vec<Box<dyn Job>> = Vec::new();
        while let Ok(first) = receiver.recv() {
            batch.push(first);
            while batch.len() < self.max_batch {
                match receiver.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.commit(&mut batch);
        }
    }

    /// Runs every job of `batch` in one transaction, commits, and answers.
    fn commit(&mut self, batch: &mut Vec<Box<dyn Job>>) {
        let outcome = self.run_batch(batch);
        let outcome = outcome.map_err(Arc::new);
        for job in batch.drain(..) {
            let committed = match &outcome {
                Ok(()) => Ok(()),
                Err(err) => Err(error::batch_failed(&self.path, err)),
            };
            job.finish(committed);
        }
    }

    fn run_batch(&mut self, batch: &mut [Box<dyn Job>]) -> Result<(), redb::Error> {
        let mut txn = self.db.begin_write()?;
        let durable = match self.durability {
            Durability::Durable => true,
            Durability::Relaxed => (self.commits + 1).is_multiple_of(RELAXED_SYNC_EVERY),
        };
        if !durable {
            txn.set_durability(redb::Durability::None)?;
        }
        {
            let mut tables = WriteTables::open(&txn).map_err(|failure| match failure {
                Failure::Redb(err) => err,
                Failure::Rejected(err) => redb::Error::Backend(Box::new(err)),
            })?;
            for job in batch.iter_mut() {
                job.run(&mut tables)?;
            }
        }
        txn.commit()?;
        self.commits += 1;
        Ok(())
    }
}
