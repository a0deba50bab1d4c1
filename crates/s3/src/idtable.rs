//! The id table a segment carries after its records (docs/backends/s3.md,
//! "Where an event id is found").
//!
//! A segment object is its records as a JSON array followed by this table:
//! one fixed-width entry per id the segment holds ([`crate::head::index_entries`]:
//! an ordinary record's own id, and every id a marker remembers), sorted by
//! entry. An entry is the SHA-256 digest of the id's bytes (32 bytes) and
//! the id's seq (8 bytes, big-endian). The head's [`SegmentRef::index`]
//! says where the table starts and how many entries it has, so a reader
//! fetches only the part it needs with a ranged GET:
//!
//! - digests are uniform, so the entry for an id sits near
//!   `digest / 2^256 * count`; [`window`] names a range of entries around
//!   that position wide enough that it nearly always holds it (eight
//!   standard deviations of where a uniform sample puts it), or the whole
//!   table when that is small;
//! - [`check`] refuses a part that is not whole entries in ascending order,
//!   and [`find`] answers `Found`, `Absent`, or `Outside` when the window did
//!   not bracket the digest (the caller then reads the whole table, which
//!   always answers).
//!
//! Two ids are taken to be the same id when their SHA-256 digests are:
//! finding two ids with one digest is beyond any known computation, and
//! the table never holds two entries with one digest (a segment holds each
//! id once, and [`encode`] refuses two).
//!
//! [`SegmentRef::index`]: crate::head::SegmentRef::index

use runstore_core::{Error, EventId, Result};
use sha2::{Digest as _, Sha256};

/// Bytes of one entry: a digest and a seq.
pub(crate) const ENTRY: u64 = 40;
/// A table of at most this many entries is always read whole (40 KiB).
const READ_WHOLE: u64 = 1_024;

/// The SHA-256 digest of an id's bytes: its key in the table.
pub(crate) type Digest = [u8; 32];

/// The digest an id is filed under.
pub(crate) fn digest(id: &EventId) -> Digest {
    Sha256::digest(id.as_str().as_bytes()).into()
}

/// The table of `entries` (id and seq; each id once). Two ids with one
/// digest, or one id twice, are refused.
pub(crate) fn encode(entries: &[(EventId, u64)]) -> Result<Vec<u8>> {
    let mut keyed: Vec<(Digest, u64)> =
        entries.iter().map(|(id, seq)| (digest(id), *seq)).collect();
    keyed.sort_unstable();
    if let Some(pair) = keyed.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(Error::invalid(format!(
            "cannot index a segment: two of its ids share a digest (seqs {} and {})",
            pair[0].1, pair[1].1
        )));
    }
    let mut bytes = Vec::with_capacity(keyed.len() * 40);
    for (key, seq) in keyed {
        bytes.extend_from_slice(&key);
        bytes.extend_from_slice(&seq.to_be_bytes());
    }
    Ok(bytes)
}

/// The entries `[start, end)` of a table of `count` entries that a lookup
/// of `key` reads first.
pub(crate) fn window(count: u64, key: &Digest) -> (u64, u64) {
    if count <= READ_WHOLE {
        return (0, count);
    }
    let mut high = [0; 8];
    high.copy_from_slice(&key[..8]);
    let at = (u128::from(u64::from_be_bytes(high)) * u128::from(count)) >> 64;
    let at = u64::try_from(at).unwrap_or(count);
    // A uniform sample puts the entry within sqrt(count) / 2 of `at` in one
    // standard deviation.
    let half = 4 * count.isqrt() + 16;
    (at.saturating_sub(half), at.saturating_add(half).min(count))
}

/// What a part of a table says of one digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The id is in the table, at this seq.
    Found(u64),
    /// The id is not in the table.
    Absent,
    /// The part does not bracket the digest: read the whole table.
    Outside,
}

/// Checks that `bytes`, the entries from `start` on of a table, are whole
/// entries in ascending order; the reason when not (the caller names the
/// object). Done once per part read, before [`find`] searches it.
pub(crate) fn check(bytes: &[u8], start: u64) -> std::result::Result<(), String> {
    if !(bytes.len() as u64).is_multiple_of(ENTRY) {
        return Err(format!(
            "an id table part of {} bytes is not whole entries of {ENTRY}",
            bytes.len()
        ));
    }
    let mut entries = bytes.chunks_exact(40);
    let mut previous = entries.next();
    for (at, entry) in entries.enumerate() {
        if previous.is_some_and(|previous| previous[..32] >= entry[..32]) {
            return Err(format!(
                "the id table is not sorted at entry {}",
                start + at as u64 + 1
            ));
        }
        previous = Some(entry);
    }
    Ok(())
}

