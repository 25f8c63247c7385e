//! `lethe audit reconcile`: the stores checked against the trail. An honest store
//! reconciles at 100%; each planted mismatch (a row the trail records deleted put back, an
//! expired row a sweep passed over in silence, a vendor file put back) is found by target and
//! key, exit 1; a new row under a deleted row's key is not a mismatch.

use crate::vendor::{KEY, config as vendor_config, env as vendor_env};
use crate::vendor_fake::{Fake, FileSpec};
use crate::*;

fn reconcile(cfg: &Path, env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut a = vec!["audit", "reconcile", "--json"];
    a.extend_from_slice(args);
    let r = run_env(cfg, env, &a);
    let j = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", r.stdout, r.stderr));
    (r.code, j)
}

fn mismatched_keys(j: &serde_json::Value) -> Vec<String> {
    j["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn reconcile_finds_each_planted_mismatch_and_passes_an_honest_store() {
    let d = Tmp::new("reconcile-sql");
    let conn = seed_training(&d, 40);
    let cfg = training_config(&d);
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);

    // Honest: 20 deletions absent, nothing past expiry left.
    let (code, j) = reconcile(&cfg, &[], &[]);
    assert_eq!(code, Some(0), "{j}");
    assert_eq!(j["success_rate"], 1.0, "{j}");
    assert_eq!(j["targets"][0]["deleted_checked"], 20, "{j}");
    assert_eq!(j["targets"][0]["deleted_absent"], 20, "{j}");

    // Planted: row 2 put back as it was (the trail says deleted); row 101 expired 10 days
    // ago, inserted behind the trail's back, with the sweep above run after its expiry
    // (planted by moving its expiry before the sweep: its created_at is old); row 4 reused
    // for a new row created now (not a mismatch).
    let insert = |id: i64, age: i64| {
        conn.execute(
            "INSERT INTO training_records (id, dataset_name, user_id, file_path, created_at, retention_days) VALUES (?1, 'ds', 'u', '', ?2, 30)",
            rusqlite::params![id, naive(age)],
        )
        .unwrap();
    };
    insert(2, 40 * DAY);
    insert(101, 40 * DAY);
    // Created after the deletion (timestamps in the table are to the quarter second).
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    insert(4, 0);
    let (code, j) = reconcile(&cfg, &[], &[]);
    assert_eq!(code, Some(1), "{j}");
    let mut keys = mismatched_keys(&j);
    keys.sort();
    assert_eq!(keys, vec!["101".to_string(), "2".to_string()], "{j}");
    assert_eq!(j["targets"][0]["recreated"], 1, "row 4 is a new row: {j}");
    let rate = j["success_rate"].as_f64().unwrap();
    assert!(rate < 1.0 && rate > 0.9, "{j}");

    // The human output names each mismatch by target and key.
    let r = run(&cfg, &["audit", "reconcile"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stdout.contains("MISMATCH training_records 2:")
            && r.stdout.contains("MISMATCH training_records 101:"),
        "{}",
        r.stdout
    );

    // A sample looks up at most N recorded deletions; an unknown target is bad usage.
    let (_, j) = reconcile(&cfg, &[], &["--sample", "5"]);
    assert_eq!(j["targets"][0]["deleted_checked"], 5, "{j}");
    let r = run(&cfg, &["audit", "reconcile", "--target", "nope"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);

    // Swept again, row 101 is deleted and row 2 too (recorded once more): honest again.
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let (code, j) = reconcile(&cfg, &[], &[]);
    assert_eq!(code, Some(0), "{j}");
    assert_eq!(j["success_rate"], 1.0, "{j}");
}

#[test]
fn reconcile_looks_vendor_files_up_by_get() {
    let dir = Tmp::new("reconcile-vendor");
    let fake = Fake::openai(KEY);
    let t = now_secs();
    let ids = fake.add_files((0..12).map(|i| FileSpec::new("batch", t - 40 * DAY - i)));
    let cfg = vendor_config(&dir, "openai_files", &fake.base_url(), "");
    let r = run_env(&cfg, &vendor_env(), &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let writes = |f: &Fake| f.requests().iter().filter(|r| r.method != "GET").count();
    let before = writes(&fake);
    let (code, j) = reconcile(&cfg, &vendor_env(), &[]);
    assert_eq!(code, Some(0), "{j}");
    assert_eq!(j["targets"][0]["deleted_absent"], 12, "{j}");

    // A deleted file back at the vendor (restored, or the DELETE not applied after all).
    fake.add_file(FileSpec {
        id: Some(ids[3].clone()),
        ..FileSpec::new("batch", t - 40 * DAY)
    });
    let (code, j) = reconcile(&cfg, &vendor_env(), &[]);
    assert_eq!(code, Some(1), "{j}");
    assert_eq!(mismatched_keys(&j), vec![ids[3].clone()], "{j}");
    assert_eq!(writes(&fake), before, "reconcile only reads");
}

/// A dry run after a restore records the restored row as due: the trail then knows the item,
/// but also says it was deleted, and the row is the one deleted (created before): still a
/// mismatch. `--sample 0` would check nothing: bad usage.
#[test]
fn a_dry_run_after_a_restore_does_not_hide_the_restored_row() {
    let d = Tmp::new("reconcile-dry");
    let conn = seed_training(&d, 10);
    let cfg = training_config(&d);
    assert_eq!(run(&cfg, &["sweep", "--apply"]).code, Some(0));
    conn.execute(
        "INSERT INTO training_records (id, dataset_name, user_id, file_path, created_at, retention_days) VALUES (2, 'ds', 'u', '', ?1, 30)",
        [naive(40 * DAY)],
    )
    .unwrap();
    assert_eq!(run(&cfg, &["sweep"]).code, Some(0), "a dry run");
    let (code, j) = reconcile(&cfg, &[], &[]);
    assert_eq!(code, Some(1), "{j}");
    assert_eq!(mismatched_keys(&j), vec!["2".to_string()], "{j}");
    assert_eq!(j["clean"], false, "{j}");
    let r = run(&cfg, &["audit", "reconcile", "--sample", "0"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
}
