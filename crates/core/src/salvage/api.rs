//! [`scan_store`]: a scan of any store through the ordinary API.

use crate::{
    Error, EventLog, ReadQuery, Result, SnapshotRecord, SnapshotStore, StreamKey,
    salvage::{Loss, SalvageScan, ScanBuilder},
};

/// Whether a failed read means the store is unavailable (retrying later may
/// succeed, or another process holds it) rather than damaged.
fn unavailable(err: &Error) -> bool {
    err.is_retryable() || matches!(err, Error::Locked { .. } | Error::Poisoned { .. })
}

/// Records per read while scanning a stream through the API.
const WINDOW: u64 = 10_000;

/// Scans any store through the ordinary API: every stream in windows of
/// seqs, a failed window narrowed by halves down to the single record that
/// fails, so one bad record costs only itself; every stream's snapshots,
/// and for a stream whose snapshot listing fails, as many of the newest as
/// can be listed.
///
/// # Errors
/// The first error that says the store is unavailable rather than damaged
/// (retryable, `Locked`, `Poisoned`): a scan would report every record lost.
pub async fn scan_store<S>(store: &S) -> Result<SalvageScan>
where
    S: EventLog + SnapshotStore + ?Sized,
{
    let mut scan = ScanBuilder::new();
    match store.streams().await {
        Ok(streams) => {
            for key in &streams {
                scan_stream(store, key, &mut scan).await?;
            }
        }
        Err(err) if unavailable(&err) => return Err(err),
        Err(err) => scan.lose(Loss::range(
            "the store's stream listing",
            None,
            format!("the streams could not be listed: {err}"),
        )),
    }
    match store.snapshot_streams().await {
        Ok(streams) => {
            for key in &streams {
                scan_snapshots(store, key, &mut scan).await?;
            }
        }
        Err(err) if unavailable(&err) => return Err(err),
        Err(err) => scan.lose(Loss::range(
            "the store's snapshot stream listing",
            None,
            format!("the streams with snapshots could not be listed: {err}"),
        )),
    }
    Ok(scan.finish())
}

/// One stream through the API, window by window.
async fn scan_stream<S>(store: &S, key: &StreamKey, scan: &mut ScanBuilder) -> Result<()>
where
    S: EventLog + ?Sized,
{
    let place = |seq: u64| format!("{key} seq {seq}");
    let last = match store.next_seq(&key.tenant, &key.run_id).await {
        Ok(next) => next.saturating_sub(1),
        Err(err) if unavailable(&err) => return Err(err),
        Err(err) => {
            // Without the last seq, one unbounded read is all there is.
            match store.read(&key.tenant, &key.run_id, ReadQuery::all()).await {
                Ok(records) => {
                    for record in records {
                        let seq = record.seq;
                        scan.record(place(seq), Some((key, seq)), record);
                    }
                }
                Err(read) if unavailable(&read) => return Err(read),
                Err(read) => scan.lose(Loss::range(
                    key,
                    Some(key),
                    format!(
                        "the stream's last seq could not be read ({err}), nor the stream ({read})"
                    ),
                )),
            }
            return Ok(());
        }
    };
    let mut after = 0;
    while after < last {
        let before = after.saturating_add(WINDOW + 1).min(last.saturating_add(1));
        narrow(store, key, after, before, scan).await?;
        after = before - 1;
    }
    Ok(())
}

/// Reads the seqs strictly between `after` and `before`; when that fails,
/// reads each half, down to single seqs, each of which fails alone.
async fn narrow<S>(
    store: &S,
    key: &StreamKey,
    after: u64,
    before: u64,
    scan: &mut ScanBuilder,
) -> Result<()>
where
    S: EventLog + ?Sized,
{
    // An explicit stack instead of recursion: async recursion would need
    // boxing, and the depth is only log2 of the window.
    let mut windows = vec![(after, before)];
    while let Some((after, before)) = windows.pop() {
        if before <= after + 1 {
            continue;
        }
        let query = ReadQuery::all().after(after).before(before);
        match store.read(&key.tenant, &key.run_id, query).await {
            Ok(records) => {
                for record in records {
                    let seq = record.seq;
                    scan.record(format!("{key} seq {seq}"), Some((key, seq)), record);
                }
            }
            Err(err) if unavailable(&err) => return Err(err),
            Err(err) if before == after + 2 => {
                let seq = after + 1;
                scan.lose(Loss::record(
                    format!("{key} seq {seq}"),
                    Some(key),
                    Some(seq),
                    err,
                ));
            }
            Err(_) => {
                // Two or more seqs: after+1..=last_low and last_low+1..before.
                let last_low = after + (before - after - 1) / 2;
                // Popped in ascending order: the lower half first.
                windows.push((last_low, before));
                windows.push((after, last_low + 1));
            }
        }
    }
    Ok(())
}

