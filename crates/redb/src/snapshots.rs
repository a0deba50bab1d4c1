//! [`SnapshotStore`] for [`RedbStore`].

use async_trait::async_trait;
use redb::{ReadTransaction, ReadableTable};
use runstore_core::{
    Error, MaintenanceReport, Result, RunId, SnapshotId, SnapshotRecord, SnapshotStore, StreamKey,
    Tenant, raw::snapshots::keep_newest, raw::snapshots::prune_selection, validate::check_clock,
};

use crate::{
    RedbStore,
    error::Failure,
    tables::{
        SNAPSHOT_ORDER, SNAPSHOTS, decode_snapshot, decode_stream, encode_snapshot, join,
        order_key, prefix_end, snapshot_header, split_order_key, stream_key,
    },
    writer::{SnapshotTables, WriteTables},
};

/// Loads the snapshot `snapshot_id` (raw bytes) of `stream`.
fn load(
    snapshots: &impl ReadableTable<&'static [u8], &'static [u8]>,
    stream: &[u8],
    snapshot_id: &[u8],
) -> Result<Option<SnapshotRecord>, Failure> {
    let key = join(stream, snapshot_id);
    match snapshots.get(key.as_slice())? {
        None => Ok(None),
        Some(guard) => decode_snapshot(&key, guard.value()).map(Some),
    }
}

/// The `snapshot_order` keys of `stream`, oldest first.
fn order_keys(
    order: &impl ReadableTable<&'static [u8], ()>,
    stream: &[u8],
    limit: Option<usize>,
) -> Result<Vec<Vec<u8>>, Failure> {
    let end = prefix_end(stream).expect("a stream key ends in a UTF-8 byte, never 0xff");
    let range = order.range(stream..end.as_slice())?;
    let mut keys = Vec::new();
    match limit {
        Some(limit) => {
            for entry in range.rev().take(limit) {
                keys.push(entry?.0.value().to_vec());
            }
            keys.reverse();
        }
        None => {
            for entry in range {
                keys.push(entry?.0.value().to_vec());
            }
        }
    }
    Ok(keys)
}

/// The stream's snapshots in snapshot order, the newest `limit` if set.
fn list(
    snapshots: &impl ReadableTable<&'static [u8], &'static [u8]>,
    order: &impl ReadableTable<&'static [u8], ()>,
    stream: &[u8],
    limit: Option<usize>,
) -> Result<Vec<SnapshotRecord>, Failure> {
    let mut records = Vec::new();
    for key in order_keys(order, stream, limit)? {
        let (_, snapshot_id) = split_order_key(stream, &key)?;
        let record = load(snapshots, stream, snapshot_id)?.ok_or_else(|| {
            Error::corrupt(
                format!("snapshot_order key {key:02x?}"),
                "indexes a snapshot that is not stored",
            )
        })?;
        records.push(record);
    }
    Ok(records)
}

fn put(
    tables: &mut SnapshotTables<'_, '_>,
    stream: &[u8],
    snapshot_id: &SnapshotId,
    seq: u64,
    created_at_ms: u64,
    bytes: &[u8],
) -> Result<(), Failure> {
    let key = join(stream, snapshot_id.as_str().as_bytes());
    let old = match tables.snapshots.get(key.as_slice())? {
        None => None,
        Some(guard) => Some(snapshot_header(guard.value()).ok_or_else(|| {
            Error::corrupt(
                format!("snapshots key {key:02x?}"),
                "value shorter than its header",
            )
        })?),
    };
    // Nothing is written above this line.
    if let Some((old_seq, old_created)) = old {
        let old_key = order_key(stream, old_seq, old_created, snapshot_id.as_str());
        tables.order.remove(old_key.as_slice())?;
    }
    tables.snapshots.insert(key.as_slice(), bytes)?;
    let new_key = order_key(stream, seq, created_at_ms, snapshot_id.as_str());
    tables.order.insert(new_key.as_slice(), ())?;
    Ok(())
}

