//! Snapshots: one object per put of a `(tenant, run_id, snapshot_id)`, at a
//! key no other put uses; the greatest version of an id is its snapshot
//! (docs/backends/s3.md, "Snapshots").
//!
//! A put writes a new version and then deletes the older ones it listed; a
//! prune deletes only versions it listed: older ones first, then newest
//! ones it read and chose. Since no key is ever written twice, a prune
//! never deletes a version written after it listed the stream.
//!
//! A snapshot belongs to the stream its key names, never to the one its
//! record claims: a record whose claims disagree with its key is `Corrupt`
//! for that stream, and store-wide work groups objects by key.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt, stream};
use object_store::{ObjectMeta, path::Path};
use runstore_core::{
    Error, MaintenanceReport, Result, RunId, RunStatus, SnapshotId, SnapshotRecord, SnapshotStore,
    StreamKey, Tenant, raw::snapshots::keep_newest, raw::snapshots::prune_selection,
    raw::snapshots::snapshot_order, validate::check_clock,
};

use crate::{
    Inner, S3Store,
    error::{BACKEND, contended, request},
    keys::{SnapshotVersion, decode_id, decode_tenant, id_segment},
    new_token,
    objects::{corrupt, delete, from_json, get, put, to_json},
};

/// How many times a read lists a stream again after the newest version of
/// an id it listed was deleted before it could be read (a newer version
/// replaced it, or a prune removed it).
const READ_ATTEMPTS: u32 = 8;

/// How a snapshot is named in errors.
fn snapshot_what(key: &StreamKey, snapshot_id: &SnapshotId) -> String {
    format!("snapshot {:?} of stream {key}", snapshot_id.as_str())
}

/// One object of a stream's snapshot directory: a version of one id.
struct Stored {
    path: Path,
    version: SnapshotVersion,
}

/// One id's snapshot as a listing shows it: the newest version's key and
/// the snapshot, either read (`read`) or, when the key states its seq and
/// creation time and its id segment decodes, a stand-in built from the key
/// that sorts in [`snapshot_order`] and selects in `prune_selection` as the
/// stored one does (the put wrote the key from the record).
struct Listed {
    path: Path,
    snapshot: SnapshotRecord,
    read: bool,
}

/// A stream's snapshot objects by id segment, each id's versions oldest
/// first: the last is the id's snapshot, the others are replaced versions
/// that the put which replaced them has not deleted (yet).
fn by_id(paths: Vec<Path>) -> BTreeMap<String, Vec<Stored>> {
    let mut ids: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
    for path in paths {
        let (segment, version) = {
            let name = path.filename().unwrap_or_default();
            let (segment, version) = SnapshotVersion::parse(name);
            (segment.to_owned(), version)
        };
        ids.entry(segment)
            .or_default()
            .push(Stored { path, version });
    }
    for versions in ids.values_mut() {
        versions.sort_by(|a, b| a.version.cmp(&b.version));
    }
    ids
}

/// The stream directory (tenant and run segments) of a snapshot object
/// under `root`; `None` for an object at any other depth.
fn snapshot_dir_of(root: &Path, path: &Path) -> Option<(String, String)> {
    let parts: Vec<String> = path
        .prefix_match(root)?
        .map(|part| part.as_ref().to_owned())
        .collect();
    match parts.as_slice() {
        [tenant, run, _] => Some((tenant.clone(), run.clone())),
        _ => None,
    }
}

/// The stream a snapshot record claims, for errors.
fn claimed(snapshot: &SnapshotRecord) -> String {
    match snapshot.scope.tenant() {
        Ok(tenant) => format!("{tenant}:{}", snapshot.run_id),
        Err(_) => format!("run {:?} of no valid tenant", snapshot.run_id.as_str()),
    }
}

