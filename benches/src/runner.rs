//! The standard run: every figure of [`crate::figures`], in order, on one
//! engine.

use runstore::bench::Workload;
use runstore_core::Durability;

use crate::{
    Bench, RatioTable,
    baseline::BareLoop,
    checkpoints::{CheckpointRun, CheckpointSizes, Peer},
    engine::Engine,
    figures::{self, PeerTargets, Session},
    footprint::serve_open_child,
    rounds::median,
};

/// A bench binary's `main`: serves the open child when this process is one,
/// else reads the sizes from the environment and runs the standard figures
/// on `engine`.
pub fn main<E: Engine>(engine: &E) {
    serve_open_child(|path| async move { engine.open_in_child(&path).await });
    let (events, runs) = engine.default_sizes();
    let bench = Bench::from_env(engine.name(), events, runs);
    let only = std::env::var("RUNSTORE_BENCH_ONLY");
    if only.as_deref() == Ok("compacted_lookup") {
        let mut s = Session::new(&bench, engine);
        figures::compacted_lookup(&mut s);
        s.finish();
    } else if only.as_deref() == Ok("compact") {
        // The preloaded store and its one store-wide compaction pass, as
        // the standard run makes them, and nothing else.
        let mut s = Session::new(&bench, engine);
        let path = figures::preload(&mut s);
        let reader = Workload::new(s.open(&path, Durability::Durable), s.config);
        figures::compact(&mut s, &reader);
        drop(reader);
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

/// The peer bench's `main` (`benches/peer.rs`, run by
/// `scripts/peer-bench.sh`): rounds of the checkpoint workload, each
/// running, for every embedded backend, LangGraph's SQLite checkpointer
/// (through [`Peer`]) and then that backend, and, with the `postgres`
/// feature and `RUNSTORE_POSTGRES_URL`, LangGraph's PostgreSQL checkpointer
/// and then the PostgreSQL backend; then one table of ratios, each the
/// median of the per-round ratios. `RUNSTORE_PEER_ROUNDS` rounds (default 3);
/// `RUNSTORE_PEER_BACKENDS` (comma-separated, default all) picks the
/// backends; `RUNSTORE_PEER_APPENDS` sets the single appends (default
/// 2,000; 0 leaves them out). Without
/// `--bench` everything runs once at a tiny size, and without a peer
/// (`RUNSTORE_PEER_PYTHON`, `RUNSTORE_PEER_SCRIPT` unset) only runstore's
/// side runs, with the ratios left out.
///
/// # Panics
/// When a store or the peer fails.
pub fn peer_main() {
    let bench = Bench::from_env("peer", 0, 1);
    let (sizes, rounds) = if bench.benchmarking {
        (
            CheckpointSizes {
                appends: crate::env_u64("RUNSTORE_PEER_APPENDS", 2_000),
                ..CheckpointSizes::default()
            },
            crate::env_u64("RUNSTORE_PEER_ROUNDS", 3).max(1),
        )
    } else {
        (CheckpointSizes::tiny(), 1)
    };
    let peer = Peer::from_env();
    if peer.is_none() {
        crate::skip_loudly("peer (LangGraph)", "RUNSTORE_PEER_PYTHON");
    }
    let embedded_targets = PeerTargets {
        put: Some(1.2),
        latest: Some(1.0),
        append: None,
    };
    let mut sides: Vec<PeerSide> = Vec::new();
    let mut side = |name: &'static str, peer_name: &'static str, targets| {
        sides.push(PeerSide {
            backend: name,
            peer_name,
            targets,
            ours: Vec::new(),
            peer: Vec::new(),
        });
        sides.len() - 1
    };
    #[cfg(feature = "sqlite")]
    let sqlite = side("sqlite", "SqliteSaver", embedded_targets);
    #[cfg(feature = "jsonl")]
    let jsonl = side("jsonl", "SqliteSaver", embedded_targets);
    #[cfg(feature = "redb")]
    let redb = side("redb", "SqliteSaver", embedded_targets);
    #[cfg(feature = "postgres")]
    let postgres = crate::engines::Postgres::from_env().map(|engine| {
        let targets = PeerTargets {
            put: Some(1.2),
            latest: Some(1.0),
            append: Some(1.0),
        };
        (engine, side("postgres", "PostgresSaver", targets))
    });

    let peer_run = |kind: &str, target: &std::path::Path| {
        peer.as_ref().map(|peer| {
            peer.run(kind, target, sizes.puts)
                .unwrap_or_else(|err| panic!("peer {kind}: {err}"))
        })
    };
    // Each backend is measured right after a peer run of its own, so that
    // each ratio compares runs seconds apart on a disk whose sync rate
    // swings from minute to minute.
    let wanted = std::env::var("RUNSTORE_PEER_BACKENDS").unwrap_or_default();
    let wanted = |backend: &str| wanted.is_empty() || wanted.split(',').any(|b| b == backend);
    #[cfg(feature = "redb")]
    let mut redb_floors = Vec::new();
    #[cfg(feature = "sqlite")]
    let mut sqlite_floors = Vec::new();
    for round in 0..rounds {
        let name = format!("cp{round}");
        let lg_dir = |backend: &str| bench.path(&format!("{name}-{backend}-langgraph"));
        #[cfg(feature = "sqlite")]
        if wanted("sqlite") {
            let lg = peer_run("sqlite", &lg_dir("sqlite"));
            let ours = figures::checkpoint_round(&bench, &crate::engines::Sqlite, &name, sizes);
            let store = bench.path(&format!("{name}-{}", crate::engines::Sqlite.location()));
            let (newest, select_1) = bench
                .block_on(crate::checkpoints::bare_sqlite_latest(&store, sizes))
                .unwrap_or_else(|err| panic!("the bare sqlx latest loop: {err}"));
            println!(
                "round {round}: sqlite floor without runstore: bare sqlx newest-snapshot query \
                 and parse p50 {newest:.1} us, bare sqlx SELECT 1 p50 {select_1:.1} us"
            );
            // The put's floors, no runstore code: the store's puts
            // alternated in chunks with its upsert through a bare sqlx
            // connection and through rusqlite on the calling thread.
            let path = bench.path(&format!("{name}-floor-store.sqlite"));
            let store = crate::engine::open_store(
                &bench,
                &crate::engines::Sqlite,
                &path,
                runstore_core::Durability::Durable,
            );
            let mut peer_chunks = peer.as_ref().map(|peer| {
                peer.chunks(
                    "sqlite",
                    &bench.path(&format!("{name}-sqlite-floor-langgraph")),
                )
                .unwrap_or_else(|err| panic!("peer chunks: {err}"))
            });
            let floor = bench
                .block_on(crate::checkpoints::sqlite_put_vs_floor(
                    &store,
                    &bench.path(&format!("{name}-sqlite-floor")),
                    peer_chunks.as_mut(),
                    100,
                    (sizes.puts / 100).max(1),
                ))
                .unwrap_or_else(|err| panic!("the bare SQLite loops: {err}"));
            drop(peer_chunks);
            drop(store);
            SQLITE_FLOOR.print_round(round, &floor);
            sqlite_floors.push(floor);
            sides[sqlite].record(ours, lg);
        }
        #[cfg(feature = "jsonl")]
        if wanted("jsonl") {
            let lg = peer_run("sqlite", &lg_dir("jsonl"));
            let ours = figures::checkpoint_round(&bench, &crate::engines::Jsonl, &name, sizes);
            sides[jsonl].record(ours, lg);
        }
        #[cfg(feature = "redb")]
        if wanted("redb") {
            let lg = peer_run("sqlite", &lg_dir("redb"));
            let ours = figures::checkpoint_round(&bench, &crate::engines::Redb, &name, sizes);
            // redb's floors, no runstore code: the store's puts alternated
            // in chunks with a bare loop writing the store's two tables and
            // one writing a single table, so all three share the disk's
            // seconds.
            let path = bench.path(&format!("{name}-floor-store.redb"));
            let store = crate::engine::open_store(
                &bench,
                &crate::engines::Redb,
                &path,
                runstore_core::Durability::Durable,
            );
            let mut peer_chunks = peer.as_ref().map(|peer| {
                peer.chunks("sqlite", &bench.path(&format!("{name}-floor-langgraph")))
                    .unwrap_or_else(|err| panic!("peer chunks: {err}"))
            });
            let floor = bench
                .block_on(crate::checkpoints::redb_put_vs_floor(
                    &store,
                    &bench.path(&name),
                    peer_chunks.as_mut(),
                    100,
                    (sizes.puts / 100).max(1),
                ))
                .unwrap_or_else(|err| panic!("the bare redb loops: {err}"));
            drop(peer_chunks);
            drop(store);
            REDB_FLOOR.print_round(round, &floor);
            redb_floors.push(floor);
            sides[redb].record(ours, lg);
        }
        #[cfg(feature = "postgres")]
        if let Some((engine, index)) = &postgres
            && wanted("postgres")
        {
            let lg = peer_run("postgres", std::path::Path::new(engine.url()));
            let ours = figures::checkpoint_round(&bench, engine, &name, sizes);
            engine.drop_store(
                &bench,
                &bench.path(&format!("{name}-{}", engine.location())),
            );
            sides[*index].record(ours, lg);
        }
    }

    let mut table = RatioTable::new(format!(
        "checkpoints vs LangGraph: {} puts one after another, latest of {} runs x {}; {rounds} rounds{}",
        sizes.puts,
        sizes.runs,
        sizes.per_run,
        if bench.benchmarking {
            ""
        } else {
            " (test mode: tiny sizes, figures meaningless)"
        }
    ));
    for side in sides.iter().filter(|side| !side.ours.is_empty()) {
        side.report(&mut table);
    }
    #[cfg(feature = "sqlite")]
    SQLITE_FLOOR.notes(&mut table, &sqlite_floors);
    #[cfg(feature = "redb")]
    REDB_FLOOR.notes(&mut table, &redb_floors);
    table.note("ratios are medians of per-round ratios; in each round every backend runs right after a peer run of its own");
    table.note("latest p50: the peer's p50 over runstore's, so above 1.00x runstore is faster");
    table.print();
}

/// How a backend's put floors ([`crate::checkpoints::puts_alternated`])
/// are named in the peer bench's output.
#[cfg(any(feature = "sqlite", feature = "redb"))]
struct FloorNames {
    /// Starts the round line and the first note.
    title: &'static str,
    /// Each bare loop, in order: in the round line, beside the peer's put,
    /// and in the notes.
    bare: [(&'static str, &'static str, &'static str); 2],
}

#[cfg(feature = "sqlite")]
const SQLITE_FLOOR: FloorNames = FloorNames {
    title: "sqlite put floor",
    bare: [
        (
            "bare sqlx loop of the store's upsert",
            "bare sqlx",
            "bare sqlx loop",
        ),
        (
            "the same upsert through rusqlite on the calling thread",
            "caller thread",
            "caller-thread rusqlite loop",
        ),
    ],
};

#[cfg(feature = "redb")]
const REDB_FLOOR: FloorNames = FloorNames {
    title: "redb floor",
    bare: [
        (
            "bare loop of the store's two tables (record, order key) per durable commit",
            "bare two-table",
            "bare two-table loop",
        ),
        (
            "bare loop of one insert per durable commit",
            "bare one-table",
            "bare one-table loop",
        ),
    ],
};

#[cfg(any(feature = "sqlite", feature = "redb"))]
impl FloorNames {
    /// The round's line: each side's puts/s, the store over each bare
    /// loop, and each side over the peer when it ran.
    fn print_round(&self, round: u64, floor: &crate::checkpoints::PutsAlternated) {
        let mut line = format!(
            "round {round}: {}, alternated in chunks: store put {:.0}/s",
            self.title, floor.store
        );
        for ((long, _, _), rate) in self.bare.iter().zip(&floor.bare) {
            line.push_str(&format!(
                ", {long} {rate:.0}/s ({:.2}x)",
                floor.store / rate
            ));
        }
        if let Some(peer) = floor.peer {
            line.push_str(&format!(
                ", SqliteSaver put {peer:.0}/s (store {:.2}x",
                floor.store / peer
            ));
            for ((_, short, _), rate) in self.bare.iter().zip(&floor.bare) {
                line.push_str(&format!(", {short} {:.2}x", rate / peer));
            }
            line.push(')');
        }
        println!("{line}");
    }

    /// The table's notes: medians over the rounds of the store over each
    /// bare loop, and of every side over the peer.
    fn notes(&self, table: &mut RatioTable, floors: &[crate::checkpoints::PutsAlternated]) {
        if floors.is_empty() {
            return;
        }
        let [(_, _, first), (_, _, second)] = self.bare;
        table.note(format!(
            "{} (chunks alternated): store put / {first} {:.2}x, / {second} {:.2}x (medians of {} rounds)",
            self.title,
            median(floors.iter().map(|f| f.store / f.bare[0])),
            median(floors.iter().map(|f| f.store / f.bare[1])),
            floors.len()
        ));
        let against_peer: Vec<_> = floors
            .iter()
            .filter_map(|f| f.peer.map(|peer| (f, peer)))
            .collect();
        if !against_peer.is_empty() {
            let backend = self.title.split(' ').next().unwrap_or(self.title);
            table.note(format!(
                "{backend} put alternated in chunks with SqliteSaver's (target >= 1.2x): store {:.2}x, {first} {:.2}x, {second} {:.2}x (medians)",
                median(against_peer.iter().map(|(f, peer)| f.store / peer)),
                median(against_peer.iter().map(|(f, peer)| f.bare[0] / peer)),
                median(against_peer.iter().map(|(f, peer)| f.bare[1] / peer)),
            ));
        }
    }
}

/// One backend's rounds and the peer's of the same rounds.
struct PeerSide {
    backend: &'static str,
    peer_name: &'static str,
    targets: PeerTargets,
    ours: Vec<CheckpointRun>,
    peer: Vec<CheckpointRun>,
}

impl PeerSide {
    fn record(&mut self, ours: CheckpointRun, peer: Option<CheckpointRun>) {
        println!(
            "round {}: {} snapshot put {:.0}/s, latest p50 {:.1} us, append {:.0}/s{}",
            self.ours.len(),
            self.backend,
            ours.puts_per_sec,
            ours.latest_p50_us,
            ours.appends_per_sec.unwrap_or(0.0),
            peer.map_or_else(String::new, |p| format!(
                "; {} put {:.0}/s, latest p50 {:.1} us",
                self.peer_name, p.puts_per_sec, p.latest_p50_us
            )),
        );
        self.ours.push(ours);
        self.peer.extend(peer);
    }

    fn report(&self, table: &mut RatioTable) {
        if self.peer.len() == self.ours.len() {
            figures::checkpoints_vs_peer(
                table,
                self.backend,
                self.peer_name,
                &self.ours,
                &self.peer,
                self.targets,
            );
        } else {
            let mid = |f: fn(&CheckpointRun) -> f64| median(self.ours.iter().map(f));
            table.custom(
                &format!("{}: snapshot put / latest p50 / append", self.backend),
                format!(
                    "{:.0}/s, {:.1} us, {:.0}/s",
                    mid(|r| r.puts_per_sec),
                    mid(|r| r.latest_p50_us),
                    mid(|r| r.appends_per_sec.unwrap_or(0.0))
                ),
                "no peer run".to_owned(),
                None,
                crate::Target::None,
                0.0,
            );
        }
    }
}
