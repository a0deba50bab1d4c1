//! One backend as the benches see it: how to open its store, what it is
//! compared with, and the targets its figures must reach.

use std::{
    future::Future,
    path::Path,
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant},
};

use runstore_core::{Durability, Result, Storage};

use crate::{Bench, baseline::BareLoop};

/// What each figure must reach; `None` shows the figure without a target.
#[derive(Debug, Clone, Copy, Default)]
pub struct Targets {
    /// Single durable append events/s over the raw `fdatasync` rate.
    pub single_vs_fdatasync: Option<f64>,
    /// Single durable append events/s over the bare driver loop.
    pub single_vs_bare: Option<f64>,
    /// Single durable append events/s over the bare driver loop that
    /// writes the store's own tables (the first of [`Engine::bare_layouts`]).
    pub single_vs_layout: Option<f64>,
    /// Concurrent appenders events/s over single-task events/s.
    pub concurrent_vs_single: Option<f64>,
    /// Batch events/s.
    pub batch_rate: Option<f64>,
    /// Median tail read, ms.
    pub read_tail_ms: Option<f64>,
    /// Open speed over the plain-parse speed of the same data.
    pub open_vs_parse: Option<f64>,
    /// Resident memory an open adds, bytes per event.
    pub bytes_per_event: Option<f64>,
}

/// How the spread-appenders figure spreads its appenders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    /// Handles on the write store (separate pools or clients, as separate
    /// nodes would have); appender `i` uses handle `i % handles`.
    pub handles: usize,
    /// Appender tasks.
    pub tasks: u64,
    /// Whether each appender writes a stream of its own (else all write
    /// one).
    pub own_streams: bool,
}

/// One backend: every figure of the standard run goes through these
/// methods, so one benchmark body measures every engine.
pub trait Engine {
    /// The backend's name (criterion group, table title, scratch directory).
    fn name(&self) -> &'static str;

    /// The store's location inside a scratch directory (a directory name or
    /// a file name).
    fn location(&self) -> &'static str;

    /// Events preloaded and runs they are spread over when
    /// `RUNSTORE_BENCH_EVENTS` and `RUNSTORE_BENCH_RUNS` are unset.
    fn default_sizes(&self) -> (u64, u64) {
        (1_000_000, 1_000)
    }

    /// Opens the store at `path` (created if missing) with `durability`
    /// (CONTRACT §16): durable for the figures, relaxed for the preload.
    fn open(
        &self,
        path: &Path,
        durability: Durability,
    ) -> impl Future<Output = Result<Arc<dyn Storage>>>;

    /// Opens the store in the fresh child process of the memory figure.
    fn open_in_child(&self, path: &Path) -> impl Future<Output = Result<Arc<dyn Storage>>> {
        self.open(path, Durability::Durable)
    }

    /// Further handles on the write store for the concurrent appenders
    /// (separate pools, as separate nodes would have); 0 for one shared
    /// handle.
    fn extra_handles(&self) -> usize {
        0
    }

    /// Concurrent appender tasks.
    fn concurrency(&self) -> u64 {
        64
    }

    /// Appenders spread over several handles (and streams) for one more
    /// write figure; `None` for engines without it.
    fn spread(&self) -> Option<Spread> {
        None
    }

    /// Whether the store lives on the local disk, so that the raw
    /// `fdatasync` rate of that disk is a baseline.
    fn local_disk(&self) -> bool {
        true
    }

    /// The bare driver loop the single append is compared with, set up in
    /// `bench`'s scratch directory or on the engine's server.
    fn bare(&self, _bench: &Bench) -> Option<Box<dyn BareLoop>> {
        None
    }

    /// More bare driver loops, writing the tables a single append of the
    /// store writes, measured in the same rounds: for redb, `events`,
    /// `ids`, `heads` (the one [`Targets::single_vs_layout`] is about),
    /// then the same with the `feed` table; none for other engines.
    fn bare_layouts(&self, _bench: &Bench) -> Vec<Box<dyn BareLoop>> {
        Vec::new()
    }

    /// The plain parse of the stored data that an open is compared with:
    /// records parsed and time taken; `None` when the open has no such
    /// baseline.
    fn parse_baseline(&self, _path: &Path) -> Option<(u64, Duration)> {
        None
    }

    /// The targets.
    fn targets(&self) -> Targets {
        Targets::default()
    }

    /// A request counter the engine's durable stores add to, for a
    /// requests-per-event row.
    fn requests(&self) -> Option<&AtomicU64> {
        None
    }

    /// Cleans up after the run (schemas, objects left on a server).
    fn finish(&self, _bench: &Bench) {}
}

/// Opens the store at `path` on `bench`'s runtime, retrying while a
/// just-dropped handle still holds the lock.
///
/// # Panics
/// When the open fails otherwise, or the lock is held for 10 s.
pub fn open_store<E: Engine>(
    bench: &Bench,
    engine: &E,
    path: &Path,
    durability: Durability,
) -> Arc<dyn Storage> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match bench.block_on(engine.open(path, durability)) {
            Ok(store) => return store,
            Err(runstore_core::Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => panic!("opening {}: {err}", path.display()),
        }
    }
}
