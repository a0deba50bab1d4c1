//! Reads: a window of a stream, fetching only the segments it needs
//! (CONTRACT §6), and every record of a stream, for compaction.
//!
//! A read works on one head: a segment that vanished meanwhile (a flush or
//! compaction replaced the head) answers `None`, and the caller reads again
//! from a newer head.

use futures::{StreamExt, TryStreamExt, stream};
use object_store::path::Path;
use runstore_core::{
    Error, EventRecord, ReadQuery, Result, StreamKey, raw::compaction::compacted_ids,
};

use super::io::segment_what;
use crate::{
    Inner,
    head::{Head, SegmentRef, head_what},
    objects::corrupt,
};

/// Checks the payload of every marker among `records`; a malformed one is
/// `Corrupt` naming the object `at()` (its key and what it is) and the seq.
fn check_markers(records: &[EventRecord], at: impl Fn() -> (Path, String)) -> Result<()> {
    for record in records {
        if let Err(err) = compacted_ids(record) {
            let reason = match err {
                Error::Corrupt { reason, .. } | Error::InvalidInput { reason } => reason,
                other => other.to_string(),
            };
            let (path, what) = at();
            return Err(corrupt(
                &path,
                &what,
                format!("the compaction marker at seq {}: {reason}", record.seq),
            ));
        }
    }
    Ok(())
}

fn overlaps(segment: &SegmentRef, query: &ReadQuery) -> bool {
    query.after_seq.is_none_or(|after| segment.last > after)
        && query.before_seq.is_none_or(|before| segment.first < before)
}

impl Inner {
    /// Reads a window (CONTRACT §6), fetching only the segments it needs.
    pub(super) async fn read_window(
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

    /// Every record of the stream `head` describes, ascending; `None` when a
    /// segment vanished. Every marker's payload is checked here, so that a
    /// malformed one is reported with the object that holds it.
    pub(super) async fn all_records(
        &self,
        key: &StreamKey,
        head: &Head,
    ) -> Result<Option<Vec<EventRecord>>> {
        let segments: Vec<Option<Vec<EventRecord>>> = stream::iter(head.segments.clone())
            .map(|segment| async move { self.read_segment(key, &segment).await })
            .buffered(8)
            .try_collect()
            .await?;
        let mut records = Vec::new();
        for (segment, part) in head.segments.iter().zip(segments) {
            let Some(part) = part else {
                return Ok(None);
            };
            check_markers(&part, || {
                (self.segment_path(key, segment), segment_what(key, segment))
            })?;
            records.extend(part);
        }
        check_markers(&head.buffer, || (self.keys.head(key), head_what(key)))?;
        records.extend(head.buffer.iter().cloned());
        Ok(Some(records))
    }
}
