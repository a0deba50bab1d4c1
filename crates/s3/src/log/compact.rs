//! Compaction of one stream (docs/backends/s3.md, "Compaction"), and the
//! head change by which a snapshot put keeps a compaction that started
//! before it from committing ([`Inner::mark_snapshot`], CONTRACT §8).
//!
//! A compaction rewrites every segment and commits through
//! [`Inner::commit_rebasing`] ([`super::flush`]), reading the snapshot floor
//! again before it replays onto a newer head.

use object_store::{PutMode, PutOptions, PutPayload};
use runstore_core::{
    EventRecord, Result, StreamKey,
    raw::compaction::{CompactionPolicy, compact_stream},
};

use super::{Loaded, MAINTENANCE_ATTEMPTS, Work};
use crate::{
    Inner, backoff,
    error::{contended, request},
    head::{Head, MarkerRef, SegmentRef, head_what},
    new_token,
    objects::{Put, to_json},
};

/// Records in the newest segment a compaction writes...
const COMPACTED_SEGMENT: usize = 4_096;
/// ...and at most in any (as many as a flush merges into one).
const COMPACTED_SEGMENT_MAX: usize = 65_536;

/// The sizes of the segments a compaction writes `len` records into,
/// oldest first: [`COMPACTED_SEGMENT`] records in the newest, doubling
/// towards older ones up to [`COMPACTED_SEGMENT_MAX`]. A tail read stays
/// within small segments, and a lookup of an id, which reads one table per
/// segment, reads five for the newest 61,440 records and one per 65,536
/// older ones, rather than one per 4,096 records.
fn compacted_sizes(len: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let (mut left, mut size) = (len, COMPACTED_SEGMENT);
    while left > 0 {
        let take = size.min(left);
        sizes.push(take);
        left -= take;
        size = size.saturating_mul(2).min(COMPACTED_SEGMENT_MAX);
    }
    sizes.reverse();
    sizes
}

/// Whether compaction with `policy` may prune anything from the stream of
/// `head` whose newest snapshot is at `floor`, judged from the head alone:
/// its buffered records, and for each segment its first seq and the oldest
/// time of its events ([`SegmentRef::oldest_ms`]; a segment that does not
/// record it may). A `false` is exact (no record of the stream is pruned);
/// a `true` may be proved wrong once the segments are read.
fn may_prune(head: &Head, policy: &CompactionPolicy, floor: Option<u64>) -> bool {
    head.buffer
        .iter()
        .any(|record| policy.prunes(record, floor))
        || head.segments.iter().any(|segment| {
            segment
                .oldest_ms
                .is_none_or(|oldest| policy.prunes_parts(false, segment.first, oldest, floor))
        })
}

impl Inner {
    /// Records [`SegmentRef::oldest_ms`] in a head read from a store whose
    /// segments did not (all of them were read into `records`), so that the
    /// next compaction of the stream needs none of them while nothing is
    /// old enough: the head of `loaded` with the field filled in, put
    /// conditionally. Best effort: a lost race or failed put changes
    /// nothing (the next pass reads the segments again). Answers the head
    /// the handle holds next.
    async fn record_oldest(
        &self,
        key: &StreamKey,
        loaded: Loaded,
        records: &[EventRecord],
    ) -> Option<Loaded> {
        if loaded
            .head
            .segments
            .iter()
            .all(|segment| segment.oldest_ms.is_some())
        {
            return Some(loaded);
        }
        let mut next = loaded.head.clone();
        for segment in &mut next.segments {
            let from = records.partition_point(|record| record.seq < segment.first);
            let to = records.partition_point(|record| record.seq <= segment.last);
            segment.oldest_ms = Some(SegmentRef::oldest_of(&records[from..to]));
        }
        match self.put_head(key, &next, loaded.version).await {
            Ok(Put::Done(version)) => Some(Loaded {
                head: next,
                version: Some(version),
            }),
            Ok(Put::Lost) | Err(_) => None,
        }
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
        let what = head_what(key);
        let bytes = to_json(&next, &what)?;
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
            Err(err) => Err(request(format!("put {what} conditionally"), err)),
        }
    }

    /// The newest snapshot's seq of a stream: its compaction floor. One
    /// listing and one GET: the newest snapshot is read (and checked to be
    /// the stream's), the others are ordered by their keys.
    pub(super) async fn snapshot_floor(&self, key: &StreamKey) -> Result<Option<u64>> {
        Ok(self
            .snapshots_of(key, Some(1))
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
    pub(super) async fn compact_one(
        &self,
        key: &StreamKey,
        policy: &CompactionPolicy,
    ) -> Result<usize> {
        let state = self.stream_state(key);
        let mut local = state.leader.lock().await;
        let token = new_token();
        for attempt in 0..MAINTENANCE_ATTEMPTS {
            local.head = None;
            let loaded = self.load(key).await?;
            if loaded.version.is_none() {
                return Ok(0);
            }
            // What the head records tells whether anything can be old
            // enough, before the snapshots are listed (with no floor, which
            // only prunes more) and before any segment is read.
            if !may_prune(&loaded.head, policy, None) {
                local.head = Some(loaded);
                return Ok(0);
            }
            let floor = self.snapshot_floor(key).await?;
            if !may_prune(&loaded.head, policy, floor) {
                local.head = Some(loaded);
                return Ok(0);
            }
            let Some(records) = self.all_records(key, &loaded.head).await? else {
                continue;
            };
            let Some(change) = compact_stream(&key.tenant, &key.run_id, &records, floor, policy)?
            else {
                local.head = self.record_oldest(key, loaded, &records).await;
                return Ok(0);
            };
            let mut kept: Vec<EventRecord> = records
                .into_iter()
                .filter(|record| change.remove_seqs.binary_search(&record.seq).is_err())
                .collect();
            let at = kept.partition_point(|record| record.seq < change.marker.seq);
            kept.insert(at, change.marker);
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
                    .flat_map(|segment| self.segment_paths(key, segment))
                    .collect(),
            };
            let mut rest = kept.as_slice();
            for size in compacted_sizes(kept.len()) {
                let (chunk, after) = rest.split_at(size);
                rest = after;
                let (segment, paths) = self.write_segment(key, chunk).await?;
                next.segments.push(segment);
                work.created.extend(paths);
            }
            next.settle_format();
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacted_segments_double_from_the_newest() {
        assert!(compacted_sizes(0).is_empty());
        assert_eq!(compacted_sizes(10), [10]);
        assert_eq!(compacted_sizes(4_097), [1, 4_096]);
        assert_eq!(compacted_sizes(20_000), [7_712, 8_192, 4_096]);
        let big = compacted_sizes(1_000_001);
        assert_eq!(big.iter().sum::<usize>(), 1_000_001);
        assert_eq!(
            &big[big.len() - 5..],
            [65_536, 32_768, 16_384, 8_192, 4_096]
        );
        assert!(big.iter().all(|size| *size <= COMPACTED_SEGMENT_MAX));
        assert_eq!(big.len(), 4 + 15);
    }
}
