//! The model-based property test: random operation sequences against the
//! backend and [`MemoryStore`], compared after every step (CONTRACT §1-§15,
//! and the feed, §29, where the backend has one).

use std::{fmt::Debug, time::Duration};

use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use runstore_core::validate::nested_arrays;
use runstore_core::{
    Error, EventLogExt, EventRecord, FeedPosition, MemoryStore, ReadQuery, Result,
    SnapshotStoreExt, Storage, StorageExt, Tenant,
    raw::compaction::{COMPACTION_EVENT_TYPE, COMPACTION_ID_PREFIX, marker_event_id, merge_marker},
    validate::{MAX_DEPTH, MAX_SEQ, MAX_TIMESTAMP_MS},
};
use serde_json::json;

use crate::{Harness, eid, event, removed, run, sid, snapshot};

const TENANTS: u8 = 2;
const RUNS: u8 = 3;
const IDS: u8 = 8;

/// How a generated batch sets `expected_last_seq`.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Nothing,
    Current,
    Off(u8),
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        t: u8,
        r: u8,
        id: u8,
        at: u16,
    },
    Batch {
        t: u8,
        r: u8,
        events: Vec<(u8, u16)>,
        expect: Expect,
    },
    Read {
        t: u8,
        r: u8,
        after: Option<u8>,
        before: Option<u8>,
        limit: Option<u8>,
        tail: bool,
    },
    SeqOf {
        t: u8,
        r: u8,
        id: u8,
    },
    Compact {
        retention: u16,
        now: u16,
    },
    SnapshotPut {
        t: u8,
        r: u8,
        id: u8,
        seq: u8,
        created: u16,
    },
    SnapshotGet {
        t: u8,
        r: u8,
        id: u8,
    },
    SnapshotList {
        t: u8,
        r: u8,
        limit: Option<u8>,
    },
    SnapshotPrune {
        retention: u16,
        keep: u8,
        now: u16,
    },
    Reopen,
    /// `erase_run`: the run's snapshots, then its events (CONTRACT §27).
    DeleteRun {
        t: u8,
        r: u8,
    },
    /// `erase_tenant` (CONTRACT §28).
    DeleteTenant {
        t: u8,
    },
    /// A feed read after the `skip`-th record of the tenant's feed (0: from
    /// the start), of at most `limit` records (CONTRACT §29).
    Feed {
        t: u8,
        skip: u8,
        limit: u8,
    },
    /// An append whose event breaks one rule (see [`hostile_event`]).
    Hostile {
        t: u8,
        r: u8,
        id: u8,
        kind: u8,
    },
    /// A batch of ordinary events with one hostile event among them.
    HostileBatch {
        t: u8,
        r: u8,
        events: Vec<(u8, u16)>,
        kind: u8,
    },
    /// An import after the stream's last seq (see [`import_records`]).
    Import {
        t: u8,
        r: u8,
        kind: u8,
    },
    /// A snapshot that breaks one rule, or a read with extreme bounds.
    HostileSnapshot {
        t: u8,
        r: u8,
        kind: u8,
    },
    ExtremeRead {
        t: u8,
        r: u8,
        kind: u8,
    },
}

/// How many kinds [`hostile_event`] knows.
const HOSTILE_EVENTS: u8 = 8;
/// How many kinds [`import_records`] knows.
const IMPORTS: u8 = 6;

