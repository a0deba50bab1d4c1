//! The tenant change feed (CONTRACT §29): each record's position, kept in
//! its line, and the per-tenant index [`read_feed`] answers from.
//!
//! A line carries its position as the first member of its object,
//! `{"feed_position":42,"schema_version":...}`; the rest is the record's
//! JSON as before. `serde_json` writes an [`EventRecord`] starting with
//! `schema_version`, so a line that starts with the member is one this
//! version wrote, and a record's own members (even an unknown one of the
//! same name) are never mistaken for it. Readers strip the member before
//! parsing the record, so reads answer the record as it was appended.
//!
//! A line without the member (written by an earlier version) has no
//! position yet: the open pass gives every such line one, in file order,
//! above the tenant's highest, and rewrites the log with them once
//! ([`crate::JsonlStore::open`]).
//!
//! A compaction marker is written into the new log before its position is
//! known (the writer goes on appending meanwhile): its member holds
//! [`RESERVED`] bytes (`0` and spaces, JSON whitespace) that the last step
//! overwrites with the position before the new log is published.
//!
//! [`read_feed`]: runstore_core::EventLog::read_feed

use std::{io::Write as _, path::Path};

use runstore_core::{
    Durability, Error, EventRecord, FeedPosition, FeedRecord, Result, RunId, Tenant,
};

use crate::{error::io_at, fileio::Io, index::Loc, layout::FEED_FILE, writer::Shared};

/// How a line this version wrote starts (after a batch's leading space).
pub(crate) const MEMBER: &[u8] = b"{\"feed_position\":";

/// Bytes a compaction marker reserves for its position: enough for any
/// `u64`.
pub(crate) const RESERVED: usize = 20;

/// Positions are `epoch << EPOCH_BITS | n`: an epoch holds 2^40 positions
/// per tenant.
pub(crate) const EPOCH_BITS: u32 = 40;

/// The epoch of `position`.
pub(crate) fn epoch_of(position: u64) -> u64 {
    position >> EPOCH_BITS
}

/// The epoch the store's `FEED` file records, `None` when there is none
/// (a store this version never opened).
///
/// Why an epoch: an earlier version that writes to the store (after a
/// roll-back) writes lines without positions and may delete the lines that
/// held a tenant's highest positions, so the highest position left in the
/// log can be below one a reader was given. When open finds such lines in
/// a store that had positions, it raises the epoch above every epoch the
/// store or its lines ever used and gives them positions in the new one:
/// above every position handed out before, whatever was deleted.
///
/// # Errors
/// `Io`; `Corrupt` when the file holds no epoch.
pub(crate) fn read_epoch(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(FEED_FILE);
    match std::fs::read(&path) {
        Ok(found) => std::str::from_utf8(&found)
            .ok()
            .and_then(|text| text.strip_suffix('\n'))
            .and_then(|digits| digits.parse::<u64>().ok())
            .filter(|epoch| *epoch < 1 << (64 - EPOCH_BITS))
            .map(Some)
            .ok_or_else(|| {
                Error::corrupt(
                    path.display(),
                    format!(
                        "the feed epoch file holds {:?}, not an epoch and a newline",
                        String::from_utf8_lossy(&found)
                    ),
                )
            }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_at("read", &path, err)),
    }
}

/// Records `epoch` in the store's `FEED` file, durably whatever the
/// store's durability (positions are handed out once).
///
/// # Errors
/// `Io`.
pub(crate) fn write_epoch(io: &Io, dir: &Path, epoch: u64) -> Result<()> {
    runstore_fs::write_atomic(
        io,
        dir,
        FEED_FILE,
        format!("{epoch}\n").as_bytes(),
        Durability::Durable,
    )
    .map_err(|err| io_at("write", &dir.join(FEED_FILE), err))
}

/// The position after `head`.
///
/// # Errors
/// `InvalidInput` when `head` is the highest position (only a log edited
/// by hand can get there).
pub(crate) fn next(head: u64) -> Result<u64> {
    head.checked_add(1)
        .ok_or_else(|| Error::invalid("the tenant's feed has used every position"))
}

/// Appends `record`'s line body carrying `position` to `out`. On an error
/// `out` holds part of a line; the caller cuts it off.
pub(crate) fn write_record(
    out: &mut Vec<u8>,
    position: u64,
    record: &EventRecord,
) -> serde_json::Result<()> {
    out.extend_from_slice(MEMBER);
    write!(out, "{position}").map_err(serde_json::Error::io)?;
    join_record(out, record)
}

/// Appends `record`'s line body with a position to be filled in by
/// [`fill_reserved`] at [`MEMBER`]`.len()` bytes from its start.
pub(crate) fn write_reserved(out: &mut Vec<u8>, record: &EventRecord) -> serde_json::Result<()> {
    out.extend_from_slice(MEMBER);
    out.push(b'0');
    out.extend(std::iter::repeat_n(b' ', RESERVED - 1));
    join_record(out, record)
}

