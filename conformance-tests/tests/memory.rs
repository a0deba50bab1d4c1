//! The conformance suite on [`MemoryStore`], the model itself.

use runstore_conformance::{Capabilities, Harness};
use runstore_core::MemoryStore;

fn harness() -> Harness {
    Harness::new("memory", Capabilities::in_memory(), |_location| async {
        Ok(MemoryStore::new())
    })
}

runstore_conformance::suite!(harness());
