//! `lethe report`: a month of daily sweeps played with the tests' clock (`LETHE_TEST_NOW`,
//! honoured only by the failpoints build), with holds, an exception, a target that refuses
//! deletions for some days, skipped days and erasure requests (one left overdue). Every KPI
//! of `report --json` is then computed again here, independently, from the application's
//! data as the test made it and from the trail (`audit export`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use rusqlite::Connection;
use serde_json::Value;

use crate::{Tmp, has_failpoints, run_env};

const DAY: i64 = 86_400;
/// 2026-09-01T00:00:00Z.
const START: i64 = 1_788_220_800;

fn at(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).unwrap().to_string()
}

fn secs(s: &str) -> f64 {
    s.parse::<jiff::Timestamp>().unwrap().as_microsecond() as f64 / 1e6
}

struct Month {
    dir: Tmp,
    config: std::path::PathBuf,
}

impl Month {
    fn run(&self, when: i64, args: &[&str]) -> crate::Run {
        let now = at(when);
        run_env(&self.config, &[("LETHE_TEST_NOW", now.as_str())], args)
    }
    fn app(&self) -> Connection {
        Connection::open(self.dir.path("app.db")).unwrap()
    }
}

/// Windows, in days, of the two targets.
const WINDOWS: [(&str, i64); 2] = [("prompts", 3), ("logs", 5)];

fn config(dir: &Path) -> String {
    let _ = dir;
    r#"
[state]
url = "sqlite://state.db"

[categories.prompts]
retention = "3d"
owner = "ml-platform"
runbook = "https://runbooks.example/prompts"

[categories.logs]
retention = "5d"
owner = "platform-sre"

[exceptions]
max_extension = "60d"
max_renewals = 2

[erasure]
deadline = "5d"

[[targets]]
name = "prompts"
type = "sql"
url = "sqlite://app.db"
table = "prompts"
category = "prompts"
key = "id"
created_at = "created_at"
subject = "user_id"
region = "eu-west-1"
sensitivity = "confidential"

[[targets]]
name = "logs"
type = "sql"
url = "sqlite://app.db"
table = "logs"
category = "logs"
key = "id"
created_at = "created_at"
subject = "user_id"
region = "us-east-1"
owner = "obs-team"
runbook = "https://runbooks.example/logs"
"#
    .into()
}

/// Rows made on day `d` (and, for d < 0, the backlog left from August).
fn insert_day(conn: &Connection, d: i64, next_id: &mut i64) {
    for (table, _) in WINDOWS {
        let n = if d < 0 { 6 } else { 4 + (d % 3) };
        for k in 0..n {
            *next_id += 1;
            let created = START + d * DAY + k * 37 * 60 + 5;
            conn.execute(
                &format!("INSERT INTO {table} (id, created_at, user_id) VALUES (?1, ?2, ?3)"),
                rusqlite::params![*next_id, at(created), format!("u{}", *next_id % 7)],
            )
            .unwrap();
        }
    }
}

