//! The demo: a self-contained example shaped like the seed AI application (its two tables,
//! written the way SQLAlchemy writes them on SQLite), a few traps a real store has, a
//! lethe.toml, and a dry-run sweep over it all. No network, nothing else to set up.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lethe_core::time::{Duration, Timestamp};
use rusqlite::{Connection, params};
use serde::Serialize;

use crate::engine::SweepReport;
use crate::ops::init::init;
use crate::ops::sweep::{SweepRequest, sweep};
use crate::util::now;

const MARKER: &str = ".lethe-demo";

const SCHEMA: &str = r#"
CREATE TABLE training_records (
    id INTEGER NOT NULL,
    dataset_name VARCHAR(255) NOT NULL,
    user_id VARCHAR(255) NOT NULL,
    file_path VARCHAR(1024) NOT NULL,
    created_at DATETIME NOT NULL,
    retention_days INTEGER NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX ix_training_records_user_id ON training_records (user_id);
CREATE TABLE inference_logs (
    id INTEGER NOT NULL,
    model_name VARCHAR(255) NOT NULL,
    user_id VARCHAR(255) NOT NULL,
    prompt_text TEXT NOT NULL,
    response_text TEXT NOT NULL,
    created_at DATETIME NOT NULL,
    retention_days INTEGER,
    PRIMARY KEY (id)
);
CREATE INDEX ix_inference_logs_user_id ON inference_logs (user_id);
"#;

const WORDS: &[&str] = &[
    "summarise",
    "the",
    "refund",
    "policy",
    "for",
    "customer",
    "invoice",
    "translate",
    "this",
    "contract",
    "explain",
    "stack",
    "trace",
    "draft",
    "a",
    "reply",
    "to",
    "patient",
    "email",
];
const MODELS: &[&str] = &["gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-3-70b"];

/// A small deterministic generator, so every demo shows the same data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn text(&mut self, words: u64) -> String {
        (0..words)
            .map(|_| WORDS[self.below(WORDS.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// SQLAlchemy's naive UTC form on SQLite: `YYYY-MM-DD HH:MM:SS.ffffff`.
fn naive(t: Timestamp) -> String {
    let t = Timestamp::from_micros(t.as_micros() / 1_000_000 * 1_000_000 + 123_456);
    t.to_rfc3339()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}

fn ago(now: Timestamp, days: i64, rng: &mut Rng) -> Timestamp {
    let jitter = Duration::from_secs(rng.below(20 * 3600) as i64 + 3600);
    now.checked_sub(Duration::from_days(days))
        .and_then(|t| t.checked_sub(jitter))
        .unwrap_or(now)
}

/// How many dataset files the demo writes (`datasets/ds-0000.jsonl` and on).
const DATASET_FILES: usize = 36;
/// What the demo writes outside the roots, to show that it is never deleted.
const KEEP_ME: &str = "not Lethe's to delete\n";

/// Whether a top-level file is one the demo made, or one the commands it suggests make
/// beside them: SQLite's journals, and the state's keys, second database and lock file.
fn demo_file(name: &str) -> bool {
    let journal = |base: &str| {
        name.strip_prefix(base)
            .is_some_and(|rest| ["", "-wal", "-shm", "-journal"].contains(&rest))
    };
    name == MARKER
        || name == "lethe.toml"
        || journal("ai_data.db")
        || journal("lethe-state.db")
        || journal("lethe-state.db.pending")
        || name == "lethe-state.db.key"
        || name == "lethe-state.db.head"
        || name == "lethe-state.db.signing-key"
        || name == "lethe-state.db.protections-lock"
        || ["lethe-state.db.key.tmp-", "lethe-state.db.signing-key.tmp-"]
            .iter()
            .any(|p| {
                name.strip_prefix(p)
                    .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
            })
}

/// What is in a directory a demo was built in: the demo's own files, by name and kind, and
/// everything else (relative paths), which a rerun must never remove.
#[derive(Default)]
struct Found {
    demo: Vec<PathBuf>,
    other: Vec<String>,
}

impl Found {
    fn scan(dir: &Path) -> Result<Found> {
        let mut found = Found::default();
        for e in read_dir(dir)? {
            let (name, kind) = (e.file_name(), e.file_type()?);
            let path = e.path();
            match name.to_str() {
                Some("datasets") if kind.is_dir() => found.datasets(&path)?,
                Some("outside") if kind.is_dir() => {
                    for e in read_dir(&path)? {
                        if e.file_name() == "keep-me.txt"
                            && e.file_type()?.is_file()
                            && std::fs::read(e.path()).ok().as_deref() == Some(KEEP_ME.as_bytes())
                        {
                            found.demo.push(e.path());
                        } else {
                            found.other(dir, &e.path());
                        }
                    }
                }
                // The config is one a user may edit to try things: kept unless as written.
                Some("lethe.toml")
                    if kind.is_file()
                        && std::fs::read(&path).ok().as_deref()
                            != Some(config_text().as_bytes()) =>
                {
                    found
                        .other
                        .push("lethe.toml (changed since the demo wrote it)".into());
                }
                Some(n) if kind.is_file() && demo_file(n) => found.demo.push(path),
                _ => found.other(dir, &path),
            }
        }
        found.other.sort();
        Ok(found)
    }

    fn datasets(&mut self, path: &Path) -> Result<()> {
        let root = path.parent().unwrap_or(path).to_path_buf();
        for e in read_dir(path)? {
            let (name, kind) = (e.file_name(), e.file_type()?);
            let name = name.to_string_lossy();
            let dataset = name
                .strip_prefix("ds-")
                .and_then(|n| n.strip_suffix(".jsonl"))
                .is_some_and(|n| {
                    n.len() == 4 && n.parse::<usize>().is_ok_and(|i| i < DATASET_FILES)
                });
            if (dataset && kind.is_file()) || (name == "link-to-outside.jsonl" && kind.is_symlink())
            {
                self.demo.push(e.path());
            } else if name == "a-directory" && kind.is_dir() {
                // Kept, and must stay empty: anything in it is someone else's.
                for inner in read_dir(&e.path())? {
                    self.other(&root, &inner.path());
                }
            } else {
                self.other(&root, &e.path());
            }
        }
        Ok(())
    }

    fn other(&mut self, root: &Path, path: &Path) {
        let rel = path.strip_prefix(root).unwrap_or(path);
        self.other.push(rel.display().to_string());
    }
}

fn read_dir(dir: &Path) -> Result<impl Iterator<Item = std::fs::DirEntry>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("Failed to read {}", dir.display()))?
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("Failed to read {}", dir.display()))?;
    Ok(entries.into_iter())
}

/// Makes `dir` ready for a demo: new or empty, or one a demo was built in, whose own files
/// (by name) are removed. Anything else in it is refused, named, and nothing is removed: a
/// rerun never deletes a file the user put there.
fn prepare_dir(dir: &Path) -> Result<()> {
    let usage = |m: String| -> anyhow::Error { crate::util::UsageError(m).into() };
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(usage(format!(
                "{} exists and is not a directory; choose another",
                dir.display()
            )));
        }
        Ok(_) => {
            let empty = read_dir(dir)?.next().is_none();
            if !empty {
                let marker = std::fs::symlink_metadata(dir.join(MARKER));
                if !marker.is_ok_and(|m| m.is_file()) {
                    return Err(usage(format!(
                        "{} exists and was not made by `lethe demo`; choose another directory",
                        dir.display()
                    )));
                }
                let found = Found::scan(dir)?;
                if !found.other.is_empty() {
                    return Err(usage(format!(
                        "{} holds what a rerun of `lethe demo` must not remove: {}; nothing was \
                         touched. Move them out, or choose another directory",
                        dir.display(),
                        found.other.join(", ")
                    )));
                }
                for p in &found.demo {
                    std::fs::remove_file(p)
                        .with_context(|| format!("Failed to remove {}", p.display()))?;
                }
            }
        }
        Err(_) => {}
    }
    std::fs::create_dir_all(dir.join("datasets"))
        .with_context(|| format!("Failed to create {}", dir.join("datasets").display()))?;
    std::fs::create_dir_all(dir.join("outside"))?;
    std::fs::write(dir.join(MARKER), "made by `lethe demo`; safe to delete\n")?;
    Ok(())
}

