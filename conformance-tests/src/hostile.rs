//! A hostile tenant (CONTRACT §21-§25): whatever tenant B sends through the
//! ordinary calls, tenant A's data, compaction and prune are untouched, the
//! store reopens, and every backend answers B exactly as the model store does.
//!
//! Each attempt runs against the backend and against a [`MemoryStore`] fed
//! the same calls; their answers (success with its value, or the error's
//! kind) must be equal, so by the model every backend gives B the same answer.

use std::fmt::Debug;

use runstore_core::validate::nested_arrays;
use runstore_core::{
    EventId, EventLog, EventLogExt, EventRecord, MaintenanceReport, MemoryStore, ReadQuery, Result,
    SnapshotRecord, SnapshotStore, Storage, Tenant,
    raw::compaction::{
        COMPACTION_EVENT_TYPE, COMPACTION_ID_PREFIX, compacted_ids, marker_event_id, merge_marker,
    },
    validate::{DEFAULT_MAX_RECORD_BYTES, MAX_DEPTH, MAX_SEQ, MAX_TIMESTAMP_MS},
};
use serde_json::json;

use crate::{Harness, event, removed, run, snapshot, tenant};

/// What a call answered, as the suite compares it: the value, or the kind of
/// error. Every refusal must be a one-line `InvalidInput`.
fn answer<T: Debug>(what: &str, result: Result<T>) -> String {
    match result {
        Ok(value) => format!("ok {value:?}"),
        Err(runstore_core::Error::InvalidInput { reason }) => {
            assert!(
                !reason.is_empty() && !reason.contains('\n'),
                "{what}: a refusal is one line: {reason:?}"
            );
            "invalid input".to_owned()
        }
        Err(runstore_core::Error::Conflict { expected, actual }) => {
            format!("conflict {expected} {actual}")
        }
        Err(other) => format!("unexpected error: {other}"),
    }
}

fn report(result: Result<MaintenanceReport>) -> Result<(usize, Vec<String>)> {
    result.map(|report| (report.removed, crate::support::failed_streams(&report)))
}

