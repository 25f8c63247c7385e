//! Issue 10, item 8: with `--json`, every error prints exactly one JSON document on stdout
//! (`{"error": "...", "exit": N}`) with the documented exit status: 2 for bad usage or config
//! (nothing touched), 1 for a run that failed. `--help` and `--version` are no errors.

use std::path::Path;

use serde_json::Value;

use crate::*;

/// `lethe ARGS` exactly as given (no `--config` appended).
fn raw(dir: &Path, args: &[&str]) -> Run {
    let out = lethe().args(args).current_dir(dir).output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The run exited with `code` and printed one JSON document, an error with a message.
fn one_error(r: &Run, code: i32) -> Value {
    assert_eq!(
        r.code,
        Some(code),
        "stdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    let docs: Vec<Value> = serde_json::Deserializer::from_str(&r.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", r.stdout));
    assert_eq!(docs.len(), 1, "one document: {:?}", r.stdout);
    let doc = docs.into_iter().next().unwrap();
    let message = doc["error"].as_str().unwrap_or_default();
    assert!(!message.trim().is_empty(), "an error message: {doc}");
    assert_eq!(doc["exit"], code, "{doc}");
    doc
}

fn sqlite_config(d: &Tmp, extra_state: &str) -> std::path::PathBuf {
    let c = rusqlite::Connection::open(d.path("ai.db")).unwrap();
    c.execute_batch(&format!(
        "CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT);
         INSERT INTO logs VALUES (1, '{}'), (2, '{}');",
        naive(40 * DAY),
        naive(DAY)
    ))
    .unwrap();
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        format!(
            "[state]\nurl = \"sqlite://state.db\"\n{extra_state}\n[categories.log]\nretention = \"30d\"\n\
             [[targets]]\nname = \"logs\"\ntype = \"sql\"\nurl = \"sqlite://ai.db\"\ntable = \"logs\"\n\
             category = \"log\"\nkey = \"id\"\ncreated_at = \"created_at\"\n"
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn a_missing_config_file_is_one_json_error() {
    let d = Tmp::new("json-missing");
    let r = raw(&d.0, &["--json", "check", "--config", "nope.toml"]);
    let doc = one_error(&r, 2);
    assert!(
        doc["error"].as_str().unwrap().contains("nope.toml"),
        "{doc}"
    );
    // Stderr keeps the human message.
    assert!(r.stderr.contains("nope.toml"), "{}", r.stderr);
}

#[test]
fn a_config_syntax_error_is_one_json_error_with_its_line() {
    let d = Tmp::new("json-syntax");
    let cfg = d.path("lethe.toml");
    std::fs::write(&cfg, "[state]\nurl = \n").unwrap();
    let doc = one_error(&run_raw(&cfg, &["sweep", "--json"]), 2);
    assert_eq!(doc["problems"][0]["line"], 2, "{doc}");
    assert!(!d.path("lethe-state.db").exists());
}

#[test]
fn an_unknown_key_is_one_json_error_naming_it() {
    let d = Tmp::new("json-unknown-key");
    let cfg = sqlite_config(&d, "colour = \"blue\"");
    let doc = one_error(&run_raw(&cfg, &["check", "--json"]), 2);
    assert!(
        doc["error"].as_str().unwrap().contains("state.colour"),
        "{doc}"
    );
    let problems = doc["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{doc}");
    assert_eq!(problems[0]["key"], "state.colour");
    assert_eq!(problems[0]["line"], 3);
    assert!(!d.path("state.db").exists());
}

#[test]
fn an_unknown_target_is_one_json_error() {
    let d = Tmp::new("json-unknown-target");
    let cfg = sqlite_config(&d, "");
    let r = run_raw(&cfg, &["sweep", "--apply", "--json", "--target", "nope"]);
    let doc = one_error(&r, 2);
    assert!(doc["error"].as_str().unwrap().contains("nope"), "{doc}");
    assert!(!d.path("state.db").exists(), "nothing was touched");
    let c = rusqlite::Connection::open(d.path("ai.db")).unwrap();
    assert_eq!(ids(&c, "logs"), vec![1, 2]);
}

#[test]
fn usage_errors_are_one_json_error() {
    let d = Tmp::new("json-usage");
    for args in [
        // An unknown flag, before and after the subcommand.
        &["--json", "sweep", "--bogus"][..],
        &["sweep", "--bogus", "--json"],
        // A missing required argument.
        &["hold", "add", "--case", "C-1", "--json"],
        // A missing subcommand.
        &["--json"],
        &["hold", "--json"],
        // A value out of range.
        &["sweep", "--batch-size", "0", "--json"],
    ] {
        let r = raw(&d.0, args);
        let doc = one_error(&r, 2);
        assert!(!r.stderr.is_empty(), "{args:?}: stderr keeps the message");
        if args.contains(&"--bogus") {
            assert!(doc["error"].as_str().unwrap().contains("--bogus"), "{doc}");
        }
        if args.contains(&"add") {
            assert!(doc["error"].as_str().unwrap().contains("--reason"), "{doc}");
        }
    }
    // Without --json, no JSON.
    let r = raw(&d.0, &["sweep", "--bogus"]);
    assert_eq!(r.code, Some(2));
    assert_eq!(r.stdout, "");
}

#[test]
fn help_and_version_are_not_errors() {
    let d = Tmp::new("json-help");
    for args in [
        &["--json", "--help"][..],
        &["sweep", "--help", "--json"],
        &["--json", "--version"],
    ] {
        let r = raw(&d.0, args);
        assert_eq!(r.code, Some(0), "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(!r.stdout.contains("\"error\""), "{args:?}: {}", r.stdout);
        assert!(!r.stdout.is_empty());
    }
}

#[test]
fn an_unreachable_postgres_target_is_one_json_error() {
    let d = Tmp::new("json-pg-target");
    let port = free_port();
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        format!(
            "[state]\nurl = \"sqlite://state.db\"\n[categories.log]\nretention = \"30d\"\n\
             [[targets]]\nname = \"logs\"\ntype = \"sql\"\nurl = \"postgres://lethe:s3cret@127.0.0.1:{port}/app\"\n\
             table = \"logs\"\ncategory = \"log\"\nkey = \"id\"\ncreated_at = \"created_at\"\n"
        ),
    )
    .unwrap();
    // A target that cannot be reached fails the sweep's preflight: nothing was touched (2).
    let r = run_raw(&cfg, &["sweep", "--apply", "--json"]);
    let doc = one_error(&r, 2);
    let message = doc["error"].as_str().unwrap();
    assert!(message.contains("targets.logs"), "{doc}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{doc}");
    assert!(!r.stdout.contains("s3cret") && !r.stderr.contains("s3cret"));
    assert!(!d.path("state.db").exists());
}

