//! Salvage: a way out of a damaged store. [`salvage`] copies every readable
//! stream and snapshot of a store that no longer opens or reads cleanly into
//! a new, empty store, and reports exactly what it could not copy.
//!
//! Reading the source:
//!
//! - `jsonl:`, `sqlite:` and `redb:` stores are read from their files by the
//!   backend's own scanner (`runstore::jsonl::salvage` and its siblings),
//!   record by record and without opening the store, so a store that
//!   refuses to open is read too; nothing in the source changes. Should the
//!   scanner be unable to start (a redb file left by a crash needs redb's
//!   repair, which only a writable open runs), the store is opened and read
//!   through the API instead.
//! - Any other store is opened and read through the API with
//!   [`scan_store`]: stream by stream, a failed read narrowed down to the
//!   single record that fails.
//!
//! Writing the target: each stream with
//! [`import_stream`](crate::EventLog::import_stream) (seqs, compaction
//! markers and compacted ids unchanged), each snapshot with
//! [`put`](crate::SnapshotStore::put) under the tenant it names. An import
//! must not leave a seq gap that no imported compaction marker covers, so a
//! stream that lost a record is copied up to the gap
//! ([`split_importable`]), and its readable records after the gap are
//! reported as [`LossKind::NotCopied`].
//!
//! ```
//! # let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! # if !cfg!(feature = "jsonl") { return Ok(()); }
//! use runstore::{EventLogExt, EventId, EventRecord, RunId, Tenant};
//!
//! let dir = tempfile::tempdir().expect("a temp dir");
//! let from = format!("jsonl:{}", dir.path().join("old").display());
//! let to = format!("jsonl:{}", dir.path().join("new").display());
//! let store = runstore::open(&from).await?;
//! let tenant = Tenant::local();
//! let event = EventRecord::new(&tenant, RunId::new("run")?, EventId::new("e")?, "t", 1);
//! store.append(&tenant, &event).await?;
//! drop(store);
//!
//! let report = runstore::salvage(&from, &to).await?;
//! assert_eq!((report.streams, report.events, report.snapshots), (1, 1, 0));
//! assert!(report.losses.is_empty());
//! # Ok::<_, runstore::Error>(())
//! # }).unwrap();
//! ```

use std::path::Path;

use runstore_core::{Error, EventLog as _, Result, SnapshotStore as _, StreamKey};

pub use runstore_core::salvage::{
    ImportSplit, Loss, LossKind, SalvageScan, SalvagedStream, ScanBuilder, SeqRanges, SplitStop,
    scan_store, seq_ranges, split_importable,
};

use crate::{Store, StoreUrl, open_url};

/// What a salvage copied, and what it could not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalvageReport {
    /// Streams of which at least one record was copied.
    pub streams: usize,
    /// Records copied (events and compaction markers).
    pub events: usize,
    /// Snapshots copied.
    pub snapshots: usize,
    /// Everything that could not be copied: what the scan could not read,
    /// then per stream what a gap kept from being copied, then what the
    /// target refused.
    pub losses: Vec<Loss>,
}

/// Copies everything readable of the store at `from` into the empty store
/// at `to` (opened with [`open`](crate::open), created if missing); see the
/// [module docs](self).
///
/// Losses are reported, not errors: the copy goes on past every one.
///
/// # Errors
/// `InvalidInput` for a malformed URL, a backend not built in, `from` and
/// `to` naming the same store, a target that already holds streams or
/// snapshots, or a source location that holds no store; whatever opening
/// the target fails with; whatever the source's scan fails with when it
/// cannot start at all, or when the store turns out unavailable rather than
/// damaged (`Locked`, a retryable error).
pub async fn salvage(from: &str, to: &str) -> Result<SalvageReport> {
    let source = StoreUrl::parse(from)?;
    let target_url = StoreUrl::parse(to)?;
    if same_store(&source, &target_url) {
        return Err(Error::invalid(format!(
            "salvage from {from} into {to}: both name the same store; salvage into a new one"
        )));
    }
    let target = open_url(&target_url).await?;
    let streams = target.streams().await?;
    let snapshot_streams = target.snapshot_streams().await?;
    if !streams.is_empty() || !snapshot_streams.is_empty() {
        return Err(Error::invalid(format!(
            "the salvage target {to} already holds {} stream(s) and snapshots of {} stream(s); \
             salvage writes only into an empty store",
            streams.len(),
            snapshot_streams.len()
        )));
    }
    let scan = scan(&source).await?;
    Ok(write(scan, &target, to).await)
}