/// One thing tenant B tries.
enum Attempt {
    Append(EventRecord),
    Batch(Vec<EventRecord>),
    AppendExpecting(EventRecord, u64),
    Read(&'static str, ReadQuery),
    SeqOf(&'static str, String),
    NextSeq(&'static str),
    Import(&'static str, Vec<EventRecord>),
    Put(SnapshotRecord),
    List(&'static str, Option<usize>),
    Compact(u64, u64),
    Prune(u64, usize, u64),
}

async fn try_on(store: &dyn Storage, b: &Tenant, attempt: &Attempt) -> String {
    match attempt {
        Attempt::Append(e) => answer("append", store.append(b, e).await),
        Attempt::Batch(events) => answer(
            "batch",
            store.append_batch(b, &events[0].run_id, events, None).await,
        ),
        Attempt::AppendExpecting(e, expected) => answer(
            "append_expecting",
            store.append_expecting(b, e, Some(*expected)).await,
        ),
        Attempt::Read(r, query) => answer("read", store.read(b, &run(r), *query).await),
        Attempt::SeqOf(r, id) => answer(
            "seq_of",
            store
                .seq_of(b, &run(r), &EventId::new(id.clone()).expect("valid id"))
                .await,
        ),
        Attempt::NextSeq(r) => answer("next_seq", store.next_seq(b, &run(r)).await),
        Attempt::Import(r, records) => {
            answer("import", store.import_stream(b, &run(r), records).await)
        }
        Attempt::Put(s) => answer("put", store.put(b, s).await),
        Attempt::List(r, limit) => answer("list", store.list(b, &run(r), *limit).await),
        Attempt::Compact(retention, now) => {
            answer("compact", report(store.compact(*retention, *now).await))
        }
        Attempt::Prune(retention, keep, now) => {
            answer("prune", report(store.prune(*retention, *keep, *now).await))
        }
    }
}

/// An exported stream of B's: `n` events of `run_id` at seqs 1..=n, all old.
fn exported(b: &Tenant, run_id: &str, prefix: &str, n: u64) -> Vec<EventRecord> {
    (1..=n)
        .map(|seq| {
            let mut record = event(b, run_id, &format!("{prefix}{seq}"), seq * 10);
            record.seq = seq;
            record
        })
        .collect()
}

/// B's stream `run_id` after a compaction of its first `pruned` of `n`
/// events: the marker, then the rest.
fn compacted_export(
    b: &Tenant,
    run_id: &str,
    prefix: &str,
    n: u64,
    pruned: u64,
) -> Vec<EventRecord> {
    let records = exported(b, run_id, prefix, n);
    let (old, rest) = records.split_at(usize::try_from(pruned).expect("small"));
    let marker = merge_marker(b, &run(run_id), None, old, 5_000, |_| Ok(false)).expect("marker");
    std::iter::once(marker)
        .chain(rest.iter().cloned())
        .collect()
}

/// A marker of B's `run_id` remembering events `prefix<seq>` at `seqs`.
fn marker_over(
    b: &Tenant,
    run_id: &str,
    prefix: &str,
    seqs: std::ops::RangeInclusive<u64>,
) -> EventRecord {
    let pruned: Vec<EventRecord> = seqs
        .map(|seq| {
            let mut record = event(b, run_id, &format!("{prefix}{seq}"), seq * 10);
            record.seq = seq;
            record
        })
        .collect();
    merge_marker(b, &run(run_id), None, &pruned, 5_000, |_| Ok(false)).expect("marker")
}

fn attempts(b: &Tenant) -> Vec<(&'static str, Attempt)> {
    let plain = |id: &str| event(b, "b-run", id, 100);
    let mut list = vec![
        ("an ordinary event", Attempt::Append(plain("b1"))),
        (
            "the id of the stream's next marker",
            Attempt::Append(plain(marker_event_id(b, &run("b-run"), 1).as_str())),
        ),
        (
            "an id in the marker namespace",
            Attempt::Append(plain(&format!("{COMPACTION_ID_PREFIX}mine"))),
        ),
        (
            "the marker's event type",
            Attempt::Append({
                let mut e = plain("b-typed");
                e.event_type = COMPACTION_EVENT_TYPE.to_owned();
                e
            }),
        ),
        (
            "a payload at the depth limit",
            Attempt::Append(plain("b-deepest").with_payload(nested_arrays(MAX_DEPTH - 1))),
        ),
        (
            "a payload one level too deep",
            Attempt::Append(plain("b-deep").with_payload(nested_arrays(MAX_DEPTH))),
        ),
        (
            "a payload 126 levels deep",
            Attempt::Append(plain("b-deeper").with_payload(nested_arrays(126))),
        ),
        (
            "a payload over the size limit",
            Attempt::Append(
                plain("b-big").with_payload(json!("x".repeat(DEFAULT_MAX_RECORD_BYTES))),
            ),
        ),
        (
            "occurred_at_ms past the limit",
            Attempt::Append({
                let mut e = plain("b-late");
                e.occurred_at_ms = MAX_TIMESTAMP_MS + 1;
                e
            }),
        ),
        (
            "occurred_at_ms at the limit",
            Attempt::Append({
                let mut e = plain("b-latest");
                e.occurred_at_ms = MAX_TIMESTAMP_MS;
                e
            }),
        ),
        (
            "a reserved key in extra",
            Attempt::Append({
                let mut e = plain("b-seq");
                e.extra.insert("seq".into(), json!(1));
                e
            }),
        ),
        (
            "a reserved key in scope",
            Attempt::Append({
                let mut e = plain("b-scope");
                e.scope.extra.insert("tenant_context".into(), json!({}));
                e
            }),
        ),
        (
            "another deployment in the tenant context's extra",
            Attempt::Append({
                let mut e = plain("b-deploy");
                e.scope
                    .tenant_context
                    .extra
                    .insert("deployment_id".into(), json!("prod"));
                e
            }),
        ),
        (
            "A's org in the tenant context's extra",
            Attempt::Append({
                let mut e = plain("b-org");
                e.scope
                    .tenant_context
                    .extra
                    .insert("org_id".into(), json!(tenant(1).org_id()));
                e
            }),
        ),
        (
            "a batch with one hostile event",
            Attempt::Batch(vec![
                plain("b2"),
                plain("b3").with_payload(nested_arrays(MAX_DEPTH)),
            ]),
        ),
        (
            "a stale writer at u64::MAX",
            Attempt::AppendExpecting(plain("b4"), u64::MAX),
        ),
        (
            "read after u64::MAX",
            Attempt::Read("b-run", ReadQuery::all().after(u64::MAX)),
        ),
        (
            "read before 0",
            Attempt::Read("b-run", ReadQuery::all().before(0)),
        ),
        (
            "read before u64::MAX",
            Attempt::Read("b-run", ReadQuery::all().before(u64::MAX)),
        ),
        (
            "read a tail of usize::MAX",
            Attempt::Read("b-run", ReadQuery::tail(usize::MAX).after(0)),
        ),
        (
            "seq_of an id in the marker namespace",
            Attempt::SeqOf("b-run", format!("{COMPACTION_ID_PREFIX}mine")),
        ),
        ("next_seq", Attempt::NextSeq("b-run")),
        // Imports keep append's guarantees.
        (
            "import at u64::MAX",
            Attempt::Import("b-import", {
                let mut records = exported(b, "b-import", "i", 1);
                records[0].seq = u64::MAX;
                records
            }),
        ),
        (
            "import at i64::MAX",
            Attempt::Import("b-import", {
                let mut records = exported(b, "b-import", "i", 1);
                records[0].seq = MAX_SEQ;
                records
            }),
        ),
        (
            "import with a gap",
            Attempt::Import("b-import", {
                let mut records = exported(b, "b-import", "i", 2);
                records[1].seq = 5;
                records
            }),
        ),
        (
            "import an ordinary stream",
            Attempt::Import("b-import", exported(b, "b-import", "i", 3)),
        ),
        (
            "import an id the stream holds live",
            Attempt::Import("b-import", {
                let mut record = exported(b, "b-import", "i", 1).remove(0);
                record.seq = 4;
                vec![record]
            }),
        ),
        (
            "import a compacted stream",
            Attempt::Import("b-compacted", compacted_export(b, "b-compacted", "c", 4, 2)),
        ),
        (
            "import an id the stream holds compacted",
            Attempt::Import("b-compacted", {
                let mut record = exported(b, "b-compacted", "c", 1).remove(0);
                record.seq = 5;
                vec![record]
            }),
        ),
        (
            "import a marker into a stream that holds events",
            Attempt::Import("b-import", vec![marker_over(b, "b-import", "j", 4..=5)]),
        ),
        (
            "import two markers",
            Attempt::Import(
                "b-twice",
                vec![
                    marker_over(b, "b-twice", "t", 1..=1),
                    marker_over(b, "b-twice", "u", 2..=2),
                ],
            ),
        ),
        (
            "import past a record's depth",
            Attempt::Import("b-deep-import", {
                let mut records = exported(b, "b-deep-import", "d", 1);
                records[0].payload = nested_arrays(MAX_DEPTH);
                records
            }),
        ),
        (
            "import a reserved key",
            Attempt::Import("b-key-import", {
                let mut records = exported(b, "b-key-import", "k", 1);
                records[0].extra.insert("event_id".into(), json!("x"));
                records
            }),
        ),
        // An older store's stream whose third event holds the id the
        // marker of its first two will be derived as.
        (
            "import an event holding a future marker id",
            Attempt::Import("b-clash", {
                let mut records = exported(b, "b-clash", "x", 3);
                records[2].event_id = marker_event_id(b, &run("b-clash"), 2);
                records[2].occurred_at_ms = 900_000;
                records
            }),
        ),
        // Snapshots.
        (
            "a snapshot past the seq limit",
            Attempt::Put(snapshot(b, "b-run", "s-seq", MAX_SEQ + 1, 10)),
        ),
        (
            "a snapshot past the time limit",
            Attempt::Put(snapshot(b, "b-run", "s-time", 1, MAX_TIMESTAMP_MS + 1)),
        ),
        (
            "a snapshot with a reserved key",
            Attempt::Put({
                let mut s = snapshot(b, "b-run", "s-key", 1, 10);
                s.extra.insert("status".into(), json!("completed"));
                s
            }),
        ),
        (
            "a snapshot claiming A's org",
            Attempt::Put({
                let mut s = snapshot(b, "b-run", "s-org", 1, 10);
                s.scope
                    .tenant_context
                    .extra
                    .insert("org_id".into(), json!(tenant(1).org_id()));
                s
            }),
        ),
        (
            "a snapshot too deep",
            Attempt::Put(
                snapshot(b, "b-run", "s-deep", 1, 10).with_checkpoint(nested_arrays(MAX_DEPTH)),
            ),
        ),
        (
            "a snapshot too large",
            Attempt::Put(
                snapshot(b, "b-run", "s-big", 1, 10)
                    .with_checkpoint(json!("x".repeat(DEFAULT_MAX_RECORD_BYTES))),
            ),
        ),
        (
            "a snapshot at the depth limit",
            Attempt::Put(
                snapshot(b, "b-run", "s-deepest", 1, 10)
                    .with_checkpoint(nested_arrays(MAX_DEPTH - 1)),
            ),
        ),
        (
            "list snapshots with a limit of usize::MAX",
            Attempt::List("b-run", Some(usize::MAX)),
        ),
        (
            "list snapshots with a limit of 0",
            Attempt::List("b-run", Some(0)),
        ),
        // Maintenance with a clock past the limit.
        ("compact at u64::MAX", Attempt::Compact(1, u64::MAX)),
        ("prune at u64::MAX", Attempt::Prune(1, 0, u64::MAX)),
    ];
    // Everything B stored reads back as the model holds it.
    for r in ["b-run", "b-import", "b-compacted", "b-twice", "b-clash"] {
        list.push(("read back", Attempt::Read(r, ReadQuery::all())));
    }
    list
}

/// Everything tenant A can observe, as JSON text: byte for byte.
async fn observe_a(store: &dyn Storage, a: &Tenant) -> Vec<String> {
    let mut seen = Vec::new();
    let runs = store.list_runs(a).await.expect("list_runs");
    seen.push(format!("{runs:?}"));
    for r in &runs {
        let records = store.read(a, r, ReadQuery::all()).await.expect("read");
        seen.push(serde_json::to_string(&records).expect("json"));
        seen.push(format!(
            "next {}",
            store.next_seq(a, r).await.expect("next_seq")
        ));
        let mut ids: Vec<EventId> = Vec::new();
        for record in &records {
            ids.push(record.event_id.clone());
            ids.extend(
                compacted_ids(record)
                    .expect("marker")
                    .into_iter()
                    .map(|id| id.event_id),
            );
        }
        for id in ids {
            let seq = store.seq_of(a, r, &id).await.expect("seq_of");
            seen.push(format!("{id:?} at {seq:?}"));
        }
        let snapshots = store.list(a, r, None).await.expect("list");
        seen.push(serde_json::to_string(&snapshots).expect("json"));
    }
    seen
}

/// Tenant A's ordinary life, applied to the backend and the model alike.
async fn a_lives(store: &dyn Storage, a: &Tenant) {
    for n in 1..=5u64 {
        store
            .append(a, &event(a, "a-run", &format!("a{n}"), n * 100))
            .await
            .expect("A appends");
    }
    store
        .append(a, &event(a, "a-other", "a-only", 100))
        .await
        .expect("A appends");
    // B's run names are A's too: streams are per tenant.
    store
        .append(a, &event(a, "b-run", "a-in-b-run", 100))
        .await
        .expect("A appends");
    store
        .put(a, &snapshot(a, "a-run", "a-s1", 4, 100))
        .await
        .expect("A puts");
    store
        .put(a, &snapshot(a, "a-run", "a-s0", 1, 50))
        .await
        .expect("A puts");
}

/// CONTRACT §21-§25: tenant B tries everything hostile an ordinary caller
/// can; A's records, `seq_of`, `next_seq` and snapshots stay byte for byte
/// the same, A's compaction and prune succeed, the store reopens, and every
/// answer B got equals the model store's.
pub async fn hostile_tenant_cannot_hurt_another(h: &Harness) {
    let mut instance = h.fresh().await;
    let model = MemoryStore::new();
    let (a, b) = (tenant(1), tenant(2));
    a_lives(instance.store().as_ref(), &a).await;
    a_lives(&model, &a).await;
    let before = observe_a(instance.store().as_ref(), &a).await;
    assert_eq!(before, observe_a(&model, &a).await, "A before B acts");

    for (what, attempt) in attempts(&b) {
        let got = try_on(instance.store().as_ref(), &b, &attempt).await;
        let expected = try_on(&model, &b, &attempt).await;
        assert_eq!(got, expected, "B's attempt: {what}");
        assert!(!got.starts_with("unexpected"), "B's attempt: {what}: {got}");
    }
    assert_eq!(
        observe_a(instance.store().as_ref(), &a).await,
        before,
        "A after B acted"
    );

    // Store-wide maintenance processes every stream, B's included.
    let compacted = report(instance.store().compact(1_000, 600_000).await).expect("compact");
    let expected = report(model.compact(1_000, 600_000).await).expect("model compact");
    assert_eq!(compacted, expected, "compaction report");
    assert!(
        compacted.1.is_empty(),
        "no stream failed: {:?}",
        compacted.1
    );
    let pruned = report(instance.store().prune(1_000, 1, 600_000).await).expect("prune");
    assert_eq!(
        pruned,
        report(model.prune(1_000, 1, 600_000).await).expect("model prune")
    );
    assert!(pruned.1.is_empty(), "no stream failed: {:?}", pruned.1);
    let after_maintenance = observe_a(&model, &a).await;
    assert_eq!(
        observe_a(instance.store().as_ref(), &a).await,
        after_maintenance,
        "A after maintenance, against the model"
    );
    check_clash_stream(instance.store().as_ref(), &b).await;
    let b_view = observe_a(instance.store().as_ref(), &b).await;
    assert_eq!(b_view, observe_a(&model, &b).await, "B after maintenance");

    if h.capabilities().persistent {
        instance.reopen().await;
        let store = instance.store();
        assert_eq!(
            observe_a(store.as_ref(), &a).await,
            after_maintenance,
            "A after reopen"
        );
        assert_eq!(
            observe_a(store.as_ref(), &b).await,
            b_view,
            "B after reopen"
        );
        check_clash_stream(store.as_ref(), &b).await;
        let next = store
            .append(&a, &event(&a, "a-run", "a6", 700_000))
            .await
            .expect("A appends after reopen");
        assert_eq!((next.seq, next.inserted), (6, true));
    } else {
        h.not_applicable(
            "hostile_tenant_cannot_hurt_another (reopen part)",
            "the backend declares no persistence",
        );
    }
}

/// B's imported stream whose event holds the id the marker would have taken:
/// after compaction no two records share an id, and each id's seq is its own.
async fn check_clash_stream(store: &dyn Storage, b: &Tenant) {
    let r = run("b-clash");
    let records = store.read(b, &r, ReadQuery::all()).await.expect("read");
    let marker = records
        .iter()
        .find(|record| record.is_compaction_marker())
        .expect("the clash stream was compacted");
    let clashing = marker_event_id(b, &r, 2);
    assert_ne!(marker.event_id, clashing, "the marker took another id");
    let mut ids: Vec<(EventId, u64)> = Vec::new();
    for record in &records {
        ids.push((record.event_id.clone(), record.seq));
        ids.extend(
            compacted_ids(record)
                .expect("marker")
                .into_iter()
                .map(|id| (id.event_id, id.seq)),
        );
    }
    let mut unique: Vec<&EventId> = ids.iter().map(|(id, _)| id).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "one id, one record: {ids:?}");
    for (id, seq) in &ids {
        assert_eq!(
            store.seq_of(b, &r, id).await.expect("seq_of"),
            Some(*seq),
            "seq_of {id:?}"
        );
    }
    assert_eq!(
        store.seq_of(b, &r, &clashing).await.expect("seq_of"),
        Some(3)
    );
}

/// CONTRACT §25: one stream that cannot be compacted does not stop the
/// others. The backend's damage hook makes a stream's stored marker
/// unmergeable behind the store's back (no ordinary call can); compaction then
/// processes every other stream, before and after the bad one, and the report
/// names exactly the bad stream. Prune goes on too.
pub async fn maintenance_isolates_a_failing_stream(h: &Harness) {
    let mut instance = h.fresh().await;
    let (a, b) = (tenant(1), tenant(2));
    let streams = [(&a, "a-1"), (&b, "b-bad"), (&b, "b-ok"), (&a, "z-last")];
    {
        let store = instance.store();
        for (t, r) in streams {
            for n in 1..=2u64 {
                store
                    .append(t, &event(t, r, &format!("{r}-{n}"), n))
                    .await
                    .expect("append");
            }
            store
                .put(t, &snapshot(t, r, "s1", 1, 1))
                .await
                .expect("put");
            store
                .put(t, &snapshot(t, r, "s2", 2, 2))
                .await
                .expect("put");
        }
        assert_eq!(removed(store.compact(10, 1_000).await.expect("compact")), 4);
    }
    let bad = runstore_core::StreamKey::new(b.clone(), run("b-bad"));
    if !h.damage(&mut instance, &bad).await {
        h.not_applicable(
            "maintenance_isolates_a_failing_stream",
            "the backend registers no damage hook (no way to store a bad record)",
        );
        return;
    }
    let store = instance.store();
    for (t, r) in streams {
        store
            .append(t, &event(t, r, &format!("{r}-3"), 3))
            .await
            .expect("append after the damage");
        // A newer snapshot lifts the floor, so seqs 2 and 3 are pruned and
        // merged into each stream's marker.
        store
            .put(t, &snapshot(t, r, "s3", 4, 3))
            .await
            .expect("put after the damage");
    }
    let compacted = store.compact(10, 2_000).await.expect("the pass runs");
    let failed: Vec<String> = compacted
        .failed
        .iter()
        .map(|f| f.stream.to_string())
        .collect();
    assert_eq!(failed, vec![bad.to_string()], "only the bad stream fails");
    assert!(
        compacted.failed[0].error.to_string().contains("b-bad"),
        "the error names the stream's run: {}",
        compacted.failed[0].error
    );
    assert_eq!(compacted.removed, 6, "every good stream was compacted");
    for (t, r) in [(&a, "a-1"), (&b, "b-ok"), (&a, "z-last")] {
        let records = store
            .read(t, &run(r), ReadQuery::all())
            .await
            .expect("read");
        assert_eq!(records.len(), 1, "{r} holds only its marker");
        assert!(records[0].is_compaction_marker(), "{r} compacted");
    }
    let pruned = store.prune(10, 1, 2_000).await.expect("the pass runs");
    let failed: Vec<String> = pruned.failed.iter().map(|f| f.stream.to_string()).collect();
    assert!(
        failed.is_empty() || failed == vec![bad.to_string()],
        "prune fails at most the bad stream: {failed:?}"
    );
    assert_eq!(
        pruned.removed,
        2 * (streams.len() - failed.len()),
        "every good stream's two older snapshots were pruned"
    );
}
