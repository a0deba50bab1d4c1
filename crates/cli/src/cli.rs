//! The command line, as clap parses it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The store when neither `--store` nor `RUNSTORE_URL` names one.
pub const DEFAULT_STORE: &str = "jsonl:./runstore-data";

/// Operate a runstore store from the shell: append, read, compact,
/// snapshot, delete runs and tenants, migrate between backends, verify,
/// benchmark.
#[derive(Debug, Parser)]
#[command(name = "runstore", version, about, max_term_width = 100)]
pub struct Cli {
    /// The store: jsonl:PATH (or a bare PATH), sqlite:PATH, redb:PATH,
    /// s3://BUCKET/PREFIX, postgres://..., memory:
    #[arg(
        long,
        global = true,
        env = "RUNSTORE_URL",
        default_value = DEFAULT_STORE,
        value_name = "URL"
    )]
    pub store: String,

    /// The tenant whose streams the command works on.
    #[arg(
        long,
        global = true,
        default_value = "local/local",
        value_name = "ORG/WORKSPACE[/DEPLOYMENT]"
    )]
    pub tenant: String,

    /// How to print results: one JSON object per line, or a table for people.
    #[arg(long, global = true, value_enum, default_value_t = Format::Json)]
    pub format: Format,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line; records in the reference JSON format.
    Json,
    /// An aligned table.
    Table,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Append one event, or a batch of events atomically, to a run.
    Append(AppendArgs),
    /// Print a run's records in ascending seq, one per line.
    Read(ReadArgs),
    /// Print the tenant's records of every run in commit order, each with
    /// its feed position; resume with --after the last position printed.
    Feed(FeedArgs),
    /// Print the seq the run's next event will get.
    NextSeq(RunArg),
    /// Print the seq of an event id (live or compacted), or null.
    SeqOf(SeqOfArgs),
    /// List the tenant's runs.
    Runs,
    /// Store-wide compaction of old events below each run's newest snapshot.
    Compact(CompactArgs),
    /// Work with snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Copy every tenant, stream and snapshot from one store to another.
    Migrate(MigrateArgs),
    /// Import a directory in the reference layout (stateful_events.jsonl,
    /// stateful_snapshots/) into --store.
    ImportReference(ImportReferenceArgs),
    /// Check the whole store: gapless seqs, unique ids, consistent
    /// compaction markers, readable records. Exits 1 when anything is wrong.
    Verify,
    /// Copy everything readable out of a damaged store into a new, empty
    /// one, and report what could not be copied. Exits 1 when anything
    /// could not be copied.
    Salvage(SalvageArgs),
    /// Delete a run of --tenant: its events, compacted ids and snapshots
    /// leave the store; the run keeps only its last seq, so new events
    /// continue after it.
    DeleteRun(RunArg),
    /// Delete every run of --tenant as delete-run does. Asks for --yes.
    DeleteTenant(DeleteTenantArgs),
    /// Print what each tenant of the store holds: runs, live events,
    /// compacted ids, snapshots, their size as JSON, and the oldest live
    /// event's age. One JSON object per tenant, or a table.
    Stats,
    /// Run the standard workload on several backends, side by side.
    Bench(BenchArgs),
}

/// `append`.
#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The run to append to.
    #[arg(long)]
    pub run: String,
    /// The event's id, its idempotency key.
    #[arg(long, required_unless_present = "batch", conflicts_with = "batch")]
    pub event_id: Option<String>,
    /// The event's type.
    #[arg(
        long = "type",
        value_name = "TYPE",
        required_unless_present = "batch",
        conflicts_with = "batch"
    )]
    pub event_type: Option<String>,
    /// The event's payload, as JSON.
    #[arg(long, value_name = "JSON", conflicts_with = "batch")]
    pub payload: Option<String>,
    /// When the event happened; defaults to now.
    #[arg(long, value_name = "MS", conflicts_with = "batch")]
    pub occurred_at_ms: Option<u64>,
    /// Append only if the run's last seq is N (0 for an empty run).
    #[arg(long, value_name = "N")]
    pub expect_last_seq: Option<u64>,
    /// Append the events of a JSON-lines file (`-` for stdin) atomically.
    /// Each line needs `event_id` and `event_type`; `occurred_at_ms`
    /// defaults to now, `payload` to null.
    #[arg(long, value_name = "FILE|-")]
    pub batch: Option<PathBuf>,
}

