//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test:
//! each decodes bytes the way this crate decodes the objects it reads (head,
//! segments, id entries, snapshots, key segments), stores them in an
//! in-memory bucket where a stream's objects live, reads them back through
//! [`S3Store`] and checks what must hold of the answers. Not part of the
//! API.
//!
//! A failed invariant panics; data the store rejects comes back as the
//! store's error, which must be `Corrupt`.

use std::sync::Arc;

use object_store::{ObjectStore, PutPayload, memory::InMemory, path::Path};
use runstore_core::{
    Error, EventId, EventLog, EventRecord, ReadQuery, Result, RunId, SnapshotId, SnapshotRecord,
    SnapshotStore, StreamKey, Tenant,
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    S3Store,
    head::{Head, IdEntry, SegmentRef, index_entries},
    idtable,
    keys::{Keys, SnapshotVersion, decode_id, decode_tenant, id_segment, tenant_segment},
    objects::{from_json, to_json},
};

/// Separates the head from the segments in the input of [`check_head`].
pub const SEPARATOR: &[u8] = b"\n--\n";

fn assert_corrupt(err: &Error, what: &str) {
    assert!(
        matches!(err, Error::Corrupt { .. }),
        "{what} answered {err:?}, not Corrupt"
    );
}

/// Decodes `bytes` as the crate does; a value that decodes must encode and
/// decode again to itself.
fn decode<T>(bytes: &[u8], what: &str) -> Option<T>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let path = Path::from(what);
    match from_json::<T>(bytes, &path, what) {
        Ok(value) => {
            let encoded = to_json(&value, what).expect("a decoded value encodes");
            let again: T = from_json(&encoded, &path, what).expect("an encoded value decodes");
            assert_eq!(again, value, "a {what} does not round-trip");
            Some(value)
        }
        Err(err) => {
            assert_corrupt(&err, what);
            None
        }
    }
}

/// A key segment that decodes must be the one the store would write for
/// what it decodes to ("`None` for anything it cannot have produced").
fn check_key_segments(text: &str) {
    if let Some(id) = decode_id(text) {
        assert_eq!(
            id_segment(&id),
            text,
            "segment {text:?} decodes to id {id:?}, which is stored elsewhere"
        );
    }
    if let Some(tenant) = decode_tenant(text) {
        assert_eq!(
            tenant_segment(&tenant),
            text,
            "segment {text:?} decodes to tenant {tenant}, which is stored elsewhere"
        );
    }
}

fn split(bytes: &[u8]) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    let mut rest = bytes;
    while let Some(at) = rest
        .windows(SEPARATOR.len())
        .position(|window| window == SEPARATOR)
    {
        chunks.push(&rest[..at]);
        rest = &rest[at + SEPARATOR.len()..];
    }
    chunks.push(rest);
    chunks
}

async fn put(store: &InMemory, path: &Path, bytes: &[u8]) {
    store
        .put(path, PutPayload::from(bytes.to_vec()))
        .await
        .expect("an in-memory put succeeds");
}

fn fixed_stream() -> StreamKey {
    StreamKey::new(
        Tenant::new("org", "workspace", None).expect("a valid tenant"),
        RunId::new("run").expect("a valid run id"),
    )
}

/// Whether the stream `head` describes is laid out as the store writes it:
/// seqs ascend, each segment holds `count` records from `first` to `last`,
/// and the buffer follows the segments. Only then must windows agree with
/// the full read.
fn well_formed(head: &Head, segments: &[Vec<EventRecord>], all: &[EventRecord]) -> bool {
    let ascending = all.windows(2).all(|pair| pair[0].seq < pair[1].seq);
    // Two refs naming one object would share whichever part was stored last.
    let distinct = head.segments.iter().enumerate().all(|(at, a)| {
        head.segments[..at]
            .iter()
            .all(|b| (a.first, a.last, &a.token) != (b.first, b.last, &b.token))
    });
    let segments_ok = head.segments.len() == segments.len()
        && head.segments.iter().zip(segments).all(|(named, records)| {
            records.len() as u64 == named.count
                && records.first().is_some_and(|r| r.seq == named.first)
                && records.last().is_some_and(|r| r.seq == named.last)
                && records.iter().all(|r| r.seq <= head.flushed_through)
        });
    let buffer_ok = head
        .buffer
        .iter()
        .all(|record| record.seq > head.flushed_through);
    ascending && distinct && segments_ok && buffer_ok
}

