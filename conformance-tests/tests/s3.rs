//! The conformance suite on `runstore-s3` against a real S3 server
//! (SeaweedFS in CI; `scripts/services/seaweedfs.sh` starts it and exports
//! `RUNSTORE_S3_ENDPOINT` and `RUNSTORE_S3_BUCKET`). Each case uses its own
//! key prefix, `location.name`, so opening a location again reopens the same
//! store.

use runstore_conformance::{Capabilities, Harness};
use runstore_s3::S3Store;

fn harness() -> Harness {
    let capabilities = Capabilities {
        // Every append round is a conditional put racing on one head object,
        // and SeaweedFS answers a contended conditional put in tens of
        // milliseconds, so the contract's 2,000 events / 64 tasks take
        // minutes per case there. 400 events over 16 tasks still puts many
        // rounds in flight at once (in-process grouping) with cross-task
        // duplicates; crates/s3/tests/race.rs covers separate clients.
        concurrency_events: 400,
        concurrency_tasks: 16,
        ..Capabilities::persistent()
    };
    let endpoint = std::env::var("RUNSTORE_S3_ENDPOINT").ok();
    let bucket = std::env::var("RUNSTORE_S3_BUCKET").ok();
    let harness = Harness::new("s3", capabilities, move |location| {
        let bucket = bucket.clone().unwrap_or_default();
        async move { S3Store::from_env(bucket, location.name) }
    });
    match (endpoint, std::env::var_os("RUNSTORE_S3_BUCKET")) {
        (Some(_), Some(_)) => harness,
        (None, _) => harness.missing_service("RUNSTORE_S3_ENDPOINT is not set"),
        (Some(_), None) => harness.missing_service("RUNSTORE_S3_BUCKET is not set"),
    }
}

runstore_conformance::suite!(harness());
