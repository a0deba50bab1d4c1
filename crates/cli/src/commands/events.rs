//! The event commands: append, read, next-seq, seq-of, runs, compact.

use std::time::Duration;

use anyhow::{Context as _, Result};
use runstore::{EventId, EventLog as _, EventLogExt as _, EventRecord, ReadQuery, RunId};
use serde::Serialize;

use crate::{
    Ctx,
    cli::{AppendArgs, CompactArgs, ReadArgs, RunArg, SeqOfArgs},
    input::{now_ms, parse_batch, read_text},
    output::RECORD_COLUMNS,
};

/// One line of `append --batch` output.
#[derive(Serialize)]
struct BatchOutcome<'a> {
    event_id: &'a EventId,
    seq: u64,
    inserted: bool,
}

/// `next-seq` output.
#[derive(Serialize)]
struct NextSeq {
    next_seq: u64,
}

/// `seq-of` output; `null` when the id is not in the run.
#[derive(Serialize)]
struct SeqOf {
    seq: Option<u64>,
}

/// One line of `runs` output.
#[derive(Serialize)]
struct Run<'a> {
    run_id: &'a RunId,
}

/// `compact` and `snapshot prune` output.
#[derive(Serialize)]
pub struct Pruned {
    /// How many events or snapshots were deleted.
    pub pruned: usize,
    /// The streams that could not be processed; every other one was.
    pub failed: Vec<FailedStream>,
}

/// One stream a maintenance pass could not process.
#[derive(Serialize)]
pub struct FailedStream {
    /// The stream's tenant, `ORG/WORKSPACE[/DEPLOYMENT]`.
    pub tenant: String,
    /// The stream's run.
    pub run_id: String,
    /// Why it failed.
    pub error: String,
}

impl Pruned {
    /// The output of a maintenance report.
    pub fn of(report: &runstore::MaintenanceReport) -> Self {
        Self {
            pruned: report.removed,
            failed: report.failed.iter().map(FailedStream::of).collect(),
        }
    }
}

impl FailedStream {
    /// The output of one failed stream.
    pub fn of(failure: &runstore::StreamFailure) -> Self {
        Self {
            tenant: failure.stream.tenant.to_string(),
            run_id: failure.stream.run_id.to_string(),
            error: failure.error.to_string(),
        }
    }
}

/// Prints a maintenance report; after it, an error when a stream failed, so
/// the command exits 1 having done everything it could.
pub fn emit_report(ctx: &Ctx, report: &runstore::MaintenanceReport, what: &str) -> Result<()> {
    let mut out = ctx.output();
    out.emit(&Pruned::of(report))?;
    out.flush()?;
    for failure in &report.failed {
        eprintln!(
            "error: {what} failed for stream {}: {}",
            failure.stream,
            crate::one_line(&failure.error.to_string())
        );
    }
    if report.failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{what} failed for {} stream(s), listed above; every other stream was processed",
            report.failed.len()
        ))
    }
}

/// `append`: one event, or a batch.
pub async fn append(ctx: &Ctx, args: AppendArgs) -> Result<()> {
    let run = RunId::new(args.run).context("--run")?;
    let now = now_ms();
    let mut out = ctx.output();
    if let Some(batch) = &args.batch {
        let text = read_text(batch)?;
        let events = parse_batch(&text, &ctx.tenant, &run, now)?;
        let store = ctx.open_store().await?;
        let outcomes = store
            .append_batch(&ctx.tenant, &run, &events, args.expect_last_seq)
            .await
            .with_context(|| format!("appending a batch to run {run:?}"))?;
        for (event, outcome) in events.iter().zip(&outcomes) {
            out.emit(&BatchOutcome {
                event_id: &event.event_id,
                seq: outcome.seq,
                inserted: outcome.inserted,
            })?;
        }
    } else {
        let event_id =
            EventId::new(args.event_id.context("--event-id is required")?).context("--event-id")?;
        let event_type = args.event_type.context("--type is required")?;
        let mut event = EventRecord::new(
            &ctx.tenant,
            run.clone(),
            event_id,
            event_type,
            args.occurred_at_ms.unwrap_or(now),
        );
        if let Some(payload) = &args.payload {
            event.payload = serde_json::from_str(payload).context("--payload is not valid JSON")?;
        }
        let store = ctx.open_store().await?;
        let outcome = store
            .append_expecting(&ctx.tenant, &event, args.expect_last_seq)
            .await
            .with_context(|| format!("appending to run {run:?}"))?;
        out.emit(&outcome)?;
    }
    out.flush()
}

/// `read`, and `read --follow`.
pub async fn read(ctx: &Ctx, args: ReadArgs) -> Result<()> {
    let run = RunId::new(args.run).context("--run")?;
    let query = ReadQuery {
        after_seq: args.after,
        before_seq: args.before,
        limit: args.limit,
        tail: args.tail,
    };
    let store = ctx.open_store().await?;
    let mut out = ctx.output();
    out.columns(RECORD_COLUMNS);
    let records = store
        .read(&ctx.tenant, &run, query)
        .await
        .with_context(|| format!("reading run {run:?}"))?;
    let mut last = records.last().map(|record| record.seq).or(args.after);
    for record in &records {
        out.emit(record)?;
    }
    out.flush()?;
    if !args.follow {
        return Ok(());
    }
    let interval = Duration::from_millis(args.poll_ms.max(1));
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            signal = &mut interrupted => {
                signal.context("waiting for ctrl-c")?;
                return Ok(());
            }
            () = tokio::time::sleep(interval) => {}
        }
        let query = ReadQuery {
            after_seq: last,
            ..ReadQuery::default()
        };
        let records = store
            .read(&ctx.tenant, &run, query)
            .await
            .with_context(|| format!("reading run {run:?}"))?;
        if let Some(record) = records.last() {
            last = Some(record.seq);
        }
        for record in &records {
            out.emit(record)?;
        }
        out.flush()?;
    }
}

/// `next-seq`.
pub async fn next_seq(ctx: &Ctx, args: RunArg) -> Result<()> {
    let run = RunId::new(args.run).context("--run")?;
    let store = ctx.open_store().await?;
    let next = store.next_seq(&ctx.tenant, &run).await?;
    let mut out = ctx.output();
    out.emit(&NextSeq { next_seq: next })?;
    out.flush()
}

/// `seq-of`.
pub async fn seq_of(ctx: &Ctx, args: SeqOfArgs) -> Result<()> {
    let run = RunId::new(args.run).context("--run")?;
    let event_id = EventId::new(args.event_id).context("--event-id")?;
    let store = ctx.open_store().await?;
    let seq = store.seq_of(&ctx.tenant, &run, &event_id).await?;
    let mut out = ctx.output();
    out.emit(&SeqOf { seq })?;
    out.flush()
}

/// `runs`.
pub async fn runs(ctx: &Ctx) -> Result<()> {
    let store = ctx.open_store().await?;
    let runs = store.list_runs(&ctx.tenant).await?;
    let mut out = ctx.output();
    for run in runs {
        out.emit(&Run { run_id: &run })?;
    }
    out.flush()
}

/// `compact`.
pub async fn compact(ctx: &Ctx, args: CompactArgs) -> Result<()> {
    let store = ctx.open_store().await?;
    let now = args.now_ms.unwrap_or_else(now_ms);
    let report = store
        .compact(args.retention_ms, now)
        .await
        .context("compacting")?;
    emit_report(ctx, &report, "compaction")
}