/// The distinct streams of the `snapshot_order` table, ascending.
fn streams(order: &impl ReadableTable<&'static [u8], ()>) -> Result<Vec<StreamKey>, Failure> {
    let mut streams = Vec::new();
    let mut from: Vec<u8> = Vec::new();
    loop {
        let Some(entry) = order.range(from.as_slice()..)?.next() else {
            break;
        };
        let (key, _) = entry?;
        let (stream, len) = decode_stream(key.value())?;
        streams.push(stream);
        // Skip the rest of this stream's keys.
        match prefix_end(&key.value()[..len]) {
            Some(next) => from = next,
            None => break,
        }
    }
    streams.sort();
    Ok(streams)
}

/// A snapshot's `snapshots` key and its `snapshot_order` key.
type SnapshotKeys = (Vec<u8>, Vec<u8>);

/// The snapshots `prune` deletes from `stream`, and how many it read.
fn doomed(
    tables: &SnapshotTables<'_, '_>,
    stream: &[u8],
    retention_ms: u64,
    keep_last_per_run: usize,
    now_ms: u64,
) -> Result<(Vec<SnapshotKeys>, usize), Failure> {
    let keys = order_keys(&*tables.order, stream, None)?;
    let ordered = list(&*tables.snapshots, &*tables.order, stream, None)?;
    let doomed = prune_selection(&ordered, retention_ms, keep_last_per_run, now_ms)
        .into_iter()
        .map(|index| {
            let snapshot_key = join(stream, ordered[index].snapshot_id.as_str().as_bytes());
            (snapshot_key, keys[index].clone())
        })
        .collect();
    Ok((doomed, ordered.len()))
}

/// How many snapshots one prune step reads at most before it commits and
/// lets the writes queued meanwhile go first (a stream is never split: one
/// with more is a step of its own).
const PRUNE_STEP_SNAPSHOTS: usize = 256;

/// Which streams one prune step takes.
#[derive(Debug, Clone)]
enum PruneStreams {
    /// The streams whose `snapshot_order` keys start at or after this key,
    /// in key order, until [`PRUNE_STEP_SNAPSHOTS`] snapshots are read.
    From(Vec<u8>),
    /// This stream alone.
    Only(StreamKey),
}

/// A stream, and where the stream after it starts.
type NextStream = (StreamKey, Option<Vec<u8>>);

/// The first stream with a snapshot whose `snapshot_order` keys start at or
/// after `from`, and where the stream after it starts (`None` when no key
/// can follow).
fn next_stream(
    order: &impl ReadableTable<&'static [u8], ()>,
    from: &[u8],
) -> Result<Option<NextStream>, Failure> {
    let Some(entry) = order.range(from..)?.next() else {
        return Ok(None);
    };
    let (key, _) = entry?;
    let (stream, len) = decode_stream(key.value())?;
    Ok(Some((stream, prefix_end(&key.value()[..len]))))
}

/// One step of a prune pass, in the writer's transaction: prunes `streams`
/// and answers the report and the key the pass goes on from (`None` once
/// it is done). A stream whose snapshots cannot be read is reported and
/// left as it is; the others are pruned (CONTRACT §25).
fn prune(
    tables: &mut WriteTables<'_>,
    retention_ms: u64,
    keep_last_per_run: usize,
    now_ms: u64,
    streams: PruneStreams,
    fault: Option<&[u8]>,
) -> Result<(MaintenanceReport, Option<Vec<u8>>), Failure> {
    let tables = tables.snapshots()?;
    let mut report = MaintenanceReport::default();
    let mut selected = Vec::new();
    let mut take = |stream: StreamKey, report: &mut MaintenanceReport| {
        let key = stream_key(&stream.tenant, &stream.run_id);
        match doomed(&tables, &key, retention_ms, keep_last_per_run, now_ms) {
            Ok((keys, read)) => {
                selected.push((stream, key, keys));
                Ok(read)
            }
            Err(Failure::Rejected(err)) => {
                report.record(&stream, Err(err));
                Ok(1)
            }
            Err(failure) => Err(failure),
        }
    };
    let resume = match streams {
        PruneStreams::Only(stream) => {
            take(stream, &mut report)?;
            None
        }
        PruneStreams::From(mut from) => {
            let mut read = 0;
            loop {
                let Some((stream, after)) = next_stream(&*tables.order, &from)? else {
                    break None;
                };
                read += take(stream, &mut report)?.max(1);
                let Some(after) = after else {
                    break None;
                };
                from = after;
                if read >= PRUNE_STEP_SNAPSHOTS {
                    break next_stream(&*tables.order, &from)?.map(|_| from);
                }
            }
        }
    };
    // Nothing is written above this line.
    for (stream, key, keys) in selected {
        if fault == Some(key.as_slice()) && !keys.is_empty() {
            return Err(Failure::Redb(redb::Error::ValueTooLarge(usize::MAX)));
        }
        for (snapshot_key, order_key) in &keys {
            tables.snapshots.remove(snapshot_key.as_slice())?;
            tables.order.remove(order_key.as_slice())?;
        }
        report.record(&stream, Ok(keys.len()));
    }
    report.sort();
    Ok((report, resume))
}

