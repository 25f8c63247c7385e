use crate::*;

#[test]
fn bad_config_names_every_problem_with_line_and_touches_nothing() {
    let d = Tmp::new("badcfg");
    drop(seed_training(&d, 10));
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        r#"[state]
url = "sqlite://state.db"

[categories.finetune_dataset]
retention = "90 days"

[[targets]]
name = "training_records"
type = "sql"
url = "sqlite://ai.db"
table = "training_records"
category = "finetune_dataset"
key = "id"
created_at = "created_at"
retension_days = "retention_days"
"#,
    )
    .unwrap();
    let r = run(&cfg, &["sweep", "--apply"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("line 5: categories.finetune_dataset.retention"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("line 15: targets.training_records.retension_days: unknown key"),
        "{}",
        r.stderr
    );
    assert!(
        !d.path("state.db").exists(),
        "a bad config must not even create the state"
    );
    assert_eq!(
        ids(
            &rusqlite::Connection::open(d.path("ai.db")).unwrap(),
            "training_records"
        )
        .len(),
        10
    );
}

#[test]
fn missing_tables_and_columns_are_named_and_nothing_is_touched() {
    let d = Tmp::new("badcols");
    drop(seed_training(&d, 10));
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        r#"[categories.d]
retention = "1d"
[[targets]]
name = "a"
type = "sql"
url = "sqlite://ai.db"
table = "training_records"
category = "d"
key = "id"
created_at = "made_at"
[[targets]]
name = "b"
type = "sql"
url = "sqlite://ai.db"
table = "no_such_table"
category = "d"
key = "id"
created_at = "created_at"
[[targets]]
name = "c"
type = "sql"
url = "sqlite://missing.db"
table = "t"
category = "d"
key = "id"
created_at = "created_at"
"#,
    )
    .unwrap();
    for cmd in [&["sweep", "--apply"][..], &["check"][..]] {
        let r = super::run_raw(&cfg, cmd);
        let all = format!("{}{}", r.stdout, r.stderr);
        assert_eq!(r.code, Some(2), "{cmd:?}: {all}");
        assert!(
            all.contains("made_at") && all.contains("no such column"),
            "{all}"
        );
        assert!(all.contains("no_such_table"), "{all}");
        assert!(all.contains("missing.db"), "{all}");
    }
    assert!(
        !d.path("missing.db").exists(),
        "opening a target never creates it"
    );
    assert!(!d.path("lethe-state.db").exists());
    assert_eq!(
        ids(
            &rusqlite::Connection::open(d.path("ai.db")).unwrap(),
            "training_records"
        )
        .len(),
        10
    );
}

#[test]
fn default_config_is_valid_and_is_the_one_in_the_readme() {
    let out = lethe().arg("default-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(lethe_core::config::parse(&text, &lethe_ops::targets::parsers()).is_ok());
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    assert!(
        readme.contains(&text),
        "README.md must show `lethe default-config` verbatim"
    );
}

#[test]
fn demo_builds_and_dry_runs_without_setup() {
    let d = Tmp::new("demo");
    let out = lethe().arg("demo").arg(d.path("demo")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("dry run"), "{stdout}");
    assert!(stdout.contains("sweep --apply --config"), "{stdout}");
    // It is a dry run: the files are all still there, and the trail verifies.
    assert!(std::fs::read_dir(d.path("demo/datasets")).unwrap().count() > 30);
    let cfg = d.path("demo/lethe.toml");
    assert_eq!(run(&cfg, &["audit", "verify"]).code, Some(0));
    // Running it again rebuilds it; a directory it did not make is refused.
    assert!(
        lethe()
            .arg("demo")
            .arg(d.path("demo"))
            .output()
            .unwrap()
            .status
            .success()
    );
    std::fs::create_dir_all(d.path("mine")).unwrap();
    std::fs::write(d.path("mine/precious.txt"), "x").unwrap();
    let out = lethe().arg("demo").arg(d.path("mine")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(d.path("mine/precious.txt").exists());
}

#[test]
fn lifecycle_export_renders_the_window_and_warns() {
    let d = Tmp::new("lifecycle");
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        "[categories.finetune_dataset]\nretention = \"90d\"\nmax = \"60d\"\n[[targets]]\nname = \"blobs\"\ntype = \"object_store\"\nurl = \"az://container/finetune/\"\ncategory = \"finetune_dataset\"\n",
    )
    .unwrap();
    let r = run(
        &cfg,
        &[
            "lifecycle",
            "export",
            "--target",
            "blobs",
            "--format",
            "azure",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let j = r.json();
    let rule = &j["rules"][0]["definition"];
    assert_eq!(
        rule["actions"]["baseBlob"]["delete"]["daysAfterModificationGreaterThan"], 60,
        "max caps the window"
    );
    assert_eq!(rule["filters"]["prefixMatch"][0], "container/finetune/");
    assert!(r.stderr.contains("legal holds"), "{}", r.stderr);
    assert_eq!(
        run(
            &cfg,
            &["lifecycle", "export", "--target", "blobs", "--format", "s3"]
        )
        .code,
        Some(2)
    );
    assert_eq!(
        run(
            &cfg,
            &["lifecycle", "export", "--target", "nope", "--format", "s3"]
        )
        .code,
        Some(2)
    );
}
