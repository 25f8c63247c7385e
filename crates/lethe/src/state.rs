//! Lethe's own records in SQLite: the hash-chained audit trail, the write-ahead list of
//! deletions in flight, per-target leases and the run log.
//!
//! Every write that extends the chain runs in `BEGIN IMMEDIATE`, so two processes append one
//! after the other and the chain never forks; the state runs in WAL with `synchronous=FULL`,
//! so a committed entry survives a crash.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use anyhow::{Context, Result, anyhow, bail};
use lethe_core::audit::{self, Action, AuditKey, Body, Entry, Verifier};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::util::{UsageError, now};

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
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
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    mac TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL
);
CREATE TABLE pending (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    target TEXT NOT NULL,
    created_at TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX pending_target ON pending(target);
CREATE TABLE leases (
    target TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    acquired_at TEXT NOT NULL,
    heartbeat INTEGER NOT NULL
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
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
    until_micros INTEGER NOT NULL,
    item_expires_at TEXT NOT NULL,
    owner TEXT NOT NULL,
    reason TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    renewal INTEGER NOT NULL,
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
];

/// A lease not renewed for this long is taken over, so a dead holder never blocks forever.
pub const LEASE_TTL_SECS: i64 = 120;

pub struct State {
    conn: Connection,
    pub path: PathBuf,
    pub key: AuditKey,
    holder: String,
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
fn load_key(state_path: &Path, key_env: Option<&str>) -> Result<AuditKey> {
    if let Some(var) = key_env {
        let val = std::env::var(var).map_err(|_| {
            UsageError(format!(
                "[audit] key_env names {var}, but {var} is not set: set it, or remove key_env to use a key file beside the state"
            ))
        })?;
        return AuditKey::new(val.into_bytes())
            .map_err(|e| UsageError(format!("{var}: {e}")).into());
    }
    let mut key_path = state_path.as_os_str().to_owned();
    key_path.push(".key");
    let key_path = PathBuf::from(key_path);
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
        let linked = std::fs::hard_link(&tmp, &key_path);
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
    let hex = std::fs::read_to_string(&key_path)
        .with_context(|| format!("Failed to read audit key file {}", key_path.display()))?;
    AuditKey::new(hex.trim().as_bytes().to_vec())
        .map_err(|e| anyhow!("audit key file {}: {e}", key_path.display()))
}

impl State {
    /// Opens (creating if needed) the state at a `sqlite://` URL; relative paths are read
    /// from `base`.
    pub fn open(url: &str, base: &Path, key_env: Option<&str>) -> Result<State> {
        let path = sqlite_path(url, base).ok_or_else(|| {
            UsageError(format!(
                "[state] url {url:?}: only sqlite://PATH state is supported by this build"
            ))
        })?;
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("Failed to create {}", dir.display()))?;
        }
        let conn = Connection::open(&path)
            .with_context(|| format!("Failed to open state {}", path.display()))?;
        conn.busy_timeout(StdDuration::from_secs(60))?;
        set_wal(&conn).with_context(|| format!("Failed to set WAL on state {}", path.display()))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let key = load_key(&path, key_env)?;
        let mut st = State {
            conn,
            path,
            key,
            holder: format!("{}:{}", hostname(), std::process::id()),
        };
        st.migrate()?;
        Ok(st)
    }

    fn migrate(&mut self) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            bail!(
                "state {} was written by a newer Lethe (schema {version}, this one knows {known})",
                self.path.display()
            );
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(m)
                .with_context(|| format!("Failed to apply state migration {}", i + 1))?;
        }
        tx.pragma_update(None, "user_version", known)?;
        tx.commit()?;
        Ok(())
    }

    /// Appends entries to the chain and, in the same transaction, forgets a pending batch.
    pub fn append(&mut self, bodies: Vec<Body>, clear_pending: Option<i64>) -> Result<()> {
        self.append_with(bodies, |tx| {
            if let Some(id) = clear_pending {
                tx.execute("DELETE FROM pending WHERE id = ?1", [id])?;
            }
            Ok(())
        })
    }

    /// Appends entries and makes the record change they describe, in one transaction: a hold
    /// is never placed without its entry, nor an entry written for a hold that was not placed.
    pub fn append_with(
        &mut self,
        bodies: Vec<Body>,
        change: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<()>,
    ) -> Result<()> {
        let fingerprint = self.key.fingerprint();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("Failed to lock the state for an audit append")?;
        let (head_seq, head_hash): (i64, String) = tx
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .unwrap_or((0, audit::GENESIS.to_string()));
        let entries = audit::chain(head_seq, &head_hash, bodies);
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO audit (seq, decided_at, run_id, action, target, item_key, category, reason, policy_window, expires_at, subject_hash, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?;
            for e in &entries {
                let b = &e.body;
                ins.execute(params![
                    e.seq,
                    b.decided_at,
                    b.run_id,
                    b.action.as_str(),
                    b.target,
                    b.item_key,
                    b.category,
                    b.reason,
                    b.window,
                    b.expires_at,
                    b.subject_hash,
                    b.detail,
                    e.prev_hash,
                    e.hash
                ])?;
            }
        }
        if let Some(last) = entries.last() {
            tx.execute(
                "INSERT INTO audit_seal (id, seq, hash, mac, key_fingerprint) VALUES (1, ?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, mac = excluded.mac, key_fingerprint = excluded.key_fingerprint",
                params![last.seq, last.hash, self.key.seal(last.seq, &last.hash), fingerprint],
            )?;
        }
        change(&tx)?;
        tx.commit().context("Failed to commit audit entries")?;
        Ok(())
    }

    /// Records, durably, the items about to be deleted: the write-ahead half of an apply.
    pub fn add_pending(&mut self, run_id: &str, target: &str, payload: &str) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO pending (run_id, target, created_at, payload) VALUES (?1, ?2, ?3, ?4)",
                params![run_id, target, now().to_rfc3339(), payload],
            )
            .context("Failed to record pending deletions")?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Batches an interrupted run left behind for a target: (id, run_id, payload).
    pub fn pending(&self, target: &str) -> Result<Vec<(i64, String, String)>> {
        let mut st = self
            .conn
            .prepare("SELECT id, run_id, payload FROM pending WHERE target = ?1 ORDER BY id")?;
        let rows = st
            .query_map([target], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Takes the target's lease, or says who holds it. A holder that is dead (same host,
    /// process gone) or silent for [`LEASE_TTL_SECS`] loses it.
    pub fn acquire_lease(&mut self, target: &str) -> Result<Lease> {
        let me = self.holder.clone();
        let host = hostname();
        let pid = std::process::id() as i64;
        let now_s = now().unix_seconds();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let cur: Option<(String, i64, String, String, i64)> = tx
            .query_row(
                "SELECT holder, pid, host, acquired_at, heartbeat FROM leases WHERE target = ?1",
                [target],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        if let Some((holder, hpid, hhost, since, beat)) = cur
            && holder != me
        {
            let dead = hhost == host && !process_alive(hpid);
            let stale = now_s - beat > LEASE_TTL_SECS;
            if !dead && !stale {
                return Ok(Lease::Busy {
                    holder: format!("pid {hpid} on {hhost}"),
                    since,
                });
            }
        }
        tx.execute(
            "INSERT INTO leases (target, holder, pid, host, acquired_at, heartbeat) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (target) DO UPDATE SET holder = excluded.holder, pid = excluded.pid, host = excluded.host, acquired_at = excluded.acquired_at, heartbeat = excluded.heartbeat",
            params![target, me, pid, host, now().to_rfc3339(), now_s],
        )?;
        tx.commit()?;
        Ok(Lease::Acquired)
    }

    pub fn renew_lease(&mut self, target: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE leases SET heartbeat = ?1 WHERE target = ?2 AND holder = ?3",
            params![now().unix_seconds(), target, self.holder],
        )?;
        Ok(())
    }

    pub fn release_lease(&mut self, target: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM leases WHERE target = ?1 AND holder = ?2",
            params![target, self.holder],
        )?;
        Ok(())
    }

    pub fn start_run(&mut self, run_id: &str, kind: &str, dry_run: bool) -> Result<()> {
        self.conn.execute(
            "INSERT INTO runs (run_id, kind, dry_run, started_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (run_id) DO UPDATE SET dry_run = excluded.dry_run, started_at = excluded.started_at, finished_at = NULL",
            params![run_id, kind, dry_run, now().to_rfc3339()],
        )?;
        Ok(())
    }

    pub fn finish_run(&mut self, run_id: &str, summary: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET finished_at = ?1, summary = ?2 WHERE run_id = ?3",
            params![now().to_rfc3339(), summary, run_id],
        )?;
        Ok(())
    }

    /// Streams entries matching `filter`, oldest first.
    pub fn entries(
        &self,
        filter: &Filter,
        mut each: impl FnMut(Entry) -> Result<()>,
    ) -> Result<()> {
        let mut sql = String::from(
            "SELECT seq, decided_at, run_id, action, target, item_key, category, reason, policy_window, expires_at, subject_hash, detail, prev_hash, hash FROM audit WHERE 1=1",
        );
        let mut args: Vec<&str> = Vec::new();
        for (col, val) in [
            ("target", &filter.target),
            ("item_key", &filter.key),
            ("subject_hash", &filter.subject_hash),
            ("run_id", &filter.run_id),
        ] {
            if let Some(v) = val {
                args.push(v);
                sql.push_str(&format!(" AND {col} = ?{}", args.len()));
            }
        }
        sql.push_str(" ORDER BY seq");
        let mut st = self.conn.prepare(&sql)?;
        let mut rows = st.query(rusqlite::params_from_iter(args))?;
        while let Some(r) = rows.next()? {
            let action: String = r.get(3)?;
            let entry = Entry {
                seq: r.get(0)?,
                body: Body {
                    decided_at: r.get(1)?,
                    run_id: r.get(2)?,
                    // An unknown action cannot hash to the stored value; verify reports it.
                    action: Action::parse(&action).unwrap_or(Action::Failed),
                    target: r.get(4)?,
                    item_key: r.get(5)?,
                    category: r.get(6)?,
                    reason: r.get(7)?,
                    window: r.get(8)?,
                    expires_at: r.get(9)?,
                    subject_hash: r.get(10)?,
                    detail: r.get(11)?,
                },
                prev_hash: r.get(12)?,
                hash: r.get(13)?,
            };
            each(entry)?;
        }
        Ok(())
    }

    /// Recomputes the whole chain and checks the seal over its head.
    pub fn verify(&self) -> Result<VerifyReport> {
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
            let seal: Option<(i64, String, String)> = self
                .conn
                .query_row(
                    "SELECT seq, hash, mac FROM audit_seal WHERE id = 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
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

impl State {
    pub fn conn(&self) -> &Connection {
        &self.conn
    }
}

/// Switches the state to WAL. Two processes opening a new state at once race for this, and
/// SQLite answers the loser with BUSY without waiting, so retry for a while.
fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
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
