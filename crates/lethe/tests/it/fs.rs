//! `filesystem` targets: model-artifact trees judged by modification time.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::*;

fn aged(path: &Path, days: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"weights").unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(days * 86_400))
        .unwrap();
}

fn tree(d: &Tmp) -> std::path::PathBuf {
    let root = d.path("models");
    aged(&root.join("run1/a.pt"), 100);
    aged(&root.join("run1/b.pt"), 10);
    aged(&root.join("run1/notes.txt"), 100);
    aged(&root.join("run2/deep/c.onnx"), 100);
    aged(&root.join("keep/d.pt"), 100);
    aged(&d.path("outside/secret.pt"), 100);
    aged(&d.path("outside/deep/old.pt"), 100);
    std::os::unix::fs::symlink(d.path("outside/secret.pt"), root.join("link.pt")).unwrap();
    std::os::unix::fs::symlink(d.path("outside"), root.join("linkdir")).unwrap();
    std::fs::create_dir_all(root.join("adir.pt")).unwrap();
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        r#"[state]
url = "sqlite://state.db"
[categories.model_artifact]
retention = "60d"
[[targets]]
name = "checkpoints"
type = "filesystem"
root = "models"
category = "model_artifact"
suffixes = [".pt", ".onnx"]
exclude = ["keep/**"]
prune_empty_dirs = true
"#,
    )
    .unwrap();
    cfg
}

#[test]
fn old_artifacts_go_links_dirs_and_the_outside_stay() {
    let d = Tmp::new("fs");
    let cfg = tree(&d);
    let r = run(&cfg, &["check"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let r = run(&cfg, &["sweep", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["targets"][0]["found"], 2);
    assert!(d.path("models/run1/a.pt").exists(), "a dry run deleted");

    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let t = &r.json()["targets"][0];
    assert_eq!(
        (t["deleted"].as_u64(), t["files_removed"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(!d.path("models/run1/a.pt").exists());
    assert!(
        !d.path("models/run2").exists(),
        "an emptied directory is pruned"
    );
    for kept in [
        "models/run1/b.pt",
        "models/run1/notes.txt",
        "models/keep/d.pt",
        "outside/secret.pt",
        "outside/deep/old.pt",
    ] {
        assert!(d.path(kept).exists(), "{kept} was deleted");
    }
    assert!(d.path("models/link.pt").is_symlink());
    assert!(d.path("models/adir.pt").is_dir());
    let keys: Vec<String> = export(&cfg)
        .iter()
        .filter(|e| e["action"] == "deleted")
        .map(|e| e["item_key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 2);
    assert!(
        keys.contains(&"run1/a.pt".to_string()) && keys.contains(&"run2/deep/c.onnx".to_string())
    );
    assert_eq!(run(&cfg, &["audit", "verify"]).code, Some(0));
}

#[test]
fn holds_keep_files_and_a_killed_sweep_finishes() {
    let d = Tmp::new("fs-hold");
    let cfg = tree(&d);
    let r = run(
        &cfg,
        &[
            "hold",
            "add",
            "--target",
            "checkpoints",
            "--key",
            "run1/a.pt",
            "--case",
            "C",
            "--reason",
            "eval dispute",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let out = lethe()
        .args(["sweep", "--apply", "--config"])
        .arg(&cfg)
        .env("LETHE_FAILPOINT", "mid_files")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9));
    assert!(
        !d.path("models/run2/deep/c.onnx").exists(),
        "removed before the kill"
    );
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(d.path("models/run1/a.pt").exists(), "held");
    let deletions = export(&cfg)
        .iter()
        .filter(|e| e["action"] == "deleted" && e["item_key"] == "run2/deep/c.onnx")
        .count();
    assert_eq!(
        deletions, 1,
        "exactly one entry for the file removed before the kill"
    );
    assert_eq!(run(&cfg, &["audit", "verify"]).code, Some(0));
}
