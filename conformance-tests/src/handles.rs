//! More than one handle on one location (CONTRACT §3, §18): backends whose
//! handles share a location append to one stream from all of them at once
//! ([`Capabilities::shared_writers`](crate::Capabilities::shared_writers));
//! embedded backends answer a second open `Locked` until the first handle is
//! gone ([`Capabilities::exclusive_open`](crate::Capabilities::exclusive_open)).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use runstore_core::{AppendOutcome, Error, EventLog, EventLogExt, EventRecord, Storage};

use crate::{Harness, Location, concurrency::check_raced_stream, event, run, support, tenant};

/// Handles appending at once in the shared-writers case.
const HANDLES: usize = 4;
/// Tasks per handle.
const TASKS_PER_HANDLE: usize = 8;
/// Batches per task.
const BATCHES_PER_TASK: usize = 12;
/// Events per batch.
const BATCH: usize = 5;
/// Ids are drawn from fewer than the events appended, so most ids are
/// appended through several handles at once.
const DISTINCT_IDS: usize = 600;

/// The ids one task of one handle appends, batch by batch: a walk over the
/// shared id space that differs per handle and task.
fn task_batches(handle: usize, task: usize) -> Vec<Vec<String>> {
    let stride = 7 + 2 * (handle * TASKS_PER_HANDLE + task);
    (0..BATCHES_PER_TASK)
        .map(|b| {
            (0..BATCH)
                .map(|i| {
                    let n = (handle * 131 + task * 17 + (b * BATCH + i) * stride) % DISTINCT_IDS;
                    format!("id-{n}")
                })
                .collect()
        })
        .collect()
}

/// Appends `batch` until it is answered; a retryable error (another handle
/// won a race the backend lets the caller retry) is retried, as a caller
/// would.
async fn append_answered(store: &Arc<dyn Storage>, batch: &[EventRecord]) -> Vec<AppendOutcome> {
    let t = tenant(1);
    loop {
        match store.append_batch(&t, &run("shared"), batch, None).await {
            Ok(outcomes) => return outcomes,
            Err(err) if err.is_retryable() => {}
            Err(err) => panic!("append through one of several handles: {err}"),
        }
    }
}

/// CONTRACT §2, §3: several handles on one location (separate connection
/// pools or clients, as separate processes or machines would have) append
/// batches with overlapping ids to one stream at once: seqs are exactly
/// 1..n, each id is stored once, and every answer names the stored seq.
/// Read back through a handle that did not write.
pub async fn several_handles_append_to_one_stream_gapless_and_unique(h: &Harness) {
    const CASE: &str = "several_handles_append_to_one_stream_gapless_and_unique";
    if !shares_writers(h, CASE) {
        return;
    }
    let instance = h.fresh().await;
    let mut stores = vec![instance.store().clone()];
    for _ in 1..HANDLES {
        stores.push(instance.open_again().await.expect("open another handle"));
    }
    let mut tasks = Vec::new();
    for (handle, store) in stores.iter().enumerate() {
        for task in 0..TASKS_PER_HANDLE {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let t = tenant(1);
                let mut answers = Vec::new();
                for ids in task_batches(handle, task) {
                    let batch: Vec<EventRecord> =
                        ids.iter().map(|id| event(&t, "shared", id, 1)).collect();
                    let outcomes = append_answered(&store, &batch).await;
                    assert_eq!(outcomes.len(), batch.len());
                    answers.extend(ids.into_iter().zip(outcomes));
                }
                answers
            }));
        }
    }
    let mut answers: Vec<(String, AppendOutcome)> = Vec::new();
    for task in tasks {
        answers.extend(task.await.expect("task"));
    }
    drop(stores);

    let reader = instance.open_again().await.expect("open a reading handle");
    check_raced_stream(&reader, "shared", &answers).await;
    let next = instance
        .store()
        .next_seq(&tenant(1), &run("shared"))
        .await
        .expect("next_seq");
    assert_eq!(
        next,
        reader
            .next_seq(&tenant(1), &run("shared"))
            .await
            .expect("next_seq"),
        "every handle agrees"
    );
}

/// Whether `h` declares [`Capabilities::shared_writers`](crate::Capabilities::shared_writers);
/// says the case `case` does not apply when not.
fn shares_writers(h: &Harness, case: &str) -> bool {
    let shares = h.capabilities().shared_writers;
    if !shares {
        h.not_applicable(case, "one location takes one handle at a time");
    }
    shares
}

/// CONTRACT §18: while a handle is open (or any clone of it), opening the
/// same location again answers `Locked`, naming what is locked; once the
/// last clone is dropped, the location opens, with its data.
pub async fn a_second_open_is_locked_until_the_handle_is_dropped(h: &Harness) {
    const CASE: &str = "a_second_open_is_locked_until_the_handle_is_dropped";
    if !h.capabilities().exclusive_open {
        h.not_applicable(CASE, "several handles may share a location");
        return;
    }
    let mut instance = h.fresh().await;
    let t = tenant(1);
    instance
        .store()
        .append(&t, &event(&t, "run", "e-1", 1))
        .await
        .expect("append");
    let clone = instance.store().clone();
    assert_locked(&instance, "the handle and a clone are").await;
    drop(clone);
    assert_locked(&instance, "the handle is").await;
    instance.reopen().await;
    assert_eq!(
        instance
            .store()
            .next_seq(&t, &run("run"))
            .await
            .expect("next_seq"),
        2,
        "the reopened location holds the data"
    );
}

