//! Replays the checked-in fuzz corpus of store URL parsing (`fuzz/corpus`
//! and `fuzz/seeds`, target `store_url`) through the entry point the fuzz
//! target calls, so every input keeps passing its invariants on the stable
//! toolchain.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::Path,
};

#[test]
fn store_url_corpus_keeps_its_invariants() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "seeds"] {
        let dir = fuzz.join(dir).join("store_url");
        for entry in
            std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        {
            files.push(entry.unwrap().path());
        }
    }
    assert!(!files.is_empty(), "no corpus for store_url");
    let failed: Vec<String> = files
        .into_iter()
        .filter(|file| {
            let bytes = std::fs::read(file).unwrap();
            // The target skips input that is not UTF-8, as a URL is text.
            let Ok(url) = std::str::from_utf8(&bytes) else {
                return false;
            };
            catch_unwind(AssertUnwindSafe(|| runstore::fuzzing::check_url(url))).is_err()
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "inputs that fail their invariants: {failed:#?}"
    );
}
