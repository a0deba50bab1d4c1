//! Running the built `runstore` binary against a store in a temp directory.

#![allow(dead_code)]

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
};

use serde_json::Value;

/// Starts the binary with `args` in the background; its stdout lines
/// arrive on the receiver as it prints them (for `--follow` commands, which
/// run until killed).
pub fn spawn_lines(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    (child, lines)
}

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_runstore")
}

/// The embedded backends this build enables (the CLI's default features).
pub fn embedded_backends() -> Vec<&'static str> {
    let mut backends = Vec::new();
    if cfg!(feature = "jsonl") {
        backends.push("jsonl");
    }
    if cfg!(feature = "sqlite") {
        backends.push("sqlite");
    }
    if cfg!(feature = "redb") {
        backends.push("redb");
    }
    backends
}

/// A store URL of `backend` inside `dir`.
pub fn store_url(backend: &str, dir: &Path) -> String {
    match backend {
        "jsonl" => format!("jsonl:{}", dir.join("jsonl-store").display()),
        "sqlite" => format!("sqlite:{}", dir.join("store.sqlite").display()),
        "redb" => format!("redb:{}", dir.join("store.redb").display()),
        other => panic!("no embedded backend {other}"),
    }
}

/// One run of the binary.
#[derive(Debug)]
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Self {
        Self {
            status: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
        }
    }

    /// stdout as JSON lines.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|err| panic!("stdout line {line:?} is not JSON: {err}"))
            })
            .collect()
    }

    /// The single JSON line of stdout.
    pub fn json(&self) -> Value {
        let mut lines = self.json_lines();
        assert_eq!(lines.len(), 1, "expected one line, got {:?}", self.stdout);
        lines.remove(0)
    }
}

/// The CLI bound to one store and tenant.
#[derive(Debug, Clone)]
pub struct Cli {
    pub store: String,
    pub tenant: Option<String>,
    pub cwd: PathBuf,
}

impl Cli {
    /// The CLI on `store`, run in `cwd`.
    pub fn new(store: impl Into<String>, cwd: &Path) -> Self {
        Self {
            store: store.into(),
            tenant: None,
            cwd: cwd.to_path_buf(),
        }
    }

    /// The same store, as another tenant.
    pub fn tenant(&self, tenant: &str) -> Self {
        Self {
            tenant: Some(tenant.to_owned()),
            ..self.clone()
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command
            .current_dir(&self.cwd)
            .env_remove("RUNSTORE_URL")
            .env("RUST_BACKTRACE", "1")
            .arg("--store")
            .arg(&self.store);
        if let Some(tenant) = &self.tenant {
            command.arg("--tenant").arg(tenant);
        }
        command.args(args);
        command
    }

    /// Runs with empty stdin.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, "")
    }

    /// Runs with `stdin` piped in.
    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(stdin.as_bytes())
            .expect("stdin accepts the input");
        Run::from(child.wait_with_output().expect("the binary finishes"))
    }

    /// Runs and expects success and a quiet stderr; returns stdout.
    pub fn ok(&self, args: &[&str]) -> Run {
        self.ok_with_stdin(args, "")
    }

    /// As [`Cli::ok`], with stdin.
    pub fn ok_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let run = self.run_with_stdin(args, stdin);
        assert_eq!(
            run.status, 0,
            "runstore {args:?} on {} failed: {}",
            self.store, run.stderr
        );
        run
    }

    /// Runs, expects failure with one `error: ...` line on stderr and nothing
    /// on stdout; returns that line.
    pub fn fails(&self, args: &[&str]) -> String {
        self.fails_with_stdin(args, "")
    }

    /// As [`Cli::fails`], with stdin.
    pub fn fails_with_stdin(&self, args: &[&str], stdin: &str) -> String {
        let run = self.run_with_stdin(args, stdin);
        assert_one_line_error(&run, args);
        assert!(
            run.stdout.is_empty(),
            "stdout of a failure: {:?}",
            run.stdout
        );
        run.stderr.trim_end().to_owned()
    }
}

