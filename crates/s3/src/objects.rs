//! The few request shapes the store uses, with their outcomes typed.
//!
//! Each takes `what`, the object in the store's own terms ("the head of
//! stream acme/prod:run-42"), for its errors. A request error states `what`
//! and then `object_store`'s error, which names the key or URL itself; a
//! `Corrupt` error names the key once, followed by `what`.

use bytes::Bytes;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion, path::Path};
use runstore_core::{Error, Result};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::request;

/// The result of a conditional put.
pub(crate) enum Put {
    /// Written; the new version.
    Done(UpdateVersion),
    /// The condition failed: the object exists, or changed since it was read.
    Lost,
}

/// Serializes `value` (`what`) to JSON bytes.
pub(crate) fn to_json(value: &impl Serialize, what: &str) -> Result<Bytes> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|err| Error::invalid(format!("cannot encode {what}: {err}")))
}

/// Parses JSON read from `path`, which holds `what`.
pub(crate) fn from_json<T: DeserializeOwned>(bytes: &[u8], path: &Path, what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|err| corrupt(path, what, err))
}

/// A `Corrupt` error for `path`, which holds `what`.
pub(crate) fn corrupt(path: &Path, what: &str, reason: impl std::fmt::Display) -> Error {
    Error::corrupt(format!("{path} ({what})"), reason)
}

/// GETs `path`: its bytes and version, or `None` when absent.
pub(crate) async fn get(
    store: &dyn ObjectStore,
    path: &Path,
    what: &str,
) -> Result<Option<(Bytes, UpdateVersion)>> {
    let result = match store.get(path).await {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(err) => return Err(request(format!("get {what}"), err)),
    };
    let version = UpdateVersion {
        e_tag: result.meta.e_tag.clone(),
        version: result.meta.version.clone(),
    };
    let bytes = result
        .bytes()
        .await
        .map_err(|err| request(format!("read {what}"), err))?;
    Ok(Some((bytes, version)))
}

/// GETs the bytes `range` of `path`, or `None` when it is absent. A
/// stored object shorter than the range is `Corrupt` (a failed ranged GET
/// costs a HEAD request to tell).
pub(crate) async fn get_range(
    store: &dyn ObjectStore,
    path: &Path,
    what: &str,
    range: std::ops::Range<u64>,
) -> Result<Option<Bytes>> {
    if range.is_empty() {
        return Ok(Some(Bytes::new()));
    }
    let wanted = range.end - range.start;
    match store.get_range(path, range.clone()).await {
        Ok(bytes) if bytes.len() as u64 == wanted => Ok(Some(bytes)),
        Ok(bytes) => Err(corrupt(
            path,
            what,
            format!(
                "bytes {}..{} were asked for and {} came back",
                range.start,
                range.end,
                bytes.len()
            ),
        )),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(err) => {
            // A range past the object's end is refused by the store (S3
            // answers 416): it is the data that is wrong, not the request.
            match store.head(path).await {
                Ok(meta) if meta.size < range.end => Err(corrupt(
                    path,
                    what,
                    format!(
                        "bytes {}..{} were asked for and the object holds {}",
                        range.start, range.end, meta.size
                    ),
                )),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                _ => Err(request(format!("get part of {what}"), err)),
            }
        }
    }
}

/// GETs and parses `path`, or `None` when absent.
pub(crate) async fn get_json<T: DeserializeOwned>(
    store: &dyn ObjectStore,
    path: &Path,
    what: &str,
) -> Result<Option<(T, UpdateVersion)>> {
    match get(store, path, what).await? {
        Some((bytes, version)) => Ok(Some((from_json(&bytes, path, what)?, version))),
        None => Ok(None),
    }
}

/// PUTs `bytes` at `path`: create-if-absent when `version` is `None`,
/// update-if-match otherwise.
pub(crate) async fn put_conditional(
    store: &dyn ObjectStore,
    path: &Path,
    what: &str,
    bytes: Bytes,
    version: Option<UpdateVersion>,
) -> Result<Put> {
    let mode = match version {
        Some(version) => PutMode::Update(version),
        None => PutMode::Create,
    };
    match store
        .put_opts(path, PutPayload::from(bytes), PutOptions::from(mode))
        .await
    {
        Ok(result) => Ok(Put::Done(UpdateVersion::from(result))),
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Ok(Put::Lost),
        Err(err) => Err(request(format!("put {what} conditionally"), err)),
    }
}

/// PUTs `bytes` at `path`, replacing what is there.
pub(crate) async fn put(
    store: &dyn ObjectStore,
    path: &Path,
    what: &str,
    bytes: Bytes,
) -> Result<()> {
    store
        .put(path, PutPayload::from(bytes))
        .await
        .map(drop)
        .map_err(|err| request(format!("put {what}"), err))
}

/// Deletes `path`; an absent object is fine.
pub(crate) async fn delete(store: &dyn ObjectStore, path: &Path, what: &str) -> Result<()> {
    match store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(err) => Err(request(format!("delete {what}"), err)),
    }
}