/// Scans the store at `url` with its backend's raw scanner, or through the
/// API for backends without one; see the [module docs](self).
///
/// # Errors
/// As [`salvage`], for the source.
pub async fn scan(url: &StoreUrl) -> Result<SalvageScan> {
    let Some(raw) = raw_scan(url).await else {
        return scan_through_api(url).await;
    };
    match raw {
        Ok(scan) => Ok(scan),
        // Nothing there, or in use: opening it would create an empty store
        // or meet the same lock.
        Err(err @ (Error::InvalidInput { .. } | Error::Locked { .. })) => Err(err),
        Err(err) => scan_through_api(url).await.map_err(|_| err),
    }
}

/// The backend's raw scan of `url`; `None` when it has none in this build.
async fn raw_scan(url: &StoreUrl) -> Option<Result<SalvageScan>> {
    #[cfg(feature = "jsonl")]
    if let StoreUrl::Jsonl { path, .. } = url {
        return Some(runstore_jsonl::salvage::scan(path).await);
    }
    #[cfg(feature = "sqlite")]
    if let StoreUrl::Sqlite { path, .. } = url {
        return Some(runstore_sqlite::salvage::scan(path).await);
    }
    #[cfg(feature = "redb")]
    if let StoreUrl::Redb { path, .. } = url {
        return Some(runstore_redb::salvage::scan(path).await);
    }
    // Used by the arms above, when their features are on.
    let _ = url;
    None
}

async fn scan_through_api(url: &StoreUrl) -> Result<SalvageScan> {
    let store = open_url(url).await?;
    scan_store(&store).await
}

/// Writes what `scan` read into `target` (named `to` in losses) and reports
/// what was copied and what was not.
pub async fn write(scan: SalvageScan, target: &Store, to: &str) -> SalvageReport {
    let mut report = SalvageReport {
        losses: scan.losses,
        ..SalvageReport::default()
    };
    for stream in &scan.streams {
        let key = &stream.key;
        let split = split_importable(&stream.records);
        let (copy, rest) = stream.records.split_at(split.importable);
        if !copy.is_empty() {
            match target.import_stream(&key.tenant, &key.run_id, copy).await {
                Ok(_) => {
                    report.streams += 1;
                    report.events += copy.len();
                }
                Err(err) => report.losses.push(Loss::not_written(
                    to,
                    key,
                    copy.iter().map(|record| record.seq),
                    None,
                    format!("the target refused the import: {err}"),
                )),
            }
        }
        if let Some(stop) = split.stop {
            report.losses.push(Loss::not_copied(
                key,
                rest.iter().map(|record| record.seq),
                stop,
            ));
        }
    }
    for snapshot in &scan.snapshots {
        let id = snapshot.snapshot_id.as_str();
        let tenant = match snapshot.scope.tenant() {
            Ok(tenant) => tenant,
            Err(err) => {
                // The scan took only snapshots whose tenant is valid.
                report.losses.push(Loss::snapshot(to, None, Some(id), err));
                continue;
            }
        };
        match target.put(&tenant, snapshot).await {
            Ok(()) => report.snapshots += 1,
            Err(err) => report.losses.push(Loss::not_written(
                to,
                &StreamKey::new(tenant, snapshot.run_id.clone()),
                [],
                Some(id),
                format!("the target refused the snapshot: {err}"),
            )),
        }
    }
    report
}

