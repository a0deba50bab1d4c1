//! `stats`: what each tenant holds.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use runstore::{
    EventLog as _, SnapshotStore as _, Tenant,
    core::raw::{check, erasure::is_erased},
};
use serde::Serialize;

use crate::{Ctx, commands::verify::read_all, input::now_ms};

/// One tenant's figures.
#[derive(Debug, Default, Serialize)]
struct TenantStats {
    tenant: String,
    /// Runs with a stream (live events or a compaction marker).
    runs: usize,
    /// Events still stored (compaction markers not counted).
    live_events: usize,
    /// Ids of compacted events the markers remember.
    compacted_ids: usize,
    snapshots: usize,
    /// The size of the tenant's records and snapshots in the reference JSON
    /// format: what a JSONL store holds for them; other backends add their
    /// own keys and indexes, which no backend reports per tenant.
    json_bytes: u64,
    /// How long ago the oldest live event occurred (`occurred_at_ms`), in
    /// seconds; absent without live events.
    #[serde(skip_serializing_if = "Option::is_none")]
    oldest_live_age_s: Option<u64>,
    #[serde(skip)]
    oldest_live_ms: Option<u64>,
}

/// Prints one line (or table row) per tenant of `--store`: runs, live
/// events, compacted ids, snapshots, JSON bytes and the oldest live event's
/// age. Reads every stream and snapshot, as `verify` does.
pub async fn run(ctx: &Ctx) -> Result<()> {
    let store = ctx.open_store().await?;
    let now = now_ms();
    let mut tenants: BTreeMap<Tenant, TenantStats> = BTreeMap::new();

    for key in store.streams().await.context("listing streams")? {
        let records = read_all(&store, &key)
            .await
            .with_context(|| format!("reading {key}"))?;
        let counted = check::check_stream(&key, &records);
        let stats = entry(&mut tenants, &key.tenant);
        // A deleted run (CONTRACT §27) keeps only its marker and is not one
        // of the tenant's runs; its marker's bytes still count.
        let erased = is_erased(&records).with_context(|| format!("reading {key}"))?;
        stats.runs += usize::from(!erased);
        stats.live_events += counted.records - counted.markers;
        stats.compacted_ids += counted.compacted;
        for record in &records {
            stats.json_bytes += json_len(record)?;
            if !record.is_compaction_marker() {
                let at = record.occurred_at_ms;
                stats.oldest_live_ms = Some(stats.oldest_live_ms.map_or(at, |old| old.min(at)));
            }
        }
    }
    for key in store
        .snapshot_streams()
        .await
        .context("listing snapshot streams")?
    {
        let snapshots = store
            .list(&key.tenant, &key.run_id, None)
            .await
            .with_context(|| format!("listing the snapshots of {key}"))?;
        let stats = entry(&mut tenants, &key.tenant);
        stats.snapshots += snapshots.len();
        for snapshot in &snapshots {
            stats.json_bytes += json_len(snapshot)?;
        }
    }

    let mut out = ctx.output();
    out.columns(&[
        "tenant",
        "runs",
        "live_events",
        "compacted_ids",
        "snapshots",
        "json_bytes",
        "oldest_live_age_s",
    ]);
    for stats in tenants.values_mut() {
        stats.oldest_live_age_s = stats
            .oldest_live_ms
            .map(|oldest| now.saturating_sub(oldest) / 1_000);
        out.emit(stats)?;
    }
    out.flush()
}

fn entry<'a>(
    tenants: &'a mut BTreeMap<Tenant, TenantStats>,
    tenant: &Tenant,
) -> &'a mut TenantStats {
    tenants
        .entry(tenant.clone())
        .or_insert_with(|| TenantStats {
            tenant: tenant.to_string(),
            ..TenantStats::default()
        })
}

fn json_len(value: &impl Serialize) -> Result<u64> {
    Ok(serde_json::to_vec(value)?.len() as u64)
}
