//! A run's snapshot log as bytes on disk: its records, and the spare space
//! after them.
//!
//! A put writes its line right after the last record and syncs the file's
//! data (`fdatasync`). A sync that also changes the file's size commits the
//! inode too: on ext4 one more 4 KiB metadata write per put, besides the
//! data and the cache flush (docs/backends/jsonl.md, "Snapshot puts and
//! latest reads"). So the log is grown ahead of its puts: a put whose line
//! does not fit in the file first writes zeros up to the next
//! [`allocation`] boundary, then its line, and syncs once; the puts after
//! it overwrite those zeros in place, and their syncs carry data only --
//! as SQLite's write-ahead log, overwritten in place once checkpointed,
//! does.
//!
//! A log is therefore: lines, each a JSON record and its `\n`, then zero
//! bytes (none in a log that a prune rewrote, or that a version before the
//! spare space wrote). A record never holds a NUL byte (JSON escapes it),
//! which is how [`scan`] tells records from spare space, and both from what
//! a crash left of an interrupted put: a prefix of the line, or, where
//! sectors of it never reached the disk, the line with runs of NUL bytes in
//! it (never-written space reads as zeros).
//!
//! Versions before the spare space read one as a torn last line without its
//! newline, and cut it off at open: they still open these logs.

use std::ops::Range;

/// The smallest step a log grows by: one page.
const MIN_STEP: u64 = 4096;
/// The largest step a log grows by, and so the most spare space a log
/// carries.
const MAX_STEP: u64 = 64 * 1024;

/// The length to grow a log to when its records need `need` bytes: `need`
/// rounded up to a step that doubles with the log's size, from one page to
/// [`MAX_STEP`]. So a small run's log takes one page, and a long run's log
/// grows once per [`MAX_STEP`] of records (about 110 puts of the peer
/// bench's 590-byte lines).
pub(crate) fn allocation(need: u64) -> u64 {
    let step = need.next_power_of_two().clamp(MIN_STEP, MAX_STEP);
    need.div_ceil(step) * step
}

/// What follows a log's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    /// Nothing, or zeros only: spare space the next put writes into.
    Spare,
    /// What a crash left of one interrupted put (it never returned): at
    /// most one line's bytes with at most its own newline, as its last
    /// byte, then zeros. Open cuts it off.
    Torn,
    /// More than one put could leave: a newline at this offset with other
    /// bytes after it. Damage, not a crash.
    Damaged {
        /// The offset of that newline.
        at: usize,
    },
}

/// A log read front to back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Each record's bytes, without its newline.
    pub(crate) records: Vec<Range<usize>>,
    /// Where the records end: the offset the next put writes at.
    pub(crate) end: usize,
    /// What the bytes from `end` on are.
    pub(crate) after: After,
}

/// Reads the records of a log's `bytes`. A line is a record when it ends
/// with a newline and holds no NUL byte; the first line that is not ends
/// the records. Whether a record parses is the caller's question.
pub(crate) fn scan(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        let Some(newline) = bytes[start..].iter().position(|byte| *byte == b'\n') else {
            break;
        };
        let line = start..start + newline;
        if bytes[line.clone()].contains(&0) {
            break;
        }
        start = line.end + 1;
        records.push(line);
    }
    let rest = &bytes[start..];
    let written = rest
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |at| at + 1);
    let after = match rest[..written].iter().position(|byte| *byte == b'\n') {
        _ if written == 0 => After::Spare,
        Some(newline) if newline + 1 < written => After::Damaged {
            at: start + newline,
        },
        _ => After::Torn,
    };
    Scan {
        records,
        end: start,
        after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(bytes: &[u8]) -> (Vec<&[u8]>, usize, After) {
        let scan = scan(bytes);
        let records = scan.records.iter().map(|r| &bytes[r.clone()]).collect();
        (records, scan.end, scan.after)
    }

    #[test]
    fn records_then_spare_space() {
        assert_eq!(ranges(b""), (vec![], 0, After::Spare));
        assert_eq!(
            ranges(b"{a}\n{b}\n"),
            (vec![&b"{a}"[..], b"{b}"], 8, After::Spare)
        );
        let mut spare = b"{a}\n".to_vec();
        spare.resize(4096, 0);
        assert_eq!(ranges(&spare), (vec![&b"{a}"[..]], 4, After::Spare));
        assert_eq!(ranges(&[0; 100]), (vec![], 0, After::Spare));
    }

    #[test]
    fn what_a_crash_leaves_of_one_put_is_torn() {
        let mut bytes = b"{a}\n".to_vec();
        bytes.resize(64, 0);
        // A prefix of the line.
        let mut prefix = bytes.clone();
        prefix[4..7].copy_from_slice(b"{bb");
        assert_eq!(ranges(&prefix), (vec![&b"{a}"[..]], 4, After::Torn));
        // The line with a sector missing in the middle, newline and all.
        let mut holed = bytes.clone();
        holed[4..12].copy_from_slice(b"{b\0\0\0b}\n");
        assert_eq!(ranges(&holed), (vec![&b"{a}"[..]], 4, After::Torn));
        // Only its end.
        let mut end = bytes.clone();
        end[9..12].copy_from_slice(b"b}\n");
        assert_eq!(ranges(&end), (vec![&b"{a}"[..]], 4, After::Torn));
        // A prefix without zeros after it (a log without spare space).
        assert_eq!(ranges(b"{a}\n{b"), (vec![&b"{a}"[..]], 4, After::Torn));
    }

    #[test]
    fn more_than_one_line_after_the_records_is_damage() {
        let mut bytes = b"{a}\n".to_vec();
        bytes.resize(64, 0);
        bytes[4..14].copy_from_slice(b"{\0}\n{c}\n\0\0");
        assert_eq!(
            ranges(&bytes),
            (vec![&b"{a}"[..]], 4, After::Damaged { at: 7 })
        );
        // A NUL in a line followed by records.
        assert_eq!(
            ranges(b"{a}\n{\0}\n{c}\n"),
            (vec![&b"{a}"[..]], 4, After::Damaged { at: 7 })
        );
    }

    #[test]
    fn allocations_double_from_a_page_to_the_largest_step() {
        assert_eq!(allocation(1), 4096);
        assert_eq!(allocation(600), 4096);
        assert_eq!(allocation(4096), 4096);
        assert_eq!(allocation(4097), 8192);
        assert_eq!(allocation(8193), 16384);
        assert_eq!(allocation(40_000), 65_536);
        assert_eq!(allocation(65_537), 131_072);
        assert_eq!(allocation(1_000_000), 1_048_576);
        assert_eq!(allocation(1_048_577), 1_114_112);
    }
}
