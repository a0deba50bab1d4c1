//! The checkpoint workload of the peer comparison (issue 19): what agent
//! builders do with LangGraph's checkpointers, on a runstore snapshot store,
//! and the same workload on the peer (a Python script run as a child
//! process).
//!
//! One run of the workload: one run gets [`CheckpointSizes::puts`] snapshots
//! of about 300 bytes of checkpoint one after another (timed), then
//! [`CheckpointSizes::runs`] runs get [`CheckpointSizes::per_run`] snapshots
//! each (not timed), then the latest snapshot of a random one of those runs
//! is loaded [`CheckpointSizes::latest`] times (each timed; the p50 is the
//! figure), and, on runstore only, [`CheckpointSizes::puts`] single durable
//! appends of an event carrying the same payload. The peer's script
//! (`scripts/peer/langgraph_checkpoints.py`) does the same with `put` and
//! `get_tuple`.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use runstore_core::{
    EventId, EventLogExt as _, EventRecord, Result, RunId, RunStatus, SnapshotId, SnapshotRecord,
    SnapshotStoreExt as _, Storage, Tenant,
};
use serde_json::{Value, json};

/// `created_at_ms` of the first snapshot; snapshot `k` of a run is created
/// at `BASE_MS + k`.
const BASE_MS: u64 = 1_800_000_000_000;

/// The sizes of one run of the workload (the peer script's are fixed to the
/// defaults; `puts` follows `PEER_PUTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointSizes {
    /// Snapshots put one after another into one run (timed).
    pub puts: u64,
    /// Runs of the latest-snapshot figure.
    pub runs: u64,
    /// Snapshots in each of them.
    pub per_run: u64,
    /// Latest-snapshot loads (each timed).
    pub latest: u64,
    /// Single appends of the same payload (timed; 0 leaves the figure out,
    /// as when counting the syscalls of puts alone).
    pub appends: u64,
}

impl Default for CheckpointSizes {
    fn default() -> Self {
        Self {
            puts: 2_000,
            runs: 100,
            per_run: 100,
            latest: 1_000,
            appends: 2_000,
        }
    }
}

impl CheckpointSizes {
    /// A tiny run for smoke tests.
    pub fn tiny() -> Self {
        Self {
            puts: 50,
            runs: 5,
            per_run: 5,
            latest: 20,
            appends: 50,
        }
    }
}

/// What one run of the workload measured on one side.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckpointRun {
    /// Snapshot (checkpoint) puts per second, one after another.
    pub puts_per_sec: f64,
    /// Median time of one latest-snapshot load, in microseconds.
    pub latest_p50_us: f64,
    /// Single durable appends per second of an event with the same payload
    /// (runstore only).
    pub appends_per_sec: Option<f64>,
}

/// The checkpoint a step stores: the step and a 250-character note, as the
/// peer's channel value.
pub fn checkpoint(step: u64) -> Value {
    json!({
        "state": { "step": step, "note": "x".repeat(250) },
        "versions": { "state": step },
    })
}

fn snapshot(tenant: &Tenant, run: &RunId, step: u64) -> Result<SnapshotRecord> {
    let id = SnapshotId::new(format!("cp-{step:08}"))?;
    let mut record = SnapshotRecord::new(
        tenant,
        run.clone(),
        id,
        step,
        BASE_MS + step,
        RunStatus::Running,
    )
    .with_checkpoint(checkpoint(step));
    record.metadata = Some(json!({ "step": step, "source": "loop" }));
    Ok(record)
}

