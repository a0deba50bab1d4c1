//! Snapshots: a log per run at `snapshots/<tenant>/<run>/snapshots.jsonl`
//! (names from [`crate::layout`]), one snapshot per line, with an in-memory
//! index of each stream's snapshots and where each one's current line is,
//! built at open (CONTRACT §12-§15).
//!
//! A put writes one line after the log's last record and syncs that file's
//! data: one `fdatasync`, as an event append costs (the first put of a run
//! also syncs the new directory entries). The log is grown ahead of the
//! puts with zeros ([`crate::runlog`]), so that most puts overwrite
//! allocated space and their sync carries no size change. A replacement
//! writes a line too; the index points at the newest line, and open lets
//! later lines win. A prune rewrites the log without the pruned lines
//! (atomically: temp file, sync, rename, directory sync). What a crash
//! leaves of a put can only follow the last record (each put syncs before
//! the stream's next put starts); open cuts it off.
//!
//! Stores written before the log kept one file per snapshot
//! (`snapshots/<tenant>/<run>/<snapshot>.json`, replaced atomically). Open
//! still indexes those files; a line of the log replaces a file of the same
//! key (the put that wrote it removes the file afterwards), and prune
//! deletes them as before.
//!
//! [`Snapshots`] holds the files and the index; compaction reads each
//! stream's floor from it. [`SnapshotStore`] for [`JsonlStore`], at the end
//! of this file, checks a put against the store's limits and runs every
//! call on a blocking task: snapshots do not go through the writer thread.

use std::{
    collections::{BTreeMap, HashMap, hash_map::Entry},
    fs,
    hash::BuildHasher,
    io::ErrorKind,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use async_trait::async_trait;
use runstore_core::{
    Durability, Error, MaintenanceReport, Result, RunId, RunStatus, SnapshotId, SnapshotRecord,
    SnapshotStore, StreamKey, Tenant, raw::snapshots::keep_newest, raw::snapshots::prune_selection,
    validate::check_clock,
};
use runstore_fs::{create_dirs, write_atomic};

use crate::{
    JsonlStore,
    error::{cause, io_at},
    fileio::{Io, read_exact_at},
    layout::{self, SNAPSHOT_LOG, SNAPSHOT_SUFFIX, TMP_SUFFIX},
    runlog::{self, After},
};

/// What the index keeps of a snapshot: its place in `snapshot_order`, and
/// where its record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    seq: u64,
    created_at_ms: u64,
    place: Place,
}

/// Where a snapshot's current record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// A file of its own (the layout before the log).
    File,
    /// A line of the run's log: `len` bytes (the newline included) at
    /// `offset`.
    Log { offset: u64, len: u64 },
}

type StreamSnapshots = BTreeMap<SnapshotId, Meta>;

/// What the handle knows of a run log's bytes on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LogSpace {
    /// Where its records end: the next put's line goes here.
    end: u64,
    /// The file's length (records, then zeros: `len - end` bytes of spare
    /// space). `None` after a failed put that could not cut the log back
    /// to `end`: the next put cuts it first.
    len: Option<u64>,
    /// Whether this handle has synced the log's directory entry. A log
    /// found at open may have been created by a process killed before it
    /// synced the entry: the first put of this handle syncs it then.
    entry_synced: bool,
}

/// The logs of the streams of one stripe, by stream.
type Logs = HashMap<StreamKey, LogSpace>;

/// The snapshot side of a store.
#[derive(Debug)]
pub(crate) struct Snapshots {
    root: PathBuf,
    durability: Durability,
    io: Io,
    index: Mutex<BTreeMap<StreamKey, StreamSnapshots>>,
    /// Writers of one stream take its stripe, so that a stream's file
    /// changes and index updates happen in the same order while other
    /// streams' puts (and their syncs) proceed in parallel. A stripe holds
    /// its streams' [`LogSpace`]s. Lock order: stripes ascending, then
    /// `index`.
    stripes: Vec<Mutex<Logs>>,
    hasher: std::hash::RandomState,
}

/// Stripes of per-stream writer locks.
const STRIPES: usize = 64;

/// The stripe of a stream.
fn stripe_of(hasher: &impl BuildHasher, tenant: &Tenant, run_id: &RunId) -> usize {
    usize::try_from(hasher.hash_one((tenant, run_id)) % STRIPES as u64).expect("below STRIPES")
}

/// A stream's snapshot ids in `snapshot_order`, oldest first.
fn ordered(snapshots: &StreamSnapshots) -> Vec<(&SnapshotId, Meta)> {
    let mut list: Vec<(&SnapshotId, Meta)> = snapshots.iter().map(|(id, m)| (id, *m)).collect();
    list.sort_by(|(a_id, a), (b_id, b)| {
        (a.seq, a.created_at_ms, a_id.as_str()).cmp(&(b.seq, b.created_at_ms, b_id.as_str()))
    });
    list
}

fn read_snapshot(path: &Path) -> Result<Option<SnapshotRecord>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(io_at("read snapshot", path, err)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|err| Error::corrupt(path.display(), err))
}

/// The snapshot on the line of `len` bytes at `offset` of the log at
/// `path`; `None` when the log is gone (pruned away).
fn read_line(path: &Path, offset: u64, len: u64) -> Result<Option<SnapshotRecord>> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(io_at("read snapshot", path, err)),
    };
    let mut line = vec![0; usize::try_from(len).map_err(Error::invalid)?];
    read_exact_at(&file, &mut line, offset).map_err(|err| io_at("read snapshot", path, err))?;
    let record = line.strip_suffix(b"\n").unwrap_or(&line);
    serde_json::from_slice(record).map(Some).map_err(|err| {
        Error::corrupt(
            path.display(),
            format!("the line at offset {offset}: {err}"),
        )
    })
}

/// Indexes the records of the run log at `log` (in `run_dir`): each
/// record's snapshot replaces what the index had for its key. What a crash
/// left of a put after the records (it never returned) is cut off, durably
/// with [`Durability::Durable`]. Answers the log's stream (`None` when it
/// holds no record) and its space.
///
/// # Errors
/// `Corrupt` for a record that does not parse or belongs to another run,
/// and for bytes after the records that no crash of one put leaves; `Io`.
fn index_log(
    root: &Path,
    run_dir: &Path,
    log: &Path,
    durability: Durability,
    io: &Io,
    index: &mut BTreeMap<StreamKey, StreamSnapshots>,
) -> Result<(Option<StreamKey>, LogSpace)> {
    let bytes = fs::read(log).map_err(|err| io_at("read", log, err))?;
    let scan = runlog::scan(&bytes);
    let mut stream = None;
    for record in scan.records {
        let start = record.start;
        let bad = |reason: String| {
            Error::corrupt(
                log.display(),
                format!("the line at offset {start}: {reason}"),
            )
        };
        let snapshot: SnapshotRecord =
            serde_json::from_slice(&bytes[record.clone()]).map_err(|err| bad(err.to_string()))?;
        let place = Place::Log {
            offset: start as u64,
            len: (record.end + 1 - start) as u64,
        };
        stream = Some(index_found(root, snapshot, place, run_dir, index, bad)?);
    }
    let space = settle(io, log, &bytes, scan.end, scan.after, durability)?;
    Ok((stream, space))
}

