//! Bad input: one `error: ...` line on stderr, a non-zero exit, nothing on
//! stdout, never a panic or a backtrace.

mod common;

use common::{Cli, embedded_backends, store_url};

fn each_backend(check: impl Fn(&Cli)) {
    for backend in embedded_backends() {
        let dir = tempfile::tempdir().unwrap();
        check(&Cli::new(store_url(backend, dir.path()), dir.path()));
    }
}

#[test]
fn unparsable_json() {
    each_backend(|cli| {
        let err = cli.fails(&[
            "append",
            "--run",
            "r",
            "--event-id",
            "e",
            "--type",
            "t",
            "--payload",
            "{oops",
        ]);
        assert!(err.contains("--payload is not valid JSON"), "{err}");
        let err = cli.fails_with_stdin(
            &["append", "--run", "r", "--batch", "-"],
            "{\"event_id\":\"a\",\"event_type\":\"t\"}\n{\"event_id\":\"b\",\n",
        );
        assert!(err.contains("batch line 2 is not valid JSON"), "{err}");
        let err = cli.fails_with_stdin(&["append", "--run", "r", "--batch", "-"], "[1,2]\n");
        assert!(err.contains("batch line 1 is not a JSON object"), "{err}");
        let err = cli.fails_with_stdin(
            &["append", "--run", "r", "--batch", "-"],
            "{\"event_id\":\"a\"}\n",
        );
        assert!(
            err.contains("batch line 1 is not an event record") && err.contains("event_type"),
            "{err}"
        );
        let err = cli.fails_with_stdin(&["snapshot", "put", "--file", "-"], "{\"snapshot_id\":");
        assert!(err.contains("snapshot 1 is not valid JSON"), "{err}");
        let err = cli.fails_with_stdin(
            &["snapshot", "put", "--file", "-"],
            r#"{"snapshot_id":"s","run_id":"r","seq":1,"created_at_ms":1,"status":"dancing"}"#,
        );
        assert!(
            err.contains("not a snapshot record") && err.contains("dancing"),
            "{err}"
        );
        // Nothing was written by any of them.
        assert_eq!(cli.ok(&["next-seq", "--run", "r"]).json()["next_seq"], 1);
        assert!(cli.ok(&["runs"]).stdout.is_empty());
    });
}

#[test]
fn invalid_ids() {
    each_backend(|cli| {
        let err = cli.fails(&["append", "--run", "r", "--event-id", "", "--type", "t"]);
        assert!(
            err.contains("--event-id") && err.contains("event_id must not be empty"),
            "{err}"
        );
        let long = "x".repeat(1025);
        let err = cli.fails(&["read", "--run", &long]);
        assert!(err.contains("run_id is 1025 bytes long"), "{err}");
        let err = cli.fails(&["seq-of", "--run", "r", "--event-id", ""]);
        assert!(err.contains("event_id must not be empty"), "{err}");
        let err = cli.fails(&["snapshot", "get", "--run", "r", "--id", ""]);
        assert!(err.contains("snapshot_id must not be empty"), "{err}");
        let err = cli.fails_with_stdin(
            &["append", "--run", "r", "--batch", "-"],
            "{\"event_id\":\"a\\u0000b\",\"event_type\":\"t\"}\n",
        );
        assert!(err.contains("event_id must not contain NUL"), "{err}");
        // An event that names another run is refused whole (CONTRACT §4).
        let err = cli.fails_with_stdin(
            &["append", "--run", "r", "--batch", "-"],
            "{\"event_id\":\"a\",\"event_type\":\"t\"}\n{\"event_id\":\"b\",\"event_type\":\"t\",\"run_id\":\"other\"}\n",
        );
        assert!(err.contains("names run \"other\""), "{err}");
        assert!(cli.ok(&["runs"]).stdout.is_empty());
    });
}

#[test]
fn malformed_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(store_url(embedded_backends()[0], dir.path()), dir.path());
    for tenant in ["acme", "acme/", "/prod", "a/b/c/d", ""] {
        let err = cli.tenant(tenant).fails(&["runs"]);
        assert!(err.contains("--tenant"), "{tenant:?}: {err}");
    }
}

