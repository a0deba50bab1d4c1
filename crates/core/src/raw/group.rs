//! Group commit, once: the queue of waiting requests, the budget of one
//! group, and the answers.
//!
//! Every backend commits concurrent writes in groups: requests that arrive
//! while a commit is in flight wait, and the next commit takes them all (up
//! to a budget), so many writers share one sync or one transaction
//! (CONTRACT §3, §16). What differs between backends is only the commit
//! step itself; the pieces around it live here.
//!
//! # Batches
//!
//! Each request says how it joins a batch ([`Joins`]): in a group,
//! counting its events against the [`Budget`], or alone (a compaction, a
//! store-wide pass: a step of its own). [`next_batch`] takes the next batch
//! from a queue: the first request alone, or a group of it and the
//! requests queued after it, in order, up to the budget. The first request
//! that does not join is carried to the next batch, never dropped.
//!
//! # The two modes
//!
//! - **A writer that owns the queue** (JSONL, redb): one thread receives
//!   requests on a channel, takes the first, takes a batch with
//!   [`next_batch`] from what else is queued ([`drain`] when every request
//!   groups), runs it in one commit and answers each request.
//! - **A leader that is the first waiter** (SQLite, S3, PostgreSQL): there
//!   is no thread; a request [`join`](Queues::join)s its stream's queue in
//!   [`Queues`], and the one that finds no leader running leads: it takes
//!   groups with [`next_group`](Queues::next_group) (its own request and
//!   whatever waits), commits and answers each, until the next group is
//!   empty, which ends its leadership under the same lock a new request
//!   joins under. The others wait on their [`Answer`]. A backend whose
//!   leader may be cancelled (a dropped future) runs the leader's loop in a
//!   task of its own, so that waiting requests are always answered, and
//!   [`abandon`](Queues::abandon)s the queue if that task panics. SQLite
//!   keeps one queue for the store and batches it with [`next_batch`]; S3
//!   keeps a leader slot per stream that also guards its cached head
//!   (docs/architecture.md, "How a write is grouped").
//!
//! A group of appends to one stream is planned with
//! [`plan_group`](crate::raw::append::plan_group).
//!
//! # Answers
//!
//! Each request carries a [`Reply`]; its caller waits on the matching
//! [`Answer`] ([`reply`] makes both). When the group commits, each request
//! gets its own outcome; a request refused on its own (a conflict, invalid
//! input) gets its refusal whatever became of the group ([`settle`]). When
//! the commit fails, every request of the group gets the same error
//! ([`fail_all`]): [`Error`] is `Clone`, its driver error shared behind an
//! `Arc`, so each waiter holds the one failure, kind, retryability and text
//! unchanged. An answer whose sender is gone (a writer that stopped, a
//! leader task that panicked) becomes the error the backend names in
//! [`Answer::wait`], never a hang.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    sync::Mutex,
};

use tokio::sync::oneshot;

use crate::{Error, Result};

/// Where one request's answer goes. Sending to a caller that stopped
/// waiting (a dropped future) is not an error: the write stands either way.
#[derive(Debug)]
pub struct Reply<T>(oneshot::Sender<Result<T>>);

impl<T> Reply<T> {
    /// Answers the request.
    pub fn send(self, answer: Result<T>) {
        let _ = self.0.send(answer);
    }
}

/// What a request's caller waits on.
#[derive(Debug)]
pub struct Answer<T>(oneshot::Receiver<Result<T>>);

impl<T> Answer<T> {
    /// The request's answer; `gone` names the failure when whoever held
    /// the [`Reply`] dropped it unanswered.
    ///
    /// # Errors
    /// The request's own error, or `gone()`.
    pub async fn wait(self, gone: impl FnOnce() -> Error) -> Result<T> {
        self.0.await.unwrap_or_else(|_| Err(gone()))
    }

    /// The request's answer, or `None` when the [`Reply`] was dropped
    /// unanswered: for a backend that sends such a request again (appends
    /// are idempotent by id) instead of failing it. Cancel safe: a dropped
    /// call leaves the answer to the next.
    pub async fn recv(&mut self) -> Option<Result<T>> {
        self.await
    }
}

/// Polling an answer directly (a backend that drives its leader while it
/// waits) gives what [`Answer::recv`] gives.
impl<T> Future for Answer<T> {
    type Output = Option<Result<T>>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(Result::ok)
    }
}

