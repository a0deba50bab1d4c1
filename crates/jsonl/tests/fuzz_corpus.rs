//! Replays the checked-in fuzz corpora of the JSONL decoders (`fuzz/corpus`
//! and `fuzz/seeds`, targets `jsonl_log` and `snapshot`) through the
//! entry points the fuzz targets call, so every input keeps passing their
//! invariants on the stable toolchain.

use runstore_conformance::support::replay_corpus;

#[test]
fn jsonl_log_corpus_keeps_its_invariants() {
    let scratch = tempfile::tempdir().unwrap();
    replay_corpus("jsonl_log", |bytes| {
        let _ = runstore_jsonl::fuzzing::check_log(scratch.path(), bytes);
    });
}

#[test]
fn snapshot_corpus_keeps_its_invariants() {
    let scratch = tempfile::tempdir().unwrap();
    replay_corpus("snapshot", |bytes| {
        let _ = runstore_jsonl::fuzzing::check_snapshot(scratch.path(), bytes);
    });
}
