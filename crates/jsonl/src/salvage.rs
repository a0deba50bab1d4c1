//! Salvage: reads what can be read of a store directory line by line and
//! file by file, without the index or the checks that make a damaged store
//! refuse to open (CONTRACT §17).
//!
//! The log is read as the open pass reads it (a torn last line or an
//! unfinished batch at the end is dropped, as a crash left it, by the same
//! rules), but a bad line elsewhere -- and a last line or unfinished batch
//! that no crash could have left -- becomes a [`Loss`] naming `FILE:LINE`
//! instead of an error, and the scan goes on. Nothing in the directory is
//! changed: leftover temp files stay, and the torn tail is not cut off.

use std::{
    fs::{self, File},
    io::{BufRead, BufReader, ErrorKind},
    path::{Path, PathBuf},
};

use runstore_core::{
    Error, EventRecord, Result, RunId, SnapshotRecord, StreamKey, Tenant, TenantContext,
    salvage::{Loss, SalvageScan, ScanBuilder},
};

use crate::{
    error::io_at,
    fileio::Io,
    layout::{
        self, FORMAT_FILE, FORMAT_LINE, LOG_FILE, SNAPSHOT_DIR, SNAPSHOT_LOG, SNAPSHOT_SUFFIX,
    },
    lock::DirLock,
    recovery::{Tail, torn_tail, written_part},
    runlog,
    writer::CONTINUED,
};

/// Scans the store directory `dir`: every readable record of the log,
/// every readable snapshot file, and a loss for each line or file that
/// cannot be read.
///
/// The directory lock is taken when it can be, so that no store handle
/// writes while the scan reads; a directory where the lock file cannot be
/// created (a read-only mount) is scanned without it.
///
/// # Errors
/// [`Error::InvalidInput`] when `dir` holds no JSONL store (no `FORMAT` and
/// no log); [`Error::Corrupt`] when its format marker names another format
/// version; [`Error::Locked`] when a store handle has it open; [`Error::Io`]
/// when the log cannot be opened at all.
pub async fn scan(dir: impl AsRef<Path>) -> Result<SalvageScan> {
    let dir = dir.as_ref().to_path_buf();
    runstore_fs::run_blocking(crate::BACKEND, move || scan_blocking(&dir)).await
}

fn scan_blocking(dir: &Path) -> Result<SalvageScan> {
    let format = dir.join(FORMAT_FILE);
    let log = dir.join(LOG_FILE);
    if !dir.is_dir() || !(format.exists() || log.exists()) {
        return Err(Error::invalid(format!(
            "no jsonl store at {}: neither {FORMAT_FILE} nor {LOG_FILE} is there",
            dir.display()
        )));
    }
    if let Ok(found) = fs::read_to_string(&format)
        && found != FORMAT_LINE
        && found.starts_with("runstore-jsonl ")
    {
        // Another version's layout; a damaged marker is no reason to stop.
        return Err(Error::corrupt(
            format.display(),
            format!(
                "format marker is {:?}; this version reads {:?}",
                found.trim_end(),
                FORMAT_LINE.trim_end()
            ),
        ));
    }
    let _lock = match DirLock::acquire(&Io::default(), dir) {
        Ok(lock) => Some(lock),
        Err(err @ Error::Locked { .. }) => return Err(err),
        Err(_) => None,
    };
    let mut scan = ScanBuilder::new();
    scan_log(&log, &mut scan)?;
    scan_snapshots(&dir.join(SNAPSHOT_DIR), &mut scan);
    Ok(scan.finish())
}

/// One line of the log, read but not yet taken: a line of a multi-record
/// batch waits for the batch's last line, as the open pass does.
struct Line {
    number: u64,
    parsed: std::result::Result<EventRecord, String>,
    hint: Option<String>,
}

fn take(log: &Path, line: Line, scan: &mut ScanBuilder) {
    let place = format!("{}:{}", log.display(), line.number);
    match line.parsed {
        Ok(record) => scan.record(place, None, record),
        Err(reason) => {
            let reason = match line.hint {
                Some(hint) => format!("{reason} (the line looks like {hint})"),
                None => reason,
            };
            scan.lose(Loss::record(place, None, None, reason));
        }
    }
}

