//! Compacted ids answer their seq whatever the layout of the marker line
//! that remembers them (CONTRACT §7, §10): a marker imported inside a batch
//! (its line starts with a space), one written with spaces between its ids
//! and escapes in them, and one whose ids are not ascending, as stores
//! written by earlier code or by hand may hold them. They keep answering
//! after a compaction rewrites the log, after a reopen and after a crash
//! left a torn batch at the end of the log.

use std::{fs, io::Write as _, path::Path};

use runstore_core::{
    EventId, EventLog, EventLogExt, EventRecord, RunId, Tenant, raw::compaction::merge_marker,
};
use runstore_jsonl::JsonlStore;

const IDS: u64 = 200;

fn id(seq: u64) -> String {
    // Some ids need escapes in JSON, and one is not ASCII.
    match seq % 50 {
        3 => format!("ev-{seq}-\"quoted\""),
        4 => format!("ev-{seq}-back\\slash"),
        5 => format!("ev-{seq}-é"),
        _ => format!("ev-{seq}"),
    }
}

fn event(run: &str, seq: u64, at: u64) -> EventRecord {
    let mut event = EventRecord::new(
        &Tenant::local(),
        RunId::new(run).unwrap(),
        EventId::new(id(seq)).unwrap(),
        "step",
        at,
    );
    event.seq = seq;
    event
}

/// The event with the id of `seq`, as an append sends it (no seq).
fn unplaced(run: &str, seq: u64, at: u64) -> EventRecord {
    EventRecord {
        seq: 0,
        ..event(run, seq, at)
    }
}

/// The marker of `run` remembering ids 1..=IDS.
fn marker(run: &str) -> EventRecord {
    let pruned: Vec<_> = (1..=IDS).map(|seq| event(run, seq, 1)).collect();
    merge_marker(
        &Tenant::local(),
        &RunId::new(run).unwrap(),
        None,
        &pruned,
        2,
        |_| Ok(false),
    )
    .unwrap()
}

async fn assert_answers(store: &JsonlStore, run: &str, last: u64, when: &str) {
    let tenant = Tenant::local();
    let run_id = RunId::new(run).unwrap();
    for seq in 1..=last {
        let id = EventId::new(id(seq)).unwrap();
        let found = store.seq_of(&tenant, &run_id, &id).await.unwrap();
        assert_eq!(found, Some(seq), "seq_of {id:?} in {run} {when}");
        let dup = store.append(&tenant, &unplaced(run, seq, 7)).await.unwrap();
        assert_eq!(
            (dup.seq, dup.inserted),
            (seq, false),
            "duplicate {id:?} in {run} {when}"
        );
    }
    for missing in ["ev-0", "ev-3", "ev-1000", "ev-10 "] {
        let id = EventId::new(missing).unwrap();
        let found = store.seq_of(&tenant, &run_id, &id).await.unwrap();
        assert_eq!(found, None, "seq_of {missing:?} in {run} {when}");
    }
    assert_eq!(
        store.next_seq(&tenant, &run_id).await.unwrap(),
        last + 1,
        "{run} {when}"
    );
}

const RUNS: [&str; 3] = ["imported", "spaced", "unsorted"];

async fn assert_all(dir: &Path, lasts: [u64; 3], when: &str) {
    let store = JsonlStore::open(dir).await.unwrap();
    for (run, last) in RUNS.into_iter().zip(lasts) {
        assert_answers(&store, run, last, when).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn compacted_ids_answer_in_every_marker_layout() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let tenant = Tenant::local();
    {
        let store = JsonlStore::open(&dir).await.unwrap();
        // The marker is not the batch's last line: it starts with a space.
        let records = [marker("imported"), event("imported", IDS + 1, 5_000)];
        let run = RunId::new("imported").unwrap();
        assert_eq!(
            store.import_stream(&tenant, &run, &records).await.unwrap(),
            2
        );
    }
    let log = dir.join("events.jsonl");
    assert!(
        fs::read(&log).unwrap().starts_with(b" {"),
        "an imported batch's first line starts with a space"
    );
    {
        let mut file = fs::OpenOptions::new().append(true).open(&log).unwrap();
        let spaced = serde_json::to_string(&marker("spaced"))
            .unwrap()
            .replace("},{", "} ,\t{")
            .replace("[{", "[ {")
            .replace("}]", "} ]");
        assert!(spaced.contains("\\\"quoted\\\"") && spaced.contains("back\\\\slash"));
        let mut unsorted = marker("unsorted");
        unsorted.payload["compacted_event_ids"]
            .as_array_mut()
            .unwrap()
            .reverse();
        let unsorted = serde_json::to_string(&unsorted).unwrap();
        writeln!(file, "{spaced}\n{unsorted}").unwrap();
    }
    assert_all(&dir, [IDS + 1, IDS, IDS], "as written").await;

    // A compaction that rewrites the log (copying the imported stream's
    // marker without its space) and merges the other two markers.
    {
        let store = JsonlStore::open(&dir).await.unwrap();
        for run in ["spaced", "unsorted"] {
            let run_id = RunId::new(run).unwrap();
            let events: Vec<_> = (IDS + 1..=IDS + 40)
                .map(|seq| unplaced(run, seq, 3))
                .collect();
            store
                .append_batch(&tenant, &run_id, &events, None)
                .await
                .unwrap();
        }
        let report = store.compact(10, 1_000).await.unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.removed, 80);
        for (run, last) in RUNS.into_iter().zip([IDS + 1, IDS + 40, IDS + 40]) {
            assert_answers(&store, run, last, "after compaction").await;
        }
    }
    assert!(
        !fs::read(&log).unwrap().starts_with(b" "),
        "compaction writes every line closed"
    );
    assert_all(&dir, [IDS + 1, IDS + 40, IDS + 40], "after a reopen").await;

    // A crash cuts a batch short: it is dropped at open, the ids stay.
    {
        let store = JsonlStore::open(&dir).await.unwrap();
        let run_id = RunId::new("spaced").unwrap();
        let events: Vec<_> = (IDS + 41..=IDS + 43)
            .map(|seq| unplaced("spaced", seq, 9_000))
            .collect();
        store
            .append_batch(&tenant, &run_id, &events, None)
            .await
            .unwrap();
    }
    let bytes = fs::read(&log).unwrap();
    fs::write(&log, &bytes[..bytes.len() - 20]).unwrap();
    assert_all(&dir, [IDS + 1, IDS + 40, IDS + 40], "after crash recovery").await;
}
