//! Deleting a run (CONTRACT §27, docs/backends/s3.md, "Erasure").
//!
//! A deletion is a change of the stream's head like a compaction of one
//! stream: under this handle's leader slot of the stream, one conditional
//! put replaces the head that was read, so it is serialised with every
//! append, flush, compaction and import of every handle. The new head holds
//! the erasure marker in its buffer and names no segment and no marker; it
//! records the deletion's seq ([`Head::mark_erased`]), which starts a new id
//! index, so nothing the stream's old objects say is read again. The
//! objects themselves are then deleted ([`Inner::sweep`]).
//!
//! Order of the requests, and what a crash after each leaves:
//!
//! 1. the erased hint is put beside the stream's directory
//!    ([`Keys::erased_hint`](crate::keys::Keys::erased_hint)): on its own
//!    it costs `list_runs` one GET of the head, which says the run is live;
//! 2. the head is put conditionally: the commit point. Before it the run is
//!    untouched; after it the run is deleted;
//! 3. the stream's objects no head can name any more are listed and
//!    deleted: segments up to the deletion's seq and every id index of an
//!    older epoch. A crash in between leaves some of them; no read uses
//!    them (the head names no segment, and ids are looked up in the new
//!    index only), and the next `delete_run` of the run, which finds it
//!    deleted and answers 0, deletes them.

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use runstore_core::{
    EventRecord, Result, StreamKey,
    raw::{compaction::marker_payload, erasure::erasure_marker},
};

use super::{Loaded, MAINTENANCE_ATTEMPTS};
use crate::{
    Inner, backoff,
    error::{contended, request},
    head::{Head, IdCache},
    keys::segment_last,
    new_token,
    objects::{Put, delete, put},
};

/// Parallel deletes of a sweep.
const PARALLEL: usize = 32;

/// Whether `records` are a deleted run's: markers that remember no id. A
/// marker whose payload does not parse is taken to remember something, so
/// the deletion goes ahead and removes it.
fn erased(records: &[EventRecord]) -> bool {
    !records.is_empty()
        && records.iter().all(|record| {
            record.is_compaction_marker()
                && marker_payload(record)
                    .is_ok_and(|payload| payload.compacted_event_ids.is_empty())
        })
}

/// Whether the object at `rest` (its key's parts below the stream's
/// directory) is one no head can name once the stream was deleted through
/// `through`: a segment ending at or below it, or an entry of an id index
/// older than the one the deletion started.
fn dead(rest: &[String], through: u64) -> bool {
    match rest {
        [dir, name] if dir == "seg" => segment_last(name).is_some_and(|last| last <= through),
        [dir, name, _] if dir == "idx" => segment_last(name).is_some_and(|last| last <= through),
        [dir, _] if dir == "ids" => true,
        [dir, _] => dir
            .strip_prefix("ids-")
            .and_then(|epoch| epoch.parse::<u64>().ok())
            .is_some_and(|epoch| epoch < through),
        _ => false,
    }
}

impl Inner {
    /// Deletes the run `key` (CONTRACT §27; see the module doc): answers the
    /// ordinary events deleted, 0 for a stream that holds nothing or is a
    /// deleted run already (whose leftover objects are deleted then).
    ///
    /// # Errors
    /// A failed request before the head is put: nothing was deleted. A
    /// failed listing or delete after it: the run is deleted (no read finds
    /// anything of it) but objects of it remain; the error says so, and the
    /// next call deletes them.
    pub(super) async fn delete_run(&self, key: &StreamKey) -> Result<usize> {
        let state = self.stream_state(key);
        let mut local = state.leader.lock().await;
        let token = new_token();
        for attempt in 0..MAINTENANCE_ATTEMPTS {
            local.head = None;
            let loaded = self.load(key).await?;
            if loaded.version.is_none() || loaded.head.last_seq == 0 {
                return Ok(0);
            }
            let head = &loaded.head;
            if head.is_erased() {
                let through = head.last_seq;
                local.head = Some(loaded);
                self.sweep(key, through).await?;
                return Ok(0);
            }
            let Some(records) = self.all_records(key, head).await? else {
                continue;
            };
            if erased(&records) {
                // Deleted, by a version that kept no seq in the head.
                local.head = Some(loaded);
                return Ok(0);
            }
            let deleted = records
                .iter()
                .filter(|record| !record.is_compaction_marker())
                .count();
            let last = head.last_seq;
            let next = erased_head(head, key, last, &token);
            self.put_hint(key).await?;
            match self.put_head(key, &next, loaded.version.clone()).await? {
                Put::Done(version) => {
                    local.head = Some(Loaded {
                        head: next,
                        version: Some(version),
                    });
                }
                Put::Lost => {
                    let current = self.load(key).await?;
                    if !current.head.has_commit(&token) {
                        backoff(attempt).await;
                        continue;
                    }
                    // An earlier attempt of this very put landed (the
                    // client retried it after a lost response).
                    local.head = Some(current);
                }
            }
            local.ids = IdCache::default();
            self.sweep(key, last).await?;
            return Ok(deleted);
        }
        Err(contended(format!("delete {key}")))
    }

