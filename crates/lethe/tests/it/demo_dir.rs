//! Issue 10, item 9: `lethe demo DIR` run again in a directory it made replaces only its own
//! files; anything else there is refused by name and nothing is removed.

use std::collections::BTreeMap;
use std::path::Path;

use crate::*;

fn demo(cwd: &Path, dir: &str) -> Run {
    let out = lethe()
        .args(["demo", dir])
        .current_dir(cwd)
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every file under `dir` with its content (links by their target), directories as "<dir>".
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let (p, kind) = (e.path(), e.file_type().unwrap());
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if kind.is_symlink() {
                let to = std::fs::read_link(&p).unwrap();
                out.insert(rel, to.display().to_string().into_bytes());
            } else if kind.is_dir() {
                out.insert(rel, b"<dir>".to_vec());
                walk(root, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn a_rerun_never_removes_what_the_user_put_there() {
    let d = Tmp::new("demo-rerun");
    let r = demo(&d.0, "demo");
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    // What the demo suggests next: its state, key and journals appear beside its files.
    let cfg = d.path("demo/lethe.toml");
    assert_eq!(run(&cfg, &["sweep", "--apply"]).code, Some(1));
    // Unchanged, it is rebuilt.
    let r = demo(&d.0, "demo");
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(d.path("demo/datasets/ds-0000.jsonl").exists());

    std::fs::write(d.path("demo/notes.txt"), "my notes\n").unwrap();
    std::fs::write(d.path("demo/datasets/mine.jsonl"), "{\"mine\": true}\n").unwrap();
    let before = contents(&d.path("demo"));
    let r = demo(&d.0, "demo");
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("notes.txt"), "{}", r.stderr);
    assert!(r.stderr.contains("datasets/mine.jsonl"), "{}", r.stderr);
    assert!(r.stderr.contains("nothing was touched"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(d.path("demo/notes.txt")).unwrap(),
        "my notes\n"
    );
    assert_eq!(
        std::fs::read_to_string(d.path("demo/datasets/mine.jsonl")).unwrap(),
        "{\"mine\": true}\n"
    );
    assert_eq!(contents(&d.path("demo")), before, "nothing was touched");

    // A config the user edited is theirs too.
    std::fs::remove_file(d.path("demo/notes.txt")).unwrap();
    std::fs::remove_file(d.path("demo/datasets/mine.jsonl")).unwrap();
    let edited = std::fs::read_to_string(&cfg).unwrap() + "# my change\n";
    std::fs::write(&cfg, &edited).unwrap();
    let out = lethe()
        .args(["demo", "demo", "--json"])
        .current_dir(&d.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["error"].as_str().unwrap().contains("lethe.toml"),
        "{doc}"
    );
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), edited);
}

#[test]
fn a_directory_the_demo_did_not_make_is_refused() {
    let d = Tmp::new("demo-foreign");
    std::fs::create_dir(d.path("mine")).unwrap();
    std::fs::write(d.path("mine/lethe.toml"), "# my own config\n").unwrap();
    let r = demo(&d.0, "mine");
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("not made by `lethe demo`"),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read_to_string(d.path("mine/lethe.toml")).unwrap(),
        "# my own config\n"
    );
    assert_eq!(std::fs::read_dir(d.path("mine")).unwrap().count(), 1);
    // A file where the directory would be.
    std::fs::write(d.path("file"), "x").unwrap();
    let r = demo(&d.0, "file");
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert_eq!(std::fs::read_to_string(d.path("file")).unwrap(), "x");
}

#[test]
fn a_demo_directory_linked_elsewhere_is_not_followed() {
    let d = Tmp::new("demo-link");
    assert_eq!(demo(&d.0, "demo").code, Some(0));
    // The user's own data set directory put in place of the demo's, with a file of the
    // same name as one the demo writes.
    std::fs::create_dir(d.path("data")).unwrap();
    std::fs::write(d.path("data/ds-0000.jsonl"), "precious\n").unwrap();
    std::fs::remove_dir_all(d.path("demo/datasets")).unwrap();
    std::os::unix::fs::symlink(d.path("data"), d.path("demo/datasets")).unwrap();
    let r = demo(&d.0, "demo");
    assert_eq!(r.code, Some(2), "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("datasets"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(d.path("data/ds-0000.jsonl")).unwrap(),
        "precious\n"
    );
    assert!(d.path("demo/datasets").is_symlink());
}
