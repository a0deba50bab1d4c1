//! CONTRACT §16 on a simulated disk: what a power cut or a killed process
//! leaves of a store, at every point a workload can be cut.
//!
//! A scripted workload (single appends, atomic batches, snapshot puts,
//! compaction, snapshot prune, a batch retrying a compacted id; two tenants,
//! two runs each) runs once on a [`disk::SimDisk`], which logs every write,
//! length change and sync; after each call that returned `Ok` the workload
//! records how many operations the disk had seen, so a cut knows which calls
//! were acknowledged before it.
//!
//! - `durable_store_survives_power_loss_at_every_sync`: for every sync of
//!   the log and every [`disk::Loss`] (pending writes dropped, a random
//!   prefix kept, a random subset kept, all kept with the last one torn),
//!   the image the cut leaves is opened as a store and checked.
//! - `a_durable_open_syncs_what_a_killed_process_left`: the workload is
//!   killed just before each of its syncs, leaving the writes since the
//!   previous sync in the page cache; a new handle opens on that disk,
//!   finds the killed call's events, answers a read and a retry of each,
//!   and power is then cut at every sync of the new handle and after its
//!   last answer: every answer it gave must survive.
//! - `a_durable_open_syncs_before_it_writes_and_a_relaxed_one_never_does`:
//!   the store's own sync at open, which the test above cannot tell from
//!   the syncs redb makes while it opens a database, comes first.
//! - `relaxed_store_survives_a_kill_after_every_write`: relaxed mode never
//!   syncs, so a killed process leaves every write issued before it; the
//!   workload is cut after every single write and checked the same way.
//!
//! The checks ([`check`]): the store opens (no `Corrupt`); every stream is
//! gapless from 1 with each id once (live, or remembered by its compaction
//! marker); every acknowledged event is at its acknowledged seq, and out of
//! the live records once an acknowledged compaction pruned it; every batch
//! is there whole or not at all; acknowledged snapshots are readable unless
//! an acknowledged prune deleted them; each tenant's feed holds exactly the
//! records its streams hold, each once, at increasing positions (CONTRACT
//! §29); retrying every acknowledged event answers its original seq, and
//! the next append gets the next seq.

mod disk;

use std::collections::{BTreeMap, BTreeSet};

use disk::{Loss, Op, Rng, SimDisk, image_after, sync_points, sync_points_from};
use runstore_core::{
    Durability, EventId, EventLog, EventRecord, FeedPosition, ReadQuery, RunId, RunStatus,
    SnapshotId, SnapshotRecord, SnapshotStore, Tenant,
    raw::compaction::{CompactionPolicy, compacted_ids, marker_payload},
};
use runstore_redb::{RedbOptions, RedbStore};

/// The workload's clock: every event occurred long before it.
const NOW: u64 = 10_000_000;
/// Compaction and prune retention: events and snapshots from before
/// `NOW - RETENTION` are old.
const RETENTION: u64 = 1_000_000;
/// The name the simulated file goes by in errors.
const NAME: &str = "sim.redb";

/// A call's first operation and the operation count when it returned `Ok`.
#[derive(Clone, Copy, Debug)]
struct Span {
    issued: usize,
    acked: usize,
}

struct AckedEvent {
    stream: usize,
    /// The event as sent, with its acknowledged seq.
    record: EventRecord,
    acked: usize,
}

struct Batch {
    stream: usize,
    ids: Vec<EventId>,
}

struct AckedSnapshot {
    stream: usize,
    id: SnapshotId,
    seq: u64,
    acked: usize,
    /// The prune (index into `Script::prunes`) that deletes it.
    pruned_by: Option<usize>,
}

struct Compaction {
    span: Span,
    /// The seq of every stream's newest snapshot when it ran.
    floor: u64,
}

/// What the workload did, and when.
struct Script {
    streams: Vec<(Tenant, RunId)>,
    events: Vec<AckedEvent>,
    batches: Vec<Batch>,
    snapshots: Vec<AckedSnapshot>,
    prunes: Vec<Span>,
    compactions: Vec<Compaction>,
    policy: CompactionPolicy,
}

