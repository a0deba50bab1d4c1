//! `bench`: the standard workload on several backends, side by side.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use runstore::{
    Backend, StoreUrl,
    bench::{
        OpResult, Operation, Progress, Workload, WorkloadConfig, WorkloadReport, fdatasync_rate,
    },
};
use serde::Serialize;
use serde_json::Value;

use crate::{
    Ctx,
    cli::BenchArgs,
    open_store,
    output::{Row, render_table},
};

/// The backends `bench` runs with no `--backends`: the embedded ones built in.
const EMBEDDED: [Backend; 3] = [Backend::Jsonl, Backend::Sqlite, Backend::Redb];

/// One backend's results.
#[derive(Debug, Serialize)]
struct BackendReport {
    backend: String,
    url: String,
    /// The disk's raw write+fdatasync rate under the store, measured just
    /// before it (only for stores in a local directory).
    raw_fdatasync: Option<OpResult>,
    report: WorkloadReport,
}

/// Where one bench target lives.
struct Target {
    label: String,
    url: String,
    /// The directory a temporary store lives in, for the sync baseline.
    dir: Option<std::path::PathBuf>,
}

/// Runs the workload on each target in turn and prints the table (or JSON).
pub async fn run(_ctx: &Ctx, args: BenchArgs) -> Result<()> {
    let temp = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            tempfile::Builder::new()
                .prefix("runstore-bench-")
                .tempdir_in(dir)
        }
        None => tempfile::Builder::new().prefix("runstore-bench-").tempdir(),
    }
    .context("creating the bench directory")?;
    let targets = targets(&args.backends, temp.path())?;

    let mut config = WorkloadConfig::default();
    if let Some(events) = args.events {
        config.events = events;
    }
    if let Some(runs) = args.runs {
        config.runs = runs;
    }
    if let Some(tail) = args.tail {
        config.tail = tail;
    }
    config.runs = config.runs.min(config.events.max(1));

    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{prefix:>8} {msg:<18} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    let mut reports = Vec::new();
    for target in &targets {
        bar.set_prefix(target.label.clone());
        let raw_fdatasync = match &target.dir {
            Some(dir) if args.sync_baseline_ms > 0 => {
                bar.set_message("raw_fdatasync");
                bar.set_length(1);
                bar.set_position(0);
                Some(fdatasync_rate(dir, Duration::from_millis(args.sync_baseline_ms)).await?)
            }
            _ => None,
        };
        let store = open_store(&target.url).await?;
        let progress_bar = bar.clone();
        let progress = Progress::new(move |update| {
            progress_bar.set_message(update.operation.name());
            progress_bar.set_length(update.total);
            progress_bar.set_position(update.done);
        });
        let report = Workload::new(store.as_dyn().clone(), config)
            .with_progress(progress)
            .run()
            .await
            .with_context(|| format!("benchmarking {}", target.label))?;
        drop(store);
        reports.push(BackendReport {
            backend: target.label.clone(),
            url: target.url.clone(),
            raw_fdatasync,
            report,
        });
    }
    bar.finish_and_clear();

    let mut out = crate::output::Output::new(crate::cli::Format::Json);
    if args.json {
        for report in &reports {
            out.emit(report)?;
        }
        return out.flush();
    }
    print_table(&reports, &config);
    Ok(())
}

