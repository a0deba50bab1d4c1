//! The tenant change feed (CONTRACT §29, migration 0004).
//!
//! A record's position is `(tx, feed_seq)`: the id of the transaction that
//! wrote its row (`txid_current()`, 64 bits, never reused) and a number the
//! `feed_seq` sequence gave the row at insert. [`PostgresStore::read_feed`]
//! reads only rows whose `tx` is below the oldest transaction still in
//! progress in the cluster, `txid_snapshot_xmin` of the statement's own
//! snapshot: every transaction below it has ended, so the rows it wrote are
//! visible and final, and a row that becomes visible later belongs to a
//! transaction at or above that horizon, so its position is larger than
//! every position read. That is the lossless rule, whatever order
//! concurrent writers commit in.
//!
//! Since migration 0005 the position is `(tx + shift, feed_seq)`, the
//! shift 0 until the store is found on a cluster whose transaction counter
//! is behind its rows' `tx` (a `pg_dump` and restore, or logical
//! replication, copies `tx`): [`rebase`] then moves every row's `tx` down
//! and the shift up by the same amount, keeping every position, and makes
//! the restored rows readable and later records sort after them. It runs
//! at connect when the cluster's identifier changed, and at a feed read
//! that meets such a row.
//!
//! Within a stream, positions follow seq order because every transaction
//! that writes a stream's records takes the stream's advisory lock
//! (`pg_advisory_xact_lock(stream_lock_key(key_hash))`) before anything
//! that assigns it a transaction id: the next writer of the stream gets
//! its id only after the previous one has ended, so its id is larger.
//! Every transaction writes one stream (group commit groups one stream's
//! requests), so no transaction takes two of these locks.
//!
//! Wake-ups: after a commit that wrote records, the handle raises its own
//! [`FeedSignal`] and queues the tenant's key and the writing
//! transaction's id for its notifier task. When some session listens on
//! the schema's channel (looked up at most once a second), the notifier
//! sends `pg_notify(feed_channel(), key)` for every queued key in one
//! autocommit statement without a WAL flush, once the cluster's horizon
//! has passed the queued transactions (the records are then readable), and
//! raises the signal again; commits that land meanwhile share the next
//! round. A notification thus says "readable now", also while an older
//! transaction held the records back. The `NOTIFY` is not sent inside the
//! writing transaction: there it holds a database-wide lock through the
//! commit's WAL flush and serialises every notifying commit. A handle whose
//! [`feed_signal`](runstore_core::EventLog::feed_signal) was asked for
//! listens on the channel on a connection of its own (named
//! `runstore-feed <channel>` in `pg_stat_activity`, which is how notifiers
//! find it) and raises its signal for the tenants it has read the feed of.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use runstore_core::{Error, EventRecord, FeedPosition, FeedRecord, FeedSignal, Result, Tenant};
use sqlx::{
    PgPool, Postgres, Transaction,
    postgres::{PgConnectOptions, PgListener, PgPoolOptions},
};
use tokio::task::JoinHandle;

use crate::{
    PostgresStore,
    error::{self, SqlContext, TxError},
    keys::{self, StreamCols},
};

/// Notifies the feed's channel once for each tenant key in `$1` if every
/// transaction up to `$2` has ended (the horizon has passed it); answers
/// how many it sent (0: not yet). The statement commits on its own with
/// `synchronous_commit` off: a notification needs no durability, so it
/// waits for no WAL flush.
const NOTIFY: &str = "SELECT count(pg_notify(feed_channel(), key::TEXT)) \
     FROM UNNEST($1::BIGINT[]) key, set_config('synchronous_commit', 'off', true) \
     WHERE txid_snapshot_xmin(txid_current_snapshot()) > $2";

/// Whether a session listens on the schema's channel: listeners name their
/// connection after it.
const LISTENING: &str = "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
     WHERE application_name = 'runstore-feed ' || feed_channel())";

/// The shortest time between two rounds of the notifier: commits within it
/// share one `NOTIFY` statement (a follower on another handle learns of a
/// commit up to this much later; one on the same handle at once).
const NOTIFY_EVERY: Duration = Duration::from_millis(5);

