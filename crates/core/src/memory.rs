//! [`MemoryStore`]: the model implementation.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use async_trait::async_trait;

use crate::{
    AppendOutcome, EventId, EventLog, EventRecord, FeedPosition, FeedRecord, FeedSignal,
    MaintenanceReport, ReadQuery, Result, RunId, SnapshotId, SnapshotRecord, SnapshotStore,
    StreamKey, Tenant,
    raw::{
        append::{plan_append, plan_import},
        compaction::{CompactionPolicy, compact_stream, seq_among},
        erasure::{erasure_marker, is_erased},
        snapshots::{keep_newest, prune_selection, snapshot_order},
    },
    validate::{Limits, check_clock},
};

/// Both traits over plain collections behind one mutex.
///
/// Deliberately simple: every operation scans what it needs, so it is easy
/// to see that it follows the contract. The conformance suite's property
/// test compares every backend against it; it also serves as a store for
/// unit tests. Nothing survives the last clone of the handle.
///
/// ```
/// use runstore_core::{EventLogExt, EventRecord, MemoryStore, RunId, EventId, Tenant};
/// # tokio_test();
/// # fn tokio_test() {
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// let store = MemoryStore::new();
/// let tenant = Tenant::local();
/// let event = EventRecord::new(&tenant, RunId::new("run-1")?, EventId::new("e-1")?, "started", 0);
/// assert_eq!(store.append(&tenant, &event).await?.seq, 1);
/// assert!(!store.append(&tenant, &event).await?.inserted);
/// # Ok::<_, runstore_core::Error>(())
/// # }).unwrap();
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    limits: Limits,
    signal: FeedSignal,
}

#[derive(Debug, Default)]
struct State {
    /// Each stream's records, ascending by seq.
    streams: BTreeMap<StreamKey, Vec<EventRecord>>,
    snapshots: BTreeMap<(StreamKey, SnapshotId), SnapshotRecord>,
    /// The feed position of every record, by stream and seq (CONTRACT §29).
    positions: BTreeMap<StreamKey, BTreeMap<u64, u64>>,
    /// Each tenant's last feed position handed out.
    feed_heads: BTreeMap<Tenant, u64>,
}

impl State {
    /// Gives `records` (new in `key`'s stream) the tenant's next positions,
    /// in order.
    fn place<'r>(&mut self, key: &StreamKey, records: impl IntoIterator<Item = &'r EventRecord>) {
        let head = self.feed_heads.entry(key.tenant.clone()).or_default();
        let positions = self.positions.entry(key.clone()).or_default();
        for record in records {
            *head += 1;
            positions.insert(record.seq, *head);
        }
    }

    /// Forgets the positions of `key`'s records that are no longer stored.
    fn forget_removed(&mut self, key: &StreamKey) {
        let kept: std::collections::BTreeSet<u64> =
            self.stream(key).iter().map(|record| record.seq).collect();
        if let Some(positions) = self.positions.get_mut(key) {
            positions.retain(|seq, _| kept.contains(seq));
        }
    }

    fn stream(&self, key: &StreamKey) -> &[EventRecord] {
        self.streams.get(key).map_or(&[], Vec::as_slice)
    }

    fn last_seq(&self, key: &StreamKey) -> u64 {
        self.stream(key).last().map_or(0, |record| record.seq)
    }

    fn seq_of(&self, key: &StreamKey, event_id: &EventId) -> Result<Option<u64>> {
        seq_among(self.stream(key), event_id)
    }

    fn snapshots_of(&self, key: &StreamKey) -> Vec<SnapshotRecord> {
        let mut list: Vec<SnapshotRecord> = self
            .snapshots
            .iter()
            .filter(|((stream, _), _)| stream == key)
            .map(|(_, snapshot)| snapshot.clone())
            .collect();
        list.sort_by(snapshot_order);
        list
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store enforcing `limits` (CONTRACT §21).
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change:
        // every mutation below is computed first and applied in one step.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn key(tenant: &Tenant, run_id: &RunId) -> StreamKey {
    StreamKey::new(tenant.clone(), run_id.clone())
}

