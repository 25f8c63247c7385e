//! Erasure and access requests, legal holds and the exception register.

use rusqlite::Connection;

use crate::*;

fn setup(name: &str) -> (Tmp, std::path::PathBuf, Connection) {
    let d = Tmp::new(name);
    let conn = seed_training(&d, 40);
    let cfg = training_config(&d);
    (d, cfg, conn)
}

/// Ids of user-N in seed_training: id % 7 == N.
fn of_user(n: i64) -> Vec<i64> {
    (1..=40).filter(|i| i % 7 == n).collect()
}

#[test]
fn erasure_dry_run_then_apply_removes_every_row_and_file_of_the_subject() {
    let (d, cfg, conn) = setup("erase");
    let before = std::fs::read(d.path("ai.db")).unwrap();
    let r = run(&cfg, &["erase", "--subject", "user-3", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["targets"][0]["found"], of_user(3).len());
    assert!(j["request_id"].as_str().unwrap().starts_with("erasure-"));
    assert_eq!(
        std::fs::read(d.path("ai.db")).unwrap(),
        before,
        "dry run changed the data"
    );

    let r = run(&cfg, &["erase", "--subject", "user-3", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["status"], "completed");
    assert_eq!(
        j["targets"][0]["deleted"],
        of_user(3).len(),
        "alive rows too: erasure ignores windows"
    );
    let left = ids(&conn, "training_records");
    let expected: Vec<i64> = (1..=40).filter(|i| i % 7 != 3).collect();
    assert_eq!(left, expected);
    for id in 1..=40 {
        assert_eq!(
            d.path(&format!("files/ds-{id}.jsonl")).exists(),
            id % 7 != 3
        );
    }
    let id = j["request_id"].as_str().unwrap().to_string();
    let r = run(&cfg, &["erase", "status", &id]);
    assert_eq!(r.code, Some(0));
    assert!(
        r.stdout.contains("deadline") && r.stdout.contains("completed"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("deleted"),
        "receipt lists its audit entries: {}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("user-3"),
        "the receipt holds no raw subject"
    );
    let r = run(&cfg, &["erase", "status", &id, "--json"]);
    let entries = r.json()["entries"].as_array().unwrap().len();
    assert!(entries > of_user(3).len());
    assert_eq!(run(&cfg, &["audit", "verify"]).code, Some(0));
}

#[test]
fn hostile_subjects_are_only_ever_bound_parameters() {
    let (d, cfg, conn) = setup("inject");
    let before = std::fs::read(d.path("ai.db")).unwrap();
    for s in [
        "x' OR '1'='1",
        "\"; DROP TABLE training_records; --",
        "user-1' --",
        "%",
        "ユーザー🙂 \u{202e}",
    ] {
        let r = run(&cfg, &["erase", "--subject", s, "--apply", "--json"]);
        assert_eq!(r.code, Some(0), "{s}: {}", r.stderr);
        assert_eq!(r.json()["targets"][0]["found"], 0, "{s}");
    }
    assert_eq!(ids(&conn, "training_records").len(), 40);
    assert_eq!(std::fs::read(d.path("ai.db")).unwrap(), before);
    for bad in ["", "  "] {
        let r = run(&cfg, &["erase", "--subject", bad]);
        assert_eq!(r.code, Some(2), "empty subject {bad:?}");
    }
}

#[test]
fn a_subject_hold_keeps_expired_rows_through_sweeps_and_erasure_until_released() {
    let (_d, cfg, conn) = setup("hold");
    let r = run(
        &cfg,
        &[
            "hold",
            "add",
            "--subject",
            "user-2",
            "--case",
            "CASE-42",
            "--reason",
            "litigation",
            "--by",
            "legal",
            "--json",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let hold = r.json()["id"].as_str().unwrap().to_string();

    let held_expired: Vec<i64> = of_user(2).into_iter().filter(|i| i % 2 == 0).collect();
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0));
    assert_eq!(r.json()["targets"][0]["held"], held_expired.len());
    for id in &held_expired {
        assert!(
            ids(&conn, "training_records").contains(id),
            "held row {id} was deleted"
        );
    }

    let r = run(&cfg, &["erase", "--subject", "user-2", "--apply", "--json"]);
    assert_eq!(r.code, Some(0));
    let j = r.json();
    assert_eq!(
        j["targets"][0]["held"],
        of_user(2).len(),
        "every item of the subject is withheld"
    );
    assert_eq!(j["targets"][0]["deleted"], 0);
    assert_eq!(j["status"], "completed_with_items_withheld");
    assert_eq!(
        ids(&conn, "training_records")
            .iter()
            .filter(|i| *i % 7 == 2)
            .count(),
        of_user(2).len()
    );

    let list = run(&cfg, &["hold", "list", "--json"]).json();
    assert_eq!(list[0]["case_id"], "CASE-42");
    assert_eq!(list[0]["placed_by"], "legal");
    assert!(list[0]["released_at"].is_null());
    assert!(!run(&cfg, &["hold", "list"]).stdout.contains("user-2"));

    assert_eq!(
        run(&cfg, &["hold", "release", &hold, "--reason", ""]).code,
        Some(2),
        "a release needs a reason"
    );
    let r = run(&cfg, &["hold", "release", &hold, "--reason", "case closed"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        run(&cfg, &["hold", "release", &hold, "--reason", "again"]).code,
        Some(2)
    );
    let list = run(&cfg, &["hold", "list", "--json"]).json();
    assert_eq!(list[0]["release_reason"], "case closed");

    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.json()["targets"][0]["deleted"], held_expired.len());
    for id in &held_expired {
        assert!(!ids(&conn, "training_records").contains(id));
    }
    let log = run(&cfg, &["audit", "log", "--subject", "user-2", "--json"]).json();
    let actions: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "hold_placed",
        "held",
        "hold_released",
        "deleted",
        "erasure_received",
        "erasure_finished",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    assert_eq!(run(&cfg, &["audit", "verify"]).code, Some(0));
}

#[test]
fn item_and_target_holds() {
    let (_d, cfg, conn) = setup("hold-scopes");
    let r = run(
        &cfg,
        &[
            "hold",
            "add",
            "--target",
            "training_records",
            "--key",
            "4",
            "--case",
            "C1",
            "--reason",
            "r",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.json()["targets"][0]["held"], 1);
    assert!(ids(&conn, "training_records").contains(&4));
    assert!(!ids(&conn, "training_records").contains(&6));

    run(
        &cfg,
        &[
            "hold",
            "add",
            "--target",
            "training_records",
            "--case",
            "C2",
            "--reason",
            "freeze",
        ],
    );
    let r = run(&cfg, &["erase", "--subject", "user-1", "--apply", "--json"]);
    assert_eq!(
        r.json()["targets"][0]["deleted"],
        0,
        "a target hold withholds everything"
    );

    for (args, what) in [
        (
            vec![
                "hold", "add", "--target", "nope", "--case", "C", "--reason", "r",
            ],
            "unknown target",
        ),
        (
            vec![
                "hold",
                "add",
                "--target",
                "training_records",
                "--key",
                "999",
                "--case",
                "C",
                "--reason",
                "r",
            ],
            "unknown key",
        ),
        (
            vec![
                "hold",
                "add",
                "--subject",
                "",
                "--case",
                "C",
                "--reason",
                "r",
            ],
            "empty subject",
        ),
        (
            vec!["hold", "add", "--case", "C", "--reason", "r"],
            "nothing to hold",
        ),
    ] {
        let r = run(&cfg, &args);
        assert_eq!(r.code, Some(2), "{what}: {}", r.stderr);
    }
}

#[test]
fn exceptions_keep_within_bounds_refuse_beyond_and_lapse() {
    let (_d, cfg, conn) = setup("exceptions");
    // Row 100 expired a day ago: an exception may keep it up to 30 days past that.
    conn.execute(
        "INSERT INTO training_records VALUES (100, 'ds', 'user-9', '', ?1, 30)",
        [naive(31 * DAY)],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO training_records VALUES (101, 'ds', 'user-9', '', ?1, 30)",
        [naive(31 * DAY)],
    )
    .unwrap();
    let in_10_days = lethe_core::time::Timestamp::from_unix_seconds(now_secs() + 10 * DAY)
        .unwrap()
        .to_rfc3339();
    let in_40_days = lethe_core::time::Timestamp::from_unix_seconds(now_secs() + 40 * DAY)
        .unwrap()
        .to_rfc3339();
    let soon = lethe_core::time::Timestamp::from_unix_seconds(now_secs() + 3)
        .unwrap()
        .to_rfc3339();
    let add = |key: &str, until: &str| {
        run(
            &cfg,
            &[
                "exception",
                "add",
                "--target",
                "training_records",
                "--key",
                key,
                "--until",
                until,
                "--owner",
                "ml-team",
                "--reason",
                "retraining audit",
                "--json",
            ],
        )
    };
    let r = add("100", &in_10_days);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let r = add("100", &in_40_days);
    assert_eq!(r.code, Some(2), "past max_extension must be refused");
    assert!(r.stderr.contains("max_extension"), "{}", r.stderr);
    assert_eq!(add("100", "2020-01-01").code, Some(2), "a date in the past");
    assert_eq!(add("999", &in_10_days).code, Some(2), "unknown key");
    let r = run(
        &cfg,
        &[
            "exception",
            "add",
            "--target",
            "nope",
            "--key",
            "1",
            "--until",
            &in_10_days,
            "--owner",
            "o",
            "--reason",
            "r",
        ],
    );
    assert_eq!(r.code, Some(2), "unknown target");

    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0));
    assert!(
        ids(&conn, "training_records").contains(&100),
        "the exception keeps its item"
    );
    assert!(!ids(&conn, "training_records").contains(&101));
    assert_eq!(r.json()["targets"][0]["held"], 1);

    // One renewal is allowed (max_renewals = 1 by default); a second is refused.
    assert_eq!(add("100", &in_10_days).code, Some(0));
    let r = add("100", &in_10_days);
    assert_eq!(r.code, Some(2), "beyond max_renewals: {}", r.stdout);
    assert!(r.stderr.contains("max_renewals"), "{}", r.stderr);

    // A lapsed exception no longer protects: row 4 (expired) kept for three seconds only.
    conn.execute(
        "INSERT INTO training_records VALUES (102, 'ds', 'user-9', '', ?1, 30)",
        [naive(31 * DAY)],
    )
    .unwrap();
    assert_eq!(add("102", &soon).code, Some(0));
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert!(
        ids(&conn, "training_records").contains(&102),
        "{}",
        r.stdout
    );
    std::thread::sleep(std::time::Duration::from_millis(3200));
    let list = run(&cfg, &["exception", "list", "--json"]).json();
    let statuses: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["item_key"].as_str().unwrap(),
                x["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(statuses.contains(&("102", "lapsed")), "{statuses:?}");
    assert!(
        statuses.contains(&("100", "superseded")) && statuses.contains(&("100", "active")),
        "{statuses:?}"
    );
    run(&cfg, &["sweep", "--apply"]);
    assert!(
        !ids(&conn, "training_records").contains(&102),
        "a lapsed exception no longer protects"
    );

    // Revoking ends it early.
    let active = list
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["status"] == "active")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        run(
            &cfg,
            &[
                "exception",
                "revoke",
                &active,
                "--reason",
                "no longer needed"
            ]
        )
        .code,
        Some(0)
    );
    run(&cfg, &["sweep", "--apply"]);
    assert!(!ids(&conn, "training_records").contains(&100));
    let actions: Vec<String> = export(&cfg)
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    for a in [
        "exception_granted",
        "exception_renewed",
        "exception_revoked",
        "excepted",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a}");
    }
    assert_eq!(run(&cfg, &["audit", "verify"]).code, Some(0));
}