/// The [`RESERVED`] bytes that state `position`.
pub(crate) fn fill_reserved(position: u64) -> [u8; RESERVED] {
    let mut bytes = [b' '; RESERVED];
    let digits = position.to_string();
    bytes[..digits.len()].copy_from_slice(digits.as_bytes());
    bytes
}

fn join_record(out: &mut Vec<u8>, record: &EventRecord) -> serde_json::Result<()> {
    let start = out.len();
    serde_json::to_writer(&mut *out, record)?;
    // The record's own `{` becomes the separator after the position.
    debug_assert_eq!(out.get(start), Some(&b'{'));
    out[start] = b',';
    Ok(())
}

/// Adds the member stating `position` to `line`, a body without one (an
/// earlier version's line, its leading whitespace trimmed).
pub(crate) fn stamp(out: &mut Vec<u8>, position: u64, line: &[u8]) {
    out.extend_from_slice(MEMBER);
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{position}");
    out.push(b',');
    out.extend_from_slice(&line[1..]);
}

/// The position a line states, and where the `,` after it is; `Ok(None)`
/// for a line without one (an earlier version's). A reserved position that
/// was never filled in reads as 0, which no record holds.
///
/// # Errors
/// What is wrong with a member that is there but malformed.
pub(crate) fn split(line: &[u8]) -> Result<Option<(u64, usize)>, &'static str> {
    let lead = line.len() - line.trim_ascii_start().len();
    let Some(rest) = line[lead..].strip_prefix(MEMBER) else {
        return Ok(None);
    };
    let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
    if digits == 0 {
        return Err("feed_position is not a number");
    }
    let mut position: u64 = 0;
    for digit in &rest[..digits] {
        position = position
            .checked_mul(10)
            .and_then(|value| value.checked_add(u64::from(digit - b'0')))
            .ok_or("feed_position is above the highest position")?;
    }
    let spaces = rest[digits..]
        .iter()
        .take_while(|byte| **byte == b' ')
        .count();
    if rest.get(digits + spaces) != Some(&b',') {
        return Err("feed_position is not followed by the record");
    }
    Ok(Some((position, lead + MEMBER.len() + digits + spaces)))
}

/// Turns `line` in place into the record's JSON alone (the member becomes
/// whitespace) and answers its position (0 when it states none).
///
/// # Errors
/// As [`split`].
pub(crate) fn strip(line: &mut [u8]) -> Result<u64, &'static str> {
    let Some((position, comma)) = split(line)? else {
        return Ok(0);
    };
    let lead = line.len() - line.trim_ascii_start().len();
    line[lead..comma].fill(b' ');
    line[comma] = b'{';
    Ok(position)
}

/// Parses a line as a record, without its position (for readers that hold
/// the line's bytes by reference).
///
/// # Errors
/// The parse error, or what is wrong with the position.
pub(crate) fn parse(line: &[u8]) -> Result<EventRecord, String> {
    match split(line)? {
        None => serde_json::from_slice(line).map_err(|err| err.to_string()),
        Some(_) => {
            let mut owned = line.to_vec();
            strip(&mut owned)?;
            serde_json::from_slice(&owned).map_err(|err| err.to_string())
        }
    }
}

/// Up to `limit` of `tenant`'s records after `after`, ascending (CONTRACT
/// §29): the entries are taken from the index under its read lock, then
/// their lines are read (adjacent ones with one read) and checked as
/// [`read`](crate::writer::Shared::read) checks them.
///
/// # Errors
/// `Corrupt` when a line is not the record the index placed there; `Io`.
pub(crate) fn read(
    shared: &Shared,
    tenant: &Tenant,
    after: FeedPosition,
    limit: usize,
) -> Result<Vec<FeedRecord>> {
    let (high, low) = after.parts();
    if limit == 0 || high != 0 {
        // This store's positions are single counters: `high.low` with a
        // `high` above 0 is after all of them.
        return Ok(Vec::new());
    }
    let (log, locs, runs) = {
        let state = shared.read_state();
        let Some(feed) = state.index.feed(tenant) else {
            return Ok(Vec::new());
        };
        let entries = feed.after(low, limit);
        let mut locs = Vec::with_capacity(entries.len());
        let mut runs: Vec<RunId> = Vec::with_capacity(entries.len());
        for entry in entries {
            let stream = &state.index.streams[entry.slot];
            match stream.loc_of(entry.seq) {
                Some(loc) if loc.pos == entry.position => {
                    locs.push(*loc);
                    runs.push(stream.key.run_id.clone());
                }
                _ => {
                    return Err(Error::corrupt(
                        state.log.path.display(),
                        format!(
                            "feed position {} of tenant {tenant} names seq {} of run {}, \
                             which the index does not hold there",
                            entry.position, entry.seq, stream.key.run_id
                        ),
                    ));
                }
            }
        }
        (state.log.clone(), locs, runs)
    };
    let mut records = Vec::with_capacity(locs.len());
    log.read_lines(&locs, |at, line| {
        let loc = &locs[at];
        records.push(FeedRecord {
            position: FeedPosition::new(loc.pos),
            record: log.parse_record(tenant, &runs[at], loc, line)?,
        });
        Ok(())
    })?;
    Ok(records)
}

