//! CONTRACT §16, §17: power loss at any sync loses nothing acknowledged, and
//! the store opens after it without `Corrupt`.
//!
//! A scripted workload (single appends, batches, snapshot puts and
//! replacements, compactions, a snapshot prune and a reopen, over three
//! streams of two tenants, durable mode) runs once on a real directory with
//! an [`IoObserver`] recording every operation that changes the disk, and
//! the trace position at which each write was acknowledged.
//!
//! The disk model: a file's data (writes, length changes) reaches the disk
//! at the file's next `fdatasync`; a directory entry (a create, rename or
//! remove) at its directory's next sync. Nothing else is durable: not an
//! entry because its file was synced, nor a file's data because its entry
//! was. Files are inodes, so data synced under a temp name is the data a
//! later rename publishes.
//!
//! Power is cut at every sync of the trace, just before it takes effect
//! (everything written since the earlier syncs is in flight), and at the end
//! of the trace. Each cut yields up to four crash states, each rebuilt in a
//! fresh directory from the trace: the durable operations plus
//!
//! - `none`: none of the operations in flight;
//! - `prefix`: a random prefix of them, in trace order;
//! - `all`: all of them;
//! - `torn`: all of them, but the last write's last page holds only a
//!   random prefix of its bytes and zeros after (the page was allocated,
//!   its sectors did not all land).
//!
//! Each crash state is opened and checked: the open succeeds (a torn tail
//! is repaired, never `Corrupt`); every event acknowledged before the cut is
//! at its acknowledged seq, live or remembered by a compaction marker
//! (`seq_of`), and a retry of it answers that seq without writing; each
//! stream's seqs run gapless from 1 with each id once, and holds only events
//! the workload sent, unchanged; every acknowledged snapshot put reads back
//! (`get`, `latest`), every acknowledged prune stays done; and the store
//! takes a new append.
//!
//! A second test kills the workload's process before each of its syncs
//! (its unsynced operations stay in the page cache, where a new handle
//! sees them), opens a new handle on that state, which resends every event
//! the killed one sent, appends and puts a snapshot in each stream, and
//! cuts power after the resent events' acknowledgement and at the end,
//! the killed process's unsynced operations still in flight. What either
//! handle acknowledged must be there: a handle must not build on what it
//! found without syncing it.
//!
//! The seed is fixed (`RUNSTORE_POWER_LOSS_SEED` overrides it). Run with
//! `cargo test -p runstore-jsonl --test power_loss -- --nocapture` to see
//! the counts.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use runstore_conformance::support::rng::Rng;
use runstore_core::{
    EventId, EventLog, EventLogExt, EventRecord, FeedPosition, ReadQuery, RunId, RunStatus,
    SnapshotId, SnapshotRecord, SnapshotStore, SnapshotStoreExt, Tenant,
    raw::compaction::compacted_ids,
};
use runstore_jsonl::{IoObserver, IoOp, JsonlOptions, JsonlStore};
use serde_json::json;

const SEED_VAR: &str = "RUNSTORE_POWER_LOSS_SEED";
const DEFAULT_SEED: u64 = 0x5eed_f00d;
const PAGE: u64 = 4096;

// ---------------------------------------------------------------------------
// Deterministic randomness.

fn seed() -> u64 {
    std::env::var(SEED_VAR)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

// ---------------------------------------------------------------------------
// The trace.

/// One recorded operation, its paths relative to the recorder's root.
#[derive(Debug, Clone)]
enum Op {
    CreateDir(PathBuf),
    CreateFile(PathBuf),
    Write {
        path: PathBuf,
        offset: u64,
        bytes: Vec<u8>,
    },
    SetLen {
        path: PathBuf,
        len: u64,
    },
    SyncData(PathBuf),
    SyncDir(PathBuf),
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    Remove(PathBuf),
}

/// Records every operation of the stores opened under `root`.
struct Recorder {
    root: PathBuf,
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    fn new(root: &Path) -> Arc<Self> {
        Arc::new(Self {
            root: root.to_path_buf(),
            ops: Mutex::new(Vec::new()),
        })
    }

    /// How many operations have been recorded: the trace position.
    fn len(&self) -> usize {
        self.ops.lock().unwrap().len()
    }

    fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }

    fn rel(&self, path: &Path) -> PathBuf {
        path.strip_prefix(&self.root)
            .unwrap_or_else(|_| panic!("{} is outside {}", path.display(), self.root.display()))
            .to_path_buf()
    }
}

impl IoObserver for Recorder {
    fn observe(&self, op: IoOp<'_>) {
        let op = match op {
            IoOp::CreateDir { path } => Op::CreateDir(self.rel(path)),
            IoOp::CreateFile { path } => Op::CreateFile(self.rel(path)),
            IoOp::Write {
                path,
                offset,
                bytes,
            } => Op::Write {
                path: self.rel(path),
                offset,
                bytes: bytes.to_vec(),
            },
            IoOp::SetLen { path, len } => Op::SetLen {
                path: self.rel(path),
                len,
            },
            IoOp::SyncData { path } => Op::SyncData(self.rel(path)),
            IoOp::SyncDir { path } => Op::SyncDir(self.rel(path)),
            IoOp::Rename { from, to } => Op::Rename {
                from: self.rel(from),
                to: self.rel(to),
            },
            IoOp::Remove { path } => Op::Remove(self.rel(path)),
        };
        self.ops.lock().unwrap().push(op);
    }
}

// ---------------------------------------------------------------------------
// The disk model.

type Ino = usize;
const ROOT: Ino = 0;