/// How long the notifier trusts its last look for listeners.
const LISTENING_FOR: Duration = Duration::from_secs(1);

/// How long the notifier waits between looks at the horizon: from the
/// first, doubling up to the last.
const HORIZON_WAIT: (Duration, Duration) = (Duration::from_millis(2), Duration::from_secs(1));

/// A tenant's records after a position, in feed order, below the horizon,
/// with their positions `(tx + shift, feed_seq)` (migration 0005; the
/// shift is read by one-time subqueries, so the index `events_feed` still
/// gives the order). The join to `streams` matches the full tenant hash, so
/// tenants whose 8-byte keys collide stay apart. A last row of NULLs says
/// that the tenant has a row whose `tx` is at or above every transaction id
/// this cluster has handed out ([`MOVED`]): the store came from another
/// cluster and needs [`rebase`].
const READ_FEED: &str = "(SELECT e.tx + (SELECT shift FROM feed_shift), e.feed_seq, e.seq, e.record \
     FROM events e JOIN streams s ON s.stream_id = e.stream_id \
     WHERE e.tenant_key = $1 AND s.tenant_hash = $2 \
       AND (e.tx, e.feed_seq) > ($3 - (SELECT shift FROM feed_shift), $4) \
       AND e.tx < txid_snapshot_xmin(txid_current_snapshot()) \
     ORDER BY e.tx, e.feed_seq LIMIT $5) \
     UNION ALL SELECT NULL, NULL, NULL, NULL WHERE EXISTS (SELECT 1 FROM events \
       WHERE tenant_key = $1 AND tx >= txid_snapshot_xmax(txid_current_snapshot()))";

/// The condition for a re-base: a row's `tx` at or above `xmax` of the
/// statement's snapshot, an id this cluster has not handed out yet. On the
/// cluster that wrote the rows it never holds: a visible row was written
/// by a transaction that ended before the snapshot.
const MOVED: &str = "SELECT max(tx), txid_snapshot_xmin(txid_current_snapshot()), \
     txid_snapshot_xmax(txid_current_snapshot()) FROM events";

/// This cluster's identifier, or NULL where `pg_control_system()` is not
/// allowed; and the one the store was last checked on.
const CLUSTER: &str = "SELECT (SELECT system_identifier FROM pg_control_system()), \
     (SELECT system_identifier FROM feed_shift)";

