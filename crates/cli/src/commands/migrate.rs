//! `migrate --from URL --to URL`: every tenant, stream and snapshot.

use anyhow::{Context as _, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use runstore::{EventLog as _, EventRecord, ReadQuery, SnapshotStore as _, Store, StreamKey};
use serde::Serialize;

use crate::{Ctx, open_store};

/// Records read and imported per call.
pub const PAGE: usize = 10_000;

/// What a migration did; printed at the end.
#[derive(Debug, Default, Serialize)]
struct Summary {
    from: String,
    to: String,
    streams: usize,
    records: usize,
    records_written: usize,
    snapshot_streams: usize,
    snapshots: usize,
    verified: bool,
}

/// Copies `--from` into `--to`, then checks that the target reads back
/// every source stream exactly and holds every source snapshot.
pub async fn run(ctx: &Ctx, args: crate::cli::MigrateArgs) -> Result<()> {
    let source = open_store(&args.from).await?;
    let target = open_store(&args.to).await?;
    let streams = source.streams().await.context("listing source streams")?;
    let snapshot_streams = source
        .snapshot_streams()
        .await
        .context("listing source snapshot streams")?;
    let mut summary = Summary {
        from: args.from.clone(),
        to: args.to.clone(),
        streams: streams.len(),
        snapshot_streams: snapshot_streams.len(),
        ..Summary::default()
    };

    let total = u64::try_from(streams.len() * 2 + snapshot_streams.len()).unwrap_or(u64::MAX);
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {elapsed}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );

    bar.set_message("events");
    for key in &streams {
        let (records, written) = copy_stream(&source, &target, key).await?;
        summary.records += records;
        summary.records_written += written;
        bar.inc(1);
    }
    bar.set_message("snapshots");
    for key in &snapshot_streams {
        let snapshots = source
            .list(&key.tenant, &key.run_id, None)
            .await
            .with_context(|| format!("listing snapshots of {key}"))?;
        for snapshot in &snapshots {
            target.put(&key.tenant, snapshot).await.with_context(|| {
                format!(
                    "storing snapshot {:?} of {key}",
                    snapshot.snapshot_id.as_str()
                )
            })?;
        }
        summary.snapshots += snapshots.len();
        bar.inc(1);
    }

    bar.set_message("verifying");
    for key in &streams {
        verify_stream(&source, &target, key).await?;
        bar.inc(1);
    }
    let mut target_snapshots = 0;
    for key in &snapshot_streams {
        let expected = source.list(&key.tenant, &key.run_id, None).await?;
        let actual = target.list(&key.tenant, &key.run_id, None).await?;
        for snapshot in &expected {
            if !actual.contains(snapshot) {
                bail!(
                    "verification failed: snapshot {:?} of {key} is missing or differs in the target",
                    snapshot.snapshot_id.as_str()
                );
            }
        }
        target_snapshots += expected.len();
    }
    if target_snapshots != summary.snapshots {
        bail!(
            "verification failed: copied {} snapshots but found {target_snapshots}",
            summary.snapshots
        );
    }
    bar.finish_and_clear();
    summary.verified = true;

    let mut out = ctx.output();
    out.emit(&summary)?;
    out.flush()
}

/// Imports one stream page by page; returns (records read, records written).
async fn copy_stream(source: &Store, target: &Store, key: &StreamKey) -> Result<(usize, usize)> {
    let mut after = None;
    let (mut records, mut written) = (0, 0);
    loop {
        let page = read_page(source, key, after)
            .await
            .with_context(|| format!("reading {key} from the source"))?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        written += target
            .import_stream(&key.tenant, &key.run_id, &page)
            .await
            .with_context(|| format!("importing {key} into the target"))?;
        records += page.len();
        if page.len() < PAGE {
            break;
        }
    }
    Ok((records, written))
}

/// Checks that the target reads back the source stream record for record.
async fn verify_stream(source: &Store, target: &Store, key: &StreamKey) -> Result<()> {
    let mut after = None;
    let mut count = 0;
    loop {
        let expected = read_page(source, key, after).await?;
        let actual = read_page(target, key, after).await?;
        if let Some((want, got)) = expected.iter().zip(&actual).find(|(want, got)| want != got) {
            bail!(
                "verification failed: {key} differs at seq {}: the target holds {:?} at seq {}",
                want.seq,
                got.event_id.as_str(),
                got.seq
            );
        }
        if expected.len() != actual.len() {
            bail!(
                "verification failed: {key} has {} records in the source and {} in the target",
                count + expected.len(),
                count + actual.len()
            );
        }
        count += expected.len();
        let Some(last) = expected.last() else { break };
        after = Some(last.seq);
        if expected.len() < PAGE {
            break;
        }
    }
    Ok(())
}

async fn read_page(store: &Store, key: &StreamKey, after: Option<u64>) -> Result<Vec<EventRecord>> {
    let query = ReadQuery {
        after_seq: after,
        limit: Some(PAGE),
        ..ReadQuery::default()
    };
    Ok(store.read(&key.tenant, &key.run_id, query).await?)
}