/// Runs the workload once on `store` (a fresh store: run names are fixed).
///
/// # Errors
/// The store's first error; `Corrupt` when a latest snapshot is not the
/// run's last one.
pub async fn run_on_store(
    store: &Arc<dyn Storage>,
    sizes: CheckpointSizes,
) -> Result<CheckpointRun> {
    let tenant = runstore::bench::bench_tenant();

    let solo = RunId::new("cp-solo")?;
    let records = (0..sizes.puts)
        .map(|step| snapshot(&tenant, &solo, step))
        .collect::<Result<Vec<_>>>()?;
    let start = Instant::now();
    for record in &records {
        store.put(&tenant, record).await?;
    }
    let puts_per_sec = rate(sizes.puts, start.elapsed());

    let runs = (0..sizes.runs)
        .map(|run| RunId::new(format!("cp-run-{run:04}")))
        .collect::<Result<Vec<_>>>()?;
    for run in &runs {
        for step in 0..sizes.per_run {
            store.put(&tenant, &snapshot(&tenant, run, step)?).await?;
        }
    }

    let mut pick = Lcg(7);
    let mut latencies = Vec::with_capacity(usize::try_from(sizes.latest).unwrap_or(0));
    for _ in 0..sizes.latest {
        let run = &runs[usize::try_from(pick.next() % sizes.runs.max(1)).unwrap_or(0)];
        let began = Instant::now();
        let latest = store.latest(&tenant, run).await?;
        latencies.push(began.elapsed());
        let step = latest.as_ref().map(|record| record.seq);
        if step != Some(sizes.per_run - 1) {
            return Err(runstore_core::Error::corrupt(
                run.as_str(),
                format!(
                    "latest snapshot at {step:?}, expected step {}",
                    sizes.per_run - 1
                ),
            ));
        }
    }
    let latest_p50_us = p50_us(latencies);

    let stream = RunId::new("cp-events")?;
    if sizes.appends == 0 {
        return Ok(CheckpointRun {
            puts_per_sec,
            latest_p50_us,
            appends_per_sec: None,
        });
    }
    let events = (0..sizes.appends)
        .map(|step| {
            Ok(EventRecord::new(
                &tenant,
                stream.clone(),
                EventId::new(format!("ev-{step}"))?,
                "step",
                BASE_MS + step,
            )
            .with_payload(checkpoint(step)))
        })
        .collect::<Result<Vec<_>>>()?;
    let start = Instant::now();
    for event in &events {
        store.append(&tenant, event).await?;
    }
    let appends_per_sec = Some(rate(sizes.appends, start.elapsed()));

    Ok(CheckpointRun {
        puts_per_sec,
        latest_p50_us,
        appends_per_sec,
    })
}

