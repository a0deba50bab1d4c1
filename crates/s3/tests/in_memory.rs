//! The conformance suite on `InMemory`: the same protocol code as on S3,
//! without a server. One `InMemory` holds every case, each under its own
//! prefix, so opening a location again reopens the same store.

use std::sync::Arc;

use object_store::memory::InMemory;
use runstore_conformance::{Capabilities, Harness, support::s3::damage_marker};
use runstore_s3::S3Store;

fn harness() -> Harness {
    let bucket = Arc::new(InMemory::new());
    let opened = bucket.clone();
    Harness::new(
        "s3-in-memory",
        Capabilities::persistent().without_feed(),
        move |location| {
            let bucket = opened.clone();
            async move { S3Store::new(bucket, location.name) }
        },
    )
    .on_damage(move |location, stream| {
        let bucket = bucket.clone();
        async move { damage_marker(bucket.as_ref(), &location.name, &stream).await }
    })
}

runstore_conformance::suite!(harness());
