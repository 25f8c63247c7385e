//! Issue 10, item 15: a `-infinity` timestamp is no date; the item is kept and reported as
//! failed, and the failure says `-infinity` (it once said "empty"). On SQLite (text) and on
//! PostgreSQL (typed `'-infinity'`), in created_at and in expires_at.

use crate::pg::PgCluster;
use crate::*;

/// The failed entries of the target `logs`, by item key: their detail.
pub fn failures(cfg: &std::path::Path, env: &[(&str, &str)]) -> Vec<(String, String)> {
    let r = run_env(cfg, env, &["audit", "log", "--target", "logs", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "failed")
        .map(|e| {
            (
                e["item_key"].as_str().unwrap().to_string(),
                e["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn assert_says_minus_infinity(failed: &[(String, String)], keys: &[&str], what: &str) {
    let got: Vec<&str> = failed.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(got, keys, "{what}: {failed:#?}");
    for (k, detail) in failed {
        assert!(detail.contains("-infinity"), "{what}, key {k}: {detail}");
        assert!(!detail.contains("empty"), "{what}, key {k}: {detail}");
    }
}

#[test]
fn minus_infinity_in_sqlite_text_is_reported_as_such() {
    let d = Tmp::new("minus-infinity-sqlite");
    let c = rusqlite::Connection::open(d.path("ai.db")).unwrap();
    c.execute_batch(&format!(
        "CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT, expires_at TEXT);
         INSERT INTO logs VALUES (1, '-infinity', NULL), (2, '{old}', '-infinity'),
                                 (3, '{old}', NULL), (4, 'infinity', NULL);",
        old = naive(40 * DAY)
    ))
    .unwrap();
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        "[state]\nurl = \"sqlite://state.db\"\n[categories.log]\nretention = \"30d\"\n\
         [[targets]]\nname = \"logs\"\ntype = \"sql\"\nurl = \"sqlite://ai.db\"\ntable = \"logs\"\n\
         category = \"log\"\nkey = \"id\"\ncreated_at = \"created_at\"\nexpires_at = \"expires_at\"\n",
    )
    .unwrap();
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["targets"][0]["failed"], 2);
    assert_says_minus_infinity(&failures(&cfg, &[]), &["1", "2"], "sqlite");
    assert_eq!(ids(&c, "logs"), vec![1, 2, 4]);
    // Declared as ISO-8601 text, the same.
    let text = std::fs::read_to_string(&cfg).unwrap()
        + "created_at_format = \"iso8601\"\nexpires_at_format = \"iso8601\"\n";
    std::fs::write(&cfg, text).unwrap();
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let failed = failures(&cfg, &[]);
    assert_says_minus_infinity(&failed[2..], &["1", "2"], "sqlite, iso8601");
    assert_eq!(ids(&c, "logs"), vec![1, 2, 4]);
}

#[test]
fn minus_infinity_in_postgres_timestamps_is_reported_as_such() {
    let pg = PgCluster::start();
    let mut db = pg.create_db("app");
    let env = [("LETHE_TEST_AUDIT_KEY", "a key of sixteen bytes or more")];
    for ty in ["timestamptz", "timestamp", "date"] {
        db.batch_execute(&format!(
            "DROP TABLE IF EXISTS logs;
             CREATE TABLE logs (id int PRIMARY KEY, created_at {ty}, expires_at {ty});
             INSERT INTO logs VALUES (1, '-infinity', NULL),
                                     (2, (now() - interval '40 days')::{ty}, '-infinity'),
                                     (3, (now() - interval '40 days')::{ty}, NULL),
                                     (4, 'infinity', NULL);"
        ))
        .unwrap();
        let d = Tmp::new("minus-infinity-pg");
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
        let r = run_env(&cfg, &env, &["sweep", "--apply", "--json"]);
        assert_eq!(r.code, Some(1), "{ty}: {}{}", r.stdout, r.stderr);
        assert_eq!(r.json()["targets"][0]["failed"], 2, "{ty}");
        assert_says_minus_infinity(&failures(&cfg, &env), &["1", "2"], ty);
        let left: Vec<i32> = db
            .query("SELECT id FROM logs ORDER BY id", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(left, vec![1, 2, 4], "{ty}");
        // Declared as ISO-8601, the same: `infinity` is never, `-infinity` no date.
        let text = std::fs::read_to_string(&cfg).unwrap().replace(
            "expires_at = \"expires_at\"\n",
            "expires_at = \"expires_at\"\ncreated_at_format = \"iso8601\"\nexpires_at_format = \"iso8601\"\n",
        );
        std::fs::write(&cfg, text).unwrap();
        let r = run_env(&cfg, &env, &["sweep", "--apply", "--json"]);
        assert_eq!(r.code, Some(1), "{ty}: {}{}", r.stdout, r.stderr);
        let failed = failures(&cfg, &env);
        assert_says_minus_infinity(&failed[2..], &["1", "2"], &format!("{ty}, iso8601"));
    }
}
