//! Concurrent appends through one handle share transactions (group
//! commit); each request must still be answered as if it ran alone:
//! optimistic-concurrency conflicts fail only their own request
//! (CONTRACT §5), and requests with an event of another run fail alone
//! (CONTRACT §1).
//!
//! Needs `RUNSTORE_POSTGRES_URL`; fails without it unless
//! `RUNSTORE_ALLOW_MISSING_SERVICES` is set.

use runstore_core::{Error, EventId, EventLog, EventRecord, ReadQuery, RunId, Tenant};
use runstore_postgres::{PostgresOptions, PostgresStore};

fn server_url() -> Option<String> {
    runstore_conformance::support::service_url(
        "RUNSTORE_POSTGRES_URL",
        "postgres group-commit test",
    )
}

fn event(tenant: &Tenant, run: &str, id: &str) -> EventRecord {
    EventRecord::new(
        tenant,
        RunId::new(run).unwrap(),
        EventId::new(id).unwrap(),
        "t",
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_request_in_a_group_is_answered_alone() {
    let Some(url) = server_url() else { return };
    let store = PostgresStore::connect_with(
        &url,
        PostgresOptions::default().with_schema(format!("group_{}", std::process::id())),
    )
    .await
    .unwrap();
    let tenant = Tenant::local();
    let run = RunId::new("hot").unwrap();

    // 40 requests at once, all expecting an empty stream: exactly one wins.
    // 10 more name another run and must fail alone. 30 plain appends land.
    let mut handles = Vec::new();
    for task in 0..80 {
        let store = store.clone();
        let tenant = tenant.clone();
        let run = run.clone();
        handles.push(tokio::spawn(async move {
            let (events, expected) = match task {
                0..40 => (vec![event(&tenant, "hot", &format!("exp-{task}"))], Some(0)),
                40..50 => (
                    vec![
                        event(&tenant, "hot", &format!("ok-{task}")),
                        event(&tenant, "other", &format!("bad-{task}")),
                    ],
                    None,
                ),
                _ => (
                    vec![
                        event(&tenant, "hot", &format!("plain-{task}")),
                        event(&tenant, "hot", &format!("plain-{task}")),
                    ],
                    None,
                ),
            };
            (
                task,
                store.append_batch(&tenant, &run, &events, expected).await,
            )
        }));
    }
    let mut winners = 0;
    for handle in handles {
        let (task, result) = handle.await.unwrap();
        match task {
            0..40 => match result {
                Ok(outcomes) => {
                    assert!(outcomes[0].inserted);
                    assert_eq!(outcomes[0].seq, 1, "the winner expected an empty stream");
                    winners += 1;
                }
                Err(Error::Conflict {
                    expected: 0,
                    actual,
                }) => assert!(actual >= 1),
                Err(other) => panic!("task {task}: {other}"),
            },
            40..50 => assert!(
                matches!(result, Err(Error::InvalidInput { .. })),
                "task {task}: {result:?}"
            ),
            _ => {
                let outcomes = result.unwrap();
                assert!(outcomes[0].inserted && !outcomes[1].inserted);
                assert_eq!(outcomes[0].seq, outcomes[1].seq);
            }
        }
    }
    assert_eq!(
        winners, 1,
        "exactly one request expecting an empty stream wins"
    );

    let records = store.read(&tenant, &run, ReadQuery::all()).await.unwrap();
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=31).collect::<Vec<u64>>(),
        "1 winner + 30 plain appends, gapless"
    );
    assert!(
        records
            .iter()
            .all(|r| !r.event_id.as_str().starts_with("ok-")),
        "a failed request writes nothing"
    );

    sqlx::query(&format!("DROP SCHEMA {} CASCADE", store.schema()))
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
}