/// Runs the workload on `disk`, returning what it did.
struct Workload {
    disk: SimDisk,
    store: RedbStore,
    script: Script,
    next_id: Vec<u64>,
}

impl Workload {
    async fn start(disk: &SimDisk, durability: Durability) -> Self {
        let options = RedbOptions::default().with_durability(durability);
        let store = RedbStore::open_with_backend(disk.clone(), NAME, options)
            .await
            .expect("open on the simulated disk");
        let tenants = [
            Tenant::new("acme", "prod", None).expect("tenant"),
            Tenant::new("globex", "dev", Some("eu-1".to_owned())).expect("tenant"),
        ];
        let mut streams = Vec::new();
        for tenant in tenants {
            for run in ["run-a", "run-b"] {
                streams.push((tenant.clone(), RunId::new(run).expect("run id")));
            }
        }
        let count = streams.len();
        Self {
            disk: disk.clone(),
            store,
            script: Script {
                streams,
                events: Vec::new(),
                batches: Vec::new(),
                snapshots: Vec::new(),
                prunes: Vec::new(),
                compactions: Vec::new(),
                policy: CompactionPolicy::new(RETENTION, NOW)
                    .expect("a valid clock")
                    .expect("a retention above 0"),
            },
            next_id: vec![1; count],
        }
    }

    fn new_event(&mut self, stream: usize) -> EventRecord {
        let (tenant, run) = &self.script.streams[stream];
        let n = self.next_id[stream];
        self.next_id[stream] += 1;
        let id = EventId::new(format!("e-{n}")).expect("event id");
        let mut event = EventRecord::new(tenant, run.clone(), id, "step", 1_000 + n);
        event.payload = serde_json::json!({ "n": n, "pad": "x".repeat(200) });
        event
    }

    /// Appends `fresh` new events and the `retried` earlier ones as one
    /// batch (one event without retries is a single append).
    async fn append(&mut self, stream: usize, fresh: usize, retried: &[usize]) {
        let new: Vec<EventRecord> = (0..fresh).map(|_| self.new_event(stream)).collect();
        let mut request = new.clone();
        for &earlier in retried {
            let mut again = self.script.events[earlier].record.clone();
            again.seq = 0;
            request.push(again);
        }
        let (tenant, run) = self.script.streams[stream].clone();
        let outcomes = self
            .store
            .append_batch(&tenant, &run, &request, None)
            .await
            .expect("append");
        let acked = self.disk.ops();
        for (mut record, outcome) in new.into_iter().zip(&outcomes) {
            assert!(outcome.inserted, "a new id is inserted");
            record.seq = outcome.seq;
            self.script.events.push(AckedEvent {
                stream,
                record,
                acked,
            });
        }
        for (&earlier, outcome) in retried.iter().zip(&outcomes[fresh..]) {
            let original = self.script.events[earlier].record.seq;
            assert_eq!((outcome.seq, outcome.inserted), (original, false), "retry");
        }
        if fresh > 1 {
            let ids = request[..fresh]
                .iter()
                .map(|e| e.event_id.clone())
                .collect();
            self.script.batches.push(Batch { stream, ids });
        }
    }

    async fn put_snapshot(
        &mut self,
        stream: usize,
        id: &str,
        seq: u64,
        created_at_ms: u64,
        pruned_by: Option<usize>,
    ) {
        let (tenant, run) = self.script.streams[stream].clone();
        let id = SnapshotId::new(id).expect("snapshot id");
        let snapshot = SnapshotRecord::new(
            &tenant,
            run,
            id.clone(),
            seq,
            created_at_ms,
            RunStatus::Running,
        );
        self.store.put(&tenant, &snapshot).await.expect("put");
        self.script.snapshots.push(AckedSnapshot {
            stream,
            id,
            seq,
            acked: self.disk.ops(),
            pruned_by,
        });
    }

