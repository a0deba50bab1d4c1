//! Object keys: how tenants, runs and ids become path segments
//! (docs/backends/s3.md, "Key layout").
//!
//! Every segment is built from `[a-z0-9_.-]` only, so keys are safe on any
//! object store and on case-insensitive file systems (CONTRACT §19), and the
//! encoding is injective: `v` + an escaped form for short values, `h` + a
//! SHA-256 of the raw parts for long ones (the records under a hashed
//! segment carry their full ids and readers compare them).

use object_store::path::{Path, PathPart};
use runstore_core::{Error, EventId, Result, RunId, SnapshotId, StreamKey, Tenant};
use sha2::{Digest, Sha256};

/// The suffix of [`Keys::erased_hint`] after the run's segment.
pub(crate) const ERASED_HINT: &str = ".erased";

/// The last seq a segment object's name (`<first>-<last>-<token>`) states.
pub(crate) fn segment_last(name: &str) -> Option<u64> {
    let mut parts = name.splitn(3, '-');
    let (_, last) = (parts.next()?, parts.next()?);
    (last.len() == 20).then(|| last.parse().ok()).flatten()
}

/// Longest segment kept in the readable `v` form; longer ones are hashed.
const MAX_PLAIN_SEGMENT: usize = 160;

/// Longest object name (last path component) a key may have: file systems
/// that back object stores allow 255 bytes, and some stage an upload at the
/// name plus a short suffix.
const MAX_OBJECT_NAME: usize = 240;

/// Escapes `raw` into `[a-z0-9_-]`: `a-z`, `0-9` and `-` stay, every other
/// byte becomes `_` and two lowercase hex digits.
fn escape_into(out: &mut String, raw: &str) {
    for byte in raw.bytes() {
        if byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' {
            out.push(char::from(byte));
        } else {
            out.push('_');
            out.push_str(&format!("{byte:02x}"));
        }
    }
}

/// Reverses [`escape_into`]; `None` for anything it cannot have produced.
fn unescape(escaped: &str) -> Option<String> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        if byte == b'_' {
            let hex = escaped.get(at + 1..at + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else if byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' {
            out.push(byte);
            at += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// The segment for a value made of `parts` (joined with `.` when escaped,
/// with NUL when hashed; ids never contain NUL and escapes never produce `.`).
fn segment(parts: &[&str]) -> String {
    let mut plain = String::from("v");
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            plain.push('.');
        }
        escape_into(&mut plain, part);
    }
    if plain.len() <= MAX_PLAIN_SEGMENT {
        return plain;
    }
    let mut hasher = Sha256::new();
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            hasher.update([0]);
        }
        hasher.update(part.as_bytes());
    }
    let mut hashed = String::from("h");
    for byte in hasher.finalize() {
        hashed.push_str(&format!("{byte:02x}"));
    }
    hashed
}

/// The segment of one id.
pub(crate) fn id_segment(id: &str) -> String {
    segment(&[id])
}

/// The segment of a tenant.
pub(crate) fn tenant_segment(tenant: &Tenant) -> String {
    match tenant.deployment_id() {
        Some(deployment) => segment(&[tenant.org_id(), tenant.workspace_id(), deployment]),
        None => segment(&[tenant.org_id(), tenant.workspace_id()]),
    }
}

/// Decodes a `v` segment of one id; `None` for a hashed or foreign segment.
///
/// Only the segment the store writes for an id decodes: an escape it would
/// not write (`_6b` for `k`, upper-case hex) or an over-long plain form
/// names no stream, and callers fall back to the objects under it.
pub(crate) fn decode_id(segment: &str) -> Option<String> {
    let escaped = segment.strip_prefix('v')?;
    if escaped.contains('.') {
        return None;
    }
    unescape(escaped).filter(|id| id_segment(id) == segment)
}

/// Decodes a `v` tenant segment; `None` for a hashed or foreign segment,
/// and (as [`decode_id`]) for any segment the store would not write.
pub(crate) fn decode_tenant(segment: &str) -> Option<Tenant> {
    let escaped = segment.strip_prefix('v')?;
    let parts: Vec<String> = escaped.split('.').map(unescape).collect::<Option<_>>()?;
    let tenant = match parts.as_slice() {
        [org, workspace] => Tenant::new(org.clone(), workspace.clone(), None).ok(),
        [org, workspace, deployment] => {
            Tenant::new(org.clone(), workspace.clone(), Some(deployment.clone())).ok()
        }
        _ => None,
    }?;
    (tenant_segment(&tenant) == segment).then_some(tenant)
}

/// The key layout under one store prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    root: Path,
}

