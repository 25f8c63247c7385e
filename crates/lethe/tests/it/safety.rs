//! Issue 9 on SQLite: delete only what was judged due, and never what is protected. Each
//! test is one finding of the adversarial review; each failed on the code before the fix.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::*;

/// A config with one `sql` target `t` on `ai.db` (window 30 days), `extra` lines added to
/// the target.
fn config(d: &Tmp, table: &str, extra: &str) -> PathBuf {
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        format!(
            "[state]\nurl = \"sqlite://state.db\"\n[categories.log]\nretention = \"30d\"\n\
             [[targets]]\nname = \"t\"\ntype = \"sql\"\nurl = \"sqlite://ai.db\"\ntable = \"{table}\"\n\
             category = \"log\"\ncreated_at = \"created_at\"\n{extra}\n"
        ),
    )
    .unwrap();
    cfg
}

fn db(d: &Tmp, sql: &str) -> Connection {
    let c = Connection::open(d.path("ai.db")).unwrap();
    c.execute_batch(sql).unwrap();
    c
}

fn count(c: &Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Entries of one action, by item key.
fn keys_with(cfg: &std::path::Path, action: &str) -> Vec<String> {
    let mut v: Vec<String> = export(cfg)
        .into_iter()
        .filter(|e| e["action"] == action)
        .map(|e| e["item_key"].as_str().unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

fn old() -> String {
    naive(40 * DAY)
}

fn young() -> String {
    naive(DAY)
}

/// Finding 1: a key without a unique index took a fresh row (and another subject's row)
/// with the expired one that shared its key.
#[test]
fn a_key_that_is_not_unique_is_refused_and_composite_keys_name_one_row() {
    let d = Tmp::new("nonunique");
    let c = db(
        &d,
        &format!(
            "CREATE TABLE logs (tenant TEXT NOT NULL, id INTEGER NOT NULL, user_id TEXT, created_at TEXT,
               PRIMARY KEY (tenant, id));
             INSERT INTO logs VALUES ('a', 1, 'u1', '{o}'), ('b', 1, 'u2', '{y}'), ('b', 2, 'u2', '{o}');
             CREATE TABLE plain (id INTEGER, user_id TEXT, created_at TEXT);
             INSERT INTO plain VALUES (1, 'u1', '{o}'), (1, 'u2', '{y}');",
            o = old(),
            y = young()
        ),
    );
    let cfg = config(&d, "logs", "key = \"id\"\nsubject = \"user_id\"");
    let r = run(&cfg, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("the PRIMARY KEY would do: key = [\"tenant\", \"id\"]"),
        "{}",
        r.stderr
    );
    assert_eq!(count(&c, "SELECT count(*) FROM logs"), 3, "nothing touched");
    let e = run(&cfg, &["erase", "--subject", "u1", "--apply"]);
    assert_eq!(e.code, Some(2), "{}", e.stderr);
    assert_eq!(count(&c, "SELECT count(*) FROM logs"), 3, "nothing touched");
    let chk = run(&cfg, &["check"]);
    assert_ne!(chk.code, Some(0), "check must not say ok: {}", chk.stdout);
    assert!(chk.stdout.contains("FAILED"), "{}", chk.stdout);

    // A table with no unique index at all: the message says how to make one.
    let plain = config(&d, "plain", "key = \"id\"");
    let r = run(&plain, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("CREATE UNIQUE INDEX"), "{}", r.stderr);
    assert_eq!(count(&c, "SELECT count(*) FROM plain"), 2);

    // The composite key names exactly one row.
    let cfg = config(
        &d,
        "logs",
        "key = [\"tenant\", \"id\"]\nsubject = \"user_id\"",
    );
    let h = run(
        &cfg,
        &[
            "hold",
            "add",
            "--target",
            "t",
            "--key",
            "[\"b\", 2]",
            "--case",
            "C-1",
            "--reason",
            "litigation",
        ],
    );
    assert_eq!(h.code, Some(0), "{}", h.stderr);
    let r = run(&cfg, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let left: Vec<(String, i64)> = c
        .prepare("SELECT tenant, id FROM logs ORDER BY tenant, id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(left, vec![("b".into(), 1), ("b".into(), 2)]);
    assert_eq!(keys_with(&cfg, "deleted"), vec!["[\"a\",\"1\"]"]);
    assert_eq!(keys_with(&cfg, "held"), vec!["[\"b\",\"2\"]"]);
}

/// Finding 2: a row the database kept (a trigger that ignores the delete) was recorded
/// deleted.
#[test]
fn a_row_the_database_keeps_is_failed_not_deleted() {
    let d = Tmp::new("kept");
    let mut sql = String::from(
        "CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT);
         CREATE TRIGGER keep_7 BEFORE DELETE ON logs WHEN old.id = 7 BEGIN SELECT RAISE(IGNORE); END;",
    );
    for id in 1..=10 {
        sql.push_str(&format!("INSERT INTO logs VALUES ({id}, '{}');", old()));
    }
    let c = db(&d, &sql);
    let cfg = config(&d, "logs", "key = \"id\"");
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&c, "logs"), vec![7]);
    let j = r.json();
    assert_eq!(j["targets"][0]["deleted"], 9);
    assert_eq!(j["targets"][0]["failed"], 1);
    assert_eq!(keys_with(&cfg, "failed"), vec!["7"]);
    assert!(!keys_with(&cfg, "deleted").contains(&"7".to_string()));
}

/// Finding 4: one row the database refused (a trigger that raises) failed its whole commit
/// group, run after run.
#[test]
fn one_refusing_row_does_not_keep_the_rest_of_its_group() {
    let d = Tmp::new("refuse");
    let c = db(
        &d,
        "CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT);
         CREATE TRIGGER refuse_777 BEFORE DELETE ON logs WHEN old.id IN (777, 2222)
           BEGIN SELECT RAISE(ABORT, 'row is evidence'); END;",
    );
    let tx = c.unchecked_transaction().unwrap();
    for id in 1..=3000 {
        tx.execute(
            "INSERT INTO logs VALUES (?1, ?2)",
            rusqlite::params![id, old()],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    let cfg = config(&d, "logs", "key = \"id\"");
    let r = run(
        &cfg,
        &[
            "sweep",
            "--apply",
            "--json",
            "--batch-size",
            "500",
            "--rows-per-commit",
            "1000",
        ],
    );
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&c, "logs"), vec![777, 2222]);
    let j = r.json();
    assert_eq!(j["targets"][0]["deleted"], 2998);
    assert_eq!(keys_with(&cfg, "failed"), vec!["2222", "777"]);
    let why: Vec<String> = export(&cfg)
        .into_iter()
        .filter(|e| e["action"] == "failed")
        .map(|e| e["detail"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(why.iter().all(|w| w.contains("row is evidence")), "{why:?}");
    // The next run tries the two again, and deletes nothing else.
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(r.json()["targets"][0]["deleted"], 0);
    assert_eq!(ids(&c, "logs"), vec![777, 2222]);
}

/// Finding 4, its other form: a trigger that fails the delete part-way (`RAISE(FAIL)`
/// keeps what the statement had already deleted). Those deletions are undone with their
/// group, the refusing row is failed, and every other row is deleted and recorded once.
#[test]
fn a_delete_failed_part_way_is_undone_and_the_rest_deleted() {
    let d = Tmp::new("fail-part-way");
    let mut sql = String::from(
        "CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT);
         CREATE TRIGGER fail_30 BEFORE DELETE ON logs WHEN old.id = 30
           BEGIN SELECT RAISE(FAIL, 'row 30 is evidence'); END;",
    );
    for id in 1..=50 {
        sql.push_str(&format!("INSERT INTO logs VALUES ({id}, '{}');", old()));
    }
    let c = db(&d, &sql);
    let cfg = config(&d, "logs", "key = \"id\"");
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&c, "logs"), vec![30]);
    let j = r.json();
    assert_eq!(j["targets"][0]["deleted"], 49, "{}", r.stdout);
    assert_eq!(j["targets"][0]["failed"], 1, "{}", r.stdout);
    assert_eq!(keys_with(&cfg, "failed"), vec!["30"]);
    let mut deleted = keys_with(&cfg, "deleted");
    let n = deleted.len();
    deleted.dedup();
    assert_eq!((n, deleted.len()), (49, 49), "{deleted:?}");
    assert!(!deleted.contains(&"30".to_string()));
}

/// Finding 2, through a trigger: one that puts a deleted row back, or moves another row
/// under a key the delete names, must not leave a row recorded deleted that is still
/// there (SQLite's count, and RETURNING, both named it).
#[test]
fn a_row_a_trigger_puts_back_is_never_recorded_deleted() {
    let d = Tmp::new("put-back");
    let old = old();
    let c = db(
        &d,
        &format!(
            "CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT);
             INSERT INTO logs VALUES (1, '{old}'), (2, '{old}'), (3, '{old}');
             CREATE TRIGGER put_back AFTER DELETE ON logs WHEN old.id = 2
               BEGIN INSERT INTO logs VALUES (2, old.created_at); END;"
        ),
    );
    let cfg = config(&d, "logs", "key = \"id\"");
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&c, "logs"), vec![2]);
    assert_eq!(keys_with(&cfg, "deleted"), vec!["1", "3"]);
    assert_eq!(keys_with(&cfg, "failed"), vec!["2"]);

    // A text key: deleting `a` moves `b` to another rowid and puts a fresh row where `b`
    // was; the statement then deletes that fresh row in `b`'s place.
    let d = Tmp::new("moved");
    let c = db(
        &d,
        &format!(
            "CREATE TABLE logs (id TEXT PRIMARY KEY, created_at TEXT);
             INSERT INTO logs (rowid, id, created_at) VALUES (1, 'a', '{old}'), (2, 'b', '{old}');
             CREATE TRIGGER move BEFORE DELETE ON logs WHEN old.id = 'a' BEGIN
               UPDATE logs SET rowid = 99 WHERE id = 'b';
               INSERT INTO logs (rowid, id, created_at) VALUES (2, 'x', '{old}');
             END;"
        ),
    );
    let cfg = config(&d, "logs", "key = \"id\"");
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    let left: Vec<String> = c
        .prepare("SELECT id FROM logs ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(left.contains(&"b".to_string()), "{left:?}: {}", r.stdout);
    assert!(
        !keys_with(&cfg, "deleted").contains(&"b".to_string()),
        "{:?}",
        keys_with(&cfg, "deleted")
    );
    assert!(keys_with(&cfg, "failed").contains(&"b".to_string()));
}

/// A row one group confirmed gone that a later group's trigger puts back, once a refusal
/// has split the delete into groups, is failed, never recorded deleted.
#[test]
fn a_row_a_later_group_puts_back_is_never_recorded_deleted() {
    let d = Tmp::new("put-back-later");
    let old = old();
    let mut sql = String::from("CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT);");
    for id in 1..=8 {
        sql.push_str(&format!("INSERT INTO logs VALUES ({id}, '{old}');"));
    }
    sql.push_str(&format!(
        "CREATE TRIGGER protect BEFORE DELETE ON logs WHEN old.id = 8
           BEGIN SELECT RAISE(ABORT, 'row 8 is protected'); END;
         CREATE TRIGGER across AFTER DELETE ON logs WHEN old.id = 6
           BEGIN INSERT OR IGNORE INTO logs VALUES (1, '{old}'); END;"
    ));
    let c = db(&d, &sql);
    let cfg = config(&d, "logs", "key = \"id\"");
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&c, "logs"), vec![1, 8]);
    assert_eq!(
        keys_with(&cfg, "deleted"),
        vec!["2", "3", "4", "5", "6", "7"]
    );
    assert_eq!(keys_with(&cfg, "failed"), vec!["1", "8"]);
}

