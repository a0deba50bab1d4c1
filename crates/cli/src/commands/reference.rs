//! `import-reference DIR`.

use anyhow::Result;

use crate::{Ctx, cli::ImportReferenceArgs};

/// What an import did.
#[cfg(feature = "jsonl")]
#[derive(serde::Serialize)]
struct Imported {
    records_read: usize,
    records_written: usize,
    streams: usize,
    snapshots: usize,
    torn_tail_skipped: bool,
}

/// Imports a directory in the reference layout into `--store`, whatever its
/// backend: every stream with its seqs, markers and compacted ids, and every
/// snapshot, legacy ones hydrated. Importing twice writes nothing new.
#[cfg(feature = "jsonl")]
pub async fn run(ctx: &Ctx, args: ImportReferenceArgs) -> Result<()> {
    use anyhow::{Context as _, bail};

    if !args.dir.is_dir() {
        bail!("{} is not a directory", args.dir.display());
    }
    let store = ctx.open_store().await?;
    let report = runstore::jsonl::import_reference(&args.dir, &**store.as_dyn())
        .await
        .with_context(|| format!("importing {}", args.dir.display()))?;
    let mut out = ctx.output();
    out.emit(&Imported {
        records_read: report.records_read,
        records_written: report.records_written,
        streams: report.streams,
        snapshots: report.snapshots,
        torn_tail_skipped: report.torn_tail_skipped,
    })?;
    out.flush()
}

/// The reference reader lives in the JSONL backend, which this build leaves
/// out.
#[cfg(not(feature = "jsonl"))]
pub async fn run(_ctx: &Ctx, args: ImportReferenceArgs) -> Result<()> {
    anyhow::bail!(
        "import-reference {} needs the JSONL backend's reference reader: enable the `jsonl` \
         feature of runstore-cli",
        args.dir.display()
    )
}