/// Looks `key` up in `bytes`, the entries `[start, start + len)` of a table
/// of `count` entries, which [`check`] accepted.
pub(crate) fn find(bytes: &[u8], start: u64, count: u64, key: &Digest) -> Lookup {
    let entry = |at: usize| &bytes[at * 40..at * 40 + 40];
    let len = bytes.len() / 40;
    let (mut low, mut high) = (0, len);
    while low < high {
        let middle = low + (high - low) / 2;
        match entry(middle)[..32].cmp(&key[..]) {
            std::cmp::Ordering::Less => low = middle + 1,
            std::cmp::Ordering::Greater => high = middle,
            std::cmp::Ordering::Equal => {
                let mut seq = [0; 8];
                seq.copy_from_slice(&entry(middle)[32..]);
                return Lookup::Found(u64::from_be_bytes(seq));
            }
        }
    }
    // Below the part's first entry: absent only if the part starts the
    // table; above its last: only if it ends it.
    let end = start + len as u64;
    if (low == 0 && start > 0) || (low == len && end < count) {
        Lookup::Outside
    } else {
        Lookup::Absent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> EventId {
        EventId::new(text).unwrap()
    }

    fn table(n: u64) -> (Vec<(EventId, u64)>, Vec<u8>) {
        let entries: Vec<_> = (1..=n)
            .map(|seq| (id(&format!("event-{seq}")), seq))
            .collect();
        let bytes = encode(&entries).unwrap();
        (entries, bytes)
    }

    fn part(bytes: &[u8], (start, end): (u64, u64)) -> &[u8] {
        let from = usize::try_from(start * ENTRY).unwrap();
        let to = usize::try_from(end * ENTRY).unwrap();
        &bytes[from..to]
    }

    #[test]
    fn every_id_is_found_in_its_window_and_absent_ones_are_not() {
        for n in [1, 5, 1_024, 1_025, 20_000] {
            let (entries, bytes) = table(n);
            assert_eq!(bytes.len() as u64, n * ENTRY);
            check(&bytes, 0).unwrap();
            let mut outside = 0;
            for (event_id, seq) in &entries {
                let key = digest(event_id);
                let range = window(n, &key);
                let window = part(&bytes, range);
                check(window, range.0).unwrap();
                match find(window, range.0, n, &key) {
                    Lookup::Found(found) => assert_eq!(found, *seq),
                    Lookup::Outside => outside += 1,
                    Lookup::Absent => panic!("{event_id:?} reported absent from a table of {n}"),
                }
                assert_eq!(
                    find(&bytes, 0, n, &key),
                    Lookup::Found(*seq),
                    "the whole table always answers"
                );
            }
            assert_eq!(outside, 0, "windows of a table of {n} missed {outside} ids");
            for missing in 0..200 {
                let key = digest(&id(&format!("missing-{missing}")));
                let range = window(n, &key);
                assert!(!matches!(
                    find(part(&bytes, range), range.0, n, &key),
                    Lookup::Found(_)
                ));
                assert_eq!(find(&bytes, 0, n, &key), Lookup::Absent);
            }
        }
    }

    #[test]
    fn windows_are_small_in_large_tables_and_whole_in_small_ones() {
        let key = digest(&id("x"));
        assert_eq!(window(1_024, &key), (0, 1_024));
        let (start, end) = window(1_000_000, &key);
        assert!(end - start <= 2 * (4 * 1_000 + 16), "{start}..{end}");
        assert!(end <= 1_000_000);
        assert_eq!(window(0, &key), (0, 0));
    }

    #[test]
    fn a_part_that_does_not_bracket_the_digest_says_so() {
        let (entries, bytes) = table(100);
        let mut keyed: Vec<_> = entries.iter().map(|(id, seq)| (digest(id), *seq)).collect();
        keyed.sort_unstable();
        let middle = part(&bytes, (40, 60));
        // The smallest and largest digests lie outside the middle part.
        assert_eq!(find(middle, 40, 100, &keyed[0].0), Lookup::Outside);
        assert_eq!(find(middle, 40, 100, &keyed[99].0), Lookup::Outside);
        assert_eq!(
            find(middle, 40, 100, &keyed[50].0),
            Lookup::Found(keyed[50].1)
        );
        // At the table's ends, below the first or above the last is absent.
        assert_eq!(
            find(part(&bytes, (0, 10)), 0, 100, &[0; 32]),
            Lookup::Absent
        );
        assert_eq!(
            find(part(&bytes, (90, 100)), 90, 100, &[0xff; 32]),
            Lookup::Absent
        );
        assert_eq!(find(&[], 0, 0, &keyed[0].0), Lookup::Absent);
    }

    #[test]
    fn damaged_parts_and_repeated_ids_are_refused() {
        let (_, bytes) = table(10);
        assert!(
            check(&bytes[..39], 0)
                .unwrap_err()
                .contains("whole entries")
        );
        let mut swapped = bytes.clone();
        swapped[..40].copy_from_slice(&bytes[40..80]);
        swapped[40..80].copy_from_slice(&bytes[..40]);
        assert!(
            check(&swapped, 0)
                .unwrap_err()
                .contains("not sorted at entry 1")
        );
        assert!(
            check(&swapped[..120], 7)
                .unwrap_err()
                .contains("not sorted at entry 8")
        );
        let twice = encode(&[(id("a"), 1), (id("a"), 2)]).unwrap_err();
        assert!(twice.to_string().contains("seqs 1 and 2"), "{twice}");
    }
}
