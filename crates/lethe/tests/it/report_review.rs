//! What a review of `lethe report` broke: a target that cannot be counted, a tampered trail,
//! a reconciliation diluted by what no sweep has seen, period bounds on fractional seconds,
//! requests not yet due, deletions after a hold, unreadable items, dry runs' backlog.

use rusqlite::Connection;
use serde_json::Value;

use crate::{Tmp, has_failpoints, run_env};

const CONFIG: &str = r#"
[state]
url = "sqlite://state.db"

[categories.logs]
retention = "5d"
owner = "platform-sre"

[erasure]
deadline = "30d"

[[targets]]
name = "logs"
type = "sql"
url = "sqlite://app.db"
table = "logs"
category = "logs"
key = "id"
created_at = "created_at"
subject = "user_id"

[[targets]]
name = "other"
type = "sql"
url = "sqlite://app.db"
table = "other"
category = "logs"
key = "id"
created_at = "created_at"
subject = "user_id"
"#;

struct Case {
    dir: Tmp,
}

impl Case {
    /// `logs` with `old` rows 20 days old and `new` rows made now; `other` likewise.
    fn new(name: &str, old: i64, new: i64) -> Case {
        assert!(
            has_failpoints(),
            "this test needs the tests' build: --features lethe/failpoints (scripts/test)"
        );
        let dir = Tmp::new(name);
        std::fs::write(dir.path("lethe.toml"), CONFIG).unwrap();
        let c = Connection::open(dir.path("app.db")).unwrap();
        c.execute_batch(
            "CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT, user_id TEXT);
             CREATE TABLE other (id INTEGER PRIMARY KEY, created_at TEXT, user_id TEXT);",
        )
        .unwrap();
        for table in ["logs", "other"] {
            for i in 0..old {
                c.execute(
                    &format!("INSERT INTO {table} (id, created_at, user_id) VALUES (?1, '2026-10-01T00:00:00Z', ?2)"),
                    rusqlite::params![i + 1, format!("u{}", i % 3)],
                )
                .unwrap();
            }
            for i in 0..new {
                c.execute(
                    &format!("INSERT INTO {table} (id, created_at, user_id) VALUES (?1, '2026-10-29T00:00:00Z', ?2)"),
                    rusqlite::params![old + i + 1, format!("u{}", i % 3)],
                )
                .unwrap();
            }
        }
        let case = Case { dir };
        let r = case.run("2026-10-01T00:00:00Z", &["init"]);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        case
    }
    fn run(&self, now: &str, args: &[&str]) -> crate::Run {
        run_env(
            &self.dir.path("lethe.toml"),
            &[("LETHE_TEST_NOW", now)],
            args,
        )
    }
    fn report(&self, now: &str, args: &[&str]) -> Value {
        let mut a = vec!["--json", "report"];
        a.extend_from_slice(args);
        let r = self.run(now, &a);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    }
    fn app(&self) -> Connection {
        Connection::open(self.dir.path("app.db")).unwrap()
    }
}

fn kpi<'a>(r: &'a Value, id: &str) -> &'a Value {
    r["kpis"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap_or_else(|| panic!("no KPI {id}: {r}"))
}

fn target<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == name)
        .unwrap()
}

const NOW: &str = "2026-11-01T12:00:00Z";

