//! The one validation every write path runs before planning (CONTRACT §21-§24).
//!
//! A backend holds one [`Limits`] (its builder or store URL may change the
//! record size; everything else is fixed) and calls, at the entry of each
//! write and before it takes a lock or queues work:
//!
//! - [`Limits::check_append`] in `append_batch`, on the request as given;
//! - [`Limits::check_import`] in `import_stream`, then
//!   [`plan_import`](crate::raw::append::plan_import), which checks what import
//!   owes the stream (no id twice, no gap, room to append);
//! - [`Limits::check_snapshot`] in `put`;
//! - [`check_clock`] on `now_ms` in `compact` and `prune`.
//!
//! Each check writes nothing and answers [`Error::InvalidInput`] naming the
//! record, the field and the limit. Seq assignment is checked by the planners:
//! [`plan_append`](crate::raw::append::plan_append) refuses to go past [`MAX_SEQ`].
//!
//! The limits make everything a store acknowledges readable on every backend:
//! seqs and timestamps fit a signed 64-bit column (SQLite, PostgreSQL), and a
//! record nests at most [`MAX_DEPTH`] levels, far below the 128 that
//! `serde_json` reads, with room for the S3 head object wrapping buffered
//! records two levels deeper and for SQLite's aggregated reads one level
//! deeper.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    Error, EventRecord, Result, RunId, SnapshotRecord, raw::append::check_run,
    raw::compaction::COMPACTION_ID_PREFIX, types::phase::PhaseTransitionRecord,
};

/// The deepest a record's JSON may nest, counting the record object itself as
/// level 1 (so a payload object of an event is level 2).
pub const MAX_DEPTH: usize = 64;

/// The highest seq a stream may hold: `i64::MAX`. An append that would pass
/// it is refused; an import must leave room for one more append.
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// The latest timestamp (`occurred_at_ms`, `created_at_ms`, `now_ms`):
/// `i64::MAX` milliseconds.
pub const MAX_TIMESTAMP_MS: u64 = i64::MAX as u64;

/// The default largest record, as compact JSON: 4 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 4 << 20;

/// The largest record size a store may be configured to accept: 256 MiB,
/// below PostgreSQL's limit for one `jsonb` value.
pub const MAX_RECORD_BYTES_CEILING: usize = 256 << 20;

/// Field names of [`EventRecord`]; its `extra` map may not use them.
pub const EVENT_FIELDS: &[&str] = &[
    "schema_version",
    "event_id",
    "run_id",
    "seq",
    "event_type",
    "occurred_at_ms",
    "scope",
    "actor",
    "phase_id",
    "phase_transition",
    "wait_kind",
    "causation_id",
    "correlation_id",
    "payload",
];

/// Field names of [`SnapshotRecord`]; its `extra` map may not use them.
pub const SNAPSHOT_FIELDS: &[&str] = &[
    "schema_version",
    "snapshot_id",
    "run_id",
    "seq",
    "created_at_ms",
    "scope",
    "status",
    "phase",
    "phase_history",
    "allowed_next_phases",
    "phase_id",
    "source_record_kind",
    "checkpoint",
    "payload_digest",
    "workflow_definition_version",
    "workflow_definition_snapshot_hash",
    "metadata",
];

/// Field names of a scope; its `extra` map may not use them.
pub const SCOPE_FIELDS: &[&str] = &["tenant_context"];

/// Field names of a tenant context; its `extra` map may not use them.
pub const TENANT_CONTEXT_FIELDS: &[&str] = &[
    "org_id",
    "workspace_id",
    "deployment_id",
    "actor_id",
    "source",
];

/// Field names of a phase transition; its `extra` map may not use them.
pub const PHASE_TRANSITION_FIELDS: &[&str] = &[
    "event_id",
    "event_type",
    "from_phase",
    "to_phase",
    "occurred_at_ms",
    "phase_id",
    "reason",
];

/// The limits a store enforces on what it is asked to write.
///
/// Only the record size can be changed; depth, seqs and timestamps are the
/// same for every store so that data moves between backends unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    max_record_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

