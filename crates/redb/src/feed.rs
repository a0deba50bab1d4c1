//! The tenant change feed (CONTRACT §29): positions handed out in the
//! writer's transaction, the read, and the upgrade of a file written before
//! the feed.
//!
//! One writer thread runs every write transaction, so a record takes its
//! position inside the transaction that makes it visible, and transactions
//! commit in the order they took positions: a reader (a read transaction,
//! which sees one committed state) never sees a position below one it saw
//! before become visible later. The positions live in [`FEED`] and in each
//! record's `events` value.

use std::collections::HashMap;

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use runstore_core::{Error, FeedPosition, FeedRecord, Result};

use crate::{
    error::Failure,
    tables::{
        EVENTS, FEED, decode_event, decode_stream, event_key, event_position, feed_head_key,
        feed_key, join, position_of_feed_key, seq_of_event_key, set_position, tenant_len,
        with_position,
    },
    writer::LogTables,
};

/// The last position the feed of the tenant prefix `prefix` handed out, 0
/// before its first.
fn last_position(
    feed: &impl ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
) -> Result<u64, Failure> {
    let Some(value) = feed.get(feed_head_key(prefix).as_slice())? else {
        return Ok(0);
    };
    let raw: [u8; 8] = value.value().try_into().map_err(|_| {
        Error::corrupt(
            format!("feed table, tenant key {prefix:02x?}"),
            "the last position is not 8 bytes",
        )
    })?;
    Ok(u64::from_be_bytes(raw))
}

/// A `feed` entry's value: the rest of the `events` key of its first record
/// (run part and seq), then how many records it covers (u64 BE).
fn entry_value(rest_of_key: &[u8], count: u64) -> Vec<u8> {
    let mut value = Vec::with_capacity(rest_of_key.len() + 8);
    value.extend_from_slice(rest_of_key);
    value.extend_from_slice(&count.to_be_bytes());
    value
}

/// A live record of a `feed` entry: its position, its seq, and its
/// `events` value.
type Live<'e> = (u64, u64, redb::AccessGuard<'e, &'static [u8]>);

/// One `feed` entry, decoded: positions `first..first + count` stand for the
/// records at seqs `seq..seq + count` of `stream`, those of them whose
/// `events` header still holds that position.
struct Entry {
    first: u64,
    stream: Vec<u8>,
    seq: u64,
    count: u64,
}

impl Entry {
    fn decode(prefix: &[u8], key: &[u8], value: &[u8]) -> Result<Self, Failure> {
        let first = position_of_feed_key(prefix, key)?;
        let parts = value
            .len()
            .checked_sub(16)
            .and_then(|split| {
                let seq = u64::from_be_bytes(value.get(split..split + 8)?.try_into().ok()?);
                let count = u64::from_be_bytes(value.get(split + 8..)?.try_into().ok()?);
                Some((split, seq, count))
            })
            .filter(|(_, _, count)| *count > 0);
        let Some((split, seq, count)) = parts else {
            return Err(Error::corrupt(
                format!("feed table, tenant key {prefix:02x?}, position {first}"),
                "value is not run key + seq + count",
            )
            .into());
        };
        Ok(Self {
            first,
            stream: join(prefix, &value[..split]),
            seq,
            count,
        })
    }

    /// Whether the entry covers `position`.
    fn covers(&self, position: u64) -> bool {
        position >= self.first && position - self.first < self.count
    }

    /// Up to `limit` of the entry's records at `from` or after that are
    /// still in the feed, in position order, with their positions and
    /// seqs: one range scan of the stream's `events`.
    fn live<'e>(
        &self,
        events: &'e impl ReadableTable<&'static [u8], &'static [u8]>,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Live<'e>>, Failure> {
        let skip = from.saturating_sub(self.first);
        if skip >= self.count {
            return Ok(Vec::new());
        }
        let mut live = Vec::new();
        if limit == 0 {
            return Ok(live);
        }
        let first_seq = self.seq + skip;
        let from = event_key(&self.stream, first_seq);
        if skip + 1 == self.count {
            // One record (a single append's entry): a point lookup costs
            // less than setting up a range.
            let position = self.first + skip;
            if let Some(value) = events.get(from.as_slice())?
                && event_position(value.value()) == Some(position)
            {
                live.push((position, first_seq, value));
            }
            return Ok(live);
        }
        let to = event_key(&self.stream, self.seq.saturating_add(self.count - 1));
        for entry in events.range(from.as_slice()..=to.as_slice())? {
            if live.len() == limit {
                break;
            }
            let (key, value) = entry?;
            let seq = seq_of_event_key(&self.stream, key.value())?;
            let position = self.first + (seq - self.seq);
            // A seq the record no longer holds (pruned, erased, or now a
            // marker with a position of its own) is not this entry's.
            if event_position(value.value()) == Some(position) {
                live.push((position, seq, value));
            }
        }
        Ok(live)
    }
}

