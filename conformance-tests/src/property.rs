//! The model-based property test: random operation sequences against the
//! backend and [`MemoryStore`], compared after every step (CONTRACT §1-§15).

use std::fmt::Debug;

use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use runstore_core::{
    Error, EventLogExt, MemoryStore, ReadQuery, Result, SnapshotStoreExt, Store, Tenant,
};

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
}

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
        1 => Just(Op::Reopen),
    ]
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

async fn apply(store: &dyn Store, op: &Op) -> String {
    match op {
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
    }
}

/// Everything observable through the tenant-scoped calls and the
/// store-wide listings.
async fn observe(store: &dyn Store) -> Vec<String> {
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
        let got = apply(instance.store().as_ref(), op).await;
        let want = apply(&model, op).await;
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
    }
    drop(instance);
    h.cleanup().await;
    Ok(())
}

/// CONTRACT §1-§15: random sequences of appends, batches (with current and
/// stale expectations), reads, compactions, snapshot puts, gets, lists and
/// prunes, and reopens, over 2 tenants x 3 runs x 8 ids, leave the backend
/// observably equal to the model after every step.
pub async fn store_matches_the_model(h: &Harness) {
    let cases = h.capabilities().proptest_cases();
    let handle = tokio::runtime::Handle::current();
    let harness = h.clone();
    let result = tokio::task::block_in_place(move || {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        runner.run(&vec(op(), 1..30), |ops| {
            handle.block_on(run_ops(&harness, ops))
        })
    });
    if let Err(err) = result {
        panic!("{}: the store diverged from the model: {err}", h.backend());
    }
}
