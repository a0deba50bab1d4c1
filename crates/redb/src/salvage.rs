//! Salvage: reads what can be read of a redb file entry by entry, so that a
//! damaged record or page costs only the entries on it.
//!
//! The file is opened read-only ([`redb::ReadOnlyDatabase`]), so nothing in
//! it changes. `events` and `snapshots` are read in key order. When the
//! ordered read fails (an error, or a panic inside redb on a page it cannot
//! make sense of), the scan goes on from the next key the other tables know
//! -- `ids` and `heads` name every event key, `snapshot_order` every
//! snapshot key -- reading each such key on its own in a fresh read
//! transaction: a key that fails is a [`Loss`] naming it, and the first that
//! reads resumes the ordered read.

use std::{
    collections::BTreeSet,
    ops::Bound,
    panic::{AssertUnwindSafe, catch_unwind},
    path::Path,
};

use redb::{ReadOnlyDatabase, ReadableDatabase as _, ReadableTable, TableDefinition};
use runstore_core::{
    Error, Result,
    salvage::{Loss, SalvageScan, ScanBuilder},
};

use crate::{
    error::{BACKEND, Failure},
    tables::{
        EVENTS, HEADS, IDS, SNAPSHOT_ORDER, SNAPSHOTS, decode_event, decode_snapshot,
        decode_stream, event_key, join, seq_of_event_key, split_order_key,
    },
};

/// Scans the redb file at `path`: every readable event and snapshot, and a
/// loss for each entry (or stretch of entries) that cannot be read.
///
/// # Errors
/// [`Error::InvalidInput`] when there is no file at `path` or it has no
/// `events` table; `Locked` when a store holds it open; `Corrupt` or
/// `Backend` when redb cannot open it read-only (a file left by a crash
/// needs redb's repair, which only a writable open runs).
pub async fn scan(path: impl AsRef<Path>) -> Result<SalvageScan> {
    let path = path.as_ref().to_path_buf();
    runstore_fs::run_blocking(BACKEND, move || scan_blocking(&path)).await
}

fn scan_blocking(path: &Path) -> Result<SalvageScan> {
    if !path.is_file() {
        return Err(Error::invalid(format!(
            "no redb store at {}: there is no such file",
            path.display()
        )));
    }
    let db = guard(|| {
        redb::Builder::new()
            .open_read_only(path)
            .map_err(|err| Failure::from(err).into_error(path))
    })
    .map_err(|panic| Error::corrupt(path.display(), panic))??;
    let has_events = guard(|| {
        let txn = db.begin_read().map_err(|err| err.to_string())?;
        txn.open_table(EVENTS).map_err(|err| err.to_string())?;
        Ok::<_, String>(())
    });
    if let Err(err) = has_events.and_then(|opened| opened) {
        return Err(Error::invalid(format!(
            "{} is not a runstore redb store: its events table cannot be opened: {err}",
            path.display()
        )));
    }
    let file = path.display().to_string();
    let mut scan = ScanBuilder::new();
    let events = Events { file: &file };
    let candidates = events.candidates(&db);
    scan_table(&db, &events, &candidates, &mut scan);
    let snapshots = Snapshots { file: &file };
    let candidates = snapshots.candidates(&db);
    scan_table(&db, &snapshots, &candidates, &mut scan);
    Ok(scan.finish())
}

/// Runs `work`, turning a panic into its message.
fn guard<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(work)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        format!("redb panicked reading the file: {message}")
    })
}

/// Runs `work` on `table` of a fresh read transaction, turning a redb error
/// or a panic into its message.
fn on_table<T>(
    db: &ReadOnlyDatabase,
    table: TableDefinition<&'static [u8], &'static [u8]>,
    work: impl FnOnce(&redb::ReadOnlyTable<&'static [u8], &'static [u8]>) -> Result<T, String>,
) -> Result<T, String> {
    guard(|| {
        let txn = db.begin_read().map_err(|err| err.to_string())?;
        let table = txn.open_table(table).map_err(|err| err.to_string())?;
        work(&table)
    })?
}

/// The keys a table holds, as far as the other tables tell.
struct Candidates {
    keys: BTreeSet<Vec<u8>>,
    /// Whether `keys` is every key of the table (the tables that name them
    /// are written in the same transactions), not a partial list.
    complete: bool,
}

/// One of the two record tables.
trait RecordTable {
    /// The table.
    const TABLE: TableDefinition<'static, &'static [u8], &'static [u8]>;
    /// Its name in places.
    const NAME: &'static str;

    /// The file, for places.
    fn file(&self) -> &str;

    /// Takes an entry: its record, or a loss.
    fn take(&self, key: &[u8], value: &[u8], scan: &mut ScanBuilder);

    /// A loss for the entry with `key`, which could not be read.
    fn lost(&self, key: &[u8], reason: String) -> Loss;