    /// Puts the erased hint of `key` (an empty object; see
    /// [`Keys::erased_hint`](crate::keys::Keys::erased_hint)). Put before
    /// any head that makes the run a deleted one, so a deleted run always
    /// has it; a hint beside a live run only costs `list_runs` a GET.
    pub(super) async fn put_hint(&self, key: &StreamKey) -> Result<()> {
        let path = self.keys.erased_hint(key);
        let what = format!("the erased hint of stream {key}");
        put(self.store(), &path, &what, bytes::Bytes::new()).await
    }

    /// Deletes the objects of `key` that no head can name once it was
    /// deleted through `through` (see [`dead`]), found by listing the
    /// stream's directory: the segments and id entries of the deletion
    /// just committed, and whatever an earlier one, a crash or a change
    /// that lost its race left behind. Objects of later changes are kept:
    /// their segments end above `through`, and their ids are in an index
    /// of `through` or later.
    ///
    /// # Errors
    /// A failed listing or delete, saying that the run is deleted and
    /// objects of it remain.
    pub(super) async fn sweep(&self, key: &StreamKey, through: u64) -> Result<()> {
        let dir = self.keys.stream_dir(key);
        let listed: Vec<Path> = self
            .store()
            .list(Some(&dir))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|err| {
                request(
                    format!(
                        "list the objects of deleted stream {key} (the run is deleted; \
                         delete_run again removes what remains)"
                    ),
                    err,
                )
            })?;
        let doomed: Vec<Path> = listed
            .into_iter()
            .filter(|path| {
                let rest: Option<Vec<String>> = path
                    .prefix_match(&dir)
                    .map(|parts| parts.map(|part| part.as_ref().to_owned()).collect());
                rest.is_some_and(|rest| dead(&rest, through))
            })
            .collect();
        let what = format!(
            "an object of deleted stream {key} (the run is deleted; delete_run again removes \
             what remains)"
        );
        futures::stream::iter(doomed)
            .map(|path| {
                let what = &what;
                async move { delete(self.store(), &path, what).await }
            })
            .buffer_unordered(PARALLEL)
            .try_collect::<()>()
            .await
    }
}

/// `head` after the deletion of its stream `key`, whose last seq is `last`:
/// the erasure marker alone, in the buffer, and no segment or marker named.
fn erased_head(head: &Head, key: &StreamKey, last: u64, token: &str) -> Head {
    let mut next = head.clone();
    next.segments.clear();
    next.markers.clear();
    next.buffer = vec![erasure_marker(&key.tenant, &key.run_id, last)];
    // The buffer holds the records above `flushed_through`.
    next.flushed_through = last - 1;
    next.mark_erased(last);
    next.remember(token);
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(path: &str) -> Vec<String> {
        path.split('/').map(str::to_owned).collect()
    }

    #[test]
    fn only_objects_of_the_deleted_seqs_are_dead() {
        let seg = |first: u64, last: u64| format!("seg/{first:020}-{last:020}-tok");
        assert!(dead(&parts(&seg(1, 6)), 6));
        assert!(!dead(&parts(&seg(6, 7)), 6), "holds a record above");
        let page = |first: u64, last: u64| format!("idx/{first:020}-{last:020}-tok/00001");
        assert!(
            dead(&parts(&page(1, 6)), 6),
            "a page of a deleted segment's table"
        );
        assert!(!dead(&parts(&page(6, 7)), 6));
        assert!(dead(&parts("ids/ve1"), 6));
        assert!(dead(&parts(&format!("ids-{:020}/ve1", 3)), 6));
        assert!(!dead(&parts(&format!("ids-{:020}/ve1", 6)), 6), "current");
        assert!(!dead(&parts(&format!("ids-{:020}/ve1", 9)), 6), "later");
        assert!(!dead(&parts("head"), 6));
        assert!(!dead(&parts("seg/foreign"), 6));
    }
}
