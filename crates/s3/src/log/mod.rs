//! The event log: append rounds, flushes, reads, compaction and import
//! (docs/backends/s3.md).
//!
//! Every change to a stream is one conditional put of its head
//! ([`crate::head`]). The jobs that make and read those changes are methods
//! of the handle's shared state (`Inner`, in the crate root), one file per
//! job:
//!
//! - [`io`]: the stream's objects: its head, segments and id index entries.
//! - [`append`]: the per-stream queue of appends and the rounds that commit
//!   them.
//! - [`flush`]: the head's buffer moved into segments, and segments merged.
//! - [`read`]: windows of a stream, and every record of it.
//! - [`list`]: the streams under the store's prefix.
//! - [`compact`]: compaction of one stream.
//! - [`erase`]: deletion of one stream.
//! - [`import`]: an exported stream committed in chunks.
//!
//! This file holds what they share -- the head as this handle holds it
//! ([`Loaded`], [`Local`]) and the objects a change creates and replaces
//! ([`Work`]) -- and [`EventLog`] for [`S3Store`].

mod append;
mod compact;
mod erase;
mod flush;
mod import;
mod io;
mod list;
mod read;

use async_trait::async_trait;
use object_store::{UpdateVersion, path::Path};
use runstore_core::{
    AppendOutcome, EventId, EventLog, EventRecord, MaintenanceReport, ReadQuery, Result, RunId,
    StreamKey, Tenant, raw::compaction::CompactionPolicy,
};

pub(crate) use self::append::StreamState;
use crate::{
    S3Store,
    error::{contended, request},
    head::{Head, IdCache, head_what},
    keys::decode_tenant,
    objects::corrupt,
};

/// Attempts of a compaction or import of one stream.
const MAINTENANCE_ATTEMPTS: u32 = 16;
/// Attempts of a read whose segments were replaced while it ran.
const READ_ATTEMPTS: u32 = 8;

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

/// Objects a head change created, and objects it stopped naming.
#[derive(Debug, Default)]
struct Work {
    created: Vec<Path>,
    replaced: Vec<Path>,
}

fn key_of(tenant: &Tenant, run_id: &RunId) -> StreamKey {
    StreamKey::new(tenant.clone(), run_id.clone())
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
        // CONTRACT §21-§24: before anything is queued or requested.
        self.inner.limits.check_append(run_id, events)?;
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
        let key = key_of(tenant, run_id);
        let last = self.inner.load(&key).await?.head.last_seq;
        last.checked_add(1).ok_or_else(|| {
            corrupt(
                &self.inner.keys.head(&key),
                &head_what(&key),
                format!("last_seq {last} leaves no next seq"),
            )
        })
    }

    async fn seq_of(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        event_id: &EventId,
    ) -> Result<Option<u64>> {
        let key = key_of(tenant, run_id);
        for _ in 0..READ_ATTEMPTS {
            let loaded = self.inner.load(&key).await?;
            if loaded.version.is_none() {
                return Ok(None);
            }
            if let Some(seq) = loaded.head.find(event_id)? {
                return Ok(Some(seq));
            }
            if let Some(found) = self
                .inner
                .find_ids(&key, &loaded.head, vec![event_id.clone()])
                .await?
            {
                return Ok(found.get(event_id).copied().flatten());
            }
        }
        Err(contended(format!("look up an event id in {key}")))
    }

    async fn list_runs(&self, tenant: &Tenant) -> Result<Vec<RunId>> {
        let dir = self.inner.keys.tenant_streams(tenant);
        let mut runs: Vec<RunId> = self
            .inner
            .live_runs_under(tenant, &dir)
            .await?
            .into_iter()
            .filter(|key| key.tenant == *tenant)
            .map(|key| key.run_id)
            .collect();
        runs.sort();
        runs.dedup();
        Ok(runs)
    }

    /// CONTRACT §8-§11, §25: each stream is compacted on its own; one that
    /// fails is in the report and the pass goes on.
    async fn compact(&self, retention_ms: u64, now_ms: u64) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport::default();
        let Some(policy) = CompactionPolicy::new(retention_ms, now_ms)? else {
            return Ok(report);
        };
        for key in self.streams().await? {
            report.record(&key, self.inner.compact_one(&key, &policy).await);
        }
        Ok(report)
    }

    async fn streams(&self) -> Result<Vec<StreamKey>> {
        let root = self.inner.keys.events_root();
        let listing = self
            .inner
            .store()
            .list_with_delimiter(Some(&root))
            .await
            .map_err(|err| request("list the tenants with streams", err))?;
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
        // CONTRACT §23: before anything is requested.
        self.inner.limits.check_import(run_id, records)?;
        self.inner.import(&key_of(tenant, run_id), records).await
    }

    /// CONTRACT §27; see docs/backends/s3.md, "Erasure".
    ///
    /// # Cancel safety
    /// The deletion is committed by one conditional put of the head: a
    /// dropped future leaves the run deleted or untouched; objects of a
    /// deleted run it had not deleted yet are never read, and the next
    /// `delete_run` deletes them.
    async fn delete_run(&self, tenant: &Tenant, run_id: &RunId) -> Result<usize> {
        self.inner.delete_run(&key_of(tenant, run_id)).await
    }

    /// S3 has no change feed (CONTRACT §29; docs/backends/s3.md, "No change
    /// feed"): every stream commits on its own head, from any number of
    /// processes, with no object that orders commits across streams.
    async fn read_feed(
        &self,
        _tenant: &Tenant,
        _after: runstore_core::FeedPosition,
        _limit: usize,
    ) -> Result<Vec<runstore_core::FeedRecord>> {
        Err(runstore_core::Error::Unsupported {
            operation: "read_feed",
            backend: "s3",
            reason: "streams commit independently from many processes and nothing orders \
                     their commits across streams; follow runs with `read` instead",
        })
    }
}
