use std::collections::BTreeMap;
use std::path::Path;

use lethe_core::config::Window;
use lethe_core::expiry::{self, Facts, Protections, Raw, Verdict};
use lethe_core::time::{Duration, Timestamp};
use rusqlite::Connection;

use crate::*;

/// Every file under `root` with its bytes: what a dry run must leave exactly as it was.
fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel.starts_with("state") {
                continue; // Lethe's own records
            }
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.file_type().is_symlink() {
                out.insert(
                    rel,
                    std::fs::read_link(&p)
                        .unwrap()
                        .to_string_lossy()
                        .as_bytes()
                        .to_vec(),
                );
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn dry_run_changes_no_byte_and_apply_deletes_rows_and_files() {
    let d = Tmp::new("dry");
    let conn = seed_training(&d, 50);
    drop(conn);
    let cfg = training_config(&d);
    let before = snapshot(&d.0);

    let r = run(&cfg, &["sweep", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["targets"][0]["found"], 25);
    assert_eq!(j["targets"][0]["deleted"], 0);
    assert_eq!(snapshot(&d.0), before, "a dry run changed the target");

    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let t = &r.json()["targets"][0];
    assert_eq!(
        (t["found"].as_u64(), t["deleted"].as_u64()),
        (Some(25), Some(25))
    );
    assert_eq!(t["files_removed"], 25);
    let conn = Connection::open(d.path("ai.db")).unwrap();
    let left = ids(&conn, "training_records");
    assert_eq!(left, (1..=50).filter(|i| i % 2 == 1).collect::<Vec<_>>());
    for id in 1..=50 {
        assert_eq!(
            d.path(&format!("files/ds-{id}.jsonl")).exists(),
            id % 2 == 1,
            "file {id}"
        );
    }
    // Nothing more is due.
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.json()["targets"][0]["found"], 0);
}

#[test]
fn offsets_are_judged_by_their_real_instant() {
    let d = Tmp::new("offsets");
    let conn = Connection::open(d.path("ai.db")).unwrap();
    conn.execute_batch("CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TEXT, user_id TEXT)")
        .unwrap();
    let now = now_secs();
    let at = |secs_ago: i64, offset_h: i64| {
        // The wall-clock text of the instant in a zone `offset_h` hours east of UTC.
        let local = Timestamp::from_unix_seconds(now - secs_ago + offset_h * 3600).unwrap();
        let s = local.to_rfc3339();
        format!("{}{:+03}:00", s.trim_end_matches('Z'), offset_h)
    };
    // Window 1 day. Naively read as UTC, row 1 looks 20h old and row 2 looks 28h old; their
    // real ages are the reverse.
    let rows = [
        (1, at(25 * 3600, 5)),                        // really 25h old: due
        (2, at(23 * 3600, -5)),                       // really 23h old: not due
        (3, format!("{}", now - 2 * DAY)),            // unix seconds: due
        (4, format!("{}", (now - 3600) * 1000)),      // unix millis: not due
        (5, at(26 * 3600, 0).replace("+00:00", "Z")), // Z: due
    ];
    for (id, ts) in &rows {
        // store the numeric ones as integers, as an application would
        match ts.parse::<i64>() {
            Ok(n) => conn.execute(
                "INSERT INTO logs VALUES (?1, ?2, 'u')",
                rusqlite::params![id, n],
            ),
            Err(_) => conn.execute(
                "INSERT INTO logs VALUES (?1, ?2, 'u')",
                rusqlite::params![id, ts],
            ),
        }
        .unwrap();
    }
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        "[state]\nurl = \"sqlite://state.db\"\n[categories.log]\nretention = \"1d\"\n[[targets]]\nname = \"logs\"\ntype = \"sql\"\nurl = \"sqlite://ai.db\"\ntable = \"logs\"\ncategory = \"log\"\nkey = \"id\"\ncreated_at = \"created_at\"\n",
    )
    .unwrap();
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert_eq!(ids(&conn, "logs"), vec![2, 4]);
}

