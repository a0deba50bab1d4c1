//! Append rounds: the per-stream queue of `append_batch` calls and the
//! rounds that commit them (docs/backends/s3.md, "Append").
//!
//! A call queues on its stream's [`StreamState`]; the caller that takes the
//! stream's leader slot runs one round for everything queued
//! ([`Inner::append`]), which plans every request against the head and
//! commits them all with one conditional head put. A flush that falls due
//! runs after the answers are sent ([`super::flush`]).

use std::sync::{Arc, Mutex};

use runstore_core::{
    AppendOutcome, EventRecord, Result, StreamKey,
    raw::append::{GroupPlan, plan_group},
    raw::group::{self, Reply},
};

use super::{Loaded, Local};
use crate::{Inner, backoff, error::contended, new_token, objects::Put};

/// Rounds a writer runs before answering a retryable "contended" error.
const APPEND_ATTEMPTS: u32 = 64;

/// One queued `append_batch` call.
struct Pending {
    events: Vec<EventRecord>,
    expected: Option<u64>,
    reply: Reply<Vec<AppendOutcome>>,
}

/// A handle's per-stream append queue and leader slot.
#[derive(Default)]
pub(crate) struct StreamState {
    queue: Mutex<Vec<Pending>>,
    pub(super) leader: Arc<tokio::sync::Mutex<Local>>,
}

impl StreamState {
    fn push(&self, pending: Pending) {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(pending);
    }

    fn drain(&self) -> Vec<Pending> {
        std::mem::take(
            &mut *self
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl Inner {
    /// Queues the call on `state` and waits for its answer. The first caller
    /// to take the stream's leader slot runs one round for everything
    /// queued, on a task of its own when on a Tokio runtime, so cancelling
    /// the leader's call never drops the other callers' answers: each caller
    /// gets the outcome of the round that committed its events, `inserted`
    /// included (CONTRACT §1). A flush that falls due runs on that task
    /// after the answers are sent, keeping the slot, so no caller waits for
    /// it.
    pub(super) async fn append(
        self: &Arc<Self>,
        key: &StreamKey,
        events: &[EventRecord],
        expected: Option<u64>,
    ) -> Result<Vec<AppendOutcome>> {
        let state = self.stream_state(key);
        // An answer is dropped only when its round never ran to the end (a
        // panic, or a cancelled leader off a Tokio runtime); the call then
        // queues again (appends are idempotent by id, CONTRACT §2).
        for _ in 0..APPEND_ATTEMPTS {
            let (reply, mut answer) = group::reply();
            state.push(Pending {
                events: events.to_vec(),
                expected,
                reply,
            });
            tokio::select! {
                biased;
                result = answer.recv() => match result {
                    Some(result) => return result,
                    None => continue,
                },
                local = state.leader.clone().lock_owned() => {
                    match tokio::runtime::Handle::try_current() {
                        Ok(runtime) => {
                            let inner = self.clone();
                            let key = key.clone();
                            let state = state.clone();
                            runtime.spawn(async move { inner.lead(&key, &state, local).await });
                        }
                        // Not on a Tokio runtime: run the round (and a due
                        // flush) before answering.
                        Err(_) => self.lead(key, &state, local).await,
                    }
                    match answer.recv().await {
                        Some(result) => return result,
                        None => continue,
                    }
                }
            }
        }
        Err(contended(format!("append to {key}")))
    }

    /// Holding the leader slot: one round for everything queued on `state`,
    /// then a flush if one fell due.
    async fn lead(
        &self,
        key: &StreamKey,
        state: &StreamState,
        mut local: tokio::sync::OwnedMutexGuard<Local>,
    ) {
        let batch = state.drain();
        if !batch.is_empty() {
            self.round(key, &mut local, batch).await;
        }
        self.maybe_flush(key, &mut local).await;
    }

    /// One protocol round for `batch`.
    async fn round(&self, key: &StreamKey, local: &mut Local, batch: Vec<Pending>) {
        let (requests, events) = (batch.len(), batch.iter().map(|p| p.events.len()).sum());
        let began = std::time::Instant::now();
        self.round_once(key, local, batch).await;
        runstore_core::telemetry::group_committed("s3", requests, events, began.elapsed());
    }

    async fn round_once(&self, key: &StreamKey, local: &mut Local, batch: Vec<Pending>) {
        let token = new_token();
        match self.commit(key, local, &batch, &token).await {
            Ok(answers) => {
                for (pending, answer) in batch.into_iter().zip(answers) {
                    pending.reply.send(answer);
                }
            }
            Err(err) => group::fail_all(batch.into_iter().map(|pending| pending.reply), &err),
        }
    }

    /// Plans every request of `batch` against the head and commits them with
    /// one conditional head put (docs/backends/s3.md, "Append").
    async fn commit(
        &self,
        key: &StreamKey,
        local: &mut Local,
        batch: &[Pending],
        token: &str,
    ) -> Result<Vec<Result<Vec<AppendOutcome>>>> {
        for attempt in 0..APPEND_ATTEMPTS {
            let loaded = match local.head.take() {
                Some(loaded) => loaded,
                None => self.load(key).await?,
            };
            local.ids.catch_up(&loaded.head)?;
            let covered = local.ids.covers(&loaded.head);
            let mut ids = Vec::new();
            for pending in batch {
                ids.extend(pending.events.iter().map(|event| event.event_id.clone()));
            }
            let Some(known) = self.resolve(key, &loaded.head, &local.ids, ids).await? else {
                // A segment of the head is gone: the head was replaced.
                continue;
            };
            let head = &loaded.head;
            let GroupPlan {
                new_records,
                answers,
            } = plan_group(
                &key.tenant,
                &key.run_id,
                head.last_seq,
                batch.iter().map(|p| (p.events.as_slice(), p.expected)),
                |id| match head.find(id)? {
                    Some(seq) => Ok(Some(seq)),
                    None => Ok(known.get(id).copied().flatten()),
                },
            );
            // The plan numbers new records from the head's last seq on, and
            // never past MAX_SEQ.
            let last = new_records.last().map_or(head.last_seq, |r| r.seq);
            if new_records.is_empty() {
                local.head = Some(loaded);
                return Ok(answers);
            }
            let mut next = loaded.head.clone();
            next.buffer.extend(new_records.iter().cloned());
            next.last_seq = last;
            next.remember(token);
            match self.put_head(key, &next, loaded.version.clone()).await? {
                Put::Done(version) => {
                    if covered {
                        local.ids.extend(&new_records, last)?;
                    }
                    local.head = Some(Loaded {
                        head: next,
                        version: Some(version),
                    });
                    return Ok(answers);
                }
                Put::Lost => {
                    let current = self.load(key).await?;
                    let landed = current.head.has_commit(token);
                    local.head = Some(current);
                    if landed {
                        // An earlier attempt of this very put succeeded
                        // (the client retried it after a lost response).
                        return Ok(answers);
                    }
                    backoff(attempt).await;
                }
            }
        }
        Err(contended(format!("append to {key}")))
    }
}