impl Inner {
    /// Reads the object at `path`, which the key layout makes a snapshot of
    /// `key`, and checks that it is: it names `key`'s tenant and run and
    /// lives at a key of its own snapshot id.
    async fn read_snapshot(&self, path: &Path, key: &StreamKey) -> Result<Option<SnapshotRecord>> {
        let what = format!("a snapshot of stream {key}");
        let Some((bytes, _)) = get(self.store(), path, &what).await? else {
            return Ok(None);
        };
        let snapshot: SnapshotRecord = from_json(&bytes, path, &what)?;
        if snapshot.run_id != key.run_id || !key.tenant.matches(&snapshot.scope.tenant_context) {
            return Err(corrupt(
                path,
                &what,
                format!("the snapshot claims stream {}", claimed(&snapshot)),
            ));
        }
        let (_, version) = SnapshotVersion::parse(path.filename().unwrap_or_default());
        if let Some((seq, created_at_ms)) = version.order()
            && (seq, created_at_ms) != (snapshot.seq, snapshot.created_at_ms)
        {
            return Err(corrupt(
                path,
                &what,
                format!(
                    "the snapshot has seq {} and created_at_ms {}, its key states {seq} and {created_at_ms}",
                    snapshot.seq, snapshot.created_at_ms
                ),
            ));
        }
        if self
            .keys
            .snapshot(&key.tenant, &key.run_id, &snapshot.snapshot_id, &version)
            != *path
        {
            return Err(corrupt(
                path,
                &what,
                format!(
                    "the snapshot names id {:?}, whose key is elsewhere",
                    snapshot.snapshot_id.as_str()
                ),
            ));
        }
        Ok(Some(snapshot))
    }

    /// Every object under `dir` (`what` names it for errors).
    async fn list_all(&self, dir: &Path, what: &str) -> Result<Vec<ObjectMeta>> {
        self.store()
            .list(Some(dir))
            .try_collect()
            .await
            .map_err(|err| request(format!("list {what}"), err))
    }

    /// Reads the snapshots of `key` at `paths`, in order; `None` for one
    /// deleted meanwhile.
    async fn read_snapshots_at(
        &self,
        paths: Vec<Path>,
        key: &StreamKey,
    ) -> Result<Vec<Option<SnapshotRecord>>> {
        stream::iter(paths)
            .map(|path| async move { self.read_snapshot(&path, key).await })
            .buffered(16)
            .try_collect()
            .await
    }

    /// Reads the snapshots of `key` at `paths`, skipping ones deleted
    /// meanwhile.
    async fn read_snapshots(
        &self,
        paths: Vec<Path>,
        key: &StreamKey,
    ) -> Result<Vec<(Path, SnapshotRecord)>> {
        let read = self.read_snapshots_at(paths.clone(), key).await?;
        Ok(paths
            .into_iter()
            .zip(read)
            .filter_map(|(path, snapshot)| snapshot.map(|snapshot| (path, snapshot)))
            .collect())
    }

    /// The objects of a stream's snapshot directory, by id.
    async fn stream_objects(&self, key: &StreamKey) -> Result<BTreeMap<String, Vec<Stored>>> {
        let dir = self.keys.snapshot_dir(&key.tenant, &key.run_id);
        let paths = self
            .list_all(&dir, &format!("the snapshots of stream {key}"))
            .await?
            .into_iter()
            .map(|meta| meta.location)
            .collect();
        Ok(by_id(paths))
    }

    /// Each id's newest version among `ids` (a listing of `key`'s
    /// directory), in [`snapshot_order`]. A key that states the snapshot's
    /// seq and creation time and whose id segment decodes is ordered without
    /// a request; any other is read. A version read here that was gone
    /// (replaced or pruned since the listing) is left out, and the answer
    /// says whether any was.
    async fn ordered(
        &self,
        key: &StreamKey,
        ids: BTreeMap<String, Vec<Stored>>,
    ) -> Result<(Vec<Listed>, bool)> {
        let mut listed = Vec::with_capacity(ids.len());
        let mut unordered = Vec::new();
        for (segment, mut versions) in ids {
            let Some(newest) = versions.pop() else {
                continue;
            };
            let from_key = newest
                .version
                .order()
                .zip(decode_id(&segment).and_then(|id| SnapshotId::new(id).ok()));
            match from_key {
                Some(((seq, created_at_ms), snapshot_id)) => listed.push(Listed {
                    path: newest.path,
                    snapshot: SnapshotRecord::new(
                        &key.tenant,
                        key.run_id.clone(),
                        snapshot_id,
                        seq,
                        created_at_ms,
                        RunStatus::Running,
                    ),
                    read: false,
                }),
                None => unordered.push(newest.path),
            }
        }
        let wanted = unordered.len();
        let read = self.read_snapshots(unordered, key).await?;
        let complete = read.len() == wanted;
        listed.extend(read.into_iter().map(|(path, snapshot)| Listed {
            path,
            snapshot,
            read: true,
        }));
        listed.sort_by(|a, b| snapshot_order(&a.snapshot, &b.snapshot));
        Ok((listed, complete))
    }