/// Hands out one tenant's next positions inside a job: [`Positions::start`]
/// reads the tenant's last position, [`Positions::take`] gives the next one
/// to a record as it is stored, [`Positions::finish`] writes the `feed`
/// entries and keeps the last position. Records with consecutive seqs (a
/// batch) share one `feed` entry.
pub(crate) struct Positions<'s> {
    stream: &'s [u8],
    /// How many leading bytes of `stream` are the tenant prefix.
    tenant: usize,
    last: u64,
    first: u64,
    /// The entry being built: its first position and seq, and its count.
    pending: Option<(u64, u64, u64)>,
}

impl<'s> Positions<'s> {
    /// Starts handing out `count` positions to records of `stream`;
    /// `tenant` is how many of its leading bytes are the tenant prefix
    /// ([`tenant_len`]). Call it before the job writes anything: it refuses
    /// a count the positions left cannot hold.
    pub(crate) fn start(
        tables: &LogTables<'_, '_>,
        stream: &'s [u8],
        tenant: usize,
        count: usize,
    ) -> Result<Self, Failure> {
        let prefix = &stream[..tenant];
        let last = last_position(&*tables.feed, prefix)?;
        let room = u64::try_from(count)
            .ok()
            .and_then(|count| last.checked_add(count));
        if room.is_none() {
            return Err(Error::corrupt(
                format!("feed table, tenant key {prefix:02x?}"),
                format!("the last position {last} leaves no room for {count} more"),
            )
            .into());
        }
        Ok(Self {
            stream,
            tenant,
            last,
            first: last,
            pending: None,
        })
    }

    /// Gives the record about to be stored at `seq`, encoded in `value`,
    /// the tenant's next position (at most the `count` given to
    /// [`Positions::start`]).
    pub(crate) fn take(
        &mut self,
        tables: &mut LogTables<'_, '_>,
        seq: u64,
        value: &mut [u8],
    ) -> Result<(), Failure> {
        let position = self.last + 1;
        set_position(value, position);
        self.last = position;
        match &mut self.pending {
            Some((_, first_seq, count)) if first_seq.checked_add(*count) == Some(seq) => {
                *count += 1;
            }
            _ => {
                self.flush(tables)?;
                self.pending = Some((position, seq, 1));
            }
        }
        Ok(())
    }

    fn flush(&mut self, tables: &mut LogTables<'_, '_>) -> Result<(), Failure> {
        if let Some((position, seq, count)) = self.pending.take() {
            let key = event_key(self.stream, seq);
            let value = entry_value(&key[self.tenant..], count);
            let prefix = &self.stream[..self.tenant];
            tables
                .feed
                .insert(feed_key(prefix, position).as_slice(), value.as_slice())?;
        }
        Ok(())
    }

    /// Writes the last entry and keeps the last position handed out, if
    /// any.
    pub(crate) fn finish(mut self, tables: &mut LogTables<'_, '_>) -> Result<(), Failure> {
        self.flush(tables)?;
        if self.last != self.first {
            let prefix = &self.stream[..self.tenant];
            tables.feed.insert(
                feed_head_key(prefix).as_slice(),
                self.last.to_be_bytes().as_slice(),
            )?;
            *tables.fed = true;
        }
        Ok(())
    }
}

