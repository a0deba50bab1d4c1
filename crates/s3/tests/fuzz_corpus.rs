//! Replays the checked-in fuzz corpora of the S3 decoders (`fuzz/corpus`
//! and `fuzz/seeds`, targets `s3_head` and `snapshot`) through the entry
//! points the fuzz targets call, so every input keeps passing their
//! invariants on the stable toolchain. Needs no server: the objects live in
//! an in-memory bucket.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
};

/// Every file of the target's corpus and seeds.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "seeds"] {
        let dir = fuzz.join(dir).join(target);
        for entry in
            std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        {
            files.push(entry.unwrap().path());
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no corpus for {target}");
    files
}

/// Runs `check` on every input of `target`; fails naming each input that
/// panicked.
fn replay<F: Future>(target: &str, check: impl Fn(Vec<u8>) -> F) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let failed: Vec<String> = inputs(target)
        .into_iter()
        .filter(|file| {
            let bytes = std::fs::read(file).unwrap();
            catch_unwind(AssertUnwindSafe(|| runtime.block_on(check(bytes)))).is_err()
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "inputs that fail their invariants: {failed:#?}"
    );
}

#[test]
fn s3_head_corpus_keeps_its_invariants() {
    replay("s3_head", |bytes| async move {
        let _ = runstore_s3::fuzzing::check_head(&bytes).await;
    });
}

#[test]
fn snapshot_corpus_keeps_its_invariants() {
    replay("snapshot", |bytes| async move {
        let _ = runstore_s3::fuzzing::check_snapshot(&bytes).await;
    });
}
