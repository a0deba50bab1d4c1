//! Importing a directory in the reference layout:
//! `stateful_events.jsonl` and `stateful_snapshots/<run>/<snapshot>.json`.

use std::{
    collections::BTreeMap,
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
};

use runstore_core::{Error, EventRecord, Result, SnapshotRecord, Storage, StreamKey};

use crate::error::{cause, corrupt_line, io_at};

/// The reference's event log file.
pub const REFERENCE_EVENTS: &str = "stateful_events.jsonl";
/// The reference's snapshot directory.
pub const REFERENCE_SNAPSHOTS: &str = "stateful_snapshots";

/// What [`import_reference`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Records read from the reference log.
    pub records_read: usize,
    /// Records written (those the store already held are not counted).
    pub records_written: usize,
    /// Streams (tenant and run) the records belong to.
    pub streams: usize,
    /// Snapshots stored.
    pub snapshots: usize,
    /// Whether the log's last line was torn (incomplete, no newline) and
    /// skipped, as opening a store would drop it (CONTRACT §17).
    pub torn_tail_skipped: bool,
}

/// The reference log's records grouped by stream, ascending by seq, with
/// exact repeats (same seq and event id) removed.
type Grouped = BTreeMap<StreamKey, Vec<EventRecord>>;

fn read_reference_log(path: &Path, report: &mut ImportReport) -> Result<Grouped> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Grouped::new()),
        Err(err) => return Err(io_at("read", path, err)),
    };
    let mut grouped = Grouped::new();
    let complete = bytes.ends_with(b"\n");
    let lines: Vec<&[u8]> = bytes.split(|byte| *byte == b'\n').collect();
    let last = lines.len() - 1;
    for (at, line) in lines.into_iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line_no = at as u64 + 1;
        let record: EventRecord = match serde_json::from_slice(line) {
            Ok(record) => record,
            // A crash leaves a prefix of the last line: JSON that ends early.
            Err(err) if at == last && !complete && err.is_eof() => {
                report.torn_tail_skipped = true;
                continue;
            }
            Err(err) => return Err(corrupt_line(path, line_no, err)),
        };
        let tenant = record
            .scope
            .tenant()
            .map_err(|err| corrupt_line(path, line_no, cause(&err)))?;
        report.records_read += 1;
        grouped
            .entry(StreamKey::new(tenant, record.run_id.clone()))
            .or_default()
            .push(record);
    }
    for records in grouped.values_mut() {
        records.sort_by_key(|record| record.seq);
        records.dedup_by(|b, a| a.seq == b.seq && a.event_id == b.event_id);
    }
    Ok(grouped)
}

fn read_reference_snapshots(root: &Path) -> Result<Vec<SnapshotRecord>> {
    let mut files: Vec<PathBuf> = Vec::new();
    let runs = match fs::read_dir(root) {
        Ok(runs) => runs,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(io_at("list", root, err)),
    };
    for run in runs {
        let run = run.map_err(|err| io_at("list", root, err))?.path();
        if !run.is_dir() {
            continue;
        }
        for file in fs::read_dir(&run).map_err(|err| io_at("list", &run, err))? {
            let file = file.map_err(|err| io_at("list", &run, err))?.path();
            if file.extension().and_then(|ext| ext.to_str()) == Some("json") {
                files.push(file);
            }
        }
    }
    files.sort();
    files
        .iter()
        .map(|file| {
            let bytes = fs::read(file).map_err(|err| io_at("read", file, err))?;
            // The core's Deserialize hydrates legacy records (CONTRACT §15).
            serde_json::from_slice(&bytes).map_err(|err| Error::corrupt(file.display(), err))
        })
        .collect()
}

/// Imports a directory in the reference layout into `store`: every event of
/// `stateful_events.jsonl`, grouped by tenant (`scope.tenant_context`) and
/// run, with seqs, compaction markers and compacted ids unchanged (through
/// [`EventLog::import_stream`](runstore_core::EventLog::import_stream)), and
/// every snapshot under `stateful_snapshots/`, legacy ones hydrated
/// (CONTRACT §15).
///
/// Importing the same directory twice writes nothing new. A torn last line
/// of the log is skipped and reported; any other unreadable line is
/// `Corrupt`, never skipped (CONTRACT §17).
///
/// # Errors
/// `Corrupt` for an unreadable record or snapshot; `InvalidInput` when a
/// stream's records are not strictly ascending by seq or disagree with what
/// `store` holds; whatever `store` returns.
pub async fn import_reference(dir: impl AsRef<Path>, store: &dyn Storage) -> Result<ImportReport> {
    let dir = dir.as_ref().to_path_buf();
    let (report, grouped, snapshots) = runstore_fs::run_blocking(crate::BACKEND, move || {
        let mut report = ImportReport::default();
        let grouped = read_reference_log(&dir.join(REFERENCE_EVENTS), &mut report)?;
        let snapshots = read_reference_snapshots(&dir.join(REFERENCE_SNAPSHOTS))?;
        Ok::<_, Error>((report, grouped, snapshots))
    })
    .await?;
    let mut report = report;
    report.streams = grouped.len();
    for (stream, records) in &grouped {
        report.records_written += store
            .import_stream(&stream.tenant, &stream.run_id, records)
            .await?;
    }
    for snapshot in &snapshots {
        let tenant = snapshot.scope.tenant().map_err(|err| {
            Error::corrupt(
                format!(
                    "snapshot {:?} of run {:?}",
                    snapshot.snapshot_id.as_str(),
                    snapshot.run_id.as_str()
                ),
                cause(&err),
            )
        })?;
        store.put(&tenant, snapshot).await?;
        report.snapshots += 1;
    }
    Ok(report)
}
