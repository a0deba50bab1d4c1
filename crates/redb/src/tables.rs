//! The tables, the key encoding and the value layouts.
//!
//! Every key starts with a *stream key*: the tenant's org, workspace and
//! deployment and the run id, each id as a 2-byte big-endian length followed
//! by its UTF-8 bytes, the deployment preceded by a presence byte (0 absent,
//! 1 present). The encoding is self-delimiting, so no stream key is a prefix
//! of another and no id, whatever bytes it holds, can make one tenant's key
//! equal another's (CONTRACT §12, §2). What follows the stream key:
//!
//! | table            | key                                                    | value                                      |
//! |------------------|--------------------------------------------------------|--------------------------------------------|
//! | `events`         | stream, seq (u64 BE)                                   | flags (1 byte), `occurred_at_ms` (u64 BE), feed position (u64 BE, when flag 2), record JSON |
//! | `ids`            | stream, event id bytes                                 | seq (live or compacted)                    |
//! | `heads`          | stream                                                 | last seq                                   |
//! | `erased`         | stream                                                 | last seq when the stream was last deleted  |
//! | `snapshots`      | stream, snapshot id bytes                              | seq (u64 BE), `created_at_ms` (u64 BE), record JSON |
//! | `snapshot_order` | stream, seq (u64 BE), `created_at_ms` (u64 BE), snapshot id bytes | `()`                         |
//! | `feed`           | tenant prefix, first position (u64 BE)                 | run part of the stream key, first seq (u64 BE), count (u64 BE) |
//! | `feed`           | tenant prefix, 9 bytes 0xff                            | the tenant's last position (u64 BE)        |
//! | `meta`           | `"format"`                                             | format version                             |
//!
//! Big-endian seqs make one stream's events one contiguous key range in seq
//! order, and `snapshot_order` sorts exactly as
//! [`snapshot_order`](runstore_core::raw::snapshots::snapshot_order) does, so a stream's
//! newest snapshot is the last key of its range. A `feed` value without its
//! count is what follows the tenant prefix in the first record's `events`
//! key, so the tenant prefix and that make the key.

use redb::TableDefinition;
use runstore_core::{EventRecord, Result, RunId, SnapshotRecord, StreamKey, Tenant};

use crate::error::Failure;

/// Events: stream key + seq -> [`encode_event`] bytes.
pub(crate) const EVENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("events");
/// Every id a stream knows -- its live events' and those its compaction
/// marker remembers: stream key + event id -> seq. Compaction leaves the
/// pruned events' entries in place, so they keep deduplicating (CONTRACT
/// §10).
pub(crate) const IDS: TableDefinition<&[u8], u64> = TableDefinition::new("ids");
/// Stream key -> the stream's last seq; present exactly for streams that
/// hold at least one record.
pub(crate) const HEADS: TableDefinition<&[u8], u64> = TableDefinition::new("heads");
/// Stream key -> the last seq the stream had when it was last deleted
/// (CONTRACT §27). The stream is a deleted run -- it holds its erasure
/// marker and nothing else -- exactly while its head equals this seq: an
/// append or import after the deletion raises the head past it, so no write
/// but a deletion (or an import of a deleted run) has to touch this table,
/// and `list_runs` tells a deleted run from its head and this entry alone.
/// An entry left below the head is stale and harmless; the next deletion of
/// the stream overwrites it.
///
/// Added after layout version 1 without changing it: the table is created
/// by every open, and a file written before erasure existed has no deleted
/// run, so its empty table is right.
pub(crate) const ERASED: TableDefinition<&[u8], u64> = TableDefinition::new("erased");
/// Snapshots: stream key + snapshot id -> [`encode_snapshot`] bytes.
pub(crate) const SNAPSHOTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("snapshots");
/// Stream key + seq + `created_at_ms` + snapshot id -> (): the snapshots of
/// each stream in snapshot order.
pub(crate) const SNAPSHOT_ORDER: TableDefinition<&[u8], ()> =
    TableDefinition::new("snapshot_order");