    /// How a key reads in a place.
    fn describe(&self, key: &[u8]) -> String;
}

/// Reads `table` in key order; see the module docs.
fn scan_table<T: RecordTable>(
    db: &ReadOnlyDatabase,
    table: &T,
    candidates: &Candidates,
    scan: &mut ScanBuilder,
) {
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let read = on_table(db, T::TABLE, |entries| {
            let start = match &cursor {
                Some(key) => Bound::Excluded(key.as_slice()),
                None => Bound::Unbounded,
            };
            let range = entries
                .range::<&[u8]>((start, Bound::Unbounded))
                .map_err(|err| err.to_string())?;
            for entry in range {
                let (key, value) = entry.map_err(|err| err.to_string())?;
                table.take(key.value(), value.value(), scan);
                cursor = Some(key.value().to_vec());
            }
            Ok(())
        });
        let Err(failure) = read else { return };
        if !skip(db, table, candidates, &mut cursor, &failure, scan) {
            return;
        }
    }
}

/// Past an entry after `cursor` that cannot be read: reads the known keys
/// after it one by one until one reads, and moves `cursor` there; each
/// known key that fails is a loss. Returns false when no known key is
/// left. A failure that no known key accounts for is a loss of the stretch
/// it lies in, unless the known keys are all the table holds (then the
/// failure was in the pages between entries).
fn skip<T: RecordTable>(
    db: &ReadOnlyDatabase,
    table: &T,
    candidates: &Candidates,
    cursor: &mut Option<Vec<u8>>,
    failure: &str,
    scan: &mut ScanBuilder,
) -> bool {
    let from = cursor.clone();
    let after = || match &from {
        Some(key) => format!(
            "{}: table {}, the entries after {}",
            table.file(),
            T::NAME,
            table.describe(key)
        ),
        None => format!(
            "{}: table {}, the entries from the first",
            table.file(),
            T::NAME
        ),
    };
    let mut named = false;
    loop {
        let next = match cursor {
            Some(key) => candidates
                .keys
                .range::<Vec<u8>, _>((Bound::Excluded(&*key), Bound::Unbounded))
                .next(),
            None => candidates.keys.first(),
        };
        let Some(key) = next.cloned() else { break };
        *cursor = Some(key.clone());
        let read = on_table(db, T::TABLE, |entries| {
            entries
                .get(key.as_slice())
                .map(|value| value.map(|value| value.value().to_vec()))
                .map_err(|err| err.to_string())
        });
        match read {
            Ok(Some(value)) => {
                if !named && !candidates.complete {
                    scan.lose(Loss::range(
                        format!("{} and before {}", after(), table.describe(&key)),
                        None,
                        format!("an entry there could not be read: {failure}"),
                    ));
                }
                table.take(&key, &value, scan);
                return true;
            }
            // A key the other tables know but this one does not hold (a
            // compacted event's id).
            Ok(None) => {}
            Err(reason) => {
                named = true;
                scan.lose(table.lost(&key, reason));
            }
        }
    }
    if !named && !candidates.complete {
        scan.lose(Loss::unread_rest(after(), failure));
    }
    false
}

/// The entries of a `u64`-valued table, as far as it reads, and whether it
/// read to the end. A table that does not read is no loss by itself: it
/// only narrows what the scan finds past damage in a record table.
fn index_entries(
    db: &ReadOnlyDatabase,
    table: TableDefinition<&'static [u8], u64>,
) -> (Vec<(Vec<u8>, u64)>, bool) {
    let mut entries = Vec::new();
    let read = guard(|| {
        let txn = db.begin_read().map_err(|err| err.to_string())?;
        let table = txn.open_table(table).map_err(|err| err.to_string())?;
        for entry in table.iter().map_err(|err| err.to_string())? {
            let (key, value) = entry.map_err(|err| err.to_string())?;
            entries.push((key.value().to_vec(), value.value()));
        }
        Ok::<_, String>(())
    });
    let complete = matches!(read, Ok(Ok(())));
    (entries, complete)
}

struct Events<'a> {
    file: &'a str,
}

impl Events<'_> {
    /// The event keys `ids` (every live and compacted id with its seq) and
    /// `heads` (every stream's last seq) name.
    fn candidates(&self, db: &ReadOnlyDatabase) -> Candidates {
        let (ids, ids_complete) = index_entries(db, IDS);
        let (heads, heads_complete) = index_entries(db, HEADS);
        let mut keys = BTreeSet::new();
        for (key, seq) in ids.iter().chain(&heads) {
            if let Ok((_, len)) = decode_stream(key) {
                keys.insert(event_key(&key[..len], *seq));
            }
        }
        Candidates {
            keys,
            complete: ids_complete && heads_complete,
        }
    }
}

