//! Opening repairs a torn tail and reports any other bad line
//! (CONTRACT §17); the format marker and leftovers of a crashed compaction
//! are checked (CONTRACT §11).

use std::{fs, path::Path};

use runstore_core::{
    Durability, Error, EventId, EventLog, EventLogExt, EventRecord, ReadQuery, RunId, Tenant,
};
use runstore_jsonl::{JsonlOptions, JsonlStore};

fn run() -> RunId {
    RunId::new("run-1").unwrap()
}

fn event(id: &str) -> EventRecord {
    EventRecord::new(
        &Tenant::local(),
        run(),
        EventId::new(id).unwrap(),
        "step",
        10,
    )
    .with_payload(serde_json::json!({"text": "line\nbreak", "n": 1}))
}

async fn store_with(dir: &Path, ids: &[&str]) {
    let store = JsonlStore::open(dir).await.unwrap();
    for id in ids {
        store.append(&Tenant::local(), &event(id)).await.unwrap();
    }
}

async fn seqs(dir: &Path) -> Vec<u64> {
    let store = JsonlStore::open(dir).await.unwrap();
    let records = store
        .read(&Tenant::local(), &run(), ReadQuery::all())
        .await
        .unwrap();
    records.iter().map(|record| record.seq).collect()
}

#[tokio::test]
async fn a_complete_last_record_without_newline_is_kept() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    store_with(&dir, &["a", "b"]).await;
    let log = dir.join("events.jsonl");
    let mut bytes = fs::read(&log).unwrap();
    assert_eq!(bytes.pop(), Some(b'\n'));
    fs::write(&log, &bytes).unwrap();

    assert_eq!(seqs(&dir).await, [1, 2]);
    assert!(
        fs::read(&log).unwrap().ends_with(b"}\n"),
        "newline restored"
    );
    let store = JsonlStore::open(&dir).await.unwrap();
    assert_eq!(
        store
            .append(&Tenant::local(), &event("c"))
            .await
            .unwrap()
            .seq,
        3
    );
}

#[tokio::test]
async fn an_incomplete_last_line_is_dropped() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    store_with(&dir, &["a", "b"]).await;
    let log = dir.join("events.jsonl");
    let clean = fs::read(&log).unwrap();
    let mut torn = clean.clone();
    torn.extend_from_slice(br#"{"schema_version":1,"event_id":"c","run_id":"ru"#);
    fs::write(&log, &torn).unwrap();

    assert_eq!(seqs(&dir).await, [1, 2]);
    assert_eq!(fs::read(&log).unwrap(), clean, "torn bytes truncated");
    let store = JsonlStore::open(&dir).await.unwrap();
    let outcome = store.append(&Tenant::local(), &event("c")).await.unwrap();
    assert_eq!((outcome.seq, outcome.inserted), (3, true));
}

