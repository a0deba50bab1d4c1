//! The write queue and its leaders: how a request reaches the writer.
//!
//! [`WriteQueue::submit`] queues a job; the request that finds no leader
//! running starts one ([`Leader`]) and drives it while it waits for its own
//! answer ([`answered`]). A leader takes batch after batch
//! ([`next_batch`]): groupable jobs queued one after another go to
//! [`Writer::run_group`], any other job to [`Writer::run_exclusive`]. A
//! leader its caller stopped driving goes on on the store's own thread
//! ([`Driver`]); one that was cancelled answers what is still queued
//! ([`Leading`]).

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::Poll,
    time::Duration,
};

use runstore_core::raw::group::{self, Answer, Batch, Budget};
use sqlx::sqlite::SqliteConnectOptions;
use tokio::sync::oneshot;

use super::{CallerPuts, FeedHooks, Job, Writer};
use crate::{
    conn,
    error::{SqliteError, shared},
};

/// The most events one group transaction writes; more wait for the next.
const MAX_GROUP_EVENTS: usize = 8_192;
/// The most requests in one group transaction.
const MAX_GROUP_REQUESTS: usize = 1_024;

/// Takes the next batch from the front of `jobs` ([`group::next_batch`]):
/// a job that runs alone, or the groupable jobs queued one after another,
/// up to the group's limits.
fn next_batch(jobs: &mut VecDeque<Job>) -> Option<Batch<Job>> {
    let first = jobs.pop_front()?;
    let budget = Budget::new(MAX_GROUP_REQUESTS, MAX_GROUP_EVENTS);
    let mut carry = None;
    let batch = group::next_batch(first, || jobs.pop_front(), &mut carry, budget, Job::joins);
    if let Some(job) = carry {
        jobs.push_front(job);
    }
    Some(batch)
}

/// The store's write requests, and its writer while no leader runs it.
///
/// A request is queued; if no leader is running, the request starts one
/// ([`Leader`]). The leader takes batch after batch from the queue and,
/// when it finds the queue empty, parks the writer here and ends. Requests
/// that arrive while a group is being written wait for the next group
/// (group commit).
pub(crate) struct WriteQueue {
    state: Mutex<QueueState>,
    path: Arc<str>,
    /// How the writer connects again after a leader was cancelled.
    options: SqliteConnectOptions,
    busy_timeout: Duration,
    /// The writer's feed hooks, for a writer that connects anew.
    feed: FeedHooks,
    /// The writer's caller-thread puts, for a writer that connects anew.
    caller: CallerPuts,
    /// The writer's count of guarded groups, for a writer that connects
    /// anew.
    guarded_groups: Arc<AtomicU64>,
    /// How many jobs are queued, shared with the writer
    /// (`writer::writes_waiting`): set under the lock whenever the queue
    /// changes.
    queued: Arc<AtomicUsize>,
    /// The thread that runs leaders their callers stopped driving; started
    /// on first need.
    driver: Mutex<Option<Driver>>,
}

/// The store's own thread, with a runtime of its own, which runs a leader
/// once the caller that drove it has its answer (or stopped waiting) while
/// requests remain. Whatever runtimes the callers use -- one that is no
/// longer driven between `block_on` calls, one that shuts down -- the queued
/// requests go on being written. The thread ends when the queue is dropped,
/// which no running leader allows, as each holds the queue.
struct Driver {
    runtime: tokio::runtime::Handle,
    /// Dropped with the queue, which ends the thread's `block_on`.
    _stop: oneshot::Sender<()>,
}

impl Driver {
    fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("runstore-sqlite-writer".to_owned())
            .spawn(move || {
                // Either way the queue is gone: stop.
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Self {
            runtime: handle,
            _stop: stop,
        })
    }
}

struct QueueState {
    jobs: VecDeque<Job>,
    /// Whether a leader task is running.
    leading: bool,
    /// The writer while no leader runs it. `None` after a leader was
    /// cancelled mid-batch (its connection, and any transaction it had
    /// open, went with it) until the next leader connects anew.
    idle: Option<Writer>,
}

