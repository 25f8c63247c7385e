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
    let out = lethe_failpoint("mid_files")
        .args(["sweep", "--apply", "--config"])
        .arg(&cfg)
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

/// Every path under `dir` (links not followed) with its kind, size and modification time.
fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, (String, u64, i128)> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let kind = if m.is_symlink() {
                format!("link->{}", std::fs::read_link(e.path()).unwrap().display())
            } else if m.is_dir() {
                stack.push(e.path());
                "dir".into()
            } else {
                "file".into()
            };
            let mtime = m
                .modified()
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as i128;
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            out.insert(rel, (kind, if m.is_dir() { 0 } else { m.len() }, mtime));
        }
    }
    out
}

/// Issue 5's acceptance: a checkpoint tree with aged and young weights, aged configs and
/// READMEs, and links to a file and to a directory outside the root.
#[test]
fn checkpoint_tree_loses_exactly_its_aged_allowlisted_files() {
    let d = Tmp::new("ckpt");
    let root = d.path("ckpt");
    let aged_weights = [
        "run-a/model.pt",
        "run-a/model.safetensors",
        "run-a/export/model.onnx",
    ];
    for f in aged_weights {
        aged(&root.join(f), 90);
    }
    for f in [
        "run-b/model.pt",
        "run-b/model.safetensors",
        "run-b/model.onnx",
    ] {
        aged(&root.join(f), 3);
    }
    for f in [
        "run-a/config.json",
        "run-a/README.md",
        "config.yaml",
        "run-a/tokenizer.txt",
    ] {
        aged(&root.join(f), 90);
    }
    aged(&d.path("outside/weights.safetensors"), 90);
    aged(&d.path("outside/sub/old.pt"), 90);
    std::os::unix::fs::symlink(
        d.path("outside/weights.safetensors"),
        root.join("run-a/linked.safetensors"),
    )
    .unwrap();
    std::os::unix::fs::symlink(d.path("outside"), root.join("run-a/linked-dir")).unwrap();
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        r#"[state]
url = "sqlite://state/lethe.db"
[categories.model_artifact]
retention = "60d"
[[targets]]
name = "checkpoints"
type = "filesystem"
root = "ckpt"
category = "model_artifact"
suffixes = [".pt", ".pth", ".onnx", ".safetensors", ".bin", ".pkl"]
"#,
    )
    .unwrap();
    std::fs::create_dir_all(d.path("state")).unwrap();
    let before_root = snapshot(&root);
    let before_out = snapshot(&d.path("outside"));

    let r = run(&cfg, &["sweep", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["targets"][0]["found"], 3, "{}", r.stdout);
    assert_eq!(snapshot(&root), before_root, "a dry run changed the tree");
    assert_eq!(snapshot(&d.path("outside")), before_out);

    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["targets"][0]["deleted"], 3, "{}", r.stdout);
    // Removing a file changes its directory's mtime; files and links must be untouched.
    let no_dir_times = |mut m: std::collections::BTreeMap<String, (String, u64, i128)>| {
        for v in m.values_mut().filter(|v| v.0 == "dir") {
            v.2 = 0;
        }
        m
    };
    let mut expected = no_dir_times(before_root.clone());
    for f in aged_weights {
        expected.remove(f);
    }
    assert_eq!(no_dir_times(snapshot(&root)), expected);
    assert_eq!(
        snapshot(&d.path("outside")),
        before_out,
        "something outside was touched"
    );
    assert_eq!(run(&cfg, &["audit", "verify"]).code, Some(0));
}

