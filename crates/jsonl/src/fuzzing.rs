//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test:
//! each lays bytes out as a file of a store, opens it the way
//! [`JsonlStore::open`] does, reads everything back and checks what must
//! hold of the answers. Not part of the API.
//!
//! A failed invariant panics; a log or snapshot the store rejects comes back
//! as the store's error, which must be `Corrupt` (CONTRACT §17).

use std::{fs, io, path::Path};

use runstore_core::{
    Durability, Error, EventRecord, ReadQuery, Result, SnapshotRecord, StreamKey,
    raw::check::ProblemKind,
};

use crate::{
    JsonlOptions, JsonlStore,
    fileio::Io,
    index::IdHasher,
    layout::{self, FORMAT_FILE, FORMAT_LINE, LOG_FILE, SNAPSHOT_DIR},
    snapshots::Snapshots,
};

/// What [`check_log`] read back: each stream with its records, or the error
/// reading them gave.
pub type Contents = Vec<(StreamKey, Result<Vec<EventRecord>>)>;

fn io_err(action: &str, path: &Path, err: io::Error) -> Error {
    Error::io(format!("{action} {} (fuzzing)", path.display()), err)
}

/// Empties `dir` and lays it out as a store whose log holds `log`.
fn lay_out(dir: &Path, log: &[u8]) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(io_err("remove", dir, err)),
    }
    fs::create_dir_all(dir).map_err(|err| io_err("create", dir, err))?;
    let format = dir.join(FORMAT_FILE);
    fs::write(&format, FORMAT_LINE).map_err(|err| io_err("write", &format, err))?;
    let path = dir.join(LOG_FILE);
    fs::write(&path, log).map_err(|err| io_err("write", &path, err))
}

fn open(dir: &Path) -> Result<JsonlStore> {
    // Relaxed: the checks are about what is read, and syncs only slow them.
    let options = JsonlOptions::default().with_durability(Durability::Relaxed);
    JsonlStore::open_blocking(dir.to_path_buf(), &options, IdHasher::new())
}

fn assert_corrupt(err: &Error, what: &str) {
    assert!(
        matches!(err, Error::Corrupt { .. }),
        "{what} answered {err:?}, not Corrupt"
    );
}

/// Reads every stream of `store` in full.
fn contents(store: &JsonlStore) -> Contents {
    let keys = store.inner.shared.read_state().index.keys();
    keys.into_iter()
        .map(|key| {
            let records = store
                .inner
                .shared
                .read(&key.tenant, &key.run_id, ReadQuery::all());
            (key, records)
        })
        .collect()
}

/// Whether two reads gave the same records, or both failed alike.
fn same(a: &Contents, b: &Contents) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((key_a, a), (key_b, b))| {
            key_a == key_b
                && match (a, b) {
                    (Ok(a), Ok(b)) => a == b,
                    (Err(Error::Corrupt { .. }), Err(Error::Corrupt { .. })) => true,
                    _ => false,
                }
        })
}

/// The seq `seq_of` answers for `event_id`, as [`JsonlStore`]'s
/// `EventLog::seq_of` computes it.
fn seq_of(store: &JsonlStore, key: &StreamKey, event_id: &str) -> Result<Option<u64>> {
    let state = store.inner.shared.read_state();
    match state.index.stream(&key.tenant, &key.run_id) {
        Some(stream) => stream.seq_of(event_id, &state.index.hasher, &state.log),
        None => Ok(None),
    }
}