/// What one operation does, with its paths resolved to inodes as they were
/// when it ran.
#[derive(Debug, Clone)]
enum Action {
    /// A new entry `name` in directory `dir` for `ino`.
    Link {
        dir: Ino,
        name: String,
        ino: Ino,
        is_dir: bool,
    },
    /// The entry `name` of `dir` is gone.
    Unlink {
        dir: Ino,
        name: String,
    },
    /// `from` of `dir` is renamed to `to` of the same directory.
    Rename {
        dir: Ino,
        from: String,
        to: String,
        ino: Ino,
    },
    /// Bytes (the trace's op `op`) written to `ino`.
    Write {
        ino: Ino,
        offset: u64,
        op: usize,
    },
    SetLen {
        ino: Ino,
        len: u64,
    },
    /// Makes every earlier step of `object` durable.
    Sync,
}

/// One step of the trace: its action, and the inode whose sync makes it
/// durable (the file for data, the parent directory for entries).
#[derive(Debug, Clone)]
struct Step {
    object: Ino,
    action: Action,
}

fn split(path: &Path) -> (PathBuf, String) {
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = path
        .file_name()
        .expect("a named path")
        .to_str()
        .expect("UTF-8 names")
        .to_owned();
    (parent, name)
}

/// Resolves the trace's paths to inodes, replaying it on a namespace.
fn resolve(ops: &[Op]) -> Vec<Step> {
    let mut names: HashMap<PathBuf, Ino> = HashMap::from([(PathBuf::new(), ROOT)]);
    let mut next = ROOT + 1;
    let lookup = |names: &HashMap<PathBuf, Ino>, path: &Path| -> Ino {
        *names
            .get(path)
            .unwrap_or_else(|| panic!("{} is not in the namespace", path.display()))
    };
    let mut steps = Vec::with_capacity(ops.len());
    for (at, op) in ops.iter().enumerate() {
        let step = match op {
            Op::CreateDir(path) | Op::CreateFile(path) => {
                let (parent, name) = split(path);
                let dir = lookup(&names, &parent);
                let ino = next;
                next += 1;
                assert!(names.insert(path.clone(), ino).is_none(), "{op:?}");
                Step {
                    object: dir,
                    action: Action::Link {
                        dir,
                        name,
                        ino,
                        is_dir: matches!(op, Op::CreateDir(_)),
                    },
                }
            }
            Op::Remove(path) => {
                let (parent, name) = split(path);
                let dir = lookup(&names, &parent);
                names.remove(path).expect("removed a present file");
                Step {
                    object: dir,
                    action: Action::Unlink { dir, name },
                }
            }
            Op::Rename { from, to } => {
                let (from_parent, from_name) = split(from);
                let (to_parent, to_name) = split(to);
                assert_eq!(from_parent, to_parent, "renames stay in their directory");
                let dir = lookup(&names, &from_parent);
                let ino = names.remove(from).expect("renamed a present file");
                names.insert(to.clone(), ino);
                Step {
                    object: dir,
                    action: Action::Rename {
                        dir,
                        from: from_name,
                        to: to_name,
                        ino,
                    },
                }
            }
            Op::Write { path, offset, .. } => {
                let ino = lookup(&names, path);
                Step {
                    object: ino,
                    action: Action::Write {
                        ino,
                        offset: *offset,
                        op: at,
                    },
                }
            }
            Op::SetLen { path, len } => {
                let ino = lookup(&names, path);
                Step {
                    object: ino,
                    action: Action::SetLen { ino, len: *len },
                }
            }
            Op::SyncData(path) | Op::SyncDir(path) => Step {
                object: lookup(&names, path),
                action: Action::Sync,
            },
        };
        steps.push(step);
    }
    steps
}

/// Which steps of the first `cut` are durable: those whose object is
/// synced later, still before the cut.
fn durable(steps: &[Step], cut: usize) -> Vec<bool> {
    let mut synced: BTreeSet<Ino> = BTreeSet::new();
    let mut durable = vec![false; cut];
    for at in (0..cut).rev() {
        let step = &steps[at];
        if matches!(step.action, Action::Sync) {
            synced.insert(step.object);
        } else {
            durable[at] = synced.contains(&step.object);
        }
    }
    durable
}

/// A crash state to rebuild: the steps kept, and a write torn at its last
/// page.
#[derive(Debug, Clone)]
struct Crash {
    keep: Vec<usize>,
    /// The step whose write keeps only `.1` bytes of its last page.
    torn: Option<(usize, u64)>,
}

/// The disk a crash state leaves.
#[derive(Debug, Default)]
struct Image {
    dirs: HashMap<Ino, BTreeMap<String, Ino>>,
    files: HashMap<Ino, Vec<u8>>,
}

