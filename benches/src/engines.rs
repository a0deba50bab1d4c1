//! One [`Engine`] per backend, each behind its feature.

use std::path::Path;
#[cfg(any(
    feature = "jsonl",
    feature = "sqlite",
    feature = "redb",
    feature = "postgres",
    feature = "s3"
))]
use std::{future::Future, sync::Arc};

#[cfg(any(
    feature = "jsonl",
    feature = "sqlite",
    feature = "redb",
    feature = "postgres",
    feature = "s3"
))]
use runstore_core::{Durability, Result, Storage};

#[cfg(any(
    feature = "jsonl",
    feature = "sqlite",
    feature = "redb",
    feature = "postgres",
    feature = "s3"
))]
use crate::engine::{Engine, Targets};

/// A name for the store at `path` that is the same in the bench process and
/// in its open child: the scratch directory's random suffix and the file
/// name, lowercase, with everything but `[a-z0-9]` as `_` (a valid
/// PostgreSQL schema name or S3 key segment).
pub fn location_name(path: &Path) -> String {
    let part = |path: Option<&Path>| {
        path.and_then(Path::file_name)
            .map(|name| name.to_string_lossy().to_lowercase())
            .unwrap_or_default()
    };
    let scratch = part(path.parent());
    let tag = scratch.rsplit('-').next().unwrap_or_default().to_owned();
    format!("bench_{tag}_{}", part(Some(path)))
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// An embedded store's open, as the trait's handle.
#[cfg(any(feature = "jsonl", feature = "sqlite", feature = "redb"))]
async fn embedded<S: Storage + 'static>(
    open: impl Future<Output = Result<S>>,
) -> Result<Arc<dyn Storage>> {
    Ok(Arc::new(open.await?))
}

/// The JSON-lines store: compared with the raw `fdatasync` rate of the same
/// disk, and its open (an index rebuild) with a plain `serde_json` parse of
/// the same files (issue 3's targets).
#[cfg(feature = "jsonl")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Jsonl;

#[cfg(feature = "jsonl")]
impl Engine for Jsonl {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn location(&self) -> &'static str {
        "store"
    }

    fn open(
        &self,
        path: &Path,
        durability: Durability,
    ) -> impl Future<Output = Result<Arc<dyn Storage>>> {
        use runstore_jsonl::{JsonlOptions, JsonlStore};
        embedded(JsonlStore::open_with(
            path,
            JsonlOptions::default().with_durability(durability),
        ))
    }

    fn parse_baseline(&self, path: &Path) -> Option<(u64, std::time::Duration)> {
        Some(crate::baseline::serde_parse_jsonl(path))
    }

    fn targets(&self) -> Targets {
        Targets {
            single_vs_fdatasync: Some(0.8),
            concurrent_vs_single: Some(10.0),
            batch_rate: Some(100_000.0),
            read_tail_ms: Some(0.5),
            open_vs_parse: Some(0.5),
            bytes_per_event: Some(150.0),
            ..Targets::default()
        }
    }
}

/// The SQLite store: compared with a bare sqlx loop on the same disk (one
/// `INSERT` per autocommit transaction, WAL, `synchronous=FULL`) and the raw
/// `fdatasync` rate (issue 4's targets).
#[cfg(feature = "sqlite")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Sqlite;

#[cfg(feature = "sqlite")]
impl Engine for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn location(&self) -> &'static str {
        "store.sqlite"
    }

    fn open(
        &self,
        path: &Path,
        durability: Durability,
    ) -> impl Future<Output = Result<Arc<dyn Storage>>> {
        use runstore_sqlite::{SqliteOptions, SqliteStore};
        embedded(SqliteStore::open_with(
            path,
            SqliteOptions::default().with_durability(durability),
        ))
    }

    fn bare(&self, bench: &crate::Bench) -> Option<Box<dyn crate::BareLoop>> {
        let bare = bench
            .block_on(crate::baseline::BareSqlite::open(
                &bench.path("bare.sqlite"),
            ))
            .expect("the bare sqlite database opens");
        Some(Box::new(bare))
    }

    fn targets(&self) -> Targets {
        Targets {
            single_vs_bare: Some(0.7),
            concurrent_vs_single: Some(5.0),
            batch_rate: Some(50_000.0),
            read_tail_ms: Some(0.5),
            ..Targets::default()
        }
    }
}

/// The redb store: compared with a bare redb loop of one insert per durable
/// commit on the same disk, and the raw `fdatasync` rate (issue 5's
/// targets).
#[cfg(feature = "redb")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Redb;