/// One record of a tenant's feed: its position and where the index holds
/// it (the stream's slot and the record's seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FeedEntry {
    pub(crate) position: u64,
    pub(crate) seq: u64,
    pub(crate) slot: usize,
}

/// A tenant's part of the feed index.
#[derive(Debug, Default)]
pub(crate) struct TenantFeed {
    /// The highest position ever handed out: the next record takes the one
    /// after it. Never goes down (a rewrite that prunes records writes a
    /// marker above them in the same rename).
    pub(crate) head: u64,
    /// The tenant's records, ascending by position.
    pub(crate) entries: Vec<FeedEntry>,
}

impl TenantFeed {
    /// Adds a record at the end of the feed.
    pub(crate) fn push(&mut self, slot: usize, loc: &Loc) {
        debug_assert!(
            loc.pos > self.head,
            "position {} after head {}",
            loc.pos,
            self.head
        );
        self.head = self.head.max(loc.pos);
        self.entries.push(FeedEntry {
            position: loc.pos,
            seq: loc.seq,
            slot,
        });
    }

    /// The entries after `after`, at most `limit`.
    pub(crate) fn after(&self, after: u64, limit: usize) -> &[FeedEntry] {
        let from = self
            .entries
            .partition_point(|entry| entry.position <= after);
        let to = from.saturating_add(limit).min(self.entries.len());
        &self.entries[from..to]
    }
}

#[cfg(test)]
mod tests {
    use runstore_core::{EventId, RunId, Tenant};

    use super::*;

    fn record() -> EventRecord {
        let mut record = EventRecord::new(
            &Tenant::local(),
            RunId::new("run").unwrap(),
            EventId::new("e").unwrap(),
            "step",
            5,
        );
        // A record of its own may hold a member of the same name.
        record
            .extra
            .insert("feed_position".into(), serde_json::json!("mine"));
        record
    }

    #[test]
    fn a_line_states_its_position_and_reads_back_as_the_record() {
        let mut line = Vec::new();
        write_record(&mut line, 42, &record()).unwrap();
        assert!(line.starts_with(b"{\"feed_position\":42,\"schema_version\""));
        assert_eq!(split(&line).unwrap().map(|(p, _)| p), Some(42));
        assert_eq!(parse(&line).unwrap(), record());
        let mut spaced = b" ".to_vec();
        spaced.extend_from_slice(&line);
        assert_eq!(strip(&mut spaced).unwrap(), 42);
        assert_eq!(
            serde_json::from_slice::<EventRecord>(&spaced).unwrap(),
            record()
        );
    }

    #[test]
    fn a_reserved_position_is_filled_in_place() {
        let mut line = Vec::new();
        write_reserved(&mut line, &record()).unwrap();
        assert_eq!(split(&line).unwrap().map(|(p, _)| p), Some(0));
        let at = MEMBER.len();
        line[at..at + RESERVED].copy_from_slice(&fill_reserved(u64::MAX));
        assert_eq!(split(&line).unwrap().map(|(p, _)| p), Some(u64::MAX));
        assert_eq!(parse(&line).unwrap(), record());
    }

    #[test]
    fn an_earlier_line_has_no_position_until_stamped() {
        let old = serde_json::to_vec(&record()).unwrap();
        assert_eq!(split(&old).unwrap(), None);
        assert_eq!(parse(&old).unwrap(), record());
        let mut stamped = Vec::new();
        stamp(&mut stamped, 7, &old);
        assert_eq!(split(&stamped).unwrap().map(|(p, _)| p), Some(7));
        assert_eq!(parse(&stamped).unwrap(), record());
    }

    #[test]
    fn malformed_positions_are_refused() {
        for line in [
            &b"{\"feed_position\":,\"a\":1}"[..],
            b"{\"feed_position\":1x,\"a\":1}",
            b"{\"feed_position\":99999999999999999999,\"a\":1}",
            b"{\"feed_position\":\"1\",\"a\":1}",
        ] {
            assert!(split(line).is_err(), "{}", String::from_utf8_lossy(line));
        }
    }
}