fn build(dir: &Path, now: Timestamp) -> Result<()> {
    let db = dir.join("ai_data.db");
    let mut conn = Connection::open(&db)?;
    conn.execute_batch(SCHEMA)?;
    let mut rng = Rng(0x5eed_1e7e);
    let tx = conn.transaction()?;
    {
        let mut ins = tx.prepare(
            "INSERT INTO inference_logs (model_name, user_id, prompt_text, response_text, created_at, retention_days) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for _ in 0..240 {
            // Most rows keep the category's window (no retention of their own); some were
            // given a shorter or longer one.
            let days = [None, None, None, None, Some(7), Some(90)][rng.below(6) as usize];
            let age = rng.below(120) as i64;
            let created = naive(ago(now, age, &mut rng));
            let user = format!("user-{:04}", rng.below(40));
            let model = MODELS[rng.below(MODELS.len() as u64) as usize];
            let words = 8 + rng.below(20);
            let prompt = rng.text(words);
            let words = 10 + rng.below(30);
            let response = rng.text(words);
            ins.execute(params![model, user, prompt, response, created, days])?;
        }
        // What real tables also hold: an offset timestamp, a unix time, and one nobody can read.
        let offset = ago(now, 45, &mut rng);
        let shifted =
            Timestamp::from_micros(offset.as_micros() + 5 * 3_600_000_000 + 1_800_000_000);
        let with_offset = format!("{}+05:30", shifted.to_rfc3339().trim_end_matches('Z'));
        ins.execute(params![
            "gpt-4o",
            "user-0001",
            "hello",
            "hi",
            with_offset,
            30
        ])?;
        let unix = ago(now, 60, &mut rng).unix_seconds();
        ins.execute(params!["gpt-4o", "user-0002", "hello", "hi", unix, 30])?;
        ins.execute(params![
            "gpt-4o",
            "user-0003",
            "hello",
            "hi",
            "last tuesday",
            30
        ])?;
    }
    {
        let mut ins = tx.prepare(
            "INSERT INTO training_records (dataset_name, user_id, file_path, created_at, retention_days) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let datasets = dir.join("datasets");
        for i in 0..36 {
            let days = [90, 90, 90, 30, 180][rng.below(5) as usize];
            let age = rng.below(200) as i64;
            let path = datasets.join(format!("ds-{i:04}.jsonl"));
            let words = 20 + rng.below(20);
            std::fs::write(&path, format!("{{\"text\": \"{}\"}}\n", rng.text(words)))?;
            let user = format!("user-{:04}", rng.below(40));
            let name = ["support-chats", "code-review", "triage"][rng.below(3) as usize];
            let created = naive(ago(now, age, &mut rng));
            ins.execute(params![name, user, path.to_string_lossy(), created, days])?;
        }
        // Traps: a path outside the roots, a link out of them, a directory, a file already gone.
        let secret = dir.join("outside").join("keep-me.txt");
        std::fs::write(&secret, KEEP_ME)?;
        let link = datasets.join("link-to-outside.jsonl");
        std::os::unix::fs::symlink(&secret, &link)?;
        let subdir = datasets.join("a-directory");
        std::fs::create_dir_all(&subdir)?;
        let gone = datasets.join("already-deleted.jsonl");
        let old = naive(ago(now, 400, &mut rng));
        for (user, p) in [
            ("user-0004", &secret),
            ("user-0005", &link),
            ("user-0006", &subdir),
            ("user-0007", &gone),
        ] {
            ins.execute(params!["triage", user, p.to_string_lossy(), old, 90])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn config_text() -> String {
    lethe_core::config::DEFAULT_CONFIG.to_string()
}

/// A demo built and dry-run.
#[derive(Clone, Debug, Serialize)]
pub struct DemoRun {
    /// Where it was built, resolved.
    pub dir: PathBuf,
    /// Its config, in `dir`.
    pub config: PathBuf,
    /// The dry run over it.
    pub report: SweepReport,
}

/// Builds a demo in `dir` (new, empty, or one a demo was built in: its own files are
/// replaced, anything else there is refused), makes its state, and dry-runs a sweep over it.
pub fn run(dir: &Path) -> crate::error::Result<DemoRun> {
    let now = now();
    prepare_dir(dir)?;
    // Rows hold absolute paths, as applications write them.
    let dir = std::fs::canonicalize(dir)
        .with_context(|| format!("Failed to resolve {}", dir.display()))?;
    build(&dir, now).with_context(|| format!("Failed to build the demo in {}", dir.display()))?;
    let config = dir.join("lethe.toml");
    std::fs::write(&config, config_text())?;

    let loaded = crate::settings::load(Some(&config))?;
    init(&loaded)?;
    let report = sweep(&loaded, &SweepRequest::default())?;
    Ok(DemoRun {
        dir,
        config,
        report,
    })
}
