//! Group commit: concurrent appends to one stream through one store handle
//! share a transaction, so a hot stream pays one lock wait and one commit
//! for many appends.
//!
//! The queue is for speed only. Each group is planned and written exactly
//! as a single append is -- under the stream row's lock, in one `READ
//! COMMITTED` transaction -- so other handles and other machines are
//! serialised by the database as before (CONTRACT §3).

use std::collections::HashMap;

use runstore_core::{
    AppendOutcome, Error, EventRecord, Result, RunId, Tenant,
    raw::append::{GroupPlan, plan_group},
    raw::group::{self, Budget, Reply},
};

use crate::{
    PostgresStore,
    error::{BACKEND, SqlContext, TxError},
    keys::{self, StreamCols},
    log::{EventRows, distinct_ids, known_ids},
    streams,
};

/// A group takes queued requests up to this many events (a larger single
/// request forms a group of its own).
const MAX_GROUP_EVENTS: usize = 1_000;

type Answer = Result<Vec<AppendOutcome>>;

/// One append request waiting for its stream's worker.
pub(crate) struct Pending {
    events: Vec<EventRecord>,
    expected_last_seq: Option<u64>,
    reply: Reply<Vec<AppendOutcome>>,
}

/// The waiting requests of each stream with an active worker, by key hash.
/// A stream has an entry exactly while its worker runs.
pub(crate) type Queues = group::Queues<Vec<u8>, Pending>;

/// Removes the stream's entry if its worker ends abnormally (a panic), so
/// the waiting requests fail instead of hanging and later ones start a new
/// worker.
struct WorkerGuard {
    store: PostgresStore,
    key: Vec<u8>,
    done: bool,
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        if !self.done {
            // Dropping the waiting requests answers each with the error
            // `append_grouped` names for a worker that stopped.
            drop(self.store.inner.appends.abandon(&self.key));
        }
    }
}

/// Runs a transaction attempt until it succeeds, fails with a contract
/// outcome, or has failed retryably `TX_ATTEMPTS` times; a driver's error
/// names `$stream`, the stream the transaction worked on.
macro_rules! retrying {
    ($stream:expr, $attempt:expr) => {{
        let mut tries = 0;
        loop {
            tries += 1;
            match $attempt.await {
                Ok(value) => break Ok(value),
                Err(err) if err.retry_in_tx() && tries < $crate::error::TX_ATTEMPTS => continue,
                Err(err) => break Err(err.into_error($stream)),
            }
        }
    }};
}
pub(crate) use retrying;

impl PostgresStore {
    /// Queues an append for its stream's worker (starting one if none
    /// runs) and waits for the answer.
    ///
    /// The worker is a task of its own: dropping this future does not stop
    /// the request, which is then written entirely or not at all.
    pub(crate) async fn append_grouped(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        events: &[EventRecord],
        expected_last_seq: Option<u64>,
    ) -> Answer {
        let key = StreamCols::new(tenant, run_id).key_hash;
        let (reply, answer) = group::reply();
        let pending = Pending {
            events: events.to_vec(),
            expected_last_seq,
            reply,
        };
        if self.inner.appends.join(&key, pending) {
            let guard = WorkerGuard {
                store: self.clone(),
                key,
                done: false,
            };
            tokio::spawn(drain(guard, tenant.clone(), run_id.clone()));
        }
        answer
            .wait(|| {
                Error::transient(
                    BACKEND,
                    "the append worker stopped before answering; the append may or may not be stored",
                )
            })
            .await
    }

    /// Writes one group in one transaction; answers each request in order.
    /// A request whose plan fails (`Conflict`, `InvalidInput`) gets its
    /// error and writes nothing; the others proceed as if run one by one.
    async fn append_group_once(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        cols: &StreamCols<'_>,
        group: &[Pending],
    ) -> Result<Vec<Answer>, TxError> {
        let mut tx = self
            .pool_ref()
            .begin()
            .await
            .during("beginning a group append")?;
        let (stream_id, last_seq) = streams::lock(&mut tx, cols).await?;
        let last = keys::to_u64(|| self.location("streams", cols, "last_seq"), last_seq)?;
        let all: Vec<EventRecord> = group
            .iter()
            .flat_map(|p| p.events.iter().cloned())
            .collect();
        let known = if last == 0 {
            HashMap::new()
        } else {
            known_ids(&mut tx, stream_id, cols, &distinct_ids(&all)).await?
        };
        let GroupPlan {
            new_records,
            answers,
        } = plan_group(
            tenant,
            run_id,
            last,
            group
                .iter()
                .map(|p| (p.events.as_slice(), p.expected_last_seq)),
            |id| Ok(known.get(id.as_str()).copied()),
        );
        if new_records.is_empty() {
            tx.rollback().await.during("ending a read-only append")?;
            return Ok(answers);
        }
        let txid = EventRows::new(&new_records)?
            .insert(&mut tx, stream_id, cols)
            .await?;
        self.commit_records(tx, cols, txid, "committing a group append")
            .await?;
        Ok(answers)
    }

    async fn append_group(&self, tenant: &Tenant, run_id: &RunId, mut group: Vec<Pending>) {
        let cols = StreamCols::new(tenant, run_id);
        if group.len() == 1 {
            let pending = group.pop().expect("a group of one");
            let answer = retrying!(
                &cols,
                self.append_once(
                    tenant,
                    run_id,
                    &cols,
                    &pending.events,
                    pending.expected_last_seq
                )
            );
            // The requester may have gone away; its request is done anyway.
            pending.reply.send(answer);
            return;
        }
        let together: Result<Vec<Answer>> =
            retrying!(&cols, self.append_group_once(tenant, run_id, &cols, &group));
        match together {
            Ok(answers) => {
                for (pending, answer) in group.into_iter().zip(answers) {
                    pending.reply.send(answer);
                }
            }
            // The group failed as a whole: run each request alone, so each
            // gets its own outcome or error.
            Err(_) => {
                for pending in group {
                    let answer = retrying!(
                        &cols,
                        self.append_once(
                            tenant,
                            run_id,
                            &cols,
                            &pending.events,
                            pending.expected_last_seq
                        )
                    );
                    pending.reply.send(answer);
                }
            }
        }
    }
}

/// A stream's worker: writes queued requests group by group until the queue
/// is empty, then removes the stream's entry (under the same lock that
/// requests are queued under, so none is left behind).
async fn drain(mut guard: WorkerGuard, tenant: Tenant, run_id: RunId) {
    let budget = Budget::new(usize::MAX, MAX_GROUP_EVENTS);
    loop {
        let group =
            guard
                .store
                .inner
                .appends
                .next_group(&guard.key, budget, |pending: &Pending| pending.events.len());
        if group.is_empty() {
            guard.done = true;
            return;
        }
        let (requests, events) = (group.len(), group.iter().map(|p| p.events.len()).sum());
        let began = std::time::Instant::now();
        guard.store.append_group(&tenant, &run_id, group).await;
        runstore_core::telemetry::group_committed("postgres", requests, events, began.elapsed());
    }
}
