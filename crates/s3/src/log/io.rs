//! The stream's objects: its head, its segments (records and id table) and
//! the id index entries of segments written before segments carried a
//! table, read and written with the request shapes of [`crate::objects`].
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
    head::{Head, IdCache, IdEntry, IndexRef, SegmentRef, head_what, index_entries},
    idtable::{self, Digest, ENTRY, Lookup},
    new_token,
    objects::{Put, corrupt, from_json, get, get_json, get_range, put, put_conditional, to_json},
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
    /// the head proves it complete, else from the segments' id tables (and
    /// the id index of segments without one). `None` when a segment the
    /// head names is gone: the head was replaced, read it again.
    pub(super) async fn resolve(
        &self,
        key: &StreamKey,
        head: &Head,
        cache: &IdCache,
        ids: Vec<EventId>,
    ) -> Result<Option<HashMap<EventId, Option<u64>>>> {
        let mut unknown = HashSet::new();
        for id in ids {
            if head.find(&id)?.is_none() {
                unknown.insert(id);
            }
        }
        if cache.covers(head) {
            return Ok(Some(
                unknown
                    .into_iter()
                    .map(|id| {
                        let seq = cache.get(&id);
                        (id, seq)
                    })
                    .collect(),
            ));
        }
        self.find_ids(key, head, unknown.into_iter().collect())
            .await
    }

    /// The seqs the segments `head` names hold for `ids` (`None` = not
    /// stored): one ranged GET of each segment's id table per id, or one of
    /// the whole table when the ids' windows would cover it, all segments
    /// in parallel; plus one GET per id under `ids/` while a segment
    /// without a table is named. A head with no segment answers without a
    /// request. `Ok(None)` when a segment is gone (the head was replaced).
    pub(super) async fn find_ids(
        &self,
        key: &StreamKey,
        head: &Head,
        ids: Vec<EventId>,
    ) -> Result<Option<HashMap<EventId, Option<u64>>>> {
        let mut found: HashMap<EventId, Option<u64>> =
            ids.iter().map(|id| (id.clone(), None)).collect();
        if ids.is_empty() || head.segments.is_empty() {
            return Ok(Some(found));
        }
        if head.has_unindexed() {
            for (id, seq) in self.fetch_ids(key, head.ids_epoch(), ids.clone()).await? {
                if seq.is_some() {
                    found.insert(id, seq);
                }
            }
        }
        let keyed: Vec<(EventId, Digest)> = ids
            .into_iter()
            .map(|id| {
                let digest = idtable::digest(&id);
                (id, digest)
            })
            .collect();
        let keyed = &keyed;
        let indexed: Vec<(SegmentRef, IndexRef)> = head
            .segments
            .iter()
            .filter_map(|segment| segment.index.map(|index| (segment.clone(), index)))
            .collect();
        let tables: Vec<Option<Vec<(EventId, u64)>>> =
            stream::iter(indexed)
                .map(|(segment, index)| async move {
                    self.search_table(key, &segment, index, keyed).await
                })
                .buffer_unordered(PARALLEL)
                .try_collect()
                .await?;
        for table in tables {
            let Some(hits) = table else {
                return Ok(None);
            };
            for (id, seq) in hits {
                found.insert(id, Some(seq));
            }
        }
        Ok(Some(found))
    }

    /// The ids of `keyed` that the id table of `segment` holds, with their
    /// seqs; `None` when the segment is gone.
    async fn search_table(
        &self,
        key: &StreamKey,
        segment: &SegmentRef,
        index: IndexRef,
        keyed: &[(EventId, Digest)],
    ) -> Result<Option<Vec<(EventId, u64)>>> {
        let path = self.segment_path(key, segment);
        let what = format!("the id table of {}", segment_what(key, segment));
        let bytes_of = |(start, end): (u64, u64)| {
            index.at.saturating_add(start.saturating_mul(ENTRY))
                ..index.at.saturating_add(end.saturating_mul(ENTRY))
        };
        let windows: Vec<(u64, u64)> = keyed
            .iter()
            .map(|(_, digest)| idtable::window(index.count, digest))
            .collect();
        let spans: u64 = windows.iter().map(|(start, end)| end - start).sum();
        let mut hits = Vec::new();
        let mut rest = Vec::new();
        if spans < index.count {
            let asks: Vec<(Digest, (u64, u64))> = keyed
                .iter()
                .map(|(_, digest)| *digest)
                .zip(windows.iter().copied())
                .collect();
            let (path, what) = (&path, &what);
            let parts: Vec<Option<Lookup>> = stream::iter(asks)
                .map(|(digest, window)| async move {
                    let Some(bytes) = get_range(self.store(), path, what, bytes_of(window)).await?
                    else {
                        return Ok(None);
                    };
                    idtable::check(&bytes, window.0)
                        .map_err(|reason| corrupt(path, what, reason))?;
                    Ok(Some(idtable::find(&bytes, window.0, index.count, &digest)))
                })
                .buffered(PARALLEL)
                .try_collect()
                .await?;
            for ((id, digest), part) in keyed.iter().zip(parts) {
                match part {
                    None => return Ok(None),
                    Some(Lookup::Found(seq)) => hits.push((id.clone(), seq)),
                    Some(Lookup::Absent) => {}
                    Some(Lookup::Outside) => rest.push((id.clone(), *digest)),
                }
            }
        } else {
            rest = keyed.to_vec();
        }
        if !rest.is_empty() {
            let Some(mut more) = self.search_whole(&path, &what, index, &rest).await? else {
                return Ok(None);
            };
            hits.append(&mut more);
        }
        for (_, seq) in &hits {
            if *seq > segment.last {
                return Err(corrupt(
                    &path,
                    &what,
                    format!("an entry states seq {seq}, past the segment's last"),
                ));
            }
        }
        Ok(Some(hits))
    }

    /// [`Inner::search_table`] over the whole table: one ranged GET.
    async fn search_whole(
        &self,
        path: &Path,
        what: &str,
        index: IndexRef,
        keyed: &[(EventId, Digest)],
    ) -> Result<Option<Vec<(EventId, u64)>>> {
        let end = index.at.saturating_add(index.count.saturating_mul(ENTRY));
        let Some(bytes) = get_range(self.store(), path, what, index.at..end).await? else {
            return Ok(None);
        };
        idtable::check(&bytes, 0).map_err(|reason| corrupt(path, what, reason))?;
        let mut hits = Vec::new();
        for (id, digest) in keyed {
            match idtable::find(&bytes, 0, index.count, digest) {
                Lookup::Found(seq) => hits.push((id.clone(), seq)),
                Lookup::Absent | Lookup::Outside => {}
            }
        }
        Ok(Some(hits))
    }

    /// Writes `records` (ascending, non-empty) as a new segment: their JSON
    /// array followed by the id table of their ids ([`index_entries`]).
    pub(super) async fn write_segment(
        &self,
        key: &StreamKey,
        records: &[EventRecord],
    ) -> Result<(SegmentRef, Path)> {
        let entries = index_entries(records)?;
        let table = idtable::encode(&entries)?;
        let mut segment = SegmentRef {
            first: records.first().map_or(0, |record| record.seq),
            last: records.last().map_or(0, |record| record.seq),
            count: u64::try_from(records.len()).unwrap_or(u64::MAX),
            token: new_token(),
            oldest_ms: Some(SegmentRef::oldest_of(records)),
            index: None,
        };
        let what = segment_what(key, &segment);
        let mut bytes = serde_json::to_vec(records)
            .map_err(|err| Error::invalid(format!("cannot encode {what}: {err}")))?;
        segment.index = Some(IndexRef {
            at: bytes.len() as u64,
            count: entries.len() as u64,
        });
        bytes.extend_from_slice(&table);
        let path = self.segment_path(key, &segment);
        put(self.store(), &path, &what, bytes.into()).await?;
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
        let bytes = match segment.index {
            Some(index) => get_range(self.store(), &path, &what, 0..index.at).await?,
            None => get(self.store(), &path, &what)
                .await?
                .map(|(bytes, _)| bytes),
        };
        bytes
            .map(|bytes| from_json(&bytes, &path, &what))
            .transpose()
    }

    /// Best-effort deletes of objects no head names any more: one bulk
    /// request per 1,000 objects where the store has one.
    pub(super) async fn delete_all(&self, paths: Vec<Path>) {
        if paths.is_empty() {
            return;
        }
        let paths = stream::iter(paths.into_iter().map(Ok)).boxed();
        let _ = self.store().delete_stream(paths).collect::<Vec<_>>().await;
    }
}