#[test]
fn bad_store_urls() {
    let dir = tempfile::tempdir().unwrap();
    for (url, expect) in [
        ("ftp://host/x", "unknown store URL scheme \"ftp\""),
        (
            "mongodb://localhost/db",
            "unknown store URL scheme \"mongodb\"",
        ),
        ("sqlite:", "the path is empty"),
        ("jsonl:./x?durability=maybe", "durability \"maybe\""),
        ("redb:./x?colour=red", "unknown option"),
        ("s3://", "bucket name is empty"),
    ] {
        let err = Cli::new(url, dir.path()).fails(&["runs"]);
        assert!(err.contains(expect), "{url}: {err}");
    }
    // Nothing was created in the working directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn disabled_features_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (url, feature, enabled) in [
        ("s3://bucket/prefix", "s3", cfg!(feature = "s3")),
        (
            "postgres://localhost/db",
            "postgres",
            cfg!(feature = "postgres"),
        ),
        ("sqlite:x.db", "sqlite", cfg!(feature = "sqlite")),
        ("redb:x.redb", "redb", cfg!(feature = "redb")),
        ("jsonl:x", "jsonl", cfg!(feature = "jsonl")),
    ] {
        if enabled {
            continue;
        }
        let err = Cli::new(url, dir.path()).fails(&["runs"]);
        assert!(
            err.contains(&format!("enable the `{feature}` feature")),
            "{url}: {err}"
        );
        checked += 1;
    }
    if checked == 0 {
        eprintln!("every backend feature is enabled in this build: no disabled scheme to try");
    }
}

#[test]
fn conflicts_name_expected_and_actual() {
    each_backend(|cli| {
        cli.ok(&["append", "--run", "r", "--event-id", "a", "--type", "t"]);
        cli.ok(&["append", "--run", "r", "--event-id", "b", "--type", "t"]);
        let err = cli.fails(&[
            "append",
            "--run",
            "r",
            "--event-id",
            "c",
            "--type",
            "t",
            "--expect-last-seq",
            "5",
        ]);
        assert!(
            err.contains("conflict: expected last seq 5, stream is at 2"),
            "{err}"
        );
        assert_eq!(cli.ok(&["next-seq", "--run", "r"]).json()["next_seq"], 3);
        // A stored event with a wrong expectation is a safe retry (CONTRACT §5).
        let retry = cli.ok(&[
            "append",
            "--run",
            "r",
            "--event-id",
            "a",
            "--type",
            "t",
            "--expect-last-seq",
            "0",
        ]);
        assert_eq!(retry.stdout, "{\"seq\":1,\"inserted\":false}\n");
    });
}

#[test]
fn usage_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(store_url(embedded_backends()[0], dir.path()), dir.path());
    for args in [
        &["read"][..],
        &["read", "--run", "r", "--limit", "many"],
        &["append", "--run", "r"],
        &[
            "append",
            "--run",
            "r",
            "--event-id",
            "e",
            "--type",
            "t",
            "--batch",
            "-",
        ],
        &["snapshot", "prune", "--retention-ms", "1"],
        &["no-such-command"],
        &["read", "--run", "r", "--format", "xml"],
    ] {
        let run = cli.run(args);
        common::assert_one_line_error(&run, args);
        assert_eq!(run.status, 2, "{args:?}");
    }
    let err = cli.fails(&["read"]);
    assert!(err.contains("--run"), "{err}");
    let err = cli.fails(&["append", "--run", "r", "--batch", "/no/such/file.jsonl"]);
    assert!(err.contains("reading /no/such/file.jsonl"), "{err}");
}

#[test]
fn help_and_version_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new("memory:", dir.path());
    let help = cli.ok(&["--help"]).stdout;
    for command in [
        "append",
        "read",
        "next-seq",
        "seq-of",
        "runs",
        "compact",
        "snapshot",
        "migrate",
        "import-reference",
        "verify",
        "bench",
    ] {
        assert!(help.contains(command), "{command} missing from --help");
    }
    assert!(cli.ok(&["--version"]).stdout.starts_with("runstore "));
}

