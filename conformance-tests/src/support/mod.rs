//! Helpers for backends' own tests, for what the suite cannot express as a
//! case: a service's URL or a loud failure, this test binary run again as a
//! child process, the shared stream checker with the assertions tests make
//! of it, the failed streams of a maintenance report, the check that an
//! error states each cause once and the parts of a `Corrupt` error, a replay of a fuzz target's checked-in
//! corpus, builders of plain records ([`records`]), a seeded generator
//! ([`rng::Rng`]), the file surgery of salvage tests ([`salvage`]), and
//! (feature `object_store`) a forwarding `ObjectStore` with hooks and the
//! damage the S3 harnesses do to a stored compaction marker.
//!
//! Users of the stores never need these; a backend's `tests/` directory
//! takes `runstore-conformance` as a dev-dependency (with
//! `default-features = false`, so no other backend is built) and calls them.
//! The kill harness `runstore-crash`, never published, draws from
//! [`rng::Rng`] the same way.

#[cfg(feature = "object_store")]
pub mod object_store;
pub mod records;
pub mod rng;
#[cfg(feature = "object_store")]
pub mod s3;
pub mod salvage;

use std::{
    collections::HashSet,
    ffi::OsStr,
    fmt, io,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    process::{Command, Output},
};

pub use runstore_core::raw::check::{Problem, ProblemKind, StreamCheck, check_stream};
use runstore_core::{AppendOutcome, Error, EventRecord, MaintenanceReport, Result, StreamKey};

use crate::ALLOW_MISSING_SERVICES;

/// Environment variable set in a child started by [`child_command`] or
/// [`rerun_as_child`]: the name of the test it runs.
pub const CHILD_VAR: &str = "RUNSTORE_TEST_CHILD";

/// The value of the environment variable `var` naming a service (a server
/// URL, a bucket), for the test or case `case`.
///
/// When `var` is unset or empty: with [`ALLOW_MISSING_SERVICES`] set, prints
/// `SKIPPED {case}: {var} is not set (...)` on stderr (CI fails a run that
/// prints a line starting `SKIPPED `) and answers `None`, so the test returns
/// early and passes; without it, panics saying how to start the service.
pub fn service_url(var: &str, case: &str) -> Option<String> {
    service_urls([var], case).map(|[url]| url)
}

/// [`service_url`] for several variables at once (an S3 endpoint and its
/// bucket): all of them, or `None` after one loud line naming the missing.
pub fn service_urls<const N: usize>(vars: [&str; N], case: &str) -> Option<[String; N]> {
    let values = vars.map(|var| std::env::var(var).ok().filter(|value| !value.is_empty()));
    let missing: Vec<&str> = vars
        .iter()
        .zip(&values)
        .filter(|(_, value)| value.is_none())
        .map(|(var, _)| *var)
        .collect();
    if missing.is_empty() {
        return Some(values.map(Option::unwrap_or_default));
    }
    let verb = if missing.len() == 1 { "is" } else { "are" };
    missing_service(case, &format!("{} {verb} not set", missing.join(" / ")));
    None
}

/// Says that `case` cannot run because its service is missing (`reason`):
/// a loud `SKIPPED` line when [`ALLOW_MISSING_SERVICES`] is set, else a
/// panic saying how to start the service.
pub fn missing_service(case: &str, reason: &str) {
    if std::env::var_os(ALLOW_MISSING_SERVICES).is_some() {
        eprintln!("SKIPPED {case}: {reason} ({ALLOW_MISSING_SERVICES} is set)");
    } else {
        panic!(
            "{case} cannot run: {reason}. Run scripts/test.sh, which starts the services, or \
             set {ALLOW_MISSING_SERVICES}=1 to skip it knowingly"
        );
    }
}

/// A command that runs this test binary again, filtered to exactly the test
/// `test` (which must be `#[ignore]`d, so that ordinary runs skip it), with
/// `--nocapture`, [`CHILD_VAR`] set to `test`, and `env` added. Spawn it to
/// run alongside the parent; [`rerun_as_child`] runs it to the end.
///
/// # Errors
/// When the path of this test binary cannot be found.
pub fn child_command<K, V>(test: &str, env: impl IntoIterator<Item = (K, V)>) -> io::Result<Command>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["--exact", test, "--nocapture", "--ignored"])
        .env(CHILD_VAR, test)
        .envs(env);
    Ok(command)
}

/// Runs [`child_command`] to the end and answers its status and output.
///
/// # Errors
/// When the child cannot be started.
pub fn rerun_as_child<K, V>(test: &str, env: impl IntoIterator<Item = (K, V)>) -> io::Result<Output>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    child_command(test, env)?.output()
}

/// Whether this process is a child started by [`child_command`].
pub fn is_child() -> bool {
    std::env::var_os(CHILD_VAR).is_some()
}

