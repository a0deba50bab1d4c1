//! Snapshot records: `SnapshotRecord` deserialization (with legacy
//! hydration), the JSONL store's snapshot file and the S3 store's snapshot
//! object. Invariants: `runstore_jsonl::fuzzing::check_snapshot` and
//! `runstore_s3::fuzzing::check_snapshot`.
#![no_main]

use std::{path::PathBuf, sync::OnceLock};

use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

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
            .prefix("runstore-fuzz-snapshot-")
            .tempdir_in(base)
            .expect("a temp dir")
            .keep()
    })
}

fuzz_target!(|data: &[u8]| {
    let jsonl = runstore_jsonl::fuzzing::check_snapshot(dir(), data);
    let s3 = runtime().block_on(runstore_s3::fuzzing::check_snapshot(data));
    // Both stores read the same bytes the same way.
    match (jsonl, s3) {
        (Ok(a), Ok(b)) => assert_eq!(Some(a), b, "the stores decode differently"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("one store reads the snapshot, the other does not: {a:?} / {b:?}"),
    }
});
