//! The config as every connector of this build reads it: the shared keys, each kind's own
//! keys, and every problem reported with its key and line. (The parser itself is in
//! lethe-core; the kinds' keys are read by their connectors here.)

use lethe_core::config::{Config, ConfigError, DEFAULT_CONFIG};
use lethe_core::time::Duration;
use lethe_ops::targets::objects::ObjectStoreTarget;

fn parse(src: &str) -> Result<Config, Vec<ConfigError>> {
    lethe_core::config::parse(src, &lethe_ops::targets::parsers())
}

#[test]
fn the_default_config_parses() {
    let c = parse(DEFAULT_CONFIG).map_err(|e| format!("{e:?}"));
    let c = c.as_ref().map(|c| c.targets.len());
    assert!(matches!(c, Ok(n) if n >= 2), "{c:?}");
}

#[test]
fn the_design_example_parses() {
    let src = r#"
[state]
url = "sqlite://lethe-state.db"
[categories.inference_log]
retention = "30d"
max = "90d"
owner = "platform-sre"
[categories.finetune_dataset]
retention = "90d"
[categories.model_artifact]
retention = "60d"
[[targets]]
name = "inference_logs"
type = "sql"
url = "sqlite://ai_data.db"
table = "inference_logs"
category = "inference_log"
key = "id"
created_at = "created_at"
retention_days = "retention_days"
subject = "user_id"
[[targets]]
name = "checkpoints"
type = "filesystem"
root = "/data/models/checkpoints"
category = "model_artifact"
retention = "60d"
suffixes = [".pt", ".pth"]
[[targets]]
name = "finetune-blobs"
type = "object_store"
url = "s3://datasets/finetune/"
category = "finetune_dataset"
[targets.options]
aws_endpoint = "http://127.0.0.1:9000"
aws_allow_http = "true"
[tags]
required = ["expires_at", "data_type", "owner", "sensitivity"]
[exceptions]
max_extension = "30d"
max_renewals = 1
[audit]
retention = "2555d"
key_env = "LETHE_AUDIT_KEY"
"#;
    let c = match parse(src) {
        Ok(c) => c,
        Err(e) => panic!("{e:?}"),
    };
    assert_eq!(c.targets.len(), 3);
    let w = &c.targets[0].window;
    assert_eq!(
        (w.retention, w.max, w.min, &w.level),
        (
            Duration::from_days(30),
            Some(Duration::from_days(90)),
            None,
            &None
        )
    );
    // The four built-in levels are known, uncapped.
    assert_eq!(w.levels, c.sensitivity);
    assert_eq!(c.sensitivity.0.len(), 4);
    assert_eq!(c.sensitivity.strictest(), None);
    assert_eq!(c.targets[0].line, 12);
    match c.targets[2].spec::<ObjectStoreTarget>() {
        Some(o) => assert_eq!(o.options.len(), 2),
        None => panic!("{:?}", c.targets[2]),
    }
}

#[test]
fn reports_every_problem_with_key_and_line() {
    let src = "[state]\nurl = \"sqlite://x.db\"\ncolour = 1\n\n[categories.log]\nretention = \"30x\"\n\n[[targets]]\nname = \"logs\"\ntype = \"sql\"\nurl = \"sqlite://a.db\"\ncategory = \"nope\"\nkey = \"id\"\ncreated_at = \"ts\"\n";
    let errs = match parse(src) {
        Err(e) => e,
        Ok(_) => panic!("should fail"),
    };
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let has = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert!(has("line 3: state.colour: unknown key"), "{text:#?}");
    assert!(has("line 6: categories.log.retention"), "{text:#?}");
    assert!(has("targets.logs.table: is required"), "{text:#?}");
    assert!(
        has("targets.logs.category: no [categories.nope]"),
        "{text:#?}"
    );
    assert!(errs.len() >= 4);
}

#[test]
fn syntax_errors_name_the_line() {
    let errs = parse("[state]\nurl = \n").err().unwrap_or_default();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].line, Some(2));
}

#[test]
fn file_without_roots_is_refused() {
    let src = "[categories.d]\nretention = \"1d\"\n[[targets]]\nname = \"t\"\ntype = \"sql\"\nurl = \"sqlite://a.db\"\ntable = \"t\"\ncategory = \"d\"\nkey = \"id\"\ncreated_at = \"c\"\nfile = \"path\"\n";
    let errs = parse(src).err().unwrap_or_default();
    assert!(
        errs.iter().any(|e| e.key == "targets.t.file_roots"),
        "{errs:?}"
    );
}

