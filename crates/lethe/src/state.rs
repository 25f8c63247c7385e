//! Lethe's own records, in SQLite or PostgreSQL: the hash-chained audit trail, the
//! write-ahead list of deletions in flight, per-target leases, the run log, holds,
//! exceptions and requests.
//!
//! Every write that extends the chain runs in an exclusive write transaction (SQLite's
//! `BEGIN IMMEDIATE`, a PostgreSQL advisory lock), so processes append one after the other
//! and the chain never forks. SQLite runs in WAL with `synchronous=FULL`, so a committed
//! entry survives a crash.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use anyhow::{Context, Result, anyhow, bail};
use lethe_core::audit::{self, Action, AuditKey, Body, Entry, Verifier};

use crate::db::{Db, DbRow, Val};
use crate::util::{UsageError, now};
use crate::vals;

/// Schema steps, in order. `{SEQ}` and `{ID}` differ between the backends; all else is
/// written once.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE audit (
    seq {SEQ},
    decided_at TEXT NOT NULL,
    run_id TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    item_key TEXT NOT NULL,
    category TEXT NOT NULL,
    reason TEXT NOT NULL,
    policy_window TEXT NOT NULL,
    expires_at TEXT,
    subject_hash TEXT,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_item ON audit(target, item_key);
CREATE INDEX audit_subject ON audit(subject_hash) WHERE subject_hash IS NOT NULL;
CREATE INDEX audit_run ON audit(run_id);
CREATE TABLE audit_seal (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    mac TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL
);
CREATE TABLE pending (
    id {ID},
    run_id TEXT NOT NULL,
    target TEXT NOT NULL,
    created_at TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX pending_target ON pending(target);
CREATE TABLE leases (
    target TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    pid BIGINT NOT NULL,
    host TEXT NOT NULL,
    acquired_at TEXT NOT NULL,
    heartbeat BIGINT NOT NULL
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    dry_run BIGINT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    summary TEXT
);
"#,
    r#"
CREATE TABLE holds (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL CHECK (scope IN ('subject', 'item', 'target')),
    target TEXT,
    item_key TEXT,
    subject_hash TEXT,
    case_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    placed_by TEXT NOT NULL,
    placed_at TEXT NOT NULL,
    released_at TEXT,
    released_by TEXT,
    release_reason TEXT
);
CREATE TABLE exceptions (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    item_key TEXT NOT NULL,
    until TEXT NOT NULL,
    until_micros BIGINT NOT NULL,
    item_expires_at TEXT NOT NULL,
    owner TEXT NOT NULL,
    reason TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    renewal BIGINT NOT NULL,
    superseded_by TEXT,
    revoked_at TEXT,
    revoked_by TEXT,
    revoke_reason TEXT
);
CREATE INDEX exceptions_item ON exceptions(target, item_key);
CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    subject_hash TEXT NOT NULL,
    received_at TEXT NOT NULL,
    deadline TEXT NOT NULL,
    status TEXT NOT NULL,
    counts TEXT NOT NULL DEFAULT '[]',
    updated_at TEXT NOT NULL
);
CREATE INDEX requests_subject ON requests(subject_hash);
"#,
    r#"
CREATE TABLE batches_done (
    pending_id BIGINT PRIMARY KEY,
    finished_at TEXT NOT NULL
);
"#,
    // A per-entry index on a keyed hash takes its keys in random order and rewrote much of
    // itself on every append; which runs touched a subject is enough to find its entries.
    r#"
CREATE TABLE audit_subjects (
    subject_hash TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (subject_hash, run_id)
);
INSERT INTO audit_subjects (subject_hash, run_id)
    SELECT DISTINCT subject_hash, run_id FROM audit WHERE subject_hash IS NOT NULL;
DROP INDEX audit_subject;
"#,
    // PostgreSQL only. A write-ahead record is read back only after a crash: compressing
    // it cost the server more than the deletions did. The trail's keys compare bytewise:
    // a locale's collation is slower and means nothing for keys and hashes.
    r#"{PG_ONLY}
