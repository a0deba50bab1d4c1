//! The ratio table printed at the end of a bench run: figures, baselines,
//! ratios and targets.

use crate::rounds::{Tally, median, round_ratios};

/// What a figure must reach.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// The ratio to the baseline is at least this.
    RatioAtLeast(f64),
    /// The figure (events/s) is at least this.
    RateAtLeast(f64),
    /// The figure (ms) is at most this.
    MillisAtMost(f64),
    /// The figure (bytes) is at most this.
    BytesAtMost(f64),
    /// No target; shown for context.
    None,
}

impl Target {
    fn text(self) -> String {
        match self {
            Self::RatioAtLeast(x) => format!(">= {x}x"),
            Self::RateAtLeast(x) => format!(">= {} ev/s", human(x)),
            Self::MillisAtMost(x) => format!("<= {x} ms"),
            Self::BytesAtMost(x) => format!("<= {x:.0} B/ev"),
            Self::None => "-".to_owned(),
        }
    }

    /// "met", or "MISSED" with how far off (in percent of the target).
    fn verdict(self, value: f64) -> String {
        let (met, off) = match self {
            Self::RatioAtLeast(x) | Self::RateAtLeast(x) => (value >= x, (x - value) / x),
            Self::MillisAtMost(x) | Self::BytesAtMost(x) => (value <= x, (value - x) / x),
            Self::None => return String::new(),
        };
        if met {
            "met".to_owned()
        } else {
            format!("MISSED by {:.0}%", off * 100.0)
        }
    }
}

#[derive(Debug, Clone)]
struct Row {
    figure: String,
    value: String,
    latency: String,
    baseline: String,
    ratio: String,
    target: String,
    verdict: String,
}