/// Moves the store's feed onto this cluster's transaction ids if its rows
/// carry ids this cluster has not handed out yet (it was restored from, or
/// replicated from, a cluster whose counter is ahead); answers whether it
/// did. In one transaction that first takes `events`
/// in `EXCLUSIVE` mode (it waits for every writer that has written to the
/// table and holds off new ones; readers go on): every row's `tx` goes down
/// by `d = max(tx) - xmin + 1` and `feed_shift.shift` up by `d`, where
/// `xmin` is the oldest transaction in progress once the lock is held. So
/// every position `(tx + shift, feed_seq)` stays what it was (a follower's
/// position keeps its meaning and nothing it read moves), every row is
/// below every transaction in progress or to come (readable once the
/// re-base and the transactions before it ended), and a record written
/// later (also by a writer that got its id before the lock and waited for
/// it) sorts after every existing one. A reader's statement reads the shift
/// and the rows from one snapshot, so it sees either side of the re-base,
/// never a mix. Two re-bases serialise on the table lock; the second finds
/// nothing to do.
pub(crate) async fn rebase(
    conn: &mut sqlx::PgConnection,
) -> std::result::Result<bool, sqlx::Error> {
    use sqlx::Connection as _;
    let mut tx = conn.begin().await?;
    sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let (max, xmin, xmax): (Option<i64>, i64, i64) =
        sqlx::query_as(MOVED).fetch_one(&mut *tx).await?;
    let moved = max.is_some_and(|max| max >= xmax);
    if let Some(max) = max.filter(|_| moved) {
        let down = max - xmin + 1;
        sqlx::query("UPDATE events SET tx = tx - $1")
            .bind(down)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE feed_shift SET shift = shift + $1")
            .bind(down)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(moved)
}

/// At connect (under the schema's migration lock): unless the store was
/// last checked on this cluster, looks for rows from another cluster
/// (`max(tx)`, a scan of `events_feed`), [`rebase`]s if there are any, and
/// records this cluster's identifier. Where `pg_control_system()` is
/// refused, nothing is recorded and every connect looks.
pub(crate) async fn rebase_if_new_cluster(
    conn: &mut sqlx::PgConnection,
) -> std::result::Result<(), sqlx::Error> {
    let (here, checked) = sqlx::query_as::<_, (Option<i64>, Option<i64>)>(CLUSTER)
        .fetch_one(&mut *conn)
        .await
        .unwrap_or((None, None));
    if here.is_some() && here == checked {
        return Ok(());
    }
    let (max, _, xmax): (Option<i64>, i64, i64) =
        sqlx::query_as(MOVED).fetch_one(&mut *conn).await?;
    if max.is_some_and(|max| max >= xmax) {
        rebase(conn).await?;
    }
    if let Some(here) = here {
        sqlx::query("UPDATE feed_shift SET system_identifier = $1")
            .bind(here)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// A feed row: position (`tx + shift`, `feed_seq`), seq and record text.
type FeedRow = (i64, i64, i64, String);

/// A row [`READ_FEED`] answers: a feed row, or NULLs (the store moved).
type ReadRow = (Option<i64>, Option<i64>, Option<i64>, Option<String>);

/// How long the listener waits before connecting again after a failure.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// A handle's feed state: its signal, the tenants it has read the feed of,
/// the tenants with commits to notify, and its two tasks once started.
pub(crate) struct Feed {
    signal: FeedSignal,
    /// Tenant keys [`PostgresStore::read_feed`] was asked about; a
    /// notification for another tenant wakes nobody.
    tenants: Arc<Mutex<HashSet<i64>>>,
    listener: OnceLock<Task>,
    connect: PgConnectOptions,
    /// Tenants with commits not yet notified.
    pending: Arc<Mutex<Pending>>,
    /// Wakes the notifier (a permit is kept when it is busy).
    wake: Arc<tokio::sync::Notify>,
    notifier: OnceLock<Task>,
}

/// Commits not yet notified: their tenants' keys and the largest of their
/// transaction ids.
#[derive(Default)]
struct Pending {
    keys: HashSet<i64>,
    last_tx: i64,
}

/// A task of the handle's; aborted when the handle's last clone goes.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Feed {
    pub(crate) fn new(connect: PgConnectOptions) -> Self {
        Self {
            signal: FeedSignal::new(),
            tenants: Arc::default(),
            listener: OnceLock::new(),
            connect,
            pending: Arc::default(),
            wake: Arc::default(),
            notifier: OnceLock::new(),
        }
    }

    /// After transaction `tx` committed records of the tenant `cols` names:
    /// wakes this handle's followers and queues the tenant for the notifier
    /// (started on first use; without a runtime, other handles poll).
    pub(crate) fn committed(&self, pool: &PgPool, cols: &StreamCols<'_>, tx: i64) {
        self.signal.raise();
        {
            let mut pending = locked(&self.pending);
            pending.keys.insert(keys::tenant_key(&cols.tenant_hash));
            pending.last_tx = pending.last_tx.max(tx);
        }
        if self.notifier.get().is_none()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            self.notifier.get_or_init(|| {
                Task(runtime.spawn(notify(
                    pool.clone(),
                    self.signal.clone(),
                    self.pending.clone(),
                    self.wake.clone(),
                )))
            });
        }
        self.wake.notify_one();
    }

    /// The signal, starting the listener on first use when a runtime is
    /// there to run it (otherwise followers wake on this handle's own
    /// commits and poll).
    pub(crate) fn signal(&self) -> FeedSignal {
        if self.listener.get().is_none()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            self.listener.get_or_init(|| {
                Task(runtime.spawn(listen(
                    self.connect.clone(),
                    self.signal.clone(),
                    self.tenants.clone(),
                )))
            });
        }
        self.signal.clone()
    }

    /// Stops the listener and the notifier (the store is closing).
    pub(crate) fn stop(&self) {
        for task in [&self.listener, &self.notifier] {
            if let Some(task) = task.get() {
                task.0.abort();
            }
        }
    }

    fn follow(&self, tenant_key: i64) {
        locked(&self.tenants).insert(tenant_key);
    }
}

