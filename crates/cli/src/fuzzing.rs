//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test:
//! each feeds text to a parser of [`crate::input`] and checks what must hold
//! of the answer. Not part of the API.

use anyhow::Result;
use runstore::{EventRecord, RunId, SnapshotRecord, Tenant};

use crate::input::{parse_batch, parse_snapshots};

/// Parses `text` as the lines of `append --batch` for the local tenant's run
/// `run` at time 42.
///
/// # Errors
/// The parse error, which names the line at fault.
///
/// # Panics
/// When an invariant fails: an error that does not name its line; a count
/// of events other than the count of non-blank lines; events that, written
/// back as batch lines, do not parse to the same events (under another
/// tenant, run and clock, since every default is filled in already).
pub fn check_batch(text: &str) -> Result<Vec<EventRecord>> {
    let run = RunId::new("run").expect("a valid run id");
    let events = match parse_batch(text, &Tenant::local(), &run, 42) {
        Ok(events) => events,
        Err(err) => {
            let message = format!("{err:#}");
            assert!(
                message.starts_with("batch line "),
                "an error that names no line: {message}"
            );
            return Err(err);
        }
    };
    let lines = text.lines().filter(|line| !line.trim().is_empty()).count();
    assert_eq!(events.len(), lines, "one event per non-blank line");
    let mut written = String::new();
    for event in &events {
        written.push_str(&serde_json::to_string(event).expect("an event encodes"));
        written.push('\n');
    }
    let other = Tenant::new("other-org", "other-workspace", None).expect("a valid tenant");
    let other_run = RunId::new("other-run").expect("a valid run id");
    let again = parse_batch(&written, &other, &other_run, 7)
        .unwrap_or_else(|err| panic!("written-back events do not parse: {err:#}\n{written}"));
    assert_eq!(again, events, "written-back events parse differently");
    Ok(events)
}

/// Parses `text` as the input of `snapshot put` for the local tenant.
///
/// # Errors
/// The parse error, which names the snapshot at fault.
///
/// # Panics
/// When an invariant fails: an error that names no snapshot; snapshots
/// that, written back one after another, do not parse to the same snapshots
/// under another tenant.
pub fn check_snapshots(text: &str) -> Result<Vec<SnapshotRecord>> {
    let snapshots = match parse_snapshots(text, &Tenant::local()) {
        Ok(snapshots) => snapshots,
        Err(err) => {
            let message = format!("{err:#}");
            assert!(
                message.starts_with("snapshot ") || message.starts_with("no snapshot record"),
                "an error that names no snapshot: {message}"
            );
            return Err(err);
        }
    };
    let mut written = String::new();
    for snapshot in &snapshots {
        written.push_str(&serde_json::to_string(snapshot).expect("a snapshot encodes"));
        written.push('\n');
    }
    let other = Tenant::new("other-org", "other-workspace", None).expect("a valid tenant");
    let again = parse_snapshots(&written, &other)
        .unwrap_or_else(|err| panic!("written-back snapshots do not parse: {err:#}\n{written}"));
    assert_eq!(again, snapshots, "written-back snapshots parse differently");
    Ok(snapshots)
}
