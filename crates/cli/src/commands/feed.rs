//! `feed`: the tenant's records of every run in commit order (CONTRACT §29).

use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::StreamExt as _;
use runstore::{EventLog as _, EventLogExt as _, EventRecord, FeedPosition, FollowOptions};
use serde::Serialize;

use crate::{Ctx, cli::FeedArgs, output::FEED_COLUMNS};

/// Records one read asks for.
const PAGE: usize = 1_000;

/// One line of `feed` output: the position, then the record's own fields.
#[derive(Serialize)]
struct Line<'a> {
    position: FeedPosition,
    #[serde(flatten)]
    record: &'a EventRecord,
}

/// `feed`, and `feed --follow`.
pub async fn feed(ctx: &Ctx, args: FeedArgs) -> Result<()> {
    let mut after = match &args.after {
        Some(text) => text.parse::<FeedPosition>().context("--after")?,
        None => FeedPosition::START,
    };
    let store = ctx.open_store().await?;
    let mut out = ctx.output();
    out.columns(FEED_COLUMNS);
    let mut left = args.limit.filter(|limit| *limit > 0);
    loop {
        let page = left.map_or(PAGE, |left| left.min(PAGE));
        let records = store
            .read_feed(&ctx.tenant, after, page)
            .await
            .context("reading the feed")?;
        for entry in &records {
            out.emit(&Line {
                position: entry.position,
                record: &entry.record,
            })?;
        }
        if let Some(last) = records.last() {
            after = last.position;
        }
        if let Some(left) = &mut left {
            *left -= records.len();
        }
        if records.len() < page || left == Some(0) {
            break;
        }
    }
    out.flush()?;
    if !args.follow {
        return Ok(());
    }
    let options = FollowOptions {
        poll_interval: Duration::from_millis(args.poll_ms.max(1)),
        ..FollowOptions::default()
    };
    let mut follow = store.follow_feed(&ctx.tenant, after, options);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            signal = &mut interrupted => {
                signal.context("waiting for ctrl-c")?;
                return Ok(());
            }
            next = follow.next() => {
                let Some(entry) = next else { return Ok(()) };
                let entry = entry.context("following the feed")?;
                out.emit(&Line {
                    position: entry.position,
                    record: &entry.record,
                })?;
                out.flush()?;
            }
        }
    }
}