#[test]
fn a_target_that_cannot_be_counted_is_never_shown_met() {
    let c = Case::new("report-uncounted", 50, 5);
    // nothing swept: 50 items per target > 7 d past expiry; then `other` goes away
    let before = c.report(NOW, &["--reconcile-sample", "0"]);
    assert_eq!(kpi(&before, "overdue_7d")["value"], 100.0);
    c.app()
        .execute_batch("ALTER TABLE other RENAME TO other_gone")
        .unwrap();
    // `logs` cleaned: only the uncounted target could still hold overdue items
    let r = c.run(
        NOW,
        &["sweep", "--apply", "--no-progress", "--target", "logs"],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let after = c.report(NOW, &["--reconcile-sample", "0"]);
    assert!(target(&after, "other")["error"].is_string(), "{after}");
    let k = kpi(&after, "overdue_7d");
    assert_eq!(k["value"], 0.0);
    assert_eq!(
        k["pass"], false,
        "an uncounted target cannot be shown met: {k}"
    );
    assert!(k["method"].as_str().unwrap().contains("other"), "{k}");
    assert_eq!(after["all_met"], false);
    let fixes = after["remediation"].as_array().unwrap();
    assert!(
        fixes.iter().any(|f| f["subject"] == "other"
            && f["text"].as_str().unwrap().contains("could not be counted")),
        "{fixes:?}"
    );
    // the group holding it is not met either; the group without it is
    let by_target = after["groups"]["by_target"].as_array().unwrap();
    let logs = by_target.iter().find(|g| g["name"] == "logs").unwrap();
    assert_eq!(kpi(logs, "overdue_7d")["pass"], true);
}

#[test]
fn a_tampered_trail_is_said_and_fails_the_report() {
    let c = Case::new("report-tampered", 20, 0);
    let r = c.run(NOW, &["sweep", "--apply", "--no-progress"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let clean = c.report(NOW, &["--reconcile-sample", "0"]);
    assert_eq!(kpi(&clean, "trail_verified")["pass"], true, "{clean}");
    Connection::open(c.dir.path("state.db"))
        .unwrap()
        .execute_batch(
            "UPDATE audit SET expires_at = '2026-11-01T11:00:00Z' WHERE seq = (SELECT MIN(seq) FROM audit WHERE action = 'deleted')",
        )
        .unwrap();
    let r = c.report(NOW, &["--reconcile-sample", "0"]);
    let k = kpi(&r, "trail_verified");
    assert_eq!(k["pass"], false, "{k}");
    assert!(k["display"].as_str().unwrap().contains("BROKEN"), "{k}");
    assert_eq!(r["all_met"], false);
    let md = c.run(
        NOW,
        &["report", "--format", "md", "--reconcile-sample", "0"],
    );
    assert!(md.stdout.contains("does not verify"), "{}", md.stdout);
    let text = c.run(NOW, &["report", "--reconcile-sample", "0"]);
    assert!(
        text.stdout
            .contains("WARNING: the audit trail does not verify")
    );
}

#[test]
fn reconciliation_is_not_diluted_by_what_no_sweep_has_seen() {
    let c = Case::new("report-dilute", 20, 0);
    let r = c.run(
        "2026-10-20T00:00:00Z",
        &["sweep", "--apply", "--no-progress"],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // every deleted row put back, and many expired rows no sweep has passed since
    let app = c.app();
    for i in 1..=20 {
        app.execute(
            "INSERT INTO logs (id, created_at, user_id) VALUES (?1, '2026-10-01T00:00:00Z', 'u1')",
            [i],
        )
        .unwrap();
    }
    for i in 0..3000 {
        app.execute(
            "INSERT INTO logs (id, created_at, user_id) VALUES (?1, '2026-10-20T06:00:00Z', 'u2')",
            [1000 + i],
        )
        .unwrap();
    }
    let r = c.report(NOW, &[]);
    let k = kpi(&r, "reconciliation");
    assert_eq!(k["pass"], false, "{k}");
    assert!(k["value"].as_f64().unwrap() < 0.6, "{k}");
    let rec = c.run(NOW, &["--json", "audit", "reconcile"]);
    assert_eq!(rec.code, Some(1));
    let j: Value = serde_json::from_str(&rec.stdout).unwrap();
    assert_eq!(j["targets"][0]["due_unswept"], 3000, "{j}");
}

#[test]
fn period_bounds_hold_on_fractional_seconds_and_days_are_calendar_days() {
    let c = Case::new("report-bounds", 10, 0);
    // a sweep a half second into November
    let r = c.run(
        "2026-11-01T00:00:00.5Z",
        &["sweep", "--apply", "--no-progress"],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let nov = c.report(
        "2026-11-15T00:00:00Z",
        &["--month", "2026-11", "--reconcile-sample", "0"],
    );
    let oct = c.report(
        "2026-11-15T00:00:00Z",
        &["--month", "2026-10", "--reconcile-sample", "0"],
    );
    assert_eq!(target(&nov, "logs")["figures"]["deleted"], 10);
    assert_eq!(target(&oct, "logs")["figures"]["deleted"], 0);
    assert_eq!(nov["series"]["deletions_per_day"][0]["day"], "2026-11-01");
    assert_eq!(nov["series"]["deletions_per_day"][0]["count"], 20);
    // a period starting mid-day: the day of the deletion is its label
    let mid = c.report(
        "2026-11-15T00:00:00Z",
        &[
            "--since",
            "2026-10-31T15:00:00Z",
            "--until",
            "2026-11-02T15:00:00Z",
            "--reconcile-sample",
            "0",
        ],
    );
    let days = mid["series"]["deletions_per_day"].as_array().unwrap();
    let nov1 = days.iter().find(|d| d["day"] == "2026-11-01").unwrap();
    assert_eq!(nov1["count"], 20, "{days:?}");
}

#[test]
fn requests_not_yet_due_hold_nothing_against_the_kpi() {
    let c = Case::new("report-requests", 5, 5);
    c.app()
        .execute_batch(
            "CREATE TRIGGER offline BEFORE DELETE ON other BEGIN SELECT RAISE(ABORT, 'offline'); END;",
        )
        .unwrap();
    // refused by `other`: open, 30 days to its deadline
    let r = c.run(
        "2026-11-01T01:00:00Z",
        &["erase", "--subject", "u1", "--apply"],
    );
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let rep = c.report(NOW, &["--month", "2026-11", "--reconcile-sample", "0"]);
    assert_eq!(rep["requests"]["received"], 1);
    let k = kpi(&rep, "erasure_in_time");
    assert!(k["pass"].is_null(), "not due yet: nothing to judge: {k}");
    // past its deadline it counts
    let late = c.report(
        "2026-12-05T00:00:00Z",
        &["--month", "2026-11", "--reconcile-sample", "0"],
    );
    assert_eq!(kpi(&late, "erasure_in_time")["pass"], false);
    assert_eq!(kpi(&late, "erasure_overdue")["value"], 1.0);
}

#[test]
fn a_deletion_after_a_hold_is_not_late_and_unjudged_items_are_not_failures() {
    let c = Case::new("report-hold", 3, 0);
    c.app()
        .execute(
            "INSERT INTO logs (id, created_at, user_id) VALUES (99, 'last tuesday', 'u1')",
            [],
        )
        .unwrap();
    let r = c.run(
        "2026-10-06T00:00:00Z",
        &[
            "hold", "add", "--target", "logs", "--key", "1", "--case", "C", "--reason", "r",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    for day in [
        "2026-10-06T01:00:00Z",
        "2026-10-07T01:00:00Z",
        "2026-10-08T01:00:00Z",
    ] {
        let r = c.run(
            day,
            &[
                "--json",
                "sweep",
                "--apply",
                "--no-progress",
                "--target",
                "logs",
            ],
        );
        assert_eq!(r.code, Some(1), "the unreadable row fails: {}", r.stderr);
    }
    let holds = c.run("2026-10-20T00:00:00Z", &["--json", "hold", "list"]);
    let id = serde_json::from_str::<Value>(&holds.stdout).unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c.run(
        "2026-10-20T00:00:00Z",
        &["hold", "release", &id, "--reason", "closed"],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = c.run(
        "2026-10-20T01:00:00Z",
        &["sweep", "--apply", "--no-progress", "--target", "logs"],
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let rep = c.report(
        "2026-10-21T00:00:00Z",
        &["--month", "2026-10", "--reconcile-sample", "0"],
    );
    let f = &target(&rep, "logs")["figures"];
    assert_eq!(f["deleted"], 3, "{f}");
    assert_eq!(f["deleted_after_protection"], 1, "{f}");
    assert_eq!(f["deleted_within_24h"], 2, "{f}");
    assert_eq!(f["deleted_late"], 0, "{f}");
    assert_eq!(
        f["failed"], 0,
        "the unreadable row was never attempted: {f}"
    );
    assert_eq!(f["not_judged"], 4, "{f}");
    assert_eq!(f["success_rate"], 1.0);
    // the hold, released in the period, is in the month's list of holds in force
    assert_eq!(rep["holds"].as_array().unwrap().len(), 1);
    assert!(rep["holds"][0]["released_at"].is_string());
    assert_eq!(kpi(&rep, "active_holds")["value"], 0.0);
    // dry runs draw the backlog too
    let r = c.run(
        "2026-10-21T01:00:00Z",
        &["sweep", "--no-progress", "--target", "other"],
    );
    assert!(r.code.is_some());
    let rep = c.report(
        "2026-10-22T00:00:00Z",
        &["--month", "2026-10", "--reconcile-sample", "0"],
    );
    let backlog = rep["series"]["backlog"].as_array().unwrap();
    let other = backlog.iter().find(|b| b["target"] == "other").unwrap();
    assert_eq!(other["points"][20], 3, "{other}");
}