/// Each tenant's change feed (CONTRACT §29), two kinds of entry:
///
/// - tenant prefix + first position (u64 BE) -> the rest of the first
///   record's `events` key (run part and seq) and a count (u64 BE): the
///   positions `first..first + count` stand for the seqs `seq..seq + count`
///   of that stream, each while the record at that seq holds that position
///   in its header (a batch is one entry; see `crate::feed`). One range
///   scan gives a tenant's entries in feed order;
/// - tenant prefix + nine `0xff` bytes ([`feed_head_key`]) -> the last
///   position the tenant's feed handed out (u64 BE), kept apart from the
///   records' entries so that a position is never reused, also after the
///   record holding the highest one was compacted or erased. Tenant
///   prefixes are self-delimiting, so this key is never another tenant's;
///   one byte longer than a record key, it sorts right after the tenant's
///   newest record, on the leaf page appends write anyway.
///
/// The head shares the table with the records so that a commit opens one
/// table more than before the feed, not two. Each record keeps its own
/// position in its `events` value ([`FLAG_POSITION`]), which is how
/// compaction and erasure find the entries of the records they delete.
pub(crate) const FEED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("feed");
/// Store metadata: `"format"` -> [`FORMAT_VERSION`].
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The layout version this code reads and writes: 2 added the `feed` table
/// and the position in each `events` value. A file of version 1 gets them
/// on its first open ([`crate::feed::give_positions`]); a version-1 build
/// refuses a version-2 file, so no record is ever written without a
/// position.
pub(crate) const FORMAT_VERSION: u64 = 2;
/// The layout version before the feed, which an open upgrades.
pub(crate) const FORMAT_BEFORE_FEED: u64 = 1;
/// The `meta` key holding the layout version.
pub(crate) const FORMAT_KEY: &str = "format";

/// `events` flag: the record is a compaction marker.
const FLAG_MARKER: u8 = 1;
/// `events` flag: the header holds the record's feed position (every value
/// of layout version 2; none of version 1).
const FLAG_POSITION: u8 = 2;
/// Bytes before the JSON of an `events` value without a position.
const EVENT_HEADER: usize = 9;
/// Where the position is in an `events` value that holds one.
const POSITION_AT: usize = 9;
/// Bytes before the JSON of a `snapshots` value.
const SNAPSHOT_HEADER: usize = 16;

fn put_id(key: &mut Vec<u8>, id: &str) {
    let len = u16::try_from(id.len()).expect("ids are at most 1024 bytes (CONTRACT, Ids)");
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
}

/// The key prefix of every stream of `tenant`.
pub(crate) fn tenant_prefix(tenant: &Tenant) -> Vec<u8> {
    let mut key = Vec::with_capacity(64);
    put_id(&mut key, tenant.org_id());
    put_id(&mut key, tenant.workspace_id());
    match tenant.deployment_id() {
        None => key.push(0),
        Some(deployment) => {
            key.push(1);
            put_id(&mut key, deployment);
        }
    }
    key
}

/// The stream key of `tenant`'s `run_id`.
pub(crate) fn stream_key(tenant: &Tenant, run_id: &RunId) -> Vec<u8> {
    let mut key = tenant_prefix(tenant);
    put_id(&mut key, run_id.as_str());
    key
}

/// `prefix` followed by `suffix`.
pub(crate) fn join(prefix: &[u8], suffix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + suffix.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(suffix);
    key
}

/// The `events` key of `seq` in `stream`.
pub(crate) fn event_key(stream: &[u8], seq: u64) -> Vec<u8> {
    join(stream, &seq.to_be_bytes())
}

/// How many leading bytes of `stream`, the stream key of `run_id`, are the
/// tenant prefix.
pub(crate) fn tenant_len(stream: &[u8], run_id: &RunId) -> usize {
    stream.len() - 2 - run_id.as_str().len()
}

/// The `feed` key of `position` in the feed of the tenant whose prefix is
/// `tenant`.
pub(crate) fn feed_key(tenant: &[u8], position: u64) -> Vec<u8> {
    join(tenant, &position.to_be_bytes())
}

/// The `feed` key of the last position of the tenant whose prefix is
/// `tenant` (see [`FEED`]).
pub(crate) fn feed_head_key(tenant: &[u8]) -> Vec<u8> {
    join(tenant, &[0xff; 9])
}

/// The position a `feed` key of the tenant prefix `tenant` ends with.
pub(crate) fn position_of_feed_key(tenant: &[u8], key: &[u8]) -> Result<u64, Failure> {
    read_u64(key, tenant.len())
        .filter(|_| key.len() == tenant.len() + 8)
        .ok_or_else(|| corrupt_key("feed", key, "key is not tenant + 8-byte position"))
}

/// The seq an `events` key of `stream` ends with.
pub(crate) fn seq_of_event_key(stream: &[u8], key: &[u8]) -> Result<u64, Failure> {
    read_u64(key, stream.len())
        .ok_or_else(|| corrupt_key("events", key, "key is not stream + 8-byte seq"))
}