fn op() -> impl Strategy<Value = Op> {
    let t = 0..TENANTS;
    let r = 0..RUNS;
    let id = 0..IDS;
    let expect = prop_oneof![
        2 => Just(Expect::Nothing),
        2 => Just(Expect::Current),
        1 => (1u8..3).prop_map(Expect::Off),
    ];
    prop_oneof![
        6 => (t.clone(), r.clone(), id.clone(), 0u16..1_000)
            .prop_map(|(t, r, id, at)| Op::Append { t, r, id, at }),
        3 => (t.clone(), r.clone(), vec((id.clone(), 0u16..1_000), 0..6), expect)
            .prop_map(|(t, r, events, expect)| Op::Batch { t, r, events, expect }),
        2 => (t.clone(), r.clone(), proptest::option::of(0u8..10), proptest::option::of(0u8..12),
              proptest::option::of(0u8..5), any::<bool>())
            .prop_map(|(t, r, after, before, limit, tail)| Op::Read { t, r, after, before, limit, tail }),
        1 => (t.clone(), r.clone(), id.clone()).prop_map(|(t, r, id)| Op::SeqOf { t, r, id }),
        2 => (0u16..800, 0u16..1_500).prop_map(|(retention, now)| Op::Compact { retention, now }),
        2 => (t.clone(), r.clone(), 0u8..4, 0u8..12, 0u16..1_000)
            .prop_map(|(t, r, id, seq, created)| Op::SnapshotPut { t, r, id, seq, created }),
        1 => (t.clone(), r.clone(), 0u8..4).prop_map(|(t, r, id)| Op::SnapshotGet { t, r, id }),
        1 => (t.clone(), r.clone(), proptest::option::of(0u8..4))
            .prop_map(|(t, r, limit)| Op::SnapshotList { t, r, limit }),
        1 => (0u16..800, 0u8..3, 0u16..1_500)
            .prop_map(|(retention, keep, now)| Op::SnapshotPrune { retention, keep, now }),
        // One arm for four: `prop_oneof!` takes at most ten unboxed.
        5 => prop_oneof![
            2 => Just(Op::Reopen),
            2 => (t.clone(), r).prop_map(|(t, r)| Op::DeleteRun { t, r }),
            2 => t.clone().prop_map(|t| Op::DeleteTenant { t }),
            3 => (t, 0u8..30, 0u8..6).prop_map(|(t, skip, limit)| Op::Feed { t, skip, limit }),
        ],
    ]
}

/// Ordinary operations mixed with a hostile tenant's (CONTRACT §21-§25).
fn hostile_op() -> impl Strategy<Value = Op> {
    let t = 0..TENANTS;
    let r = 0..RUNS;
    prop_oneof![
        6 => op(),
        2 => (t.clone(), r.clone(), 0..IDS, 0..HOSTILE_EVENTS)
            .prop_map(|(t, r, id, kind)| Op::Hostile { t, r, id, kind }),
        1 => (t.clone(), r.clone(), vec((0..IDS, 0u16..1_000), 1..4), 0..HOSTILE_EVENTS)
            .prop_map(|(t, r, events, kind)| Op::HostileBatch { t, r, events, kind }),
        2 => (t.clone(), r.clone(), 0..IMPORTS).prop_map(|(t, r, kind)| Op::Import { t, r, kind }),
        1 => (t.clone(), r.clone(), 0u8..4).prop_map(|(t, r, kind)| Op::HostileSnapshot { t, r, kind }),
        1 => (t, r, 0u8..4).prop_map(|(t, r, kind)| Op::ExtremeRead { t, r, kind }),
    ]
}

/// The `kind`-th way an event of `tenant`'s `run_id` breaks a rule.
fn hostile_event(tenant: &Tenant, run_id: &str, id: u8, kind: u8) -> EventRecord {
    let mut e = event(tenant, run_id, &format!("e{id}"), 100);
    match kind {
        0 => {
            // The id of the marker a compaction through seq `id` would write.
            e.event_id = marker_event_id(tenant, &run(run_id), u64::from(id) + 1);
        }
        1 => e.event_type = COMPACTION_EVENT_TYPE.to_owned(),
        2 => e.payload = nested_arrays(MAX_DEPTH),
        3 => e.occurred_at_ms = MAX_TIMESTAMP_MS + 1,
        4 => {
            e.extra.insert("seq".to_owned(), json!(0));
        }
        5 => {
            e.scope
                .tenant_context
                .extra
                .insert("deployment_id".to_owned(), json!("deploy"));
        }
        6 => {
            e.scope.extra.insert("tenant_context".to_owned(), json!({}));
        }
        _ => {
            e.event_id = eid(&format!("{COMPACTION_ID_PREFIX}{id}"));
        }
    }
    e
}

/// The `kind`-th import after `last` into `tenant`'s `run_id`: fresh ids,
/// a gap, an id the stream may hold, a seq with no room after it, an event
/// holding the id a later marker would take, a marker.
fn import_records(tenant: &Tenant, run_id: &str, last: u64, kind: u8) -> Vec<EventRecord> {
    let at = |seq: u64, id: String, ms: u64| {
        let mut record = event(tenant, run_id, &id, ms);
        record.seq = seq;
        record
    };
    let fresh = |n: u64| format!("imported-{last}-{n}");
    match kind {
        0 => (1..=3).map(|n| at(last + n, fresh(n), n * 100)).collect(),
        1 => vec![at(last + 2, fresh(2), 100)],
        2 => vec![at(last + 1, "e0".to_owned(), 100)],
        3 => vec![at(MAX_SEQ, fresh(1), 100)],
        4 => {
            let clash = marker_event_id(tenant, &run(run_id), last + 1);
            vec![
                at(last + 1, fresh(1), 10),
                at(last + 2, clash.into_string(), 990),
            ]
        }
        _ => {
            let pruned = [at(last + 1, fresh(1), 10)];
            let marker = merge_marker(tenant, &run(run_id), None, &pruned, 20, |_| Ok(false))
                .expect("marker");
            vec![marker]
        }
    }
}

