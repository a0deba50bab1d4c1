//! Store URL parsing (`runstore::StoreUrl`). Invariants:
//! `runstore::fuzzing::check_url`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(url) = std::str::from_utf8(data) {
        let _ = runstore::fuzzing::check_url(url);
    }
});
