//! Giving the records of a log written by an earlier version their feed
//! positions (CONTRACT §29), once, at open.
//!
//! Each tenant's records without a position take the positions after the
//! tenant's highest, in file order: the log holds a stream's records in
//! seq order, so each stream's events keep their order in the feed. The
//! log is rewritten with the positions in its lines (temp file, sync,
//! rename, directory sync, as compaction publishes a log), so every later
//! open reads the same positions, whatever a later compaction prunes. A
//! crash before the rename leaves the old log and a temp file that the
//! next open removes before it gives the same positions again.

use std::{
    collections::HashMap,
    io::{BufWriter, Write as _},
    path::Path,
};

use runstore_core::{Result, Tenant};

use crate::{
    error::{corrupt_at, io_at},
    feed,
    fileio::Io,
    index::{Index, Loc, LogFile},
    layout::{LOG_FILE, TMP_SUFFIX},
};

/// Rewrites the log at `log` (whose records `index` holds) with a position
/// in every line, each tenant's new positions above `floor` (the start of
/// the feed's epoch, `crate::feed::read_epoch`); the caller reopens and
/// scans it again. Lines the index does not hold (of deleted runs) are
/// dropped, as a compaction drops them.
///
/// # Errors
/// `Io`; `Corrupt` when a line cannot be read back.
pub(crate) fn give_positions(
    io: &Io,
    dir: &Path,
    log: &LogFile,
    index: &Index,
    floor: u64,
) -> Result<()> {
    let mut heads: HashMap<&Tenant, u64> = HashMap::new();
    let mut order: Vec<(Loc, &Tenant)> = Vec::new();
    for stream in &index.streams {
        let head = heads.entry(&stream.key.tenant).or_insert(floor);
        for loc in &stream.locs {
            *head = (*head).max(loc.pos);
            order.push((*loc, &stream.key.tenant));
        }
    }
    order.sort_unstable_by_key(|(loc, _)| loc.offset);
    let locs: Vec<Loc> = order.iter().map(|(loc, _)| *loc).collect();
    let path = dir.join(LOG_FILE);
    let tmp = dir.join(format!("{LOG_FILE}{TMP_SUFFIX}"));
    let written = (|| -> Result<()> {
        let file = io
            .create_truncated(&tmp)
            .map_err(|err| io_at("create", &tmp, err))?;
        let mut out = BufWriter::with_capacity(1 << 20, io.writer(file, &tmp));
        let mut stamped = Vec::new();
        log.read_lines(&locs, |at, line| {
            // Published whole by one rename: no batch framing needed.
            let line = line.trim_ascii();
            let (loc, tenant) = &order[at];
            let line = if loc.pos == 0 {
                if line.first() != Some(&b'{') {
                    return Err(corrupt_at(
                        &log.path,
                        loc.offset,
                        "the record is not a JSON object",
                    ));
                }
                let head = heads.get_mut(tenant).expect("every tenant has a head");
                *head = feed::next(*head)?;
                stamped.clear();
                feed::stamp(&mut stamped, *head, line);
                &stamped[..]
            } else {
                line
            };
            out.write_all(line)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|err| io_at("write", &tmp, err))
        })?;
        crate::compact::synced(out, io, &tmp)?;
        Ok(())
    })();
    if let Err(err) = written {
        let _ = io.remove_file(&tmp);
        return Err(err);
    }
    io.rename(&tmp, &path)
        .map_err(|err| io_at("replace", &path, err))?;
    // Synced whatever the durability: the positions are handed out once.
    io.sync_dir(dir).map_err(|err| io_at("sync", dir, err))
}