#[test]
fn bad_patterns_are_refused_by_key() {
    let src = "[categories.d]\nretention = \"1d\"\n[[targets]]\nname = \"m\"\ntype = \"filesystem\"\nroot = \"x\"\ncategory = \"d\"\ninclude = [\"/ok/**\", \"run[1\"]\nexclude = [\"a{b\"]\n";
    let errs = parse(src).err().unwrap_or_default();
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["targets.m.include[1]", "targets.m.exclude[0]"],
        "{errs:?}"
    );
    assert_eq!(errs[0].line, Some(8));
}

#[test]
fn credentials_in_store_options_are_refused() {
    let src = "[categories.d]\nretention = \"1d\"\n[[targets]]\nname = \"b\"\ntype = \"object_store\"\nurl = \"s3://bucket/p/\"\ncategory = \"d\"\n[targets.options]\naws_region = \"eu-west-1\"\naws_secret_access_key = \"hunter2\"\n";
    let errs = parse(src).err().unwrap_or_default();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].key, "targets.b.options.aws_secret_access_key");
    assert_eq!(errs[0].line, Some(10));
    assert!(!errs[0].to_string().contains("hunter2"));
}

/// Issue 10, item 11: a duration too long to compute with is refused by key and line.
#[test]
fn durations_longer_than_1000_years_are_refused() {
    let src = "[categories.d]\nretention = \"999999999999d\"\nmax = \"365251d\"\n\
               [categories.ok]\nretention = \"365250d\"\n\
               [[targets]]\nname = \"t\"\ntype = \"sql\"\nurl = \"sqlite://a.db\"\ntable = \"t\"\n\
               category = \"ok\"\nkey = \"id\"\ncreated_at = \"c\"\nretention = \"52180w\"\n\
               lock_timeout = \"25h\"\n\
               [exceptions]\nmax_extension = \"9999999999h\"\n\
               [erasure]\ndeadline = \"99999999999999m\"\n\
               [audit]\nretention = \"999999999999999s\"\n";
    let errs = parse(src).err().unwrap_or_default();
    let found: Vec<(&str, Option<usize>)> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        found,
        [
            ("categories.d.retention", Some(2)),
            ("categories.d.max", Some(3)),
            ("targets.t.retention", Some(14)),
            ("targets.t.lock_timeout", Some(15)),
            ("exceptions.max_extension", Some(17)),
            ("erasure.deadline", Some(19)),
            ("audit.retention", Some(21)),
        ],
        "{errs:#?}"
    );
    assert!(errs[0].message.contains("1000 years"), "{errs:?}");
    assert!(errs[3].message.contains("a day"), "{errs:?}");
    // At the bounds, all is well: 1000 years, a one-day lock wait.
    let src = src
        .replace("999999999999d", "365250d")
        .replace("365251d", "365250d")
        .replace("52180w", "52178w")
        .replace("25h", "1d")
        .replace("9999999999h", "30d")
        .replace("99999999999999m", "30d")
        .replace("999999999999999s", "2555d");
    let c = parse(&src).map_err(|e| format!("{e:?}"));
    assert_eq!(
        c.map(|c| c.targets[0].window.retention),
        Ok(Duration::from_days(365_246))
    );
}

/// Issue 10, item 11: an empty config, or one without targets, says what is missing.
#[test]
fn a_config_without_targets_says_what_is_missing() {
    for src in ["", "  \n# nothing yet\n"] {
        let errs = parse(src).err().unwrap_or_default();
        assert_eq!(errs.len(), 1, "{src:?}: {errs:?}");
        assert_eq!(errs[0].key, "targets");
        assert!(errs[0].message.contains("the config is empty"), "{errs:?}");
        assert!(errs[0].message.contains("[[targets]]"), "{errs:?}");
    }
    let errs = parse("[state]\nurl = \"sqlite://s.db\"\n[categories.d]\nretention = \"1d\"\n")
        .err()
        .unwrap_or_default();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].key, "targets");
    assert!(errs[0].message.contains("no [[targets]] entry"), "{errs:?}");
    let errs = parse("\ntargets = []\n[categories.d]\nretention = \"1d\"\n")
        .err()
        .unwrap_or_default();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].key.as_str(), errs[0].line), ("targets", Some(2)));
}

