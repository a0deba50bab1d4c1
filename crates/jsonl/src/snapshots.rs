//! Snapshots: a log per run at `snapshots/<tenant>/<run>/snapshots.jsonl`
//! (names from [`crate::layout`]), one snapshot per line, with an in-memory
//! index of each stream's snapshots and where each one's current line is,
//! built at open (CONTRACT §12-§15).
//!
//! A put appends one line to its run's log and syncs that file's data: one
//! `fdatasync`, as an event append costs (the first put of a run also syncs
//! the new directory entries). A replacement appends too; the index points
//! at the newest line, and open lets later lines win. A prune rewrites the
//! log without the pruned lines (atomically: temp file, sync, rename,
//! directory sync). A line torn by a crash can only be the last one (each
//! put syncs before the stream's next put starts); open cuts it off.
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
    collections::{BTreeMap, HashMap, HashSet},
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

/// The snapshot side of a store.
#[derive(Debug)]
pub(crate) struct Snapshots {
    root: PathBuf,
    durability: Durability,
    io: Io,
    index: Mutex<BTreeMap<StreamKey, StreamSnapshots>>,
    /// Writers of one stream take its stripe, so that a stream's file
    /// replacements and index updates happen in the same order while other
    /// streams' puts (and their syncs) proceed in parallel. Lock order:
    /// stripes ascending, then `index`.
    stripes: Vec<Mutex<()>>,
    hasher: std::hash::RandomState,
    /// Run logs whose directory entry this handle has synced. A log found
    /// at open may have been created by a process killed before it synced
    /// the entry: the first put of this handle syncs it then.
    entries_synced: Mutex<HashSet<PathBuf>>,
}

/// Stripes of per-stream writer locks.
const STRIPES: usize = 64;

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

/// Indexes the lines of the run log at `log` (in `run_dir`): each line's
/// snapshot replaces what the index had for its key. A last line without
/// its newline was torn by a crash (its put never returned): it is cut
/// off, durably with [`Durability::Durable`].
///
/// # Errors
/// `Corrupt` for a line that does not parse or belongs to another run;
/// `Io`.
fn index_log(
    root: &Path,
    run_dir: &Path,
    log: &Path,
    durability: Durability,
    io: &Io,
    index: &mut BTreeMap<StreamKey, StreamSnapshots>,
) -> Result<()> {
    let bytes = fs::read(log).map_err(|err| io_at("read", log, err))?;
    let mut start = 0;
    while let Some(newline) = bytes[start..].iter().position(|byte| *byte == b'\n') {
        let end = start + newline + 1;
        let bad = |reason: String| {
            Error::corrupt(
                log.display(),
                format!("the line at offset {start}: {reason}"),
            )
        };
        let snapshot: SnapshotRecord =
            serde_json::from_slice(&bytes[start..end - 1]).map_err(|err| bad(err.to_string()))?;
        let place = Place::Log {
            offset: start as u64,
            len: (end - start) as u64,
        };
        index_found(root, snapshot, place, run_dir, index, bad)?;
        start = end;
    }
    if start < bytes.len() {
        let file = io
            .open(log, fs::OpenOptions::new().write(true))
            .map_err(|err| io_at("open", log, err))?;
        io.set_len(&file, log, start as u64)
            .map_err(|err| io_at("cut the torn line of", log, err))?;
        if durability == Durability::Durable {
            io.sync_data(&file, log)
                .map_err(|err| io_at("sync", log, err))?;
        }
    }
    Ok(())
}

