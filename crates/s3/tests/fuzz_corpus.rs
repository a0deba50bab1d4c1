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

/// The seed of a head naming segments with id tables reads whole: the
/// harness leads each segment with the table the head states, so the
/// fuzzer's mutations of it start from the tabled read path.
#[test]
fn the_tabled_segments_seed_reads_whole() {
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/seeds/s3_head/tabled_segments"
    );
    let bytes = std::fs::read(seed).unwrap();
    let all = runtime()
        .block_on(runstore_s3::fuzzing::check_head(&bytes))
        .unwrap();
    assert_eq!(
        all.iter().map(|record| record.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
}