#[test]
fn erase_list_shows_open_requests_with_their_deadline() {
    let (_d, cfg, _conn) = setup("erase-list");
    run(&cfg, &["erase", "--subject", "user-4"]);
    let r = run(&cfg, &["erase", "list"]);
    assert_eq!(r.code, Some(0));
    assert!(
        r.stdout.contains("previewed") && r.stdout.contains("due in"),
        "{}",
        r.stdout
    );
    run(&cfg, &["erase", "--subject", "user-4", "--apply"]);
    let r = run(&cfg, &["erase", "list", "--json"]);
    assert_eq!(
        r.json().as_array().map(Vec::len),
        Some(0),
        "the same request was completed"
    );
    assert_eq!(
        run(&cfg, &["erase", "status", "erasure-nope"]).code,
        Some(2)
    );
}

#[test]
fn access_export_lists_rows_and_files_and_is_recorded_without_contents() {
    let (d, cfg, _conn) = setup("export");
    let out = d.path("export.json");
    let r = run(
        &cfg,
        &["export", "--subject", "user-5", "-o", out.to_str().unwrap()],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let t = &doc["targets"][0];
    assert_eq!(t["target"], "training_records");
    let items = t["items"].as_array().unwrap();
    assert_eq!(items.len(), of_user(5).len());
    assert!(
        items
            .iter()
            .all(|i| i["user_id"] == "user-5" && i["dataset_name"] == "ds")
    );
    let files = t["files"].as_array().unwrap();
    assert_eq!(files.len(), items.len());
    let f = &files[0];
    let content = std::fs::read(f["path"].as_str().unwrap()).unwrap();
    assert_eq!(f["size"], content.len());
    assert_eq!(f["sha256"].as_str().unwrap().len(), 64);
    let entries = export(&cfg);
    let rec = entries
        .iter()
        .find(|e| e["action"] == "access_exported")
        .unwrap();
    assert!(!rec.to_string().contains("user-5") && !rec.to_string().contains("row 5"));
    assert_eq!(run(&cfg, &["audit", "verify"]).code, Some(0));
}

/// Issue 10, item 12: a hold on a subject with no item today is placed, and the placer is
/// told so (a typo would otherwise protect nobody, silently).
#[test]
fn a_hold_on_a_subject_with_no_items_says_so() {
    let d = Tmp::new("hold-nobody");
    drop(seed_training(&d, 4));
    let cfg = training_config(&d);
    let r = run(
        &cfg,
        &[
            "hold",
            "add",
            "--subject",
            "user-3",
            "--case",
            "C",
            "--reason",
            "r",
            "--json",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.json()["warning"].is_null(), "{}", r.stdout);
    let r = run(
        &cfg,
        &[
            "hold",
            "add",
            "--subject",
            "usr-3",
            "--case",
            "C",
            "--reason",
            "r",
            "--json",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let v = r.json();
    assert!(
        v["id"].as_str().is_some_and(|i| i.starts_with("hold-")),
        "{v}"
    );
    assert_eq!(v["matched"], 0);
    assert!(
        v["warning"]
            .as_str()
            .is_some_and(|w| w.contains("usr-3") && w.contains("training_records")),
        "{v}"
    );
    let r = run(
        &cfg,
        &[
            "hold",
            "add",
            "--subject",
            "usr-3",
            "--case",
            "C",
            "--reason",
            "r",
        ],
    );
    assert_eq!(r.code, Some(0));
    assert!(
        r.stderr.contains("warning: no item of \"usr-3\""),
        "{}",
        r.stderr
    );
    let holds = run(&cfg, &["hold", "list", "--json"]).json();
    assert_eq!(
        holds.as_array().map(Vec::len),
        Some(3),
        "every hold was placed"
    );
}

#[test]
fn an_erasure_that_finds_nothing_says_so_and_one_that_finds_something_does_not() {
    let dir = Tmp::new("erase-nothing");
    let conn = seed_training(&dir, 14);
    let cfg = training_config(&dir);
    // Matched exactly as written: a trailing space finds nothing, and the answer says so.
    let r = run(
        &cfg,
        &["erase", "--subject", "user-1 ", "--apply", "--json"],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let w = r.json()["warning"].as_str().unwrap_or_default().to_string();
    assert!(w.contains("matched exactly as written"), "{}", r.stdout);
    assert_eq!(ids(&conn, "training_records").len(), 14);
    let r = run(&cfg, &["erase", "--subject", "user-9 "]);
    assert!(
        r.stdout.contains("warning: no target holds any item"),
        "{}",
        r.stdout
    );
    let r = run(&cfg, &["erase", "--subject", "user-1", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.json()["warning"].is_null(), "{}", r.stdout);
    assert_eq!(ids(&conn, "training_records").len(), 12);
}
