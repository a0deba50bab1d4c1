//! Import of an exported stream (docs/backends/s3.md, "Import"): checked
//! once with [`plan_import`], then committed in chunks of conditional head
//! puts and flushed as appends are.

use runstore_core::{
    EventRecord, Result, StreamKey,
    raw::append::plan_import,
    raw::compaction::{compacted_ids, marker_payload},
};

use super::{Loaded, MAINTENANCE_ATTEMPTS};
use crate::{Inner, backoff, error::contended, head::FLUSH_RECORDS, new_token, objects::Put};

/// The greatest `erased_through_seq` the markers among `records` carry.
fn erased_through(records: &[EventRecord]) -> Option<u64> {
    records
        .iter()
        .filter(|record| record.is_compaction_marker())
        .filter_map(|marker| marker_payload(marker).ok()?.erased_through_seq)
        .max()
}

impl Inner {
    /// Imports an exported stream (docs/backends/s3.md, "Import"): checks it
    /// once with `plan_import`, then commits the missing records in chunks,
    /// each one conditional head put on the head the previous one wrote (so
    /// nothing changed in between), flushing as appends do. Id index entries
    /// are only ever written for committed records.
    pub(super) async fn import(&self, key: &StreamKey, records: &[EventRecord]) -> Result<usize> {
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
            // Every id the import brings is looked up: one at or below the
            // last seq must be stored at its seq, any other must be new to
            // the stream, live or compacted (CONTRACT §23). A stream that
            // does not exist yet holds none.
            let mut ids = Vec::new();
            if loaded.version.is_some() {
                for record in records {
                    ids.push(record.event_id.clone());
                    ids.extend(compacted_ids(record)?.into_iter().map(|id| id.event_id));
                }
            }
            let Some(known) = self.resolve(key, &loaded.head, &local.ids, ids).await? else {
                // A segment of the head is gone: the head was replaced.
                continue 'plan;
            };
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
                // A deleted run's marker (or a later marker that merged it)
                // is the first record of its stream: the head records the
                // deletion's seq as `delete_run` does, so a deleted run
                // imported is one here too (`list_runs` leaves it out).
                if let Some(through) = erased_through(chunk)
                    && next.erased_through.is_none_or(|known| known < through)
                {
                    next.mark_erased(through);
                }
                if next.is_erased() {
                    self.put_hint(key).await?;
                }
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
}
