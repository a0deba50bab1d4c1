//! Cancelling the call that leads an append round does not change what the
//! other calls of the round are answered: each gets the outcome of the
//! round that committed its events, `inserted = true` included
//! (CONTRACT §1, §2).

use runstore_conformance::support::records::{acme as tenant, run_1 as run, step};
use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use object_store::{ObjectStore, memory::InMemory};
use runstore_conformance::support::object_store::{Forwarding, Hooks, Request};
use runstore_core::{EventLog, EventLogExt, EventRecord, ReadQuery};
use runstore_s3::S3Store;
use tokio::sync::{Semaphore, mpsc};

/// Head puts are applied, reported on `landed`, and then held until the
/// test hands out a permit on `gate`.
struct Gated {
    landed: mpsc::UnboundedSender<()>,
    gate: Semaphore,
}

#[async_trait]
impl Hooks for Gated {
    async fn after(&self, _inner: &Arc<dyn ObjectStore>, request: Request<'_>) {
        if let Request::Put { location, .. } = request
            && location.filename() == Some("head")
        {
            let _ = self.landed.send(());
            self.gate.acquire().await.expect("gate open").forget();
        }
    }
}

fn event(id: &str) -> EventRecord {
    step(id, 1)
}

#[tokio::test]
async fn a_cancelled_leader_does_not_change_its_followers_answers() {
    let (landed, mut landings) = mpsc::unbounded_channel();
    let gated = Arc::new(Forwarding::new(
        Arc::new(InMemory::new()),
        Gated {
            landed,
            gate: Semaphore::new(0),
        },
    ));
    let store = S3Store::new(gated.clone(), "cancel").unwrap();
    let append = |id: &'static str| {
        let store = store.clone();
        tokio::spawn(async move { store.append(&tenant(), &event(id)).await })
    };

    // `a` leads the first round; its head put lands and is held.
    let a = append("a");
    landings.recv().await.unwrap();
    // `b`, then `c`, queue behind it: `b` will lead the second round.
    let b = append("b");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let c = append("c");
    tokio::time::sleep(Duration::from_millis(50)).await;
    gated.hooks().gate.add_permits(1);
    assert_eq!(a.await.unwrap().unwrap().seq, 1);

    // The second round's head put (holding `b` and `c`) lands; its leader
    // `b` is cancelled before any answer is sent.
    landings.recv().await.unwrap();
    b.abort();
    assert!(b.await.unwrap_err().is_cancelled());
    gated.hooks().gate.add_permits(Semaphore::MAX_PERMITS / 2);

    let outcome = c.await.unwrap().unwrap();
    assert!(outcome.inserted, "{outcome:?}");
    assert_eq!(outcome.seq, 3);
    let ids: Vec<String> = store
        .read(&tenant(), &run(), ReadQuery::default())
        .await
        .unwrap()
        .iter()
        .map(|record| record.event_id.as_str().to_owned())
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
}
