//! The id table of a segment (docs/backends/s3.md, "Where an event id is
//! found").
//!
//! A segment's table has one fixed-width entry per id the segment holds
//! ([`crate::head::index_entries`]: an ordinary record's own id, and every
//! id a marker remembers): the SHA-256 digest of the id's bytes (32 bytes)
//! and the id's seq (8 bytes, big-endian), sorted by digest. The head's
//! [`SegmentRef::index`] says how many entries it has and where they are:
//!
//! - a table of at most [`PAGE`] entries leads the segment object itself,
//!   before its records' JSON, so one GET from byte 0 reads it;
//! - a larger one is split by digest into `pages` objects of about
//!   [`PAGE`] entries each ([`page_of`]: digests are uniform, so page `p`
//!   holds the digests whose top 64 bits, times `pages`, fall in `p`), and
//!   a lookup reads the one page its digest belongs to.
//!
//! [`check`] refuses a part that is not whole entries in ascending order;
//! [`find`] answers whether a digest is in it.
//!
//! Two ids are taken to be the same id when their SHA-256 digests are:
//! finding two ids with one digest is beyond any known computation, and
//! the table never holds two entries with one digest (a segment holds each
//! id once, and [`encode`] refuses two).
//!
//! [`SegmentRef::index`]: crate::head::SegmentRef::index

use runstore_core::EventId;
use sha2::{Digest as _, Sha256};

/// Bytes of one entry: a digest and a seq.
pub(crate) const ENTRY: u64 = 40;
/// Entries per page: a table of at most this many leads its segment, a
/// larger one is split into pages of about this many (40 KiB): a lookup
/// of an id in a large table reads one such page.
pub(crate) const PAGE: u64 = 1_024;

/// The SHA-256 digest of an id's bytes: its key in the table.
pub(crate) type Digest = [u8; 32];

/// The digest an id is filed under.
pub(crate) fn digest(id: &EventId) -> Digest {
    Sha256::digest(id.as_str().as_bytes()).into()
}

/// How many page objects a table of `count` entries is split into: 0 when
/// it leads its segment.
pub(crate) fn pages_for(count: u64) -> u32 {
    if count <= PAGE {
        0
    } else {
        u32::try_from(count.div_ceil(PAGE)).unwrap_or(u32::MAX)
    }
}

/// The page of a table split into `pages` that holds `key`.
pub(crate) fn page_of(key: &Digest, pages: u32) -> u32 {
    let mut high = [0; 8];
    high.copy_from_slice(&key[..8]);
    let page = (u128::from(u64::from_be_bytes(high)) * u128::from(pages)) >> 64;
    u32::try_from(page).unwrap_or(u32::MAX)
}

/// The table of `entries` (id and seq; each id once), as the bytes of each
/// of its `pages_for(entries.len())` pages (one part when it leads its
/// segment). Two ids with one digest are refused with the reason.
pub(crate) fn encode(entries: &[(EventId, u64)]) -> std::result::Result<Vec<Vec<u8>>, String> {
    let mut keyed: Vec<(Digest, u64)> =
        entries.iter().map(|(id, seq)| (digest(id), *seq)).collect();
    keyed.sort_unstable();
    if let Some(pair) = keyed.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(format!(
            "two of its ids share a digest (seqs {} and {})",
            pair[0].1, pair[1].1
        ));
    }
    let pages = pages_for(keyed.len() as u64);
    let mut parts = vec![Vec::new(); pages.max(1) as usize];
    for (key, seq) in keyed {
        let part = if pages == 0 {
            0
        } else {
            page_of(&key, pages) as usize
        };
        parts[part].extend_from_slice(&key);
        parts[part].extend_from_slice(&seq.to_be_bytes());
    }
    Ok(parts)
}

/// Checks that `bytes`, a whole table (`page` `None`) or page `page` of a
/// table split into `pages`, is whole entries in ascending order, each on
/// its page; the reason when not (the caller names the object). Done once
/// per part read, before [`find`] searches it.
pub(crate) fn check(bytes: &[u8], page: Option<(u32, u32)>) -> std::result::Result<(), String> {
    if !(bytes.len() as u64).is_multiple_of(ENTRY) {
        return Err(format!(
            "an id table part of {} bytes is not whole entries of {ENTRY}",
            bytes.len()
        ));
    }
    let mut previous: Option<&[u8]> = None;
    for (at, entry) in bytes.chunks_exact(40).enumerate() {
        if previous.is_some_and(|previous| previous[..32] >= entry[..32]) {
            return Err(format!("the id table is not sorted at entry {at}"));
        }
        if let Some((page, pages)) = page {
            let mut key = [0; 32];
            key.copy_from_slice(&entry[..32]);
            if page_of(&key, pages) != page {
                return Err(format!(
                    "entry {at} of id table page {page} belongs to another page"
                ));
            }
        }
        previous = Some(entry);
    }
    Ok(())
}

