//! Typed PostgreSQL timestamps (`timestamp`, `timestamptz`) are read in binary, not as text
//! the server formats: each must judge exactly as its text did. Ages on both sides of the
//! window, an item's own `expires_at`, a placeholder before 1900, a date past year 9999,
//! and a `timestamp` read as UTC whatever the database's time zone.

use crate::pg::PgCluster;
use crate::*;

fn left(db: &mut postgres::Client) -> Vec<i32> {
    db.query("SELECT id FROM logs ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn typed_timestamps_read_in_binary_judge_as_their_text_did() {
    let pg = PgCluster::start();
    let admin = pg.create_db("app");
    drop(admin);
    // Far from UTC: a `timestamp` read in the session's zone would be 14 hours off.
    pg.client("postgres")
        .batch_execute("ALTER DATABASE app SET timezone = 'Pacific/Kiritimati'")
        .unwrap();
    let env = [("LETHE_TEST_AUDIT_KEY", "a key of sixteen bytes or more")];
    for ty in ["timestamptz", "timestamp"] {
        // `now` in UTC, as the column's type holds it.
        let utc = if ty == "timestamp" {
            "(now() AT TIME ZONE 'UTC')"
        } else {
            "now()"
        };
        let mut db = pg.client("app");
        db.batch_execute(&format!(
            "DROP TABLE IF EXISTS logs;
             CREATE TABLE logs (id int PRIMARY KEY, created_at {ty}, expires_at {ty});
             INSERT INTO logs VALUES
               (1, {utc} - interval '40 days', NULL),
               (2, {utc} - interval '20 days', NULL),
               (3, {utc} - interval '30 days' - interval '6 hours', NULL),
               (4, {utc} - interval '30 days' + interval '6 hours', NULL),
               (5, {utc} - interval '1 day', {utc} - interval '1 hour'),
               (6, {utc} - interval '400 days', {utc} + interval '1 day'),
               (7, '0001-01-01 00:00:00', NULL),
               (8, '20000-01-01 00:00:00', NULL),
               (9, {utc} - interval '40 days' + interval '0.000001 seconds', NULL);"
        ))
        .unwrap();
        let d = Tmp::new("pg-instants");
        let cfg = d.path("lethe.toml");
        std::fs::write(
            &cfg,
            format!(
                "[state]\nurl = \"sqlite://state.db\"\n[categories.log]\nretention = \"30d\"\n\
                 [[targets]]\nname = \"logs\"\ntype = \"sql\"\nurl = \"{}\"\ntable = \"logs\"\n\
                 category = \"log\"\nkey = \"id\"\ncreated_at = \"created_at\"\nexpires_at = \"expires_at\"\n\
                 [audit]\nkey_env = \"LETHE_TEST_AUDIT_KEY\"\n",
                pg.url("app")
            ),
        )
        .unwrap();
        let init = run_env(&cfg, &env, &["init"]);
        assert_eq!(init.code, Some(0), "{ty}: {}", init.stderr);
        // A dry run reads without row versions; it judges the same (found: the due and the
        // unreadable).
        let r = run_env(&cfg, &env, &["sweep", "--json"]);
        assert_eq!(r.code, Some(1), "{ty}: {}{}", r.stdout, r.stderr);
        assert_eq!(r.json()["targets"][0]["found"], 5, "{ty}: {}", r.stdout);
        let r = run_env(&cfg, &env, &["sweep", "--apply", "--json"]);
        assert_eq!(r.code, Some(1), "{ty}: {}{}", r.stdout, r.stderr);
        let t = &r.json()["targets"][0];
        assert_eq!(t["deleted"], 4, "{ty}: {}", r.stdout);
        assert_eq!(t["failed"], 1, "{ty}: {}", r.stdout);
        assert_eq!(left(&mut db), vec![2, 4, 6, 7, 8], "{ty}");
        // The placeholder is reported as one, by its date, and kept.
        let failed = crate::infinity::failures(&cfg, &env);
        // Once by the dry run, once by the apply.
        assert_eq!(failed.len(), 2, "{ty}: {failed:?}");
        for (key, why) in &failed {
            assert_eq!(key, "7", "{ty}");
            assert!(
                why.contains("0001-01-01") && why.contains("before 1900"),
                "{ty}: {why}"
            );
        }
        // The deletion's entry says the item's own expires_at decided it.
        let log = run_env(&cfg, &env, &["audit", "log", "--target", "logs", "--json"]);
        let entries = log.json();
        let e1 = entries
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "deleted" && e["item_key"] == "5")
            .unwrap_or_else(|| panic!("{ty}: no deleted entry for 5"));
        assert_eq!(e1["window"], "expires_at", "{ty}: {e1}");
    }
}

