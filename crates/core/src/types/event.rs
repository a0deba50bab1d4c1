//! The event record (CONTRACT, "Words").

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    ids::{EventId, RunId},
    phase::PhaseTransitionRecord,
    tenant::{Scope, Tenant},
};

/// The current record schema version.
pub const SCHEMA_VERSION: u32 = 1;

fn schema_version_default() -> u32 {
    SCHEMA_VERSION
}

/// One event of a run, in the reference's JSON format.
///
/// Fields runstore does not interpret (`payload`, `actor`, unknown fields at
/// any level it models) round-trip unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Record format version.
    #[serde(default = "schema_version_default")]
    pub schema_version: u32,
    /// Idempotency key within the stream (CONTRACT §2).
    pub event_id: EventId,
    /// The run, naming the stream within the tenant.
    pub run_id: RunId,
    /// Position in the stream; assigned by the store on append (CONTRACT §1).
    #[serde(default)]
    pub seq: u64,
    /// Kind of event.
    pub event_type: String,
    /// When the event happened; compaction ages events by it (CONTRACT §8).
    #[serde(default)]
    pub occurred_at_ms: u64,
    /// Tenant context and other scope fields.
    pub scope: Scope,
    /// Who caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Value>,
    /// The workflow node, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_id: Option<String>,
    /// A phase transition this event records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_transition: Option<PhaseTransitionRecord>,
    /// What the run waits for, if it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_kind: Option<Value>,
    /// The event that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// Correlation across runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The event's data.
    #[serde(default)]
    pub payload: Value,
    /// Fields this version does not interpret.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl EventRecord {
    /// A new event for `tenant`'s run with a null payload and seq 0 (the
    /// store assigns the seq).
    pub fn new(
        tenant: &Tenant,
        run_id: RunId,
        event_id: EventId,
        event_type: impl Into<String>,
        occurred_at_ms: u64,
    ) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            event_id,
            run_id,
            seq: 0,
            event_type: event_type.into(),
            occurred_at_ms,
            scope: Scope::for_tenant(tenant),
            actor: None,
            phase_id: None,
            phase_transition: None,
            wait_kind: None,
            causation_id: None,
            correlation_id: None,
            payload: Value::Null,
            extra: Map::new(),
        }
    }

    /// Sets the payload.
    #[must_use]
    pub fn with_payload(mut self, payload: Value) -> Self {
        self.payload = payload;
        self
    }

    /// Whether this record is a compaction marker (CONTRACT §9).
    pub fn is_compaction_marker(&self) -> bool {
        self.event_type == crate::raw::compaction::COMPACTION_EVENT_TYPE
    }
}
