//! What opening a store costs in a fresh process: the bench binary runs
//! itself as a child that only opens the store and reports its resident
//! memory growth and open time.

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

/// The child-process job of [`open_in_child`]: the store path to open.
pub const OPEN_CHILD_ENV: &str = "RUNSTORE_BENCH_OPEN_CHILD";

/// What opening a store in a fresh process cost.
#[derive(Debug, Clone, Copy)]
pub struct OpenFootprint {
    /// Resident memory the open added.
    pub rss_bytes: u64,
    /// Wall time of the open.
    pub open_secs: f64,
}

/// Resident memory of this process, from `/proc/self/status`.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Call first in a bench's `main`: when this process is the child of
/// [`open_in_child`], opens the store with `open`, prints its footprint and
/// exits. Measuring in a fresh process keeps memory the parent freed (but
/// the allocator kept) out of the figure.
pub fn serve_open_child<S, F, Fut>(open: F)
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = runstore_core::Result<S>>,
{
    let Some(path) = std::env::var_os(OPEN_CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let before = rss_bytes().unwrap_or(0);
    let start = Instant::now();
    let store = rt
        .block_on(open(PathBuf::from(path)))
        .expect("the child opens the store");
    let open_secs = start.elapsed().as_secs_f64();
    let after = rss_bytes().unwrap_or(0);
    println!(
        "rss_bytes={} open_secs={open_secs}",
        after.saturating_sub(before)
    );
    drop(store);
    std::process::exit(0);
}

/// Opens the store at `path` in a child process (this bench binary, see
/// [`serve_open_child`]) and reports what the open cost there.
///
/// # Panics
/// When the child cannot run or reports nothing.
pub fn open_in_child(path: &Path) -> OpenFootprint {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let output = Command::new(exe)
        .env(OPEN_CHILD_ENV, path)
        .output()
        .expect("the open child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the open child failed: {}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |name: &str| {
        stdout
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("the open child printed no {name}: {stdout}"))
            .to_owned()
    };
    OpenFootprint {
        rss_bytes: field("rss_bytes").parse().expect("a byte count"),
        open_secs: field("open_secs").parse().expect("seconds"),
    }
}