/// Decodes the input as a stream's objects: the head, then (after each
/// [`SEPARATOR`]) the segments it names, in order. Each part is decoded on
/// its own (the head also as an id entry and, as text, as a key segment);
/// then the parts are stored where the head names them in an in-memory
/// bucket and read back through [`S3Store`]: `next_seq`, `read` (whole and
/// windows), `seq_of` and `list_runs`. A segment the head names but the
/// input lacks is stored empty.
///
/// # Errors
/// The error a full read gave (always `Corrupt`).
///
/// # Panics
/// When an invariant fails: a decoder or a read answers another error than
/// `Corrupt`; a decoded head, segment or id entry does not round-trip
/// through JSON; a key segment decodes though the store cannot have written
/// it; `next_seq` is not the head's `last_seq + 1`; a buffered id is not
/// found; on a well-formed stream, a window disagrees with the full read or
/// `list_runs` misses the run.
pub async fn check_head(bytes: &[u8]) -> Result<Vec<EventRecord>> {
    let chunks = split(bytes);
    let head_bytes = chunks[0];
    if let Ok(text) = std::str::from_utf8(head_bytes) {
        check_key_segments(text);
    }
    if let Some(entry) = decode::<IdEntry>(head_bytes, "id entry") {
        let other = EventId::new("some-other-id").expect("a valid id");
        if let Err(err) = entry.seq_for(&other, &"id entry") {
            assert_corrupt(&err, "an id entry");
        }
    }
    let head = decode::<Head>(head_bytes, "head");
    let decoded_segments: Vec<Option<Vec<EventRecord>>> = chunks[1..]
        .iter()
        .map(|chunk| decode::<Vec<EventRecord>>(chunk, "segment"))
        .collect();

    let valid_stream = head.as_ref().and_then(|head| head.stream().ok());
    let key = valid_stream.clone().unwrap_or_else(fixed_stream);
    let keys = Keys::new("").expect("the root prefix is valid");
    let bucket = Arc::new(InMemory::new());
    put(&bucket, &keys.head(&key), head_bytes).await;
    if let Some(head) = &head {
        for (at, segment) in head.segments.iter().enumerate() {
            let path = keys.segment(&key, segment.first, segment.last, &segment.token);
            let chunk = chunks.get(at + 1).copied().unwrap_or(b"[]");
            put(&bucket, &path, &with_table(segment, chunk)).await;
        }
    }
    let store = S3Store::new(bucket, "").expect("the root prefix is valid");
    let (tenant, run) = (&key.tenant, &key.run_id);

    match store.next_seq(tenant, run).await {
        Ok(next) => {
            let head = head.as_ref().expect("next_seq read a head that decodes");
            assert_eq!(next, head.last_seq + 1, "next_seq");
        }
        Err(err) => assert_corrupt(&err, "next_seq"),
    }
    let all = match store.read(tenant, run, ReadQuery::all()).await {
        Ok(all) => all,
        Err(err) => {
            assert_corrupt(&err, "read");
            return Err(err);
        }
    };
    let head = head.expect("a read succeeded, so the head decodes");
    for record in &head.buffer {
        match store.seq_of(tenant, run, &record.event_id).await {
            Ok(found) => assert!(
                found.is_some(),
                "buffered id {:?} is not found",
                record.event_id
            ),
            Err(err) => assert_corrupt(&err, "seq_of"),
        }
    }
    for record in &all {
        if let Err(err) = store.seq_of(tenant, run, &record.event_id).await {
            assert_corrupt(&err, "seq_of");
        }
    }
    let segments: Option<Vec<Vec<EventRecord>>> = (0..head.segments.len())
        .map(|at| match decoded_segments.get(at) {
            Some(decoded) => decoded.clone(),
            None => Some(Vec::new()),
        })
        .collect();
    let well_formed = segments
        .as_ref()
        .is_some_and(|segments| well_formed(&head, segments, &all));
    for query in runstore_core::raw::check::sample_windows(&all) {
        match store.read(tenant, run, query).await {
            Ok(window) if well_formed => assert_eq!(
                window,
                query.apply(all.clone(), |record| record.seq),
                "{query:?} of {key}"
            ),
            Ok(_) => {}
            Err(err) => assert_corrupt(&err, "a window read"),
        }
    }
    match store.list_runs(tenant).await {
        Ok(runs) if well_formed && valid_stream.is_some() => {
            assert!(runs.contains(run), "list_runs misses {key}");
        }
        Ok(_) => {}
        Err(err) => assert_corrupt(&err, "list_runs"),
    }
    if let Err(err) = store.streams().await {
        assert_corrupt(&err, "streams");
    }
    Ok(all)
}

