//! `salvage --from URL --to URL`: everything readable out of a damaged
//! store, and what could not be copied.

use anyhow::{Context as _, Result, bail};
use runstore::salvage::{Loss, SeqRanges};
use serde::Serialize;

use crate::{Ctx, report_panic};

/// The columns of a loss in a table.
const LOSS_COLUMNS: &[&str] = &["loss", "place", "stream", "seqs", "snapshot_id", "reason"];

/// One thing that could not be copied.
#[derive(Debug, Serialize)]
struct LossLine<'a> {
    loss: &'static str,
    place: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seqs: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_id: Option<&'a str>,
    reason: &'a str,
}

impl<'a> From<&'a Loss> for LossLine<'a> {
    fn from(loss: &'a Loss) -> Self {
        Self {
            loss: loss.kind.as_str(),
            place: &loss.place,
            stream: loss.stream.as_ref().map(ToString::to_string),
            seqs: (!loss.seqs.is_empty()).then(|| SeqRanges(&loss.seqs).to_string()),
            snapshot_id: loss.snapshot_id.as_deref(),
            reason: &loss.reason,
        }
    }
}

/// The closing line.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    from: &'a str,
    to: &'a str,
    streams: usize,
    events: usize,
    snapshots: usize,
    lost: usize,
}

/// Salvages `--from` into `--to`; prints one line per loss, then the
/// summary; fails (exit 1) when anything could not be copied.
pub async fn run(ctx: &Ctx, args: crate::cli::SalvageArgs) -> Result<()> {
    // The redb scanner reads damaged pages that make redb panic, catches the
    // panic and reports the entry as lost; the panic's own line on stderr
    // would only repeat that.
    std::panic::set_hook(Box::new(|info| {
        if !info
            .location()
            .is_some_and(|at| at.file().contains("/redb-") || at.file().contains("\\redb-"))
        {
            report_panic(info);
        }
    }));
    let report = runstore::salvage(&args.from, &args.to).await;
    std::panic::set_hook(Box::new(report_panic));
    let report = report.with_context(|| format!("salvaging {} into {}", args.from, args.to))?;

    let mut out = ctx.output();
    out.columns(LOSS_COLUMNS);
    for loss in &report.losses {
        out.emit(&LossLine::from(loss))?;
    }
    out.flush()?;
    let mut out = ctx.output();
    out.emit(&Summary {
        from: &args.from,
        to: &args.to,
        streams: report.streams,
        events: report.events,
        snapshots: report.snapshots,
        lost: report.losses.len(),
    })?;
    out.flush()?;
    if !report.losses.is_empty() {
        bail!(
            "salvage could not copy {} item(s), listed above; everything else is in {}",
            report.losses.len(),
            args.to
        );
    }
    Ok(())
}