/// Takes records that were at `positions` in the feed of the tenant prefix
/// `prefix` out of it, once their `events` entries have been deleted or
/// replaced: every `feed` entry that covered one of them and now has no
/// live record left is deleted (an entry with live records left keeps
/// them; a read skips the dead ones). A record without a position is
/// skipped.
pub(crate) fn leave(
    tables: &mut LogTables<'_, '_>,
    prefix: &[u8],
    positions: impl IntoIterator<Item = Option<u64>>,
) -> Result<(), Failure> {
    let mut touched: Vec<(Vec<u8>, Entry)> = Vec::new();
    for position in positions.into_iter().flatten() {
        if touched.iter().any(|(_, entry)| entry.covers(position)) {
            continue;
        }
        if let Some(found) = covering(tables, prefix, position)? {
            touched.push(found);
        }
    }
    for (key, entry) in touched {
        if entry.live(&*tables.events, 0, 1)?.is_empty() {
            tables.feed.remove(key.as_slice())?;
        }
    }
    Ok(())
}

/// The `feed` entry covering `position`, with its key, if any.
fn covering(
    tables: &LogTables<'_, '_>,
    prefix: &[u8],
    position: u64,
) -> Result<Option<(Vec<u8>, Entry)>, Failure> {
    let (from, to) = (feed_key(prefix, 0), feed_key(prefix, position));
    let Some(found) = tables
        .feed
        .range(from.as_slice()..=to.as_slice())?
        .next_back()
    else {
        return Ok(None);
    };
    let (key, value) = found?;
    let entry = Entry::decode(prefix, key.value(), value.value())?;
    Ok(entry
        .covers(position)
        .then(|| (key.value().to_vec(), entry)))
}

/// Up to `limit` records of the tenant whose prefix is `prefix`, after
/// `after`: one range scan of `feed` from the entry covering the first
/// position wanted, and for each entry one range scan of its stream's
/// `events`.
pub(crate) fn read(
    txn: &ReadTransaction,
    prefix: &[u8],
    after: FeedPosition,
    limit: usize,
) -> Result<Vec<FeedRecord>, Failure> {
    // Single-counter positions have no high part; nothing follows one
    // that has, nor `u64::MAX`.
    let (high, low) = after.parts();
    let Some(wanted) = low.checked_add(1).filter(|_| high == 0 && limit > 0) else {
        return Ok(Vec::new());
    };
    let feed = txn.open_table(FEED)?;
    let events = txn.open_table(EVENTS)?;
    // The entry holding `wanted` may start before it.
    let mut from = feed_key(prefix, wanted);
    let before = feed
        .range(feed_key(prefix, 0).as_slice()..=from.as_slice())?
        .next_back();
    if let Some(found) = before {
        let (key, value) = found?;
        if Entry::decode(prefix, key.value(), value.value())?.covers(wanted) {
            from = key.value().to_vec();
        }
    }
    // The tenant's head entry sorts after this range.
    let to = feed_key(prefix, u64::MAX);
    let mut records = Vec::with_capacity(limit.min(1024));
    for found in feed.range(from.as_slice()..=to.as_slice())? {
        let (key, value) = found?;
        let entry = Entry::decode(prefix, key.value(), value.value())?;
        for (position, seq, stored) in entry.live(&events, wanted, limit - records.len())? {
            records.push(FeedRecord {
                position: FeedPosition::new(position),
                record: decode_event(&entry.stream, seq, stored.value())?,
            });
        }
        if records.len() == limit {
            break;
        }
    }
    Ok(records)
}

/// How many `events` entries the upgrade rewrites per step (it cannot
/// write the table while it iterates it).
const UPGRADE_STEP: usize = 4096;