impl Keys {
    /// Keys under `prefix` (`""` for the bucket root).
    pub(crate) fn new(prefix: &str) -> Result<Self> {
        let trimmed = prefix.trim_matches('/');
        let root = Path::parse(trimmed)
            .map_err(|err| Error::invalid(format!("s3 key prefix {prefix:?}: {err}")))?;
        Ok(Self { root })
    }

    /// The store's prefix.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn join(&self, parts: &[&str]) -> Path {
        let mut path = self.root.clone();
        for part in parts {
            path = path.child(PathPart::from(*part));
        }
        path
    }

    /// Where every stream's objects live.
    pub(crate) fn events_root(&self) -> Path {
        self.join(&["ev"])
    }

    /// Where every snapshot lives.
    pub(crate) fn snapshots_root(&self) -> Path {
        self.join(&["snap"])
    }

    /// A tenant's streams.
    pub(crate) fn tenant_streams(&self, tenant: &Tenant) -> Path {
        self.join(&["ev", &tenant_segment(tenant)])
    }

    /// One stream's directory.
    pub(crate) fn stream_dir(&self, key: &StreamKey) -> Path {
        self.join(&[
            "ev",
            &tenant_segment(&key.tenant),
            &id_segment(key.run_id.as_str()),
        ])
    }

    /// The stream's head object.
    pub(crate) fn head(&self, key: &StreamKey) -> Path {
        self.stream_dir(key).child("head")
    }

    /// A segment object of the stream.
    pub(crate) fn segment(&self, key: &StreamKey, first: u64, last: u64, token: &str) -> Path {
        self.stream_dir(key)
            .child("seg")
            .child(format!("{first:020}-{last:020}-{token}"))
    }

    /// Page `page` of the id table of the segment named as in
    /// [`Keys::segment`] (docs/backends/s3.md, "Key layout").
    pub(crate) fn index_page(
        &self,
        key: &StreamKey,
        first: u64,
        last: u64,
        token: &str,
        page: u32,
    ) -> Path {
        self.stream_dir(key)
            .child("idx")
            .child(format!("{first:020}-{last:020}-{token}"))
            .child(format!("{page:05}"))
    }

    /// The id index of `epoch` ([`Head::ids_epoch`](crate::head::Head::ids_epoch)):
    /// `ids/` for a stream never deleted, `ids-<seq:020>/` for the index
    /// started by the deletion through `seq`.
    pub(crate) fn ids_dir(&self, key: &StreamKey, epoch: Option<u64>) -> Path {
        let dir = self.stream_dir(key);
        match epoch {
            None => dir.child("ids"),
            Some(seq) => dir.child(format!("ids-{seq:020}")),
        }
    }

    /// The id index entry of `event_id` in the stream's index of `epoch`.
    pub(crate) fn id_entry(&self, key: &StreamKey, epoch: Option<u64>, event_id: &EventId) -> Path {
        self.ids_dir(key, epoch)
            .child(id_segment(event_id.as_str()))
    }

    /// The hint that the stream may be a deleted run: an empty object
    /// beside the stream's directory, `P/ev/<tenant>/<run>.erased`, so that
    /// the listing `list_runs` makes of the tenant's directory shows it
    /// without a request per run. Id segments never contain `.`, so no
    /// run's directory has this name.
    pub(crate) fn erased_hint(&self, key: &StreamKey) -> Path {
        self.join(&[
            "ev",
            &tenant_segment(&key.tenant),
            &format!("{}{ERASED_HINT}", id_segment(key.run_id.as_str())),
        ])
    }

    /// One stream's snapshots.
    pub(crate) fn snapshot_dir(&self, tenant: &Tenant, run_id: &RunId) -> Path {
        self.join(&[
            "snap",
            &tenant_segment(tenant),
            &id_segment(run_id.as_str()),
        ])
    }

    /// One version of a snapshot: `<id>` for the legacy version,
    /// `<id>.<number:020>.<token>` for any other.
    pub(crate) fn snapshot(
        &self,
        tenant: &Tenant,
        run_id: &RunId,
        snapshot_id: &SnapshotId,
        version: &SnapshotVersion,
    ) -> Path {
        self.snapshot_dir(tenant, run_id)
            .child(version.name(&id_segment(snapshot_id.as_str())))
    }
}