/// Deletes every snapshot of `stream` and its `snapshot_order` keys, in the
/// writer's transaction, so the index never names a snapshot that is gone
/// (nor the other way round); answers how many snapshots were deleted.
fn delete_all(tables: &mut SnapshotTables<'_, '_>, stream: &[u8]) -> Result<usize, Failure> {
    let end = prefix_end(stream).expect("a stream key ends in a UTF-8 byte, never 0xff");
    let mut deleted = 0;
    tables.snapshots.retain_in(stream..end.as_slice(), |_, _| {
        deleted += 1;
        false
    })?;
    tables
        .order
        .retain_in(stream..end.as_slice(), |_, ()| false)?;
    Ok(deleted)
}

impl RedbStore {
    /// Runs one prune step ([`prune`]) in the writer.
    async fn prune_step(
        &self,
        streams: PruneStreams,
        retention_ms: u64,
        keep_last_per_run: usize,
        now_ms: u64,
    ) -> Result<(MaintenanceReport, Option<Vec<u8>>)> {
        let fault = self.maintenance_fault();
        self.writer()
            .submit(move |tables| {
                prune(
                    tables,
                    retention_ms,
                    keep_last_per_run,
                    now_ms,
                    streams,
                    fault.as_deref(),
                )
            })
            .await
    }
}

#[async_trait]
impl SnapshotStore for RedbStore {
    async fn put(&self, tenant: &Tenant, snapshot: &SnapshotRecord) -> Result<()> {
        // CONTRACT §21: checked before anything is queued.
        self.limits().check_snapshot(snapshot)?;
        let mut snapshot = snapshot.clone();
        tenant.stamp(&mut snapshot.scope.tenant_context);
        let bytes = encode_snapshot(&snapshot)?;
        let stream = stream_key(tenant, &snapshot.run_id);
        let (snapshot_id, seq, created_at_ms) =
            (snapshot.snapshot_id, snapshot.seq, snapshot.created_at_ms);
        self.writer()
            .submit(move |tables| {
                put(
                    &mut tables.snapshots()?,
                    &stream,
                    &snapshot_id,
                    seq,
                    created_at_ms,
                    &bytes,
                )
            })
            .await
    }

    async fn get(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        snapshot_id: &SnapshotId,
    ) -> Result<Option<SnapshotRecord>> {
        let stream = stream_key(tenant, run_id);
        let snapshot_id = snapshot_id.clone();
        self.read_txn(move |txn| {
            let snapshots = txn.open_table(SNAPSHOTS)?;
            load(&snapshots, &stream, snapshot_id.as_str().as_bytes())
        })
        .await
    }

    async fn list(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        limit: Option<usize>,
    ) -> Result<Vec<SnapshotRecord>> {
        let stream = stream_key(tenant, run_id);
        let limit = limit.filter(|limit| *limit > 0);
        let read = move |txn: &ReadTransaction| {
            let snapshots = txn.open_table(SNAPSHOTS)?;
            let order = txn.open_table(SNAPSHOT_ORDER)?;
            list(&snapshots, &order, &stream, limit)
        };
        let listed = if limit == Some(1) {
            // `latest`: a few page reads, most often cached.
            self.read_txn_inline(read)?
        } else {
            self.read_txn(read).await?
        };
        Ok(keep_newest(listed, limit))
    }

