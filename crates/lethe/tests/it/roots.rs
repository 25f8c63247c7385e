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

/// Finding 11: a root that is a symbolic link is resolved once; rows are matched against the
/// resolved path only (a path written through the link is outside), and the trail records
/// the resolved root.
#[test]
fn a_linked_root_matches_only_its_resolved_path_and_is_recorded() {
    let d = Tmp::new("linked-root");
    let conn = seed_training(&d, 4);
    std::fs::rename(d.path("files"), d.path("real")).unwrap();
    std::os::unix::fs::symlink(d.path("real"), d.path("files")).unwrap();
    let cfg = training_config(&d);
    // Row 2 names its file through the link, row 4 by its resolved path.
    set_file(&conn, 2, &d.path("files/ds-2.jsonl"));
    set_file(&conn, 4, &d.path("real/ds-4.jsonl"));

    let r = run(&cfg, &["check"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&conn, "training_records"), vec![1, 2, 3]);
    assert!(
        d.path("real/ds-2.jsonl").exists(),
        "matched through the link"
    );
    assert!(!d.path("real/ds-4.jsonl").exists());
    let f = failed(&cfg);
    assert!(
        f.iter().any(|(k, why)| k == "2"
            && why.contains("outside file_roots")
            && why.contains(&d.path("real").display().to_string())),
        "{f:?}"
    );
    let finished: Vec<String> = export(&cfg)
        .into_iter()
        .filter(|e| e["action"] == "sweep_finished")
        .map(|e| e["detail"].as_str().unwrap_or_default().to_string())
        .collect();
    let resolved = serde_json::to_string(&d.path("real").display().to_string()).unwrap();
    assert!(
        finished.iter().any(|s| s.contains(&resolved)),
        "the resolved root {resolved} is in the trail: {finished:?}"
    );
}

/// Finding 11: a root that is, or resolves to, `/` puts every file on the machine in reach:
/// `check` and `sweep` refuse it, naming the key and the target, and nothing is touched.
#[test]
fn a_root_that_resolves_to_slash_is_refused_by_check_and_sweep() {
    let d = Tmp::new("slash-root");
    let conn = seed_training(&d, 4);
    std::os::unix::fs::symlink("/", d.path("everything")).unwrap();
    let up = "../".repeat(d.0.components().count() + 2);
    for root in ["/".to_string(), "everything".to_string(), up] {
        let cfg = training_config(&d);
        let text = std::fs::read_to_string(&cfg).unwrap().replace(
            "file_roots = [\"files\"]",
            &format!("file_roots = [{root:?}]"),
        );
        std::fs::write(&cfg, text).unwrap();
        for args in [&["check"][..], &["sweep", "--apply"][..]] {
            let r = run(&cfg, args);
            assert_eq!(r.code, Some(2), "{root} {args:?}: {}{}", r.stdout, r.stderr);
            let said = format!("{}{}", r.stdout, r.stderr);
            assert!(
                said.contains("targets.training_records")
                    && said.contains("file_roots")
                    && said.contains("resolves to /"),
                "{root} {args:?}: {said}"
            );
        }
        assert_eq!(ids(&conn, "training_records"), vec![1, 2, 3, 4]);
        assert!(d.path("files/ds-2.jsonl").exists());
    }
}
