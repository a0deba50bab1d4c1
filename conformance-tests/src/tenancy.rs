//! Tenant isolation (CONTRACT "Words", §2, §12).

use runstore_core::{EventLog, EventLogExt, ReadQuery, Tenant};

use crate::{Harness, eid, event, ids, run};

/// "Words": tenants differing in any part, an absent deployment included,
/// own unrelated streams of the same run id.
pub async fn tenants_never_see_each_other(h: &Harness) {
    let instance = h.fresh().await;
    let store = instance.store();
    let tenants = [
        Tenant::new("org", "ws", None).expect("tenant"),
        Tenant::new("org", "ws", Some("dep".into())).expect("tenant"),
        Tenant::new("org", "ws2", None).expect("tenant"),
        Tenant::new("org2", "ws", None).expect("tenant"),
        Tenant::new("org/ws", "x", None).expect("tenant"),
        Tenant::new("org", "ws/x", None).expect("tenant"),
        Tenant::new("org", "ws", Some("dep2".into())).expect("tenant"),
    ];
    for (n, t) in tenants.iter().enumerate() {
        for k in 0..=n {
            let outcome = store
                .append(t, &event(t, "run", &format!("e{k}"), 1))
                .await
                .expect("append");
            assert_eq!(
                (outcome.seq, outcome.inserted),
                (k as u64 + 1, true),
                "tenant {t}"
            );
        }
    }
    for (n, t) in tenants.iter().enumerate() {
        let records = store
            .read(t, &run("run"), ReadQuery::all())
            .await
            .expect("read");
        assert_eq!(records.len(), n + 1, "tenant {t}");
        assert!(
            records
                .iter()
                .all(|record| t.matches(&record.scope.tenant_context))
        );
        assert_eq!(
            store.next_seq(t, &run("run")).await.expect("next_seq"),
            n as u64 + 2
        );
        assert_eq!(
            store.list_runs(t).await.expect("list_runs"),
            vec![run("run")]
        );
        let last = format!("e{n}");
        assert_eq!(ids(&records).last().copied(), Some(last.as_str()));
    }
    let first = &tenants[0];
    assert_eq!(
        store
            .seq_of(first, &run("run"), &eid("e3"))
            .await
            .expect("seq_of"),
        None
    );
    let unknown = Tenant::new("nobody", "ws", None).expect("tenant");
    assert!(
        store
            .list_runs(&unknown)
            .await
            .expect("list_runs")
            .is_empty()
    );
}

/// CONTRACT §20: two stores in one process are independent, and a handle is
/// shared across tasks by cloning the `Arc`.
pub async fn stores_in_one_process_are_independent(h: &Harness) {
    let first = h.fresh().await;
    let second = h.fresh().await;
    let t = crate::tenant(1);
    for instance in [&first, &second] {
        let store = instance.store().clone();
        let outcome = tokio::spawn(async move {
            let t = crate::tenant(1);
            store.append(&t, &event(&t, "run", "same-id", 1)).await
        })
        .await
        .expect("task")
        .expect("append");
        assert_eq!((outcome.seq, outcome.inserted), (1, true));
    }
    first
        .store()
        .append(&t, &event(&t, "run", "only-first", 1))
        .await
        .expect("append");
    let in_second = second
        .store()
        .read(&t, &run("run"), ReadQuery::all())
        .await
        .expect("read");
    assert_eq!(ids(&in_second), vec!["same-id"]);
    assert_eq!(
        first
            .store()
            .next_seq(&t, &run("run"))
            .await
            .expect("next_seq"),
        3
    );
}
