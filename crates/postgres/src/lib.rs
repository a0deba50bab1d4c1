//! PostgreSQL backend of runstore, via sqlx, for deployments beyond one
//! machine: any number of application nodes, each with its own connection
//! pool, share one database.
//!
//! [`PostgresStore`] implements [`EventLog`](runstore_core::EventLog) and
//! [`SnapshotStore`](runstore_core::SnapshotStore). Correctness under
//! concurrency comes from the database alone (CONTRACT §3): every append
//! locks its stream's row in the `streams` table inside a `READ COMMITTED`
//! transaction, plans with [`runstore_core::raw::append::plan_append`], writes the
//! new events and the new last seq, and commits. Concurrent appends to one
//! stream through one handle share such a transaction (group commit, for
//! speed only). Compaction (CONTRACT §8-§11) rewrites one stream per
//! transaction under the same lock, and `delete_run` (CONTRACT §27)
//! replaces a stream's rows with its erasure marker under it too. `docs/backends/postgres.md` has the
//! schema and why `READ COMMITTED` is enough.
//!
//! The tenant change feed (CONTRACT §29) orders records by the writing
//! transaction's id and a sequence, and reads only below the oldest
//! transaction still in progress, so a commit that lands late is never
//! skipped; every writer of a stream takes the stream's advisory lock before
//! its transaction has an id, so a stream's events keep seq order.
//! Followers are woken by `LISTEN`/`NOTIFY`. `docs/backends/postgres.md`,
//! "Change feed", has the details and the costs.
//!
//! The tables live in their own schema (default `runstore`, see
//! [`PostgresOptions::with_schema`]), created by embedded, versioned
//! migrations when the store connects. Records are kept as the exact JSON
//! text written, so compaction markers stay byte-identical across backends
//! (CONTRACT §9).
//!
//! # Example
//!
//! ```no_run
//! use runstore_core::{EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, Tenant};
//! use runstore_postgres::{PostgresOptions, PostgresStore};
//!
//! # async fn demo() -> runstore_core::Result<()> {
//! let store = PostgresStore::connect_with(
//!     "postgres://postgres@127.0.0.1:5432/postgres",
//!     PostgresOptions::default().with_schema("runstore_demo"),
//! )
//! .await?;
//! let tenant = Tenant::new("acme", "prod", None)?;
//! let run = RunId::new("run-42")?;
//! let event = EventRecord::new(&tenant, run.clone(), EventId::new("started")?, "demo", 100);
//! let outcome = store.append(&tenant, &event).await?;
//! assert!(outcome.inserted);
//! // A retry is answered with the original seq (CONTRACT §2).
//! assert_eq!(store.append(&tenant, &event).await?.seq, outcome.seq);
//! let tail = store.read(&tenant, &run, ReadQuery::tail(10)).await?;
//! assert_eq!(tail.last().map(|e| e.seq), Some(outcome.seq));
//! # Ok(())
//! # }
//! ```
//!
//! # Support
//!
//! | | |
//! |---|---|
//! | Servers | PostgreSQL 11 or newer (tested with 15) |
//! | Isolation | `READ COMMITTED` (the server default) plus row locks |
//! | Durability | commits are durable (`synchronous_commit` as configured on the server); [`Durability::Relaxed`] sets it `off` for the store's connections |
//! | Limits | seqs and timestamps up to `i64::MAX`; records as [`PostgresOptions::limits`] allow (4 MiB by default), refused before a connection is taken (CONTRACT §21) |
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

mod error;
mod feed;
mod group;
mod keys;
mod log;
mod lone;
mod schema;
mod snapshots;
mod streams;

use std::{fmt, sync::Arc, time::Duration};

use runstore_core::{Durability, Result, validate::Limits};
use sqlx::PgPool;

/// The schema a store uses unless [`PostgresOptions::with_schema`] says otherwise.
pub const DEFAULT_SCHEMA: &str = "runstore";

/// How [`PostgresStore::connect_with`] connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// The schema holding the store's tables: 1 to 63 bytes of `[a-z0-9_]`,
    /// starting with a letter or `_`, not `pg_...`. Created if missing.
    /// Default [`DEFAULT_SCHEMA`].
    pub schema: String,
    /// [`Durability::Durable`] (default) leaves `synchronous_commit` as the
    /// server has it; [`Durability::Relaxed`] turns it off for this store's
    /// connections: a commit may then be lost if the server crashes, never
    /// half-applied (CONTRACT §16).
    pub durability: Durability,
    /// The pool's connection limit (default 10).
    pub max_connections: u32,
    /// How long an operation waits for a pooled connection before failing
    /// with a retryable `Backend` error (default 30 s).
    pub acquire_timeout: Duration,
    /// What a write may carry (CONTRACT §21-§24), checked before a
    /// connection is taken. Default [`Limits::default`].
    pub limits: Limits,
    /// For tests of the change feed only: every transaction that writes
    /// records sleeps this long after its rows have taken their feed
    /// positions and before it commits. Default `None`.
    #[doc(hidden)]
    pub test_commit_delay: Option<Duration>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: DEFAULT_SCHEMA.to_owned(),
            durability: Durability::Durable,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(30),
            limits: Limits::default(),
            test_commit_delay: None,
        }
    }
}

