//! Store handles are `Send + Sync`, cheap to clone and usable from many
//! tasks; their futures are `Send` (CONTRACT §20).

use std::sync::Arc;

use object_store::memory::InMemory;
use runstore_core::{EventLog, ReadQuery, RunId, SnapshotStore, Storage, Tenant};
use runstore_s3::S3Store;

fn is_store<T: Storage + Clone + Send + Sync + std::fmt::Debug + 'static>(_: &T) {}
fn is_send<T: Send>(_: &T) {}

#[test]
fn handles_and_futures_are_send_and_sync() {
    let store = S3Store::new(Arc::new(InMemory::new()), "p").unwrap();
    is_store(&store);
    let tenant = Tenant::local();
    let run = RunId::new("r").unwrap();
    is_send(&store.append_batch(&tenant, &run, &[], None));
    is_send(&store.read(&tenant, &run, ReadQuery::all()));
    is_send(&store.compact(1, 2));
    is_send(&store.prune(1, 1, 2));
    let _: Arc<dyn Storage> = Arc::new(store);
}
