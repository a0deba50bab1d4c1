//! The lone append's fast path: a request of one new event is written by
//! one call of the `append_one` function (migration 0002), one statement
//! committed on its own, instead of the general path's `BEGIN`, lock, id
//! look-up, insert and `COMMIT`.
//!
//! The function takes the stream row's lock first and looks the id up
//! after it, as the general path does, so appends, imports and compactions
//! of the stream still serialise on that row (CONTRACT §3). It writes only
//! when the answer is certain without the shared planner: the event is new
//! to the stream (live and compacted ids), the expected last seq (if any)
//! is the stream's, and the stream has room for one more seq. The answer is
//! then the one [`plan_append`] gives, `[{ seq: last + 1, inserted: true }]`.
//! In every other case it writes nothing and the request goes the general
//! path; see [`Lone::new`] and [`PostgresStore::append_lone`] for the exact
//! fallback conditions.

use runstore_core::{
    AppendOutcome, EventRecord, RunId, Tenant, raw::append::plan_append, validate::MAX_SEQ,
};

use sqlx::Row;

use crate::{
    PostgresStore,
    error::{SqlContext, TxError},
    keys::{self, StreamCols},
};

/// The call, and the id of the transaction it wrote in (NULL when it
/// wrote nothing): the select list is evaluated in order.
const APPEND_ONE: &str = "SELECT append_one($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13), \
     txid_current_if_assigned()";

/// A request the fast path may write: one event, already planned as the
/// stream's first (its scope stamped with the tenant), its JSON text split
/// around the seq's digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lone {
    event_id: String,
    occurred_at_ms: i64,
    /// The record's JSON text up to its seq's digits.
    head: String,
    /// The record's JSON text after its seq's digits.
    tail: String,
    expected_last_seq: Option<i64>,
}

impl Lone {
    /// The request as the fast path writes it, or `None` when it must go
    /// the general path:
    ///
    /// - it holds no event or more than one (a batch, or a batch of one id
    ///   twice);
    /// - the shared planner refuses it whatever the stream holds (an event
    ///   of another run, the compaction marker's event type);
    /// - its expected last seq is beyond what a `BIGINT` holds (it can only
    ///   conflict);
    /// - its record's JSON text cannot be split around the seq (see
    ///   [`split_at_seq`]).
    pub(crate) fn new(
        tenant: &Tenant,
        run_id: &RunId,
        events: &[EventRecord],
        expected_last_seq: Option<u64>,
    ) -> Option<Self> {
        let [_] = events else { return None };
        // The record exactly as the general path would store it, were the
        // stream empty: the planner checks the run and the event type and
        // stamps the tenant; only the seq then depends on the stream.
        let mut plan = plan_append(tenant, run_id, 0, events, None, |_| Ok(None)).ok()?;
        let mut record = plan.new_records.pop()?;
        let expected_last_seq = match expected_last_seq {
            Some(expected) => Some(i64::try_from(expected).ok()?),
            None => None,
        };
        let (head, tail) = split_at_seq(&mut record)?;
        Some(Self {
            event_id: record.event_id.into_string(),
            occurred_at_ms: keys::clamp_i64(record.occurred_at_ms),
            head,
            tail,
            expected_last_seq,
        })
    }
}

/// The record's JSON text before and after its seq's digits, such that
/// `head + n + tail` is the text of the record with seq `n` for every `n`.
///
/// The record is serialised with seq 1 and with seq 2; the texts must differ
/// in exactly one byte, the digit, and nowhere else. Serialisation is
/// deterministic and the seq is written once, as a plain decimal integer
/// (the form PostgreSQL's `BIGINT::TEXT` writes), so the split then holds
/// for every seq. `None` (general path) if it does not.
pub(crate) fn split_at_seq(record: &mut EventRecord) -> Option<(String, String)> {
    record.seq = 1;
    let one = serde_json::to_string(record).ok()?;
    record.seq = 2;
    let two = serde_json::to_string(record).ok()?;
    if one.len() != two.len() {
        return None;
    }
    let at = one.bytes().zip(two.bytes()).position(|(a, b)| a != b)?;
    let same_after = one.as_bytes()[at + 1..] == two.as_bytes()[at + 1..];
    if !same_after || one.as_bytes()[at] != b'1' || two.as_bytes()[at] != b'2' {
        return None;
    }
    Some((one[..at].to_owned(), one[at + 1..].to_owned()))
}

