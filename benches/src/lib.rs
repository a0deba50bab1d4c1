//! The runstore benches: one benchmark body over every backend.
//!
//! Each backend is an [`Engine`] (in [`engines`], one impl per backend): how
//! to open its store, its bare baseline, its targets. [`run_standard`] runs
//! the standard figures ([`figures`], one function each) over any engine,
//! and every bench binary (`benches/*.rs`) is a call of [`main`] with its
//! engine. The workload itself is [`runstore::bench`]; the baselines
//! measured without runstore (raw `fdatasync`, bare driver loops, a plain
//! parse) are in [`baseline`].
//!
//! Every figure is measured twice over:
//!
//! - as criterion benchmarks (the micro-figures, with criterion's own
//!   statistics and reports), and
//! - in interleaved rounds ([`interleave`]): a short window of the store's
//!   operation, then a short window of its baseline (raw `fdatasync`, a bare
//!   driver loop), again and again, so that each ratio compares figures
//!   measured seconds apart on a disk whose sync rate swings from minute to
//!   minute. The [`RatioTable`] printed at the end holds those ratios against
//!   each backend's targets.
//!
//! Sizes come from the environment: `RUNSTORE_BENCH_EVENTS` (events preloaded
//! for the read figures, default per backend, 1,000,000 for the embedded
//! ones), `RUNSTORE_BENCH_RUNS` (default 1,000 for those; the service
//! benches default to smaller stores), `RUNSTORE_BENCH_ROUNDS`
//! (default 4), `RUNSTORE_BENCH_WINDOW_MS` (default 500),
//! `RUNSTORE_BENCH_DIR` (where the stores go, default the system temp dir)
//! and `RUNSTORE_BENCH_DURABILITY` (`relaxed` opens the store of the write
//! figures relaxed; default `durable`), `RUNSTORE_BENCH_COMPACTED`
//! (compacted ids per stream of the compacted-lookup figure, comma-separated,
//! default `10000,100000,1000000`) and `RUNSTORE_BENCH_ONLY`:
//! `compacted_lookup` runs that figure alone, `compact` only the preload
//! and the store-wide compaction pass over it.
//! Without `--bench` (as under `cargo test --benches`) everything runs once,
//! at a tiny size, as a smoke test.

pub mod baseline;
pub mod checkpoints;
mod context;
#[cfg(feature = "s3")]
pub mod counting;
pub mod engine;
pub mod engines;
pub mod figures;
pub mod footprint;
pub mod rounds;
mod runner;
pub mod table;

pub use baseline::BareLoop;
pub use context::{Bench, env_u64, skip_loudly};
pub use engine::{Engine, Targets};
pub use rounds::{Round, Tally, Windowed, interleave};
pub use runner::{main, peer_main, run_standard};
pub use table::{RatioTable, Target};