#[async_trait]
impl EventLog for MemoryStore {
    async fn append_batch(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        events: &[EventRecord],
        expected_last_seq: Option<u64>,
    ) -> Result<Vec<AppendOutcome>> {
        self.limits.check_append(run_id, events)?;
        let key = key(tenant, run_id);
        let mut state = self.lock();
        let last = state.last_seq(&key);
        let plan = plan_append(tenant, run_id, last, events, expected_last_seq, |id| {
            state.seq_of(&key, id)
        })?;
        if !plan.is_noop() {
            state.place(&key, &plan.new_records);
            state
                .streams
                .entry(key)
                .or_default()
                .extend(plan.new_records);
            self.signal.raise();
        }
        Ok(plan.outcomes)
    }

    async fn read(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        query: ReadQuery,
    ) -> Result<Vec<EventRecord>> {
        let state = self.lock();
        Ok(query.apply(
            state.stream(&key(tenant, run_id)).iter().cloned(),
            |record| record.seq,
        ))
    }

    async fn next_seq(&self, tenant: &Tenant, run_id: &RunId) -> Result<u64> {
        Ok(self.lock().last_seq(&key(tenant, run_id)) + 1)
    }

    async fn seq_of(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        event_id: &EventId,
    ) -> Result<Option<u64>> {
        self.lock().seq_of(&key(tenant, run_id), event_id)
    }

    async fn list_runs(&self, tenant: &Tenant) -> Result<Vec<RunId>> {
        let state = self.lock();
        let mut runs = Vec::new();
        for (stream, records) in &state.streams {
            if stream.tenant == *tenant && !is_erased(records)? {
                runs.push(stream.run_id.clone());
            }
        }
        Ok(runs)
    }

    async fn compact(&self, retention_ms: u64, now_ms: u64) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport::default();
        let Some(policy) = CompactionPolicy::new(retention_ms, now_ms)? else {
            return Ok(report);
        };
        let mut state = self.lock();
        let mut changes = Vec::new();
        for (stream, records) in &state.streams {
            let floor = state
                .snapshots_of(stream)
                .last()
                .map(|snapshot| snapshot.seq);
            match compact_stream(&stream.tenant, &stream.run_id, records, floor, &policy) {
                Ok(Some(change)) => changes.push((stream.clone(), change)),
                Ok(None) => {}
                Err(error) => report.record(stream, Err(error)),
            }
        }
        let changed = !changes.is_empty();
        for (stream, change) in changes {
            let records = state.streams.get_mut(&stream).expect("stream seen above");
            records.retain(|record| change.remove_seqs.binary_search(&record.seq).is_err());
            let at = records.partition_point(|record| record.seq < change.marker.seq);
            records.insert(at, change.marker.clone());
            state.forget_removed(&stream);
            state.place(&stream, [&change.marker]);
            report.record(&stream, Ok(change.pruned));
        }
        if changed {
            self.signal.raise();
        }
        Ok(report)
    }

    async fn streams(&self) -> Result<Vec<StreamKey>> {
        Ok(self.lock().streams.keys().cloned().collect())
    }

    async fn import_stream(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        records: &[EventRecord],
    ) -> Result<usize> {
        self.limits.check_import(run_id, records)?;
        let key = key(tenant, run_id);
        let mut state = self.lock();
        let last = state.last_seq(&key);
        let missing = plan_import(tenant, run_id, last, records, |id| state.seq_of(&key, id))?;
        if !missing.is_empty() {
            state.place(&key, missing);
            state
                .streams
                .entry(key)
                .or_default()
                .extend_from_slice(missing);
            self.signal.raise();
        }
        Ok(missing.len())
    }

    async fn delete_run(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
        let key = key(tenant, run_id);
        let mut state = self.lock();
        let Some(records) = state.streams.get_mut(&key) else {
            return Ok(0);
        };
        if is_erased(records)? {
            return Ok(0);
        }
        let last = records.last().map_or(0, |record| record.seq);
        let deleted = records
            .iter()
            .filter(|record| !record.is_compaction_marker())
            .count();
        let marker = erasure_marker(tenant, run_id, last);
        *records = vec![marker.clone()];
        state.forget_removed(&key);
        state.place(&key, [&marker]);
        self.signal.raise();
        Ok(deleted)
    }

    async fn read_feed(
        &self,
        tenant: &Tenant,
        after: FeedPosition,
        limit: usize,
    ) -> Result<Vec<FeedRecord>> {
        let state = self.lock();
        let mut feed = Vec::new();
        for (stream, records) in &state.streams {
            if stream.tenant != *tenant {
                continue;
            }
            let positions = &state.positions[stream];
            for record in records {
                let position = FeedPosition::new(positions[&record.seq]);
                if position > after {
                    feed.push(FeedRecord {
                        position,
                        record: record.clone(),
                    });
                }
            }
        }
        feed.sort_by_key(|entry| entry.position);
        feed.truncate(limit);
        Ok(feed)
    }

    fn feed_signal(&self) -> Option<FeedSignal> {
        Some(self.signal.clone())
    }
}