fn tenant_of(t: u8) -> Tenant {
    // One tenant with and one without a deployment, otherwise equal: the
    // absent deployment must partition like any other value.
    let deployment = (t == 1).then(|| "deploy".to_owned());
    Tenant::new("org", "workspace", deployment).expect("valid tenant")
}

fn run_name(r: u8) -> String {
    format!("run-{r}")
}

/// A comparable summary of a call's result: its value, or its error kind.
fn summary<T: Debug>(result: Result<T>) -> String {
    match result {
        Ok(value) => format!("ok {value:?}"),
        Err(Error::Conflict { expected, actual }) => format!("conflict {expected} {actual}"),
        Err(Error::InvalidInput { .. }) => "invalid input".to_owned(),
        Err(other) => format!("unexpected error: {other}"),
    }
}

/// The records of `tenant`'s whole feed, or what reading it answered.
async fn whole_feed(
    store: &dyn Storage,
    tenant: &Tenant,
) -> Result<Vec<runstore_core::FeedRecord>> {
    store.read_feed(tenant, FeedPosition::START, 100_000).await
}

/// `tenant`'s feed as a comparable summary, its records in order without
/// the positions (each backend has its own), checked to increase; and how
/// many records it holds.
///
/// A store-wide pass (compaction, a tenant's deletion) commits each stream
/// on its own, in an order the contract leaves to the backend: each run of
/// consecutive markers is put in run order (stable, so one run's markers
/// keep theirs) before comparing.
async fn feed_view(store: &dyn Storage, tenant: &Tenant) -> (String, usize) {
    let feed = whole_feed(store, tenant).await;
    // An error is not a feed still catching up: it counts as complete.
    let len = feed.as_ref().map_or(usize::MAX, Vec::len);
    if let Ok(feed) = &feed
        && feed
            .windows(2)
            .any(|pair| pair[0].position >= pair[1].position)
    {
        return (format!("positions out of order: {feed:?}"), len);
    }
    let view = summary(feed.map(|feed| {
        let mut records: Vec<EventRecord> = feed.into_iter().map(|entry| entry.record).collect();
        for group in
            records.chunk_by_mut(|a, b| a.is_compaction_marker() && b.is_compaction_marker())
        {
            group.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        }
        records
    }));
    (view, len)
}