/// Finding 5: an application's lock made the sweep wait forever. Now the wait is bounded,
/// the target is reported busy, and the other targets are still swept.
#[test]
fn a_locked_database_makes_the_target_busy_not_a_hang() {
    let d = Tmp::new("busy");
    let mut sql = String::from("CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT);");
    for id in 1..=5 {
        sql.push_str(&format!("INSERT INTO logs VALUES ({id}, '{}');", old()));
    }
    let a = db(&d, &sql);
    let b = Connection::open(d.path("other.db")).unwrap();
    b.execute_batch(&sql).unwrap();
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        "[state]\nurl = \"sqlite://state.db\"\n[categories.log]\nretention = \"30d\"\n\
         [[targets]]\nname = \"locked\"\ntype = \"sql\"\nurl = \"sqlite://ai.db\"\ntable = \"logs\"\ncategory = \"log\"\nkey = \"id\"\ncreated_at = \"created_at\"\n\
         [[targets]]\nname = \"free\"\ntype = \"sql\"\nurl = \"sqlite://other.db\"\ntable = \"logs\"\ncategory = \"log\"\nkey = \"id\"\ncreated_at = \"created_at\"\n",
    )
    .unwrap();
    // The application holds the write lock for the whole sweep.
    a.execute_batch("BEGIN IMMEDIATE; UPDATE logs SET created_at = created_at WHERE id = 1;")
        .unwrap();
    let started = Instant::now();
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    let took = started.elapsed();
    a.execute_batch("COMMIT").unwrap();
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let j = r.json();
    let locked = &j["targets"][0];
    assert!(
        locked["error"]
            .as_str()
            .unwrap_or("")
            .contains("lock_timeout"),
        "{locked}"
    );
    assert_eq!(
        ids(&a, "logs").len(),
        5,
        "nothing deleted from the busy target"
    );
    assert_eq!(j["targets"][1]["deleted"], 5);
    assert!(ids(&b, "logs").is_empty());
}

