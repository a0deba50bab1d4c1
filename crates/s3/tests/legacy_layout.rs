//! Streams written before segments carried id tables (docs/backends/s3.md,
//! "Where an event id is found"): segments that are JSON arrays alone, a
//! head of format 1 that names them without `index`, and one `ids/` object
//! per flushed id. Such a stream is built here by writing a stream with
//! today's code and rewriting its objects into that layout; the store then
//! finds every id, answers duplicates with their seqs, and moves the ids
//! into tables as flushes and compactions rewrite the segments.

use runstore_conformance::support::{
    self,
    records::{acme as tenant, run_1 as run, step as event},
};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::{ObjectStore, PutPayload, memory::InMemory, path::Path};
use runstore_core::{
    EventId, EventLog, EventRecord, ReadQuery, RunStatus, SnapshotId, SnapshotRecord, SnapshotStore,
};
use runstore_s3::S3Store;
use serde_json::{Value, json};

/// A bucket and the prefix of the store under test.
struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl Bucket {
    fn in_memory() -> Self {
        Self {
            store: Arc::new(InMemory::new()),
            prefix: "legacy".to_owned(),
        }
    }

    fn s3(&self) -> S3Store {
        S3Store::new(self.store.clone(), &self.prefix).unwrap()
    }

    /// A new handle (nothing cached), after checking that it finds each
    /// id at its seq.
    async fn finds(&self, expected: &[(&str, u64)]) -> S3Store {
        let fresh = self.s3();
        for (id, seq) in expected {
            assert_eq!(seq_of(&fresh, id).await, Some(*seq), "{id}");
        }
        fresh
    }

    async fn keys(&self) -> Vec<Path> {
        self.store
            .list(Some(&Path::from(self.prefix.as_str())))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .unwrap()
    }

    async fn bytes_of(&self, path: &Path) -> bytes::Bytes {
        self.store.get(path).await.unwrap().bytes().await.unwrap()
    }

    async fn put(&self, path: &Path, bytes: impl Into<PutPayload>) {
        self.store.put(path, bytes.into()).await.unwrap();
    }

    async fn head_json(&self) -> (Path, Value) {
        let path = self
            .keys()
            .await
            .into_iter()
            .find(|path| path.filename() == Some("head"))
            .expect("a head");
        let head = serde_json::from_slice(&self.bytes_of(&path).await).unwrap();
        (path, head)
    }
    /// Rewrites the stream into the layout of a version before id tables: each
    /// segment loses its table, the head its `index` fields and format 3, and
    /// every id a segment holds gets its `ids/` object. Returns how many.
    async fn downgrade(&self) -> usize {
        let (head_path, mut head) = self.head_json().await;
        let dir = head_path
            .prefix_match(&Path::from(self.prefix.as_str()))
            .unwrap();
        let dir: Vec<_> = dir.collect();
        let mut stream_dir = Path::from(self.prefix.as_str());
        for part in &dir[..dir.len() - 1] {
            stream_dir = stream_dir.child(part.as_ref());
        }
        let mut entries = 0;
        for segment in head["segments"].as_array_mut().unwrap() {
            let name = format!(
                "{:020}-{:020}-{}",
                segment["first"].as_u64().unwrap(),
                segment["last"].as_u64().unwrap(),
                segment["token"].as_str().unwrap()
            );
            let path = stream_dir.child("seg").child(name);
            let bytes = self.bytes_of(&path).await;
            // A table of up to 1,024 entries leads the segment (the test's
            // tables are that small).
            assert!(segment["index"].get("pages").is_none(), "{segment}");
            let at = 40 * usize::try_from(segment["index"]["count"].as_u64().unwrap()).unwrap();
            let records: Vec<EventRecord> = serde_json::from_slice(&bytes[at..]).unwrap();
            self.put(&path, bytes.slice(at..)).await;
            segment.as_object_mut().unwrap().remove("index");
            for record in records {
                let ids = if record.is_compaction_marker() {
                    record.payload["compacted_event_ids"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|id| {
                            (
                                id["event_id"].as_str().unwrap().to_owned(),
                                id["seq"].as_u64().unwrap(),
                            )
                        })
                        .collect()
                } else {
                    vec![(record.event_id.as_str().to_owned(), record.seq)]
                };
                for (id, seq) in ids {
                    // Test ids are lowercase letters, digits and dashes: their
                    // key segment is `v` and the id.
                    let entry = stream_dir.child("ids").child(format!("v{id}"));
                    let body = serde_json::to_vec(&json!({"seq": seq, "id": id})).unwrap();
                    self.put(&entry, body).await;
                    entries += 1;
                }
            }
        }
        head["format"] = json!(1);
        let body = serde_json::to_vec(&head).unwrap();
        self.put(&head_path, body).await;
        entries
    }

    /// The key of the first segment the head names, and the length of the id
    /// table that leads it.
    async fn first_segment(&self) -> (Path, usize) {
        let (head_path, head) = self.head_json().await;
        let segment = &head["segments"][0];
        let at = 40 * usize::try_from(segment["index"]["count"].as_u64().unwrap()).unwrap();
        let dir = head_path.as_ref().strip_suffix("/head").unwrap();
        let path = Path::from(format!(
            "{dir}/seg/{:020}-{:020}-{}",
            segment["first"].as_u64().unwrap(),
            segment["last"].as_u64().unwrap(),
            segment["token"].as_str().unwrap()
        ));
        (path, at)
    }
}

