//! The event log: append rounds, flushes, reads, compaction and import
//! (docs/backends/s3.md).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt, stream};
use object_store::{PutMode, PutOptions, PutPayload, UpdateVersion, path::Path};
use runstore_core::{
    AppendOutcome, Error, EventId, EventLog, EventRecord, ReadQuery, Result, RunId, StreamKey,
    Tenant,
    append::{check_run, plan_append, plan_import},
    compaction::{CompactionPolicy, compact_stream},
};
use tokio::sync::oneshot;

use crate::{
    Inner, S3Store, backoff,
    error::{contended, share},
    head::{FLUSH_RECORDS, Head, IdCache, IdEntry, MarkerRef, SegmentRef, index_entries},
    keys::{decode_id, decode_tenant},
    new_token,
    objects::{Put, delete, from_json, get, get_json, put, put_conditional, to_json},
};

/// Rounds a writer runs before answering a retryable "contended" error.
const APPEND_ATTEMPTS: u32 = 64;
/// Attempts of a compaction or import of one stream.
const MAINTENANCE_ATTEMPTS: u32 = 16;
/// Attempts of a read whose segments were replaced while it ran.
const READ_ATTEMPTS: u32 = 8;
/// Most records in one segment made by merging.
const SEGMENT_MAX: u64 = 65_536;
/// Records per segment written by compaction.
const COMPACTED_SEGMENT: usize = 4_096;
/// Parallel requests for id entries and segments.
const PARALLEL: usize = 32;

/// One queued `append_batch` call.
struct Pending {
    events: Vec<EventRecord>,
    expected: Option<u64>,
    reply: oneshot::Sender<Result<Vec<AppendOutcome>>>,
}

/// A head as read (or last written) by this handle; `version` is `None`
/// when the stream does not exist yet.
#[derive(Debug, Clone)]
struct Loaded {
    head: Head,
    version: Option<UpdateVersion>,
}

/// What the leader of a stream's rounds keeps between rounds: speed only.
#[derive(Default)]
struct Local {
    head: Option<Loaded>,
    ids: IdCache,
}

/// A handle's per-stream append queue and leader slot.
#[derive(Default)]
pub(crate) struct StreamState {
    queue: Mutex<Vec<Pending>>,
    leader: Arc<tokio::sync::Mutex<Local>>,
}

impl StreamState {
    fn push(&self, pending: Pending) {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(pending);
    }

