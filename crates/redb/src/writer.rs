//! Group commit: one thread owns every write transaction.
//!
//! Requests queue on a channel. The writer takes the first, drains whatever
//! else is queued (up to [`RedbOptions::max_batch`](crate::RedbOptions)),
//! runs them one after another in ONE write transaction, commits once and
//! then answers each. Appends that arrive while a commit is syncing therefore
//! share the next commit: 64 concurrent appenders pay for a handful of
//! fsyncs, not 64 (CONTRACT §3, §16). A transaction opens only the tables
//! its requests touch, and after a lone unsynced (relaxed) commit the writer polls
//! its queue briefly before sleeping (see [`SPIN`]).
//!
//! A request that is refused (a conflict, invalid input) writes nothing and
//! gets its error while the rest of the batch commits. If redb itself fails,
//! the transaction is dropped uncommitted and every request of the batch gets
//! the error: nothing of the batch was written.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use redb::{Database, Key, Table, TableDefinition, Value, WriteTransaction};
use runstore_core::{
    Durability, Error, FeedSignal, Result,
    raw::group::{self, Budget, Reply},
};

use crate::{
    error::{self, Failure},
    tables::{ERASED, EVENTS, FEED, HEADS, IDS, SNAPSHOT_ORDER, SNAPSHOTS},
};

type EventsTable<'t> = Table<'t, &'static [u8], &'static [u8]>;
type SeqTable<'t> = Table<'t, &'static [u8], u64>;
type OrderTable<'t> = Table<'t, &'static [u8], ()>;

/// The tables of one write transaction. Each is opened on first use and
/// stays open for the rest of the batch, so a batch of appends never opens
/// the snapshot tables: opening and closing a table is a B-tree lookup and
/// a root update in redb's table tree at commit.
pub(crate) struct WriteTables<'t> {
    txn: &'t WriteTransaction,
    /// Requests sent and not yet taken into a batch ([`Writer::submit`]).
    waiting: &'t AtomicUsize,
    /// How many requests this batch holds.
    batch_len: usize,
    log: LogSlots<'t>,
    erased: Option<SeqTable<'t>>,
    snapshots: Option<EventsTable<'t>>,
    order: Option<OrderTable<'t>>,
    /// Whether the job running now may have written (it says otherwise
    /// with [`WriteTables::wrote_nothing`]).
    job_writes: bool,
    /// Whether any job of the batch may have written.
    batch_writes: bool,
}

/// The event log's tables as [`WriteTables`] keeps them, each opened on
/// first use.
#[derive(Default)]
struct LogSlots<'t> {
    events: Option<EventsTable<'t>>,
    ids: Option<SeqTable<'t>>,
    heads: Option<SeqTable<'t>>,
    feed: Option<EventsTable<'t>>,
    /// Whether a job of the batch gave records feed positions: the commit
    /// then sleeps for the test delay first, and raises the feed signal.
    fed: bool,
}

impl<'t> LogSlots<'t> {
    fn open(&mut self, txn: &'t WriteTransaction) -> Result<LogTables<'_, 't>, Failure> {
        Ok(LogTables {
            events: opened(&mut self.events, txn, EVENTS)?,
            ids: opened(&mut self.ids, txn, IDS)?,
            heads: opened(&mut self.heads, txn, HEADS)?,
            feed: opened(&mut self.feed, txn, FEED)?,
            fed: &mut self.fed,
        })
    }
}

/// The event log's tables, the feed's included: every write of a record
/// gives it a feed position or takes it out of the feed.
pub(crate) struct LogTables<'a, 't> {
    pub(crate) events: &'a mut EventsTable<'t>,
    pub(crate) ids: &'a mut SeqTable<'t>,
    pub(crate) heads: &'a mut SeqTable<'t>,
    pub(crate) feed: &'a mut EventsTable<'t>,
    /// Set when records take positions ([`crate::feed::Positions`]).
    pub(crate) fed: &'a mut bool,
}

/// The snapshot store's tables.
pub(crate) struct SnapshotTables<'a, 't> {
    pub(crate) snapshots: &'a mut EventsTable<'t>,
    pub(crate) order: &'a mut OrderTable<'t>,
}

/// The table in `slot`, opened in `txn` if it is not open yet.
fn opened<'a, 't, K: Key + 'static, V: Value + 'static>(
    slot: &'a mut Option<Table<'t, K, V>>,
    txn: &'t WriteTransaction,
    definition: TableDefinition<K, V>,
) -> Result<&'a mut Table<'t, K, V>, Failure> {
    if slot.is_none() {
        *slot = Some(txn.open_table(definition)?);
    }
    Ok(slot.as_mut().expect("the table was opened above"))
}

impl<'t> WriteTables<'t> {
    fn new(txn: &'t WriteTransaction, waiting: &'t AtomicUsize, batch_len: usize) -> Self {
        Self {
            txn,
            waiting,
            batch_len,
            log: LogSlots::default(),
            erased: None,
            snapshots: None,
            order: None,
            job_writes: true,
            batch_writes: false,
        }
    }