/// A column is classed by the type it really holds: an array of timestamps is no
/// timestamp (refused by check, as any column that cannot hold one), and a domain is its
/// base type whatever its name (one named like a timestamp over a number holds unix
/// seconds; one named otherwise over timestamptz holds instants).
#[test]
fn arrays_and_domains_are_classed_by_what_they_hold() {
    let pg = PgCluster::start();
    let mut db = pg.create_db("app");
    let env = [("LETHE_TEST_AUDIT_KEY", "a key of sixteen bytes or more")];
    db.batch_execute(
        "CREATE DOMAIN timestamp_s AS bigint;
         CREATE DOMAIN moment AS timestamptz;
         CREATE TABLE arr (id int PRIMARY KEY, created_at timestamptz[]);
         INSERT INTO arr VALUES (1, ARRAY[now() - interval '40 days']);
         CREATE TABLE secs (id int PRIMARY KEY, created_at timestamp_s);
         INSERT INTO secs VALUES (1, extract(epoch FROM now() - interval '40 days')::bigint),
                                 (2, extract(epoch FROM now() - interval '20 days')::bigint);
         CREATE TABLE mom (id int PRIMARY KEY, created_at moment);
         INSERT INTO mom VALUES (1, now() - interval '40 days'), (2, now() - interval '20 days');",
    )
    .unwrap();
    let config = |d: &Tmp, table: &str| {
        let cfg = d.path("lethe.toml");
        std::fs::write(
            &cfg,
            format!(
                "[state]\nurl = \"sqlite://state.db\"\n[categories.log]\nretention = \"30d\"\n\
                 [[targets]]\nname = \"logs\"\ntype = \"sql\"\nurl = \"{}\"\ntable = \"{table}\"\n\
                 category = \"log\"\nkey = \"id\"\ncreated_at = \"created_at\"\n\
                 [audit]\nkey_env = \"LETHE_TEST_AUDIT_KEY\"\n",
                pg.url("app")
            ),
        )
        .unwrap();
        let init = run_env(&cfg, &env, &["init"]);
        assert_eq!(init.code, Some(0), "{table}: {}", init.stderr);
        cfg
    };
    let d = Tmp::new("pg-arr");
    let cfg = config(&d, "arr");
    let r = run_env(&cfg, &env, &["check"]);
    assert_ne!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("created_at"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    let r = run_env(&cfg, &env, &["sweep", "--apply", "--json"]);
    assert_ne!(r.code, Some(0));
    let left: i64 = db
        .query_one("SELECT count(*) FROM arr", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 1);
    for table in ["secs", "mom"] {
        let d = Tmp::new("pg-domain");
        let cfg = config(&d, table);
        let r = run_env(&cfg, &env, &["sweep", "--apply", "--json"]);
        assert_eq!(r.code, Some(0), "{table}: {}{}", r.stdout, r.stderr);
        assert_eq!(
            r.json()["targets"][0]["deleted"],
            1,
            "{table}: {}",
            r.stdout
        );
        let left: Vec<i32> = db
            .query(&format!("SELECT id FROM {table} ORDER BY id"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(left, vec![2], "{table}");
    }
}
