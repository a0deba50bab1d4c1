//! Replays the checked-in fuzz corpus of the CLI's input parsers
//! (`fuzz/corpus` and `fuzz/seeds`, target `cli_batch`) through the entry
//! points the fuzz target calls, so every input keeps passing their
//! invariants on the stable toolchain.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::Path,
};

#[test]
fn cli_batch_corpus_keeps_its_invariants() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "seeds"] {
        let dir = fuzz.join(dir).join("cli_batch");
        for entry in
            std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        {
            files.push(entry.unwrap().path());
        }
    }
    assert!(!files.is_empty(), "no corpus for cli_batch");
    let failed: Vec<String> = files
        .into_iter()
        .filter(|file| {
            let bytes = std::fs::read(file).unwrap();
            // The target skips input that is not UTF-8, as the CLI reads text.
            let Ok(text) = std::str::from_utf8(&bytes) else {
                return false;
            };
            catch_unwind(AssertUnwindSafe(|| {
                let _ = runstore_cli::fuzzing::check_batch(text);
                let _ = runstore_cli::fuzzing::check_snapshots(text);
            }))
            .is_err()
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "inputs that fail their invariants: {failed:#?}"
    );
}