/// The `snapshot_order` key of a snapshot.
pub(crate) fn order_key(stream: &[u8], seq: u64, created_at_ms: u64, snapshot_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 16 + snapshot_id.len());
    key.extend_from_slice(stream);
    key.extend_from_slice(&seq.to_be_bytes());
    key.extend_from_slice(&created_at_ms.to_be_bytes());
    key.extend_from_slice(snapshot_id.as_bytes());
    key
}

/// The parts of a `snapshot_order` key of `stream`: seq and snapshot id
/// bytes.
pub(crate) fn split_order_key<'k>(
    stream: &[u8],
    key: &'k [u8],
) -> Result<(u64, &'k [u8]), Failure> {
    let seq = read_u64(key, stream.len());
    match (seq, key.get(stream.len() + 16..)) {
        (Some(seq), Some(id)) if !id.is_empty() => Ok((seq, id)),
        _ => Err(corrupt_key(
            "snapshot_order",
            key,
            "key is not stream + seq + created_at + id",
        )),
    }
}

/// The smallest key greater than every key starting with `prefix`, or
/// `None` when there is none.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let raw: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_be_bytes(raw))
}

fn corrupt_key(table: &str, key: &[u8], reason: &str) -> Failure {
    Failure::Rejected(runstore_core::Error::corrupt(
        format!("{table} key {key:02x?}"),
        reason,
    ))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn id(&mut self) -> Option<&'a str> {
        let len = u16::from_be_bytes([self.byte()?, self.byte()?]);
        let end = self.at + usize::from(len);
        let id = std::str::from_utf8(self.bytes.get(self.at..end)?).ok()?;
        self.at = end;
        Some(id)
    }
}

/// Decodes the stream key `key` starts with; returns it and its length.
pub(crate) fn decode_stream(key: &[u8]) -> Result<(StreamKey, usize), Failure> {
    let bad = |reason: String| {
        Failure::Rejected(runstore_core::Error::corrupt(
            format!("stream key {key:02x?}"),
            reason,
        ))
    };
    let mut reader = Reader { bytes: key, at: 0 };
    let parts = (|| {
        let org = reader.id()?;
        let workspace = reader.id()?;
        let deployment = match reader.byte()? {
            0 => None,
            1 => Some(reader.id()?.to_owned()),
            _ => return None,
        };
        let run = reader.id()?;
        Some((org, workspace, deployment, run))
    })();
    let Some((org, workspace, deployment, run)) = parts else {
        return Err(bad("truncated or malformed".to_owned()));
    };
    let tenant = Tenant::new(org, workspace, deployment).map_err(|err| bad(cause(err)))?;
    let run_id = RunId::new(run).map_err(|err| bad(cause(err)))?;
    Ok((StreamKey::new(tenant, run_id), reader.at))
}

/// What `err` says, to go inside a `Corrupt` reason without repeating its
/// kind.
fn cause(err: runstore_core::Error) -> String {
    match err {
        runstore_core::Error::InvalidInput { reason } => reason,
        other => other.to_string(),
    }
}

/// An `events` value: flags, `occurred_at_ms`, position, JSON. The
/// position is 0 (none) until [`set_position`] gives it one.
pub(crate) fn encode_event(record: &EventRecord) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(256);
    let marker = if record.is_compaction_marker() {
        FLAG_MARKER
    } else {
        0
    };
    bytes.push(marker | FLAG_POSITION);
    bytes.extend_from_slice(&record.occurred_at_ms.to_be_bytes());
    bytes.extend_from_slice(&0u64.to_be_bytes());
    serde_json::to_writer(&mut bytes, record).map_err(|err| {
        runstore_core::Error::invalid(format!(
            "event {:?} cannot be encoded: {err}",
            record.event_id.as_str()
        ))
    })?;
    Ok(bytes)
}

/// The header of an `events` value: whether it is a marker, and its
/// `occurred_at_ms`.
pub(crate) fn event_header(value: &[u8]) -> Option<(bool, u64)> {
    let flags = *value.first()?;
    Some((flags & FLAG_MARKER != 0, read_u64(value, 1)?))
}

/// Writes `position` into `value`, an [`encode_event`] value.
pub(crate) fn set_position(value: &mut [u8], position: u64) {
    value[POSITION_AT..POSITION_AT + 8].copy_from_slice(&position.to_be_bytes());
}