/// The seq of `key` in `bytes`, a part [`check`] accepted; `None` when the
/// part does not hold it.
pub(crate) fn find(bytes: &[u8], key: &Digest) -> Option<u64> {
    let entry = |at: usize| &bytes[at * 40..at * 40 + 40];
    let (mut low, mut high) = (0, bytes.len() / 40);
    while low < high {
        let middle = low + (high - low) / 2;
        match entry(middle)[..32].cmp(&key[..]) {
            std::cmp::Ordering::Less => low = middle + 1,
            std::cmp::Ordering::Greater => high = middle,
            std::cmp::Ordering::Equal => {
                let mut seq = [0; 8];
                seq.copy_from_slice(&entry(middle)[32..]);
                return Some(u64::from_be_bytes(seq));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> EventId {
        EventId::new(text).unwrap()
    }

    fn table(n: u64) -> (Vec<(EventId, u64)>, Vec<Vec<u8>>) {
        let entries: Vec<_> = (1..=n)
            .map(|seq| (id(&format!("event-{seq}")), seq))
            .collect();
        let parts = encode(&entries).unwrap();
        (entries, parts)
    }

    #[test]
    fn every_id_is_found_on_its_page_and_absent_ones_are_not() {
        for n in [0, 1, 5, PAGE, PAGE + 1, 10 * PAGE + 7] {
            let (entries, parts) = table(n);
            let pages = pages_for(n);
            assert_eq!(parts.len(), pages.max(1) as usize, "{n}");
            assert_eq!(parts.iter().map(Vec::len).sum::<usize>() as u64, n * ENTRY);
            for (at, part) in parts.iter().enumerate() {
                let page = (pages > 0).then(|| (u32::try_from(at).unwrap(), pages));
                check(part, page).unwrap();
                if pages > 0 {
                    // Digests are uniform: every page holds about n / pages.
                    let (len, mean) = (part.len() as u64 / ENTRY, n / u64::from(pages));
                    let spread = 4 * mean.isqrt() + 16;
                    assert!(len.abs_diff(mean) <= spread, "page {at} of {n}: {len}");
                }
            }
            for (event_id, seq) in &entries {
                let key = digest(event_id);
                let part = if pages == 0 {
                    0
                } else {
                    page_of(&key, pages) as usize
                };
                assert_eq!(find(&parts[part], &key), Some(*seq), "{event_id:?} in {n}");
            }
            for missing in 0..200 {
                let key = digest(&id(&format!("missing-{missing}")));
                let part = if pages == 0 {
                    0
                } else {
                    page_of(&key, pages) as usize
                };
                assert_eq!(find(&parts[part], &key), None);
            }
        }
    }

    #[test]
    fn pages_split_by_the_top_of_the_digest() {
        assert_eq!(pages_for(0), 0);
        assert_eq!(pages_for(PAGE), 0);
        assert_eq!(pages_for(PAGE + 1), 2);
        assert_eq!(pages_for(1_000_000), 977);
        assert_eq!(page_of(&[0; 32], 977), 0);
        assert_eq!(page_of(&[0xff; 32], 977), 976);
        let mut half = [0; 32];
        half[0] = 0x80;
        assert_eq!(page_of(&half, 2), 1);
        half[0] = 0x7f;
        half[1] = 0xff;
        assert_eq!(page_of(&half, 2), 0);
    }

    #[test]
    fn damaged_parts_and_repeated_ids_are_refused() {
        let (_, parts) = table(10);
        let bytes = &parts[0];
        assert!(
            check(&bytes[..39], None)
                .unwrap_err()
                .contains("whole entries")
        );
        let mut swapped = bytes.clone();
        swapped[..40].copy_from_slice(&bytes[40..80]);
        swapped[40..80].copy_from_slice(&bytes[..40]);
        assert!(
            check(&swapped, None)
                .unwrap_err()
                .contains("not sorted at entry 1")
        );
        let (_, parts) = table(PAGE + 1);
        let err = check(&parts[1], Some((0, 2))).unwrap_err();
        assert!(err.contains("belongs to another page"), "{err}");
        let twice = encode(&[(id("a"), 1), (id("a"), 2)]).unwrap_err();
        assert!(twice.contains("seqs 1 and 2"), "{twice}");
    }
}
