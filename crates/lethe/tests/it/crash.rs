//! A sweep killed with SIGKILL at any point, then run again, finishes the work: every deleted
//! item has exactly one deletion entry and the chain verifies. Two sweeps at once never
//! delete an item twice or fork the chain.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::*;

const ROWS: i64 = 600;

/// After the work is finished: exactly the alive rows and their files remain, and each
/// expired row has exactly one `deleted` entry in a chain that verifies.
fn assert_finished(d: &Tmp, cfg: &Path) {
    let conn = Connection::open(d.path("ai.db")).unwrap();
    let alive: Vec<i64> = (1..=ROWS).filter(|i| i % 2 == 1).collect();
    assert_eq!(ids(&conn, "training_records"), alive);
    for id in 1..=ROWS {
        assert_eq!(
            d.path(&format!("files/ds-{id}.jsonl")).exists(),
            id % 2 == 1,
            "file {id}"
        );
    }
    let mut deletions: HashMap<String, usize> = HashMap::new();
    for e in export(cfg) {
        if e["action"] == "deleted" {
            *deletions
                .entry(e["item_key"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    for id in (1..=ROWS).filter(|i| i % 2 == 0) {
        assert_eq!(
            deletions.get(&id.to_string()),
            Some(&1),
            "deletion entries for {id}"
        );
    }
    assert_eq!(
        deletions.len(),
        (ROWS / 2) as usize,
        "no entry for an item not deleted"
    );
    let v = run(cfg, &["audit", "verify"]);
    assert_eq!(v.code, Some(0), "{}", v.stdout);
    // Nothing left pending.
    let st = Connection::open(d.path("state/lethe-state.db.pending")).unwrap();
    let pending: i64 = st
        .query_row("SELECT count(*) FROM pending", [], |r| r.get(0))
        .unwrap();
    assert_eq!(pending, 0);
}

fn killed_at(point: &str) {
    let d = Tmp::new(&format!("kill-{}", point.replace(':', "-")));
    drop(seed_training(&d, ROWS));
    let cfg = training_config(&d);
    super::ensure_init(&cfg);
    let out = lethe_failpoint(point)
        .args([
            "sweep",
            "--apply",
            "--batch-size",
            "50",
            "--rows-per-commit",
            "100",
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{point}: the failpoint must kill the process"
    );
    let r = run(
        &cfg,
        &[
            "sweep",
            "--apply",
            "--batch-size",
            "50",
            "--rows-per-commit",
            "100",
            "--json",
        ],
    );
    assert_eq!(r.code, Some(0), "{point}: {}{}", r.stdout, r.stderr);
    assert_finished(&d, &cfg);
}

#[test]
fn killed_after_writing_ahead() {
    killed_at("after_pending");
    killed_at("after_pending:3");
}

#[test]
fn killed_while_removing_files() {
    killed_at("mid_files");
    killed_at("mid_files:2");
}

#[test]
fn killed_after_deleting_before_auditing() {
    killed_at("after_delete");
    killed_at("after_delete:2");
}

#[test]
fn killed_after_auditing() {
    killed_at("after_append:5");
}

/// Real SIGKILLs at arbitrary moments, several times in a row, then a clean finish.
#[test]
fn killed_at_random_moments() {
    let d = Tmp::new("kill-random");
    drop(seed_training(&d, ROWS));
    let cfg = training_config(&d);
    for delay_ms in [5u64, 20, 45, 80, 130] {
        let mut child = spawn(
            &cfg,
            &[
                "sweep",
                "--apply",
                "--batch-size",
                "7",
                "--rows-per-commit",
                "21",
            ],
        );
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_finished(&d, &cfg);
}

#[test]
fn two_sweeps_at_once_never_interleave() {
    let d = Tmp::new("concurrent");
    drop(seed_training(&d, ROWS));
    let cfg = training_config(&d);
    super::ensure_init(&cfg);
    let spawn = || {
        lethe()
            .args([
                "sweep",
                "--apply",
                "--json",
                "--batch-size",
                "5",
                "--config",
            ])
            .arg(&cfg)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn();
    let b = spawn();
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let mut deleted = 0;
    let mut skipped = 0;
    for o in &outs {
        let j: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
        let t = &j["targets"][0];
        deleted += t["deleted"].as_u64().unwrap();
        if let Some(e) = t["error"].as_str() {
            assert!(e.contains("another sweep"), "{e}");
            assert_eq!(
                o.status.code(),
                Some(1),
                "a skipped target is reported with exit 1"
            );
            skipped += 1;
        } else {
            assert_eq!(o.status.code(), Some(0));
        }
    }
    // Either one waited its turn out (skipped) or they ran one after the other; never both
    // deleting the same rows.
    assert_eq!(
        deleted,
        (ROWS / 2) as u64,
        "each expired row deleted once (skipped: {skipped})"
    );
    assert_finished(&d, &cfg);
}

/// Real SIGKILLs at arbitrary moments while holds are placed and released at arbitrary
/// moments, from another process, during the sweeps: at the end no item under a hold is
/// gone, every other expired item is, and each deletion has exactly one entry.
#[test]
fn killed_at_random_moments_while_holds_come_and_go() {
    let d = Tmp::new("kill-random-holds");
    const ROWS: i64 = 4_000;
    drop(seed_training(&d, ROWS));
    let cfg = training_config(&d);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.as_nanos() as u64)
        .unwrap_or(7)
        | 1;
    let mut rng = seed;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    // hold id -> item; removed when released
    let mut active: HashMap<String, i64> = HashMap::new();
    // items held after a killed run had begun deleting them
    let mut begun: std::collections::HashSet<i64> = std::collections::HashSet::new();
    for round in 0..8 {
        let mut child = spawn(
            &cfg,
            &[
                "sweep",
                "--apply",
                "--batch-size",
                "2",
                "--rows-per-commit",
                "2",
                "--no-progress",
            ],
        );
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(next(80)));
            // An expired item, still there or not (a hold on a gone item is refused); the
            // sweep goes in key order, so mostly ahead of it.
            let id = 2 * (ROWS as u64 / 8 + next(ROWS as u64 * 3 / 8)) as i64;
            let r = run(
                &cfg,
                &[
                    "hold",
                    "add",
                    "--target",
                    "training_records",
                    "--key",
                    &id.to_string(),
                    "--case",
                    "C-rand",
                    "--reason",
                    "random",
                    "--json",
                ],
            );
            if r.code == Some(0) {
                let placed: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
                // A hold placed on an item a killed run had begun deleting (its file may be
                // gone already: files go before rows) says so.
                if placed["deletion_begun"].is_string() {
                    begun.insert(id);
                }
                active.insert(placed["id"].as_str().unwrap().to_string(), id);
            }
            if next(3) == 0 && !active.is_empty() {
                let ids: Vec<String> = active.keys().cloned().collect();
                let hold = &ids[next(ids.len() as u64) as usize];
                let r = run(
                    &cfg,
                    &["hold", "release", hold, "--reason", "random release"],
                );
                assert_eq!(r.code, Some(0), "seed {seed}: {}", r.stderr);
                active.remove(hold);
            }
        }
        std::thread::sleep(Duration::from_millis(next(150)));
        let _ = child.kill();
        let _ = child.wait();
        let _ = round;
    }
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "seed {seed}: {}{}", r.stdout, r.stderr);
    let held: std::collections::HashSet<i64> = active.values().copied().collect();
    assert!(
        !held.is_empty(),
        "seed {seed}: no hold stayed in place; the test proved nothing"
    );
    let conn = Connection::open(d.path("ai.db")).unwrap();
    let alive: Vec<i64> = (1..=ROWS)
        .filter(|i| i % 2 == 1 || held.contains(i))
        .collect();
    let left = ids(&conn, "training_records");
    let gone: Vec<&i64> = alive.iter().filter(|i| !left.contains(i)).collect();
    let extra: Vec<&i64> = left.iter().filter(|i| !alive.contains(i)).collect();
    assert!(
        gone.is_empty() && extra.is_empty(),
        "seed {seed}: held or alive items gone: {gone:?}; due items left: {extra:?}"
    );
    let trail = export(&cfg);
    for id in &held {
        if d.path(&format!("files/ds-{id}.jsonl")).exists() {
            continue;
        }
        // Only an item whose deletion a killed run had begun before the hold may have lost
        // its file, and the trail then says so on the entry that keeps it.
        assert!(
            begun.contains(id),
            "seed {seed}: file {id} of a held item is gone"
        );
        let key = id.to_string();
        assert!(
            trail.iter().any(|e| e["item_key"] == key
                && e["action"] == "held"
                && e["detail"]
                    .as_str()
                    .is_some_and(|t| t.contains("file was already removed by interrupted run"))),
            "seed {seed}: held item {id} lost its file and the trail does not say so"
        );
    }
    let mut deletions: HashMap<String, usize> = HashMap::new();
    for e in trail.iter() {
        if e["action"] == "deleted" {
            *deletions
                .entry(e["item_key"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    for id in (1..=ROWS).filter(|i| i % 2 == 0 && !held.contains(i)) {
        assert_eq!(
            deletions.get(&id.to_string()),
            Some(&1),
            "seed {seed}: entries for {id}"
        );
    }
    assert_eq!(
        deletions.len(),
        (ROWS / 2) as usize - held.len(),
        "seed {seed}"
    );
    let v = run(&cfg, &["audit", "verify"]);
    assert_eq!(v.code, Some(0), "seed {seed}: {}", v.stdout);
}

/// The state of a process, from /proc: 'T' when stopped.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

#[test]
fn a_sweep_that_stalls_past_its_lease_records_nothing_twice_and_stops() {
    let d = Tmp::new("stall");
    drop(seed_training(&d, ROWS));
    let cfg = training_config(&d);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "url = \"sqlite://state/lethe-state.db\"",
        "url = \"sqlite://state/lethe-state.db\"\nlease_ttl = \"2s\"",
    );
    std::fs::write(&cfg, text).unwrap();
    ensure_init(&cfg);
    // A stops itself (SIGSTOP) right after its second transaction committed, before that
    // transaction's entries are appended: a stall, not a crash.
    let mut a = lethe_failpoint("after_delete:2:stop")
        .args([
            "sweep",
            "--apply",
            "--batch-size",
            "20",
            "--rows-per-commit",
            "20",
            "--config",
        ])
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = a.id();
    // A test that fails never leaves a stopped process behind.
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if let Some(p) = rustix::process::Pid::from_raw(self.0 as i32) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }
    let _guard = KillOnDrop(pid);
    let started = std::time::Instant::now();
    while proc_state(pid) != Some('T') {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the sweep never stalled"
        );
        if let Ok(Some(status)) = a.try_wait() {
            panic!("the sweep ended instead of stalling: {status:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Silent for longer than its lease: another sweep takes the target over, finds the
    // stalled run's write-ahead record and finishes everything.
    std::thread::sleep(Duration::from_millis(3_500));
    let b = run(&cfg, &["sweep", "--apply"]);
    assert_eq!(b.code, Some(0), "{}{}", b.stdout, b.stderr);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::CONT,
    )
    .unwrap();
    let out = a.wait_with_output().unwrap();
    let a_said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "the stalled sweep stops: {a_said}"
    );
    assert!(
        a_said.contains("another run") || a_said.contains("lease"),
        "{a_said}"
    );
    // Every expired row gone, each with exactly one deletion entry; nothing pending.
    assert_finished(&d, &cfg);
}

/// Issue 10, item 14: the hook is built only with the `failpoints` feature. A build without
/// it (every build but the crash tests') ignores LETHE_FAILPOINT: the sweep runs to the end.
/// A build with it is killed at the point. `scripts/test` runs this test twice: against the
/// test build (the feature on), and against a default `cargo build` (LETHE_TEST_BIN).
#[test]
fn the_failpoint_variable_is_ignored_without_the_feature() {
    let other_binary = std::env::var_os("LETHE_TEST_BIN").is_some_and(|b| !b.is_empty());
    let hooked = if other_binary {
        has_failpoints()
    } else {
        // This build's binary has the hook exactly when this test was built with the feature.
        assert_eq!(
            has_failpoints(),
            cfg!(feature = "failpoints"),
            "--version says whether the hook is built in"
        );
        cfg!(feature = "failpoints")
    };
    let d = Tmp::new("failpoint-ignored");
    drop(seed_training(&d, 20));
    let cfg = training_config(&d);
    ensure_init(&cfg);
    let out = lethe()
        .args(["sweep", "--apply", "--json", "--config"])
        .arg(&cfg)
        .env("LETHE_FAILPOINT", "after_pending:1")
        .output()
        .unwrap();
    let conn = Connection::open(d.path("ai.db")).unwrap();
    if hooked {
        assert_eq!(
            out.status.signal(),
            Some(9),
            "the hook kills the test build"
        );
        return;
    }
    assert_eq!(
        out.status.code(),
        Some(0),
        "a build without the hook ignores LETHE_FAILPOINT: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let alive: Vec<i64> = (1..=20).filter(|i| i % 2 == 1).collect();
    assert_eq!(ids(&conn, "training_records"), alive);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["targets"][0]["deleted"], 10);
    assert_eq!(run(&cfg, &["audit", "verify"]).code, Some(0));
    // Nor does it honour the tests' clock: a sweep told it is 2099 deletes nothing more.
    let out = lethe()
        .args(["sweep", "--apply", "--json", "--config"])
        .arg(&cfg)
        .env("LETHE_TEST_NOW", "2099-01-01T00:00:00Z")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["targets"][0]["deleted"], 0,
        "LETHE_TEST_NOW moved the clock"
    );
    assert_eq!(ids(&conn, "training_records"), alive);
}

/// Issue 10, item 5: deletions in flight are kept by the target's identity. A config that
/// drops the target is refused; renamed, the target's interrupted work is finished and
/// recorded once.
#[test]
fn work_in_flight_follows_a_renamed_target_and_blocks_one_that_was_dropped() {
    let d = Tmp::new("rename-pending");
    let conn = seed_training(&d, ROWS);
    conn.execute_batch(
        "CREATE TABLE other (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL);
         INSERT INTO other VALUES (1, '2000-01-01T00:00:00Z');",
    )
    .unwrap();
    drop(conn);
    let cfg = training_config(&d);
    ensure_init(&cfg);
    let out = lethe_failpoint("after_delete:2")
        .args([
            "sweep",
            "--apply",
            "--batch-size",
            "25",
            "--rows-per-commit",
            "25",
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "killed after deleting");
    let original = std::fs::read_to_string(&cfg).unwrap();

    // Dropped: the only target is now another table. Refused, nothing touched.
    let dropped = original
        .replace("name = \"training_records\"", "name = \"other\"")
        .replace("table = \"training_records\"", "table = \"other\"")
        .replace("retention_days = \"retention_days\"\n", "")
        .replace("subject = \"user_id\"\n", "")
        .replace("file = \"file_path\"\n", "")
        .replace("file_roots = [\"files\"]\n", "");
    std::fs::write(&cfg, &dropped).unwrap();
    let r = run(&cfg, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("training_records") && r.stderr.contains("write-ahead"),
        "{}",
        r.stderr
    );
    let conn = Connection::open(d.path("ai.db")).unwrap();
    assert_eq!(
        ids(&conn, "other"),
        vec![1],
        "nothing deleted while refused"
    );

    // Renamed: the interrupted batches are found by what the target is, and finished.
    std::fs::write(
        &cfg,
        original.replace("name = \"training_records\"", "name = \"datasets\""),
    )
    .unwrap();
    let r = run(&cfg, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let alive: Vec<i64> = (1..=ROWS).filter(|i| i % 2 == 1).collect();
    assert_eq!(ids(&conn, "training_records"), alive);
    let mut deletions: HashMap<String, usize> = HashMap::new();
    let mut renamed_note = false;
    for e in export(&cfg) {
        if e["action"] == "deleted" {
            *deletions
                .entry(e["item_key"].as_str().unwrap().to_string())
                .or_default() += 1;
            renamed_note |= e["detail"]
                .as_str()
                .unwrap_or("")
                .contains("then named training_records");
        }
    }
    assert_eq!(deletions.len(), (ROWS / 2) as usize);
    assert!(
        deletions.values().all(|n| *n == 1),
        "one deletion entry per item"
    );
    assert!(
        renamed_note,
        "recovered entries say what the target was called"
    );
    assert_eq!(run(&cfg, &["audit", "verify"]).code, Some(0));
}

/// A sweep killed after removing a batch's files and before deleting their rows leaves the
/// rows: a hold placed then on one of them is accepted (what is left is kept) and says that
/// the item's deletion was begun; the next sweep keeps the row and its entry says the file
/// was already gone. The trail never shows a protected item as whole when it is not.
#[test]
fn a_hold_on_an_item_whose_deletion_was_begun_says_so_and_the_trail_too() {
    let d = Tmp::new("kill-mid-files-hold");
    drop(seed_training(&d, 40));
    let cfg = training_config(&d);
    super::ensure_init(&cfg);
    let out = lethe_failpoint("mid_files")
        .args(["sweep", "--apply", "--batch-size", "50", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "the failpoint kills the sweep"
    );
    // The batch's files are gone, its rows are not.
    assert!(!d.path("files/ds-2.jsonl").exists());
    let conn = Connection::open(d.path("ai.db")).unwrap();
    assert!(ids(&conn, "training_records").contains(&2));

    let hold = |key: &str| {
        run(
            &cfg,
            &[
                "hold",
                "add",
                "--target",
                "training_records",
                "--key",
                key,
                "--case",
                "C-9",
                "--reason",
                "r",
                "--json",
            ],
        )
    };
    let r = hold("2");
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let placed: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        placed["deletion_begun"]
            .as_str()
            .is_some_and(|run| run.starts_with("run-")),
        "{placed}"
    );
    assert!(
        placed["warning"]
            .as_str()
            .is_some_and(|w| w.contains("may already be removed")),
        "{placed}"
    );
    // An item no run began deleting: no such warning.
    let r = hold("3");
    let placed: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        placed.get("deletion_begun").is_none() && placed.get("warning").is_none(),
        "{placed}"
    );

    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(
        ids(&conn, "training_records").contains(&2),
        "the held row is kept"
    );
    let held: Vec<serde_json::Value> = export(&cfg)
        .into_iter()
        .filter(|e| e["item_key"] == "2" && e["action"] == "held")
        .collect();
    assert!(
        held.iter().any(|e| e["detail"]
            .as_str()
            .is_some_and(|t| t.contains("file was already removed by interrupted run"))),
        "{held:#?}"
    );
    let v = run(&cfg, &["audit", "verify"]);
    assert_eq!(v.code, Some(0), "{}", v.stdout);
}