impl WriteQueue {
    /// A queue whose first leader will run `writer`; `options` reconnect it
    /// should a leader be cancelled.
    pub(crate) fn new(writer: Writer, options: SqliteConnectOptions) -> Arc<Self> {
        Arc::new(Self {
            path: writer.path.clone(),
            busy_timeout: writer.busy_timeout,
            feed: writer.feed.clone(),
            caller: writer.caller.config().clone(),
            guarded_groups: Arc::clone(&writer.guarded_groups),
            queued: Arc::clone(&writer.queued),
            options,
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                leading: false,
                idle: Some(writer),
            }),
            driver: Mutex::new(None),
        })
    }

    /// The runtime of the store's own thread, starting it if needed; `None`
    /// if the thread cannot start.
    fn driver(&self) -> Option<tokio::runtime::Handle> {
        let mut driver = self.driver.lock().unwrap_or_else(PoisonError::into_inner);
        if driver.is_none() {
            *driver = Driver::start().ok();
        }
        driver.as_ref().map(|driver| driver.runtime.clone())
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Nothing panics while the lock is held; a poisoned lock still
        // guards a consistent queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records how many jobs `state` holds; called under the lock after
    /// every change of the queue.
    fn count(&self, state: &QueueState) {
        self.queued.store(state.jobs.len(), Ordering::Relaxed);
    }

    /// Queues `job`. If no leader is running, returns one for the caller to
    /// drive while it waits (see [`answered`]).
    ///
    /// # Errors
    /// When called outside a tokio runtime (the job is not queued).
    pub(crate) fn submit(
        self: &Arc<Self>,
        job: Job,
    ) -> std::result::Result<Option<Leader>, SqliteError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| SqliteError::NoRuntime {
                path: self.path.clone(),
            })?;
        let writer = {
            let mut state = self.lock();
            state.jobs.push_back(job);
            self.count(&state);
            if state.leading {
                return Ok(None);
            }
            state.leading = true;
            state.idle.take()
        };
        Ok(Some(Leader {
            run: Some(Box::pin(Arc::clone(self).lead(writer))),
            queue: Arc::clone(self),
            runtime,
        }))
    }

    /// The leader: runs batches until the queue is empty.
    async fn lead(self: Arc<Self>, writer: Option<Writer>) {
        let mut leading = Leading {
            queue: &self,
            done: false,
        };
        let mut writer = match writer {
            Some(writer) => writer,
            None => match conn::connect(&self.path, &self.options, self.busy_timeout).await {
                Ok(conn) => Writer::new(
                    conn,
                    self.path.clone(),
                    self.busy_timeout,
                    self.feed.clone(),
                    self.caller.clone(),
                    Arc::clone(&self.guarded_groups),
                    Arc::clone(&self.queued),
                ),
                Err(err) => {
                    let err = Arc::new(err);
                    let jobs = {
                        let mut state = self.lock();
                        state.leading = false;
                        let jobs = std::mem::take(&mut state.jobs);
                        self.count(&state);
                        jobs
                    };
                    leading.done = true;
                    for job in jobs {
                        job.fail(shared(&err));
                    }
                    return;
                }
            },
        };
        loop {
            let batch = {
                let mut state = self.lock();
                let batch = next_batch(&mut state.jobs);
                self.count(&state);
                match batch {
                    Some(batch) => batch,
                    None => {
                        state.idle = Some(writer);
                        state.leading = false;
                        leading.done = true;
                        return;
                    }
                }
            };
            match batch {
                Batch::Group(group) => writer.run_group(group).await,
                Batch::Alone(job) => writer.run_exclusive(job).await,
            }
        }
    }
}

/// A leader, driven by the caller that started it until that caller's own
/// request is answered: in the common case of one request at a time the
/// whole write then runs on the caller's thread, with no hand-over to
/// another thread but sqlx's. Dropped unfinished -- the caller has its
/// answer while more requests are queued, or stopped waiting -- the rest of
/// the leader is spawned on the store's own thread ([`Driver`]; on the
/// caller's runtime should that thread not start), so the group it may be
/// in the middle of and the requests queued behind it complete.
pub(crate) struct Leader {
    run: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    queue: Arc<WriteQueue>,
    /// The caller's runtime.
    runtime: tokio::runtime::Handle,
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Some(run) = self.run.take() {
            let runtime = self.queue.driver().unwrap_or_else(|| self.runtime.clone());
            // Detached: the task answers the requests itself.
            drop(runtime.spawn(run));
        }
    }
}

/// Waits for `answer`, driving `leader` (if the caller started one)
/// meanwhile; `None` when the request's reply was dropped unanswered.
pub(crate) async fn answered<T>(
    mut leader: Option<Leader>,
    mut answer: Answer<T>,
) -> Option<runstore_core::Result<T>> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(reply) = Pin::new(&mut answer).poll(cx) {
            return Poll::Ready(reply);
        }
        if let Some(leader) = leader.as_mut()
            && let Some(run) = leader.run.as_mut()
            && run.as_mut().poll(cx).is_ready()
        {
            // A leader ends only once the queue is empty, so the request
            // has been answered (or its reply dropped).
            leader.run = None;
            return Pin::new(&mut answer).poll(cx);
        }
        Poll::Pending
    })
    .await
}

/// A running leader. Dropped before it is done -- its task was cancelled
/// (the caller's runtime shut down when the store's own thread could not
/// start) or panicked -- it answers the queued requests with
/// [`SqliteError::LeaderCancelled`] and lets the next request start a
/// leader, which connects anew: the stopped leader's connection went with
/// it, and SQLite rolled back whatever it had not committed.
struct Leading<'a> {
    queue: &'a WriteQueue,
    done: bool,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let jobs = {
            let mut state = self.queue.lock();
            state.leading = false;
            let jobs = std::mem::take(&mut state.jobs);
            self.queue.count(&state);
            jobs
        };
        for job in jobs {
            job.fail(
                SqliteError::LeaderCancelled {
                    path: self.queue.path.clone(),
                }
                .into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use runstore_core::raw::{compaction::CompactionPolicy, group};

    use super::answered;
    use crate::{
        SqliteStore,
        writer::{Job, Maintenance},
    };

    /// The count the writer reads (`writer::writes_waiting`) follows
    /// the queue: each job queued raises it, each taken into a batch lowers
    /// it.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_queued_count_follows_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db.sqlite"))
            .await
            .unwrap();
        let queue = &store.inner.writes;
        let policy = CompactionPolicy::new(5, 100).unwrap().unwrap();
        let job = || {
            let (reply, answer) = group::reply();
            let job = Job::Maintain {
                task: Maintenance::Compact(policy),
                streams: Vec::new(),
                steps: 1,
                reply,
            };
            (job, answer)
        };
        let (first, first_answer) = job();
        let (second, second_answer) = job();
        let leader = queue.submit(first).unwrap();
        assert!(leader.is_some(), "the first job starts a leader");
        assert!(queue.submit(second).unwrap().is_none());
        assert_eq!(queue.queued.load(Ordering::Relaxed), 2);
        for (leader, answer) in [(leader, first_answer), (None, second_answer)] {
            let done = answered(leader, answer).await.unwrap().unwrap();
            assert_eq!((done.report.removed, done.finished), (0, 0));
        }
        assert_eq!(queue.queued.load(Ordering::Relaxed), 0);
    }
}
