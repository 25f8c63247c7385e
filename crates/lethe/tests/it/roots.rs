//! Files rows own: where their roots are and what a missing directory means.

use crate::*;

/// The failed entries of the trail, as (item key, detail).
fn failed(cfg: &std::path::Path) -> Vec<(String, String)> {
    export(cfg)
        .into_iter()
        .filter(|e| e["action"] == "failed")
        .map(|e| {
            (
                e["item_key"].as_str().unwrap_or_default().to_string(),
                e["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn set_file(conn: &rusqlite::Connection, id: i64, path: &std::path::Path) {
    conn.execute(
        "UPDATE training_records SET file_path = ?1 WHERE id = ?2",
        rusqlite::params![path.to_string_lossy(), id],
    )
    .unwrap();
}

/// Finding 10: a file in a directory that is not there (a volume not mounted) is not
/// "already gone": its row is kept and reported failed with the path, by a sweep and by an
/// erasure, which then does not say "completed". A file missing from a directory that
/// exists is gone, and its row goes.
#[test]
fn a_row_whose_files_directory_is_missing_is_kept_and_failed() {
    let d = Tmp::new("missing-dir");
    let conn = seed_training(&d, 6);
    let cfg = training_config(&d);
    // Row 2 (expired) and row 3 (alive, user-3) own files on a volume that is not mounted.
    set_file(&conn, 2, &d.path("files/vol/ds-2.jsonl"));
    set_file(&conn, 3, &d.path("files/vol/deeper/ds-3.jsonl"));
    // Row 4 (expired) owns a file already gone from a directory that exists.
    std::fs::remove_file(d.path("files/ds-4.jsonl")).unwrap();

    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let t = &r.json()["targets"][0];
    assert_eq!(
        (t["deleted"].as_u64(), t["failed"].as_u64()),
        (Some(2), Some(1)),
        "{t}"
    );
    assert_eq!(ids(&conn, "training_records"), vec![1, 2, 3, 5]);
    let f = failed(&cfg);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].0, "2");
    assert!(
        f[0].1.contains(&d.path("files/vol").display().to_string())
            && f[0].1.contains("does not exist"),
        "{f:?}"
    );

    let r = run(&cfg, &["erase", "--subject", "user-3", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["status"], "failed", "{j}");
    assert_eq!(j["targets"][0]["failed"], 1, "{j}");
    assert_eq!(ids(&conn, "training_records"), vec![1, 2, 3, 5]);
    assert!(
        failed(&cfg)
            .iter()
            .any(|(k, why)| k == "3" && why.contains("files/vol") && why.contains("row kept")),
        "{:?}",
        failed(&cfg)
    );
    assert_eq!(run(&cfg, &["audit", "verify"]).code, Some(0));
}
