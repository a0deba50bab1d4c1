//! The conformance suite on the redb backend, in its default (durable) mode.

use runstore_conformance::{Capabilities, Harness};

fn harness() -> Harness {
    Harness::new("redb", Capabilities::persistent(), |location| async move {
        runstore_redb::RedbStore::open(location.dir.join("store.redb")).await
    })
}

runstore_conformance::suite!(harness());