/// Opens `instance`'s location again, which must answer `Locked` naming
/// something under the location.
async fn assert_locked(instance: &crate::Instance, open: &str) {
    match instance.open_again().await {
        Err(Error::Locked { resource }) => {
            let location = instance.location();
            assert!(
                resource.contains(&location.dir.display().to_string())
                    || resource.contains(&location.name),
                "Locked names what is locked, under the location: {resource:?}"
            );
        }
        Err(other) => panic!("a second open while {open} open: {other}"),
        Ok(_) => panic!("a second open while {open} open succeeded"),
    }
}

/// Tells the child process the location's directory.
const CHILD_DIR_VAR: &str = "RUNSTORE_CONFORMANCE_CHILD_DIR";
/// Tells the child process the location's name.
const CHILD_NAME_VAR: &str = "RUNSTORE_CONFORMANCE_CHILD_NAME";
/// The test [`suite!`](crate::suite) stamps for the child process.
const CHILD_TEST: &str = "conformance_child_process";
/// Tasks per process in the cross-process case.
const PROCESS_TASKS: usize = 8;
/// Events per task in the cross-process case.
const PROCESS_EVENTS: usize = 40;

/// The ids task `task` of process `role` appends: mostly its own, and
/// every fourth one an id both processes append.
fn process_ids(role: &str, task: usize) -> Vec<String> {
    (0..PROCESS_EVENTS)
        .map(|i| {
            if i % 4 == 3 {
                format!("both-{task}-{i}")
            } else {
                format!("{role}-{task}-{i}")
            }
        })
        .collect()
}

fn ready_file(dir: &Path, role: &str) -> PathBuf {
    dir.join(format!("{role}.ready"))
}

fn answers_file(dir: &Path, role: &str) -> PathBuf {
    dir.join(format!("{role}.answers.json"))
}

/// Appends `role`'s ids through `store` with [`PROCESS_TASKS`] tasks and
/// answers `(id, outcome)` for each.
async fn append_as(store: &Arc<dyn Storage>, role: &str) -> Vec<(String, AppendOutcome)> {
    let mut tasks = Vec::new();
    for task in 0..PROCESS_TASKS {
        let store = store.clone();
        let ids = process_ids(role, task);
        tasks.push(tokio::spawn(async move {
            let t = tenant(1);
            let mut answers = Vec::new();
            for id in ids {
                let outcome = append_answered(&store, &[event(&t, "shared", &id, 1)]).await;
                answers.push((id, outcome[0]));
            }
            answers
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.expect("appending task"));
    }
    answers
}

/// CONTRACT §2, §3: two processes append to one stream at once, each with
/// several tasks, some ids appended by both: seqs are exactly 1..n, each id
/// is stored once, every answer names the stored seq, and both processes
/// stored events. The second process is this test binary again, running
/// the ignored `conformance_child_process` test [`suite!`](crate::suite)
/// stamps.
pub async fn two_processes_append_to_one_stream_gapless_and_unique(h: &Harness) {
    const CASE: &str = "two_processes_append_to_one_stream_gapless_and_unique";
    if !shares_writers(h, CASE) {
        return;
    }
    let instance = h.fresh().await;
    let location = instance.location().clone();
    let mut child = support::child_command(
        CHILD_TEST,
        [
            (CHILD_DIR_VAR, location.dir.as_os_str()),
            (CHILD_NAME_VAR, std::ffi::OsStr::new(&location.name)),
        ],
    )
    .expect("find this test binary")
    .spawn()
    .expect("spawn the second process");
    // Start once the child has opened the store, so both append at once.
    let started = Instant::now();
    while !ready_file(&location.dir, "child").exists() {
        if let Some(status) = child.try_wait().expect("poll the second process") {
            panic!("the second process exited before opening the store: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the second process never opened the store"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut answers = append_as(instance.store(), "parent").await;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait for the second process");
    assert!(status.success(), "the second process failed: {status}");
    let text = std::fs::read_to_string(answers_file(&location.dir, "child"))
        .expect("read the second process's answers");
    let child_answers: Vec<(String, u64, bool)> =
        serde_json::from_str(&text).expect("parse the second process's answers");
    answers.extend(
        child_answers
            .into_iter()
            .map(|(id, seq, inserted)| (id, AppendOutcome { seq, inserted })),
    );

    let check = check_raced_stream(instance.store(), "shared", &answers).await;
    for role in ["parent", "child"] {
        assert!(
            check.ids.contains_key(&format!("{role}-0-0")),
            "the {role} process stored events"
        );
    }
    let distinct = 2 * PROCESS_TASKS * PROCESS_EVENTS - PROCESS_TASKS * (PROCESS_EVENTS / 4);
    assert_eq!(check.live(), distinct, "every distinct id is stored once");
}

/// The second process of the cross-process case: opens the parent's
/// location, says so, appends as `child` and writes its answers next to the
/// store.
///
/// # Panics
/// When not started by the case (the location's variables unset), or on
/// any failure: the parent reports the exit status.
pub async fn child_process(h: &Harness) {
    let dir = std::env::var_os(CHILD_DIR_VAR).map(PathBuf::from);
    let name = std::env::var(CHILD_NAME_VAR).ok();
    let (Some(dir), Some(name)) = (dir, name) else {
        panic!("{CHILD_DIR_VAR} and {CHILD_NAME_VAR} are unset: a conformance case runs this");
    };
    let location = Location {
        dir: dir.clone(),
        name,
    };
    let store = h
        .open_at(location)
        .await
        .unwrap_or_else(|err| panic!("the second process opens the store: {err}"));
    std::fs::write(ready_file(&dir, "child"), b"ready").expect("write the ready file");
    let answers: Vec<(String, u64, bool)> = append_as(&store, "child")
        .await
        .into_iter()
        .map(|(id, outcome)| (id, outcome.seq, outcome.inserted))
        .collect();
    let text = serde_json::to_string(&answers).expect("answers encode");
    std::fs::write(answers_file(&dir, "child"), text).expect("write the answers");
}