impl Image {
    fn build(ops: &[Op], steps: &[Step], crash: &Crash) -> Self {
        let mut image = Self::default();
        image.dirs.insert(ROOT, BTreeMap::new());
        for &at in &crash.keep {
            match &steps[at].action {
                Action::Link {
                    dir,
                    name,
                    ino,
                    is_dir,
                } => {
                    if *is_dir {
                        image.dirs.entry(*ino).or_default();
                    } else {
                        image.files.entry(*ino).or_default();
                    }
                    image
                        .dirs
                        .entry(*dir)
                        .or_default()
                        .insert(name.clone(), *ino);
                }
                Action::Unlink { dir, name } => {
                    image.dirs.entry(*dir).or_default().remove(name);
                }
                Action::Rename { dir, from, to, ino } => {
                    let entries = image.dirs.entry(*dir).or_default();
                    entries.remove(from);
                    entries.insert(to.clone(), *ino);
                }
                Action::Write { ino, offset, op } => {
                    let Op::Write { bytes, .. } = &ops[*op] else {
                        unreachable!("a write step comes from a write")
                    };
                    let mut bytes = bytes.clone();
                    if let Some((torn_at, kept)) = crash.torn
                        && torn_at == at
                    {
                        let end = offset + bytes.len() as u64;
                        let page_start = ((end - 1) / PAGE * PAGE).max(*offset);
                        let from = usize::try_from(page_start - offset + kept).unwrap();
                        bytes[from..].fill(0);
                    }
                    let file = image.files.entry(*ino).or_default();
                    let start = usize::try_from(*offset).unwrap();
                    if file.len() < start + bytes.len() {
                        file.resize(start + bytes.len(), 0);
                    }
                    file[start..start + bytes.len()].copy_from_slice(&bytes);
                }
                Action::SetLen { ino, len } => {
                    let file = image.files.entry(*ino).or_default();
                    file.resize(usize::try_from(*len).unwrap(), 0);
                }
                Action::Sync => {}
            }
        }
        image
    }

    /// Writes what is reachable from the root into `dir`.
    fn write(&self, dir: &Path) {
        self.write_dir(ROOT, dir);
    }

    fn write_dir(&self, ino: Ino, dir: &Path) {
        for (name, child) in &self.dirs[&ino] {
            let path = dir.join(name);
            if self.dirs.contains_key(child) {
                fs::create_dir(&path).unwrap();
                self.write_dir(*child, &path);
            } else {
                fs::write(&path, &self.files[child]).unwrap();
            }
        }
    }
}

/// The cut variants of one cut point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Variant {
    None,
    Prefix,
    All,
    Torn,
}

/// The crash states of a power cut after the first `cut` operations.
fn crashes(ops: &[Op], steps: &[Step], cut: usize, rng: &mut Rng) -> Vec<(Variant, String, Crash)> {
    let durable = durable(steps, cut);
    let kept: Vec<usize> = (0..cut).filter(|&at| durable[at]).collect();
    let in_flight: Vec<usize> = (0..cut)
        .filter(|&at| !durable[at] && !matches!(steps[at].action, Action::Sync))
        .collect();
    let with = |extra: &[usize]| {
        let mut keep = kept.clone();
        keep.extend_from_slice(extra);
        keep.sort_unstable();
        keep
    };
    let mut out = vec![(
        Variant::None,
        format!("none of {} in flight", in_flight.len()),
        Crash {
            keep: kept.clone(),
            torn: None,
        },
    )];
    if in_flight.is_empty() {
        return out;
    }
    if in_flight.len() >= 2 {
        let count = usize::try_from(rng.range(1, in_flight.len() as u64)).unwrap();
        out.push((
            Variant::Prefix,
            format!("first {count} of {} in flight", in_flight.len()),
            Crash {
                keep: with(&in_flight[..count]),
                torn: None,
            },
        ));
    }
    out.push((
        Variant::All,
        format!("all {} in flight", in_flight.len()),
        Crash {
            keep: with(&in_flight),
            torn: None,
        },
    ));
    let last_write = in_flight
        .iter()
        .rev()
        .find(|&&at| matches!(steps[at].action, Action::Write { .. }));
    if let Some(&at) = last_write {
        let Op::Write { offset, bytes, .. } = &ops[at] else {
            unreachable!("a write step comes from a write")
        };
        let end = offset + bytes.len() as u64;
        let page_start = ((end - 1) / PAGE * PAGE).max(*offset);
        let kept_bytes = rng.range(0, end - page_start);
        out.push((
            Variant::Torn,
            format!(
                "all {} in flight, the last write ({} bytes at {offset}) torn after byte {} \
                 of its last page",
                in_flight.len(),
                bytes.len(),
                kept_bytes
            ),
            Crash {
                keep: with(&in_flight),
                torn: Some((at, kept_bytes)),
            },
        ));
    }
    out
}

// ---------------------------------------------------------------------------
// The workload and what it was told.

/// An event the workload sent, and its acknowledgement.
#[derive(Debug, Clone)]
struct Sent {
    event: EventRecord,
    /// The trace position when it was sent: a cut before it cannot hold it.
    sent: usize,
    /// The seq answered and the trace position when it was answered.
    ack: Option<(u64, usize)>,
}

/// A snapshot put or delete, and the trace positions when it was asked
/// for and answered.
#[derive(Debug, Clone)]
struct SnapshotChange {
    /// The stored record (as read back), `None` for a delete.
    record: Option<SnapshotRecord>,
    sent: usize,
    ack: usize,
}

type Key = (Tenant, RunId);

#[derive(Default)]
struct Expected {
    streams: BTreeMap<Key, BTreeMap<EventId, Sent>>,
    /// Every attempted change per snapshot key, in order.
    snapshots: BTreeMap<(Key, SnapshotId), Vec<SnapshotChange>>,
}

struct Workload {
    dir: PathBuf,
    recorder: Arc<Recorder>,
    store: Option<JsonlStore>,
    expected: Expected,
    clock: u64,
    next_id: usize,
    rng: Rng,
}

fn streams() -> Vec<Key> {
    let local = Tenant::local();
    let acme = Tenant::new("acme", "prod", None).unwrap();
    vec![
        (local, RunId::new("run-a").unwrap()),
        // The same run id under another tenant is another stream.
        (acme.clone(), RunId::new("run-a").unwrap()),
        (acme, RunId::new("run-b").unwrap()),
    ]
}