impl PostgresOptions {
    /// Uses `schema` for the store's tables.
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Sets the durability mode.
    #[must_use]
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the pool's connection limit (at least 1).
    #[must_use]
    pub fn with_max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections.max(1);
        self
    }

    /// Sets how long an operation waits for a pooled connection.
    #[must_use]
    pub fn with_acquire_timeout(mut self, acquire_timeout: Duration) -> Self {
        self.acquire_timeout = acquire_timeout;
        self
    }

    /// Sets the limits every write is checked against (CONTRACT §21).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// For tests of the change feed only: delays every commit that writes
    /// records by `delay`, after the records have taken their feed
    /// positions and before the commit makes them visible (a lone append
    /// then runs its one statement inside a transaction of its own).
    #[doc(hidden)]
    #[must_use]
    pub fn with_test_commit_delay(mut self, delay: Duration) -> Self {
        self.test_commit_delay = Some(delay);
        self
    }
}

/// A runstore on PostgreSQL: both traits over one connection pool.
///
/// Cheap to clone (the pool is shared); every clone and every other store
/// connected to the same schema -- in this process or on another machine --
/// sees and serialises through the same rows (CONTRACT §3, §20).
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    schema: String,
    limits: Limits,
    /// Appends waiting for their stream's group commit (speed only).
    appends: group::Queues,
    /// The change feed's signal and listener.
    feed: feed::Feed,
    /// [`PostgresOptions::test_commit_delay`].
    commit_delay: Option<Duration>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .field("limits", &self.inner.limits)
            .field("pool_size", &self.inner.pool.size())
            .finish()
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/database`) with default
    /// options: schema [`DEFAULT_SCHEMA`].
    ///
    /// # Errors
    /// As [`PostgresStore::connect_with`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects to `url`, creates `options.schema` if missing and applies
    /// pending migrations (serialised across nodes by an advisory lock).
    ///
    /// # Errors
    /// `InvalidInput` for an unusable url or schema name; `Backend` when the
    /// server cannot be reached (retryable) or a migration fails.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self> {
        let connect = schema::connect_options(url, &options)?;
        schema::migrate(&connect, &options.schema).await?;
        let pool = schema::pool(connect.clone(), &options).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                schema: options.schema,
                limits: options.limits,
                appends: group::Queues::default(),
                feed: feed::Feed::new(connect),
                commit_delay: options.test_commit_delay,
            }),
        })
    }

    /// The schema holding this store's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The connection pool, for callers that want to run their own queries
    /// next to the store's (for example to drop a test schema).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Closes the pool: waits for checked-out connections to return and
    /// closes them all, and stops the feed's listener. Later operations
    /// fail with a `Backend` error.
    pub async fn close(&self) {
        self.inner.feed.stop();
        self.inner.pool.close().await;
    }

    /// The limits every write is checked against.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    fn pool_ref(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Where a record lives, for `Corrupt` errors: the table, the stream
    /// (`tenant:run`) and the row (`seq 5`, `snapshot "s1"`).
    fn location(&self, table: &str, stream: &dyn fmt::Display, row: impl fmt::Display) -> String {
        format!(
            "postgres {}.{table} of stream {stream}, {row}",
            self.inner.schema
        )
    }
}

/// Stores for the crate's unit tests, in schemas of their own.
#[cfg(test)]
pub(crate) mod testing {
    use super::{PostgresOptions, PostgresStore};

    /// A store in `schema` on the server at `url`, its tables emptied.
    pub(crate) async fn fresh_store(url: &str, schema: &str) -> PostgresStore {
        let store =
            PostgresStore::connect_with(url, PostgresOptions::default().with_schema(schema))
                .await
                .unwrap();
        sqlx::query("TRUNCATE streams, events, compacted_ids, snapshots")
            .execute(store.pool())
            .await
            .unwrap();
        store
    }

    /// Drops the store's schema and closes its pool.
    pub(crate) async fn drop_store(store: PostgresStore) {
        let schema = store.schema().to_owned();
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(store.pool())
            .await
            .unwrap();
        store.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_a_handle() {
        runstore_conformance::support::assert_handle::<PostgresStore>();
    }

    /// Compiles only if the futures are `Send` for every lifetime, as
    /// `tokio::spawn` and boxed trait futures need (CONTRACT §20).
    #[allow(dead_code)]
    fn futures_are_send(store: PostgresStore) {
        drop(tokio::spawn(async {
            PostgresStore::connect_with("postgres://x", PostgresOptions::default()).await
        }));
        drop(tokio::spawn(async move { store.close().await }));
    }

    #[test]
    fn options_default_and_setters() {
        let limits = Limits::with_max_record_bytes(100).unwrap();
        let options = PostgresOptions::default()
            .with_schema("s1")
            .with_durability(Durability::Relaxed)
            .with_max_connections(0)
            .with_limits(limits);
        assert_eq!(options.schema, "s1");
        assert_eq!(options.limits, limits);
        assert_eq!(PostgresOptions::default().limits, Limits::default());
        assert_eq!(options.durability, Durability::Relaxed);
        assert_eq!(options.max_connections, 1);
        assert_eq!(PostgresOptions::default().schema, DEFAULT_SCHEMA);
    }
}