/// Reads the log line by line. A missing log is an empty one.
fn scan_log(log: &Path, scan: &mut ScanBuilder) -> Result<()> {
    let file = match File::open(log) {
        Ok(file) => file,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(io_at("open", log, err)),
    };
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut bytes = Vec::new();
    let mut number = 0u64;
    let mut batch: Vec<Line> = Vec::new();
    loop {
        bytes.clear();
        let read = match reader.read_until(b'\n', &mut bytes) {
            Ok(read) => read,
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) => {
                scan.lose(Loss::range(
                    format!("{} after line {number}", log.display()),
                    None,
                    format!("the rest of the log could not be read: {err}"),
                ));
                break;
            }
        };
        if read == 0 {
            break;
        }
        number += 1;
        let complete = bytes.last() == Some(&b'\n');
        if complete {
            bytes.pop();
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if !complete {
            // CONTRACT §17: the last line has no newline; it is judged as the
            // open pass judges it. A whole record that closes its request is
            // kept; a write the crash cut short is dropped, with the rest of
            // an unfinished batch (below). Anything else is damage: the
            // batch it closes is read, and the line is a loss.
            let body = written_part(&bytes);
            let parsed = match torn_tail(body) {
                Tail::Torn => break,
                Tail::Whole => crate::feed::parse(body),
                Tail::Damaged(reason) => Err(format!(
                    "the last line ends without a newline but is not a record cut short by a \
                     crash: {reason}"
                )),
            };
            for line in batch.drain(..) {
                take(log, line, scan);
            }
            let hint = parsed.is_err().then(|| line_hint(body)).flatten();
            take(
                log,
                Line {
                    number,
                    parsed,
                    hint,
                },
                scan,
            );
            break;
        }
        let parsed = crate::feed::parse(&bytes);
        let hint = parsed.is_err().then(|| line_hint(&bytes)).flatten();
        let line = Line {
            number,
            parsed,
            hint,
        };
        if bytes.first() == Some(&CONTINUED) {
            batch.push(line);
            continue;
        }
        for earlier in batch.drain(..) {
            take(log, earlier, scan);
        }
        take(log, line, scan);
    }
    // Lines of a batch whose last line never reached the disk: the open
    // pass drops them whole (CONTRACT §4), and so does salvage, if each is a
    // whole record as a crash leaves them. If one is not, the open pass
    // refuses the store; salvage reads the batch and names that line.
    if batch.iter().any(|line| line.parsed.is_err()) {
        for line in batch {
            take(log, line, scan);
        }
    }
    Ok(())
}

/// What a damaged line still tells of its record: the stream and seq, when
/// the fields the store writes first can still be read.
fn line_hint(bytes: &[u8]) -> Option<String> {
    fn field<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8], name: &str) -> Option<T> {
        let tag = format!("\"{name}\":");
        let at = memchr::memmem::find(bytes, tag.as_bytes())? + tag.len();
        serde_json::Deserializer::from_slice(&bytes[at..])
            .into_iter::<T>()
            .next()?
            .ok()
    }
    let run: String = field(bytes, "run_id")?;
    let seq: u64 = field(bytes, "seq")?;
    let context: TenantContext = field(bytes, "tenant_context")?;
    let tenant = Tenant::from_context(&context).ok()?;
    let run = RunId::new(run).ok()?;
    Some(format!("seq {seq} of {}", StreamKey::new(tenant, run)))
}