/// The notifier: for each round, the tenants queued since the last are
/// notified once the horizon has passed their commits (see the module
/// doc), and this handle's followers are woken then too; nothing is sent
/// while no session listens. A failure drops the round: a notification is
/// a wake-up only, and followers poll.
async fn notify(
    pool: PgPool,
    signal: FeedSignal,
    pending: Arc<Mutex<Pending>>,
    wake: Arc<tokio::sync::Notify>,
) {
    let mut listening: Option<(Instant, bool)> = None;
    let mut last_round: Option<Instant> = None;
    loop {
        wake.notified().await;
        if let Some(at) = last_round {
            tokio::time::sleep(NOTIFY_EVERY.saturating_sub(at.elapsed())).await;
        }
        last_round = Some(Instant::now());
        let Pending { keys, last_tx } = std::mem::take(&mut *locked(&pending));
        if keys.is_empty() {
            continue;
        }
        let keys: Vec<i64> = keys.into_iter().collect();
        let anyone = match listening {
            Some((at, anyone)) if at.elapsed() < LISTENING_FOR => anyone,
            _ => {
                let Ok((anyone,)) = sqlx::query_as::<_, (bool,)>(LISTENING)
                    .fetch_one(&pool)
                    .await
                else {
                    continue;
                };
                listening = Some((Instant::now(), anyone));
                anyone
            }
        };
        if !anyone {
            continue;
        }
        let mut pause = HORIZON_WAIT.0;
        loop {
            match sqlx::query_as::<_, (i64,)>(NOTIFY)
                .bind(&keys)
                .bind(last_tx)
                .fetch_one(&pool)
                .await
            {
                Ok((0,)) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(HORIZON_WAIT.1);
                }
                Ok(_) => {
                    signal.raise();
                    break;
                }
                Err(_) => break,
            }
        }
    }
}

/// The listener: one connection (a pool of one, which reconnects) that
/// names itself after the schema's feed channel, listens on it and raises
/// `signal` for each notification naming a followed tenant, and once after
/// each reconnect (notifications sent while it was away are lost).
async fn listen(connect: PgConnectOptions, signal: FeedSignal, tenants: Arc<Mutex<HashSet<i64>>>) {
    let pool: PgPool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(connect);
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            // Named after the channel, so that notifiers find it.
            sqlx::query(
                "SELECT set_config('application_name', 'runstore-feed ' || feed_channel(), false)",
            )
            .execute(&mut listener)
            .await?;
            let (channel,): (String,) = sqlx::query_as("SELECT feed_channel()")
                .fetch_one(&mut listener)
                .await?;
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match listener.await {
            Ok(listener) => listener,
            Err(_) => {
                tokio::time::sleep(LISTEN_RETRY).await;
                continue;
            }
        };
        // Records committed while the listener was not yet listening.
        signal.raise();
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    let wanted = notification
                        .payload()
                        .parse::<i64>()
                        .map_or(true, |key| locked(&tenants).contains(&key));
                    if wanted {
                        signal.raise();
                    }
                }
                // The connection was lost (and anything sent meanwhile):
                // start over on a new one, named and listening as above.
                Ok(None) => {
                    signal.raise();
                    break;
                }
                Err(_) => {
                    tokio::time::sleep(LISTEN_RETRY).await;
                    break;
                }
            }
        }
    }
}

impl PostgresStore {
    /// Commits transaction `txid`, which wrote records of the stream `cols` names:
    /// after the test delay, if one is set (the records hold their
    /// positions and are not yet visible), then `COMMIT`, then followers
    /// are woken ([`Feed::committed`]).
    pub(crate) async fn commit_records(
        &self,
        tx: Transaction<'static, Postgres>,
        cols: &StreamCols<'_>,
        txid: i64,
        doing: &'static str,
    ) -> Result<(), TxError> {
        self.commit_delay().await;
        tx.commit().await.during(doing)?;
        self.inner.feed.committed(self.pool_ref(), cols, txid);
        Ok(())
    }

