//! Listing the streams under the store's prefix, for `list_runs` and
//! `streams`.
//!
//! A stream is the one its key names: decoded from the key or, under a
//! hashed key segment, taken from the head there once that head is checked
//! to live at its stream's key. What a record claims never decides it.

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt, stream};
use object_store::path::Path;
use runstore_core::{Result, RunId, StreamKey, Tenant};

use crate::{
    Inner,
    error::request,
    head::HeadName,
    keys::{ERASED_HINT, decode_id},
    objects::{corrupt, from_json, get},
};

/// Parallel head reads of [`Inner::live_runs_under`].
const PARALLEL: usize = 16;

impl Inner {
    /// The streams under a tenant's directory `dir` (`P/ev/<tenant>/`).
    /// A stream is the one its key names: decoded from the key, or, under a
    /// hashed segment, the one its head names once the head is checked to
    /// live at that stream's key. What a record claims never decides it.
    ///
    /// # Errors
    /// `Corrupt` for a head under a hashed key that names no stream, or a
    /// stream whose key is elsewhere: the list of streams cannot be read.
    pub(super) async fn runs_under(
        &self,
        tenant: Option<&Tenant>,
        dir: &Path,
    ) -> Result<Vec<StreamKey>> {
        Ok(self.listed_under(tenant, dir).await?.0)
    }

    /// [`Inner::runs_under`] less the deleted runs (CONTRACT §27), for
    /// `list_runs`. The one listing of `dir` also shows the erased hints
    /// ([`Keys::erased_hint`](crate::keys::Keys::erased_hint)); only a run
    /// with a hint costs a GET of its head, which says whether it is still
    /// a deleted run. A run never deleted costs nothing more.
    pub(super) async fn live_runs_under(
        &self,
        tenant: &Tenant,
        dir: &Path,
    ) -> Result<Vec<StreamKey>> {
        let (keys, hinted) = self.listed_under(Some(tenant), dir).await?;
        stream::iter(keys)
            .map(|key| {
                let hinted = hinted.contains(&self.keys.stream_dir(&key));
                async move {
                    if hinted && self.load(&key).await?.head.is_erased() {
                        return Ok(None);
                    }
                    Ok(Some(key))
                }
            })
            .buffered(PARALLEL)
            .try_filter_map(|key| async move { Ok(key) })
            .try_collect()
            .await
    }

    /// The streams under `dir` (see [`Inner::runs_under`]), and the stream
    /// directories that have an erased hint beside them.
    async fn listed_under(
        &self,
        tenant: Option<&Tenant>,
        dir: &Path,
    ) -> Result<(Vec<StreamKey>, HashSet<Path>)> {
        let listing = self
            .store()
            .list_with_delimiter(Some(dir))
            .await
            .map_err(|err| {
                let what = match tenant {
                    Some(tenant) => format!("list the streams of tenant {tenant}"),
                    None => format!("list the streams under {dir}"),
                };
                request(what, err)
            })?;
        let hinted: HashSet<Path> = listing
            .objects
            .iter()
            .filter_map(|meta| {
                let name = meta.location.filename()?.strip_suffix(ERASED_HINT)?;
                Some(dir.child(name))
            })
            .collect();
        let mut keys = Vec::new();
        for prefix in listing.common_prefixes {
            let Some(run_segment) = prefix.parts().last() else {
                continue;
            };
            let decoded = decode_id(run_segment.as_ref()).and_then(|run| RunId::new(run).ok());
            match (tenant, decoded) {
                (Some(tenant), Some(run_id)) => keys.push(StreamKey::new(tenant.clone(), run_id)),
                _ => {
                    if let Some(key) = self.stream_at(&prefix).await? {
                        keys.push(key);
                    }
                }
            }
        }
        Ok((keys, hinted))
    }

    /// The stream whose directory `dir` is under a hashed key segment, from
    /// the head there (`None` without a head).
    async fn stream_at(&self, dir: &Path) -> Result<Option<StreamKey>> {
        let path = dir.child("head");
        let what = "the head of a stream under a hashed key";
        let Some((bytes, _)) = get(self.store(), &path, what).await? else {
            return Ok(None);
        };
        let named: HeadName = from_json(&bytes, &path, what)?;
        let key = named.stream().map_err(|err| corrupt(&path, what, err))?;
        if self.keys.stream_dir(&key) != *dir {
            return Err(corrupt(
                &path,
                what,
                format!("the head names stream {key}, whose key is elsewhere"),
            ));
        }
        Ok(Some(key))
    }
}
