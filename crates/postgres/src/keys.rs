//! How a stream is named in the `streams` table: its columns and hashes.

use runstore_core::{Error, Result, RunId, StreamKey, Tenant};
use sha2::{Digest, Sha256};

/// The columns that name one stream, ready to bind.
#[derive(Debug, Clone)]
pub(crate) struct StreamCols<'a> {
    pub(crate) key_hash: Vec<u8>,
    pub(crate) tenant_hash: Vec<u8>,
    pub(crate) org_id: &'a str,
    pub(crate) workspace_id: &'a str,
    pub(crate) has_deployment: bool,
    /// `""` when the tenant names no deployment (`has_deployment` says which).
    pub(crate) deployment_id: &'a str,
    pub(crate) run_id: &'a str,
}

impl<'a> StreamCols<'a> {
    pub(crate) fn new(tenant: &'a Tenant, run_id: &'a RunId) -> Self {
        let tenant_hash = tenant_hash(tenant);
        let mut hasher = Sha256::new();
        hasher.update(&tenant_hash);
        hasher.update(run_id.as_str().as_bytes());
        hasher.update([0]);
        Self {
            key_hash: hasher.finalize().to_vec(),
            tenant_hash,
            org_id: tenant.org_id(),
            workspace_id: tenant.workspace_id(),
            has_deployment: tenant.deployment_id().is_some(),
            deployment_id: tenant.deployment_id().unwrap_or(""),
            run_id: run_id.as_str(),
        }
    }
}

/// SHA-256 over org, workspace and deployment, each NUL-terminated; the
/// deployment is preceded by a presence byte, so an absent deployment
/// differs from every present one. Ids hold no NUL, so this is injective.
pub(crate) fn tenant_hash(tenant: &Tenant) -> Vec<u8> {
    let mut hasher = Sha256::new();
    for part in [tenant.org_id(), tenant.workspace_id()] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    match tenant.deployment_id() {
        Some(deployment) => {
            hasher.update([1]);
            hasher.update(deployment.as_bytes());
        }
        None => hasher.update([0]),
    }
    hasher.update([0]);
    hasher.finalize().to_vec()
}

/// A `streams` row read back as a [`StreamKey`].
pub(crate) fn stream_key(
    org_id: String,
    workspace_id: String,
    has_deployment: bool,
    deployment_id: String,
    run_id: String,
) -> Result<StreamKey> {
    let location = || format!("postgres streams row {org_id}/{workspace_id}:{run_id}");
    let tenant = Tenant::new(
        org_id.clone(),
        workspace_id.clone(),
        has_deployment.then(|| deployment_id.clone()),
    )
    .map_err(|err| Error::corrupt(location(), err))?;
    let run = RunId::new(run_id.clone()).map_err(|err| Error::corrupt(location(), err))?;
    Ok(StreamKey::new(tenant, run))
}

/// A `u64` from the API as a `BIGINT`; values beyond `i64::MAX` are refused.
pub(crate) fn to_i64(what: &str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| {
        Error::invalid(format!(
            "{what} {value} exceeds the largest value postgres stores ({})",
            i64::MAX
        ))
    })
}

/// A timestamp as a `BIGINT` sort and filter key: saturates at `i64::MAX`.
/// The record keeps the exact value; only ordering among timestamps beyond
/// `i64::MAX` ms (some 292 million years) is lost.
pub(crate) fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A `BIGINT` read back from a column that only holds non-negative values.
pub(crate) fn to_u64(location: impl FnOnce() -> String, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::corrupt(location(), format!("negative value {value}")))
}