#[cfg(feature = "redb")]
impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn location(&self) -> &'static str {
        "store.redb"
    }

    fn open(
        &self,
        path: &Path,
        durability: Durability,
    ) -> impl Future<Output = Result<Arc<dyn Storage>>> {
        use runstore_redb::{RedbOptions, RedbStore};
        embedded(RedbStore::open_with(
            path,
            RedbOptions::default().with_durability(durability),
        ))
    }

    fn bare(&self, bench: &crate::Bench) -> Option<Box<dyn crate::BareLoop>> {
        let bare = crate::baseline::BareRedb::open(&bench.path("bare.redb"))
            .expect("the bare redb file opens");
        Some(Box::new(bare))
    }

    fn bare_layouts(&self, bench: &crate::Bench) -> Vec<Box<dyn crate::BareLoop>> {
        use crate::baseline::BareRedbLog;
        let tables =
            BareRedbLog::open(&bench.path("bare-log.redb")).expect("the bare redb file opens");
        let with_feed = BareRedbLog::open_with_feed(&bench.path("bare-log-feed.redb"))
            .expect("the bare redb file opens");
        let handed_off =
            crate::baseline::HandedOffRedbLog::open(&bench.path("bare-log-thread.redb"))
                .expect("the bare redb file opens");
        vec![Box::new(tables), Box::new(with_feed), Box::new(handed_off)]
    }

    fn targets(&self) -> Targets {
        // Issue 15: the single append against the bare loop writing the
        // same tables; the one-table loop stays as a reference.
        Targets {
            single_vs_layout: Some(0.8),
            concurrent_vs_single: Some(5.0),
            batch_rate: Some(50_000.0),
            read_tail_ms: Some(0.3),
            ..Targets::default()
        }
    }
}

/// The PostgreSQL store (issue 7): 64 concurrent appenders across 4 pools,
/// compared with a pgbench-style bare insert loop on the same server. Each
/// store lives in a schema of its own, dropped at the end.
#[cfg(feature = "postgres")]
#[derive(Debug, Clone)]
pub struct Postgres {
    url: String,
}

#[cfg(feature = "postgres")]
impl Postgres {
    /// The engine on the server of `RUNSTORE_POSTGRES_URL`; `None` (after a
    /// loud notice) when it is unset.
    pub fn from_env() -> Option<Self> {
        let url = std::env::var("RUNSTORE_POSTGRES_URL").unwrap_or_default();
        if url.is_empty() {
            crate::skip_loudly("postgres", "RUNSTORE_POSTGRES_URL");
            return None;
        }
        Some(Self { url })
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the schema of the store at `path`.
    ///
    /// # Panics
    /// When the schema cannot be dropped.
    pub fn drop_store(&self, bench: &crate::Bench, path: &Path) {
        bench
            .block_on(drop_schemas(&self.url, &[location_name(path)]))
            .expect("the bench schema is dropped");
    }
}

#[cfg(feature = "postgres")]
impl Engine for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn location(&self) -> &'static str {
        "store"
    }

    fn open(
        &self,
        path: &Path,
        durability: Durability,
    ) -> impl Future<Output = Result<Arc<dyn Storage>>> {
        use runstore_postgres::{PostgresOptions, PostgresStore};
        let options = PostgresOptions::default()
            .with_schema(location_name(path))
            .with_durability(durability)
            .with_max_connections(16);
        let url = self.url.clone();
        async move {
            Ok(Arc::new(PostgresStore::connect_with(&url, options).await?) as Arc<dyn Storage>)
        }
    }

    fn extra_handles(&self) -> usize {
        // 64 appenders across 4 pools, as 4 nodes would have.
        3
    }

    fn spread(&self) -> Option<crate::engine::Spread> {
        // The same 64 appenders and 4 pools, each on a stream of its own:
        // no group commit to share.
        Some(crate::engine::Spread {
            handles: 4,
            tasks: 64,
            own_streams: true,
        })
    }

    fn bare(&self, bench: &crate::Bench) -> Option<Box<dyn crate::BareLoop>> {
        let schema = location_name(&bench.path("bare"));
        let bare = bench
            .block_on(crate::baseline::BarePostgres::connect(&self.url, &schema))
            .expect("the bare insert table is created");
        Some(Box::new(bare))
    }

    fn finish(&self, bench: &crate::Bench) {
        let schemas: Vec<String> = ["bare", "write-store", "write-single-store", "read-store"]
            .into_iter()
            .map(str::to_owned)
            .chain(
                crate::figures::compacted_sizes(bench)
                    .into_iter()
                    .map(|n| format!("compacted-{n}-store")),
            )
            .map(|name| location_name(&bench.path(&name)))
            .collect();
        bench
            .block_on(drop_schemas(&self.url, &schemas))
            .expect("the bench schemas are dropped");
    }
}