impl Workload {
    async fn open(&mut self) {
        let options = JsonlOptions::default().with_io_observer(self.recorder.clone());
        self.store = Some(JsonlStore::open_with(&self.dir, options).await.unwrap());
    }

    fn store(&self) -> &JsonlStore {
        self.store.as_ref().unwrap()
    }

    fn event(&mut self, (tenant, run): &Key) -> EventRecord {
        self.clock += 10;
        self.next_id += 1;
        // Payloads of 200-1,700 bytes, so batches cross page boundaries.
        let size = usize::try_from(self.rng.range(200, 1700)).unwrap();
        EventRecord::new(
            tenant,
            run.clone(),
            EventId::new(format!("e{}", self.next_id)).unwrap(),
            "step",
            self.clock,
        )
        .with_payload(json!({"n": self.next_id, "pad": "x".repeat(size)}))
    }

    async fn append_batch(&mut self, key: &Key, count: usize) {
        let events: Vec<EventRecord> = (0..count).map(|_| self.event(key)).collect();
        let sent = self.recorder.len();
        for event in &events {
            self.expected
                .streams
                .entry(key.clone())
                .or_default()
                .insert(
                    event.event_id.clone(),
                    Sent {
                        event: event.clone(),
                        sent,
                        ack: None,
                    },
                );
        }
        let outcomes = self
            .store()
            .append_batch(&key.0, &key.1, &events, None)
            .await
            .unwrap();
        let ack = self.recorder.len();
        let stream = self.expected.streams.get_mut(key).unwrap();
        for (event, outcome) in events.iter().zip(outcomes) {
            assert!(outcome.inserted);
            stream.get_mut(&event.event_id).unwrap().ack = Some((outcome.seq, ack));
        }
    }

    /// Sends every event of `earlier` sent before its trace position `kill`
    /// again, one batch per stream: those acknowledged before it answer
    /// their seq; every answer is recorded as this handle's.
    async fn resend(&mut self, earlier: &Expected, kill: usize) {
        assert!(self.expected.streams.is_empty());
        for (key, sent) in &earlier.streams {
            let entries: Vec<&Sent> = sent.values().filter(|entry| entry.sent < kill).collect();
            if entries.is_empty() {
                continue;
            }
            let events: Vec<EventRecord> =
                entries.iter().map(|entry| entry.event.clone()).collect();
            let at = self.recorder.len();
            let outcomes = self
                .store()
                .append_batch(&key.0, &key.1, &events, None)
                .await
                .unwrap();
            let ack = self.recorder.len();
            let stream = self.expected.streams.entry(key.clone()).or_default();
            for (entry, outcome) in entries.iter().zip(outcomes) {
                if let Some((seq, acked)) = entry.ack
                    && acked <= kill
                {
                    assert_eq!((outcome.seq, outcome.inserted), (seq, false));
                }
                stream.insert(
                    entry.event.event_id.clone(),
                    Sent {
                        event: entry.event.clone(),
                        sent: at,
                        ack: Some((outcome.seq, ack)),
                    },
                );
            }
        }
    }

    /// Sends an acknowledged event again: the answer is its seq, and
    /// nothing is written.
    async fn retry(&mut self, key: &Key) {
        let (event, seq) = {
            let stream = &self.expected.streams[key];
            let sent = stream.values().next().unwrap();
            (sent.event.clone(), sent.ack.unwrap().0)
        };
        let before = self.recorder.len();
        let outcome = self.store().append(&key.0, &event).await.unwrap();
        assert_eq!((outcome.seq, outcome.inserted), (seq, false));
        assert_eq!(self.recorder.len(), before, "a retry writes nothing");
    }

    async fn put(&mut self, key: &Key, name: &str) {
        self.clock += 10;
        let last = self.store().last_seq(&key.0, &key.1).await.unwrap();
        let snapshot_id = SnapshotId::new(name).unwrap();
        let record = SnapshotRecord::new(
            &key.0,
            key.1.clone(),
            snapshot_id.clone(),
            last,
            self.clock,
            RunStatus::Running,
        )
        .with_checkpoint(json!({"at": self.clock}));
        let sent = self.recorder.len();
        self.store().put(&key.0, &record).await.unwrap();
        let ack = self.recorder.len();
        let stored = self
            .store()
            .get(&key.0, &key.1, &snapshot_id)
            .await
            .unwrap()
            .unwrap();
        self.expected
            .snapshots
            .entry((key.clone(), snapshot_id))
            .or_default()
            .push(SnapshotChange {
                record: Some(stored),
                sent,
                ack,
            });
    }

    async fn compact(&mut self, retention_ms: u64) {
        let report = self
            .store()
            .compact(retention_ms, self.clock)
            .await
            .unwrap();
        assert!(report.removed > 0, "{report:?}");
        assert!(report.failed.is_empty(), "{report:?}");
    }

    async fn prune(&mut self, retention_ms: u64, keep: usize) {
        let listed = |store: JsonlStore, keys: Vec<Key>| async move {
            let mut all = BTreeSet::new();
            for key in keys {
                for snapshot in store.list(&key.0, &key.1, None).await.unwrap() {
                    all.insert((key.clone(), snapshot.snapshot_id));
                }
            }
            all
        };
        let before = listed(self.store().clone(), streams()).await;
        let sent = self.recorder.len();
        let report = self
            .store()
            .prune(retention_ms, keep, self.clock)
            .await
            .unwrap();
        let ack = self.recorder.len();
        let after = listed(self.store().clone(), streams()).await;
        let deleted: Vec<_> = before.difference(&after).cloned().collect();
        assert!(
            !deleted.is_empty() && deleted.len() == report.removed,
            "{report:?}"
        );
        for key in deleted {
            self.expected
                .snapshots
                .get_mut(&key)
                .unwrap()
                .push(SnapshotChange {
                    record: None,
                    sent,
                    ack,
                });
        }
    }
}