/// A reply and the answer its caller waits on.
pub fn reply<T>() -> (Reply<T>, Answer<T>) {
    let (sender, receiver) = oneshot::channel();
    (Reply(sender), Answer(receiver))
}

/// The answer of one request of a group: its own refusal stands whatever
/// became of the group (it wrote nothing); otherwise the group's failure,
/// or its own value once the group committed. `own` is `None` only for a
/// request the failed group never reached.
///
/// # Errors
/// The request's refusal, or the group's failure.
pub fn settle<T>(own: Option<Result<T>>, group: &Result<()>) -> Result<T> {
    match (own, group) {
        (Some(Err(refused)), _) => Err(refused),
        (_, Err(failed)) => Err(failed.clone()),
        (Some(Ok(value)), Ok(())) => Ok(value),
        (None, Ok(())) => Err(Error::invalid(
            "a request of a committed group was never run (a backend bug)",
        )),
    }
}

/// Answers every reply with the same failure.
pub fn fail_all<T>(replies: impl IntoIterator<Item = Reply<T>>, error: &Error) {
    for reply in replies {
        reply.send(Err(error.clone()));
    }
}

/// How much one group may hold. A request larger than the budget forms a
/// group of its own; no request is ever split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// At most this many requests (at least 1).
    pub requests: usize,
    /// At most this many events (or other units the backend counts).
    pub events: usize,
}

impl Budget {
    /// A budget of `requests` requests and `events` events.
    pub fn new(requests: usize, events: usize) -> Self {
        Self {
            requests: requests.max(1),
            events,
        }
    }

    /// Whether a group holding `requests` requests and `events` events
    /// can take one more request of `more` events. The first request is
    /// always taken.
    pub fn admits(&self, requests: usize, events: usize, more: usize) -> bool {
        requests == 0 || (requests < self.requests && events.saturating_add(more) <= self.events)
    }
}

/// How a request joins a batch ([`next_batch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joins {
    /// In a group, counting this many events (or other units the
    /// backend's [`Budget`] counts).
    Group(usize),
    /// Alone: a job that runs in a step of its own (a compaction, a
    /// store-wide pass), never inside a group.
    Alone,
}

impl Joins {
    /// The events it counts in a group; none for a job that runs alone.
    pub fn events(self) -> usize {
        match self {
            Self::Group(events) => events,
            Self::Alone => 0,
        }
    }
}

/// What a writer or a leader runs next.
#[derive(Debug, PartialEq, Eq)]
pub enum Batch<R> {
    /// Requests committed together, in arrival order.
    Group(Vec<R>),
    /// A request that runs on its own.
    Alone(R),
}

/// The next batch, starting with `first`: `first` alone if it
/// [`Joins::Alone`]; otherwise a group of `first` and the requests `more`
/// yields, in order, up to `budget`. `more` answers what is queued without
/// waiting (`None` when nothing is). The first request that does not join
/// the group (one over the budget, or one that runs alone) is left in
/// `carry`, for the caller to take as the next batch's `first` before
/// anything else. This is the one rule every backend groups by.
pub fn next_batch<R>(
    first: R,
    mut more: impl FnMut() -> Option<R>,
    carry: &mut Option<R>,
    budget: Budget,
    joins: impl Fn(&R) -> Joins,
) -> Batch<R> {
    let Joins::Group(mut events) = joins(&first) else {
        return Batch::Alone(first);
    };
    let mut group = vec![first];
    while let Some(request) = more() {
        match joins(&request) {
            Joins::Group(size) if budget.admits(group.len(), events, size) => {
                events = events.saturating_add(size);
                group.push(request);
            }
            _ => {
                *carry = Some(request);
                break;
            }
        }
    }
    Batch::Group(group)
}

/// Writer-thread mode, for a writer whose requests all group: a group
/// starting with `first` (after a request still in `carry`, which comes
/// before it), filled from what is queued on `queue` without waiting, up to
/// `budget` ([`next_batch`]; `size` counts a request's events). The first
/// queued request that does not fit is left in `carry`. The loop:
///
/// ```ignore
/// let mut carry = None;
/// while let Some(first) = carry.take().or_else(|| queue.recv().ok()) {
///     let group = group::drain(first, &queue, &mut carry, budget, |request| request.events());
///     // commit the group, answer each request
/// }
/// ```
pub fn drain<R>(
    first: R,
    queue: &std::sync::mpsc::Receiver<R>,
    carry: &mut Option<R>,
    budget: Budget,
    size: impl Fn(&R) -> usize,
) -> Vec<R> {
    let (first, mut behind) = match carry.take() {
        Some(carried) => (carried, Some(first)),
        None => (first, None),
    };
    let more = || behind.take().or_else(|| queue.try_recv().ok());
    match next_batch(first, more, carry, budget, |r| Joins::Group(size(r))) {
        Batch::Group(group) => group,
        Batch::Alone(request) => vec![request],
    }
}

