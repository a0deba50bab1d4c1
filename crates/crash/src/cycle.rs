//! The loops around the writers.
//!
//! `kills`: start the writer processes on the store, SIGKILL each at its own
//! random moment, check the store as the next process finds it (see
//! [`crate::check`]), and start them again on the same store, until the
//! number of kills is reached or a check fails.
//!
//! `load`: run the writer processes for a fixed time while something else
//! breaks the server under them (`scripts/crash.sh` kills SeaweedFS or stops
//! PostgreSQL with `pg_ctl stop -m immediate`, then starts it again), kill
//! them, and check with the server-fault rules.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use runstore_conformance::support::rng::Rng;

use crate::check::{self, Mode, Report};

/// The options every loop shares.
#[derive(Debug, Clone)]
pub struct Common {
    /// The store URL.
    pub store: String,
    /// Where acknowledgement files and writer logs go.
    pub dir: PathBuf,
    /// Writer processes at a time.
    pub writers: u32,
    /// Seed of the kill moments and the writers' seeds.
    pub seed: u64,
    /// The `runstore` binary, for `verify`.
    pub runstore: PathBuf,
}

/// How long to wait after the kills before checking a store behind a
/// server: a request a writer sent just before its kill may still be
/// carried out by the server (an unacknowledged write landing late, which
/// the contract allows), and the checks must see the store at rest.
fn settle(store: &str) -> Duration {
    match runstore::StoreUrl::parse(store).map(|url| url.backend()) {
        Ok(runstore::Backend::S3 | runstore::Backend::Postgres) => Duration::from_secs(1),
        _ => Duration::ZERO,
    }
}

/// The closing summary line.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    store: &'a str,
    mode: &'a str,
    kills: u32,
    cycles: u32,
    seconds: u64,
    /// Ids asked through `seq_of`, over every check.
    seq_of_checked_total: usize,
    /// Ids retried by the checker, over every check.
    retries_checked_total: usize,
    #[serde(flatten)]
    last: &'a Report,
    ok: bool,
}

struct Running {
    child: Child,
    acks: String,
    kill_at: Instant,
}