    async fn prune(
        &self,
        retention_ms: u64,
        keep_last_per_run: usize,
        now_ms: u64,
    ) -> Result<MaintenanceReport> {
        check_clock(now_ms)?;
        if retention_ms == 0 {
            return Ok(MaintenanceReport::default());
        }
        // The pass walks the streams in key order, a step of a few hundred
        // snapshots read per commit, so writes queued meanwhile wait for
        // one step, not for the whole pass.
        let mut report = MaintenanceReport::default();
        let mut from = Vec::new();
        loop {
            let step = self
                .prune_step(
                    PruneStreams::From(from.clone()),
                    retention_ms,
                    keep_last_per_run,
                    now_ms,
                )
                .await;
            let resume = match step {
                Ok((done, resume)) => {
                    report.removed += done.removed;
                    report.failed.extend(done.failed);
                    resume
                }
                Err(err @ Error::Poisoned { .. }) => return Err(err),
                // redb failed the step's transaction: the next stream goes
                // alone, so that only a stream whose own writes fail is
                // reported (CONTRACT §25), and the pass goes on after it.
                Err(_) => {
                    let start = from.clone();
                    let next = self
                        .read_txn(move |txn| {
                            let order = txn.open_table(SNAPSHOT_ORDER)?;
                            next_stream(&order, &start)
                        })
                        .await?;
                    let Some((stream, after)) = next else {
                        break;
                    };
                    let one = self
                        .prune_step(
                            PruneStreams::Only(stream.clone()),
                            retention_ms,
                            keep_last_per_run,
                            now_ms,
                        )
                        .await;
                    match one {
                        Ok((one, _)) => {
                            report.removed += one.removed;
                            report.failed.extend(one.failed);
                        }
                        Err(err @ Error::Poisoned { .. }) => return Err(err),
                        Err(err) => report.record(&stream, Err(err)),
                    }
                    after
                }
            };
            match resume {
                Some(next) => from = next,
                None => break,
            }
        }
        report.sort();
        Ok(report)
    }

    async fn delete_snapshots(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
        let stream = stream_key(tenant, run_id);
        self.writer()
            .submit(move |tables| {
                let deleted = delete_all(&mut tables.snapshots()?, &stream)?;
                if deleted == 0 {
                    // No snapshot, so no index key either: nothing written.
                    tables.wrote_nothing();
                }
                Ok(deleted)
            })
            .await
    }

