//! Review of `lethe audit reconcile`: each test is a store and trail that agree (or
//! disagree) where the command says the opposite. Each fails on the build reviewed.

use std::time::{Duration, SystemTime};

use crate::*;

fn reconcile(cfg: &Path) -> (Option<i32>, serde_json::Value) {
    let r = run(cfg, &["audit", "reconcile", "--json"]);
    let j = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", r.stdout, r.stderr));
    (r.code, j)
}

fn mismatched_keys(j: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = j["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

/// An erasure run closes each target it reached with a `sweep_finished` entry (reason
/// `erasure`, neither interrupted nor in error), though it looked at one subject's items
/// only. Reconcile takes it for a whole sweep: every other expired item, not yet swept by
/// retention, is reported "passed over in silence". An honest store, reported broken.
#[test]
fn an_erasure_run_is_not_a_sweep_that_saw_every_item() {
    let d = Tmp::new("recrev-erase");
    let _conn = seed_training(&d, 40);
    let cfg = training_config(&d);
    let r = run(&cfg, &["erase", "--subject", "user-1", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);

    // No retention sweep has run yet: the expired rows of other subjects are simply not
    // swept yet, and user-1's six rows are gone as recorded.
    let (code, j) = reconcile(&cfg);
    assert_eq!(
        mismatched_keys(&j),
        Vec::<String>::new(),
        "an erasure run is no whole sweep: {j}"
    );
    assert_eq!(j["targets"][0]["deleted_absent"], 6, "{j}");
    assert_eq!(code, Some(0), "{j}");
}

/// A text key that reads as an integer (`007`, `+5`) is looked up as `Key::Int(7)`, i.e.
/// as "7": the store answers "no such item" for a file named `007` that is there. The
/// restored file is reported absent, and (its key being recorded deleted) never judged as
/// due either: a real discrepancy reported clean.
#[test]
fn a_restored_file_whose_name_reads_as_a_number_is_found() {
    let d = Tmp::new("recrev-fs-007");
    let root = d.path("models");
    let aged = |rel: &str, days: u64| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"weights").unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(days * 86_400))
            .unwrap();
    };
    aged("007", 100);
    aged("a.bin", 100);
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        r#"[state]
url = "sqlite://state.db"
[categories.model_artifact]
retention = "60d"
[[targets]]
name = "checkpoints"
type = "filesystem"
root = "models"
category = "model_artifact"
"#,
    )
    .unwrap();
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["targets"][0]["deleted"], 2, "{}", r.stdout);
    let (code, j) = reconcile(&cfg);
    assert_eq!(code, Some(0), "honest: {j}");

    // Both restored from a backup, with their old modification times.
    aged("007", 100);
    aged("a.bin", 100);
    let (code, j) = reconcile(&cfg);
    assert_eq!(
        mismatched_keys(&j),
        vec!["007".to_string(), "a.bin".to_string()],
        "{j}"
    );
    assert_eq!(code, Some(1), "{j}");
}

/// The same with a SQL text key: `code TEXT PRIMARY KEY` holding `007` is looked up as the
/// integer 7, which SQLite compares as the text "7".
#[test]
fn a_restored_row_whose_text_key_reads_as_a_number_is_found() {
    let d = Tmp::new("recrev-sql-007");
    let conn = Connection::open(d.path("ai.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE codes (code TEXT NOT NULL PRIMARY KEY, created_at DATETIME NOT NULL);",
    )
    .unwrap();
    let insert = |code: &str| {
        conn.execute(
            "INSERT INTO codes (code, created_at) VALUES (?1, ?2)",
            rusqlite::params![code, naive(40 * DAY)],
        )
        .unwrap();
    };
    for code in ["007", "+5", "abc"] {
        insert(code);
    }
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        r#"[state]
url = "sqlite://state/lethe-state.db"
[categories.c]
retention = "30d"
[[targets]]
name = "codes"
type = "sql"
url = "sqlite://ai.db"
table = "codes"
category = "c"
key = "code"
created_at = "created_at"
"#,
    )
    .unwrap();
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["targets"][0]["deleted"], 3, "{}", r.stdout);

    // All three put back as they were.
    for code in ["007", "+5", "abc"] {
        insert(code);
    }
    let (code, j) = reconcile(&cfg);
    assert_eq!(
        mismatched_keys(&j),
        vec!["+5".to_string(), "007".to_string(), "abc".to_string()],
        "{j}"
    );
    assert_eq!(code, Some(1), "{j}");
}

