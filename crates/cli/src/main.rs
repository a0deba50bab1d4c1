//! `runstore`: operate any runstore store from the shell.
//!
//! Results go to stdout as one JSON object per line (`--format table` for
//! people); errors go to stderr as one `error: ...` line with a non-zero
//! exit status. See `docs/cli.md`.

mod cli;
mod commands;
mod output;

use std::{io, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::{CommandFactory as _, FromArgMatches as _, error::ErrorKind, parser::ValueSource};
use runstore::{OpenError, Store, Tenant};
// Parsing lives in the library target, where the fuzz targets reach it.
use runstore_cli::input;

use crate::{
    cli::{Cli, Command, Format},
    output::Output,
};

/// What every command gets: the global options, parsed.
pub struct Ctx {
    /// `--store`.
    pub store_url: String,
    /// `--tenant`.
    pub tenant: Tenant,
    /// `--format`.
    pub format: Format,
}

impl Ctx {
    /// Opens `--store`.
    pub async fn open_store(&self) -> Result<Store> {
        open_store(&self.store_url).await
    }

    /// A fresh stdout writer in the chosen format.
    pub fn output(&self) -> Output {
        Output::new(self.format)
    }
}

/// Opens a store URL, naming it in backend errors.
pub async fn open_store(url: &str) -> Result<Store> {
    match runstore::open(url).await {
        Ok(store) => Ok(store),
        Err(OpenError::Store(err)) => Err(err).with_context(|| format!("opening store {url}")),
        Err(err) => Err(err.into()),
    }
}

/// The panic hook: one `error: internal error: ...` line on stderr.
pub fn report_panic(info: &std::panic::PanicHookInfo<'_>) {
    let message = info
        .payload()
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned());
    let location = info
        .location()
        .map(|at| format!(" at {}:{}", at.file(), at.line()))
        .unwrap_or_default();
    eprintln!("error: internal error: {}{location}", one_line(&message));
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(report_panic));

    let cli = match parse_args() {
        Ok(cli) => cli,
        Err(err) => return clap_error(&err),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!(
                "error: starting the async runtime: {}",
                one_line(&err.to_string())
            );
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", causes_once(&err));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let tenant = Tenant::parse(&cli.tenant).context("--tenant")?;
    let ctx = Ctx {
        store_url: cli.store,
        tenant,
        format: cli.format,
    };
    match cli.command {
        Command::Append(args) => commands::events::append(&ctx, args).await,
        Command::Read(args) => commands::events::read(&ctx, args).await,
        Command::Feed(args) => commands::feed::feed(&ctx, args).await,
        Command::NextSeq(args) => commands::events::next_seq(&ctx, args).await,
        Command::SeqOf(args) => commands::events::seq_of(&ctx, args).await,
        Command::Runs => commands::events::runs(&ctx).await,
        Command::Compact(args) => commands::events::compact(&ctx, args).await,
        Command::Snapshot(command) => commands::snapshot::run(&ctx, command).await,
        Command::Migrate(args) => commands::migrate::run(&ctx, args).await,
        Command::ImportReference(args) => commands::reference::run(&ctx, args).await,
        Command::Verify => commands::verify::run(&ctx).await,
        Command::Salvage(args) => commands::salvage::run(&ctx, args).await,
        Command::DeleteRun(args) => commands::erase::delete_run(&ctx, args).await,
        Command::DeleteTenant(args) => commands::erase::delete_tenant(&ctx, args).await,
        Command::Stats => commands::stats::run(&ctx).await,
        Command::Bench(args) => commands::bench::run(&ctx, args).await,
    }
}

/// Parses the command line; an empty `RUNSTORE_URL` counts as unset.
fn parse_args() -> Result<Cli, clap::Error> {
    let matches = Cli::command().try_get_matches()?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if cli.store.is_empty() && matches.value_source("store") == Some(ValueSource::EnvVariable) {
        cli.store = cli::DEFAULT_STORE.to_owned();
    }
    Ok(cli)
}

/// Help and version go to stdout as clap prints them; a usage error becomes
/// one `error: ...` line.
fn clap_error(err: &clap::Error) -> ExitCode {
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Printing help can only fail on a closed stdout, which is fine.
            let _ = err.print();
            ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2))
        }
        _ => {
            let rendered = err.render().to_string();
            let text = rendered
                .lines()
                .map(str::trim)
                .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more"))
                .filter(|line| !line.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            let text = text.strip_prefix("error: ").unwrap_or(&text);
            eprintln!(
                "error: {}",
                if text.is_empty() {
                    "invalid arguments"
                } else {
                    text
                }
            );
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, each cause once: drivers often
/// repeat their source's text in their own message, and so do our errors
/// (`Backend`, `Io`), so a cause already said is not said again.
fn causes_once(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = one_line(&cause.to_string());
        if text.is_empty() || message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// `text` on one line: line breaks become `; `.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|err| err.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Driver;

    impl std::fmt::Display for Driver {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("constraint failed: UNIQUE")
        }
    }

    impl std::error::Error for Driver {}

    #[test]
    fn each_cause_is_said_once() {
        // A driver error whose own message repeats its source's.
        #[derive(Debug)]
        struct Wrapper(Driver);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "query failed: {}", self.0)
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = anyhow::Error::new(Wrapper(Driver)).context("compacting");
        assert_eq!(format!("{err:#}").matches("UNIQUE").count(), 2);
        assert_eq!(
            causes_once(&err),
            "compacting: query failed: constraint failed: UNIQUE"
        );
    }
}