/// Runs the workload on `dir` and answers its trace and what it was told.
async fn run_workload(root: &Path, rng: Rng) -> (Vec<Op>, Expected) {
    let recorder = Recorder::new(root);
    let mut work = Workload {
        dir: root.join("store"),
        recorder: recorder.clone(),
        store: None,
        expected: Expected::default(),
        clock: 1_000,
        next_id: 0,
        rng,
    };
    let keys = streams();
    work.open().await;
    for round in 0..4 {
        for key in &keys {
            work.append_batch(key, 1).await;
        }
        for (n, key) in keys.iter().enumerate() {
            work.append_batch(key, 2 + (round + n) % 3).await;
        }
        match round {
            0 => {
                for key in &keys {
                    work.put(key, "snap-0").await;
                }
            }
            1 => {
                // Replaces a snapshot, then compacts below the floors.
                work.put(&keys[0], "snap-0").await;
                work.put(&keys[1], "snap-1").await;
                work.compact(30).await;
            }
            2 => {
                for key in &keys {
                    work.put(key, "snap-2").await;
                }
                work.prune(30, 1).await;
                work.store = None;
                work.open().await;
            }
            _ => {
                work.put(&keys[2], "snap-3").await;
                work.compact(30).await;
            }
        }
        work.retry(&keys[round % keys.len()]).await;
        work.append_batch(&keys[round % keys.len()], 1).await;
    }
    drop(work.store.take());
    (recorder.ops(), work.expected)
}

// ---------------------------------------------------------------------------
// The checks.

