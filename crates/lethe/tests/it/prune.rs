//! The trail's own retention: `lethe audit prune` on ten years of trail removes exactly the
//! entries past `[audit] retention` but those about held items and holds in force; verify
//! passes from the signed checkpoint and fails when it is removed or altered. The tests
//! move "now" with `LETHE_TEST_NOW`, which only the tests' build (failpoints) honours.

use std::collections::BTreeSet;

use lethe_core::time::Timestamp;
use rusqlite::Connection;

use crate::*;

const CONFIG: &str = r#"[state]
url = "sqlite://state/s.db"

[audit]
retention = "2555d"

[categories.c]
retention = "30d"

[[targets]]
name = "t"
type = "sql"
url = "sqlite://ai.db"
table = "t"
category = "c"
key = "id"
created_at = "created_at"
subject = "user_id"
"#;

fn at(secs: i64) -> String {
    Timestamp::from_unix_seconds(secs).unwrap().to_rfc3339()
}

/// `lethe ARGS` with "now" at `secs`.
fn run_at(cfg: &Path, secs: i64, args: &[&str]) -> Run {
    let now = at(secs);
    run_env(cfg, &[("LETHE_TEST_NOW", now.as_str())], args)
}

fn add_row(conn: &Connection, id: Option<i64>, user: &str, created: i64) {
    let created = at(created).replace('T', " ").replace('Z', "");
    conn.execute(
        "INSERT INTO t (id, user_id, created_at) VALUES (?1, ?2, ?3)",
        rusqlite::params![id, user, created],
    )
    .unwrap();
}

fn hold(cfg: &Path, secs: i64, scope: &[&str]) -> String {
    let mut args = vec!["hold", "add"];
    args.extend_from_slice(scope);
    args.extend_from_slice(&["--case", "C-7", "--reason", "litigation", "--json"]);
    let r = run_at(cfg, secs, &args);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    r.json()["id"].as_str().unwrap().to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
    }
}