/// Leader mode: the requests waiting for each stream's next group (or any
/// other key a backend groups by). A key has an entry exactly while its
/// leader runs, so a request that finds no entry starts one.
#[derive(Debug)]
pub struct Queues<K, R> {
    map: Mutex<HashMap<K, VecDeque<R>>>,
}

impl<K, R> Default for Queues<K, R> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, R> Queues<K, R> {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<K, VecDeque<R>>> {
        // Every change under the lock is one push, take or removal; a panic
        // elsewhere cannot leave it half-done.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `request` under `key`; `true` when no leader was running for
    /// the key and the caller now leads: it takes groups with
    /// [`next_group`](Self::next_group), commits and answers each, until
    /// that answers an empty group.
    pub fn join(&self, key: &K, request: R) -> bool {
        let mut map = self.map();
        match map.get_mut(key) {
            Some(waiting) => {
                waiting.push_back(request);
                false
            }
            None => {
                map.insert(key.clone(), VecDeque::from([request]));
                true
            }
        }
    }

    /// The leader's next group under `key`: the waiting requests in arrival
    /// order, up to `budget` (`size` counts a request's events). Empty when
    /// nothing waits; the leadership then ends in the same step, under the
    /// same lock that [`join`](Self::join) takes, so no request is left
    /// without a leader.
    pub fn next_group(&self, key: &K, budget: Budget, size: impl Fn(&R) -> usize) -> Vec<R> {
        let mut map = self.map();
        let Some(waiting) = map.get_mut(key) else {
            return Vec::new();
        };
        let Some(first) = waiting.pop_front() else {
            map.remove(key);
            return Vec::new();
        };
        let mut carry = None;
        let more = || waiting.pop_front();
        let group = match next_batch(first, more, &mut carry, budget, |r| Joins::Group(size(r))) {
            Batch::Group(group) => group,
            Batch::Alone(request) => vec![request],
        };
        if let Some(request) = carry {
            waiting.push_front(request);
        }
        group
    }