impl RecordTable for Events<'_> {
    const TABLE: TableDefinition<'static, &'static [u8], &'static [u8]> = EVENTS;
    const NAME: &'static str = "events";

    fn file(&self) -> &str {
        self.file
    }

    fn take(&self, key: &[u8], value: &[u8], scan: &mut ScanBuilder) {
        let place = format!("{}: table events, key {}", self.file, self.describe(key));
        let Ok((stream, len)) = decode_stream(key) else {
            scan.lose(Loss::record(place, None, None, "the key names no stream"));
            return;
        };
        let seq = match seq_of_event_key(&key[..len], key) {
            Ok(seq) if key.len() == len + 8 => seq,
            _ => {
                scan.lose(Loss::record(
                    place,
                    Some(&stream),
                    None,
                    "the key is not a stream and an 8-byte seq",
                ));
                return;
            }
        };
        match decode_event(&key[..len], seq, value) {
            Ok(record) => scan.record(place, Some((&stream, seq)), record),
            Err(failure) => scan.lose(Loss::record(
                place,
                Some(&stream),
                Some(seq),
                reason(failure),
            )),
        }
    }

    fn lost(&self, key: &[u8], reason: String) -> Loss {
        let place = format!("{}: table events, key {}", self.file, self.describe(key));
        match decode_stream(key) {
            Ok((stream, len)) => Loss::record(
                place,
                Some(&stream),
                seq_of_event_key(&key[..len], key).ok(),
                reason,
            ),
            Err(_) => Loss::record(place, None, None, reason),
        }
    }

    fn describe(&self, key: &[u8]) -> String {
        match decode_stream(key) {
            Ok((stream, len)) => match seq_of_event_key(&key[..len], key) {
                Ok(seq) if key.len() == len + 8 => format!("{stream} seq {seq}"),
                _ => format!("{key:02x?}"),
            },
            Err(_) => format!("{key:02x?}"),
        }
    }
}

struct Snapshots<'a> {
    file: &'a str,
}

impl Snapshots<'_> {
    /// The snapshot keys `snapshot_order` names.
    fn candidates(&self, db: &ReadOnlyDatabase) -> Candidates {
        let mut keys = BTreeSet::new();
        let read = guard(|| {
            let txn = db.begin_read().map_err(|err| err.to_string())?;
            let table = txn
                .open_table(SNAPSHOT_ORDER)
                .map_err(|err| err.to_string())?;
            for entry in table.iter().map_err(|err| err.to_string())? {
                let (key, ()) = {
                    let (key, value) = entry.map_err(|err| err.to_string())?;
                    (key.value().to_vec(), value.value())
                };
                if let Ok((_, len)) = decode_stream(&key)
                    && let Ok((_, id)) = split_order_key(&key[..len], &key)
                {
                    keys.insert(join(&key[..len], id));
                }
            }
            Ok::<_, String>(())
        });
        Candidates {
            keys,
            complete: matches!(read, Ok(Ok(()))),
        }
    }
}

impl RecordTable for Snapshots<'_> {
    const TABLE: TableDefinition<'static, &'static [u8], &'static [u8]> = SNAPSHOTS;
    const NAME: &'static str = "snapshots";

    fn file(&self) -> &str {
        self.file
    }

    fn take(&self, key: &[u8], value: &[u8], scan: &mut ScanBuilder) {
        let place = format!("{}: table snapshots, key {}", self.file, self.describe(key));
        let Ok((stream, len)) = decode_stream(key) else {
            scan.lose(Loss::snapshot(place, None, None, "the key names no stream"));
            return;
        };
        let Ok(id) = std::str::from_utf8(&key[len..]) else {
            scan.lose(Loss::snapshot(
                place,
                Some(&stream),
                None,
                "the key's snapshot id is not UTF-8",
            ));
            return;
        };
        match decode_snapshot(key, value) {
            Ok(snapshot) => scan.snapshot(place, Some((&stream, id)), snapshot),
            Err(failure) => scan.lose(Loss::snapshot(
                place,
                Some(&stream),
                Some(id),
                reason(failure),
            )),
        }
    }

    fn lost(&self, key: &[u8], reason: String) -> Loss {
        let place = format!("{}: table snapshots, key {}", self.file, self.describe(key));
        match decode_stream(key) {
            Ok((stream, len)) => Loss::snapshot(
                place,
                Some(&stream),
                std::str::from_utf8(&key[len..]).ok(),
                reason,
            ),
            Err(_) => Loss::snapshot(place, None, None, reason),
        }
    }

    fn describe(&self, key: &[u8]) -> String {
        match decode_stream(key) {
            Ok((stream, len)) => match std::str::from_utf8(&key[len..]) {
                Ok(id) => format!("{stream} snapshot {id:?}"),
                Err(_) => format!("{key:02x?}"),
            },
            Err(_) => format!("{key:02x?}"),
        }
    }
}