/// The feed position an `events` value holds; `None` for a value of
/// layout version 1, one cut short, or one not given a position (0).
pub(crate) fn event_position(value: &[u8]) -> Option<u64> {
    let flags = *value.first()?;
    if flags & FLAG_POSITION == 0 {
        return None;
    }
    read_u64(value, POSITION_AT).filter(|position| *position != 0)
}

/// `value`, an `events` value of layout version 1, with `position` in its
/// header; `None` for a value cut short of its header.
pub(crate) fn with_position(value: &[u8], position: u64) -> Option<Vec<u8>> {
    let (header, json) = (value.get(..EVENT_HEADER)?, &value[EVENT_HEADER..]);
    let mut bytes = Vec::with_capacity(value.len() + 8);
    bytes.extend_from_slice(header);
    bytes[0] |= FLAG_POSITION;
    bytes.extend_from_slice(&position.to_be_bytes());
    bytes.extend_from_slice(json);
    Some(bytes)
}

/// Parses an `events` value; `seq` and `stream` name it in errors.
pub(crate) fn decode_event(stream: &[u8], seq: u64, value: &[u8]) -> Result<EventRecord, Failure> {
    let header = match value.first() {
        Some(flags) if flags & FLAG_POSITION != 0 => EVENT_HEADER + 8,
        _ => EVENT_HEADER,
    };
    let parsed = value
        .get(header..)
        .ok_or_else(|| "value shorter than its header".to_owned())
        .and_then(|json| {
            serde_json::from_slice::<EventRecord>(json).map_err(|err| err.to_string())
        });
    parsed.map_err(|reason| {
        Failure::Rejected(runstore_core::Error::corrupt(
            format!("events table, {}, seq {seq}", describe_stream(stream)),
            reason,
        ))
    })
}

/// A `snapshots` value: seq, `created_at_ms`, JSON.
pub(crate) fn encode_snapshot(record: &SnapshotRecord) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(512);
    bytes.extend_from_slice(&record.seq.to_be_bytes());
    bytes.extend_from_slice(&record.created_at_ms.to_be_bytes());
    serde_json::to_writer(&mut bytes, record).map_err(|err| {
        runstore_core::Error::invalid(format!(
            "snapshot {:?} cannot be encoded: {err}",
            record.snapshot_id.as_str()
        ))
    })?;
    Ok(bytes)
}

/// The header of a `snapshots` value: seq and `created_at_ms`.
pub(crate) fn snapshot_header(value: &[u8]) -> Option<(u64, u64)> {
    Some((read_u64(value, 0)?, read_u64(value, 8)?))
}

/// Parses a `snapshots` value stored under `key`.
pub(crate) fn decode_snapshot(key: &[u8], value: &[u8]) -> Result<SnapshotRecord, Failure> {
    let parsed = value
        .get(SNAPSHOT_HEADER..)
        .ok_or_else(|| "value shorter than its header".to_owned())
        .and_then(|json| {
            serde_json::from_slice::<SnapshotRecord>(json).map_err(|err| err.to_string())
        });
    parsed.map_err(|reason| {
        let location = match decode_stream(key) {
            Ok((stream, len)) => format!(
                "snapshots table, stream {stream}, snapshot {:?}",
                String::from_utf8_lossy(&key[len..])
            ),
            Err(_) => format!("snapshots table, key {key:02x?}"),
        };
        Failure::Rejected(runstore_core::Error::corrupt(location, reason))
    })
}

