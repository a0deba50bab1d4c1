//! Replays the checked-in fuzz corpus of the CLI's input parsers
//! (`fuzz/corpus` and `fuzz/seeds`, target `cli_batch`) through the entry
//! points the fuzz target calls, so every input keeps passing their
//! invariants on the stable toolchain.

use runstore_conformance::support::replay_corpus;

#[test]
fn cli_batch_corpus_keeps_its_invariants() {
    replay_corpus("cli_batch", |bytes| {
        // The target skips input that is not UTF-8, as the CLI reads text.
        let Ok(text) = std::str::from_utf8(bytes) else {
            return;
        };
        let _ = runstore_cli::fuzzing::check_batch(text);
        let _ = runstore_cli::fuzzing::check_snapshots(text);
    });
}
