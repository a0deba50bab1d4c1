//! S3: the standard workload against a real S3 server (SeaweedFS in CI,
//! started by `scripts/services/seaweedfs.sh`), next to a bare loop of one
//! conditional `PUT` per event, with requests per event counted at the
//! client (issue 6). Needs `RUNSTORE_S3_ENDPOINT` and `RUNSTORE_S3_BUCKET`
//! (and the `AWS_*` credentials the script exports); without them it says
//! so loudly and exits successfully.

use std::{
    path::PathBuf,
    sync::{Arc, atomic::AtomicU64},
};

use object_store::{ObjectStore, aws::AmazonS3Builder};
use runstore_benches::{
    BareObjectPut, Bench, Engine, OpenFn, Targets, counting::CountingStore, location_name,
    run_standard, skip_loudly,
};
use runstore_core::Store;
use runstore_s3::S3Store;

fn client(endpoint: &str, bucket: &str) -> Arc<dyn ObjectStore> {
    let store = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_endpoint(endpoint)
        .with_allow_http(endpoint.starts_with("http://"))
        .build()
        .expect("an S3 client from the environment");
    Arc::new(store)
}

fn prefix(path: &std::path::Path) -> String {
    format!("runstore-bench/{}", location_name(path))
}

fn main() {
    let endpoint = std::env::var("RUNSTORE_S3_ENDPOINT").unwrap_or_default();
    let bucket = std::env::var("RUNSTORE_S3_BUCKET").unwrap_or_default();
    if endpoint.is_empty() || bucket.is_empty() {
        skip_loudly("s3", "RUNSTORE_S3_ENDPOINT (and RUNSTORE_S3_BUCKET)");
        return;
    }
    {
        let (endpoint, bucket) = (endpoint.clone(), bucket.clone());
        runstore_benches::serve_open_child(move |path: PathBuf| async move {
            S3Store::new(client(&endpoint, &bucket), prefix(&path))
        });
    }
    let bench = Bench::from_env("s3", 10_000, 100);
    let requests = Arc::new(AtomicU64::new(0));
    let open: OpenFn = {
        let (endpoint, bucket, requests) = (endpoint.clone(), bucket.clone(), requests.clone());
        Box::new(move |path| {
            let counted = CountingStore::new(client(&endpoint, &bucket), requests.clone());
            let store = S3Store::new(Arc::new(counted), prefix(&path));
            Box::pin(async move { Ok(Arc::new(store?) as Arc<dyn Store>) })
        })
    };
    let open_relaxed: OpenFn = {
        let (endpoint, bucket) = (endpoint.clone(), bucket.clone());
        Box::new(move |path| {
            let store = S3Store::new(client(&endpoint, &bucket), prefix(&path));
            Box::pin(async move { Ok(Arc::new(store?) as Arc<dyn Store>) })
        })
    };
    let mut bare = BareObjectPut::new(
        client(&endpoint, &bucket),
        &prefix(&bench.path("bare-puts")),
    );
    run_standard(
        &bench,
        Engine {
            name: "s3",
            location: "store",
            open,
            open_relaxed,
            extra_handles: 0,
            concurrency: 16,
            fdatasync: false,
            bare: Some((
                "bare conditional PUT loop",
                Box::new(|n| bench.block_on(bare.insert(n)).expect("bare put")),
            )),
            open_baseline: None,
            compact: true,
            targets: Targets::default(),
            requests: Some(requests),
        },
    );
    eprintln!(
        "s3 bench objects stay under runstore-bench/ in bucket {bucket}; \
         the throwaway server takes them away"
    );
}