impl Limits {
    /// Limits with the largest record set to `max_record_bytes`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] unless `1 <= max_record_bytes <=`
    /// [`MAX_RECORD_BYTES_CEILING`].
    pub fn with_max_record_bytes(max_record_bytes: usize) -> Result<Self> {
        if max_record_bytes == 0 || max_record_bytes > MAX_RECORD_BYTES_CEILING {
            return Err(Error::invalid(format!(
                "max_record_bytes {max_record_bytes} is out of range; \
                 it must be 1 to {MAX_RECORD_BYTES_CEILING}"
            )));
        }
        Ok(Self { max_record_bytes })
    }

    /// The largest record, in bytes of compact JSON.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// Checks an append request: every event belongs to `run_id`, is no
    /// compaction marker and has no id in the marker namespace, and obeys
    /// [`Limits::check_event`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for the first event that breaks a rule.
    pub fn check_append(&self, run_id: &RunId, events: &[EventRecord]) -> Result<()> {
        check_run(run_id, events)?;
        for event in events {
            if event.is_compaction_marker() {
                return Err(event_error(
                    event,
                    &format_args!(
                        "event_type {:?} is reserved for compaction markers",
                        event.event_type
                    ),
                ));
            }
            if event.event_id.as_str().starts_with(COMPACTION_ID_PREFIX) {
                return Err(event_error(
                    event,
                    &format_args!(
                        "event_id starts with {COMPACTION_ID_PREFIX:?}, which is reserved for \
                         compaction markers"
                    ),
                ));
            }
            self.check_event(event)?;
        }
        Ok(())
    }

    /// Checks an exported stream before import: every record belongs to
    /// `run_id` and obeys [`Limits::check_event`], except that markers and
    /// ids in the marker namespace are accepted, and a marker may exceed the
    /// record size (compaction writes markers of any size).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for the first record that breaks a rule.
    pub fn check_import(&self, run_id: &RunId, records: &[EventRecord]) -> Result<()> {
        check_run(run_id, records)?;
        for record in records {
            check_event_shape(record)?;
            if !record.is_compaction_marker() {
                self.check_size(record, || event_label(record))?;
            }
        }
        Ok(())
    }

    /// Checks one event: reserved names in its `extra` maps, `occurred_at_ms`
    /// within [`MAX_TIMESTAMP_MS`], nesting within [`MAX_DEPTH`] and the
    /// compact JSON within the record size.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the event, the field and the limit.
    pub fn check_event(&self, event: &EventRecord) -> Result<()> {
        check_event_shape(event)?;
        self.check_size(event, || event_label(event))
    }

    /// Checks a snapshot: reserved names in its `extra` maps, `seq` within
    /// [`MAX_SEQ`], `created_at_ms` within [`MAX_TIMESTAMP_MS`], nesting
    /// within [`MAX_DEPTH`] and the compact JSON within the record size.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the snapshot, the field and the limit.
    pub fn check_snapshot(&self, snapshot: &SnapshotRecord) -> Result<()> {
        let label = || {
            format!(
                "snapshot {:?} of run {:?}",
                snapshot.snapshot_id.as_str(),
                snapshot.run_id.as_str()
            )
        };
        let fail = |what: &dyn std::fmt::Display| Error::invalid(format!("{}: {what}", label()));
        if snapshot.seq > MAX_SEQ {
            return Err(fail(&format_args!(
                "seq {} is above the limit {MAX_SEQ}",
                snapshot.seq
            )));
        }
        if snapshot.created_at_ms > MAX_TIMESTAMP_MS {
            return Err(fail(&format_args!(
                "created_at_ms {} is above the limit {MAX_TIMESTAMP_MS}",
                snapshot.created_at_ms
            )));
        }
        reserved("extra", &snapshot.extra, SNAPSHOT_FIELDS).map_err(|err| fail(&err))?;
        check_scope(&snapshot.scope).map_err(|err| fail(&err))?;
        for (index, transition) in snapshot.phase_history.iter().enumerate() {
            check_transition(transition, 3)
                .map_err(|err| fail(&format_args!("phase_history[{index}].{err}")))?;
        }
        for (name, value) in [
            ("checkpoint", snapshot.checkpoint.as_ref()),
            (
                "workflow_definition_version",
                snapshot.workflow_definition_version.as_ref(),
            ),
            ("metadata", snapshot.metadata.as_ref()),
        ] {
            if let Some(value) = value {
                depth(name, value, 1).map_err(|err| fail(&err))?;
            }
        }
        extra_depth("", &snapshot.extra, 1).map_err(|err| fail(&err))?;
        self.check_size(snapshot, label)
    }