/// Why a record did not decode.
fn reason(failure: Failure) -> String {
    match failure {
        Failure::Rejected(Error::Corrupt { reason, .. }) => reason,
        Failure::Rejected(err) | Failure::Abandon(err) => err.to_string(),
        Failure::Redb(err) => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use runstore_conformance::support::{
        expect_corrupt,
        records::acme as tenant,
        salvage::{
            OneRecordAndOneSnapshotLost, fill, find_once, lost_records, numbered as event,
            numbered_on_page, occurrences, overwrite, seqs,
        },
    };
    use runstore_core::{EventLog, EventRecord, ReadQuery, RunId};

    use super::*;
    use crate::RedbStore;

    /// A closed store with `count` events in run `a`, 3 in run `b`, two
    /// snapshots of `a`, and `a`'s events up to seq 2 compacted.
    async fn store(path: &Path, count: u64) {
        let store = RedbStore::open(path).await.unwrap();
        let a: Vec<EventRecord> = (1..=count).map(|n| event("a", n)).collect();
        let b: Vec<EventRecord> = (1..=3).map(|n| event("b", n)).collect();
        fill(&store, &a, &b, &[("snap-1", 3), ("snap-2", 4)]).await;
        // Events of `a` at seq 1 and 2 occurred at 1 and 2: below the cutoff
        // 3 and below the newest snapshot's seq 4; `b`'s too (it has no
        // snapshot).
        let report = store.compact(10, 13).await.unwrap();
        assert!(report.is_clean(), "{:?}", report.failed);
        drop(store);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_intact_store_is_read_whole() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("store.redb");
        store(&path, 6).await;
        let scan = scan(&path).await.unwrap();
        assert!(scan.losses.is_empty(), "{:?}", scan.losses);
        // The marker at seq 2 and the live events after it.
        assert_eq!(seqs(&scan, "a"), [2, 3, 4, 5, 6]);
        assert!(scan.streams[0].records[0].is_compaction_marker());
        assert_eq!(seqs(&scan, "b"), [2, 3]);
        assert_eq!(scan.snapshots.len(), 2);
    }

    // A record's JSON bytes overwritten in the file: reads of the stream
    // fail, the scan loses that entry only.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_damaged_record_costs_only_its_entry() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("store.redb");
        store(&path, 6).await;
        // The file can hold a stale copy of the record in a page the
        // compaction freed: damage every copy, the live one among them.
        let needle = "\"event_id\":\"a-004\"";
        let copies = occurrences(&fs::read(&path).unwrap(), needle);
        assert!(!copies.is_empty(), "{needle} is in the file");
        for at in copies {
            overwrite(&path, at + 10, b"#");
        }
        let at = find_once(&path, "\"snapshot_id\":\"snap-1\"");
        overwrite(&path, at, b"[");
        let opened = RedbStore::open(&path).await.unwrap();
        let (t, a) = (tenant(), RunId::new("a").unwrap());
        expect_corrupt(opened.read(&t, &a, ReadQuery::all()).await);
        drop(opened);

        OneRecordAndOneSnapshotLost {
            a: &[2, 3, 5, 6],
            b: &[2, 3],
            kept: "snap-2",
            lost: (
                4,
                format!("{}: table events, key acme/prod:a seq 4", path.display()),
            ),
            lost_snapshot: "snap-1",
        }
        .check(&scan(&path).await.unwrap());
    }

    // A damaged leaf page of the events table: the entries on it are lost,
    // each named by the key `ids` gives it, and the entries after it are
    // read.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_damaged_page_costs_only_its_entries() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("store.redb");
        store(&path, 300).await;
        let page_size = 4096;
        let at = find_once(&path, "\"event_id\":\"a-150\"");
        let page = at / page_size;
        let bytes = fs::read(&path).unwrap();
        let on_page = numbered_on_page(&bytes, page, page_size, "a", 1..=300);
        assert!(on_page.len() > 1 && on_page.len() < 60, "{on_page:?}");
        // Not a leaf or branch page type.
        overwrite(&path, page * page_size, &[0x77]);

        let scan = scan(&path).await.unwrap();
        let expected: Vec<u64> = (2..=300).filter(|n| !on_page.contains(n)).collect();
        assert_eq!(seqs(&scan, "a"), expected, "{:?}", scan.losses);
        assert_eq!(seqs(&scan, "b"), [2, 3]);
        assert_eq!(scan.snapshots.len(), 2);
        assert_eq!(lost_records(&scan), on_page);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn missing_and_locked_files_are_refused() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("none.redb");
        let err = scan(&path).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
        assert!(!path.exists());
        let path = temp.path().join("store.redb");
        store(&path, 3).await;
        let open = RedbStore::open(&path).await.unwrap();
        let err = scan(&path).await.unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        drop(open);
    }
}
