//! Issue 15, part 4: redaction instead of deletion on SQL targets. Only the named columns
//! change, only on due rows; the dry run changes no byte; holds and exceptions protect; a
//! run killed mid-apply and run again redacts each row once, with one `redacted` entry.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::pg::{PgCluster, lethe_pg};
use crate::*;

const ROWS: i64 = 60;

/// The three ways to redact, as the config writes them.
const WAYS: [&str; 3] = ["null", "'[redacted]'", "sha256"];

/// What a redacted column holds afterwards, for an original value (a NULL stays NULL).
fn redacted(way: &str, original: Option<&str>) -> Option<String> {
    let original = original?;
    match way {
        "null" => None,
        "sha256" => Some(format!(
            "sha256:{}",
            lethe_core::audit::sha256_hex(original.as_bytes())
        )),
        _ => Some("[redacted]".into()),
    }
}

/// The prompt of row `id`: every tenth row has none, to show a NULL stays NULL.
fn prompt(id: i64) -> Option<String> {
    (id % 10 != 2).then(|| format!("secret prompt of row {id}"))
}

/// `inference_logs` in `ai.db`: even ids 40 days old (due under a 30 d window), odd ids 5.
fn seed_sqlite(d: &Tmp, not_null_user: bool) -> Connection {
    let c = Connection::open(d.path("ai.db")).unwrap();
    let user = if not_null_user {
        "TEXT NOT NULL"
    } else {
        "TEXT"
    };
    c.execute_batch(&format!(
        "CREATE TABLE inference_logs (id INTEGER PRIMARY KEY, user_id {user}, model TEXT,
           cost REAL, latency_ms INTEGER, prompt TEXT, response TEXT, created_at TEXT NOT NULL);"
    ))
    .unwrap();
    for id in 1..=ROWS {
        let age = if id % 2 == 0 { 40 * DAY } else { 5 * DAY };
        c.execute(
            "INSERT INTO inference_logs VALUES (?1, ?2, 'model-x', ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![
                id,
                format!("user-{}", id % 5),
                id as f64 * 0.01,
                id * 10,
                prompt(id),
                format!("secret response of row {id}"),
                naive(age)
            ],
        )
        .unwrap();
    }
    c
}

fn sqlite_config(d: &Tmp, extra: &str) -> PathBuf {
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[state]
url = "sqlite://state/lethe-state.db"

[categories.inference_log]
retention = "30d"

[[targets]]
name = "logs"
type = "sql"
url = "sqlite://ai.db"
table = "inference_logs"
category = "inference_log"
key = "id"
created_at = "created_at"
subject = "user_id"
{extra}
"#
        ),
    )
    .unwrap();
    cfg
}

