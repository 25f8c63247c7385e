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
