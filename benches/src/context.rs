//! The per-binary context: runtime, sizes and a scratch directory, all read
//! from the environment.

use std::{future::Future, path::PathBuf, time::Duration};

use criterion::Criterion;
use runstore::bench::WorkloadConfig;
use runstore_core::Durability;
use tokio::runtime::Runtime;

/// Per-binary context: runtime, sizes and a scratch directory.
#[derive(Debug)]
pub struct Bench {
    /// A multi-thread tokio runtime for the stores.
    pub rt: Runtime,
    /// Whether criterion was asked to benchmark (`--bench`); otherwise every
    /// figure runs once at a tiny size.
    pub benchmarking: bool,
    /// Events preloaded for the read figures.
    pub events: u64,
    /// Runs they are spread over.
    pub runs: u64,
    /// Interleaved rounds per ratio.
    pub rounds: u32,
    /// Length of one side of one round.
    pub window: Duration,
    /// How the store of the write figures is opened
    /// (`RUNSTORE_BENCH_DURABILITY`, default durable).
    pub write_durability: Durability,
    /// Scratch directory for the stores, removed at the end.
    pub dir: tempfile::TempDir,
}

impl Bench {
    /// Reads the sizes from the environment (see the crate docs);
    /// `default_events` and `default_runs` apply when
    /// `RUNSTORE_BENCH_EVENTS` and `RUNSTORE_BENCH_RUNS` are unset.
    ///
    /// # Panics
    /// When the runtime or the scratch directory cannot be created, or a
    /// size variable is not a number.
    pub fn from_env(backend: &str, default_events: u64, default_runs: u64) -> Self {
        let benchmarking = std::env::args().any(|arg| arg == "--bench");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let parent =
            std::env::var_os("RUNSTORE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let dir = tempfile::Builder::new()
            .prefix(&format!("runstore-bench-{backend}-"))
            .tempdir_in(parent)
            .expect("a scratch directory for the bench stores");
        let (events, runs, rounds, window) = if benchmarking {
            (
                env_u64("RUNSTORE_BENCH_EVENTS", default_events),
                env_u64("RUNSTORE_BENCH_RUNS", default_runs).max(1),
                u32::try_from(env_u64("RUNSTORE_BENCH_ROUNDS", 4).max(1)).unwrap_or(u32::MAX),
                Duration::from_millis(env_u64("RUNSTORE_BENCH_WINDOW_MS", 500).max(1)),
            )
        } else {
            (2_000, 20, 1, Duration::from_millis(50))
        };
        Self {
            rt,
            benchmarking,
            events,
            runs,
            rounds,
            window,
            write_durability: env_durability("RUNSTORE_BENCH_DURABILITY"),
            dir,
        }
    }

    /// The sizes of the write figures: 64 appenders, batches of 100, tail of
    /// 100, and the preload sizes of this bench.
    pub fn config(&self) -> WorkloadConfig {
        WorkloadConfig {
            events: self.events,
            runs: self.runs,
            concurrency: 64,
            batch_size: 100,
            tail: 100,
            preload_batch: 1_000,
            ..WorkloadConfig::default()
        }
    }

    /// A path inside the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs a future on the runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.rt.block_on(future)
    }

    /// Criterion configured from the command line, with short defaults
    /// (1 s warm-up, 3 s measurement, 10 samples) that the command line
    /// overrides.
    pub fn criterion(&self) -> Criterion {
        Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(10)
            .configure_from_args()
    }

    /// A one-line description of the sizes, for the table's title.
    pub fn describe(&self) -> String {
        format!(
            "{} events across {} runs preloaded; {} interleaved rounds of {} ms per side{}{}",
            self.events,
            self.runs,
            self.rounds,
            self.window.as_millis(),
            if self.write_durability == Durability::Relaxed {
                "; writes relaxed"
            } else {
                ""
            },
            if self.benchmarking {
                ""
            } else {
                " (test mode: tiny sizes, figures meaningless)"
            }
        )
    }
}

/// A `u64` from the environment, or `default` when unset.
///
/// # Panics
/// When the variable is set but not a number.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

/// `durable` (the default when unset) or `relaxed` from the environment.
///
/// # Panics
/// When the variable is set to anything else.
fn env_durability(name: &str) -> Durability {
    match std::env::var(name).as_deref() {
        Err(_) | Ok("durable") => Durability::Durable,
        Ok("relaxed") => Durability::Relaxed,
        Ok(other) => panic!("{name}={other:?} is neither durable nor relaxed"),
    }
}

/// Prints a loud notice that a service bench is skipped, and why.
pub fn skip_loudly(backend: &str, variable: &str) {
    let line = "!".repeat(72);
    eprintln!(
        "{line}\n!! runstore {backend} bench SKIPPED: {variable} is not set.\n!! Start the service (see README) and set {variable} to run it.\n{line}"
    );
}
