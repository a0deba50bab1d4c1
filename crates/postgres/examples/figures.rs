//! Times the backend's standard workload against a server, next to bare
//! inserts on the same server, and prints one line per figure.
//!
//! ```text
//! RUNSTORE_POSTGRES_URL=postgres://... cargo run --release -p runstore-postgres --example figures
//! ```
//!
//! Figures: single append (latency), batch of 100 (events/s), 64 concurrent
//! appenders across 4 pools on one stream and on 64 streams (events/s),
//! tail-100 read at 1M events (latency); and the same inserts without
//! runstore: one `INSERT` per committed transaction, one `INSERT` of 100
//! rows, and 64 concurrent single-row inserters (pgbench-style).

use std::time::{Duration, Instant};

use runstore_core::{EventId, EventLog, EventRecord, ReadQuery, RunId, Tenant};
use runstore_postgres::{PostgresOptions, PostgresStore};

const SINGLE: usize = 2_000;
const BATCHES: usize = 100;
const CONCURRENT_TASKS: usize = 64;
const PER_TASK: usize = 100;
const TAIL_EVENTS: usize = 1_000_000;
const TAIL_READS: usize = 2_000;

fn event(tenant: &Tenant, run: &RunId, id: String) -> EventRecord {
    EventRecord::new(
        tenant,
        run.clone(),
        EventId::new(id).expect("valid id"),
        "bench",
        1,
    )
    .with_payload(serde_json::json!({"step": "bench", "n": 1}))
}

fn per_sec(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

fn micros(elapsed: Duration, n: usize) -> f64 {
    elapsed.as_secs_f64() * 1e6 / n as f64
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("RUNSTORE_POSTGRES_URL")?;
    let schema = format!("figures_{}", std::process::id());
    let options = PostgresOptions::default()
        .with_schema(schema.clone())
        .with_max_connections(16);
    let store = PostgresStore::connect_with(&url, options.clone()).await?;
    let tenant = Tenant::new("bench", "bench", None)?;

    // Single append, one event per transaction.
    let run = RunId::new("single")?;
    let started = Instant::now();
    for n in 0..SINGLE {
        store
            .append_batch(
                &tenant,
                &run,
                &[event(&tenant, &run, format!("e{n}"))],
                None,
            )
            .await?;
    }
    let single = started.elapsed();
    println!(
        "runstore single append: {:.0} us/append ({:.0}/s)",
        micros(single, SINGLE),
        per_sec(SINGLE, single)
    );

    // Batch of 100.
    let run = RunId::new("batch")?;
    let started = Instant::now();
    for b in 0..BATCHES {
        let batch: Vec<_> = (0..100)
            .map(|i| event(&tenant, &run, format!("b{b}-{i}")))
            .collect();
        store.append_batch(&tenant, &run, &batch, None).await?;
    }
    let batch = started.elapsed();
    println!(
        "runstore batch of 100: {:.0} us/batch ({:.0} events/s)",
        micros(batch, BATCHES),
        per_sec(BATCHES * 100, batch)
    );

    // 64 concurrent appenders across 4 pools: one hot stream, then one stream each.
    let mut pools = Vec::new();
    for _ in 0..4 {
        pools.push(PostgresStore::connect_with(&url, options.clone()).await?);
    }
    for hot in [true, false] {
        let started = Instant::now();
        let mut handles = Vec::new();
        for task in 0..CONCURRENT_TASKS {
            let store = pools[task % 4].clone();
            let tenant = tenant.clone();
            let run = RunId::new(if hot {
                "hot".to_owned()
            } else {
                format!("own-{task}")
            })?;
            handles.push(tokio::spawn(async move {
                for n in 0..PER_TASK {
                    let e = event(&tenant, &run, format!("t{task}-{n}"));
                    store.append_batch(&tenant, &run, &[e], None).await?;
                }
                Ok::<_, runstore_core::Error>(())
            }));
        }
        for handle in handles {
            handle.await??;
        }
        let elapsed = started.elapsed();
        println!(
            "runstore 64 appenders / 4 pools, {}: {:.0} events/s",
            if hot { "one stream" } else { "64 streams" },
            per_sec(CONCURRENT_TASKS * PER_TASK, elapsed)
        );
    }

    // Tail-100 at 1M events.
    let run = RunId::new("tail")?;
    let tail_events: usize = std::env::var("FIGURES_TAIL_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(TAIL_EVENTS);
    let started = Instant::now();
    for b in 0..tail_events / 1_000 {
        let batch: Vec<_> = (0..1_000)
            .map(|i| event(&tenant, &run, format!("x{b}-{i}")))
            .collect();
        store.append_batch(&tenant, &run, &batch, None).await?;
    }
    println!(
        "(loaded {TAIL_EVENTS} events in batches of 1000 in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    for _ in 0..TAIL_READS {
        let tail = store.read(&tenant, &run, ReadQuery::tail(100)).await?;
        assert_eq!(tail.len(), 100);
    }
    let tail = started.elapsed();
    println!(
        "runstore read tail-100 at 1M events: {:.0} us/read",
        micros(tail, TAIL_READS)
    );

    // The same inserts without runstore.
    let pool = store.pool();
    sqlx::query(
        "CREATE TABLE bare (id BIGSERIAL PRIMARY KEY, stream BIGINT NOT NULL, body TEXT NOT NULL)",
    )
    .execute(pool)
    .await?;
    let body = serde_json::to_string(&event(&tenant, &RunId::new("bare")?, "bare".to_owned()))?;
    let started = Instant::now();
    for _ in 0..SINGLE {
        sqlx::query("INSERT INTO bare (stream, body) VALUES (1, $1)")
            .bind(&body)
            .execute(pool)
            .await?;
    }
    let bare = started.elapsed();
    println!(
        "bare single-row insert: {:.0} us/insert ({:.0}/s)",
        micros(bare, SINGLE),
        per_sec(SINGLE, bare)
    );
    let bodies: Vec<String> = vec![body.clone(); 100];
    let started = Instant::now();
    for _ in 0..BATCHES {
        sqlx::query("INSERT INTO bare (stream, body) SELECT 1, * FROM UNNEST($1::TEXT[])")
            .bind(&bodies)
            .execute(pool)
            .await?;
    }
    let bare_batch = started.elapsed();
    println!(
        "bare 100-row insert: {:.0} us/insert ({:.0} rows/s)",
        micros(bare_batch, BATCHES),
        per_sec(BATCHES * 100, bare_batch)
    );
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..CONCURRENT_TASKS {
        let pool = pools[task % 4].pool().clone();
        let body = body.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..PER_TASK {
                sqlx::query("INSERT INTO bare (stream, body) VALUES (1, $1)")
                    .bind(&body)
                    .execute(&pool)
                    .await?;
            }
            Ok::<_, sqlx::Error>(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    let bare_conc = started.elapsed();
    println!(
        "bare 64 inserters / 4 pools: {:.0} rows/s",
        per_sec(CONCURRENT_TASKS * PER_TASK, bare_conc)
    );

    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(pool)
        .await?;
    Ok(())
}
