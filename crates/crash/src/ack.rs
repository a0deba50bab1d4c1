//! The lines a writer prints, one JSON object each, and reading them back.
//!
//! A writer prints an acknowledgement only after the store answered `Ok`,
//! with one `write` per line, flushed at once, so a line in the file is a
//! write the store acknowledged. A line cut by the kill (no newline) is
//! ignored: its write was acknowledged but not yet reported, which the
//! checks treat like any unacknowledged write.

use std::{fs, path::Path};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// One line of a writer's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Line {
    /// The writer opened the store.
    Started {
        /// Writer process number.
        writer: u32,
        /// How often this writer number was started before.
        incarnation: u32,
    },
    /// An acknowledged event: appended alone or in a batch.
    Event {
        /// Tenant index.
        t: u8,
        /// Run index.
        r: usize,
        /// Event id.
        id: String,
        /// The seq the store answered.
        seq: u64,
        /// When the acknowledgement came (wall-clock ms).
        at: u64,
    },
    /// A batch about to be sent: all of its ids are stored or none is.
    Batch {
        /// Tenant index.
        t: u8,
        /// Run index.
        r: usize,
        /// The batch's event ids.
        ids: Vec<String>,
    },
    /// An acknowledged snapshot put.
    Snapshot {
        /// Tenant index.
        t: u8,
        /// Run index.
        r: usize,
        /// Snapshot id.
        id: String,
        /// The snapshot's seq.
        seq: u64,
        /// Its `created_at_ms`.
        created: u64,
    },
    /// A retry of an acknowledged id answered its original seq.
    Retry {
        /// Event id.
        id: String,
    },
    /// A store-wide compaction or snapshot prune finished.
    Maintenance {
        /// `compact` or `prune`.
        op: String,
        /// Events or snapshots removed.
        removed: usize,
        /// Streams that failed.
        failed: usize,
    },
    /// A request answered `Ok` but took longer than a second (it waited
    /// out a server outage, for example).
    Slow {
        /// The operation.
        op: String,
        /// How long it took, in ms.
        ms: u64,
    },
    /// A request failed.
    Error {
        /// The operation.
        op: String,
        /// The error's kind (`Backend`, `Io`, ...).
        kind: String,
        /// Whether the error says a retry may succeed.
        retryable: bool,
        /// How long the request took, in ms.
        ms: u64,
        /// The error, one line.
        msg: String,
        /// When it failed (wall-clock ms).
        at: u64,
    },
    /// A broken promise the writer saw itself (a retry answered another
    /// seq, a new id was reported as a duplicate, a request hung).
    Bad {
        /// What was wrong.
        msg: String,
    },
}

/// Every complete line of every `*.acks` file under `dir`, in file-name order.
pub fn read_all(dir: &Path) -> Result<Vec<(String, Line)>> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "acks"))
        .collect();
    files.sort();
    let mut lines = Vec::new();
    for file in files {
        let name = file
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let complete = match text.iter().rposition(|byte| *byte == b'\n') {
            Some(end) => &text[..=end],
            None => &[][..],
        };
        for (number, raw) in complete.split(|byte| *byte == b'\n').enumerate() {
            if raw.is_empty() {
                continue;
            }
            let line: Line = serde_json::from_slice(raw).with_context(|| {
                format!(
                    "{} line {}: not an acknowledgement",
                    file.display(),
                    number + 1
                )
            })?;
            lines.push((name.clone(), line));
        }
    }
    Ok(lines)
}