/// One stream's snapshots through the API; when the listing fails, the
/// newest that can be listed.
async fn scan_snapshots<S>(store: &S, key: &StreamKey, scan: &mut ScanBuilder) -> Result<()>
where
    S: SnapshotStore + ?Sized,
{
    let place = format!("snapshots of {key}");
    let take = |scan: &mut ScanBuilder, snapshots: Vec<SnapshotRecord>| {
        for snapshot in snapshots {
            let id = snapshot.snapshot_id.clone();
            scan.snapshot(&place, Some((key, id.as_str())), snapshot);
        }
    };
    let err = match store.list(&key.tenant, &key.run_id, None).await {
        Ok(snapshots) => {
            take(scan, snapshots);
            return Ok(());
        }
        Err(err) if unavailable(&err) => return Err(err),
        Err(err) => err,
    };
    // A limit keeps the newest: the largest limit that lists is every
    // snapshot newer than the first unreadable one.
    let (mut good, mut bad) = (0usize, None::<usize>);
    let mut newest = Vec::new();
    let mut limit = 1usize;
    loop {
        if let Some(bad) = bad
            && bad <= good + 1
        {
            break;
        }
        match store.list(&key.tenant, &key.run_id, Some(limit)).await {
            Ok(snapshots) if snapshots.len() < limit => {
                // Fewer than asked: the unlimited listing should have worked;
                // keep what this one gave.
                newest = snapshots;
                break;
            }
            Ok(snapshots) => {
                good = limit;
                newest = snapshots;
            }
            Err(err) if unavailable(&err) => return Err(err),
            Err(_) => bad = Some(limit),
        }
        limit = match bad {
            None => match limit.checked_mul(2) {
                Some(doubled) => doubled,
                None => break,
            },
            Some(bad) => good + (bad - good) / 2,
        };
    }
    let kept = newest.len();
    take(scan, newest);
    scan.lose(Loss::snapshot(
        &place,
        Some(key),
        None,
        format!(
            "listing the stream's snapshots fails ({err}); the newest {kept} could be read, \
             the older ones could not"
        ),
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::ops::RangeInclusive;

    use super::*;
    use crate::{
        EventId, EventLogExt, EventRecord, MemoryStore, RunId, RunStatus, SnapshotId, Tenant,
        salvage::LossKind,
    };

    fn event(seq: u64) -> EventRecord {
        EventRecord::new(
            &Tenant::local(),
            RunId::new("run").unwrap(),
            EventId::new(format!("e-{seq}")).unwrap(),
            "t",
            seq,
        )
    }

    fn seqs(records: &[EventRecord]) -> Vec<u64> {
        records.iter().map(|record| record.seq).collect()
    }

    /// A store whose reads fail for some seqs and whose snapshot listing
    /// fails for limits above some count, over a [`MemoryStore`].
    #[derive(Debug)]
    struct Damaged {
        inner: MemoryStore,
        bad_seqs: Vec<u64>,
        listable: usize,
        unavailable: bool,
    }

    #[async_trait::async_trait]
    impl EventLog for Damaged {
        async fn append_batch(
            &self,
            tenant: &Tenant,
            run_id: &RunId,
            events: &[EventRecord],
            expected_last_seq: Option<u64>,
        ) -> Result<Vec<crate::AppendOutcome>> {
            self.inner
                .append_batch(tenant, run_id, events, expected_last_seq)
                .await
        }
        async fn read(
            &self,
            tenant: &Tenant,
            run_id: &RunId,
            query: ReadQuery,
        ) -> Result<Vec<EventRecord>> {
            if self.unavailable {
                return Err(Error::transient("test", "connection refused"));
            }
            if let Some(seq) = self.bad_seqs.iter().find(|seq| query.contains(**seq)) {
                return Err(Error::corrupt(format!("row {seq}"), "bad bytes"));
            }
            self.inner.read(tenant, run_id, query).await
        }
        async fn next_seq(&self, tenant: &Tenant, run_id: &RunId) -> Result<u64> {
            self.inner.next_seq(tenant, run_id).await
        }
        async fn seq_of(
            &self,
            tenant: &Tenant,
            run_id: &RunId,
            event_id: &EventId,
        ) -> Result<Option<u64>> {
            self.inner.seq_of(tenant, run_id, event_id).await
        }
        async fn list_runs(&self, tenant: &Tenant) -> Result<Vec<RunId>> {
            self.inner.list_runs(tenant).await
        }
        async fn compact(
            &self,
            retention_ms: u64,
            now_ms: u64,
        ) -> Result<crate::MaintenanceReport> {
            self.inner.compact(retention_ms, now_ms).await
        }
        async fn streams(&self) -> Result<Vec<StreamKey>> {
            self.inner.streams().await
        }
        async fn import_stream(
            &self,
            tenant: &Tenant,
            run_id: &RunId,
            records: &[EventRecord],
        ) -> Result<usize> {
            self.inner.import_stream(tenant, run_id, records).await
        }
        async fn delete_run(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
            self.inner.delete_run(tenant, run_id).await
        }
    }

    #[async_trait::async_trait]
    impl SnapshotStore for Damaged {
        async fn put(&self, tenant: &Tenant, snapshot: &SnapshotRecord) -> Result<()> {
            self.inner.put(tenant, snapshot).await
        }
        async fn get(
            &self,
            tenant: &Tenant,
            run_id: &RunId,
            snapshot_id: &SnapshotId,
        ) -> Result<Option<SnapshotRecord>> {
            self.inner.get(tenant, run_id, snapshot_id).await
        }
        async fn list(
            &self,
            tenant: &Tenant,
            run_id: &RunId,
            limit: Option<usize>,
        ) -> Result<Vec<SnapshotRecord>> {
            if limit.is_none_or(|limit| limit > self.listable) {
                return Err(Error::corrupt("snapshot file", "bad bytes"));
            }
            self.inner.list(tenant, run_id, limit).await
        }
        async fn prune(
            &self,
            retention_ms: u64,
            keep_last_per_run: usize,
            now_ms: u64,
        ) -> Result<crate::MaintenanceReport> {
            self.inner
                .prune(retention_ms, keep_last_per_run, now_ms)
                .await
        }
        async fn snapshot_streams(&self) -> Result<Vec<StreamKey>> {
            self.inner.snapshot_streams().await
        }
        async fn delete_snapshots(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
            self.inner.delete_snapshots(tenant, run_id).await
        }
    }

    async fn damaged(bad_seqs: Vec<u64>, listable: usize) -> (Damaged, StreamKey) {
        let inner = MemoryStore::new();
        let tenant = Tenant::local();
        let run = RunId::new("run").unwrap();
        for seq in 1..=40 {
            inner.append(&tenant, &event(seq)).await.unwrap();
        }
        for (n, id) in ["s1", "s2", "s3", "s4", "s5"].iter().enumerate() {
            let seq = n as u64 * 5;
            let snapshot = SnapshotRecord::new(
                &tenant,
                run.clone(),
                SnapshotId::new(*id).unwrap(),
                seq,
                seq,
                RunStatus::Running,
            );
            inner.put(&tenant, &snapshot).await.unwrap();
        }
        let damaged = Damaged {
            inner,
            bad_seqs,
            listable,
            unavailable: false,
        };
        (damaged, StreamKey::new(tenant, run))
    }

    // Each bad record costs only itself: the windows around it are read.
    #[tokio::test]
    async fn the_api_scan_narrows_to_single_records() {
        let (store, key) = damaged(vec![7, 8, 31], 3).await;
        let scan = scan_store(&store).await.unwrap();
        let expected: Vec<u64> = (1..=40).filter(|seq| ![7, 8, 31].contains(seq)).collect();
        assert_eq!(scan.streams.len(), 1);
        assert_eq!(seqs(&scan.streams[0].records), expected);
        let records: Vec<(LossKind, Vec<RangeInclusive<u64>>)> = scan
            .losses
            .iter()
            .map(|loss| (loss.kind, loss.seqs.clone()))
            .collect();
        assert_eq!(
            records[..3],
            [
                (LossKind::Record, vec![7..=7]),
                (LossKind::Record, vec![8..=8]),
                (LossKind::Record, vec![31..=31]),
            ]
        );
        assert_eq!(scan.losses[0].stream.as_ref(), Some(&key));
        assert!(
            scan.losses[0].reason.contains("row 7"),
            "{}",
            scan.losses[0]
        );
        // The three newest snapshots list; the two older do not.
        let ids: Vec<&str> = scan
            .snapshots
            .iter()
            .map(|snapshot| snapshot.snapshot_id.as_str())
            .collect();
        assert_eq!(ids, ["s3", "s4", "s5"]);
        assert_eq!(scan.losses.len(), 4);
        assert_eq!(scan.losses[3].kind, LossKind::Snapshot);
        assert!(
            scan.losses[3].reason.contains("newest 3"),
            "{}",
            scan.losses[3]
        );
    }

    #[tokio::test]
    async fn an_unavailable_store_fails_the_scan() {
        let (mut store, _) = damaged(Vec::new(), 5).await;
        store.unavailable = true;
        let err = scan_store(&store).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
    }
}
