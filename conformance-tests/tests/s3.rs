//! The conformance suite on `runstore-s3` against a real S3 server
//! (SeaweedFS in CI; `scripts/services/seaweedfs.sh` starts it and exports
//! `RUNSTORE_S3_ENDPOINT`, `RUNSTORE_S3_BUCKET` and the credentials the
//! client reads from `AWS_*`). Each case uses its own key prefix, `location.name`, so
//! opening a location again reopens the same store. The contract's full
//! concurrency figures run as they are: concurrent appends through one
//! handle are grouped into few conditional puts.

use runstore_conformance::{Capabilities, Harness, support::s3::damage_marker};
use runstore_s3::S3Store;

fn harness() -> Harness {
    let endpoint = std::env::var("RUNSTORE_S3_ENDPOINT").ok();
    let bucket = std::env::var("RUNSTORE_S3_BUCKET").ok();
    let missing = match (&endpoint, &bucket) {
        (None, _) => Some("RUNSTORE_S3_ENDPOINT is not set"),
        (Some(_), None) => Some("RUNSTORE_S3_BUCKET is not set"),
        _ => None,
    };
    let at = endpoint.clone();
    let open_bucket = bucket.clone();
    let harness = Harness::new(
        "s3",
        Capabilities::persistent()
            .with_shared_writers()
            .without_feed(),
        move |location| {
            let bucket = open_bucket.clone().unwrap_or_default();
            let endpoint = at.clone();
            async move { S3Store::from_env_with_endpoint(bucket, endpoint, location.name) }
        },
    );
    let harness = harness.on_damage(move |location, stream| {
        let bucket = bucket.clone().unwrap_or_default();
        let endpoint = endpoint.clone();
        async move {
            let store = S3Store::from_env_with_endpoint(bucket, endpoint, &location.name)
                .expect("open the bucket to damage a stream");
            damage_marker(store.object_store().as_ref(), &location.name, &stream).await;
        }
    });
    match missing {
        Some(reason) => harness.missing_service(reason),
        None => harness,
    }
}

runstore_conformance::suite!(harness());
