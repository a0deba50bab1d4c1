//! Flushes: the head's buffer moved into segment objects, and the newest
//! segments merged (docs/backends/s3.md).
//!
//! [`Inner::maybe_flush`] runs after an append round or an import chunk
//! when the buffer is due; [`Inner::commit_rebasing`] commits the changed
//! head, replaying it onto heads that only gained appends meanwhile, for
//! flushes and compactions alike.

use futures::{StreamExt, TryStreamExt, stream};
use runstore_core::{EventRecord, Result, StreamKey};

use super::{Loaded, Local, MAINTENANCE_ATTEMPTS, Work};
use crate::{
    Inner, backoff,
    error::contended,
    head::{Head, MarkerRef},
    new_token,
    objects::Put,
};

/// Most records in one segment made by merging.
const SEGMENT_MAX: u64 = 65_536;
/// Segments a flush reads at once to merge them.
const MERGE_PARALLEL: usize = 8;

/// Whether the head this handle holds has a buffer due for a flush.
fn flush_due(local: &Local) -> bool {
    local
        .head
        .as_ref()
        .is_some_and(|loaded| loaded.version.is_some() && loaded.head.needs_flush())
}

impl Inner {
    /// Flushes the cached head's buffer into a segment when it is due. A
    /// failed flush only drops the cached head; the next round retries.
    pub(super) async fn maybe_flush(&self, key: &StreamKey, local: &mut Local) {
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

    /// Moves `head`'s buffer into a new segment (its id table included),
    /// merged in the same write with the newest segments the binary-counter
    /// rule would merge it with: those are read (in parallel) and replaced,
    /// so a flush writes one segment whatever it merges. Nothing is
    /// committed until `head` is put.
    async fn materialize(&self, key: &StreamKey, head: &mut Head) -> Result<Work> {
        let mut work = Work::default();
        let records = std::mem::take(&mut head.buffer);
        if records.is_empty() {
            return Ok(work);
        }
        for record in &records {
            if record.is_compaction_marker() {
                head.markers.push(MarkerRef {
                    seq: record.seq,
                    event_id: record.event_id.clone(),
                });
            }
        }
        // The rule compares the newest segment with the one before it and
        // merges while the older is less than twice the newer: the new
        // segment absorbs older ones from the end while they qualify. A
        // segment weighs its records or its table's entries, whichever is
        // more, so a compaction marker remembering many ids (a segment of
        // few records and a large table) is not rewritten by the flushes
        // after it.
        let mut count = u64::try_from(records.len()).unwrap_or(u64::MAX);
        let mut keep = head.segments.len();
        while keep > 0 {
            let older = head.segments[keep - 1].weight();
            // Counts come from a stored head: saturate rather than trust them.
            if older >= count.saturating_mul(2) || older.saturating_add(count) > SEGMENT_MAX {
                break;
            }
            count = count.saturating_add(older);
            keep -= 1;
        }
        let merged = head.segments.split_off(keep);
        let parts: Vec<Option<Vec<EventRecord>>> = stream::iter(merged.clone())
            .map(|segment| async move { self.read_segment(key, &segment).await })
            .buffered(MERGE_PARALLEL)
            .try_collect()
            .await?;
        let mut all = Vec::new();
        for part in parts {
            let Some(part) = part else {
                return Err(contended(format!("merge segments of {key}")));
            };
            all.extend(part);
        }
        all.extend(records);
        let (segment, paths) = self.write_segment(key, &all).await?;
        work.created.extend(paths);
        work.replaced.extend(
            merged
                .iter()
                .flat_map(|segment| self.segment_paths(key, segment)),
        );
        head.segments.push(segment);
        head.flushed_through = head.last_seq;
        head.settle_format();
        Ok(work)
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
    pub(super) async fn commit_rebasing(
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
}
