//! Every command on every embedded backend, checked by its output.

mod common;

use common::{Cli, store_url};
use serde_json::{Value, json};

macro_rules! on_each_backend {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[cfg(feature = "jsonl")]
                #[test]
                fn jsonl() {
                    super::$scenario("jsonl");
                }
                #[cfg(feature = "sqlite")]
                #[test]
                fn sqlite() {
                    super::$scenario("sqlite");
                }
                #[cfg(feature = "redb")]
                #[test]
                fn redb() {
                    super::$scenario("redb");
                }
            }
        )*
    };
}

on_each_backend!(
    append_read_and_lookups,
    batch_append,
    compaction_and_snapshots,
    tenants_are_separate,
    table_format,
    verify_reports_a_sound_store,
    stats_per_tenant,
    delete_run_and_delete_tenant,
);

fn cli(backend: &str) -> (tempfile::TempDir, Cli) {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(store_url(backend, dir.path()), dir.path());
    (dir, cli)
}

fn seqs(records: &[Value]) -> Vec<u64> {
    records.iter().map(|r| r["seq"].as_u64().unwrap()).collect()
}

fn append_read_and_lookups(backend: &str) {
    let (_dir, cli) = cli(backend);
    // CONTRACT §1, §2: seqs from 1, duplicates answer the original seq.
    let first = cli.ok(&[
        "append",
        "--run",
        "run-1",
        "--event-id",
        "e1",
        "--type",
        "started",
        "--payload",
        r#"{"step":1,"tags":["a"]}"#,
        "--occurred-at-ms",
        "100",
    ]);
    assert_eq!(first.stdout, "{\"seq\":1,\"inserted\":true}\n");
    for (n, id) in ["e2", "e3", "e4"].iter().enumerate() {
        let at = (200 + n * 100).to_string();
        let out = cli.ok(&[
            "append",
            "--run",
            "run-1",
            "--event-id",
            id,
            "--type",
            "step",
            "--occurred-at-ms",
            &at,
        ]);
        assert_eq!(out.json(), json!({"seq": n + 2, "inserted": true}));
    }
    let again = cli.ok(&[
        "append",
        "--run",
        "run-1",
        "--event-id",
        "e1",
        "--type",
        "other",
    ]);
    assert_eq!(again.stdout, "{\"seq\":1,\"inserted\":false}\n");
    // CONTRACT §5: the right expectation appends.
    let expected = cli.ok(&[
        "append",
        "--run",
        "run-1",
        "--event-id",
        "e5",
        "--type",
        "step",
        "--expect-last-seq",
        "4",
        "--occurred-at-ms",
        "600",
    ]);
    assert_eq!(expected.json(), json!({"seq": 5, "inserted": true}));

    let all = cli.ok(&["read", "--run", "run-1"]).json_lines();
    assert_eq!(seqs(&all), vec![1, 2, 3, 4, 5]);
    // The reference record format: every field name, the payload unchanged,
    // the first write kept.
    assert_eq!(all[0]["event_id"], "e1");
    assert_eq!(all[0]["event_type"], "started");
    assert_eq!(all[0]["payload"], json!({"step": 1, "tags": ["a"]}));
    assert_eq!(all[0]["occurred_at_ms"], 100);
    assert_eq!(all[0]["schema_version"], 1);
    assert_eq!(all[0]["run_id"], "run-1");
    assert_eq!(all[0]["scope"]["tenant_context"]["org_id"], "local");
    assert_eq!(all[0]["scope"]["tenant_context"]["workspace_id"], "local");

    // CONTRACT §6: windows.
    assert_eq!(
        seqs(
            &cli.ok(&["read", "--run", "run-1", "--after", "2"])
                .json_lines()
        ),
        vec![3, 4, 5]
    );
    assert_eq!(
        seqs(
            &cli.ok(&["read", "--run", "run-1", "--before", "3"])
                .json_lines()
        ),
        vec![1, 2]
    );
    assert_eq!(
        seqs(
            &cli.ok(&["read", "--run", "run-1", "--limit", "2"])
                .json_lines()
        ),
        vec![1, 2]
    );
    assert_eq!(
        seqs(
            &cli.ok(&["read", "--run", "run-1", "--limit", "2", "--tail"])
                .json_lines()
        ),
        vec![4, 5]
    );
    assert_eq!(
        seqs(
            &cli.ok(&[
                "read", "--run", "run-1", "--after", "1", "--before", "5", "--limit", "2", "--tail"
            ])
            .json_lines()
        ),
        vec![3, 4]
    );
    assert_eq!(
        cli.ok(&["read", "--run", "run-1", "--limit", "0"])
            .json_lines()
            .len(),
        5
    );
    assert!(cli.ok(&["read", "--run", "no-such-run"]).stdout.is_empty());

    // CONTRACT §7.
    assert_eq!(
        cli.ok(&["next-seq", "--run", "run-1"]).stdout,
        "{\"next_seq\":6}\n"
    );
    assert_eq!(
        cli.ok(&["next-seq", "--run", "empty"]).stdout,
        "{\"next_seq\":1}\n"
    );
    assert_eq!(
        cli.ok(&["seq-of", "--run", "run-1", "--event-id", "e3"])
            .stdout,
        "{\"seq\":3}\n"
    );
    assert_eq!(
        cli.ok(&["seq-of", "--run", "run-1", "--event-id", "nope"])
            .stdout,
        "{\"seq\":null}\n"
    );

    cli.ok(&["append", "--run", "run-0", "--event-id", "x", "--type", "t"]);
    // Ids are stored exactly as given.
    cli.ok(&[
        "append",
        "--run",
        "../Odd Run 🦀",
        "--event-id",
        "x",
        "--type",
        "t",
    ]);
    let runs = cli.ok(&["runs"]);
    assert_eq!(
        runs.stdout,
        "{\"run_id\":\"../Odd Run 🦀\"}\n{\"run_id\":\"run-0\"}\n{\"run_id\":\"run-1\"}\n"
    );
    let odd = cli.ok(&["read", "--run", "../Odd Run 🦀"]).json_lines();
    assert_eq!(odd[0]["run_id"], "../Odd Run 🦀");
}

