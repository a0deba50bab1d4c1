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

/// The tenant `acme/prod` of the one-run fixtures ([`step`]).
pub fn acme() -> Tenant {
    tenant("acme")
}

/// The run id `run-1` of the one-run fixtures ([`step`]).
pub fn run_1() -> RunId {
    run("run-1")
}

/// An event of [`acme`]'s run [`run_1`] with id `id`, occurring at `at`.
///
/// # Panics
/// When `id` is not a valid event id.
pub fn step(id: &str, at: u64) -> EventRecord {
    event(&acme(), "run-1", id, at)
}
