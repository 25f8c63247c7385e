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
use lethe_core::audit::{
    self, Action, AuditKey, Body, Entry, PruneCheckpoint, SigningKey, Verifier,
};

use crate::db::{Db, DbRow, Val};
use crate::util::{UsageError, now};
use crate::{cells, vals};

/// Schema steps, in order, one file per step and backend (`migrations/sqlite`,
/// `migrations/postgres`). Step N brings a state to schema version N; a step one backend
/// does not need is an empty file there, so that both number their versions alike.
const MIGRATIONS_SQLITE: &[&str] = &[
    include_str!("../migrations/sqlite/0001_trail.sql"),
    include_str!("../migrations/sqlite/0002_registers.sql"),
    include_str!("../migrations/sqlite/0003_batches_done.sql"),
    include_str!("../migrations/sqlite/0004_audit_subjects.sql"),
    include_str!("../migrations/sqlite/0005_pending_storage.sql"),
    include_str!("../migrations/sqlite/0006_seal_protections.sql"),
    include_str!("../migrations/sqlite/0007_pending_identity.sql"),
    include_str!("../migrations/sqlite/0008_repairs_index.sql"),
    include_str!("../migrations/sqlite/0009_schedules.sql"),
    include_str!("../migrations/sqlite/0010_signatures_checkpoint.sql"),
    include_str!("../migrations/sqlite/0011_policy_guard.sql"),
];
const MIGRATIONS_POSTGRES: &[&str] = &[
    include_str!("../migrations/postgres/0001_trail.sql"),
    include_str!("../migrations/postgres/0002_registers.sql"),
    include_str!("../migrations/postgres/0003_batches_done.sql"),
    include_str!("../migrations/postgres/0004_audit_subjects.sql"),
    include_str!("../migrations/postgres/0005_pending_storage.sql"),
    include_str!("../migrations/postgres/0006_seal_protections.sql"),
    include_str!("../migrations/postgres/0007_pending_identity.sql"),
    include_str!("../migrations/postgres/0008_repairs_index.sql"),
    include_str!("../migrations/postgres/0009_schedules.sql"),
    include_str!("../migrations/postgres/0010_signatures_checkpoint.sql"),
    include_str!("../migrations/postgres/0011_policy_guard.sql"),
];

/// How a command uses the state: only `lethe init` creates one; a command that only reads
/// never writes (no key, no directory, no file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Create,
}

/// The trail does not verify where a writing command must extend it: reported as is and
/// mapped to exit status 1; nothing was written.
#[derive(Debug)]
pub struct TrailBroken(pub String);

impl std::fmt::Display for TrailBroken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the audit trail is broken: {}. Nothing was written. Find out what happened (`lethe audit verify`); `lethe audit repair --reason TEXT` records the break in the trail and lets writing commands run again",
            self.0
        )
    }
}

impl std::error::Error for TrailBroken {}

/// How often, at most, the head anchor is written while appends go on.
const ANCHOR_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// (subject, run) pairs a state remembers having written, at most.
const SUBJECTS_SEEN_MAX: usize = 20_000;

/// A lease not renewed for this long is taken over, so a dead holder never blocks forever.
pub const LEASE_TTL_SECS: i64 = 120;

/// The registers kept beside the trail (holds and exceptions), as verify and repair check
/// them against it. The registry implements it: it is built on the state, so the state
/// reaches it only through this trait.
pub trait Registers {
    /// Where the tables disagree with the trail's hold and exception entries.
    fn disagreements(&self, state: &mut State, entries: &[Entry]) -> Result<Vec<String>>;
    /// For a repair, in its transaction: puts back what the trail has in force, and lists
    /// in `record` what the tables have in force and the trail does not (only ever more
    /// protection).
    fn cover_both_ways(
        &self,
        db: &mut Db,
        entries: &[Entry],
        record: &mut Vec<Body>,
        now: lethe_core::time::Timestamp,
        run_id: &str,
    ) -> Result<Vec<String>>;
}

pub struct State {
    db: Db,
    /// Where the state lives, for messages (never with a password).
    pub location: String,
    pub key: AuditKey,
    /// The deployment's Ed25519 key; `None` only for a state from before signing, opened to
    /// read (a writing command makes it).
    signer: Option<SigningKey>,
    signing_key_path: PathBuf,
    signing_key_env: Option<String>,
    holder: String,
    /// How it was opened, so a second connection can be opened for the audit writer.
    url: String,
    password_env: Option<String>,
    base: PathBuf,
    key_env: Option<String>,
    /// (subject hash, run) pairs already in `audit_subjects`, so appends skip them.
    subjects_seen: std::collections::HashSet<(String, String)>,
    /// `[state] lease_ttl`, in seconds.
    pub lease_ttl_secs: i64,
    /// Whether the key was there before this process opened the state (from key_env, or a
    /// key file it did not make).
    key_existed: bool,
    /// The anchor outside the state's database: the last head this machine sealed.
    head_path: PathBuf,
    /// A head sealed but not yet in the anchor, and when the anchor was last written: it is
    /// written at most every few seconds (and when the state is closed), not on every
    /// append: an anchor a little behind is still an entry the trail must hold.
    anchor_due: Option<(i64, String)>,
    anchor_written: std::time::Instant,
}

impl Drop for State {
    fn drop(&mut self) {
        self.flush_anchor();
    }
}

/// Held while holds and exceptions may not change (see [`State::lock_protections`]);
/// dropping it releases a file lock.
pub struct ProtectionsLock {
    _file: Option<std::fs::File>,
}

/// The write-ahead record of deletions in flight. Beside a SQLite state it is a small file
/// of its own (`<state>.pending`), so that recording the next batch never waits for the
/// audit writer's transaction; with a PostgreSQL state it is a table in the same database.
/// A target with write-ahead batches not yet in the trail.
pub struct InFlight {
    /// The target's name when they were written.
    pub name: String,
    /// What the target is; `None` for records written before identities were kept.
    pub identity: Option<String>,
    pub batches: i64,
    /// One of the runs that wrote them.
    pub run: String,
}

pub struct PendingStore {
    db: Db,
}

