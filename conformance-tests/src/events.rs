//! Appending and reading (CONTRACT §1, §6, §7, "Ids", "Words").

use runstore_core::{Error, EventLog, EventLogExt, ReadQuery, Tenant};
use serde_json::json;

use crate::{Harness, eid, event, ids, run, seqs, tenant};

/// CONTRACT §1: append gives `last seq + 1`, the first is 1, and a caller's
/// seq is ignored; the tenant's ids are written into the scope.
pub async fn append_assigns_consecutive_seqs(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let t = tenant(1);
    for (n, id) in ["a", "b", "c"].into_iter().enumerate() {
        let mut e = event(&t, "run-1", id, 100);
        e.seq = 99;
        let outcome = store.append(&t, &e).await.expect("append");
        assert_eq!(
            (outcome.seq, outcome.inserted),
            (n as u64 + 1, true),
            "append {id}"
        );
    }
    let records = store
        .read(&t, &run("run-1"), ReadQuery::all())
        .await
        .expect("read");
    assert_eq!(seqs(&records), vec![1, 2, 3]);
    assert_eq!(ids(&records), vec!["a", "b", "c"]);
    let mut foreign = event(&tenant(9), "run-1", "d", 100);
    foreign.scope.tenant_context.actor_id = Some("actor-7".into());
    store
        .append(&t, &foreign)
        .await
        .expect("append with foreign scope");
    let last = store
        .read(&t, &run("run-1"), ReadQuery::tail(1))
        .await
        .expect("read");
    assert!(
        t.matches(&last[0].scope.tenant_context),
        "tenant stamped into scope"
    );
    assert_eq!(
        last[0].scope.tenant_context.actor_id.as_deref(),
        Some("actor-7")
    );
}

/// "Words": fields a backend does not interpret round-trip unchanged.
pub async fn records_round_trip_unchanged(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let t = Tenant::new("org", "ws", Some("deploy-1".into())).expect("tenant");
    let raw = json!({
        "schema_version": 1,
        "event_id": "evt-1",
        "run_id": "run-1",
        "seq": 0,
        "event_type": "stateful_runtime.step",
        "occurred_at_ms": 1234,
        "scope": {
            "tenant_context": {
                "org_id": "org", "workspace_id": "ws", "deployment_id": "deploy-1",
                "actor_id": "user-a", "source": "explicit", "future_field": [1, 2]
            },
            "region": "eu-1"
        },
        "actor": {"kind": "human_user", "id": "user-a"},
        "phase_id": "node-a",
        "wait_kind": "webhook",
        "causation_id": "cause",
        "correlation_id": "corr",
        "payload": {"nested": {"deep": [1, "two", null, 3.5]}, "unicode": "héllo 🦀"},
        "unknown_top_level": {"kept": true}
    });
    let e: runstore_core::EventRecord = serde_json::from_value(raw).expect("parse record");
    store.append(&t, &e).await.expect("append");
    let stored = store
        .read(&t, &run("run-1"), ReadQuery::all())
        .await
        .expect("read");
    let mut expected = e.clone();
    expected.seq = 1;
    assert_eq!(stored, vec![expected]);
    let value = serde_json::to_value(&stored[0]).expect("serialize");
    assert_eq!(value["unknown_top_level"], json!({"kept": true}));
    assert_eq!(value["scope"]["region"], "eu-1");
    assert_eq!(
        value["scope"]["tenant_context"]["future_field"],
        json!([1, 2])
    );
}

/// CONTRACT §6: exclusive bounds, limit (0 = none), tail keeps the last
/// `limit` still ascending; the reference's window tests.
pub async fn read_windows_follow_bounds_limit_and_tail(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let (a, b) = (tenant(1), tenant(2));
    // The reference's tenant/run filter: other runs and tenants never leak in.
    for (t, r, id) in [
        (&a, "run-a", "e1"),
        (&a, "run-b", "e2"),
        (&b, "run-a", "e3"),
        (&a, "run-a", "e4"),
    ] {
        store.append(t, &event(t, r, id, 1)).await.expect("append");
    }
    let after = store
        .read(&a, &run("run-a"), ReadQuery::all().after(1))
        .await
        .expect("read");
    assert_eq!(ids(&after), vec!["e4"]);
    for n in 3..=10 {
        store
            .append(&a, &event(&a, "run-a", &format!("w{n}"), 1))
            .await
            .expect("append");
    }
    let r = run("run-a");
    let cases: Vec<(ReadQuery, Vec<u64>)> = vec![
        (ReadQuery::all(), (1..=10).collect()),
        (ReadQuery::all().after(3), (4..=10).collect()),
        (ReadQuery::all().before(4), vec![1, 2, 3]),
        (ReadQuery::all().after(2).before(6), vec![3, 4, 5]),
        (ReadQuery::all().limit(3), vec![1, 2, 3]),
        (ReadQuery::all().limit(0), (1..=10).collect()),
        (ReadQuery::tail(3), vec![8, 9, 10]),
        (ReadQuery::tail(2).before(5), vec![3, 4]),
        (ReadQuery::tail(20).after(7), vec![8, 9, 10]),
        (ReadQuery::all().after(2).before(6).limit(2), vec![3, 4]),
        (ReadQuery::all().after(10), vec![]),
        (ReadQuery::all().after(5).before(5), vec![]),
        (
            ReadQuery {
                tail: true,
                ..ReadQuery::all()
            },
            (1..=10).collect(),
        ),
    ];
    for (query, expected) in cases {
        let got = store.read(&a, &r, query).await.expect("read");
        assert_eq!(seqs(&got), expected, "{query:?}");
    }
    let none = store
        .read(&a, &run("no-such-run"), ReadQuery::all())
        .await
        .expect("read");
    assert!(none.is_empty());
}