/// The sweep_finished details of the trail.
fn finished(cfg: &Path) -> Vec<String> {
    export(cfg)
        .into_iter()
        .filter(|e| e["action"] == "sweep_finished")
        .map(|e| e["detail"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn fs_config(cfg: &Path, root: &str, extra: &str) {
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::write(
        cfg,
        format!(
            r#"[state]
url = "sqlite://state.db"
[categories.model_artifact]
retention = "60d"
[[targets]]
name = "checkpoints"
type = "filesystem"
root = {root:?}
category = "model_artifact"
suffixes = [".pt"]
{extra}
"#
        ),
    )
    .unwrap();
}

/// Finding 11: a `root` above the config's directory, or through a link, is resolved once:
/// `check` and `sweep --apply` agree (both work), and the trail records the resolved root.
#[test]
fn a_root_above_the_config_or_through_a_link_works_in_check_and_sweep() {
    let d = Tmp::new("fs-up");
    std::os::unix::fs::symlink(d.path("models"), d.path("models-link")).unwrap();
    for (i, root) in ["../models", "../models-link"].into_iter().enumerate() {
        aged(&d.path("models/run1/a.pt"), 100);
        aged(&d.path("models/run1/b.pt"), 10);
        let cfg = d.path(&format!("conf{i}/lethe.toml"));
        fs_config(&cfg, root, "");
        let r = run(&cfg, &["check"]);
        assert_eq!(r.code, Some(0), "{root}: {}{}", r.stdout, r.stderr);
        let r = run(&cfg, &["sweep", "--apply", "--json"]);
        assert_eq!(r.code, Some(0), "{root}: {}{}", r.stdout, r.stderr);
        let t = &r.json()["targets"][0];
        assert_eq!(
            (t["deleted"].as_u64(), t["failed"].as_u64()),
            (Some(1), Some(0)),
            "{root}: {t}"
        );
        assert!(!d.path("models/run1/a.pt").exists(), "{root}");
        assert!(d.path("models/run1/b.pt").exists(), "{root}");
        let resolved = serde_json::to_string(&d.path("models").display().to_string()).unwrap();
        assert!(
            finished(&cfg).iter().any(|s| s.contains(&resolved)),
            "{root}: the resolved root is in the trail: {:?}",
            finished(&cfg)
        );
    }
}

/// Finding 11: a `root` that resolves to `/` is refused before anything is walked.
/// (Dry runs only: on a build without the refusal this would walk the whole machine.)
#[test]
fn a_filesystem_root_that_resolves_to_slash_is_refused() {
    let d = Tmp::new("fs-slash");
    std::os::unix::fs::symlink("/", d.path("everything")).unwrap();
    for root in ["/", "everything", "../../../../../../../../../../../../.."] {
        let cfg = d.path("lethe.toml");
        fs_config(&cfg, root, "include = [\"no-such-dir-lethe-test/**\"]");
        for args in [&["check"][..], &["sweep"][..]] {
            let r = run(&cfg, args);
            assert_eq!(r.code, Some(2), "{root} {args:?}: {}{}", r.stdout, r.stderr);
            let said = format!("{}{}", r.stdout, r.stderr);
            assert!(
                said.contains("targets.checkpoints")
                    && said.contains("root")
                    && said.contains("resolves to /"),
                "{root} {args:?}: {said}"
            );
        }
    }
}

/// Runs lethe as root without the capabilities that let root read any directory, so a
/// directory with mode 000 is unreadable to it as it would be to any other user.
fn run_without_dac_override(cfg: &Path, args: &[&str]) -> Run {
    let mut c = if rustix::process::geteuid().is_root() {
        let mut c = std::process::Command::new("setpriv");
        c.arg("--bounding-set=-dac_override,-dac_read_search")
            .arg(env!("CARGO_BIN_EXE_lethe"));
        c
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
    };
    c.env_remove("LETHE_CONFIG").env_remove("LETHE_FAILPOINT");
    super::ensure_init(cfg);
    c.args(args).arg("--config").arg(cfg);
    let out = c.output().expect("setpriv (util-linux) runs lethe");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Finding 12: a directory that cannot be listed and names that are not UTF-8 are each a
/// failed item named by its (lossy) path; the rest of the tree is still swept, and nothing
/// that cannot be named exactly is deleted.
#[test]
fn unlistable_dirs_and_non_utf8_names_are_failed_by_name_and_the_rest_goes_on() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let d = Tmp::new("fs-unreadable");
    let root = d.path("models");
    aged(&root.join("ok/c.pt"), 100);
    aged(&root.join("ok/young.pt"), 1);
    aged(&root.join("locked/a.pt"), 100);
    let bad_file = root.join(OsStr::from_bytes(b"bad\xff.pt"));
    let bad_dir = root.join(OsStr::from_bytes(b"dir\xfe"));
    aged(&bad_file, 100);
    aged(&bad_dir.join("x.pt"), 100);
    aged(&root.join(OsStr::from_bytes(b"other\xff.txt")), 100);
    std::fs::set_permissions(root.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let cfg = d.path("lethe.toml");
    fs_config(&cfg, "models", "");

    let r = run_without_dac_override(&cfg, &["sweep", "--apply", "--json"]);
    std::fs::set_permissions(root.join("locked"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let t = &r.json()["targets"][0];
    assert!(
        t["error"].is_null(),
        "one directory stopped the target: {t}"
    );
    assert_eq!(
        (t["deleted"].as_u64(), t["failed"].as_u64()),
        (Some(1), Some(3)),
        "{t}"
    );
    assert!(!root.join("ok/c.pt").exists());
    for kept in [
        root.join("ok/young.pt"),
        root.join("locked/a.pt"),
        bad_file,
        bad_dir.join("x.pt"),
    ] {
        assert!(kept.exists(), "{} was deleted", kept.display());
    }
    let failed: Vec<(String, String)> = export(&cfg)
        .into_iter()
        .filter(|e| e["action"] == "failed")
        .map(|e| {
            (
                e["item_key"].as_str().unwrap_or_default().to_string(),
                e["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let why = |k: &str| {
        failed
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, d)| d.clone())
            .unwrap_or_default()
    };
    assert!(why("locked").contains("cannot list"), "{failed:?}");
    assert!(why("bad\u{fffd}.pt").contains("UTF-8"), "{failed:?}");
    assert!(why("dir\u{fffd}/x.pt").contains("UTF-8"), "{failed:?}");
    assert_eq!(run(&cfg, &["audit", "verify"]).code, Some(0));
}

/// Finding 12: an `include`/`exclude` pattern starting with `/` is anchored at the root
/// (it used to match nothing), and a pattern that is not a glob is refused, naming its key.
#[test]
fn patterns_are_anchored_at_the_root_and_bad_ones_are_refused() {
    let d = Tmp::new("fs-globs");
    let root = d.path("models");
    aged(&root.join("run1/a.pt"), 100);
    aged(&root.join("run1/keep/b.pt"), 100);
    aged(&root.join("run2/c.pt"), 100);
    aged(&root.join("x/run1/d.pt"), 100);
    let cfg = d.path("lethe.toml");
    fs_config(
        &cfg,
        "models",
        "include = [\"/run1/**\"]\nexclude = [\"/run1/keep/*\"]",
    );
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["targets"][0]["deleted"], 1, "{}", r.stdout);
    assert!(!root.join("run1/a.pt").exists());
    for kept in ["run1/keep/b.pt", "run2/c.pt", "x/run1/d.pt"] {
        assert!(root.join(kept).exists(), "{kept}");
    }

    fs_config(&cfg, "models", "include = [\"*.pt\", \"run[1.pt\"]");
    for args in [&["check"][..], &["sweep", "--apply"][..]] {
        let r = run(&cfg, args);
        assert_eq!(r.code, Some(2), "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("targets.checkpoints.include[1]"),
            "{args:?}: {}{}",
            r.stdout,
            r.stderr
        );
    }
    assert!(root.join("run2/c.pt").exists());
}