#[test]
fn a_failure_at_run_time_is_one_json_error_with_exit_1() {
    let d = Tmp::new("json-pg-state");
    // The state in a PostgreSQL server that is not there: the command ran and failed.
    let port = free_port();
    let cfg = sqlite_config(&d, "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "sqlite://state.db",
        &format!("postgres://lethe:s3cret@127.0.0.1:{port}/state"),
    );
    std::fs::write(&cfg, text).unwrap();
    for args in [&["hold", "list", "--json"][..], &["sweep", "--json"]] {
        let r = run_raw(&cfg, args);
        let doc = one_error(&r, 1);
        assert!(
            doc["error"]
                .as_str()
                .unwrap()
                .contains(&format!("127.0.0.1:{port}")),
            "{doc}"
        );
        assert!(!r.stdout.contains("s3cret") && !r.stderr.contains("s3cret"));
    }
}

#[test]
fn a_check_that_finds_problems_says_error() {
    let d = Tmp::new("json-check");
    let cfg = sqlite_config(&d, "");
    let r = run(&cfg, &["check", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.json().get("error").is_none(), "{}", r.stdout);
    // A column the table lacks: the config does not fit (exit 2).
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("created_at = \"created_at\"", "created_at = \"made_at\"");
    std::fs::write(&cfg, text).unwrap();
    let doc = one_error(&run(&cfg, &["check", "--json"]), 2);
    assert_eq!(doc["ok"], false);
    let problems = doc["targets"][0]["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("made_at")),
        "{doc}"
    );
}