    /// Ends a leader that cannot go on (it panicked, or its task was
    /// cancelled): removes the key's entry and returns its waiting
    /// requests, for the backend to fail ([`fail_all`]) or drop (their
    /// callers then get the error they named in [`Answer::wait`]).
    pub fn abandon(&self, key: &K) -> Vec<R> {
        self.map().remove(key).map(Vec::from).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn a_budget_always_admits_the_first_request() {
        let budget = Budget::new(2, 10);
        assert!(
            budget.admits(0, 0, 50),
            "a large request forms its own group"
        );
        assert!(budget.admits(1, 4, 6));
        assert!(!budget.admits(1, 4, 7), "events over the budget");
        assert!(!budget.admits(2, 0, 0), "requests over the budget");
        assert_eq!(Budget::new(0, 0).requests, 1);
    }

    #[test]
    fn drain_fills_a_group_and_carries_what_does_not_fit() {
        let (sender, queue) = mpsc::channel();
        for size in [3, 3, 5, 1] {
            sender.send(size).unwrap();
        }
        let mut carry = None;
        let budget = Budget::new(10, 8);
        let first = queue.recv().unwrap();
        assert_eq!(
            drain(first, &queue, &mut carry, budget, |size| *size),
            vec![3, 3]
        );
        assert_eq!(carry, Some(5), "the request that did not fit waits");
        let first = queue.recv().unwrap();
        assert_eq!(
            drain(first, &queue, &mut carry, budget, |size| *size),
            vec![5, 1],
            "the carried request comes first"
        );
        assert_eq!(carry, None);
        drop(sender);
        assert!(queue.recv().is_err());
    }

    #[test]
    fn drain_never_drops_a_request_larger_than_the_budget() {
        let (sender, queue) = mpsc::channel();
        sender.send(20).unwrap();
        sender.send(30).unwrap();
        let mut carry = None;
        let budget = Budget::new(4, 8);
        let first = queue.recv().unwrap();
        assert_eq!(
            drain(first, &queue, &mut carry, budget, |size| *size),
            vec![20]
        );
        assert_eq!(carry, Some(30));
        let (_, empty) = mpsc::channel::<usize>();
        let carried = carry.take().unwrap();
        assert_eq!(
            drain(carried, &empty, &mut carry, budget, |size| *size),
            vec![30]
        );
        assert_eq!(carry, None);
    }

    // A request that runs alone ends the group before it and forms a batch
    // of its own; the group after it starts anew.
    #[test]
    fn a_request_that_runs_alone_is_a_batch_of_its_own() {
        let joins = |r: &i32| {
            if *r < 0 {
                Joins::Alone
            } else {
                Joins::Group(1)
            }
        };
        let mut queued = VecDeque::from([2, 3, -1, 4]);
        let budget = Budget::new(10, 10);
        let mut carry = None;
        let mut batches = Vec::new();
        while let Some(first) = carry.take().or_else(|| queued.pop_front()) {
            batches.push(next_batch(
                first,
                || queued.pop_front(),
                &mut carry,
                budget,
                joins,
            ));
        }
        assert_eq!(
            batches,
            [
                Batch::Group(vec![2, 3]),
                Batch::Alone(-1),
                Batch::Group(vec![4])
            ]
        );
        let mut carry = None;
        assert_eq!(
            next_batch(-5, || Some(6), &mut carry, budget, joins),
            Batch::Alone(-5),
            "nothing more is taken after a request that runs alone"
        );
        assert_eq!(carry, None);
    }

    #[test]
    fn the_first_to_join_leads_until_nothing_waits() {
        let queues = Queues::default();
        assert!(queues.join(&"a", 1), "the first request leads");
        assert!(!queues.join(&"a", 2), "a second one waits");
        assert!(!queues.join(&"a", 3));
        assert!(queues.join(&"b", 9), "another key has a leader of its own");
        let budget = Budget::new(2, 100);
        assert_eq!(queues.next_group(&"a", budget, |_| 1), vec![1, 2]);
        assert!(!queues.join(&"a", 4), "the leader still runs");
        assert_eq!(queues.next_group(&"a", budget, |_| 1), vec![3, 4]);
        assert!(queues.next_group(&"a", budget, |_| 1).is_empty());
        assert!(
            queues.join(&"a", 5),
            "leadership ended with the empty group"
        );
        assert_eq!(queues.next_group(&"b", budget, |_| 1), vec![9]);
    }

    #[test]
    fn an_abandoned_queue_hands_back_its_waiting_requests() {
        let queues = Queues::default();
        assert!(queues.join(&(), "a"));
        assert!(!queues.join(&(), "b"));
        assert_eq!(queues.abandon(&()), vec!["a", "b"]);
        assert!(queues.join(&(), "c"), "a new leader can start");
    }

    #[tokio::test]
    async fn every_waiter_gets_the_one_failure() {
        let (replies, answers): (Vec<Reply<u64>>, Vec<Answer<u64>>) =
            (0..3).map(|_| reply()).unzip();
        let failure = Error::transient("test", std::io::Error::other("disk on fire"));
        fail_all(replies, &failure);
        for answer in answers {
            let err = answer.wait(|| Error::invalid("gone")).await.unwrap_err();
            assert!(err.is_retryable());
            assert_eq!(err.to_string(), failure.to_string());
            let (Error::Backend { error: got, .. }, Error::Backend { error: sent, .. }) =
                (&err, &failure)
            else {
                panic!("a Backend error: {err:?}");
            };
            assert!(
                std::sync::Arc::ptr_eq(got, sent),
                "the same failure, shared"
            );
        }
    }

    #[tokio::test]
    async fn an_unanswered_reply_is_the_named_error_not_a_hang() {
        let (reply, answer) = reply::<u64>();
        drop(reply);
        let err = answer
            .wait(|| Error::invalid("the writer stopped"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("the writer stopped"));
    }

    #[test]
    fn a_refusal_stands_whatever_became_of_the_group() {
        let failed: Result<()> = Err(Error::backend("test", std::io::Error::other("boom")));
        let refused = Err::<u64, _>(Error::Conflict {
            expected: 1,
            actual: 2,
        });
        assert!(matches!(
            settle(Some(refused), &failed),
            Err(Error::Conflict { .. })
        ));
        assert!(matches!(
            settle(Some(Ok(3)), &failed),
            Err(Error::Backend { .. })
        ));
        assert_eq!(settle(Some(Ok(3)), &Ok(())).unwrap(), 3);
        assert!(settle::<u64>(None, &failed).is_err());
    }
}
