//! Failures inside a write transaction, and retrying them.
//!
//! A transaction fails with a [`Fail`]: a driver error or a contract error.
//! [`retrying!`](retrying) runs an attempt again while SQLite is busy (up to
//! the busy timeout) or, where a new plan may succeed ([`Replan::Yes`]),
//! after a unique-key violation; [`Writer::give_up`] names the failure that
//! stays. The general path, maintenance and import run their transactions
//! through it; the guarded path does not retry, as whatever it cannot write
//! goes to the general path.

use std::time::Instant;

use runstore_core::Error;

use super::Writer;
use crate::{conn::backoff, error::SqliteError};

/// How many unique-key violations a write re-plans before giving up.
const MAX_PLAN_ATTEMPTS: u32 = 3;

/// A failure inside a write transaction: a driver error (maybe retried) or
/// a contract error (answered as is).
pub(super) enum Fail {
    Db(SqliteError),
    Core(Error),
}

impl Fail {
    /// Whether the failure stops a maintenance pass (see
    /// [`SqliteError::is_store_wide`]) rather than only the streams it was
    /// processing.
    pub(super) fn is_store_wide(&self) -> bool {
        match self {
            Self::Db(err) => err.is_store_wide(),
            Self::Core(_) => false,
        }
    }
}

impl From<Error> for Fail {
    fn from(err: Error) -> Self {
        Self::Core(err)
    }
}

impl From<SqliteError> for Fail {
    fn from(err: SqliteError) -> Self {
        Self::Db(err)
    }
}

pub(super) fn into_error(fail: Fail) -> Error {
    match fail {
        Fail::Db(err) => err.into(),
        Fail::Core(err) => err,
    }
}

/// Evaluates `$attempt` (an expression using `$writer`, a [`Writer`])
/// until it succeeds, fails for good, or runs out of retries; maps the final
/// failure. SQLITE_BUSY is retried until the busy timeout; a unique-key
/// violation is planned again only with [`Replan::Yes`]. A macro rather than
/// a function taking an async closure, so that the leader's future stays
/// provably `Send`.
macro_rules! retrying {
    ($writer:ident, $action:expr, $replan:expr, $attempt:expr) => {{
        let started = std::time::Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match $attempt {
                Err($crate::writer::retry::Fail::Db(err)) => {
                    if $writer.should_retry(&err, $replan, started, attempts).await {
                        continue;
                    }
                    break Err($crate::writer::retry::Fail::Db(
                        $writer.give_up(err, $action, $replan, started, attempts),
                    ));
                }
                other => break other,
            }
        }
    }};
}
pub(super) use retrying;

/// Whether a write that hit a unique key is planned again: a plan made
/// inside the write transaction should not hit one, so a retry may succeed
/// where state changed underneath (appends, imports). Maintenance re-reads
/// the same state and would fail the same way.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Replan {
    Yes,
    No,
}

impl Writer {
    /// Whether to retry after `err` on attempt `attempt` of a write started
    /// at `started`; sleeps the backoff first when retrying SQLITE_BUSY.
    pub(super) async fn should_retry(
        &self,
        err: &SqliteError,
        replan: Replan,
        started: Instant,
        attempt: u32,
    ) -> bool {
        if err.is_busy() {
            if started.elapsed() >= self.busy_timeout {
                return false;
            }
            tokio::time::sleep(backoff(attempt)).await;
            return true;
        }
        replan == Replan::Yes && err.is_unique_violation() && attempt < MAX_PLAN_ATTEMPTS
    }

    /// The error a write that gave up answers.
    pub(super) fn give_up(
        &self,
        err: SqliteError,
        action: &'static str,
        replan: Replan,
        started: Instant,
        attempts: u32,
    ) -> SqliteError {
        if err.is_busy() {
            return SqliteError::Busy {
                path: self.path.clone(),
                action,
                waited: started.elapsed(),
                timeout: self.busy_timeout,
            };
        }
        match err {
            SqliteError::Driver { at, driver, .. }
                if replan == Replan::Yes && crate::error::is_unique_violation(&driver) =>
            {
                SqliteError::UniqueAfterPlan {
                    path: self.path.clone(),
                    action,
                    at,
                    attempts,
                    driver,
                }
            }
            other => other,
        }
    }
}