/// The space of the log at `log`, whose `bytes` hold records up to `end`
/// and then `after`: a torn put is cut off (the cut synced with
/// [`Durability::Durable`]), damage is `Corrupt`.
fn settle(
    io: &Io,
    log: &Path,
    bytes: &[u8],
    end: usize,
    after: After,
    durability: Durability,
) -> Result<LogSpace> {
    let end = end as u64;
    let len = match after {
        After::Spare => bytes.len() as u64,
        After::Torn => {
            let file = io
                .open(log, fs::OpenOptions::new().write(true))
                .map_err(|err| io_at("open", log, err))?;
            io.set_len(&file, log, end)
                .map_err(|err| io_at("cut the torn line of", log, err))?;
            if durability == Durability::Durable {
                io.sync_data(&file, log)
                    .map_err(|err| io_at("sync", log, err))?;
            }
            end
        }
        After::Damaged { at } => {
            return Err(Error::corrupt(
                log.display(),
                format!(
                    "the bytes after the last record at offset {end} are no put a crash \
                     interrupted: a newline at offset {at} is followed by more"
                ),
            ));
        }
    };
    Ok(LogSpace {
        end,
        len: Some(len),
        entry_synced: false,
    })
}

/// Indexes `snapshot`, found at `found` (its file, or the run directory of
/// the log it is a line of) and stored at `place`; `bad` words an error
/// about it. Answers its stream.
///
/// # Errors
/// `Corrupt` when its tenant context is invalid or it belongs elsewhere.
fn index_found(
    root: &Path,
    snapshot: SnapshotRecord,
    place: Place,
    found: &Path,
    index: &mut BTreeMap<StreamKey, StreamSnapshots>,
    bad: impl Fn(String) -> Error,
) -> Result<StreamKey> {
    let tenant = snapshot.scope.tenant().map_err(|err| bad(cause(&err)))?;
    let mut expected = root
        .join(layout::tenant_dir(&tenant))
        .join(layout::run_dir(&snapshot.run_id));
    if place == Place::File {
        expected.push(layout::snapshot_file(&snapshot.snapshot_id));
    }
    if expected != found {
        return Err(bad(format!(
            "holds snapshot {:?} of {tenant}:{}, which belongs at {}",
            snapshot.snapshot_id.as_str(),
            snapshot.run_id,
            expected.display()
        )));
    }
    let stream = StreamKey::new(tenant, snapshot.run_id);
    index.entry(stream.clone()).or_default().insert(
        snapshot.snapshot_id,
        Meta {
            seq: snapshot.seq,
            created_at_ms: snapshot.created_at_ms,
            place,
        },
    );
    Ok(stream)
}