/// Every file of the fuzz target `target`'s checked-in corpus and seeds
/// (`fuzz/corpus/<target>` and `fuzz/seeds/<target>` at the workspace root),
/// sorted.
///
/// # Panics
/// When either directory cannot be read, or both are empty.
pub fn corpus_inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "seeds"] {
        let dir = fuzz.join(dir).join(target);
        for entry in
            std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        {
            files.push(
                entry
                    .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
                    .path(),
            );
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no corpus for {target}");
    files
}

/// Runs `check` on the bytes of every input of the fuzz target `target`
/// ([`corpus_inputs`]), so the checked-in corpus keeps passing the
/// invariants the fuzz target asserts on the stable toolchain.
///
/// # Panics
/// After every input ran, naming each input whose `check` panicked.
pub fn replay_corpus(target: &str, check: impl Fn(&[u8])) {
    let failed: Vec<String> = corpus_inputs(target)
        .into_iter()
        .filter(|file| {
            let bytes =
                std::fs::read(file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
            catch_unwind(AssertUnwindSafe(|| check(&bytes))).is_err()
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "inputs that fail their invariants: {failed:#?}"
    );
}

/// Checks `key`'s stream, read in full, with [`check_stream`] and answers
/// the check.
///
/// # Panics
/// Naming every problem, when there is any.
pub fn assert_sound_stream(key: &StreamKey, records: &[EventRecord]) -> StreamCheck {
    let check = check_stream(key, records);
    if !check.is_clean() {
        let problems: Vec<String> = check
            .problems
            .iter()
            .map(|problem| match problem.seq {
                Some(seq) => format!("seq {seq}: {problem}"),
                None => problem.to_string(),
            })
            .collect();
        panic!("stream {key} is not sound:\n  {}", problems.join("\n  "));
    }
    check
}

/// Checks that every answer `(event id, outcome)` names the seq the stream
/// holds the id at.
///
/// # Panics
/// At the first answer that does not.
pub fn assert_answers_name_stored_seqs<'a>(
    check: &StreamCheck,
    answers: impl IntoIterator<Item = (&'a str, &'a AppendOutcome)>,
) {
    for (id, outcome) in answers {
        assert_eq!(
            check.ids.get(id),
            Some(&outcome.seq),
            "the answer for {id} names seq {} but the stream disagrees",
            outcome.seq
        );
    }
}

/// Checks the answers of appends that raced on a stream nothing else wrote
/// to: each names the stored seq, exactly one answer per stored event says
/// `inserted`, and every id answered is stored.
///
/// # Panics
/// At the first broken expectation.
pub fn assert_each_event_inserted_once<'a>(
    check: &StreamCheck,
    answers: impl IntoIterator<Item = (&'a str, &'a AppendOutcome)> + Clone,
) {
    assert_answers_name_stored_seqs(check, answers.clone());
    let inserted = answers
        .clone()
        .into_iter()
        .filter(|(_, outcome)| outcome.inserted)
        .count();
    assert_eq!(
        inserted,
        check.live(),
        "exactly one answer per stored event says inserted"
    );
    let distinct: HashSet<&str> = answers.into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        distinct.len(),
        check.ids.len(),
        "every distinct id is stored"
    );
}

/// The streams a maintenance pass reports as failed, as their display
/// strings, in the report's order.
pub fn failed_streams(report: &MaintenanceReport) -> Vec<String> {
    report
        .failed
        .iter()
        .map(|failure| failure.stream.to_string())
        .collect()
}

/// The text of the one failure `report` holds: it must be `stream`'s
/// (as its display string) and an [`Error::Corrupt`] that states each
/// cause once (CONTRACT §25, §26).
///
/// # Panics
/// When the report fails another stream, more than one, none, or with
/// another kind of error.
pub fn corrupt_failure(report: &MaintenanceReport, stream: &str) -> String {
    assert_eq!(failed_streams(report), [stream]);
    let error = &report.failed[0].error;
    let text = error.to_string();
    assert!(matches!(error, Error::Corrupt { .. }), "{text}");
    assert_states_each_cause_once(&text);
    text
}

/// Compiles only when `T` is a store handle as CONTRACT §20 says: `Send`,
/// `Sync`, `'static`, cheap to `Clone`, and `Debug`.
pub fn assert_handle<T: Send + Sync + Clone + fmt::Debug + 'static>() {}

/// Checks CONTRACT §26 on an error's text: no part of it (the pieces
/// between `": "`) is stated twice.
///
/// # Panics
/// Naming the first part stated again.
pub fn assert_states_each_cause_once(text: &str) {
    let parts: Vec<&str> = text.split(": ").collect();
    for (index, part) in parts.iter().enumerate() {
        assert!(
            !parts[index + 1..].contains(part),
            "{part:?} is stated twice in {text:?}"
        );
    }
}

/// The location and reason of the [`Error::Corrupt`] `result` holds.
///
/// # Panics
/// When `result` holds anything else.
pub fn expect_corrupt<T: fmt::Debug>(result: Result<T>) -> (String, String) {
    match result {
        Err(Error::Corrupt { location, reason }) => (location, reason),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
