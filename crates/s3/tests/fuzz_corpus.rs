//! Replays the checked-in fuzz corpora of the S3 decoders (`fuzz/corpus`
//! and `fuzz/seeds`, targets `s3_head` and `snapshot`) through the entry
//! points the fuzz targets call, so every input keeps passing their
//! invariants on the stable toolchain. Needs no server: the objects live in
//! an in-memory bucket.

use runstore_conformance::support::replay_corpus;

/// A runtime to drive the async checks to the end, one input at a time.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn s3_head_corpus_keeps_its_invariants() {
    let runtime = runtime();
    replay_corpus("s3_head", |bytes| {
        let _ = runtime.block_on(runstore_s3::fuzzing::check_head(bytes));
    });
}

#[test]
fn snapshot_corpus_keeps_its_invariants() {
    let runtime = runtime();
    replay_corpus("snapshot", |bytes| {
        let _ = runtime.block_on(runstore_s3::fuzzing::check_snapshot(bytes));
    });
}