impl Snapshots {
    /// Indexes the snapshot tree under `root`, removing temp files a crash
    /// left behind. With [`Durability::Durable`], syncs `root` and every
    /// tenant directory, so that the directories a put relies on are on
    /// disk even if a killed process created them and never synced them.
    ///
    /// # Errors
    /// `Corrupt` for an unreadable snapshot or one whose file name does not
    /// match its record; `Io`.
    pub(crate) fn open(root: PathBuf, durability: Durability, io: Io) -> Result<Self> {
        create_dirs(&io, &root, durability).map_err(|err| io_at("create", &root, err))?;
        let mut index: BTreeMap<StreamKey, StreamSnapshots> = BTreeMap::new();
        let hasher = std::hash::RandomState::new();
        let mut stripes: Vec<Logs> = (0..STRIPES).map(|_| Logs::new()).collect();
        for tenant_dir in list_dir(&root)? {
            if durability == Durability::Durable && tenant_dir.is_dir() {
                io.sync_dir(&tenant_dir)
                    .map_err(|err| io_at("sync", &tenant_dir, err))?;
            }
            for run_dir in list_dir(&tenant_dir)? {
                let mut log = None;
                for file in list_dir(&run_dir)? {
                    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if name == SNAPSHOT_LOG {
                        log = Some(file);
                        continue;
                    }
                    if name.ends_with(TMP_SUFFIX) {
                        io.remove_file(&file)
                            .map_err(|err| io_at("remove temp file", &file, err))?;
                        continue;
                    }
                    if !name.ends_with(SNAPSHOT_SUFFIX) {
                        continue;
                    }
                    let Some(snapshot) = read_snapshot(&file)? else {
                        continue;
                    };
                    let bad = |reason: String| Error::corrupt(file.display(), reason);
                    index_found(&root, snapshot, Place::File, &file, &mut index, bad)?;
                }
                // The log's lines are newer than any file of the same key.
                // A log without a record (what a crash left of a run's
                // first put) gets its space found by its next put.
                if let Some(log) = log
                    && let (Some(stream), space) =
                        index_log(&root, &run_dir, &log, durability, &io, &mut index)?
                {
                    let at = stripe_of(&hasher, &stream.tenant, &stream.run_id);
                    stripes[at].insert(stream, space);
                }
            }
        }
        if durability == Durability::Durable {
            io.sync_dir(&root)
                .map_err(|err| io_at("sync", &root, err))?;
        }
        Ok(Self {
            root,
            durability,
            io,
            index: Mutex::new(index),
            stripes: stripes.into_iter().map(Mutex::new).collect(),
            hasher,
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<StreamKey, StreamSnapshots>> {
        // Every change to the map is a single insert or remove made after
        // its file operation succeeded, so a panic cannot leave it torn.
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stripe(&self, tenant: &Tenant, run_id: &RunId) -> MutexGuard<'_, Logs> {
        // A log's space changes only after the file operation it describes
        // succeeded (or, after a failed one, to what is known of the file),
        // so a panic cannot leave it wrong.
        self.stripes[stripe_of(&self.hasher, tenant, run_id)]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn run_dir(&self, tenant: &Tenant, run_id: &RunId) -> PathBuf {
        self.root
            .join(layout::tenant_dir(tenant))
            .join(layout::run_dir(run_id))
    }

    /// Where the index has `snapshot_id` of the stream now.
    fn place_of(&self, tenant: &Tenant, run_id: &RunId, snapshot_id: &SnapshotId) -> Option<Place> {
        self.lock()
            .get(&StreamKey::new(tenant.clone(), run_id.clone()))?
            .get(snapshot_id)
            .map(|meta| meta.place)
    }

    /// The snapshot with this key, read from where the index has it. A
    /// prune may rewrite the log between the look-up and the read: a line
    /// that is not the snapshot asked for is looked up again, and the
    /// read repeated while its place keeps changing.
    fn read_checked(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        snapshot_id: &SnapshotId,
    ) -> Result<Option<SnapshotRecord>> {
        let dir = self.run_dir(tenant, run_id);
        let mut place = self.place_of(tenant, run_id, snapshot_id);
        loop {
            let read = match place {
                None => return Ok(None),
                Some(Place::File) => read_snapshot(&dir.join(layout::snapshot_file(snapshot_id))),
                Some(Place::Log { offset, len }) => read_line(&dir.join(SNAPSHOT_LOG), offset, len),
            };
            // A hashed file name could in principle be shared by two ids:
            // the record itself decides.
            let found = match read {
                Ok(found) => found.filter(|snapshot| {
                    snapshot.snapshot_id == *snapshot_id
                        && snapshot.run_id == *run_id
                        && tenant.matches(&snapshot.scope.tenant_context)
                }),
                Err(err) => {
                    let now = self.place_of(tenant, run_id, snapshot_id);
                    if now != place {
                        place = now;
                        continue;
                    }
                    return Err(err);
                }
            };
            if found.is_none() && matches!(place, Some(Place::Log { .. })) {
                let now = self.place_of(tenant, run_id, snapshot_id);
                if now != place {
                    place = now;
                    continue;
                }
            }
            return Ok(found);
        }
    }

    /// Stores a snapshot, replacing one with the same key (CONTRACT §12).
    pub(crate) fn put(&self, tenant: &Tenant, mut snapshot: SnapshotRecord) -> Result<()> {
        tenant.stamp(&mut snapshot.scope.tenant_context);
        let mut bytes = serde_json::to_vec(&snapshot).map_err(Error::invalid)?;
        bytes.push(b'\n');
        let dir = self.run_dir(tenant, &snapshot.run_id);
        let log = dir.join(SNAPSHOT_LOG);
        let stream = StreamKey::new(tenant.clone(), snapshot.run_id.clone());
        let mut logs = self.stripe(tenant, &snapshot.run_id);
        let space = match logs.entry(stream.clone()) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(unknown) => unknown.insert(self.find_space(&dir, &log)?),
        };
        let offset = match self.append(space, &dir, &log, &bytes) {
            Ok(offset) => offset,
            Err(err) => {
                if err.kind() == ErrorKind::NotFound {
                    // The log was removed behind the handle: the next put
                    // starts a new one.
                    logs.remove(&stream);
                }
                return Err(io_at("append snapshot", &log, err));
            }
        };
        let replaced = self.lock().entry(stream).or_default().insert(
            snapshot.snapshot_id.clone(),
            Meta {
                seq: snapshot.seq,
                created_at_ms: snapshot.created_at_ms,
                place: Place::Log {
                    offset,
                    len: bytes.len() as u64,
                },
            },
        );
        if replaced.is_some_and(|meta| meta.place == Place::File) {
            // The line is durable and wins over the file at open; the file
            // goes, so that a later prune of the line cannot bring it back.
            let file = dir.join(layout::snapshot_file(&snapshot.snapshot_id));
            match self.io.remove_file(&file) {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(io_at("remove replaced snapshot", &file, err)),
            }
            if self.durability == Durability::Durable {
                self.io
                    .sync_dir(&dir)
                    .map_err(|err| io_at("sync", &dir, err))?;
            }
        }
        Ok(())
    }

    /// The space of the run log at `log` (in `dir`) when the handle has no
    /// record of it: a new log (its directories created now), or one that
    /// open found without a record, whose torn put is cut off here.
    fn find_space(&self, dir: &Path, log: &Path) -> Result<LogSpace> {
        create_dirs(&self.io, dir, self.durability).map_err(|err| io_at("create", dir, err))?;
        match fs::read(log) {
            Ok(bytes) => {
                let scan = runlog::scan(&bytes);
                settle(&self.io, log, &bytes, scan.end, scan.after, self.durability)
            }
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(LogSpace {
                end: 0,
                len: Some(0),
                entry_synced: false,
            }),
            Err(err) => Err(io_at("read", log, err)),
        }
    }

    /// Writes `line` after the records of the run's log at `log` (in
    /// `dir`), whose space is `space`, and, durably, syncs it; returns the
    /// offset it starts at. A failed write or sync cuts the log back to its
    /// records, so that no torn line stays where the next put writes. The
    /// caller holds the stream's stripe.
    fn append(
        &self,
        space: &mut LogSpace,
        dir: &Path,
        log: &Path,
        line: &[u8],
    ) -> std::io::Result<u64> {
        let offset = space.end;
        // Only a new log is created: one removed behind the handle is not
        // silently replaced by a file with a hole where its records were.
        let new = offset == 0 && space.len == Some(0);
        let file = self
            .io
            .open(log, fs::OpenOptions::new().write(true).create(new))?;
        if let Err(err) = self.write_line(&file, space, dir, log, line) {
            space.len = self.io.set_len(&file, log, offset).ok().map(|()| offset);
            return Err(err);
        }
        space.end = offset + line.len() as u64;
        Ok(offset)
    }

    /// The steps of [`Self::append`] that can fail on the open `file`:
    /// writes the line, grows the log when `line` did not fit in its spare
    /// space (zeros after it up to the next [`runlog::allocation`]
    /// boundary, synced with it), syncs. With [`Durability::Relaxed`] the
    /// line is appended to the records alone: no spare space, no sync.
    fn write_line(
        &self,
        file: &fs::File,
        space: &mut LogSpace,
        dir: &Path,
        log: &Path,
        line: &[u8],
    ) -> std::io::Result<()> {
        let len = match space.len {
            Some(len) => len,
            None => {
                // An earlier put failed and could not cut the log back.
                self.io.set_len(file, log, space.end)?;
                space.end
            }
        };
        space.len = Some(len);
        let need = space.end + line.len() as u64;
        if self.durability == Durability::Relaxed {
            // Unsynced puts only ever append. Written over spare space,
            // several of them could reach the disk in any order, and a
            // power loss could leave a line with a hole followed by whole
            // lines: damage to open, not a torn put. So a relaxed handle
            // cuts away spare space a durable one left before its first put.
            if len > space.end {
                self.io.set_len(file, log, space.end)?;
            }
            self.io.write_all_at(file, log, line, space.end)?;
            space.len = Some(need);
            return Ok(());
        }
        self.io.write_all_at(file, log, line, space.end)?;
        if need > len {
            // The zeros go after the line; the line covers its own bytes.
            let grown = runlog::allocation(need);
            let zeros = vec![0; usize::try_from(grown - need).map_err(std::io::Error::other)?];
            self.io.write_all_at(file, log, &zeros, need)?;
            space.len = Some(grown);
        }
        self.io.sync_data(file, log)?;
        if !space.entry_synced {
            // A new log, or one whose entry may never have been synced:
            // its directory entry must survive too.
            self.io.sync_dir(dir)?;
            space.entry_synced = true;
        }
        Ok(())
    }

    /// The snapshot with this key (CONTRACT §13), legacy records hydrated
    /// (CONTRACT §15).
    pub(crate) fn get(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        snapshot_id: &SnapshotId,
    ) -> Result<Option<SnapshotRecord>> {
        self.read_checked(tenant, run_id, snapshot_id)
    }

    /// The stream's snapshots in `snapshot_order`, the newest `limit` kept
    /// (CONTRACT §13).
    pub(crate) fn list(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        limit: Option<usize>,
    ) -> Result<Vec<SnapshotRecord>> {
        // The ids are taken under the index lock and the files read after
        // it is released; a snapshot pruned in between is skipped, as if
        // the prune had come first.
        let wanted: Vec<SnapshotId> = {
            let index = self.lock();
            let Some(snapshots) = index.get(&StreamKey::new(tenant.clone(), run_id.clone())) else {
                return Ok(Vec::new());
            };
            keep_newest(ordered(snapshots), limit)
                .into_iter()
                .map(|(snapshot_id, _)| snapshot_id.clone())
                .collect()
        };
        let mut list = Vec::with_capacity(wanted.len());
        for snapshot_id in &wanted {
            if let Some(snapshot) = self.read_checked(tenant, run_id, snapshot_id)? {
                list.push(snapshot);
            }
        }
        Ok(list)
    }

    /// Deletes snapshots older than the retention, keeping the newest
    /// `keep_last_per_run` of each stream (CONTRACT §14). Each stream is
    /// pruned on its own: one whose files cannot be deleted or synced is
    /// reported with what was deleted before the failure, and the others
    /// are pruned (CONTRACT §25).
    pub(crate) fn prune(
        &self,
        retention_ms: u64,
        keep_last_per_run: usize,
        now_ms: u64,
    ) -> MaintenanceReport {
        let mut report = MaintenanceReport::default();
        if retention_ms == 0 {
            return report;
        }
        let mut all: Vec<MutexGuard<'_, Logs>> = self
            .stripes
            .iter()
            .map(|stripe| {
                stripe
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            })
            .collect();
        // The stripes keep every put out until the end; the index lock is
        // held only to choose and, after each stream's deletes, to forget.
        let mut doomed: Vec<(StreamKey, Vec<SnapshotId>)> = Vec::new();
        for (stream, snapshots) in self.lock().iter() {
            let order = ordered(snapshots);
            // `prune_selection` decides by order and `created_at_ms` only;
            // stand-ins carry exactly those, so no file is read.
            let stand_ins: Vec<SnapshotRecord> = order
                .iter()
                .map(|(id, meta)| {
                    SnapshotRecord::new(
                        &stream.tenant,
                        stream.run_id.clone(),
                        (*id).clone(),
                        meta.seq,
                        meta.created_at_ms,
                        RunStatus::Completed,
                    )
                })
                .collect();
            let ids: Vec<SnapshotId> =
                prune_selection(&stand_ins, retention_ms, keep_last_per_run, now_ms)
                    .into_iter()
                    .map(|at| order[at].0.clone())
                    .collect();
            if !ids.is_empty() {
                doomed.push((stream.clone(), ids));
            }
        }
        // `doomed` follows the index's order: ascending by stream.
        for (stream, ids) in doomed {
            let logs = &mut all[stripe_of(&self.hasher, &stream.tenant, &stream.run_id)];
            let (deleted, outcome) = self.delete(logs, &stream, ids);
            self.forget(&stream, &deleted);
            report.record(&stream, Ok(deleted.len()));
            if let Err(err) = outcome {
                report.record(&stream, Err(err));
            }
        }
        report
    }

    /// Drops `deleted` of `stream` from the index, and the stream when
    /// none is left.
    fn forget(&self, stream: &StreamKey, deleted: &[SnapshotId]) {
        let mut index = self.lock();
        if let Some(snapshots) = index.get_mut(stream) {
            for snapshot_id in deleted {
                snapshots.remove(snapshot_id);
            }
            if snapshots.is_empty() {
                index.remove(stream);
            }
        }
    }

    /// Deletes `ids` of `stream`: the lines of the run log by one rewrite
    /// of the log without them (all or none), then the files of the layout
    /// before the log, in order. Returns the ids that are gone and whether
    /// all of them are, durably. The caller holds the stream's stripe,
    /// `logs`.
    fn delete(
        &self,
        logs: &mut Logs,
        stream: &StreamKey,
        ids: Vec<SnapshotId>,
    ) -> (Vec<SnapshotId>, Result<()>) {
        let dir = self.run_dir(&stream.tenant, &stream.run_id);
        let (lines, files): (Vec<SnapshotId>, Vec<SnapshotId>) = {
            let index = self.lock();
            let metas = index.get(stream);
            ids.into_iter().partition(|id| {
                metas
                    .and_then(|metas| metas.get(id))
                    .is_some_and(|meta| meta.place != Place::File)
            })
        };
        let mut deleted = Vec::new();
        if !lines.is_empty() {
            if let Err(err) = self.rewrite_log(logs, stream, &dir, &lines) {
                return (deleted, Err(err));
            }
            // The new log is in place without them: gone, and durably so
            // once the directory sync below succeeds.
            deleted.extend(lines);
        }
        for snapshot_id in files {
            let path = dir.join(layout::snapshot_file(&snapshot_id));
            match self.io.remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return (deleted, Err(io_at("delete snapshot", &path, err))),
            }
            deleted.push(snapshot_id);
        }
        if self.durability == Durability::Durable {
            if let Err(err) = self.io.sync_dir(&dir) {
                return (deleted, Err(io_at("sync", &dir, err)));
            }
            if let Some(space) = logs.get_mut(stream) {
                space.entry_synced = true;
            }
        }
        (deleted, Ok(()))
    }

    /// Replaces the run log of `stream` (in `dir`) by one without the lines
    /// of `doomed` (atomically; removed when nothing is left), and points
    /// the index at the kept lines' new offsets. The new log has no spare
    /// space; the stream's space in `logs` follows it.
    ///
    /// The rename is made durable by the caller's directory sync
    /// ([`Snapshots::delete`]); the index follows the new log as soon as it
    /// is in place, so that should that sync fail, the kept lines are still
    /// read at their new offsets, not at the old log's.
    fn rewrite_log(
        &self,
        logs: &mut Logs,
        stream: &StreamKey,
        dir: &Path,
        doomed: &[SnapshotId],
    ) -> Result<()> {
        let log = dir.join(SNAPSHOT_LOG);
        let mut kept: Vec<(SnapshotId, u64, u64)> = self
            .lock()
            .get(stream)
            .into_iter()
            .flatten()
            .filter_map(|(id, meta)| match meta.place {
                Place::Log { offset, len } if !doomed.contains(id) => {
                    Some((id.clone(), offset, len))
                }
                _ => None,
            })
            .collect();
        kept.sort_by_key(|(_, offset, _)| *offset);
        let mut bytes = Vec::new();
        let mut places = Vec::with_capacity(kept.len());
        if !kept.is_empty() {
            let file = fs::File::open(&log).map_err(|err| io_at("read", &log, err))?;
            for (id, offset, len) in kept {
                let at = bytes.len();
                bytes.resize(at + usize::try_from(len).map_err(Error::invalid)?, 0);
                read_exact_at(&file, &mut bytes[at..], offset)
                    .map_err(|err| io_at("read", &log, err))?;
                places.push((
                    id,
                    Place::Log {
                        offset: at as u64,
                        len,
                    },
                ));
            }
        }
        // Until the new log is in place, the handle knows nothing of its
        // space: after a failure the next put finds it in the file.
        logs.remove(stream);
        if bytes.is_empty() {
            match self.io.remove_file(&log) {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(io_at("remove", &log, err)),
            }
            return Ok(());
        }
        // Up to the rename: the caller syncs the directory.
        write_atomic(&self.io, dir, SNAPSHOT_LOG, &bytes, Durability::Relaxed)
            .map_err(|err| io_at("rewrite", &log, err))?;
        let end = bytes.len() as u64;
        logs.insert(
            stream.clone(),
            LogSpace {
                end,
                len: Some(end),
                // Until the caller's sync of the directory succeeds.
                entry_synced: false,
            },
        );
        if let Some(metas) = self.lock().get_mut(stream) {
            for (id, place) in places {
                if let Some(meta) = metas.get_mut(&id) {
                    meta.place = place;
                }
            }
        }
        Ok(())
    }

    /// Deletes every snapshot of `tenant`'s `run_id` (CONTRACT §27): its
    /// run log and any files of the layout before the log, then the run's
    /// directory when nothing else is in it. Answers how many.
    pub(crate) fn delete_run(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
        let mut logs = self.stripe(tenant, run_id);
        let stream = StreamKey::new(tenant.clone(), run_id.clone());
        let ids: Vec<SnapshotId> = self
            .lock()
            .get(&stream)
            .map(|snapshots| snapshots.keys().cloned().collect())
            .unwrap_or_default();
        if ids.is_empty() {
            return Ok(0);
        }
        let (deleted, outcome) = self.delete(&mut logs, &stream, ids);
        self.forget(&stream, &deleted);
        outcome?;
        // The directory's name spells the run id: it goes too, and with it
        // the tenant's directory when that was its last run.
        let dir = self.run_dir(tenant, run_id);
        let mut removed = remove_empty_dir(&self.io, &dir)?;
        if removed && let Some(tenant_dir) = dir.parent() {
            removed = remove_empty_dir(&self.io, tenant_dir)?;
            if removed {
                let parent = tenant_dir.parent().unwrap_or(&self.root);
                self.sync_dir(parent)?;
            } else {
                self.sync_dir(tenant_dir)?;
            }
        }
        Ok(deleted.len())
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        if self.durability == Durability::Durable {
            self.io
                .sync_dir(dir)
                .map_err(|err| io_at("sync", dir, err))?;
        }
        Ok(())
    }

    /// Every stream with a snapshot, ascending.
    pub(crate) fn streams(&self) -> Vec<StreamKey> {
        self.lock().keys().cloned().collect()
    }

    /// Each stream's compaction floor: the seq of its newest snapshot
    /// (CONTRACT §8).
    pub(crate) fn floors(&self) -> HashMap<StreamKey, u64> {
        self.lock()
            .iter()
            .filter_map(|(stream, snapshots)| {
                ordered(snapshots)
                    .last()
                    .map(|(_, meta)| (stream.clone(), meta.seq))
            })
            .collect()
    }
}

/// Removes `dir` if it is empty; answers whether it is gone (also when it
/// was not there).
fn remove_empty_dir(io: &Io, dir: &Path) -> Result<bool> {
    match io.remove_dir(dir) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(true),
        Err(err) if err.kind() == ErrorKind::DirectoryNotEmpty => Ok(false),
        Err(err) => Err(io_at("remove", dir, err)),
    }
}

/// The entries of `dir` (none if it does not exist), sorted.
fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound || err.kind() == ErrorKind::NotADirectory => {
            return Ok(Vec::new());
        }
        Err(err) => return Err(io_at("list", dir, err)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        paths.push(entry.map_err(|err| io_at("list", dir, err))?.path());
    }
    paths.sort();
    Ok(paths)
}