/// A failed run: non-zero status, stderr exactly one `error: ` line, no
/// panic, no backtrace.
pub fn assert_one_line_error(run: &Run, args: &[&str]) {
    assert_ne!(run.status, 0, "runstore {args:?} succeeded: {}", run.stdout);
    assert_ne!(
        run.status, 101,
        "runstore {args:?} panicked: {}",
        run.stderr
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stderr of {args:?} is not one line: {:?}",
        run.stderr
    );
    assert!(
        lines[0].starts_with("error: "),
        "stderr of {args:?}: {:?}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(!run.stderr.contains("backtrace"), "{}", run.stderr);
}

/// A store's worth of data for migration tests, and every read of it.
pub mod dataset {
    use serde_json::json;

    use super::Cli;

    pub const TENANTS: [&str; 3] = ["local/local", "acme/prod", "acme/prod/eu-1"];
    pub const RUNS: [&str; 3] = ["run-a", "Run A/../ü 🦀", "run-c"];

    /// Fills `cli`'s store with events, markers (merged twice) and snapshots.
    pub fn fill(cli: &Cli) {
        for (t, tenant) in TENANTS.iter().enumerate() {
            let cli = cli.tenant(tenant);
            for (r, run) in RUNS.iter().enumerate() {
                let mut batch = String::new();
                for k in 0..20u64 {
                    let at = 1_000 + k * 100;
                    let line = json!({
                        "event_id": format!("{run}-e{k}"),
                        "event_type": if k % 3 == 0 { "step.started" } else { "step.done" },
                        "occurred_at_ms": at,
                        "payload": {"k": k, "f": 0.5 + k as f64, "text": "naïve ✓", "big": u64::MAX - k, "nested": [{"t": t, "r": r}]},
                        "phase_id": format!("node-{k}"),
                        "causation_id": format!("cause-{k}"),
                        "an_unknown_field": {"kept": true},
                    });
                    batch.push_str(&line.to_string());
                    batch.push('\n');
                }
                cli.ok_with_stdin(&["append", "--run", run, "--batch", "-"], &batch);
                let snapshot = json!({
                    "snapshot_id": format!("snap-{r}"), "run_id": run, "seq": 15,
                    "created_at_ms": 5_000 + r as u64, "status": "running",
                    "checkpoint": {"cursor": 15}, "metadata": {"who": tenant}
                });
                cli.ok_with_stdin(&["snapshot", "put", "--file", "-"], &snapshot.to_string());
            }
            // A legacy snapshot (no phase fields) on one run.
            let legacy = json!({
                "snapshot_id": "legacy", "run_id": RUNS[0], "seq": 3, "created_at_ms": 10,
                "status": "awaiting_approval", "phase_id": "node-a"
            });
            cli.ok_with_stdin(&["snapshot", "put", "--file", "-"], &legacy.to_string());
        }
        // Two compactions: the second merges the first marker (CONTRACT §9).
        assert_eq!(
            cli.ok(&["compact", "--retention-ms", "1000", "--now-ms", "2500"])
                .json()["pruned"],
            9 * 5
        );
        assert_eq!(
            cli.ok(&["compact", "--retention-ms", "1000", "--now-ms", "2900"])
                .json()["pruned"],
            9 * 4
        );
    }

    /// Every read a user can make, as the CLI prints it.
    pub fn dump(cli: &Cli) -> String {
        let mut out = String::new();
        for tenant in TENANTS {
            let cli = cli.tenant(tenant);
            out.push_str(&cli.ok(&["runs"]).stdout);
            for run in RUNS {
                for args in [
                    &["read", "--run", run][..],
                    &["read", "--run", run, "--after", "3", "--limit", "4"],
                    &["read", "--run", run, "--tail", "--limit", "3"],
                    &["next-seq", "--run", run],
                    &["seq-of", "--run", run, "--event-id", &format!("{run}-e2")],
                    &["seq-of", "--run", run, "--event-id", &format!("{run}-e19")],
                    &["snapshot", "list", "--run", run],
                    &["snapshot", "latest", "--run", run],
                ] {
                    out.push_str(&cli.ok(args).stdout);
                }
            }
            out.push_str(
                &cli.ok(&["snapshot", "get", "--run", RUNS[0], "--id", "legacy"])
                    .stdout,
            );
        }
        out
    }
}
