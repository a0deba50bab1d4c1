//! Run statuses, workflow phases and their transition table.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ids::RunId;

/// The status a runtime reports for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum RunStatus {
    Queued,
    Running,
    Sleeping,
    AwaitingWebhook,
    AwaitingApproval,
    Pausing,
    Paused,
    Retrying,
    Blocked,
    Completed,
    Failed,
    Cancelled,
    DeadLettered,
    DryRun,
}

impl RunStatus {
    /// The phase a run with this status is in.
    pub fn phase(self) -> WorkflowPhase {
        use WorkflowPhase as P;
        match self {
            Self::Queued => P::Queued,
            Self::Running => P::RunningPhase,
            Self::Sleeping => P::Sleeping,
            Self::AwaitingWebhook => P::WaitingWebhook,
            Self::AwaitingApproval => P::AwaitingApproval,
            Self::Pausing | Self::Paused | Self::Blocked => P::PausedAttentionRequired,
            Self::Retrying => P::Retrying,
            Self::Completed | Self::DryRun => P::Completed,
            Self::Failed | Self::DeadLettered => P::Failed,
            Self::Cancelled => P::Cancelled,
        }
    }

    /// The status as written in records (`awaiting_webhook`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Sleeping => "sleeping",
            Self::AwaitingWebhook => "awaiting_webhook",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Pausing => "pausing",
            Self::Paused => "paused",
            Self::Retrying => "retrying",
            Self::Blocked => "blocked",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::DeadLettered => "dead_lettered",
            Self::DryRun => "dry_run",
        }
    }
}

/// A phase of the workflow state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum WorkflowPhase {
    Created,
    Queued,
    RunningPhase,
    Sleeping,
    WaitingWebhook,
    AwaitingApproval,
    Retrying,
    PausedAttentionRequired,
    Failed,
    Completed,
    Cancelled,
}

impl WorkflowPhase {
    /// The phases a run may move to from this one; empty for terminal phases.
    pub fn allowed_next_phases(self) -> &'static [WorkflowPhase] {
        use WorkflowPhase as P;
        match self {
            P::Created => &[P::Queued, P::Cancelled],
            P::Queued => &[P::RunningPhase, P::PausedAttentionRequired, P::Cancelled],
            P::RunningPhase => &[
                P::Sleeping,
                P::WaitingWebhook,
                P::AwaitingApproval,
                P::Retrying,
                P::PausedAttentionRequired,
                P::Completed,
                P::Failed,
                P::Cancelled,
            ],
            P::Sleeping => &[P::RunningPhase, P::PausedAttentionRequired, P::Cancelled],
            P::WaitingWebhook => &[
                P::RunningPhase,
                P::Retrying,
                P::PausedAttentionRequired,
                P::Failed,
                P::Cancelled,
            ],
            P::AwaitingApproval => &[
                P::RunningPhase,
                P::PausedAttentionRequired,
                P::Failed,
                P::Cancelled,
            ],
            P::Retrying => &[
                P::RunningPhase,
                P::PausedAttentionRequired,
                P::Failed,
                P::Cancelled,
            ],
            P::PausedAttentionRequired => &[P::Queued, P::RunningPhase, P::Failed, P::Cancelled],
            P::Failed | P::Completed | P::Cancelled => &[],
        }
    }

    /// Whether no phase follows this one.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Failed | Self::Completed | Self::Cancelled)
    }

    /// Whether a run may move from this phase to `next`.
    pub fn can_transition_to(self, next: WorkflowPhase) -> bool {
        self.allowed_next_phases().contains(&next)
    }

    /// The phase as written in records (`running_phase`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Queued => "queued",
            Self::RunningPhase => "running_phase",
            Self::Sleeping => "sleeping",
            Self::WaitingWebhook => "waiting_webhook",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Retrying => "retrying",
            Self::PausedAttentionRequired => "paused_attention_required",
            Self::Failed => "failed",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// `event_type` of a phase transition derived from a status.
pub const PHASE_OBSERVED_EVENT_TYPE: &str = "stateful_runtime.phase.observed";

/// One entry of a snapshot's phase history, or an event's `phase_transition`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTransitionRecord {
    /// Id of the transition.
    pub event_id: String,
    /// Kind of transition.
    pub event_type: String,
    /// The phase left, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_phase: Option<WorkflowPhase>,
    /// The phase entered.
    pub to_phase: WorkflowPhase,
    /// When it happened.
    #[serde(default)]
    pub occurred_at_ms: u64,
    /// The workflow node, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_id: Option<String>,
    /// Why it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Fields this version does not interpret.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A run's phase, history and next phases, as derived from a status.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseState {
    /// The phase the status implies.
    pub phase: WorkflowPhase,
    /// One `observed` transition into that phase.
    pub phase_history: Vec<PhaseTransitionRecord>,
    /// The phases allowed after it.
    pub allowed_next_phases: Vec<WorkflowPhase>,
}

impl PhaseState {
    /// Derives the phase state of a run seen in `status` at `observed_at_ms`
    /// (the legacy hydration rule, CONTRACT §15).
    pub fn from_status(
        run_id: &RunId,
        status: RunStatus,
        observed_at_ms: u64,
        phase_id: Option<&str>,
    ) -> Self {
        let phase = status.phase();
        let observed = PhaseTransitionRecord {
            event_id: format!("{run_id}:phase:{}:{observed_at_ms}", phase.as_str()),
            event_type: PHASE_OBSERVED_EVENT_TYPE.to_owned(),
            from_phase: None,
            to_phase: phase,
            occurred_at_ms: observed_at_ms,
            phase_id: phase_id.map(str::to_owned),
            reason: Some(format!("observed_status:{}", status.as_str())),
            extra: Map::new(),
        };
        Self {
            phase,
            phase_history: vec![observed],
            allowed_next_phases: phase.allowed_next_phases().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_phases_allow_nothing() {
        for phase in [
            WorkflowPhase::Failed,
            WorkflowPhase::Completed,
            WorkflowPhase::Cancelled,
        ] {
            assert!(phase.is_terminal());
            assert!(phase.allowed_next_phases().is_empty());
        }
        assert!(WorkflowPhase::Queued.can_transition_to(WorkflowPhase::RunningPhase));
        assert!(!WorkflowPhase::Queued.can_transition_to(WorkflowPhase::Completed));
    }

    #[test]
    fn as_str_matches_serde() {
        let status = RunStatus::AwaitingWebhook;
        assert_eq!(
            serde_json::to_value(status).unwrap(),
            Value::from(status.as_str())
        );
        let phase = WorkflowPhase::PausedAttentionRequired;
        assert_eq!(
            serde_json::to_value(phase).unwrap(),
            Value::from(phase.as_str())
        );
        assert_eq!(RunStatus::DeadLettered.phase(), WorkflowPhase::Failed);
    }
}
