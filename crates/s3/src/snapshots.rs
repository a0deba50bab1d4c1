//! Snapshots: one object per `(tenant, run_id, snapshot_id)`
//! (docs/backends/s3.md, "Snapshots").

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt, stream};
use object_store::{ObjectMeta, path::Path};
use runstore_core::{
    Error, MaintenanceReport, Result, RunId, SnapshotId, SnapshotRecord, SnapshotStore, StreamKey,
    Tenant, keep_newest, prune_selection, snapshot_order,
};

use crate::{
    Inner, S3Store,
    error::request,
    keys::{decode_id, decode_tenant},
    objects::{delete, from_json, get, put, to_json},
};

impl Inner {
    /// Reads one snapshot object and checks it is the one its key names.
    async fn read_snapshot(
        &self,
        path: &Path,
        expected: Option<(&Tenant, &RunId)>,
    ) -> Result<Option<SnapshotRecord>> {
        let Some((bytes, _)) = get(self.store(), path).await? else {
            return Ok(None);
        };
        let snapshot: SnapshotRecord = from_json(&bytes, path)?;
        if let Some((tenant, run_id)) = expected
            && (snapshot.run_id != *run_id || !tenant.matches(&snapshot.scope.tenant_context))
        {
            return Err(Error::corrupt(
                path,
                format!(
                    "snapshot names run {:?} of another stream than {tenant}:{run_id}",
                    snapshot.run_id.as_str()
                ),
            ));
        }
        Ok(Some(snapshot))
    }

    /// Every object under `dir`.
    async fn list_all(&self, dir: &Path) -> Result<Vec<ObjectMeta>> {
        self.store()
            .list(Some(dir))
            .try_collect()
            .await
            .map_err(|err| request(format!("list {dir}"), err))
    }

    /// Reads the snapshots at `paths`, skipping ones deleted meanwhile.
    async fn read_snapshots(
        &self,
        paths: Vec<Path>,
        expected: Option<(&Tenant, &RunId)>,
    ) -> Result<Vec<(Path, SnapshotRecord)>> {
        let read: Vec<(Path, Option<SnapshotRecord>)> = stream::iter(paths)
            .map(|path| async move {
                let snapshot = self.read_snapshot(&path, expected).await?;
                Ok::<_, Error>((path, snapshot))
            })
            .buffered(16)
            .try_collect()
            .await?;
        Ok(read
            .into_iter()
            .filter_map(|(path, snapshot)| snapshot.map(|snapshot| (path, snapshot)))
            .collect())
    }

    /// A stream's snapshots in [`snapshot_order`].
    pub(crate) async fn snapshots_of(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
    ) -> Result<Vec<SnapshotRecord>> {
        let dir = self.keys.snapshot_dir(tenant, run_id);
        let paths = self
            .list_all(&dir)
            .await?
            .into_iter()
            .map(|meta| meta.location)
            .collect();
        let mut snapshots: Vec<SnapshotRecord> = self
            .read_snapshots(paths, Some((tenant, run_id)))
            .await?
            .into_iter()
            .map(|(_, snapshot)| snapshot)
            .collect();
        snapshots.sort_by(snapshot_order);
        Ok(snapshots)
    }
}

#[async_trait]
impl SnapshotStore for S3Store {
    async fn put(&self, tenant: &Tenant, snapshot: &SnapshotRecord) -> Result<()> {
        let mut snapshot = snapshot.clone();
        tenant.stamp(&mut snapshot.scope.tenant_context);
        let path = self
            .inner
            .keys
            .snapshot(tenant, &snapshot.run_id, &snapshot.snapshot_id);
        put(self.inner.store(), &path, to_json(&snapshot, &path)?).await?;
        // CONTRACT §8: a compaction planned without this snapshot must not
        // commit once the put has returned.
        self.inner
            .mark_snapshot(&StreamKey::new(tenant.clone(), snapshot.run_id.clone()))
            .await
    }

