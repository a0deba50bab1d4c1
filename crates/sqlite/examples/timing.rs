//! A quick private timing run of the SQLite store next to a bare sqlx
//! insert loop on the same disk (the criterion benches in `benches/` are the
//! reference figures). Build with `--release`; sizes from the environment:
//! `EVENTS` preloaded for the tail read (default 1,000,000), `SINGLE`
//! single appends per window (default 1,000), `DIR` for the files;
//! `ONLY=batch` runs `BATCHES` batches of 100 only; `RELAXED=1` writes with
//! relaxed durability.
//!
//! ```text
//! cargo run --release -p runstore-sqlite --example timing
//! ```

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use runstore_core::{
    Durability, EventId, EventLog, EventLogExt, EventRecord, ReadQuery, Result, RunId, Tenant,
};
use runstore_sqlite::{SqliteOptions, SqliteStore};
use serde_json::json;
use sqlx::{
    ConnectOptions as _,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn event(tenant: &Tenant, run: &RunId, id: String, at: u64) -> EventRecord {
    EventRecord::new(tenant, run.clone(), EventId::new(id).expect("id"), "timing", at).with_payload(
        json!({"step": 0, "status": "ok", "detail": "benchmark event with a short human-readable detail"}),
    )
}

/// `n` bare single-row autocommit inserts, WAL + FULL: events per second.
async fn bare(conn: &mut sqlx::SqliteConnection, body: &str, start: u64, n: u64) -> f64 {
    let began = Instant::now();
    for i in start..start + n {
        sqlx::query("INSERT INTO bare (run_id, event_id, body) VALUES (?, ?, ?)")
            .bind("bare-run")
            .bind(format!("e-{i}"))
            .bind(body)
            .execute(&mut *conn)
            .await
            .expect("bare insert");
    }
    n as f64 / began.elapsed().as_secs_f64()
}

async fn single(store: &SqliteStore, tenant: &Tenant, run: &RunId, tag: &str, n: u64) -> f64 {
    let began = Instant::now();
    for i in 0..n {
        store
            .append(tenant, &event(tenant, run, format!("{tag}-{i}"), 1))
            .await
            .expect("append");
    }
    n as f64 / began.elapsed().as_secs_f64()
}

async fn concurrent(
    store: &SqliteStore,
    tenant: &Tenant,
    run: &RunId,
    tag: &str,
    per_task: u64,
) -> f64 {
    let began = Instant::now();
    let mut handles = Vec::new();
    for task in 0..64 {
        let store = store.clone();
        let tenant = tenant.clone();
        let run = run.clone();
        let tag = tag.to_owned();
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                store
                    .append(
                        &tenant,
                        &event(&tenant, &run, format!("{tag}-{task}-{i}"), 1),
                    )
                    .await
                    .expect("append");
            }
        }));
    }
    for handle in handles {
        handle.await.expect("task");
    }
    (64 * per_task) as f64 / began.elapsed().as_secs_f64()
}

async fn batches(store: &SqliteStore, tenant: &Tenant, run: &RunId, tag: &str, n: u64) -> f64 {
    let began = Instant::now();
    for b in 0..n {
        let batch: Vec<EventRecord> = (0..100)
            .map(|i| event(tenant, run, format!("{tag}-{b}-{i}"), 1))
            .collect();
        store
            .append_batch(tenant, run, &batch, None)
            .await
            .expect("batch");
    }
    (n * 100) as f64 / began.elapsed().as_secs_f64()
}

async fn open(path: &Path, durability: Durability) -> Result<SqliteStore> {
    SqliteStore::open_with(path, SqliteOptions::default().with_durability(durability)).await
}

#[tokio::main]
async fn main() -> Result<()> {
    let parent = std::env::var_os("DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(parent).expect("scratch directory");
    let single_n = env("SINGLE", 1_000);
    let tenant = Tenant::new("bench-org", "bench-ws", None)?;
    let run = RunId::new("hot")?;
    let durability = if std::env::var("RELAXED").is_ok() {
        Durability::Relaxed
    } else {
        Durability::Durable
    };
    let store = open(&dir.path().join("store.sqlite"), durability).await?;
    let mut conn = SqliteConnectOptions::new()
        .filename(dir.path().join("bare.sqlite"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .connect()
        .await
        .expect("bare database");
    sqlx::query(
        "CREATE TABLE bare (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, event_id TEXT NOT NULL, body TEXT NOT NULL)",
    )
    .execute(&mut conn)
    .await
    .expect("bare table");
    let body = serde_json::to_string(&event(&tenant, &run, "e-0".into(), 0)).expect("body");

    if std::env::var("ONLY").as_deref() == Ok("batch") {
        let batch = batches(&store, &tenant, &run, "b", env("BATCHES", 2_000)).await;
        println!("batch of 100            {batch:>10.0} ev/s   (target >= 50,000)");
        return Ok(());
    }
    // Alternate windows so both sides see the same disk and machine load.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..4 {
        theirs.push(bare(&mut conn, &body, round * single_n, single_n).await);
        ours.push(single(&store, &tenant, &run, &format!("s{round}"), single_n).await);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (ours, theirs) = (mean(&ours), mean(&theirs));
    println!("single durable append   {ours:>10.0} ev/s");
    println!(
        "bare sqlx insert loop   {theirs:>10.0} ev/s   ratio {:.2}x (target >= 0.7x)",
        ours / theirs
    );
    let conc = concurrent(&store, &tenant, &run, "c", 60).await;
    println!(
        "64 concurrent appenders {conc:>10.0} ev/s   {:.1}x single (target >= 5x)",
        conc / ours
    );
    let batch = batches(&store, &tenant, &run, "b", 200).await;
    println!("batch of 100            {batch:>10.0} ev/s   (target >= 50,000)");

    // Tail reads at a large preload (relaxed, large batches).
    let events = env("EVENTS", 1_000_000);
    let read_store = Arc::new(open(&dir.path().join("read.sqlite"), Durability::Relaxed).await?);
    let runs = 1_000;
    let per_run = events / runs;
    let began = Instant::now();
    for r in 0..runs {
        let run = RunId::new(format!("run-{r}"))?;
        for chunk in 0..per_run.div_ceil(1_000) {
            let batch: Vec<EventRecord> = (chunk * 1_000..((chunk + 1) * 1_000).min(per_run))
                .map(|k| event(&tenant, &run, format!("e-{k}"), k))
                .collect();
            read_store.append_batch(&tenant, &run, &batch, None).await?;
        }
    }
    println!(
        "preload {events} events  {:>10.0} ev/s (relaxed, batches of 1000)",
        events as f64 / began.elapsed().as_secs_f64()
    );
    let target = RunId::new("run-500")?;
    let mut times = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let began = Instant::now();
        let tail = read_store
            .read(&tenant, &target, ReadQuery::tail(100))
            .await?;
        times.push(began.elapsed());
        assert_eq!(tail.len() as u64, 100.min(per_run));
    }
    times.sort();
    println!(
        "read tail-100 at {events}: p50 {:?} p99 {:?} ({} reads)",
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        times.len()
    );
    Ok(())
}
