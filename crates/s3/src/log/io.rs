//! The stream's objects: its head, its segments and its id index entries,
//! read and written with the request shapes of [`crate::objects`].
//!
//! Nothing here decides what a change means: a head put is conditional and
//! its caller handles a lost race; a segment is written before a head names
//! it, and deleted ([`Inner::delete_all`]) only once no head does.

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt, stream};
use object_store::{UpdateVersion, path::Path};
use runstore_core::{Error, EventId, EventRecord, Result, StreamKey};

use super::Loaded;
use crate::{
    Inner,
    head::{Head, IdCache, IdEntry, SegmentRef, head_what},
    new_token,
    objects::{Put, delete, from_json, get, get_json, put, put_conditional, to_json},
};

/// Parallel requests for id entries and segments.
const PARALLEL: usize = 32;

/// How a segment is named in errors.
pub(super) fn segment_what(key: &StreamKey, segment: &SegmentRef) -> String {
    format!(
        "the segment of stream {key} holding seqs {} to {}",
        segment.first, segment.last
    )
}

/// How an id index entry is named in errors.
fn id_what(key: &StreamKey, id: &EventId) -> String {
    format!("the id entry of event {:?} in stream {key}", id.as_str())
}

impl Inner {
    pub(super) fn segment_path(&self, key: &StreamKey, segment: &SegmentRef) -> Path {
        self.keys
            .segment(key, segment.first, segment.last, &segment.token)
    }

    /// GETs the stream's head.
    pub(super) async fn load(&self, key: &StreamKey) -> Result<Loaded> {
        let path = self.keys.head(key);
        match get_json::<Head>(self.store(), &path, &head_what(key)).await? {
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
    pub(super) async fn put_head(
        &self,
        key: &StreamKey,
        head: &Head,
        version: Option<UpdateVersion>,
    ) -> Result<Put> {
        let path = self.keys.head(key);
        let what = head_what(key);
        let bytes = to_json(head, &what)?;
        put_conditional(self.store(), &path, &what, bytes, version).await
    }

    /// The seqs the id index of `epoch` ([`Head::ids_epoch`]) holds for
    /// `ids` (`None` = not stored).
    pub(super) async fn fetch_ids(
        &self,
        key: &StreamKey,
        epoch: Option<u64>,
        ids: Vec<EventId>,
    ) -> Result<HashMap<EventId, Option<u64>>> {
        stream::iter(ids)
            .map(|id| async move {
                let path = self.keys.id_entry(key, epoch, &id);
                let what = id_what(key, &id);
                let seq = match get_json::<IdEntry>(self.store(), &path, &what).await? {
                    Some((entry, _)) => Some(entry.seq_for(&id, &format!("{path} ({what})"))?),
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
    pub(super) async fn resolve(
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
        self.fetch_ids(key, head.ids_epoch(), unknown.into_iter().collect())
            .await
    }

    /// Creates id index entries in the index of `epoch` ([`Head::ids_epoch`]
    /// of the head the records are committed in); an existing entry states
    /// the same (only committed records are indexed, and a deletion starts
    /// a new index), so `AlreadyExists` is fine.
    pub(super) async fn write_ids(
        &self,
        key: &StreamKey,
        epoch: Option<u64>,
        entries: Vec<(EventId, u64)>,
    ) -> Result<()> {
        stream::iter(entries)
            .map(|(id, seq)| async move {
                let path = self.keys.id_entry(key, epoch, &id);
                let what = id_what(key, &id);
                let entry = IdEntry { seq, id: Some(id) };
                let bytes = to_json(&entry, &what)?;
                put_conditional(self.store(), &path, &what, bytes, None)
                    .await
                    .map(drop)
            })
            .buffer_unordered(PARALLEL)
            .try_collect::<()>()
            .await
    }

    /// Writes `records` (ascending, non-empty) as a new segment.
    pub(super) async fn write_segment(
        &self,
        key: &StreamKey,
        records: &[EventRecord],
    ) -> Result<(SegmentRef, Path)> {
        let segment = SegmentRef {
            first: records.first().map_or(0, |record| record.seq),
            last: records.last().map_or(0, |record| record.seq),
            count: u64::try_from(records.len()).unwrap_or(u64::MAX),
            token: new_token(),
            oldest_ms: Some(SegmentRef::oldest_of(records)),
        };
        let path = self.segment_path(key, &segment);
        let what = segment_what(key, &segment);
        put(self.store(), &path, &what, to_json(&records, &what)?).await?;
        Ok((segment, path))
    }

    /// Reads a segment; `None` when it no longer exists (the head that named
    /// it has been replaced).
    pub(super) async fn read_segment(
        &self,
        key: &StreamKey,
        segment: &SegmentRef,
    ) -> Result<Option<Vec<EventRecord>>> {
        let path = self.segment_path(key, segment);
        let what = segment_what(key, segment);
        match get(self.store(), &path, &what).await? {
            Some((bytes, _)) => Ok(Some(from_json(&bytes, &path, &what)?)),
            None => Ok(None),
        }
    }

    /// Best-effort deletes of objects no head names any more.
    pub(super) async fn delete_all(&self, paths: Vec<Path>) {
        let _ = stream::iter(paths)
            .map(|path| async move { delete(self.store(), &path, "an unreferenced object").await })
            .buffer_unordered(PARALLEL)
            .collect::<Vec<_>>()
            .await;
    }
}