    async fn get(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        snapshot_id: &SnapshotId,
    ) -> Result<Option<SnapshotRecord>> {
        let path = self.inner.keys.snapshot(tenant, run_id, snapshot_id);
        let snapshot = self
            .inner
            .read_snapshot(&path, Some((tenant, run_id)))
            .await?;
        match snapshot {
            Some(snapshot) if snapshot.snapshot_id != *snapshot_id => Err(Error::corrupt(
                &path,
                format!(
                    "holds snapshot {:?}, not {:?}",
                    snapshot.snapshot_id.as_str(),
                    snapshot_id.as_str()
                ),
            )),
            other => Ok(other),
        }
    }

    async fn list(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        limit: Option<usize>,
    ) -> Result<Vec<SnapshotRecord>> {
        Ok(keep_newest(
            self.inner.snapshots_of(tenant, run_id).await?,
            limit,
        ))
    }

    async fn prune(
        &self,
        retention_ms: u64,
        keep_last_per_run: usize,
        now_ms: u64,
    ) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport::default();
        if retention_ms == 0 {
            return Ok(report);
        }
        let root = self.inner.keys.snapshots_root();
        let paths = self
            .inner
            .list_all(&root)
            .await?
            .into_iter()
            .map(|meta| meta.location)
            .collect();
        let mut streams: BTreeMap<StreamKey, Vec<(Path, SnapshotRecord)>> = BTreeMap::new();
        for (path, snapshot) in self.inner.read_snapshots(paths, None).await? {
            let tenant = snapshot.scope.tenant()?;
            streams
                .entry(StreamKey::new(tenant, snapshot.run_id.clone()))
                .or_default()
                .push((path, snapshot));
        }
        let mut doomed = Vec::new();
        for (key, mut snapshots) in streams {
            snapshots.sort_by(|a, b| snapshot_order(&a.1, &b.1));
            let ordered: Vec<SnapshotRecord> = snapshots
                .iter()
                .map(|(_, snapshot)| snapshot.clone())
                .collect();
            for index in prune_selection(&ordered, retention_ms, keep_last_per_run, now_ms) {
                doomed.push((key.clone(), snapshots[index].0.clone()));
                report.record(&key, Ok(1));
            }
        }
        stream::iter(doomed)
            .map(|(_, path)| async move { delete(self.inner.store(), &path).await })
            .buffer_unordered(16)
            .try_collect::<()>()
            .await?;
        Ok(report)
    }

    async fn snapshot_streams(&self) -> Result<Vec<StreamKey>> {
        // A recursive listing names only existing objects; some servers keep
        // emptied "directories" that a delimiter listing would still show.
        let root = self.inner.keys.snapshots_root();
        let mut dirs: BTreeMap<(String, String), Path> = BTreeMap::new();
        for meta in self.inner.list_all(&root).await? {
            let Some(rest) = meta.location.prefix_match(&root) else {
                continue;
            };
            let parts: Vec<String> = rest.map(|part| part.as_ref().to_owned()).collect();
            if let [tenant, run, _] = parts.as_slice() {
                dirs.entry((tenant.clone(), run.clone()))
                    .or_insert(meta.location);
            }
        }
        let mut keys = Vec::new();
        for ((tenant, run), sample) in dirs {
            let tenant = decode_tenant(&tenant);
            let run_id = decode_id(&run).and_then(|run| RunId::new(run).ok());
            match (tenant, run_id) {
                (Some(tenant), Some(run_id)) => keys.push(StreamKey::new(tenant, run_id)),
                _ => {
                    // A hashed segment: the stored record names the stream.
                    if let Some(snapshot) = self.inner.read_snapshot(&sample, None).await? {
                        keys.push(StreamKey::new(
                            snapshot.scope.tenant()?,
                            snapshot.run_id.clone(),
                        ));
                    }
                }
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}
