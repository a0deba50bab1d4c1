//! Replays the checked-in fuzz corpus of store URL parsing (`fuzz/corpus`
//! and `fuzz/seeds`, target `store_url`) through the entry point the fuzz
//! target calls, so every input keeps passing its invariants on the stable
//! toolchain.

use runstore_conformance::support::replay_corpus;

#[test]
fn store_url_corpus_keeps_its_invariants() {
    replay_corpus("store_url", |bytes| {
        // The target skips input that is not UTF-8, as a URL is text.
        if let Ok(url) = std::str::from_utf8(bytes) {
            let _ = runstore::fuzzing::check_url(url);
        }
    });
}