    fn drain(&self) -> Vec<Pending> {
        std::mem::take(
            &mut *self
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Objects a head change created, and objects it stopped naming.
#[derive(Debug, Default)]
struct Work {
    created: Vec<Path>,
    replaced: Vec<Path>,
}

fn key_of(tenant: &Tenant, run_id: &RunId) -> StreamKey {
    StreamKey::new(tenant.clone(), run_id.clone())
}

/// Whether the head this handle holds has a buffer due for a flush.
fn flush_due(local: &Local) -> bool {
    local
        .head
        .as_ref()
        .is_some_and(|loaded| loaded.version.is_some() && loaded.head.needs_flush())
}

fn overlaps(segment: &SegmentRef, query: &ReadQuery) -> bool {
    query.after_seq.is_none_or(|after| segment.last > after)
        && query.before_seq.is_none_or(|before| segment.first < before)
}

impl Inner {
    fn segment_path(&self, key: &StreamKey, segment: &SegmentRef) -> Path {
        self.keys
            .segment(key, segment.first, segment.last, &segment.token)
    }

    /// GETs the stream's head.
    async fn load(&self, key: &StreamKey) -> Result<Loaded> {
        let path = self.keys.head(key);
        match get_json::<Head>(self.store(), &path).await? {
            Some((head, version)) => {
                head.check(key, &path)?;
                Ok(Loaded {
                    head,
                    version: Some(version),
                })
            }
            None => Ok(Loaded {
                head: Head::empty(key),
                version: None,
            }),
        }
    }

    /// Puts `head` conditionally on `version`.
    async fn put_head(
        &self,
        key: &StreamKey,
        head: &Head,
        version: Option<UpdateVersion>,
    ) -> Result<Put> {
        let path = self.keys.head(key);
        let bytes = to_json(head, &path)?;
        put_conditional(self.store(), &path, bytes, version).await
    }

    /// The seqs the id index holds for `ids` (`None` = not stored).
    async fn fetch_ids(
        &self,
        key: &StreamKey,
        ids: Vec<EventId>,
    ) -> Result<HashMap<EventId, Option<u64>>> {
        stream::iter(ids)
            .map(|id| async move {
                let path = self.keys.id_entry(key, &id);
                let seq = match get_json::<IdEntry>(self.store(), &path).await? {
                    Some((entry, _)) => Some(entry.seq_for(&id, &path)?),
                    None => None,
                };
                Ok::<_, Error>((id, seq))
            })
            .buffer_unordered(PARALLEL)
            .try_collect()
            .await
    }

    /// Resolves the ids `head` does not know itself: from the id cache when
    /// the head proves it complete, else from the id index.
    async fn resolve(
        &self,
        key: &StreamKey,
        head: &Head,
        cache: &IdCache,
        ids: Vec<EventId>,
    ) -> Result<HashMap<EventId, Option<u64>>> {
        let mut unknown = HashSet::new();
        for id in ids {
            if head.find(&id)?.is_none() {
                unknown.insert(id);
            }
        }
        if cache.covers(head) {
            return Ok(unknown
                .into_iter()
                .map(|id| {
                    let seq = cache.get(&id);
                    (id, seq)
                })
                .collect());
        }
        self.fetch_ids(key, unknown.into_iter().collect()).await
    }

    /// Creates id index entries; an existing entry states the same (only
    /// committed records are indexed), so `AlreadyExists` is fine.
    async fn write_ids(&self, key: &StreamKey, entries: Vec<(EventId, u64)>) -> Result<()> {
        stream::iter(entries)
            .map(|(id, seq)| async move {
                let path = self.keys.id_entry(key, &id);
                let entry = IdEntry { seq, id: Some(id) };
                let bytes = to_json(&entry, &path)?;
                put_conditional(self.store(), &path, bytes, None)
                    .await
                    .map(drop)
            })
            .buffer_unordered(PARALLEL)
            .try_collect::<()>()
            .await
    }

    /// Writes `records` (ascending, non-empty) as a new segment.
    async fn write_segment(
        &self,
        key: &StreamKey,
        records: &[EventRecord],
    ) -> Result<(SegmentRef, Path)> {
        let segment = SegmentRef {
            first: records.first().map_or(0, |record| record.seq),
            last: records.last().map_or(0, |record| record.seq),
            count: records.len() as u64,
            token: new_token(),
        };
        let path = self.segment_path(key, &segment);
        put(self.store(), &path, to_json(&records, &path)?).await?;
        Ok((segment, path))
    }

    /// Reads a segment; `None` when it no longer exists (the head that named
    /// it has been replaced).
    async fn read_segment(
        &self,
        key: &StreamKey,
        segment: &SegmentRef,
    ) -> Result<Option<Vec<EventRecord>>> {
        let path = self.segment_path(key, segment);
        match get(self.store(), &path).await? {
            Some((bytes, _)) => Ok(Some(from_json(&bytes, &path)?)),
            None => Ok(None),
        }
    }

    /// Every record of the stream `head` describes, ascending; `None` when a
    /// segment vanished.
    async fn all_records(&self, key: &StreamKey, head: &Head) -> Result<Option<Vec<EventRecord>>> {
        let segments: Vec<Option<Vec<EventRecord>>> = stream::iter(head.segments.clone())
            .map(|segment| async move { self.read_segment(key, &segment).await })
            .buffered(8)
            .try_collect()
            .await?;
        let mut records = Vec::new();
        for segment in segments {
            let Some(segment) = segment else {
                return Ok(None);
            };
            records.extend(segment);
        }
        records.extend(head.buffer.iter().cloned());
        Ok(Some(records))
    }

    /// Moves `head`'s buffer into new segments (indexing its ids first) and
    /// merges the newest segments while the binary-counter rule says so.
    /// Nothing is committed until `head` is put.
    async fn materialize(&self, key: &StreamKey, head: &mut Head) -> Result<Work> {
        let mut work = Work::default();
        let records = std::mem::take(&mut head.buffer);
        if records.is_empty() {
            return Ok(work);
        }
        self.write_ids(key, index_entries(&records)?).await?;
        for record in &records {
            if record.is_compaction_marker() {
                head.markers.push(MarkerRef {
                    seq: record.seq,
                    event_id: record.event_id.clone(),
                });
            }
        }
        let (segment, path) = self.write_segment(key, &records).await?;
        work.created.push(path);
        head.segments.push(segment);
        head.flushed_through = head.last_seq;
        while head.segments.len() >= 2 {
            let n = head.segments.len();
            let (older, newer) = (&head.segments[n - 2], &head.segments[n - 1]);
            if older.count >= 2 * newer.count || older.count + newer.count > SEGMENT_MAX {
                break;
            }
            let (Some(mut merged), Some(tail)) = (
                self.read_segment(key, older).await?,
                self.read_segment(key, newer).await?,
            ) else {
                return Err(contended(format!("merge segments of {key}")));
            };
            merged.extend(tail);
            let (segment, path) = self.write_segment(key, &merged).await?;
            work.replaced.push(self.segment_path(key, older));
            work.replaced.push(self.segment_path(key, newer));
            work.created.push(path);
            head.segments.truncate(n - 2);
            head.segments.push(segment);
        }
        Ok(work)
    }

    /// Best-effort deletes of objects no head names any more.
    async fn delete_all(&self, paths: Vec<Path>) {
        let _ = stream::iter(paths)
            .map(|path| async move { delete(self.store(), &path).await })
            .buffer_unordered(PARALLEL)
            .collect::<Vec<_>>()
            .await;
    }

    /// Queues the call on `state` and waits for its answer. The first caller
    /// to take the stream's leader slot runs one round for everything
    /// queued, on a task of its own when on a Tokio runtime, so cancelling
    /// the leader's call never drops the other callers' answers: each caller
    /// gets the outcome of the round that committed its events, `inserted`
    /// included (CONTRACT §1). A flush that falls due runs on that task
    /// after the answers are sent, keeping the slot, so no caller waits for
    /// it.
    async fn append(
        self: &Arc<Self>,
        key: &StreamKey,
        events: &[EventRecord],
        expected: Option<u64>,
    ) -> Result<Vec<AppendOutcome>> {
        let state = self.stream_state(key);
        // An answer is dropped only when its round never ran to the end (a
        // panic, or a cancelled leader off a Tokio runtime); the call then
        // queues again (appends are idempotent by id, CONTRACT §2).
        for _ in 0..APPEND_ATTEMPTS {
            let (reply, mut answer) = oneshot::channel();
            state.push(Pending {
                events: events.to_vec(),
                expected,
                reply,
            });
            tokio::select! {
                biased;
                result = &mut answer => match result {
                    Ok(result) => return result,
                    Err(_) => continue,
                },
                local = state.leader.clone().lock_owned() => {
                    match tokio::runtime::Handle::try_current() {
                        Ok(runtime) => {
                            let inner = self.clone();
                            let key = key.clone();
                            let state = state.clone();
                            runtime.spawn(async move { inner.lead(&key, &state, local).await });
                        }
                        // Not on a Tokio runtime: run the round (and a due
                        // flush) before answering.
                        Err(_) => self.lead(key, &state, local).await,
                    }
                    match answer.await {
                        Ok(result) => return result,
                        Err(_) => continue,
                    }
                }
            }
        }
        Err(contended(format!("append to {key}")))
    }

    /// Holding the leader slot: one round for everything queued on `state`,
    /// then a flush if one fell due.
    async fn lead(
        &self,
        key: &StreamKey,
        state: &StreamState,
        mut local: tokio::sync::OwnedMutexGuard<Local>,
    ) {
        let batch = state.drain();
        if !batch.is_empty() {
            self.round(key, &mut local, batch).await;
        }
        self.maybe_flush(key, &mut local).await;
    }

    /// One protocol round for `batch`.
    async fn round(&self, key: &StreamKey, local: &mut Local, batch: Vec<Pending>) {
        let token = new_token();
        match self.commit(key, local, &batch, &token).await {
            Ok(answers) => {
                for (pending, answer) in batch.into_iter().zip(answers) {
                    let _ = pending.reply.send(answer);
                }
            }
            Err(err) => {
                for pending in batch {
                    let _ = pending.reply.send(Err(share(&err)));
                }
            }
        }
    }

    /// Plans every request of `batch` against the head and commits them with
    /// one conditional head put (docs/backends/s3.md, "Append").
    async fn commit(
        &self,
        key: &StreamKey,
        local: &mut Local,
        batch: &[Pending],
        token: &str,
    ) -> Result<Vec<Result<Vec<AppendOutcome>>>> {
        for attempt in 0..APPEND_ATTEMPTS {
            let loaded = match local.head.take() {
                Some(loaded) => loaded,
                None => self.load(key).await?,
            };
            local.ids.catch_up(&loaded.head)?;
            let covered = local.ids.covers(&loaded.head);
            let mut ids = Vec::new();
            for pending in batch {
                ids.extend(pending.events.iter().map(|event| event.event_id.clone()));
            }
            let known = self.resolve(key, &loaded.head, &local.ids, ids).await?;
            let head = &loaded.head;
            let mut last = head.last_seq;
            let mut planned: HashMap<EventId, u64> = HashMap::new();
            let mut new_records = Vec::new();
            let mut answers = Vec::with_capacity(batch.len());
            for pending in batch {
                let plan = plan_append(
                    &key.tenant,
                    &key.run_id,
                    last,
                    &pending.events,
                    pending.expected,
                    |id| {
                        if let Some(seq) = planned.get(id) {
                            return Ok(Some(*seq));
                        }
                        if let Some(seq) = head.find(id)? {
                            return Ok(Some(seq));
                        }
                        Ok(known.get(id).copied().flatten())
                    },
                );
                match plan {
                    Ok(plan) => {
                        for record in &plan.new_records {
                            planned.insert(record.event_id.clone(), record.seq);
                        }
                        last += plan.new_records.len() as u64;
                        new_records.extend(plan.new_records);
                        answers.push(Ok(plan.outcomes));
                    }
                    Err(err) => answers.push(Err(err)),
                }
            }
            if new_records.is_empty() {
                local.head = Some(loaded);
                return Ok(answers);
            }
            let mut next = loaded.head.clone();
            next.buffer.extend(new_records.iter().cloned());
            next.last_seq = last;
            next.remember(token);
            match self.put_head(key, &next, loaded.version.clone()).await? {
                Put::Done(version) => {
                    if covered {
                        local.ids.extend(&new_records, last)?;
                    }
                    local.head = Some(Loaded {
                        head: next,
                        version: Some(version),
                    });
                    return Ok(answers);
                }
                Put::Lost => {
                    let current = self.load(key).await?;
                    let landed = current.head.has_commit(token);
                    local.head = Some(current);
                    if landed {
                        // An earlier attempt of this very put succeeded
                        // (the client retried it after a lost response).
                        return Ok(answers);
                    }
                    backoff(attempt).await;
                }
            }
        }
        Err(contended(format!("append to {key}")))
    }

    /// Flushes the cached head's buffer into a segment when it is due. A
    /// failed flush only drops the cached head; the next round retries.
    async fn maybe_flush(&self, key: &StreamKey, local: &mut Local) {
        if !flush_due(local) {
            return;
        }
        let Some(loaded) = local.head.take() else {
            return;
        };
        let mut next = loaded.head.clone();
        next.remember(&new_token());
        let Ok(work) = self.materialize(key, &mut next).await else {
            return;
        };
        if let Ok(Some(done)) = self.commit_rebasing(key, &loaded, next, &work, None).await {
            local.head = Some(done);
        }
    }

    /// Whether `head` names a segment `work` created.
    fn references(&self, key: &StreamKey, head: &Head, work: &Work) -> bool {
        head.segments
            .iter()
            .any(|segment| work.created.contains(&self.segment_path(key, segment)))
    }

    /// Commits `changed` (`base` with its buffer moved into the segments of
    /// `work`), replaying it onto heads that only gained appended records
    /// meanwhile (see [`Head::rebase`]), so flushes and compactions are not
    /// starved by a busy stream. A compaction passes the seqs it removes:
    /// before replaying it onto a new head, the snapshot floor is read again
    /// (after that head) and the change is dropped unless every removed seq
    /// is still below it. Returns the committed head, `Ok(None)` when the
    /// change was dropped (its new objects are then deleted: no head names
    /// them), or the error of a put whose outcome is unknown (the new
    /// objects are kept: a head may name them).
    async fn commit_rebasing(
        &self,
        key: &StreamKey,
        base: &Loaded,
        changed: Head,
        work: &Work,
        removes: Option<&[u64]>,
    ) -> Result<Option<Loaded>> {
        let mut target = changed.clone();
        let mut version = base.version.clone();
        for attempt in 0..MAINTENANCE_ATTEMPTS {
            match self.put_head(key, &target, version.clone()).await? {
                Put::Done(new_version) => {
                    self.delete_all(work.replaced.clone()).await;
                    return Ok(Some(Loaded {
                        head: target,
                        version: Some(new_version),
                    }));
                }
                Put::Lost => {
                    let current = self.load(key).await?;
                    if self.references(key, &current.head, work) {
                        // An earlier attempt landed (its response was lost
                        // and the client's retry found the head changed).
                        self.delete_all(work.replaced.clone()).await;
                        return Ok(Some(current));
                    }
                    let mut rebased = Head::rebase(&base.head, &changed, &current.head);
                    if rebased.is_some()
                        && let Some(removes) = removes
                    {
                        let floor = self.snapshot_floor(key).await?;
                        if !removes
                            .iter()
                            .all(|seq| floor.is_none_or(|floor| *seq < floor))
                        {
                            rebased = None;
                        }
                    }
                    let Some(rebased) = rebased else {
                        self.delete_all(work.created.clone()).await;
                        return Ok(None);
                    };
                    target = rebased;
                    version = current.version;
                    if attempt > 0 {
                        backoff(attempt).await;
                    }
                }
            }
        }
        Err(contended(format!("commit a flush or compaction of {key}")))
    }

    /// Reads a window (CONTRACT §6), fetching only the segments it needs.
    async fn read_window(
        &self,
        key: &StreamKey,
        head: &Head,
        query: &ReadQuery,
    ) -> Result<Option<Vec<EventRecord>>> {
        let buffered: Vec<EventRecord> = head
            .buffer
            .iter()
            .filter(|record| query.contains(record.seq))
            .cloned()
            .collect();
        let segments: Vec<&SegmentRef> = head
            .segments
            .iter()
            .filter(|segment| overlaps(segment, query))
            .collect();
        let in_window = |records: Vec<EventRecord>| -> Vec<EventRecord> {
            records
                .into_iter()
                .filter(|record| query.contains(record.seq))
                .collect()
        };
        let mut records = Vec::new();
        match (query.effective_limit(), query.tail) {
            (Some(limit), true) => {
                let mut have = buffered.len();
                let mut older = Vec::new();
                for segment in segments.iter().rev() {
                    if have >= limit {
                        break;
                    }
                    let Some(part) = self.read_segment(key, segment).await? else {
                        return Ok(None);
                    };
                    let part = in_window(part);
                    have += part.len();
                    older.push(part);
                }
                for part in older.into_iter().rev() {
                    records.extend(part);
                }
            }
            (Some(limit), false) => {
                for segment in &segments {
                    if records.len() >= limit {
                        break;
                    }
                    let Some(part) = self.read_segment(key, segment).await? else {
                        return Ok(None);
                    };
                    records.extend(in_window(part));
                }
            }
            (None, _) => {
                let owned: Vec<SegmentRef> = segments.into_iter().cloned().collect();
                let parts: Vec<Option<Vec<EventRecord>>> = stream::iter(owned)
                    .map(|segment| async move { self.read_segment(key, &segment).await })
                    .buffered(8)
                    .try_collect()
                    .await?;
                for part in parts {
                    let Some(part) = part else {
                        return Ok(None);
                    };
                    records.extend(in_window(part));
                }
            }
        }
        records.extend(buffered);
        Ok(Some(query.apply(records, |record| record.seq)))
    }

    /// Changes the stream's head (a new commit token, nothing else) after a
    /// snapshot of it was stored, so that a compaction that read the head
    /// before the snapshot existed cannot commit on it (see
    /// [`Inner::compact_one`]). A lost race is as good: the head changed
    /// after the snapshot was stored. A stream without a head has nothing to
    /// compact, and a store without conditional updates cannot commit a
    /// compaction, so neither needs the change.
    pub(crate) async fn mark_snapshot(&self, key: &StreamKey) -> Result<()> {
        let loaded = self.load(key).await?;
        let Some(version) = loaded.version else {
            return Ok(());
        };
        let mut next = loaded.head;
        next.remember(&new_token());
        let path = self.keys.head(key);
        let bytes = to_json(&next, &path)?;
        let mode = PutOptions::from(PutMode::Update(version));
        match self
            .store()
            .put_opts(&path, PutPayload::from(bytes), mode)
            .await
        {
            Ok(_)
            | Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. }
                | object_store::Error::NotImplemented
                | object_store::Error::NotSupported { .. },
            ) => Ok(()),
            Err(err) => Err(crate::error::request(
                format!("conditional put {path}"),
                err,
            )),
        }
    }

    /// The newest snapshot's seq of a stream: its compaction floor.
    async fn snapshot_floor(&self, key: &StreamKey) -> Result<Option<u64>> {
        Ok(self
            .snapshots_of(&key.tenant, &key.run_id)
            .await?
            .last()
            .map(|snapshot| snapshot.seq))
    }

    /// Compacts one stream (docs/backends/s3.md, "Compaction").
    ///
    /// The floor is read after the head the commit conditionally replaces,
    /// and again after every head a rebase would replace: a snapshot `put`
    /// changes the head once its object is stored ([`Inner::mark_snapshot`]),
    /// so a put that returned before the commit either is seen by that read
    /// or makes the conditional put lose (CONTRACT §8).
    async fn compact_one(&self, key: &StreamKey, policy: &CompactionPolicy) -> Result<usize> {
        let state = self.stream_state(key);
        let mut local = state.leader.lock().await;
        let token = new_token();
        for attempt in 0..MAINTENANCE_ATTEMPTS {
            local.head = None;
            let loaded = self.load(key).await?;
            if loaded.version.is_none() {
                return Ok(0);
            }
            let floor = self.snapshot_floor(key).await?;
            let Some(records) = self.all_records(key, &loaded.head).await? else {
                continue;
            };
            let Some(change) = compact_stream(&key.tenant, &key.run_id, &records, floor, policy)?
            else {
                local.head = Some(loaded);
                return Ok(0);
            };
            let mut kept: Vec<EventRecord> = records
                .into_iter()
                .filter(|record| change.remove_seqs.binary_search(&record.seq).is_err())
                .collect();
            let at = kept.partition_point(|record| record.seq < change.marker.seq);
            kept.insert(at, change.marker);
            self.write_ids(key, index_entries(&loaded.head.buffer)?)
                .await?;
            let mut next = loaded.head.clone();
            next.buffer.clear();
            next.segments.clear();
            next.flushed_through = next.last_seq;
            next.markers = kept
                .iter()
                .filter(|record| record.is_compaction_marker())
                .map(|record| MarkerRef {
                    seq: record.seq,
                    event_id: record.event_id.clone(),
                })
                .collect();
            next.remember(&token);
            let mut work = Work {
                created: Vec::new(),
                replaced: loaded
                    .head
                    .segments
                    .iter()
                    .map(|segment| self.segment_path(key, segment))
                    .collect(),
            };
            for chunk in kept.chunks(COMPACTED_SEGMENT) {
                let (segment, path) = self.write_segment(key, chunk).await?;
                next.segments.push(segment);
                work.created.push(path);
            }
            let removes = Some(change.remove_seqs.as_slice());
            match self
                .commit_rebasing(key, &loaded, next, &work, removes)
                .await?
            {
                Some(done) => {
                    local.head = Some(done);
                    return Ok(change.pruned);
                }
                None => backoff(attempt).await,
            }
        }
        Err(contended(format!("compact {key}")))
    }

    /// Imports an exported stream (docs/backends/s3.md, "Import"): checks it
    /// once with `plan_import`, then commits the missing records in chunks,
    /// each one conditional head put on the head the previous one wrote (so
    /// nothing changed in between), flushing as appends do. Id index entries
    /// are only ever written for committed records.
    async fn import(&self, key: &StreamKey, records: &[EventRecord]) -> Result<usize> {
        check_run(&key.run_id, records)?;
        let state = self.stream_state(key);
        let mut local = state.leader.lock().await;
        let mut written = 0;
        'plan: for attempt in 0..MAINTENANCE_ATTEMPTS {
            let loaded = match local.head.take() {
                Some(loaded) => loaded,
                None => self.load(key).await?,
            };
            local.ids.catch_up(&loaded.head)?;
            let last = loaded.head.last_seq;
            let ids = records
                .iter()
                .filter(|record| record.seq <= last)
                .map(|record| record.event_id.clone())
                .collect();
            let known = self.resolve(key, &loaded.head, &local.ids, ids).await?;
            let head = &loaded.head;
            let missing = plan_import(&key.tenant, &key.run_id, last, records, |id| {
                if let Some(seq) = head.find(id)? {
                    return Ok(Some(seq));
                }
                Ok(known.get(id).copied().flatten())
            })?;
            local.head = Some(loaded);
            for chunk in missing.chunks(FLUSH_RECORDS) {
                let Some(loaded) = local.head.take() else {
                    continue 'plan;
                };
                let mut next = loaded.head.clone();
                next.buffer.extend(chunk.iter().cloned());
                next.last_seq = chunk.last().map_or(next.last_seq, |record| record.seq);
                next.remember(&new_token());
                match self.put_head(key, &next, loaded.version.clone()).await? {
                    Put::Done(version) => {
                        written += chunk.len();
                        local.head = Some(Loaded {
                            head: next,
                            version: Some(version),
                        });
                        self.maybe_flush(key, &mut local).await;
                    }
                    Put::Lost => {
                        backoff(attempt).await;
                        continue 'plan;
                    }
                }
            }
            return Ok(written);
        }
        Err(contended(format!("import into {key}")))
    }

