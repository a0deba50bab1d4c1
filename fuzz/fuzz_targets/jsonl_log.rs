//! The JSONL store's open path: the input is the whole event log of a store
//! directory, opened (torn-tail repair, index build) and read back.
//! Invariants: `runstore_jsonl::fuzzing::check_log`.
#![no_main]

use std::{path::PathBuf, sync::OnceLock};

use libfuzzer_sys::fuzz_target;

/// One directory per process, on tmpfs when there is one; each input
/// replaces what the previous one left.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::path::Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        tempfile::Builder::new()
            .prefix("runstore-fuzz-jsonl-")
            .tempdir_in(base)
            .expect("a temp dir")
            .keep()
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = runstore_jsonl::fuzzing::check_log(dir(), data);
});