ALTER TABLE pending ALTER COLUMN payload SET STORAGE EXTERNAL;
ALTER TABLE audit ALTER COLUMN target TYPE TEXT COLLATE "C",
    ALTER COLUMN item_key TYPE TEXT COLLATE "C",
    ALTER COLUMN run_id TYPE TEXT COLLATE "C";
"#,
];

/// A lease not renewed for this long is taken over, so a dead holder never blocks forever.
pub const LEASE_TTL_SECS: i64 = 120;

pub struct State {
    db: Db,
    /// Where the state lives, for messages (never with a password).
    pub location: String,
    pub key: AuditKey,
    holder: String,
    /// How it was opened, so a second connection can be opened for the audit writer.
    url: String,
    password_env: Option<String>,
    base: PathBuf,
    key_env: Option<String>,
    /// (subject hash, run) pairs already in `audit_subjects`, so appends skip them.
    subjects_seen: std::collections::HashSet<(String, String)>,
}

/// Held while holds and exceptions may not change (see [`State::lock_protections`]);
/// dropping it releases a file lock.
pub struct ProtectionsLock {
    _file: Option<std::fs::File>,
}

/// The write-ahead record of deletions in flight. Beside a SQLite state it is a small file
/// of its own (`<state>.pending`), so that recording the next batch never waits for the
/// audit writer's transaction; with a PostgreSQL state it is a table in the same database.
pub struct PendingStore {
    db: Db,
}

impl PendingStore {
    /// Records several batches, durably, in one transaction; returns their ids in order.
    pub fn add_many(
        &mut self,
        run_id: &str,
        target: &str,
        payloads: &[String],
    ) -> Result<Vec<i64>> {
        let mut ids = Vec::with_capacity(payloads.len());
        self.db.batch("BEGIN")?;
        let written = (|| -> Result<()> {
            for payload in payloads {
                let id = (u64::from_str_radix(&random_hex(8)?, 16)? & (i64::MAX as u64)) as i64;
                self.db.execute(
                    "INSERT INTO pending (id, run_id, target, created_at, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
                    &vals![id, run_id, target, now().to_rfc3339(), payload.as_str()],
                )?;
                ids.push(id);
            }
            Ok(())
        })();
        match written {
            Ok(()) => {
                self.db
                    .batch("COMMIT")
                    .context("Failed to record pending deletions")?;
                Ok(ids)
            }
            Err(e) => {
                let _ = self.db.batch("ROLLBACK");
                Err(e.context("Failed to record pending deletions"))
            }
        }
    }

    /// Batches an interrupted run left behind for a target: (id, run_id, payload).
    pub fn list(&mut self, target: &str) -> Result<Vec<(i64, String, String)>> {
        Ok(self
            .db
            .query(
                "SELECT id, run_id, payload FROM pending WHERE target = ?1 ORDER BY created_at, id",
                &vals![target],
            )?
            .into_iter()
            .map(|r| (r.int(0), r.text(1), r.text(2)))
            .collect())
    }

    /// Whether the records live in the state's own database (PostgreSQL), where appending
    /// a batch's entries already dropped its record.
    pub fn in_state(&self) -> bool {
        self.db.is_pg()
    }

    pub fn remove(&mut self, ids: &[i64]) -> Result<()> {
        for id in ids {
            self.db
                .execute("DELETE FROM pending WHERE id = ?1", &vals![*id])?;
        }
        Ok(())
    }
}

pub enum Lease {
    Acquired,
    Busy { holder: String, since: String },
}

/// How entries are picked out of the trail.
#[derive(Default)]
pub struct Filter {
    pub target: Option<String>,
    pub key: Option<String>,
    pub subject_hash: Option<String>,
    pub run_id: Option<String>,
}