    async fn snapshot_streams(&self) -> Result<Vec<StreamKey>> {
        self.read_txn(|txn| {
            let order = txn.open_table(SNAPSHOT_ORDER)?;
            streams(&order)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use redb::ReadableDatabase as _;
    use runstore_core::{Durability, RunStatus};

    use super::*;
    use crate::RedbOptions;

    fn snapshot(run: &str, id: &str, at: u64) -> SnapshotRecord {
        SnapshotRecord::new(
            &Tenant::local(),
            RunId::new(run).unwrap(),
            SnapshotId::new(id).unwrap(),
            at,
            at,
            RunStatus::Running,
        )
    }

    // `latest` (a list of one) reads on the calling task; longer lists and
    // whole lists go to the blocking pool. Both answer in the same order.
    // On a current-thread runtime on purpose: the store is dropped there
    // too, where the writer's drop must not call `block_in_place`.
    #[tokio::test]
    async fn only_a_list_of_one_reads_on_the_calling_task() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_snapshots(&dir).await;
        let (tenant, run) = (Tenant::local(), RunId::new("a").unwrap());
        let inline = || {
            store
                .inner
                .inline_reads
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let all = store.list(&tenant, &run, None).await.unwrap();
        let two = store.list(&tenant, &run, Some(2)).await.unwrap();
        assert_eq!(inline(), 0);
        let one = store.list(&tenant, &run, Some(1)).await.unwrap();
        assert_eq!(inline(), 1);
        assert_eq!(one[..], all[all.len() - 1..]);
        assert_eq!(two[..], all[all.len() - 2..]);
    }

    async fn store_with_snapshots(dir: &tempfile::TempDir) -> RedbStore {
        let options = RedbOptions::default().with_durability(Durability::Relaxed);
        let store = RedbStore::open_with(dir.path().join("store.redb"), options)
            .await
            .unwrap();
        for run in ["a", "b-bad", "c"] {
            for (id, at) in [("s1", 1), ("s2", 2), ("s3", 3)] {
                store
                    .put(&Tenant::local(), &snapshot(run, id, at))
                    .await
                    .unwrap();
            }
        }
        store
    }

    fn failed(report: &MaintenanceReport) -> Vec<String> {
        report.failed.iter().map(ToString::to_string).collect()
    }

    /// CONTRACT §25: a stream whose snapshot cannot be read is reported and
    /// keeps its snapshots; the others are pruned.
    #[tokio::test(flavor = "multi_thread")]
    async fn prune_isolates_a_stream_with_an_unreadable_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_snapshots(&dir).await;
        let bad = stream_key(&Tenant::local(), &RunId::new("b-bad").unwrap());
        let txn = store.inner.db.begin_write().unwrap();
        {
            let mut snapshots = txn.open_table(SNAPSHOTS).unwrap();
            let key = join(&bad, b"s2");
            let mut value = snapshots.get(key.as_slice()).unwrap().unwrap().value()[..16].to_vec();
            value.extend_from_slice(b"{not json");
            snapshots.insert(key.as_slice(), value.as_slice()).unwrap();
        }
        txn.commit().unwrap();
        let report = store.prune(1, 1, 100).await.unwrap();
        let failed = failed(&report);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(
            failed[0].starts_with(
                "local/local:b-bad: corrupt data at snapshots table, stream local/local:b-bad, \
                 snapshot \"s2\": "
            ),
            "{failed:?}"
        );
        assert_eq!(report.removed, 4);
        let txn = store.inner.db.begin_read().unwrap();
        let order = txn.open_table(SNAPSHOT_ORDER).unwrap();
        assert_eq!(order_keys(&order, &bad, None).unwrap().len(), 3, "kept");
    }

    /// A pass takes the streams in steps of about [`PRUNE_STEP_SNAPSHOTS`]
    /// snapshots read, one commit each, so writes queued meanwhile wait for
    /// one step: a step ends after the stream that reached the budget, and
    /// the last step says the pass is done.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_prune_pass_commits_in_steps_of_bounded_work() {
        let dir = tempfile::tempdir().unwrap();
        let options = RedbOptions::default().with_durability(Durability::Relaxed);
        let store = RedbStore::open_with(dir.path().join("store.redb"), options)
            .await
            .unwrap();
        let per_stream = PRUNE_STEP_SNAPSHOTS * 3 / 4;
        for run in ["a", "b", "c"] {
            for n in 1..=per_stream as u64 {
                store
                    .put(&Tenant::local(), &snapshot(run, &format!("s{n}"), n))
                    .await
                    .unwrap();
            }
        }
        let step = |from| {
            store
                .writer()
                .submit(move |tables| prune(tables, 1, 1, 10_000, PruneStreams::From(from), None))
        };
        let (first, next) = step(Vec::new()).await.unwrap();
        assert_eq!(first.removed, 2 * (per_stream - 1), "a and b");
        let c = stream_key(&Tenant::local(), &RunId::new("c").unwrap());
        let next = next.expect("c is left");
        assert!(next.as_slice() <= c.as_slice(), "the next step starts at c");
        let (second, next) = step(next).await.unwrap();
        assert_eq!(second.removed, per_stream - 1, "c");
        assert_eq!(next, None, "c was the last stream");
        for run in ["a", "b", "c"] {
            let run = RunId::new(run).unwrap();
            let left = store.list(&Tenant::local(), &run, None).await.unwrap();
            assert_eq!(left.len(), 1);
        }
    }

    /// A prune step that redb fails is retried stream by stream: only the
    /// stream whose own writes fail is reported.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_prune_is_retried_stream_by_stream() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_snapshots(&dir).await;
        let bad = stream_key(&Tenant::local(), &RunId::new("b-bad").unwrap());
        *store.inner.maintenance_fault.lock().unwrap() = Some(bad);
        let report = store.prune(1, 1, 100).await.unwrap();
        let failed = failed(&report);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(
            failed[0].starts_with("local/local:b-bad: redb error"),
            "{failed:?}"
        );
        assert_eq!(report.removed, 4);
        let run = RunId::new("b-bad").unwrap();
        assert_eq!(
            store
                .list(&Tenant::local(), &run, None)
                .await
                .unwrap()
                .len(),
            3
        );
    }
}