    async fn compact(&mut self, floor: u64) {
        let issued = self.disk.ops();
        let report = self
            .store
            .compact(RETENTION, self.script.policy.now_ms())
            .await
            .expect("compact");
        assert!(report.is_clean(), "{report:?}");
        assert!(report.removed > 0, "the pass pruned something");
        let span = Span {
            issued,
            acked: self.disk.ops(),
        };
        self.script.compactions.push(Compaction { span, floor });
    }

    async fn prune(&mut self) {
        let issued = self.disk.ops();
        let report = self.store.prune(RETENTION, 1, NOW).await.expect("prune");
        assert_eq!(report.removed, self.script.streams.len(), "one per stream");
        self.script.prunes.push(Span {
            issued,
            acked: self.disk.ops(),
        });
    }

    /// The script: returns it once the store is closed.
    async fn run(mut self) -> Script {
        let streams = self.script.streams.len();
        for _ in 0..3 {
            for stream in 0..streams {
                self.append(stream, 1, &[]).await;
            }
        }
        for stream in 0..streams {
            self.append(stream, 4, &[]).await; // seqs 4..=7
        }
        let prune = self.script.prunes.len();
        for stream in 0..streams {
            self.put_snapshot(stream, "old", 3, 1_000, Some(prune))
                .await;
            self.put_snapshot(stream, "mid", 5, NOW - 10, None).await;
        }
        self.compact(5).await; // prunes seqs 1..=4
        for stream in 0..streams {
            self.append(stream, 1, &[]).await;
            self.append(stream, 1, &[]).await;
            self.append(stream, 3, &[]).await; // seqs 8..=12
        }
        self.prune().await; // deletes every "old"
        for stream in 0..streams {
            self.put_snapshot(stream, "late", 10, NOW, None).await;
        }
        self.compact(10).await; // prunes seqs 5..=9, merging the markers
        for stream in 0..streams {
            let first = self
                .script
                .events
                .iter()
                .position(|event| event.stream == stream)
                .expect("the stream's first event");
            self.append(stream, 2, &[first]).await;
        }
        drop(self.store);
        self.script
    }
}

/// Checks that each tenant's feed, read in small pages, holds exactly the
/// records its streams hold, each once, at increasing positions.
async fn check_feed(store: &RedbStore, script: &Script) -> Result<(), String> {
    let mut tenants: Vec<&Tenant> = Vec::new();
    for (tenant, _) in &script.streams {
        if !tenants.contains(&tenant) {
            tenants.push(tenant);
        }
    }
    for tenant in tenants {
        let mut fed = Vec::new();
        let mut after = FeedPosition::START;
        loop {
            let page = store
                .read_feed(tenant, after, 7)
                .await
                .map_err(|err| format!("read_feed: {err}"))?;
            for entry in &page {
                if entry.position <= after {
                    return Err(format!("feed: {} after {after}", entry.position));
                }
                after = entry.position;
            }
            let done = page.len() < 7;
            fed.extend(page.into_iter().map(|entry| entry.record));
            if done {
                break;
            }
        }
        let mut stored = Vec::new();
        for (_, run) in script.streams.iter().filter(|(t, _)| t == tenant) {
            stored.extend(
                store
                    .read(tenant, run, ReadQuery::all())
                    .await
                    .map_err(|err| format!("read: {err}"))?,
            );
        }
        let key = |record: &EventRecord| (record.run_id.clone(), record.seq);
        fed.sort_by_key(key);
        stored.sort_by_key(key);
        if fed != stored {
            return Err(format!(
                "feed of {tenant}: {:?}, the streams hold {:?}",
                fed.iter().map(key).collect::<Vec<_>>(),
                stored.iter().map(key).collect::<Vec<_>>()
            ));
        }
    }
    Ok(())
}

