//! The erasure commands: delete-run, delete-tenant (CONTRACT §27, §28).

use anyhow::{Context as _, Result, bail};
use runstore::{RunId, StorageExt as _};
use serde::Serialize;

use crate::{
    Ctx,
    cli::{DeleteTenantArgs, RunArg},
    commands::events::FailedStream,
};

/// `delete-run` output.
#[derive(Serialize)]
struct DeletedRun<'a> {
    run_id: &'a RunId,
    /// Events deleted (markers and compacted ids not counted).
    events: usize,
    snapshots: usize,
}

/// `delete-tenant` output.
#[derive(Serialize)]
struct DeletedTenant {
    tenant: String,
    events: usize,
    snapshots: usize,
    /// The runs that could not be deleted; every other one was.
    failed: Vec<FailedStream>,
}

/// `delete-run`.
pub async fn delete_run(ctx: &Ctx, args: RunArg) -> Result<()> {
    let run = RunId::new(args.run).context("--run")?;
    let store = ctx.open_store().await?;
    let erased = store
        .erase_run(&ctx.tenant, &run)
        .await
        .with_context(|| format!("deleting run {run} of tenant {}", ctx.tenant))?;
    let mut out = ctx.output();
    out.emit(&DeletedRun {
        run_id: &run,
        events: erased.events,
        snapshots: erased.snapshots,
    })?;
    out.flush()
}

/// `delete-tenant`: refuses without `--yes`; exits 1 when a run failed,
/// after deleting every other one.
pub async fn delete_tenant(ctx: &Ctx, args: DeleteTenantArgs) -> Result<()> {
    if !args.yes {
        bail!(
            "delete-tenant deletes every run and snapshot of tenant {}; pass --yes to confirm",
            ctx.tenant
        );
    }
    let store = ctx.open_store().await?;
    let erased = store
        .erase_tenant(&ctx.tenant)
        .await
        .with_context(|| format!("deleting tenant {}", ctx.tenant))?;
    let failures: Vec<_> = erased
        .snapshots
        .failed
        .iter()
        .chain(&erased.events.failed)
        .collect();
    let mut out = ctx.output();
    out.emit(&DeletedTenant {
        tenant: ctx.tenant.to_string(),
        events: erased.events.removed,
        snapshots: erased.snapshots.removed,
        failed: failures.iter().copied().map(FailedStream::of).collect(),
    })?;
    out.flush()?;
    for failure in &failures {
        eprintln!(
            "error: deleting run {} failed: {}",
            failure.stream,
            crate::one_line(&failure.error.to_string())
        );
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!(
            "deleting tenant {} failed for {} run(s), listed above; every other run was deleted",
            ctx.tenant,
            failures.len()
        )
    }
}