/// Which put of a snapshot id wrote an object: every put writes a key of
/// its own, never written before or again, and the greatest version of an
/// id is its snapshot. Versions order by number, then token; the legacy
/// version (an object written before keys carried versions, at the bare id
/// segment) is number 0 with no token, so it is older than any other.
///
/// A version written by this store also carries the snapshot's `seq` and
/// `created_at_ms` ([`SnapshotVersion::order`]), so a listing alone orders a
/// stream's snapshots with `snapshot_order` and tells which to read. Versions
/// written before keys carried them (`<id>.<number>.<token>`) have none and
/// are read to be ordered.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SnapshotVersion {
    number: u64,
    token: String,
    order: Option<(u64, u64)>,
}

/// Whether `part` is a 20-digit number, as keys write them.
fn number_part(part: &str) -> Option<u64> {
    (part.len() == 20 && part.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| part.parse().ok())
        .flatten()
}

impl SnapshotVersion {
    /// The version of an object at the bare id segment.
    pub(crate) fn legacy() -> Self {
        Self {
            number: 0,
            token: String::new(),
            order: None,
        }
    }

    /// The version a put of a snapshot at `seq`, created at
    /// `created_at_ms`, writes for the id whose segment is `id_segment` when
    /// the greatest version of that id it listed is `newest` (`None` when it
    /// listed none): the next number, with `token` (random, so that no two
    /// puts share a key). The key states the order unless that would make
    /// the object's name longer than [`MAX_OBJECT_NAME`]: a snapshot id of
    /// a long plain segment gets a key without it, read to be ordered.
    pub(crate) fn after(
        newest: Option<&Self>,
        token: String,
        id_segment: &str,
        seq: u64,
        created_at_ms: u64,
    ) -> Self {
        let number = newest.map_or(1, |newest| newest.number.saturating_add(1));
        let mut version = Self {
            number,
            token,
            order: Some((seq, created_at_ms)),
        };
        if version.name(id_segment).len() > MAX_OBJECT_NAME {
            version.order = None;
        }
        version
    }

    /// The snapshot's `(seq, created_at_ms)` as its key states them; `None`
    /// for a key written before keys carried them.
    pub(crate) fn order(&self) -> Option<(u64, u64)> {
        self.order
    }

    /// The object name of this version of the id whose segment is
    /// `id_segment`.
    fn name(&self, id_segment: &str) -> String {
        match (self.token.is_empty(), self.order) {
            (true, _) => id_segment.to_owned(),
            (false, None) => format!("{id_segment}.{:020}.{}", self.number, self.token),
            (false, Some((seq, created))) => format!(
                "{id_segment}.{:020}.{}.{seq:020}.{created:020}",
                self.number, self.token
            ),
        }
    }