/// Applies `op`; `feed` says whether the store under test has a feed (the
/// feed op is skipped on both sides when not).
async fn apply(store: &dyn Storage, op: &Op, feed: bool) -> String {
    match op {
        Op::Feed { t, skip, limit } => {
            if !feed {
                return "no feed".to_owned();
            }
            let tenant = tenant_of(*t);
            let all = match whole_feed(store, &tenant).await {
                Ok(all) => all,
                Err(err) => return summary::<()>(Err(err)),
            };
            // The window after the `skip`-th record must be the next
            // `limit` records of the whole feed: positions are the store's
            // own, so the store is checked against itself here and its
            // whole feed against the model after every step.
            let skip = usize::from(*skip).min(all.len());
            let after = match skip {
                0 => FeedPosition::START,
                skip => all[skip - 1].position,
            };
            let limit = usize::from(*limit);
            match store.read_feed(&tenant, after, limit).await {
                Ok(window) if window[..] == all[skip..(skip + limit).min(all.len())] => {
                    "window ok".to_owned()
                }
                Ok(window) => format!(
                    "the window after {after} (limit {limit}) is {window:?}, the whole feed {all:?}"
                ),
                Err(err) => summary::<()>(Err(err)),
            }
        }
        Op::Append { t, r, id, at } => {
            let tenant = tenant_of(*t);
            let e = event(&tenant, &run_name(*r), &format!("e{id}"), u64::from(*at));
            summary(store.append(&tenant, &e).await)
        }
        Op::Batch {
            t,
            r,
            events,
            expect,
        } => {
            let tenant = tenant_of(*t);
            let run_id = run(&run_name(*r));
            let batch: Vec<_> = events
                .iter()
                .map(|(id, at)| event(&tenant, &run_name(*r), &format!("e{id}"), u64::from(*at)))
                .collect();
            let last = match store.next_seq(&tenant, &run_id).await {
                Ok(next) => next - 1,
                Err(err) => return summary::<()>(Err(err)),
            };
            let expected = match expect {
                Expect::Nothing => None,
                Expect::Current => Some(last),
                Expect::Off(by) => Some(last + u64::from(*by)),
            };
            summary(store.append_batch(&tenant, &run_id, &batch, expected).await)
        }
        Op::Read {
            t,
            r,
            after,
            before,
            limit,
            tail,
        } => {
            let query = ReadQuery {
                after_seq: after.map(u64::from),
                before_seq: before.map(u64::from),
                limit: limit.map(usize::from),
                tail: *tail,
            };
            summary(store.read(&tenant_of(*t), &run(&run_name(*r)), query).await)
        }
        Op::SeqOf { t, r, id } => summary(
            store
                .seq_of(&tenant_of(*t), &run(&run_name(*r)), &eid(&format!("e{id}")))
                .await,
        ),
        Op::Compact { retention, now } => summary(
            store
                .compact(u64::from(*retention), u64::from(*now))
                .await
                .map(removed),
        ),
        Op::SnapshotPut {
            t,
            r,
            id,
            seq,
            created,
        } => {
            let tenant = tenant_of(*t);
            let s = snapshot(
                &tenant,
                &run_name(*r),
                &format!("s{id}"),
                u64::from(*seq),
                u64::from(*created),
            );
            summary(store.put(&tenant, &s).await)
        }
        Op::SnapshotGet { t, r, id } => summary(
            store
                .get(&tenant_of(*t), &run(&run_name(*r)), &sid(&format!("s{id}")))
                .await,
        ),
        Op::SnapshotList { t, r, limit } => summary(
            store
                .list(&tenant_of(*t), &run(&run_name(*r)), limit.map(usize::from))
                .await,
        ),
        Op::SnapshotPrune {
            retention,
            keep,
            now,
        } => summary(
            store
                .prune(u64::from(*retention), usize::from(*keep), u64::from(*now))
                .await
                .map(removed),
        ),
        Op::Reopen => "reopen".to_owned(),
        Op::DeleteRun { t, r } => {
            summary(store.erase_run(&tenant_of(*t), &run(&run_name(*r))).await)
        }
        Op::DeleteTenant { t } => summary(
            store
                .erase_tenant(&tenant_of(*t))
                .await
                .map(|erased| (removed(erased.snapshots), removed(erased.events))),
        ),
        Op::Hostile { t, r, id, kind } => {
            let tenant = tenant_of(*t);
            let e = hostile_event(&tenant, &run_name(*r), *id, *kind);
            summary(store.append(&tenant, &e).await)
        }
        Op::HostileBatch { t, r, events, kind } => {
            let tenant = tenant_of(*t);
            let mut batch: Vec<_> = events
                .iter()
                .map(|(id, at)| event(&tenant, &run_name(*r), &format!("e{id}"), u64::from(*at)))
                .collect();
            let hostile = hostile_event(&tenant, &run_name(*r), events[0].0, *kind);
            batch.insert(batch.len() / 2, hostile);
            summary(
                store
                    .append_batch(&tenant, &run(&run_name(*r)), &batch, None)
                    .await,
            )
        }
        Op::Import { t, r, kind } => {
            let tenant = tenant_of(*t);
            let run_id = run(&run_name(*r));
            let last = match store.next_seq(&tenant, &run_id).await {
                Ok(next) => next - 1,
                Err(err) => return format!("unexpected error: {err}"),
            };
            let records = import_records(&tenant, &run_name(*r), last, *kind);
            summary(store.import_stream(&tenant, &run_id, &records).await)
        }
        Op::HostileSnapshot { t, r, kind } => {
            let tenant = tenant_of(*t);
            let mut s = snapshot(&tenant, &run_name(*r), "s-hostile", 1, 1);
            match kind {
                0 => s.seq = MAX_SEQ + 1,
                1 => s.created_at_ms = MAX_TIMESTAMP_MS + 1,
                2 => s.checkpoint = Some(nested_arrays(MAX_DEPTH)),
                _ => {
                    s.scope
                        .tenant_context
                        .extra
                        .insert("org_id".to_owned(), json!("other"));
                }
            }
            summary(store.put(&tenant, &s).await)
        }
        Op::ExtremeRead { t, r, kind } => {
            let query = match kind {
                0 => ReadQuery::all().after(u64::MAX),
                1 => ReadQuery::all().before(u64::MAX).after(0),
                2 => ReadQuery::tail(usize::MAX).before(u64::MAX),
                _ => ReadQuery::all().limit(usize::MAX).before(0),
            };
            summary(store.read(&tenant_of(*t), &run(&run_name(*r)), query).await)
        }
    }
}