pub struct VerifyReport {
    pub entries: u64,
    pub head_seq: i64,
    pub head_hash: String,
    pub problem: Option<String>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn random_hex(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("Failed to read /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A fresh random id with a readable prefix, e.g. `run-4f0c2a9e1b7d3c55`.
pub fn new_id(prefix: &str) -> Result<String> {
    Ok(format!("{prefix}-{}", random_hex(8)?))
}

/// Loads the audit key from the environment variable the config names, else from a key file
/// beside the state (created on first use, mode 0600).
fn load_key(key_path: &Path, key_env: Option<&str>) -> Result<AuditKey> {
    if let Some(var) = key_env {
        let val = std::env::var(var).map_err(|_| {
            UsageError(format!(
                "[audit] key_env names {var}, but {var} is not set: set it, or remove key_env to use a key file beside the state"
            ))
        })?;
        return AuditKey::new(val.into_bytes())
            .map_err(|e| UsageError(format!("{var}: {e}")).into());
    }
    if !key_path.exists() {
        // Written whole to a private temporary file, then linked into place: a second
        // process starting at the same moment sees either no key file or the whole key.
        let mut tmp = key_path.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("Failed to create audit key file {}", tmp.display()))?;
            f.write_all(random_hex(32)?.as_bytes())
                .and_then(|_| f.sync_all())
                .with_context(|| format!("Failed to write audit key file {}", tmp.display()))?;
        }
        let linked = std::fs::hard_link(&tmp, key_path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("Failed to create audit key file {}", key_path.display())
                });
            }
        }
    }
    let hex = std::fs::read_to_string(key_path)
        .with_context(|| format!("Failed to read audit key file {}", key_path.display()))?;
    AuditKey::new(hex.trim().as_bytes().to_vec())
        .map_err(|e| anyhow!("audit key file {}: {e}", key_path.display()))
}

const ENTRY_COLS: &str = "seq, decided_at, run_id, action, target, item_key, category, reason, policy_window, expires_at, subject_hash, detail, prev_hash, hash";

fn entry_from(r: &DbRow) -> Entry {
    Entry {
        seq: r.int(0),
        body: Body {
            decided_at: r.text(1),
            run_id: r.text(2),
            // An unknown action cannot hash to the stored value; verify reports it.
            action: Action::parse(&r.text(3)).unwrap_or(Action::Failed),
            target: r.text(4),
            item_key: r.text(5),
            category: r.text(6),
            reason: r.text(7),
            window: r.text(8),
            expires_at: r.opt_text(9),
            subject_hash: r.opt_text(10),
            detail: r.text(11),
        },
        prev_hash: r.text(12),
        hash: r.text(13),
    }
}