#[tokio::test]
async fn any_other_bad_line_is_corrupt_with_file_and_line() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    store_with(&dir, &["a", "b"]).await;
    let log = dir.join("events.jsonl");
    let text = fs::read_to_string(&log).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(1, "{not json");
    fs::write(&log, lines.join("\n") + "\n").unwrap();

    match JsonlStore::open(&dir).await {
        Err(Error::Corrupt { location, .. }) => {
            assert!(location.ends_with("events.jsonl:2"), "{location}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Nothing was "repaired" away.
    assert_eq!(fs::read_to_string(&log).unwrap().lines().count(), 3);
}

#[tokio::test]
async fn seqs_out_of_order_are_corrupt() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    store_with(&dir, &["a", "b"]).await;
    let log = dir.join("events.jsonl");
    let text = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    fs::write(&log, format!("{}\n{}\n", lines[1], lines[0])).unwrap();
    match JsonlStore::open(&dir).await {
        Err(Error::Corrupt { location, reason }) => {
            assert!(location.ends_with("events.jsonl:2"), "{location}");
            assert!(reason.contains("seq 1"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unknown_format_version_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    store_with(&dir, &["a"]).await;
    assert_eq!(
        fs::read_to_string(dir.join("FORMAT")).unwrap(),
        "runstore-jsonl 1\n"
    );
    fs::write(dir.join("FORMAT"), "runstore-jsonl 99\n").unwrap();
    assert!(matches!(
        JsonlStore::open(&dir).await,
        Err(Error::Corrupt { .. })
    ));
    // Found by the damage property test: a marker that is not UTF-8 is
    // `Corrupt` too, not an I/O error.
    fs::write(dir.join("FORMAT"), b"\x80untime-jsonl 1\n").unwrap();
    match JsonlStore::open(&dir).await {
        Err(Error::Corrupt { location, .. }) => assert!(location.ends_with("FORMAT")),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_crashed_compaction_leaves_the_old_log() {
    // CONTRACT §11: a crash before the rename leaves only the temp file.
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    store_with(&dir, &["a", "b"]).await;
    fs::write(dir.join("events.jsonl.tmp"), b"{half a compacted log").unwrap();
    assert_eq!(seqs(&dir).await, [1, 2]);
    assert!(!dir.join("events.jsonl.tmp").exists());
}

#[tokio::test]
async fn compaction_rewrites_the_log_and_reopens_the_same() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let store = JsonlStore::open(&dir).await.unwrap();
    let tenant = Tenant::local();
    let other = RunId::new("run-2").unwrap();
    for n in 0..10u64 {
        let mut record = event(&format!("e{n}"));
        record.occurred_at_ms = n;
        store.append(&tenant, &record).await.unwrap();
        let mut record = record.clone();
        record.run_id = other.clone();
        store.append(&tenant, &record).await.unwrap();
    }
    assert_eq!(store.compact(5, 10).await.unwrap().removed, 10);
    let before = store.read(&tenant, &run(), ReadQuery::all()).await.unwrap();
    assert_eq!(
        before.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [5, 6, 7, 8, 9, 10]
    );
    assert_eq!(
        store
            .read(&tenant, &other, ReadQuery::tail(2))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(store.append(&tenant, &event("e11")).await.unwrap().seq, 11);
    drop(store);
    let store = JsonlStore::open(&dir).await.unwrap();
    let after = store.read(&tenant, &run(), ReadQuery::all()).await.unwrap();
    assert_eq!(after.len(), 7);
    assert_eq!(&after[..6], &before[..]);
    let seq = store
        .seq_of(&tenant, &run(), &EventId::new("e2").unwrap())
        .await;
    assert_eq!(seq.unwrap(), Some(3));
}

#[tokio::test]
async fn relaxed_mode_keeps_data_across_reopen() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let options = JsonlOptions::default().with_durability(Durability::Relaxed);
    let store = JsonlStore::open_with(&dir, options.clone()).await.unwrap();
    assert_eq!(store.durability(), Durability::Relaxed);
    store.append(&Tenant::local(), &event("a")).await.unwrap();
    drop(store);
    let store = JsonlStore::open_with(&dir, options).await.unwrap();
    assert_eq!(store.next_seq(&Tenant::local(), &run()).await.unwrap(), 2);
    assert_eq!(store.index_stats().records, 1);
}

async fn store_with_batch(dir: &Path) -> Vec<u8> {
    store_with(dir, &["a"]).await;
    let store = JsonlStore::open(dir).await.unwrap();
    let batch = [event("b"), event("c"), event("d")];
    store
        .append_batch(&Tenant::local(), &run(), &batch, None)
        .await
        .unwrap();
    drop(store);
    fs::read(dir.join("events.jsonl")).unwrap()
}

#[tokio::test]
async fn a_batch_cut_short_by_a_crash_is_dropped_whole() {
    // CONTRACT §4: a batch is all or nothing, also across a crash.
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let full = store_with_batch(&dir).await;
    let log = dir.join("events.jsonl");
    let line_ends: Vec<usize> = full
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(at, _)| at + 1)
        .collect();
    assert_eq!(line_ends.len(), 4);
    // Cut after the batch's second line, then inside its last line.
    for cut in [line_ends[2], line_ends[3] - 10] {
        fs::write(&log, &full[..cut]).unwrap();
        assert_eq!(seqs(&dir).await, [1], "cut at {cut}");
        assert_eq!(fs::read(&log).unwrap(), &full[..line_ends[0]]);
    }
    // Only the final newline missing: the batch is complete and kept.
    fs::write(&log, &full[..full.len() - 1]).unwrap();
    assert_eq!(seqs(&dir).await, [1, 2, 3, 4]);
    assert_eq!(fs::read(&log).unwrap(), full);
}

#[tokio::test]
async fn batch_lines_but_the_last_start_with_a_space() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let full = store_with_batch(&dir).await;
    let lines: Vec<&[u8]> = full.split_inclusive(|b| *b == b'\n').collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with(b"{"), "a single append is closed");
    assert!(lines[1].starts_with(b" {"));
    assert!(lines[2].starts_with(b" {"));
    assert!(
        lines[3].starts_with(b"{"),
        "the batch's last line closes it"
    );
    assert!(lines.iter().all(|line| line.ends_with(b"}\n")));
}

#[tokio::test]
async fn a_batch_cut_at_any_byte_is_all_or_nothing() {
    // CONTRACT §4, §17: wherever the write of a batch stops, reopening
    // shows the stream without the batch or with all of it.
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let full = store_with_batch(&dir).await;
    let log = dir.join("events.jsonl");
    let before_batch = full.iter().position(|b| *b == b'\n').unwrap() + 1;
    let relaxed = JsonlOptions::default().with_durability(Durability::Relaxed);
    for cut in before_batch..=full.len() {
        fs::write(&log, &full[..cut]).unwrap();
        // Relaxed: the repair is the same, without a sync per reopen.
        let store = JsonlStore::open_with(&dir, relaxed.clone()).await.unwrap();
        let found: Vec<u64> = store
            .read(&Tenant::local(), &run(), ReadQuery::all())
            .await
            .unwrap()
            .iter()
            .map(|record| record.seq)
            .collect();
        drop(store);
        let repaired = fs::read(&log).unwrap();
        if cut >= full.len() - 1 {
            assert_eq!(found, [1, 2, 3, 4], "cut at {cut}");
            assert_eq!(repaired, full, "cut at {cut}");
        } else {
            assert_eq!(found, [1], "cut at {cut}");
            assert_eq!(repaired, &full[..before_batch], "cut at {cut}");
        }
    }
}

#[tokio::test]
async fn batch_lines_in_the_middle_of_the_log_are_ordinary_records() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    store_with_batch(&dir).await;
    store_with(&dir, &["e"]).await;
    let store = JsonlStore::open(&dir).await.unwrap();
    let tenant = Tenant::local();
    let records = store.read(&tenant, &run(), ReadQuery::all()).await.unwrap();
    let ids: Vec<&str> = records.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "d", "e"]);
    assert_eq!(records[1], {
        let mut expected = event("b");
        expected.seq = 2;
        expected
    });
    let c = EventId::new("c").unwrap();
    assert_eq!(store.seq_of(&tenant, &run(), &c).await.unwrap(), Some(3));
    let window = store
        .read(&tenant, &run(), ReadQuery::all().after(1).limit(2))
        .await
        .unwrap();
    assert_eq!(window.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3]);
    // A batch appended on this handle reads back before any reopen.
    let batch = [event("f"), event("g")];
    store
        .append_batch(&tenant, &run(), &batch, None)
        .await
        .unwrap();
    let tail = store
        .read(&tenant, &run(), ReadQuery::tail(2))
        .await
        .unwrap();
    assert_eq!(
        tail.iter().map(|r| r.event_id.as_str()).collect::<Vec<_>>(),
        ["f", "g"]
    );
    // Compaction of another stream rewrites the log with every line
    // closed; these records survive it unchanged.
    let other = RunId::new("run-2").unwrap();
    for id in ["x", "y"] {
        let mut old = event(id);
        old.run_id = other.clone();
        old.occurred_at_ms = 0;
        store.append(&tenant, &old).await.unwrap();
    }
    assert_eq!(store.compact(5, 10).await.unwrap().removed, 2);
    let after = store.read(&tenant, &run(), ReadQuery::all()).await.unwrap();
    assert_eq!(&after[..5], &records[..]);
    drop(store);
    let log = fs::read(dir.join("events.jsonl")).unwrap();
    let store = JsonlStore::open(&dir).await.unwrap();
    let after = store.read(&tenant, &run(), ReadQuery::all()).await.unwrap();
    assert_eq!(after.len(), 7);
    assert_eq!(&after[..5], &records[..]);
    drop(store);
    assert!(
        log.split(|b| *b == b'\n')
            .all(|line| !line.starts_with(b" ")),
        "no line starts with a space after compaction"
    );
}

