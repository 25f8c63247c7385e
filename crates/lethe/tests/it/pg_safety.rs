//! Safety on PostgreSQL: keys that name one row, rows the database keeps, rows changed
//! between judgement and deletion, refusals, bounded lock waits, targets reaching one table,
//! exact subjects, numbers in date columns and extreme values. Each test proves its point
//! by outcomes: rows present or gone, audit entries, exit codes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use postgres::Client;

use crate::pg::PgCluster;
use crate::*;

const KEY_ENV: &str = "LETHE_PG_SAFETY_AUDIT_KEY";
const KEY: &str = "the audit key of the pg safety tests";

/// One `sql` target: `key` is a TOML value (`"\"id\""` or `"[\"tenant\", \"id\"]"`).
fn target(name: &str, url: &str, table: &str, key: &str, extra: &str) -> String {
    format!(
        r#"[[targets]]
name = "{name}"
type = "sql"
url = "{url}"
table = "{table}"
category = "log"
key = {key}
created_at = "created_at"
{extra}
"#
    )
}

/// A config with a 30-day window, these targets, state in SQLite next to it.
fn config(dir: &Tmp, file: &str, targets: &[String]) -> PathBuf {
    let cfg = dir.path(file);
    std::fs::write(
        &cfg,
        format!(
            r#"[state]
url = "sqlite://state.db"

[categories.log]
retention = "30d"

{}
[audit]
key_env = "{KEY_ENV}"
"#,
            targets.join("\n")
        ),
    )
    .unwrap();
    cfg
}

fn lethe_run(cfg: &Path, args: &[&str]) -> Run {
    run_env(cfg, &[(KEY_ENV, KEY)], args)
}