#[async_trait]
impl SnapshotStore for MemoryStore {
    async fn put(&self, tenant: &Tenant, snapshot: &SnapshotRecord) -> Result<()> {
        self.limits.check_snapshot(snapshot)?;
        let mut snapshot = snapshot.clone();
        tenant.stamp(&mut snapshot.scope.tenant_context);
        let stream = key(tenant, &snapshot.run_id);
        self.lock()
            .snapshots
            .insert((stream, snapshot.snapshot_id.clone()), snapshot);
        Ok(())
    }

    async fn get(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        snapshot_id: &SnapshotId,
    ) -> Result<Option<SnapshotRecord>> {
        Ok(self
            .lock()
            .snapshots
            .get(&(key(tenant, run_id), snapshot_id.clone()))
            .cloned())
    }

    async fn list(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        limit: Option<usize>,
    ) -> Result<Vec<SnapshotRecord>> {
        Ok(keep_newest(
            self.lock().snapshots_of(&key(tenant, run_id)),
            limit,
        ))
    }

    async fn prune(
        &self,
        retention_ms: u64,
        keep_last_per_run: usize,
        now_ms: u64,
    ) -> Result<MaintenanceReport> {
        check_clock(now_ms)?;
        let mut state = self.lock();
        let streams: Vec<StreamKey> = state
            .snapshots
            .keys()
            .map(|(stream, _)| stream.clone())
            .collect();
        let mut doomed = Vec::new();
        for stream in streams.iter().collect::<std::collections::BTreeSet<_>>() {
            let ordered = state.snapshots_of(stream);
            for index in prune_selection(&ordered, retention_ms, keep_last_per_run, now_ms) {
                doomed.push((stream.clone(), ordered[index].snapshot_id.clone()));
            }
        }
        let mut report = MaintenanceReport::default();
        for (stream, snapshot_id) in doomed {
            state.snapshots.remove(&(stream.clone(), snapshot_id));
            report.record(&stream, Ok(1));
        }
        Ok(report)
    }

    async fn delete_snapshots(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
        let key = key(tenant, run_id);
        let mut state = self.lock();
        let before = state.snapshots.len();
        state.snapshots.retain(|(stream, _), _| *stream != key);
        Ok(before - state.snapshots.len())
    }

    async fn snapshot_streams(&self) -> Result<Vec<StreamKey>> {
        let mut streams: Vec<StreamKey> = self
            .lock()
            .snapshots
            .keys()
            .map(|(stream, _)| stream.clone())
            .collect();
        streams.dedup();
        Ok(streams)
    }
}