fn batch_append(backend: &str) {
    let (dir, cli) = cli(backend);
    cli.ok(&["append", "--run", "b", "--event-id", "pre", "--type", "t"]);
    // CONTRACT §4: new events get consecutive seqs; stored and repeated ids
    // answer their seq; one line per input line, in input order.
    let batch = concat!(
        "{\"event_id\":\"one\",\"event_type\":\"t\",\"occurred_at_ms\":10,\"payload\":{\"n\":1}}\n",
        "\n",
        "{\"event_id\":\"pre\",\"event_type\":\"t\"}\n",
        "{\"event_id\":\"two\",\"event_type\":\"t\",\"causation_id\":\"one\",\"correlation_id\":\"c\",\"actor\":{\"kind\":\"bot\"}}\n",
        "{\"event_id\":\"one\",\"event_type\":\"t\"}\n",
    );
    let out = cli.ok_with_stdin(&["append", "--run", "b", "--batch", "-"], batch);
    assert_eq!(
        out.stdout,
        concat!(
            "{\"event_id\":\"one\",\"seq\":2,\"inserted\":true}\n",
            "{\"event_id\":\"pre\",\"seq\":1,\"inserted\":false}\n",
            "{\"event_id\":\"two\",\"seq\":3,\"inserted\":true}\n",
            "{\"event_id\":\"one\",\"seq\":2,\"inserted\":false}\n",
        )
    );
    let records = cli.ok(&["read", "--run", "b"]).json_lines();
    assert_eq!(seqs(&records), vec![1, 2, 3]);
    assert_eq!(records[1]["payload"], json!({"n": 1}));
    assert_eq!(records[1]["occurred_at_ms"], 10);
    assert_eq!(records[2]["causation_id"], "one");
    assert_eq!(records[2]["correlation_id"], "c");
    assert_eq!(records[2]["actor"], json!({"kind": "bot"}));

    // From a file, with an expectation; a wrong one writes nothing.
    let file = dir.path().join("batch.jsonl");
    std::fs::write(&file, "{\"event_id\":\"three\",\"event_type\":\"t\"}\n{\"event_id\":\"four\",\"event_type\":\"t\"}\n").unwrap();
    let file = file.to_str().unwrap();
    let conflict = cli.fails(&[
        "append",
        "--run",
        "b",
        "--batch",
        file,
        "--expect-last-seq",
        "2",
    ]);
    assert!(
        conflict.contains("conflict") && conflict.contains('2') && conflict.contains('3'),
        "{conflict}"
    );
    assert_eq!(
        cli.ok(&["next-seq", "--run", "b"]).json(),
        json!({"next_seq": 4})
    );
    let out = cli.ok(&[
        "append",
        "--run",
        "b",
        "--batch",
        file,
        "--expect-last-seq",
        "3",
    ]);
    assert_eq!(seqs(&out.json_lines()), vec![4, 5]);
    // CONTRACT §5: a retry of a stored batch succeeds whatever the position.
    let retry = cli.ok(&[
        "append",
        "--run",
        "b",
        "--batch",
        file,
        "--expect-last-seq",
        "3",
    ]);
    assert_eq!(
        retry.stdout,
        "{\"event_id\":\"three\",\"seq\":4,\"inserted\":false}\n{\"event_id\":\"four\",\"seq\":5,\"inserted\":false}\n"
    );
    // An empty batch writes nothing and prints nothing.
    assert!(
        cli.ok_with_stdin(&["append", "--run", "b", "--batch", "-"], "\n")
            .stdout
            .is_empty()
    );
}