/// Every audit entry, as exported.
fn trail(cfg: &Path) -> Vec<serde_json::Value> {
    let r = lethe_run(cfg, &["audit", "export", "--format", "jsonl"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The entries of one item: (action, detail).
fn item(trail: &[serde_json::Value], target: &str, key: &str) -> Vec<(String, String)> {
    trail
        .iter()
        .filter(|e| e["target"] == target && e["item_key"] == key)
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The keys of a target with entries of this action.
fn keys_with(trail: &[serde_json::Value], target: &str, action: &str) -> BTreeSet<String> {
    trail
        .iter()
        .filter(|e| e["target"] == target && e["action"] == action)
        .map(|e| e["item_key"].as_str().unwrap().to_string())
        .collect()
}

fn count(trail: &[serde_json::Value], target: &str, action: &str) -> usize {
    trail
        .iter()
        .filter(|e| e["target"] == target && e["action"] == action)
        .count()
}

/// The keys of a table, as text, in key order.
fn keys(c: &mut Client, table: &str, cols: &str) -> Vec<String> {
    c.query(
        &format!("SELECT ({cols})::text FROM {table} ORDER BY {cols}"),
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn ids(c: &mut Client, table: &str) -> Vec<i64> {
    c.query(&format!("SELECT id::int8 FROM {table} ORDER BY id"), &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn texts<I: IntoIterator<Item = i64>>(ids: I) -> BTreeSet<String> {
    ids.into_iter().map(|i| i.to_string()).collect()
}

fn all(r: &Run) -> String {
    format!("stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr)
}

/// Item 1: a key that does not name one row is refused before anything is touched; a
/// composite key works, is written as a JSON array of texts, and can be held.
#[test]
fn key_not_covered_by_a_unique_index_is_refused_and_composite_keys_work() {
    let pg = PgCluster::start();
    let mut db = pg.create_db("app");
    db.batch_execute(
        "CREATE TABLE mt (tenant text, id int, user_id text, created_at timestamptz NOT NULL, PRIMARY KEY (tenant, id));
         INSERT INTO mt VALUES
           ('a', 1, 'u', now() - interval '40 days'),
           ('b', 1, 'u', now() - interval '1 day'),
           ('a', 2, 'u', now() - interval '40 days'),
           ('b', 2, 'u', now() - interval '40 days'),
           ('c', 3, 'u', now() - interval '40 days');
         CREATE TABLE parted (id bigint, created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at))
           PARTITION BY RANGE (created_at);
         CREATE TABLE parted_all PARTITION OF parted FOR VALUES FROM ('2000-01-01') TO ('2200-01-01');
         INSERT INTO parted VALUES (1, now() - interval '40 days'), (1, now()), (2, now() - interval '40 days');",
    )
    .unwrap();
    let url = pg.url("app");
    let dir = Tmp::new("pgsafe-key");
    let before_mt = keys(&mut db, "mt", "tenant, id");
    let before_parted = keys(&mut db, "parted", "id, created_at");

    let bad = config(
        &dir,
        "bad.toml",
        &[
            target("mt", &url, "mt", "\"id\"", ""),
            target("parted", &url, "parted", "\"id\"", ""),
        ],
    );
    for args in [&["sweep", "--apply"][..], &["sweep"][..]] {
        let r = lethe_run(&bad, args);
        assert_eq!(r.code, Some(2), "{args:?}: {}", all(&r));
        assert!(r.stderr.contains("nothing was touched"), "{}", all(&r));
        // The message names the index that would do.
        assert!(
            r.stderr.contains("the primary key would do")
                && r.stderr.contains(r#"key = ["tenant", "id"]"#)
                && r.stderr.contains(r#"key = ["id", "created_at"]"#),
            "{args:?}: {}",
            all(&r)
        );
    }
    assert_eq!(keys(&mut db, "mt", "tenant, id"), before_mt);
    assert_eq!(keys(&mut db, "parted", "id, created_at"), before_parted);

    let r = lethe_run(&bad, &["check"]);
    assert_ne!(r.code, Some(0), "{}", all(&r));
    for name in ["mt", "parted"] {
        let line = r
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("target {name} (")))
            .unwrap_or_else(|| panic!("no line for {name}: {}", all(&r)));
        assert!(line.ends_with("FAILED"), "{}", all(&r));
    }
    assert!(r.stdout.contains("the primary key would do"), "{}", all(&r));
    assert_eq!(keys(&mut db, "mt", "tenant, id"), before_mt);

    // The whole primary key names one row.
    let good = config(
        &dir,
        "good.toml",
        &[target("mt", &url, "mt", r#"["tenant", "id"]"#, "")],
    );
    let r = lethe_run(&good, &["check"]);
    assert_eq!(r.code, Some(0), "{}", all(&r));
    // A hold names one row of a composite key, its parts as text or as numbers.
    for key in [r#"["a","2"]"#, r#"["b",2]"#] {
        let r = lethe_run(
            &good,
            &[
                "hold", "add", "--target", "mt", "--key", key, "--case", "C-1", "--reason", "r",
            ],
        );
        assert_eq!(r.code, Some(0), "hold {key}: {}", all(&r));
    }
    let r = lethe_run(
        &good,
        &[
            "hold",
            "add",
            "--target",
            "mt",
            "--key",
            r#"["z","9"]"#,
            "--case",
            "C-1",
            "--reason",
            "r",
        ],
    );
    assert_eq!(r.code, Some(2), "no such row: {}", all(&r));

    let r = lethe_run(&good, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}", all(&r));
    assert_eq!(r.json()["targets"][0]["deleted"], 2, "{}", all(&r));
    assert_eq!(r.json()["targets"][0]["held"], 2, "{}", all(&r));
    assert_eq!(
        keys(&mut db, "mt", "tenant, id"),
        vec!["(a,2)", "(b,1)", "(b,2)"],
        "only the expired, unheld rows go; tenant b's fresh id 1 stays"
    );
    let t = trail(&good);
    assert_eq!(
        keys_with(&t, "mt", "deleted"),
        [r#"["a","1"]"#, r#"["c","3"]"#]
            .map(String::from)
            .into_iter()
            .collect()
    );
    assert_eq!(
        keys_with(&t, "mt", "held"),
        [r#"["a","2"]"#, r#"["b","2"]"#]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let r = lethe_run(&good, &["audit", "verify"]);
    assert_eq!(r.code, Some(0), "{}", all(&r));
}

/// Item 2: rows a BEFORE DELETE trigger, an INSTEAD NOTHING rule or a row-level security
/// policy keeps are failed, never recorded deleted; the others go.
#[test]
fn rows_kept_by_a_trigger_a_rule_or_a_policy_are_never_recorded_deleted() {
    let pg = PgCluster::start();
    let mut db = pg.create_db("app");
    db.batch_execute(
        "CREATE TABLE trig (id int PRIMARY KEY, created_at timestamptz NOT NULL);
         INSERT INTO trig SELECT g, now() - make_interval(days => CASE WHEN g <= 10 THEN 40 ELSE 1 END) FROM generate_series(1, 12) g;
         CREATE FUNCTION keep_odd() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF OLD.id % 2 = 1 THEN RETURN NULL; END IF; RETURN OLD; END $$;
         CREATE TRIGGER keep_odd BEFORE DELETE ON trig FOR EACH ROW EXECUTE FUNCTION keep_odd();

         CREATE TABLE ruled (id int PRIMARY KEY, created_at timestamptz NOT NULL);
         INSERT INTO ruled SELECT g, now() - interval '40 days' FROM generate_series(1, 4) g;
         CREATE RULE never_delete AS ON DELETE TO ruled DO INSTEAD NOTHING;

         CREATE TABLE secured (id int PRIMARY KEY, team text NOT NULL, created_at timestamptz NOT NULL);
         INSERT INTO secured SELECT g, CASE WHEN g IN (2, 5) THEN 'locked' WHEN g = 7 THEN 'hidden' ELSE 'open' END,
                                    now() - make_interval(days => CASE WHEN g <= 8 THEN 40 ELSE 1 END)
           FROM generate_series(1, 10) g;
         CREATE ROLE sweeper LOGIN;
         GRANT SELECT, DELETE ON secured TO sweeper;
         ALTER TABLE secured ENABLE ROW LEVEL SECURITY;
         CREATE POLICY see ON secured FOR SELECT TO sweeper USING (team <> 'hidden');
         CREATE POLICY remove ON secured FOR DELETE TO sweeper USING (team = 'open');",
    )
    .unwrap();
    let is_super: bool = db
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'sweeper'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!is_super, "superusers bypass row-level security");
    let url = pg.url("app");
    let as_sweeper = url.replace("postgres@", "sweeper@");
    let dir = Tmp::new("pgsafe-kept");
    let cfg = config(
        &dir,
        "lethe.toml",
        &[
            target("trig", &url, "trig", "\"id\"", ""),
            target("ruled", &url, "ruled", "\"id\"", ""),
            target("secured", &as_sweeper, "secured", "\"id\"", ""),
        ],
    );
    // Row-level security with no trigger: nothing can put a row back where it hides it.
    let r = lethe_run(&cfg, &["check"]);
    assert!(!r.stdout.contains("row-level security"), "{}", all(&r));
    let r = lethe_run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}", all(&r));
    let t = trail(&cfg);
    let failures = format!("{t:#?}");

    // (a) the trigger keeps odd ids
    assert_eq!(
        ids(&mut db, "trig"),
        vec![1, 3, 5, 7, 9, 11, 12],
        "{failures}"
    );
    assert_eq!(keys_with(&t, "trig", "deleted"), texts([2, 4, 6, 8, 10]));
    assert_eq!(keys_with(&t, "trig", "failed"), texts([1, 3, 5, 7, 9]));
    // (b) the rule keeps every row
    assert_eq!(ids(&mut db, "ruled"), vec![1, 2, 3, 4], "{failures}");
    assert_eq!(count(&t, "ruled", "deleted"), 0, "{failures}");
    assert_eq!(keys_with(&t, "ruled", "failed"), texts([1, 2, 3, 4]));
    // (c) the policy forbids deleting the locked rows and hides row 7
    assert_eq!(ids(&mut db, "secured"), vec![2, 5, 7, 9, 10], "{failures}");
    assert_eq!(keys_with(&t, "secured", "deleted"), texts([1, 3, 4, 6, 8]));
    assert_eq!(keys_with(&t, "secured", "failed"), texts([2, 5]));
    assert!(item(&t, "secured", "7").is_empty(), "{failures}");

    let report = r.json();
    for (i, (deleted, failed)) in [(5, 5), (0, 4), (5, 2)].into_iter().enumerate() {
        assert_eq!(report["targets"][i]["deleted"], deleted, "{}", all(&r));
        assert_eq!(report["targets"][i]["failed"], failed, "{}", all(&r));
    }
    for e in t.iter().filter(|e| e["action"] == "failed") {
        assert!(
            e["detail"].as_str().unwrap().contains("not deleted")
                || e["detail"].as_str().unwrap().contains("refused"),
            "{e}"
        );
    }

    // Again: still nothing of theirs recorded deleted.
    let r = lethe_run(&cfg, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(1), "{}", all(&r));
    let t = trail(&cfg);
    assert_eq!(count(&t, "trig", "deleted"), 5);
    assert_eq!(count(&t, "ruled", "deleted"), 0);
    assert_eq!(count(&t, "secured", "deleted"), 5);
    assert_eq!(ids(&mut db, "secured"), vec![2, 5, 7, 9, 10]);

    // With a trigger as well, `check` says that a row put back where the policy hides it
    // could not be seen.
    db.batch_execute(
        "CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
         CREATE TRIGGER noop AFTER DELETE ON secured FOR EACH ROW EXECUTE FUNCTION noop();",
    )
    .unwrap();
    let r = lethe_run(&cfg, &["check"]);
    assert!(
        r.stdout
            .contains("row-level security limits what this role can read of secured"),
        "{}",
        all(&r)
    );
}

/// A row code puts back during the delete is never recorded deleted: an AFTER DELETE
/// trigger that inserts the row again, a rule that makes the statement delete from another
/// table instead (its count then speaks of that table), and a cascade whose child table's
/// trigger inserts the parent row again. The statement's own count or `RETURNING` says
/// these rows went; only a row gone afterwards counts.
#[test]
fn a_row_put_back_during_the_delete_is_never_recorded_deleted() {
    let pg = PgCluster::start();
    let mut db = pg.create_db("app");
    db.batch_execute(
        "CREATE TABLE back (id int PRIMARY KEY, created_at timestamptz NOT NULL);
         INSERT INTO back SELECT g, now() - interval '40 days' FROM generate_series(1, 6) g;
         CREATE FUNCTION put_back() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF OLD.id IN (2, 5) THEN INSERT INTO back VALUES (OLD.id, OLD.created_at); END IF;
           RETURN NULL; END $$;
         CREATE TRIGGER put_back AFTER DELETE ON back FOR EACH ROW EXECUTE FUNCTION put_back();

         CREATE TABLE shadow (id int PRIMARY KEY);
         INSERT INTO shadow SELECT g FROM generate_series(1, 4) g;
         CREATE TABLE elsewhere (id int PRIMARY KEY, created_at timestamptz NOT NULL);
         INSERT INTO elsewhere SELECT g, now() - interval '40 days' FROM generate_series(1, 4) g;
         CREATE RULE elsewhere AS ON DELETE TO elsewhere DO INSTEAD DELETE FROM shadow WHERE id = OLD.id;

         CREATE TABLE parent (id int PRIMARY KEY, created_at timestamptz NOT NULL);
         INSERT INTO parent SELECT g, now() - interval '40 days' FROM generate_series(1, 4) g;
         CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent ON DELETE CASCADE);
         INSERT INTO child VALUES (3, 3);
         CREATE FUNCTION revive() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO parent VALUES (OLD.parent_id, now() - interval '40 days'); RETURN NULL; END $$;
         CREATE TRIGGER revive AFTER DELETE ON child FOR EACH ROW EXECUTE FUNCTION revive();",
    )
    .unwrap();
    let url = pg.url("app");
    let dir = Tmp::new("pgsafe-put-back");
    let cfg = config(
        &dir,
        "lethe.toml",
        &[
            target("back", &url, "back", "\"id\"", ""),
            target("elsewhere", &url, "elsewhere", "\"id\"", ""),
            target("parent", &url, "parent", "\"id\"", ""),
        ],
    );
    let r = lethe_run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}", all(&r));
    let t = trail(&cfg);
    let failures = format!("{t:#?}");

    assert_eq!(ids(&mut db, "back"), vec![2, 5], "{failures}");
    assert_eq!(keys_with(&t, "back", "deleted"), texts([1, 3, 4, 6]));
    assert_eq!(keys_with(&t, "back", "failed"), texts([2, 5]));

    assert_eq!(ids(&mut db, "elsewhere"), vec![1, 2, 3, 4], "{failures}");
    assert_eq!(count(&t, "elsewhere", "deleted"), 0, "{failures}");
    assert_eq!(keys_with(&t, "elsewhere", "failed"), texts([1, 2, 3, 4]));

    assert_eq!(ids(&mut db, "parent"), vec![3], "{failures}");
    assert_eq!(keys_with(&t, "parent", "deleted"), texts([1, 2, 4]));
    assert_eq!(keys_with(&t, "parent", "failed"), texts([3]));

    let report = r.json();
    for (i, (deleted, failed)) in [(4, 2), (0, 4), (3, 1)].into_iter().enumerate() {
        assert_eq!(report["targets"][i]["deleted"], deleted, "{}", all(&r));
        assert_eq!(report["targets"][i]["failed"], failed, "{}", all(&r));
    }
}

/// Later in the same transaction: a deferred constraint trigger that puts rows back (it
/// would act at COMMIT, after every check), and a row one group confirmed that a later
/// group's trigger puts back after a refusal split the delete. Neither is recorded deleted;
/// a deferred trigger that refuses one row keeps only that row, not the whole commit.
#[test]
fn a_row_put_back_later_in_the_transaction_is_never_recorded_deleted() {
    let pg = PgCluster::start();
    let mut db = pg.create_db("app");
    db.batch_execute(
        "CREATE TABLE deferred (id int PRIMARY KEY, created_at timestamptz NOT NULL);
         INSERT INTO deferred SELECT g, now() - interval '40 days' FROM generate_series(1, 10) g;
         CREATE FUNCTION put_back_later() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF OLD.id % 3 = 0 THEN INSERT INTO deferred VALUES (OLD.id, OLD.created_at); END IF;
           IF OLD.id = 10 THEN RAISE EXCEPTION 'row 10 is protected'; END IF;
           RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER put_back_later AFTER DELETE ON deferred
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION put_back_later();

         CREATE TABLE redeferred (id int PRIMARY KEY, created_at timestamptz NOT NULL);
         INSERT INTO redeferred SELECT g, now() - interval '40 days' FROM generate_series(1, 6) g;
         CREATE FUNCTION put_back_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF OLD.id % 3 = 0 THEN INSERT INTO redeferred VALUES (OLD.id, OLD.created_at); END IF;
           RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER put_back_at_commit AFTER DELETE ON redeferred
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION put_back_at_commit();
         CREATE FUNCTION redefer() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN SET CONSTRAINTS ALL DEFERRED; RETURN NULL; END $$;
         CREATE TRIGGER redefer BEFORE DELETE ON redeferred FOR EACH STATEMENT EXECUTE FUNCTION redefer();

         CREATE TABLE split (id int PRIMARY KEY, created_at timestamptz NOT NULL);
         INSERT INTO split SELECT g, now() - interval '40 days' FROM generate_series(1, 8) g;
         CREATE FUNCTION across() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF OLD.id = 8 THEN RAISE EXCEPTION 'row 8 is protected'; END IF;
           IF OLD.id = 6 THEN INSERT INTO split VALUES (1, now() - interval '40 days') ON CONFLICT DO NOTHING; END IF;
           RETURN NULL; END $$;
         CREATE TRIGGER across AFTER DELETE ON split FOR EACH ROW EXECUTE FUNCTION across();",
    )
    .unwrap();
    let url = pg.url("app");
    let dir = Tmp::new("pgsafe-put-back-later");
    let cfg = config(
        &dir,
        "lethe.toml",
        &[
            target("deferred", &url, "deferred", "\"id\"", ""),
            target("redeferred", &url, "redeferred", "\"id\"", ""),
            target("split", &url, "split", "\"id\"", ""),
        ],
    );
    let r = lethe_run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}", all(&r));
    let t = trail(&cfg);
    let failures = format!("{t:#?}");

    assert_eq!(ids(&mut db, "deferred"), vec![3, 6, 9, 10], "{failures}");
    assert_eq!(
        keys_with(&t, "deferred", "deleted"),
        texts([1, 2, 4, 5, 7, 8])
    );
    assert_eq!(keys_with(&t, "deferred", "failed"), texts([3, 6, 9, 10]));

    // A trigger that defers constraints again: what is pending acts before the last look.
    assert_eq!(ids(&mut db, "redeferred"), vec![3, 6], "{failures}");
    assert_eq!(keys_with(&t, "redeferred", "deleted"), texts([1, 2, 4, 5]));
    assert_eq!(keys_with(&t, "redeferred", "failed"), texts([3, 6]));

    assert_eq!(ids(&mut db, "split"), vec![1, 8], "{failures}");
    assert_eq!(keys_with(&t, "split", "deleted"), texts([2, 3, 4, 5, 6, 7]));
    assert_eq!(keys_with(&t, "split", "failed"), texts([1, 8]));
}

/// Polls until another backend's DELETE waits on a lock; false if none did within `limit`.
fn wait_for_blocked_delete(c: &mut Client, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE pid <> pg_backend_pid() AND wait_event_type = 'Lock' AND query ILIKE '%DELETE FROM%'",
                &[],
            )
            .unwrap()
            .get(0);
        if n > 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Item 2b/3: a row the application makes fresh after Lethe read it, before it deletes it,
/// is kept; Lethe waits only as long as the application holds the row.
#[test]
fn a_row_made_fresh_between_read_and_delete_is_kept() {
    let pg = PgCluster::start();
    let mut db = pg.create_db("app");
    db.batch_execute(
        "CREATE TABLE logs (id int PRIMARY KEY, user_id text, created_at timestamptz NOT NULL);
         INSERT INTO logs SELECT g, 'u', now() - make_interval(days => CASE WHEN g % 2 = 0 THEN 40 ELSE 1 END)
           FROM generate_series(1, 20) g;",
    )
    .unwrap();
    let dir = Tmp::new("pgsafe-fresh");
    let cfg = config(
        &dir,
        "lethe.toml",
        &[target("logs", &pg.url("app"), "logs", "\"id\"", "")],
    );
    let mut app = pg.client("app");
    let mut watch = pg.client("app");
    app.batch_execute("BEGIN; UPDATE logs SET created_at = now() WHERE id = 4;")
        .unwrap();
    ensure_init_env(&cfg, &[(KEY_ENV, KEY)]);
    let started = Instant::now();
    let child = lethe()
        .args(["sweep", "--apply", "--json", "--config"])
        .arg(&cfg)
        .env(KEY_ENV, KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Lethe has read row 4 as it was (expired) and now waits on the application's lock.
    let blocked = wait_for_blocked_delete(&mut watch, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(300));
    app.batch_execute("COMMIT").unwrap();
    let out = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        blocked,
        "the sweep never waited on the row lock: {stdout}{stderr}"
    );
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{:?}: {stdout}{stderr}",
        out.status
    );
    assert!(
        elapsed < Duration::from_secs(15),
        "waited {elapsed:?}: no longer than the default lock_timeout"
    );
    let t = trail(&cfg);
    assert!(
        ids(&mut db, "logs").contains(&4),
        "the row made fresh was deleted: {t:#?}"
    );
    assert!(
        item(&t, "logs", "4").iter().all(|(a, _)| a != "deleted"),
        "{:?}",
        item(&t, "logs", "4")
    );
    let left = ids(&mut db, "logs");
    let expect: Vec<i64> = (1..=20).filter(|g| g % 2 == 1 || *g == 4).collect();
    assert_eq!(left, expect, "{stdout}{stderr}");
    assert_eq!(
        keys_with(&t, "logs", "deleted"),
        texts((1..=20).filter(|g| g % 2 == 0 && *g != 4))
    );
    // The next run judges it fresh and keeps it, without a failure.
    let r = lethe_run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}", all(&r));
    assert_eq!(r.json()["targets"][0]["found"], 0, "{}", all(&r));
    assert!(ids(&mut db, "logs").contains(&4));
}

/// Item 4: a trigger that raises for one row and a restricting foreign key on another keep
/// those two rows only; every other due row is deleted in the same run.
#[test]
fn one_row_the_database_refuses_to_delete_does_not_keep_the_rest() {
    let pg = PgCluster::start();
    let mut db = pg.create_db("app");
    db.batch_execute(
        "CREATE TABLE big (id int PRIMARY KEY, user_id text, created_at timestamptz NOT NULL);
         INSERT INTO big SELECT g, 'u', now() - make_interval(days => CASE WHEN g % 10 = 0 THEN 1 ELSE 40 END)
           FROM generate_series(1, 3000) g;
         CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF OLD.id = 1234 THEN RAISE EXCEPTION 'row 1234 is under review'; END IF; RETURN OLD; END $$;
         CREATE TRIGGER refuse BEFORE DELETE ON big FOR EACH ROW EXECUTE FUNCTION refuse();
         CREATE TABLE child (id int PRIMARY KEY, parent int REFERENCES big (id) ON DELETE RESTRICT);
         INSERT INTO child VALUES (1, 2501);",
    )
    .unwrap();
    let dir = Tmp::new("pgsafe-refuse");
    let cfg = config(
        &dir,
        "lethe.toml",
        &[target("big", &pg.url("app"), "big", "\"id\"", "")],
    );
    let args = [
        "sweep",
        "--apply",
        "--json",
        "--rows-per-commit",
        "1000",
        "--batch-size",
        "500",
    ];
    let due: Vec<i64> = (1..=3000).filter(|g| g % 10 != 0).collect();
    let kept: Vec<i64> = (1..=3000)
        .filter(|g| g % 10 == 0 || *g == 1234 || *g == 2501)
        .collect();

    let r = lethe_run(&cfg, &args);
    assert_eq!(r.code, Some(1), "{}", all(&r));
    assert_eq!(
        r.json()["targets"][0]["deleted"],
        due.len() - 2,
        "{}",
        all(&r)
    );
    assert_eq!(r.json()["targets"][0]["failed"], 2, "{}", all(&r));
    assert_eq!(ids(&mut db, "big"), kept);
    let t = trail(&cfg);
    assert_eq!(
        keys_with(&t, "big", "deleted"),
        texts(due.iter().copied().filter(|g| *g != 1234 && *g != 2501))
    );
    let by_trigger = item(&t, "big", "1234");
    assert_eq!(by_trigger.len(), 1, "{by_trigger:?}");
    assert_eq!(by_trigger[0].0, "failed");
    assert!(
        by_trigger[0].1.contains("row 1234 is under review"),
        "{by_trigger:?}"
    );
    let by_fk = item(&t, "big", "2501");
    assert_eq!(by_fk.len(), 1, "{by_fk:?}");
    assert_eq!(by_fk[0].0, "failed");
    assert!(
        by_fk[0].1.contains("foreign key") && by_fk[0].1.contains("child"),
        "{by_fk:?}"
    );

    // Again: the same two refused, nothing else touched or recorded deleted.
    let r = lethe_run(&cfg, &args);
    assert_eq!(r.code, Some(1), "{}", all(&r));
    assert_eq!(r.json()["targets"][0]["deleted"], 0, "{}", all(&r));
    assert_eq!(r.json()["targets"][0]["failed"], 2, "{}", all(&r));
    assert_eq!(ids(&mut db, "big"), kept);
    let t = trail(&cfg);
    assert_eq!(count(&t, "big", "deleted"), due.len() - 2);
    assert_eq!(
        item(&t, "big", "1234")
            .iter()
            .filter(|(a, _)| a == "failed")
            .count(),
        2
    );
    assert_eq!(
        item(&t, "big", "2501")
            .iter()
            .filter(|(a, _)| a == "failed")
            .count(),
        2
    );
}

/// Item 5: a row lock held by the application fails that row after lock_timeout; a table
/// lock makes its target busy; neither holds up the rest of the run.
#[test]
fn bounded_waits_on_a_locked_row_and_a_locked_table() {
    let pg = PgCluster::start();
    let mut db = pg.create_db("app");
    for table in ["rowlocked", "tablelocked", "other"] {
        db.batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, user_id text, created_at timestamptz NOT NULL);
             INSERT INTO {table} SELECT g, 'u', now() - make_interval(days => CASE WHEN g % 2 = 0 THEN 40 ELSE 1 END)
               FROM generate_series(1, 20) g;"
        ))
        .unwrap();
    }
    let url = pg.url("app");
    let dir = Tmp::new("pgsafe-locks");
    let cfg = config(
        &dir,
        "lethe.toml",
        &[
            target(
                "rowlocked",
                &url,
                "rowlocked",
                "\"id\"",
                "lock_timeout = \"1s\"",
            ),
            target(
                "tablelocked",
                &url,
                "tablelocked",
                "\"id\"",
                "lock_timeout = \"1s\"",
            ),
            target("other", &url, "other", "\"id\"", "lock_timeout = \"1s\""),
        ],
    );
    let mut row_holder = pg.client("app");
    row_holder
        .batch_execute("BEGIN; SELECT * FROM rowlocked WHERE id = 6 FOR UPDATE;")
        .unwrap();
    let mut table_holder = pg.client("app");
    table_holder
        .batch_execute("BEGIN; LOCK TABLE tablelocked IN ACCESS EXCLUSIVE MODE;")
        .unwrap();

    let started = Instant::now();
    let r = lethe_run(&cfg, &["sweep", "--apply", "--json"]);
    let elapsed = started.elapsed();
    assert_eq!(r.code, Some(1), "{}", all(&r));
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    let report = r.json();

    // (a) the locked row failed, naming lock_timeout; the rest deleted
    assert_eq!(report["targets"][0]["target"], "rowlocked");
    assert_eq!(report["targets"][0]["deleted"], 9, "{}", all(&r));
    assert_eq!(report["targets"][0]["failed"], 1, "{}", all(&r));
    // (b) the locked table is reported busy; the target after it is still swept
    assert_eq!(report["targets"][1]["target"], "tablelocked");
    let error = report["targets"][1]["error"].as_str().unwrap_or_default();
    assert!(error.contains("lock_timeout"), "{}", all(&r));
    assert_eq!(report["targets"][1]["deleted"], 0, "{}", all(&r));
    assert_eq!(report["targets"][2]["target"], "other");
    assert_eq!(report["targets"][2]["deleted"], 10, "{}", all(&r));
    assert!(report["targets"][2]["error"].is_null(), "{}", all(&r));

    row_holder.batch_execute("ROLLBACK").unwrap();
    table_holder.batch_execute("ROLLBACK").unwrap();
    let odd: Vec<i64> = (1..=20).filter(|g| g % 2 == 1).collect();
    let mut odd_and_6 = odd.clone();
    odd_and_6.push(6);
    odd_and_6.sort();
    assert_eq!(ids(&mut db, "rowlocked"), odd_and_6);
    assert_eq!(ids(&mut db, "tablelocked"), (1..=20).collect::<Vec<_>>());
    assert_eq!(ids(&mut db, "other"), odd);
    let t = trail(&cfg);
    let six = item(&t, "rowlocked", "6");
    assert_eq!(six.len(), 1, "{six:?}");
    assert_eq!(six[0].0, "failed");
    assert!(six[0].1.contains("lock_timeout"), "{six:?}");
    assert_eq!(count(&t, "tablelocked", "deleted"), 0);
    let finished: Vec<&serde_json::Value> = t
        .iter()
        .filter(|e| e["target"] == "tablelocked" && e["action"] == "sweep_finished")
        .collect();
    assert!(
        finished
            .iter()
            .any(|e| e["detail"].as_str().unwrap().contains("lock_timeout")),
        "{finished:?}"
    );

    // Once the locks are gone, the next run finishes the work.
    let r = lethe_run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}", all(&r));
    assert_eq!(ids(&mut db, "rowlocked"), odd);
    assert_eq!(ids(&mut db, "tablelocked"), odd);
}

/// Item 7: two targets reaching one table, whatever the spelling of the host or the table,
/// are refused before anything is touched.
#[test]
fn two_targets_reaching_the_same_table_are_refused() {
    let pg = PgCluster::start();
    let mut db = pg.create_db("app");
    db.batch_execute(
        "CREATE TABLE logs (id int PRIMARY KEY, user_id text, created_at timestamptz NOT NULL);
         INSERT INTO logs SELECT g, 'u', now() - interval '40 days' FROM generate_series(1, 10) g;",
    )
    .unwrap();
    let url = pg.url("app");
    let localhost = url.replace("127.0.0.1", "localhost");
    assert_ne!(url, localhost);
    let dir = Tmp::new("pgsafe-same");
    let by_host = config(
        &dir,
        "by-host.toml",
        &[
            target("first", &url, "logs", "\"id\"", ""),
            target("second", &localhost, "logs", "\"id\"", ""),
        ],
    );
    let by_schema = config(
        &dir,
        "by-schema.toml",
        &[
            target("first", &url, "public.logs", "\"id\"", ""),
            target("second", &url, "logs", "\"id\"", ""),
        ],
    );
    for cfg in [&by_host, &by_schema] {
        for args in [&["sweep", "--apply"][..], &["sweep"][..]] {
            let r = lethe_run(cfg, args);
            assert_eq!(r.code, Some(2), "{cfg:?} {args:?}: {}", all(&r));
            assert!(
                r.stderr.contains("the same table") && r.stderr.contains("first"),
                "{}",
                all(&r)
            );
        }
        let r = lethe_run(cfg, &["check"]);
        assert_eq!(r.code, Some(2), "{}", all(&r));
        assert!(r.stdout.contains("FAILED"), "{}", all(&r));
        assert_eq!(ids(&mut db, "logs").len(), 10, "{cfg:?}");
    }
    // The same two spellings, one target at a time, reach it fine.
    let one = config(
        &dir,
        "one.toml",
        &[target("only", &localhost, "public.logs", "\"id\"", "")],
    );
    let r = lethe_run(&one, &["check"]);
    assert_eq!(r.code, Some(0), "{}", all(&r));
}

/// Item 8: a subject is matched by its exact text, whatever the column's type or collation.
#[test]
fn subjects_match_exact_text() {
    let pg = PgCluster::start();
    let mut db = pg.create_db("app");
    db.batch_execute(
        "CREATE TABLE nums (id int PRIMARY KEY, user_id integer, created_at timestamptz NOT NULL);
         INSERT INTO nums VALUES (1, 42, now()), (2, 7, now()), (3, 420, now());
         CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         CREATE TABLE people (id int PRIMARY KEY, user_id text COLLATE ci, created_at timestamptz NOT NULL);
         INSERT INTO people VALUES (1, 'alice', now()), (2, 'ALICE', now()), (3, 'Alice ', now());",
    )
    .unwrap();
    // The collation does match case-insensitively: the test would prove nothing otherwise.
    let n: i64 = db
        .query_one("SELECT count(*) FROM people WHERE user_id = 'alice'", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    let url = pg.url("app");
    let dir = Tmp::new("pgsafe-subject");
    let subject = "subject = \"user_id\"";
    let cfg = config(
        &dir,
        "lethe.toml",
        &[
            target("nums", &url, "nums", "\"id\"", subject),
            target("people", &url, "people", "\"id\"", subject),
        ],
    );
    for other in [" 42 ", "4.2e1", "042", "+42", "42.0"] {
        let r = lethe_run(&cfg, &["erase", "--subject", other, "--apply", "--json"]);
        assert_eq!(r.code, Some(0), "{other:?}: {}", all(&r));
        assert_eq!(r.json()["targets"][0]["deleted"], 0, "{other:?}");
        assert_eq!(ids(&mut db, "nums"), vec![1, 2, 3], "{other:?}");
    }
    let r = lethe_run(&cfg, &["erase", "--subject", "42", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}", all(&r));
    assert_eq!(r.json()["targets"][0]["deleted"], 1, "{}", all(&r));
    assert_eq!(r.json()["targets"][1]["deleted"], 0, "{}", all(&r));
    assert_eq!(ids(&mut db, "nums"), vec![2, 3]);

    let r = lethe_run(&cfg, &["export", "--subject", "alice"]);
    assert_eq!(r.code, Some(0), "{}", all(&r));
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let people = doc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "people")
        .unwrap();
    let items = people["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["id"], 1);
    assert_eq!(items[0]["user_id"], "alice");

    let r = lethe_run(&cfg, &["erase", "--subject", "alice", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}", all(&r));
    assert_eq!(r.json()["targets"][1]["deleted"], 1, "{}", all(&r));
    assert_eq!(ids(&mut db, "people"), vec![2, 3], "ALICE's rows stay");
    let t = trail(&cfg);
    assert_eq!(keys_with(&t, "people", "deleted"), texts([1]));
    assert_eq!(keys_with(&t, "nums", "deleted"), texts([1]));
}

/// Item 9: digits in a number column are read as a unix time only when plausible, never
/// guessed to be a date; with created_at_format they are read as declared.
#[test]
fn numbers_in_date_columns_are_not_guessed() {
    let pg = PgCluster::start();
    let mut db = pg.create_db("app");
    db.batch_execute(
        "CREATE TABLE ymd (id int PRIMARY KEY, created_at bigint NOT NULL);
         INSERT INTO ymd VALUES (1, 20991231), (2, 20200101);
         CREATE TABLE dated (id int PRIMARY KEY, created_at bigint NOT NULL, expires_at bigint);
         INSERT INTO dated VALUES
           (1, extract(epoch FROM now() - interval '40 days')::bigint, 0),
           (2, extract(epoch FROM now() - interval '40 days')::bigint, NULL),
           (3, extract(epoch FROM now() - interval '1 day')::bigint, NULL);",
    )
    .unwrap();
    let url = pg.url("app");
    let dir = Tmp::new("pgsafe-digits");
    let plain = config(
        &dir,
        "plain.toml",
        &[
            target("ymd", &url, "ymd", "\"id\"", ""),
            target(
                "dated",
                &url,
                "dated",
                "\"id\"",
                "expires_at = \"expires_at\"",
            ),
        ],
    );
    let r = lethe_run(&plain, &["check", "--json"]);
    assert_eq!(r.code, Some(0), "{}", all(&r));
    assert_eq!(r.json()["targets"][0]["unreadable"], 2, "{}", all(&r));
    assert_eq!(r.json()["targets"][1]["unreadable"], 1, "{}", all(&r));

    let r = lethe_run(&plain, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}", all(&r));
    assert_eq!(ids(&mut db, "ymd"), vec![1, 2]);
    assert_eq!(ids(&mut db, "dated"), vec![1, 3]);
    let t = trail(&plain);
    assert_eq!(count(&t, "ymd", "deleted"), 0);
    assert_eq!(keys_with(&t, "ymd", "failed"), texts([1, 2]));
    assert_eq!(keys_with(&t, "dated", "failed"), texts([1]));
    assert_eq!(keys_with(&t, "dated", "deleted"), texts([2]));
    for (target, key) in [("ymd", "1"), ("ymd", "2"), ("dated", "1")] {
        let e = item(&t, target, key);
        assert!(
            e.iter().all(|(_, d)| d.contains("plausible")),
            "{target} {key}: {e:?}"
        );
    }

    let declared = config(
        &dir,
        "declared.toml",
        &[target(
            "ymd",
            &url,
            "ymd",
            "\"id\"",
            "created_at_format = \"%Y%m%d\"",
        )],
    );
    let r = lethe_run(&declared, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}", all(&r));
    assert_eq!(r.json()["targets"][0]["deleted"], 1, "{}", all(&r));
    assert_eq!(ids(&mut db, "ymd"), vec![1], "20991231 is in the future");
    let t = trail(&declared);
    assert_eq!(keys_with(&t, "ymd", "deleted"), texts([2]));
}

/// Item 13: values far out of range fail their own rows only: the target is reached, its
/// normal rows swept, and the targets after it too.
#[test]
fn extreme_values_never_stop_a_target() {
    let pg = PgCluster::start();
    let mut db = pg.create_db("app");
    db.batch_execute(
        "CREATE TABLE per_row (id int PRIMARY KEY, created_at timestamptz NOT NULL, retention_days integer);
         INSERT INTO per_row VALUES
           (1, now() - interval '40 days', 1000000000),
           (2, now() - interval '40 days', NULL),
           (3, now() - interval '1 day', NULL),
           (4, now() - interval '40 days', 10),
           (5, now() - interval '40 days', 2147483647);
         CREATE TABLE epoch (id int PRIMARY KEY, created_at bigint NOT NULL);
         INSERT INTO epoch VALUES
           (1, 9000000000000000000),
           (2, extract(epoch FROM now() - interval '40 days')::bigint),
           (3, extract(epoch FROM now() - interval '1 day')::bigint),
           (4, -9000000000000000000);
         CREATE TABLE after (id int PRIMARY KEY, created_at timestamptz NOT NULL);
         INSERT INTO after VALUES (1, now() - interval '40 days'), (2, now());",
    )
    .unwrap();
    let url = pg.url("app");
    let dir = Tmp::new("pgsafe-extreme");
    let cfg = config(
        &dir,
        "lethe.toml",
        &[
            target(
                "per_row",
                &url,
                "per_row",
                "\"id\"",
                "retention_days = \"retention_days\"",
            ),
            target("epoch", &url, "epoch", "\"id\"", ""),
            target("after", &url, "after", "\"id\"", ""),
        ],
    );
    let r = lethe_run(&cfg, &["check", "--json"]);
    assert_eq!(r.code, Some(0), "{}", all(&r));
    let report = r.json();
    for i in 0..3 {
        assert_eq!(report["targets"][i]["ok"], true, "{}", all(&r));
    }
    assert_eq!(report["targets"][0]["past_expiry"], 2, "{}", all(&r));
    assert_eq!(report["targets"][1]["past_expiry"], 1, "{}", all(&r));
    assert_eq!(report["targets"][1]["unreadable"], 2, "{}", all(&r));
    assert_eq!(report["targets"][2]["past_expiry"], 1, "{}", all(&r));

    let r = lethe_run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}", all(&r));
    assert!(!r.stderr.contains("out of range"), "{}", all(&r));
    let report = r.json();
    for i in 0..3 {
        assert!(report["targets"][i]["error"].is_null(), "{}", all(&r));
    }
    assert_eq!(ids(&mut db, "per_row"), vec![1, 3, 5]);
    assert_eq!(ids(&mut db, "epoch"), vec![1, 3, 4]);
    assert_eq!(ids(&mut db, "after"), vec![2]);
    let t = trail(&cfg);
    assert_eq!(keys_with(&t, "per_row", "deleted"), texts([2, 4]));
    assert_eq!(keys_with(&t, "per_row", "failed"), texts([1, 5]));
    assert_eq!(keys_with(&t, "epoch", "deleted"), texts([2]));
    assert_eq!(keys_with(&t, "epoch", "failed"), texts([1, 4]));
    assert_eq!(keys_with(&t, "after", "deleted"), texts([1]));
    let finished = t
        .iter()
        .filter(|e| e["action"] == "sweep_finished")
        .map(|e| e["detail"].as_str().unwrap())
        .collect::<Vec<_>>();
    assert!(
        finished.iter().all(|d| !d.contains("error=")),
        "{finished:?}"
    );
}

/// Review of the fixes, 2: under a nondeterministic collation 'ZZ' equals 'zz', so a scan
/// that resumed with `key > last` skipped a row at a page boundary and an erasure said
/// "completed" with the row still there. Keys are now compared as bytes.
#[test]
fn keys_under_a_case_insensitive_collation_are_each_named_and_never_skipped() {
    let pg = PgCluster::start();
    let mut db = pg.create_db("app");
    db.batch_execute(
        "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         CREATE TABLE logs (k text COLLATE ci, user_id text, created_at timestamptz);
         CREATE UNIQUE INDEX logs_k ON logs (k COLLATE \"C\");
         INSERT INTO logs VALUES ('a', 'u1', now() - interval '40 days'),
           ('A', 'u2', now() - interval '40 days'), ('b', 'u1', now() - interval '40 days'),
           ('zz', 'u1', now()), ('ZZ', 'u1', now());",
    )
    .unwrap();
    let dir = Tmp::new("pgsafe-ci");
    let cfg = config(
        &dir,
        "lethe.toml",
        &[target(
            "logs",
            &pg.url("app"),
            "logs",
            "\"k\"",
            "subject = \"user_id\"",
        )],
    );
    let r = lethe_run(&cfg, &["sweep", "--apply", "--json", "--batch-size", "1"]);
    assert_eq!(r.code, Some(0), "{}", all(&r));
    assert_eq!(r.json()["targets"][0]["deleted"], 3, "{}", all(&r));
    assert_eq!(keys(&mut db, "logs", "k COLLATE \"C\""), vec!["ZZ", "zz"]);
    let r = lethe_run(&cfg, &["erase", "--subject", "u1", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}", all(&r));
    assert!(
        keys(&mut db, "logs", "k COLLATE \"C\"").is_empty(),
        "both zz and ZZ erased"
    );
}

/// Review of the fixes, 3 and 4: a second target on a partition (or an inheritance child)
/// of a table another target sweeps bypassed that target's holds; a table with inheritance
/// children let one key name two rows.
#[test]
fn partitions_and_inheritance_cannot_hide_a_row_from_its_holds() {
    let pg = PgCluster::start();
    let mut db = pg.create_db("app");
    db.batch_execute(
        "CREATE TABLE logs (tenant text, id int, created_at timestamptz, PRIMARY KEY (tenant, id))
           PARTITION BY LIST (tenant);
         CREATE TABLE logs_a PARTITION OF logs FOR VALUES IN ('a');
         INSERT INTO logs VALUES ('a', 1, now() - interval '40 days');
         CREATE TABLE parent (id int PRIMARY KEY, created_at timestamptz);
         CREATE TABLE child () INHERITS (parent);
         INSERT INTO parent VALUES (1, now() - interval '40 days');
         INSERT INTO child VALUES (1, now() - interval '40 days');",
    )
    .unwrap();
    let dir = Tmp::new("pgsafe-parts");
    let url = pg.url("app");
    let cfg = config(
        &dir,
        "lethe.toml",
        &[
            target("all", &url, "logs", "[\"tenant\", \"id\"]", ""),
            target("part_a", &url, "logs_a", "[\"tenant\", \"id\"]", ""),
        ],
    );
    let r = lethe_run(&cfg, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(2), "{}", all(&r));
    assert!(
        r.stderr.contains("partition or inheritance child"),
        "{}",
        all(&r)
    );
    assert_eq!(keys(&mut db, "logs", "id::text"), vec!["1"]);

    let cfg = config(
        &dir,
        "parent.toml",
        &[target("parent", &url, "parent", "\"id\"", "")],
    );
    let r = lethe_run(&cfg, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(2), "{}", all(&r));
    assert!(r.stderr.contains("inheritance children"), "{}", all(&r));
    assert_eq!(ids(&mut db, "parent"), vec![1, 1]);
}

/// Review of the fixes, 5: keys were read as text under the database's own settings; after
/// `ALTER DATABASE … SET timezone` a timestamptz key read differently and its hold no
/// longer matched; with extra_float_digits = 0 a float key read lossily and the scan did
/// not move on.
#[test]
fn keys_read_the_same_whatever_the_database_sets() {
    let pg = PgCluster::start();
    let mut db = pg.create_db("app");
    db.batch_execute(
        "CREATE TABLE ev (k timestamptz PRIMARY KEY, created_at timestamptz);
         INSERT INTO ev VALUES ('2026-01-01 00:00:00+00', now() - interval '40 days'),
           ('2026-01-02 00:00:00+00', now() - interval '40 days');
         CREATE TABLE fl (k float8 PRIMARY KEY, created_at timestamptz);
         INSERT INTO fl VALUES (0.30000000000000004, now() - interval '40 days'),
           (0.7, now() - interval '40 days');",
    )
    .unwrap();
    let dir = Tmp::new("pgsafe-settings");
    let url = pg.url("app");
    let cfg = config(
        &dir,
        "lethe.toml",
        &[
            target("ev", &url, "ev", "\"k\"", ""),
            target("fl", &url, "fl", "\"k\"", ""),
        ],
    );
    let h = lethe_run(
        &cfg,
        &[
            "hold",
            "add",
            "--target",
            "ev",
            "--key",
            "2026-01-01 00:00:00+00",
            "--case",
            "C",
            "--reason",
            "r",
        ],
    );
    assert_eq!(h.code, Some(0), "{}", all(&h));
    db.batch_execute(
        "ALTER DATABASE app SET timezone = 'Asia/Kolkata'; ALTER DATABASE app SET extra_float_digits = 0;
         ALTER DATABASE app SET default_transaction_isolation = 'serializable';",
    )
    .unwrap();
    let started = Instant::now();
    let r = lethe_run(&cfg, &["sweep", "--apply", "--json", "--batch-size", "1"]);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(r.code, Some(0), "{}", all(&r));
    let mut fresh = pg.client("app");
    assert_eq!(
        keys(
            &mut fresh,
            "ev",
            "to_char(k AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        ),
        vec!["2026-01-01"],
        "the held row is kept"
    );
    assert!(
        keys(&mut fresh, "fl", "k").is_empty(),
        "both float keys deleted"
    );
}
