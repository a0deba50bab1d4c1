//! The snapshot record, with legacy hydration (CONTRACT §15).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::{
    event::SCHEMA_VERSION,
    ids::{RunId, SnapshotId},
    phase::{PhaseState, PhaseTransitionRecord, RunStatus, WorkflowPhase},
    tenant::{Scope, Tenant},
};

/// A snapshot of a run to restore from, in the reference's JSON format.
///
/// Deserializing hydrates legacy records: one without `phase` gets phase,
/// history and next phases derived from `status`; one without only
/// `allowed_next_phases` gets them derived from `phase`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotRecord {
    /// Record format version.
    pub schema_version: u32,
    /// The snapshot's id within the stream.
    pub snapshot_id: SnapshotId,
    /// The run.
    pub run_id: RunId,
    /// The last event seq the snapshot includes; compaction keeps events at
    /// or above the newest snapshot's seq (CONTRACT §8).
    pub seq: u64,
    /// When the snapshot was taken; prune ages snapshots by it (CONTRACT §14).
    pub created_at_ms: u64,
    /// Tenant context and other scope fields.
    pub scope: Scope,
    /// The run's status.
    pub status: RunStatus,
    /// The run's phase.
    pub phase: WorkflowPhase,
    /// How the run got to its phase.
    pub phase_history: Vec<PhaseTransitionRecord>,
    /// Where it may go next.
    pub allowed_next_phases: Vec<WorkflowPhase>,
    /// The workflow node, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase_id: Option<String>,
    /// What kind of record the snapshot was made from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_record_kind: Option<String>,
    /// The runtime's checkpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Value>,
    /// Digest of the checkpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_digest: Option<String>,
    /// Version of the workflow definition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_definition_version: Option<Value>,
    /// Hash of the workflow definition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_definition_snapshot_hash: Option<String>,
    /// Free-form metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Fields this version does not interpret.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SnapshotRecord {
    /// A snapshot of `tenant`'s run at `seq` in `status`, with its phase state
    /// derived from the status.
    pub fn new(
        tenant: &Tenant,
        run_id: RunId,
        snapshot_id: SnapshotId,
        seq: u64,
        created_at_ms: u64,
        status: RunStatus,
    ) -> Self {
        let state = PhaseState::from_status(&run_id, status, created_at_ms, None);
        Self {
            schema_version: SCHEMA_VERSION,
            snapshot_id,
            run_id,
            seq,
            created_at_ms,
            scope: Scope::for_tenant(tenant),
            status,
            phase: state.phase,
            phase_history: state.phase_history,
            allowed_next_phases: state.allowed_next_phases,
            phase_id: None,
            source_record_kind: None,
            checkpoint: None,
            payload_digest: None,
            workflow_definition_version: None,
            workflow_definition_snapshot_hash: None,
            metadata: None,
            extra: Map::new(),
        }
    }

    /// Sets the checkpoint.
    #[must_use]
    pub fn with_checkpoint(mut self, checkpoint: Value) -> Self {
        self.checkpoint = Some(checkpoint);
        self
    }
}

/// The stored shape, with the phase fields optional.
#[derive(Deserialize)]
struct StoredSnapshot {
    #[serde(default = "schema_version_default")]
    schema_version: u32,
    snapshot_id: SnapshotId,
    run_id: RunId,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    created_at_ms: u64,
    scope: Scope,
    status: RunStatus,
    #[serde(default)]
    phase: Option<WorkflowPhase>,
    #[serde(default)]
    phase_history: Option<Vec<PhaseTransitionRecord>>,
    #[serde(default)]
    allowed_next_phases: Option<Vec<WorkflowPhase>>,
    #[serde(default)]
    phase_id: Option<String>,
    #[serde(default)]
    source_record_kind: Option<String>,
    #[serde(default)]
    checkpoint: Option<Value>,
    #[serde(default)]
    payload_digest: Option<String>,
    #[serde(default)]
    workflow_definition_version: Option<Value>,
    #[serde(default)]
    workflow_definition_snapshot_hash: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

fn schema_version_default() -> u32 {
    SCHEMA_VERSION
}

impl<'de> Deserialize<'de> for SnapshotRecord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = StoredSnapshot::deserialize(deserializer)?;
        let (phase, phase_history, allowed_next_phases) = match stored.phase {
            None => {
                // CONTRACT §15: a legacy record; derive what is missing from status.
                let derived = PhaseState::from_status(
                    &stored.run_id,
                    stored.status,
                    stored.created_at_ms,
                    stored.phase_id.as_deref(),
                );
                (
                    derived.phase,
                    stored.phase_history.unwrap_or(derived.phase_history),
                    stored
                        .allowed_next_phases
                        .unwrap_or(derived.allowed_next_phases),
                )
            }
            Some(phase) => (
                phase,
                stored.phase_history.unwrap_or_default(),
                stored
                    .allowed_next_phases
                    .unwrap_or_else(|| phase.allowed_next_phases().to_vec()),
            ),
        };
        Ok(Self {
            schema_version: stored.schema_version,
            snapshot_id: stored.snapshot_id,
            run_id: stored.run_id,
            seq: stored.seq,
            created_at_ms: stored.created_at_ms,
            scope: stored.scope,
            status: stored.status,
            phase,
            phase_history,
            allowed_next_phases,
            phase_id: stored.phase_id,
            source_record_kind: stored.source_record_kind,
            checkpoint: stored.checkpoint,
            payload_digest: stored.payload_digest,
            workflow_definition_version: stored.workflow_definition_version,
            workflow_definition_snapshot_hash: stored.workflow_definition_snapshot_hash,
            metadata: stored.metadata,
            extra: stored.extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn legacy_snapshot_is_hydrated_from_status() {
        // CONTRACT §15: a v1 row has only its status (the suite's
        // `legacy_snapshots_are_hydrated` stores the reference's own row);
        // here one waiting for approval, without a phase id.
        let legacy = json!({
            "schema_version": 1,
            "snapshot_id": "s-7", "run_id": "r-7", "seq": 7, "created_at_ms": 700,
            "scope": {"tenant_context": {"org_id": "o", "workspace_id": "w"}},
            "status": "awaiting_approval"
        });
        let loaded: SnapshotRecord = serde_json::from_value(legacy).unwrap();
        let phase = WorkflowPhase::AwaitingApproval;
        assert_eq!(loaded.phase, phase);
        assert_eq!(loaded.allowed_next_phases, phase.allowed_next_phases());
        assert_eq!(loaded.phase_history.len(), 1);
        let observed = &loaded.phase_history[0];
        assert_eq!(
            observed.reason.as_deref(),
            Some("observed_status:awaiting_approval")
        );
        assert_eq!(observed.phase_id, None);
        assert_eq!(observed.event_id, "r-7:phase:awaiting_approval:700");
        assert_eq!(observed.from_phase, None);
    }

    #[test]
    fn missing_allowed_next_phases_alone_follows_phase() {
        let record = json!({
            "snapshot_id": "s", "run_id": "r", "seq": 1, "created_at_ms": 1,
            "scope": {"tenant_context": {"org_id": "o", "workspace_id": "w"}},
            "status": "running", "phase": "sleeping", "phase_history": []
        });
        let loaded: SnapshotRecord = serde_json::from_value(record).unwrap();
        assert_eq!(loaded.phase, WorkflowPhase::Sleeping);
        assert!(loaded.phase_history.is_empty());
        assert_eq!(
            loaded.allowed_next_phases,
            WorkflowPhase::Sleeping.allowed_next_phases()
        );
    }
}