fn rate(n: u64, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// A small deterministic generator for picking runs (no `rand` needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// The peer: a Python interpreter (a virtual environment with LangGraph's
/// checkpointers installed) and the script that runs the workload on them.
#[derive(Debug, Clone)]
pub struct Peer {
    python: PathBuf,
    script: PathBuf,
}

impl Peer {
    /// The peer named by `RUNSTORE_PEER_PYTHON` and `RUNSTORE_PEER_SCRIPT`
    /// (as `scripts/peer-bench.sh` sets them); `None` when either is unset.
    pub fn from_env() -> Option<Self> {
        let python = std::env::var_os("RUNSTORE_PEER_PYTHON")?;
        let script = std::env::var_os("RUNSTORE_PEER_SCRIPT")?;
        Some(Self {
            python: python.into(),
            script: script.into(),
        })
    }

    /// Runs the peer's workload once: `kind` is `sqlite` (with a fresh
    /// directory as `target`) or `postgres` (with a server URL), and
    /// `puts` the timed puts.
    ///
    /// # Errors
    /// A text naming what failed: the script did not run, failed, or printed
    /// no figures.
    pub fn run(
        &self,
        kind: &str,
        target: &Path,
        puts: u64,
    ) -> std::result::Result<CheckpointRun, String> {
        let output = Command::new(&self.python)
            .arg(&self.script)
            .arg(kind)
            .arg(target)
            .env("PEER_PUTS", puts.to_string())
            .output()
            .map_err(|err| format!("running {}: {err}", self.python.display()))?;
        if !output.status.success() {
            return Err(format!(
                "the peer script failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .rev()
            .find(|line| line.starts_with('{'))
            .ok_or_else(|| format!("the peer script printed no figures: {stdout}"))?;
        let figures: Value = serde_json::from_str(line)
            .map_err(|err| format!("the peer's figures {line:?}: {err}"))?;
        let number = |name: &str| {
            figures[name]
                .as_f64()
                .ok_or_else(|| format!("the peer's figures lack {name}: {line}"))
        };
        Ok(CheckpointRun {
            puts_per_sec: number("puts_per_s")?,
            latest_p50_us: number("latest_p50_us")?,
            appends_per_sec: None,
        })
    }
}

/// The peer's put loop in chunks (the script's `chunks` mode): a child
/// process that puts as many checkpoints as it is told, one after another
/// into one thread, and answers the seconds they took; for comparisons
/// alternated in chunks with runstore, so both sides share the disk's
/// seconds.
#[derive(Debug)]
pub struct PeerChunks {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    /// Starts the peer's put loop in chunks: `kind` and `target` as for
    /// [`Peer::run`].
    ///
    /// # Errors
    /// A text naming what failed.
    pub fn chunks(&self, kind: &str, target: &Path) -> std::result::Result<PeerChunks, String> {
        let mut child = Command::new(&self.python)
            .arg(&self.script)
            .arg(kind)
            .arg(target)
            .arg("chunks")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|err| format!("running {}: {err}", self.python.display()))?;
        let stdin = child.stdin.take().ok_or("the peer's stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("the peer's stdout")?);
        Ok(PeerChunks {
            child,
            stdin,
            stdout,
        })
    }
}

impl PeerChunks {
    /// `puts` puts on the peer; the time they took (as the peer timed them).
    ///
    /// # Errors
    /// A text naming what failed.
    pub fn put(&mut self, puts: u64) -> std::result::Result<Duration, String> {
        writeln!(self.stdin, "{puts}")
            .and_then(|()| self.stdin.flush())
            .map_err(|err| format!("writing to the peer: {err}"))?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|err| format!("reading from the peer: {err}"))?;
        let secs: f64 = line
            .trim()
            .parse()
            .map_err(|err| format!("the peer answered {line:?}: {err}"))?;
        Ok(Duration::from_secs_f64(secs.max(0.0)))
    }
}

impl Drop for PeerChunks {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The library floor of a SQLite latest read: with no runstore code, on
/// one plain sqlx connection to the store file that `run_on_store` filled,
/// the p50 of the store's own query for a run's newest snapshot (parsed
/// into a `SnapshotRecord`, as the store does), and the p50 of a bare
/// `SELECT 1` (sqlx's round trip to its connection thread alone). Returns
/// `(newest, select_1)` in microseconds.
///
/// # Errors
/// The driver's error, as text.
#[cfg(feature = "sqlite")]
pub async fn bare_sqlite_latest(
    path: &Path,
    sizes: CheckpointSizes,
) -> std::result::Result<(f64, f64), String> {
    use sqlx::{Connection as _, Row as _};
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .map_err(|err| err.to_string())?;
    let tenant = runstore::bench::bench_tenant();
    let deployment = tenant.deployment_id().unwrap_or("");
    let mut pick = Lcg(11);
    let mut newest = Vec::new();
    let mut select_1 = Vec::new();
    for _ in 0..sizes.latest {
        let run = format!("cp-run-{:04}", pick.next() % sizes.runs.max(1));
        let began = Instant::now();
        let row = sqlx::query(
            "SELECT snapshot_id, record FROM snapshots \
             WHERE org_id = ?1 AND workspace_id = ?2 AND deployment_id = ?3 AND run_id = ?4 \
             ORDER BY seq DESC, created_at_ms DESC, snapshot_id DESC LIMIT ?5",
        )
        .bind(tenant.org_id())
        .bind(tenant.workspace_id())
        .bind(deployment)
        .bind(&run)
        .bind(1_i64)
        .fetch_optional(&mut conn)
        .await
        .map_err(|err| err.to_string())?
        .ok_or_else(|| format!("no snapshot of {run}"))?;
        let text: &str = row.try_get(1).map_err(|err| err.to_string())?;
        let record: SnapshotRecord = serde_json::from_str(text).map_err(|err| err.to_string())?;
        newest.push(began.elapsed());
        std::hint::black_box(record);

        let began = Instant::now();
        sqlx::query("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .map_err(|err| err.to_string())?;
        select_1.push(began.elapsed());
    }
    Ok((p50_us(newest), p50_us(select_1)))
}

fn p50_us(mut took: Vec<Duration>) -> f64 {
    took.sort_unstable();
    took.get(took.len() / 2)
        .map_or(0.0, |took| took.as_secs_f64() * 1e6)
}

/// The redb floor of a snapshot put with the store's layout: with no
/// runstore code, durable commits each inserting the record of
/// [`checkpoint`]'s size (header and JSON, as the store encodes it) into one
/// table keyed by stream and snapshot id and an empty value into a second
/// one keyed by stream, seq, time and id (the store's `snapshots` and
/// `snapshot_order` tables), in a fresh file.
#[cfg(feature = "redb")]
pub struct BareRedbSnapshots {
    db: redb::Database,
    record: Vec<u8>,
    next: u64,
}

#[cfg(feature = "redb")]
impl BareRedbSnapshots {
    /// Creates the database file at `path`.
    ///
    /// # Errors
    /// The driver's error.
    pub fn open(path: &Path) -> std::result::Result<Self, redb::Error> {
        let corrupt = |err: String| redb::Error::Corrupted(err);
        let tenant = runstore::bench::bench_tenant();
        let run = RunId::new("cp-bare").map_err(|err| corrupt(err.to_string()))?;
        let mut record = vec![0_u8; 16];
        serde_json::to_writer(
            &mut record,
            &snapshot(&tenant, &run, 0).map_err(|err| corrupt(err.to_string()))?,
        )
        .map_err(|err| corrupt(err.to_string()))?;
        Ok(Self {
            db: redb::Database::create(path)?,
            record,
            next: 0,
        })
    }

    /// `puts` puts, one durable commit each; the time they took.
    ///
    /// # Errors
    /// The driver's error.
    pub fn put(&mut self, puts: u64) -> std::result::Result<Duration, redb::Error> {
        const RECORDS: redb::TableDefinition<&[u8], &[u8]> =
            redb::TableDefinition::new("snapshots");
        const ORDER: redb::TableDefinition<&[u8], ()> =
            redb::TableDefinition::new("snapshot_order");
        let stream = crate::baseline::redb_stream_key("cp-bare");
        let start = Instant::now();
        for _ in 0..puts {
            let step = self.next;
            self.next += 1;
            let id = format!("cp-{step:08}");
            let mut key = stream.clone();
            key.extend_from_slice(id.as_bytes());
            let mut order = stream.clone();
            order.extend_from_slice(&step.to_be_bytes());
            order.extend_from_slice(&(BASE_MS + step).to_be_bytes());
            order.extend_from_slice(id.as_bytes());
            let txn = self.db.begin_write()?;
            {
                txn.open_table(RECORDS)?
                    .insert(key.as_slice(), self.record.as_slice())?;
                txn.open_table(ORDER)?.insert(order.as_slice(), ())?;
            }
            txn.commit()?;
        }
        Ok(start.elapsed())
    }
}

/// A bare loop of a put comparison: puts as many as it is told and answers
/// the time they took.
pub type BareLoop<'a> = Box<dyn FnMut(u64) -> std::result::Result<Duration, String> + 'a>;

/// Puts/s of each side of [`puts_alternated`].
#[derive(Debug, Clone, PartialEq)]
pub struct PutsAlternated {
    /// The store's puts/s.
    pub store: f64,
    /// Each bare loop's puts/s, in the order given.
    pub bare: Vec<f64>,
    /// The peer's puts/s, when it ran.
    pub peer: Option<f64>,
}

/// The store's snapshot puts against bare loops and the peer's puts
/// ([`PeerChunks`], when given), alternated in `chunks` chunks of `chunk`
/// puts each (the peer bench: 100 of 20), each chunk starting with the next
/// side in turn, so every side shares the disk's seconds: the sync rate of a
/// shared disk swings more between seconds than the gaps measured.
///
/// # Errors
/// The store's, a loop's or the peer's error, as text.
pub async fn puts_alternated(
    store: &Arc<dyn Storage>,
    bare: &mut [BareLoop<'_>],
    mut peer: Option<&mut PeerChunks>,
    chunks: u64,
    chunk: u64,
) -> std::result::Result<PutsAlternated, String> {
    let tenant = runstore::bench::bench_tenant();
    let run = RunId::new("cp-floor").map_err(|err| err.to_string())?;
    let sides = 1 + bare.len() + usize::from(peer.is_some());
    let mut took = vec![Duration::ZERO; sides];
    let mut step = 0;
    for index in 0..chunks {
        let records = (step..step + chunk)
            .map(|step| snapshot(&tenant, &run, step))
            .collect::<Result<Vec<_>>>()
            .map_err(|err| err.to_string())?;
        step += chunk;
        for turn in 0..sides {
            let side = usize::try_from((index + turn as u64) % sides as u64).unwrap_or(0);
            took[side] += if side == 0 {
                let start = Instant::now();
                for record in &records {
                    store
                        .put(&tenant, record)
                        .await
                        .map_err(|err| err.to_string())?;
                }
                start.elapsed()
            } else if let Some(bare) = bare.get_mut(side - 1) {
                bare(chunk)?
            } else {
                match peer.as_deref_mut() {
                    Some(peer) => peer.put(chunk)?,
                    None => Duration::ZERO,
                }
            };
        }
    }
    let n = chunks * chunk;
    Ok(PutsAlternated {
        store: rate(n, took[0]),
        bare: took[1..=bare.len()]
            .iter()
            .map(|took| rate(n, *took))
            .collect(),
        peer: peer.is_some().then(|| rate(n, took[sides - 1])),
    })
}

/// [`puts_alternated`] with redb's bare loops, in this order: the store's
/// two tables ([`BareRedbSnapshots`]), and one insert per durable commit
/// into one table. Bare files go into `dir`.
///
/// # Errors
/// The store's, the driver's or the peer's error, as text.
#[cfg(feature = "redb")]
pub async fn redb_put_vs_floor(
    store: &Arc<dyn Storage>,
    dir: &Path,
    peer: Option<&mut PeerChunks>,
    chunks: u64,
    chunk: u64,
) -> std::result::Result<PutsAlternated, String> {
    std::fs::create_dir_all(dir).map_err(|err| err.to_string())?;
    let mut two =
        BareRedbSnapshots::open(&dir.join("floor-two.redb")).map_err(|e| e.to_string())?;
    let mut one = crate::baseline::BareRedb::open(&dir.join("floor-one.redb"))
        .map_err(|err| err.to_string())?;
    let mut bare: [BareLoop<'_>; 2] = [
        Box::new(|n| two.put(n).map_err(|err| err.to_string())),
        Box::new(|n| {
            one.insert(n)
                .map(|result| result.elapsed())
                .map_err(|err| err.to_string())
        }),
    ];
    puts_alternated(store, &mut bare, peer, chunks, chunk).await
}

/// A runtime of its own inside an async caller: dropped without waiting
/// (a runtime cannot be dropped where blocking is not allowed).
#[cfg(feature = "sqlite")]
struct OwnRuntime(Option<tokio::runtime::Runtime>);

#[cfg(feature = "sqlite")]
impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The store's upsert of a snapshot, as `PUT_SNAPSHOT` in the SQLite
/// backend's schema: the bare loops run it on a file the store created.
#[cfg(feature = "sqlite")]
const SQLITE_PUT: &str = "\
INSERT INTO snapshots
    (org_id, workspace_id, deployment_id, run_id, snapshot_id, seq, created_at_ms, record)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
ON CONFLICT (org_id, workspace_id, deployment_id, run_id, snapshot_id)
DO UPDATE SET seq = excluded.seq, created_at_ms = excluded.created_at_ms, record = excluded.record";

/// [`puts_alternated`] with SQLite's bare loops, in this order: the
/// store's upsert as one autocommit statement per put through one sqlx
/// connection (WAL, `synchronous=FULL`), and the same upsert through
/// rusqlite on the calling thread (what a caller that may block its thread
/// on the sync does, as the peer does); on two files the store creates with
/// its schema in `dir`. The sqlx loop
/// runs on a runtime of its own on a thread of its own, so that its
/// hand-offs are sqlx's alone.
///
/// # Errors
/// The store's, the driver's or the peer's error, as text.
#[cfg(feature = "sqlite")]
pub async fn sqlite_put_vs_floor(
    store: &Arc<dyn Storage>,
    dir: &Path,
    peer: Option<&mut PeerChunks>,
    chunks: u64,
    chunk: u64,
) -> std::result::Result<PutsAlternated, String> {
    std::fs::create_dir_all(dir).map_err(|err| err.to_string())?;
    let (sqlx_file, caller_file) = (
        dir.join("floor-sqlx.sqlite"),
        dir.join("floor-caller.sqlite"),
    );
    for file in [&sqlx_file, &caller_file] {
        drop(
            runstore_sqlite::SqliteStore::open(file)
                .await
                .map_err(|err| err.to_string())?,
        );
    }
    let tenant = runstore::bench::bench_tenant();
    let run = RunId::new("cp-bare").map_err(|err| err.to_string())?;
    let record = serde_json::to_string(&snapshot(&tenant, &run, 0).map_err(|e| e.to_string())?)
        .map_err(|err| err.to_string())?;
    let deployment = tenant.deployment_id().unwrap_or("").to_owned();
    let row = |step: u64| {
        (
            format!("cp-{step:08}"),
            i64::try_from(step).unwrap_or(i64::MAX),
            i64::try_from(BASE_MS + step).unwrap_or(i64::MAX),
        )
    };

    let runtime = OwnRuntime(Some(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| err.to_string())?,
    ));
    let runtime = runtime.0.as_ref().ok_or("no runtime")?;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&sqlx_file)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
    let mut sqlx_conn = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                runtime.block_on(async {
                    use sqlx::Connection as _;
                    sqlx::SqliteConnection::connect_with(&options).await
                })
            })
            .join()
    })
    .map_err(|_| "the sqlx loop's thread panicked".to_owned())?
    .map_err(|err| err.to_string())?;
    let caller = rusqlite::Connection::open(&caller_file).map_err(|err| err.to_string())?;
    caller
        .pragma_update(None, "synchronous", "FULL")
        .map_err(|err| err.to_string())?;

    let (mut sqlx_next, mut caller_next) = (0, 0);
    let (org, workspace, run) = (tenant.org_id(), tenant.workspace_id(), run.as_str());
    let mut bare: [BareLoop<'_>; 2] = [
        Box::new(|n| {
            let (record, deployment) = (&record, &deployment);
            let conn = &mut sqlx_conn;
            let next = &mut sqlx_next;
            std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        runtime.block_on(async {
                            let start = Instant::now();
                            for _ in 0..n {
                                let (id, seq, at) = row(*next);
                                *next += 1;
                                sqlx::query(SQLITE_PUT)
                                    .bind(org)
                                    .bind(workspace)
                                    .bind(deployment)
                                    .bind(run)
                                    .bind(id)
                                    .bind(seq)
                                    .bind(at)
                                    .bind(record)
                                    .execute(&mut *conn)
                                    .await
                                    .map_err(|err| err.to_string())?;
                            }
                            Ok(start.elapsed())
                        })
                    })
                    .join()
                    .map_err(|_| "the sqlx loop's thread panicked".to_owned())?
            })
        }),
        Box::new(|n| {
            let start = Instant::now();
            for _ in 0..n {
                let (id, seq, at) = row(caller_next);
                caller_next += 1;
                caller
                    .prepare_cached(SQLITE_PUT)
                    .and_then(|mut put| {
                        put.execute(rusqlite::params![
                            org, workspace, deployment, run, id, seq, at, record
                        ])
                    })
                    .map_err(|err| err.to_string())?;
            }
            Ok(start.elapsed())
        }),
    ];
    puts_alternated(store, &mut bare, peer, chunks, chunk).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_runs_on_a_memory_store() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store: Arc<dyn Storage> = Arc::new(runstore_core::MemoryStore::new());
        let run = rt
            .block_on(run_on_store(&store, CheckpointSizes::tiny()))
            .unwrap();
        assert!(run.puts_per_sec > 0.0);
        assert!(run.latest_p50_us > 0.0);
        assert!(run.appends_per_sec.is_some());
    }

    #[test]
    fn a_checkpoint_is_about_300_bytes() {
        let len = serde_json::to_string(&checkpoint(1234)).unwrap().len();
        assert!((280..=340).contains(&len), "{len}");
    }
}