/// Checks the store opened on a crash state of a cut after the first `cut`
/// operations; the first failure is returned.
async fn check(store: &JsonlStore, expected: &Expected, cut: usize) -> Result<(), String> {
    let acked = |ack: usize| ack <= cut;
    // Whether a write had started: only then can its operations be in the
    // crash state.
    let started = |sent: usize| sent < cut;
    let found_streams: BTreeSet<Key> = store
        .streams()
        .await
        .map_err(|err| format!("streams: {err}"))?
        .into_iter()
        .map(|key| (key.tenant, key.run_id))
        .collect();
    for key in &found_streams {
        if !expected.streams.contains_key(key) {
            return Err(format!("unknown stream {}:{}", key.0, key.1));
        }
    }
    for (key, sent) in &expected.streams {
        let (tenant, run) = key;
        let name = format!("{tenant}:{run}");
        let records = store
            .read(tenant, run, ReadQuery::all())
            .await
            .map_err(|err| format!("read {name}: {err}"))?;
        // Every id the stream answers for, live or remembered by a marker.
        let mut held: BTreeMap<u64, EventId> = BTreeMap::new();
        let mut hold = |seq: u64, id: &EventId| -> Result<(), String> {
            if let Some(other) = held.insert(seq, id.clone()) {
                return Err(format!("{name}: seq {seq} held by {other} and {id}"));
            }
            Ok(())
        };
        let mut last_live = 0;
        for record in &records {
            if record.seq <= last_live {
                return Err(format!("{name}: seq {} after {last_live}", record.seq));
            }
            last_live = record.seq;
            if record.is_compaction_marker() {
                let ids = compacted_ids(record).map_err(|err| format!("{name}: {err}"))?;
                for id in ids {
                    hold(id.seq, &id.event_id)?;
                }
                continue;
            }
            hold(record.seq, &record.event_id)?;
            let original = match sent.get(&record.event_id) {
                Some(original) if started(original.sent) => original,
                _ => return Err(format!("{name}: unknown event {}", record.event_id)),
            };
            let mut stored = record.clone();
            stored.seq = 0;
            let mut sent_event = original.event.clone();
            sent_event.seq = 0;
            if stored != sent_event {
                return Err(format!("{name}: event {} changed", record.event_id));
            }
        }
        let seqs: Vec<u64> = held.keys().copied().collect();
        let top = seqs.last().copied().unwrap_or(0);
        if seqs != (1..=top).collect::<Vec<_>>() {
            return Err(format!("{name}: seqs not gapless from 1: {seqs:?}"));
        }
        let ids: BTreeSet<&EventId> = held.values().collect();
        if ids.len() != held.len() {
            return Err(format!("{name}: an id held twice"));
        }
        for (seq, id) in &held {
            match sent.get(id) {
                Some(entry) if !started(entry.sent) => {
                    return Err(format!(
                        "{name}: id {id} at seq {seq} was sent after the cut"
                    ));
                }
                None => return Err(format!("{name}: unknown id {id} at seq {seq}")),
                Some(Sent {
                    ack: Some((acked_seq, ack)),
                    ..
                }) if acked(*ack) && acked_seq != seq => {
                    return Err(format!(
                        "{name}: acknowledged event {id} at seq {acked_seq} is at seq {seq}"
                    ));
                }
                Some(_) => {}
            }
        }
        let next = store
            .next_seq(tenant, run)
            .await
            .map_err(|err| format!("next_seq {name}: {err}"))?;
        if next != top + 1 {
            return Err(format!("{name}: next_seq {next} after seq {top}"));
        }
        let mut retry = Vec::new();
        for (id, entry) in sent {
            let Some((seq, ack)) = entry.ack else {
                continue;
            };
            if !acked(ack) {
                continue;
            }
            let found = store
                .seq_of(tenant, run, id)
                .await
                .map_err(|err| format!("seq_of {name} {id}: {err}"))?;
            if found != Some(seq) {
                return Err(format!(
                    "{name}: acknowledged event {id} at seq {seq} is lost (seq_of answers \
                     {found:?})"
                ));
            }
            retry.push((entry.event.clone(), seq));
        }
        if !retry.is_empty() {
            let events: Vec<EventRecord> = retry.iter().map(|(event, _)| event.clone()).collect();
            let outcomes = store
                .append_batch(tenant, run, &events, None)
                .await
                .map_err(|err| format!("retry on {name}: {err}"))?;
            for ((event, seq), outcome) in retry.iter().zip(outcomes) {
                if (outcome.seq, outcome.inserted) != (*seq, false) {
                    return Err(format!(
                        "{name}: retry of {} at seq {seq} answered {outcome:?}",
                        event.event_id
                    ));
                }
            }
        }
    }
    // Snapshots.
    let mut newest: BTreeMap<Key, u64> = BTreeMap::new();
    for ((key, snapshot_id), changes) in &expected.snapshots {
        let (tenant, run) = key;
        let name = format!("{tenant}:{run} snapshot {snapshot_id}");
        let found = store
            .get(tenant, run, snapshot_id)
            .await
            .map_err(|err| format!("get {name}: {err}"))?;
        // What may be there: the last acknowledged change or a later one
        // that had started; with none acknowledged, also nothing.
        let from = changes.iter().rposition(|change| acked(change.ack));
        let later = changes[from.unwrap_or(0)..]
            .iter()
            .filter(|change| started(change.sent))
            .map(|change| change.record.as_ref());
        let allowed: Vec<Option<&SnapshotRecord>> = match from {
            Some(_) => later.collect(),
            None => std::iter::once(None).chain(later).collect(),
        };
        if !allowed.contains(&found.as_ref()) {
            return Err(match (from, &found) {
                (Some(from), None) if changes[from].record.is_some() => {
                    format!("acknowledged {name} is lost")
                }
                (Some(_), Some(_)) if allowed.iter().all(Option::is_none) => {
                    format!("{name}, pruned and acknowledged, is back")
                }
                _ => format!("{name} reads back as {found:?}"),
            });
        }
        if let Some(from) = from
            && let Some(record) = &changes[from].record
        {
            let seq = newest.entry(key.clone()).or_default();
            *seq = (*seq).max(record.seq);
        }
    }
    for (key, seq) in newest {
        let latest = store
            .latest(&key.0, &key.1)
            .await
            .map_err(|err| format!("latest {}:{}: {err}", key.0, key.1))?;
        if latest.as_ref().is_none_or(|latest| latest.seq < seq) {
            return Err(format!(
                "latest of {}:{} is {latest:?}, below acknowledged seq {seq}",
                key.0, key.1
            ));
        }
    }
    let heads = check_feeds(store, expected).await?;
    // The store takes writes again.
    let (tenant, run) = expected.streams.keys().next().unwrap();
    let next = store.next_seq(tenant, run).await.unwrap();
    let event = EventRecord::new(
        tenant,
        run.clone(),
        EventId::new("after-power-loss").unwrap(),
        "step",
        1,
    );
    let outcome = store
        .append(tenant, &event)
        .await
        .map_err(|err| format!("append after reopen: {err}"))?;
    if (outcome.seq, outcome.inserted) != (next, true) {
        return Err(format!("append after reopen answered {outcome:?}"));
    }
    // CONTRACT §29: its position is above every one the crash state held.
    let head = heads.get(tenant).copied().unwrap_or_default();
    let after = store
        .read_feed(tenant, head, 10)
        .await
        .map_err(|err| format!("read_feed: {err}"))?;
    if after.len() != 1 || after[0].record.event_id.as_str() != "after-power-loss" {
        return Err(format!(
            "the feed of {tenant} after {head} is {after:?}, not the one new event"
        ));
    }
    Ok(())
}

/// CONTRACT §29: each tenant's feed holds exactly the records its streams
/// hold, each once, at increasing positions, each stream's events in seq
/// order. Answers each tenant's last position.
async fn check_feeds(
    store: &JsonlStore,
    expected: &Expected,
) -> Result<HashMap<Tenant, FeedPosition>, String> {
    let tenants: BTreeSet<&Tenant> = expected.streams.keys().map(|(tenant, _)| tenant).collect();
    let mut heads = HashMap::new();
    for tenant in tenants {
        let feed = store
            .read_feed(tenant, FeedPosition::START, usize::MAX)
            .await
            .map_err(|err| format!("read_feed {tenant}: {err}"))?;
        if feed
            .windows(2)
            .any(|pair| pair[0].position >= pair[1].position)
        {
            return Err(format!("the feed of {tenant} does not ascend"));
        }
        let mut from_feed: BTreeMap<RunId, Vec<EventRecord>> = BTreeMap::new();
        for entry in &feed {
            from_feed
                .entry(entry.record.run_id.clone())
                .or_default()
                .push(entry.record.clone());
        }
        for ((owner, run), _) in expected.streams.iter() {
            if owner != tenant {
                continue;
            }
            let mut held = store
                .read(tenant, run, ReadQuery::all())
                .await
                .map_err(|err| format!("read {tenant}:{run}: {err}"))?;
            let mut fed = from_feed.remove(run).unwrap_or_default();
            let events: Vec<u64> = fed
                .iter()
                .filter(|record| !record.is_compaction_marker())
                .map(|record| record.seq)
                .collect();
            if events.windows(2).any(|pair| pair[0] >= pair[1]) {
                return Err(format!(
                    "{tenant}:{run}: the feed's events are not in seq order"
                ));
            }
            fed.sort_by_key(|record| record.seq);
            held.sort_by_key(|record| record.seq);
            if fed != held {
                return Err(format!(
                    "{tenant}:{run}: the feed holds other records than read"
                ));
            }
        }
        if let Some((run, _)) = from_feed.into_iter().next() {
            return Err(format!(
                "the feed of {tenant} holds run {run}, which has no stream"
            ));
        }
        heads.insert(
            tenant.clone(),
            feed.last()
                .map_or(FeedPosition::START, |entry| entry.position),
        );
    }
    Ok(heads)
}

