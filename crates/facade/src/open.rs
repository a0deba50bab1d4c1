//! Opening a store from its URL.

use crate::{Backend, MemoryStore, OpenError, Store, StoreUrl};

/// Opens the store `url` names (see [`StoreUrl`] for the forms).
///
/// A file backend creates its file or directory when missing; the embedded
/// backends hold an OS lock, so a second process opening the same store
/// gets `Locked` (CONTRACT §18).
///
/// # Errors
/// [`OpenError::UnknownScheme`] or [`OpenError::InvalidUrl`] for a URL that
/// does not parse; [`OpenError::FeatureDisabled`] when the backend's feature
/// is off in this build; [`OpenError::Store`] when the backend fails to open.
pub async fn open(url: &str) -> Result<Store, OpenError> {
    let parsed = StoreUrl::parse(url)?;
    open_url(&parsed).await.map_err(|err| match err {
        OpenError::FeatureDisabled {
            backend, feature, ..
        } => OpenError::FeatureDisabled {
            backend,
            feature,
            url: url.to_owned(),
        },
        other => other,
    })
}

/// Opens the store a parsed URL names; see [`open`].
///
/// # Errors
/// As [`open`], except for parsing.
pub async fn open_url(url: &StoreUrl) -> Result<Store, OpenError> {
    match url {
        StoreUrl::Memory => Ok(Store::new(Backend::Memory, MemoryStore::new())),
        #[cfg(feature = "jsonl")]
        StoreUrl::Jsonl {
            path,
            durability,
            limits,
        } => {
            let options = runstore_jsonl::JsonlOptions::default()
                .with_durability(*durability)
                .with_limits(*limits);
            let store = runstore_jsonl::JsonlStore::open_with(path, options).await?;
            Ok(Store::new(Backend::Jsonl, store))
        }
        #[cfg(feature = "sqlite")]
        StoreUrl::Sqlite {
            path,
            durability,
            limits,
        } => {
            let options = runstore_sqlite::SqliteOptions::default()
                .with_durability(*durability)
                .with_limits(*limits);
            let store = runstore_sqlite::SqliteStore::open_with(path, options).await?;
            Ok(Store::new(Backend::Sqlite, store))
        }
        #[cfg(feature = "redb")]
        StoreUrl::Redb {
            path,
            durability,
            limits,
        } => {
            let options = runstore_redb::RedbOptions::default()
                .with_durability(*durability)
                .with_limits(*limits);
            let store = runstore_redb::RedbStore::open_with(path, options).await?;
            Ok(Store::new(Backend::Redb, store))
        }
        #[cfg(feature = "s3")]
        StoreUrl::S3 {
            bucket,
            prefix,
            limits,
        } => {
            let store = runstore_s3::S3Store::from_env(bucket, prefix)?.with_limits(*limits);
            Ok(Store::new(Backend::S3, store))
        }
        #[cfg(feature = "postgres")]
        StoreUrl::Postgres {
            url,
            schema,
            durability,
            limits,
        } => {
            let mut options = runstore_postgres::PostgresOptions::default()
                .with_durability(*durability)
                .with_limits(*limits);
            if let Some(schema) = schema {
                options = options.with_schema(schema.clone());
            }
            let store = runstore_postgres::PostgresStore::connect_with(url, options).await?;
            Ok(Store::new(Backend::Postgres, store))
        }
        #[allow(unreachable_patterns, reason = "reachable only when a feature is off")]
        other => Err(disabled(other)),
    }
}