    /// The newest `limit` (all when `None`) of a stream's snapshots (the
    /// newest version of each id) in [`snapshot_order`]: one listing, and a
    /// GET of each snapshot answered (plus one of each version whose key
    /// does not order it, see [`Inner::ordered`]).
    ///
    /// # Errors
    /// A retryable error when, [`READ_ATTEMPTS`] times over, a version
    /// listed as the newest of its id was deleted before it was read.
    pub(crate) async fn snapshots_of(
        &self,
        key: &StreamKey,
        limit: Option<usize>,
    ) -> Result<Vec<SnapshotRecord>> {
        for _ in 0..READ_ATTEMPTS {
            let objects = self.stream_objects(key).await?;
            let (listed, complete) = self.ordered(key, objects).await?;
            if !complete {
                continue;
            }
            let mut snapshots = Vec::new();
            let mut to_read = Vec::new();
            for (at, entry) in keep_newest(listed, limit).into_iter().enumerate() {
                if entry.read {
                    snapshots.push((at, entry.snapshot));
                } else {
                    to_read.push((at, entry.path));
                }
            }
            let wanted = to_read.len();
            let (positions, paths): (Vec<usize>, Vec<Path>) = to_read.into_iter().unzip();
            let read = self.read_snapshots_at(paths, key).await?;
            let read: Vec<(usize, SnapshotRecord)> = positions
                .into_iter()
                .zip(read)
                .filter_map(|(at, record)| record.map(|record| (at, record)))
                .collect();
            if read.len() != wanted {
                continue;
            }
            snapshots.extend(read);
            snapshots.sort_by_key(|(at, _)| *at);
            return Ok(snapshots.into_iter().map(|(_, record)| record).collect());
        }
        Err(contended(format!("read the snapshots of stream {key}")))
    }

    /// The snapshot `snapshot_id` of `key`: the newest version of the id.
    ///
    /// # Errors
    /// As [`Inner::snapshots_of`].
    async fn snapshot(
        &self,
        key: &StreamKey,
        snapshot_id: &SnapshotId,
    ) -> Result<Option<SnapshotRecord>> {
        let segment = id_segment(snapshot_id.as_str());
        for _ in 0..READ_ATTEMPTS {
            let newest = self
                .stream_objects(key)
                .await?
                .remove(&segment)
                .and_then(|mut versions| versions.pop());
            let Some(newest) = newest else {
                return Ok(None);
            };
            // The read checks the snapshot lives at a key of its own id, so
            // it is the one asked for.
            if let Some(snapshot) = self.read_snapshot(&newest.path, key).await? {
                return Ok(Some(snapshot));
            }
        }
        Err(contended(snapshot_what(key, snapshot_id)))
    }

    /// Every stream with a snapshot object, with the keys of its objects,
    /// grouped by the stream directory the keys name.
    ///
    /// # Errors
    /// A listing that fails; `Corrupt` for a directory under a hashed key in
    /// which no snapshot names the stream the key names: the list of
    /// streams cannot be read.
    async fn snapshot_dirs(&self) -> Result<Vec<(StreamKey, Vec<Path>)>> {
        // A recursive listing names only existing objects; some servers keep
        // emptied "directories" that a delimiter listing would still show.
        let root = self.keys.snapshots_root();
        let mut dirs: BTreeMap<(String, String), Vec<Path>> = BTreeMap::new();
        for meta in self.list_all(&root, "the snapshots").await? {
            if let Some(dir) = snapshot_dir_of(&root, &meta.location) {
                dirs.entry(dir).or_default().push(meta.location);
            }
        }
        let mut streams = Vec::with_capacity(dirs.len());
        for ((tenant, run), paths) in dirs {
            let key = self.dir_stream(&root, &tenant, &run, &paths).await?;
            streams.push((key, paths));
        }
        Ok(streams)
    }

