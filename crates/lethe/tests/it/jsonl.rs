//! The toy `jsonl` connector (feature `jsonl-connector`), added as one folder and one
//! registration line, driven through the CLI like any other target: check, a dry run, a
//! hold, an apply, an erasure, an export, and a trail that verifies.

use std::path::PathBuf;

use crate::{Tmp, naive, run};

fn item(id: &str, days_ago: i64, user: &str) -> String {
    serde_json::json!({ "id": id, "created_at": naive(days_ago * 86_400), "user": user, "text": "hello" })
        .to_string()
}

fn ids(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_string))
        })
        .collect()
}

fn setup(dir: &Tmp) -> (PathBuf, PathBuf) {
    let lines = [
        item("old-1", 40, "u1"),
        item("old-2", 40, "u2"),
        item("old-3", 40, "u1"),
        item("new-1", 1, "u1"),
        item("new-2", 1, "u2"),
        "not json at all".to_string(),
    ];
    let data = dir.path("notes.jsonl");
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let cfg = dir.path("lethe.toml");
    std::fs::write(
        &cfg,
        "[state]\nurl = \"sqlite://state.db\"\n[categories.notes]\nretention = \"30d\"\n\
         [[targets]]\nname = \"notes\"\ntype = \"jsonl\"\npath = \"notes.jsonl\"\n\
         category = \"notes\"\nsubject = \"user\"\n",
    )
    .unwrap();
    (cfg, data)
}

#[test]
fn a_connector_added_as_one_folder_sweeps_erases_and_exports_through_the_cli() {
    let dir = Tmp::new("jsonl");
    let (cfg, data) = setup(&dir);
    let all = ids(&data);

    let r = run(&cfg, &["check", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["targets"][0]["past_expiry"], 3, "{v}");
    assert_eq!(v["targets"][0]["unreadable"], 1, "{v}");

    // A dry run touches nothing.
    let r = run(&cfg, &["sweep", "--json"]);
    assert_eq!(
        r.code,
        Some(1),
        "the unreadable line is a failure: {}",
        r.stdout
    );
    assert_eq!(ids(&data), all);

    let r = run(
        &cfg,
        &[
            "hold", "add", "--target", "notes", "--key", "old-2", "--case", "C-1", "--reason", "r",
        ],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);

    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let t = &v["targets"][0];
    assert_eq!(
        (t["deleted"].as_u64(), t["held"].as_u64()),
        (Some(2), Some(1)),
        "{v}"
    );
    assert_eq!(t["failed"], 1, "the line that is not JSON: {v}");
    assert_eq!(ids(&data), ["old-2", "new-1", "new-2"]);
    assert!(
        std::fs::read_to_string(&data)
            .unwrap()
            .contains("not json at all"),
        "an item that cannot be named is never deleted"
    );

    // Erasure reaches the subject's items, but not the held one.
    let r = run(&cfg, &["erase", "--subject", "u1", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&data), ["old-2", "new-2"]);

    let out = dir.path("u2.json");
    let r = run(
        &cfg,
        &["export", "--subject", "u2", "-o", out.to_str().unwrap()],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let items: Vec<&str> = v["targets"][0]["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(items, ["old-2", "new-2"]);

    let r = run(&cfg, &["audit", "log", "--target", "notes", "--json"]);
    let entries: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    let deleted: Vec<&str> = entries
        .iter()
        .filter(|e| e["action"] == "deleted")
        .filter_map(|e| e["item_key"].as_str())
        .collect();
    assert_eq!(deleted, ["old-1", "old-3", "new-1"], "{entries:#?}");
    let r = run(&cfg, &["audit", "verify"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
}

/// A store without transactions whose delete fails as a whole cannot say what it removed:
/// nothing is recorded (neither deleted nor failed), the batch stays written ahead, and the
/// next run looks each item up and records what is gone exactly once.
#[test]
fn a_delete_that_cannot_say_what_it_removed_records_nothing_until_the_items_are_looked_up() {
    let dir = Tmp::new("jsonl-unknown");
    let (cfg, data) = setup(&dir);
    // The rewrite goes through notes.jsonl.tmp: a directory there makes it fail.
    let blocker = dir.path("notes.jsonl.tmp");
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("x"), "x").unwrap();

    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("did not say which items"), "{}", r.stdout);
    let log = |cfg: &std::path::Path| -> Vec<(String, String)> {
        let r = run(cfg, &["audit", "log", "--target", "notes", "--json"]);
        let entries: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
        entries
            .iter()
            .filter(|e| e["action"] == "deleted" || e["action"] == "failed")
            .map(|e| {
                (
                    e["action"].as_str().unwrap().to_string(),
                    e["item_key"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert!(
        log(&cfg).iter().all(|(_, k)| !k.starts_with("old-")),
        "nothing recorded for the batch: {:?}",
        log(&cfg)
    );
    assert_eq!(ids(&data).len(), 5, "nothing deleted");

    std::fs::remove_dir_all(&blocker).unwrap();
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["targets"][0]["deleted"], 3, "{v}");
    assert_eq!(ids(&data), ["new-1", "new-2"]);
    let mut deleted: Vec<String> = log(&cfg)
        .into_iter()
        .filter(|(a, _)| a == "deleted")
        .map(|(_, k)| k)
        .collect();
    deleted.sort();
    assert_eq!(deleted, ["old-1", "old-2", "old-3"], "each exactly once");
    let r = run(&cfg, &["audit", "verify"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
}