impl State {
    /// Opens (creating if needed) the state at a `sqlite://` or `postgres://` URL; relative
    /// paths are read from `base`.
    pub fn open(
        url: &str,
        password_env: Option<&str>,
        base: &Path,
        key_env: Option<&str>,
    ) -> Result<State> {
        let (db, location, key_path) = if url.starts_with("postgres://")
            || url.starts_with("postgresql://")
        {
            let db = Db::open_pg(url, password_env)?;
            // Processes sharing a PostgreSQL state on several hosts need one key: key_env.
            (db, crate::db::redact(url), base.join("lethe-state.key"))
        } else {
            let path = sqlite_path(url, base).ok_or_else(|| {
                UsageError(format!(
                    "[state] url {:?}: expected sqlite://PATH or postgres://...",
                    crate::db::redact(url)
                ))
            })?;
            if let Some(dir) = path.parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("Failed to create {}", dir.display()))?;
            }
            let db = Db::open_sqlite(&path)?;
            if let Db::Sqlite(conn) = &db {
                set_wal(conn)
                    .with_context(|| format!("Failed to set WAL on state {}", path.display()))?;
                conn.pragma_update(None, "synchronous", "FULL")?;
                // The trail's indexes take keys in no useful order; a larger cache keeps a
                // sweep of a million items from rereading them from disk.
                conn.pragma_update(None, "cache_size", -4_096)?;
                // Checkpoint in larger steps: each checkpoint rewrites the index pages it
                // touches, and small steps rewrite the same pages many times.
                conn.pragma_update(None, "wal_autocheckpoint", 8_192)?;
            }
            let mut key = path.as_os_str().to_owned();
            key.push(".key");
            (db, path.display().to_string(), PathBuf::from(key))
        };
        let key = load_key(&key_path, key_env)?;
        let mut st = State {
            db,
            location,
            key,
            holder: format!("{}:{}", hostname(), std::process::id()),
            url: url.to_string(),
            password_env: password_env.map(str::to_string),
            base: base.to_path_buf(),
            key_env: key_env.map(str::to_string),
            subjects_seen: Default::default(),
        };
        st.migrate()?;
        Ok(st)
    }

    fn migrate(&mut self) -> Result<()> {
        let pg = self.db.is_pg();
        let location = self.location.clone();
        self.db.write(|db| {
            db.batch("CREATE TABLE IF NOT EXISTS lethe_schema (version BIGINT NOT NULL)")?;
            let version = match db.query_opt("SELECT version FROM lethe_schema", &[])? {
                Some(r) => r.int(0),
                None => {
                    db.execute("INSERT INTO lethe_schema (version) VALUES (0)", &[])?;
                    0
                }
            };
            let known = MIGRATIONS.len() as i64;
            if version > known {
                bail!(
                    "state {location} was written by a newer Lethe (schema {version}, this one knows {known})"
                );
            }
            for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                let m = match m.strip_prefix("{PG_ONLY}") {
                    Some(_) if !pg => continue,
                    Some(rest) => rest,
                    None => m,
                };
                let sql = if pg {
                    m.replace("{SEQ}", "BIGINT PRIMARY KEY").replace("{ID}", "BIGSERIAL PRIMARY KEY")
                } else {
                    m.replace("{SEQ}", "INTEGER PRIMARY KEY").replace("{ID}", "INTEGER PRIMARY KEY")
                };
                db.batch(&sql)
                    .with_context(|| format!("Failed to apply state migration {}", i + 1))?;
            }
            db.execute("UPDATE lethe_schema SET version = ?1", &vals![known])?;
            Ok(())
        })
    }

    /// The state's database, for the registers kept beside the trail.
    pub fn db(&mut self) -> &mut Db {
        &mut self.db
    }

    /// A second connection to the same state, for the audit writer's thread.
    pub fn reopen(&self) -> Result<State> {
        let mut st = State::open(
            &self.url,
            self.password_env.as_deref(),
            &self.base,
            self.key_env.as_deref(),
        )?;
        st.holder = self.holder.clone();
        Ok(st)
    }

    /// Opens the write-ahead record of deletions in flight.
    pub fn pending_store(&self) -> Result<PendingStore> {
        let mut db = if self.db.is_pg() {
            Db::open_pg(&self.url, self.password_env.as_deref())?
        } else {
            let path = sqlite_path(&self.url, &self.base)
                .ok_or_else(|| anyhow!("state url is not sqlite"))?;
            let mut p = path.into_os_string();
            p.push(".pending");
            let db = Db::open_sqlite(Path::new(&p))?;
            if let Db::Sqlite(conn) = &db {
                conn.pragma_update(None, "synchronous", "FULL")?;
            }
            db
        };
        if !db.is_pg() {
            db.batch(
                "CREATE TABLE IF NOT EXISTS pending (id BIGINT PRIMARY KEY, run_id TEXT NOT NULL, target TEXT NOT NULL, created_at TEXT NOT NULL, payload TEXT NOT NULL)",
            )?;
        }
        Ok(PendingStore { db })
    }

    /// Whether the audit entries of a pending batch were already committed.
    pub fn batch_done(&mut self, pending_id: i64) -> Result<bool> {
        Ok(self
            .db
            .query_opt(
                "SELECT 1 FROM batches_done WHERE pending_id = ?1",
                &vals![pending_id],
            )?
            .is_some())
    }

    /// Appends entries to the chain and, in the same transaction, marks the pending batches
    /// they record as done, so a recovery never records them twice.
    pub fn append(&mut self, bodies: Vec<Body>, batches: &[i64]) -> Result<()> {
        let at = now().to_rfc3339();
        self.append_with(bodies, |db| {
            // With a PostgreSQL state the pending records live in the same database: drop
            // them in this transaction too (one commit, not two).
            let pending_here = db.is_pg();
            for id in batches {
                db.execute(
                    "INSERT INTO batches_done (pending_id, finished_at) VALUES (?1, ?2) ON CONFLICT (pending_id) DO NOTHING",
                    &vals![*id, &at],
                )?;
                if pending_here {
                    db.execute("DELETE FROM pending WHERE id = ?1", &vals![*id])?;
                }
            }
            Ok(())
        })
    }

    /// Appends entries and makes the record change they describe, in one transaction: a hold
    /// is never placed without its entry, nor an entry written for a hold that was not placed.
    pub fn append_with(
        &mut self,
        bodies: Vec<Body>,
        change: impl FnOnce(&mut Db) -> Result<()>,
    ) -> Result<()> {
        let key = self.key.clone();
        let mut new_subjects: Vec<(String, String)> = Vec::new();
        let mut added = std::collections::HashSet::new();
        for b in &bodies {
            if let Some(h) = &b.subject_hash {
                let pair = (h.clone(), b.run_id.clone());
                if !self.subjects_seen.contains(&pair) && added.insert(pair.clone()) {
                    new_subjects.push(pair);
                }
            }
        }
        // A change to holds or exceptions waits for any sweep's deletions in flight (see
        // `lock_protections`), so a hold recorded is one every later deletion sees.
        let protections = bodies.iter().any(|b| {
            matches!(
                b.action,
                Action::HoldPlaced
                    | Action::HoldReleased
                    | Action::ExceptionGranted
                    | Action::ExceptionRenewed
                    | Action::ExceptionRevoked
            )
        });
        let file_lock = if protections {
            self.protections_file_lock()?
        } else {
            None
        };
        let append = |db: &mut Db| {
            // Pairs another process added meanwhile are skipped; the rest go in bulk.
            let mut runs: Vec<&String> = new_subjects.iter().map(|(_, r)| r).collect();
            runs.sort();
            runs.dedup();
            let mut known = std::collections::HashSet::new();
            for run in runs {
                for r in db.query(
                    "SELECT subject_hash FROM audit_subjects WHERE run_id = ?1",
                    &vals![run],
                )? {
                    known.insert((r.text(0), run.clone()));
                }
            }
            let fresh: Vec<Vec<Val>> = new_subjects
                .iter()
                .filter(|p| !known.contains(*p))
                .map(|(h, run)| vals![h, run].to_vec())
                .collect();
            db.insert_many("audit_subjects", &["subject_hash", "run_id"], fresh)?;
            let (head_seq, head_hash) =
                match db.query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])? {
                    Some(r) => (r.int(0), r.text(1)),
                    None => (0, audit::GENESIS.to_string()),
                };
            let entries = audit::chain(head_seq, &head_hash, bodies);
            insert_entries(db, &entries)?;
            if let Some(last) = entries.last() {
                db.execute(
                        "INSERT INTO audit_seal (id, seq, hash, mac, key_fingerprint) VALUES (1, ?1, ?2, ?3, ?4)
                         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, mac = excluded.mac, key_fingerprint = excluded.key_fingerprint",
                        &vals![last.seq, &last.hash, key.seal(last.seq, &last.hash), key.fingerprint()],
                    )?;
            }
            change(db)
        };
        let done = if protections {
            self.db.write_protections(append)
        } else {
            self.db.write(append)
        }
        .context("Failed to append to the audit trail");
        drop(file_lock);
        if done.is_ok() {
            self.subjects_seen.extend(new_subjects);
        }
        done
    }

    /// Excludes every change to holds and exceptions, by any process, until
    /// `unlock_protections`: a sweep holds it from its last look at them until its
    /// deletions commit. It is not the trail's write lock, so the audit writer goes on
    /// meanwhile. SQLite state: an exclusive `flock` on `<state>.protections-lock`;
    /// PostgreSQL: an advisory lock in a transaction the look is read in.
    pub fn lock_protections(&mut self) -> Result<ProtectionsLock> {
        if self.db.is_pg() {
            self.db.batch(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({})",
                crate::db::PROTECTIONS_LOCK
            ))?;
            return Ok(ProtectionsLock { _file: None });
        }
        Ok(ProtectionsLock {
            _file: self.protections_file_lock()?,
        })
    }

    pub fn unlock_protections(&mut self, lock: ProtectionsLock) {
        if self.db.is_pg() {
            let _ = self.db.batch("ROLLBACK");
        }
        drop(lock);
    }

    /// The lock file beside a SQLite state, locked exclusively; `None` with PostgreSQL.
    fn protections_file_lock(&self) -> Result<Option<std::fs::File>> {
        if self.db.is_pg() {
            return Ok(None);
        }
        let path =
            sqlite_path(&self.url, &self.base).ok_or_else(|| anyhow!("state url is not sqlite"))?;
        let mut p = path.into_os_string();
        p.push(".protections-lock");
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&p)
            .with_context(|| format!("Failed to open {}", Path::new(&p).display()))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("Failed to lock {}", Path::new(&p).display()))?;
        Ok(Some(file))
    }

    /// Takes the target's lease, or says who holds it. A holder that is dead (same host,
    /// process gone) or silent for [`LEASE_TTL_SECS`] loses it.
    pub fn acquire_lease(&mut self, target: &str) -> Result<Lease> {
        let me = self.holder.clone();
        let host = hostname();
        let pid = std::process::id() as i64;
        let now_s = now().unix_seconds();
        self.db.write(|db| {
            let cur = db.query_opt(
                "SELECT holder, pid, host, acquired_at, heartbeat FROM leases WHERE target = ?1",
                &vals![target],
            )?;
            if let Some(r) = cur
                && r.text(0) != me
            {
                let (hpid, hhost) = (r.int(1), r.text(2));
                let dead = hhost == host && !process_alive(hpid);
                let stale = now_s - r.int(4) > LEASE_TTL_SECS;
                if !dead && !stale {
                    return Ok(Lease::Busy {
                        holder: format!("pid {hpid} on {hhost}"),
                        since: r.text(3),
                    });
                }
            }
            db.execute(
                "INSERT INTO leases (target, holder, pid, host, acquired_at, heartbeat) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (target) DO UPDATE SET holder = excluded.holder, pid = excluded.pid, host = excluded.host, acquired_at = excluded.acquired_at, heartbeat = excluded.heartbeat",
                &vals![target, &me, pid, &host, now().to_rfc3339(), now_s],
            )?;
            Ok(Lease::Acquired)
        })
    }

    pub fn renew_lease(&mut self, target: &str) -> Result<()> {
        let holder = self.holder.clone();
        self.db.execute(
            "UPDATE leases SET heartbeat = ?1 WHERE target = ?2 AND holder = ?3",
            &vals![now().unix_seconds(), target, holder],
        )?;
        Ok(())
    }

    pub fn release_lease(&mut self, target: &str) -> Result<()> {
        let holder = self.holder.clone();
        self.db.execute(
            "DELETE FROM leases WHERE target = ?1 AND holder = ?2",
            &vals![target, holder],
        )?;
        Ok(())
    }

    pub fn start_run(&mut self, run_id: &str, kind: &str, dry_run: bool) -> Result<()> {
        self.db.execute(
            "INSERT INTO runs (run_id, kind, dry_run, started_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (run_id) DO UPDATE SET dry_run = excluded.dry_run, started_at = excluded.started_at, finished_at = NULL",
            &vals![run_id, kind, dry_run, now().to_rfc3339()],
        )?;
        Ok(())
    }

    pub fn finish_run(&mut self, run_id: &str, summary: &str) -> Result<()> {
        self.db.execute(
            "UPDATE runs SET finished_at = ?1, summary = ?2 WHERE run_id = ?3",
            &vals![now().to_rfc3339(), summary, run_id],
        )?;
        Ok(())
    }

    /// Streams entries matching `filter`, oldest first.
    pub fn entries(
        &mut self,
        filter: &Filter,
        mut each: impl FnMut(Entry) -> Result<()>,
    ) -> Result<()> {
        let mut sql = format!("SELECT {ENTRY_COLS} FROM audit WHERE 1=1");
        let mut args: Vec<Val> = Vec::new();
        if let Some(h) = &filter.subject_hash {
            args.push(h.into());
            sql.push_str(
                " AND run_id IN (SELECT run_id FROM audit_subjects WHERE subject_hash = ?1)",
            );
        }
        for (col, val) in [
            ("target", &filter.target),
            ("item_key", &filter.key),
            ("subject_hash", &filter.subject_hash),
            ("run_id", &filter.run_id),
        ] {
            if let Some(v) = val {
                args.push(v.into());
                sql.push_str(&format!(" AND {col} = ?{}", args.len()));
            }
        }
        sql.push_str(" ORDER BY seq");
        self.db.query_each(&sql, &args, |r| each(entry_from(&r)))
    }

    /// Recomputes the whole chain and checks the seal over its head.
    pub fn verify(&mut self) -> Result<VerifyReport> {
        let mut v = Verifier::new(0, audit::GENESIS);
        let mut problem = None;
        self.entries(&Filter::default(), |e| {
            if problem.is_none()
                && let Err(b) = v.push(&e)
            {
                problem = Some(b.to_string());
            }
            Ok(())
        })?;
        if problem.is_none() {
            let seal = self
                .db
                .query_opt("SELECT seq, hash, mac FROM audit_seal WHERE id = 1", &[])?
                .map(|r| (r.int(0), r.text(1), r.text(2)));
            let seal_ref = seal.as_ref().map(|(s, h, m)| (*s, h.as_str(), m.as_str()));
            if let Err(b) = v.check_seal(&self.key, seal_ref) {
                problem = Some(b.to_string());
            }
        }
        let (head_seq, head_hash) = v.head();
        Ok(VerifyReport {
            entries: v.count,
            head_seq,
            head_hash: head_hash.to_string(),
            problem,
        })
    }
}

