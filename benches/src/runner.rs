//! The standard run: every figure of [`crate::figures`], in order, on one
//! engine.

use runstore::bench::Workload;
use runstore_core::Durability;

use crate::{
    Bench,
    baseline::BareLoop,
    engine::Engine,
    figures::{self, Session},
    footprint::serve_open_child,
};

/// A bench binary's `main`: serves the open child when this process is one,
/// else reads the sizes from the environment and runs the standard figures
/// on `engine`.
pub fn main<E: Engine>(engine: &E) {
    serve_open_child(|path| async move { engine.open_in_child(&path).await });
    let (events, runs) = engine.default_sizes();
    let bench = Bench::from_env(engine.name(), events, runs);
    if std::env::var("RUNSTORE_BENCH_ONLY").as_deref() == Ok("compacted_lookup") {
        let mut s = Session::new(&bench, engine);
        figures::compacted_lookup(&mut s);
        s.finish();
    } else {
        let mut bare = engine.bare(&bench);
        run_standard(&bench, engine, bare.as_deref_mut());
        drop(bare);
    }
    engine.finish(&bench);
}

/// Runs the standard figures on `engine` (criterion benchmarks, the
/// interleaved ratio rounds, the read figures) and prints the ratio table.
///
/// # Panics
/// When the store fails; a bench has no one to return an error to.
pub fn run_standard<E: Engine>(
    bench: &Bench,
    engine: &E,
    mut bare: Option<&mut (dyn BareLoop + 'static)>,
) {
    let mut s = Session::new(bench, engine);

    let writer = figures::writer(&s);
    figures::write_micro(&mut s, &writer, bare.as_deref_mut());
    let rounds = figures::write_rounds(&s, &writer, bare.as_deref_mut());
    figures::single_append(&mut s, &rounds);
    figures::concurrent_append(&mut s, &rounds);
    figures::batch_append(&mut s, &rounds);
    figures::requests_per_event(&mut s, &rounds);
    figures::disk_range(&mut s, &rounds);
    figures::batch_vs_bare(&mut s, &writer, bare);
    figures::spread_append(&mut s);
    drop(writer);

    let path = figures::preload(&mut s);
    let footprint = figures::open_memory(&mut s, &path);
    figures::open(&mut s, &path, &footprint);
    let reader = Workload::new(s.open(&path, Durability::Durable), s.config);
    figures::read_tail(&mut s, &reader);
    figures::compact(&mut s, &reader);
    drop(reader);

    figures::compacted_lookup(&mut s);

    s.finish();
}
