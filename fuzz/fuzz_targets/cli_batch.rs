//! The CLI's input parsers: the lines of `append --batch` and the
//! snapshots of `snapshot put`. Invariants:
//! `runstore_cli::fuzzing::check_batch` and `check_snapshots`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = runstore_cli::fuzzing::check_batch(text);
        let _ = runstore_cli::fuzzing::check_snapshots(text);
    }
});