    /// The stream of the snapshot directory `<tenant>/<run>` under `root`,
    /// whose objects are at `paths`: the one its segments decode to; for a
    /// hashed one, the one a snapshot there claims, once its claims are
    /// checked to give that very key.
    async fn dir_stream(
        &self,
        root: &Path,
        tenant: &str,
        run: &str,
        paths: &[Path],
    ) -> Result<StreamKey> {
        let decoded = decode_tenant(tenant)
            .zip(decode_id(run).and_then(|run| RunId::new(run).ok()))
            .map(|(tenant, run_id)| StreamKey::new(tenant, run_id));
        if let Some(key) = decoded {
            return Ok(key);
        }
        let what = "a snapshot under a hashed key";
        for path in paths {
            let Some((bytes, _)) = get(self.store(), path, what).await? else {
                continue;
            };
            let Ok(snapshot) = serde_json::from_slice::<SnapshotRecord>(&bytes) else {
                continue;
            };
            let Ok(claimed_tenant) = snapshot.scope.tenant() else {
                continue;
            };
            let (_, version) = SnapshotVersion::parse(path.filename().unwrap_or_default());
            if self.keys.snapshot(
                &claimed_tenant,
                &snapshot.run_id,
                &snapshot.snapshot_id,
                &version,
            ) == *path
            {
                return Ok(StreamKey::new(claimed_tenant, snapshot.run_id));
            }
        }
        let dir = root.child(tenant).child(run);
        Err(corrupt(
            &dir,
            "a directory of snapshots under a hashed key",
            "no snapshot in it names the stream its key names",
        ))
    }

    /// Prunes every stream's snapshots, reading the listing of
    /// `P/snap/` as it pages in: the objects of one stream directory are
    /// contiguous in it (object stores list in key order, a file system
    /// directory by directory), so each stream is pruned once its last
    /// object is listed and only that stream's keys are held meanwhile.
    ///
    /// # Errors
    /// A listing that fails (streams listed before it are pruned), one that
    /// shows a stream directory again after another, and, as
    /// [`Inner::snapshot_dirs`], a hashed directory no snapshot proves.
    async fn prune_all(
        &self,
        retention_ms: u64,
        keep_last_per_run: usize,
        now_ms: u64,
        report: &mut MaintenanceReport,
    ) -> Result<()> {
        let root = self.keys.snapshots_root();
        let mut listing = self.store().list(Some(&root));
        let mut done: BTreeSet<(String, String)> = BTreeSet::new();
        let mut current: Option<((String, String), Vec<Path>)> = None;
        loop {
            let next = listing
                .next()
                .await
                .transpose()
                .map_err(|err| request("list the snapshots", err))?;
            let dir = next
                .as_ref()
                .and_then(|meta| snapshot_dir_of(&root, &meta.location));
            if next.is_some() && dir.is_none() {
                continue;
            }
            let same = matches!((&current, &dir), (Some((at, _)), Some(dir)) if at == dir);
            if !same {
                if let Some(((tenant, run), paths)) = current.take() {
                    let key = self.dir_stream(&root, &tenant, &run, &paths).await?;
                    let step = self
                        .prune_stream(&key, paths, retention_ms, keep_last_per_run, now_ms)
                        .await;
                    report.record(&key, step);
                    done.insert((tenant, run));
                }
                let Some(dir) = dir else {
                    return Ok(());
                };
                if done.contains(&dir) {
                    return Err(Error::backend(
                        BACKEND,
                        format!(
                            "list the snapshots: the objects of directory {}/{} are not listed together",
                            dir.0, dir.1
                        ),
                    ));
                }
                current = Some((dir, Vec::new()));
            }
            if let (Some((_, paths)), Some(meta)) = (current.as_mut(), next) {
                paths.push(meta.location);
            }
        }
    }