fn seqs(entries: &[serde_json::Value]) -> BTreeSet<i64> {
    entries.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

#[test]
fn prune_removes_exactly_what_is_past_the_window_and_verify_starts_at_its_checkpoint() {
    assert!(
        has_failpoints(),
        "this test moves the clock with LETHE_TEST_NOW, which only the tests' build honours: run it with --features lethe/failpoints"
    );
    let d = Tmp::new("prune");
    let cfg = d.path("lethe.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let conn = Connection::open(d.path("ai.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, created_at TEXT NOT NULL)",
    )
    .unwrap();
    // "Now" at the prune, and ten years before it.
    let p = now_secs() - now_secs() % DAY + DAY / 2;
    let t0 = p - 3650 * DAY;
    add_row(&conn, Some(4), "u", t0 - 100 * DAY);
    add_row(&conn, Some(5), "u", t0 - 100 * DAY);
    add_row(&conn, Some(6), "held-user", t0 - 100 * DAY);
    let r = run_at(&cfg, t0, &["init"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let hold4 = hold(&cfg, t0 + DAY, &["--target", "t", "--key", "4"]);
    let hold5 = hold(&cfg, t0 + DAY, &["--target", "t", "--key", "5"]);
    let hold_subject = hold(&cfg, t0 + DAY, &["--subject", "held-user"]);
    let mut released5 = false;
    for k in 0..121 {
        let tk = t0 + 2 * DAY + k * 30 * DAY;
        if !released5 && tk > t0 + 730 * DAY {
            let r = run_at(
                &cfg,
                t0 + 730 * DAY,
                &["hold", "release", &hold5, "--reason", "case closed"],
            );
            assert_eq!(r.code, Some(0), "{}", r.stderr);
            released5 = true;
        }
        add_row(&conn, None, "u", tk - 40 * DAY);
        add_row(&conn, None, "u", tk - 40 * DAY);
        if k % 20 == 10 {
            // An erasure request: entries with a subject hash, indexed in audit_subjects.
            add_row(&conn, None, &format!("gone-{k}"), tk - DAY);
            let r = run_at(
                &cfg,
                tk,
                &["erase", "--subject", &format!("gone-{k}"), "--apply"],
            );
            assert_eq!(r.code, Some(0), "{}", r.stderr);
        }
        let r = run_at(&cfg, tk, &["sweep", "--apply", "--no-progress"]);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
    }
    let before = export(&cfg);
    assert!(before.len() > 600, "{} entries", before.len());
    let first = before[0]["decided_at"].as_str().unwrap();
    assert!(Timestamp::parse(first).unwrap().unix_seconds() <= t0);

    // What must remain, computed from the trail as exported: entries inside the window,
    // entries about item 4 or the held subject, the placements of the holds in force.
    let cutoff = p - 2555 * DAY;
    let subject_hash = before
        .iter()
        .find(|e| e["run_id"] == hold_subject.as_str())
        .map(|e| e["subject_hash"].clone())
        .unwrap();
    assert!(subject_hash.is_string());
    let mut last_time = i64::MIN;
    let mut expected = BTreeSet::new();
    let mut removed = BTreeSet::new();
    for e in &before {
        let t = Timestamp::parse(e["decided_at"].as_str().unwrap())
            .unwrap()
            .unix_seconds();
        assert!(
            t >= last_time,
            "the trail's times go back at entry {}",
            e["seq"]
        );
        last_time = t;
        let keep = t >= cutoff
            || (e["target"] == "t" && e["item_key"] == "4")
            || e["subject_hash"] == subject_hash
            || (e["action"] == "hold_placed"
                && (e["run_id"] == hold4.as_str() || e["run_id"] == hold_subject.as_str()));
        let seq = e["seq"].as_i64().unwrap();
        if keep {
            expected.insert(seq);
        } else {
            removed.insert(seq);
        }
    }
    assert!(
        removed.len() > 100 && expected.len() > 200,
        "{} {}",
        removed.len(),
        expected.len()
    );
    let checkpoint = *removed.last().unwrap();

    // A dry run counts and changes nothing.
    let r = run_at(&cfg, p, &["audit", "prune", "--dry-run", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.json()["removed"], removed.len());
    assert_eq!(export(&cfg), before);

    let r = run_at(
        &cfg,
        p,
        &["audit", "prune", "--json", "--by", "records-team"],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["removed"], removed.len(), "{j}");
    assert_eq!(j["checkpoint_seq"], checkpoint);
    assert_eq!(j["cutoff"], at(cutoff).as_str());
    let after = export(&cfg);
    let head = before.last().unwrap()["seq"].as_i64().unwrap() + 1;
    let mut want = expected.clone();
    want.insert(head);
    assert_eq!(seqs(&after), want);
    assert_eq!(after.last().unwrap()["action"], "trail_pruned");
    // The kept entries are the very entries they were.
    for e in &after[..after.len() - 1] {
        assert!(before.contains(e), "entry {} changed", e["seq"]);
    }

    let r = run_at(&cfg, p, &["audit", "verify"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(&format!(
            "verified from checkpoint at entry {checkpoint} (pruned "
        )),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("by records-team"), "{}", r.stdout);
    let r = run_at(&cfg, p, &["audit", "verify", "--json"]);
    assert_eq!(r.json()["pruned"]["seq"], checkpoint);
    // Writing commands go on over the pruned trail.
    let r = run_at(&cfg, p + DAY, &["sweep", "--apply", "--no-progress"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(run_at(&cfg, p + DAY, &["audit", "verify"]).code, Some(0));
    // A report over the pruned trail finds it intact, whether its period starts after the
    // checkpoint or before it (where only kept entries are left).
    for args in [
        vec!["--json", "report", "--reconcile-sample", "0"],
        vec![
            "--json",
            "report",
            "--reconcile-sample",
            "0",
            "--since",
            "2015-01-01",
        ],
    ] {
        let r = run_at(&cfg, p + DAY, &args);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        let k = r.json()["kpis"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == "trail_verified")
            .cloned()
            .unwrap();
        assert_eq!(k["pass"], true, "{args:?}: {k}");
    }

    // Tampering, each on a copy of the pruned state.
    let state = d.path("state");
    let saved = d.path("saved-state");
    copy_dir(&state, &saved);
    let kept_below = *expected.iter().next().unwrap();
    assert!(kept_below < checkpoint);
    // A kept entry below the checkpoint about the held item (not a hold itself).
    let kept_held = before
        .iter()
        .find(|e| e["action"] == "held" && e["seq"].as_i64().unwrap() < checkpoint)
        .map(|e| e["seq"].as_i64().unwrap())
        .unwrap();
    assert!(expected.contains(&kept_held));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "checkpoint removed",
            "DELETE FROM audit_checkpoint".into(),
            "missing",
        ),
        (
            "checkpoint altered",
            format!(
                "UPDATE audit_checkpoint SET body = replace(body, '\"removed\":{}', '\"removed\":{}')",
                removed.len(),
                removed.len() + 1
            ),
            "prune checkpoint",
        ),
        (
            "checkpoint moved",
            format!("UPDATE audit_checkpoint SET seq = {}", checkpoint - 1),
            "prune checkpoint",
        ),
        (
            "kept entry altered",
            format!("UPDATE audit SET detail = 'edited' WHERE seq = {kept_below}"),
            "altered",
        ),
        (
            "kept entry removed",
            format!("DELETE FROM audit WHERE seq = {kept_below}"),
            "removed",
        ),
        (
            "kept entry about a held item removed",
            format!("DELETE FROM audit WHERE seq = {kept_held}"),
            "one was removed, added or replaced",
        ),
        (
            "kept entry about a held item altered",
            format!("UPDATE audit SET item_key = '5' WHERE seq = {kept_held}"),
            "altered",
        ),
        (
            "entry after the checkpoint removed",
            format!("DELETE FROM audit WHERE seq = {}", checkpoint + 1),
            "",
        ),
    ];
    for (what, sql, says) in cases {
        copy_dir(&saved, &state);
        let c = Connection::open(state.join("s.db")).unwrap();
        c.execute_batch(&sql).unwrap();
        drop(c);
        let r = run_at(&cfg, p + DAY, &["audit", "verify"]);
        assert_eq!(r.code, Some(1), "{what}: {}", r.stdout);
        assert!(r.stdout.contains(says), "{what}: {}", r.stdout);
    }
    copy_dir(&saved, &state);
    assert_eq!(run_at(&cfg, p + DAY, &["audit", "verify"]).code, Some(0));

    // A year on, item 4's hold released: its entries past the window go at the next
    // prune, from a new checkpoint; the subject's held entries stay.
    let p2 = p + 400 * DAY;
    let r = run_at(
        &cfg,
        p2 - DAY,
        &["hold", "release", &hold4, "--reason", "case closed"],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = run_at(&cfg, p2, &["audit", "prune", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.json()["removed"].as_u64().unwrap() > 0);
    let cutoff2 = p2 - 2555 * DAY;
    let left = export(&cfg);
    for e in &left {
        let t = Timestamp::parse(e["decided_at"].as_str().unwrap())
            .unwrap()
            .unix_seconds();
        if t < cutoff2 {
            assert!(
                e["subject_hash"] == subject_hash
                    || (e["action"] == "hold_placed" && e["run_id"] == hold_subject.as_str()),
                "entry {} past the window is left: {e}",
                e["seq"]
            );
        }
    }
    assert!(
        left.iter()
            .any(|e| e["subject_hash"] == subject_hash && e["action"] == "held")
    );
    let r = run_at(&cfg, p2, &["audit", "verify"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("verified from checkpoint at entry"),
        "{}",
        r.stdout
    );
}

#[test]
fn prune_needs_a_retention_and_keeps_a_young_trail_whole() {
    let d = Tmp::new("prune-none");
    seed_training(&d, 6);
    let cfg = training_config(&d);
    let r = run(&cfg, &["audit", "prune"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("[audit] retention"), "{}", r.stderr);
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}\n[audit]\nretention = \"2555d\"\n")).unwrap();
    assert_eq!(
        run(&cfg, &["sweep", "--apply", "--no-progress"]).code,
        Some(0)
    );
    let before = export(&cfg);
    let r = run(&cfg, &["audit", "prune", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.json()["removed"], 0);
    assert_eq!(r.json()["checkpoint_seq"], serde_json::Value::Null);
    assert_eq!(export(&cfg), before, "nothing to prune: nothing written");
    let r = run(&cfg, &["audit", "verify"]);
    assert_eq!(r.code, Some(0));
    assert!(!r.stdout.contains("checkpoint"), "{}", r.stdout);
}

#[test]
fn the_daemon_prunes_the_trail_past_its_retention() {
    assert!(
        has_failpoints(),
        "needs LETHE_TEST_NOW: run with --features lethe/failpoints"
    );
    let d = Tmp::new("prune-serve");
    let cfg = d.path("lethe.toml");
    std::fs::write(&cfg, CONFIG.replace("2555d", "365d")).unwrap();
    let conn = Connection::open(d.path("ai.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, created_at TEXT NOT NULL)",
    )
    .unwrap();
    let now = now_secs();
    let r = run_at(&cfg, now - 800 * DAY, &["init"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    for k in 0..4 {
        let tk = now - 700 * DAY + k * 200 * DAY;
        add_row(&conn, None, "u", tk - 40 * DAY);
        let r = run_at(&cfg, tk, &["sweep", "--apply", "--no-progress"]);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
    }
    let before = export(&cfg);
    let old = before
        .iter()
        .filter(|e| {
            Timestamp::parse(e["decided_at"].as_str().unwrap())
                .unwrap()
                .unix_seconds()
                < now - 365 * DAY
        })
        .count();
    assert!(old >= 4, "{old}");
    let daemon = crate::serve::Daemon::start(&cfg, &[]);
    crate::serve::eventually(20, "the daemon pruned the trail", || {
        export(&cfg).iter().any(|e| e["action"] == "trail_pruned")
    });
    let after = export(&cfg);
    assert_eq!(after.len(), before.len() - old + 1);
    assert!(
        daemon.log_text().contains("pruned the audit trail"),
        "{}",
        daemon.log_text()
    );
    let r = run(&cfg, &["audit", "verify"]);
    assert_eq!(r.code, Some(0), "{}", r.stdout);
    assert!(
        r.stdout.contains("verified from checkpoint"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("by lethe serve"), "{}", r.stdout);
}

#[test]
fn a_postgres_state_signs_receipts_and_prunes_from_a_checkpoint() {
    assert!(
        has_failpoints(),
        "needs LETHE_TEST_NOW: run with --features lethe/failpoints"
    );
    let pg = crate::pg::PgCluster::start();
    pg.create_db("lethe_state");
    let d = Tmp::new("prune-pg");
    drop(seed_training(&d, 20));
    let cfg = training_config(&d);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("sqlite://state/lethe-state.db", &pg.url("lethe_state"));
    std::fs::write(
        &cfg,
        format!("{text}\n[audit]\nretention = \"2555d\"\nkey_env = \"LETHE_TEST_AUDIT_KEY\"\n"),
    )
    .unwrap();
    let key = (
        "LETHE_TEST_AUDIT_KEY",
        "a shared key for every lethe process",
    );
    let now = now_secs();
    let at_env = |secs: i64, args: &[&str]| {
        let t = at(secs);
        run_env(&cfg, &[key, ("LETHE_TEST_NOW", t.as_str())], args)
    };
    assert_eq!(at_env(now - 3000 * DAY, &["init"]).code, Some(0));
    for k in 0..3 {
        let r = at_env(
            now - 2900 * DAY + k * DAY,
            &["sweep", "--apply", "--no-progress"],
        );
        assert_eq!(r.code, Some(0), "{}", r.stderr);
    }
    let old = export_env(&cfg, &[key]).len();
    // Today: an erasure, and its receipt.
    let r = run_env(
        &cfg,
        &[key],
        &["erase", "--subject", "user-3", "--apply", "--json"],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    let file = d.path("r.json");
    let r = run_env(
        &cfg,
        &[key],
        &[
            "erase",
            "status",
            &id,
            "--receipt",
            "-o",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let pk = run_env(&cfg, &[key], &["audit", "public-key"])
        .stdout
        .trim()
        .to_string();
    let out = lethe()
        .args(["receipt", "verify"])
        .arg(&file)
        .args(["--public-key", &pk])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let r = run_env(&cfg, &[key], &["audit", "prune", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.json()["removed"], old, "every entry of the old sweeps");
    let r = run_env(&cfg, &[key], &["audit", "verify"]);
    assert_eq!(r.code, Some(0), "{}", r.stdout);
    assert!(
        r.stdout
            .contains(&format!("verified from checkpoint at entry {old}")),
        "{}",
        r.stdout
    );
    // The receipt made before the prune still verifies; a new one is the same receipt.
    let out = lethe()
        .args(["receipt", "verify"])
        .arg(&file)
        .args(["--public-key", &pk])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let r = run_env(&cfg, &[key], &["erase", "status", &id, "--receipt"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, std::fs::read_to_string(&file).unwrap());
    // The checkpoint removed: verify fails.
    pg.client("lethe_state")
        .batch_execute("DELETE FROM audit_checkpoint")
        .unwrap();
    let r = run_env(&cfg, &[key], &["audit", "verify"]);
    assert_eq!(r.code, Some(1), "{}", r.stdout);
}

fn export_env(cfg: &Path, env: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let r = run_env(cfg, env, &["audit", "export"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_prune_killed_before_it_commits_leaves_the_old_trail_whole() {
    let d = Tmp::new("prune-crash");
    let cfg = d.path("lethe.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let conn = Connection::open(d.path("ai.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, created_at TEXT NOT NULL)",
    )
    .unwrap();
    let now = now_secs();
    assert_eq!(run_at(&cfg, now - 3000 * DAY, &["init"]).code, Some(0));
    for k in 0..3 {
        let tk = now - 2900 * DAY + k * DAY;
        add_row(&conn, None, "u", tk - 40 * DAY);
        assert_eq!(
            run_at(&cfg, tk, &["sweep", "--apply", "--no-progress"]).code,
            Some(0)
        );
    }
    let before = export(&cfg);
    let out = lethe_failpoint("prune-before-commit")
        .args(["audit", "prune", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        None,
        "not killed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The old trail, whole: no entry gone, no checkpoint, no trail_pruned entry.
    assert_eq!(export(&cfg), before);
    let r = run(&cfg, &["audit", "verify"]);
    assert_eq!(r.code, Some(0), "{}", r.stdout);
    assert!(!r.stdout.contains("checkpoint"), "{}", r.stdout);
    // Run again, it prunes.
    let r = run(&cfg, &["audit", "prune", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // every entry but the head, which is never removed
    assert_eq!(r.json()["removed"], before.len() - 1);
    let r = run(&cfg, &["audit", "verify"]);
    assert_eq!(r.code, Some(0), "{}", r.stdout);
    assert!(
        r.stdout.contains("verified from checkpoint"),
        "{}",
        r.stdout
    );
}

/// A small trail for the review's cases: a 30-day retention, rows of alice and bob.
fn review_case(name: &str) -> (Tmp, PathBuf, Connection) {
    let d = Tmp::new(name);
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        CONFIG.replace("2555d", "30d").replace(
            "[categories.c]",
            "[erasure]\ndeadline = \"30d\"\n\n[categories.c]",
        ),
    )
    .unwrap();
    std::fs::create_dir_all(d.path("state")).unwrap();
    let conn = Connection::open(d.path("ai.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, created_at TEXT NOT NULL)",
    )
    .unwrap();
    (d, cfg, conn)
}

const T0: i64 = 1_577_880_000; // 2020-01-01T12:00:00Z
const D: i64 = 86_400;

#[test]
fn a_hold_placed_again_after_its_release_survives_a_prune_that_still_verifies() {
    let (_d, cfg, conn) = review_case("prune-rehold");
    add_row(&conn, Some(1), "alice", T0 - 100 * D);
    add_row(&conn, Some(2), "bob", T0 - 100 * D);
    assert_eq!(run_at(&cfg, T0, &["init"]).code, Some(0));
    let first = hold(&cfg, T0, &["--subject", "alice"]);
    let r = run_at(
        &cfg,
        T0 + D,
        &["hold", "release", &first, "--reason", "settled"],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    hold(&cfg, T0 + 2 * D, &["--subject", "alice"]);
    let r = run_at(&cfg, T0 + 3 * D, &["sweep", "--apply", "--no-progress"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = run_at(&cfg, T0 + 100 * D, &["audit", "prune"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let r = run_at(&cfg, T0 + 100 * D, &["audit", "verify"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    // and the trail can still be written
    add_row(&conn, Some(3), "bob", T0 - 10 * D);
    let r = run_at(&cfg, T0 + 101 * D, &["sweep", "--apply", "--no-progress"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let left: i64 = conn
        .query_row("SELECT COUNT(*) FROM t WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 1, "alice's row is under the second hold");
}

#[test]
fn a_broken_trail_is_never_pruned_into_one_that_verifies() {
    let (d, cfg, conn) = review_case("prune-broken");
    add_row(&conn, Some(4), "alice", T0 - 100 * D);
    add_row(&conn, Some(5), "bob", T0 - 100 * D);
    assert_eq!(run_at(&cfg, T0, &["init"]).code, Some(0));
    hold(&cfg, T0 + D, &["--target", "t", "--key", "4"]);
    let r = run_at(&cfg, T0 + 2 * D, &["sweep", "--apply", "--no-progress"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = run_at(&cfg, T0 + 100 * D, &["audit", "prune"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    // a kept entry below the checkpoint removed with nothing but database access
    let state = Connection::open(d.path("state/s.db")).unwrap();
    state
        .execute(
            "DELETE FROM audit WHERE seq = (SELECT MIN(seq) FROM audit WHERE action = 'held')",
            [],
        )
        .unwrap();
    let r = run_at(&cfg, T0 + 100 * D, &["audit", "verify"]);
    assert_eq!(r.code, Some(1));
    // the daemon's daily prune, later: refused, and the break stays visible
    let r = run_at(&cfg, T0 + 200 * D, &["audit", "prune"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("pruned only where it verifies"),
        "{}",
        r.stderr
    );
    let r = run_at(&cfg, T0 + 200 * D, &["audit", "verify"]);
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    // the held row was never deleted
    let left: i64 = conn
        .query_row("SELECT COUNT(*) FROM t WHERE id = 4", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 1);
}

#[test]
fn an_open_requests_entries_are_kept_and_a_short_retention_is_refused() {
    let (d, cfg, conn) = review_case("prune-open-request");
    add_row(&conn, Some(1), "alice", T0 - 100 * D);
    assert_eq!(run_at(&cfg, T0, &["init"]).code, Some(0));
    // a preview: the request stays open
    let r = run_at(&cfg, T0 + D, &["--json", "erase", "--subject", "alice"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    add_row(&conn, Some(2), "bob", T0 - 100 * D);
    let r = run_at(&cfg, T0 + 2 * D, &["sweep", "--apply", "--no-progress"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = run_at(&cfg, T0 + 60 * D, &["audit", "prune"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let r = run_at(&cfg, T0 + 60 * D, &["--json", "audit", "log", "--run", &id]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout.contains("erasure_received"),
        "the open request's first entry was pruned: {}",
        r.stdout
    );
    // completed later, it still has its receipt
    let r = run_at(
        &cfg,
        T0 + 61 * D,
        &["erase", "--subject", "alice", "--apply"],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let file = d.path("r.json");
    let r = run_at(
        &cfg,
        T0 + 61 * D,
        &[
            "erase",
            "status",
            &id,
            "--receipt",
            "-o",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let r = run_at(
        &cfg,
        T0 + 61 * D,
        &["receipt", "verify", file.to_str().unwrap()],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    // a retention shorter than the erasure deadline: refused
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "retention = \"30d\"\n\n[erasure]",
        "retention = \"7d\"\n\n[erasure]",
    );
    std::fs::write(&cfg, text).unwrap();
    let r = run_at(&cfg, T0 + 62 * D, &["audit", "prune"]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("[erasure] deadline"), "{}", r.stderr);
}