    /// Says that the running job changed no table (an append whose events
    /// were all stored already): a batch of such jobs is not committed, so
    /// it costs no sync. What they answer was made durable by the commit
    /// that wrote it, or by the open (durable mode syncs the file first).
    pub(crate) fn wrote_nothing(&mut self) {
        self.job_writes = false;
    }

    /// Whether another request waits for this transaction's commit: one
    /// in the same batch, or one queued behind it. Work that could go on in
    /// this transaction should let it commit instead, so that the request
    /// waits for what is done, not for all there is to do.
    pub(crate) fn writes_waiting(&self) -> bool {
        self.batch_len > 1 || self.waiting.load(Ordering::Relaxed) > 0
    }

    /// The event log's tables (`events`, `ids`, `heads`, `feed`).
    pub(crate) fn log(&mut self) -> Result<LogTables<'_, 't>, Failure> {
        self.log.open(self.txn)
    }

    /// The event log's tables and `erased`, for the jobs that can make a
    /// stream a deleted run or find one (`delete_run`, `import_stream`);
    /// appends never open `erased` (see [`ERASED`]).
    pub(crate) fn log_and_erased(
        &mut self,
    ) -> Result<(LogTables<'_, 't>, &mut SeqTable<'t>), Failure> {
        let log = self.log.open(self.txn)?;
        Ok((log, opened(&mut self.erased, self.txn, ERASED)?))
    }

    /// The snapshot store's tables (`snapshots`, `snapshot_order`).
    pub(crate) fn snapshots(&mut self) -> Result<SnapshotTables<'_, 't>, Failure> {
        Ok(SnapshotTables {
            snapshots: opened(&mut self.snapshots, self.txn, SNAPSHOTS)?,
            order: opened(&mut self.order, self.txn, SNAPSHOT_ORDER)?,
        })
    }

    /// Every table, for work that spans both (compaction reads the
    /// snapshot index for each stream's floor).
    pub(crate) fn all(&mut self) -> Result<(LogTables<'_, 't>, SnapshotTables<'_, 't>), Failure> {
        let log = self.log.open(self.txn)?;
        let snapshots = SnapshotTables {
            snapshots: opened(&mut self.snapshots, self.txn, SNAPSHOTS)?,
            order: opened(&mut self.order, self.txn, SNAPSHOT_ORDER)?,
        };
        Ok((log, snapshots))
    }
}

