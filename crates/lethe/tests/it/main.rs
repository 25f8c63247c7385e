//! End-to-end tests: real SQLite files, real files on disk, the real `lethe` binary.
#![allow(clippy::unwrap_used)]

mod audit;
mod cli_json;
mod config;
mod config_checks;
mod conformance;
mod crash;
mod dashboard;
mod demo_dir;
mod fs;
mod guard;
mod infinity;
#[cfg(feature = "jsonl-connector")]
mod jsonl;
mod objects;
mod pg;
mod pg_instants;
mod pg_safety;
mod pg_tls;
mod policy;
mod prism;
mod prune;
mod receipts;
mod reconcile;
mod reconcile_review;
mod redact;
mod report;
mod report_review;
mod requests;
mod review;
mod roots;
mod safety;
mod secrets;
mod serve;
mod serve_api;
mod sweep;
mod trail;
mod vendor;
mod vendor_bench;
mod vendor_contract;
mod vendor_fake;
mod vendor_review;
mod vendor_review2;

/// The toy connector's tests need the tests' build (`scripts/test` makes it): without the
/// feature they would be skipped, so this fails instead, saying how to run them.
#[cfg(not(feature = "jsonl-connector"))]
#[test]
fn the_jsonl_connector_tests_need_their_feature() {
    panic!(
        "run the tests with --features lethe/failpoints,lethe/jsonl-connector (as scripts/test does)"
    );
}

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rusqlite::Connection;

/// A directory removed when dropped.
pub struct Tmp(pub PathBuf);

impl Tmp {
    pub fn new(name: &str) -> Tmp {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("lethe-it-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(std::fs::canonicalize(&p).unwrap())
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port free at the moment of asking, for a server a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary under test: this build's, or `LETHE_TEST_BIN` (to show that a regression test
/// fails on an older build).
pub fn lethe() -> Command {
    let bin = std::env::var_os("LETHE_TEST_BIN")
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_lethe").into());
    let mut c = Command::new(bin);
    c.env_remove("LETHE_CONFIG").env_remove("LETHE_FAILPOINT");
    c
}

/// Makes the config's state (`lethe init`) the first time a test uses the config (and again
/// whenever the config's text changed): only `init` creates a state. Its outcome is not
/// checked here: a test about a broken or missing state sees it in its own command.
pub fn ensure_init(config: &Path) {
    ensure_init_env(config, &[]);
}

/// [`ensure_init`] with the environment the test's commands get (an audit key, a password).
pub fn ensure_init_env(config: &Path, env: &[(&str, &str)]) {
    static DONE: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
    let text = std::fs::read_to_string(config).unwrap_or_default();
    let mine = (config.to_path_buf(), text);
    {
        let done = DONE.lock().unwrap_or_else(|e| e.into_inner());
        if done.contains(&mine) {
            return;
        }
    }
    let mut c = lethe();
    c.arg("init").arg("--config").arg(config);
    for (k, v) in env {
        c.env(k, v);
    }
    if c.output().is_ok_and(|o| o.status.success()) {
        DONE.lock().unwrap_or_else(|e| e.into_inner()).push(mine);
    }
}

/// Whether the binary under test has the crash tests' hook (the `failpoints` feature): its
/// `--version` says so.
pub fn has_failpoints() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        let out = lethe().arg("--version").output().unwrap();
        String::from_utf8_lossy(&out.stdout).contains("failpoints")
    })
}

/// `lethe()` with the crash tests' hook armed at `point` (`LETHE_FAILPOINT`). A binary built
/// without the hook fails the test here, saying how to build one: a crash test must never
/// pass without having crashed anything.
pub fn lethe_failpoint(point: &str) -> Command {
    assert!(
        has_failpoints(),
        "this crash test needs a lethe built with the `failpoints` feature (LETHE_FAILPOINT is \
         ignored otherwise): run scripts/test, or cargo test --workspace --features \
         lethe/failpoints (with LETHE_TEST_BIN, point it at such a build)"
    );
    let mut c = lethe();
    c.env("LETHE_FAILPOINT", point);
    c
}

/// `lethe ARGS --config CONFIG` started in the background, its output discarded (for a
/// sweep a test kills, or races something against).
pub fn spawn(config: &Path, args: &[&str]) -> std::process::Child {
    ensure_init(config);
    lethe()
        .args(args)
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

pub fn run(config: &Path, args: &[&str]) -> Run {
    run_env(config, &[], args)
}

/// `run` without making the state first: for what a command does when there is none.
pub fn run_raw(config: &Path, args: &[&str]) -> Run {
    let out: Output = lethe()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `run` with extra environment variables (credentials, a shared audit key).
pub fn run_env(config: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    if args.first() != Some(&"init") {
        ensure_init_env(config, env);
    }
    let mut c = lethe();
    c.args(args).arg("--config").arg(config);
    for (k, v) in env {
        c.env(k, v);
    }
    let out: Output = c.output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `YYYY-MM-DD HH:MM:SS.ffffff`, naive UTC, as SQLAlchemy stores it on SQLite.
pub fn naive(secs_ago: i64) -> String {
    let t = now_secs() - secs_ago;
    lethe_core::time::Timestamp::from_unix_seconds(t)
        .unwrap()
        .to_rfc3339()
        .replace('T', " ")
        .replace('Z', ".250000")
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub const DAY: i64 = 86_400;

/// The seed application's training_records table, with `n` rows: even ids expired (by days),
/// odd ids alive; each row owns a file under `files/`.
pub fn seed_training(dir: &Tmp, n: i64) -> Connection {
    let conn = Connection::open(dir.path("ai.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE training_records (id INTEGER NOT NULL PRIMARY KEY, dataset_name VARCHAR(255) NOT NULL,
           user_id VARCHAR(255) NOT NULL, file_path VARCHAR(1024) NOT NULL, created_at DATETIME NOT NULL,
           retention_days INTEGER NOT NULL);
         CREATE INDEX ix_tr_user ON training_records (user_id);",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path("files")).unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for id in 1..=n {
        let age = if id % 2 == 0 { 40 * DAY } else { 5 * DAY };
        let f = dir.path(&format!("files/ds-{id}.jsonl"));
        std::fs::write(&f, format!("row {id}\n")).unwrap();
        tx.execute(
            "INSERT INTO training_records (id, dataset_name, user_id, file_path, created_at, retention_days) VALUES (?1, 'ds', ?2, ?3, ?4, 30)",
            rusqlite::params![id, format!("user-{}", id % 7), f.to_string_lossy(), naive(age)],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    conn
}

pub fn training_config(dir: &Tmp) -> PathBuf {
    let cfg = dir.path("lethe.toml");
    std::fs::write(
        &cfg,
        r#"[state]
url = "sqlite://state/lethe-state.db"

[categories.finetune_dataset]
retention = "90d"

[[targets]]
name = "training_records"
type = "sql"
url = "sqlite://ai.db"
table = "training_records"
category = "finetune_dataset"
key = "id"
created_at = "created_at"
retention_days = "retention_days"
subject = "user_id"
file = "file_path"
file_roots = ["files"]
"#,
    )
    .unwrap();
    cfg
}

pub fn ids(conn: &Connection, table: &str) -> Vec<i64> {
    let mut st = conn
        .prepare(&format!("SELECT id FROM \"{table}\" ORDER BY id"))
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Every audit entry, as exported.
pub fn export(config: &Path) -> Vec<serde_json::Value> {
    let r = run(config, &["audit", "export", "--format", "jsonl"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