/// Inserts chained entries in one bulk insert, one row materialized at a time.
fn insert_entries(db: &mut Db, entries: &[Entry]) -> Result<()> {
    let cols: Vec<&str> = ENTRY_COLS.split(", ").collect();
    let rows = entries.iter().map(|e| {
        let b = &e.body;
        vals![
            e.seq,
            &b.decided_at,
            &b.run_id,
            b.action.as_str(),
            &b.target,
            &b.item_key,
            &b.category,
            &b.reason,
            &b.window,
            &b.expires_at,
            &b.subject_hash,
            &b.detail,
            &e.prev_hash,
            &e.hash
        ]
        .to_vec()
    });
    db.insert_many("audit", &cols, rows)
}

/// Switches the state to WAL. Two processes opening a new state at once race for this, and
/// SQLite answers the loser with BUSY without waiting, so retry for a while.
fn set_wal(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let mut tries = 0;
    loop {
        let mode: rusqlite::Result<String> =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0));
        match mode {
            Ok(_) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 200 =>
            {
                tries += 1;
                std::thread::sleep(StdDuration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

fn process_alive(pid: i64) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// `sqlite://rel/path.db`, `sqlite:///abs/path.db` or `sqlite:path.db`; relative to `base`.
pub fn sqlite_path(url: &str, base: &Path) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let rest = rest.split('?').next().unwrap_or(rest);
    if rest.is_empty() {
        return None;
    }
    Some(base.join(rest))
}
