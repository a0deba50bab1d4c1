//! A tenant's change feed: positions and the records read from it
//! (CONTRACT §29).
//!
//! Every record a tenant's streams hold (events and markers) has a
//! [`FeedPosition`], unique and increasing within the tenant in commit
//! order. [`EventLog::read_feed`](crate::EventLog::read_feed) answers the
//! records after a position; a reader stores the position of the last record
//! it handled and resumes from it.
//!
//! # For a backend
//!
//! - Assign positions inside the commit that makes the records visible, so
//!   that the lossless rule holds: once `read_feed` has returned a record at
//!   position `p`, no record may become visible later at a position `<= p`.
//!   A backend whose writers are serialised (JSONL, SQLite, redb) takes the
//!   tenant's next position under its write lock; a backend with concurrent
//!   writers must order by something that stays lossless (PostgreSQL orders
//!   by the writing transaction and reads only below the oldest transaction
//!   still in progress).
//! - A batch's new records take consecutive positions in seq order; an
//!   import's records take positions in seq order; a compaction marker and an
//!   erasure marker take a new position when they are written, above every
//!   position handed out before. Pruned and erased records leave the feed.
//! - Positions are the backend's own: a migrated stream gets the target's
//!   positions. A position is never reused, also after the record at the
//!   highest position is deleted, and survives a restart.
//! - Single-counter backends use [`FeedPosition::new`]; a backend whose
//!   order has two parts (PostgreSQL: transaction, then row) uses
//!   [`FeedPosition::from_parts`]. Both print and parse through
//!   [`Display`](std::fmt::Display) and [`FromStr`], so a
//!   user can copy a position from the CLI's output.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, EventRecord};

/// A record's place in its tenant's feed.
///
/// Ordered; [`FeedPosition::START`] is before every record. Prints as the
/// decimal counter (`42`) or, for a two-part position, as `high.low`
/// (`8392.17`); both forms parse back.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedPosition {
    high: u64,
    low: u64,
}

impl FeedPosition {
    /// Before every record: read from here to read the whole feed.
    pub const START: Self = Self { high: 0, low: 0 };

    /// The position `counter` of a single-counter feed (1 is the first
    /// record).
    pub const fn new(counter: u64) -> Self {
        Self {
            high: 0,
            low: counter,
        }
    }

    /// A two-part position, ordered by `high` and then `low`.
    pub const fn from_parts(high: u64, low: u64) -> Self {
        Self { high, low }
    }

    /// The two parts, `(high, low)`; a single-counter position is
    /// `(0, counter)`.
    pub const fn parts(self) -> (u64, u64) {
        (self.high, self.low)
    }
}

impl fmt::Display for FeedPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.high == 0 {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}.{}", self.high, self.low)
        }
    }
}

impl fmt::Debug for FeedPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FeedPosition({self})")
    }
}

impl FromStr for FeedPosition {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let part = |digits: &str| {
            if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
                return None;
            }
            digits.parse::<u64>().ok()
        };
        let parsed = match text.split_once('.') {
            None => part(text).map(Self::new),
            Some((high, low)) => part(high)
                .zip(part(low))
                .map(|(high, low)| Self::from_parts(high, low)),
        };
        parsed.ok_or_else(|| {
            Error::invalid(format!(
                "feed position {text:?} is not a number or two numbers joined by '.'"
            ))
        })
    }
}

impl Serialize for FeedPosition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FeedPosition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One record of a tenant's feed and its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedRecord {
    /// Where the record is in the tenant's feed.
    pub position: FeedPosition,
    /// The record, as [`read`](crate::EventLog::read) returns it.
    pub record: EventRecord,
}

/// How [`EventLogExt::follow_feed`](crate::EventLogExt::follow_feed) reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowOptions {
    /// How long to wait before reading again when the feed had nothing new
    /// and no wake-up came.
    pub poll_interval: std::time::Duration,
    /// How many records one read asks for.
    pub batch: usize,
}

impl Default for FollowOptions {
    fn default() -> Self {
        Self {
            poll_interval: std::time::Duration::from_millis(200),
            batch: 256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_by_high_then_low() {
        assert!(FeedPosition::START < FeedPosition::new(1));
        assert!(FeedPosition::new(u64::MAX) < FeedPosition::from_parts(1, 0));
        assert!(FeedPosition::from_parts(1, 9) < FeedPosition::from_parts(2, 0));
        assert_eq!(FeedPosition::new(7).parts(), (0, 7));
    }

    #[test]
    fn positions_print_and_parse_back() {
        for position in [
            FeedPosition::START,
            FeedPosition::new(42),
            FeedPosition::from_parts(8392, 17),
            FeedPosition::from_parts(u64::MAX, u64::MAX),
        ] {
            let text = position.to_string();
            assert_eq!(text.parse::<FeedPosition>().unwrap(), position, "{text}");
            let json = serde_json::to_string(&position).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(
                serde_json::from_str::<FeedPosition>(&json).unwrap(),
                position
            );
        }
        assert_eq!(FeedPosition::new(42).to_string(), "42");
        assert_eq!(FeedPosition::from_parts(3, 0).to_string(), "3.0");
    }

    #[test]
    fn malformed_positions_are_refused_with_one_line() {
        for text in [
            "",
            ".",
            "1.",
            ".1",
            "-1",
            "+1",
            "1.2.3",
            "x",
            " 1",
            "18446744073709551616",
        ] {
            let error = text.parse::<FeedPosition>().unwrap_err();
            assert!(matches!(error, Error::InvalidInput { .. }), "{text:?}");
            assert!(!error.to_string().contains('\n'));
        }
    }
}
