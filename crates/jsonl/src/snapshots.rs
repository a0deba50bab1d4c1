//! Snapshots: one JSON file each at
//! `snapshots/<tenant>/<run>/<snapshot>.json` (names from
//! [`crate::layout`]), written atomically, with an in-memory index of each
//! stream's snapshots built at open (CONTRACT §12-§15).
//!
//! [`Snapshots`] holds the files and the index; compaction reads each
//! stream's floor from it. [`SnapshotStore`] for [`JsonlStore`], at the end
//! of this file, checks a put against the store's limits and runs every
//! call on a blocking task: snapshots do not go through the writer thread.

use std::{
    collections::{BTreeMap, HashMap},
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
    fileio::Io,
    layout::{self, SNAPSHOT_SUFFIX, TMP_SUFFIX},
};

/// What the index keeps of a snapshot: its place in `snapshot_order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    seq: u64,
    created_at_ms: u64,
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
                for file in list_dir(&run_dir)? {
                    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
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
                    let tenant = snapshot
                        .scope
                        .tenant()
                        .map_err(|err| Error::corrupt(file.display(), cause(&err)))?;
                    let expected = root
                        .join(layout::tenant_dir(&tenant))
                        .join(layout::run_dir(&snapshot.run_id))
                        .join(layout::snapshot_file(&snapshot.snapshot_id));
                    if expected != file {
                        return Err(Error::corrupt(
                            file.display(),
                            format!(
                                "holds snapshot {:?} of {tenant}:{}, which belongs at {}",
                                snapshot.snapshot_id.as_str(),
                                snapshot.run_id,
                                expected.display()
                            ),
                        ));
                    }
                    index
                        .entry(StreamKey::new(tenant, snapshot.run_id.clone()))
                        .or_default()
                        .insert(
                            snapshot.snapshot_id.clone(),
                            Meta {
                                seq: snapshot.seq,
                                created_at_ms: snapshot.created_at_ms,
                            },
                        );
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

    fn read_checked(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        snapshot_id: &SnapshotId,
    ) -> Result<Option<SnapshotRecord>> {
        let path = self
            .run_dir(tenant, run_id)
            .join(layout::snapshot_file(snapshot_id));
        // A hashed file name could in principle be shared by two ids: the
        // record itself decides.
        Ok(read_snapshot(&path)?.filter(|snapshot| {
            snapshot.snapshot_id == *snapshot_id
                && snapshot.run_id == *run_id
                && tenant.matches(&snapshot.scope.tenant_context)
        }))
    }

    /// Stores a snapshot, replacing one with the same key (CONTRACT §12).
    pub(crate) fn put(&self, tenant: &Tenant, snapshot: &SnapshotRecord) -> Result<()> {
        let mut snapshot = snapshot.clone();
        tenant.stamp(&mut snapshot.scope.tenant_context);
        let mut bytes = serde_json::to_vec(&snapshot).map_err(Error::invalid)?;
        bytes.push(b'\n');
        let dir = self.run_dir(tenant, &snapshot.run_id);
        let name = layout::snapshot_file(&snapshot.snapshot_id);
        let _stream = self.stripe(tenant, &snapshot.run_id);
        create_dirs(&self.io, &dir, self.durability).map_err(|err| io_at("create", &dir, err))?;
        write_atomic(&self.io, &dir, &name, &bytes, self.durability)
            .map_err(|err| io_at("write snapshot", &dir.join(&name), err))?;
        self.lock()
            .entry(StreamKey::new(tenant.clone(), snapshot.run_id.clone()))
            .or_default()
            .insert(
                snapshot.snapshot_id.clone(),
                Meta {
                    seq: snapshot.seq,
                    created_at_ms: snapshot.created_at_ms,
                },
            );
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
            let (deleted, outcome) = self.delete(&stream, &ids);
            {
                let mut index = self.lock();
                if let Some(stream_snapshots) = index.get_mut(&stream) {
                    for snapshot_id in &ids[..deleted] {
                        stream_snapshots.remove(snapshot_id);
                    }
                    if stream_snapshots.is_empty() {
                        index.remove(&stream);
                    }
                }
            }
            report.record(&stream, Ok(deleted));
            if let Err(err) = outcome {
                report.record(&stream, Err(err));
            }
        }
        report
    }

    /// Deletes `ids` of `stream` in order; returns how many are gone and
    /// whether all of them are, durably.
    fn delete(&self, stream: &StreamKey, ids: &[SnapshotId]) -> (usize, Result<()>) {
        let dir = self.run_dir(&stream.tenant, &stream.run_id);
        let mut deleted = 0;
        for snapshot_id in ids {
            let path = dir.join(layout::snapshot_file(snapshot_id));
            match self.io.remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return (deleted, Err(io_at("delete snapshot", &path, err))),
            }
            deleted += 1;
        }
        if self.durability == Durability::Durable
            && let Err(err) = self.io.sync_dir(&dir)
        {
            return (deleted, Err(io_at("sync", &dir, err)));
        }
        (deleted, Ok(()))
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
}
