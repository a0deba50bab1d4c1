//! Naming a stream: a tenant's run.

use std::fmt;

use crate::{RunId, Tenant};

/// One stream: the events (and snapshots) of one `(tenant, run_id)`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamKey {
    /// Whose stream it is.
    pub tenant: Tenant,
    /// Which run.
    pub run_id: RunId,
}

impl StreamKey {
    /// The stream of `tenant`'s `run_id`.
    pub fn new(tenant: Tenant, run_id: RunId) -> Self {
        Self { tenant, run_id }
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.tenant, self.run_id)
    }
}

impl fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamKey({self})")
    }
}
