//! Import keeps append's guarantees (CONTRACT §23): an id the stream holds,
//! live, buffered or remembered by its marker, is refused at any seq, by a
//! handle that has nothing cached as by the one that wrote it.

use runstore_conformance::support::records::{acme as tenant, run_1 as run};
use std::sync::Arc;

use object_store::memory::InMemory;
use runstore_core::{Error, EventId, EventLog, EventRecord, ReadQuery};
use runstore_s3::S3Store;

fn at(seq: u64, id: &str, ms: u64) -> EventRecord {
    let mut record = EventRecord::new(&tenant(), run(), EventId::new(id).unwrap(), "step", ms);
    record.seq = seq;
    record
}

#[tokio::test]
async fn an_import_never_brings_an_id_the_stream_holds() {
    let bucket = Arc::new(InMemory::new());
    let writer = S3Store::new(bucket.clone(), "import").unwrap();
    let events: Vec<_> = (1..=200).map(|n| at(0, &format!("e{n}"), 10)).collect();
    writer
        .append_batch(&tenant(), &run(), &events, None)
        .await
        .unwrap();
    writer
        .append_batch(&tenant(), &run(), &[at(0, "late", 5_000)], None)
        .await
        .unwrap();
    // Seqs 1..=200 are compacted into a marker; "late" stays buffered or
    // flushed, live.
    let report = writer.compact(100, 1_000).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.failed);
    let before = writer
        .read(&tenant(), &run(), ReadQuery::all())
        .await
        .unwrap();
    for id in ["e1", "e150", "e200", "late"] {
        for store in [&writer, &S3Store::new(bucket.clone(), "import").unwrap()] {
            let err = store
                .import_stream(&tenant(), &run(), &[at(202, id, 10)])
                .await
                .unwrap_err();
            assert!(matches!(err, Error::InvalidInput { .. }), "{id}: {err}");
            assert!(err.to_string().contains("already holds"), "{id}: {err}");
        }
    }
    let fresh = S3Store::new(bucket, "import").unwrap();
    assert_eq!(
        fresh
            .read(&tenant(), &run(), ReadQuery::all())
            .await
            .unwrap(),
        before
    );
    assert_eq!(
        fresh
            .import_stream(&tenant(), &run(), &[at(202, "new", 10)])
            .await
            .unwrap(),
        1
    );
}