/// The compact table of figures, baselines, ratios and targets printed at
/// the end of a bench run.
#[derive(Debug, Clone)]
pub struct RatioTable {
    title: String,
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl RatioTable {
    /// An empty table.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A figure against a baseline measured in the same rounds; `target`
    /// applies to the ratio `figure / baseline` (events/s).
    pub fn ratio(
        &mut self,
        figure: &str,
        value: &Tally,
        baseline: &str,
        base: &Tally,
        target: Target,
    ) {
        // Each round measured both sides seconds apart: the median of the
        // per-round ratios is what the disk's swings disturb least.
        let per_round = round_ratios(value, base);
        let ratio = median(per_round.iter().copied());
        let spread = spread(&per_round);
        self.rows.push(Row {
            figure: figure.to_owned(),
            value: format!("{} ev/s", human(value.rate())),
            latency: latency(value),
            baseline: format!("{baseline} {}/s", human(base.rate())),
            ratio: format!("{ratio:.2}x{spread}"),
            target: target.text(),
            verdict: target.verdict(ratio),
        });
    }

    /// A figure whose ratio to its baseline was taken round by round
    /// elsewhere (a baseline run as a child process): `per_round` holds the
    /// ratios, their median is checked against `target`.
    pub fn ratio_of_rounds(
        &mut self,
        figure: &str,
        value: String,
        baseline: String,
        per_round: &[f64],
        target: Target,
    ) {
        let ratio = median(per_round.iter().copied());
        let spread = spread(per_round);
        self.rows.push(Row {
            figure: figure.to_owned(),
            value,
            latency: String::new(),
            baseline,
            ratio: format!("{ratio:.2}x{spread}"),
            target: target.text(),
            verdict: target.verdict(ratio),
        });
    }

    /// A throughput figure (events/s) against an absolute target.
    pub fn rate(&mut self, figure: &str, value: &Tally, target: Target) {
        self.rows.push(Row {
            figure: figure.to_owned(),
            value: format!("{} ev/s", human(value.rate())),
            latency: latency(value),
            baseline: String::new(),
            ratio: String::new(),
            target: target.text(),
            verdict: target.verdict(value.rate()),
        });
    }

    /// A latency figure: the target applies to the median call (p50).
    pub fn latency(&mut self, figure: &str, value: &Tally, target: Target) {
        let p50_ms = value.p50_us() / 1e3;
        self.rows.push(Row {
            figure: figure.to_owned(),
            value: format!("{p50_ms:.3} ms p50"),
            latency: latency(value),
            baseline: String::new(),
            ratio: String::new(),
            target: target.text(),
            verdict: target.verdict(p50_ms),
        });
    }

    /// A free-form row; `ratio` is checked against `target`.
    pub fn custom(
        &mut self,
        figure: &str,
        value: String,
        baseline: String,
        ratio: Option<f64>,
        target: Target,
        checked: f64,
    ) {
        self.rows.push(Row {
            figure: figure.to_owned(),
            value,
            latency: String::new(),
            baseline,
            ratio: ratio.map_or_else(String::new, |ratio| format!("{ratio:.2}x")),
            target: target.text(),
            verdict: target.verdict(checked),
        });
    }

    /// A line printed under the table.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The table as text.
    pub fn render(&self) -> String {
        let header = Row {
            figure: "figure".to_owned(),
            value: "value".to_owned(),
            latency: "p50 / p99 per call".to_owned(),
            baseline: "baseline (same rounds)".to_owned(),
            ratio: "ratio".to_owned(),
            target: "target".to_owned(),
            verdict: "verdict".to_owned(),
        };
        let all: Vec<&Row> = std::iter::once(&header).chain(&self.rows).collect();
        let width = |get: fn(&Row) -> &str| all.iter().map(|row| get(row).len()).max().unwrap_or(0);
        let widths = [
            width(|r| &r.figure),
            width(|r| &r.value),
            width(|r| &r.latency),
            width(|r| &r.baseline),
            width(|r| &r.ratio),
            width(|r| &r.target),
        ];
        let mut out = format!("\n== {} ==\n", self.title);
        for row in all {
            let cells = [
                &row.figure,
                &row.value,
                &row.latency,
                &row.baseline,
                &row.ratio,
                &row.target,
            ];
            for (cell, width) in cells.iter().zip(widths) {
                out.push_str(&format!("{cell:<width$}  "));
            }
            out.push_str(&row.verdict);
            out.push('\n');
        }
        for note in &self.notes {
            out.push_str(&format!("  * {note}\n"));
        }
        out
    }

    /// Prints the table to stdout.
    pub fn print(&self) {
        println!("{}", self.render());
    }
}

/// The lowest and highest of per-round ratios, as ` [low..high]` (empty
/// for a single round).
fn spread(per_round: &[f64]) -> String {
    let (low, high) = per_round
        .iter()
        .fold((f64::INFINITY, 0.0_f64), |(low, high), r| {
            (low.min(*r), high.max(*r))
        });
    if per_round.len() > 1 {
        format!(" [{low:.2}..{high:.2}]")
    } else {
        String::new()
    }
}

fn latency(tally: &Tally) -> String {
    format!("{} / {}", micros(tally.p50_us()), micros(tally.p99_us()))
}

fn micros(us: f64) -> String {
    if us >= 1_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} us")
    }
}

/// A rate with a k/M suffix.
pub fn human(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if value >= 1e4 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rounds::sample;

    #[test]
    fn verdicts_say_by_how_much_a_target_is_missed() {
        assert_eq!(Target::RatioAtLeast(0.8).verdict(0.6), "MISSED by 25%");
        assert_eq!(Target::RatioAtLeast(0.8).verdict(0.9), "met");
        assert_eq!(Target::MillisAtMost(0.5).verdict(0.75), "MISSED by 50%");
        assert_eq!(Target::None.verdict(1.0), "");
    }

    #[test]
    fn table_renders_every_row() {
        let mut table = RatioTable::new("t");
        let tally = Tally {
            rounds: vec![sample(100, 1.0, 10.0)],
        };
        table.ratio("single", &tally, "raw", &tally, Target::RatioAtLeast(0.8));
        table.latency("read", &tally, Target::MillisAtMost(0.5));
        table.note("noisy");
        let text = table.render();
        assert!(text.contains("1.00x"), "{text}");
        assert!(text.contains("0.010 ms p50"), "{text}");
        assert!(text.contains("* noisy"), "{text}");
    }
}
