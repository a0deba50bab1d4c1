//! The S3 store's decoders: a stream's head, the segments it names (after
//! each "\n--\n"), id entries and key segments, stored in an in-memory
//! bucket and read back. Invariants: `runstore_s3::fuzzing::check_head`.
#![no_main]

use std::sync::OnceLock;

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

fuzz_target!(|data: &[u8]| {
    let _ = runtime().block_on(runstore_s3::fuzzing::check_head(data));
});
