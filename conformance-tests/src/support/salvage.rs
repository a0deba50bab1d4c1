//! File surgery for tests of file-backed stores (salvage, maintenance):
//! find a record's bytes in a store's file and damage them in place, then
//! see which seqs a salvage scan still reads.

use std::{fs, path::Path};

use runstore_core::salvage::{Loss, LossKind, SalvageScan};

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
