//! Repeated measurements: the rounds of one figure, and interleaving the
//! rounds of several figures so that each ratio compares figures measured
//! seconds apart.

use std::time::Duration;

use runstore::bench::OpResult;

/// The rounds of one figure.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// One result per round.
    pub rounds: Vec<OpResult>,
}

impl Tally {
    /// Events over all rounds.
    pub fn events(&self) -> u64 {
        self.rounds.iter().map(|round| round.events).sum()
    }

    /// Calls over all rounds.
    pub fn calls(&self) -> u64 {
        self.rounds.iter().map(|round| round.calls).sum()
    }

    /// Seconds over all rounds.
    pub fn secs(&self) -> f64 {
        self.rounds.iter().map(|round| round.elapsed_secs).sum()
    }

    /// Events per second over all rounds.
    pub fn rate(&self) -> f64 {
        let secs = self.secs();
        if secs > 0.0 {
            self.events() as f64 / secs
        } else {
            0.0
        }
    }

    /// The median of the rounds' p50 latencies, in microseconds.
    pub fn p50_us(&self) -> f64 {
        median(self.rounds.iter().map(|round| round.p50_us))
    }

    /// The median of the rounds' p99 latencies, in microseconds.
    pub fn p99_us(&self) -> f64 {
        median(self.rounds.iter().map(|round| round.p99_us))
    }

    /// The lowest and highest per-round rate.
    pub fn rate_range(&self) -> (f64, f64) {
        self.rounds
            .iter()
            .map(|round| round.events_per_sec)
            .fold((f64::INFINITY, 0.0_f64), |(low, high), rate| {
                (low.min(rate), high.max(rate))
            })
    }
}

/// Per-round ratios of `value`'s rate to `base`'s rate (as many as both
/// have rounds); the overall ratio when the round counts differ.
pub fn round_ratios(value: &Tally, base: &Tally) -> Vec<f64> {
    if value.rounds.len() != base.rounds.len() || value.rounds.is_empty() {
        let ratio = if base.rate() > 0.0 {
            value.rate() / base.rate()
        } else {
            0.0
        };
        return vec![ratio];
    }
    value
        .rounds
        .iter()
        .zip(&base.rounds)
        .map(|(v, b)| {
            if b.events_per_sec > 0.0 {
                v.events_per_sec / b.events_per_sec
            } else {
                0.0
            }
        })
        .collect()
}

pub(crate) fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        f64::midpoint(values[mid - 1], values[mid])
    } else {
        values[mid]
    }
}

/// One side of an interleaved round.
pub trait Round {
    /// Measures for about `window` and records the result.
    fn round(&mut self, window: Duration);
    /// What was recorded.
    fn tally(&self) -> &Tally;
}

/// An operation that takes a count (`op(n)` makes `n` units of work), sized
/// each round to fill the window from the pace of the previous call.
pub struct Windowed<F> {
    op: F,
    /// Units and wall time of the previous call.
    pace: Option<(u64, Duration)>,
    min_units: u64,
    max_units: u64,
    tally: Tally,
}

impl<F: FnMut(u64) -> OpResult> Windowed<F> {
    /// Sizes `op` between `min_units` and `max_units` units per round.
    pub fn new(min_units: u64, max_units: u64, op: F) -> Self {
        Self {
            op,
            pace: None,
            min_units: min_units.max(1),
            max_units: max_units.max(min_units.max(1)),
            tally: Tally::default(),
        }
    }

    fn units_for(&self, window: Duration) -> u64 {
        let Some((units, took)) = self.pace else {
            return self.min_units;
        };
        let took = took.as_nanos().max(1);
        let wanted = u128::from(units) * window.as_nanos() / took;
        u64::try_from(wanted)
            .unwrap_or(u64::MAX)
            .clamp(self.min_units, self.max_units)
    }
}

impl<F: FnMut(u64) -> OpResult> Round for Windowed<F> {
    fn round(&mut self, window: Duration) {
        if self.pace.is_none() {
            // A probe, not recorded: it may include first-touch costs.
            let probe = (self.op)(self.min_units);
            self.pace = Some((self.min_units, probe.elapsed()));
        }
        let units = self.units_for(window);
        let result = (self.op)(units);
        self.pace = Some((units, result.elapsed()));
        self.tally.rounds.push(result);
    }

    fn tally(&self) -> &Tally {
        &self.tally
    }
}

/// Runs `rounds` rounds, each giving every side `window` in turn, and
/// returns each side's tally in the order given.
pub fn interleave(rounds: u32, window: Duration, sides: &mut [&mut dyn Round]) -> Vec<Tally> {
    for _ in 0..rounds {
        for side in sides.iter_mut() {
            side.round(window);
        }
    }
    sides.iter().map(|side| side.tally().clone()).collect()
}

/// Criterion's `iter_custom` time for `iters` iterations of a workload call
/// that made `done` units of work in `result`.
pub fn scaled(result: &OpResult, done: u64, iters: u64) -> Duration {
    if done == 0 || done == iters {
        return result.elapsed();
    }
    result.elapsed().mul_f64(iters as f64 / done as f64)
}

/// An [`OpResult`] with the given events, seconds and p50 (p99 twice that),
/// for tests.
#[cfg(test)]
pub(crate) fn sample(events: u64, secs: f64, p50: f64) -> OpResult {
    OpResult {
        operation: runstore::bench::Operation::SingleAppend,
        calls: events,
        events,
        elapsed_secs: secs,
        events_per_sec: events as f64 / secs,
        calls_per_sec: events as f64 / secs,
        p50_us: p50,
        p99_us: p50 * 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_sum_rounds_and_take_median_latencies() {
        let tally = Tally {
            rounds: vec![
                sample(100, 1.0, 10.0),
                sample(300, 1.0, 30.0),
                sample(200, 2.0, 20.0),
            ],
        };
        assert_eq!(tally.events(), 600);
        assert_eq!(tally.rate(), 150.0);
        assert_eq!(tally.p50_us(), 20.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
        assert_eq!(tally.rate_range(), (100.0, 300.0));
        let base = Tally {
            rounds: vec![
                sample(200, 1.0, 1.0),
                sample(100, 1.0, 1.0),
                sample(400, 1.0, 1.0),
            ],
        };
        assert_eq!(round_ratios(&tally, &base), vec![0.5, 3.0, 0.25]);
        let short = Tally {
            rounds: vec![sample(300, 1.0, 1.0)],
        };
        assert_eq!(round_ratios(&tally, &short), vec![0.5]);
    }

    #[test]
    fn windowed_sizes_rounds_from_the_previous_rate() {
        let mut sizes = Vec::new();
        let mut side = Windowed::new(10, 1_000, |n| {
            sizes.push(n);
            // 1,000 units per second.
            sample(n, n as f64 / 1_000.0, 1.0)
        });
        interleave(2, Duration::from_millis(500), &mut [&mut side]);
        assert_eq!(side.tally().rounds.len(), 2);
        drop(side);
        assert_eq!(sizes, vec![10, 500, 500]);
    }
}
