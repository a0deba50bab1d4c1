//! The tenant change feed (CONTRACT §29): positions handed out in the
//! writer's transaction, the read, and the upgrade of a file written before
//! the feed.
//!
//! One writer thread runs every write transaction, so a record takes its
//! position inside the transaction that makes it visible, and transactions
//! commit in the order they took positions: a reader (a read transaction,
//! which sees one committed state) never sees a position below one it saw
//! before become visible later. The tables are [`FEED`], [`FEED_HEADS`] and
//! [`POSITIONS`].

use std::collections::HashMap;

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use runstore_core::{Error, FeedPosition, FeedRecord, Result};

use crate::{
    error::Failure,
    tables::{
        EVENTS, FEED, FEED_HEADS, POSITIONS, decode_event, decode_stream, event_key, feed_key,
        join, position_of_feed_key, seq_of_event_key, tenant_len,
    },
    writer::LogTables,
};

/// Gives the records of `stream` at `seqs`, in that order, the tenant's
/// next positions. `tenant` is how many leading bytes of `stream` are the
/// tenant prefix ([`tenant_len`]).
pub(crate) fn enter(
    tables: &mut LogTables<'_, '_>,
    stream: &[u8],
    tenant: usize,
    seqs: impl IntoIterator<Item = u64>,
) -> Result<(), Failure> {
    let prefix = &stream[..tenant];
    let mut last = tables
        .feed_heads
        .get(prefix)?
        .map_or(0, |guard| guard.value());
    let before = last;
    for seq in seqs {
        last = last.checked_add(1).ok_or_else(|| {
            Error::corrupt(
                format!("feed_heads table, tenant key {prefix:02x?}"),
                "the last position leaves no next one",
            )
        })?;
        let key = event_key(stream, seq);
        tables.positions.insert(key.as_slice(), last)?;
        tables
            .feed
            .insert(feed_key(prefix, last).as_slice(), &key[tenant..])?;
    }
    if last != before {
        tables.feed_heads.insert(prefix, last)?;
        *tables.fed = true;
    }
    Ok(())
}

/// Takes the record of `stream` at `seq` out of the feed (it is being
/// deleted or replaced); a record without a position is left alone.
pub(crate) fn leave(
    tables: &mut LogTables<'_, '_>,
    stream: &[u8],
    tenant: usize,
    seq: u64,
) -> Result<(), Failure> {
    let key = event_key(stream, seq);
    let position = tables
        .positions
        .remove(key.as_slice())?
        .map(|guard| guard.value());
    if let Some(position) = position {
        tables
            .feed
            .remove(feed_key(&stream[..tenant], position).as_slice())?;
    }
    Ok(())
}

/// Takes every record of `stream` out of the feed: one range scan of the
/// stream's `positions`.
pub(crate) fn leave_stream(
    tables: &mut LogTables<'_, '_>,
    stream: &[u8],
    tenant: usize,
    end: &[u8],
) -> Result<(), Failure> {
    let mut doomed = Vec::new();
    for entry in tables.positions.range(stream..end)? {
        doomed.push(entry?.1.value());
    }
    for position in doomed {
        tables
            .feed
            .remove(feed_key(&stream[..tenant], position).as_slice())?;
    }
    tables.positions.retain_in(stream..end, |_, _| false)?;
    Ok(())
}

/// Up to `limit` records of the tenant whose prefix is `prefix`, after
/// `after`: one range scan of `feed` and a lookup in `events` per record.
pub(crate) fn read(
    txn: &ReadTransaction,
    prefix: &[u8],
    after: FeedPosition,
    limit: usize,
) -> Result<Vec<FeedRecord>, Failure> {
    // Single-counter positions have no high part; nothing follows one
    // that has, nor `u64::MAX`.
    let (high, low) = after.parts();
    let Some(first) = low.checked_add(1).filter(|_| high == 0 && limit > 0) else {
        return Ok(Vec::new());
    };
    let feed = txn.open_table(FEED)?;
    let events = txn.open_table(EVENTS)?;
    let (from, to) = (feed_key(prefix, first), feed_key(prefix, u64::MAX));
    let mut records = Vec::with_capacity(limit.min(1024));
    for entry in feed.range(from.as_slice()..=to.as_slice())?.take(limit) {
        let (key, value) = entry?;
        let position = position_of_feed_key(prefix, key.value())?;
        let event = join(prefix, value.value());
        let stream = event.get(..event.len().saturating_sub(8)).unwrap_or(&[]);
        let seq = seq_of_event_key(stream, &event)?;
        let Some(stored) = events.get(event.as_slice())? else {
            return Err(Error::corrupt(
                format!("feed table, tenant key {prefix:02x?}, position {position}"),
                format!("the events table holds no record at key {event:02x?}"),
            )
            .into());
        };
        records.push(FeedRecord {
            position: FeedPosition::new(position),
            record: decode_event(stream, seq, stored.value())?,
        });
    }
    Ok(records)
}

