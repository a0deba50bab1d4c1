//! Replays the checked-in fuzz corpora of the JSONL decoders (`fuzz/corpus`
//! and `fuzz/seeds`, targets `jsonl_log` and `snapshot`) through the
//! entry points the fuzz targets call, so every input keeps passing their
//! invariants on the stable toolchain.

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
fn replay(target: &str, check: impl Fn(&Path, &[u8])) {
    let scratch = tempfile::tempdir().unwrap();
    let failed: Vec<String> = inputs(target)
        .into_iter()
        .filter(|file| {
            let bytes = std::fs::read(file).unwrap();
            catch_unwind(AssertUnwindSafe(|| check(scratch.path(), &bytes))).is_err()
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "inputs that fail their invariants: {failed:#?}"
    );
}

#[test]
fn jsonl_log_corpus_keeps_its_invariants() {
    replay("jsonl_log", |dir, bytes| {
        let _ = runstore_jsonl::fuzzing::check_log(dir, bytes);
    });
}

#[test]
fn snapshot_corpus_keeps_its_invariants() {
    replay("snapshot", |dir, bytes| {
        let _ = runstore_jsonl::fuzzing::check_snapshot(dir, bytes);
    });
}
