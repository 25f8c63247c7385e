//! Issue 15, part 5: the guard against a mistyped policy. `lethe plan` compares the config
//! with the policy last applied to each target; an apply past `[guard] max_new_due` or a
//! target's `max_delete` deletes nothing there until the change is accepted (`plan
//! --accept`) or the run says `--allow-large`; `delete_delay` deletes only on a later run.

use std::path::{Path, PathBuf};

use lethe_core::time::Timestamp;
use rusqlite::Connection;

use crate::*;

/// The demo, set up so that its inference_logs window decides for every row (some rows'
/// own `retention_days` would otherwise win over it) and a clean apply exits 0 (its row
/// with an unreadable timestamp removed).
fn demo_for_windows(d: &Tmp) -> PathBuf {
    let dir = d.path("demo");
    let out = lethe().arg("demo").arg(&dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = dir.join("lethe.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let mapping = "retention_days = \"retention_days\"    # optional: a per-row window in days\n";
    assert!(text.contains(mapping), "the demo config changed: {text}");
    std::fs::write(&cfg, text.replacen(mapping, "", 1)).unwrap();
    let conn = Connection::open(dir.join("ai_data.db")).unwrap();
    conn.execute(
        "DELETE FROM inference_logs WHERE created_at NOT LIKE '2%'",
        [],
    )
    .unwrap();
    cfg
}

/// Replaces the inference_log category's window in the demo config.
fn set_demo_window(cfg: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(cfg).unwrap();
    let (a, b) = (
        format!("retention = \"{from}\"       # default"),
        format!("retention = \"{to}\"       # default"),
    );
    assert!(text.contains(&a), "no {a} in {text}");
    std::fs::write(cfg, text.replacen(&a, &b, 1)).unwrap();
}

fn ids(db: &Path, table: &str) -> Vec<i64> {
    let conn = Connection::open(db).unwrap();
    let mut st = conn
        .prepare(&format!("SELECT id FROM {table} ORDER BY id"))
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// The plan of one target, from `lethe plan --json`.
fn plan_of<'a>(j: &'a serde_json::Value, target: &str) -> &'a serde_json::Value {
    j["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == target)
        .unwrap_or_else(|| panic!("no {target} in {j}"))
}

/// The trail's entries about a target with this action.
fn entries(cfg: &Path, env: &[(&str, &str)], target: &str, action: &str) -> Vec<serde_json::Value> {
    let r = run_env(
        cfg,
        env,
        &[
            "audit", "log", "--target", target, "--limit", "100000", "--json",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

#[test]
fn a_mistyped_window_on_the_demo_deletes_nothing_until_the_change_is_accepted() {
    let d = Tmp::new("guard-demo");
    let cfg = demo_for_windows(&d);
    let db = cfg.parent().unwrap().join("ai_data.db");
    let one = ["--target", "inference_logs"];

    // A normal apply: the first on this state records the policy and goes on.
    let r = run(&cfg, &["sweep", "--apply", one[0], one[1], "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.json()["targets"][0]["deleted"].as_u64().unwrap() > 0);
    let r = run(&cfg, &["plan", one[0], one[1], "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(plan_of(&r.json(), "inference_logs")["changed"], false);
    let before = ids(&db, "inference_logs");

    // "3d" for "30d".
    set_demo_window(&cfg, "30d", "3d");
    let r = run(&cfg, &["plan", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let j = r.json();
    let p = plan_of(&j, "inference_logs");
    assert_eq!(p["over_limit"], true, "{p}");
    let newly = p["newly_due"].as_u64().unwrap();
    assert!(newly * 10 > before.len() as u64, "{p}");
    let sample: Vec<i64> = p["newly_due_sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().parse().unwrap())
        .collect();
    assert!(!sample.is_empty());
    for k in &sample {
        assert!(before.contains(k), "sampled key {k} is not a row");
    }
    // The text names the rows too.
    let r = run(&cfg, &["plan"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(&format!("keys: {}", sample[0])),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("OVER THE LIMIT"), "{}", r.stdout);

    // A dry run says so, and changes nothing.
    let r = run(&cfg, &["sweep", one[0], one[1], "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let guard = r.json()["targets"][0]["guard"].to_string();
    assert!(guard.contains("an apply would delete nothing"), "{guard}");

    // An apply deletes nothing there, says why, and fails; twice: it stays so.
    for _ in 0..2 {
        let r = run(&cfg, &["sweep", "--apply", one[0], one[1], "--json"]);
        assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
        let t = &r.json()["targets"][0];
        assert_eq!(t["deleted"], 0);
        let why = t["error"].as_str().unwrap();
        assert!(
            why.contains("lethe plan") && why.contains("--allow-large"),
            "{why}"
        );
        assert_eq!(
            ids(&db, "inference_logs"),
            before,
            "an unaccepted change deleted rows"
        );
    }

    // Accepted, with who and why.
    let r = run(&cfg, &["plan", "--accept", "--json"]);
    assert_eq!(r.code, Some(2), "--accept without --reason: {}", r.stdout);
    let r = run(
        &cfg,
        &[
            "plan", "--accept", "--reason", "x", "--by", "dpo-anna", "--json",
        ],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        r.json()["accepted"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "inference_logs")
    );
    let accepted = entries(&cfg, &[], "inference_logs", "policy_accepted");
    let mine: Vec<_> = accepted
        .iter()
        .filter(|e| e["target"] == "inference_logs")
        .collect();
    assert_eq!(mine.len(), 1, "{accepted:#?}");
    let detail = mine[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("dpo-anna") && detail.contains(": x"),
        "{detail}"
    );

    // Now the apply goes on and deletes them.
    let r = run(&cfg, &["sweep", "--apply", one[0], one[1], "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["targets"][0]["deleted"].as_u64(), Some(newly));
    let after = ids(&db, "inference_logs");
    assert_eq!(after.len() as u64, before.len() as u64 - newly);
    for k in &sample {
        assert!(!after.contains(k), "newly due row {k} is still there");
    }
    let r = run(&cfg, &["plan", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let r = run(&cfg, &["audit", "verify"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
}

/// A table `t` of rows aged `ages` days (ids from 1), and a config over it.
fn small(d: &Tmp, window: &str, extra: &str, ages: &[f64]) -> PathBuf {
    let conn = Connection::open(d.path("ai.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, user_id TEXT, created_at TEXT NOT NULL)",
    )
    .unwrap();
    for (i, age) in ages.iter().enumerate() {
        add(&conn, i as i64 + 1, (age * DAY as f64) as i64);
    }
    write_small(d, window, extra)
}

fn write_small(d: &Tmp, window: &str, extra: &str) -> PathBuf {
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[state]
url = "sqlite://state/lethe.db"
[categories.c]
retention = "{window}"
[[targets]]
name = "t"
type = "sql"
url = "sqlite://ai.db"
table = "t"
category = "c"
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

/// A row created `secs_ago` seconds before the real now.
fn add(conn: &Connection, id: i64, secs_ago: i64) {
    conn.execute(
        "INSERT INTO t (id, user_id, created_at) VALUES (?1, 'u', ?2)",
        rusqlite::params![id, naive(secs_ago)],
    )
    .unwrap();
}

fn apply(cfg: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["sweep", "--apply", "--json"];
    args.extend_from_slice(extra);
    run(cfg, &args)
}

#[test]
fn max_delete_refuses_a_large_run_and_allow_large_goes_past_it_for_one_run_only() {
    let d = Tmp::new("guard-max");
    // 10 rows due (40 days old), 10 not (5 days).
    let mut ages = vec![40.0; 10];
    ages.extend([5.0; 10]);
    let cfg = small(&d, "30d", "max_delete = \"20%\"", &ages);
    let db = d.path("ai.db");

    let r = apply(&cfg, &[]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let t = &r.json()["targets"][0];
    assert_eq!(t["deleted"], 0);
    let why = t["error"].as_str().unwrap();
    assert!(
        why.contains("max_delete") && why.contains("--allow-large"),
        "{why}"
    );
    assert_eq!(ids(&db, "t").len(), 20);

    let r = run(&cfg, &["sweep", "--allow-large"]);
    assert_eq!(r.code, Some(2), "--allow-large needs --apply: {}", r.stderr);
    let r = apply(&cfg, &["--allow-large", "--by", "oncall"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["targets"][0]["deleted"], 10);
    assert_eq!(ids(&db, "t"), (11..=20).collect::<Vec<_>>());

    // The next run is held to the limit again: 5 more due of 15 (more than 20%).
    let conn = Connection::open(&db).unwrap();
    for id in 21..=25 {
        add(&conn, id, 40 * DAY);
    }
    let r = apply(&cfg, &[]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&db, "t").len(), 15);

    // A count: 5 items pass a max_delete of 5.
    write_small(&d, "30d", "max_delete = 5");
    let r = apply(&cfg, &[]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&db, "t"), (11..=20).collect::<Vec<_>>());

    let bad = write_small(&d, "30d", "max_delete = \"lots\"");
    let r = run(&bad, &["plan"]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("targets.t.max_delete") && r.stderr.contains("line 14"),
        "{}",
        r.stderr
    );
    let bad = write_small(
        &d,
        "30d",
        "delete_delay = \"soon\"\n[guard]\nmax_new_due = \"101%\"\nmax_new = 1",
    );
    let r = run(&bad, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    for (key, line) in [
        ("targets.t.delete_delay", 14),
        ("guard.max_new_due", 16),
        ("guard.max_new:", 17),
    ] {
        assert!(
            r.stderr.contains(&format!("line {line}: {key}")),
            "{key} at line {line}: {}",
            r.stderr
        );
    }
    assert_eq!(
        ids(&db, "t"),
        (11..=20).collect::<Vec<_>>(),
        "a refused config touched rows"
    );
}

#[test]
fn allow_large_accepts_a_change_past_the_limit_and_records_it() {
    let d = Tmp::new("guard-allow");
    // 30 rows of 20 days, 70 of 2 days: "10d" for "30d" newly makes 30% due.
    let mut ages = vec![20.0; 30];
    ages.extend([2.0; 70]);
    let cfg = small(&d, "30d", "", &ages);
    let db = d.path("ai.db");
    let r = apply(&cfg, &[]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(entries(&cfg, &[], "t", "policy_recorded").len(), 1);

    write_small(&d, "10d", "");
    let r = apply(&cfg, &[]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&db, "t").len(), 100);
    let r = apply(&cfg, &["--allow-large", "--by", "oncall"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["targets"][0]["deleted"], 30);
    let accepted = entries(&cfg, &[], "t", "policy_accepted");
    assert_eq!(accepted.len(), 1, "{accepted:#?}");
    let detail = accepted[0]["detail"].as_str().unwrap();
    assert!(detail.contains("--allow-large by oncall"), "{detail}");
    // The change is recorded as applied: the plan shows nothing changed.
    let r = run(&cfg, &["plan", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(plan_of(&r.json(), "t")["changed"], false);
}

#[test]
fn a_change_under_the_limit_goes_on_and_held_items_still_count() {
    let d = Tmp::new("guard-under");
    // Rows 1-9 are 20 days old, 10-12 are 12, the other 88 are 2.
    let mut ages = vec![20.0; 9];
    ages.extend([12.0; 3]);
    ages.extend([2.0; 88]);
    let cfg = small(&d, "30d", "", &ages);
    let db = d.path("ai.db");
    let r = apply(&cfg, &[]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);

    // "10d" for "30d" newly makes 12% due...
    write_small(&d, "10d", "");
    let r = run(&cfg, &["plan", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(plan_of(&r.json(), "t")["newly_due"], 12);
    // ...and holding three of them does not hide it: a hold ends, and nothing would weigh
    // the change again then.
    for key in ["1", "2", "3"] {
        let r = run(
            &cfg,
            &[
                "hold", "add", "--target", "t", "--key", key, "--case", "C-1", "--reason", "r",
            ],
        );
        assert_eq!(r.code, Some(0), "{}", r.stderr);
    }
    let r = run(&cfg, &["plan", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(plan_of(&r.json(), "t")["newly_due"], 12);
    let r = apply(&cfg, &[]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&db, "t").len(), 100);

    // "15d" newly makes 9% due (the held rows among them): within the limit, it goes on.
    write_small(&d, "15d", "");
    let r = run(&cfg, &["plan", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(plan_of(&r.json(), "t")["newly_due"], 9);
    let r = apply(&cfg, &[]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let t = &r.json()["targets"][0];
    assert_eq!(
        (t["deleted"].as_u64(), t["held"].as_u64()),
        (Some(6), Some(3))
    );
    assert!(t["guard"].to_string().contains("within the limit"), "{t}");
    let left = ids(&db, "t");
    assert_eq!(left.len(), 94);
    assert!(left.starts_with(&[1, 2, 3, 10]), "{left:?}");
    let recorded = entries(&cfg, &[], "t", "policy_recorded");
    assert_eq!(recorded.len(), 2, "{recorded:#?}");
    assert_eq!(recorded[1]["window"], "15d");
    let r = run(&cfg, &["plan", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(plan_of(&r.json(), "t")["changed"], false);
}

fn at(secs: i64) -> String {
    Timestamp::from_unix_seconds(secs).unwrap().to_rfc3339()
}

fn run_at(cfg: &Path, secs: i64, args: &[&str]) -> Run {
    let now = at(secs);
    run_env(cfg, &[("LETHE_TEST_NOW", now.as_str())], args)
}

#[test]
fn delete_delay_deletes_at_the_first_run_after_the_delay_and_cancel_keeps_the_items() {
    assert!(
        has_failpoints(),
        "this test moves the clock with LETHE_TEST_NOW, which only the tests' build honours: run it with --features lethe/failpoints"
    );
    let d = Tmp::new("guard-delay");
    // Rows 1 and 2 due (40 days old), 3 to 10 not.
    let mut ages = vec![40.0; 2];
    ages.extend([5.0; 8]);
    let cfg = small(&d, "30d", "delete_delay = \"2h\"", &ages);
    let db = d.path("ai.db");
    let t0 = now_secs();
    let all: Vec<i64> = (1..=10).collect();

    // Run 1 finds them due and schedules them: nothing deleted.
    let r = run_at(&cfg, t0, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let j = r.json();
    let run1 = j["run_id"].as_str().unwrap().to_string();
    let t = &j["targets"][0];
    assert_eq!(
        (t["deleted"].as_u64(), t["scheduled"].as_u64()),
        (Some(0), Some(2)),
        "{t}"
    );
    assert_eq!(t["deletable_from"], at(t0 + 7200));
    assert_eq!(ids(&db, "t"), all);
    // One `scheduled` entry per item: the trail knows of what it did not delete yet.
    let scheduled = entries(&cfg, &[], "t", "scheduled");
    let keys: Vec<&str> = scheduled
        .iter()
        .map(|e| e["item_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["1", "2"], "{scheduled:#?}");
    assert_eq!(scheduled[0]["run_id"], run1.as_str());
    let r = run_at(&cfg, t0, &["audit", "reconcile", "--json"]);
    assert_eq!(r.code, Some(0), "reconcile: {}{}", r.stdout, r.stderr);

    // Before the delay: still nothing.
    let r = run_at(&cfg, t0 + 7199, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let t = &r.json()["targets"][0];
    assert_eq!(
        (t["deleted"].as_u64(), t["waiting"].as_u64()),
        (Some(0), Some(2)),
        "{t}"
    );
    assert_eq!(ids(&db, "t"), all);
    // A dry run after the delay would delete them, and changes nothing.
    let r = run_at(&cfg, t0 + 7300, &["sweep", "--json"]);
    assert_eq!(r.json()["targets"][0]["found"], 2);
    assert_eq!(ids(&db, "t"), all);

    // A hold placed meanwhile still protects one of them at the first run after the delay.
    let r = run_at(
        &cfg,
        t0 + 7250,
        &[
            "hold", "add", "--target", "t", "--key", "2", "--case", "C-1", "--reason", "r",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = run_at(&cfg, t0 + 7300, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let t = &r.json()["targets"][0];
    assert_eq!(
        (t["deleted"].as_u64(), t["held"].as_u64()),
        (Some(1), Some(1)),
        "{t}"
    );
    assert_eq!(ids(&db, "t"), (2..=10).collect::<Vec<_>>());

    // Cancel: row 11, due, scheduled by run 2, cancelled: not deleted after the delay.
    let conn = Connection::open(&db).unwrap();
    add(&conn, 11, 40 * DAY);
    let r = run_at(&cfg, t0 + 8000, &["sweep", "--apply", "--json"]);
    let run2 = r.json()["run_id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["targets"][0]["scheduled"], 1);
    let r = run_at(&cfg, t0 + 8100, &["sweep", "--cancel", &run2, "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let r = run_at(&cfg, t0 + 8100, &["sweep", "--cancel", &run2]);
    assert_eq!(
        r.code,
        Some(2),
        "cancelling twice names nothing: {}",
        r.stdout
    );
    let r = run_at(&cfg, t0 + 8000 + 7300, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let t = &r.json()["targets"][0];
    assert_eq!(
        (t["deleted"].as_u64(), t["scheduled"].as_u64()),
        (Some(0), Some(1)),
        "{t}"
    );
    assert!(
        ids(&db, "t").contains(&11),
        "a cancelled schedule deleted row 11"
    );
    assert_eq!(entries(&cfg, &[], "t", "schedule_cancelled").len(), 1);
    assert_ne!(run1, run2);

    // An erasure request is not delayed.
    conn.execute("UPDATE t SET user_id = 'erase-me' WHERE id = 5", [])
        .unwrap();
    let r = run_at(
        &cfg,
        t0 + 20_000,
        &["erase", "--subject", "erase-me", "--apply", "--json"],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        !ids(&db, "t").contains(&5),
        "the erasure waited for delete_delay"
    );
    let r = run_at(&cfg, t0 + 20_000, &["audit", "verify"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
}

/// The same with the state (and the data) in PostgreSQL: the applied policy, the
/// acceptance and the schedule are written through the other backend.
#[test]
fn on_postgresql_the_guard_refuses_until_accepted_and_delete_delay_waits() {
    assert!(
        has_failpoints(),
        "this test moves the clock with LETHE_TEST_NOW, which only the tests' build honours: run it with --features lethe/failpoints"
    );
    use crate::pg::{PgCluster, config, pg_ids};
    let pg = PgCluster::start();
    let mut data = pg.create_db("app");
    pg.create_db("lethe_state");
    // 30 rows of 20 days, 70 of 2 days.
    data.batch_execute(
        "CREATE TABLE logs (id bigint PRIMARY KEY, user_id text NOT NULL, created_at timestamptz NOT NULL);
         INSERT INTO logs SELECT g, 'user-' || g, now() - make_interval(days => CASE WHEN g <= 30 THEN 20 ELSE 2 END)
           FROM generate_series(1, 100) g;",
    )
    .unwrap();
    let cfg = config(
        pg.dir(),
        &pg.url("app"),
        &pg.url("lethe_state"),
        "logs",
        "created_at",
        "",
    );
    let t0 = now_secs();
    let key = (
        "LETHE_TEST_AUDIT_KEY",
        "a shared key for every lethe process",
    );
    let run_pg = |secs: i64, args: &[&str]| {
        let now = at(secs);
        run_env(&cfg, &[key, ("LETHE_TEST_NOW", now.as_str())], args)
    };
    let r = run_pg(t0, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(entries(&cfg, &[key], "logs", "policy_recorded").len(), 1);

    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replacen("retention = \"30d\"", "retention = \"10d\"", 1),
    )
    .unwrap();
    let r = run_pg(t0, &["plan", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(plan_of(&r.json(), "logs")["newly_due"], 30);
    let r = run_pg(t0, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(pg_ids(&mut data, "logs").len(), 100);
    let r = run_pg(t0, &["plan", "--accept", "--reason", "x", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(entries(&cfg, &[key], "logs", "policy_accepted").len(), 1);

    // With a delay: scheduled first, deleted by the first run after it.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replacen(
            "subject = \"user_id\"\n",
            "subject = \"user_id\"\ndelete_delay = \"2h\"\n",
            1,
        ),
    )
    .unwrap();
    let r = run_pg(t0, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["targets"][0]["scheduled"], 30);
    assert_eq!(pg_ids(&mut data, "logs").len(), 100);
    let r = run_pg(t0 + 3600, &["sweep", "--apply", "--json"]);
    assert_eq!(r.json()["targets"][0]["waiting"], 30);
    assert_eq!(pg_ids(&mut data, "logs").len(), 100);
    let r = run_pg(t0 + 7300, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["targets"][0]["deleted"], 30);
    assert_eq!(pg_ids(&mut data, "logs").len(), 70);
    let r = run_pg(t0 + 7300, &["audit", "verify"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
}

/// A scheduled run of `lethe serve` is guarded as an apply is: the target is refused, its
/// run fails (which the daemon alerts on), and nothing is deleted.
#[test]
fn a_scheduled_run_after_a_large_change_deletes_nothing_and_fails() {
    use crate::serve::{Daemon, eventually};
    let d = Tmp::new("guard-serve");
    let mut ages = vec![20.0; 30];
    ages.extend([2.0; 70]);
    let cfg = small(&d, "30d", "", &ages);
    let db = d.path("ai.db");
    let r = apply(&cfg, &[]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let mistyped = write_small(&d, "10d", "");
    let mut text = std::fs::read_to_string(&mistyped).unwrap();
    text.push_str("\n[schedule]\nsweep = \"*/2 * * * * *\"\napply = true\n");
    std::fs::write(&mistyped, text).unwrap();
    let state = || Connection::open(d.path("state/lethe.db")).unwrap();
    let mut daemon = Daemon::start(&cfg, &[]);
    eventually(30, "a scheduled run is refused on the target", || {
        state()
            .query_row(
                "SELECT COUNT(*) FROM fire_targets WHERE target = 't' AND status = 'done' AND report LIKE '%lethe plan%'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or(0)
            > 0
    });
    daemon.term();
    assert_eq!(
        ids(&db, "t").len(),
        100,
        "a scheduled run deleted past the guard"
    );
    let failed: i64 = state()
        .query_row(
            "SELECT COUNT(*) FROM fires WHERE result = 'failure'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let results: Vec<String> = {
        let c = state();
        let mut st = c.prepare("SELECT COALESCE(result, '') FROM fires").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    assert!(failed > 0, "no failed fire: {results:?}");
}

/// The acceptance case on the demo exactly as `lethe demo` makes it: every "30d" in its
/// config becomes "3d" (the window, and the exception and erasure bounds with it).
#[test]
fn the_demo_untouched_with_3d_for_30d_is_held_back_until_accepted() {
    let d = Tmp::new("guard-demo-as-made");
    let dir = d.path("demo");
    let out = lethe().arg("demo").arg(&dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = dir.join("lethe.toml");
    let db = dir.join("ai_data.db");
    // A normal apply (the demo's deliberate bad items make it exit 1).
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(r.json()["targets"][0]["deleted"].as_u64().unwrap() > 0);
    let before = ids(&db, "inference_logs");

    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("\"30d\""));
    std::fs::write(&cfg, text.replace("\"30d\"", "\"3d\"")).unwrap();
    let r = run(&cfg, &["plan", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let p = plan_of(&r.json(), "inference_logs").clone();
    let newly = p["newly_due"].as_u64().unwrap();
    assert!(newly * 10 > before.len() as u64, "{p}");
    let sample = p["newly_due_sample"][0].as_str().unwrap().to_string();
    let text = run(&cfg, &["plan"]);
    assert!(text.stdout.contains(&sample), "{}", text.stdout);

    // The apply deletes nothing of the table, and fails, until the change is accepted.
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&db, "inference_logs"), before);
    let r = run(
        &cfg,
        &[
            "plan",
            "--accept",
            "--reason",
            "shorter logs, approved by the DPO",
        ],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    let left = ids(&db, "inference_logs");
    assert!(
        before.len() - left.len() >= newly as usize,
        "the apply proceeds: {} of {} left, {newly} newly due: {}{}",
        left.len(),
        before.len(),
        r.stdout,
        r.stderr
    );
    assert_eq!(run(&cfg, &["audit", "verify"]).code, Some(0));
}

/// Dropping the column a target reads each row's own retention from changes what is due,
/// but cannot be judged under the old settings: the plan and the sweep say so, and the
/// guard weighs only the window's part of the change.
#[test]
fn a_change_in_the_columns_read_is_said_by_the_plan_and_the_sweep() {
    let d = Tmp::new("guard-reads");
    let dir = d.path("demo");
    let out = lethe().arg("demo").arg(&dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = dir.join("lethe.toml");
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let mapping = "retention_days = \"retention_days\"    # optional: a per-row window in days\n";
    assert!(text.contains(mapping));
    std::fs::write(&cfg, text.replacen(mapping, "", 1)).unwrap();
    let r = run(&cfg, &["plan", "--json"]);
    let p = plan_of(&r.json(), "inference_logs").clone();
    assert_eq!(p["changed"], true, "{p}");
    assert!(
        p["reads_changed"]
            .as_str()
            .unwrap_or("")
            .contains("retention_days"),
        "{p}"
    );
    let r = run(&cfg, &["sweep"]);
    assert!(
        r.stdout.contains("where its items are read from changed")
            || r.stderr.contains("where its items are read from changed"),
        "{}{}",
        r.stdout,
        r.stderr
    );
}

/// The applied-policy register sits beside the trail: a policy written into it outside
/// Lethe does not match the trail's last policy entry, so the target is refused until a
/// person accepts the config's policy.
#[test]
fn an_applied_policy_edited_outside_lethe_is_refused_until_accepted() {
    let d = Tmp::new("guard-tamper");
    let mut ages = vec![20.0; 30];
    ages.extend([2.0; 70]);
    let cfg = small(&d, "30d", "", &ages);
    let db = d.path("ai.db");
    let r = apply(&cfg, &[]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    // "10d" would newly make 30% due: someone writes it into the register directly.
    write_small(&d, "10d", "");
    let planned = run(&cfg, &["plan", "--json"]);
    let policy = plan_of(&planned.json(), "t")["policy"]
        .as_str()
        .unwrap()
        .to_string();
    let state = Connection::open(d.path("state/lethe.db")).unwrap();
    state
        .execute(
            "UPDATE applied_policies SET policy = ?1 WHERE target = 't'",
            [&policy],
        )
        .unwrap();
    let r = run(&cfg, &["plan", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let p = plan_of(&r.json(), "t").clone();
    assert!(
        p["error"]
            .as_str()
            .unwrap_or("")
            .contains("changed outside Lethe"),
        "{p}"
    );
    let r = apply(&cfg, &[]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&db, "t").len(), 100, "nothing deleted");
    let r = run(&cfg, &["plan", "--accept", "--reason", "reviewed"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let r = apply(&cfg, &[]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&db, "t").len(), 70);
}