/// Resolves `--backends`: names get a fresh store in `dir`, URLs are used as
/// given.
fn targets(names: &[String], dir: &Path) -> Result<Vec<Target>> {
    let names: Vec<String> = if names.is_empty() {
        let enabled: Vec<String> = EMBEDDED
            .iter()
            .filter(|backend| backend.is_enabled())
            .map(|backend| backend.name().to_owned())
            .collect();
        if enabled.is_empty() {
            vec!["memory".to_owned()]
        } else {
            enabled
        }
    } else {
        names
            .iter()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .collect()
    };
    let mut targets = Vec::new();
    for name in names {
        if name.contains(':') {
            let url = StoreUrl::parse(&name)?;
            targets.push(Target {
                label: url.backend().name().to_owned(),
                url: name,
                dir: None,
            });
            continue;
        }
        let backend: Backend = name.parse()?;
        let store_dir = dir.join(backend.name());
        let url = match backend {
            Backend::Jsonl => format!("jsonl:{}", store_dir.join("store").display()),
            Backend::Sqlite => format!("sqlite:{}", store_dir.join("bench.sqlite").display()),
            Backend::Redb => format!("redb:{}", store_dir.join("bench.redb").display()),
            Backend::Memory => "memory:".to_owned(),
            other => bail!(
                "the {other} backend needs a server: give its store URL in --backends (e.g. {})",
                if other == Backend::S3 {
                    "s3://BUCKET/PREFIX"
                } else {
                    "postgres://HOST/DB"
                }
            ),
        };
        if backend != Backend::Memory {
            std::fs::create_dir_all(&store_dir)
                .with_context(|| format!("creating {}", store_dir.display()))?;
        }
        targets.push(Target {
            label: backend.name().to_owned(),
            url,
            dir: (backend != Backend::Memory).then_some(store_dir),
        });
    }
    Ok(targets)
}

fn print_table(reports: &[BackendReport], config: &WorkloadConfig) {
    // Every operation any backend ran, in the order they ran: a backend
    // without a feed has no feed rows, and its cells there stay empty.
    let mut operations: Vec<Operation> = Vec::new();
    for result in reports.iter().flat_map(|report| &report.report.results) {
        if !operations.contains(&result.operation) {
            operations.push(result.operation);
        }
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut row = |operation: &str, metric: &str, cell: &dyn Fn(&BackendReport) -> String| {
        let mut fields = vec![
            ("operation".to_owned(), Value::from(operation)),
            ("metric".to_owned(), Value::from(metric)),
        ];
        for report in reports {
            fields.push((report.backend.clone(), Value::from(cell(report))));
        }
        rows.push(Row::Fields(fields));
    };
    if reports.iter().any(|report| report.raw_fdatasync.is_some()) {
        row("raw_fdatasync", "syncs/s", &|report| {
            report
                .raw_fdatasync
                .as_ref()
                .map(|raw| rate(raw.events_per_sec))
                .unwrap_or_default()
        });
    }
    for operation in operations {
        let result = |report: &BackendReport| report.report.get(operation).cloned();
        row(operation.name(), "events/s", &|report| {
            result(report)
                .map(|r| rate(r.events_per_sec))
                .unwrap_or_default()
        });
        row("", "p50 us", &|report| {
            result(report).map(|r| micros(r.p50_us)).unwrap_or_default()
        });
        row("", "p99 us", &|report| {
            result(report).map(|r| micros(r.p99_us)).unwrap_or_default()
        });
    }
    let mut columns = vec!["operation".to_owned(), "metric".to_owned()];
    columns.extend(reports.iter().map(|report| report.backend.clone()));
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    println!(
        "runstore bench: {} events preloaded over {} runs, {} concurrent appenders, batches of {}, reads of {}",
        config.events, config.runs, config.concurrency, config.batch_size, config.tail
    );
    print!("{}", render_table(&rows, Some(&columns)));
}

fn rate(per_sec: f64) -> String {
    group_thousands(&format!("{per_sec:.0}"))
}

fn micros(us: f64) -> String {
    if us >= 100.0 {
        group_thousands(&format!("{us:.0}"))
    } else {
        format!("{us:.1}")
    }
}

/// `1234567` as `1,234,567`; anything but plain digits is returned as is.
fn group_thousands(digits: &str) -> String {
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return digits.to_owned();
    }
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group_thousands("0"), "0");
        assert_eq!(group_thousands("999"), "999");
        assert_eq!(group_thousands("1234567"), "1,234,567");
        assert_eq!(rate(1234.6), "1,235");
        assert_eq!(micros(12.345), "12.3");
    }
}