fn compaction_and_snapshots(backend: &str) {
    let (dir, cli) = cli(backend);
    for (id, at) in [("a", 100), ("b", 200), ("c", 300), ("d", 400), ("e", 5_000)] {
        cli.ok(&[
            "append",
            "--run",
            "r",
            "--event-id",
            id,
            "--type",
            "t",
            "--occurred-at-ms",
            &at.to_string(),
        ]);
    }
    // A snapshot at seq 4 protects seq 4 and up (CONTRACT §8).
    let snapshot = json!({
        "snapshot_id": "snap-1", "run_id": "r", "seq": 4, "created_at_ms": 1_000,
        "status": "running", "checkpoint": {"cursor": 4}
    });
    let put = cli.ok_with_stdin(&["snapshot", "put", "--file", "-"], &snapshot.to_string());
    assert_eq!(
        put.stdout,
        "{\"run_id\":\"r\",\"snapshot_id\":\"snap-1\",\"seq\":4}\n"
    );
    let compact = cli.ok(&["compact", "--retention-ms", "1000", "--now-ms", "3000"]);
    assert_eq!(compact.stdout, "{\"pruned\":3,\"failed\":[]}\n");
    // CONTRACT §8: zero retention does nothing.
    assert_eq!(
        cli.ok(&["compact", "--retention-ms", "0"]).stdout,
        "{\"pruned\":0,\"failed\":[]}\n"
    );

    let records = cli.ok(&["read", "--run", "r"]).json_lines();
    assert_eq!(seqs(&records), vec![3, 4, 5]);
    let marker = &records[0];
    assert_eq!(marker["event_type"], "stateful_runtime.event_log_compacted");
    assert_eq!(marker["occurred_at_ms"], 3_000);
    assert_eq!(marker["payload"]["compacted_through_seq"], 3);
    assert_eq!(marker["payload"]["pruned_events"], 3);
    assert_eq!(
        marker["payload"]["compacted_event_ids"],
        json!([{"event_id": "a", "seq": 1}, {"event_id": "b", "seq": 2}, {"event_id": "c", "seq": 3}])
    );
    // CONTRACT §10: next_seq unchanged, pruned ids still known.
    assert_eq!(
        cli.ok(&["next-seq", "--run", "r"]).json(),
        json!({"next_seq": 6})
    );
    assert_eq!(
        cli.ok(&["seq-of", "--run", "r", "--event-id", "b"]).json(),
        json!({"seq": 2})
    );
    let dup = cli.ok(&["append", "--run", "r", "--event-id", "a", "--type", "t"]);
    assert_eq!(dup.json(), json!({"seq": 1, "inserted": false}));

    // Snapshots: get, list, latest, legacy hydration (CONTRACT §13, §15).
    let got = cli
        .ok(&["snapshot", "get", "--run", "r", "--id", "snap-1"])
        .json();
    assert_eq!(got["checkpoint"], json!({"cursor": 4}));
    assert_eq!(got["phase"], "running_phase");
    let file = dir.path().join("snaps.json");
    std::fs::write(
        &file,
        concat!(
            "{\n  \"snapshot_id\": \"snap-0\", \"run_id\": \"r\", \"seq\": 2,\n  \"created_at_ms\": 500, \"status\": \"queued\"\n}\n",
            "{\"snapshot_id\":\"snap-2\",\"run_id\":\"r\",\"seq\":5,\"created_at_ms\":2000,\"status\":\"completed\",\"phase\":\"completed\",\"phase_history\":[]}\n",
        ),
    )
    .unwrap();
    let put = cli.ok(&["snapshot", "put", "--file", file.to_str().unwrap()]);
    assert_eq!(put.json_lines().len(), 2);
    let ids = |run: &common::Run| -> Vec<String> {
        run.json_lines()
            .iter()
            .map(|s| s["snapshot_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&cli.ok(&["snapshot", "list", "--run", "r"])),
        ["snap-0", "snap-1", "snap-2"]
    );
    assert_eq!(
        ids(&cli.ok(&["snapshot", "list", "--run", "r", "--limit", "2"])),
        ["snap-1", "snap-2"]
    );
    assert_eq!(
        ids(&cli.ok(&["snapshot", "latest", "--run", "r"])),
        ["snap-2"]
    );
    let legacy = cli
        .ok(&["snapshot", "get", "--run", "r", "--id", "snap-0"])
        .json();
    assert_eq!(legacy["phase"], "queued");
    assert_eq!(
        legacy["phase_history"][0]["reason"],
        "observed_status:queued"
    );

    // Not found: nothing on stdout, a message, exit 1.
    let missing = cli.run(&["snapshot", "get", "--run", "r", "--id", "nope"]);
    assert_eq!(missing.status, 1);
    assert!(missing.stdout.is_empty());
    assert!(
        missing.stderr.starts_with("error: ") && missing.stderr.contains("not found"),
        "{}",
        missing.stderr
    );
    assert_eq!(cli.run(&["snapshot", "latest", "--run", "none"]).status, 1);

    // CONTRACT §14: prune keeps the newest per run.
    let pruned = cli.ok(&[
        "snapshot",
        "prune",
        "--retention-ms",
        "100",
        "--keep-last",
        "1",
        "--now-ms",
        "10000",
    ]);
    assert_eq!(pruned.stdout, "{\"pruned\":2,\"failed\":[]}\n");
    assert_eq!(
        ids(&cli.ok(&["snapshot", "list", "--run", "r"])),
        ["snap-2"]
    );
    assert_eq!(
        cli.ok(&[
            "snapshot",
            "prune",
            "--retention-ms",
            "0",
            "--keep-last",
            "0"
        ])
        .json(),
        json!({"pruned": 0, "failed": []})
    );
}

fn tenants_are_separate(backend: &str) {
    let (_dir, cli) = cli(backend);
    let acme = cli.tenant("acme/prod");
    let deployed = cli.tenant("acme/prod/eu-1");
    cli.ok(&["append", "--run", "r", "--event-id", "e", "--type", "t"]);
    assert_eq!(
        acme.ok(&["append", "--run", "r", "--event-id", "e", "--type", "t"])
            .json(),
        json!({"seq": 1, "inserted": true})
    );
    assert_eq!(
        deployed
            .ok(&["append", "--run", "r", "--event-id", "e", "--type", "t"])
            .json(),
        json!({"seq": 1, "inserted": true})
    );
    assert_eq!(
        acme.ok(&["append", "--run", "r", "--event-id", "f", "--type", "t"])
            .json(),
        json!({"seq": 2, "inserted": true})
    );
    assert_eq!(
        cli.ok(&["next-seq", "--run", "r"]).json(),
        json!({"next_seq": 2})
    );
    let record = deployed.ok(&["read", "--run", "r"]).json();
    assert_eq!(record["scope"]["tenant_context"]["deployment_id"], "eu-1");
    assert_eq!(record["scope"]["tenant_context"]["source"], "explicit");
    assert!(cli.tenant("other/ws").ok(&["runs"]).stdout.is_empty());
    // A snapshot's tenant is the one given by --tenant.
    let snapshot = json!({
        "snapshot_id": "s", "run_id": "r", "seq": 1, "created_at_ms": 1, "status": "running",
        "scope": {"tenant_context": {"org_id": "someone", "workspace_id": "else", "source": "explicit"}}
    });
    acme.ok_with_stdin(&["snapshot", "put", "--file", "-"], &snapshot.to_string());
    let got = acme
        .ok(&["snapshot", "get", "--run", "r", "--id", "s"])
        .json();
    assert_eq!(got["scope"]["tenant_context"]["org_id"], "acme");
    assert_eq!(
        cli.run(&["snapshot", "get", "--run", "r", "--id", "s"])
            .status,
        1
    );
}

fn table_format(backend: &str) {
    let (_dir, cli) = cli(backend);
    cli.ok(&[
        "append",
        "--run",
        "r",
        "--event-id",
        "first",
        "--type",
        "started",
        "--occurred-at-ms",
        "7",
        "--payload",
        "{\"k\":1}",
    ]);
    cli.ok(&[
        "append",
        "--run",
        "r",
        "--event-id",
        "second-event",
        "--type",
        "t",
        "--occurred-at-ms",
        "8",
    ]);
    let table = cli.ok(&["--format", "table", "read", "--run", "r"]).stdout;
    assert_eq!(
        table,
        concat!(
            "seq  event_id      event_type  occurred_at_ms  payload\n",
            "1    first         started     7               {\"k\":1}\n",
            "2    second-event  t           8\n",
        )
    );
    let table = cli
        .ok(&["next-seq", "--run", "r", "--format", "table"])
        .stdout;
    assert_eq!(table, "next_seq\n3\n");
}

/// A store of two tenants: the default one's run `r` with events a and b
/// compacted behind a snapshot at seq 3 and c (at 9 s) live; `acme/prod`'s
/// run `r` with one event, occurred now.
fn two_tenants(cli: &Cli) {
    for (id, at) in [("a", 1), ("b", 2), ("c", 9_000)] {
        cli.ok(&[
            "append",
            "--run",
            "r",
            "--event-id",
            id,
            "--type",
            "t",
            "--occurred-at-ms",
            &at.to_string(),
        ]);
    }
    cli.tenant("acme/prod")
        .ok(&["append", "--run", "r", "--event-id", "a", "--type", "t"]);
    cli.ok_with_stdin(
        &["snapshot", "put", "--file", "-"],
        r#"{"snapshot_id":"s","run_id":"r","seq":3,"created_at_ms":1,"status":"running"}"#,
    );
    cli.ok(&["compact", "--retention-ms", "10", "--now-ms", "100"]);
}

fn verify_reports_a_sound_store(backend: &str) {
    let (_dir, cli) = cli(backend);
    two_tenants(&cli);
    let report = cli.ok(&["verify"]).json();
    assert_eq!(
        report,
        json!({
            "streams": 2, "records": 3, "markers": 1, "compacted_ids": 2,
            "snapshot_streams": 1, "snapshots": 1, "problems": 0, "ok": true
        })
    );
}

fn stats_per_tenant(backend: &str) {
    let (_dir, cli) = cli(backend);
    two_tenants(&cli);
    cli.ok(&["append", "--run", "other", "--event-id", "x", "--type", "t"]);
    let lines = cli.ok(&["stats"]).json_lines();
    let tenants: Vec<&str> = lines
        .iter()
        .map(|l| l["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, ["acme/prod", "local/local"]);
    let (acme, local) = (&lines[0], &lines[1]);
    // `r` kept c behind the marker of a and b; `other` holds x.
    assert_eq!(
        [
            &local["runs"],
            &local["live_events"],
            &local["compacted_ids"],
            &local["snapshots"]
        ],
        [&json!(2), &json!(2), &json!(2), &json!(1)]
    );
    assert_eq!(
        [
            &acme["runs"],
            &acme["live_events"],
            &acme["compacted_ids"],
            &acme["snapshots"]
        ],
        [&json!(1), &json!(1), &json!(0), &json!(0)]
    );
    // c occurred at 9 s after the epoch: decades ago.
    assert!(local["oldest_live_age_s"].as_u64().unwrap() > 1_000_000_000);
    assert!(acme["oldest_live_age_s"].as_u64().unwrap() < 3_600);
    for tenant in [acme, local] {
        assert!(tenant["json_bytes"].as_u64().unwrap() > 100, "{tenant}");
    }
    let table = cli.ok(&["--format", "table", "stats"]).stdout;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header.len(), lines[1].as_object().unwrap().len(), "{table}");
    assert_eq!(header[0], "tenant");
    assert_eq!(table.lines().count(), 3, "{table}");
}

/// CONTRACT §27, §28: `delete-run` removes a run's events, compacted ids
/// and snapshots and keeps its last seq; `delete-tenant` asks for `--yes`
/// and touches no other tenant; `verify` and `stats` know deleted runs.
fn delete_run_and_delete_tenant(backend: &str) {
    let (_dir, cli) = cli(backend);
    two_tenants(&cli);
    cli.ok(&["append", "--run", "other", "--event-id", "x", "--type", "t"]);
    // `r` holds c live and a, b compacted, and snapshot s.
    assert_eq!(
        cli.ok(&["delete-run", "--run", "r"]).json(),
        json!({"run_id": "r", "events": 1, "snapshots": 1})
    );
    assert_eq!(
        cli.ok(&["runs"]).json_lines(),
        vec![json!({"run_id": "other"})]
    );
    assert_eq!(
        cli.ok(&["seq-of", "--run", "r", "--event-id", "a"]).json(),
        json!({"seq": null})
    );
    assert_eq!(
        cli.ok(&["next-seq", "--run", "r"]).json(),
        json!({"next_seq": 4})
    );
    assert!(
        cli.ok(&["snapshot", "list", "--run", "r"])
            .stdout
            .is_empty()
    );
    assert_eq!(cli.ok(&["verify"]).json()["ok"], json!(true));
    assert_eq!(cli.ok(&["stats"]).json_lines()[1]["runs"], json!(1));
    assert_eq!(
        cli.ok(&["delete-run", "--run", "r"]).json(),
        json!({"run_id": "r", "events": 0, "snapshots": 0})
    );

    let refused = cli.fails(&["delete-tenant"]);
    assert!(refused.contains("pass --yes"), "{refused}");
    assert_eq!(cli.ok(&["runs"]).json_lines().len(), 1, "nothing deleted");
    assert_eq!(
        cli.ok(&["delete-tenant", "--yes"]).json(),
        json!({"tenant": "local/local", "events": 1, "snapshots": 0, "failed": []})
    );
    assert!(cli.ok(&["runs"]).stdout.is_empty());
    let acme = cli.tenant("acme/prod");
    assert_eq!(
        acme.ok(&["runs"]).json_lines(),
        vec![json!({"run_id": "r"})]
    );
    assert_eq!(cli.ok(&["verify"]).json()["ok"], json!(true));
    let again = cli.ok(&["append", "--run", "other", "--event-id", "x", "--type", "t"]);
    assert_eq!(again.json(), json!({"seq": 2, "inserted": true}));
}

/// With no `--store`, the store is `$RUNSTORE_URL`, else `jsonl:./runstore-data`.
#[cfg(all(feature = "jsonl", feature = "sqlite"))]
#[test]
fn default_store_and_runstore_url() {
    let dir = tempfile::tempdir().unwrap();
    let run = |env: Option<&str>, args: &[&str]| {
        let mut command = std::process::Command::new(common::binary());
        command
            .current_dir(dir.path())
            .env_remove("RUNSTORE_URL")
            .args(args);
        if let Some(url) = env {
            command.env("RUNSTORE_URL", url);
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    run(
        None,
        &["append", "--run", "r", "--event-id", "a", "--type", "t"],
    );
    assert!(dir.path().join("runstore-data").is_dir());
    let from_env = run(
        Some("sqlite:env.sqlite"),
        &["append", "--run", "r", "--event-id", "b", "--type", "t"],
    );
    assert_eq!(from_env, "{\"seq\":1,\"inserted\":true}\n");
    assert!(dir.path().join("env.sqlite").is_file());
    // An empty RUNSTORE_URL counts as unset.
    let empty = run(Some(""), &["next-seq", "--run", "r"]);
    assert_eq!(empty, "{\"next_seq\":2}\n");
    // --store wins over the environment.
    let explicit = run(
        Some("sqlite:env.sqlite"),
        &["--store", "jsonl:./runstore-data", "next-seq", "--run", "r"],
    );
    assert_eq!(explicit, "{\"next_seq\":2}\n");
}