    fn check_size<T: Serialize>(&self, record: &T, label: impl Fn() -> String) -> Result<()> {
        let mut counter = Counter {
            bytes: 0,
            limit: self.max_record_bytes,
        };
        match serde_json::to_writer(&mut counter, record) {
            Ok(()) => Ok(()),
            Err(err) if err.is_io() => Err(Error::invalid(format!(
                "{}: the record is larger than the limit of {} bytes",
                label(),
                self.max_record_bytes
            ))),
            Err(err) => Err(Error::invalid(format!(
                "{}: cannot be written as JSON: {err}",
                label()
            ))),
        }
    }
}

/// Checks a maintenance call's clock: `now_ms` within [`MAX_TIMESTAMP_MS`]
/// (compaction writes it into markers; every backend must answer alike).
///
/// # Errors
/// [`Error::InvalidInput`] naming the value and the limit.
pub fn check_clock(now_ms: u64) -> Result<()> {
    if now_ms > MAX_TIMESTAMP_MS {
        return Err(Error::invalid(format!(
            "now_ms {now_ms} is above the limit {MAX_TIMESTAMP_MS}"
        )));
    }
    Ok(())
}

/// `levels` arrays nested around the number 0: a value of depth `levels`,
/// for tests of [`MAX_DEPTH`] and of records deeper than it.
#[doc(hidden)]
#[must_use]
pub fn nested_arrays(levels: usize) -> Value {
    let mut value = Value::from(0);
    for _ in 0..levels {
        value = Value::Array(vec![value]);
    }
    value
}