#[test]
fn a_scripted_month_gives_every_kpi_as_computed_independently() {
    if !has_failpoints() {
        panic!("this test needs the tests' build: --features lethe/failpoints (scripts/test)");
    }
    let dir = Tmp::new("report-month");
    let config = dir.path("lethe.toml");
    std::fs::write(&config, config_text(&dir.0)).unwrap();
    let m = Month { dir, config };
    {
        let c = m.app();
        c.execute_batch(
            "CREATE TABLE prompts (id INTEGER PRIMARY KEY, created_at TEXT, user_id TEXT);
             CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT, user_id TEXT);",
        )
        .unwrap();
    }
    let mut next_id = 0i64;
    insert_day(&m.app(), -20, &mut next_id);
    let r = m.run(START - DAY, &["init"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);

    let skipped: HashSet<i64> = [12, 13, 14].into();
    let logs_refuse: std::ops::Range<i64> = 18..22;
    let mut held_key = String::new();
    let mut excepted_key = String::new();
    for d in 0..30 {
        insert_day(&m.app(), d, &mut next_id);
        let day = START + d * DAY;
        if d == 1 {
            // a hold on a prompt made on day 0 (due on day 3), kept all month
            held_key = m
                .app()
                .query_row(
                    "SELECT id FROM prompts WHERE created_at >= ?1 ORDER BY id LIMIT 1",
                    [at(START)],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap()
                .to_string();
            let r = m.run(
                day + 3600,
                &[
                    "hold",
                    "add",
                    "--target",
                    "prompts",
                    "--key",
                    &held_key,
                    "--case",
                    "C-1",
                    "--reason",
                    "litigation",
                    "--by",
                    "legal",
                ],
            );
            assert_eq!(r.code, Some(0), "{}", r.stderr);
        }
        if d == 18 {
            let c = m.app();
            c.execute_batch(
                "CREATE TRIGGER offline BEFORE DELETE ON logs BEGIN SELECT RAISE(ABORT, 'storage offline'); END;",
            )
            .unwrap();
        }
        if d == logs_refuse.end {
            m.app().execute_batch("DROP TRIGGER offline").unwrap();
        }
        if d == 19 {
            // a log row due today, kept by an approved exception for 40 days (active at the
            // end of the month): the logs target refuses deletions these days, so it is
            // still there
            excepted_key = m
                .app()
                .query_row(
                    "SELECT id FROM logs WHERE created_at >= ?1 ORDER BY id LIMIT 1",
                    [at(START + 14 * DAY)],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap()
                .to_string();
            let r = m.run(
                day + 3 * 3600,
                &[
                    "exception",
                    "add",
                    "--target",
                    "logs",
                    "--key",
                    &excepted_key,
                    "--until",
                    &at(day + 40 * DAY),
                    "--owner",
                    "obs-team",
                    "--reason",
                    "incident review",
                    "--by",
                    "dpo",
                ],
            );
            assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
        }
        if !skipped.contains(&d) {
            let r = m.run(day + 6 * 3600, &["sweep", "--apply", "--no-progress"]);
            let expect = if logs_refuse.contains(&d) { 1 } else { 0 };
            assert_eq!(r.code, Some(expect), "day {d}: {}{}", r.stdout, r.stderr);
        }
        if d == 8 || d == 20 {
            // an erasure request: completed on day 8; on day 20 the logs target refuses
            // it, so it stays open and is overdue at the month's end
            let subject = if d == 8 { "u3" } else { "u4" };
            let r = m.run(day + 9 * 3600, &["erase", "--subject", subject, "--apply"]);
            assert_eq!(
                r.code,
                Some(if d == 8 { 0 } else { 1 }),
                "{}{}",
                r.stdout,
                r.stderr
            );
        }
    }
    let now = START + 30 * DAY + 3 * 3600;
    let until = START + 30 * DAY;
    let r = m.run(now, &["report", "--month", "2026-09", "--format", "json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    // `--json` is the same document
    let again = m.run(now, &["--json", "report", "--month", "2026-09"]);
    let again: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(again["kpis"], report["kpis"]);

    // ---- the trail, read here ----
    let export = m.run(now, &["audit", "export"]);
    assert_eq!(export.code, Some(0), "{}", export.stderr);
    let entries: Vec<Value> = export
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let in_period = |e: &Value| {
        let t = secs(e["decided_at"].as_str().unwrap());
        t >= START as f64 && t < until as f64
    };
    #[derive(Default, Debug)]
    struct T {
        deleted: u64,
        failed: u64,
        within: u64,
        late_deleted: u64,
        ttd: Vec<f64>,
    }
    let mut per: BTreeMap<String, T> = BTreeMap::new();
    for e in entries.iter().filter(|e| in_period(e)) {
        let t = per
            .entry(e["target"].as_str().unwrap().to_string())
            .or_default();
        match e["action"].as_str().unwrap() {
            "deleted" => {
                t.deleted += 1;
                if e["reason"] == "retention" {
                    let d = secs(e["decided_at"].as_str().unwrap())
                        - secs(e["expires_at"].as_str().unwrap());
                    if d <= 86_400.0 {
                        t.within += 1;
                    } else {
                        t.late_deleted += 1;
                    }
                    t.ttd.push(d.max(0.0));
                }
            }
            "failed" => t.failed += 1,
            _ => {}
        }
    }
    // first entry past expiry per item, for the time to detect
    let mut first: HashMap<(String, String), (f64, f64)> = HashMap::new();
    for e in &entries {
        let a = e["action"].as_str().unwrap();
        if ![
            "deleted",
            "failed",
            "would_delete",
            "held",
            "excepted",
            "in_use",
        ]
        .contains(&a)
            || e["reason"] != "retention"
            || e["expires_at"].is_null()
        {
            continue;
        }
        let k = (
            e["target"].as_str().unwrap().to_string(),
            e["item_key"].as_str().unwrap().to_string(),
        );
        let (t, x) = (
            secs(e["decided_at"].as_str().unwrap()),
            secs(e["expires_at"].as_str().unwrap()),
        );
        first.entry(k).or_insert((t, x));
    }
    let detect: Vec<f64> = first
        .values()
        .filter(|(t, _)| *t >= START as f64 && *t < until as f64)
        .map(|(t, x)| (t - x).max(0.0))
        .collect();

    // ---- the data, read here: what is present now, judged with the test's own rules ----
    #[derive(Default, Debug, PartialEq)]
    struct Now {
        items: u64,
        up_to_1d: u64,
        d1_to_7: u64,
        over_7d: u64,
        held: u64,
        excepted: u64,
        present_late: u64,
    }
    let mut present: BTreeMap<&str, Now> = BTreeMap::new();
    let nowf = now as f64;
    for (table, window) in WINDOWS {
        let c = m.app();
        let mut st = c
            .prepare(&format!("SELECT id, created_at FROM {table}"))
            .unwrap();
        let rows: Vec<(i64, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let p = present.entry(table).or_default();
        for (id, created) in rows {
            p.items += 1;
            let expires = secs(&created) + (window * DAY) as f64;
            if expires > nowf {
                continue;
            }
            let key = id.to_string();
            if table == "prompts" && key == held_key {
                p.held += 1;
                continue;
            }
            if table == "logs" && key == excepted_key {
                p.excepted += 1;
                continue;
            }
            let past = nowf - expires;
            if past > 7.0 * 86_400.0 {
                p.over_7d += 1;
            } else if past > 86_400.0 {
                p.d1_to_7 += 1;
            } else {
                p.up_to_1d += 1;
            }
            if expires + 86_400.0 <= until.min(now) as f64 {
                p.present_late += 1;
            }
        }
    }

    // ---- compare, per target ----
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    let mut all_ttd = Vec::new();
    for (name, _) in WINDOWS {
        let tf = targets.iter().find(|t| t["target"] == name).unwrap();
        let f = &tf["figures"];
        let t = per.remove(name).unwrap_or_default();
        let p = &present[name];
        assert_eq!(f["items"], p.items, "{name} items");
        assert_eq!(f["past_expiry"]["up_to_1d"], p.up_to_1d, "{name}");
        assert_eq!(f["past_expiry"]["d1_to_7"], p.d1_to_7, "{name}");
        assert_eq!(f["past_expiry"]["over_7d"], p.over_7d, "{name}");
        assert_eq!(f["held"], p.held, "{name}");
        assert_eq!(f["excepted"], p.excepted, "{name}");
        assert_eq!(f["present_late"], p.present_late, "{name}");
        assert_eq!(f["deleted"], t.deleted, "{name}");
        assert_eq!(f["failed"], t.failed, "{name}");
        assert_eq!(f["deleted_within_24h"], t.within, "{name}");
        assert_eq!(f["deleted_late"], t.late_deleted, "{name}");
        assert!(t.deleted > 0, "{name}: the month deleted nothing");
        close(
            &f["success_rate"],
            t.deleted as f64 / (t.deleted + t.failed) as f64,
        );
        close(
            &f["within_24h"],
            t.within as f64 / (t.within + t.late_deleted + p.present_late) as f64,
        );
        close(&f["time_to_delete_mean_s"], mean(&t.ttd));
        close(&f["time_to_delete_p95_s"], p95(&mut t.ttd.clone()));
        all_ttd.extend(t.ttd);
        assert!(
            f["tag_coverage"].is_null(),
            "no [tags] required: coverage is not counted"
        );
    }
    // The logs target refused deletions for days: its failures show.
    let logs = targets.iter().find(|t| t["target"] == "logs").unwrap();
    assert!(logs["figures"]["failed"].as_u64().unwrap() > 0);
    assert_eq!(logs["owner"], "obs-team", "the target's owner wins");
    let prompts = targets.iter().find(|t| t["target"] == "prompts").unwrap();
    assert_eq!(prompts["owner"], "ml-platform", "else the category's");
    assert_eq!(prompts["region"], "eu-west-1");
    assert_eq!(prompts["sensitivity"], "confidential");
    assert_eq!(prompts["runbook"], "https://runbooks.example/prompts");

    // ---- the deployment's KPIs ----
    let kpi = |id: &str| -> &Value {
        report["kpis"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .unwrap_or_else(|| panic!("no KPI {id}"))
    };
    let sum = |f: &dyn Fn(&Now) -> u64| present.values().map(f).sum::<u64>();
    assert_eq!(kpi("overdue_7d")["value"], sum(&|p| p.over_7d) as f64);
    assert_eq!(
        kpi("overdue_7d")["pass"],
        Value::Bool(sum(&|p| p.over_7d) == 0)
    );
    let deleted: u64 = targets
        .iter()
        .map(|t| t["figures"]["deleted"].as_u64().unwrap())
        .sum();
    let failed: u64 = targets
        .iter()
        .map(|t| t["figures"]["failed"].as_u64().unwrap())
        .sum();
    close(
        &kpi("deletion_success")["value"],
        deleted as f64 / (deleted + failed) as f64,
    );
    let within: u64 = targets
        .iter()
        .map(|t| t["figures"]["deleted_within_24h"].as_u64().unwrap())
        .sum();
    let late: u64 = targets
        .iter()
        .map(|t| t["figures"]["deleted_late"].as_u64().unwrap())
        .sum::<u64>()
        + sum(&|p| p.present_late);
    let w = within as f64 / (within + late) as f64;
    close(&kpi("deleted_within_24h")["value"], w);
    assert_eq!(kpi("deleted_within_24h")["pass"], Value::Bool(w > 0.99));
    assert!(w < 0.99, "the skipped days make deletions late: {w}");
    close(&kpi("time_to_delete_mean")["value"], mean(&all_ttd));
    close(
        &kpi("time_to_delete_p95")["value"],
        p95(&mut all_ttd.clone()),
    );
    close(&kpi("time_to_detect_mean")["value"], mean(&detect));
    assert_eq!(kpi("active_exceptions")["value"], 1.0);
    assert_eq!(kpi("active_exceptions")["pass"], true);
    assert_eq!(kpi("active_holds")["value"], 1.0);
    assert!(kpi("tag_coverage")["value"].is_null());
    assert!(kpi("tag_coverage")["pass"].is_null());
    // honest stores: everything recorded deleted is gone
    assert_eq!(kpi("reconciliation")["value"], 1.0);
    // erasure: two received in the month, one completed in time, one open past its deadline
    let requests = m.run(now, &["--json", "erase", "list"]);
    assert_eq!(requests.code, Some(0), "{}", requests.stderr);
    assert_eq!(report["requests"]["received"], 2);
    assert_eq!(report["requests"]["completed_in_time"], 1);
    assert_eq!(report["requests"]["overdue"].as_array().unwrap().len(), 1);
    assert_eq!(kpi("erasure_overdue")["value"], 1.0);
    assert_eq!(kpi("erasure_overdue")["pass"], false);
    close(&kpi("erasure_in_time")["value"], 0.5);
    // runs: the trail's sweep_finished entries with an error, and misfires
    let errored = entries
        .iter()
        .filter(|e| {
            in_period(e)
                && e["action"] == "sweep_finished"
                && e["detail"].as_str().unwrap().contains(" error=")
        })
        .count();
    assert_eq!(kpi("failed_runs")["value"], errored as f64);
    assert_eq!(kpi("misfires")["value"], 0.0);
    // every KPI says its period and how it was computed
    for k in report["kpis"].as_array().unwrap() {
        assert!(!k["method"].as_str().unwrap().is_empty(), "{k}");
        let period = k["period"].as_str().unwrap();
        assert!(period == "2026-09" || period == "now", "{k}");
    }
    assert_eq!(report["period"]["since"], "2026-09-01T00:00:00Z");
    assert_eq!(report["period"]["until"], "2026-10-01T00:00:00Z");
    assert_eq!(report["all_met"], false);

    // ---- groups: each the sum of its targets ----
    let group = |dim: &str, name: &str| -> Value {
        report["groups"][dim]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .unwrap_or_else(|| panic!("no {dim} group {name}"))
            .clone()
    };
    assert_eq!(
        group("by_category", "logs")["figures"],
        logs["figures"],
        "one target, one category"
    );
    assert_eq!(
        group("by_region", "eu-west-1")["figures"],
        prompts["figures"]
    );
    assert_eq!(group("by_owner", "obs-team")["targets"][0], "logs");
    assert_eq!(
        group("by_sensitivity", "unset")["figures"]["deleted"],
        logs["figures"]["deleted"]
    );

    // ---- the series: deletions per day add up to the month's deletions ----
    let per_day = report["series"]["deletions_per_day"].as_array().unwrap();
    assert_eq!(per_day.len(), 30);
    let total: u64 = per_day.iter().map(|d| d["count"].as_u64().unwrap()).sum();
    assert_eq!(total, deleted);
    for d in &skipped {
        assert_eq!(per_day[*d as usize]["count"], 0, "day {d} had no sweep");
    }
    // the registers
    assert_eq!(report["holds"][0]["item_key"], held_key.as_str());
    let excs = report["exceptions"].as_array().unwrap();
    assert_eq!(excs.len(), 1);
    assert_eq!(excs[0]["owner"], "obs-team");
    assert_eq!(excs[0]["reason"], "incident review");
    // what to fix names the owner and runbook of what fails
    let fixes = report["remediation"].as_array().unwrap();
    assert!(
        fixes.iter().any(|f| f["kpi"] == "deleted_within_24h"
            && f["subject"] == "logs"
            && f["owner"] == "obs-team"
            && f["runbook"] == "https://runbooks.example/logs"),
        "{fixes:#?}"
    );
    assert!(fixes.iter().any(|f| f["kpi"] == "erasure_overdue"));

    // ---- the other formats say the same ----
    let md = m.run(now, &["report", "--month", "2026-09", "--format", "md"]);
    assert_eq!(md.code, Some(0), "{}", md.stderr);
    assert!(md.stdout.contains("# Lethe compliance report: 2026-09"));
    assert!(md.stdout.contains("## Exception register"));
    assert!(md.stdout.contains("incident review"));
    assert!(md.stdout.contains("## Remediation"));
    let csv = m.run(now, &["report", "--month", "2026-09", "--format", "csv"]);
    assert_eq!(csv.code, Some(0), "{}", csv.stderr);
    let mut reader = ::csv::Reader::from_reader(csv.stdout.as_bytes());
    let rows: Vec<::csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let success = rows
        .iter()
        .find(|r| &r[0] == "kpi" && &r[3] == "deletion_success")
        .unwrap();
    close(
        &Value::from(success[4].parse::<f64>().unwrap()),
        deleted as f64 / (deleted + failed) as f64,
    );
    let out = m.dir.path("report.html");
    let html = m.run(
        now,
        &[
            "report",
            "--month",
            "2026-09",
            "--format",
            "html",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(html.code, Some(0), "{}", html.stderr);
    assert!(std::fs::read_to_string(&out).unwrap().contains("<html"));
}

fn config_text(dir: &Path) -> String {
    config(dir)
}

fn mean(v: &[f64]) -> f64 {
    assert!(!v.is_empty());
    v.iter().sum::<f64>() / v.len() as f64
}

fn p95(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = ((0.95 * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn close(got: &Value, want: f64) {
    let g = got
        .as_f64()
        .unwrap_or_else(|| panic!("expected {want}, got {got}"));
    assert!(
        (g - want).abs() <= 1e-6 * want.abs().max(1.0),
        "expected {want}, got {g}"
    );
}

#[test]
fn a_bad_period_is_refused_naming_the_flag() {
    let dir = Tmp::new("report-args");
    let config = dir.path("lethe.toml");
    std::fs::write(&config, config_text(&dir.0)).unwrap();
    Connection::open(dir.path("app.db"))
        .unwrap()
        .execute_batch(
            "CREATE TABLE prompts (id INTEGER PRIMARY KEY, created_at TEXT, user_id TEXT);
             CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT, user_id TEXT);",
        )
        .unwrap();
    for (args, says) in [
        (vec!["report", "--month", "2026-13"], "--month"),
        (vec!["report", "--month", "26-1"], "--month"),
        (vec!["report", "--since", "yesterday"], "--since"),
        (
            vec!["report", "--since", "2026-11-02", "--until", "2026-11-01"],
            "empty",
        ),
    ] {
        let r = run_env(&config, &[], &args);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stdout);
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
    }
    // an empty state reports zeros, not errors
    let r = run_env(&config, &[], &["report", "--format", "json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["targets"].as_array().unwrap().len(), 2);
}