/// The bytes of a segment object for `chunk`: led by the id table of its
/// records when the head states a leading table of exactly their ids (so
/// inputs written as plain JSON reach the reads of tabled segments), else
/// `chunk` as it is.
fn with_table(segment: &SegmentRef, chunk: &[u8]) -> Vec<u8> {
    let table = segment
        .index
        .filter(|index| index.pages == 0)
        .and_then(|index| {
            let records: Vec<EventRecord> = serde_json::from_slice(chunk).ok()?;
            let entries = index_entries(&records).ok()?;
            (entries.len() as u64 == index.count).then_some(entries)
        })
        .and_then(|entries| idtable::encode(&entries).ok())
        .and_then(|mut parts| parts.pop());
    let mut bytes = table.unwrap_or_default();
    bytes.extend_from_slice(chunk);
    bytes
}

/// Stores `bytes` as a snapshot object: under the legacy (unversioned) key
/// its record belongs at when the bytes decode as a [`SnapshotRecord`] of a
/// valid tenant, else under a fixed key; then reads it back through
/// [`S3Store`] (`get`, `list`, `snapshot_streams`) and puts it back.
///
/// # Errors
/// The error `get` gave (always `Corrupt`).
///
/// # Panics
/// When an invariant fails: a decoded record does not round-trip through
/// JSON; a read answers another error than `Corrupt`, or reads a record
/// from bytes that do not decode; `get` or `list` answer another record
/// than the decoded one; a record put back reads back differently.
pub async fn check_snapshot(bytes: &[u8]) -> Result<Option<SnapshotRecord>> {
    let decoded = decode::<SnapshotRecord>(bytes, "snapshot");
    let placed = decoded
        .as_ref()
        .and_then(|snapshot| Some((snapshot.scope.tenant().ok()?, snapshot)));
    let (tenant, run, snapshot_id) = match placed {
        Some((tenant, snapshot)) => (
            tenant,
            snapshot.run_id.clone(),
            snapshot.snapshot_id.clone(),
        ),
        None => {
            let key = fixed_stream();
            (
                key.tenant,
                key.run_id,
                SnapshotId::new("snapshot").expect("a valid id"),
            )
        }
    };
    let keys = Keys::new("").expect("the root prefix is valid");
    let bucket = Arc::new(InMemory::new());
    // The key a snapshot had before keys carried versions: the one data
    // from outside the store, or from an older version of it, is found at.
    let legacy = SnapshotVersion::legacy();
    put(
        &bucket,
        &keys.snapshot(&tenant, &run, &snapshot_id, &legacy),
        bytes,
    )
    .await;
    let store = S3Store::new(bucket, "").expect("the root prefix is valid");
    let got = match store.get(&tenant, &run, &snapshot_id).await {
        Ok(got) => got,
        Err(err) => {
            assert_corrupt(&err, "get");
            if let Err(err) = store.list(&tenant, &run, None).await {
                assert_corrupt(&err, "list");
            }
            return Err(err);
        }
    };
    let snapshot = decoded.expect("get read a record, so the bytes decode");
    assert_eq!(
        got.as_ref(),
        Some(&snapshot),
        "get answers another snapshot"
    );
    let listed = store
        .list(&tenant, &run, None)
        .await
        .unwrap_or_else(|err| panic!("list after get: {err:?}"));
    assert_eq!(
        listed,
        std::slice::from_ref(&snapshot),
        "list answers other snapshots"
    );
    let key = StreamKey::new(tenant.clone(), run.clone());
    let streams = store
        .snapshot_streams()
        .await
        .unwrap_or_else(|err| panic!("snapshot_streams after get: {err:?}"));
    assert_eq!(streams, [key], "snapshot streams");
    store
        .put(&tenant, &snapshot)
        .await
        .unwrap_or_else(|err| panic!("put of a snapshot read back: {err:?}"));
    let again = store
        .get(&tenant, &run, &snapshot_id)
        .await
        .unwrap_or_else(|err| panic!("get after a put: {err:?}"));
    assert_eq!(
        again.as_ref(),
        Some(&snapshot),
        "a put snapshot reads back differently"
    );
    Ok(got)
}