    /// Splits the last segment of a snapshot key into the id segment and
    /// the version. Id segments never contain `.`, so a name without one is
    /// the legacy version of that id, and one with one is
    /// `<id>.<number:020>.<token>` or
    /// `<id>.<number:020>.<token>.<seq:020>.<created_at_ms:020>`. A name of
    /// none of these forms is returned whole as the legacy version of an id
    /// segment no id has, so reading it is `Corrupt` as any object at a key
    /// that does not name its id.
    pub(crate) fn parse(name: &str) -> (&str, Self) {
        let versioned = name.split_once('.').and_then(|(id, rest)| {
            let parts: Vec<&str> = rest.split('.').collect();
            let (number, token, order) = match parts.as_slice() {
                [number, token] => (*number, *token, None),
                [number, token, seq, created] => (
                    *number,
                    *token,
                    Some((number_part(seq)?, number_part(created)?)),
                ),
                _ => return None,
            };
            let valid = !token.is_empty()
                && token
                    .bytes()
                    .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit());
            if !valid {
                return None;
            }
            Some((
                id,
                Self {
                    number: number_part(number)?,
                    token: token.to_owned(),
                    order,
                },
            ))
        });
        versioned.unwrap_or((name, Self::legacy()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_injectively_and_round_trip() {
        let ids = [
            "a",
            "A",
            "a_b",
            "a/b",
            "../a",
            "CON",
            "with space",
            "🦀",
            "a.b",
            "-",
            "_",
        ];
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            let segment = id_segment(id);
            assert!(
                segment
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b)),
                "{segment}"
            );
            assert!(seen.insert(segment.clone()), "{id} collides");
            assert_eq!(decode_id(&segment).as_deref(), Some(id));
        }
    }

    #[test]
    fn only_segments_the_store_writes_decode() {
        // Found by the s3_head fuzz target: `v_6b` decoded to `k`, whose
        // segment is `vk`, so a listing named a run that has no objects.
        for foreign in ["v_6b", "v_2F", "v_+f", "va_2d"] {
            assert_eq!(decode_id(foreign), None, "{foreign}");
        }
        assert_eq!(decode_id(&format!("v{}", "a".repeat(200))), None);
        assert_eq!(decode_tenant("v_6f.w"), None);
        assert_eq!(decode_tenant("vo.W"), None);
        assert_eq!(decode_id("vk").as_deref(), Some("k"));
        assert_eq!(decode_id("va_2fb").as_deref(), Some("a/b"));
        assert_eq!(
            decode_tenant("vo.w"),
            Some(Tenant::new("o", "w", None).unwrap())
        );
    }

    // Every snapshot id, up to the longest plain segment and hashed beyond
    // it, gets an object name within MAX_OBJECT_NAME that parses back to
    // its version; the key states the order wherever it fits.
    #[test]
    fn snapshot_names_stay_within_the_longest_object_name() {
        let token = "0123456789abcdef0123456789abcdef";
        let mut stated = 0;
        for len in 1..=300 {
            let segment = id_segment(&"a".repeat(len));
            let version = SnapshotVersion::after(None, token.into(), &segment, u64::MAX, u64::MAX);
            let name = version.name(&segment);
            assert!(name.len() <= MAX_OBJECT_NAME, "{len}: {}", name.len());
            let (parsed_segment, parsed) = SnapshotVersion::parse(&name);
            assert_eq!((parsed_segment, &parsed), (segment.as_str(), &version));
            if segment.len() + 96 <= MAX_OBJECT_NAME {
                assert_eq!(version.order(), Some((u64::MAX, u64::MAX)), "{len}");
                stated += 1;
            } else {
                assert_eq!(version.order(), None, "{len}");
            }
        }
        // Plain segments up to 144 bytes (143-byte ids) and every hashed one.
        assert_eq!(stated, 143 + (300 - 159));
    }

    #[test]
    fn long_ids_are_hashed_and_distinct() {
        let long_a = "x".repeat(1024);
        let long_b = format!("{}y", "x".repeat(1023));
        let (a, b) = (id_segment(&long_a), id_segment(&long_b));
        assert!(a.starts_with('h') && a.len() == 65);
        assert_ne!(a, b);
        assert_eq!(decode_id(&a), None);
    }

    #[test]
    fn snapshot_versions_round_trip_and_order() {
        let keys = Keys::new("p").unwrap();
        let tenant = Tenant::new("o", "w", None).unwrap();
        let run = RunId::new("r").unwrap();
        let id = SnapshotId::new("s.1").unwrap();
        let legacy = SnapshotVersion::legacy();
        let first = SnapshotVersion::after(None, "b0".into(), "vs_2e1", 7, 9);
        let second = SnapshotVersion::after(Some(&first), "a1".into(), "vs_2e1", 3, 10);
        let tied = SnapshotVersion::after(Some(&first), "a2".into(), "vs_2e1", 0, u64::MAX);
        let unordered = SnapshotVersion {
            number: 4,
            token: "d".into(),
            order: None,
        };
        assert!(legacy < first && first < second && second < tied && tied < unordered);
        assert_eq!(
            SnapshotVersion::after(Some(&legacy), "c".into(), "vs_2e1", 1, 1).number,
            1
        );
        assert_eq!(second.order(), Some((3, 10)));
        for version in [&legacy, &first, &second, &tied, &unordered] {
            let path = keys.snapshot(&tenant, &run, &id, version);
            let name = path.filename().unwrap();
            let (segment, parsed) = SnapshotVersion::parse(name);
            assert_eq!(segment, id_segment(id.as_str()), "{name}");
            assert_eq!(&parsed, version, "{name}");
        }
        assert_eq!(
            keys.snapshot(&tenant, &run, &id, &legacy).filename(),
            Some("vs_2e1")
        );
        // Names of neither form are whole, legacy, and match no id.
        for foreign in [
            "vs.1.a",
            "vs.00000000000000000001.",
            "vs.00000000000000000001.A",
            "vs.00000000000000000001.a.1.2",
            "vs.00000000000000000001.a.00000000000000000001",
            "vs.00000000000000000001.a.00000000000000000001.00000000000000000002.x",
        ] {
            assert_eq!(
                SnapshotVersion::parse(foreign),
                (foreign, SnapshotVersion::legacy())
            );
        }
    }

    #[test]
    fn tenants_round_trip_with_and_without_deployment() {
        let plain = Tenant::new("Org.1", "ws", None).unwrap();
        let deployed = Tenant::new("Org.1", "ws", Some("d".into())).unwrap();
        assert_ne!(tenant_segment(&plain), tenant_segment(&deployed));
        assert_eq!(decode_tenant(&tenant_segment(&plain)), Some(plain));
        assert_eq!(decode_tenant(&tenant_segment(&deployed)), Some(deployed));
    }
}