fn spawn(
    common: &Common,
    writer: u32,
    cycle: u32,
    seed: u64,
    seconds: Option<u64>,
) -> Result<Running> {
    let acks = format!("{cycle:05}-w{writer}.acks");
    let log = common.dir.join(format!("{cycle:05}-w{writer}.log"));
    let log = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut command = Command::new(exe);
    command
        .arg("write")
        .arg("--store")
        .arg(&common.store)
        .arg("--dir")
        .arg(&common.dir)
        .arg("--acks")
        .arg(common.dir.join(&acks))
        .args(["--writer", &writer.to_string()])
        .args(["--incarnation", &cycle.to_string()])
        .args(["--seed", &seed.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(seconds) = seconds {
        command.args(["--seconds", &seconds.to_string()]);
    }
    let child = command.spawn().context("starting a writer")?;
    Ok(Running {
        child,
        acks,
        kill_at: Instant::now(),
    })
}

/// Kills `running` with SIGKILL and reaps it; a writer that had already
/// exited on its own failed, which is reported with its log.
fn kill(running: &mut Running, dir: &Path) -> Result<bool> {
    if let Some(status) = running.child.try_wait()? {
        let log = dir.join(running.acks.replace(".acks", ".log"));
        let text = fs::read_to_string(&log).unwrap_or_default();
        bail!(
            "writer {} exited by itself with {status} before its kill: {}",
            running.acks,
            text.trim()
        );
    }
    running.child.kill().context("killing a writer")?;
    running.child.wait().context("reaping a killed writer")?;
    Ok(true)
}

/// Makes the directory, checks the `runstore` binary is there, and builds
/// the runtime the checks run on.
fn prepare(common: &Common) -> Result<tokio::runtime::Runtime> {
    runstore::StoreUrl::parse(&common.store)?;
    fs::create_dir_all(&common.dir)
        .with_context(|| format!("creating {}", common.dir.display()))?;
    if !common.runstore.is_file() {
        bail!(
            "{} is missing: build the CLI with every backend (`cargo build -p runstore-cli --all-features`) or pass --runstore",
            common.runstore.display()
        );
    }
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Counts summed over the checks of a loop.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    seq_of_checked: usize,
    retries_checked: usize,
}

impl Totals {
    fn add(&mut self, report: &Report) {
        self.seq_of_checked += report.seq_of_checked;
        self.retries_checked += report.retries_checked;
    }
}

fn finish(
    common: &Common,
    mode: &str,
    (kills, cycles): (u32, u32),
    started: Instant,
    totals: Totals,
    report: &Report,
) -> Result<()> {
    let ok = report.problems.is_empty() && report.lost == 0;
    let summary = Summary {
        store: &common.store,
        mode,
        kills,
        cycles,
        seconds: started.elapsed().as_secs(),
        seq_of_checked_total: totals.seq_of_checked,
        retries_checked_total: totals.retries_checked,
        last: report,
        ok,
    };
    println!("{}", serde_json::to_string(&summary)?);
    if !ok {
        for problem in report.problems.iter().take(40) {
            eprintln!("problem: {problem}");
        }
        bail!(
            "{} problem(s), {} acknowledged write(s) lost on {}; acknowledgement files in {}",
            report.problems.len(),
            report.lost,
            common.store,
            common.dir.display()
        );
    }
    Ok(())
}

/// Kill cycles until `kills` writer processes were killed.
pub fn kills(common: &Common, kills: u32, min_ms: u64, max_ms: u64) -> Result<()> {
    let runtime = prepare(common)?;
    let started = Instant::now();
    let mut rng = Rng::new(common.seed);
    let (mut killed, mut cycle) = (0, 0);
    let mut report = Report::default();
    let mut totals = Totals::default();
    while killed < kills {
        let mut running = Vec::new();
        for writer in 0..common.writers {
            let mut process = spawn(common, writer, cycle, rng.next_u64(), None)?;
            process.kill_at += Duration::from_millis(rng.range(min_ms, max_ms));
            running.push(process);
        }
        running.sort_by_key(|process| process.kill_at);
        for process in &mut running {
            let now = Instant::now();
            if process.kill_at > now {
                thread::sleep(process.kill_at - now);
            }
            kill(process, &common.dir)?;
            killed += 1;
        }
        thread::sleep(settle(&common.store));
        let recent: Vec<String> = running.iter().map(|process| process.acks.clone()).collect();
        report = runtime.block_on(check::check(
            &common.store,
            &common.dir,
            &recent,
            Mode::Kills,
            &common.runstore,
            rng.next_u64(),
        ))?;
        totals.add(&report);
        cycle += 1;
        eprintln!(
            "cycle {cycle}: {killed} killed, {} events and {} snapshots acknowledged so far, {} lost, {} problem(s)",
            report.acked_events,
            report.acked_snapshots,
            report.lost,
            report.problems.len()
        );
        if !report.problems.is_empty() {
            break;
        }
    }
    finish(common, "kills", (killed, cycle), started, totals, &report)
}

/// One load of `seconds` under a server fault made by the caller, then a
/// kill of every writer and a check with the server-fault rules.
pub fn load(common: &Common, seconds: u64, expect_errors: bool) -> Result<()> {
    let runtime = prepare(common)?;
    let started = Instant::now();
    let mut rng = Rng::new(common.seed);
    let cycle = fs::read_dir(&common.dir)?
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|entry| entry.path().extension().is_some_and(|ext| ext == "acks"))
        })
        .count();
    let cycle = u32::try_from(cycle)
        .unwrap_or(u32::MAX)
        .saturating_add(10_000);
    let mut running = Vec::new();
    for writer in 0..common.writers {
        running.push(spawn(common, writer, cycle, rng.next_u64(), None)?);
    }
    thread::sleep(Duration::from_secs(seconds));
    for process in &mut running {
        kill(process, &common.dir)?;
    }
    thread::sleep(settle(&common.store));
    let recent: Vec<String> = running.iter().map(|process| process.acks.clone()).collect();
    let mut report = runtime.block_on(check::check(
        &common.store,
        &common.dir,
        &recent,
        Mode::Faults,
        &common.runstore,
        rng.next_u64(),
    ))?;
    if expect_errors && report.writer_errors == 0 {
        report
            .problems
            .push("no writer saw the server fault: no request failed".to_owned());
    }
    let mut totals = Totals::default();
    totals.add(&report);
    finish(
        common,
        "faults",
        (common.writers, 1),
        started,
        totals,
        &report,
    )
}