/// Finding 5, the other way round: Lethe's own transaction no longer holds the
/// application's writes off for the whole of a long run: it commits every two seconds.
#[test]
fn a_long_apply_lets_the_application_write_in_between() {
    let d = Tmp::new("txn-bound");
    let c = db(
        &d,
        "CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT);",
    );
    let tx = c.unchecked_transaction().unwrap();
    for id in 1..=150_000 {
        tx.execute(
            "INSERT INTO logs VALUES (?1, ?2)",
            rusqlite::params![id, old()],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    c.execute_batch("CREATE TABLE app (x INTEGER)").unwrap();
    let cfg = config(&d, "logs", "key = \"id\"");
    let started = Instant::now();
    let mut child = spawn(
        &cfg,
        &[
            "sweep",
            "--apply",
            "--batch-size",
            "10",
            "--rows-per-commit",
            "100000000",
        ],
    );
    // While the sweep runs, each application write waits at most its own busy timeout:
    // it gets in between two of Lethe's commits.
    let app = Connection::open(d.path("ai.db")).unwrap();
    app.busy_timeout(Duration::from_secs(4)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut waits = Vec::new();
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        let wrote = app.execute("INSERT INTO app VALUES (?1)", [i]);
        waits.push((t.elapsed(), wrote.is_ok()));
    }
    let running = child.try_wait().unwrap().is_none();
    let status = child.wait().unwrap();
    let took = started.elapsed();
    eprintln!("sweep took {took:?}; application writes waited {waits:?}");
    assert!(
        running,
        "the sweep ended ({took:?}) before the writes: nothing was shown"
    );
    assert!(status.success());
    assert!(
        waits.iter().all(|(_, ok)| *ok),
        "application writes timed out: {waits:?}"
    );
    assert!(ids(&c, "logs").is_empty());
}

/// Finding 6: a hold placed while an apply runs was ignored for the rest of the run.
#[test]
fn a_hold_placed_during_an_apply_protects_every_later_batch() {
    let d = Tmp::new("hold-mid-run");
    let c = db(
        &d,
        "CREATE TABLE logs (id INTEGER PRIMARY KEY, user_id TEXT, created_at TEXT)",
    );
    let tx = c.unchecked_transaction().unwrap();
    for id in 1..=2000 {
        let user = if id > 1900 { "held-user" } else { "u" };
        tx.execute(
            "INSERT INTO logs VALUES (?1, ?2, ?3)",
            rusqlite::params![id, user, old()],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    let cfg = config(&d, "logs", "key = \"id\"\nsubject = \"user_id\"");
    let mut child = spawn(
        &cfg,
        &[
            "sweep",
            "--apply",
            "--batch-size",
            "1",
            "--rows-per-commit",
            "1",
            "--no-progress",
        ],
    );
    // Wait until the sweep is deleting, then place the holds.
    let watch = Connection::open(d.path("ai.db")).unwrap();
    watch.busy_timeout(Duration::from_secs(10)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&watch, "SELECT count(*) FROM logs") > 1990 {
        assert!(
            Instant::now() < deadline,
            "the sweep never started deleting"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let placed_at = count(&watch, "SELECT count(*) FROM logs");
    let h = run(
        &cfg,
        &[
            "hold",
            "add",
            "--subject",
            "held-user",
            "--case",
            "C-9",
            "--reason",
            "litigation",
        ],
    );
    assert_eq!(h.code, Some(0), "{}", h.stderr);
    let h = run(
        &cfg,
        &[
            "hold", "add", "--target", "t", "--key", "1500", "--case", "C-9", "--reason", "x",
        ],
    );
    assert_eq!(h.code, Some(0), "{}", h.stderr);
    assert!(child.wait().unwrap().success());
    assert!(
        placed_at > 1000,
        "the holds came in before the sweep reached them"
    );
    let mut left = ids(&c, "logs");
    left.retain(|&i| i != 1500);
    assert_eq!(left, (1901..=2000).collect::<Vec<i64>>());
    assert_eq!(count(&c, "SELECT count(*) FROM logs WHERE id = 1500"), 1);
    assert_eq!(keys_with(&cfg, "held").len(), 101);
}

/// Finding 7: two targets reaching one table, spelled differently, bypassed each other's
/// holds. Such a config is refused.
#[test]
fn two_targets_on_one_table_are_refused() {
    let d = Tmp::new("same-table");
    let c = db(
        &d,
        &format!(
            "CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT);
             INSERT INTO logs VALUES (1, '{}');",
            old()
        ),
    );
    std::fs::create_dir_all(d.path("sub")).unwrap();
    std::os::unix::fs::symlink(d.path("ai.db"), d.path("sub/alias.db")).unwrap();
    for (url, table) in [
        ("sqlite://./sub/../ai.db", "logs"),
        ("sqlite://ai.db", "LOGS"),
        ("sqlite://sub/alias.db", "logs"),
    ] {
        let cfg = d.path("lethe.toml");
        std::fs::write(
            &cfg,
            format!(
                "[state]\nurl = \"sqlite://state.db\"\n[categories.log]\nretention = \"30d\"\n\
                 [[targets]]\nname = \"a\"\ntype = \"sql\"\nurl = \"sqlite://ai.db\"\ntable = \"logs\"\ncategory = \"log\"\nkey = \"id\"\ncreated_at = \"created_at\"\n\
                 [[targets]]\nname = \"b\"\ntype = \"sql\"\nurl = \"{url}\"\ntable = \"{table}\"\ncategory = \"log\"\nkey = \"id\"\ncreated_at = \"created_at\"\n"
            ),
        )
        .unwrap();
        for args in [
            &["sweep", "--apply", "--target", "b"][..],
            &["sweep", "--target", "a"],
        ] {
            let r = run(&cfg, args);
            assert_eq!(r.code, Some(2), "{url} {table}: {}{}", r.stdout, r.stderr);
            assert!(
                r.stderr.contains("reaches the same table as target a"),
                "{}",
                r.stderr
            );
        }
        assert_eq!(ids(&c, "logs"), vec![1]);
        let chk = run(&cfg, &["check"]);
        assert!(chk.stdout.contains("FAILED"), "{}", chk.stdout);
    }
    // Filesystem roots that overlap are the same problem.
    std::fs::create_dir_all(d.path("models/run1")).unwrap();
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        "[state]\nurl = \"sqlite://state.db\"\n[categories.m]\nretention = \"30d\"\n\
         [[targets]]\nname = \"all\"\ntype = \"filesystem\"\nroot = \"models\"\ncategory = \"m\"\n\
         [[targets]]\nname = \"run1\"\ntype = \"filesystem\"\nroot = \"./models/run1/\"\ncategory = \"m\"\n",
    )
    .unwrap();
    let r = run(&cfg, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("overlapping directories"), "{}", r.stderr);
}

/// Finding 8: subjects were matched with the column's own comparison: numeric affinity
/// made ' 42 ' and '4.2e1' erase subject 42, and NOCASE made alice's export carry ALICE.
#[test]
fn subjects_match_exact_text() {
    let d = Tmp::new("subjects");
    let c = db(
        &d,
        &format!(
            "CREATE TABLE nums (id INTEGER PRIMARY KEY, user_id INTEGER, created_at TEXT);
             INSERT INTO nums VALUES (1, 42, '{y}'), (2, 7, '{y}');
             CREATE TABLE names (id INTEGER PRIMARY KEY, user_id TEXT COLLATE NOCASE, created_at TEXT);
             INSERT INTO names VALUES (1, 'alice', '{y}'), (2, 'ALICE', '{y}'), (3, 'Alice ', '{y}');",
            y = young()
        ),
    );
    let cfg = config(&d, "nums", "key = \"id\"\nsubject = \"user_id\"");
    for s in [" 42 ", "4.2e1", "42.0", "042"] {
        let r = run(&cfg, &["erase", "--subject", s, "--apply", "--json"]);
        assert_eq!(r.code, Some(0), "{s}: {}", r.stderr);
        assert_eq!(
            ids(&c, "nums"),
            vec![1, 2],
            "{s:?} must not erase subject 42"
        );
    }
    let r = run(&cfg, &["erase", "--subject", "42", "--apply"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(ids(&c, "nums"), vec![2]);

    let cfg = config(&d, "names", "key = \"id\"\nsubject = \"user_id\"");
    let out = d.path("alice.json");
    let r = run(
        &cfg,
        &["export", "--subject", "alice", "-o", out.to_str().unwrap()],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let items = doc["targets"][0]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{doc}");
    assert_eq!(items[0]["user_id"], "alice");
    let r = run(&cfg, &["erase", "--subject", "alice", "--apply"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(ids(&c, "names"), vec![2, 3]);
}

/// Finding 9: numbers in date columns were guessed into 1970: a date written as YYYYMMDD,
/// and `expires_at = 0` ("never"), made rows due.
#[test]
fn numbers_in_date_columns_are_never_guessed() {
    let d = Tmp::new("numbers");
    let c = db(
        &d,
        &format!(
            "CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at, expires_at);
             INSERT INTO logs VALUES (1, 20991231, NULL), (2, '{y}', 0), (3, '20991231', NULL),
               (4, {ok_secs}, NULL), (5, 20200101, NULL);",
            y = young(),
            ok_secs = now_secs() - 40 * DAY
        ),
    );
    let cfg = config(&d, "logs", "key = \"id\"\nexpires_at = \"expires_at\"");
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(
        ids(&c, "logs"),
        vec![1, 2, 3, 5],
        "only the plausible epoch is due"
    );
    let failed = keys_with(&cfg, "failed");
    assert_eq!(failed, vec!["1", "2", "3", "5"]);
    let details: Vec<String> = export(&cfg)
        .into_iter()
        .filter(|e| e["action"] == "failed")
        .map(|e| e["detail"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        details.iter().any(|x| x.contains("created_at_format")),
        "{details:?}"
    );

    // Declared, the same digits are a date: 2099-12-31 is kept, 2020-01-01 is due.
    let cfg = config(&d, "logs", "key = \"id\"\ncreated_at_format = \"%Y%m%d\"");
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(ids(&c, "logs"), vec![1, 2, 3], "{}{}", r.stdout, r.stderr);
    // A bad pattern is a config error naming the key.
    let bad = config(&d, "logs", "key = \"id\"\ncreated_at_format = \"%Q%\"");
    let r = run(&bad, &["check"]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("created_at_format"), "{}", r.stderr);
}

/// Finding 15: a batch whose keys were all unreadable ended the sweep: the rest of the
/// table was never looked at. Rows with a NULL key are reported, not passed over.
#[test]
fn unreadable_keys_never_end_the_scan() {
    let d = Tmp::new("unreadable-keys");
    let mut sql = String::from("CREATE TABLE logs (k PRIMARY KEY, created_at TEXT);");
    // Real numbers sort before the integers: the first batches hold only them.
    for i in 0..6 {
        sql.push_str(&format!("INSERT INTO logs VALUES ({i}.5, '{}');", old()));
    }
    for i in 100..110 {
        sql.push_str(&format!("INSERT INTO logs VALUES ({i}, '{}');", old()));
    }
    sql.push_str(&format!(
        "INSERT INTO logs VALUES (CAST(x'ff61' AS TEXT), '{o}'), (x'00', '{o}');
         CREATE TABLE nulls (id INTEGER UNIQUE, created_at TEXT);
         INSERT INTO nulls VALUES (NULL, '{o}'), (NULL, '{o}'), (1, '{o}');",
        o = old()
    ));
    let c = db(&d, &sql);
    let cfg = config(&d, "logs", "key = \"k\"");
    let r = run(&cfg, &["sweep", "--apply", "--json", "--batch-size", "3"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(
        count(&c, "SELECT count(*) FROM logs WHERE typeof(k) = 'integer'"),
        0
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM logs"),
        8,
        "unnameable rows kept"
    );
    let j = r.json();
    assert_eq!(j["targets"][0]["deleted"], 10);
    assert_eq!(j["targets"][0]["failed"], 8);

    let cfg = config(&d, "nulls", "key = \"id\"");
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(count(&c, "SELECT count(*) FROM nulls"), 2);
    assert_eq!(r.json()["targets"][0]["failed"], 2);
    assert!(export(&cfg).iter().any(
        |e| e["action"] == "failed" && e["detail"].as_str().unwrap_or("").contains("NULL key")
    ),);
}

/// Review of the fixes, 1: a key column that ignores case (or trailing spaces) with a
/// unique index on its bytes: deleting 'a' also took 'A', which was held and never judged.
#[test]
fn a_key_column_that_ignores_case_names_one_row_by_its_bytes() {
    let d = Tmp::new("nocase-key");
    let c = db(
        &d,
        &format!(
            "CREATE TABLE t (k TEXT COLLATE NOCASE, user_id TEXT, created_at TEXT);
             CREATE UNIQUE INDEX u ON t (k COLLATE BINARY);
             INSERT INTO t VALUES ('a', 'alice', '{o}'), ('A', 'bob', '{y}'), ('b', 'alice', '{o}'),
               ('x', 'alice', '{o}'), ('B', 'carol', '{o}');
             CREATE TABLE r (k TEXT COLLATE RTRIM, created_at TEXT);
             CREATE UNIQUE INDEX ur ON r (k COLLATE BINARY);
             INSERT INTO r VALUES ('x', '{o}'), ('x ', '{y}');",
            o = old(),
            y = young()
        ),
    );
    let cfg = config(&d, "t", "key = \"k\"\nsubject = \"user_id\"");
    let h = run(
        &cfg,
        &[
            "hold", "add", "--target", "t", "--key", "B", "--case", "C", "--reason", "r",
        ],
    );
    assert_eq!(h.code, Some(0), "{}", h.stderr);
    // One row per batch: the scan must not skip 'A' after 'a', nor 'b' after 'B'.
    let r = run(&cfg, &["sweep", "--json", "--batch-size", "1"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(keys_with(&cfg, "would_delete"), vec!["a", "b", "x"]);
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let left: Vec<String> = c
        .prepare("SELECT k FROM t ORDER BY k COLLATE BINARY")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(left, vec!["A", "B"], "the young row and the held row stay");

    let cfg = config(&d, "r", "key = \"k\"");
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(
        count(&c, "SELECT count(*) FROM r WHERE k = 'x ' COLLATE BINARY"),
        1
    );
    assert_eq!(count(&c, "SELECT count(*) FROM r"), 1);
}

/// Review of the fixes, 6: a target in Lethe's own state database made a sweep wait on its
/// own lock for a minute (or could delete Lethe's own records).
#[test]
fn a_target_in_the_state_database_is_refused() {
    let d = Tmp::new("state-target");
    let c = db(
        &d,
        &format!(
            "CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT); INSERT INTO logs VALUES (1, '{}');",
            old()
        ),
    );
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        "[state]\nurl = \"sqlite://ai.db\"\n[categories.log]\nretention = \"30d\"\n\
         [[targets]]\nname = \"t\"\ntype = \"sql\"\nurl = \"sqlite://./ai.db\"\ntable = \"logs\"\ncategory = \"log\"\nkey = \"id\"\ncreated_at = \"created_at\"\n",
    )
    .unwrap();
    let started = Instant::now();
    let r = run(&cfg, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("Lethe's own state database"),
        "{}",
        r.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(ids(&c, "logs"), vec![1]);
}

/// Review of the fixes: ISO text before 1900 (`0001-01-01`, .NET's "no date") was read as
/// a date and made rows due.
#[test]
fn placeholder_dates_are_not_dates() {
    let d = Tmp::new("placeholder-dates");
    let c = db(
        &d,
        &format!(
            "CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT);
             INSERT INTO logs VALUES (1, '0001-01-01 00:00:00'), (2, '1899-12-31'), (3, '{}');",
            old()
        ),
    );
    let cfg = config(&d, "logs", "key = \"id\"");
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&c, "logs"), vec![1, 2]);
    assert_eq!(keys_with(&cfg, "failed"), vec!["1", "2"]);
    // Declared as ISO-8601, the same text is a date, and due.
    let cfg = config(&d, "logs", "key = \"id\"\ncreated_at_format = \"iso8601\"");
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(ids(&c, "logs").is_empty());
}
