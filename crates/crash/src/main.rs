//! `runstore-crash`: the kill harness. Writer processes run every kind of
//! write against one store URL and print each acknowledgement; the harness
//! kills them with SIGKILL at random moments, checks that nothing
//! acknowledged was lost, and starts them again on the same store.
//! `scripts/crash.sh` runs the full set (every backend, relaxed modes,
//! server faults); `tests/kill.rs` runs a short pass per backend in the test
//! run. See `docs/reliability.md`.

mod ack;
mod check;
mod cycle;
mod workload;
mod writer;

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "runstore-crash",
    about = "Kill writers at random moments; count what was lost"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, clap::Args)]
struct CommonArgs {
    /// The store URL.
    #[arg(long)]
    store: String,
    /// Directory for acknowledgement files and writer logs (kept for
    /// inspection).
    #[arg(long)]
    dir: PathBuf,
    /// Writer processes at a time.
    #[arg(long, default_value_t = 1)]
    writers: u32,
    /// Seed of the run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The `runstore` binary used for `verify` (default: next to this one).
    #[arg(long)]
    runstore: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Kill writers at random moments until `--kills` were killed, checking
    /// the store after each round.
    Kills {
        #[command(flatten)]
        common: CommonArgs,
        /// Writer processes to kill in all.
        #[arg(long, default_value_t = 25)]
        kills: u32,
        /// Earliest kill, ms after a writer starts.
        #[arg(long, default_value_t = 20)]
        min_ms: u64,
        /// Latest kill, ms after a writer starts.
        #[arg(long, default_value_t = 400)]
        max_ms: u64,
    },
    /// Run writers for `--seconds` while the caller breaks the server, then
    /// kill them and check with the server-fault rules.
    Load {
        #[command(flatten)]
        common: CommonArgs,
        /// How long the writers run.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Fail unless some request failed (the fault was felt).
        #[arg(long)]
        expect_errors: bool,
    },
    /// One writer process (started by `kills` and `load`).
    Write(writer::WriterArgs),
}

fn common(args: CommonArgs) -> Result<cycle::Common> {
    let runstore = match args.runstore {
        Some(path) => path,
        None => std::env::current_exe()
            .context("finding this binary")?
            .with_file_name(format!("runstore{}", std::env::consts::EXE_SUFFIX)),
    };
    Ok(cycle::Common {
        store: args.store,
        dir: args.dir,
        writers: args.writers.max(1),
        seed: args.seed,
        runstore,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Kills {
            common: args,
            kills,
            min_ms,
            max_ms,
        } => common(args).and_then(|common| cycle::kills(&common, kills, min_ms, max_ms)),
        Cmd::Load {
            common: args,
            seconds,
            expect_errors,
        } => common(args).and_then(|common| cycle::load(&common, seconds, expect_errors)),
        Cmd::Write(args) => writer::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