/// CONTRACT §7: `next_seq` is last + 1 or 1; `seq_of` finds stored ids only.
pub async fn next_seq_and_seq_of_track_the_stream(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let t = tenant(1);
    let r = run("run-a");
    assert_eq!(store.next_seq(&t, &r).await.expect("next_seq"), 1);
    assert_eq!(
        store.seq_of(&t, &r, &eid("event-3")).await.expect("seq_of"),
        None
    );
    for id in ["event-1", "event-2", "event-3"] {
        store
            .append(&t, &event(&t, "run-a", id, 5))
            .await
            .expect("append");
    }
    assert_eq!(store.next_seq(&t, &r).await.expect("next_seq"), 4);
    assert_eq!(
        store.seq_of(&t, &r, &eid("event-3")).await.expect("seq_of"),
        Some(3)
    );
    assert_eq!(
        store.seq_of(&t, &r, &eid("missing")).await.expect("seq_of"),
        None
    );
    assert_eq!(store.next_seq(&tenant(2), &r).await.expect("next_seq"), 1);
    assert_eq!(
        store
            .seq_of(&tenant(2), &r, &eid("event-3"))
            .await
            .expect("seq_of"),
        None
    );
}

/// CONTRACT §7: `list_runs` lists the tenant's runs, ascending, and no other
/// tenant's.
pub async fn list_runs_lists_the_tenants_runs(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let (a, b) = (tenant(1), tenant(2));
    assert!(store.list_runs(&a).await.expect("list_runs").is_empty());
    for (t, r) in [(&a, "run-b"), (&a, "run-a"), (&b, "run-c"), (&a, "run-b")] {
        let id = format!("{r}-{}", t.org_id());
        store.append(t, &event(t, r, &id, 1)).await.expect("append");
    }
    let runs = store.list_runs(&a).await.expect("list_runs");
    assert_eq!(runs, vec![run("run-a"), run("run-b")]);
    assert_eq!(
        store.list_runs(&b).await.expect("list_runs"),
        vec![run("run-c")]
    );
}

/// "Ids": any UTF-8 of 1 to 1024 bytes without NUL is stored and returned
/// exactly, and ids that differ only in case or punctuation stay distinct.
pub async fn ids_are_stored_exactly_as_given(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let t = tenant(1);
    let long = "x".repeat(1024);
    let odd = [
        "../a",
        "a/b",
        "a_b",
        "A",
        "a",
        "CON",
        "nul.txt",
        "with space",
        "🦀 crab",
        ".",
        "..",
        long.as_str(),
    ];
    for (n, r) in odd.iter().enumerate() {
        for e in odd {
            store
                .append(&t, &event(&t, r, e, n as u64))
                .await
                .expect("append odd ids");
        }
    }
    let mut expected: Vec<_> = odd.iter().map(|r| run(r)).collect();
    expected.sort();
    assert_eq!(store.list_runs(&t).await.expect("list_runs"), expected);
    for r in odd {
        let records = store
            .read(&t, &run(r), ReadQuery::all())
            .await
            .expect("read");
        assert_eq!(ids(&records), odd.to_vec(), "run {r:?}");
        assert!(records.iter().all(|record| record.run_id == r));
        for (n, e) in odd.iter().enumerate() {
            assert_eq!(
                store.seq_of(&t, &run(r), &eid(e)).await.expect("seq_of"),
                Some(n as u64 + 1),
                "run {r:?} event {e:?}"
            );
        }
    }
}

/// CONTRACT §4, §9, §18: a batch whose event names another run, or an event
/// posing as a compaction marker, is `InvalidInput` and writes nothing.
pub async fn append_rejects_an_event_of_another_run(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let t = tenant(1);
    let batch = [event(&t, "run-a", "ok", 1), event(&t, "run-b", "stray", 1)];
    let err = store
        .append_batch(&t, &run("run-a"), &batch, None)
        .await
        .expect_err("a stray run must be rejected");
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert_eq!(
        store.next_seq(&t, &run("run-a")).await.expect("next_seq"),
        1
    );
    let mut forged = event(&t, "run-a", "forged-marker", 1);
    forged.event_type = runstore_core::raw::compaction::COMPACTION_EVENT_TYPE.to_owned();
    let err = store
        .append(&t, &forged)
        .await
        .expect_err("only compaction writes markers");
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert!(store.list_runs(&t).await.expect("list_runs").is_empty());
}