impl PendingStore {
    /// Records several batches, durably, in one transaction; returns their ids in order.
    pub fn add_many(
        &mut self,
        run_id: &str,
        target: &str,
        identity: &str,
        payloads: &[String],
    ) -> Result<Vec<i64>> {
        let mut ids = Vec::with_capacity(payloads.len());
        self.db.batch("BEGIN")?;
        let written = (|| -> Result<()> {
            for payload in payloads {
                let id = (u64::from_str_radix(&random_hex(8)?, 16)? & (i64::MAX as u64)) as i64;
                self.db.execute(
                    "INSERT INTO pending (id, run_id, target, created_at, payload, identity) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    &vals![id, run_id, target, now().to_rfc3339(), payload.as_str(), identity],
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

    /// Batches an interrupted run left behind in a target, found by its identity (by its
    /// name for records written before identities were kept): (id, run_id, payload, the
    /// target's name then).
    pub fn list(
        &mut self,
        target: &str,
        identity: &str,
    ) -> Result<Vec<(i64, String, String, String)>> {
        Ok(self
            .db
            .query(
                "SELECT id, run_id, payload, target FROM pending WHERE identity = ?2 OR (identity IS NULL AND target = ?1) ORDER BY created_at, id",
                &vals![target, identity],
            )?
            .into_iter()
            .map(|r| (r.int(0), r.text(1), r.text(2), r.text(3)))
            .collect())
    }

    /// Every target with batches in flight.
    pub fn targets(&mut self) -> Result<Vec<InFlight>> {
        Ok(self
            .db
            .query(
                "SELECT target, identity, COUNT(*), MIN(run_id) FROM pending GROUP BY target, identity ORDER BY target",
                &[],
            )?
            .into_iter()
            .map(|r| InFlight {
                name: r.text(0),
                identity: r.opt_text(1),
                batches: r.int(2),
                run: r.text(3),
            })
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

/// A head the trail was verified up to: where the next verification may resume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    /// The protections chain's head there.
    pub protections: String,
}

impl Checkpoint {
    /// Where a walk ended: the verifier's head and protections head.
    fn of(v: &Verifier) -> Checkpoint {
        let (seq, hash) = v.head();
        Checkpoint {
            seq,
            hash: hash.to_string(),
            protections: v.protections().to_string(),
        }
    }
}

pub struct VerifyReport {
    pub entries: u64,
    pub head_seq: i64,
    pub head_hash: String,
    /// Where a later verification may resume, when this one found the trail intact.
    pub checkpoint: Option<Checkpoint>,
    /// The first problem, if any.
    pub problem: Option<String>,
    pub problems: Vec<String>,
    /// Repairs recorded in the trail, for a reader: what each acknowledged.
    pub repairs: Vec<String>,
    /// The prune checkpoint the verification started from, if the trail was pruned.
    pub pruned: Option<PruneCheckpoint>,
}

/// What a prune removed (or, in a dry run, would remove).
#[derive(Clone, Debug)]
pub struct PruneReport {
    /// Entries decided before this are past the trail's retention.
    pub cutoff: String,
    pub removed: u64,
    /// Entries past the window kept: about items under hold, or holds and exceptions in
    /// force.
    pub kept: u64,
    /// The checkpoint the trail now starts from; `None` when nothing was removed.
    pub checkpoint: Option<PruneCheckpoint>,
}

/// The holds in force, as a prune matches trail entries against them.
#[derive(Default)]
struct HeldScopes {
    items: std::collections::HashSet<(String, String)>,
    targets: std::collections::HashSet<String>,
    subjects: std::collections::HashSet<String>,
}

impl HeldScopes {
    fn covers(&self, e: &Entry) -> bool {
        let b = &e.body;
        (!b.target.is_empty() && self.targets.contains(&b.target))
            || (!b.item_key.is_empty()
                && self.items.contains(&(b.target.clone(), b.item_key.clone())))
            || b.subject_hash
                .as_ref()
                .is_some_and(|h| self.subjects.contains(h))
    }
}

/// Replays protection entries in order: the seqs of the entries that record a hold or an
/// exception still in force at the end (a hold's placement, an exception's latest grant or
/// renewal), and the holds' scopes. Mirrors the registers' replay.
fn live_protections(entries: &[Entry]) -> (std::collections::HashSet<i64>, HeldScopes) {
    use std::collections::HashMap;
    let mut holds: HashMap<String, &Entry> = HashMap::new();
    let mut excs: HashMap<String, &Entry> = HashMap::new();
    for e in entries {
        let b = &e.body;
        match b.action {
            Action::HoldPlaced => {
                holds.insert(b.run_id.clone(), e);
            }
            Action::HoldReleased => {
                holds.remove(&b.run_id);
            }
            Action::ExceptionGranted | Action::ExceptionRenewed => {
                excs.retain(|_, x| !(x.body.target == b.target && x.body.item_key == b.item_key));
                excs.insert(b.run_id.clone(), e);
            }
            Action::ExceptionRevoked => {
                excs.remove(&b.run_id);
            }
            _ => {}
        }
    }
    let mut scopes = HeldScopes::default();
    for e in holds.values() {
        let b = &e.body;
        if let Some(h) = &b.subject_hash {
            scopes.subjects.insert(h.clone());
        } else if !b.item_key.is_empty() {
            scopes.items.insert((b.target.clone(), b.item_key.clone()));
        } else if !b.target.is_empty() {
            scopes.targets.insert(b.target.clone());
        }
    }
    let live = holds.values().chain(excs.values()).map(|e| e.seq).collect();
    (live, scopes)
}

pub(crate) fn hostname() -> String {
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
/// beside the state, which only `create` (a new, empty trail) makes (mode 0600): a key made
/// for a trail that has entries would orphan every subject hash and every seal in it.
fn load_key(key_path: &Path, key_env: Option<&str>, create: bool) -> Result<AuditKey> {
    if let Some(var) = key_env {
        let val = std::env::var(var).map_err(|_| {
            UsageError(format!(
                "[audit] key_env names {var}, but {var} is not set: set it, or remove key_env to use a key file beside the state"
            ))
        })?;
        return AuditKey::new(val.into_bytes())
            .map_err(|e| UsageError(format!("{var}: {e}")).into());
    }
    if !key_path.exists() && !create {
        return Err(UsageError(format!(
            "audit key file {} is missing: the trail was sealed and its subjects hashed with it, so a new key cannot replace it; restore it from a backup (or set [audit] key_env to the variable that holds it)",
            key_path.display()
        ))
        .into());
    }
    if !key_path.exists() {
        write_new_key_file(key_path, "audit key file")?;
    }
    let hex = std::fs::read_to_string(key_path)
        .with_context(|| format!("Failed to read audit key file {}", key_path.display()))?;
    AuditKey::new(hex.trim().as_bytes().to_vec())
        .map_err(|e| anyhow!("audit key file {}: {e}", key_path.display()))
}

/// Makes a key file of 32 random bytes in hex, mode 0600, unless one is there. Written whole
/// to a private temporary file, then linked into place: a second process starting at the
/// same moment sees either no key file or the whole key.
fn write_new_key_file(key_path: &Path, what: &str) -> Result<()> {
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
            .with_context(|| format!("Failed to create {what} {}", tmp.display()))?;
        f.write_all(random_hex(32)?.as_bytes())
            .and_then(|_| f.sync_all())
            .with_context(|| format!("Failed to write {what} {}", tmp.display()))?;
    }
    let linked = std::fs::hard_link(&tmp, key_path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("Failed to create {what} {}", key_path.display())),
    }
}

/// Loads the deployment's Ed25519 signing key: its seed (64 hex digits) from the
/// environment variable `[audit] signing_key_env` names, else from the key file beside the
/// state, which must be private (0600). `create` makes the file when it is missing; `None`
/// when it is missing and may not be made. Errors never quote the seed.
fn load_signing_key(path: &Path, env: Option<&str>, create: bool) -> Result<Option<SigningKey>> {
    if let Some(var) = env {
        let val = std::env::var(var).map_err(|_| {
            UsageError(format!(
                "[audit] signing_key_env names {var}, but {var} is not set: set it to the signing key's seed (64 hex digits), or remove signing_key_env to use a key file beside the state"
            ))
        })?;
        return SigningKey::from_seed_hex(&val)
            .map(Some)
            .map_err(|e| UsageError(format!("{var}: {e}")).into());
    }
    if !path.exists() {
        if !create {
            return Ok(None);
        }
        write_new_key_file(path, "signing key file")?;
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("Failed to read signing key file {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(UsageError(format!(
            "signing key file {} has mode {:04o}: others may read it, and whoever reads it can sign as this deployment; make it private (chmod 600 {}) and consider making a new one",
            path.display(),
            mode & 0o7777,
            path.display()
        ))
        .into());
    }
    let hex = std::fs::read_to_string(path)
        .with_context(|| format!("Failed to read signing key file {}", path.display()))?;
    SigningKey::from_seed_hex(hex.trim())
        .map(Some)
        .map_err(|e| anyhow!("signing key file {}: {e}", path.display()))
}

/// The anchor's (seq, hash), if there is one; `Err` says why it cannot be trusted.
fn read_anchor(path: &Path, key: &AuditKey) -> Anchor {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let unreadable = || format!("the head anchor {} is unreadable", path.display());
    let mut parts = text.trim().splitn(3, ' ');
    let (Some(seq), Some(hash), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(unreadable());
    };
    let seq = seq.parse::<i64>().map_err(|_| unreadable())?;
    if key.seal(seq, hash, "anchor") != mac {
        return Err(format!(
            "the head anchor {} was not made with this audit key",
            path.display()
        ));
    }
    Ok(Some((seq, hash.to_string())))
}

/// The anchor as read ([`read_anchor`]): the head this machine sealed last, or why it
/// cannot be read.
type Anchor = std::result::Result<Option<(i64, String)>, String>;

/// What is wrong with the trail against the anchor, if anything: an unreadable anchor, or
/// an anchored entry the trail no longer holds unchanged.
fn anchor_problem_in(db: &mut Db, anchor: Anchor) -> Result<Option<String>> {
    match anchor {
        Err(problem) => Ok(Some(problem)),
        Ok(None) => Ok(None),
        Ok(Some((seq, hash))) => anchor_mismatch(db, seq, &hash),
    }
}

/// Why the trail does not hold the anchored entry (seq, hash) unchanged, if it does not.
fn anchor_mismatch(db: &mut Db, seq: i64, hash: &str) -> Result<Option<String>> {
    let stored = db
        .query_opt("SELECT hash FROM audit WHERE seq = ?1", &vals![seq])?
        .map(|r| r.text(0));
    Ok(match stored {
        Some(h) if h == hash => None,
        Some(_) => Some(format!(
            "entry {seq}, which this machine sealed, is no longer the entry it sealed: the trail was rolled back or rewritten"
        )),
        None if checkpoint_seq(db)? >= seq => None,
        None => Some(format!(
            "this machine sealed the trail at entry {seq}, which the trail no longer has: it was rolled back to an older copy (with its older seal)"
        )),
    })
}

/// Whether the trail's head was ever signed (a signed head is kept from the first).
fn ever_signed(db: &mut Db) -> Result<bool> {
    Ok(db
        .query_opt("SELECT 1 FROM signed_heads LIMIT 1", &[])?
        .is_some())
}

/// The prune checkpoint's seq; 0 when the trail was never pruned.
fn checkpoint_seq(db: &mut Db) -> Result<i64> {
    Ok(db
        .query_opt("SELECT seq FROM audit_checkpoint WHERE id = 1", &[])?
        .map_or(0, |r| r.int(0)))
}

/// The prune checkpoint, if the trail was pruned; the inner `Err` says why the stored one
/// cannot be read.
fn read_checkpoint(db: &mut Db) -> Result<std::result::Result<Option<PruneCheckpoint>, String>> {
    let Some(r) = db.query_opt("SELECT seq, body FROM audit_checkpoint WHERE id = 1", &[])? else {
        return Ok(Ok(None));
    };
    Ok(match serde_json::from_str::<PruneCheckpoint>(&r.text(1)) {
        Ok(cp) if cp.seq == r.int(0) => Ok(Some(cp)),
        Ok(cp) => Err(format!(
            "the prune checkpoint row says entry {}, but its record says entry {}: it was altered",
            r.int(0),
            cp.seq
        )),
        Err(_) => Err("the prune checkpoint is unreadable: it was altered".into()),
    })
}

fn write_checkpoint(db: &mut Db, cp: &PruneCheckpoint) -> Result<()> {
    db.execute(
        "INSERT INTO audit_checkpoint (id, seq, body) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, body = excluded.body",
        &vals![cp.seq, serde_json::to_string(cp)?],
    )?;
    Ok(())
}

/// Records a signed head for receipts to cite.
fn record_signed_head(db: &mut Db, seal: &audit::Seal) -> Result<()> {
    if let (Some(sig), Some(pk), Some(p)) = (&seal.signature, &seal.public_key, &seal.protections) {
        db.execute(
            "INSERT INTO signed_heads (seq, hash, protections, signature, public_key) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (seq) DO NOTHING",
            &vals![seal.seq, &seal.hash, p, sig, pk],
        )?;
    }
    Ok(())
}

/// Why a writing command may not extend a trail whose seal is `seal`, as far as its
/// signature goes, if it may not: signed by another key, or signed while this deployment's
/// key is missing (a new key is never made over a signed trail).
fn signing_problem(
    signer: Option<&SigningKey>,
    seal: &audit::Seal,
    key_path: &Path,
) -> Option<String> {
    match signer {
        Some(k) => seal.signature_problem(Some(&k.public_hex())),
        None if seal.signature.is_some() => Some(format!(
            "the trail's head is signed, but the signing key ({}) is missing: restore it from a backup (or set [audit] signing_key_env to the variable that holds it)",
            key_path.display()
        )),
        None => None,
    }
}

/// How an append treats the seal it extends.
enum Sealing {
    /// The head must be the sealed head (every ordinary write).
    Check,
    /// The first entry of a new trail: there is no seal yet.
    Create,
    /// An operator's repair: sealed over the trail as found, with its protections chain.
    Repair { protections: String },
}

/// The protection actions as an SQL list, the same text as the partial index's predicate.
fn protection_actions() -> String {
    Action::PROTECTIONS
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The head of the protections chain over the trail as stored.
fn protections_head(db: &mut Db) -> Result<String> {
    protections_head_through(db, i64::MAX)
}

/// The head of the protections chain over the stored entries up to entry `seq`.
fn protections_head_through(db: &mut Db, seq: i64) -> Result<String> {
    let mut p = audit::GENESIS.to_string();
    db.query_each(
        &format!(
            "SELECT seq, hash FROM audit WHERE action IN ({}) AND seq <= ?1 ORDER BY seq",
            protection_actions()
        ),
        &vals![seq],
        |r| {
            p = audit::protections_link(&p, r.int(0), &r.text(1));
            Ok(())
        },
    )?;
    Ok(p)
}

/// Whether the state's trail has any entry (false when it has no trail table yet).
fn trail_has_entries(db: &mut Db) -> bool {
    db.query_opt("SELECT 1 FROM audit LIMIT 1", &[])
        .ok()
        .flatten()
        .is_some()
}

/// The seal row, if any.
fn read_seal(db: &mut Db) -> Result<Option<audit::Seal>> {
    Ok(db
        .query_opt(
            "SELECT seq, hash, mac, protections, key_fingerprint, signature, public_key FROM audit_seal WHERE id = 1",
            &[],
        )?
        .map(|r| audit::Seal {
            seq: r.int(0),
            hash: r.text(1),
            mac: r.text(2),
            protections: r.opt_text(3),
            key_fingerprint: r.text(4),
            signature: r.opt_text(5),
            public_key: r.opt_text(6),
        }))
}

/// The trail's last entry: (seq, hash), or (0, genesis) when it is empty.
fn read_head(db: &mut Db) -> Result<(i64, String)> {
    Ok(
        match db.query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])? {
            Some(r) => (r.int(0), r.text(1)),
            None => (0, audit::GENESIS.to_string()),
        },
    )
}

/// The trail's head and its seal, in one read.
fn read_head_and_seal(db: &mut Db) -> Result<((i64, String), Option<audit::Seal>)> {
    let row = db.query_opt(
        "SELECT (SELECT seq FROM audit ORDER BY seq DESC LIMIT 1), (SELECT hash FROM audit ORDER BY seq DESC LIMIT 1),
                s.seq, s.hash, s.mac, s.protections, s.key_fingerprint, s.signature, s.public_key
         FROM (SELECT 1 AS one) AS lethe_one LEFT JOIN audit_seal s ON s.id = 1",
        &[],
    )?;
    let Some(r) = row else {
        return Ok(((0, audit::GENESIS.to_string()), None));
    };
    let head = match r.opt_text(1) {
        Some(hash) => (r.int(0), hash),
        None => (0, audit::GENESIS.to_string()),
    };
    let seal = r.opt_text(3).map(|hash| audit::Seal {
        seq: r.int(2),
        hash,
        mac: r.text(4),
        protections: r.opt_text(5),
        key_fingerprint: r.text(6),
        signature: r.opt_text(7),
        public_key: r.opt_text(8),
    });
    Ok((head, seal))
}

/// Writes the seal over a head.
fn write_seal(db: &mut Db, seal: &audit::Seal) -> Result<()> {
    db.execute(
        "INSERT INTO audit_seal (id, seq, hash, mac, key_fingerprint, protections, signature, public_key) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, mac = excluded.mac, key_fingerprint = excluded.key_fingerprint, protections = excluded.protections, signature = excluded.signature, public_key = excluded.public_key",
        &vals![seal.seq, &seal.hash, &seal.mac, &seal.key_fingerprint, &seal.protections, &seal.signature, &seal.public_key],
    )?;
    Ok(())
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
    /// Opens the state at a `sqlite://` or `postgres://` URL; relative paths are read from
    /// `base`. Only [`Access::Create`] makes a state (and its key) that does not exist yet;
    /// otherwise a missing state is refused (exit 2), never silently started afresh.
    pub fn open(
        url: &str,
        password_env: Option<&str>,
        base: &Path,
        key_env: Option<&str>,
        signing_key_env: Option<&str>,
        access: Access,
    ) -> Result<State> {
        let missing = |location: &str| {
            UsageError(format!(
                "no Lethe state at {location} (the [state] url): `lethe init` creates one; every other command uses an existing state and never starts a new, empty one"
            ))
        };
        let (db, location, key_path) = if url.starts_with("postgres://")
            || url.starts_with("postgresql://")
        {
            let mut db = Db::open_pg(url, password_env)?;
            let location = crate::db::redact(url);
            if access != Access::Create
                && db
                    .query_opt("SELECT to_regclass('lethe_schema')::text", &[])?
                    .and_then(|r| r.opt_text(0))
                    .is_none()
            {
                return Err(missing(&location).into());
            }
            // Processes sharing a PostgreSQL state on several hosts need one key: key_env.
            (db, location, base.join("lethe-state.key"))
        } else {
            let path = sqlite_path(url, base).ok_or_else(|| {
                UsageError(format!(
                    "[state] url {:?}: expected sqlite://PATH or postgres://...",
                    crate::db::redact(url)
                ))
            })?;
            if access == Access::Create {
                if let Some(dir) = path.parent()
                    && !dir.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("Failed to create {}", dir.display()))?;
                }
            } else if !path.is_file() {
                return Err(missing(&path.display().to_string()).into());
            }
            if access == Access::Create {
                crate::util::touch_private(&path)
                    .with_context(|| format!("Failed to create {}", path.display()))?;
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
        let mut db = db;
        // A key is made only with a new state whose trail is still empty.
        let create_key = access == Access::Create && !trail_has_entries(&mut db);
        let key_existed = key_env.is_some() || key_path.exists();
        let key = load_key(&key_path, key_env, create_key)?;
        // `<state>.signing-key`, beside `<state>.key`.
        let signing_key_path = key_path.with_extension("signing-key");
        let mut st = State {
            db,
            location,
            key,
            signer: None,
            signing_key_path,
            signing_key_env: signing_key_env.map(str::to_string),
            // Host and process, and a part of its own: two sweeps in one process (a daemon's
            // scheduled sweep and one asked through its API) are two holders, never one.
            holder: format!("{}:{}:{}", hostname(), std::process::id(), random_hex(4)?),
            url: url.to_string(),
            password_env: password_env.map(str::to_string),
            base: base.to_path_buf(),
            key_env: key_env.map(str::to_string),
            subjects_seen: Default::default(),
            lease_ttl_secs: LEASE_TTL_SECS,
            key_existed,
            head_path: key_path.with_extension("head"),
            anchor_due: None,
            anchor_written: std::time::Instant::now(),
        };
        st.migrate()?;
        // The signing key: made with a new state, and by a writing command on a state from
        // before signing (its trail is signed from then on); a state whose head was signed
        // never gets a new one silently (a writing command then refuses: see
        // `signing_problem`).
        let unsigned = read_seal(&mut st.db)?.is_none_or(|s| s.signature.is_none())
            && !ever_signed(&mut st.db)?;
        st.signer = load_signing_key(
            &st.signing_key_path,
            st.signing_key_env.as_deref(),
            access == Access::Create,
        )?;
        // A state from before signing gets its key on a writing command, over a trail that
        // checks out only: one whose seal was stripped of its signature is refused by the
        // command, and must not leave a new key behind for a repair to adopt.
        if access == Access::Write
            && unsigned
            && st.signer.is_none()
            && st.signing_key_env.is_none()
            && st.check_head().is_ok()
        {
            st.signer = load_signing_key(&st.signing_key_path, None, true)?;
        }
        if access != Access::Read {
            st.upgrade_seal()?;
        }
        Ok(st)
    }

    fn migrate(&mut self) -> Result<()> {
        let pg = self.db.is_pg();
        let known = if pg {
            MIGRATIONS_POSTGRES.len()
        } else {
            MIGRATIONS_SQLITE.len()
        } as i64;
        // Up to date (every open but the first after an upgrade): nothing to write, so no
        // write lock taken; a reader never waits for a writer here.
        let current = self
            .db
            .query_opt("SELECT version FROM lethe_schema", &[])
            .ok()
            .flatten()
            .map(|r| r.int(0));
        if current == Some(known) {
            return Ok(());
        }
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
            let steps = if pg {
                MIGRATIONS_POSTGRES
            } else {
                MIGRATIONS_SQLITE
            };
            let known = steps.len() as i64;
            if version > known {
                bail!(
                    "state {location} was written by a newer Lethe (schema {version}, this one knows {known})"
                );
            }
            for (i, sql) in steps.iter().enumerate().skip(version as usize) {
                db.batch(sql)
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
            self.signing_key_env.as_deref(),
            Access::Write,
        )?;
        st.holder = self.holder.clone();
        st.lease_ttl_secs = self.lease_ttl_secs;
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
            crate::util::touch_private(Path::new(&p))
                .with_context(|| format!("Failed to create {}", Path::new(&p).display()))?;
            let db = Db::open_sqlite(Path::new(&p))?;
            if let Db::Sqlite(conn) = &db {
                conn.pragma_update(None, "synchronous", "FULL")?;
            }
            db
        };
        if !db.is_pg() {
            db.batch(
                "CREATE TABLE IF NOT EXISTS pending (id BIGINT PRIMARY KEY, run_id TEXT NOT NULL, target TEXT NOT NULL, created_at TEXT NOT NULL, payload TEXT NOT NULL, identity TEXT)",
            )?;
            // A file written before identities were kept gains the column.
            let has_identity = db
                .query("SELECT name FROM pragma_table_info('pending')", &[])?
                .iter()
                .any(|r| r.text(0) == "identity");
            if !has_identity {
                db.batch("ALTER TABLE pending ADD COLUMN identity TEXT")?;
            }
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
    /// A batch another run already recorded (it took the target over, found this run's
    /// write-ahead record and finished it) is never recorded twice: the append fails, and
    /// the run that made it stops.
    pub fn append(&mut self, bodies: Vec<Body>, batches: &[i64]) -> Result<()> {
        let at = now().to_rfc3339();
        let guard = |db: &mut Db| {
            for id in batches {
                if db
                    .query_opt(
                        "SELECT 1 FROM batches_done WHERE pending_id = ?1",
                        &vals![*id],
                    )?
                    .is_some()
                {
                    bail!(
                        "the deletions of write-ahead record {id} were already recorded by another run, which took this target over after this one fell silent for longer than [state] lease_ttl; this run stops"
                    );
                }
            }
            Ok(())
        };
        self.append_inner(bodies, Sealing::Check, guard, |db| {
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
    /// The head and the seal are checked first, in the same transaction: a trail that was cut
    /// or rewritten is never sealed over (the append fails with [`TrailBroken`]).
    pub fn append_with(
        &mut self,
        bodies: Vec<Body>,
        change: impl FnOnce(&mut Db) -> Result<()>,
    ) -> Result<()> {
        self.append_inner(bodies, Sealing::Check, |_| Ok(()), change)
    }

    /// `guard` runs first in the write transaction; an error from it writes nothing.
    fn append_inner(
        &mut self,
        bodies: Vec<Body>,
        sealing: Sealing,
        guard: impl FnOnce(&mut Db) -> Result<()>,
        change: impl FnOnce(&mut Db) -> Result<()>,
    ) -> Result<()> {
        let key = self.key.clone();
        let signer = self.signer.clone();
        let signing_key_path = self.signing_key_path.clone();
        // A head a receipt may cite later is kept: the one just after a request finished,
        // and the first signed head of a trail (which marks that its heads are signed).
        let keep_head = matches!(sealing, Sealing::Create)
            || bodies.iter().any(|b| b.action == Action::ErasureFinished);
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
        let protections = bodies.iter().any(|b| b.action.is_protection());
        let file_lock = if protections {
            self.protections_file_lock()?
        } else {
            None
        };
        let anchor = match sealing {
            Sealing::Check => read_anchor(&self.head_path, &key).map_err(TrailBroken)?,
            _ => None,
        };
        let mut sealed_head: Option<(i64, String)> = None;
        let append = |db: &mut Db| {
            guard(db)?;
            if let Some((seq, hash)) = &anchor
                && let Some(problem) = anchor_mismatch(db, *seq, hash)?
            {
                return Err(TrailBroken(problem).into());
            }
            let ((head_seq, head_hash), seal) = read_head_and_seal(db)?;
            let sealed_protections = match sealing {
                Sealing::Check => match seal {
                    Some(seal) => {
                        let p = match &seal.protections {
                            Some(p) => p.clone(),
                            None => protections_head(db)?,
                        };
                        if let Some(problem) = seal
                            .problem(&key, head_seq, &head_hash, &p)
                            .or_else(|| signing_problem(signer.as_ref(), &seal, &signing_key_path))
                        {
                            return Err(TrailBroken(problem).into());
                        }
                        p
                    }
                    None if head_seq == 0 => {
                        return Err(TrailBroken(
                            "the trail is empty and unsealed: this state was not made by `lethe init`, or its entries and seal were removed"
                                .into(),
                        )
                        .into());
                    }
                    None => {
                        return Err(TrailBroken(
                            "the trail has entries but no seal: the seal was removed".into(),
                        )
                        .into());
                    }
                },
                Sealing::Create => {
                    if head_seq != 0 || seal.is_some() {
                        return Err(anyhow!("the state already has a trail"));
                    }
                    audit::GENESIS.to_string()
                }
                Sealing::Repair { ref protections } => protections.clone(),
            };
            // Pairs already there (another process's, or this run's beyond what it
            // remembers) are skipped by the database, not by reading them all back.
            db.insert_pairs_ignoring_known(
                "audit_subjects",
                ("subject_hash", "run_id"),
                &new_subjects,
            )?;
            let entries = audit::chain(head_seq, &head_hash, bodies);
            insert_entries(db, &entries)?;
            if let Some(last) = entries.last() {
                let mut p = sealed_protections;
                for e in entries.iter().filter(|e| e.body.action.is_protection()) {
                    p = audit::protections_link(&p, e.seq, &e.hash);
                }
                let seal = audit::Seal::new(&key, signer.as_ref(), last.seq, &last.hash, &p);
                write_seal(db, &seal)?;
                if keep_head {
                    record_signed_head(db, &seal)?;
                }
                sealed_head = Some((last.seq, last.hash.clone()));
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
        if done.is_ok()
            && let Some(head) = sealed_head
        {
            self.anchor_due = Some(head);
            if self.anchor_written.elapsed() >= ANCHOR_EVERY {
                self.flush_anchor();
            }
        }
        if done.is_ok() {
            // Remembered to skip them next time, within a bound: a run over millions of
            // people keeps a few megabytes, not a set of every one.
            if self.subjects_seen.len() + new_subjects.len() > SUBJECTS_SEEN_MAX {
                self.subjects_seen.clear();
            }
            self.subjects_seen.extend(new_subjects);
        }
        done
    }

    /// Starts the trail of a new state with its creation entry. A state whose trail already
    /// has entries is left as it is.
    pub fn create_trail(&mut self, body: Body) -> Result<()> {
        self.append_inner(vec![body], Sealing::Create, |_| Ok(()), |_| Ok(()))
    }

    /// Whether the trail has entries.
    pub fn has_entries(&mut self) -> bool {
        trail_has_entries(&mut self.db)
    }

    /// What a state whose trail is empty has all the same, and a new one never has: a key
    /// file it did not make, runs, registers, a seal, write-ahead records. Empty for a state
    /// `lethe init` may start.
    pub fn history(&mut self) -> Result<Vec<String>> {
        let mut found = Vec::new();
        if self.key_existed && self.key_env.is_none() {
            found.push("an audit key file made before".to_string());
        }
        if self.head_path.exists() {
            found.push(format!("a head anchor ({})", self.head_path.display()));
        }
        for table in [
            "audit_seal",
            "runs",
            "holds",
            "exceptions",
            "requests",
            "batches_done",
            "audit_subjects",
            "leases",
        ] {
            let n = self
                .db
                .query_opt(&format!("SELECT COUNT(*) FROM {table}"), &[])?
                .map(|r| r.int(0))
                .unwrap_or(0);
            if n > 0 {
                found.push(format!("{n} row(s) in {table}"));
            }
        }
        if !self.pending_store()?.targets()?.is_empty() {
            found.push("write-ahead records".into());
        }
        Ok(found)
    }

    /// Checks, cheaply, that the trail may be extended: its head is the sealed head, under
    /// this key. Every writing command calls it before it touches anything.
    pub fn check_head(&mut self) -> Result<()> {
        let key = self.key.clone();
        let ((head_seq, head_hash), seal) = read_head_and_seal(&mut self.db)?;
        match seal {
            None if head_seq == 0 => Err(TrailBroken(
                "the trail is empty and unsealed: this state was not made by `lethe init`, or its entries and seal were removed"
                    .into(),
            )
            .into()),
            None => Err(TrailBroken("the trail has entries but no seal: the seal was removed".into()).into()),
            Some(seal) => {
                let p = match &seal.protections {
                    Some(p) => p.clone(),
                    None => protections_head(&mut self.db)?,
                };
                if let Some(problem) = seal
                    .problem(&key, head_seq, &head_hash, &p)
                    .or_else(|| signing_problem(self.signer.as_ref(), &seal, &self.signing_key_path))
                {
                    return Err(TrailBroken(problem).into());
                }
                match self.anchor_problem()? {
                    Some(problem) => Err(TrailBroken(problem).into()),
                    None => Ok(()),
                }
            }
        }
    }

    /// The anchor: the last head this machine sealed, kept beside the key, outside the
    /// state's database (`<state>.head`), under the key's MAC. A state rolled back to an
    /// older trail and its older seal (both valid) is caught by it: the trail must still hold
    /// that entry, unchanged. `None` when there is no anchor or the trail holds it.
    fn anchor_problem(&mut self) -> Result<Option<String>> {
        anchor_problem_in(&mut self.db, read_anchor(&self.head_path, &self.key))
    }

    /// Writes the last head this process sealed, if not written yet, to the anchor.
    pub fn flush_anchor(&mut self) {
        if let Some((seq, hash)) = self.anchor_due.take() {
            self.write_anchor(seq, &hash);
            self.anchor_written = std::time::Instant::now();
        }
    }

    /// Records the head just sealed in the anchor (written whole, then renamed into place).
    fn write_anchor(&self, seq: i64, hash: &str) {
        let line = format!("{seq} {hash} {}\n", self.key.seal(seq, hash, "anchor"));
        let mut tmp = self.head_path.clone().into_os_string();
        tmp.push(format!(
            ".tmp-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let tmp = PathBuf::from(tmp);
        let written = crate::util::create_private(&tmp)
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(line.as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &self.head_path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// The trail's hold and exception entries, each checked against its own hash, their
    /// chain checked against the seal (with the head): what protects items, as recorded.
    /// A removed, replaced or altered one, or a cut or rewritten trail, is [`TrailBroken`].
    pub fn protection_entries(&mut self) -> Result<Vec<Entry>> {
        let key = self.key.clone();
        let expected = self.expected_public_key()?;
        let mut out = Vec::new();
        // A pruned trail's protections chain resumes from its checkpoint; the entries kept
        // below it are vouched for by the checkpoint's list.
        let cp = read_checkpoint(&mut self.db)?.map_err(TrailBroken)?;
        if let Some(p) = cp
            .as_ref()
            .and_then(|c| c.problem(&key, expected.as_deref()))
        {
            return Err(TrailBroken(p).into());
        }
        let below = cp.as_ref().map_or(0, |c| c.seq);
        let kept: std::collections::HashMap<i64, String> = cp
            .iter()
            .flat_map(|c| c.kept_protections.iter().map(|k| (k.seq, k.hash.clone())))
            .collect();
        let mut p = cp
            .as_ref()
            .map_or_else(|| audit::GENESIS.to_string(), |c| c.protections.clone());
        let mut problem = None;
        // Entries a repair acknowledged as altered stay as they were found; their stored
        // hashes are in the sealed protections chain all the same.
        let mut acknowledged = std::collections::HashSet::new();
        self.db.query_each(
            "SELECT detail FROM audit WHERE action = 'trail_repaired' ORDER BY seq",
            &[],
            |r| {
                if let Ok(rec) = serde_json::from_str::<audit::RepairRecord>(&r.text(0)) {
                    for tag in rec.acknowledged {
                        if let Some(n) = tag
                            .strip_prefix("altered ")
                            .and_then(|n| n.parse::<i64>().ok())
                        {
                            acknowledged.insert(n);
                        }
                    }
                }
                Ok(())
            },
        )?;
        let sql = format!(
            "SELECT {ENTRY_COLS} FROM audit WHERE action IN ({}) ORDER BY seq",
            protection_actions()
        );
        self.db.query_each(&sql, &[], |r| {
            let e = entry_from(&r);
            if problem.is_none()
                && !acknowledged.contains(&e.seq)
                && audit::entry_hash(&e.prev_hash, e.seq, &e.body) != e.hash
            {
                problem = Some(format!(
                    "entry {} (a {}) does not match its hash: it was altered",
                    e.seq,
                    e.body.action.as_str()
                ));
            }
            if e.seq <= below {
                if problem.is_none() && kept.get(&e.seq) != Some(&e.hash) {
                    problem = Some(format!(
                        "entry {} (a {}) is below the prune checkpoint, which does not list it as kept",
                        e.seq,
                        e.body.action.as_str()
                    ));
                }
            } else {
                p = audit::protections_link(&p, e.seq, &e.hash);
            }
            out.push(e);
            Ok(())
        })?;
        if let Some(problem) = problem {
            return Err(TrailBroken(problem).into());
        }
        let ((head_seq, head_hash), seal) = read_head_and_seal(&mut self.db)?;
        match seal {
            Some(seal) => {
                if let Some(problem) = seal
                    .problem(&key, head_seq, &head_hash, &p)
                    .or_else(|| seal.signature_problem(expected.as_deref()))
                {
                    return Err(TrailBroken(problem).into());
                }
            }
            None => {
                return Err(TrailBroken(
                    "the trail has no seal: it was removed, or this state was not made by `lethe init`"
                        .into(),
                )
                .into());
            }
        }
        Ok(out)
    }

    /// Seals written before the protections chain existed are rewritten once, over the same
    /// head, if and only if they still verify: a trail that does not is never re-sealed.
    fn upgrade_seal(&mut self) -> Result<()> {
        // Upgraded already (every open but the first after an upgrade): no write lock.
        let signing = self.signer.is_some();
        let current =
            |s: &audit::Seal| s.protections.is_some() && (s.signature.is_some() || !signing);
        if read_seal(&mut self.db)?.is_none_or(|s| current(&s)) {
            return Ok(());
        }
        let key = self.key.clone();
        let signer = self.signer.clone();
        self.db.write(|db| {
            let Some(seal) = read_seal(db)? else {
                return Ok(());
            };
            if current(&seal) {
                return Ok(());
            }
            let (head_seq, head_hash) = read_head(db)?;
            let p = match &seal.protections {
                Some(p) => p.clone(),
                None => protections_head(db)?,
            };
            // A trail signed before whose seal has no signature now had it removed: that is
            // not upgraded but refused (see `signing_problem`).
            if seal.problem(&key, head_seq, &head_hash, &p).is_some()
                || seal.signature_problem(None).is_some()
                || (seal.signature.is_none() && ever_signed(db)?)
            {
                // Left as found: every writing command refuses it, verify says why.
                return Ok(());
            }
            let new = audit::Seal::new(&key, signer.as_ref(), head_seq, &head_hash, &p);
            write_seal(db, &new)?;
            record_signed_head(db, &new)
        })
    }

    /// Records that the trail is broken, as it was found, and seals it again: the repair
    /// entry names every break since the last repair and a digest of every entry before it,
    /// so verify keeps showing the break, and any later change before the repair. Also
    /// rebuilds the subject index from the trail. `None` when there was nothing to repair.
    pub fn repair(
        &mut self,
        registers: &dyn Registers,
        by: &str,
        reason: &str,
        run_id: &str,
    ) -> Result<Option<audit::RepairRecord>> {
        let key = self.key.clone();
        // A signed trail whose signing key file was lost: the repair makes a new one, and
        // records that the head was signed by another key; heads are signed with the new
        // one from the repair on (receipts made before keep verifying with the old one).
        if self.signer.is_none() && self.signing_key_env.is_none() {
            self.signer = load_signing_key(&self.signing_key_path, None, true)?;
        }
        let expected = self.expected_public_key()?;
        let (v, checkpoint_problems, _) = self.walk()?;
        if let Some(p) = checkpoint_problems.first() {
            // A checkpoint is the start of the chain: there is nothing before it to repair
            // from, and a repair entry cannot vouch for it.
            bail!(
                "the trail's prune checkpoint cannot be trusted ({p}); a repair cannot acknowledge that: restore the state from a backup"
            );
        }
        let seal = read_seal(&mut self.db)?;
        let seal_problem = v
            .check_seal(&key, expected.as_deref(), seal.as_ref())
            .err()
            .map(|b| b.to_string());
        let pending: Vec<audit::Break> = v.since_repair().to_vec();
        let derived = self.derived_problems(registers)?;
        if pending.is_empty() && seal_problem.is_none() && derived.is_empty() {
            return Ok(None);
        }
        let mut problems: Vec<String> = pending.iter().map(|b| b.to_string()).collect();
        problems.extend(derived.iter().cloned());
        let record = audit::RepairRecord {
            by: by.to_string(),
            reason: reason.to_string(),
            acknowledged: pending.iter().map(audit::Break::tag).collect(),
            problems,
            seal_problem,
            digest: v.digest().to_string(),
        };
        let body = Body {
            decided_at: crate::util::now().to_rfc3339(),
            run_id: run_id.to_string(),
            action: Action::TrailRepaired,
            target: String::new(),
            item_key: String::new(),
            category: String::new(),
            reason: "repair".into(),
            window: String::new(),
            expires_at: None,
            subject_hash: None,
            detail: serde_json::to_string(&record)?,
        };
        let protections = v.protections().to_string();
        let entries = self.raw_protection_entries()?;
        let mut record_after: Vec<Body> = Vec::new();
        let now = crate::util::now();
        self.append_inner(vec![body], Sealing::Repair { protections }, |_| Ok(()), |db| {
            // Holds and exceptions: only ever more protection. What the trail has in force
            // goes back in the tables; what the tables have in force and the trail does not
            // record is recorded just after the repair entry.
            registers.cover_both_ways(db, &entries, &mut record_after, now, run_id)?;
            // The subject index is the trail's: made again from it.
            db.execute("DELETE FROM audit_subjects", &[])?;
            db.execute(
                "INSERT INTO audit_subjects (subject_hash, run_id) SELECT DISTINCT subject_hash, run_id FROM audit WHERE subject_hash IS NOT NULL",
                &[],
            )?;
            Ok(())
        })?;
        self.subjects_seen.clear();
        if !record_after.is_empty() {
            self.append_with(record_after, |_| Ok(()))?;
        }
        Ok(Some(record))
    }

    /// What a receipt for request `id` cites: the entries from its first (its
    /// `erasure_received`) through the first signed head kept at or after its last
    /// `erasure_finished`, and that head; read in one snapshot. The inner `Err` says why no
    /// receipt can be made (entries pruned, a request finished before signing began and a
    /// head not signed since).
    pub fn receipt_segment(
        &mut self,
        id: &str,
    ) -> Result<std::result::Result<(Vec<Entry>, lethe_core::receipt::SignedHead), String>> {
        self.db.begin_snapshot()?;
        let r = receipt_segment_in(&mut self.db, id);
        self.db.end_snapshot();
        r
    }

    /// The trail's own retention: removes the entries decided before `cutoff`, except those
    /// about an item under a hold in force (item, target or subject) and those recording a
    /// hold or exception in force, and never the head. Only a prefix of the chain is cut:
    /// nothing after the first entry inside the window (or one whose time does not read).
    /// Leaves a checkpoint (the last removed entry's seq and hash, the protections chain's
    /// head and the digest through it, the entries kept below it), signed and MAC'd, that
    /// verification resumes from. Decided from a snapshot (to write what it will do in its
    /// `trail_pruned` entry), then decided again and done in one write transaction that
    /// holds and exceptions wait for, with that entry: a crash leaves the old trail, or the
    /// pruned one with its checkpoint and its entry. `dry_run` only counts.
    pub fn prune(
        &mut self,
        cutoff: lethe_core::time::Timestamp,
        by: &str,
        run_id: &str,
        dry_run: bool,
    ) -> Result<PruneReport> {
        let key = self.key.clone();
        let signer = self.signer.clone();
        let signing_key_path = self.signing_key_path.clone();
        let cutoff_s = cutoff.to_rfc3339();
        let pruned_at = now().to_rfc3339();
        // What a prune of the trail as `db` holds it would do: the report, the entries to
        // remove, and the checkpoint (signed when there is a key). Deterministic: decided
        // twice over the same trail, it is the same.
        let decide = |db: &mut Db| -> Result<(PruneReport, Vec<i64>, Option<PruneCheckpoint>)> {
            let expected = signer.as_ref().map(SigningKey::public_hex);
            let old = read_checkpoint(db)?.map_err(TrailBroken)?;
            if let Some(p) = old
                .as_ref()
                .and_then(|c| c.problem(&key, expected.as_deref()))
            {
                return Err(TrailBroken(p).into());
            }
            let old_seq = old.as_ref().map_or(0, |c| c.seq);
            let (head_seq, _) = read_head(db)?;
            // What is in force: holds and exceptions as the trail records them, and the
            // holds table's (a hold either has is honoured).
            let mut protection = Vec::new();
            db.query_each(
                &format!(
                    "SELECT {ENTRY_COLS} FROM audit WHERE action IN ({}) ORDER BY seq",
                    protection_actions()
                ),
                &[],
                |r| {
                    protection.push(entry_from(&r));
                    Ok(())
                },
            )?;
            let (live, mut held) = live_protections(&protection);
            db.query_each(
                "SELECT scope, target, item_key, subject_hash FROM holds WHERE released_at IS NULL",
                &[],
                |r| {
                    match (
                        r.text(0).as_str(),
                        r.opt_text(1),
                        r.opt_text(2),
                        r.opt_text(3),
                    ) {
                        ("subject", _, _, Some(h)) => {
                            held.subjects.insert(h);
                        }
                        ("item", Some(t), Some(k), _) => {
                            held.items.insert((t, k));
                        }
                        (_, Some(t), _, _) => {
                            held.targets.insert(t);
                        }
                        _ => {}
                    }
                    Ok(())
                },
            )?;
            // The entries of a request not completed yet are its evidence to come (its
            // receipt starts at its first entry): kept, whatever their age.
            let mut open_requests: std::collections::HashSet<String> =
                std::collections::HashSet::new();
            db.query_each(
                "SELECT id FROM requests WHERE status NOT LIKE 'completed%'",
                &[],
                |r| {
                    open_requests.insert(r.text(0));
                    Ok(())
                },
            )?;
            let past = |decided_at: &str| {
                lethe_core::time::Timestamp::parse(decided_at).is_ok_and(|t| t < cutoff)
            };
            // Where the prefix ends: before the first entry inside the window, and before
            // the head.
            let mut end = head_seq - 1;
            db.query_each(
                "SELECT seq, decided_at FROM audit WHERE seq > ?1 ORDER BY seq",
                &vals![old_seq],
                |r| {
                    if r.int(0) <= end && !past(&r.text(1)) {
                        end = r.int(0) - 1;
                    }
                    Ok(())
                },
            )?;
            // Nor past the first entry of a request not completed yet: its receipt will be
            // the chain from there, whole.
            let open: Vec<String> = open_requests.iter().cloned().collect();
            for id in &open {
                if let Some(first) = db
                    .query_opt("SELECT MIN(seq) FROM audit WHERE run_id = ?1", &vals![id])?
                    .and_then(|r| r.opt_int(0))
                {
                    end = end.min(first - 1);
                }
            }
            // Walk the prefix: what goes, what stays, and the chain's state at the last
            // entry removed.
            let mut v = match &old {
                Some(c) => Verifier::from_checkpoint(c),
                None => Verifier::new(0, audit::GENESIS),
            };
            let mut at = old.as_ref().map(|c| {
                (
                    c.seq,
                    c.hash.clone(),
                    c.protections.clone(),
                    c.digest.clone(),
                )
            });
            let mut removed: Vec<i64> = Vec::new();
            let mut kept: Vec<audit::Kept> = Vec::new();
            let mut broken: Option<String> = None;
            db.query_each(
                &format!("SELECT {ENTRY_COLS} FROM audit WHERE seq <= ?1 ORDER BY seq"),
                &vals![end],
                |r| {
                    let e = entry_from(&r);
                    if e.seq > old_seq
                        && let Err(b) = v.push(&e)
                    {
                        broken.get_or_insert(b.to_string());
                    }
                    let keep = live.contains(&e.seq)
                        || held.covers(&e)
                        || open_requests.contains(&e.body.run_id)
                        || !past(&e.body.decided_at);
                    if keep {
                        kept.push(audit::Kept {
                            seq: e.seq,
                            hash: e.hash,
                        });
                    } else {
                        removed.push(e.seq);
                        if e.seq > old_seq {
                            at = Some((
                                e.seq,
                                e.hash.clone(),
                                v.protections().to_string(),
                                v.digest().to_string(),
                            ));
                        }
                    }
                    Ok(())
                },
            )?;
            if let Some(b) = broken {
                return Err(
                    TrailBroken(format!("{b}; a trail is pruned only where it verifies")).into(),
                );
            }
            let (Some((seq, hash, protections, digest)), false) = (at, removed.is_empty()) else {
                let report = PruneReport {
                    cutoff: cutoff_s.clone(),
                    removed: 0,
                    kept: kept.len() as u64,
                    checkpoint: None,
                };
                return Ok((report, removed, None));
            };
            if !v.since_repair().is_empty() {
                return Err(TrailBroken(
                    "the entries to be pruned hold breaks a later repair acknowledged; a repair's record covers the whole trail before it, so this trail is not pruned"
                        .into(),
                )
                .into());
            }
            kept.retain(|k| k.seq < seq);
            let kept_digest = kept.iter().fold(audit::GENESIS.to_string(), |d, k| {
                audit::kept_link(&d, k.seq, &k.hash)
            });
            // Every hold and exception entry kept below the checkpoint is listed (whether
            // in force or kept because it is about something held): verification and the
            // protections chain vouch for each by this list.
            let protection_seqs: std::collections::HashSet<i64> =
                protection.iter().map(|e| e.seq).collect();
            let kept_protections = kept
                .iter()
                .filter(|k| protection_seqs.contains(&k.seq))
                .cloned()
                .collect();
            let mut cp = PruneCheckpoint {
                seq,
                hash,
                protections,
                digest,
                kept_count: kept.len() as u64,
                kept_digest,
                kept_protections,
                removed: removed.len() as u64,
                cutoff: cutoff_s.clone(),
                pruned_at: pruned_at.clone(),
                by: by.to_string(),
                public_key: String::new(),
                signature: String::new(),
                mac: String::new(),
            };
            if let Some(signer) = &signer {
                cp.sign(&key, signer);
            }
            let report = PruneReport {
                cutoff: cutoff_s.clone(),
                removed: removed.len() as u64,
                kept: cp.kept_count,
                checkpoint: None,
            };
            Ok((report, removed, Some(cp)))
        };
        // Retried when the trail moved between the look and the write (its head was past
        // the window, and an entry was appended meanwhile).
        for _ in 0..3 {
            self.db.begin_snapshot()?;
            let looked = decide(&mut self.db);
            self.db.end_snapshot();
            let (report, removed, cp) = looked.context("Failed to prune the audit trail")?;
            let Some(cp) = cp.filter(|_| !dry_run) else {
                return Ok(report);
            };
            if signer.is_none() {
                return Err(UsageError(format!(
                    "no signing key ({}): a pruned trail starts at a signed checkpoint",
                    signing_key_path.display()
                ))
                .into());
            }
            let detail = serde_json::json!({
                "checkpoint_seq": cp.seq,
                "checkpoint_hash": cp.hash,
                "removed": cp.removed,
                "kept_below": cp.kept_count,
                "cutoff": cp.cutoff,
                "by": by,
            });
            let body = Body {
                decided_at: pruned_at.clone(),
                run_id: run_id.to_string(),
                action: Action::TrailPruned,
                target: String::new(),
                item_key: String::new(),
                category: String::new(),
                reason: "retention".into(),
                window: format!("before {}", cp.cutoff),
                expires_at: None,
                subject_hash: None,
                detail: detail.to_string(),
            };
            let mut moved = false;
            let done = self.append_inner(
                vec![body],
                Sealing::Check,
                |db| {
                    // In the write transaction, before the entry: the same decision, or
                    // nothing is written.
                    let (_, again, cp_again) = decide(db)?;
                    if again != removed || cp_again.as_ref() != Some(&cp) {
                        moved = true;
                        bail!("the trail changed while it was being pruned");
                    }
                    Ok(())
                },
                |db| {
                    // Consecutive runs of removed entries, one statement each.
                    let mut i = 0;
                    while i < removed.len() {
                        let mut j = i;
                        while j + 1 < removed.len() && removed[j + 1] == removed[j] + 1 {
                            j += 1;
                        }
                        db.execute(
                            "DELETE FROM audit WHERE seq >= ?1 AND seq <= ?2",
                            &vals![removed[i], removed[j]],
                        )?;
                        i = j + 1;
                    }
                    // The subject index is the trail's: pairs no entry records any more go.
                    db.execute(
                        "DELETE FROM audit_subjects WHERE NOT EXISTS (SELECT 1 FROM audit a WHERE a.subject_hash = audit_subjects.subject_hash AND a.run_id = audit_subjects.run_id)",
                        &[],
                    )?;
                    write_checkpoint(db, &cp)?;
                    // Crash tests: killed here, the transaction never commits.
                    #[cfg(feature = "failpoints")]
                    if std::env::var("LETHE_FAILPOINT").is_ok_and(|v| v == "prune-before-commit") {
                        let _ = rustix::process::kill_process(
                            rustix::process::getpid(),
                            rustix::process::Signal::KILL,
                        );
                    }
                    Ok(())
                },
            );
            match done {
                Ok(()) => {
                    return Ok(PruneReport {
                        checkpoint: Some(cp),
                        ..report
                    });
                }
                Err(_) if moved => continue,
                Err(e) => return Err(e.context("Failed to prune the audit trail")),
            }
        }
        bail!("the trail kept changing while it was being pruned; run `lethe audit prune` again")
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
    /// process gone) or silent for `lease_ttl_secs` loses it.
    pub fn acquire_lease(&mut self, target: &str) -> Result<Lease> {
        let self_ttl = self.lease_ttl_secs;
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
                let stale = now_s - r.int(4) > self_ttl;
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

    /// Renews this process's lease on the target; an error when it is no longer this
    /// process's (another sweep took it over after this one fell silent).
    pub fn renew_lease(&mut self, target: &str) -> Result<()> {
        let holder = self.holder.clone();
        let n = self.db.execute(
            "UPDATE leases SET heartbeat = ?1 WHERE target = ?2 AND holder = ?3",
            &vals![now().unix_seconds(), target, holder],
        )?;
        if n != 1 {
            bail!(
                "lost the lease on target {target}: another sweep took it over after this one was silent for longer than [state] lease_ttl ({}s); stopped before deleting anything more",
                self.lease_ttl_secs
            );
        }
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

    /// The public key the trail's signatures must verify with: this deployment's, else (a
    /// state opened to read without its key file) the one its last kept signed head names;
    /// `None` for a trail never signed.
    fn expected_public_key(&mut self) -> Result<Option<String>> {
        if let Some(k) = &self.signer {
            return Ok(Some(k.public_hex()));
        }
        Ok(self
            .db
            .query_opt(
                "SELECT public_key FROM signed_heads ORDER BY seq DESC LIMIT 1",
                &[],
            )?
            .map(|r| r.text(0)))
    }

    /// The deployment's public key (hex), when it has a signing key.
    pub fn public_key(&self) -> Option<String> {
        self.signer.as_ref().map(SigningKey::public_hex)
    }

    /// Every entry through a verifier, which goes on past any break: from the genesis, or
    /// from the prune checkpoint when the trail was pruned. Also what is wrong with the
    /// checkpoint and the entries it lists as kept below it.
    fn walk(&mut self) -> Result<(Verifier, Vec<String>, Option<PruneCheckpoint>)> {
        let key = self.key.clone();
        let expected = self.expected_public_key()?;
        let mut problems = Vec::new();
        let cp = match read_checkpoint(&mut self.db)? {
            Ok(cp) => cp,
            Err(p) => {
                problems.push(p);
                None
            }
        };
        if let Some(p) = cp
            .as_ref()
            .and_then(|c| c.problem(&key, expected.as_deref()))
        {
            problems.push(p);
        }
        let mut v = match &cp {
            Some(c) => Verifier::from_checkpoint(c),
            None => Verifier::new(0, audit::GENESIS),
        };
        let below = cp.as_ref().map_or(0, |c| c.seq);
        // The entries kept below the checkpoint: each as its hash says, all of them (their
        // count and digest), the holds and exceptions among them as listed.
        let mut kept_protections: std::collections::BTreeMap<i64, String> = cp
            .iter()
            .flat_map(|c| c.kept_protections.iter().map(|k| (k.seq, k.hash.clone())))
            .collect();
        let (mut kept_count, mut kept_digest) = (0u64, audit::GENESIS.to_string());
        self.entries(&Filter::default(), |e| {
            if e.seq > below {
                let _ = v.push(&e);
                return Ok(());
            }
            kept_count += 1;
            kept_digest = audit::kept_link(&kept_digest, e.seq, &e.hash);
            if audit::entry_hash(&e.prev_hash, e.seq, &e.body) != e.hash {
                problems.push(format!(
                    "entry {}, kept below the prune checkpoint, does not match its hash: it was altered",
                    e.seq
                ));
            }
            if e.body.action.is_protection() && kept_protections.remove(&e.seq) != Some(e.hash.clone()) {
                problems.push(format!(
                    "entry {} (a {}) is below the prune checkpoint, which does not list it as kept",
                    e.seq,
                    e.body.action.as_str()
                ));
            }
            Ok(())
        })?;
        if let Some(c) = &cp
            && (c.kept_count != kept_count || c.kept_digest != kept_digest)
        {
            problems.push(format!(
                "the entries kept below the prune checkpoint (entry {below}) are not the {} it recorded ({kept_count} now): one was removed, added or replaced",
                c.kept_count
            ));
        }
        for seq in kept_protections.keys() {
            problems.push(format!(
                "entry {seq}, a hold or exception kept below the prune checkpoint, is gone: it was removed"
            ));
        }
        Ok((v, problems, cp))
    }

    /// Where a verification may resume at entry `seq` (its hash, and the protections chain's
    /// head through it), as the trail stores them: for a reader that trusts that entry, like
    /// a report verifying from its period's start. `None` when there is no such entry.
    pub fn checkpoint_at(&mut self, seq: i64) -> Result<Option<Checkpoint>> {
        let Some(hash) = self
            .db
            .query_opt("SELECT hash FROM audit WHERE seq = ?1", &vals![seq])?
            .map(|r| r.text(0))
        else {
            return Ok(None);
        };
        Ok(Some(Checkpoint {
            seq,
            hash,
            protections: protections_head_through(&mut self.db, seq)?,
        }))
    }

    /// Recomputes the whole chain (every break in it, not only the first), checks the seal
    /// over its head and the protections chain, and checks every table derived from the
    /// trail (holds, exceptions, the subject index) against it.
    pub fn verify(&mut self, registers: &dyn Registers) -> Result<VerifyReport> {
        // Read in one snapshot: a sweep appending meanwhile (a daemon verifies while it
        // sweeps) must not look like a trail cut short of its seal. The anchor is read
        // first: it is written after the commit it names, so the snapshot has that entry.
        let anchor = read_anchor(&self.head_path, &self.key);
        self.db.begin_snapshot()?;
        let report = self.verify_snapshot(registers, anchor);
        self.db.end_snapshot();
        report
    }

    fn verify_snapshot(
        &mut self,
        registers: &dyn Registers,
        anchor: Anchor,
    ) -> Result<VerifyReport> {
        let key = self.key.clone();
        let expected = self.expected_public_key()?;
        let (mut v, mut problems, pruned) = self.walk()?;
        v.finish();
        problems.extend(v.breaks.iter().map(|b| b.to_string()));
        if v.count == 0 {
            problems.push(audit::Break::Empty.to_string());
        } else {
            let seal = read_seal(&mut self.db)?;
            if let Err(b) = v.check_seal(&key, expected.as_deref(), seal.as_ref()) {
                problems.push(b.to_string());
            }
        }
        problems.extend(self.derived_problems(registers)?);
        problems.extend(anchor_problem_in(&mut self.db, anchor)?);
        let (head_seq, head_hash) = v.head();
        let checkpoint = problems.is_empty().then(|| Checkpoint::of(&v));
        let repairs = v
            .repairs
            .iter()
            .map(|(seq, r)| {
                format!(
                    "entry {seq}: repaired by {} ({}): {}",
                    r.by,
                    r.reason,
                    if r.problems.is_empty() {
                        r.seal_problem.clone().unwrap_or_default()
                    } else {
                        r.problems.join("; ")
                    }
                )
            })
            .collect();
        Ok(VerifyReport {
            entries: v.count,
            head_seq,
            head_hash: head_hash.to_string(),
            checkpoint,
            problem: problems.first().cloned(),
            problems,
            repairs,
            pruned,
        })
    }

    /// Verifies only what was appended after `from` (a head a verification found intact):
    /// that `from` is still in the trail as it was, the chain after it, and the seal over
    /// the new head, in one snapshot. `None` when the trail since holds a repair, which only
    /// a whole verification can check.
    pub fn verify_since(&mut self, from: &Checkpoint) -> Result<Option<VerifyReport>> {
        let anchor = read_anchor(&self.head_path, &self.key);
        self.db.begin_snapshot()?;
        let report = self.verify_since_snapshot(from, anchor);
        self.db.end_snapshot();
        report
    }

    fn verify_since_snapshot(
        &mut self,
        from: &Checkpoint,
        anchor: Anchor,
    ) -> Result<Option<VerifyReport>> {
        let key = self.key.clone();
        let expected = self.expected_public_key()?;
        // Pruned since `from` was verified: only a whole verification (from the checkpoint)
        // can check the trail now.
        if from.seq > 0 && checkpoint_seq(&mut self.db)? >= from.seq {
            return Ok(None);
        }
        let mut problems = Vec::new();
        // The head this machine sealed last must still be there, as it was: a trail cut
        // back to an older copy, with that copy's seal, shows here.
        problems.extend(anchor_problem_in(&mut self.db, anchor)?);
        if from.seq > 0 {
            // The checkpoint entry, as stored and as its contents hash now.
            let sql = format!("SELECT {ENTRY_COLS} FROM audit WHERE seq = ?1");
            let stored = self
                .db
                .query_opt(&sql, &vals![from.seq])?
                .map(|r| entry_from(&r));
            let intact = stored.as_ref().is_some_and(|e| {
                e.hash == from.hash && audit::entry_hash(&e.prev_hash, e.seq, &e.body) == from.hash
            });
            if !intact {
                problems.push(format!(
                    "entry {} was verified before, and is {} now: the trail was rolled back or rewritten",
                    from.seq,
                    if stored.is_some() { "different" } else { "gone" }
                ));
            }
        }
        let mut v = Verifier::resume(from.seq, &from.hash, &from.protections);
        let sql = format!("SELECT {ENTRY_COLS} FROM audit WHERE seq > ?1 ORDER BY seq");
        self.db.query_each(&sql, &vals![from.seq], |r| {
            let _ = v.push(&entry_from(&r));
            Ok(())
        })?;
        if v.met_repair() {
            return Ok(None);
        }
        v.finish();
        problems.extend(v.breaks.iter().map(|b| b.to_string()));
        let seal = read_seal(&mut self.db)?;
        if let Err(b) = v.check_seal(&key, expected.as_deref(), seal.as_ref()) {
            problems.push(b.to_string());
        }
        let (head_seq, head_hash) = v.head();
        let checkpoint = problems.is_empty().then(|| Checkpoint::of(&v));
        Ok(Some(VerifyReport {
            entries: v.count,
            head_seq,
            head_hash: head_hash.to_string(),
            checkpoint,
            problem: problems.first().cloned(),
            problems,
            repairs: Vec::new(),
            pruned: None,
        }))
    }

    /// The trail's hold and exception entries as stored, unchecked.
    fn raw_protection_entries(&mut self) -> Result<Vec<Entry>> {
        let sql = format!(
            "SELECT {ENTRY_COLS} FROM audit WHERE action IN ({}) ORDER BY seq",
            protection_actions()
        );
        let mut entries = Vec::new();
        self.db.query_each(&sql, &[], |r| {
            entries.push(entry_from(&r));
            Ok(())
        })?;
        Ok(entries)
    }

    /// Where the tables kept beside the trail disagree with it: holds and exceptions (as the
    /// trail's entries record them) and the subject index.
    fn derived_problems(&mut self, registers: &dyn Registers) -> Result<Vec<String>> {
        let entries = self.raw_protection_entries()?;
        let mut problems = registers.disagreements(self, &entries)?;
        for (what, sql) in [
            (
                "is missing from the subject index",
                "SELECT COUNT(*) FROM (SELECT DISTINCT subject_hash, run_id FROM audit WHERE subject_hash IS NOT NULL EXCEPT SELECT subject_hash, run_id FROM audit_subjects) AS lethe_x",
            ),
            (
                "is in the subject index but not in the trail",
                "SELECT COUNT(*) FROM (SELECT subject_hash, run_id FROM audit_subjects EXCEPT SELECT DISTINCT subject_hash, run_id FROM audit WHERE subject_hash IS NOT NULL) AS lethe_x",
            ),
        ] {
            let n = self.db.query_opt(sql, &[])?.map(|r| r.int(0)).unwrap_or(0);
            if n > 0 {
                problems.push(format!(
                    "the subject index (table audit_subjects) disagrees with the trail: {n} (subject, run) pair(s) {what}"
                ));
            }
        }
        Ok(problems)
    }
}

/// [`State::receipt_segment`], in a snapshot begun.
fn receipt_segment_in(
    db: &mut Db,
    id: &str,
) -> Result<std::result::Result<(Vec<Entry>, lethe_core::receipt::SignedHead), String>> {
    use lethe_core::receipt::SignedHead;
    let first = db
        .query_opt(
            "SELECT MIN(seq) FROM audit WHERE run_id = ?1 AND action = 'erasure_received'",
            &vals![id],
        )?
        .and_then(|r| r.opt_int(0));
    let finished = db
        .query_opt(
            "SELECT MAX(seq) FROM audit WHERE run_id = ?1 AND action = 'erasure_finished'",
            &vals![id],
        )?
        .and_then(|r| r.opt_int(0));
    let (Some(first), Some(finished)) = (first, finished) else {
        return Ok(Err(format!(
            "the trail no longer holds request {id}'s first or last entry: they were pruned (`[audit] retention`)"
        )));
    };
    let head = db
        .query_opt(
            "SELECT seq, hash, protections, signature, public_key FROM signed_heads WHERE seq >= ?1 ORDER BY seq LIMIT 1",
            &vals![finished],
        )?
        .map(|r| SignedHead {
            seq: r.int(0),
            hash: r.text(1),
            protections: r.text(2),
            signature: r.text(3),
            public_key: r.text(4),
        });
    let head = match head {
        Some(h) => h,
        // Finished before the trail was signed: the head signed now covers it.
        None => match read_seal(db)? {
            Some(audit::Seal {
                seq,
                hash,
                protections: Some(protections),
                signature: Some(signature),
                public_key: Some(public_key),
                ..
            }) if seq >= finished => SignedHead {
                seq,
                hash,
                protections,
                signature,
                public_key,
            },
            _ => {
                return Ok(Err(format!(
                    "no signed head covers request {id}: the trail's head is not signed yet (a writing command signs it)"
                )));
            }
        },
    };
    let mut segment = Vec::new();
    db.query_each(
        &format!("SELECT {ENTRY_COLS} FROM audit WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq"),
        &vals![first, head.seq],
        |r| {
            segment.push(entry_from(&r));
            Ok(())
        },
    )?;
    if segment.len() as i64 != head.seq - first + 1 {
        return Ok(Err(format!(
            "entries between request {id}'s first entry ({first}) and the signed head ({}) are not all in the trail: some were pruned",
            head.seq
        )));
    }
    Ok(Ok((segment, head)))
}

/// Inserts chained entries in one bulk insert, one row materialized at a time.
fn insert_entries(db: &mut Db, entries: &[Entry]) -> Result<()> {
    let cols: Vec<&str> = ENTRY_COLS.split(", ").collect();
    let rows = entries.iter().map(|e| {
        let b = &e.body;
        cells![
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_number_their_schema_steps_alike() {
        assert_eq!(MIGRATIONS_SQLITE.len(), MIGRATIONS_POSTGRES.len());
        for (i, (lite, pg)) in MIGRATIONS_SQLITE
            .iter()
            .zip(MIGRATIONS_POSTGRES)
            .enumerate()
        {
            let head = format!("-- state schema step {}\n", i + 1);
            assert!(lite.starts_with(&head), "sqlite step {}", i + 1);
            assert!(pg.starts_with(&head), "postgres step {}", i + 1);
        }
    }

    #[test]
    fn every_sqlite_step_applies_to_a_fresh_database() -> Result<()> {
        let conn = rusqlite::Connection::open_in_memory()?;
        for (i, step) in MIGRATIONS_SQLITE.iter().enumerate() {
            conn.execute_batch(step)
                .with_context(|| format!("step {}", i + 1))?;
        }
        Ok(())
    }
}
