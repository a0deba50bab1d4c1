//! Read windows and append outcomes.

use serde::{Deserialize, Serialize};

/// Which records of a stream to read (CONTRACT §6).
///
/// `after_seq` and `before_seq` are exclusive bounds; a `limit` of `None` or 0
/// means no limit; with `tail` the last `limit` records of the window are
/// returned, still in ascending order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadQuery {
    /// Only records with `seq > after_seq`.
    pub after_seq: Option<u64>,
    /// Only records with `seq < before_seq`.
    pub before_seq: Option<u64>,
    /// At most this many records; `None` or 0 is no limit.
    pub limit: Option<usize>,
    /// Take the last `limit` records of the window instead of the first.
    pub tail: bool,
}

impl ReadQuery {
    /// The whole stream.
    pub fn all() -> Self {
        Self::default()
    }

    /// The last `limit` records.
    pub fn tail(limit: usize) -> Self {
        Self {
            limit: Some(limit),
            tail: true,
            ..Self::default()
        }
    }

    /// Only records after `seq`.
    #[must_use]
    pub fn after(mut self, seq: u64) -> Self {
        self.after_seq = Some(seq);
        self
    }

    /// Only records before `seq`.
    #[must_use]
    pub fn before(mut self, seq: u64) -> Self {
        self.before_seq = Some(seq);
        self
    }

    /// At most `limit` records.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The effective limit: `None` when unlimited.
    pub fn effective_limit(&self) -> Option<usize> {
        self.limit.filter(|limit| *limit > 0)
    }

    /// Whether `seq` lies inside the window's bounds.
    pub fn contains(&self, seq: u64) -> bool {
        self.after_seq.is_none_or(|after| seq > after)
            && self.before_seq.is_none_or(|before| seq < before)
    }

    /// Applies the window to records already in ascending seq order.
    pub fn apply<T>(
        &self,
        ascending: impl IntoIterator<Item = T>,
        seq: impl Fn(&T) -> u64,
    ) -> Vec<T> {
        let mut rows: Vec<T> = ascending
            .into_iter()
            .filter(|row| self.contains(seq(row)))
            .collect();
        if let Some(limit) = self.effective_limit()
            && rows.len() > limit
        {
            if self.tail {
                rows.drain(..rows.len() - limit);
            } else {
                rows.truncate(limit);
            }
        }
        rows
    }
}

/// What an append did with one event (CONTRACT §1, §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AppendOutcome {
    /// The event's seq: new, or the original one for a duplicate.
    pub seq: u64,
    /// Whether this call stored the event.
    pub inserted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_the_contract() {
        let seqs = 1..=5u64;
        let q = ReadQuery::tail(2).before(5);
        assert_eq!(q.apply(seqs.clone(), |s| *s), vec![3, 4]);
        assert_eq!(
            ReadQuery::all()
                .after(1)
                .limit(2)
                .apply(seqs.clone(), |s| *s),
            vec![2, 3]
        );
        assert_eq!(ReadQuery::all().limit(0).apply(seqs, |s| *s).len(), 5);
    }
}
