use rusqlite::Connection;

use crate::*;

fn swept(name: &str) -> (Tmp, std::path::PathBuf) {
    let d = Tmp::new(name);
    drop(seed_training(&d, 30));
    let cfg = training_config(&d);
    assert_eq!(run(&cfg, &["sweep"]).code, Some(0));
    let r = run(&cfg, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    (d, cfg)
}

fn verify(cfg: &std::path::Path) -> Run {
    run(cfg, &["audit", "verify"])
}

#[test]
fn verify_passes_intact_and_fails_on_any_single_alteration_or_removal() {
    let (d, cfg) = swept("tamper");
    let r = verify(&cfg);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("intact"));
    let state = d.path("state/lethe-state.db");
    let pristine = d.path("pristine.db");
    let restore = || {
        // WAL is checkpointed into the main file by the copy below being taken after close.
        std::fs::copy(&pristine, &state).unwrap();
        let _ = std::fs::remove_file(d.path("state/lethe-state.db-wal"));
        let _ = std::fs::remove_file(d.path("state/lethe-state.db-shm"));
    };
    {
        let c = Connection::open(&state).unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
    std::fs::copy(&state, &pristine).unwrap();
    let n: i64 = Connection::open(&state)
        .unwrap()
        .query_row("SELECT max(seq) FROM audit", [], |r| r.get(0))
        .unwrap();
    assert!(n > 30, "{n}");

    let tamper = [
        ("alter an action", "UPDATE audit SET action = 'held' WHERE seq = 10".to_string()),
        ("alter a key", "UPDATE audit SET item_key = '999' WHERE seq = 20".into()),
        ("alter a timestamp", "UPDATE audit SET decided_at = '2020-01-01T00:00:00Z' WHERE seq = 1".into()),
        ("remove a middle entry", "DELETE FROM audit WHERE seq = 15".into()),
        ("remove the first entry", "DELETE FROM audit WHERE seq = 1".into()),
        ("remove the last entry", format!("DELETE FROM audit WHERE seq = {n}")),
        (
            "remove the last entry and re-point the seal",
            format!("DELETE FROM audit WHERE seq = {n}; UPDATE audit_seal SET seq = {m}, hash = (SELECT hash FROM audit WHERE seq = {m})", m = n - 1),
        ),
        ("remove the seal", "DELETE FROM audit_seal".into()),
        (
            "swap two entries",
            "UPDATE audit SET seq = -1 WHERE seq = 5; UPDATE audit SET seq = 5 WHERE seq = 6; UPDATE audit SET seq = 6 WHERE seq = -1".into(),
        ),
        (
            "insert a forged entry",
            "UPDATE audit SET seq = seq + 1000 WHERE seq > 7; UPDATE audit SET seq = seq - 999 WHERE seq > 1000; INSERT INTO audit SELECT 8, decided_at, run_id, 'deleted', target, '12345', category, reason, policy_window, expires_at, subject_hash, detail, hash, hash FROM audit WHERE seq = 7".into(),
        ),
    ];
    for (what, sql) in tamper {
        restore();
        Connection::open(&state)
            .unwrap()
            .execute_batch(&sql)
            .unwrap();
        let r = verify(&cfg);
        assert_eq!(r.code, Some(1), "{what}: verify should fail: {}", r.stdout);
        assert!(r.stdout.contains("BROKEN"), "{what}: {}", r.stdout);
    }
    restore();
    assert_eq!(verify(&cfg).code, Some(0), "restored trail verifies again");
}

#[test]
fn the_state_holds_no_raw_subject_yet_answers_what_happened() {
    let (d, cfg) = swept("subjects");
    for f in std::fs::read_dir(d.path("state")).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("user-"), "a raw subject id is in the state");
    }
    // user-2's rows are ids 2, 9, 16, 23, 30; the even ones were expired and deleted.
    let r = run(&cfg, &["audit", "log", "--subject", "user-2", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let mut deleted: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "deleted")
        .map(|e| e["item_key"].as_str().unwrap().to_string())
        .collect();
    deleted.sort();
    assert_eq!(deleted, vec!["16", "2", "30"]);

    let r = run(
        &cfg,
        &[
            "audit",
            "log",
            "--target",
            "training_records",
            "--key",
            "4",
            "--json",
        ],
    );
    let actions: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, vec!["would_delete", "deleted"]);

    let r = run(&cfg, &["audit", "export", "--format", "csv"]);
    assert_eq!(r.code, Some(0));
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("seq,decided_at,run_id,action"));
    assert_eq!(lines.len() - 1, export(&cfg).len());
}

#[test]
fn key_from_environment_is_used_and_required_when_named() {
    let d = Tmp::new("keyenv");
    drop(seed_training(&d, 4));
    let cfg = training_config(&d);
    let text = std::fs::read_to_string(&cfg).unwrap() + "\n[audit]\nkey_env = \"LETHE_TEST_KEY\"\n";
    std::fs::write(&cfg, text).unwrap();
    let r = run(&cfg, &["sweep"]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("LETHE_TEST_KEY"), "{}", r.stderr);
    let secret = "correct horse battery staple 42";
    let r = run_env(&cfg, &[("LETHE_TEST_KEY", secret)], &["init"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let out = lethe()
        .args(["sweep", "--apply", "--config"])
        .arg(&cfg)
        .env("LETHE_TEST_KEY", secret)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
    assert!(
        !d.path("state/lethe-state.db.key").exists(),
        "no key file when the key comes from the environment"
    );
    // Verifying with another key fails the seal: the key really seals the trail.
    let out = lethe()
        .args(["audit", "verify", "--config"])
        .arg(&cfg)
        .env("LETHE_TEST_KEY", "a different key of enough length")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = lethe()
        .args(["audit", "verify", "--config"])
        .arg(&cfg)
        .env("LETHE_TEST_KEY", secret)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn key_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let (d, _cfg) = swept("keyfile");
    let mode = std::fs::metadata(d.path("state/lethe-state.db.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn audit_log_asks_what_to_look_up_and_a_key_goes_with_its_target() {
    // The library looks up any combination (the API's GET /v1/audit/entries takes them all);
    // the command line keeps asking someone at a terminal to say what they mean.
    let (_d, cfg) = swept("log-args");
    let r = run(&cfg, &["audit", "log"]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("say what to look up"), "{}", r.stderr);
    let r = run(&cfg, &["audit", "log", "--key", "2"]);
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("--target"), "{}", r.stderr);
    let r = run(
        &cfg,
        &["audit", "log", "--target", "training_records", "--key", "2"],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
}