    /// Prunes one stream's snapshots (CONTRACT §14) from the objects a
    /// listing found at `paths`; how many snapshots it deleted.
    ///
    /// The selection orders the stream by its keys ([`Inner::ordered`]:
    /// only versions whose key does not state seq and creation time are
    /// read for it). Every snapshot chosen is then read, and checked to be
    /// the stream's as its key says, before anything is deleted. Only
    /// listed objects are deleted: replaced versions (not counted), then the
    /// chosen newest versions. A version written after the listing has a
    /// key of its own, so no put acknowledged after the listing is touched.
    async fn prune_stream(
        &self,
        key: &StreamKey,
        paths: Vec<Path>,
        retention_ms: u64,
        keep_last_per_run: usize,
        now_ms: u64,
    ) -> Result<usize> {
        let ids = by_id(paths);
        let replaced: Vec<Path> = ids
            .values()
            .flat_map(|versions| versions.iter().rev().skip(1))
            .map(|stored| stored.path.clone())
            .collect();
        // A newest version read here and deleted since the listing (by a
        // put that replaced it, or another prune) is left out of the
        // selection, which then only keeps more.
        let (listed, _) = self.ordered(key, ids).await?;
        let ordered: Vec<SnapshotRecord> =
            listed.iter().map(|entry| entry.snapshot.clone()).collect();
        let chosen: Vec<&Listed> =
            prune_selection(&ordered, retention_ms, keep_last_per_run, now_ms)
                .into_iter()
                .map(|index| &listed[index])
                .collect();
        drop(ordered);
        // Each chosen snapshot is read before any delete: one that claims
        // another stream, or whose key misstates it, fails the stream.
        let unread: Vec<Path> = chosen
            .iter()
            .filter(|entry| !entry.read)
            .map(|entry| entry.path.clone())
            .collect();
        self.read_snapshots_at(unread, key).await?;
        let doomed: Vec<(Path, String)> = chosen
            .iter()
            .map(|entry| {
                (
                    entry.path.clone(),
                    snapshot_what(key, &entry.snapshot.snapshot_id),
                )
            })
            .collect();
        let deleted = doomed.len();
        // Replaced versions go first: once an id's newest version is
        // deleted, no older version of it that this prune listed is left
        // to stand in for it.
        let replaced_what = format!("a replaced version of a snapshot of stream {key}");
        stream::iter(replaced)
            .map(|path| {
                let what = replaced_what.as_str();
                async move { delete(self.store(), &path, what).await }
            })
            .buffer_unordered(16)
            .try_collect::<()>()
            .await?;
        stream::iter(doomed)
            .map(|(path, what)| async move { delete(self.store(), &path, &what).await })
            .buffer_unordered(16)
            .try_collect::<()>()
            .await?;
        Ok(deleted)
    }

    /// Deletes every snapshot object of `key` a listing finds (CONTRACT
    /// §27); answers how many snapshots (ids) it held. Replaced versions go
    /// first and each id's newest version last, so a delete that fails
    /// midway never leaves an older version standing in for a deleted
    /// snapshot. The listing is the only index, so nothing else is kept
    /// consistent. A version put after the listing is kept (a put racing
    /// the deletion may be stored after it).
    async fn delete_stream_snapshots(&self, key: &StreamKey) -> Result<usize> {
        let mut newest = Vec::new();
        let mut replaced = Vec::new();
        for (_, mut versions) in self.stream_objects(key).await? {
            newest.extend(versions.pop().map(|stored| stored.path));
            replaced.extend(versions.into_iter().map(|stored| stored.path));
        }
        let deleted = newest.len();
        let what = format!("a snapshot of stream {key}");
        for paths in [replaced, newest] {
            stream::iter(paths)
                .map(|path| {
                    let what = what.as_str();
                    async move { delete(self.store(), &path, what).await }
                })
                .buffer_unordered(16)
                .try_collect::<()>()
                .await?;
        }
        Ok(deleted)
    }

