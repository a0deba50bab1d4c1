//! The conformance suite on the JSONL backend, in its default (durable) mode.

use runstore_conformance::{Capabilities, Harness};

fn harness() -> Harness {
    Harness::new("jsonl", Capabilities::persistent(), |location| async move {
        runstore_jsonl::JsonlStore::open(location.dir.join("store")).await
    })
}

runstore_conformance::suite!(harness());
