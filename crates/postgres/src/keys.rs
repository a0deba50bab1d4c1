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

/// A statement with its parameters, as `sqlx::query` builds it.
pub(crate) type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

impl<'a> StreamCols<'a> {
    /// Binds the columns that create the stream's row, as the next seven
    /// parameters of `query`: `key_hash`, `tenant_hash`, `org_id`,
    /// `workspace_id`, `has_deployment`, `deployment_id`, `run_id`.
    pub(crate) fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q>
    where
        'a: 'q,
    {
        query
            .bind(&self.key_hash)
            .bind(&self.tenant_hash)
            .bind(self.org_id)
            .bind(self.workspace_id)
            .bind(self.has_deployment)
            .bind(self.deployment_id)
            .bind(self.run_id)
    }
}

/// Names the stream as [`StreamKey`] does (`org/workspace[/deployment]:run`),
/// for errors.
impl std::fmt::Display for StreamCols<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.org_id, self.workspace_id)?;
        if self.has_deployment {
            write!(f, "/{}", self.deployment_id)?;
        }
        write!(f, ":{}", self.run_id)
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

/// The feed index's tenant key (migration 0004, `tenant_key`): the first 8
/// bytes of the tenant hash, big-endian, as a `BIGINT`.
pub(crate) fn tenant_key(tenant_hash: &[u8]) -> i64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&tenant_hash[..8]);
    i64::from_be_bytes(bytes)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(deployment: Option<&str>) -> Tenant {
        Tenant::new("org", "ws", deployment.map(str::to_owned)).unwrap()
    }

    #[test]
    fn absent_deployment_has_its_own_key() {
        let run = RunId::new("r").unwrap();
        let absent = tenant(None);
        let present = tenant(Some("d"));
        let a = StreamCols::new(&absent, &run);
        let b = StreamCols::new(&present, &run);
        assert_ne!(a.key_hash, b.key_hash);
        assert_ne!(a.tenant_hash, b.tenant_hash);
        assert!(!a.has_deployment && a.deployment_id.is_empty());
        assert!(b.has_deployment && b.deployment_id == "d");
    }

    #[test]
    fn columns_name_the_stream_as_its_key_does() {
        let run = RunId::new("r").unwrap();
        for tenant in [tenant(None), tenant(Some("d"))] {
            let key = StreamKey::new(tenant.clone(), run.clone());
            assert_eq!(StreamCols::new(&tenant, &run).to_string(), key.to_string());
        }
    }

    #[test]
    fn parts_do_not_run_into_each_other() {
        let run_ab = RunId::new("b").unwrap();
        let run_b = RunId::new("ab").unwrap();
        let t1 = Tenant::new("o", "wa", None).unwrap();
        let t2 = Tenant::new("o", "w", None).unwrap();
        assert_ne!(
            StreamCols::new(&t1, &run_ab).key_hash,
            StreamCols::new(&t2, &run_b).key_hash
        );
    }

    #[test]
    fn numbers_convert_or_saturate() {
        assert_eq!(to_i64("seq", 5).unwrap(), 5);
        assert!(matches!(
            to_i64("seq", u64::MAX),
            Err(Error::InvalidInput { .. })
        ));
        assert_eq!(clamp_i64(u64::MAX), i64::MAX);
        assert!(to_u64(|| "x".into(), -1).is_err());
    }

    #[test]
    fn rows_read_back_as_stream_keys() {
        let key = stream_key("o".into(), "w".into(), false, String::new(), "r".into()).unwrap();
        assert_eq!(key.tenant.deployment_id(), None);
        let key = stream_key("o".into(), "w".into(), true, "d".into(), "r".into()).unwrap();
        assert_eq!(key.tenant.deployment_id(), Some("d"));
        assert!(matches!(
            stream_key(String::new(), "w".into(), false, String::new(), "r".into()),
            Err(Error::Corrupt { .. })
        ));
    }
}