    /// Deletes versions of a snapshot that a newer one replaced: garbage
    /// only, as readers take the newest, so a failed delete leaves it for
    /// the next put of the id or the next prune.
    async fn delete_replaced(&self, key: &StreamKey, snapshot_id: &SnapshotId, old: Vec<Stored>) {
        let what = format!("a replaced version of {}", snapshot_what(key, snapshot_id));
        let what = what.as_str();
        stream::iter(old)
            .for_each_concurrent(16, |stored| async move {
                // Garbage left by a failed delete costs storage only.
                delete(self.store(), &stored.path, what).await.ok();
            })
            .await;
    }
}

#[async_trait]
impl SnapshotStore for S3Store {
    async fn put(&self, tenant: &Tenant, snapshot: &SnapshotRecord) -> Result<()> {
        // CONTRACT §21-§24: before anything is requested.
        self.inner.limits.check_snapshot(snapshot)?;
        let mut snapshot = snapshot.clone();
        tenant.stamp(&mut snapshot.scope.tenant_context);
        let key = StreamKey::new(tenant.clone(), snapshot.run_id.clone());
        let what = snapshot_what(&key, &snapshot.snapshot_id);
        let bytes = to_json(&snapshot, &what)?;
        // A new key, after every version of the id listed here: a prune
        // that listed the stream before never deletes it.
        let segment = id_segment(snapshot.snapshot_id.as_str());
        let old = self
            .inner
            .stream_objects(&key)
            .await?
            .remove(&segment)
            .unwrap_or_default();
        let version = SnapshotVersion::after(
            old.last().map(|stored| &stored.version),
            new_token(),
            &segment,
            snapshot.seq,
            snapshot.created_at_ms,
        );
        let path =
            self.inner
                .keys
                .snapshot(tenant, &snapshot.run_id, &snapshot.snapshot_id, &version);
        put(self.inner.store(), &path, &what, bytes).await?;
        // CONTRACT §8: a compaction planned without this snapshot must not
        // commit once the put has returned.
        self.inner.mark_snapshot(&key).await?;
        self.inner
            .delete_replaced(&key, &snapshot.snapshot_id, old)
            .await;
        Ok(())
    }

    async fn get(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        snapshot_id: &SnapshotId,
    ) -> Result<Option<SnapshotRecord>> {
        let key = StreamKey::new(tenant.clone(), run_id.clone());
        self.inner.snapshot(&key, snapshot_id).await
    }

    async fn list(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        limit: Option<usize>,
    ) -> Result<Vec<SnapshotRecord>> {
        let key = StreamKey::new(tenant.clone(), run_id.clone());
        self.inner.snapshots_of(&key, limit).await
    }

    /// CONTRACT §14, §25: snapshots are grouped by the stream their keys
    /// name; each stream is pruned on its own, and one that fails (a
    /// snapshot that cannot be read, or claims another stream) is in the
    /// report, untouched, while the pass goes on.
    async fn prune(
        &self,
        retention_ms: u64,
        keep_last_per_run: usize,
        now_ms: u64,
    ) -> Result<MaintenanceReport> {
        check_clock(now_ms)?;
        let mut report = MaintenanceReport::default();
        if retention_ms == 0 {
            return Ok(report);
        }
        self.inner
            .prune_all(retention_ms, keep_last_per_run, now_ms, &mut report)
            .await?;
        report.sort();
        Ok(report)
    }

    /// CONTRACT §27: every object of the run's snapshot directory, one
    /// listing and one DELETE per object.
    async fn delete_snapshots(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
        let key = StreamKey::new(tenant.clone(), run_id.clone());
        self.inner.delete_stream_snapshots(&key).await
    }

    async fn snapshot_streams(&self) -> Result<Vec<StreamKey>> {
        let mut keys: Vec<StreamKey> = self
            .inner
            .snapshot_dirs()
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}
