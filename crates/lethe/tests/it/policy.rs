//! Issue 15: the legal minimum (`min`) and sensitivity caps (`[sensitivity.LEVEL] max`, a
//! target's `sensitivity`, a row's `sensitivity_column`), end to end on SQLite and
//! PostgreSQL: what a sweep deletes, the rule each entry names, what an erasure does under
//! the minimum, and the configs refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::pg::{PgCluster, lethe_pg, pg_ids};
use crate::*;

/// Rows: (id, age in days, level, expires_at in days from now (negative: past)); the policy
/// below: window 30d, legal minimum 5d, restricted capped at 7d, confidential at 14d.
const ROWS: [(i64, i64, Option<&str>, Option<i64>); 11] = [
    (1, 6, Some("restricted"), None),    // under its cap: kept
    (2, 8, Some("restricted"), None),    // past its cap: cap 7d
    (3, 15, Some("confidential"), None), // cap 14d
    (4, 13, Some("confidential"), None), // kept
    (5, 12, None, None),                 // no level, window 30d: kept
    (6, 8, Some("Top-Secret"), None),    // unknown: the strictest cap, 7d
    (7, 4, None, Some(-1)),              // its own expiry passed, under the minimum: kept
    (8, 6, None, Some(-2)),              // past both: the minimum set the expiry
    (9, 40, None, None),                 // window 30d
    (10, 2, Some("restricted"), None),   // young: kept
    (11, 6, Some(" RESTRICTED "), None), // a known level in another case and spacing: kept
];

