//! Reading input files, parsing records, and the clock.

use std::{
    io::Read as _,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use runstore::{EventRecord, RunId, Scope, SnapshotRecord, Tenant};
use serde_json::{Map, Value};

/// The wall clock in milliseconds since the Unix epoch: the default of
/// `--now-ms` and `--occurred-at-ms`.
#[allow(
    clippy::disallowed_methods,
    reason = "the CLI is where wall-clock time enters; the libraries take now_ms"
)]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The whole of `path`, or of stdin when `path` is `-`.
pub fn read_text(path: &Path) -> Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// Parses the JSON-lines events of `append --batch`: every non-blank line an
/// event object. `run_id` defaults to `run`, `scope` to the tenant's,
/// `occurred_at_ms` to `now_ms`.
pub fn parse_batch(
    text: &str,
    tenant: &Tenant,
    run: &RunId,
    now_ms: u64,
) -> Result<Vec<EventRecord>> {
    let mut events = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .with_context(|| format!("batch line {number} is not valid JSON"))?;
        let Value::Object(mut object) = value else {
            bail!("batch line {number} is not a JSON object");
        };
        object
            .entry("run_id")
            .or_insert_with(|| Value::from(run.as_str()));
        default_scope(&mut object, tenant)?;
        object
            .entry("occurred_at_ms")
            .or_insert_with(|| Value::from(now_ms));
        let event: EventRecord = serde_json::from_value(Value::Object(object))
            .with_context(|| format!("batch line {number} is not an event record"))?;
        events.push(event);
    }
    Ok(events)
}

/// Parses `snapshot put` input: one or more snapshot objects, one after
/// another (pretty-printed or one per line). `scope` defaults to the
/// tenant's.
pub fn parse_snapshots(text: &str, tenant: &Tenant) -> Result<Vec<SnapshotRecord>> {
    let mut snapshots = Vec::new();
    for (index, value) in serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .enumerate()
    {
        let number = index + 1;
        let value = value.with_context(|| format!("snapshot {number} is not valid JSON"))?;
        let Value::Object(mut object) = value else {
            bail!("snapshot {number} is not a JSON object");
        };
        default_scope(&mut object, tenant)?;
        let snapshot: SnapshotRecord = serde_json::from_value(Value::Object(object))
            .with_context(|| format!("snapshot {number} is not a snapshot record"))?;
        snapshots.push(snapshot);
    }
    if snapshots.is_empty() {
        bail!("no snapshot record in the input");
    }
    Ok(snapshots)
}

fn default_scope(object: &mut Map<String, Value>, tenant: &Tenant) -> Result<()> {
    if !object.contains_key("scope") {
        object.insert(
            "scope".to_owned(),
            serde_json::to_value(Scope::for_tenant(tenant))?,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_lines_get_defaults_and_errors_name_the_line() {
        let tenant = Tenant::local();
        let run = RunId::new("r").unwrap();
        let text = "{\"event_id\":\"a\",\"event_type\":\"t\"}\n\n{\"event_id\":\"b\",\"event_type\":\"t\",\"occurred_at_ms\":5,\"payload\":[1]}\n";
        let events = parse_batch(text, &tenant, &run, 42).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].occurred_at_ms, 42);
        assert_eq!(events[1].occurred_at_ms, 5);
        assert!(tenant.matches(&events[0].scope.tenant_context));
        let err = parse_batch(
            "{\"event_id\":\"a\",\"event_type\":\"t\"}\n{oops",
            &tenant,
            &run,
            1,
        )
        .unwrap_err();
        assert!(format!("{err:#}").starts_with("batch line 2 is not valid JSON"));
        let err =
            parse_batch("{\"event_id\":\"\",\"event_type\":\"t\"}", &tenant, &run, 1).unwrap_err();
        assert!(
            format!("{err:#}").contains("event_id must not be empty"),
            "{err:#}"
        );
    }

    #[test]
    fn snapshots_may_follow_each_other() {
        let tenant = Tenant::local();
        let one =
            r#"{"snapshot_id":"s1","run_id":"r","seq":1,"created_at_ms":1,"status":"running"}"#;
        let text = format!("{one}\n{}", one.replace("s1", "s2"));
        let snapshots = parse_snapshots(&text, &tenant).unwrap();
        assert_eq!(snapshots.len(), 2);
        assert_eq!(snapshots[1].snapshot_id.as_str(), "s2");
        assert!(parse_snapshots("  ", &tenant).is_err());
    }
}