fn describe(op: &Op) -> String {
    match op {
        Op::SyncData(path) => format!("sync of {}", path.display()),
        Op::SyncDir(path) if path.as_os_str().is_empty() => "sync of the root".to_owned(),
        Op::SyncDir(path) => format!("sync of directory {}", path.display()),
        other => format!("{other:?}"),
    }
}

/// The sync points of `ops` from `from` on, and its end: where power is cut.
fn cut_points(ops: &[Op], steps: &[Step], from: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (from..ops.len())
        .filter(|&at| matches!(steps[at].action, Action::Sync))
        .collect();
    cuts.push(ops.len());
    cuts
}

/// Rebuilds, opens and checks every crash state (of the `only` variant,
/// if given) of every cut in `cuts`; panics naming the first failure.
/// Answers how many states of each variant were checked.
async fn check_cuts(
    ops: &[Op],
    cuts: &[usize],
    only: Option<Variant>,
    expected: &Expected,
    rng: &mut Rng,
    scratch: &Path,
    label: &str,
) -> BTreeMap<Variant, usize> {
    let steps = resolve(ops);
    let mut counts: BTreeMap<Variant, usize> = BTreeMap::new();
    for (number, &cut) in cuts.iter().enumerate() {
        let at = ops
            .get(cut)
            .map_or_else(|| "the end of the trace".to_owned(), describe);
        for (variant, what, crash) in crashes(ops, &steps, cut, rng) {
            if only.is_some_and(|only| only != variant) {
                continue;
            }
            *counts.entry(variant).or_default() += 1;
            let root = scratch.join(format!("cut-{number}-{variant:?}"));
            fs::create_dir(&root).unwrap();
            Image::build(ops, &steps, &crash).write(&root);
            let context = format!(
                "{label}, cut {number} of {} (before op {cut}: {at}), {variant:?}: {what}",
                cuts.len()
            );
            let store = match JsonlStore::open(root.join("store")).await {
                Ok(store) => store,
                Err(err) => panic!("{context}: open failed: {err}"),
            };
            if let Err(failure) = check(&store, expected, cut).await {
                panic!("{context}: {failure}");
            }
            drop(store);
            fs::remove_dir_all(&root).unwrap();
        }
    }
    counts
}

/// CONTRACT §16, §17: at every sync of the workload, and at its end, every
/// crash state opens without `Corrupt` and holds everything acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_at_every_sync_keeps_everything_acknowledged() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let live = tempfile::tempdir().unwrap();
    let (ops, expected) = run_workload(live.path(), Rng::new(rng.next_u64())).await;
    let cuts = cut_points(&ops, &resolve(&ops), 0);
    let scratch = tempfile::tempdir().unwrap();
    let label = format!("seed {seed}");
    let counts = check_cuts(
        &ops,
        &cuts,
        None,
        &expected,
        &mut rng,
        scratch.path(),
        &label,
    )
    .await;
    let states: usize = counts.values().sum();
    eprintln!(
        "power loss: {} ops, {} cut points, {states} crash states {counts:?}, seed {seed}",
        ops.len(),
        cuts.len()
    );
    // The workload reaches every kind of crash state, many times.
    assert!(cuts.len() >= 40, "{} cut points", cuts.len());
    for variant in [Variant::None, Variant::Prefix, Variant::All, Variant::Torn] {
        assert!(
            counts.get(&variant).copied().unwrap_or(0) >= 10,
            "{counts:?}"
        );
    }
}

/// What the first workload was told, as of a kill after its first `kill`
/// operations, followed by what the next handle was told (its trace
/// positions shifted by `kill`).
fn after_kill(first: &Expected, kill: usize, next: Expected) -> Expected {
    let mut merged = Expected::default();
    for (key, sent) in &first.streams {
        let stream = merged.streams.entry(key.clone()).or_default();
        for (id, entry) in sent.iter().filter(|(_, entry)| entry.sent < kill) {
            let mut entry = entry.clone();
            entry.ack = entry.ack.filter(|(_, ack)| *ack <= kill);
            stream.insert(id.clone(), entry);
        }
    }
    for (key, changes) in &first.snapshots {
        let kept: Vec<SnapshotChange> = changes
            .iter()
            .filter(|change| change.sent < kill)
            .map(|change| SnapshotChange {
                ack: if change.ack <= kill {
                    change.ack
                } else {
                    usize::MAX
                },
                ..change.clone()
            })
            .collect();
        if !kept.is_empty() {
            merged.snapshots.insert(key.clone(), kept);
        }
    }
    for (key, sent) in next.streams {
        let stream = merged.streams.entry(key).or_default();
        for (id, mut entry) in sent {
            entry.sent += kill;
            entry.ack = entry.ack.map(|(seq, ack)| (seq, ack + kill));
            // A resent event was sent first by the killed process, and
            // acknowledged by it if it was.
            if let Some(first) = stream.get(&id) {
                entry.sent = first.sent;
                entry.ack = first.ack.or(entry.ack);
            }
            stream.insert(id, entry);
        }
    }
    for (key, changes) in next.snapshots {
        let all = merged.snapshots.entry(key).or_default();
        all.extend(changes.into_iter().map(|change| SnapshotChange {
            sent: change.sent + kill,
            ack: change.ack + kill,
            ..change
        }));
    }
    merged
}