/// What each deleted row's entry must name as its rule.
fn expected() -> BTreeMap<String, &'static str> {
    [
        ("2", "cap 7d (sensitivity restricted)"),
        ("3", "cap 14d (sensitivity confidential)"),
        (
            "6",
            "cap 7d (unknown sensitivity level, read as the strictest)",
        ),
        ("8", "min 5d (legal minimum)"),
        ("9", "30d"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn policy(state_url: &str, data_url: &str, table: &str, extra: &str) -> String {
    format!(
        r#"[state]
url = "{state_url}"

[categories.prompts]
retention = "30d"
min = "5d"

[sensitivity.restricted]
max = "7d"

[sensitivity.confidential]
max = "14d"

[[targets]]
name = "chats"
type = "sql"
url = "{data_url}"
table = "{table}"
category = "prompts"
key = "id"
created_at = "created_at"
expires_at = "expires_at"
subject = "user_id"
sensitivity_column = "level"
{extra}
[audit]
key_env = "LETHE_TEST_AUDIT_KEY"
"#
    )
}

fn deleted_rules(cfg: &Path) -> BTreeMap<String, String> {
    let r = lethe_pg(cfg, &["audit", "export", "--format", "jsonl"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    r.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["action"] == "deleted")
        .map(|e| {
            (
                e["item_key"].as_str().unwrap_or_default().to_string(),
                e["window"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn sqlite_table(d: &Tmp) -> Connection {
    let c = Connection::open(d.path("app.db")).unwrap();
    c.execute_batch(
        "CREATE TABLE chats (id INTEGER PRIMARY KEY, user_id TEXT, created_at TEXT NOT NULL, expires_at TEXT, level TEXT, prompt TEXT);",
    )
    .unwrap();
    for (id, age, level, exp) in ROWS {
        c.execute(
            "INSERT INTO chats VALUES (?1, ?2, ?3, ?4, ?5, 'hello')",
            rusqlite::params![
                id,
                format!("u{id}"),
                naive(age * DAY),
                exp.map(|e| naive(-e * DAY)),
                level
            ],
        )
        .unwrap();
    }
    c
}

const KEPT: [i64; 6] = [1, 4, 5, 7, 10, 11];

#[test]
fn the_minimum_and_the_caps_decide_what_a_sqlite_sweep_deletes_each_entry_naming_its_rule() {
    let d = Tmp::new("policy-sqlite");
    let conn = sqlite_table(&d);
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        policy("sqlite://state.db", "sqlite://app.db", "chats", ""),
    )
    .unwrap();
    // The dry run finds exactly the rows the rules make due, and deletes nothing.
    let r = lethe_pg(&cfg, &["sweep", "--json", "--no-progress"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["targets"][0]["found"], 5, "{}", r.stdout);
    // The level nobody defined is reported, by the name the item gave.
    assert_eq!(
        r.json()["targets"][0]["unknown_levels"],
        serde_json::json!({"Top-Secret": 1}),
        "{}",
        r.stdout
    );
    let text = lethe_pg(&cfg, &["sweep", "--no-progress"]);
    assert!(
        text.stdout.contains("sensitivity level nobody defined")
            || text.stderr.contains("sensitivity level nobody defined"),
        "{}{}",
        text.stdout,
        text.stderr
    );
    assert_eq!(ids(&conn, "chats").len(), ROWS.len());

    let r = lethe_pg(&cfg, &["sweep", "--apply", "--json", "--no-progress"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&conn, "chats"), KEPT.to_vec());
    let rules = deleted_rules(&cfg);
    let want = expected();
    assert_eq!(
        rules.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, rule) in &want {
        assert_eq!(rules[k], *rule, "row {k}");
    }

    // An erasure reaches a row still under the legal minimum, and says it overrode it.
    let r = lethe_pg(&cfg, &["erase", "--subject", "u7", "--apply", "--json"]);
    assert!(matches!(r.code, Some(0)), "{}{}", r.stdout, r.stderr);
    assert!(!ids(&conn, "chats").contains(&7));
    let rules = deleted_rules(&cfg);
    assert!(
        rules["7"].contains("overrides the legal minimum 5d"),
        "{rules:?}"
    );
    let v = lethe_pg(&cfg, &["audit", "verify"]);
    assert_eq!(v.code, Some(0), "{}{}", v.stdout, v.stderr);
}

#[test]
fn the_same_policy_on_postgres_deletes_the_same_rows() {
    let pg = PgCluster::start();
    let mut data = pg.create_db("app");
    pg.create_db("lethe_state");
    data.batch_execute(
        "CREATE TABLE chats (id bigint PRIMARY KEY, user_id text, created_at timestamptz NOT NULL, expires_at timestamptz, level text, prompt text)",
    )
    .unwrap();
    for (id, age, level, exp) in ROWS {
        data.execute(
            "INSERT INTO chats VALUES ($1, $2, now() - make_interval(days => $3), now() + make_interval(days => $4), $5, 'hello')",
            &[&id, &format!("u{id}"), &(age as i32), &(exp.unwrap_or(0) as i32), &level],
        )
        .unwrap();
        if exp.is_none() {
            data.execute("UPDATE chats SET expires_at = NULL WHERE id = $1", &[&id])
                .unwrap();
        }
    }
    let cfg = pg.dir().join("lethe.toml");
    std::fs::write(
        &cfg,
        policy(
            &pg.url("lethe_state"),
            &pg.url("app"),
            "chats",
            "[targets.tags]\nsensitivity = \"level\"\n\n[tags]\nrequired = [\"sensitivity\"]\n",
        ),
    )
    .unwrap();
    // Tag coverage on PostgreSQL: the four rows with no level lack the tag.
    let r = lethe_pg(&cfg, &["check", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["targets"][0]["untagged"], 4, "{}", r.stdout);
    let r = lethe_pg(&cfg, &["sweep", "--apply", "--json", "--no-progress"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let mut left: Vec<i64> = pg_ids(&mut data, "chats")
        .iter()
        .filter_map(|i| i.parse().ok())
        .collect();
    left.sort();
    assert_eq!(left, KEPT.to_vec());
    let rules = deleted_rules(&cfg);
    for (k, rule) in expected() {
        assert_eq!(rules.get(&k).map(String::as_str), Some(rule), "row {k}");
    }
}

/// The target's own level caps rows that name none; a row's own level outranks it.
#[test]
fn a_targets_level_caps_rows_that_name_none() {
    let d = Tmp::new("policy-target-level");
    let conn = sqlite_table(&d);
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        policy(
            "sqlite://state.db",
            "sqlite://app.db",
            "chats",
            "sensitivity = \"restricted\"\n",
        ),
    )
    .unwrap();
    let r = lethe_pg(&cfg, &["sweep", "--apply", "--json", "--no-progress"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    // Row 5 (12 days, no level of its own) now falls under restricted's 7d; row 4
    // (confidential, 13 days) keeps its own 14d cap.
    let left = ids(&conn, "chats");
    assert!(!left.contains(&5), "{left:?}");
    assert!(left.contains(&4), "{left:?}");
    assert_eq!(deleted_rules(&cfg)["5"], "cap 7d (sensitivity restricted)");
}

fn refused(d: &Tmp, text: &str, key: &str, line: usize) {
    let conn = sqlite_table(d);
    let cfg: PathBuf = d.path("lethe.toml");
    std::fs::write(&cfg, text).unwrap();
    for args in [
        vec!["init"],
        vec!["check"],
        vec!["sweep", "--apply", "--no-progress"],
    ] {
        let r = run_raw(&cfg, &args);
        assert_eq!(r.code, Some(2), "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains(&format!("line {line}")) && r.stderr.contains(key),
            "{args:?}: wanted {key} at line {line}: {}",
            r.stderr
        );
    }
    assert!(!d.path("state.db").exists(), "no state was made");
    assert_eq!(ids(&conn, "chats").len(), ROWS.len());
}

#[test]
fn a_minimum_above_the_max_and_an_unknown_level_are_refused_with_key_and_line() {
    let base = policy("sqlite://state.db", "sqlite://app.db", "chats", "");
    // `min = "5d"` is on line 6; a max under it.
    let text = base.replace("min = \"5d\"", "min = \"5d\"\nmax = \"3d\"");
    refused(
        &Tmp::new("policy-min-max"),
        &text,
        "categories.prompts.min",
        6,
    );
    // A target naming a level nobody defined (line 27: after `sensitivity_column`).
    let text = policy(
        "sqlite://state.db",
        "sqlite://app.db",
        "chats",
        "sensitivity = \"secrett\"\n",
    );
    let line = text
        .lines()
        .position(|l| l.starts_with("sensitivity = "))
        .unwrap()
        + 1;
    refused(
        &Tmp::new("policy-unknown-level"),
        &text,
        "targets.chats.sensitivity",
        line,
    );
    // A `[sensitivity.LEVEL]` with a key it does not know.
    let text = base.replace(
        "[sensitivity.restricted]\nmax",
        "[sensitivity.restricted]\nmaxx",
    );
    let line = text.lines().position(|l| l.starts_with("maxx")).unwrap() + 1;
    refused(
        &Tmp::new("policy-level-key"),
        &text,
        "sensitivity.restricted.maxx",
        line,
    );
}

#[test]
fn check_warns_where_a_cap_or_a_window_gives_way_to_the_minimum() {
    let d = Tmp::new("policy-warn");
    let _conn = sqlite_table(&d);
    let cfg = d.path("lethe.toml");
    let text = policy("sqlite://state.db", "sqlite://app.db", "chats", "")
        .replace("min = \"5d\"", "min = \"10d\"");
    std::fs::write(&cfg, text).unwrap();
    let r = lethe_pg(&cfg, &["check"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("the restricted cap 7d falls below the legal minimum 10d"),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("the confidential cap"),
        "14d is above the minimum: {}",
        r.stdout
    );
    // A window under the minimum.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("retention = \"30d\"", "retention = \"7d\"");
    std::fs::write(&cfg, text).unwrap();
    let r = lethe_pg(&cfg, &["check"]);
    assert!(
        r.stdout
            .contains("the window 7d is shorter than the legal minimum 10d"),
        "{}",
        r.stdout
    );
}

/// Issue 15, item 3: tag coverage counted the same way on SQL and filesystem targets, by
/// `check`, the sweep and the report. A SQL target maps each required tag to a column; a
/// filesystem target reads a sidecar beside each file, or, naming none, has every file
/// untagged.
#[test]
fn tag_coverage_is_counted_alike_on_sql_and_filesystem_targets() {
    let d = Tmp::new("policy-tags");
    let c = Connection::open(d.path("app.db")).unwrap();
    c.execute_batch(
        "CREATE TABLE chats (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, team TEXT, level TEXT);",
    )
    .unwrap();
    // 10 rows: 2 lack a team, 1 has a blank level, 1 lacks both: 4 untagged.
    for id in 1..=10 {
        let team = match id {
            1 | 2 | 4 => None,
            _ => Some("ml"),
        };
        let level = match id {
            3 => Some("  "),
            4 => None,
            _ => Some("internal"),
        };
        c.execute(
            "INSERT INTO chats VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![id, naive(DAY), team, level],
        )
        .unwrap();
    }
    for dir in ["ckpt", "bare"] {
        std::fs::create_dir_all(d.path(dir)).unwrap();
        for i in 0..4 {
            std::fs::write(d.path(&format!("{dir}/m{i}.pt")), "w").unwrap();
        }
    }
    // Sidecars: m0 complete, m1 missing a tag, m2 unreadable, m3 none.
    std::fs::write(
        d.path("ckpt/m0.pt.tags.json"),
        r#"{"owner": "ml", "sensitivity": "internal"}"#,
    )
    .unwrap();
    std::fs::write(d.path("ckpt/m1.pt.tags.json"), r#"{"owner": "ml"}"#).unwrap();
    std::fs::write(d.path("ckpt/m2.pt.tags.json"), "not json").unwrap();
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        r#"[state]
url = "sqlite://state.db"

[categories.prompts]
retention = "30d"

[[targets]]
name = "chats"
type = "sql"
url = "sqlite://app.db"
table = "chats"
category = "prompts"
key = "id"
created_at = "created_at"
[targets.tags]
owner = "team"
sensitivity = "level"

[[targets]]
name = "ckpt"
type = "filesystem"
root = "ckpt"
category = "prompts"
tags_sidecar = "{}.tags.json"

[[targets]]
name = "bare"
type = "filesystem"
root = "bare"
category = "prompts"

[tags]
required = ["owner", "sensitivity"]
"#,
    )
    .unwrap();
    // ckpt: 4 files + 3 sidecars (counted tagged): m1, m2, m3 untagged.
    let want = [("chats", 4, 10), ("ckpt", 3, 7), ("bare", 4, 4)];
    // Each command's JSON, and its entry for one target.
    let answer = |args: &[&str]| {
        let r = run(&cfg, args);
        assert_eq!(r.code, Some(0), "{args:?}: {}{}", r.stdout, r.stderr);
        r.json()
    };
    let target = |j: &serde_json::Value, name: &str| {
        j["targets"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["target"] == name).cloned())
            .unwrap_or_else(|| panic!("{name} in {j}"))
    };
    for args in [
        &["check", "--json"][..],
        &["sweep", "--json", "--no-progress"][..],
    ] {
        let j = answer(args);
        for (name, untagged, _) in want {
            let t = target(&j, name);
            assert_eq!(t["untagged"], untagged, "{args:?}, {name}: {t}");
        }
    }
    let j = answer(&["report", "--format", "json"]);
    for (name, untagged, items) in want {
        let t = target(&j, name);
        let cov = t["figures"]["tag_coverage"]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}: {}", t["figures"]));
        let expect = 1.0 - untagged as f64 / items as f64;
        assert!(
            (cov - expect).abs() < 1e-9,
            "report, {name}: {cov} vs {expect}"
        );
    }
    // Nothing was deleted by looking.
    assert_eq!(ids(&c, "chats").len(), 10);
}

/// The store's own lifecycle rule never deletes sooner than Lethe would: it keeps the legal
/// minimum, and applies the target's level cap only when no object can name a laxer level
/// of its own.
#[test]
fn lifecycle_export_keeps_the_minimum_and_drops_a_cap_objects_may_override() {
    let d = Tmp::new("policy-lifecycle");
    let cfg = d.path("lethe.toml");
    let write = |extra: &str, min: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[categories.logs]\nretention = \"90d\"\n{min}\n[sensitivity.restricted]\nmax = \"7d\"\n\n[[targets]]\nname = \"gw\"\ntype = \"object_store\"\nurl = \"s3://logs/gw/\"\ncategory = \"logs\"\nsensitivity = \"restricted\"\n{extra}"
            ),
        )
        .unwrap();
    };
    let days = || {
        let r = run(
            &cfg,
            &["lifecycle", "export", "--target", "gw", "--format", "s3"],
        );
        assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
        r.json()["Rules"][0]["Expiration"]["Days"].as_i64().unwrap()
    };
    write("", "");
    assert_eq!(days(), 7, "every object is restricted");
    write("", "min = \"10d\"");
    assert_eq!(days(), 10, "the legal minimum outranks the cap");
    write("sensitivity_metadata = \"sensitivity\"\n", "");
    assert_eq!(days(), 90, "an object may name a laxer level");
}

#[test]
fn a_level_defined_twice_a_bad_level_name_and_a_minimum_beyond_the_range_are_refused() {
    let base = policy("sqlite://state.db", "sqlite://app.db", "chats", "");
    let line_of = |text: &str, prefix: &str| {
        text.lines()
            .position(|l| l.starts_with(prefix))
            .unwrap_or(0)
            + 1
    };
    // The same level in two spellings: which cap won would depend on their order.
    let text = base.replace(
        "[sensitivity.confidential]",
        "[sensitivity.Restricted]\nmax = \"30d\"\n\n[sensitivity.confidential]",
    );
    // Reported at the spelling read second (the tables are read in name order).
    let line = line_of(&text, "[sensitivity.restricted]");
    refused(&Tmp::new("policy-twice"), &text, "defined twice", line);
    // A level name that could never be matched as written.
    let text = base.replace("[sensitivity.confidential]", "[sensitivity.\" secret \"]");
    let line = line_of(&text, "[sensitivity.\" secret");
    refused(
        &Tmp::new("policy-level-name"),
        &text,
        "letters, digits",
        line,
    );
    // A legal minimum beyond the longest approved window.
    let text = base.replace("min = \"5d\"", "min = \"40d\"\nrange = [\"7d\", \"30d\"]");
    refused(
        &Tmp::new("policy-min-range"),
        &text,
        "categories.prompts.min",
        6,
    );
}

/// A sidecar that is not a regular file (a FIFO, a link to a device) counts as no tags and
/// never blocks or exhausts a sweep; a file merely named like a sidecar, with no file beside
/// it, is an item like any other; a tag mapped but not required is warned about.
#[test]
fn sidecars_that_are_not_plain_files_never_block_a_sweep() {
    let d = Tmp::new("policy-sidecar-fifo");
    std::fs::create_dir_all(d.path("ckpt")).unwrap();
    for f in ["a.pt", "b.pt", "c.pt"] {
        std::fs::write(d.path(&format!("ckpt/{f}")), "w").unwrap();
    }
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        d.path("ckpt/a.pt.tags.json"),
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("/dev/zero", d.path("ckpt/b.pt.tags.json")).unwrap();
    // Named like a sidecar, with no `orphan.pt` beside it: an untagged item.
    std::fs::write(d.path("ckpt/orphan.pt.tags.json"), r#"{"owner": "x"}"#).unwrap();
    std::fs::write(d.path("ckpt/c.pt.tags.json"), r#"{"owner": "ml"}"#).unwrap();
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        "[state]\nurl = \"sqlite://state.db\"\n\n[categories.m]\nretention = \"30d\"\n\n[[targets]]\nname = \"ckpt\"\ntype = \"filesystem\"\nroot = \"ckpt\"\ncategory = \"m\"\ntags_sidecar = \"{}.tags.json\"\n\n[tags]\nrequired = [\"owner\"]\n",
    )
    .unwrap();
    let mut child = lethe()
        .args(["check", "--json", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("check blocked on a sidecar");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // a.pt, b.pt (bad sidecars) and orphan.pt.tags.json (an item, with no sidecar of its
    // own) lack the tag; c.pt has it; the three real sidecars count as tagged.
    assert_eq!(j["targets"][0]["untagged"], 3, "{j}");
}

#[test]
fn a_tag_mapped_but_not_required_is_warned_about() {
    let d = Tmp::new("policy-tag-typo");
    let _conn = sqlite_table(&d);
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        policy(
            "sqlite://state.db",
            "sqlite://app.db",
            "chats",
            "[targets.tags]\nownr = \"user_id\"\n\n[tags]\nrequired = [\"owner\"]\n",
        ),
    )
    .unwrap();
    let r = lethe_pg(&cfg, &["check"]);
    assert!(
        r.stdout.contains("[targets.tags] maps \"ownr\""),
        "{}{}",
        r.stdout,
        r.stderr
    );
}
