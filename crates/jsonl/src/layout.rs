//! The store directory: file names and the id-to-file-name mapping
//! (CONTRACT §19). Directories are created and files replaced atomically by
//! the steps of `runstore_fs`, run through the store's [`crate::fileio::Io`].
//!
//! ```text
//! <dir>/FORMAT                      "runstore-jsonl 1\n"
//! <dir>/LOCK                        held with an OS lock while a handle is open
//! <dir>/FEED                        "<epoch>\n": the feed's epoch (crate::feed)
//! <dir>/events.jsonl                every stream's records, one JSON object per line
//! <dir>/snapshots/<tenant>/<run>/snapshots.jsonl   the run's snapshots, appended
//! <dir>/snapshots/<tenant>/<run>/<snapshot>.json     a snapshot written before the log
//! ```

use runstore_core::{RunId, SnapshotId, Tenant};
use sha2::{Digest, Sha256};

/// The format marker file.
pub(crate) const FORMAT_FILE: &str = "FORMAT";
/// The format marker's exact content.
pub(crate) const FORMAT_LINE: &str = "runstore-jsonl 1\n";
/// The feed's epoch: the high bits of every position this version hands
/// out, raised when an earlier version wrote to the store (`crate::feed`).
pub(crate) const FEED_FILE: &str = "FEED";
/// The file the OS lock is taken on.
pub(crate) const LOCK_FILE: &str = "LOCK";
/// The event log.
pub(crate) const LOG_FILE: &str = "events.jsonl";
/// The snapshot tree.
pub(crate) const SNAPSHOT_DIR: &str = "snapshots";
/// Suffix of a file being written before its atomic rename (the one
/// `runstore_fs::write_atomic` uses).
pub(crate) const TMP_SUFFIX: &str = runstore_fs::TMP_SUFFIX;
/// Suffix of a snapshot file (the layout before [`SNAPSHOT_LOG`]; still
/// read).
pub(crate) const SNAPSHOT_SUFFIX: &str = ".json";
/// A run's snapshot log: one snapshot per line, appended by each put; the
/// last line of a snapshot id is its current record. No snapshot file name
/// can equal it (they start with `s-` and end with [`SNAPSHOT_SUFFIX`]).
pub(crate) const SNAPSHOT_LOG: &str = "snapshots.jsonl";

/// Encoded names longer than this are replaced by a hash.
const MAX_ENCODED: usize = 120;

/// Escapes every byte outside `[a-z0-9-]` as `_` and two lowercase hex
/// digits. The output alphabet is `[a-z0-9_-]`: no upper case (so names
/// differ on case-insensitive file systems too), no `.` or `/` (so no `..`
/// and no path separators), and decoding is unambiguous (so the mapping is
/// injective).
fn escape(value: &str, out: &mut String) {
    for byte in value.bytes() {
        if byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' {
            out.push(char::from(byte));
        } else {
            out.push('_');
            out.push(hex_digit(byte >> 4));
            out.push(hex_digit(byte & 0x0f));
        }
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).expect("a nibble is a hex digit")
}

/// `<prefix>-<escaped parts joined by '.'>`, or `<prefix>h-<sha256 hex>` when
/// that is longer than [`MAX_ENCODED`]. The hash covers each part followed by
/// NUL (ids hold no NUL) and the part count, so distinct inputs hash apart.
fn name(prefix: &str, parts: &[&str]) -> String {
    let mut out =
        String::with_capacity(prefix.len() + 1 + parts.iter().map(|p| p.len()).sum::<usize>());
    out.push_str(prefix);
    out.push('-');
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            out.push('.');
        }
        escape(part, &mut out);
    }
    if out.len() <= MAX_ENCODED {
        return out;
    }
    let mut hasher = Sha256::new();
    hasher.update([u8::try_from(parts.len()).expect("at most three parts")]);
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let mut out = String::with_capacity(prefix.len() + 2 + 64);
    out.push_str(prefix);
    out.push_str("h-");
    for byte in hasher.finalize() {
        out.push(hex_digit(byte >> 4));
        out.push(hex_digit(byte & 0x0f));
    }
    out
}

/// The directory name of a tenant: `t-<org>.<workspace>[.<deployment>]`.
pub(crate) fn tenant_dir(tenant: &Tenant) -> String {
    match tenant.deployment_id() {
        Some(deployment) => name("t", &[tenant.org_id(), tenant.workspace_id(), deployment]),
        None => name("t", &[tenant.org_id(), tenant.workspace_id()]),
    }
}

/// The directory name of a run: `r-<run>`.
pub(crate) fn run_dir(run_id: &RunId) -> String {
    name("r", &[run_id.as_str()])
}

/// The file name of a snapshot: `s-<snapshot>.json`.
pub(crate) fn snapshot_file(snapshot_id: &SnapshotId) -> String {
    let mut file = name("s", &[snapshot_id.as_str()]);
    file.push_str(SNAPSHOT_SUFFIX);
    file
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn file(id: &str) -> String {
        snapshot_file(&SnapshotId::new(id).unwrap())
    }

    #[test]
    fn names_are_injective_and_case_insensitive_safe() {
        // CONTRACT §19
        let ids = [
            "a/b", "a_b", "a_2fb", "A", "a", "..", ".", "CON", "con", "a b", "🦀", "a.b", "a-b",
        ];
        let names: Vec<String> = ids.iter().map(|id| file(id)).collect();
        let folded: HashSet<String> = names.iter().map(|n| n.to_lowercase()).collect();
        assert_eq!(folded.len(), ids.len(), "{names:?}");
        for name in &names {
            assert!(name.starts_with("s-") && name.ends_with(".json"), "{name}");
            assert!(!name.contains('/') && !name.contains('\\'), "{name}");
            assert!(name.len() <= 255);
        }
        assert_eq!(file("a/b"), "s-a_2fb.json");
        assert_eq!(file("A"), "s-_41.json");
    }

    #[test]
    fn long_ids_are_hashed_and_stay_distinct() {
        let long_a = "x".repeat(1024);
        let mut long_b = "x".repeat(1023);
        long_b.push('y');
        let (a, b) = (file(&long_a), file(&long_b));
        assert_ne!(a, b);
        assert!(a.starts_with("sh-") && a.len() < 80, "{a}");
        // A short id never produces a hashed-looking name.
        assert!(file("h-00").starts_with("s-"));
    }

    #[test]
    fn tenant_names_keep_deployment_and_parts_apart() {
        let t = |o: &str, w: &str, d: Option<&str>| {
            tenant_dir(&Tenant::new(o, w, d.map(str::to_owned)).unwrap())
        };
        let names = [
            t("a", "b", None),
            t("a", "b", Some("c")),
            t("a.b", "c", None),
            t("a", "b.c", None),
            t("A", "b", None),
        ];
        let unique: HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        let long = "o".repeat(1024);
        assert_ne!(t(&long, "w", None), t(&long, "w", Some("d")));
    }
}