/// CONTRACT §16: a process killed at any point keeps its unsynced writes
/// only in the page cache. A new handle opened on that state must make
/// what it relies on durable before it acknowledges: power cut at every
/// sync of the new handle (the killed one's unsynced operations still in
/// flight), every crash state holds everything acknowledged by either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_then_power_loss_keeps_what_the_next_handle_acknowledged() {
    let seed = seed();
    let mut rng = Rng::new(seed ^ 0x6b11);
    let live = tempfile::tempdir().unwrap();
    let (first, expected) = run_workload(live.path(), Rng::new(rng.next_u64())).await;
    let steps = resolve(&first);
    let scratch = tempfile::tempdir().unwrap();
    let mut counts: BTreeMap<Variant, usize> = BTreeMap::new();
    let kills = cut_points(&first, &steps, 0);
    for (number, &kill) in kills.iter().enumerate() {
        // Killed before the operation at `kill`: everything before it is
        // in the page cache, which the next handle sees.
        let root = scratch.path().join(format!("kill-{number}"));
        fs::create_dir(&root).unwrap();
        let all = Crash {
            keep: (0..kill).collect(),
            torn: None,
        };
        Image::build(&first, &steps, &all).write(&root);
        let recorder = Recorder::new(&root);
        let mut next = Workload {
            dir: root.join("store"),
            recorder: recorder.clone(),
            store: None,
            expected: Expected::default(),
            clock: 1_000_000,
            next_id: 1_000_000,
            rng: Rng::new(rng.next_u64()),
        };
        next.open().await;
        next.resend(&expected, kill).await;
        let resent = kill + recorder.len();
        for key in streams() {
            next.append_batch(&key, 1).await;
            next.put(&key, "after-kill").await;
        }
        drop(next.store.take());
        let mut ops = first[..kill].to_vec();
        ops.extend(recorder.ops());
        let expected = after_kill(&expected, kill, next.expected);
        let syncs = cut_points(&ops, &resolve(&ops), kill);
        let at = first
            .get(kill)
            .map_or_else(|| "the end".to_owned(), describe);
        let label = format!(
            "seed {seed}, killed before op {kill} of {} ({at})",
            first.len()
        );
        // Power is cut at the first sync after the resent events were
        // acknowledged (a later sync of the log would make the killed
        // process's writes durable too, hiding a missing one), with none
        // of the operations in flight; and at the end, in every variant.
        let after_resend = syncs
            .iter()
            .copied()
            .find(|&at| at >= resent)
            .expect("the end is a cut point");
        let end = ops.len();
        for (cuts, only) in [(vec![after_resend], Some(Variant::None)), (vec![end], None)] {
            let found = check_cuts(&ops, &cuts, only, &expected, &mut rng, &root, &label).await;
            for (variant, count) in found {
                *counts.entry(variant).or_default() += count;
            }
        }
        fs::remove_dir_all(&root).unwrap();
    }
    let states: usize = counts.values().sum();
    eprintln!(
        "kill then power loss: {} kill points, {states} crash states {counts:?}, seed {seed}",
        kills.len()
    );
    assert!(kills.len() >= 40, "{} kill points", kills.len());
}

/// The model itself: an entry is durable only after its directory's sync,
/// data only after its file's sync, and a rename publishes the inode.
#[test]
fn the_disk_model_keeps_only_what_was_synced() {
    let path = PathBuf::from;
    let ops = vec![
        Op::CreateFile(path("a.tmp")),
        Op::Write {
            path: path("a.tmp"),
            offset: 0,
            bytes: b"new".to_vec(),
        },
        Op::SyncData(path("a.tmp")),
        Op::Rename {
            from: path("a.tmp"),
            to: path("a"),
        },
        Op::SyncDir(PathBuf::new()),
        Op::Write {
            path: path("a"),
            offset: 3,
            bytes: b" tail".to_vec(),
        },
        Op::SyncData(path("a")),
    ];
    let steps = resolve(&ops);
    let files = |cut: usize, variant: Variant| -> BTreeMap<String, Vec<u8>> {
        let mut rng = Rng::new(1);
        let (_, _, crash) = crashes(&ops, &steps, cut, &mut rng)
            .into_iter()
            .find(|(found, _, _)| *found == variant)
            .unwrap();
        let image = Image::build(&ops, &steps, &crash);
        image.dirs[&ROOT]
            .iter()
            .map(|(name, ino)| (name.clone(), image.files[ino].clone()))
            .collect()
    };
    // Before the directory sync the entries are in flight.
    assert!(files(4, Variant::None).is_empty());
    assert_eq!(
        files(4, Variant::All),
        [("a".into(), b"new".to_vec())].into()
    );
    // After it, the renamed file is there with its synced data only.
    assert_eq!(
        files(6, Variant::None),
        [("a".into(), b"new".to_vec())].into()
    );
    assert_eq!(
        files(6, Variant::All),
        [("a".into(), b"new tail".to_vec())].into()
    );
    let torn = files(6, Variant::Torn);
    assert!(
        torn["a"].starts_with(b"new") && torn["a"].len() == 8,
        "{torn:?}"
    );
    assert_eq!(files(7, Variant::None), files(6, Variant::All));
}
