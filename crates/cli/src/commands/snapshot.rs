//! `snapshot put|get|list|latest|prune`.

use anyhow::{Context as _, Result, anyhow};
use runstore::{RunId, SnapshotId, SnapshotStore as _, SnapshotStoreExt as _};
use serde::Serialize;

use crate::{
    Ctx,
    cli::SnapshotCommand,
    commands::events::emit_report,
    input::{now_ms, parse_snapshots, read_text},
    output::SNAPSHOT_COLUMNS,
};

/// One line of `snapshot put` output.
#[derive(Serialize)]
struct Stored<'a> {
    run_id: &'a RunId,
    snapshot_id: &'a SnapshotId,
    seq: u64,
}

/// Runs one snapshot command.
pub async fn run(ctx: &Ctx, command: SnapshotCommand) -> Result<()> {
    let mut out = ctx.output();
    match command {
        SnapshotCommand::Put { file } => {
            let snapshots = parse_snapshots(&read_text(&file)?, &ctx.tenant)?;
            let store = ctx.open_store().await?;
            for snapshot in &snapshots {
                store.put(&ctx.tenant, snapshot).await.with_context(|| {
                    format!(
                        "storing snapshot {:?} of run {:?}",
                        snapshot.snapshot_id.as_str(),
                        snapshot.run_id.as_str()
                    )
                })?;
                out.emit(&Stored {
                    run_id: &snapshot.run_id,
                    snapshot_id: &snapshot.snapshot_id,
                    seq: snapshot.seq,
                })?;
            }
        }
        SnapshotCommand::Get { run, id } => {
            let run = RunId::new(run).context("--run")?;
            let id = SnapshotId::new(id).context("--id")?;
            let store = ctx.open_store().await?;
            let snapshot = store.get(&ctx.tenant, &run, &id).await?.ok_or_else(|| {
                anyhow!(
                    "snapshot {:?} of run {:?} not found for tenant {}",
                    id.as_str(),
                    run.as_str(),
                    ctx.tenant
                )
            })?;
            out.columns(SNAPSHOT_COLUMNS);
            out.emit(&snapshot)?;
        }
        SnapshotCommand::List { run, limit } => {
            let run = RunId::new(run).context("--run")?;
            let store = ctx.open_store().await?;
            out.columns(SNAPSHOT_COLUMNS);
            for snapshot in store.list(&ctx.tenant, &run, limit).await? {
                out.emit(&snapshot)?;
            }
        }
        SnapshotCommand::Latest { run } => {
            let run = RunId::new(run).context("--run")?;
            let store = ctx.open_store().await?;
            let snapshot = store.latest(&ctx.tenant, &run).await?.ok_or_else(|| {
                anyhow!(
                    "run {:?} of tenant {} has no snapshot",
                    run.as_str(),
                    ctx.tenant
                )
            })?;
            out.columns(SNAPSHOT_COLUMNS);
            out.emit(&snapshot)?;
        }
        SnapshotCommand::Prune {
            retention_ms,
            keep_last,
            now_ms: now,
        } => {
            let store = ctx.open_store().await?;
            let report = store
                .prune(retention_ms, keep_last, now.unwrap_or_else(now_ms))
                .await
                .context("pruning snapshots")?;
            return emit_report(ctx, &report, "snapshot prune");
        }
    }
    out.flush()
}