/// Gives every record of a file written before the feed its position, in
/// `txn` (the open's): per tenant, in key order of `events`, that is run by
/// run (by the stream key's run part) and each run in seq order. One pass
/// over `events`, two inserts per record.
pub(crate) fn give_positions(txn: &WriteTransaction) -> Result<(), Failure> {
    let events = txn.open_table(EVENTS)?;
    let mut feed = txn.open_table(FEED)?;
    let mut positions = txn.open_table(POSITIONS)?;
    let mut heads = txn.open_table(FEED_HEADS)?;
    let mut last: HashMap<Vec<u8>, u64> = HashMap::new();
    // The tenant prefix of the stream seen last: the streams of a tenant
    // are adjacent in key order, so most keys are decoded no further.
    let mut current: Option<(Vec<u8>, usize)> = None;
    for entry in events.iter()? {
        let (key, _) = entry?;
        let key = key.value();
        let stream_len = key.len().saturating_sub(8);
        let tenant = match &current {
            Some((stream, tenant)) if key.starts_with(stream) && stream.len() == stream_len => {
                *tenant
            }
            _ => {
                let (stream, len) = decode_stream(key)?;
                let tenant = tenant_len(&key[..len], &stream.run_id);
                current = Some((key[..len].to_vec(), tenant));
                tenant
            }
        };
        let prefix = &key[..tenant];
        let position = last.entry(prefix.to_vec()).or_insert(0);
        *position += 1;
        positions.insert(key, *position)?;
        feed.insert(feed_key(prefix, *position).as_slice(), &key[tenant..])?;
    }
    for (prefix, position) in last {
        heads.insert(prefix.as_slice(), position)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase as _, TableDefinition};
    use runstore_core::{
        EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, SnapshotStore, Tenant,
    };

    use super::*;
    use crate::{
        RedbOptions, RedbStore,
        tables::{
            ERASED, FORMAT_BEFORE_FEED, FORMAT_KEY, FORMAT_VERSION, HEADS, IDS, META,
            SNAPSHOT_ORDER, SNAPSHOTS, encode_event, stream_key,
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
                let value = encode_event(record).unwrap();
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

    fn table_len(store: &RedbStore, table: TableDefinition<&'static [u8], u64>) -> u64 {
        use redb::ReadableTableMetadata as _;
        let txn = store.inner.db.begin_read().unwrap();
        txn.open_table(table).unwrap().len().unwrap()
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
        assert_eq!(table_len(&store, POSITIONS), 6);
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
    /// record holding the highest one was deleted and the store reopened.
    #[tokio::test(flavor = "multi_thread")]
    async fn positions_are_not_reused_after_the_highest_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let t = tenant("a");
        let store = open(&path).await;
        store.append(&t, &event(&t, "kept", "k1", 0)).await.unwrap();
        store.append(&t, &event(&t, "gone", "g1", 0)).await.unwrap();
        assert_eq!(
            store
                .delete_run(&t, &RunId::new("gone").unwrap())
                .await
                .unwrap(),
            1
        );
        let feed = store.read_feed(&t, FeedPosition::START, 10).await.unwrap();
        let positions: Vec<FeedPosition> = feed.iter().map(|entry| entry.position).collect();
        assert_eq!(positions, [FeedPosition::new(1), FeedPosition::new(3)]);
        assert_eq!(table_len(&store, POSITIONS), 2);
        drop(store);
        let store = open(&path).await;
        store.append(&t, &event(&t, "kept", "k2", 0)).await.unwrap();
        let next = store.read_feed(&t, FeedPosition::new(3), 10).await.unwrap();
        assert_eq!(next[0].position, FeedPosition::new(4));
    }
}