    /// The run ids under a tenant's directory; hashed segments are resolved
    /// through the stream's head.
    async fn runs_under(&self, tenant: Option<&Tenant>, dir: &Path) -> Result<Vec<StreamKey>> {
        let listing = self
            .store()
            .list_with_delimiter(Some(dir))
            .await
            .map_err(|err| crate::error::request(format!("list {dir}"), err))?;
        let mut keys = Vec::new();
        for prefix in listing.common_prefixes {
            let Some(run_segment) = prefix.parts().last() else {
                continue;
            };
            let decoded = decode_id(run_segment.as_ref()).and_then(|run| RunId::new(run).ok());
            match (tenant, decoded) {
                (Some(tenant), Some(run_id)) => keys.push(StreamKey::new(tenant.clone(), run_id)),
                _ => {
                    let path = prefix.child("head");
                    if let Some((head, _)) = get_json::<Head>(self.store(), &path).await? {
                        keys.push(head.stream().map_err(|err| Error::corrupt(&path, err))?);
                    }
                }
            }
        }
        Ok(keys)
    }
}

#[async_trait]
impl EventLog for S3Store {
    /// CONTRACT §1-§5; see docs/backends/s3.md, "Append".
    ///
    /// # Cancel safety
    /// The batch is committed by one conditional put: a dropped future
    /// leaves it fully written or not at all; retrying is safe.
    async fn append_batch(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        events: &[EventRecord],
        expected_last_seq: Option<u64>,
    ) -> Result<Vec<AppendOutcome>> {
        check_run(run_id, events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.inner
            .append(&key_of(tenant, run_id), events, expected_last_seq)
            .await
    }

    async fn read(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        query: ReadQuery,
    ) -> Result<Vec<EventRecord>> {
        let key = key_of(tenant, run_id);
        for _ in 0..READ_ATTEMPTS {
            let loaded = self.inner.load(&key).await?;
            if loaded.version.is_none() {
                return Ok(Vec::new());
            }
            if let Some(records) = self.inner.read_window(&key, &loaded.head, &query).await? {
                return Ok(records);
            }
        }
        Err(contended(format!("read {key}")))
    }

    async fn next_seq(&self, tenant: &Tenant, run_id: &RunId) -> Result<u64> {
        Ok(self
            .inner
            .load(&key_of(tenant, run_id))
            .await?
            .head
            .last_seq
            + 1)
    }

    async fn seq_of(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        event_id: &EventId,
    ) -> Result<Option<u64>> {
        let key = key_of(tenant, run_id);
        let loaded = self.inner.load(&key).await?;
        if loaded.version.is_none() {
            return Ok(None);
        }
        if let Some(seq) = loaded.head.find(event_id)? {
            return Ok(Some(seq));
        }
        let found = self.inner.fetch_ids(&key, vec![event_id.clone()]).await?;
        Ok(found.get(event_id).copied().flatten())
    }

    async fn list_runs(&self, tenant: &Tenant) -> Result<Vec<RunId>> {
        let dir = self.inner.keys.tenant_streams(tenant);
        let mut runs: Vec<RunId> = self
            .inner
            .runs_under(Some(tenant), &dir)
            .await?
            .into_iter()
            .filter(|key| key.tenant == *tenant)
            .map(|key| key.run_id)
            .collect();
        runs.sort();
        runs.dedup();
        Ok(runs)
    }

    async fn compact(&self, retention_ms: u64, now_ms: u64) -> Result<usize> {
        let Some(policy) = CompactionPolicy::new(retention_ms, now_ms) else {
            return Ok(0);
        };
        let mut pruned = 0;
        for key in self.streams().await? {
            pruned += self.inner.compact_one(&key, &policy).await?;
        }
        Ok(pruned)
    }

    async fn streams(&self) -> Result<Vec<StreamKey>> {
        let root = self.inner.keys.events_root();
        let listing = self
            .inner
            .store()
            .list_with_delimiter(Some(&root))
            .await
            .map_err(|err| crate::error::request(format!("list {root}"), err))?;
        let mut keys = Vec::new();
        for dir in listing.common_prefixes {
            let tenant = dir
                .parts()
                .last()
                .and_then(|segment| decode_tenant(segment.as_ref()));
            keys.extend(self.inner.runs_under(tenant.as_ref(), &dir).await?);
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    async fn import_stream(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        records: &[EventRecord],
    ) -> Result<usize> {
        self.inner.import(&key_of(tenant, run_id), records).await
    }
}