/// Opens `image` as a store and checks it against what `script` had
/// acknowledged once `cut` operations were issued. `Err` says what is
/// wrong.
async fn check(image: Vec<u8>, script: &Script, cut: usize) -> Result<(), String> {
    let store =
        RedbStore::open_with_backend(SimDisk::with_image(image), NAME, RedbOptions::default())
            .await
            .map_err(|err| format!("the store does not open: {err}"))?;
    check_feed(&store, script).await?;
    let compacted_floor = script
        .compactions
        .iter()
        .filter(|compaction| compaction.span.acked <= cut)
        .map(|compaction| compaction.floor)
        .max();

    for (stream, (tenant, run)) in script.streams.iter().enumerate() {
        let records = store
            .read(tenant, run, ReadQuery::all())
            .await
            .map_err(|err| format!("stream {stream}: read: {err}"))?;
        let next = store
            .next_seq(tenant, run)
            .await
            .map_err(|err| format!("stream {stream}: next_seq: {err}"))?;
        // Every id the stream knows, with its seq, and the live ones.
        let mut known: BTreeMap<EventId, u64> = BTreeMap::new();
        let mut live = BTreeSet::new();
        let mut last = 0;
        for record in &records {
            if record.seq <= last {
                return Err(format!("stream {stream}: seq {} after {last}", record.seq));
            }
            last = record.seq;
            if record.is_compaction_marker() {
                let payload = marker_payload(record).map_err(|err| err.to_string())?;
                if payload.compacted_through_seq != record.seq {
                    return Err(format!("stream {stream}: marker at {}", record.seq));
                }
                let ids = compacted_ids(record).map_err(|err| err.to_string())?;
                for id in ids {
                    if known.insert(id.event_id.clone(), id.seq).is_some() {
                        return Err(format!("stream {stream}: id {} twice", id.event_id));
                    }
                }
            } else {
                live.insert(record.event_id.clone());
                if known.insert(record.event_id.clone(), record.seq).is_some() {
                    return Err(format!("stream {stream}: id {} twice", record.event_id));
                }
            }
        }
        let mut seqs: Vec<u64> = known.values().copied().collect();
        seqs.sort_unstable();
        if seqs != (1..next).collect::<Vec<_>>() {
            return Err(format!(
                "stream {stream}: seqs {seqs:?} are not 1..{next} once each"
            ));
        }

        let acked: Vec<&AckedEvent> = script
            .events
            .iter()
            .filter(|event| event.stream == stream && event.acked <= cut)
            .collect();
        for event in &acked {
            let id = &event.record.event_id;
            let want = event.record.seq;
            if known.get(id) != Some(&want) {
                return Err(format!(
                    "stream {stream}: acknowledged {id} at seq {want} is {:?}",
                    known.get(id)
                ));
            }
            let seq_of = store
                .seq_of(tenant, run, id)
                .await
                .map_err(|err| err.to_string())?;
            if seq_of != Some(want) {
                return Err(format!("stream {stream}: seq_of({id}) is {seq_of:?}"));
            }
            let pruned = compacted_floor
                .is_some_and(|floor| script.policy.prunes(&event.record, Some(floor)));
            if pruned && live.contains(id) {
                return Err(format!("stream {stream}: {id} is live after compaction"));
            }
        }
        for batch in script.batches.iter().filter(|batch| batch.stream == stream) {
            let present = batch
                .ids
                .iter()
                .filter(|id| known.contains_key(*id))
                .count();
            if present != 0 && present != batch.ids.len() {
                return Err(format!(
                    "stream {stream}: {present} of the batch {:?}",
                    batch.ids
                ));
            }
        }
        for snapshot in script
            .snapshots
            .iter()
            .filter(|snapshot| snapshot.stream == stream && snapshot.acked <= cut)
        {
            let stored = store
                .get(tenant, run, &snapshot.id)
                .await
                .map_err(|err| format!("stream {stream}: get {}: {err}", snapshot.id))?;
            let prune = snapshot.pruned_by.map(|index| script.prunes[index]);
            let must_exist = prune.is_none_or(|prune| prune.issued >= cut);
            let must_be_gone = prune.is_some_and(|prune| prune.acked <= cut);
            match stored {
                Some(stored) if stored.seq != snapshot.seq || must_be_gone => {
                    return Err(format!(
                        "stream {stream}: snapshot {} at {} (pruned: {must_be_gone})",
                        snapshot.id, stored.seq
                    ));
                }
                None if must_exist => {
                    return Err(format!("stream {stream}: snapshot {} lost", snapshot.id));
                }
                _ => {}
            }
        }

        // Retrying every acknowledged event answers its seq; the next
        // append gets the next seq.
        let retry: Vec<EventRecord> = acked
            .iter()
            .map(|event| {
                let mut again = event.record.clone();
                again.seq = 0;
                again
            })
            .collect();
        if !retry.is_empty() {
            let outcomes = store
                .append_batch(tenant, run, &retry, None)
                .await
                .map_err(|err| format!("stream {stream}: retry: {err}"))?;
            for (event, outcome) in acked.iter().zip(outcomes) {
                if (outcome.seq, outcome.inserted) != (event.record.seq, false) {
                    return Err(format!(
                        "stream {stream}: retry of {} answered {outcome:?}",
                        event.record.event_id
                    ));
                }
            }
        }
        let fresh = EventRecord::new(
            tenant,
            run.clone(),
            EventId::new("after-the-cut").expect("id"),
            "t",
            NOW,
        );
        let outcome = store
            .append_batch(tenant, run, &[fresh], None)
            .await
            .map_err(|err| format!("stream {stream}: append after the cut: {err}"))?;
        if outcome[0].seq != next || !outcome[0].inserted {
            return Err(format!("stream {stream}: next append {:?}", outcome[0]));
        }
    }
    Ok(())
}