#[async_trait]
impl SnapshotStore for JsonlStore {
    async fn put(&self, tenant: &Tenant, snapshot: &SnapshotRecord) -> Result<()> {
        // CONTRACT §21: checked before the file is written.
        self.inner.shared.limits.check_snapshot(snapshot)?;
        let (tenant, snapshot) = (tenant.clone(), snapshot.clone());
        self.blocking(move |shared| shared.snapshots.put(&tenant, snapshot))
            .await
    }

    async fn get(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        snapshot_id: &SnapshotId,
    ) -> Result<Option<SnapshotRecord>> {
        let (tenant, run_id, snapshot_id) = (tenant.clone(), run_id.clone(), snapshot_id.clone());
        self.blocking(move |shared| shared.snapshots.get(&tenant, &run_id, &snapshot_id))
            .await
    }

    async fn list(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        limit: Option<usize>,
    ) -> Result<Vec<SnapshotRecord>> {
        if limit == Some(1) {
            // `latest`: one read of one line, most often from the page
            // cache, is cheaper on the calling task than the hand-off to the
            // blocking pool and back (which cost more than the read itself).
            return self.inner.shared.snapshots.list(tenant, run_id, limit);
        }
        let (tenant, run_id) = (tenant.clone(), run_id.clone());
        self.blocking(move |shared| shared.snapshots.list(&tenant, &run_id, limit))
            .await
    }