/// The error for a URL whose backend this build leaves out. Rejected here,
/// at open, so that the message names the feature to enable.
#[allow(dead_code, reason = "unused when every feature is on")]
fn disabled(url: &StoreUrl) -> OpenError {
    let backend = url.backend();
    OpenError::FeatureDisabled {
        backend,
        feature: backend.feature().unwrap_or(backend.name()),
        url: url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runstore_core::{EventId, EventLog, EventLogExt, EventRecord, RunId, Tenant};

    #[tokio::test]
    async fn memory_store_opens_and_works_through_the_handle() {
        let store = open("memory:").await.unwrap();
        assert_eq!(store.backend(), Backend::Memory);
        let tenant = Tenant::local();
        let run = RunId::new("r").unwrap();
        let event = EventRecord::new(&tenant, run.clone(), EventId::new("e").unwrap(), "t", 1);
        let clone = store.clone();
        assert_eq!(clone.append(&tenant, &event).await.unwrap().seq, 1);
        assert_eq!(store.next_seq(&tenant, &run).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn disabled_backends_name_their_feature() {
        for (url, backend) in [
            ("jsonl:/nonexistent/x", Backend::Jsonl),
            ("sqlite:/nonexistent/x.db", Backend::Sqlite),
            ("redb:/nonexistent/x.redb", Backend::Redb),
            ("s3://bucket/prefix", Backend::S3),
            ("postgres://localhost/db", Backend::Postgres),
        ] {
            if backend.is_enabled() {
                continue;
            }
            let err = open(url).await.unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(err, OpenError::FeatureDisabled { feature, .. } if feature == backend.name()),
                "{message}"
            );
            assert!(
                message.contains(&format!("`{}` feature", backend.name())),
                "{message}"
            );
            let core: runstore_core::Error = open(url).await.unwrap_err().into();
            assert!(matches!(core, runstore_core::Error::InvalidInput { .. }));
        }
    }

    // CONTRACT §21: the URL's max_record_bytes reaches every backend.
    #[tokio::test]
    async fn the_url_sets_the_record_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let tenant = Tenant::local();
        let run = RunId::new("r").unwrap();
        for (scheme, name) in [
            ("jsonl", "limited"),
            ("sqlite", "limited.sqlite"),
            ("redb", "limited.redb"),
        ] {
            let backend: Backend = scheme.parse().unwrap();
            if !backend.is_enabled() {
                continue;
            }
            let path = dir.path().join(name);
            let store = open(&format!("{scheme}:{}?max_record_bytes=400", path.display()))
                .await
                .unwrap();
            let event = |id: &str, bytes: usize| {
                EventRecord::new(&tenant, run.clone(), EventId::new(id).unwrap(), "t", 1)
                    .with_payload(serde_json::json!("x".repeat(bytes)))
            };
            let stored = store.append(&tenant, &event("small", 100)).await.unwrap();
            assert_eq!(stored.seq, 1, "{scheme}");
            let err = store
                .append(&tenant, &event("large", 400))
                .await
                .unwrap_err();
            assert!(
                err.to_string()
                    .contains("larger than the limit of 400 bytes"),
                "{scheme}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn embedded_backends_open_and_reopen_by_url() {
        let dir = tempfile::tempdir().unwrap();
        let tenant = Tenant::local();
        let run = RunId::new("r").unwrap();
        for (scheme, name) in [
            ("jsonl", "store"),
            ("sqlite", "store.sqlite"),
            ("redb", "store.redb"),
        ] {
            let backend: Backend = scheme.parse().unwrap();
            if !backend.is_enabled() {
                continue;
            }
            let path = dir.path().join(name);
            for (url, id) in [
                (format!("{scheme}:{}", path.display()), "durable"),
                (
                    format!("{scheme}://{}?durability=relaxed", path.display()),
                    "relaxed",
                ),
            ] {
                let store = open(&url).await.unwrap();
                assert_eq!(store.backend(), backend);
                let event =
                    EventRecord::new(&tenant, run.clone(), EventId::new(id).unwrap(), "t", 1);
                store.append(&tenant, &event).await.unwrap();
            }
            let store = open(&format!("{scheme}:{}", path.display())).await.unwrap();
            assert_eq!(store.next_seq(&tenant, &run).await.unwrap(), 3, "{scheme}");
        }
    }

    #[tokio::test]
    async fn unknown_scheme_is_refused() {
        let err = open("mongodb://localhost/x").await.unwrap_err();
        assert!(matches!(err, OpenError::UnknownScheme { .. }), "{err}");
        assert!(err.to_string().contains("\"mongodb\""));
    }
}