/// Gives every record of a file of layout version 1 its position, in `txn`
/// (the open's): per tenant, in key order of `events`, that is run by run
/// (by the stream key's run part) and each run in seq order. Every
/// `events` value is rewritten with its position in the header, and gets
/// its `feed` entry; each tenant's last position is kept. A value cut short
/// of its header (unreadable already) gets no position.
pub(crate) fn give_positions(txn: &WriteTransaction) -> Result<(), Failure> {
    let mut events = txn.open_table(EVENTS)?;
    let mut feed = txn.open_table(FEED)?;
    let mut last: HashMap<Vec<u8>, u64> = HashMap::new();
    // The stream seen last and its tenant prefix's length: a stream's
    // records are adjacent in key order, so most keys are decoded no
    // further.
    let mut current: Option<(Vec<u8>, usize)> = None;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let mut step = Vec::with_capacity(UPGRADE_STEP);
        {
            let range = match &after {
                Some(after) => events.range::<&[u8]>((
                    std::ops::Bound::Excluded(after.as_slice()),
                    std::ops::Bound::Unbounded,
                ))?,
                None => events.iter()?,
            };
            for entry in range.take(UPGRADE_STEP) {
                let (key, value) = entry?;
                step.push((key.value().to_vec(), value.value().to_vec()));
            }
        }
        let Some((last_key, _)) = step.last() else {
            break;
        };
        after = Some(last_key.clone());
        for (key, value) in step {
            let stream_len = key.len().saturating_sub(8);
            let tenant = match &current {
                Some((stream, tenant)) if stream.as_slice() == &key[..stream_len] => *tenant,
                _ => {
                    let (stream, len) = decode_stream(&key)?;
                    let tenant = tenant_len(&key[..len], &stream.run_id);
                    current = Some((key[..len].to_vec(), tenant));
                    tenant
                }
            };
            let prefix = &key[..tenant];
            let counter = last.entry(prefix.to_vec()).or_insert(0);
            let Some(upgraded) = with_position(&value, *counter + 1) else {
                continue;
            };
            *counter += 1;
            events.insert(key.as_slice(), upgraded.as_slice())?;
            let value = entry_value(&key[tenant..], 1);
            feed.insert(feed_key(prefix, *counter).as_slice(), value.as_slice())?;
        }
    }
    for (prefix, position) in last {
        feed.insert(
            feed_head_key(&prefix).as_slice(),
            position.to_be_bytes().as_slice(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase as _, ReadableTableMetadata as _};
    use runstore_core::{
        EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, SnapshotStore, Tenant,
    };

    use super::*;
    use crate::{
        RedbOptions, RedbStore,
        tables::{
            ERASED, FORMAT_BEFORE_FEED, FORMAT_KEY, FORMAT_VERSION, HEADS, IDS, META,
            SNAPSHOT_ORDER, SNAPSHOTS, event_key, event_position, stream_key,
        },
    };

    fn tenant(org: &str) -> Tenant {
        Tenant::new(org, "ws", None).unwrap()
    }

    fn event(tenant: &Tenant, run: &str, id: &str, seq: u64) -> EventRecord {
        let mut record = EventRecord::new(
            tenant,
            RunId::new(run).unwrap(),
            EventId::new(id).unwrap(),
            "t",
            seq * 100,
        );
        record.seq = seq;
        record
    }

    async fn open(path: &std::path::Path) -> RedbStore {
        let options = RedbOptions::default().with_durability(runstore_core::Durability::Relaxed);
        RedbStore::open_with(path, options).await.unwrap()
    }

    /// Writes a store as the version before the feed did: its seven tables,
    /// layout version 1, no feed tables.
    fn write_layout_1(path: &std::path::Path, records: &[(Tenant, EventRecord)]) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut events = txn.open_table(EVENTS).unwrap();
            let mut ids = txn.open_table(IDS).unwrap();
            let mut heads = txn.open_table(HEADS).unwrap();
            txn.open_table(ERASED).unwrap();
            txn.open_table(SNAPSHOTS).unwrap();
            txn.open_table(SNAPSHOT_ORDER).unwrap();
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(FORMAT_KEY, FORMAT_BEFORE_FEED).unwrap();
            for (tenant, record) in records {
                let stream = stream_key(tenant, &record.run_id);
                // Version 1's value: flags, `occurred_at_ms`, JSON.
                let mut value = vec![u8::from(record.is_compaction_marker())];
                value.extend_from_slice(&record.occurred_at_ms.to_be_bytes());
                value.extend(serde_json::to_vec(record).unwrap());
                let key = event_key(&stream, record.seq);
                events.insert(key.as_slice(), value.as_slice()).unwrap();
                let key = join(&stream, record.event_id.as_str().as_bytes());
                ids.insert(key.as_slice(), record.seq).unwrap();
                heads.insert(stream.as_slice(), record.seq).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    fn format_of(store: &RedbStore) -> u64 {
        let txn = store.inner.db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        meta.get(FORMAT_KEY).unwrap().unwrap().value()
    }

    /// How many entries `feed` holds (records' and tenants' heads), and
    /// the positions the `events` values hold.
    fn feed_len_and_positions(store: &RedbStore) -> (u64, Vec<Option<u64>>) {
        let txn = store.inner.db.begin_read().unwrap();
        let feed = txn.open_table(FEED).unwrap().len().unwrap();
        let events = txn.open_table(EVENTS).unwrap();
        let positions = events
            .iter()
            .unwrap()
            .map(|entry| event_position(entry.unwrap().1.value()))
            .collect();
        (feed, positions)
    }

    /// `(run, seq)` of each record of `feed`, and whether the positions run
    /// 1, 2, 3, ...
    fn runs_and_seqs(feed: &[FeedRecord]) -> Vec<(String, u64)> {
        for (index, entry) in feed.iter().enumerate() {
            assert_eq!(entry.position, FeedPosition::new(index as u64 + 1));
        }
        feed.iter()
            .map(|entry| (entry.record.run_id.to_string(), entry.record.seq))
            .collect()
    }

    /// CONTRACT §29: a file of layout version 1 (no feed tables) opens,
    /// and its records get positions once -- per tenant, run by run in key
    /// order, each run in seq order -- that later opens keep; new records
    /// come after them, and compaction takes the old ones out of the feed.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_store_written_before_the_feed_gets_positions_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let (a, b) = (tenant("a"), tenant("b"));
        // Written out of order on purpose: the positions follow the keys.
        let records = [
            (a.clone(), event(&a, "run-2", "x1", 1)),
            (b.clone(), event(&b, "run-1", "y1", 1)),
            (a.clone(), event(&a, "run-1", "w1", 1)),
            (a.clone(), event(&a, "run-2", "x2", 2)),
            (a.clone(), event(&a, "run-1", "w2", 2)),
            (b.clone(), event(&b, "run-1", "y2", 2)),
        ];
        write_layout_1(&path, &records);

        let store = open(&path).await;
        assert_eq!(format_of(&store), FORMAT_VERSION);
        let feed_a = store.read_feed(&a, FeedPosition::START, 10).await.unwrap();
        let expected_a = [("run-1", 1), ("run-1", 2), ("run-2", 1), ("run-2", 2)];
        let expected_a: Vec<(String, u64)> = expected_a
            .iter()
            .map(|(r, s)| ((*r).to_owned(), *s))
            .collect();
        assert_eq!(runs_and_seqs(&feed_a), expected_a);
        let feed_b = store.read_feed(&b, FeedPosition::START, 10).await.unwrap();
        assert_eq!(
            runs_and_seqs(&feed_b),
            vec![("run-1".to_owned(), 1), ("run-1".to_owned(), 2)]
        );
        let run_1 = RunId::new("run-1").unwrap();
        let stored = store.read(&a, &run_1, ReadQuery::all()).await.unwrap();
        assert_eq!(feed_a[0].record, stored[0]);
        drop(store);

        // Once: the next open finds version 2 and changes nothing.
        let store = open(&path).await;
        // Six records and two heads; every value holds its position.
        let (entries, positions) = feed_len_and_positions(&store);
        assert_eq!(entries, 8);
        assert!(positions.iter().all(Option::is_some), "{positions:?}");
        assert_eq!(
            store.read_feed(&a, FeedPosition::START, 10).await.unwrap(),
            feed_a
        );
        store
            .append(&a, &event(&a, "run-1", "w3", 0))
            .await
            .unwrap();
        let next = store.read_feed(&a, FeedPosition::new(4), 10).await.unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].position, FeedPosition::new(5));
        assert_eq!(next[0].record.event_id.as_str(), "w3");

        // The upgraded records leave the feed when they are pruned.
        let snapshot = runstore_conformance::snapshot(&a, "run-1", "snap", 3, 1);
        store.put(&a, &snapshot).await.unwrap();
        // Tenant a: w1, w2 (below the snapshot), x1, x2; tenant b: y1, y2.
        assert_eq!(store.compact(1, 10_000).await.unwrap().removed, 6);
        let feed = store.read_feed(&a, FeedPosition::START, 10).await.unwrap();
        let left: Vec<(u64, String)> = feed
            .iter()
            .map(|entry| {
                let (_, low) = entry.position.parts();
                (low, entry.record.event_id.to_string())
            })
            .collect();
        assert_eq!(left.len(), 3, "{left:?}");
        assert_eq!(left[0], (5, "w3".to_owned()));
        assert!(
            feed[1..]
                .iter()
                .all(|entry| entry.record.is_compaction_marker())
        );
        assert!(left[1].0 > 5 && left[2].0 > left[1].0, "{left:?}");
    }

    /// CONTRACT §29: a position is never handed out twice, also after the
    /// record holding the highest one was deleted (here pruned, so that
    /// its marker is the next record) and the store reopened.
    #[tokio::test(flavor = "multi_thread")]
    async fn positions_are_not_reused_after_the_highest_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let t = tenant("a");
        let store = open(&path).await;
        let mut recent = event(&t, "kept", "k1", 0);
        recent.occurred_at_ms = 1_000_000;
        store.append(&t, &recent).await.unwrap();
        store.append(&t, &event(&t, "old", "o1", 0)).await.unwrap();
        // o1, at position 2, is pruned; k1 is too recent.
        assert_eq!(store.compact(100, 10_000).await.unwrap().removed, 1);
        let feed = store.read_feed(&t, FeedPosition::START, 10).await.unwrap();
        let positions: Vec<FeedPosition> = feed.iter().map(|entry| entry.position).collect();
        assert_eq!(positions, [FeedPosition::new(1), FeedPosition::new(3)]);
        assert!(feed[1].record.is_compaction_marker());
        // Two records and the head.
        assert_eq!(feed_len_and_positions(&store).0, 3);
        drop(store);
        let store = open(&path).await;
        store.append(&t, &event(&t, "kept", "k2", 0)).await.unwrap();
        let next = store.read_feed(&t, FeedPosition::new(3), 10).await.unwrap();
        assert_eq!(next[0].position, FeedPosition::new(4));
    }

    /// The handle's feed signal is raised by a commit that gave records
    /// positions, and not by one that wrote none or only a snapshot.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_signal_is_raised_after_each_commit_that_fed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("store.redb")).await;
        let t = tenant("a");
        let mut woken = EventLog::feed_signal(&store).unwrap().subscribe();
        store.append(&t, &event(&t, "run", "e1", 0)).await.unwrap();
        assert!(woken.has_changed().unwrap(), "an append raises it");
        woken.borrow_and_update();
        store.append(&t, &event(&t, "run", "e1", 0)).await.unwrap();
        let snapshot = runstore_conformance::snapshot(&t, "run", "snap", 1, 1);
        store.put(&t, &snapshot).await.unwrap();
        assert!(!woken.has_changed().unwrap(), "a retry and a put do not");
        store
            .delete_run(&t, &RunId::new("run").unwrap())
            .await
            .unwrap();
        assert!(woken.has_changed().unwrap(), "an erasure marker raises it");
    }

    /// A batch shares one `feed` entry: pruning part of it keeps the rest
    /// at their positions, a read can start inside it, and the entry goes
    /// once none of its records is left.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_batch_entry_keeps_its_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("store.redb")).await;
        let t = tenant("a");
        let run = RunId::new("run").unwrap();
        let batch: Vec<EventRecord> = (1..=6)
            .map(|n| event(&t, "run", &format!("e{n}"), n))
            .collect();
        store.append_batch(&t, &run, &batch, None).await.unwrap();
        // One entry and the head.
        assert_eq!(feed_len_and_positions(&store).0, 2);
        let snapshot = runstore_conformance::snapshot(&t, "run", "snap", 4, 1);
        store.put(&t, &snapshot).await.unwrap();
        // e1-e3 (seq < 4) are pruned; the marker takes seq 3 and position 7.
        assert_eq!(store.compact(1, 10_000).await.unwrap().removed, 3);
        let feed = store.read_feed(&t, FeedPosition::START, 10).await.unwrap();
        let seen: Vec<(u64, u64)> = feed
            .iter()
            .map(|entry| (entry.position.parts().1, entry.record.seq))
            .collect();
        assert_eq!(seen, [(4, 4), (5, 5), (6, 6), (7, 3)]);
        assert!(feed[3].record.is_compaction_marker());
        let inside = store.read_feed(&t, FeedPosition::new(4), 2).await.unwrap();
        assert_eq!(inside, feed[1..3]);
        store.delete_run(&t, &run).await.unwrap();
        let feed = store.read_feed(&t, FeedPosition::START, 10).await.unwrap();
        assert_eq!(feed.len(), 1, "only the erasure marker is left");
        assert_eq!(feed[0].position, FeedPosition::new(8));
        // Its entry and the head: the batch's entry and the compaction
        // marker's are gone.
        assert_eq!(feed_len_and_positions(&store).0, 2);
    }
}
