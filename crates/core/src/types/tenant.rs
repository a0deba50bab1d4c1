//! Tenants: who a stream belongs to (CONTRACT, "Words").

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ids::check_id;
use crate::{Error, Result};

/// `source` of a tenant context named explicitly by the caller.
pub const SOURCE_EXPLICIT: &str = "explicit";
/// `source` of the implicit local tenant.
pub const SOURCE_LOCAL_IMPLICIT: &str = "local_implicit";

/// The partition key of all data: org, workspace and optional deployment.
///
/// Two tenants are the same when all three parts are equal. Each part obeys
/// the id rule (1 to 1024 bytes, no NUL); an absent deployment differs from
/// every present one.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tenant {
    org_id: String,
    workspace_id: String,
    deployment_id: Option<String>,
}

impl Tenant {
    /// A validated tenant.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when a part is empty, too long or holds NUL.
    pub fn new(
        org_id: impl Into<String>,
        workspace_id: impl Into<String>,
        deployment_id: Option<String>,
    ) -> Result<Self> {
        let org_id = org_id.into();
        let workspace_id = workspace_id.into();
        check_id("org_id", &org_id)?;
        check_id("workspace_id", &workspace_id)?;
        if let Some(deployment) = &deployment_id {
            check_id("deployment_id", deployment)?;
        }
        Ok(Self {
            org_id,
            workspace_id,
            deployment_id,
        })
    }

    /// The implicit local tenant: org `local`, workspace `local`.
    pub fn local() -> Self {
        Self {
            org_id: "local".to_owned(),
            workspace_id: "local".to_owned(),
            deployment_id: None,
        }
    }

    /// Parses `ORG/WORKSPACE` or `ORG/WORKSPACE/DEPLOYMENT`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for any other shape or an invalid part.
    pub fn parse(value: &str) -> Result<Self> {
        let parts: Vec<&str> = value.split('/').collect();
        match parts.as_slice() {
            [org, workspace] => Self::new(*org, *workspace, None),
            [org, workspace, deployment] => {
                Self::new(*org, *workspace, Some((*deployment).to_owned()))
            }
            _ => Err(Error::invalid(format!(
                "tenant {value:?} is not ORG/WORKSPACE or ORG/WORKSPACE/DEPLOYMENT"
            ))),
        }
    }

    /// The tenant a stored record's context names.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the context's ids break the id rule.
    pub fn from_context(context: &TenantContext) -> Result<Self> {
        Self::new(
            context.org_id.clone(),
            context.workspace_id.clone(),
            context.deployment_id.clone(),
        )
    }

    /// The organisation.
    pub fn org_id(&self) -> &str {
        &self.org_id
    }

    /// The workspace within the organisation.
    pub fn workspace_id(&self) -> &str {
        &self.workspace_id
    }

    /// The deployment, if the tenant names one.
    pub fn deployment_id(&self) -> Option<&str> {
        self.deployment_id.as_deref()
    }

    /// Whether `context` names this tenant.
    pub fn matches(&self, context: &TenantContext) -> bool {
        self.org_id == context.org_id
            && self.workspace_id == context.workspace_id
            && self.deployment_id == context.deployment_id
    }

    /// A record context for this tenant with `source` `explicit` (or
    /// `local_implicit` for [`Tenant::local`]) and no actor.
    pub fn context(&self) -> TenantContext {
        let source = if *self == Self::local() {
            SOURCE_LOCAL_IMPLICIT
        } else {
            SOURCE_EXPLICIT
        };
        TenantContext {
            org_id: self.org_id.clone(),
            workspace_id: self.workspace_id.clone(),
            deployment_id: self.deployment_id.clone(),
            actor_id: None,
            source: source.to_owned(),
            extra: Map::new(),
        }
    }

    /// Writes this tenant's ids into `context`, keeping its actor, source and
    /// any other fields.
    pub fn stamp(&self, context: &mut TenantContext) {
        if !self.matches(context) {
            context.org_id.clone_from(&self.org_id);
            context.workspace_id.clone_from(&self.workspace_id);
            context.deployment_id.clone_from(&self.deployment_id);
        }
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.org_id, self.workspace_id)?;
        if let Some(deployment) = &self.deployment_id {
            write!(f, "/{deployment}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tenant({self})")
    }
}

/// The tenant context a record carries in `scope.tenant_context`.
///
/// `actor_id` and `source` travel with the record but do not partition data.
/// Unknown fields are kept and written back unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantContext {
    /// The organisation.
    pub org_id: String,
    /// The workspace.
    pub workspace_id: String,
    /// The deployment, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// Who acted, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
    /// `explicit` or `local_implicit`.
    #[serde(default = "default_source")]
    pub source: String,
    /// Fields this version does not interpret.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_source() -> String {
    SOURCE_EXPLICIT.to_owned()
}

/// A record's scope: its tenant context plus fields runstore does not
/// interpret, which round-trip unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scope {
    /// The tenant the record belongs to.
    pub tenant_context: TenantContext,
    /// Fields this version does not interpret.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Scope {
    /// A scope holding only `tenant`'s context.
    pub fn for_tenant(tenant: &Tenant) -> Self {
        Self {
            tenant_context: tenant.context(),
            extra: Map::new(),
        }
    }

    /// The tenant this scope names.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the context's ids break the id rule.
    pub fn tenant(&self) -> Result<Tenant> {
        Tenant::from_context(&self.tenant_context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_context_and_debug_name_the_tenant() {
        let tenant = Tenant::new("acme", "prod", Some("eu".into())).unwrap();
        assert_eq!(tenant.org_id(), "acme");
        assert_eq!(tenant.workspace_id(), "prod");
        assert_eq!(format!("{tenant:?}"), "Tenant(acme/prod/eu)");
        let context = tenant.context();
        assert_eq!(
            (context.org_id.as_str(), context.workspace_id.as_str()),
            ("acme", "prod")
        );
        assert_eq!(context.source, SOURCE_EXPLICIT);
        assert_eq!(Tenant::local().context().source, SOURCE_LOCAL_IMPLICIT);
        // A context stored without a source reads as explicit.
        let read: TenantContext =
            serde_json::from_str(r#"{"org_id":"o","workspace_id":"w"}"#).unwrap();
        assert_eq!(read.source, "explicit");
    }

    #[test]
    fn parse_accepts_two_or_three_parts() {
        assert_eq!(
            Tenant::parse("a/b").unwrap(),
            Tenant::new("a", "b", None).unwrap()
        );
        assert_eq!(Tenant::parse("a/b/c").unwrap().deployment_id(), Some("c"));
        for bad in ["a", "a/", "/b", "a/b/", "a/b/c/d", ""] {
            assert!(Tenant::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn absent_deployment_is_its_own_tenant() {
        let a = Tenant::new("o", "w", None).unwrap();
        let b = Tenant::new("o", "w", Some("d".into())).unwrap();
        assert_ne!(a, b);
        assert!(Tenant::new("o", "w", Some(String::new())).is_err());
    }

    #[test]
    fn unknown_context_fields_round_trip() {
        let json = r#"{"org_id":"o","workspace_id":"w","source":"explicit","region":"eu"}"#;
        let context: TenantContext = serde_json::from_str(json).unwrap();
        assert_eq!(context.extra["region"], "eu");
        assert_eq!(serde_json::to_string(&context).unwrap(), json);
    }
}