/// Reads every run's snapshot log and every snapshot file under `root`;
/// an unreadable directory, file or line is a loss, never an error. As at
/// open, a snapshot's last line in the log is its record, and wins over a
/// file of the same key (the layout before the log).
fn scan_snapshots(root: &Path, scan: &mut ScanBuilder) {
    for tenant_dir in list_dir(root, scan) {
        let tenant = decode_tenant(&tenant_dir);
        for run_dir in list_dir(&tenant_dir, scan) {
            let run = decode_name(&run_dir, "r-", "").and_then(|run| RunId::new(run).ok());
            let stream = tenant
                .clone()
                .zip(run)
                .map(|(tenant, run)| StreamKey::new(tenant, run));
            let logged = scan_snapshot_log(&run_dir.join(SNAPSHOT_LOG), stream.as_ref(), scan);
            for file in list_dir(&run_dir, scan) {
                let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if !name.ends_with(SNAPSHOT_SUFFIX) {
                    // Temp files of writes a crash interrupted, or strays.
                    continue;
                }
                let snapshot_id = decode_name(&file, "s-", SNAPSHOT_SUFFIX);
                if snapshot_id
                    .as_deref()
                    .is_some_and(|id| logged.keys().any(|logged| logged.as_str() == id))
                {
                    // Replaced by a line of the log.
                    continue;
                }
                let lose = |reason: String| {
                    Loss::snapshot(
                        file.display(),
                        stream.as_ref(),
                        snapshot_id.as_deref(),
                        reason,
                    )
                };
                let snapshot = match fs::read(&file) {
                    Ok(bytes) => serde_json::from_slice::<SnapshotRecord>(&bytes),
                    Err(err) => {
                        scan.lose(lose(format!("the file could not be read: {err}")));
                        continue;
                    }
                };
                let snapshot = match snapshot {
                    Ok(snapshot) => snapshot,
                    Err(err) => {
                        scan.lose(lose(err.to_string()));
                        continue;
                    }
                };
                if let Ok(owner) = snapshot.scope.tenant() {
                    let expected = root
                        .join(layout::tenant_dir(&owner))
                        .join(layout::run_dir(&snapshot.run_id))
                        .join(layout::snapshot_file(&snapshot.snapshot_id));
                    if expected != file {
                        scan.lose(lose(format!(
                            "holds snapshot {:?} of {owner}:{}, which belongs at {}",
                            snapshot.snapshot_id.as_str(),
                            snapshot.run_id,
                            expected.display()
                        )));
                        continue;
                    }
                }
                scan.snapshot(file.display(), None, snapshot);
            }
            for (place, snapshot) in logged.into_values() {
                scan.snapshot(place, None, snapshot);
            }
        }
    }
}

/// The snapshots of the run log at `log`, each id's last line, with the
/// place it was read at; a line that does not parse is a loss, and what a
/// crash left of a put after the last record, and the spare space there
/// ([`runlog`]), are passed over.
fn scan_snapshot_log(
    log: &Path,
    stream: Option<&StreamKey>,
    scan: &mut ScanBuilder,
) -> std::collections::BTreeMap<runstore_core::SnapshotId, (String, SnapshotRecord)> {
    let mut logged = std::collections::BTreeMap::new();
    let bytes = match fs::read(log) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return logged,
        Err(err) => {
            scan.lose(Loss::snapshot(
                log.display(),
                stream,
                None,
                format!("the snapshot log could not be read: {err}"),
            ));
            return logged;
        }
    };
    // As open reads it: spare space and what a crash left of one put
    // after the records are passed over. Past damage, every further line
    // is read too, each a snapshot or a loss.
    let found = runlog::scan(&bytes);
    let mut lines = found.records;
    if let runlog::After::Damaged { .. } = found.after {
        let mut start = found.end;
        while let Some(newline) = bytes[start..].iter().position(|byte| *byte == b'\n') {
            lines.push(start..start + newline);
            start += newline + 1;
        }
    }
    for line in lines {
        let place = format!("{}, offset {}", log.display(), line.start);
        match serde_json::from_slice::<SnapshotRecord>(&bytes[line]) {
            Ok(snapshot) => {
                logged.insert(snapshot.snapshot_id.clone(), (place, snapshot));
            }
            Err(err) => scan.lose(Loss::snapshot(place, stream, None, err.to_string())),
        }
    }
    logged
}