/// Everything observable through the tenant-scoped calls and the
/// store-wide listings.
async fn observe(store: &dyn Storage) -> Vec<String> {
    let mut seen = vec![
        summary(store.streams().await),
        summary(store.snapshot_streams().await),
    ];
    for t in 0..TENANTS {
        let tenant = tenant_of(t);
        seen.push(summary(store.list_runs(&tenant).await));
        for r in 0..RUNS {
            let run_id = run(&run_name(r));
            seen.push(summary(
                store.read(&tenant, &run_id, ReadQuery::all()).await,
            ));
            seen.push(summary(store.next_seq(&tenant, &run_id).await));
            seen.push(summary(store.list(&tenant, &run_id, None).await));
            seen.push(summary(store.latest(&tenant, &run_id).await));
        }
    }
    seen
}

/// `tenant`'s feed view once it holds as many records as `want` (a record
/// committed before the read may take a moment to become visible: on
/// PostgreSQL, while an older transaction of the cluster is open), or after
/// a minute.
async fn settled_feed_view(store: &dyn Storage, tenant: &Tenant, want: usize) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (got, len) = feed_view(store, tenant).await;
        if len >= want || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn run_ops(h: &Harness, ops: Vec<Op>) -> std::result::Result<(), TestCaseError> {
    let mut instance = h.fresh().await;
    let model = MemoryStore::new();
    for (step, op) in ops.iter().enumerate() {
        if matches!(op, Op::Reopen) {
            if h.capabilities().persistent {
                instance.reopen().await;
            }
            continue;
        }
        let feed = h.capabilities().feed;
        let got = apply(instance.store().as_ref(), op, feed).await;
        let want = apply(&model, op, feed).await;
        prop_assert_eq!(
            &got,
            &want,
            "step {} {:?}: result differs from the model",
            step,
            op
        );
        let got = observe(instance.store().as_ref()).await;
        let want = observe(&model).await;
        for (n, (got, want)) in got.iter().zip(&want).enumerate() {
            prop_assert_eq!(
                got,
                want,
                "after step {} {:?}: observation {} differs",
                step,
                op,
                n
            );
        }
        if feed {
            for t in 0..TENANTS {
                let tenant = tenant_of(t);
                let (want, len) = feed_view(&model, &tenant).await;
                let got = settled_feed_view(instance.store().as_ref(), &tenant, len).await;
                prop_assert_eq!(
                    &got,
                    &want,
                    "after step {} {:?}: tenant {}'s feed differs",
                    step,
                    op,
                    t
                );
            }
        }
    }
    drop(instance);
    h.cleanup().await;
    Ok(())
}

/// CONTRACT §1-§15, §27, §28: random sequences of appends, batches (with
/// current and stale expectations), reads, compactions, snapshot puts,
/// gets, lists and prunes, run and tenant deletions, and reopens, over 2
/// tenants x 3 runs x 8 ids, leave the backend observably equal to the
/// model after every step.
pub async fn store_matches_the_model(h: &Harness) {
    check_against_the_model(h, op(), "").await;
}

/// CONTRACT §21-§25: the same, with a hostile tenant's operations mixed in:
/// events and batches that break one rule each, imports with gaps, taken
/// ids, seqs without room and legacy marker-id clashes, hostile snapshots
/// and reads with extreme bounds. The backend answers each as the model
/// does, and stays observably equal to it.
pub async fn store_matches_the_model_under_hostile_input(h: &Harness) {
    check_against_the_model(h, hostile_op(), "under hostile input ").await;
}

/// Runs the property test: sequences of 1 to 29 operations drawn from
/// `ops`, each compared with the model after every step.
async fn check_against_the_model(
    h: &Harness,
    ops: impl Strategy<Value = Op> + Send + 'static,
    what: &str,
) {
    let cases = h.capabilities().proptest_cases();
    let handle = tokio::runtime::Handle::current();
    let harness = h.clone();
    let result = tokio::task::block_in_place(move || {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        runner.run(&vec(ops, 1..30), |ops| {
            handle.block_on(run_ops(&harness, ops))
        })
    });
    if let Err(err) = result {
        panic!(
            "{}: {what}the store diverged from the model: {err}",
            h.backend()
        );
    }
}