/// One queued write: its work, and where its answer goes.
trait Job: Send {
    /// Runs the work inside the batch's transaction. `Err` means redb
    /// failed, or the work failed after writing, and the batch must be
    /// abandoned; a refusal is kept as the job's answer and returns `Ok`.
    fn run(&mut self, tables: &mut WriteTables<'_>) -> Result<(), Failure>;

    /// Answers the caller once the batch committed (`Ok`) or failed.
    fn finish(self: Box<Self>, committed: &Result<(), Error>);
}

struct Task<T, F> {
    work: Option<F>,
    answer: Option<Result<T>>,
    reply: Reply<T>,
}

impl<T, F> Job for Task<T, F>
where
    T: Send,
    F: FnOnce(&mut WriteTables<'_>) -> Result<T, Failure> + Send,
{
    fn run(&mut self, tables: &mut WriteTables<'_>) -> Result<(), Failure> {
        let work = self.work.take().expect("a job runs once");
        tables.job_writes = true;
        let result = work(tables);
        tables.batch_writes |= tables.job_writes;
        match result {
            Ok(value) => self.answer = Some(Ok(value)),
            Err(Failure::Rejected(err)) => self.answer = Some(Err(err)),
            Err(failure) => return Err(failure),
        }
        Ok(())
    }

    fn finish(self: Box<Self>, committed: &Result<(), Error>) {
        // A refused request wrote nothing whatever became of the batch; the
        // caller may have stopped waiting, and the write stands either way.
        self.reply.send(group::settle(self.answer, committed));
    }
}

/// The handle's side of the writer thread: sends jobs, and on drop stops
/// the thread and waits for it, so the database file is closed when the last
/// handle is gone.
pub(crate) struct Writer {
    sender: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
    /// Requests sent and not yet taken into a batch: raised before a
    /// request is sent, lowered by the writer as it takes requests into a
    /// batch ([`WriteTables::writes_waiting`]).
    waiting: Arc<AtomicUsize>,
}

impl Writer {
    /// Starts the writer thread of `db`.
    pub(crate) fn start(
        db: Arc<Database>,
        path: PathBuf,
        durability: Durability,
        max_batch: usize,
        feed: FeedHooks,
    ) -> Result<Self> {
        let (sender, receiver) = mpsc::channel::<Box<dyn Job>>();
        let thread_path = path.clone();
        let waiting = Arc::new(AtomicUsize::new(0));
        let thread_waiting = Arc::clone(&waiting);
        let thread = std::thread::Builder::new()
            .name("runstore-redb-writer".to_owned())
            .spawn(move || {
                let mut loop_state = WriterLoop {
                    db,
                    path: thread_path,
                    durability,
                    max_batch: max_batch.max(1),
                    feed,
                    waiting: thread_waiting,
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
            waiting,
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
        let (reply, answer) = group::reply();
        let job = Box::new(Task {
            work: Some(work),
            answer: None,
            reply,
        });
        let sender = self.sender.as_ref().expect("the sender lives until drop");
        // Raised before the send, so the writer never lowers it below zero.
        self.waiting.fetch_add(1, Ordering::Relaxed);
        sender
            .send(job)
            .map_err(|_| error::writer_gone(&self.path))?;
        answer.wait(|| error::writer_gone(&self.path)).await
    }
}

#[cfg(test)]
impl Writer {
    /// The count of requests waiting, for tests that stand in for one.
    pub(crate) fn waiting(&self) -> &AtomicUsize {
        &self.waiting
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

/// How long the writer keeps polling its empty queue, after a lone request
/// committed without a sync, before it sleeps on the channel.
///
/// A lone caller that gets its answer usually sends its next request within
/// a few tens of microseconds; polling for that long lets the writer pick it
/// up at once instead of going through a futex sleep and wake-up, which costs
/// about as much again as an unsynced commit. The poll runs at most once
/// per commit, so an idle store never spins, and a loaded one spends at most
/// this long per commit on it. After a durable commit it does not run: the
/// fsync dwarfs the wake-up, and a spinning writer could hold back a caller
/// woken on the same CPU.
const SPIN: Duration = Duration::from_micros(50);

/// Waits for the next job, first polling for up to [`SPIN`] when `spin`;
/// `None` once every handle is gone.
fn next_job(receiver: &mpsc::Receiver<Box<dyn Job>>, spin: bool) -> Option<Box<dyn Job>> {
    if spin {
        let start = Instant::now();
        loop {
            match receiver.try_recv() {
                Ok(job) => return Some(job),
                Err(mpsc::TryRecvError::Disconnected) => return None,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            if start.elapsed() >= SPIN {
                break;
            }
            std::hint::spin_loop();
        }
    }
    receiver.recv().ok()
}

/// What the writer does around a commit that gave records feed positions.
pub(crate) struct FeedHooks {
    /// Raised after each such commit.
    pub(crate) signal: FeedSignal,
    /// How long each such commit sleeps after its records took their
    /// positions and before it commits (a test hook; `None` normally).
    pub(crate) commit_delay: Option<Duration>,
}

struct WriterLoop {
    db: Arc<Database>,
    path: PathBuf,
    durability: Durability,
    max_batch: usize,
    feed: FeedHooks,
    waiting: Arc<AtomicUsize>,
}

impl WriterLoop {
    fn run(&mut self, receiver: &mpsc::Receiver<Box<dyn Job>>) {
        let budget = Budget::new(self.max_batch, usize::MAX);
        let mut carry = None;
        let mut spin = false;
        while let Some(first) = carry.take().or_else(|| next_job(receiver, spin)) {
            let mut batch = group::drain(first, receiver, &mut carry, budget, |_| 1);
            // A request left in `carry` still waits.
            self.waiting.fetch_sub(batch.len(), Ordering::Relaxed);
            // A batch of several means callers are queueing on their own;
            // polling would only split the next batch.
            let lone = batch.len() == 1;
            let began = std::time::Instant::now();
            let requests = batch.len();
            let synced = self.commit(&mut batch);
            // redb's jobs do not count their events: one per request.
            runstore_core::telemetry::group_committed("redb", requests, requests, began.elapsed());
            spin = lone && !synced;
        }
    }

    /// Runs every job of `batch` in one transaction, commits, and answers.
    /// Returns whether the commit was synced. A batch whose jobs all wrote
    /// nothing is aborted instead: nothing to commit, nothing to sync.
    ///
    /// Every commit is redb's `Durability::Immediate`: its pages and header
    /// are written to the backend before it returns. In relaxed mode the
    /// backend skips the sync ([`crate::backend`]), so the commit is in the
    /// operating system's page cache, safe from a killed process.
    fn commit(&mut self, batch: &mut Vec<Box<dyn Job>>) -> bool {
        let outcome = self.run_batch(batch);
        let synced = matches!(outcome, Ok(true)) && self.durability == Durability::Durable;
        let committed = outcome
            .map(drop)
            .map_err(|failure| failure.into_error(&self.path));
        for job in batch.drain(..) {
            job.finish(&committed);
        }
        synced
    }

    /// Runs the batch; whether it was committed (it wrote something).
    fn run_batch(&mut self, batch: &mut [Box<dyn Job>]) -> Result<bool, Failure> {
        let txn = self.db.begin_write()?;
        let (writes, fed) = {
            let mut tables = WriteTables::new(&txn, &self.waiting, batch.len());
            for job in batch.iter_mut() {
                job.run(&mut tables)?;
            }
            (tables.batch_writes, tables.log.fed)
        };
        if !writes {
            txn.abort()?;
            return Ok(false);
        }
        if fed && let Some(delay) = self.feed.commit_delay {
            std::thread::sleep(delay);
        }
        txn.commit()?;
        if fed {
            self.feed.signal.raise();
        }
        Ok(true)
    }
}