/// The stream a key starts with, for error messages.
pub(crate) fn describe_stream(key: &[u8]) -> String {
    match decode_stream(key) {
        Ok((stream, _)) => format!("stream {stream}"),
        Err(_) => format!("key {key:02x?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runstore_core::EventId;

    fn tenant(org: &str, workspace: &str, deployment: Option<&str>) -> Tenant {
        Tenant::new(org, workspace, deployment.map(str::to_owned)).unwrap()
    }

    #[test]
    fn a_stream_key_with_an_invalid_part_is_corrupt_saying_why() {
        // org "a", workspace "b", no deployment, run "" (empty: not a run id).
        let key = [0, 1, b'a', 0, 1, b'b', 0, 0, 0];
        let Err(Failure::Rejected(err)) = decode_stream(&key) else {
            panic!("decoded a stream key with an empty run id");
        };
        let shown = err.to_string();
        let why = RunId::new("").unwrap_err().to_string();
        let why = why
            .split_once(": ")
            .map_or(why.as_str(), |(_, reason)| reason);
        assert!(
            matches!(err, runstore_core::Error::Corrupt { .. }) && shown.contains(why),
            "{shown} does not say {why}"
        );
    }

    // An `events` value of layout version 1 (flags, `occurred_at_ms`, JSON)
    // has no position and decodes as it is; given one, it decodes the same
    // and answers it. A value of today's layout has the position flag next
    // to the marker flag.
    #[test]
    fn event_values_of_both_layouts_decode_and_answer_their_position() {
        let t = tenant("a", "b", None);
        let run = RunId::new("r").unwrap();
        let stream = stream_key(&t, &run);
        let mut record = EventRecord::new(&t, run, EventId::new("e").unwrap(), "t", 7);
        record.seq = 3;
        let mut old = vec![0u8];
        old.extend_from_slice(&7u64.to_be_bytes());
        old.extend_from_slice(&serde_json::to_vec(&record).unwrap());
        assert_eq!(event_position(&old), None);
        assert_eq!(event_header(&old), Some((false, 7)));
        assert_eq!(decode_event(&stream, 3, &old).unwrap(), record);
        let given = with_position(&old, 5).unwrap();
        assert_eq!(event_position(&given), Some(5));
        assert_eq!(decode_event(&stream, 3, &given).unwrap(), record);

        let mut new = encode_event(&record).unwrap();
        assert_eq!(new[0], FLAG_POSITION);
        assert_eq!(event_position(&new), None, "not given a position yet");
        set_position(&mut new, 9);
        assert_eq!(event_position(&new), Some(9));
        assert_eq!(decode_event(&stream, 3, &new).unwrap(), record);
    }

    #[test]
    fn an_order_key_splits_into_seq_and_id_and_needs_an_id() {
        let stream = stream_key(&tenant("a", "b", None), &RunId::new("r").unwrap());
        let key = order_key(&stream, 7, 9, "snap");
        let (seq, id) = split_order_key(&stream, &key).unwrap();
        assert_eq!((seq, id), (7, b"snap".as_slice()));
        let without_id = &key[..stream.len() + 16];
        assert!(split_order_key(&stream, without_id).is_err());
        assert!(split_order_key(&stream, &key[..stream.len() + 4]).is_err());
    }

    #[test]
    fn stream_keys_round_trip_and_are_prefix_free() {
        let cases = [
            (tenant("a", "b", None), "r"),
            (tenant("a", "b", Some("c")), "r"),
            (tenant("a\u{1}", "b", None), "r"),
            (tenant("🦀", "../x", Some("y z")), "CON"),
        ];
        let keys: Vec<Vec<u8>> = cases
            .iter()
            .map(|(t, r)| stream_key(t, &RunId::new(*r).unwrap()))
            .collect();
        for (i, a) in keys.iter().enumerate() {
            let (decoded, len) = decode_stream(&join(a, b"tail")).unwrap();
            assert_eq!(len, a.len());
            assert_eq!(stream_key(&decoded.tenant, &decoded.run_id), *a);
            for (j, b) in keys.iter().enumerate() {
                if i != j {
                    assert!(!b.starts_with(a), "{a:?} is a prefix of {b:?}");
                }
            }
        }
    }

    // CONTRACT §12: an id holding another tenant's encoded parts must not
    // reproduce that tenant's key.
    #[test]
    fn ids_cannot_forge_another_tenants_key() {
        let a = stream_key(&tenant("ab", "c", None), &RunId::new("d").unwrap());
        let b = stream_key(&tenant("a", "bc", None), &RunId::new("d").unwrap());
        assert_ne!(a, b);
        let id_a = join(&a, EventId::new("x").unwrap().as_str().as_bytes());
        assert!(!id_a.starts_with(&b));
    }

    #[test]
    fn snapshot_order_keys_sort_like_snapshot_order() {
        let stream = stream_key(&Tenant::local(), &RunId::new("r").unwrap());
        let mut keys = [
            order_key(&stream, 2, 5, "a"),
            order_key(&stream, 1, 9, "z"),
            order_key(&stream, 2, 5, "B"),
            order_key(&stream, 2, 4, "zz"),
            order_key(&stream, 256, 0, "a"),
        ];
        keys.sort();
        let parts: Vec<(u64, &[u8])> = keys
            .iter()
            .map(|key| split_order_key(&stream, key).unwrap())
            .collect();
        let expected: [(u64, &[u8]); 5] =
            [(1, b"z"), (2, b"zz"), (2, b"B"), (2, b"a"), (256, b"a")];
        assert_eq!(parts, expected);
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
    }
}
