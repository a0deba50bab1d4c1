//! Builders of the plain records backends' own tests write: tenants of
//! workspace `prod` without deployment, events of type `step` without
//! payload.

use runstore_core::{EventId, EventRecord, RunId, Tenant};

/// The tenant `<org>/prod`.
///
/// # Panics
/// When `org` is not a valid organisation name.
pub fn tenant(org: &str) -> Tenant {
    Tenant::new(org, "prod", None).unwrap_or_else(|err| panic!("tenant {org:?}: {err}"))
}

/// The run id `name`.
///
/// # Panics
/// When `name` is not a valid run id.
pub fn run(name: &str) -> RunId {
    RunId::new(name).unwrap_or_else(|err| panic!("run id {name:?}: {err}"))
}

/// An event of `t`'s run `run_id` with id `id` and type `step`, occurring
/// at `at`.
///
/// # Panics
/// When `run_id` or `id` is not a valid id.
pub fn event(t: &Tenant, run_id: &str, id: &str, at: u64) -> EventRecord {
    let event_id = EventId::new(id).unwrap_or_else(|err| panic!("event id {id:?}: {err}"));
    EventRecord::new(t, run(run_id), event_id, "step", at)
}