/// A key once recorded deleted is never judged as due again: a new item under it (created
/// after the deletion, so "recreated") that expired and that a whole sweep since passed over
/// in silence is no mismatch. Keys are reused all the time (an object path rewritten daily,
/// SQLite's max(rowid)+1).
#[test]
fn a_new_item_under_a_deleted_key_is_judged_as_due_like_any_other() {
    let d = Tmp::new("recrev-reused");
    let conn = seed_training(&d, 40);
    let cfg = training_config(&d);
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    // A moment after that deletion, the new row 2 was created, with retention 0 (expired at
    // once); a whole sweep after that did not see it (planted: inserted behind the trail's
    // back with that creation time, as the existing test plants row 101).
    std::thread::sleep(Duration::from_millis(1_600));
    let created = now_secs();
    std::thread::sleep(Duration::from_millis(1_600));
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    conn.execute(
        "INSERT INTO training_records (id, dataset_name, user_id, file_path, created_at, retention_days) VALUES (2, 'ds', 'u', '', ?1, 0)",
        rusqlite::params![naive(now_secs() - created)],
    )
    .unwrap();
    let (code, j) = reconcile(&cfg);
    assert_eq!(j["targets"][0]["recreated"], 1, "{j}");
    assert_eq!(
        mismatched_keys(&j),
        vec!["2".to_string()],
        "new row 2 expired before the last whole sweep, which said nothing of it: {j}"
    );
    assert_eq!(code, Some(1), "{j}");
}

/// The window is shortened in the config (90d to 30d). The last sweep, under 90d, rightly
/// kept rows aged 40 days; under 30d they expired 10 days ago, "before" that sweep, so each
/// is reported passed over in silence. The engine did nothing wrong: the sweep's own window
/// (recorded in its `sweep_finished` entry) did not make them due.
#[test]
fn a_shortened_window_is_not_a_sweep_that_passed_items_over() {
    let d = Tmp::new("recrev-window");
    let _conn = seed_training(&d, 40);
    let cfg = training_config(&d);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("retention_days = \"retention_days\"\n", "");
    std::fs::write(&cfg, &text).unwrap();
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["targets"][0]["deleted"], 0, "{}", r.stdout);

    std::fs::write(
        &cfg,
        text.replace("retention = \"90d\"", "retention = \"30d\""),
    )
    .unwrap();
    let (code, j) = reconcile(&cfg);
    assert_eq!(
        mismatched_keys(&j),
        Vec::<String>::new(),
        "not yet swept under the 30-day window: {j}"
    );
    assert_eq!(code, Some(0), "{j}");
}

/// A composite key is read back from the trail's JSON array as text parts
/// (`["acme","1"]` → `Text("acme"), Text("1")`): in a column SQLite gives no affinity (declared
/// without a type), the text '1' never equals the stored integer 1, so a restored row is
/// reported absent. The engine itself deletes by the key it read (an integer) and is right.
#[test]
fn a_restored_row_with_a_composite_key_in_untyped_columns_is_found() {
    let d = Tmp::new("recrev-composite");
    let conn = Connection::open(d.path("ai.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE t (tenant NOT NULL, id NOT NULL, created_at NOT NULL, PRIMARY KEY (tenant, id));",
    )
    .unwrap();
    let insert = |id: i64| {
        conn.execute(
            "INSERT INTO t VALUES ('acme', ?1, ?2)",
            rusqlite::params![id, naive(40 * DAY)],
        )
        .unwrap();
    };
    insert(1);
    insert(2);
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        r#"[state]
url = "sqlite://state/s.db"
[categories.c]
retention = "30d"
[[targets]]
name = "t"
type = "sql"
url = "sqlite://ai.db"
table = "t"
category = "c"
key = ["tenant", "id"]
created_at = "created_at"
"#,
    )
    .unwrap();
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["targets"][0]["deleted"], 2, "{}", r.stdout);

    insert(1);
    let (code, j) = reconcile(&cfg);
    assert_eq!(
        mismatched_keys(&j),
        vec![r#"["acme","1"]"#.to_string()],
        "{j}"
    );
    assert_eq!(code, Some(1), "{j}");
}