/// How deep JSON `text` nests, as a parser counts it: the most arrays and
/// objects open at once, brackets inside strings not counted. Tests compare
/// it with [`MAX_DEPTH`] on encoded records and stored objects; text that
/// closes more than it opened counts from zero again.
#[doc(hidden)]
#[must_use]
pub fn text_depth(text: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for &byte in text {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn event_label(event: &EventRecord) -> String {
    format!(
        "event {:?} of run {:?}",
        event.event_id.as_str(),
        event.run_id.as_str()
    )
}

fn event_error(event: &EventRecord, what: &dyn std::fmt::Display) -> Error {
    Error::invalid(format!("{}: {what}", event_label(event)))
}

/// Everything of [`Limits::check_event`] but the size.
fn check_event_shape(event: &EventRecord) -> Result<()> {
    let fail = |what: &dyn std::fmt::Display| event_error(event, what);
    if event.occurred_at_ms > MAX_TIMESTAMP_MS {
        return Err(fail(&format_args!(
            "occurred_at_ms {} is above the limit {MAX_TIMESTAMP_MS}",
            event.occurred_at_ms
        )));
    }
    reserved("extra", &event.extra, EVENT_FIELDS).map_err(|err| fail(&err))?;
    check_scope(&event.scope).map_err(|err| fail(&err))?;
    if let Some(transition) = &event.phase_transition {
        check_transition(transition, 2)
            .map_err(|err| fail(&format_args!("phase_transition.{err}")))?;
    }
    for (name, value) in [
        ("payload", Some(&event.payload)),
        ("actor", event.actor.as_ref()),
        ("wait_kind", event.wait_kind.as_ref()),
    ] {
        if let Some(value) = value {
            depth(name, value, 1).map_err(|err| fail(&err))?;
        }
    }
    extra_depth("", &event.extra, 1).map_err(|err| fail(&err))
}

/// A problem found below a record, as text to prefix with the record.
type Found = String;

fn check_scope(scope: &crate::Scope) -> std::result::Result<(), Found> {
    reserved("scope.extra", &scope.extra, SCOPE_FIELDS)?;
    reserved(
        "scope.tenant_context.extra",
        &scope.tenant_context.extra,
        TENANT_CONTEXT_FIELDS,
    )?;
    // The scope is level 2, the tenant context level 3.
    extra_depth("scope.", &scope.extra, 2)?;
    extra_depth("scope.tenant_context.", &scope.tenant_context.extra, 3)
}

/// A phase transition whose object is at `level`.
fn check_transition(
    transition: &PhaseTransitionRecord,
    level: usize,
) -> std::result::Result<(), Found> {
    reserved("extra", &transition.extra, PHASE_TRANSITION_FIELDS)?;
    extra_depth("", &transition.extra, level)
}

fn reserved(
    map_name: &str,
    map: &Map<String, Value>,
    fields: &[&str],
) -> std::result::Result<(), Found> {
    match map.keys().find(|key| fields.contains(&key.as_str())) {
        Some(key) => Err(format!(
            "{map_name} holds the key {key:?}, which names a field of the record"
        )),
        None => Ok(()),
    }
}

/// The values of a flattened map that sits in an object at `level`.
fn extra_depth(
    prefix: &str,
    map: &Map<String, Value>,
    level: usize,
) -> std::result::Result<(), Found> {
    for (key, value) in map {
        depth(&format!("{prefix}{key}"), value, level)?;
    }
    Ok(())
}

/// Checks that `value`, a field of an object at `level`, keeps the record
/// within [`MAX_DEPTH`]. Iterative, so a hostile value cannot exhaust the stack.
fn depth(name: &str, value: &Value, level: usize) -> std::result::Result<(), Found> {
    let mut deepest = level;
    let mut pending: Vec<(&Value, usize)> = vec![(value, level)];
    while let Some((value, parent)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        let here = parent + 1;
        deepest = deepest.max(here);
        if deepest > MAX_DEPTH {
            return Err(format!(
                "{name} nests deeper than {MAX_DEPTH} levels (counting the record as level 1); \
                 the limit is {MAX_DEPTH}"
            ));
        }
        pending.extend(children.map(|child| (child, here)));
    }
    Ok(())
}

/// Counts bytes written and fails once they pass the limit, so an oversized
/// record is not serialized to the end.
struct Counter {
    bytes: usize,
    limit: usize,
}

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes = self.bytes.saturating_add(buf.len());
        if self.bytes > self.limit {
            return Err(std::io::Error::other("record too large"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        EventId, RunStatus, SnapshotId, Tenant, WorkflowPhase,
        raw::compaction::COMPACTION_EVENT_TYPE,
    };

    fn event(id: &str) -> EventRecord {
        EventRecord::new(
            &Tenant::local(),
            RunId::new("r").unwrap(),
            EventId::new(id).unwrap(),
            "t",
            0,
        )
    }

    fn keys(value: &Value) -> Vec<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    fn assert_listed(value: &Value, fields: &[&str]) {
        let mut expected: Vec<&str> = fields.to_vec();
        expected.sort_unstable();
        let mut found = keys(value);
        found.sort();
        assert_eq!(found, expected);
    }

    // The reserved-name lists are the fields serde writes: a new field must be
    // added to its list, or `extra` could shadow it.
    #[test]
    fn reserved_lists_name_every_field() {
        let tenant = Tenant::new("o", "w", Some("d".into())).unwrap();
        let mut event = event("e");
        event.actor = Some(json!("a"));
        event.phase_id = Some("p".into());
        event.wait_kind = Some(json!("w"));
        event.causation_id = Some("c".into());
        event.correlation_id = Some("c".into());
        event.scope = crate::Scope::for_tenant(&tenant);
        event.scope.tenant_context.actor_id = Some("a".into());
        let mut transition = observed_transition();
        transition.from_phase = Some(WorkflowPhase::Queued);
        event.phase_transition = Some(transition);
        let value = serde_json::to_value(&event).unwrap();
        assert_listed(&value, EVENT_FIELDS);
        assert_listed(&value["scope"], SCOPE_FIELDS);
        assert_listed(&value["scope"]["tenant_context"], TENANT_CONTEXT_FIELDS);
        assert_listed(&value["phase_transition"], PHASE_TRANSITION_FIELDS);

        let mut snapshot = SnapshotRecord::new(
            &tenant,
            RunId::new("r").unwrap(),
            SnapshotId::new("s").unwrap(),
            1,
            1,
            RunStatus::Running,
        );
        snapshot.phase_id = Some("p".into());
        snapshot.source_record_kind = Some("k".into());
        snapshot.checkpoint = Some(json!(1));
        snapshot.payload_digest = Some("d".into());
        snapshot.workflow_definition_version = Some(json!(1));
        snapshot.workflow_definition_snapshot_hash = Some("h".into());
        snapshot.metadata = Some(json!(1));
        assert_listed(&serde_json::to_value(&snapshot).unwrap(), SNAPSHOT_FIELDS);
    }

    fn observed_transition() -> PhaseTransitionRecord {
        crate::PhaseState::from_status(&RunId::new("r").unwrap(), RunStatus::Running, 1, Some("p"))
            .phase_history
            .remove(0)
    }

    #[test]
    fn depth_counts_the_record_as_level_one() {
        let limits = Limits::default();
        // payload at level 2: 63 nested arrays reach level 64.
        let ok = event("e").with_payload(nested_arrays(MAX_DEPTH - 1));
        limits
            .check_append(&ok.run_id, std::slice::from_ref(&ok))
            .unwrap();
        assert_eq!(text_depth(&serde_json::to_vec(&ok).unwrap()), MAX_DEPTH);
        let deep = event("e").with_payload(nested_arrays(MAX_DEPTH));
        let err = limits
            .check_append(&deep.run_id, std::slice::from_ref(&deep))
            .unwrap_err();
        assert!(
            err.to_string().contains("payload nests deeper than 64"),
            "{err}"
        );
        // A deep value in a tenant context's extra map counts from level 3.
        let mut scoped = event("e");
        scoped
            .scope
            .tenant_context
            .extra
            .insert("x".into(), nested_arrays(MAX_DEPTH - 2));
        assert_eq!(
            text_depth(&serde_json::to_vec(&scoped).unwrap()),
            MAX_DEPTH + 1
        );
        let err = limits.check_event(&scoped).unwrap_err();
        assert!(err.to_string().contains("scope.tenant_context.x"), "{err}");
        // Objects nest as arrays do.
        let objects = |levels: usize| {
            (0..levels).fold(Value::Null, |inner, _| serde_json::json!({ "k": inner }))
        };
        let ok = event("e").with_payload(objects(MAX_DEPTH - 1));
        limits.check_event(&ok).unwrap();
        let deep = event("e").with_payload(objects(MAX_DEPTH));
        let err = limits.check_event(&deep).unwrap_err();
        assert!(
            err.to_string().contains("payload nests deeper than 64"),
            "{err}"
        );
    }

    #[test]
    fn import_checks_the_size_of_events_and_not_of_markers() {
        let limits = Limits::with_max_record_bytes(300).unwrap();
        let run = RunId::new("r").unwrap();
        let big = event("e").with_payload(json!("x".repeat(400)));
        let err = limits
            .check_import(&run, std::slice::from_ref(&big))
            .unwrap_err();
        assert!(err.to_string().contains("300"), "{err}");
        let mut marker = big.clone();
        marker.event_type = COMPACTION_EVENT_TYPE.to_owned();
        limits
            .check_import(&run, std::slice::from_ref(&marker))
            .unwrap();
    }

    #[test]
    fn limits_hold_at_their_exact_values() {
        assert!(Limits::with_max_record_bytes(MAX_RECORD_BYTES_CEILING).is_ok());
        assert!(Limits::with_max_record_bytes(MAX_RECORD_BYTES_CEILING + 1).is_err());
        let limits = Limits::default();
        let snapshot = |seq| {
            SnapshotRecord::new(
                &Tenant::local(),
                RunId::new("r").unwrap(),
                SnapshotId::new("s").unwrap(),
                seq,
                0,
                RunStatus::Running,
            )
        };
        limits.check_snapshot(&snapshot(MAX_SEQ)).unwrap();
        assert!(limits.check_snapshot(&snapshot(MAX_SEQ + 1)).is_err());
        let mut latest = snapshot(1);
        latest.created_at_ms = MAX_TIMESTAMP_MS;
        limits.check_snapshot(&latest).unwrap();
        latest.created_at_ms = MAX_TIMESTAMP_MS + 1;
        assert!(limits.check_snapshot(&latest).is_err());
        // A record of exactly the limit is accepted; one byte more is not.
        let fits = event("e").with_payload(json!(""));
        let len = serde_json::to_vec(&fits).unwrap().len();
        let exact = Limits::with_max_record_bytes(len).unwrap();
        exact.check_event(&fits).unwrap();
        let over = Limits::with_max_record_bytes(len - 1).unwrap();
        assert!(over.check_event(&fits).is_err());
    }

    #[test]
    fn hostile_depth_does_not_overflow_the_stack() {
        // Built and dropped iteratively: serde_json's own drop would recurse.
        let mut value = Value::Null;
        for _ in 0..200_000 {
            value = Value::Array(vec![value]);
        }
        let err = depth("payload", &value, 1).unwrap_err();
        assert!(err.contains("payload"));
        let mut pending = vec![value];
        while let Some(value) = pending.pop() {
            if let Value::Array(items) = value {
                pending.extend(items);
            }
        }
    }

    #[test]
    fn marker_namespace_and_type_are_refused_for_appends_only() {
        let limits = Limits::default();
        let id = format!("{COMPACTION_ID_PREFIX}abc");
        let taken = event(&id);
        let err = limits
            .check_append(&taken.run_id, std::slice::from_ref(&taken))
            .unwrap_err();
        assert!(
            err.to_string().contains("reserved for compaction markers"),
            "{err}"
        );
        limits
            .check_import(&taken.run_id, std::slice::from_ref(&taken))
            .unwrap();
        let mut typed = event("e");
        typed.event_type = COMPACTION_EVENT_TYPE.into();
        assert!(
            limits
                .check_append(&typed.run_id, std::slice::from_ref(&typed))
                .is_err()
        );
    }

    #[test]
    fn reserved_keys_are_refused_in_every_map() {
        let limits = Limits::default();
        let mut top = event("e");
        top.extra.insert("seq".into(), json!(5));
        let err = limits.check_event(&top).unwrap_err();
        assert!(
            err.to_string().contains("extra holds the key \"seq\""),
            "{err}"
        );
        let mut context = event("e");
        context
            .scope
            .tenant_context
            .extra
            .insert("deployment_id".into(), json!("other"));
        let err = limits.check_event(&context).unwrap_err();
        assert!(
            err.to_string().contains("scope.tenant_context.extra"),
            "{err}"
        );
        let mut transition = event("e");
        let mut observed = observed_transition();
        observed.extra.insert("to_phase".into(), json!("done"));
        transition.phase_transition = Some(observed);
        let err = limits.check_event(&transition).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid input: event \"e\" of run \"r\": phase_transition.extra holds \
             the key \"to_phase\", which names a field of the record"
        );
        let mut scope = event("e");
        scope.scope.extra.insert("tenant_context".into(), json!({}));
        assert!(limits.check_event(&scope).is_err());
        let mut snapshot = SnapshotRecord::new(
            &Tenant::local(),
            RunId::new("r").unwrap(),
            SnapshotId::new("s").unwrap(),
            1,
            1,
            RunStatus::Running,
        );
        snapshot.extra.insert("status".into(), json!("x"));
        assert!(limits.check_snapshot(&snapshot).is_err());
    }

    #[test]
    fn text_depth_skips_brackets_in_strings_and_escapes() {
        assert_eq!(text_depth(br#"[{"a":[1]}]"#), 3);
        assert_eq!(text_depth(br#"{"a":"[[[{{"}"#), 1);
        // An escaped quote does not end the string; an escaped backslash
        // does not escape the quote after it.
        assert_eq!(text_depth(br#"{"a":"\"[[\""}"#), 1);
        assert_eq!(text_depth(br#"{"a":"\\","b":[[]]}"#), 3);
    }

    #[test]
    fn seqs_timestamps_and_size_have_limits() {
        let limits = Limits::with_max_record_bytes(300).unwrap();
        assert_eq!(limits.max_record_bytes(), 300);
        let mut late = event("e");
        late.occurred_at_ms = MAX_TIMESTAMP_MS + 1;
        let err = limits.check_event(&late).unwrap_err();
        assert!(
            err.to_string()
                .contains("occurred_at_ms 9223372036854775808"),
            "{err}"
        );
        late.occurred_at_ms = MAX_TIMESTAMP_MS;
        limits.check_event(&late).unwrap();

        let big = event("e").with_payload(json!("x".repeat(300)));
        let err = limits.check_event(&big).unwrap_err();
        assert!(
            err.to_string()
                .contains("larger than the limit of 300 bytes"),
            "{err}"
        );

        let mut snapshot = SnapshotRecord::new(
            &Tenant::local(),
            RunId::new("r").unwrap(),
            SnapshotId::new("s").unwrap(),
            MAX_SEQ + 1,
            1,
            RunStatus::Running,
        );
        assert!(Limits::default().check_snapshot(&snapshot).is_err());
        snapshot.seq = MAX_SEQ;
        Limits::default().check_snapshot(&snapshot).unwrap();
        assert!(check_clock(MAX_TIMESTAMP_MS + 1).is_err());
        assert!(Limits::with_max_record_bytes(0).is_err());
        assert!(Limits::with_max_record_bytes(MAX_RECORD_BYTES_CEILING + 1).is_err());
    }
}
