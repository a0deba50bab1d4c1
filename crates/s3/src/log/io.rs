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
    idtable::{self, Digest},
    new_token,
    objects::{Put, corrupt, from_json, get, get_json, get_range, put, put_conditional, to_json},
};

/// Parallel requests for id entries and segments.
const PARALLEL: usize = 32;
/// Parallel puts of the pages of one id table.
const PAGE_PARALLEL: usize = 8;

/// How a segment is named in errors.
pub(super) fn segment_what(key: &StreamKey, segment: &SegmentRef) -> String {
    format!(
        "the segment of stream {key} holding seqs {} to {}",
        segment.first, segment.last
    )
}

/// How page `page` of the id table of `segment` is named in errors.
fn page_what(key: &StreamKey, segment: &SegmentRef, page: u32) -> String {
    format!(
        "page {page} of the id table of {}",
        segment_what(key, segment)
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

    /// Where page `page` of the id table of `segment` is stored.
    fn page_path(&self, key: &StreamKey, segment: &SegmentRef, page: u32) -> Path {
        self.keys
            .index_page(key, segment.first, segment.last, &segment.token, page)
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
    /// stored): per segment, one GET of the id table that leads it, or of
    /// each page of its table that one of the ids falls on; all segments in
    /// parallel. Plus one GET per id under `ids/` while a segment without a
    /// table is named. A head with no segment answers without a request.
    /// `Ok(None)` when a segment is gone (the head was replaced).
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
        // One request per table part: the table leading a segment, or a
        // page that one of the ids falls on.
        let mut parts: Vec<(SegmentRef, IndexRef, Option<u32>)> = Vec::new();
        for segment in &head.segments {
            let Some(index) = segment.index else {
                continue;
            };
            if index.pages == 0 {
                parts.push((segment.clone(), index, None));
                continue;
            }
            let mut pages: Vec<u32> = keyed
                .iter()
                .map(|(_, digest)| idtable::page_of(digest, index.pages))
                .collect();
            pages.sort_unstable();
            pages.dedup();
            parts.extend(
                pages
                    .into_iter()
                    .map(|page| (segment.clone(), index, Some(page))),
            );
        }
        let keyed = &keyed;
        let hits: Vec<Option<Vec<(EventId, u64)>>> = stream::iter(parts)
            .map(|(segment, index, page)| async move {
                self.search_part(key, &segment, index, page, keyed).await
            })
            .buffer_unordered(PARALLEL)
            .try_collect()
            .await?;
        for part in hits {
            let Some(part) = part else {
                return Ok(None);
            };
            for (id, seq) in part {
                found.insert(id, Some(seq));
            }
        }
        Ok(Some(found))
    }

    /// The ids of `keyed` found in one part of `index`, the id table of
    /// `segment`: the table leading the segment (`page` `None`), or page
    /// `page`; `None` when the object is gone.
    async fn search_part(
        &self,
        key: &StreamKey,
        segment: &SegmentRef,
        index: IndexRef,
        page: Option<u32>,
        keyed: &[(EventId, Digest)],
    ) -> Result<Option<Vec<(EventId, u64)>>> {
        let (path, what, bytes) = match page {
            None => {
                let path = self.segment_path(key, segment);
                let what = format!("the id table of {}", segment_what(key, segment));
                // One byte more: the records' JSON array must start right
                // after the table, or the head states the wrong table.
                let end = index.records_at();
                let bytes = get_range(self.store(), &path, &what, 0..end + 1).await?;
                if let Some(bytes) = &bytes
                    && bytes.last() != Some(&b'[')
                {
                    return Err(corrupt(
                        &path,
                        &what,
                        format!(
                            "the records do not start after a table of {} entries",
                            index.count
                        ),
                    ));
                }
                (
                    path,
                    what,
                    bytes.map(|bytes| bytes.slice(..bytes.len() - 1)),
                )
            }
            Some(page) => {
                let (path, what) = (
                    self.page_path(key, segment, page),
                    page_what(key, segment, page),
                );
                let bytes = get(self.store(), &path, &what)
                    .await?
                    .map(|(bytes, _)| bytes);
                (path, what, bytes)
            }
        };
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        idtable::check(&bytes, page.map(|page| (page, index.pages)))
            .map_err(|reason| corrupt(&path, &what, reason))?;
        let mut hits = Vec::new();
        for (id, digest) in keyed {
            if page.is_some_and(|page| idtable::page_of(digest, index.pages) != page) {
                continue;
            }
            if let Some(seq) = idtable::find(&bytes, digest) {
                if seq > segment.last {
                    return Err(corrupt(
                        &path,
                        &what,
                        format!("an entry states seq {seq}, past the segment's last"),
                    ));
                }
                hits.push((id.clone(), seq));
            }
        }
        Ok(Some(hits))
    }

    /// Every object of `segment`: the segment and the pages of its id table.
    pub(super) fn segment_paths(&self, key: &StreamKey, segment: &SegmentRef) -> Vec<Path> {
        let pages = segment.index.map_or(0, |index| index.pages);
        let mut paths = vec![self.segment_path(key, segment)];
        paths.extend((0..pages).map(|page| self.page_path(key, segment, page)));
        paths
    }

    /// Writes `records` (ascending, non-empty) as a new segment with the id
    /// table of their ids ([`index_entries`]): leading the segment object,
    /// or as page objects written first when it is large. Answers the
    /// segment and every object written.
    pub(super) async fn write_segment(
        &self,
        key: &StreamKey,
        records: &[EventRecord],
    ) -> Result<(SegmentRef, Vec<Path>)> {
        let entries = index_entries(records)?;
        let mut segment = SegmentRef {
            first: records.first().map_or(0, |record| record.seq),
            last: records.last().map_or(0, |record| record.seq),
            count: u64::try_from(records.len()).unwrap_or(u64::MAX),
            token: new_token(),
            oldest_ms: Some(SegmentRef::oldest_of(records)),
            index: None,
        };
        let what = segment_what(key, &segment);
        // Only stored data can repeat an id within one segment.
        let mut table = idtable::encode(&entries).map_err(|reason| {
            Error::corrupt(
                format!("stream {key}"),
                format!("indexing {what}: {reason}"),
            )
        })?;
        let index = IndexRef {
            count: entries.len() as u64,
            pages: idtable::pages_for(entries.len() as u64),
        };
        segment.index = Some(index);
        let json = serde_json::to_vec(records)
            .map_err(|err| Error::invalid(format!("cannot encode {what}: {err}")))?;
        let mut written = Vec::new();
        let bytes = if index.pages == 0 {
            let mut bytes = table.pop().unwrap_or_default();
            bytes.extend_from_slice(&json);
            bytes
        } else {
            let pages: Vec<(u32, Vec<u8>)> = (0..index.pages).zip(table).collect();
            let segment = &segment;
            let paths: Vec<Path> = stream::iter(pages)
                .map(|(page, bytes)| async move {
                    let path = self.page_path(key, segment, page);
                    put(
                        self.store(),
                        &path,
                        &page_what(key, segment, page),
                        bytes.into(),
                    )
                    .await?;
                    Ok::<_, Error>(path)
                })
                .buffer_unordered(PAGE_PARALLEL)
                .try_collect()
                .await?;
            written.extend(paths);
            json
        };
        let path = self.segment_path(key, &segment);
        put(self.store(), &path, &what, bytes.into()).await?;
        written.insert(0, path);
        Ok((segment, written))
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
        let Some((bytes, _)) = get(self.store(), &path, &what).await? else {
            return Ok(None);
        };
        let at = segment.index.map_or(0, IndexRef::records_at);
        let Some(json) = usize::try_from(at).ok().and_then(|at| bytes.get(at..)) else {
            return Err(corrupt(
                &path,
                &what,
                format!(
                    "its id table of {at} bytes is longer than the object ({})",
                    bytes.len()
                ),
            ));
        };
        from_json(json, &path, &what).map(Some)
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