#[test]
fn a_store_in_use_is_locked() {
    // The embedded file stores hold an OS lock; a second process is told.
    for backend in embedded_backends().into_iter().filter(|b| *b != "sqlite") {
        let dir = tempfile::tempdir().unwrap();
        let cli = Cli::new(store_url(backend, dir.path()), dir.path());
        cli.ok(&["append", "--run", "r", "--event-id", "a", "--type", "t"]);
        let mut follower = std::process::Command::new(common::binary())
            .args(["--store", &cli.store, "read", "--run", "r", "--follow"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the follower has printed the record, so it holds the store.
        let mut stdout = std::io::BufReader::new(follower.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert!(line.contains("\"event_id\":\"a\""), "{line}");
        let err = cli.fails(&["runs"]);
        follower.kill().unwrap();
        follower.wait().unwrap();
        assert!(err.contains("locked"), "{backend}: {err}");
    }
}

#[cfg(feature = "jsonl")]
#[test]
fn verify_finds_gaps_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let cli = Cli::new(format!("jsonl:{}", store.display()), dir.path());
    for id in ["a", "b", "c"] {
        cli.ok(&["append", "--run", "r", "--event-id", id, "--type", "t"]);
    }
    // Edit the log by hand (the store itself never writes this): drop seq 2
    // and store id "a" again at seq 4 (at a feed position of its own: two
    // records at one position make the log `Corrupt` at open).
    let log = store.join("events.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let edited = format!(
        "{}\n{}\n{}\n",
        lines[0],
        lines[2],
        lines[0]
            .replace("\"seq\":1", "\"seq\":4")
            .replace("{\"feed_position\":1,", "{\"feed_position\":9,")
    );
    std::fs::write(&log, edited).unwrap();
    let run = cli.run(&["verify"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert_eq!(run.stderr, "error: verify found 2 problem(s)\n");
    let lines = run.json_lines();
    let problems: Vec<&str> = lines.iter().filter_map(|l| l["problem"].as_str()).collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("missing seq") && p.contains("first 2")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("\"a\" is stored twice")),
        "{problems:?}"
    );
    assert_eq!(lines.last().unwrap()["ok"], false);
}

// CONTRACT §21-§23: what a hostile tenant tried with ordinary commands is
// refused up front on every backend, and the store stays usable for all.
#[test]
fn hostile_input_is_refused_and_the_store_stays_usable() {
    each_backend(|cli| {
        let deep = format!("{}0{}", "[".repeat(127), "]".repeat(127));
        let append = |id: &str, extra: &[&str]| {
            let mut args = vec!["append", "--run", "r", "--event-id", id, "--type", "t"];
            args.extend_from_slice(extra);
            cli.fails(&args)
        };
        let err = append("deep", &["--payload", &deep]);
        assert!(
            err.contains("payload nests deeper than 64 levels") && err.contains("\"deep\""),
            "{err}"
        );
        let err = append("late", &["--occurred-at-ms", "9223372036854775808"]);
        assert!(
            err.contains(
                "occurred_at_ms 9223372036854775808 is above the limit 9223372036854775807"
            ),
            "{err}"
        );
        let marker_id = format!("stateful-compaction-{}", "0".repeat(64));
        let err = append(&marker_id, &[]);
        assert!(err.contains("reserved for compaction markers"), "{err}");
        // One bad event fails the whole batch.
        let deep = format!("{}0{}", "[".repeat(70), "]".repeat(70));
        let batch = format!(
            "{{\"event_id\":\"ok\",\"event_type\":\"t\"}}\n\
             {{\"event_id\":\"b\",\"event_type\":\"t\",\"payload\":{deep}}}\n"
        );
        let err = cli.fails_with_stdin(&["append", "--run", "r", "--batch", "-"], &batch);
        assert!(err.contains("payload nests deeper than 64 levels"), "{err}");
        // A reference log with a record at the highest u64 seq.
        let reference = cli.cwd.join("reference");
        std::fs::create_dir_all(&reference).unwrap();
        std::fs::write(
            reference.join("stateful_events.jsonl"),
            "{\"schema_version\":1,\"event_id\":\"max\",\"run_id\":\"r\",\"seq\":18446744073709551615,\
             \"event_type\":\"t\",\"occurred_at_ms\":1,\"scope\":{\"tenant_context\":\
             {\"org_id\":\"local\",\"workspace_id\":\"local\"}},\"payload\":null}\n",
        )
        .unwrap();
        let err = cli.fails(&["import-reference", reference.to_str().unwrap()]);
        assert!(err.contains("leaves no room to append"), "{err}");
        // Nothing was written; the store opens and works for everyone.
        assert_eq!(cli.ok(&["next-seq", "--run", "r"]).json()["next_seq"], 1);
        let ok = cli.ok(&["append", "--run", "r", "--event-id", "e1", "--type", "t"]);
        assert_eq!(ok.json()["seq"], 1);
        let compact = cli.ok(&["compact", "--retention-ms", "1"]).json();
        assert_eq!(compact["failed"], serde_json::json!([]));
        assert_eq!(cli.ok(&["verify"]).json()["ok"], true);
    });
}