/// CONTRACT §4, §17: a crash keeps a prefix of a write, so a whole record
/// followed by bytes other than its newline is no torn write: it is
/// `Corrupt`, and the batch it closes is not truncated away with it.
#[tokio::test]
async fn a_whole_last_record_followed_by_other_bytes_is_corrupt() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let full = store_with_batch(&dir).await;
    let log = dir.join("events.jsonl");
    let mut damaged = full.clone();
    *damaged.last_mut().unwrap() = b'x';
    fs::write(&log, &damaged).unwrap();
    match JsonlStore::open(&dir).await {
        Err(Error::Corrupt { location, reason }) => {
            assert!(location.ends_with("events.jsonl:4"), "{location}");
            assert!(reason.contains("trailing characters"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(fs::read(&log).unwrap(), damaged, "nothing truncated");
}

/// A line of an unfinished batch at the end that is not a whole record is
/// damage, not a write cut short (those lines ended in their newline):
/// `Corrupt`, and nothing is truncated.
#[tokio::test]
async fn an_unfinished_batch_with_a_damaged_line_is_corrupt() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let full = store_with_batch(&dir).await;
    let log = dir.join("events.jsonl");
    // The batch's closing line loses its `{` to the continuation byte: the
    // log now seems to end in an unfinished batch of three lines.
    let closing = full[..full.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .unwrap()
        + 1;
    let mut damaged = full.clone();
    damaged[closing] = b' ';
    fs::write(&log, &damaged).unwrap();
    match JsonlStore::open(&dir).await {
        Err(Error::Corrupt { location, .. }) => {
            assert!(location.ends_with("events.jsonl:4"), "{location}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(fs::read(&log).unwrap(), damaged, "nothing truncated");
}

/// Space a crash left allocated but unwritten reads as NUL bytes (after the
/// last line, or where sectors of its page did not reach the disk); the
/// writer never writes NUL, so the last line ends at its first NUL, and what
/// precedes it is judged as the last line.
#[tokio::test]
async fn nul_bytes_in_the_last_line_are_part_of_the_torn_tail() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    let full = store_with_batch(&dir).await;
    let log = dir.join("events.jsonl");
    let cases: [(Vec<u8>, &[u64]); 4] = [
        ([&full[..], &[0; 9]].concat(), &[1, 2, 3, 4]),
        ([&full[..full.len() - 1], &[0; 3]].concat(), &[1, 2, 3, 4]),
        ([&full[..full.len() - 20], &[0; 20]].concat(), &[1]),
        (
            [
                &full[..full.len() - 30],
                &[0; 10],
                &full[full.len() - 20..full.len() - 1],
            ]
            .concat(),
            &[1],
        ),
    ];
    for (bytes, expected) in cases {
        fs::write(&log, &bytes).unwrap();
        assert_eq!(seqs(&dir).await, expected);
        let repaired = fs::read(&log).unwrap();
        assert!(!repaired.contains(&0), "the NULs are gone");
        assert!(repaired.ends_with(b"}\n"));
    }
}

/// CONTRACT §21: no write reaches a seq above `MAX_SEQ`; a line holding one
/// is `Corrupt` at open, so no stream is left that could not answer
/// `next_seq` or take an append.
#[tokio::test]
async fn a_seq_above_the_highest_is_corrupt() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    store_with(&dir, &["a"]).await;
    let log = dir.join("events.jsonl");
    for seq in [runstore_core::validate::MAX_SEQ + 1, u64::MAX] {
        let mut record = event("b");
        record.seq = seq;
        let mut text = fs::read_to_string(&log).unwrap();
        let keep = text.find('\n').unwrap() + 1;
        text.truncate(keep);
        text.push_str(&serde_json::to_string(&record).unwrap());
        text.push('\n');
        fs::write(&log, &text).unwrap();
        match JsonlStore::open(&dir).await {
            Err(Error::Corrupt { location, reason }) => {
                assert!(location.ends_with("events.jsonl:2"), "{location}");
                assert!(reason.contains(&format!("seq {seq}")), "{reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}

/// Errors state each cause once (STYLE 2.3): a malformed marker or tenant
/// found at open is one `Corrupt` naming the line, with the inner error's
/// reason, not its kind again.
#[tokio::test]
async fn a_bad_marker_or_tenant_at_open_is_stated_once() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    store_with(&dir, &["a"]).await;
    let log = dir.join("events.jsonl");
    let clean = fs::read_to_string(&log).unwrap();
    let mut marker = event("m");
    marker.seq = 2;
    marker.event_type = runstore_core::raw::compaction::COMPACTION_EVENT_TYPE.to_owned();
    marker.payload = serde_json::json!({ "compacted_event_ids": "damaged" });
    let mut no_org = serde_json::to_value(event("o")).unwrap();
    no_org["seq"] = 2.into();
    no_org["scope"]["tenant_context"]["org_id"] = "".into();
    for line in [serde_json::to_string(&marker).unwrap(), no_org.to_string()] {
        fs::write(&log, format!("{clean}{line}\n")).unwrap();
        let err = JsonlStore::open(&dir).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Corrupt { .. }), "{text}");
        assert!(text.contains("events.jsonl:2: "), "{text}");
        assert_eq!(text.matches("corrupt data").count(), 1, "{text}");
        assert!(!text.contains("invalid input"), "{text}");
    }
}