    async fn prune(
        &self,
        retention_ms: u64,
        keep_last_per_run: usize,
        now_ms: u64,
    ) -> Result<MaintenanceReport> {
        check_clock(now_ms)?;
        self.blocking(move |shared| {
            Ok(shared
                .snapshots
                .prune(retention_ms, keep_last_per_run, now_ms))
        })
        .await
    }

    async fn snapshot_streams(&self) -> Result<Vec<StreamKey>> {
        self.blocking(|shared| Ok(shared.snapshots.streams())).await
    }

    async fn delete_snapshots(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
        let (tenant, run_id) = (tenant.clone(), run_id.clone());
        self.blocking(move |shared| shared.snapshots.delete_run(&tenant, &run_id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn snapshot(id: &str, seq: u64, note: &str) -> SnapshotRecord {
        SnapshotRecord::new(
            &Tenant::local(),
            RunId::new("run").unwrap(),
            SnapshotId::new(id).unwrap(),
            seq,
            seq,
            RunStatus::Running,
        )
        .with_checkpoint(serde_json::json!({ "note": note }))
    }

    fn open(root: &Path) -> Snapshots {
        Snapshots::open(root.to_path_buf(), Durability::Durable, Io::default()).unwrap()
    }

    fn run_dir(root: &Path) -> PathBuf {
        root.join(layout::tenant_dir(&Tenant::local()))
            .join(layout::run_dir(&RunId::new("run").unwrap()))
    }

    fn notes(snapshots: &Snapshots) -> Vec<(String, String)> {
        let run = RunId::new("run").unwrap();
        snapshots
            .list(&Tenant::local(), &run, None)
            .unwrap()
            .into_iter()
            .map(|s| {
                let note = s.checkpoint.unwrap()["note"].as_str().unwrap().to_owned();
                (s.snapshot_id.as_str().to_owned(), note)
            })
            .collect()
    }

    /// The notes of the store at `root` after `snapshots` is dropped and
    /// the store opened again.
    fn reopened(snapshots: Snapshots, root: &Path) -> Vec<(String, String)> {
        drop(snapshots);
        notes(&open(root))
    }

    fn notes_of(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(id, note)| ((*id).to_owned(), (*note).to_owned()))
            .collect()
    }

    /// A store of the layout before the run logs: a file per snapshot.
    fn legacy_store(root: &Path) {
        let dir = run_dir(root);
        fs::create_dir_all(&dir).unwrap();
        for (id, seq) in [("a", 1), ("b", 2)] {
            let bytes = serde_json::to_vec(&snapshot(id, seq, "old")).unwrap();
            fs::write(
                dir.join(layout::snapshot_file(&SnapshotId::new(id).unwrap())),
                bytes,
            )
            .unwrap();
        }
    }

    fn put(snapshots: &Snapshots, id: &str, seq: u64, note: &str) {
        snapshots
            .put(&Tenant::local(), snapshot(id, seq, note))
            .unwrap();
    }

    /// Puts `s1`, `s2`, `s3`, noted `x`.
    fn put_three(snapshots: &Snapshots) {
        for seq in 1..=3 {
            put(snapshots, &format!("s{seq}"), seq, "x");
        }
    }

    /// The run log's bytes.
    fn log_bytes(root: &Path) -> Vec<u8> {
        fs::read(run_dir(root).join(SNAPSHOT_LOG)).unwrap()
    }

    /// A snapshot's line as a put writes it.
    fn line(id: &str, seq: u64, note: &str) -> Vec<u8> {
        let mut line = serde_json::to_vec(&snapshot(id, seq, note)).unwrap();
        line.push(b'\n');
        line
    }

    #[test]
    fn a_put_writes_one_line_into_the_spare_space_of_the_runs_log() {
        let temp = tempfile::tempdir().unwrap();
        let snapshots = open(temp.path());
        let mut lens = Vec::new();
        for seq in 1..=3 {
            put(&snapshots, &format!("s{seq}"), seq, "x");
            lens.push(log_bytes(temp.path()).len());
        }
        let names: Vec<PathBuf> = list_dir(&run_dir(temp.path())).unwrap();
        assert_eq!(names, [run_dir(temp.path()).join(SNAPSHOT_LOG)]);
        // The first put grew the log by a page of zeros; the next ones
        // wrote into it, and their syncs changed no file size.
        assert_eq!(lens, [4096, 4096, 4096]);
        let bytes = log_bytes(temp.path());
        let scan = runlog::scan(&bytes);
        assert_eq!(scan.records.len(), 3);
        assert_eq!(scan.after, After::Spare);
        let lines: Vec<u8> = (1..=3)
            .flat_map(|seq| line(&format!("s{seq}"), seq, "x"))
            .collect();
        assert_eq!(&bytes[..scan.end], lines);
        assert!(bytes[scan.end..].iter().all(|byte| *byte == 0));
        drop(snapshots);
        assert_eq!(notes(&open(temp.path())).len(), 3);
    }

    #[test]
    fn a_log_grows_by_a_step_when_a_line_does_not_fit() {
        let temp = tempfile::tempdir().unwrap();
        let snapshots = open(temp.path());
        let note = "n".repeat(1200);
        let size = line("s1", 1, &note).len();
        assert!((1400..2000).contains(&size), "{size}");
        let mut lens = Vec::new();
        for seq in 1..=6 {
            put(&snapshots, &format!("s{seq}"), seq, &note);
            lens.push(log_bytes(temp.path()).len());
        }
        // Two lines fit a page; the third doubles the log, the fifth again.
        assert_eq!(lens, [4096, 4096, 8192, 8192, 16384, 16384]);
        drop(snapshots);
        assert_eq!(notes(&open(temp.path())).len(), 6);
    }

    // Unsynced puts are appended to the records, never written over spare
    // space: a relaxed handle cuts away what a durable one left.
    #[test]
    fn a_relaxed_put_appends_to_the_records_without_spare_space() {
        let temp = tempfile::tempdir().unwrap();
        let snapshots = open(temp.path());
        put(&snapshots, "s1", 1, "x");
        assert_eq!(log_bytes(temp.path()).len(), 4096);
        drop(snapshots);
        let relaxed = Snapshots::open(
            temp.path().to_path_buf(),
            Durability::Relaxed,
            Io::default(),
        )
        .unwrap();
        let mut lens = Vec::new();
        for seq in 2..=3 {
            put(&relaxed, &format!("s{seq}"), seq, "x");
            lens.push(log_bytes(temp.path()).len());
        }
        let records: Vec<u8> = (1..=3)
            .flat_map(|seq| line(&format!("s{seq}"), seq, "x"))
            .collect();
        assert_eq!(lens, [line("s1", 1, "x").len() * 2, records.len()]);
        assert_eq!(log_bytes(temp.path()), records);
        assert_eq!(reopened(relaxed, temp.path()).len(), 3);
    }

    /// Records the log's length changes and syncs, in order.
    #[derive(Default)]
    struct LogOps(Mutex<Vec<String>>);

    impl crate::fileio::IoObserver for LogOps {
        fn observe(&self, op: crate::fileio::IoOp<'_>) {
            use crate::fileio::IoOp;
            let entry = match op {
                IoOp::SetLen { path, len } if path.ends_with(SNAPSHOT_LOG) => {
                    format!("cut to {len}")
                }
                IoOp::SyncData { path } if path.ends_with(SNAPSHOT_LOG) => "sync".to_owned(),
                _ => return,
            };
            self.0.lock().unwrap().push(entry);
        }
    }

    // A durable open syncs the cut of a torn put, so that a power loss
    // cannot bring the torn bytes back under the records; a relaxed one
    // does not sync.
    #[test]
    fn a_durable_open_syncs_the_cut_of_a_torn_put() {
        for (durability, expected) in [
            (Durability::Durable, vec!["cut to LEN", "sync"]),
            (Durability::Relaxed, vec!["cut to LEN"]),
        ] {
            let temp = tempfile::tempdir().unwrap();
            let snapshots = open(temp.path());
            put(&snapshots, "a", 1, "x");
            drop(snapshots);
            let mut bytes = log_bytes(temp.path());
            let end = runlog::scan(&bytes).end;
            bytes[end..end + 5].copy_from_slice(b"{\"sna");
            fs::write(run_dir(temp.path()).join(SNAPSHOT_LOG), &bytes).unwrap();

            let ops = Arc::new(LogOps::default());
            let io = Io::observed(ops.clone());
            let snapshots = Snapshots::open(temp.path().to_path_buf(), durability, io).unwrap();
            assert_eq!(notes(&snapshots).len(), 1);
            let expected: Vec<String> = expected
                .iter()
                .map(|op| op.replace("LEN", &end.to_string()))
                .collect();
            assert_eq!(*ops.0.lock().unwrap(), expected, "{durability:?}");
        }
    }

    #[test]
    fn what_a_crash_left_of_a_put_in_the_spare_space_is_cut_at_open() {
        let torn = line("b", 2, "y");
        let half = torn.len() / 2;
        let mut holed = torn.clone();
        holed[half..half + 8].fill(0);
        let variants: [(&str, Vec<u8>); 3] = [
            ("a prefix", torn[..half].to_vec()),
            ("a sector missing, newline kept", holed),
            (
                "its end only",
                [vec![0; half], torn[half..].to_vec()].concat(),
            ),
        ];
        for (what, left) in variants {
            let temp = tempfile::tempdir().unwrap();
            let snapshots = open(temp.path());
            put(&snapshots, "a", 1, "x");
            drop(snapshots);
            let mut bytes = log_bytes(temp.path());
            let end = runlog::scan(&bytes).end;
            bytes[end..end + left.len()].copy_from_slice(&left);
            fs::write(run_dir(temp.path()).join(SNAPSHOT_LOG), &bytes).unwrap();

            let snapshots = open(temp.path());
            assert_eq!(notes(&snapshots), [("a".into(), "x".into())], "{what}");
            assert_eq!(log_bytes(temp.path()), line("a", 1, "x"), "{what}");
            put(&snapshots, "c", 3, "z");
            drop(snapshots);
            assert_eq!(
                notes(&open(temp.path())),
                [("a".into(), "x".into()), ("c".into(), "z".into())],
                "{what}"
            );
        }
    }

    #[test]
    fn logs_written_without_spare_space_still_open_and_take_puts() {
        // The log as versions before the spare space wrote it: lines only,
        // and after a crash a line cut short at the end of the file.
        let temp = tempfile::tempdir().unwrap();
        let dir = run_dir(temp.path());
        fs::create_dir_all(&dir).unwrap();
        let mut bytes = [line("a", 1, "old"), line("b", 2, "old")].concat();
        let lines = bytes.len();
        bytes.extend_from_slice(&line("c", 3, "torn")[..40]);
        fs::write(dir.join(SNAPSHOT_LOG), &bytes).unwrap();

        let snapshots = open(temp.path());
        assert_eq!(
            notes(&snapshots),
            [("a".into(), "old".into()), ("b".into(), "old".into())]
        );
        assert_eq!(log_bytes(temp.path()).len(), lines);
        put(&snapshots, "a", 1, "new");
        assert_eq!(log_bytes(temp.path()).len(), 4096);
        assert_eq!(
            reopened(snapshots, temp.path()),
            notes_of(&[("a", "new"), ("b", "old")])
        );
    }

    #[test]
    fn a_log_without_a_record_gets_its_space_at_the_next_put() {
        // What a crash left of a run's first put: a prefix of the line in
        // the page the put grew the log by.
        let temp = tempfile::tempdir().unwrap();
        let dir = run_dir(temp.path());
        fs::create_dir_all(&dir).unwrap();
        let mut bytes = line("a", 1, &"x".repeat(2000))[..1500].to_vec();
        bytes.resize(4096, 0);
        fs::write(dir.join(SNAPSHOT_LOG), &bytes).unwrap();

        let snapshots = open(temp.path());
        assert!(snapshots.streams().is_empty());
        put(&snapshots, "b", 2, "y");
        assert_eq!(reopened(snapshots, temp.path()), notes_of(&[("b", "y")]));
    }

    // A log removed behind the handle: the put that finds it gone fails
    // (no file with a hole where the records were), and the next put
    // starts a new log.
    #[test]
    fn after_a_log_is_removed_behind_the_handle_the_next_put_starts_a_new_one() {
        let temp = tempfile::tempdir().unwrap();
        let snapshots = open(temp.path());
        put(&snapshots, "a", 1, "x");
        fs::remove_file(run_dir(temp.path()).join(SNAPSHOT_LOG)).unwrap();
        let err = snapshots
            .put(&Tenant::local(), snapshot("b", 2, "y"))
            .unwrap_err();
        assert!(err.to_string().contains("append snapshot"), "{err}");
        put(&snapshots, "c", 3, "z");
        assert_eq!(reopened(snapshots, temp.path()), notes_of(&[("c", "z")]));
    }

    #[test]
    fn puts_after_a_prune_go_after_the_rewritten_log() {
        let temp = tempfile::tempdir().unwrap();
        let snapshots = open(temp.path());
        put_three(&snapshots);
        let report = snapshots.prune(1, 1, 100);
        assert_eq!(report.removed, 2, "{report:?}");
        // The rewritten log holds the kept line and no spare space.
        assert_eq!(log_bytes(temp.path()), line("s3", 3, "x"));
        put(&snapshots, "s4", 4, "x");
        assert_eq!(
            reopened(snapshots, temp.path()),
            notes_of(&[("s3", "x"), ("s4", "x")])
        );
    }

    /// Fails directory syncs, or removals, while armed, and counts the
    /// directory syncs that went through.
    #[derive(Default)]
    struct FailingDisk {
        syncs: std::sync::atomic::AtomicBool,
        removals: std::sync::atomic::AtomicBool,
        synced: std::sync::atomic::AtomicUsize,
    }

    impl crate::fileio::IoObserver for FailingDisk {
        fn observe(&self, op: crate::fileio::IoOp<'_>) {
            if matches!(op, crate::fileio::IoOp::SyncDir { .. }) {
                self.synced
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }

        fn before(&self, op: crate::fileio::IoOp<'_>) -> std::io::Result<()> {
            use std::sync::atomic::Ordering::SeqCst;
            let fails = match op {
                crate::fileio::IoOp::SyncDir { .. } => self.syncs.load(SeqCst),
                crate::fileio::IoOp::Remove { .. } => self.removals.load(SeqCst),
                _ => false,
            };
            if fails {
                Err(std::io::Error::other("injected: the disk fails"))
            } else {
                Ok(())
            }
        }
    }

    fn on_failing_disk(root: &Path) -> (Snapshots, Arc<FailingDisk>) {
        let disk = Arc::new(FailingDisk::default());
        let io = Io::observed(disk.clone());
        let snapshots = Snapshots::open(root.to_path_buf(), Durability::Durable, io).unwrap();
        (snapshots, disk)
    }

    // A prune whose rewritten log is renamed into place but whose directory
    // sync then fails reports the failure, and the handle reads the kept
    // snapshots from the new log: the index follows the rename, not the
    // sync. The next put syncs the directory the failed sync left unsynced.
    #[test]
    fn a_failed_sync_after_a_rewrite_leaves_the_index_on_the_new_log() {
        use std::sync::atomic::Ordering::SeqCst;
        let temp = tempfile::tempdir().unwrap();
        let (snapshots, disk) = on_failing_disk(temp.path());
        put(&snapshots, "s1", 1, "the first, a longer note");
        put(&snapshots, "s2", 2, "the second");
        put(&snapshots, "s3", 3, "third");
        disk.syncs.store(true, SeqCst);
        let report = snapshots.prune(1, 1, 100);
        assert_eq!(report.removed, 2, "the lines are gone: {report:?}");
        assert_eq!(
            report.failed.len(),
            1,
            "the failed sync is reported: {report:?}"
        );
        assert_eq!(log_bytes(temp.path()), line("s3", 3, "third"));
        assert_eq!(notes(&snapshots), notes_of(&[("s3", "third")]));
        disk.syncs.store(false, SeqCst);
        let synced = disk.synced.load(SeqCst);
        put(&snapshots, "s4", 4, "x");
        assert!(
            disk.synced.load(SeqCst) > synced,
            "the put syncs the directory"
        );
        assert_eq!(
            reopened(snapshots, temp.path()),
            notes_of(&[("s3", "third"), ("s4", "x")])
        );
    }

    // Pruning every snapshot of a run removes its log: a log already gone
    // (removed behind the handle) is no failure, a removal that fails is
    // the stream's failure and deletes nothing.
    #[test]
    fn removing_the_log_of_a_pruned_run() {
        use std::sync::atomic::Ordering::SeqCst;
        let temp = tempfile::tempdir().unwrap();
        let (snapshots, _disk) = on_failing_disk(temp.path());
        put_three(&snapshots);
        fs::remove_file(run_dir(temp.path()).join(SNAPSHOT_LOG)).unwrap();
        let report = snapshots.prune(1, 0, 100);
        assert_eq!((report.removed, report.failed.len()), (3, 0), "{report:?}");

        let temp = tempfile::tempdir().unwrap();
        let (snapshots, disk) = on_failing_disk(temp.path());
        put_three(&snapshots);
        disk.removals.store(true, SeqCst);
        let report = snapshots.prune(1, 0, 100);
        assert_eq!((report.removed, report.failed.len()), (0, 1), "{report:?}");
        disk.removals.store(false, SeqCst);
        assert_eq!(notes(&snapshots).len(), 3);
    }

    #[test]
    fn a_holed_line_followed_by_records_is_corrupt() {
        // No crash of one put leaves a line with NUL bytes before others.
        let temp = tempfile::tempdir().unwrap();
        let snapshots = open(temp.path());
        put_three(&snapshots);
        drop(snapshots);
        let log = run_dir(temp.path()).join(SNAPSHOT_LOG);
        let mut bytes = fs::read(&log).unwrap();
        let second = line("s1", 1, "x").len();
        bytes[second + 10..second + 14].fill(0);
        fs::write(&log, &bytes).unwrap();
        let err = Snapshots::open(
            temp.path().to_path_buf(),
            Durability::Durable,
            Io::default(),
        )
        .unwrap_err();
        let Error::Corrupt { location, reason } = &err else {
            panic!("{err}")
        };
        assert_eq!(location, &log.display().to_string());
        assert!(reason.contains(&format!("offset {second}")), "{reason}");
    }

    #[test]
    fn stores_of_the_file_per_snapshot_layout_stay_readable() {
        let temp = tempfile::tempdir().unwrap();
        legacy_store(temp.path());
        let snapshots = open(temp.path());
        assert_eq!(
            notes(&snapshots),
            [("a".into(), "old".into()), ("b".into(), "old".into())]
        );

        // Replacing a file's snapshot writes a line and removes the file.
        put(&snapshots, "a", 1, "new");
        let file_a =
            run_dir(temp.path()).join(layout::snapshot_file(&SnapshotId::new("a").unwrap()));
        assert!(!file_a.exists());
        put(&snapshots, "c", 3, "new");
        drop(snapshots);

        let snapshots = open(temp.path());
        let expected: Vec<(String, String)> = vec![
            ("a".into(), "new".into()),
            ("b".into(), "old".into()),
            ("c".into(), "new".into()),
        ];
        assert_eq!(notes(&snapshots), expected);
        assert_eq!(snapshots.floors().into_values().collect::<Vec<_>>(), [3]);

        // A prune deletes files and lines alike.
        let report = snapshots.prune(1, 1, 4);
        assert_eq!(report.removed, 2, "{report:?}");
        assert_eq!(notes(&snapshots), [("c".into(), "new".into())]);
        drop(snapshots);
        assert_eq!(notes(&open(temp.path())), [("c".into(), "new".into())]);
    }

    #[test]
    fn a_line_written_before_the_file_of_its_key_wins() {
        // A crash after the line was synced and before the file it
        // replaces was removed leaves both.
        let temp = tempfile::tempdir().unwrap();
        let snapshots = open(temp.path());
        put(&snapshots, "a", 1, "new");
        drop(snapshots);
        legacy_store(temp.path());
        let expected: Vec<(String, String)> =
            vec![("a".into(), "new".into()), ("b".into(), "old".into())];
        assert_eq!(notes(&open(temp.path())), expected);
    }

    #[test]
    fn a_bad_line_before_the_last_is_corrupt() {
        let temp = tempfile::tempdir().unwrap();
        let snapshots = open(temp.path());
        put(&snapshots, "a", 1, "x");
        put(&snapshots, "b", 2, "x");
        drop(snapshots);
        let log = run_dir(temp.path()).join(SNAPSHOT_LOG);
        let mut bytes = fs::read(&log).unwrap();
        bytes[0] = b'#';
        fs::write(&log, &bytes).unwrap();
        let err = Snapshots::open(
            temp.path().to_path_buf(),
            Durability::Durable,
            Io::default(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }
}