#[test]
fn unreadable_timestamps_and_unsafe_files_are_reported_never_deleted() {
    let d = Tmp::new("unsafe");
    let conn = seed_training(&d, 2); // 1 alive, 2 expired and fine
    std::fs::create_dir_all(d.path("outside")).unwrap();
    std::fs::write(d.path("outside/secret.txt"), "keep").unwrap();
    std::os::unix::fs::symlink(d.path("outside"), d.path("files/escape")).unwrap();
    std::os::unix::fs::symlink(d.path("outside/secret.txt"), d.path("files/link.jsonl")).unwrap();
    std::fs::create_dir_all(d.path("files/adir")).unwrap();
    let old = naive(100 * DAY);
    let rows: Vec<(i64, String, String)> = vec![
        (
            10,
            d.path("outside/secret.txt").display().to_string(),
            old.clone(),
        ),
        (
            11,
            d.path("files/escape/secret.txt").display().to_string(),
            old.clone(),
        ),
        (
            12,
            d.path("files/link.jsonl").display().to_string(),
            old.clone(),
        ),
        (13, d.path("files/adir").display().to_string(), old.clone()),
        (
            14,
            format!("{}/files/../outside/secret.txt", d.0.display()),
            old.clone(),
        ),
        (15, "files/relative.jsonl".into(), old.clone()),
        (
            16,
            d.path("files/never-existed.jsonl").display().to_string(),
            old.clone(),
        ),
        (
            17,
            d.path("files/ds-1.jsonl").display().to_string(),
            "not a date".into(),
        ),
        (
            18,
            d.path("files/ds-1.jsonl").display().to_string(),
            "2024-13-45 10:00:00".into(),
        ),
    ];
    for (id, path, ts) in &rows {
        conn.execute(
            "INSERT INTO training_records VALUES (?1, 'ds', 'u', ?2, ?3, 30)",
            rusqlite::params![id, path, ts],
        )
        .unwrap();
    }
    let cfg = training_config(&d);
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(
        r.code,
        Some(1),
        "failures must give exit 1: {}{}",
        r.stdout,
        r.stderr
    );
    let t = &r.json()["targets"][0];
    assert_eq!(t["failed"], 8, "{t}");
    assert_eq!(
        t["deleted"], 2,
        "row 2 and the row whose file was already missing: {t}"
    );
    assert_eq!(
        ids(&conn, "training_records"),
        vec![1, 10, 11, 12, 13, 14, 15, 17, 18]
    );
    assert_eq!(
        std::fs::read_to_string(d.path("outside/secret.txt")).unwrap(),
        "keep"
    );
    assert!(d.path("files/link.jsonl").is_symlink());
    assert!(d.path("files/adir").is_dir());
    assert!(d.path("files/ds-1.jsonl").exists());
    // Each failure is in the trail with its reason.
    let failed: Vec<_> = export(&cfg)
        .into_iter()
        .filter(|e| e["action"] == "failed")
        .map(|e| {
            (
                e["item_key"].as_str().unwrap().to_string(),
                e["detail"].as_str().unwrap().to_string(),
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
    assert!(why("10").contains("outside file_roots"), "{failed:?}");
    assert!(why("11").contains("symbolic link"), "{failed:?}");
    assert!(why("12").contains("symbolic link"), "{failed:?}");
    assert!(why("13").contains("directory"), "{failed:?}");
    assert!(why("14").contains(".."), "{failed:?}");
    assert!(why("15").contains("relative"), "{failed:?}");
    assert!(why("17").contains("not a date"), "{failed:?}");
    assert!(why("18").contains("cannot read"), "{failed:?}");
}

#[test]
fn any_table_and_column_name_is_quoted() {
    let d = Tmp::new("names");
    let conn = Connection::open(d.path("ai.db")).unwrap();
    conn.execute_batch(
        r#"CREATE TABLE "odd ""table""; DROP TABLE x" ("the id" INTEGER PRIMARY KEY, "made at" TEXT, "keep; days" INTEGER, "who?" TEXT);"#,
    )
    .unwrap();
    for (id, age) in [(1, 10), (2, 1), (3, 50)] {
        conn.execute(
            r#"INSERT INTO "odd ""table""; DROP TABLE x" VALUES (?1, ?2, 7, 'Zoë "O''Brien"')"#,
            rusqlite::params![id, naive(age * DAY)],
        )
        .unwrap();
    }
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        r#"[state]
url = "sqlite://state.db"
[categories.log]
retention = "30d"
[[targets]]
name = "odd"
type = "sql"
url = "sqlite://ai.db"
table = 'odd "table"; DROP TABLE x'
category = "log"
key = "the id"
created_at = "made at"
retention_days = "keep; days"
subject = "who?"
"#,
    )
    .unwrap();
    let r = run(&cfg, &["check"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let r = run(&cfg, &["sweep", "--apply", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let left: Vec<i64> = conn
        .prepare(r#"SELECT "the id" FROM "odd ""table""; DROP TABLE x""#)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(left, vec![2]);
}

/// The SQL pre-filter may only narrow: on a table of every timestamp shape, the rows Lethe
/// deletes are exactly those the pure decision, applied to every row, calls due.
#[test]
fn sql_prefilter_never_hides_a_due_row() {
    let d = Tmp::new("prefilter");
    let conn = Connection::open(d.path("ai.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, created_at, retention_days, expires_at)",
    )
    .unwrap();
    let now = now_secs();
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let tx = conn.unchecked_transaction().unwrap();
    for id in 1..=3000i64 {
        // ages spread around the windows, with a cluster within minutes of the boundary
        let age = if rnd(3) == 0 {
            30 * DAY + rnd(7200) as i64 - 3600
        } else {
            rnd(120 * DAY as u64) as i64
        };
        let inst = now - age;
        let ts = Timestamp::from_unix_seconds(inst).unwrap().to_rfc3339();
        let off = rnd(27) as i64 - 13;
        let local = Timestamp::from_unix_seconds(inst + off * 3600)
            .unwrap()
            .to_rfc3339();
        let created: rusqlite::types::Value = match rnd(9) {
            0 => ts.clone().into(),
            1 => ts.replace('T', " ").replace('Z', "").into(),
            2 => format!("{}{:+03}:00", local.trim_end_matches('Z'), off).into(),
            3 => format!(
                "{} {:+03}:00",
                local.trim_end_matches('Z').replace('T', " "),
                off
            )
            .into(),
            4 => inst.into(),
            5 => (inst * 1000).into(),
            6 => (inst as f64 + 0.5).into(),
            7 => format!("{}", inst).into(),
            _ => ["garbage", "", "2024-02-30 00:00:00"][rnd(3) as usize]
                .to_string()
                .into(),
        };
        let days: rusqlite::types::Value = match rnd(6) {
            0 => rusqlite::types::Value::Null,
            1 => (rnd(60) as i64).into(),
            2 => "14".to_string().into(),
            3 => (-1i64).into(),
            _ => 30i64.into(),
        };
        let expires: rusqlite::types::Value = match rnd(8) {
            0 => Timestamp::from_unix_seconds(now - 3600 + rnd(7200) as i64)
                .unwrap()
                .to_rfc3339()
                .into(),
            1 => "soon".to_string().into(),
            _ => rusqlite::types::Value::Null,
        };
        tx.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![id, created, days, expires],
        )
        .unwrap();
    }
    tx.commit().unwrap();

    // Judge every row in Rust with no pre-filter, a few seconds early so boundary rows agree.
    let window = Window::new(Duration::from_days(30), Some(Duration::from_days(90)));
    let judged_at = Timestamp::from_unix_seconds(now_secs()).unwrap();
    let mut expected_left = Vec::new();
    let mut borderline = Vec::new();
    let mut st = conn
        .prepare("SELECT id, created_at, retention_days, expires_at FROM t ORDER BY id")
        .unwrap();
    let mut rows = st.query([]).unwrap();
    while let Some(r) = rows.next().unwrap() {
        let id: i64 = r.get(0).unwrap();
        let raw = |i: usize| -> (Option<String>, Option<i64>, Option<f64>) {
            match r.get_ref(i).unwrap() {
                rusqlite::types::ValueRef::Text(t) => {
                    (Some(String::from_utf8_lossy(t).into()), None, None)
                }
                rusqlite::types::ValueRef::Integer(n) => (None, Some(n), None),
                rusqlite::types::ValueRef::Real(f) => (None, None, Some(f)),
                _ => (None, None, None),
            }
        };
        let (c, e, k) = (raw(1), raw(3), raw(2));
        fn to_raw(v: &(Option<String>, Option<i64>, Option<f64>)) -> Raw<'_> {
            match v {
                (Some(s), _, _) => Raw::Text(s),
                (_, Some(n), _) => Raw::Int(*n),
                (_, _, Some(f)) => Raw::Real(*f),
                _ => Raw::Null,
            }
        }
        let facts = Facts {
            created_at: to_raw(&c),
            expires_at: Some(to_raw(&e)),
            retention_days: Some(to_raw(&k)),
            created_at_format: None,
            expires_at_format: None,
            sensitivity: None,
        };
        let p = Protections::default();
        let v = expiry::decide(judged_at, &window, "t", "", None, &facts, &p);
        let v_late = expiry::decide(
            Timestamp::from_unix_seconds(now_secs() + 120).unwrap(),
            &window,
            "t",
            "",
            None,
            &facts,
            &p,
        );
        if std::mem::discriminant(&v) != std::mem::discriminant(&v_late) {
            borderline.push(id);
        } else if !matches!(v, Verdict::Expired { .. }) {
            expected_left.push(id);
        }
    }
    drop(rows);
    drop(st);
    let cfg = d.path("lethe.toml");
    std::fs::write(
        &cfg,
        "[state]\nurl = \"sqlite://state.db\"\n[categories.log]\nretention = \"30d\"\nmax = \"90d\"\n[[targets]]\nname = \"t\"\ntype = \"sql\"\nurl = \"sqlite://ai.db\"\ntable = \"t\"\ncategory = \"log\"\nkey = \"id\"\ncreated_at = \"created_at\"\nretention_days = \"retention_days\"\nexpires_at = \"expires_at\"\n",
    )
    .unwrap();
    let r = run(&cfg, &["sweep", "--apply", "--json", "--batch-size", "97"]);
    assert_eq!(r.code, Some(1), "garbage rows fail: {}", r.stderr);
    let left: Vec<i64> = ids(&conn, "t")
        .into_iter()
        .filter(|i| !borderline.contains(i))
        .collect();
    assert_eq!(left, expected_left);
    assert!(
        expected_left.len() > 300 && expected_left.len() < 2700,
        "a mix: {}",
        expected_left.len()
    );
}

#[test]
fn target_flag_limits_the_sweep_and_rejects_unknown_names() {
    let d = Tmp::new("targetflag");
    drop(seed_training(&d, 4));
    let cfg = training_config(&d);
    let r = run(&cfg, &["sweep", "--target", "nope"]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("nope") && r.stderr.contains("training_records"),
        "{}",
        r.stderr
    );
    let r = run(&cfg, &["sweep", "--target", "training_records", "--json"]);
    assert_eq!(r.code, Some(0));
    assert_eq!(r.json()["targets"].as_array().map(Vec::len), Some(1));
}

/// The peak resident memory of a finished `lethe` run, in kB (from /proc while it runs).
fn peak_kb(cfg: &std::path::Path, args: &[&str]) -> u64 {
    crate::ensure_init(cfg);
    let mut child = crate::lethe()
        .args(args)
        .arg("--config")
        .arg(cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status_path)
            && let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kb);
        }
        if let Ok(Some(st)) = child.try_wait() {
            assert!(st.success(), "{args:?} failed");
            return peak;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Issue 10, item 13: what a run remembers about the subjects it has seen is bounded; a run
/// over 150,000 people needs about the memory of a run over 10,000.
#[test]
fn memory_does_not_grow_with_the_number_of_subjects() {
    let mut peaks = Vec::new();
    for n in [10_000i64, 150_000] {
        let d = Tmp::new(&format!("subjects-{n}"));
        let conn = Connection::open(d.path("ai.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE training_records (id INTEGER PRIMARY KEY, dataset_name TEXT NOT NULL,
               user_id TEXT NOT NULL, file_path TEXT NOT NULL, created_at TEXT NOT NULL,
               retention_days INTEGER NOT NULL)",
        )
        .unwrap();
        let old = naive(400 * DAY);
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO training_records SELECT i, 'ds', 'user-' || i, '', ?2, 30 FROM n",
            rusqlite::params![n, old],
        )
        .unwrap();
        drop(conn);
        std::fs::create_dir_all(d.path("files")).unwrap();
        let cfg = training_config(&d);
        peaks.push(peak_kb(&cfg, &["sweep", "--no-progress"]));
    }
    let (small, large) = (peaks[0], peaks[1]);
    assert!(
        large < small + 40 * 1024,
        "peak RSS {small} kB for 10,000 subjects but {large} kB for 150,000"
    );
}