/// Every row, every column as SQLite quotes it (byte for byte), by id.
fn sqlite_rows(c: &Connection) -> HashMap<i64, Vec<String>> {
    let mut st = c
        .prepare(
            "SELECT id, quote(id), quote(user_id), quote(model), quote(cost), quote(latency_ms),
                    quote(prompt), quote(response), quote(created_at) FROM inference_logs",
        )
        .unwrap();
    st.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            (1..9)
                .map(|i| r.get::<_, String>(i))
                .collect::<Result<Vec<_>, _>>()?,
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// A value as SQLite's `quote()` writes it.
fn quoted(v: Option<&str>) -> String {
    match v {
        None => "NULL".into(),
        Some(t) => format!("'{}'", t.replace('\'', "''")),
    }
}

/// Each entry's action, counted per item key.
fn entries_by_key(cfg: &Path, env: &[(&str, &str)], action: &str) -> HashMap<String, usize> {
    let r = run_env(cfg, env, &["audit", "export", "--format", "jsonl"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let mut n: HashMap<String, usize> = HashMap::new();
    for line in r.stdout.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        if e["action"] == action {
            *n.entry(e["item_key"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    n
}

fn trail_text(cfg: &Path, env: &[(&str, &str)]) -> String {
    let r = run_env(cfg, env, &["audit", "export", "--format", "jsonl"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    r.stdout
}

fn ok(r: &Run) {
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
}

#[test]
fn sqlite_redaction_changes_only_the_named_columns_of_due_rows_for_every_way() {
    for way in WAYS {
        let d = Tmp::new("redact-sqlite");
        let conn = seed_sqlite(&d, false);
        let cfg = sqlite_config(
            &d,
            &format!(
                "action = \"redact\"\nredact = [\"prompt\", \"response\"]\nredact_with = \"{}\"\n",
                way.replace('"', "\\\"")
            ),
        );
        let before = sqlite_rows(&conn);
        // Row 4 held, row 6 excepted: both due, both kept whole.
        ok(&run(
            &cfg,
            &[
                "hold",
                "add",
                "--target",
                "logs",
                "--key",
                "4",
                "--case",
                "C-1",
                "--reason",
                "litigation",
            ],
        ));
        let until = lethe_core::time::Timestamp::from_unix_seconds(now_secs() + 10 * DAY)
            .unwrap()
            .to_rfc3339();
        ok(&run(
            &cfg,
            &[
                "exception",
                "add",
                "--target",
                "logs",
                "--key",
                "6",
                "--until",
                &until,
                "--owner",
                "ml",
                "--reason",
                "eval",
            ],
        ));

        // The dry run changes no byte of the database.
        let file_before = std::fs::read(d.path("ai.db")).unwrap();
        let r = run(&cfg, &["sweep", "--json"]);
        ok(&r);
        assert_eq!(
            std::fs::read(d.path("ai.db")).unwrap(),
            file_before,
            "{way}: dry run"
        );
        let due: Vec<i64> = (1..=ROWS).filter(|i| i % 2 == 0).collect();
        let redactable: Vec<i64> = due
            .iter()
            .copied()
            .filter(|i| ![4, 6].contains(i))
            .collect();
        assert_eq!(r.json()["targets"][0]["found"], due.len(), "{way}");
        assert_eq!(r.json()["targets"][0]["held"], 2, "{way}");
        assert_eq!(
            r.json()["targets"][0]["would_redact"],
            redactable.len(),
            "{way}"
        );
        let would = entries_by_key(&cfg, &[], "would_redact");
        assert_eq!(would.len(), redactable.len(), "{way}: would_redact entries");
        let r = run(&cfg, &["sweep"]);
        assert!(r.stdout.contains("would redact"), "{way}: {}", r.stdout);

        // The apply redacts exactly the named columns of the due, unprotected rows.
        let r = run(&cfg, &["sweep", "--apply", "--json"]);
        ok(&r);
        let t = &r.json()["targets"][0];
        assert_eq!(t["redacted"], redactable.len(), "{way}: {t}");
        assert_eq!(t["deleted"], 0, "{way}");
        assert_eq!(t["held"], 2, "{way}");
        let after = sqlite_rows(&conn);
        assert_eq!(after.len(), ROWS as usize, "{way}: no row deleted");
        for id in 1..=ROWS {
            let (b, a) = (&before[&id], &after[&id]);
            if !redactable.contains(&id) {
                assert_eq!(a, b, "{way}: row {id} must not change");
                continue;
            }
            // id, user_id, model, cost, latency_ms and created_at: byte for byte.
            for col in [0, 1, 2, 3, 4, 7] {
                assert_eq!(a[col], b[col], "{way}: row {id} column {col}");
            }
            let p = prompt(id);
            assert_eq!(
                a[5],
                quoted(redacted(way, p.as_deref()).as_deref()),
                "{way}: row {id} prompt"
            );
            let resp = format!("secret response of row {id}");
            assert_eq!(
                a[6],
                quoted(redacted(way, Some(&resp)).as_deref()),
                "{way}: row {id} response"
            );
        }

        // One `redacted` entry per redacted row, naming the columns, holding no text.
        let red = entries_by_key(&cfg, &[], "redacted");
        assert_eq!(red.len(), redactable.len(), "{way}");
        assert!(red.values().all(|&n| n == 1), "{way}: {red:?}");
        let trail = trail_text(&cfg, &[]);
        assert!(trail.contains("prompt, response"), "{way}: columns named");
        assert!(
            !trail.contains("secret"),
            "{way}: the trail holds no redacted text"
        );

        // The report counts the redactions as the handling of due rows (with deletions, and
        // apart), and a redacted row is no longer past expiry.
        let rep = run(&cfg, &["report", "--format", "json"]);
        ok(&rep);
        let f = &rep.json()["targets"][0]["figures"];
        assert_eq!(f["deleted"], redactable.len(), "{way}: {f}");
        assert_eq!(f["redacted"], redactable.len(), "{way}: {f}");
        assert_eq!(f["past_expiry"]["over_7d"], 0, "{way}: {f}");
        assert_eq!(f["failed"], 0, "{way}: {f}");

        // Again: nothing is due any more, nothing redacted or recorded twice.
        let r = run(&cfg, &["sweep", "--apply", "--json"]);
        ok(&r);
        assert_eq!(
            r.json()["targets"][0]["found"],
            2,
            "{way}: only the protected rows"
        );
        assert_eq!(
            sqlite_rows(&conn),
            after,
            "{way}: second run changed nothing"
        );
        assert_eq!(entries_by_key(&cfg, &[], "redacted"), red, "{way}");
        ok(&run(&cfg, &["audit", "verify"]));
    }
}

/// A redacting sweep killed with SIGKILL at `point`, then run again: each due row redacted
/// once, with exactly one `redacted` entry, and the trail verifies.
fn sqlite_killed_at(point: &str) {
    let d = Tmp::new(&format!("redact-kill-{}", point.replace(':', "-")));
    let conn = seed_sqlite(&d, false);
    let cfg = sqlite_config(
        &d,
        "action = \"redact\"\nredact = [\"prompt\", \"response\"]\nredact_with = \"sha256\"\n",
    );
    let before = sqlite_rows(&conn);
    ensure_init(&cfg);
    let out = lethe_failpoint(point)
        .args([
            "sweep",
            "--apply",
            "--batch-size",
            "5",
            "--rows-per-commit",
            "10",
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{point}: the failpoint must kill the process"
    );
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    ok(&r);
    let after = sqlite_rows(&conn);
    for id in 1..=ROWS {
        let (b, a) = (&before[&id], &after[&id]);
        if id % 2 == 1 {
            assert_eq!(a, b, "{point}: row {id} is not due");
            continue;
        }
        let resp = format!("secret response of row {id}");
        assert_eq!(
            a[6],
            quoted(redacted("sha256", Some(&resp)).as_deref()),
            "{point}: {id}"
        );
        assert_eq!(
            a[5],
            quoted(redacted("sha256", prompt(id).as_deref()).as_deref())
        );
    }
    let red = entries_by_key(&cfg, &[], "redacted");
    for id in (1..=ROWS).filter(|i| i % 2 == 0) {
        assert_eq!(
            red.get(&id.to_string()),
            Some(&1),
            "{point}: entries for row {id}"
        );
    }
    assert_eq!(
        red.len(),
        (ROWS / 2) as usize,
        "{point}: no entry for a row not redacted"
    );
    assert!(entries_by_key(&cfg, &[], "deleted").is_empty(), "{point}");
    ok(&run(&cfg, &["audit", "verify"]));
    let st = Connection::open(d.path("state/lethe-state.db.pending")).unwrap();
    let pending: i64 = st
        .query_row("SELECT count(*) FROM pending", [], |r| r.get(0))
        .unwrap();
    assert_eq!(pending, 0, "{point}: nothing left pending");
}

#[test]
fn sqlite_redaction_killed_after_the_commit_is_recorded_once_on_the_rerun() {
    sqlite_killed_at("after_delete");
    sqlite_killed_at("after_delete:2");
}

#[test]
fn sqlite_redaction_killed_before_the_commit_is_redone_once_on_the_rerun() {
    sqlite_killed_at("before_commit");
    sqlite_killed_at("after_pending:2");
}

fn at(now: &str) -> [(&'static str, &str); 1] {
    [("LETHE_TEST_NOW", now)]
}

#[test]
fn redact_after_redacts_at_created_plus_redact_after_and_deletes_at_retention() {
    assert!(
        has_failpoints(),
        "this test moves the clock with LETHE_TEST_NOW: run it with --features lethe/failpoints"
    );
    let d = Tmp::new("redact-after");
    let c = Connection::open(d.path("ai.db")).unwrap();
    c.execute_batch(
        "CREATE TABLE inference_logs (id INTEGER PRIMARY KEY, user_id TEXT, model TEXT,
           cost REAL, latency_ms INTEGER, prompt TEXT, response TEXT, created_at TEXT NOT NULL,
           retention_days INTEGER);
         INSERT INTO inference_logs VALUES
           (1, 'u1', 'm', 0.5, 10, 'p1', 'r1', '2026-01-01T00:00:00Z', NULL),
           (2, 'u2', 'm', 0.5, 10, 'p2', 'r2', '2026-01-21T00:00:00Z', NULL),
           (3, 'u3', 'm', 0.5, 10, 'p3', 'r3', '2026-01-01T00:00:00Z', NULL),
           (4, 'u4', 'm', 0.5, 10, 'p4', 'r4', '2026-01-21T00:00:00Z', 3);",
    )
    .unwrap();
    let cfg = sqlite_config(
        &d,
        "retention_days = \"retention_days\"\nredact = [\"prompt\"]\nredact_after = \"7d\"\n",
    );
    // Row 3 is held: neither redacted nor deleted, and recorded held once per run.
    ok(&run(
        &cfg,
        &[
            "hold", "add", "--target", "logs", "--key", "3", "--case", "C-1", "--reason", "r",
        ],
    ));
    let prompt_of = |id: i64| -> Option<String> {
        c.query_row(
            "SELECT prompt FROM inference_logs WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
    };
    // Day 3: nothing is due for anything.
    let r = run_env(
        &cfg,
        &at("2026-01-04T00:00:00Z"),
        &["sweep", "--apply", "--json"],
    );
    ok(&r);
    assert_eq!(prompt_of(1).as_deref(), Some("p1"));
    // Day 8: row 1's prompt is redacted, the row stays; row 2 (day -12) untouched. The
    // first try is killed after the redaction pass commits (the deletion pass, with nothing
    // to delete, reaches the point first); the next run records it.
    ensure_init(&cfg);
    let out = lethe_failpoint("after_delete:2")
        .env("LETHE_TEST_NOW", "2026-01-09T00:00:00Z")
        .args(["sweep", "--apply", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "the failpoint must kill the process"
    );
    assert_eq!(prompt_of(1), None, "redacted and committed before the kill");
    let r = run_env(
        &cfg,
        &at("2026-01-09T00:00:00Z"),
        &["sweep", "--apply", "--json"],
    );
    ok(&r);
    assert_eq!(r.json()["targets"][0]["redacted"], 1, "{}", r.stdout);
    assert_eq!(r.json()["targets"][0]["deleted"], 0);
    assert_eq!(r.json()["targets"][0]["held"], 1, "{}", r.stdout);
    assert_eq!(ids(&c, "inference_logs"), vec![1, 2, 3, 4]);
    assert_eq!(prompt_of(3).as_deref(), Some("p3"), "held");
    assert_eq!(prompt_of(1), None);
    assert_eq!(prompt_of(2).as_deref(), Some("p2"));
    let response: String = c
        .query_row(
            "SELECT response FROM inference_logs WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(response, "r1", "only the named column");
    // Day 9: nothing new.
    let r = run_env(
        &cfg,
        &at("2026-01-10T00:00:00Z"),
        &["sweep", "--apply", "--json"],
    );
    ok(&r);
    assert_eq!(r.json()["targets"][0]["found"], 1, "{}", r.stdout);
    assert_eq!(r.json()["targets"][0]["held"], 1, "{}", r.stdout);
    // Day 31: row 1 is past its retention and deleted; row 2 (11 days old) redacted; row 4
    // past its own 3-day retention deleted (never redacted); row 3 held, recorded once.
    let r = run_env(
        &cfg,
        &at("2026-02-01T00:00:00Z"),
        &["sweep", "--apply", "--json"],
    );
    ok(&r);
    assert_eq!(r.json()["targets"][0]["deleted"], 2, "{}", r.stdout);
    assert_eq!(r.json()["targets"][0]["redacted"], 1, "{}", r.stdout);
    assert_eq!(r.json()["targets"][0]["held"], 1, "{}", r.stdout);
    assert_eq!(r.json()["targets"][0]["found"], 4, "{}", r.stdout);
    assert_eq!(ids(&c, "inference_logs"), vec![2, 3]);
    assert_eq!(prompt_of(2), None);
    assert_eq!(prompt_of(3).as_deref(), Some("p3"), "held");
    let red = entries_by_key(&cfg, &[], "redacted");
    assert_eq!(red.get("1"), Some(&1));
    assert_eq!(red.get("2"), Some(&1));
    assert_eq!(red.len(), 2);
    let del = entries_by_key(&cfg, &[], "deleted");
    assert_eq!(del.get("1"), Some(&1));
    assert_eq!(del.get("4"), Some(&1));
    assert_eq!(del.len(), 2);
    assert_eq!(
        entries_by_key(&cfg, &[], "held").get("3"),
        Some(&3),
        "once a run"
    );
    ok(&run(&cfg, &["audit", "verify"]));
}

#[test]
fn erasure_on_a_redacting_target_redacts_the_subjects_rows_and_subject_only() {
    let d = Tmp::new("redact-erase");
    let conn = seed_sqlite(&d, false);
    let cfg = sqlite_config(
        &d,
        "action = \"redact\"\nredact = [\"prompt\", \"response\"]\nredact_with = \"'[redacted]'\"\n",
    );
    let before = sqlite_rows(&conn);
    let r = run(&cfg, &["erase", "--subject", "user-1", "--apply", "--json"]);
    ok(&r);
    let mine: Vec<i64> = (1..=ROWS).filter(|i| i % 5 == 1).collect();
    assert_eq!(
        r.json()["targets"][0]["redacted"],
        mine.len(),
        "{}",
        r.stdout
    );
    assert_eq!(r.json()["targets"][0]["deleted"], 0);
    let after = sqlite_rows(&conn);
    assert_eq!(after.len(), ROWS as usize);
    for id in 1..=ROWS {
        let (b, a) = (&before[&id], &after[&id]);
        if !mine.contains(&id) {
            assert_eq!(a, b, "row {id} of another subject must not change");
            continue;
        }
        assert_eq!(a[1], "'[redacted]'", "row {id}: the subject is gone");
        assert_eq!(a[6], "'[redacted]'", "row {id}");
        assert_eq!(
            a[5],
            quoted(redacted("'[redacted]'", prompt(id).as_deref()).as_deref())
        );
        for col in [0, 2, 3, 4, 7] {
            assert_eq!(a[col], b[col], "row {id} column {col}");
        }
    }
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM inference_logs WHERE user_id = 'user-1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
    let red = entries_by_key(&cfg, &[], "redacted");
    assert_eq!(red.len(), mine.len());
    // The request is complete and says what was done.
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    let status = run(&cfg, &["erase", "status", &id]);
    ok(&status);
    assert!(status.stdout.contains("completed"), "{}", status.stdout);
    assert!(
        status.stdout.contains(&format!("redacted {}", mine.len())),
        "{}",
        status.stdout
    );
    let receipt = d.path("receipt.json");
    let receipt = receipt.to_str().unwrap();
    ok(&run(
        &cfg,
        &["erase", "status", &id, "--receipt", "-o", receipt],
    ));
    let key = run(&cfg, &["audit", "public-key"]);
    ok(&key);
    let v = run(
        &cfg,
        &[
            "receipt",
            "verify",
            receipt,
            "--public-key",
            key.stdout.trim(),
        ],
    );
    ok(&v);
    // Again: nothing of the subject is left to find.
    let r = run(&cfg, &["erase", "--subject", "user-1", "--apply", "--json"]);
    ok(&r);
    assert_eq!(r.json()["targets"][0]["found"], 0, "{}", r.stdout);
    ok(&run(&cfg, &["audit", "verify"]));
}

/// An erasure on a redacting target killed at `point`, then a retention sweep (not another
/// erasure): the subject's rows redacted once, subject included, one entry each.
fn erasure_killed_at(point: &str) {
    let d = Tmp::new(&format!("redact-erase-kill-{point}"));
    let conn = seed_sqlite(&d, false);
    let cfg = sqlite_config(
        &d,
        "action = \"redact\"\nredact = [\"prompt\", \"response\"]\n",
    );
    let before = sqlite_rows(&conn);
    ensure_init(&cfg);
    let out = lethe_failpoint(point)
        .args(["erase", "--subject", "user-4", "--apply", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{point}: the failpoint must kill the process"
    );
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    ok(&r);
    let mine: Vec<i64> = (1..=ROWS).filter(|i| i % 5 == 4).collect();
    let after = sqlite_rows(&conn);
    for id in &mine {
        let (a, b) = (&after[id], &before[id]);
        assert_eq!(a[1], "NULL", "{point}: row {id}: the subject is gone");
        assert_eq!(a[5], "NULL", "{point}: row {id}");
        assert_eq!(a[6], "NULL", "{point}: row {id}");
        for col in [0, 2, 3, 4, 7] {
            assert_eq!(a[col], b[col], "{point}: row {id} column {col}");
        }
    }
    let red = entries_by_key(&cfg, &[], "redacted");
    for id in &mine {
        assert_eq!(red.get(&id.to_string()), Some(&1), "{point}: row {id}");
    }
    ok(&run(&cfg, &["audit", "verify"]));
    let st = Connection::open(d.path("state/lethe-state.db.pending")).unwrap();
    let pending: i64 = st
        .query_row("SELECT count(*) FROM pending", [], |r| r.get(0))
        .unwrap();
    assert_eq!(pending, 0, "{point}: nothing left pending");
}

#[test]
fn an_erasure_killed_mid_redaction_is_finished_by_the_next_sweep() {
    erasure_killed_at("after_delete");
    erasure_killed_at("before_commit");
}

#[test]
fn erasure_that_cannot_clear_a_not_null_subject_fails_the_row_and_leaves_it_whole() {
    let d = Tmp::new("redact-erase-notnull");
    let conn = seed_sqlite(&d, true);
    let cfg = sqlite_config(
        &d,
        "action = \"redact\"\nredact = [\"prompt\", \"response\"]\n",
    );
    let before = sqlite_rows(&conn);
    // `check` says so beforehand.
    let r = run(&cfg, &["check"]);
    assert!(
        r.stdout
            .contains("subject = \"user_id\": the column is NOT NULL"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    let r = run(&cfg, &["erase", "--subject", "user-2", "--apply", "--json"]);
    assert_eq!(
        r.code,
        Some(1),
        "a refused redaction is a failure: {}\n{}",
        r.stdout,
        r.stderr
    );
    let mine = (1..=ROWS).filter(|i| i % 5 == 2).count();
    assert_eq!(r.json()["targets"][0]["failed"], mine, "{}", r.stdout);
    assert_eq!(r.json()["targets"][0]["redacted"], serde_json::Value::Null);
    assert_eq!(sqlite_rows(&conn), before, "nothing half-redacted");
    let failed = entries_by_key(&cfg, &[], "failed");
    assert_eq!(failed.len(), mine);
    ok(&run(&cfg, &["audit", "verify"]));
}

#[test]
fn a_bad_redaction_config_is_refused_with_key_and_line_and_nothing_is_touched() {
    let cases: [(&str, &str); 5] = [
        (
            "action = \"redact\"\nredact = [\"nope\"]\n",
            "redact = \"nope\"",
        ),
        (
            "action = \"redact\"\nredact = [\"id\"]\n",
            "targets.logs.redact[0]",
        ),
        (
            "action = \"redact\"\nredact = [\"prompt\"]\nredact_with = \"md5\"\n",
            "targets.logs.redact_with",
        ),
        (
            "action = \"erase\"\nredact = [\"prompt\"]\n",
            "targets.logs.action",
        ),
        ("action = \"redact\"\n", "targets.logs.redact"),
    ];
    for (extra, named) in cases {
        let d = Tmp::new("redact-bad");
        drop(seed_sqlite(&d, false));
        let cfg = sqlite_config(&d, extra);
        let file_before = std::fs::read(d.path("ai.db")).unwrap();
        for args in [&["check"][..], &["sweep", "--apply"][..]] {
            let r = run(&cfg, args);
            assert_eq!(
                r.code,
                Some(2),
                "{extra}: {args:?}: {}\n{}",
                r.stdout,
                r.stderr
            );
            // `check` reports on stdout, the other commands on stderr.
            let said = format!("{}{}", r.stdout, r.stderr);
            assert!(said.contains(named), "{extra}: names {named}: {said}");
            assert!(said.contains("line "), "{extra}: names a line: {said}");
        }
        assert_eq!(
            std::fs::read(d.path("ai.db")).unwrap(),
            file_before,
            "{extra}"
        );
    }
}

// PostgreSQL.

const PG_AUDIT: (&str, &str) = (
    "LETHE_TEST_AUDIT_KEY",
    "a shared key for every lethe process",
);

fn pg_seed(c: &mut postgres::Client, table: &str) {
    c.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, user_id text, model text, cost numeric,
           prompt text, response text, created_at timestamptz NOT NULL);
         INSERT INTO {table}
           SELECT g, 'user-' || (g % 5), 'model-x', g * 0.01,
                  CASE WHEN g % 10 = 2 THEN NULL ELSE 'secret prompt of row ' || g END,
                  'secret response of row ' || g,
                  now() - make_interval(days => CASE WHEN g % 2 = 0 THEN 40 ELSE 5 END)
           FROM generate_series(1, {ROWS}) g;"
    ))
    .unwrap();
}

/// Every row as JSON text, by id: every column, byte for byte as PostgreSQL writes it.
fn pg_rows(c: &mut postgres::Client, table: &str) -> HashMap<i64, serde_json::Value> {
    c.query(
        &format!("SELECT id, row_to_json(t)::text FROM {table} t"),
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| {
        let text: String = r.get(1);
        (r.get::<_, i64>(0), serde_json::from_str(&text).unwrap())
    })
    .collect()
}

fn pg_config(pg: &PgCluster, dir: &Path, table: &str, extra: &str) -> PathBuf {
    crate::pg::config(
        dir,
        &pg.url("app"),
        &format!("sqlite://{}/state.db", dir.display()),
        table,
        "created_at",
        extra,
    )
}

#[test]
fn pg_redaction_changes_only_the_named_columns_of_due_rows_and_survives_a_kill() {
    let pg = PgCluster::start();
    let mut data = pg.create_db("app");
    for (i, way) in WAYS.iter().enumerate() {
        let table = format!("logs_{i}");
        pg_seed(&mut data, &table);
        let dir = Tmp::new("redact-pg");
        let cfg = pg_config(
            &pg,
            &dir.0,
            &table,
            &format!(
                "action = \"redact\"\nredact = [\"prompt\", \"response\"]\nredact_with = \"{}\"\n",
                way
            ),
        );
        let before = pg_rows(&mut data, &table);
        let r = lethe_pg(&cfg, &["check"]);
        ok(&r);
        assert!(!r.stdout.contains("NOT NULL"), "{way}: {}", r.stdout);
        ok(&lethe_pg(
            &cfg,
            &[
                "hold", "add", "--target", "logs", "--key", "4", "--case", "C-1", "--reason", "r",
            ],
        ));
        let until = lethe_core::time::Timestamp::from_unix_seconds(now_secs() + 10 * DAY)
            .unwrap()
            .to_rfc3339();
        ok(&lethe_pg(
            &cfg,
            &[
                "exception",
                "add",
                "--target",
                "logs",
                "--key",
                "6",
                "--until",
                &until,
                "--owner",
                "ml",
                "--reason",
                "eval",
            ],
        ));
        let r = lethe_pg(&cfg, &["sweep", "--json"]);
        ok(&r);
        assert_eq!(
            pg_rows(&mut data, &table),
            before,
            "{way}: the dry run changed a row"
        );
        let due: Vec<i64> = (1..=ROWS).filter(|i| i % 2 == 0).collect();
        assert_eq!(r.json()["targets"][0]["found"], due.len());

        // Killed after the first commit (the rows redacted, the entries not yet written),
        // then run again.
        ensure_init_env(&cfg, &[PG_AUDIT]);
        let point = if i == 1 {
            "before_commit"
        } else {
            "after_delete"
        };
        let out = lethe_failpoint(point)
            .env(PG_AUDIT.0, PG_AUDIT.1)
            .args([
                "sweep",
                "--apply",
                "--batch-size",
                "5",
                "--rows-per-commit",
                "10",
            ])
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{way}: {point} must kill the process"
        );
        let r = lethe_pg(&cfg, &["sweep", "--apply", "--json"]);
        ok(&r);
        let after = pg_rows(&mut data, &table);
        for id in 1..=ROWS {
            let (b, a) = (&before[&id], &after[&id]);
            if id % 2 == 1 || id == 4 || id == 6 {
                assert_eq!(a, b, "{way}: row {id} must not change");
                continue;
            }
            for col in ["id", "user_id", "model", "cost", "created_at"] {
                assert_eq!(a[col], b[col], "{way}: row {id} column {col}");
            }
            let want = |orig: &serde_json::Value| match redacted(way, orig.as_str()) {
                Some(t) => serde_json::Value::String(t),
                None => serde_json::Value::Null,
            };
            assert_eq!(a["prompt"], want(&b["prompt"]), "{way}: row {id} prompt");
            assert_eq!(
                a["response"],
                want(&b["response"]),
                "{way}: row {id} response"
            );
        }
        let red = entries_by_key(&cfg, &[PG_AUDIT], "redacted");
        assert_eq!(
            red.len(),
            due.len() - 2,
            "{way}: one entry per redacted row"
        );
        assert!(red.values().all(|&n| n == 1), "{way}: {red:?}");
        assert!(!red.contains_key("4"), "{way}: the held row");
        assert!(!red.contains_key("6"), "{way}: the excepted row");
        assert!(!trail_text(&cfg, &[PG_AUDIT]).contains("secret"), "{way}");
        // Again: nothing redacted or recorded twice.
        let r = lethe_pg(&cfg, &["sweep", "--apply", "--json"]);
        ok(&r);
        assert_eq!(
            r.json()["targets"][0]["found"],
            2,
            "{way}: the protected rows only"
        );
        assert_eq!(pg_rows(&mut data, &table), after, "{way}");
        ok(&lethe_pg(&cfg, &["audit", "verify"]));
    }

    // Erasure: the subject's rows redacted, subject column included; others untouched.
    pg_seed(&mut data, "logs_e");
    let dir = Tmp::new("redact-pg-erase");
    let cfg = pg_config(
        &pg,
        &dir.0,
        "logs_e",
        "action = \"redact\"\nredact = [\"prompt\", \"response\"]\n",
    );
    // A NOT NULL column nothing redacts draws no warning; a NOT NULL subject an erasure
    // would clear with NULL does.
    data.batch_execute(
        "ALTER TABLE logs_e ALTER COLUMN model SET NOT NULL;
         ALTER TABLE logs_e ALTER COLUMN user_id SET NOT NULL",
    )
    .unwrap();
    let r = lethe_pg(&cfg, &["check"]);
    ok(&r);
    assert!(!r.stdout.contains("model"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("subject = \"user_id\": the column is NOT NULL"),
        "{}",
        r.stdout
    );
    data.batch_execute("ALTER TABLE logs_e ALTER COLUMN user_id DROP NOT NULL")
        .unwrap();
    let before = pg_rows(&mut data, "logs_e");
    let r = lethe_pg(&cfg, &["erase", "--subject", "user-3", "--apply", "--json"]);
    ok(&r);
    let mine: Vec<i64> = (1..=ROWS).filter(|i| i % 5 == 3).collect();
    assert_eq!(
        r.json()["targets"][0]["redacted"],
        mine.len(),
        "{}",
        r.stdout
    );
    let after = pg_rows(&mut data, "logs_e");
    for id in 1..=ROWS {
        let (b, a) = (&before[&id], &after[&id]);
        if !mine.contains(&id) {
            assert_eq!(a, b, "row {id} of another subject");
            continue;
        }
        for col in ["user_id", "prompt", "response"] {
            assert_eq!(a[col], serde_json::Value::Null, "row {id} {col}");
        }
        for col in ["id", "model", "cost", "created_at"] {
            assert_eq!(a[col], b[col], "row {id} column {col}");
        }
    }
    ok(&lethe_pg(&cfg, &["audit", "verify"]));
}

/// An unkeyed hash of a subject's id could be reversed by trying ids: an erasure on a
/// target that redacts with sha256 leaves a fixed text in the subject and the named columns.
#[test]
fn an_erasure_never_leaves_a_hash_of_the_subject() {
    let d = Tmp::new("redact-erase-sha");
    let conn = seed_sqlite(&d, false);
    let cfg = sqlite_config(
        &d,
        "action = \"redact\"\nredact = [\"prompt\", \"response\"]\nredact_with = \"sha256\"\n",
    );
    let r = run(&cfg, &["erase", "--subject", "user-1", "--apply", "--json"]);
    ok(&r);
    let mine: Vec<i64> = (1..=ROWS).filter(|i| i % 5 == 1).collect();
    let after = sqlite_rows(&conn);
    for id in &mine {
        let a = &after[id];
        assert_eq!(a[1], "'[erased]'", "row {id}: {a:?}");
        assert!(!a.iter().any(|c| c.contains("sha256:")), "row {id}: {a:?}");
    }
    // Run again: nothing more to do, nothing recorded twice.
    let again = run(&cfg, &["erase", "--subject", "user-1", "--apply", "--json"]);
    ok(&again);
    assert_eq!(
        entries_by_key(&cfg, &[], "redacted").len(),
        mine.len(),
        "{}",
        again.stdout
    );
}

/// A trigger that puts the text back (or a column that cannot hold the redacted value)
/// leaves the row failed and reported, never recorded redacted, run after run.
#[test]
fn a_redaction_the_row_does_not_keep_is_failed_not_recorded() {
    let d = Tmp::new("redact-trigger");
    let conn = seed_sqlite(&d, false);
    conn.execute_batch(
        "CREATE TABLE keep (id INTEGER, prompt TEXT);
         CREATE TRIGGER restore AFTER UPDATE OF prompt ON inference_logs WHEN NEW.id = 4
         BEGIN UPDATE inference_logs SET prompt = OLD.prompt WHERE id = NEW.id; END;",
    )
    .unwrap();
    let cfg = sqlite_config(
        &d,
        "action = \"redact\"\nredact = [\"prompt\"]\nredact_with = \"'[redacted]'\"\n",
    );
    for _ in 0..2 {
        let r = run(&cfg, &["sweep", "--apply", "--json"]);
        assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    }
    let kept: String = conn
        .query_row("SELECT prompt FROM inference_logs WHERE id = 4", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(kept, "secret prompt of row 4");
    let red = entries_by_key(&cfg, &[], "redacted");
    assert!(!red.contains_key("4"), "row 4 was never redacted: {red:?}");
    assert_eq!(red.get("6"), Some(&1), "the other rows are, once: {red:?}");
    assert!(
        entries_by_key(&cfg, &[], "failed")
            .get("4")
            .is_some_and(|n| *n >= 1)
    );
}

/// Columns Lethe judges a row by, or finds its subject by, are never redacted.
#[test]
fn the_level_and_the_subject_columns_are_never_redacted() {
    for (extra, col) in [
        (
            "sensitivity_column = \"model\"\naction = \"redact\"\nredact = [\"prompt\", \"model\"]\n",
            "\"model\" is the sensitivity_column column",
        ),
        (
            "action = \"redact\"\nredact = [\"prompt\", \"user_id\"]\nredact_with = \"sha256\"\n",
            "\"user_id\" is the subject column",
        ),
    ] {
        let d = Tmp::new("redact-refused-cols");
        let conn = seed_sqlite(&d, false);
        let before = sqlite_rows(&conn);
        let cfg = sqlite_config(&d, extra);
        let r = run_raw(&cfg, &["check"]);
        assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("targets.logs.redact") && r.stderr.contains(col),
            "{}",
            r.stderr
        );
        assert_eq!(sqlite_rows(&conn), before);
    }
}