#[test]
fn a_subject_on_a_file_url_store_is_refused_where_erasure_could_not_find_it() {
    let src = "[categories.d]\nretention = \"1d\"\n[[targets]]\nname = \"b\"\ntype = \"object_store\"\nurl = \"file:///data/b\"\ncategory = \"d\"\nsubject = \"user\"\n";
    let errs = parse(src).err().unwrap_or_default();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].key, "targets.b.subject");
    assert_eq!(errs[0].line, Some(8), "the line of the key itself");
    let src = src.replace("file:///data/b", "s3://bucket/b/");
    assert!(parse(&src).is_ok());
    let src = "[categories.d]\nretention = \"1d\"\n[[targets]]\nname = \"m\"\ntype = \"filesystem\"\nroot = \"x\"\ncategory = \"d\"\nsubject = \"user\"\n";
    let errs = parse(src).err().unwrap_or_default();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].key, "targets.m.subject");
}

#[test]
fn vendor_targets_name_each_bad_key_and_resolve_their_subject_map_source() {
    use lethe_ops::targets::vendor::VendorTarget;
    let head = "[categories.d]\nretention = \"30d\"\n";
    let openai = "[[targets]]\nname = \"oa\"\ntype = \"openai_files\"\ncategory = \"d\"\napi_key_env = \"K\"\n";
    let good = format!(
        "{head}{openai}purposes = [\"batch_output\"]\nvector_stores = true\ndeletes_in_flight = 4\n[targets.subject_map]\nsource = \"up\"\nquery = \"SELECT file_id FROM uploads WHERE user_id = $1\"\nsubject_of = \"SELECT user_id FROM uploads WHERE file_id = $1\"\n[[targets]]\nname = \"up\"\ntype = \"sql\"\nurl = \"sqlite://app.db\"\ntable = \"uploads\"\nkey = \"id\"\ncreated_at = \"created_at\"\ncategory = \"d\"\n"
    );
    let c = parse(&good).map_err(|e| format!("{e:?}"));
    let v = c
        .as_ref()
        .ok()
        .and_then(|c| c.targets[0].spec::<VendorTarget>().cloned());
    let v = v.unwrap_or_else(|| panic!("{c:?}"));
    assert_eq!(v.base_url, "https://api.openai.com/v1");
    assert_eq!(v.deletes_in_flight, 4);
    let map = v.subject_map.as_ref().and_then(|m| m.db.as_ref());
    assert_eq!(
        map.map(|d| d.url.as_str()),
        Some("sqlite://app.db"),
        "source resolved"
    );

    // Each problem names its key: an unknown purpose, an out-of-range count, a source that
    // is not a sql target, a query without $1.
    let bad = good
        .replace("\"batch_output\"", "\"batch-output\"")
        .replace("deletes_in_flight = 4", "deletes_in_flight = 0")
        .replace("source = \"up\"", "source = \"nope\"")
        .replace("WHERE file_id = $1", "WHERE file_id = ?");
    let errs = parse(&bad).err().unwrap_or_default();
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    for k in [
        "targets.oa.purposes[0]",
        "targets.oa.deletes_in_flight",
        "targets.oa.subject_map.subject_of",
    ] {
        assert!(keys.contains(&k), "{k} not reported: {errs:?}");
    }
    assert!(errs.iter().all(|e| e.line.is_some()), "{errs:?}");
    let unresolved = good.replace("source = \"up\"", "source = \"nope\"");
    let errs = parse(&unresolved).err().unwrap_or_default();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].key, "targets.oa.subject_map.source");
    assert!(
        errs[0].message.contains("up"),
        "names the sql targets: {errs:?}"
    );

    // Anthropic files carry no metadata: a subject key is refused.
    let anth = format!(
        "{head}[[targets]]\nname = \"an\"\ntype = \"anthropic_files\"\ncategory = \"d\"\napi_key_env = \"K\"\nsubject = \"user\"\n"
    );
    let errs = parse(&anth).err().unwrap_or_default();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].key, "targets.an.subject");
}

/// The README's "Writing a policy" example is a config this build reads, with the rules it
/// describes.
#[test]
fn the_readme_policy_example_parses() {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("## Writing a policy")
        .nth(1)
        .and_then(|s| s.split("```toml\n").nth(1))
        .and_then(|s| s.split("```").next());
    let Some(src) = section else {
        panic!("README.md has no \"Writing a policy\" example");
    };
    let c = match parse(src) {
        Ok(c) => c,
        Err(e) => panic!("{e:?}"),
    };
    let prompts = &c.targets[0].window;
    assert_eq!(prompts.min, Some(Duration::from_days(7)));
    assert_eq!(prompts.level.as_deref(), Some("confidential"));
    assert_eq!(c.sensitivity.strictest(), Some(Duration::from_days(14)));
    assert_eq!(c.targets.len(), 3);
}