/// Drops `schemas` with everything in them.
#[cfg(feature = "postgres")]
async fn drop_schemas(url: &str, schemas: &[String]) -> sqlx::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    for schema in schemas {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&pool)
            .await?;
    }
    pool.close().await;
    Ok(())
}

/// The S3 store (issue 6) against a real S3 server (SeaweedFS in CI,
/// started by `scripts/services/seaweedfs.sh`): 16 concurrent appenders,
/// compared with a bare loop of one conditional `PUT` per event, with
/// requests per event counted at the client.
#[cfg(feature = "s3")]
#[derive(Debug)]
pub struct S3 {
    endpoint: String,
    bucket: String,
    requests: Arc<std::sync::atomic::AtomicU64>,
}

#[cfg(feature = "s3")]
impl S3 {
    /// The engine on the server of `RUNSTORE_S3_ENDPOINT` and
    /// `RUNSTORE_S3_BUCKET` (with the `AWS_*` credentials); `None` (after a
    /// loud notice) when either is unset.
    pub fn from_env() -> Option<Self> {
        let endpoint = std::env::var("RUNSTORE_S3_ENDPOINT").unwrap_or_default();
        let bucket = std::env::var("RUNSTORE_S3_BUCKET").unwrap_or_default();
        if endpoint.is_empty() || bucket.is_empty() {
            crate::skip_loudly("s3", "RUNSTORE_S3_ENDPOINT (and RUNSTORE_S3_BUCKET)");
            return None;
        }
        Some(Self {
            endpoint,
            bucket,
            requests: Arc::default(),
        })
    }

    fn client(&self) -> Arc<dyn object_store::ObjectStore> {
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_endpoint(&self.endpoint)
            .with_allow_http(self.endpoint.starts_with("http://"))
            .build()
            .expect("an S3 client from the environment");
        Arc::new(store)
    }

    fn store(
        &self,
        client: Arc<dyn object_store::ObjectStore>,
        path: &Path,
    ) -> impl Future<Output = Result<Arc<dyn Storage>>> + use<> {
        let store = runstore_s3::S3Store::new(client, s3_prefix(path));
        async move { Ok(Arc::new(store?) as Arc<dyn Storage>) }
    }
}

/// The key prefix of the store at `path`.
#[cfg(feature = "s3")]
fn s3_prefix(path: &Path) -> String {
    format!("runstore-bench/{}", location_name(path))
}

#[cfg(feature = "s3")]
impl Engine for S3 {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn location(&self) -> &'static str {
        "store"
    }

    fn default_sizes(&self) -> (u64, u64) {
        (10_000, 100)
    }

    /// Durable handles count their requests; S3 has no relaxed mode, so a
    /// relaxed handle (the preload's) is the same store, uncounted.
    fn open(
        &self,
        path: &Path,
        durability: Durability,
    ) -> impl Future<Output = Result<Arc<dyn Storage>>> {
        let client: Arc<dyn object_store::ObjectStore> = match durability {
            Durability::Durable => Arc::new(crate::counting::CountingStore::new(
                self.client(),
                Arc::clone(&self.requests),
            )),
            Durability::Relaxed => self.client(),
        };
        self.store(client, path)
    }

    fn open_in_child(&self, path: &Path) -> impl Future<Output = Result<Arc<dyn Storage>>> {
        self.store(self.client(), path)
    }

    fn concurrency(&self) -> u64 {
        16
    }

    fn spread(&self) -> Option<crate::engine::Spread> {
        // 4 clients (as 4 machines would be) x 4 appenders on one stream:
        // their head PUTs race and the losers retry.
        Some(crate::engine::Spread {
            handles: 4,
            tasks: 16,
            own_streams: false,
        })
    }

    fn local_disk(&self) -> bool {
        false
    }

    fn bare(&self, bench: &crate::Bench) -> Option<Box<dyn crate::BareLoop>> {
        let prefix = s3_prefix(&bench.path("bare-puts"));
        Some(Box::new(crate::baseline::BareObjectPut::new(
            self.client(),
            &prefix,
        )))
    }

    fn requests(&self) -> Option<&std::sync::atomic::AtomicU64> {
        Some(&self.requests)
    }

    fn finish(&self, _bench: &crate::Bench) {
        eprintln!(
            "s3 bench objects stay under runstore-bench/ in bucket {}; \
             the throwaway server takes them away",
            self.bucket
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_names_are_stable_and_plain() {
        let name = location_name(Path::new("/tmp/runstore-bench-postgres-AbC123/read-store"));
        assert_eq!(name, "bench_abc123_read_store");
    }
}