impl PostgresStore {
    /// One call of `append_one`: `Some` with the request's outcome if the
    /// event was written and committed; `None` if the function declined and
    /// wrote nothing, because
    ///
    /// - the event's id is stored in the stream already, live or compacted
    ///   (the answer names its seq, or `Conflict` does not apply: CONTRACT
    ///   §2, §5);
    /// - the expected last seq differs from the stream's (a `Conflict`, or
    ///   the idempotent answer if the id is stored);
    /// - the stream's last seq is [`MAX_SEQ`] (the stream is full);
    ///
    /// and the general path must answer it.
    pub(crate) async fn append_lone(
        &self,
        cols: &StreamCols<'_>,
        lone: &Lone,
    ) -> Result<Option<Vec<AppendOutcome>>, TxError> {
        let call = cols
            .bind(sqlx::query(APPEND_ONE))
            .bind(&lone.event_id)
            .bind(lone.occurred_at_ms)
            .bind(&lone.head)
            .bind(&lone.tail)
            .bind(lone.expected_last_seq)
            .bind(keys::clamp_i64(MAX_SEQ));
        let written = |row: sqlx::postgres::PgRow| -> Result<Option<(i64, i64)>, sqlx::Error> {
            let seq: Option<i64> = row.try_get(0)?;
            let txid: Option<i64> = row.try_get(1)?;
            // A written event always has its transaction's id; 0 would only
            // make the notifier skip its wait for the horizon.
            Ok(seq.map(|seq| (seq, txid.unwrap_or(0))))
        };
        let written = if self.has_commit_delay() {
            // The test delay sits between the call and its commit.
            let mut tx = self
                .pool_ref()
                .begin()
                .await
                .during("beginning an append")?;
            let written = call
                .fetch_one(&mut *tx)
                .await
                .and_then(written)
                .during("appending an event")?;
            match written {
                Some((_, txid)) => {
                    self.commit_records(tx, cols, txid, "committing an append")
                        .await?;
                }
                None => tx.rollback().await.during("ending a declined append")?,
            }
            written
        } else {
            let written = call
                .fetch_one(self.pool_ref())
                .await
                .and_then(written)
                .during("appending an event")?;
            if let Some((_, txid)) = written {
                self.feed().committed(self.pool_ref(), cols, txid);
            }
            written
        };
        let seq = written.map(|(seq, _)| seq);
        seq.map(|seq| {
            let seq = keys::to_u64(|| self.location("streams", cols, "last_seq"), seq)?;
            Ok(vec![AppendOutcome {
                seq,
                inserted: true,
            }])
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use runstore_conformance::support::records::{acme, event, run_1, step};
    use runstore_core::{EventLog, EventRecord, ReadQuery, raw::compaction::COMPACTION_EVENT_TYPE};

    use super::*;
    use crate::testing::{drop_store, fresh_store};

    #[test]
    fn a_record_splits_around_its_seq_for_every_seq() {
        let mut record = step("a", 10).with_payload(serde_json::json!({"seq": 1, "n": [1, 2]}));
        let (head, tail) = split_at_seq(&mut record).unwrap();
        for seq in [1, 9, 10, 12_345, MAX_SEQ] {
            record.seq = seq;
            assert_eq!(
                format!("{head}{seq}{tail}"),
                serde_json::to_string(&record).unwrap()
            );
        }
    }

    #[test]
    fn only_a_lone_event_the_planner_takes_goes_the_fast_path() {
        let (tenant, run) = (acme(), run_1());
        let lone = |events: &[EventRecord], expected| Lone::new(&tenant, &run, events, expected);
        assert!(lone(&[step("a", 10)], None).is_some());
        assert!(lone(&[step("a", 10)], Some(7)).is_some());
        assert!(lone(&[], None).is_none());
        assert!(lone(&[step("a", 10), step("b", 10)], None).is_none());
        assert!(lone(&[step("a", 10), step("a", 10)], None).is_none());
        assert!(lone(&[event(&tenant, "run-2", "a", 10)], None).is_none());
        let mut marker = step("m", 10);
        marker.event_type = COMPACTION_EVENT_TYPE.to_owned();
        assert!(lone(&[marker], None).is_none());
        assert!(lone(&[step("a", 10)], Some(u64::MAX)).is_none());
    }

    /// What a request tests, its run, its events, its expected last seq,
    /// and whether the fast path writes it.
    type Case = (
        &'static str,
        &'static str,
        Vec<EventRecord>,
        Option<u64>,
        bool,
    );

    /// Every request goes to two stores holding the same stream: through
    /// `append_once` (the fast path, then the general path if it declines)
    /// on one, through the general path alone on the other. Answers and
    /// stored records must be identical, and the fast path must take the
    /// lone new events and decline the rest without writing.
    #[tokio::test]
    async fn the_fast_path_answers_as_the_general_path_does() {
        let Some(url) = runstore_conformance::support::service_url(
            "RUNSTORE_POSTGRES_URL",
            "postgres lone-append fast path test",
        ) else {
            return;
        };
        let pid = std::process::id();
        let fast = fresh_store(&url, &format!("lone_fast_{pid}")).await;
        let general = fresh_store(&url, &format!("lone_general_{pid}")).await;
        let tenant = acme();
        let mut marker = step("m", 10);
        marker.event_type = COMPACTION_EVENT_TYPE.to_owned();

        let cases: Vec<Case> = vec![
            (
                "first event, creating the stream",
                "run-1",
                vec![step("a", 10)],
                None,
                true,
            ),
            (
                "next event, expected holds",
                "run-1",
                vec![step("b", 10)],
                Some(1),
                true,
            ),
            (
                "duplicate live id",
                "run-1",
                vec![step("a", 10)],
                None,
                false,
            ),
            (
                "duplicate live id, expected stale",
                "run-1",
                vec![step("b", 10)],
                Some(0),
                false,
            ),
            (
                "new id, expected stale",
                "run-1",
                vec![step("c", 10)],
                Some(1),
                false,
            ),
            (
                "new id, expected ahead",
                "run-1",
                vec![step("c", 10)],
                Some(9),
                false,
            ),
            (
                "new id, expected beyond BIGINT",
                "run-1",
                vec![step("c", 10)],
                Some(u64::MAX),
                false,
            ),
            (
                "a batch",
                "run-1",
                vec![step("c", 10), step("d", 10)],
                None,
                false,
            ),
            (
                "a batch of one id twice",
                "run-1",
                vec![step("e", 10), step("e", 10)],
                None,
                false,
            ),
            (
                "a batch, all stored",
                "run-1",
                vec![step("a", 10), step("e", 10)],
                Some(0),
                false,
            ),
            (
                "an event of another run",
                "run-1",
                vec![event(&tenant, "run-2", "f", 10)],
                None,
                false,
            ),
            (
                "the marker's event type",
                "run-1",
                vec![marker],
                None,
                false,
            ),
            (
                "new stream, expected stale",
                "run-3",
                vec![step("x", 10)],
                Some(2),
                false,
            ),
            ("compact", "", vec![], None, false),
            (
                "duplicate compacted id",
                "run-1",
                vec![step("a", 10)],
                None,
                false,
            ),
            (
                "duplicate compacted id, expected stale",
                "run-1",
                vec![step("c", 10)],
                Some(1),
                false,
            ),
            (
                "new id after compaction",
                "run-1",
                vec![step("f", 10)],
                None,
                true,
            ),
            (
                "duplicate of the new id",
                "run-1",
                vec![step("f", 10)],
                Some(3),
                false,
            ),
        ];
        for (what, run, events, expected, takes) in cases {
            if what == "compact" {
                let a = fast.compact(1, 1_000).await.unwrap();
                let b = general.compact(1, 1_000).await.unwrap();
                assert_eq!(format!("{a:?}"), format!("{b:?}"));
                assert!(a.removed > 0 && a.failed.is_empty(), "{a:?}");
                continue;
            }
            let run = RunId::new(run).unwrap();
            let cols = StreamCols::new(&tenant, &run);
            let lone = Lone::new(&tenant, &run, &events, expected);
            let answer = if takes {
                let lone = lone.expect(what);
                fast.append_lone(&cols, &lone)
                    .await
                    .unwrap()
                    .map(Ok)
                    .ok_or(what)
            } else {
                if let Some(lone) = &lone {
                    let declined = fast.append_lone(&cols, lone).await.unwrap();
                    assert_eq!(declined, None, "{what}: the fast path must decline");
                }
                Ok(fast
                    .append_once(&tenant, &run, &cols, &events, expected)
                    .await
                    .map_err(|err| err.into_error(&cols)))
            }
            .unwrap_or_else(|what| panic!("{what}: the fast path declined"));
            let expect = general
                .append_general(&tenant, &run, &cols, &events, expected)
                .await
                .map_err(|err| err.into_error(&cols));
            assert_eq!(format!("{answer:?}"), format!("{expect:?}"), "{what}");
            for store in [&fast, &general] {
                assert_eq!(
                    store.read(&tenant, &run, ReadQuery::all()).await.unwrap(),
                    general.read(&tenant, &run, ReadQuery::all()).await.unwrap(),
                    "{what}"
                );
            }
            assert_eq!(
                fast.streams().await.unwrap(),
                general.streams().await.unwrap(),
                "{what}"
            );
            for id in ["a", "b", "c", "d", "e", "f", "x"] {
                let id = runstore_core::EventId::new(id).unwrap();
                assert_eq!(
                    fast.seq_of(&tenant, &run, &id).await.unwrap(),
                    general.seq_of(&tenant, &run, &id).await.unwrap(),
                    "{what}"
                );
            }
        }
        // The fast path left no row for the stream it declined to create.
        let rows: (i64,) = sqlx::query_as("SELECT count(*) FROM streams")
            .fetch_one(fast.pool())
            .await
            .unwrap();
        let expect: (i64,) = sqlx::query_as("SELECT count(*) FROM streams")
            .fetch_one(general.pool())
            .await
            .unwrap();
        assert_eq!(rows, expect);
        for store in [fast, general] {
            drop_store(store).await;
        }
    }
}