/// Whether each segment `head` names has an id table.
fn tabled(head: &Value) -> Vec<bool> {
    head["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|segment| segment.get("index").is_some())
        .collect()
}

fn snapshot(seq: u64) -> SnapshotRecord {
    SnapshotRecord::new(
        &tenant(),
        run(),
        SnapshotId::new("s").unwrap(),
        seq,
        1,
        RunStatus::Running,
    )
}

async fn seq_of(store: &S3Store, id: &str) -> Option<u64> {
    store
        .seq_of(&tenant(), &run(), &EventId::new(id).unwrap())
        .await
        .unwrap()
}

/// Appends `e<from>..=e<to>` in batches of 50, occurring at `at`.
async fn append_range(store: &S3Store, from: u64, to: u64, at: u64) {
    let events: Vec<_> = (from..=to).map(|n| event(&format!("e{n}"), at)).collect();
    for chunk in events.chunks(50) {
        store
            .append_batch(&tenant(), &run(), chunk, None)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_stream_of_the_layout_before_id_tables_reads_appends_and_compacts_in_memory() {
    a_stream_of_the_layout_before_id_tables_reads_appends_and_compacts(Bucket::in_memory()).await;
}

#[tokio::test]
async fn a_stream_of_the_layout_before_id_tables_reads_appends_and_compacts_on_a_real_server() {
    let Some([endpoint, bucket]) = support::service_urls(
        ["RUNSTORE_S3_ENDPOINT", "RUNSTORE_S3_BUCKET"],
        "s3 layout before id tables",
    ) else {
        return;
    };
    let store = S3Store::from_env_with_endpoint(&bucket, Some(endpoint), "").unwrap();
    let bucket = Bucket {
        store: store.object_store().clone(),
        prefix: format!("legacy-{}", uuid::Uuid::new_v4().simple()),
    };
    a_stream_of_the_layout_before_id_tables_reads_appends_and_compacts(bucket).await;
}

async fn a_stream_of_the_layout_before_id_tables_reads_appends_and_compacts(bucket: Bucket) {
    // e1..e300, old; compacted behind a snapshot at 200 (a marker that
    // remembers e1..e199); then e301..e600, flushed into more segments.
    let writer = bucket.s3();
    append_range(&writer, 1, 300, 10).await;
    writer.put(&tenant(), &snapshot(200)).await.unwrap();
    assert_eq!(writer.compact(100, 1_000).await.unwrap().removed, 199);
    append_range(&writer, 301, 600, 2_000).await;
    // Let the last flush finish (an import of nothing waits for it).
    writer.import_stream(&tenant(), &run(), &[]).await.unwrap();
    let before = writer
        .read(&tenant(), &run(), ReadQuery::all())
        .await
        .unwrap();
    drop(writer);

    let entries = bucket.downgrade().await;
    let (_, head) = bucket.head_json().await;
    assert!(entries >= 400, "ids of the flushed segments: {entries}");
    assert_eq!(head["format"], json!(1));
    assert!(!head["segments"].as_array().unwrap().is_empty());

    // A new handle (nothing cached) finds ids of every kind.
    let old = bucket.s3();
    assert_eq!(
        old.read(&tenant(), &run(), ReadQuery::all()).await.unwrap(),
        before
    );
    assert_eq!(seq_of(&old, "e5").await, Some(5), "a compacted id");
    assert_eq!(seq_of(&old, "e250").await, Some(250), "kept in a segment");
    assert_eq!(seq_of(&old, "e420").await, Some(420), "appended later");
    assert_eq!(seq_of(&old, "nope").await, None);
    // Duplicates answer their seqs; a new event goes after the last.
    let again = old
        .append_batch(
            &tenant(),
            &run(),
            &[event("e7", 1), event("e333", 1), event("fresh", 1)],
            None,
        )
        .await
        .unwrap();
    let last = before.last().unwrap().seq;
    let answers: Vec<_> = again.iter().map(|a| (a.seq, a.inserted)).collect();
    assert_eq!(answers, [(7, false), (333, false), (last + 1, true)]);
    let (_, head) = bucket.head_json().await;
    assert_eq!(
        head["format"],
        json!(1),
        "an append alone keeps the old format"
    );

    // A flush too small to merge the old segment (151 records against 402)
    // writes a segment with a table beside it: the head takes format 3, and
    // ids are found in both kinds.
    append_range(&old, 601, 750, 3_000).await;
    old.import_stream(&tenant(), &run(), &[]).await.unwrap();
    let (_, head) = bucket.head_json().await;
    assert_eq!(head["format"], json!(3), "{head}");
    let tables = tabled(&head);
    assert!(
        tables.contains(&false) && tables.contains(&true),
        "{tables:?}"
    );
    bucket
        .finds(&[("e5", 5), ("e250", 250), ("e420", 420), ("e700", 701)])
        .await;
    // A larger flush merges the old segment into one with a table.
    append_range(&old, 751, 1_000, 3_000).await;
    old.import_stream(&tenant(), &run(), &[]).await.unwrap();
    let (_, head) = bucket.head_json().await;
    assert!(tabled(&head).iter().all(|has| *has), "{head}");
    let fresh = bucket
        .finds(&[("e5", 5), ("e250", 250), ("e420", 420), ("e900", 901)])
        .await;

    // Compaction rewrites every segment with a table: the `ids/` objects
    // are no longer needed to find anything.
    fresh.put(&tenant(), &snapshot(900)).await.unwrap();
    assert!(fresh.compact(100, 10_000).await.unwrap().removed > 0);
    let (_, head) = bucket.head_json().await;
    assert!(tabled(&head).iter().all(|has| *has), "{head}");
    for path in bucket.keys().await {
        if path.as_ref().contains("/ids/") {
            bucket.store.delete(&path).await.unwrap();
        }
    }
    let fresh = bucket
        .finds(&[("e5", 5), ("e250", 250), ("e420", 420), ("e700", 701)])
        .await;
    let dup = fresh
        .append_batch(&tenant(), &run(), &[event("e250", 1)], None)
        .await
        .unwrap();
    assert_eq!((dup[0].seq, dup[0].inserted), (250, false));
}

/// A segment whose id table was damaged (unsorted) is `Corrupt`, naming
/// the segment; a lookup never takes it for absence.
#[tokio::test]
async fn a_damaged_id_table_is_corrupt() {
    let bucket = Bucket::in_memory();
    let writer = bucket.s3();
    append_range(&writer, 1, 200, 10).await;
    writer.import_stream(&tenant(), &run(), &[]).await.unwrap();
    let (path, _) = bucket.first_segment().await;
    let mut bytes = bucket.bytes_of(&path).await.to_vec();
    // Swap the first two entries of the table.
    let (first, second) = (bytes[..40].to_vec(), bytes[40..80].to_vec());
    bytes[..40].copy_from_slice(&second);
    bytes[40..80].copy_from_slice(&first);
    bucket.put(&path, bytes).await;

    let reader = bucket.s3();
    let err = reader
        .seq_of(&tenant(), &run(), &EventId::new("e3").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, runstore_core::Error::Corrupt { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("/seg/") && text.contains("not sorted"),
        "{text}"
    );
    // The records themselves still read.
    assert_eq!(
        reader
            .read(&tenant(), &run(), ReadQuery::all())
            .await
            .unwrap()
            .len(),
        200
    );
}

/// A segment object cut short is `Corrupt`, never a request error or a
/// wrong answer: cut inside its leading id table, for lookups and reads
/// alike; cut inside its records, for reads (its table still answers).
#[tokio::test]
async fn a_segment_cut_short_is_corrupt() {
    let bucket = Bucket::in_memory();
    let writer = bucket.s3();
    append_range(&writer, 1, 200, 10).await;
    writer.import_stream(&tenant(), &run(), &[]).await.unwrap();
    let (path, at) = bucket.first_segment().await;
    let bytes = bucket.bytes_of(&path).await;
    for cut in [at / 2, at + 20] {
        bucket.put(&path, bytes.slice(..cut)).await;
        let reader = bucket.s3();
        let found = reader
            .seq_of(&tenant(), &run(), &EventId::new("e3").unwrap())
            .await;
        if cut < at {
            let err = found.unwrap_err();
            assert!(matches!(err, runstore_core::Error::Corrupt { .. }), "{err}");
        } else {
            assert_eq!(found.unwrap(), Some(3));
        }
        let err = reader
            .read(&tenant(), &run(), ReadQuery::all())
            .await
            .unwrap_err();
        assert!(matches!(err, runstore_core::Error::Corrupt { .. }), "{err}");
    }
}

/// A head that states a shorter table than the one leading its segment
/// (and as few records, so the counts agree) is `Corrupt` for every lookup:
/// the records must start right after the table the head states, so a
/// prefix of the real table is never searched as if it were whole.
#[tokio::test]
async fn a_head_stating_a_shorter_table_is_corrupt() {
    let bucket = Bucket::in_memory();
    let writer = bucket.s3();
    append_range(&writer, 1, 200, 10).await;
    writer.import_stream(&tenant(), &run(), &[]).await.unwrap();
    let (head_path, mut head) = bucket.head_json().await;
    let segment = &mut head["segments"][0];
    assert_eq!(segment["count"], json!(150), "{segment}");
    segment["count"] = json!(100);
    segment["index"]["count"] = json!(100);
    bucket
        .put(&head_path, serde_json::to_vec(&head).unwrap())
        .await;
    let reader = bucket.s3();
    for n in [1, 77, 100, 101, 150] {
        let err = reader
            .seq_of(&tenant(), &run(), &EventId::new(format!("e{n}")).unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(err, runstore_core::Error::Corrupt { .. }),
            "e{n}: {err}"
        );
        assert!(
            err.to_string()
                .contains("do not start after a table of 100"),
            "{err}"
        );
    }
}
