//! What store-wide maintenance answers (CONTRACT §25).
//!
//! `compact` and `prune` work stream by stream. A backend runs each stream's
//! step on its own, so that one stream it cannot read or write costs only that
//! stream: it feeds each step's result to [`MaintenanceReport::record`] and
//! goes on with the next. Only a failure that stops the whole pass (the list
//! of streams cannot be read, the store refuses writes) is the call's `Err`.

use std::fmt;

use crate::{Error, Result, StreamKey};

/// One stream that a maintenance pass could not process, and why.
#[derive(Debug)]
pub struct StreamFailure {
    /// The stream.
    pub stream: StreamKey,
    /// What went wrong; the stream is left as it was.
    pub error: Error,
}

impl fmt::Display for StreamFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.stream, self.error)
    }
}

/// What `compact` or `prune` did.
#[derive(Debug, Default)]
#[must_use]
pub struct MaintenanceReport {
    /// `compact`: events pruned (markers not counted). `prune`: snapshots
    /// deleted.
    pub removed: usize,
    /// The streams that failed, ascending by stream; every other stream was
    /// processed.
    pub failed: Vec<StreamFailure>,
}

impl MaintenanceReport {
    /// Whether every stream was processed.
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty()
    }

    /// Adds one stream's step: its count, or its failure.
    pub fn record(&mut self, stream: &StreamKey, step: Result<usize>) {
        match step {
            Ok(removed) => self.removed += removed,
            Err(error) => self.failed.push(StreamFailure {
                stream: stream.clone(),
                error,
            }),
        }
    }

    /// Orders the failures by stream, for backends that process streams out
    /// of order.
    pub fn sort(&mut self) {
        self.failed.sort_by(|a, b| a.stream.cmp(&b.stream));
    }
}