/// Fails listing the first few of `failures` out of `checked`.
fn report(kind: &str, checked: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of {checked} {kind} failed; the first:\n{}",
        failures.len(),
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_store_survives_power_loss_at_every_sync() {
    let disk = SimDisk::default();
    let script = Workload::start(&disk, Durability::Durable)
        .await
        .run()
        .await;
    let log = disk.log();
    let mut cuts = Vec::new();
    let mut rng = Rng::new(0x5eed_0016);
    sync_points(&log, |point| {
        for loss in Loss::ALL {
            let image = point.power_loss(loss, &mut rng);
            cuts.push((point.at, loss, image));
        }
    });
    let syncs = cuts.len() / Loss::ALL.len();
    let mut failures = Vec::new();
    for (at, loss, image) in cuts.iter().cloned() {
        if let Err(why) = check(image, &script, at).await {
            failures.push(format!("sync at op {at}, {loss:?}: {why}"));
        }
    }
    println!(
        "{syncs} sync points x {} losses = {} cuts checked ({} ops)",
        Loss::ALL.len(),
        cuts.len(),
        log.len()
    );
    report("power cuts", cuts.len(), &failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_store_survives_a_kill_after_every_write() {
    let disk = SimDisk::default();
    let script = Workload::start(&disk, Durability::Relaxed)
        .await
        .run()
        .await;
    let log = disk.log();
    let syncs = log.iter().filter(|op| matches!(op, Op::Sync)).count();
    // The one sync is the close's.
    assert_eq!(syncs, 1, "relaxed mode syncs only on close");
    let kills: Vec<usize> = (0..=log.len())
        .filter(|&ops| ops == 0 || matches!(log[ops - 1], Op::Write { .. }))
        .collect();
    let mut failures = Vec::new();
    for &ops in &kills {
        if let Err(why) = check(image_after(&log, ops), &script, ops).await {
            failures.push(format!("killed after op {ops}: {why}"));
        }
    }
    println!("{} kill points checked ({} ops)", kills.len(), log.len());
    report("kills", kills.len(), &failures);
}

/// One answer a handle gave: event `id` of `stream` is stored at `seq`,
/// answered once the disk had seen `acked` operations.
struct Answer {
    stream: usize,
    id: EventId,
    seq: u64,
    acked: usize,
}

/// Opens `image` and checks that every answer given once at most `cut`
/// operations were issued still holds.
async fn check_answers(
    image: Vec<u8>,
    script: &Script,
    answers: &[Answer],
    cut: usize,
) -> Result<(), String> {
    let store =
        RedbStore::open_with_backend(SimDisk::with_image(image), NAME, RedbOptions::default())
            .await
            .map_err(|err| format!("the store does not open: {err}"))?;
    for answer in answers.iter().filter(|answer| answer.acked <= cut) {
        let (tenant, run) = &script.streams[answer.stream];
        let seq = store
            .seq_of(tenant, run, &answer.id)
            .await
            .map_err(|err| format!("stream {}: seq_of: {err}", answer.stream))?;
        if seq != Some(answer.seq) {
            return Err(format!(
                "stream {}: {} was answered at seq {} (after op {}), is {seq:?}",
                answer.stream, answer.id, answer.seq, answer.acked
            ));
        }
    }
    Ok(())
}

/// A process killed before a sync leaves its unsynced commit in the page
/// cache, where the next open finds it. What that open answers about it --
/// a read, or a retry told "already stored at seq N" -- must not be lost to
/// a power cut that follows (CONTRACT §16): a durable open makes what it
/// found durable before it answers anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_open_syncs_what_a_killed_process_left() {
    let disk = SimDisk::default();
    let script = Workload::start(&disk, Durability::Durable)
        .await
        .run()
        .await;
    let log = disk.log();
    let mut kills = Vec::new();
    sync_points(&log, |point| {
        if point
            .pending
            .iter()
            .any(|op| matches!(op, Op::Write { .. }))
        {
            kills.push((point.at, point.durable.to_vec(), point.pending.to_vec()));
        }
    });
    let mut rng = Rng::new(0x5eed_0018);
    let (mut cuts, mut answered, mut failures) = (0, 0, Vec::new());
    for (at, durable, pending) in &kills {
        let next = SimDisk::after_kill(durable, pending);
        let store = RedbStore::open_with_backend(next.clone(), NAME, RedbOptions::default())
            .await
            .unwrap_or_else(|err| panic!("killed before op {at}: the store opens: {err}"));
        // The events of the calls the killed process had not answered.
        let mut answers = Vec::new();
        for event in script.events.iter().filter(|event| event.acked > *at) {
            let (tenant, run) = &script.streams[event.stream];
            let id = &event.record.event_id;
            let Some(seq) = store.seq_of(tenant, run, id).await.expect("seq_of") else {
                continue;
            };
            answers.push(Answer {
                stream: event.stream,
                id: id.clone(),
                seq,
                acked: next.ops(),
            });
            let mut again = event.record.clone();
            again.seq = 0;
            let outcome = store
                .append_batch(tenant, run, &[again], None)
                .await
                .expect("retry");
            assert_eq!(
                (outcome[0].seq, outcome[0].inserted),
                (seq, false),
                "killed before op {at}: the retry of {id} answers its seq"
            );
            answers.push(Answer {
                stream: event.stream,
                id: id.clone(),
                seq,
                acked: next.ops(),
            });
        }
        drop(store);
        answered += answers.len();
        // A sync appended to the log stands for a cut after the last
        // operation.
        let mut after = next.log();
        after.push(Op::Sync);
        let mut images = Vec::new();
        sync_points_from(&next.base(), &after, |point| {
            for loss in Loss::ALL {
                images.push((point.at, loss, point.power_loss(loss, &mut rng)));
            }
        });
        for (cut, loss, image) in images {
            cuts += 1;
            if let Err(why) = check_answers(image, &script, &answers, cut).await {
                failures.push(format!(
                    "killed before op {at}, then cut at op {cut} of the next handle, {loss:?}: {why}"
                ));
            }
        }
    }
    assert!(answered > 0, "some killed call had left its events");
    println!(
        "{} kills, {answered} answers after them, {cuts} cuts checked",
        kills.len()
    );
    report("cuts after a kill", cuts, &failures);
}

/// The store syncs the disk before redb sees it in durable mode, and not at
/// all in relaxed mode: the first operation of a durable open on a disk
/// that a killed process left is a sync (redb's own open writes its header
/// before it syncs), and a relaxed open issues none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_open_syncs_before_it_writes_and_a_relaxed_one_never_does() {
    let disk = SimDisk::default();
    let store = RedbStore::open_with_backend(disk.clone(), NAME, RedbOptions::default())
        .await
        .expect("open on the simulated disk");
    let tenant = Tenant::local();
    let run = RunId::new("run").expect("run id");
    let event = EventRecord::new(&tenant, run.clone(), EventId::new("e").expect("id"), "t", 1);
    store
        .append_batch(&tenant, &run, &[event], None)
        .await
        .expect("append");
    let log = disk.log();
    drop(store);
    let last_sync = log
        .iter()
        .rposition(|op| matches!(op, Op::Sync))
        .expect("the append synced");
    // Killed before the sync of its last commit: the writes since the
    // sync before it are pending.
    let since = log[..last_sync]
        .iter()
        .rposition(|op| matches!(op, Op::Sync))
        .expect("an earlier sync")
        + 1;
    let durable = image_after(&log, since);
    for durability in [Durability::Durable, Durability::Relaxed] {
        let next = SimDisk::after_kill(&durable, &log[since..last_sync]);
        let skip = next.ops();
        let options = RedbOptions::default().with_durability(durability);
        let store = RedbStore::open_with_backend(next.clone(), NAME, options)
            .await
            .expect("the store opens");
        let opened = next.log()[skip..].to_vec();
        drop(store);
        let syncs = opened.iter().filter(|op| matches!(op, Op::Sync)).count();
        match durability {
            Durability::Durable => assert!(
                matches!(opened.first(), Some(Op::Sync)),
                "a durable open syncs first ({} ops, {syncs} syncs)",
                opened.len()
            ),
            Durability::Relaxed => assert_eq!(syncs, 0, "a relaxed open never syncs"),
        }
    }
}

/// The image of a store's file cut during its creation: redb has sized the
/// file and synced the header, but not yet written the magic number.
async fn unfinished_create() -> Vec<u8> {
    let disk = SimDisk::default();
    let store = RedbStore::open_with_backend(disk.clone(), NAME, RedbOptions::default())
        .await
        .expect("open on the simulated disk");
    drop(store);
    let log = disk.log();
    // The first sync after a write: a durable open syncs the empty disk
    // before redb creates the database.
    let first_write = log
        .iter()
        .position(|op| !matches!(op, Op::Sync))
        .expect("the creation writes");
    let first_sync = first_write
        + log[first_write..]
            .iter()
            .position(|op| matches!(op, Op::Sync))
            .expect("the creation syncs");
    let image = image_after(&log, first_sync);
    assert!(image.len() > 4096, "the file was sized");
    assert!(
        image[..9].iter().all(|byte| *byte == 0),
        "no magic number yet"
    );
    image
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_cut_while_being_created_opens_as_a_new_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("runs.redb");
    std::fs::write(&path, unfinished_create().await).expect("write the cut file");
    for durability in [Durability::Durable, Durability::Relaxed] {
        let options = RedbOptions::default().with_durability(durability);
        let store = RedbStore::open_with(&path, options)
            .await
            .unwrap_or_else(|err| panic!("{durability:?}: the cut file opens: {err}"));
        let tenant = Tenant::local();
        let run = RunId::new("run").expect("run id");
        let event = EventRecord::new(&tenant, run.clone(), EventId::new("e").expect("id"), "t", 1);
        let outcome = store
            .append_batch(&tenant, &run, &[event], None)
            .await
            .expect("append");
        assert_eq!(outcome[0].seq, 1, "{durability:?}: a new, empty store");
        drop(store);
        std::fs::write(&path, unfinished_create().await).expect("write the cut file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_an_unfinished_create_is_left_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("other.bin");
    // No magic number either, but data after the first page.
    let mut other = unfinished_create().await;
    other[5000] = 1;
    std::fs::write(&path, &other).expect("write the file");
    let err = RedbStore::open(&path).await.expect_err("not a redb file");
    assert!(err.to_string().contains("other.bin"), "{err}");
    assert_eq!(std::fs::read(&path).expect("read back"), other, "unchanged");
}