    /// Whether a test commit delay is set.
    pub(crate) fn has_commit_delay(&self) -> bool {
        self.inner.commit_delay.is_some()
    }

    /// Sleeps for the test commit delay, if one is set.
    pub(crate) async fn commit_delay(&self) {
        if let Some(delay) = self.inner.commit_delay {
            tokio::time::sleep(delay).await;
        }
    }

    /// The store's feed state.
    pub(crate) fn feed(&self) -> &Feed {
        &self.inner.feed
    }

    /// CONTRACT §29: up to `limit` records of `tenant` after `after`.
    pub(crate) async fn read_feed_rows(
        &self,
        tenant: &Tenant,
        after: FeedPosition,
        limit: usize,
    ) -> Result<Vec<FeedRecord>> {
        let tenant_hash = keys::tenant_hash(tenant);
        let tenant_key = keys::tenant_key(&tenant_hash);
        self.feed().follow(tenant_key);
        let (high, low) = after.parts();
        // Transaction ids and sequence values are BIGINTs: a position
        // beyond them has nothing after it.
        let Ok(high) = i64::try_from(high) else {
            return Ok(Vec::new());
        };
        let low = i64::try_from(low).unwrap_or(i64::MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let doing = || format!("reading the feed of tenant {tenant}");
        let mut rows: Vec<FeedRow> = Vec::new();
        // A second round only after a re-base.
        for _ in 0..2 {
            let read: Vec<ReadRow> = sqlx::query_as(READ_FEED)
                .bind(tenant_key)
                .bind(&tenant_hash)
                .bind(high)
                .bind(low)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(self.pool_ref())
                .await
                .map_err(|err| error::map(&doing(), err))?;
            let moved = read.iter().any(|row| row.0.is_none());
            rows = read
                .into_iter()
                .filter_map(|row| match row {
                    (Some(tx), Some(feed_seq), Some(seq), Some(text)) => {
                        Some((tx, feed_seq, seq, text))
                    }
                    _ => None,
                })
                .collect();
            if !moved {
                break;
            }
            let mut conn = self
                .pool_ref()
                .acquire()
                .await
                .map_err(|err| error::map(&doing(), err))?;
            rebase(&mut conn).await.map_err(|err| {
                error::map(&format!("re-basing the feed for tenant {tenant}"), err)
            })?;
        }
        rows.into_iter()
            .map(|(tx, feed_seq, seq, text)| {
                let location = || {
                    format!(
                        "postgres {}.events of tenant {tenant}, feed position {tx}.{feed_seq}",
                        self.schema()
                    )
                };
                let record: EventRecord = serde_json::from_str(&text)
                    .map_err(|err| Error::corrupt(format!("{}, seq {seq}", location()), err))?;
                Ok(FeedRecord {
                    position: FeedPosition::from_parts(
                        keys::to_u64(location, tx)?,
                        keys::to_u64(location, feed_seq)?,
                    ),
                    record,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use runstore_conformance::support::records::{acme, tenant};

    use crate::{
        keys,
        testing::{drop_store, fresh_store},
    };

    /// The tenant key written by the store and by migration 0004's SQL
    /// (`tenant_key`, used by `append_one` and the backfill) agree.
    #[tokio::test]
    async fn the_tenant_key_is_the_same_in_rust_and_sql() {
        let Some(url) = runstore_conformance::support::service_url(
            "RUNSTORE_POSTGRES_URL",
            "postgres tenant key test",
        ) else {
            return;
        };
        let store = fresh_store(&url, &format!("feed_key_{}", std::process::id())).await;
        for tenant in [acme(), tenant("globex"), tenant("initech")] {
            let hash = keys::tenant_hash(&tenant);
            let (sql,): (i64,) = sqlx::query_as("SELECT tenant_key($1)")
                .bind(&hash)
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert_eq!(sql, keys::tenant_key(&hash), "{tenant}");
        }
        drop_store(store).await;
    }
}