/// Indexes `snapshot`, found at `found` (its file, or the run directory of
/// the log it is a line of) and stored at `place`; `bad` words an error
/// about it.
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
) -> Result<()> {
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
    index
        .entry(StreamKey::new(tenant, snapshot.run_id))
        .or_default()
        .insert(
            snapshot.snapshot_id,
            Meta {
                seq: snapshot.seq,
                created_at_ms: snapshot.created_at_ms,
                place,
            },
        );
    Ok(())
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
                if let Some(log) = log {
                    index_log(&root, &run_dir, &log, durability, &io, &mut index)?;
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
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: std::hash::RandomState::new(),
            entries_synced: Mutex::new(HashSet::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<StreamKey, StreamSnapshots>> {
        // Every change to the map is a single insert or remove made after
        // its file operation succeeded, so a panic cannot leave it torn.
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stripe(&self, tenant: &Tenant, run_id: &RunId) -> MutexGuard<'_, ()> {
        let at = usize::try_from(self.hasher.hash_one((tenant, run_id)) % STRIPES as u64)
            .expect("below STRIPES");
        // The guarded value is `()`: a panic cannot leave it inconsistent.
        self.stripes[at]
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
    pub(crate) fn put(&self, tenant: &Tenant, snapshot: &SnapshotRecord) -> Result<()> {
        let mut snapshot = snapshot.clone();
        tenant.stamp(&mut snapshot.scope.tenant_context);
        let mut bytes = serde_json::to_vec(&snapshot).map_err(Error::invalid)?;
        bytes.push(b'\n');
        let dir = self.run_dir(tenant, &snapshot.run_id);
        let _stream = self.stripe(tenant, &snapshot.run_id);
        create_dirs(&self.io, &dir, self.durability).map_err(|err| io_at("create", &dir, err))?;
        let log = dir.join(SNAPSHOT_LOG);
        let offset = self
            .append(&dir, &log, &bytes)
            .map_err(|err| io_at("append snapshot", &log, err))?;
        let replaced = self
            .lock()
            .entry(StreamKey::new(tenant.clone(), snapshot.run_id.clone()))
            .or_default()
            .insert(
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

    /// Appends `line` to the run's log at `log` (in `dir`) and, durably,
    /// syncs it; returns the offset it starts at. A failed write or sync
    /// cuts the log back to where it was, so that no torn line stays
    /// before the next put's. The caller holds the stream's stripe.
    fn append(&self, dir: &Path, log: &Path, line: &[u8]) -> std::io::Result<u64> {
        let file = self
            .io
            .open(log, fs::OpenOptions::new().write(true).create(true))?;
        let offset = file.metadata()?.len();
        let written = self
            .io
            .write_all_at(&file, log, line, offset)
            .and_then(|()| {
                if self.durability == Durability::Durable {
                    self.io.sync_data(&file, log)?;
                    let mut synced = self
                        .entries_synced
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if !synced.contains(log) {
                        // A new log, or one whose entry may never have been
                        // synced: its directory entry must survive too.
                        self.io.sync_dir(dir)?;
                        synced.insert(log.to_path_buf());
                    }
                }
                Ok(())
            });
        if let Err(err) = written {
            let _ = self.io.set_len(&file, log, offset);
            return Err(err);
        }
        Ok(offset)
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
        let _all: Vec<MutexGuard<'_, ()>> = self
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
            let (deleted, outcome) = self.delete(&stream, ids);
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
    /// all of them are, durably. The caller holds every stripe.
    fn delete(&self, stream: &StreamKey, ids: Vec<SnapshotId>) -> (Vec<SnapshotId>, Result<()>) {
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
            if let Err(err) = self.rewrite_log(stream, &dir, &lines) {
                return (deleted, Err(err));
            }
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
        if self.durability == Durability::Durable
            && let Err(err) = self.io.sync_dir(&dir)
        {
            return (deleted, Err(io_at("sync", &dir, err)));
        }
        (deleted, Ok(()))
    }

    /// Replaces the run log of `stream` (in `dir`) by one without the lines
    /// of `doomed` (atomically; removed when nothing is left), and points
    /// the index at the kept lines' new offsets.
    fn rewrite_log(&self, stream: &StreamKey, dir: &Path, doomed: &[SnapshotId]) -> Result<()> {
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
        if bytes.is_empty() {
            match self.io.remove_file(&log) {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(io_at("remove", &log, err)),
            }
        } else {
            write_atomic(&self.io, dir, SNAPSHOT_LOG, &bytes, self.durability)
                .map_err(|err| io_at("rewrite", &log, err))?;
        }
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
        let _stripe = self.stripe(tenant, run_id);
        let stream = StreamKey::new(tenant.clone(), run_id.clone());
        let ids: Vec<SnapshotId> = self
            .lock()
            .get(&stream)
            .map(|snapshots| snapshots.keys().cloned().collect())
            .unwrap_or_default();
        if ids.is_empty() {
            return Ok(0);
        }
        let (deleted, outcome) = self.delete(&stream, ids);
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
        self.blocking(move |shared| shared.snapshots.put(&tenant, &snapshot))
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

    #[test]
    fn a_put_appends_one_line_to_the_runs_log() {
        let temp = tempfile::tempdir().unwrap();
        let snapshots = open(temp.path());
        for seq in 1..=3 {
            snapshots
                .put(&Tenant::local(), &snapshot(&format!("s{seq}"), seq, "x"))
                .unwrap();
        }
        let names: Vec<PathBuf> = list_dir(&run_dir(temp.path())).unwrap();
        assert_eq!(names, [run_dir(temp.path()).join(SNAPSHOT_LOG)]);
        let text = fs::read_to_string(&names[0]).unwrap();
        assert_eq!(text.lines().count(), 3);
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
        snapshots
            .put(&Tenant::local(), &snapshot("a", 1, "new"))
            .unwrap();
        let file_a =
            run_dir(temp.path()).join(layout::snapshot_file(&SnapshotId::new("a").unwrap()));
        assert!(!file_a.exists());
        snapshots
            .put(&Tenant::local(), &snapshot("c", 3, "new"))
            .unwrap();
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
        snapshots
            .put(&Tenant::local(), &snapshot("a", 1, "new"))
            .unwrap();
        drop(snapshots);
        legacy_store(temp.path());
        let expected: Vec<(String, String)> =
            vec![("a".into(), "new".into()), ("b".into(), "old".into())];
        assert_eq!(notes(&open(temp.path())), expected);
    }

    #[test]
    fn a_torn_last_line_is_cut_at_open() {
        let temp = tempfile::tempdir().unwrap();
        let snapshots = open(temp.path());
        snapshots
            .put(&Tenant::local(), &snapshot("a", 1, "x"))
            .unwrap();
        drop(snapshots);
        let log = run_dir(temp.path()).join(SNAPSHOT_LOG);
        let intact = fs::read(&log).unwrap();
        let mut torn = intact.clone();
        torn.extend_from_slice(&intact[..intact.len() / 2]);
        fs::write(&log, &torn).unwrap();

        let snapshots = open(temp.path());
        assert_eq!(fs::read(&log).unwrap(), intact);
        assert_eq!(notes(&snapshots), [("a".into(), "x".into())]);
        snapshots
            .put(&Tenant::local(), &snapshot("b", 2, "y"))
            .unwrap();
        drop(snapshots);
        assert_eq!(
            notes(&open(temp.path())),
            [("a".into(), "x".into()), ("b".into(), "y".into())]
        );
    }

    #[test]
    fn a_bad_line_before_the_last_is_corrupt() {
        let temp = tempfile::tempdir().unwrap();
        let snapshots = open(temp.path());
        snapshots
            .put(&Tenant::local(), &snapshot("a", 1, "x"))
            .unwrap();
        snapshots
            .put(&Tenant::local(), &snapshot("b", 2, "x"))
            .unwrap();
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
