//! File surgery for tests of file-backed stores (salvage, maintenance):
//! find a record's bytes in a store's file and damage them in place, then
//! see which seqs a salvage scan still reads.

use std::{fs, ops::RangeInclusive, path::Path};

use runstore_core::{
    EventLog, EventLogExt, EventRecord, RunStatus, SnapshotId, SnapshotRecord, SnapshotStore,
    salvage::{Loss, LossKind, SalvageScan},
};

use super::records;

/// The offset of the only occurrence of `needle` in the file at `path`.
///
/// # Panics
/// When the file cannot be read, or `needle` occurs in it other than once.
pub fn find_once(path: &Path, needle: &str) -> usize {
    let bytes = fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let found = occurrences(&bytes, needle);
    assert_eq!(found.len(), 1, "{needle} found at {found:?}");
    found[0]
}

/// The offsets of every occurrence of `needle` in `bytes`, ascending.
pub fn occurrences(bytes: &[u8], needle: &str) -> Vec<usize> {
    bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, window)| *window == needle.as_bytes())
        .map(|(at, _)| at)
        .collect()
}

/// Overwrites the bytes of the file at `path` from offset `at` with `with`,
/// keeping its length.
///
/// # Panics
/// When the file cannot be read or written, or `with` runs past its end.
pub fn overwrite(path: &Path, at: usize, with: &[u8]) {
    let mut bytes = fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    bytes[at..at + with.len()].copy_from_slice(with);
    fs::write(path, bytes).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
}

/// The seqs `scan` read for run `run`, in its order (none when it read no
/// stream of that run).
pub fn seqs(scan: &SalvageScan, run: &str) -> Vec<u64> {
    scan.streams
        .iter()
        .find(|stream| stream.key.run_id.as_str() == run)
        .map(|stream| stream.records.iter().map(|r| r.seq).collect())
        .unwrap_or_default()
}

/// The ids of the snapshots `scan` read, in its order.
pub fn snapshot_ids(scan: &SalvageScan) -> Vec<&str> {
    scan.snapshots
        .iter()
        .map(|s| s.snapshot_id.as_str())
        .collect()
}

/// Checks that `loss` is the loss of the record at `seq`, named by `place`.
///
/// # Panics
/// When it is not.
pub fn assert_record_loss(loss: &Loss, seq: u64, place: &str) {
    assert_eq!(loss.kind, LossKind::Record);
    assert_eq!(loss.seqs, [seq..=seq]);
    assert_eq!(loss.place, place);
}

/// Checks that `loss` is the loss of the snapshot `snapshot_id`.
///
/// # Panics
/// When it is not.
pub fn assert_snapshot_loss(loss: &Loss, snapshot_id: &str) {
    assert_eq!(loss.kind, LossKind::Snapshot);
    assert_eq!(loss.snapshot_id.as_deref(), Some(snapshot_id));
}

/// Event `n` of the damaged-store fixtures: tenant `acme/prod`, run `run`,
/// id `<run>-<n:03>` (so each id's bytes can be found in a file), type
/// `step`, occurring at `n`.
///
/// # Panics
/// When `run` is not a valid run id.
pub fn numbered(run: &str, n: u64) -> EventRecord {
    records::event(&records::acme(), run, &format!("{run}-{n:03}"), n)
}

/// The numbers among `numbers` whose [`numbered`] event of `run` has its
/// id on page `page` of `bytes`, a store file of `page_size`-byte pages.
pub fn numbered_on_page(
    bytes: &[u8],
    page: usize,
    page_size: usize,
    run: &str,
    numbers: RangeInclusive<u64>,
) -> Vec<u64> {
    let on_page = &bytes[page * page_size..(page + 1) * page_size];
    numbers
        .filter(|n| !occurrences(on_page, &format!("\"event_id\":\"{run}-{n:03}\"")).is_empty())
        .collect()
}

/// The seq of each loss of `scan`, in its order.
///
/// # Panics
/// When a loss is not of exactly one record.
pub fn lost_records(scan: &SalvageScan) -> Vec<u64> {
    scan.losses
        .iter()
        .map(|loss| {
            assert_eq!(loss.kind, LossKind::Record, "{loss}");
            assert_eq!(loss.seqs.len(), 1, "{loss}");
            *loss.seqs[0].start()
        })
        .collect()
}

/// Fills `store` as the damaged-store fixtures want it: `a`, the events of
/// run `a`, in one batch; each event of `b` (run `b`) on its own; then a
/// snapshot of run `a` for each `(id, seq)` of `snapshots`, created at
/// `seq`. All of tenant [`records::acme`].
///
/// # Panics
/// When a write fails.
pub async fn fill<S: EventLog + SnapshotStore + ?Sized>(
    store: &S,
    a: &[EventRecord],
    b: &[EventRecord],
    snapshots: &[(&str, u64)],
) {
    let t = records::acme();
    store
        .append_batch(&t, &records::run("a"), a, None)
        .await
        .expect("the fixture's batch");
    for event in b {
        store.append(&t, event).await.expect("the fixture's event");
    }
    for &(id, seq) in snapshots {
        let id = SnapshotId::new(id).unwrap_or_else(|err| panic!("snapshot id {id:?}: {err}"));
        let snapshot = SnapshotRecord::new(&t, records::run("a"), id, seq, seq, RunStatus::Running);
        store
            .put(&t, &snapshot)
            .await
            .expect("the fixture's snapshot");
    }
}

/// What a scan of the [`fill`] fixture must find after one record of run
/// `a` and one snapshot were damaged in the file.
#[derive(Debug)]
pub struct OneRecordAndOneSnapshotLost<'a> {
    /// The seqs read of run `a`, and of run `b`.
    pub a: &'a [u64],
    pub b: &'a [u64],
    /// The snapshot still read.
    pub kept: &'a str,
    /// The damaged record's seq, and the place its loss names.
    pub lost: (u64, String),
    /// The damaged snapshot.
    pub lost_snapshot: &'a str,
}

impl OneRecordAndOneSnapshotLost<'_> {
    /// Checks `scan` against it.
    ///
    /// # Panics
    /// When the scan found anything else.
    pub fn check(&self, scan: &SalvageScan) {
        assert_eq!(seqs(scan, "a"), self.a);
        assert_eq!(seqs(scan, "b"), self.b);
        assert_eq!(snapshot_ids(scan), [self.kept]);
        assert_eq!(scan.losses.len(), 2, "{:?}", scan.losses);
        assert_record_loss(&scan.losses[0], self.lost.0, &self.lost.1);
        assert_snapshot_loss(&scan.losses[1], self.lost_snapshot);
    }
}