/// Checks one stream that read back in full.
fn check_stream(store: &JsonlStore, key: &StreamKey, records: &[EventRecord]) {
    let shared = &store.inner.shared;
    assert!(!records.is_empty(), "stream {key} is indexed but empty");
    // The structural checks every store must pass even on a log written by
    // hand: seqs ascend, every record belongs to the stream, and next_seq
    // follows the last. (A hand-written log may have gaps or repeated ids,
    // which open accepts and the other checks of `runstore verify` name.)
    let check = runstore_core::raw::check::check_stream(key, records);
    let next = shared
        .read_state()
        .index
        .stream(&key.tenant, &key.run_id)
        .map_or(0, crate::index::StreamIndex::last_seq)
        + 1;
    let structural: Vec<_> = check
        .problems
        .iter()
        .cloned()
        .chain(check.check_next_seq(next))
        .filter(|problem| {
            matches!(
                problem.kind,
                ProblemKind::NotAscending { .. }
                    | ProblemKind::OtherRun { .. }
                    | ProblemKind::OtherTenant
                    | ProblemKind::NextSeq { .. }
            )
        })
        .collect();
    assert!(
        structural.is_empty(),
        "stream {key}: {}",
        structural
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    for record in records {
        let bytes = serde_json::to_vec(record).expect("a record read back encodes");
        let again: EventRecord = serde_json::from_slice(&bytes).expect("an encoded record decodes");
        assert_eq!(&again, record, "a record of {key} does not round-trip");
        let found = seq_of(store, key, record.event_id.as_str())
            .unwrap_or_else(|err| panic!("seq_of {:?} in {key}: {err:?}", record.event_id));
        assert!(
            found.is_some_and(|seq| seq <= record.seq),
            "seq_of {:?} in {key} is {found:?}; the record is at seq {}",
            record.event_id,
            record.seq
        );
    }
    // Windows (CONTRACT §6) agree with the window applied to the whole read.
    for query in runstore_core::raw::check::sample_windows(records) {
        let window = shared
            .read(&key.tenant, &key.run_id, query)
            .unwrap_or_else(|err| panic!("{query:?} of {key} failed after a full read: {err:?}"));
        assert_eq!(
            window,
            query.apply(records.to_vec(), |record| record.seq),
            "{query:?} of {key}"
        );
    }
}

fn stats(store: &JsonlStore) -> (usize, usize, usize) {
    let stats = store.index_stats();
    (stats.streams, stats.records, stats.ids)
}

/// Writes `log` as the event log of a store in `dir/first`, opens it and
/// reads every stream back; then checks that the repaired log opens again
/// unchanged and that the records read back, written as a new log in
/// `dir/second`, open to the same streams.
///
/// `dir` must exist; what the call leaves in it is replaced by the next.
///
/// # Errors
/// The error the first open gave (always `Corrupt`), or an I/O error laying
/// the files out.
///
/// # Panics
/// When an invariant fails: open answers another error than `Corrupt`; a
/// read fails with another error; records read back do not ascend, name
/// another stream, do not round-trip through JSON or are not found by their
/// id; a window disagrees with the full read; reopening the repaired log
/// changes it or its index; the re-encoded log does not open to the same
/// records.
pub fn check_log(dir: &Path, log: &[u8]) -> Result<Contents> {
    let first = dir.join("first");
    lay_out(&first, log)?;
    let store = match open(&first) {
        Ok(store) => store,
        Err(err) => {
            assert_corrupt(&err, "open");
            return Err(err);
        }
    };
    let read = contents(&store);
    let keys: Vec<StreamKey> = read.iter().map(|(key, _)| key.clone()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "streams are listed ascending, once each");
    for (key, records) in &read {
        let runs = store.inner.shared.read_state().index.runs(&key.tenant);
        assert!(runs.contains(&key.run_id), "list_runs misses {key}");
        match records {
            Ok(records) => check_stream(&store, key, records),
            Err(err) => assert_corrupt(err, "read"),
        }
    }
    let counts = stats(&store);
    drop(store);

    // Recovery is idempotent: the repaired log opens as it is.
    let path = first.join(LOG_FILE);
    let repaired = fs::read(&path).map_err(|err| io_err("read", &path, err))?;
    let store = open(&first).unwrap_or_else(|err| panic!("the repaired log fails: {err:?}"));
    let reread = fs::read(&path).map_err(|err| io_err("read", &path, err))?;
    assert!(reread == repaired, "a second open changed the repaired log");
    assert_eq!(stats(&store), counts, "a second open indexed another log");
    assert!(
        same(&contents(&store), &read),
        "a second open reads other records"
    );
    drop(store);

    // Re-encoding: the records read back, one plain line each, are a log
    // that opens to the same streams.
    let readable: Contents = read
        .iter()
        .filter_map(|(key, records)| {
            records
                .as_ref()
                .ok()
                .map(|records| (key.clone(), Ok(records.clone())))
        })
        .collect();
    let mut encoded = Vec::new();
    for (_, records) in &readable {
        for record in records.iter().flatten() {
            serde_json::to_writer(&mut encoded, record).expect("a record read back encodes");
            encoded.push(b'\n');
        }
    }
    let second = dir.join("second");
    lay_out(&second, &encoded)?;
    let store =
        open(&second).unwrap_or_else(|err| panic!("the re-encoded records do not open: {err:?}"));
    assert!(
        same(&contents(&store), &readable),
        "the re-encoded records read back differently"
    );
    if readable.len() == read.len() {
        assert_eq!(
            stats(&store),
            counts,
            "the re-encoded log indexes differently"
        );
    }
    Ok(read)
}

/// Writes `bytes` as a snapshot file in a snapshot tree under `dir`: at the
/// file its record belongs in when the bytes decode as a
/// [`SnapshotRecord`] of a valid tenant, else at a fixed file. Then opens
/// the tree as a store does and reads the snapshot back.
///
/// `dir` must exist; what the call leaves in it is replaced by the next.
///
/// # Errors
/// The error opening the tree gave (always `Corrupt`), or an I/O error
/// laying the files out.
///
/// # Panics
/// When an invariant fails: a decoded record does not round-trip through
/// JSON; the tree opens with another error than `Corrupt`, or opens though
/// the bytes do not decode; `get` or `list` do not answer the decoded
/// record; a record put back through the store reads back differently.
pub fn check_snapshot(dir: &Path, bytes: &[u8]) -> Result<SnapshotRecord> {
    let decoded: Option<SnapshotRecord> = serde_json::from_slice(bytes).ok();
    if let Some(snapshot) = &decoded {
        let encoded = serde_json::to_vec(snapshot).expect("a decoded snapshot encodes");
        let again: SnapshotRecord =
            serde_json::from_slice(&encoded).expect("an encoded snapshot decodes");
        assert_eq!(&again, snapshot, "a snapshot does not round-trip");
    }
    let root = dir.join(SNAPSHOT_DIR);
    match fs::remove_dir_all(&root) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(io_err("remove", &root, err)),
    }
    let placed = decoded
        .as_ref()
        .and_then(|snapshot| Some((snapshot.scope.tenant().ok()?, snapshot)));
    let file = match placed {
        Some((tenant, snapshot)) => root
            .join(layout::tenant_dir(&tenant))
            .join(layout::run_dir(&snapshot.run_id))
            .join(layout::snapshot_file(&snapshot.snapshot_id)),
        None => root.join("t-o.w").join("r-r").join("s-s.json"),
    };
    let parent = file.parent().expect("a snapshot file has a directory");
    fs::create_dir_all(parent).map_err(|err| io_err("create", parent, err))?;
    fs::write(&file, bytes).map_err(|err| io_err("write", &file, err))?;
    let snapshots = match Snapshots::open(root.clone(), Durability::Relaxed, Io::default()) {
        Ok(snapshots) => snapshots,
        Err(err) => {
            assert_corrupt(&err, "opening the snapshot tree");
            return Err(err);
        }
    };
    let snapshot = decoded.expect("the tree opened, so its one file decoded");
    let tenant = snapshot
        .scope
        .tenant()
        .expect("the tree opened, so the snapshot's tenant is valid");
    let key = StreamKey::new(tenant.clone(), snapshot.run_id.clone());
    assert_eq!(snapshots.streams(), [key], "snapshot streams");
    let got = snapshots
        .get(&tenant, &snapshot.run_id, &snapshot.snapshot_id)
        .unwrap_or_else(|err| panic!("get after open: {err:?}"));
    assert_eq!(
        got.as_ref(),
        Some(&snapshot),
        "get answers another snapshot"
    );
    let listed = snapshots
        .list(&tenant, &snapshot.run_id, None)
        .unwrap_or_else(|err| panic!("list after open: {err:?}"));
    assert_eq!(
        listed,
        std::slice::from_ref(&snapshot),
        "list answers other snapshots"
    );
    // Put back through the store: the file is re-encoded by `put`.
    snapshots
        .put(&tenant, snapshot.clone())
        .unwrap_or_else(|err| panic!("put of a snapshot read back: {err:?}"));
    drop(snapshots);
    let reopened = Snapshots::open(root, Durability::Relaxed, Io::default())
        .unwrap_or_else(|err| panic!("the tree fails after a put: {err:?}"));
    let got = reopened
        .get(&tenant, &snapshot.run_id, &snapshot.snapshot_id)
        .unwrap_or_else(|err| panic!("get after a put: {err:?}"));
    assert_eq!(
        got.as_ref(),
        Some(&snapshot),
        "a put snapshot reads back differently"
    );
    Ok(snapshot)
}