/// Whether two URLs name one store (a file path compared after resolving
/// it; `memory:` stores are never the same).
fn same_store(a: &StoreUrl, b: &StoreUrl) -> bool {
    let path = |path: &Path| path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    match (a, b) {
        (StoreUrl::Jsonl { path: a, .. }, StoreUrl::Jsonl { path: b, .. })
        | (StoreUrl::Sqlite { path: a, .. }, StoreUrl::Sqlite { path: b, .. })
        | (StoreUrl::Redb { path: a, .. }, StoreUrl::Redb { path: b, .. }) => path(a) == path(b),
        (StoreUrl::Memory, _) | (_, StoreUrl::Memory) => false,
        (
            StoreUrl::Postgres {
                url: a, schema: sa, ..
            },
            StoreUrl::Postgres {
                url: b, schema: sb, ..
            },
        ) => a == b && sa == sb,
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use runstore_core::{
        EventId, EventRecord, ReadQuery, RunId, RunStatus, SnapshotId, SnapshotRecord, Tenant,
    };

    use super::*;

    fn event(run: &str, id: &str) -> EventRecord {
        EventRecord::new(
            &Tenant::local(),
            RunId::new(run).unwrap(),
            EventId::new(id).unwrap(),
            "t",
            1,
        )
    }

    fn scanned(records: Vec<EventRecord>) -> SalvageScan {
        let mut builder = ScanBuilder::new();
        for record in records {
            builder.record("test", None, record);
        }
        builder.finish()
    }

    fn with_seq(mut record: EventRecord, seq: u64) -> EventRecord {
        record.seq = seq;
        record
    }

    // A stream that lost seq 3 is copied up to it; 4 and 5 are reported.
    #[tokio::test]
    async fn a_stream_is_copied_up_to_its_first_gap() {
        let scan = scanned(vec![
            with_seq(event("a", "a1"), 1),
            with_seq(event("a", "a2"), 2),
            with_seq(event("a", "a4"), 4),
            with_seq(event("a", "a5"), 5),
            with_seq(event("b", "b1"), 1),
        ]);
        let target = open_url(&StoreUrl::Memory).await.unwrap();
        let report = write(scan, &target, "memory:").await;
        assert_eq!((report.streams, report.events), (2, 3));
        assert_eq!(report.losses.len(), 1);
        let loss = &report.losses[0];
        assert_eq!(loss.kind, LossKind::NotCopied);
        assert_eq!(loss.seqs, [4..=5]);
        assert!(loss.reason.contains("seq 3 is lost"), "{loss}");
        let tenant = Tenant::local();
        let copied = target
            .read(&tenant, &RunId::new("a").unwrap(), ReadQuery::all())
            .await
            .unwrap();
        let seqs: Vec<u64> = copied.iter().map(|record| record.seq).collect();
        assert_eq!(seqs, [1, 2]);
    }

    #[tokio::test]
    async fn snapshots_go_under_their_own_tenant() {
        let tenant = Tenant::new("acme", "prod", None).unwrap();
        let snapshot = SnapshotRecord::new(
            &tenant,
            RunId::new("a").unwrap(),
            SnapshotId::new("s").unwrap(),
            1,
            1,
            RunStatus::Running,
        );
        let scan = SalvageScan {
            snapshots: vec![snapshot.clone()],
            ..SalvageScan::default()
        };
        let target = open_url(&StoreUrl::Memory).await.unwrap();
        let report = write(scan, &target, "memory:").await;
        assert_eq!(report.snapshots, 1);
        let stored = target
            .get(&tenant, &snapshot.run_id, &snapshot.snapshot_id)
            .await
            .unwrap();
        assert_eq!(stored, Some(snapshot));
    }

    #[cfg(feature = "jsonl")]
    #[tokio::test(flavor = "multi_thread")]
    async fn the_same_store_or_a_full_target_is_refused() {
        use runstore_core::EventLogExt as _;

        let dir = tempfile::tempdir().unwrap();
        let a = format!("jsonl:{}", dir.path().join("a").display());
        let b = format!("jsonl:{}", dir.path().join("b").display());
        let store = crate::open(&a).await.unwrap();
        store
            .append(&Tenant::local(), &event("r", "e"))
            .await
            .unwrap();
        drop(store);
        let same = format!("jsonl:{}/a/../a", dir.path().display());
        let err = salvage(&a, &same).await.unwrap_err();
        assert!(err.to_string().contains("same store"), "{err}");
        let err = salvage(&b, &a).await.unwrap_err();
        assert!(err.to_string().contains("already holds 1 stream"), "{err}");
        let missing = format!("jsonl:{}", dir.path().join("missing").display());
        let err = salvage(&missing, &b).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
        assert!(!dir.path().join("missing").exists());
    }
}