/// The entries of `dir`, sorted; none if it is missing or not a directory.
fn list_dir(dir: &Path, scan: &mut ScanBuilder) -> Vec<PathBuf> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound || err.kind() == ErrorKind::NotADirectory => {
            return Vec::new();
        }
        Err(err) => {
            scan.lose(Loss::range(
                dir.display(),
                None,
                format!("the directory could not be listed: {err}"),
            ));
            return Vec::new();
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => paths.push(entry.path()),
            Err(err) => scan.lose(Loss::range(
                dir.display(),
                None,
                format!("an entry of the directory could not be read: {err}"),
            )),
        }
    }
    paths.sort();
    paths
}

/// The id an escaped file name (`<prefix><escaped><suffix>`, see
/// [`crate::layout`]) stands for; `None` for a hashed or malformed name.
fn decode_name(path: &Path, prefix: &str, suffix: &str) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let escaped = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    unescape(escaped)
}

/// The tenant a tenant directory's name (`t-<org>.<workspace>[.<deployment>]`)
/// stands for.
fn decode_tenant(path: &Path) -> Option<Tenant> {
    let name = path.file_name()?.to_str()?.strip_prefix("t-")?;
    let parts: Vec<String> = name.split('.').map(unescape).collect::<Option<_>>()?;
    match <[String; 2]>::try_from(parts) {
        Ok([org, workspace]) => Tenant::new(org, workspace, None).ok(),
        Err(parts) => match <[String; 3]>::try_from(parts) {
            Ok([org, workspace, deployment]) => Tenant::new(org, workspace, Some(deployment)).ok(),
            Err(_) => None,
        },
    }
}