/// `read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The run to read.
    #[arg(long)]
    pub run: String,
    /// Only records with seq > N.
    #[arg(long, value_name = "N")]
    pub after: Option<u64>,
    /// Only records with seq < N.
    #[arg(long, value_name = "N", conflicts_with = "follow")]
    pub before: Option<u64>,
    /// At most N records (0: no limit).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Take the last --limit records of the window instead of the first.
    #[arg(long)]
    pub tail: bool,
    /// Keep printing new records as they are appended, until interrupted.
    #[arg(long)]
    pub follow: bool,
    /// How often --follow looks for new records.
    #[arg(long, value_name = "MS", default_value_t = 250, requires = "follow")]
    pub poll_ms: u64,
}

/// `feed`.
#[derive(Debug, Args)]
pub struct FeedArgs {
    /// Only records after this feed position (as printed in `position`).
    #[arg(long, value_name = "POS")]
    pub after: Option<String>,
    /// At most N records (0: no limit).
    #[arg(long, value_name = "N", conflicts_with = "follow")]
    pub limit: Option<usize>,
    /// Keep printing records as they are committed, until interrupted.
    #[arg(long)]
    pub follow: bool,
    /// How often --follow reads again when nothing woke it.
    #[arg(long, value_name = "MS", default_value_t = 250, requires = "follow")]
    pub poll_ms: u64,
}

/// A command that takes only a run.
#[derive(Debug, Args)]
pub struct RunArg {
    /// The run.
    #[arg(long)]
    pub run: String,
}

/// `seq-of`.
#[derive(Debug, Args)]
pub struct SeqOfArgs {
    /// The run.
    #[arg(long)]
    pub run: String,
    /// The event id to look up.
    #[arg(long)]
    pub event_id: String,
}

/// `delete-tenant`.
#[derive(Debug, Args)]
pub struct DeleteTenantArgs {
    /// Confirms that every run of --tenant is to be deleted.
    #[arg(long)]
    pub yes: bool,
}

/// `compact`.
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Events older than this (relative to --now-ms) are pruned; 0 does nothing.
    #[arg(long, value_name = "MS")]
    pub retention_ms: u64,
    /// The current time; defaults to the clock.
    #[arg(long, value_name = "MS")]
    pub now_ms: Option<u64>,
}

/// `snapshot ...`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Store snapshot records (JSON; several may follow each other), replacing
    /// any with the same run and id.
    Put {
        /// The file to read, `-` for stdin.
        #[arg(long, value_name = "FILE|-")]
        file: PathBuf,
    },
    /// Print one snapshot; exits 1 when it does not exist.
    Get {
        /// The run.
        #[arg(long)]
        run: String,
        /// The snapshot id.
        #[arg(long)]
        id: String,
    },
    /// Print a run's snapshots, oldest first.
    List {
        /// The run.
        #[arg(long)]
        run: String,
        /// Only the newest N (0: all).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Print a run's newest snapshot; exits 1 when it has none.
    Latest {
        /// The run.
        #[arg(long)]
        run: String,
    },
    /// Store-wide: delete snapshots older than the retention, keeping the
    /// newest --keep-last of each run.
    Prune {
        /// Snapshots created before now - this are deleted; 0 deletes nothing.
        #[arg(long, value_name = "MS")]
        retention_ms: u64,
        /// How many of each run's newest snapshots are always kept.
        #[arg(long, value_name = "N")]
        keep_last: usize,
        /// The current time; defaults to the clock.
        #[arg(long, value_name = "MS")]
        now_ms: Option<u64>,
    },
}

/// `migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The store to copy from.
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// The store to copy into; running the migration again is harmless.
    #[arg(long, value_name = "URL")]
    pub to: String,
}

/// `salvage`.
#[derive(Debug, Args)]
pub struct SalvageArgs {
    /// The damaged store to copy from. JSONL, SQLite and redb files are only
    /// read; other stores are opened as usual.
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// The store to copy into: new or empty (created when missing).
    #[arg(long, value_name = "URL")]
    pub to: String,
}

/// `import-reference`.
#[derive(Debug, Args)]
pub struct ImportReferenceArgs {
    /// The directory holding stateful_events.jsonl and stateful_snapshots/.
    pub dir: PathBuf,
}

/// `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Comma-separated backends (jsonl, sqlite, redb, memory) run in a temp
    /// directory, or store URLs; defaults to the embedded backends built in.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub backends: Vec<String>,
    /// Events preloaded for the read and compaction operations.
    #[arg(long, value_name = "N")]
    pub events: Option<u64>,
    /// Runs the preloaded events are spread over (default 100, at most
    /// --events).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: Option<u64>,
    /// Records per tail read and per feed read (default 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub tail: Option<u64>,
    /// Print one JSON object per backend instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Where the temporary stores go (default: the system temp directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// How long to measure the disk's raw fdatasync rate, beside the stores.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub sync_baseline_ms: u64,
}
