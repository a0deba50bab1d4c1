//! Listing the streams under the store's prefix, for `list_runs` and
//! `streams`.
//!
//! A stream is the one its key names: decoded from the key or, under a
//! hashed key segment, taken from the head there once that head is checked
//! to live at its stream's key. What a record claims never decides it.

use object_store::path::Path;
use runstore_core::{Result, RunId, StreamKey, Tenant};

use crate::{
    Inner,
    error::request,
    head::HeadName,
    keys::decode_id,
    objects::{corrupt, from_json, get},
};

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
        Ok(keys)
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