/// Undoes the `_xx` escapes of [`crate::layout`].
fn unescape(escaped: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut rest = escaped.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'_' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else if byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' {
            bytes.push(byte);
            rest = tail;
        } else {
            return None;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use runstore_conformance::support::salvage::{seqs, snapshot_ids};
    use runstore_core::{
        EventId, EventLog, EventLogExt, RunStatus, SnapshotId, SnapshotStore,
        salvage::{LossKind, split_importable},
    };

    use super::*;
    use crate::JsonlStore;

    fn tenant() -> Tenant {
        Tenant::new("acme", "prod", Some("eu".to_owned())).unwrap()
    }

    fn event(run: &str, id: &str) -> EventRecord {
        EventRecord::new(
            &tenant(),
            RunId::new(run).unwrap(),
            EventId::new(id).unwrap(),
            "step",
            10,
        )
    }

    /// A store with runs `a` (5 events, the 3rd and 4th in one batch) and
    /// `b` (2 events) and two snapshots of `a`.
    async fn store(dir: &Path) {
        let store = JsonlStore::open(dir).await.unwrap();
        let t = tenant();
        for id in ["a1", "a2"] {
            store.append(&t, &event("a", id)).await.unwrap();
        }
        store.append(&t, &event("b", "b1")).await.unwrap();
        let run = RunId::new("a").unwrap();
        store
            .append_batch(&t, &run, &[event("a", "a3"), event("a", "a4")], None)
            .await
            .unwrap();
        store.append(&t, &event("a", "a5")).await.unwrap();
        store.append(&t, &event("b", "b2")).await.unwrap();
        for (id, seq) in [("Snap/1", 2), ("snap-2", 4)] {
            let snapshot = SnapshotRecord::new(
                &t,
                run.clone(),
                SnapshotId::new(id).unwrap(),
                seq,
                seq,
                RunStatus::Running,
            );
            store.put(&t, &snapshot).await.unwrap();
        }
    }

    /// The snapshot log of run `a` of [`store`].
    fn run_a_log(dir: &Path) -> PathBuf {
        dir.join(SNAPSHOT_DIR)
            .join(layout::tenant_dir(&tenant()))
            .join(layout::run_dir(&RunId::new("a").unwrap()))
            .join(SNAPSHOT_LOG)
    }

    fn lines(dir: &Path) -> Vec<String> {
        fs::read_to_string(dir.join(LOG_FILE))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(dir: &Path, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        fs::write(dir.join(LOG_FILE), text).unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_intact_store_is_read_whole() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("store");
        store(&dir).await;
        let scan = scan(&dir).await.unwrap();
        assert!(scan.losses.is_empty(), "{:?}", scan.losses);
        assert_eq!(seqs(&scan, "a"), [1, 2, 3, 4, 5]);
        assert_eq!(seqs(&scan, "b"), [1, 2]);
        assert_eq!(snapshot_ids(&scan), ["Snap/1", "snap-2"]);
    }

    // CONTRACT §17: the open pass refuses the store; salvage names the line
    // and reads the rest, the batch the bad line closes included.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_bad_line_in_the_middle_costs_only_itself() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("store");
        store(&dir).await;
        let mut log = lines(&dir);
        // Line 5 is the closing line of the batch (a3 on line 4, a4 on 5).
        assert!(
            log[3].starts_with(' ') && log[3].contains("\"a3\""),
            "{log:?}"
        );
        assert!(log[4].contains("\"a4\""));
        log[4] = log[4].replacen("\"event_type\":", "\"event_type\"", 1);
        write_lines(&dir, &log);
        let err = JsonlStore::open(&dir).await.unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");

        let scan = scan(&dir).await.unwrap();
        assert_eq!(seqs(&scan, "a"), [1, 2, 3, 5]);
        assert_eq!(seqs(&scan, "b"), [1, 2]);
        assert_eq!(scan.losses.len(), 1, "{:?}", scan.losses);
        let loss = &scan.losses[0];
        assert_eq!(loss.kind, LossKind::Record);
        assert_eq!(loss.place, format!("{}:5", dir.join(LOG_FILE).display()));
        assert!(
            loss.reason.contains("looks like seq 4 of acme/prod/eu:a"),
            "{loss}"
        );
        let a = &scan.streams[0];
        let split = split_importable(&a.records);
        assert_eq!(split.importable, 3);
        // The scan changed nothing.
        assert_eq!(lines(&dir), log);
    }

    // A torn last line and an unfinished batch are dropped, as at open.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_torn_tail_is_dropped_as_at_open() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("store");
        store(&dir).await;
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(dir.join(LOG_FILE))
            .unwrap();
        let line = serde_json::to_string(&event("b", "b3")).unwrap();
        write!(file, " {line}\n{}", &line[..20]).unwrap();
        drop(file);
        let scan = scan(&dir).await.unwrap();
        assert!(scan.losses.is_empty(), "{:?}", scan.losses);
        assert_eq!(seqs(&scan, "b"), [1, 2]);
    }

    // A last line or unfinished batch no crash could have left: the open pass
    // refuses the store, and salvage reads the batch and names the line.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_damaged_tail_costs_only_its_line() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("store");
        store(&dir).await;
        let intact = fs::read(dir.join(LOG_FILE)).unwrap();
        let mut b3 = event("b", "b3");
        b3.seq = 3;
        let line = serde_json::to_string(&b3).unwrap();
        let damaged_tail = [
            // A whole record followed by another byte instead of its newline.
            format!(" {line}\n{line}x"),
            // An unfinished batch whose second line is not a record.
            format!(" {line}\n {{not json\n"),
        ];
        for tail in &damaged_tail {
            let mut bytes = intact.clone();
            bytes.extend_from_slice(tail.as_bytes());
            fs::write(dir.join(LOG_FILE), &bytes).unwrap();
            let err = JsonlStore::open(&dir).await.unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
            let scan = scan(&dir).await.unwrap();
            assert_eq!(seqs(&scan, "b"), [1, 2, 3], "{tail}");
            assert_eq!(scan.losses.len(), 1, "{:?}", scan.losses);
            assert_eq!(
                scan.losses[0].place,
                format!("{}:9", dir.join(LOG_FILE).display())
            );
            assert_eq!(fs::read(dir.join(LOG_FILE)).unwrap(), bytes, "unchanged");
        }
    }

    // A snapshot file of the layout before the run logs.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_bad_snapshot_file_is_named_with_its_stream() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("store");
        store(&dir).await;
        let run_dir = dir
            .join(SNAPSHOT_DIR)
            .join(layout::tenant_dir(&tenant()))
            .join(layout::run_dir(&RunId::new("a").unwrap()));
        let file = run_dir.join(layout::snapshot_file(&SnapshotId::new("Snap/3").unwrap()));
        fs::write(&file, b"{\"snapshot_id\": tru").unwrap();
        let scan = scan(&dir).await.unwrap();
        assert_eq!(snapshot_ids(&scan), ["Snap/1", "snap-2"]);
        assert_eq!(scan.losses.len(), 1);
        let loss = &scan.losses[0];
        assert_eq!(loss.kind, LossKind::Snapshot);
        assert_eq!(loss.place, file.display().to_string());
        assert_eq!(loss.snapshot_id.as_deref(), Some("Snap/3"));
        assert_eq!(
            loss.stream.as_ref().map(|s| s.to_string()).as_deref(),
            Some("acme/prod/eu:a")
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_bad_snapshot_line_costs_only_itself() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("store");
        store(&dir).await;
        let log = run_a_log(&dir);
        let text = fs::read_to_string(&log).unwrap();
        let first = text.find('\n').unwrap();
        fs::write(&log, format!("{{\"snapshot_id\": tru{}", &text[first..])).unwrap();
        let scan = scan(&dir).await.unwrap();
        assert_eq!(snapshot_ids(&scan), ["snap-2"]);
        assert_eq!(scan.losses.len(), 1, "{:?}", scan.losses);
        let loss = &scan.losses[0];
        assert_eq!(loss.kind, LossKind::Snapshot);
        assert_eq!(loss.place, format!("{}, offset 0", log.display()));
        assert_eq!(
            loss.stream.as_ref().map(|s| s.to_string()).as_deref(),
            Some("acme/prod/eu:a")
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_torn_put_in_the_spare_space_is_no_loss_and_a_holed_line_before_records_is() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("store");
        store(&dir).await;
        let log = run_a_log(&dir);
        let intact = fs::read(&log).unwrap();
        let end = runlog::scan(&intact).end;
        let first = intact.iter().position(|byte| *byte == b'\n').unwrap();

        // What a crash left of a third put, in the spare space: its line,
        // newline and all, but for a sector.
        let mut torn = intact.clone();
        torn[end..=end + first].copy_from_slice(&intact[..=first]);
        torn[end + 8..end + 16].fill(0);
        fs::write(&log, &torn).unwrap();
        let found = scan(&dir).await.unwrap();
        assert!(found.losses.is_empty(), "{:?}", found.losses);
        assert_eq!(snapshot_ids(&found), ["Snap/1", "snap-2"]);

        // A line with NUL bytes before another record is damage: a loss,
        // and the record after it is still read.
        let mut holed = intact.clone();
        holed[8..16].fill(0);
        fs::write(&log, &holed).unwrap();
        let found = scan(&dir).await.unwrap();
        assert_eq!(snapshot_ids(&found), ["snap-2"]);
        assert_eq!(found.losses.len(), 1, "{:?}", found.losses);
        assert_eq!(
            found.losses[0].place,
            format!("{}, offset 0", log.display())
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn no_store_and_a_locked_store_are_refused() {
        let temp = tempfile::tempdir().unwrap();
        let err = scan(temp.path().join("missing")).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
        let dir = temp.path().join("store");
        store(&dir).await;
        let open = JsonlStore::open(&dir).await.unwrap();
        let err = scan(&dir).await.unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        drop(open);
    }

    #[test]
    fn names_decode_back_to_ids() {
        let tenant = Tenant::new("A.b", "w/x", Some("🦀".to_owned())).unwrap();
        let path = PathBuf::from(layout::tenant_dir(&tenant));
        assert_eq!(decode_tenant(&path), Some(tenant));
        let id = SnapshotId::new("Snap/1 .json").unwrap();
        let file = PathBuf::from(layout::snapshot_file(&id));
        assert_eq!(
            decode_name(&file, "s-", SNAPSHOT_SUFFIX).as_deref(),
            Some(id.as_str())
        );
        let long = SnapshotId::new("x".repeat(200)).unwrap();
        assert_eq!(
            decode_name(
                &PathBuf::from(layout::snapshot_file(&long)),
                "s-",
                SNAPSHOT_SUFFIX
            ),
            None
        );
    }
}
