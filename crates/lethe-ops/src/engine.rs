//! The sweep: stream candidate items in, judge each with the pure decision, write the
//! decisions to the audit trail, and delete.
//!
//! Crash safety, per batch of an apply:
//! 1. the target's write lock is taken and the batch read inside it;
//! 2. the planned deletions are recorded durably in the state (`pending`);
//! 3. owned files are removed, rows deleted, the target transaction committed;
//! 4. the audit entries are appended and the pending record dropped, in one transaction.
//!
//! A process killed anywhere leaves either nothing deleted for the batch, or a pending record
//! that the next apply of the target finishes first: rows still there are judged again and
//! deleted, rows already gone get their one "deleted" entry.

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use lethe_core::audit::{Action, AuditKey, Body};
use lethe_core::config::Target;
use lethe_core::expiry::{self, Facts, Protections, Verdict};
use lethe_core::time::{TimeFormat, Timestamp};
use serde::{Deserialize, Serialize};

use crate::auditor::Auditor;
use crate::files::{FileState, OwnedFile, Roots};
use crate::state::{Lease, PendingStore, State};
use crate::targets::{
    Connector, Deletion, Key, Lookup, Row, answers, kind_of, open_with, roots_for,
};

pub const DEFAULT_BATCH: usize = 5_000;
/// Rows deleted per target transaction by default (several batches).
pub const DEFAULT_ROWS_PER_COMMIT: usize = 10_000;
/// How many failed items a report lists by name; all of them are in the audit trail.
const SAMPLE: usize = 12;

/// What a run deletes: what has outlived its window, or everything of one data subject.
#[derive(Clone, Debug)]
pub enum Job {
    Retention,
    Erasure { subject: String, request_id: String },
}

impl Job {
    fn reason(&self) -> &'static str {
        match self {
            Job::Retention => "retention",
            Job::Erasure { .. } => "erasure",
        }
    }
}

#[derive(Clone, Debug)]
pub struct SweepOptions {
    pub apply: bool,
    pub batch: usize,
    /// Rows deleted per target transaction, at most: larger writes less, smaller holds the
    /// table's write lock for less time.
    pub rows_per_commit: usize,
    pub progress: bool,
    /// `[tags] required`: objects lacking one are counted as untagged.
    pub required_tags: Vec<String>,
    /// Set from outside (a daemon told to stop): the batch in hand is committed and the
    /// target's sweep ends there, with the report saying it was interrupted.
    pub stop: Option<Arc<AtomicBool>>,
    /// The run's id, when the caller chose it (to answer with it before the run ends).
    pub run_id: Option<String>,
    /// On whose behalf (an API token's name), recorded in each target's `sweep_finished`.
    pub by: Option<String>,
    /// The guard's decision per target, by name ([`crate::guard::check`]): a target it
    /// refused is not swept by an apply (a dry run says so in a note).
    pub guard: HashMap<String, crate::guard::Guarded>,
}

impl SweepOptions {
    fn stopping(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TargetReport {
    pub target: String,
    pub found: u64,
    pub deleted: u64,
    /// Due rows whose `redact` columns were overwritten (the rows stay): handled like a
    /// deletion, counted apart from one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redacted: u64,
    pub held: u64,
    pub files_removed: u64,
    pub failed: u64,
    /// Objects lacking a `[tags] required` entry (object store targets only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untagged: Option<u64>,
    /// Items past expiry kept because work still running at the store uses them (vendor
    /// files of a running batch or fine-tuning job).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub in_use: u64,
    /// Requests retried (throttled, server errors, timeouts), for network API targets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `delete_delay`: items found due and scheduled by this run (deleted by a run at least
    /// the delay later, if still due then), and items an earlier run scheduled whose delay
    /// has not passed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub scheduled: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waiting: u64,
    /// When the first of the scheduled or waiting items becomes deletable (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletable_from: Option<String>,
    /// What the guard against a mistyped policy said about the target ([`crate::guard`]):
    /// a policy change recorded or allowed, or (in a dry run) why an apply would refuse.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guard: Vec<String>,
    /// The sweep stopped before the end of the target (the process was told to stop):
    /// what it did is recorded, the rest is left for the next run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    /// Not swept: another sweep holds the target's lease (`error` says whose).
    #[serde(skip)]
    pub busy: bool,
    /// Files a dry run would remove.
    #[serde(skip)]
    pub files_due: u64,
    /// Items a dry run would redact (the rest of what it found due, less held and failed,
    /// it would delete).
    #[serde(rename = "would_redact", skip_serializing_if = "is_zero")]
    pub redact_due: u64,
    #[serde(skip)]
    pub failures: Vec<(String, String)>,
    #[serde(skip)]
    pub due_sample: Vec<String>,
    #[serde(skip)]
    pub notes: Vec<String>,
    /// The target's roots as resolved for this run, recorded in its `sweep_finished` entry.
    #[serde(skip)]
    pub roots: Vec<String>,
    /// Items judged that name a sensitivity level nobody defined, by the level they name
    /// (read as the strictest cap).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub unknown_levels: std::collections::BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SweepReport {
    pub run_id: String,
    pub dry_run: bool,
    pub targets: Vec<TargetReport>,
    #[serde(skip)]
    pub decided_at: Timestamp,
}

impl SweepReport {
    pub fn has_failures(&self) -> bool {
        self.targets
            .iter()
            .any(|t| t.failed > 0 || t.error.is_some())
    }
}

/// One planned deletion as written ahead: only what the entry needs that cannot be read
/// again once the row is gone. Short names keep the write-ahead record small.
#[derive(Serialize, Deserialize)]
struct PendingItem {
    k: Key,
    /// subject hash
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<String>,
    /// expires_at
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    /// window
    w: String,
    /// reason: retention or erasure
    r: String,
    /// what was judged, when the target says (`Row::detail`)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<String>,
}

/// Crash-test hook, built only with the `failpoints` feature (the crash tests' build):
/// `LETHE_FAILPOINT=name[:n[:stop]]` kills the process with SIGKILL (or stops it with
/// SIGSTOP, for a stall) the n-th time (default first) execution reaches the named point.
/// Without the feature the type has no value at all: no point can fire, and the variable
/// is never read.
#[cfg(feature = "failpoints")]
struct Failpoint {
    name: String,
    left: u32,
    stop: bool,
}

#[cfg(not(feature = "failpoints"))]
enum Failpoint {}

#[cfg(feature = "failpoints")]
impl Failpoint {
    fn from_env() -> Option<Failpoint> {
        let v = std::env::var("LETHE_FAILPOINT").ok()?;
        let mut parts = v.split(':');
        let name = parts.next().unwrap_or_default().to_string();
        let left = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1);
        let stop = parts.next() == Some("stop");
        Some(Failpoint { name, left, stop })
    }

    fn is(&self, point: &str) -> bool {
        self.name == point
    }

    fn reached(&mut self) {
        // A stall happens once per process: a stalled daemon that is resumed goes on past
        // the point in this sweep and in every later one (each sweep reads the variable
        // afresh, and a sweep with nothing due still reaches the point).
        static STALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let fire = self.left == 1;
        self.left = self.left.saturating_sub(1);
        if fire && self.stop && STALLED.swap(true, Ordering::SeqCst) {
            return;
        }
        if fire {
            let signal = if self.stop {
                rustix::process::Signal::STOP
            } else {
                rustix::process::Signal::KILL
            };
            let _ = rustix::process::kill_process(rustix::process::getpid(), signal);
        }
    }
}

#[cfg(not(feature = "failpoints"))]
impl Failpoint {
    fn from_env() -> Option<Failpoint> {
        None
    }

    fn is(&self, _point: &str) -> bool {
        match *self {}
    }

    fn reached(&mut self) {
        match *self {}
    }
}

fn hit(fp: &mut Option<Failpoint>, point: &str) {
    if let Some(f) = fp
        && f.is(point)
    {
        f.reached();
    }
}

/// A planned deletion, kept small: the entry is built only when handed to the writer, so a
/// transaction of many batches holds a few hundred bytes per item, not a whole entry.
struct Planned {
    item: PendingItem,
    file: Option<(OwnedFile, FileState)>,
}

/// What became of a planned item inside the target transaction.
struct Done {
    item: PendingItem,
    /// `Ok(detail)` if deleted (pending the commit), `Err(reason)` if kept.
    outcome: Result<&'static str, String>,
    /// A hold or exception that came in after the item was judged, found by the last look
    /// before deleting: the item is kept and recorded under it.
    protected: Option<(Action, String)>,
}

/// The longest a target transaction stays open before it is committed.
const TXN_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Items written ahead in one pending record, at most.
const PENDING_CHUNK: usize = 5_000;

/// A sweep of one target, in four steps per batch: **plan** (judge each row with the pure
/// decision), **protect** (look at the holds and exceptions once more), **delete** (files,
/// then rows) and **record** (hand the entries to the audit writer).
struct Sweeper<'a> {
    /// Whether this run deletes (`--apply`) or only reports.
    apply: bool,
    /// Set when the process is told to stop ([`SweepOptions::stop`]).
    stop: Option<Arc<AtomicBool>>,
    /// The subject whose rows an erasure selects; `None` for a retention sweep.
    subject: Option<&'a str>,
    judge: Judge<'a>,
    store: Store,
    books: Books<'a>,
    /// The target's `delete_delay`, for a retention sweep of a target that has one.
    delay: Option<Delay>,
}

/// `delete_delay` on one target's sweep: an item found due is scheduled, and deleted only
/// by a run at least the delay after it was scheduled, if still due then.
struct Delay {
    /// The delay, in seconds.
    after: i64,
    now: i64,
    /// What earlier runs scheduled: item key -> (run, when, unix seconds).
    earlier: HashMap<String, (String, i64)>,
    /// Scheduled earlier, delay not passed, still due: kept scheduled.
    waiting: Vec<(String, String, i64)>,
    /// Found due by this run, not scheduled before.
    new: Vec<String>,
}

impl Delay {
    /// Whether a due item may be deleted now; if not, it is scheduled (or stays so).
    fn deletable(&mut self, key: &str) -> bool {
        match self.earlier.remove(key) {
            Some((_, at)) if at + self.after <= self.now => true,
            Some((run, at)) => {
                self.waiting.push((key.to_string(), run, at));
                false
            }
            None => {
                self.new.push(key.to_string());
                false
            }
        }
    }

    /// When the first item scheduled (now or earlier, still waiting) becomes deletable.
    fn deletable_from(&self) -> Option<i64> {
        let new = (!self.new.is_empty()).then_some(self.now);
        self.waiting
            .iter()
            .map(|(_, _, at)| *at)
            .chain(new)
            .min()
            .map(|at| at + self.after)
    }
}

/// What judging a row needs: the run's instant and the target's window as the entries spell
/// them, how the target stores its instants, and the holds and exceptions in force.
struct Judge<'a> {
    target: &'a Target,
    run_id: &'a str,
    now: Timestamp,
    /// `now` and the target's window as the entries spell them, made once.
    decided_at: String,
    window_text: String,
    /// How the target stores created_at and expires_at, when its config says.
    created_at_format: Option<TimeFormat>,
    expires_at_format: Option<TimeFormat>,
    /// Whether rows are judged as under an erasure request (set per batch on recovery).
    erasure: bool,
    /// Active holds and exceptions, read again before every batch is judged: a hold whose
    /// command has returned protects every batch planned after it.
    protections: Protections,
    /// Subjects' keyed hashes already made in this run (bounded).
    subject_hashes: HashMap<String, String>,
    /// While finishing a batch an interrupted run wrote ahead: that run's id. Files go
    /// before rows, so an item it planned may have lost its file already.
    recovering: Option<String>,
    /// `Some(what)`: this pass redacts due items (these columns, this way) instead of
    /// deleting them; their entries say `redacted`.
    redacts: Option<String>,
    /// Items are due by created time and window alone ([`crate::targets::Pass`]).
    created_only: bool,
    /// An earlier pass's window: items due under it were that pass's, skipped here.
    judged_before: Option<lethe_core::config::Window>,
}

/// Where the target's items are: its rows, and the roots their files live under.
struct Store {
    table: Box<dyn Connector>,
    roots: Roots,
    /// Remove directories a deletion leaves empty (filesystem targets that ask for it).
    prune: bool,
}

/// The run's bookkeeping on the target: the state and its lease, the write-ahead records,
/// the audit writer and the report.
struct Books<'a> {
    state: &'a mut State,
    auditor: Auditor,
    pending: PendingStore,
    /// The target's identity ([`crate::targets::identity`]): write-ahead records are kept by it.
    identity: String,
    /// When this run last renewed its lease on the target.
    lease_renewed: Instant,
    report: TargetReport,
    failpoint: Option<Failpoint>,
}

/// The batches planned in the target transaction open now (an apply).
struct Txn {
    open: bool,
    started: Instant,
    rows: usize,
    planned: Vec<Planned>,
    entries: Vec<Body>,
}

/// Subject hashes remembered at most, per target and run.
const SUBJECT_HASHES_MAX: usize = 20_000;

impl Judge<'_> {
    fn reason(&self) -> &'static str {
        if self.erasure { "erasure" } else { "retention" }
    }

    fn body(&self, key: &str, action: Action, subject_hash: Option<String>) -> Body {
        Body {
            decided_at: self.decided_at.clone(),
            run_id: self.run_id.to_string(),
            action,
            target: self.target.name.clone(),
            item_key: key.to_string(),
            category: self.target.category.clone(),
            reason: self.reason().into(),
            window: if self.erasure {
                "erasure".into()
            } else {
                self.window_text.clone()
            },
            expires_at: None,
            subject_hash,
            detail: String::new(),
        }
    }

    /// The entry for an item, built from its compact record.
    fn entry(&self, item: PendingItem, action: Action, detail: String) -> Body {
        let mut b = self.body(&item.k.to_string(), action, item.s);
        b.expires_at = item.e;
        b.window = item.w;
        b.reason = item.r;
        b.detail = match (item.d, detail.is_empty()) {
            (None, _) => detail,
            (Some(d), true) => d,
            (Some(d), false) => format!("{detail}; {d}"),
        };
        b
    }

    /// The keyed hash of a subject, remembered for the run: one person owns many rows.
    fn subject_hash(&mut self, key: &AuditKey, subject: &str) -> String {
        if let Some(h) = self.subject_hashes.get(subject) {
            return h.clone();
        }
        let h = key.subject_hash(subject);
        // Bounded: a table of a million people does not keep a million hashes.
        if self.subject_hashes.len() >= SUBJECT_HASHES_MAX {
            self.subject_hashes.clear();
        }
        self.subject_hashes.insert(subject.to_string(), h.clone());
        h
    }

    /// The pure decision on one item: under the erasure request, or by its window.
    fn verdict(&self, key: &str, subject_hash: Option<&str>, facts: &Facts) -> Verdict {
        if self.erasure {
            expiry::decide_erasure(
                self.now,
                &self.target.window,
                &self.target.name,
                key,
                subject_hash,
                facts,
                &self.protections,
            )
        } else {
            expiry::decide(
                self.now,
                &self.target.window,
                &self.target.name,
                key,
                subject_hash,
                facts,
                &self.protections,
            )
        }
    }

    /// The hold, or live exception, that protects a planned item now.
    fn protection_now(&self, item: &PendingItem) -> Option<(Action, String)> {
        if self.protections.is_empty() {
            return None;
        }
        let key = item.k.to_string();
        if let Some(id) = self
            .protections
            .hold_for(&self.target.name, &key, item.s.as_deref())
        {
            return Some((
                Action::Held,
                format!("withheld by legal hold {id}, placed while this item was being deleted"),
            ));
        }
        if item.r == "erasure" {
            return None;
        }
        match self.protections.exception_for(&self.target.name, &key) {
            Some((id, until)) if until > self.now => Some((
                Action::Excepted,
                format!("exception {id} until {until}, granted while this item was being deleted"),
            )),
            _ => None,
        }
    }
}

impl Books<'_> {
    /// The lease's lifetime, `[state] lease_ttl`.
    fn lease_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.state.lease_ttl_secs.max(1) as u64)
    }

    /// Renews the lease when a quarter of its lifetime (at most 10 s) has passed since the
    /// last renewal; an error if another sweep took it over meanwhile.
    fn keep_lease(&mut self, target: &str) -> Result<()> {
        let every = (self.lease_ttl() / 4).min(std::time::Duration::from_secs(10));
        if self.lease_renewed.elapsed() >= every {
            self.state.renew_lease(target)?;
            self.lease_renewed = Instant::now();
        }
        Ok(())
    }
}

impl TargetReport {
    /// Counts an item that could not be dealt with, and records it as failed.
    fn fail(&mut self, mut body: Body, detail: String, out: &mut Vec<Body>) {
        self.failed += 1;
        self.found += 1;
        if self.failures.len() < SAMPLE {
            self.failures.push((body.item_key.clone(), detail.clone()));
        }
        body.action = Action::Failed;
        body.detail = detail;
        out.push(body);
    }
}

impl Sweeper<'_> {
    /// Rolls the target transaction back, if one is open, when `r` is an error.
    fn or_rollback<T>(&mut self, r: Result<T>, open: bool) -> Result<T> {
        if r.is_err() && open {
            self.store.table.rollback();
        }
        r
    }

    /// Reads the holds and exceptions in force now.
    ///
    /// `checked`: also check them against the trail (its sealed hold and exception entries):
    /// always before deleting; a batch planned in a target transaction is looked at again,
    /// checked, before any of it is deleted, so planning reads only the tables.
    fn refresh_protections(&mut self, checked: bool) -> Result<()> {
        self.judge.protections = if checked {
            crate::registry::protections(self.books.state, self.judge.now)?
        } else {
            crate::registry::protections_unchecked(self.books.state, self.judge.now)?
        };
        Ok(())
    }

    // Step 1, plan: judge each row with the pure decision.

    /// Judges a batch of rows; returns the deletions to make and the other entries to write.
    /// An entry is built only for what is recorded now (failures, holds, exceptions); a
    /// deletion is kept as its compact record until it is carried out.
    ///
    /// `refresh`: read the holds and exceptions first. Within one target transaction only
    /// its first batch needs to: every planned deletion is looked at again under the
    /// protections lock before it is carried out.
    fn plan(
        &mut self,
        rows: Vec<Row>,
        entries: &mut Vec<Body>,
        refresh: bool,
    ) -> Result<Vec<Planned>> {
        if refresh {
            // Checked in a dry run, whose report nothing looks at again.
            self.refresh_protections(!self.apply)?;
        }
        let mut planned = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(p) = self.plan_row(row, entries) {
                planned.push(p);
            }
        }
        Ok(planned)
    }

    /// Judges one row: the deletion to make, or `None` when the row is kept (its entry, if
    /// it has one, is added to `entries`).
    fn plan_row(&mut self, row: Row, entries: &mut Vec<Body>) -> Option<Planned> {
        let report = &mut self.books.report;
        let key = match row.key {
            Ok(k) => k,
            Err(e) => {
                report.fail(self.judge.body("?", Action::Failed, None), e, entries);
                return None;
            }
        };
        let key_s = key.to_string();
        if let Some(why) = row.problem {
            let b = self.judge.body(&key_s, Action::Failed, None);
            report.fail(b, format!("{why}; kept, not deleted on a guess"), entries);
            return None;
        }
        let subject_hash = match &row.subject {
            Ok(Some(s)) => Some(self.judge.subject_hash(&self.books.state.key, s)),
            _ => None,
        };
        // Built from the fields (the key was moved out above, so no `Row::facts`).
        let facts = Facts {
            created_at: row.created_at.raw(),
            expires_at: Some(row.expires_at.raw()),
            retention_days: Some(row.retention_days.raw()),
            created_at_format: self.judge.created_at_format.as_ref(),
            expires_at_format: self.judge.expires_at_format.as_ref(),
            sensitivity: Some(row.sensitivity.raw()),
        };
        if let Some(window) = &self.judge.judged_before
            && !self.judge.erasure
            && !matches!(
                expiry::decide(
                    self.judge.now,
                    window,
                    &self.judge.target.name,
                    &key_s,
                    subject_hash.as_deref(),
                    &facts,
                    &Protections::default(),
                ),
                Verdict::Keep { .. }
            )
        {
            return None;
        }
        let facts = if self.judge.created_only {
            Facts {
                expires_at: None,
                retention_days: None,
                ..facts
            }
        } else {
            facts
        };
        let verdict = self.judge.verdict(&key_s, subject_hash.as_deref(), &facts);
        let report = &mut self.books.report;
        if let Some(level) = expiry::unknown_level(&self.judge.target.window, facts.sensitivity) {
            // A bounded report: past the first few names, the rest are counted together.
            const SHOWN: usize = 20;
            let level = if report.unknown_levels.len() < SHOWN
                || report.unknown_levels.contains_key(&level)
            {
                level
            } else {
                "(other levels)".to_string()
            };
            *report.unknown_levels.entry(level).or_default() += 1;
        }
        // A kept item's entry: the protection that keeps it, and how it was judged.
        let (action, window, expires_at, detail) = match verdict {
            Verdict::Keep { .. } => return None,
            Verdict::Invalid { reason } => {
                let b = self.judge.body(&key_s, Action::Deleted, subject_hash);
                report.fail(
                    b,
                    format!("{reason}; kept, not deleted on a guess"),
                    entries,
                );
                return None;
            }
            Verdict::Held {
                expires_at,
                basis,
                hold_id,
            } => (
                Action::Held,
                basis.describe(),
                (!self.judge.erasure).then(|| expires_at.to_rfc3339()),
                format!(
                    "withheld by legal hold {hold_id}{}",
                    Self::file_lost(
                        self.judge.recovering.as_deref(),
                        &self.store.roots,
                        &row.file
                    )
                ),
            ),
            Verdict::Excepted {
                expires_at,
                basis,
                exception_id,
                until,
            } => (
                Action::Excepted,
                basis.describe(),
                Some(expires_at.to_rfc3339()),
                format!(
                    "exception {exception_id} until {until}{}",
                    Self::file_lost(
                        self.judge.recovering.as_deref(),
                        &self.store.roots,
                        &row.file
                    )
                ),
            ),
            Verdict::Expired { expires_at, basis } if row.in_use.is_some() => (
                Action::InUse,
                basis.describe(),
                (!self.judge.erasure).then(|| expires_at.to_rfc3339()),
                format!(
                    "{}; kept, judged again next run",
                    row.in_use.unwrap_or_default()
                ),
            ),
            Verdict::Expired { expires_at, basis }
                if !self.judge.erasure
                    && self.judge.recovering.is_none()
                    && self.delay.as_mut().is_some_and(|d| !d.deletable(&key_s)) =>
            {
                // Scheduled (or still waiting): deleted by a later run, if still due then.
                // An apply records what it schedules now, one entry per item, so that the
                // trail knows of every item past expiry it did not delete.
                let newly = self
                    .delay
                    .as_ref()
                    .filter(|d| d.new.last() == Some(&key_s))
                    .map(|d| (d.after, d.now + d.after));
                if let (true, Some((after, from))) = (self.apply, newly) {
                    let mut b = self.judge.body(&key_s, Action::Scheduled, subject_hash);
                    b.window = basis.describe();
                    b.expires_at = Some(expires_at.to_rfc3339());
                    b.detail = format!(
                        "found due; scheduled (delete_delay {}): deletable from {}, by a run then if still due; `lethe sweep --cancel {}` drops it",
                        lethe_core::time::Duration::from_secs(after),
                        Timestamp::from_unix_seconds(from)
                            .map(Timestamp::to_rfc3339)
                            .unwrap_or_default(),
                        self.judge.run_id
                    );
                    entries.push(b);
                }
                return None;
            }
            Verdict::Expired { expires_at, basis } => {
                let item = PendingItem {
                    k: key,
                    s: subject_hash,
                    e: (!self.judge.erasure).then(|| expires_at.to_rfc3339()),
                    w: basis.describe(),
                    r: self.judge.reason().to_string(),
                    d: row.detail,
                };
                return self.plan_deletion(item, key_s, row.file, entries);
            }
        };
        report.found += 1;
        if action == Action::InUse {
            report.in_use += 1;
        } else {
            report.held += 1;
        }
        let mut body = self.judge.body(&key_s, action, subject_hash);
        body.window = window;
        body.expires_at = expires_at;
        body.detail = detail;
        entries.push(body);
        None
    }

    /// For an item kept while finishing an interrupted run's batch: what to add to its
    /// entry when that run had already removed its file (files go before rows), so that
    /// the trail does not show a protected item as whole when part of it is gone.
    fn file_lost(
        recovering: Option<&str>,
        roots: &Roots,
        file: &Result<Option<String>, String>,
    ) -> String {
        let (Some(run), Ok(Some(path))) = (recovering, file) else {
            return String::new();
        };
        if path.is_empty() {
            return String::new();
        }
        match roots
            .place(path)
            .and_then(|mut f| roots.inspect_judged(&mut f))
        {
            Ok(FileState::Missing) => format!(
                "; its file was already removed by interrupted run {run}, before this protection was in force"
            ),
            _ => String::new(),
        }
    }

    /// An expired item: its file placed under the roots and looked at, then planned.
    fn plan_deletion(
        &mut self,
        item: PendingItem,
        key_s: String,
        file: Result<Option<String>, String>,
        entries: &mut Vec<Body>,
    ) -> Option<Planned> {
        let roots = &self.store.roots;
        let file = match &file {
            Ok(None) => None,
            Ok(Some(p)) if p.is_empty() => None,
            Ok(Some(p)) => match roots.place(p).and_then(|mut f| {
                let st = roots.inspect_judged(&mut f)?;
                Ok((f, st))
            }) {
                Ok(f) => Some(f),
                Err(e) => {
                    let b = self.judge.entry(item, Action::Failed, String::new());
                    self.books.report.fail(b, format!("{e}; row kept"), entries);
                    return None;
                }
            },
            Err(e) => {
                let b = self.judge.entry(item, Action::Failed, String::new());
                self.books
                    .report
                    .fail(b, format!("file path {e}; row kept"), entries);
                return None;
            }
        };
        let report = &mut self.books.report;
        report.found += 1;
        if !self.apply {
            if matches!(file, Some((_, FileState::Present))) {
                report.files_due += 1;
            }
            if report.due_sample.len() < SAMPLE {
                report.due_sample.push(key_s);
            }
        }
        Some(Planned { item, file })
    }

    /// Carries out a transaction's planned deletions: writes them ahead (one durable record
    /// per chunk, all in one write), protects what a hold or exception now covers, deletes
    /// the rest and commits the target, and only then records the entries, chunk by chunk,
    /// each with its record. `pending` is an existing record when finishing an interrupted
    /// batch.
    fn apply_planned(
        &mut self,
        planned: Vec<Planned>,
        pending: Option<i64>,
        entries: Vec<Body>,
    ) -> Result<()> {
        // The lease is this run's, and renewed, before anything is written ahead or deleted.
        self.books.keep_lease(&self.judge.target.name)?;
        let chunk_ids = self.write_ahead(&planned, pending)?;
        let chunk = if pending.is_some() {
            planned.len().max(1)
        } else {
            PENDING_CHUNK
        };
        // The protections lock, which every hold, release and exception takes to be
        // recorded, is held from this last look at them until the target commits: a hold
        // whose command has returned is seen here, and one still being placed waits until
        // these deletions are committed. The audit writer does not take it.
        let lock = self.books.state.lock_protections()?;
        let done = self.protect_delete_commit(planned);
        self.books.state.unlock_protections(lock);
        let done = done?;
        hit(&mut self.books.failpoint, "after_delete");
        self.record(done, chunk_ids, chunk, entries)
    }

    /// Writes the planned deletions ahead, one durable record per chunk; returns the
    /// records' ids (`None`: nothing to write ahead).
    fn write_ahead(
        &mut self,
        planned: &[Planned],
        pending: Option<i64>,
    ) -> Result<Vec<Option<i64>>> {
        Ok(match pending {
            Some(id) => vec![Some(id)],
            None if planned.is_empty() => vec![None],
            None => {
                let payloads = planned
                    .chunks(PENDING_CHUNK)
                    .map(|c| serde_json::to_string(&c.iter().map(|p| &p.item).collect::<Vec<_>>()))
                    .collect::<Result<Vec<_>, _>>()?;
                let ids = self.books.pending.add_many(
                    self.judge.run_id,
                    &self.judge.target.name,
                    &self.books.identity,
                    &payloads,
                )?;
                hit(&mut self.books.failpoint, "after_pending");
                ids.into_iter().map(Some).collect()
            }
        })
    }

    // Step 2, protect: look at the holds and exceptions once more.

    /// Looks at the holds and exceptions once more, keeps what they now protect, deletes
    /// the rest and commits the target. Called with the state's write lock held.
    fn protect_delete_commit(&mut self, planned: Vec<Planned>) -> Result<Vec<Done>> {
        self.refresh_protections(true)?;
        let done = if self.judge.protections.is_empty() {
            // Nothing can protect an item: no sorting into kept and deleted to do.
            self.delete(planned)
        } else {
            self.protect_then_delete(planned)
        };
        let mut done = self.or_rollback(done, true)?;
        // A run that stalled here (stopped, swapped out) past most of its lease may have
        // been taken over: it commits nothing.
        let lease_ttl = self.books.lease_ttl();
        if self.books.lease_renewed.elapsed() >= lease_ttl * 3 / 4 {
            self.store.table.rollback();
            anyhow::bail!(
                "this run stalled for {:.0}s since it last renewed its lease on target {}, too close to [state] lease_ttl ({}s) to be sure no other sweep took over: its last deletions were rolled back and it stops",
                self.books.lease_renewed.elapsed().as_secs_f64(),
                self.judge.target.name,
                lease_ttl.as_secs()
            );
        }
        hit(&mut self.books.failpoint, "before_commit");
        if let Err(e) = self.store.table.commit() {
            // Nothing was deleted after all; say so for each item the entries would claim.
            for d in done.iter_mut().filter(|d| d.outcome.is_ok()) {
                d.outcome = Err(format!("commit failed, row kept: {e:#}"));
                if self.judge.redacts.is_some() {
                    self.books.report.redacted -= 1;
                } else {
                    self.books.report.deleted -= 1;
                }
                self.books.report.failed += 1;
            }
        }
        Ok(done)
    }

    /// Keeps, in place, the planned items a hold or exception now protects, and deletes
    /// the rest.
    fn protect_then_delete(&mut self, planned: Vec<Planned>) -> Result<Vec<Done>> {
        let mut slots: Vec<Option<Done>> = Vec::with_capacity(planned.len());
        let mut to_run = Vec::with_capacity(planned.len());
        for p in planned {
            match self.judge.protection_now(&p.item) {
                Some(protection) => {
                    self.books.report.held += 1;
                    slots.push(Some(Done {
                        item: p.item,
                        outcome: Err(String::new()),
                        protected: Some(protection),
                    }));
                }
                None => {
                    slots.push(None);
                    to_run.push(p);
                }
            }
        }
        let mut ran = self.delete(to_run)?.into_iter();
        Ok(slots
            .into_iter()
            .filter_map(|s| s.or_else(|| ran.next()))
            .collect())
    }

    // Step 3, delete: files, then rows, inside the target transaction.

    /// Removes files then rows for planned items, inside the target transaction.
    ///
    /// `Err` when a store without transactions could not say what it deleted: nothing is
    /// recorded, the batch stays written ahead, and the next run looks each item up.
    fn delete(&mut self, planned: Vec<Planned>) -> Result<Vec<Done>> {
        let (mut done, files_removed) = self.delete_files(planned);
        self.delete_rows(&mut done, files_removed)?;
        for d in done.iter().filter(|d| d.outcome.is_err()) {
            let report = &mut self.books.report;
            report.failed += 1;
            if report.failures.len() < SAMPLE
                && let Err(why) = &d.outcome
            {
                report.failures.push((d.item.k.to_string(), why.clone()));
            }
        }
        Ok(done)
    }

    /// Removes the planned items' files; an item whose file could not be removed is kept.
    /// Returns each item's outcome so far, and how many files were removed.
    fn delete_files(&mut self, planned: Vec<Planned>) -> (Vec<Done>, u64) {
        let removals = remove_files(&self.store.roots, &planned);
        hit(&mut self.books.failpoint, "mid_files");
        let mut done = Vec::with_capacity(planned.len());
        let mut files_removed = 0u64;
        for (p, removal) in planned.into_iter().zip(removals) {
            let outcome = match removal {
                None => Ok(""),
                Some(Ok(FileState::Present)) => {
                    files_removed += 1;
                    if self.store.prune
                        && let Some((f, _)) = &p.file
                    {
                        self.store.roots.prune_empty_parents(f);
                    }
                    Ok("file removed")
                }
                Some(Ok(FileState::Missing)) => Ok("file already missing"),
                Some(Err(e)) => Err(format!("{e}; row kept")),
            };
            done.push(Done {
                item: p.item,
                outcome,
                protected: None,
            });
        }
        (done, files_removed)
    }

    /// Deletes the rows of the items still to delete, and marks each by the connector's word.
    fn delete_rows(&mut self, done: &mut [Done], files_removed: u64) -> Result<()> {
        let keys: Vec<Key> = done
            .iter()
            .filter(|d| d.outcome.is_ok())
            .map(|d| d.item.k.clone())
            .collect();
        // Deleted only by the connector's own word for each key: an answer list of the
        // wrong length is no answer for any of them.
        let deleted = if keys.is_empty() {
            Ok(Vec::new())
        } else {
            self.store
                .table
                .delete(&keys)
                .and_then(|each| answers("delete", &keys, each))
        };
        match deleted {
            Ok(each) => {
                let redacts = self.judge.redacts.is_some();
                let report = &mut self.books.report;
                report.files_removed += files_removed;
                let mut each = each.into_iter();
                for d in done.iter_mut().filter(|d| d.outcome.is_ok()) {
                    match each.next() {
                        Some(Deletion::Deleted) if redacts => report.redacted += 1,
                        Some(Deletion::Deleted) => report.deleted += 1,
                        // A redaction never finds its row gone: a row not updated is not
                        // redacted, whatever the store says.
                        Some(Deletion::AlreadyGone) if redacts => {
                            d.outcome = Err("redaction not confirmed by the store".into())
                        }
                        // Gone before the delete reached it (deleted by someone else, or by
                        // an earlier attempt whose answer was lost): recorded as such.
                        Some(Deletion::AlreadyGone) => {
                            report.deleted += 1;
                            if d.outcome == Ok("") {
                                d.outcome = Ok("already gone: the store answered not found");
                            }
                        }
                        Some(Deletion::Failed(e)) if redacts => {
                            d.outcome = Err(format!("redaction failed: {e}"))
                        }
                        Some(Deletion::Failed(e)) => d.outcome = Err(format!("delete failed: {e}")),
                        None => d.outcome = Err("delete failed: no answer for this item".into()),
                    }
                }
            }
            // A transaction that failed deleted nothing: each row is kept, and failed.
            Err(e) if self.store.table.capabilities().transactions => {
                for d in done.iter_mut().filter(|d| d.outcome.is_ok()) {
                    d.outcome = Err(format!("row delete failed: {e:#}"));
                }
            }
            // Elsewhere some may be gone: recorded neither deleted nor failed on a guess.
            Err(e) => {
                return Err(e.context(format!(
                    "target {}: the store did not say which items of this batch it deleted; the batch stays written ahead and the next run looks each one up",
                    self.judge.target.name
                )));
            }
        }
        Ok(())
    }

    // Step 4, record: the entries to the audit writer.

    /// Hands the entries to the audit writer, `chunk` items with each write-ahead record
    /// (which the writer drops with them); `entries` go with the first.
    fn record(
        &mut self,
        done: Vec<Done>,
        chunk_ids: Vec<Option<i64>>,
        chunk: usize,
        entries: Vec<Body>,
    ) -> Result<()> {
        let mut extra = Some(entries);
        let mut rest = done.into_iter();
        for id in chunk_ids {
            let mut bodies = extra.take().unwrap_or_default();
            for d in rest.by_ref().take(chunk) {
                bodies.push(match (d.protected, d.outcome) {
                    (Some((action, detail)), _) => self.judge.entry(d.item, action, detail),
                    (None, Ok(detail)) => match &self.judge.redacts {
                        Some(what) => {
                            let detail = if detail.is_empty() {
                                format!("redacted {what}")
                            } else {
                                format!("redacted {what}; {detail}")
                            };
                            self.judge.entry(d.item, Action::Redacted, detail)
                        }
                        None => self
                            .judge
                            .entry(d.item, Action::Deleted, detail.to_string()),
                    },
                    (None, Err(why)) => self.judge.entry(d.item, Action::Failed, why),
                });
            }
            self.books.auditor.append(bodies, id)?;
        }
        Ok(())
    }

    // Recovery: batches an interrupted apply left written ahead.

    /// Finishes batches an interrupted apply left behind.
    fn recover(&mut self) -> Result<()> {
        for (id, old_run, payload, old_name) in self
            .books
            .pending
            .list(&self.judge.target.name, &self.books.identity)?
        {
            self.finish_pending(id, &old_run, &payload, &old_name)?;
        }
        Ok(())
    }

    /// Finishes one written-ahead batch: rows still there are judged again and deleted,
    /// rows already gone get their one "deleted" entry.
    fn finish_pending(
        &mut self,
        id: i64,
        old_run: &str,
        payload: &str,
        old_name: &str,
    ) -> Result<()> {
        if self.books.state.batch_done(id)? {
            // Its entries were appended; only the pending record was left behind.
            if self.apply {
                self.books.pending.remove(&[id])?;
            }
            return Ok(());
        }
        let items: Vec<PendingItem> = serde_json::from_str(payload).with_context(|| {
            format!("pending batch {id} of run {old_run} is unreadable; fix or remove it by hand")
        })?;
        if !self.apply {
            self.books.report.notes.push(format!(
                "{} deletions from interrupted run {old_run} are pending; the next --apply finishes them",
                items.len()
            ));
            return Ok(());
        }
        let keys: Vec<Key> = items.iter().map(|i| i.k.clone()).collect();
        // Finish the batch under the job that planned it: an erasure stays an erasure.
        let was_erasure = items.iter().any(|i| i.r == "erasure");
        let job_erasure = self.judge.erasure;
        self.judge.erasure = was_erasure;
        self.store.table.begin()?;
        let looked = self.look_up_pending(id, old_run, &keys)?;
        let mut rows = Vec::new();
        let mut gone: HashSet<Key> = HashSet::new();
        for (k, l) in keys.iter().zip(looked) {
            match l {
                Lookup::Found(row) => rows.push(row),
                Lookup::Gone => {
                    gone.insert(k.clone());
                }
                Lookup::Unknown(_) => {}
            }
        }
        let mut entries = Vec::new();
        // On a redacting pass, "gone" is a row whose columns hold what a redaction leaves:
        // the interrupted run redacted it.
        let (action, done_by) = match &self.judge.redacts {
            Some(what) => (Action::Redacted, format!("redacted {what}")),
            None => (Action::Deleted, "deleted".to_string()),
        };
        for item in items.into_iter().filter(|i| gone.contains(&i.k)) {
            let mut b = self.judge.body(&item.k.to_string(), action, item.s);
            b.expires_at = item.e;
            b.window = item.w;
            b.reason = item.r;
            b.detail = if old_name == self.judge.target.name {
                format!("{done_by} by interrupted run {old_run}; recorded on recovery")
            } else {
                format!(
                    "{done_by} by interrupted run {old_run} (the target was then named {old_name}); recorded on recovery"
                )
            };
            self.books.report.found += 1;
            if action == Action::Redacted {
                self.books.report.redacted += 1;
            } else {
                self.books.report.deleted += 1;
            }
            entries.push(b);
        }
        // One batch in a transaction of its own.
        self.judge.recovering = Some(old_run.to_string());
        let done = self
            .plan(rows, &mut entries, true)
            .and_then(|planned| self.apply_planned(planned, Some(id), entries));
        self.judge.erasure = job_erasure;
        self.judge.recovering = None;
        self.or_rollback(done, true)
    }

    /// Looks each item of a pending batch up, inside the transaction just begun. Gone only
    /// by the store's word: an item it cannot speak of keeps the whole batch pending
    /// (recorded neither deleted nor failed on a guess).
    fn look_up_pending(&mut self, id: i64, old_run: &str, keys: &[Key]) -> Result<Vec<Lookup>> {
        let looked = self
            .store
            .table
            .lookup(keys)
            .and_then(|each| answers("lookup", keys, each));
        let looked = match looked {
            Ok(r) => r,
            Err(e) => {
                self.store.table.rollback();
                return Err(e.context(format!(
                    "pending batch {id} of run {old_run} could not be looked up; it stays pending and the next run tries again"
                )));
            }
        };
        if let Some((k, why)) = keys.iter().zip(&looked).find_map(|(k, l)| match l {
            Lookup::Unknown(why) => Some((k, why)),
            _ => None,
        }) {
            self.store.table.rollback();
            anyhow::bail!(
                "pending batch {id} of run {old_run}: item {k} could not be looked up ({why}); the batch stays pending and the next run tries again"
            );
        }
        Ok(looked)
    }

    // The run: batch after batch, through the four steps.

    fn run(&mut self, batch: usize, rows_per_commit: usize, progress: bool) -> Result<()> {
        self.recover()?;
        let range = if progress {
            self.store.table.key_range()
        } else {
            None
        };
        let started = Instant::now();
        let mut last_draw = Instant::now();
        // Several batches share one target transaction: each commit rewrites the pages of
        // the table's indexes it touched, so fewer, larger commits write far less. But a
        // transaction also holds the application off the rows (or, on SQLite, the whole
        // database) it wrote: it is committed after `rows_per_commit` rows or TXN_MAX,
        // whichever comes first.
        let mut txn = Txn {
            open: false,
            started: Instant::now(),
            rows: 0,
            planned: Vec::new(),
            entries: Vec::new(),
        };
        loop {
            // Told to stop, with nothing staged: no further batch is read.
            if !txn.open && self.stop_requested() {
                self.interrupted();
                break;
            }
            if self.apply && !txn.open {
                self.store.table.begin()?;
                txn.open = true;
                txn.started = Instant::now();
            }
            let rows = self.read_batch(batch);
            let rows = self.or_rollback(rows, txn.open)?;
            // The connector keeps its place: a batch whose keys are all unreadable does not
            // end the scan; only a short batch does.
            let full = rows.len() >= batch;
            // Told to stop: this batch is the last, committed as the end of a scan is.
            let stopping = full && self.stop_requested();
            let full = full && !stopping;
            let last = rows.iter().rev().find_map(|r| r.key.clone().ok());
            if self.apply {
                self.stage(&mut txn, rows, rows_per_commit, full)?;
            } else {
                self.dry_run_batch(rows)?;
            }
            if stopping {
                self.interrupted();
            }
            let kept = self.books.keep_lease(&self.judge.target.name);
            self.or_rollback(kept, txn.open)?;
            if progress && last_draw.elapsed().as_millis() > 150 {
                last_draw = Instant::now();
                draw_progress(&self.books.report, range, last.as_ref(), started);
            }
            if !full {
                break;
            }
        }
        if txn.open {
            // Nothing staged is left uncommitted; an open transaction here read no rows.
            self.store.table.rollback();
        }
        self.report_null_keys()?;
        if progress {
            eprint!("\r\x1b[2K");
        }
        Ok(())
    }

    fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
    }

    fn interrupted(&mut self) {
        self.books.report.interrupted = true;
        self.books
            .report
            .notes
            .push("interrupted: the process was told to stop; the next run sweeps the rest".into());
    }

    /// The next batch of rows: the subject's (an erasure) or the candidates (retention).
    fn read_batch(&mut self, batch: usize) -> Result<Vec<Row>> {
        match self.subject {
            Some(_) if !self.store.table.capabilities().subjects => Err(anyhow::anyhow!(
                "target {} cannot find a subject's items",
                self.judge.target.name
            )),
            Some(subject) => self.store.table.of_subject(subject, batch),
            None => self.store.table.candidates(self.judge.now, batch),
        }
    }

    /// Plans a batch into the open transaction, and carries the transaction's deletions out
    /// once it holds enough rows, has been open long enough, or the scan ends.
    ///
    /// Plan batch after batch; write ahead, delete and commit once per transaction: every
    /// write-ahead record and commit is a sync to disk.
    fn stage(
        &mut self,
        txn: &mut Txn,
        rows: Vec<Row>,
        rows_per_commit: usize,
        full: bool,
    ) -> Result<()> {
        let first_of_txn = txn.rows == 0;
        txn.rows += rows.len();
        let planned = self.plan(rows, &mut txn.entries, first_of_txn);
        let planned = self.or_rollback(planned, true)?;
        txn.planned.extend(planned);
        if txn.rows >= rows_per_commit || !full || txn.started.elapsed() >= TXN_MAX {
            txn.open = false;
            txn.rows = 0;
            let planned = std::mem::take(&mut txn.planned);
            let entries = std::mem::take(&mut txn.entries);
            let applied = self.apply_planned(planned, None, entries);
            self.or_rollback(applied, true)?;
        }
        Ok(())
    }

    /// A dry run's batch: planned, and recorded as what would be deleted.
    fn dry_run_batch(&mut self, rows: Vec<Row>) -> Result<()> {
        let mut entries = Vec::new();
        // Nothing is looked at again before a dry run reports: read them every batch.
        let planned = self.plan(rows, &mut entries, true)?;
        for p in planned {
            let b = match &self.judge.redacts {
                Some(what) => {
                    self.books.report.redact_due += 1;
                    self.judge
                        .entry(p.item, Action::WouldRedact, format!("would redact {what}"))
                }
                None => self.judge.entry(p.item, Action::WouldDelete, String::new()),
            };
            entries.push(b);
        }
        self.books.auditor.append(entries, None)
    }

    /// `delete_delay`: says what this run scheduled and what waits, and (an apply) writes
    /// the target's schedule: what it scheduled, and what waits; a scan that ran to its end
    /// drops the rest (deleted now, or no longer due).
    fn keep_schedule(&mut self, ctx: &RunCtx<'_>) -> Result<()> {
        let Some(delay) = self.delay.take() else {
            return Ok(());
        };
        let report = &mut self.books.report;
        report.scheduled = delay.new.len() as u64;
        report.waiting = delay.waiting.len() as u64;
        let from = delay.deletable_from();
        report.deletable_from = from
            .and_then(Timestamp::from_unix_seconds)
            .map(Timestamp::to_rfc3339);
        if let Some(at) = &report.deletable_from {
            report.notes.push(format!(
                "delete_delay {}: {} item(s) {} now, {} scheduled earlier still waiting; the first becomes deletable at {at} (deleted by the first run after, if still due then; `lethe sweep --cancel {}` drops what this run scheduled; erasure requests are not delayed)",
                lethe_core::time::Duration::from_secs(delay.after),
                delay.new.len(),
                if self.apply { "scheduled" } else { "would be scheduled" },
                delay.waiting.len(),
                ctx.run_id,
            ));
        }
        if !self.apply {
            return Ok(());
        }
        let whole = !self.books.report.interrupted;
        crate::guard::write_schedule(
            self.books.state,
            self.judge.target,
            ctx.run_id,
            ctx.now,
            &delay.new,
            whole.then_some(&delay.waiting[..]),
        )
    }

    /// Rows with a NULL key cannot be named, so they are neither paged through nor deleted;
    /// they are counted and reported, never passed over in silence.
    fn report_null_keys(&mut self) -> Result<()> {
        let n = self.store.table.null_keys(self.judge.now, self.subject)?;
        if n > 0 {
            let b = self.judge.body("(NULL key)", Action::Failed, None);
            let mut entries = Vec::new();
            let report = &mut self.books.report;
            report.fail(
                b,
                format!("{n} rows that may be due have a NULL key: they cannot be named, so none was deleted"),
                &mut entries,
            );
            report.failed += n - 1;
            report.found += n - 1;
            self.books.auditor.append(entries, None)?;
        }
        Ok(())
    }
}

/// Removes the planned items' files, several at a time: an unlink often waits on the
/// device (a `discard` mount waits for every one), not on the CPU. One result per item.
type Removal = Option<Result<FileState, String>>;

fn remove_files(roots: &Roots, planned: &[Planned]) -> Vec<Removal> {
    const WORKERS: usize = 4;
    let with_files = planned.iter().filter(|p| p.file.is_some()).count();
    let one = |p: &Planned| p.file.as_ref().map(|(f, _)| roots.remove(f));
    if with_files < 2 * WORKERS {
        return planned.iter().map(one).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Removal> = Vec::new();
    results.resize_with(planned.len(), || None);
    let done: Vec<Vec<(usize, Removal)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(p) = planned.get(i) else { break };
                        mine.push((i, one(p)));
                    }
                    mine
                })
            })
            .collect();
        workers.into_iter().filter_map(|w| w.join().ok()).collect()
    });
    for (i, r) in done.into_iter().flatten() {
        results[i] = r;
    }
    // A worker that panicked leaves its items unremoved and unanswered: they fail, never
    // pass as removed.
    for (i, p) in planned.iter().enumerate() {
        if p.file.is_some() && results[i].is_none() {
            results[i] = Some(Err("file removal did not complete".into()));
        }
    }
    results
}

fn draw_progress(r: &TargetReport, range: Option<(i64, i64)>, at: Option<&Key>, started: Instant) {
    let pct = match (range, at) {
        (Some((lo, hi)), Some(Key::Int(k))) if hi > lo => {
            Some(((k - lo) as f64 / (hi - lo) as f64 * 100.0).clamp(0.0, 100.0))
        }
        _ => None,
    };
    let bar = match pct {
        Some(p) => {
            let filled = (p / 5.0) as usize;
            format!(
                "[{}{}] {p:3.0}%",
                "#".repeat(filled),
                "-".repeat(20 - filled.min(20))
            )
        }
        None => "[working]".to_string(),
    };
    eprint!(
        "\r\x1b[2K  {} {bar}  found {}  deleted {}  held {}  failed {}  {:.0}s",
        r.target,
        r.found,
        r.deleted,
        r.held,
        r.failed,
        started.elapsed().as_secs_f64()
    );
    let _ = std::io::stderr().flush();
}

/// Runs a job over the given targets: a retention sweep, or one subject's erasure.
pub fn sweep(
    state: &mut State,
    targets: &[&Target],
    base: &Path,
    now: Timestamp,
    job: &Job,
    opts: &SweepOptions,
) -> Result<SweepReport> {
    let run_id = match job {
        Job::Retention => match &opts.run_id {
            Some(id) => id.clone(),
            None => crate::state::new_id("run")?,
        },
        Job::Erasure { request_id, .. } => request_id.clone(),
    };
    state.start_run(&run_id, job.reason(), !opts.apply)?;
    let ctx = RunCtx {
        base,
        now,
        run_id: &run_id,
        job,
        opts,
        progress: opts.progress && std::io::stderr().is_terminal(),
    };
    let mut reports = Vec::new();
    for target in targets {
        if opts.stopping() {
            break;
        }
        reports.push(sweep_target(state, target, &ctx)?);
    }
    let report = SweepReport {
        run_id: run_id.clone(),
        dry_run: !opts.apply,
        targets: reports,
        decided_at: now,
    };
    state.finish_run(&run_id, &serde_json::to_string(&report)?)?;
    Ok(report)
}

/// Sweeps one target as part of the run `run_id` that someone else started and finishes
/// (a daemon's scheduled run, whose targets several daemons share).
pub fn sweep_in_run(
    state: &mut State,
    target: &Target,
    base: &Path,
    now: Timestamp,
    run_id: &str,
    opts: &SweepOptions,
) -> Result<TargetReport> {
    let ctx = RunCtx {
        base,
        now,
        run_id,
        job: &Job::Retention,
        opts,
        progress: false,
    };
    sweep_target(state, target, &ctx)
}

/// One target's part of a run: swept under its lease and closed by a `sweep_finished`
/// entry, or skipped (busy, or a type this build cannot sweep).
fn sweep_target(state: &mut State, target: &Target, ctx: &RunCtx<'_>) -> Result<TargetReport> {
    let guarded = ctx.opts.guard.get(&target.name);
    if let Some(g) = guarded
        && let Some(why) = &g.refused
        && ctx.opts.apply
    {
        // Nothing is deleted on the target; the run fails there, and says why.
        let report = TargetReport {
            target: target.name.clone(),
            error: Some(why.clone()),
            guard: g.notes.clone(),
            ..Default::default()
        };
        state.append(vec![finished_entry(target, ctx, &report)?], &[])?;
        return Ok(report);
    }
    let mut report = sweep_unguarded(state, target, ctx)?;
    if let Some(g) = guarded {
        report.guard = g.notes.clone();
        report.guard.extend(g.refused.clone());
    }
    Ok(report)
}

/// [`sweep_target`] once the guard let the target through.
fn sweep_unguarded(state: &mut State, target: &Target, ctx: &RunCtx<'_>) -> Result<TargetReport> {
    Ok(match skip_reason(state, target)? {
        Some((error, busy)) => TargetReport {
            target: target.name.clone(),
            error: Some(error),
            busy,
            ..Default::default()
        },
        None => {
            let report = sweep_leased(state, target, ctx);
            state.append(vec![finished_entry(target, ctx, &report)?], &[])?;
            report
        }
    })
}

/// Why a target is not swept at all: its type cannot be, or another sweep holds its lease.
/// `None` once this run holds the lease.
fn skip_reason(state: &mut State, target: &Target) -> Result<Option<(String, bool)>> {
    if !kind_of(target).can_sweep() {
        return Ok(Some((
            format!(
                "target type {} is not supported by this build yet",
                target.type_name
            ),
            false,
        )));
    }
    Ok(match state.acquire_lease(&target.name)? {
        Lease::Busy { holder, since } => Some((
            format!(
                "skipped: another sweep ({holder}, since {since}) is working on this target; run again when it is done"
            ),
            true,
        )),
        Lease::Acquired => None,
    })
}

/// Sweeps a target whose lease this run holds, and gives the lease back.
fn sweep_leased(state: &mut State, target: &Target, ctx: &RunCtx<'_>) -> TargetReport {
    let result = sweep_one(state, target, ctx);
    let _ = state.release_lease(&target.name);
    result.unwrap_or_else(|e| TargetReport {
        target: target.name.clone(),
        error: Some(format!("{e:#}")),
        ..Default::default()
    })
}

/// The `sweep_finished` entry that closes a target's part of a run.
fn finished_entry(target: &Target, ctx: &RunCtx<'_>, report: &TargetReport) -> Result<Body> {
    Ok(Body {
        decided_at: ctx.now.to_rfc3339(),
        run_id: ctx.run_id.to_string(),
        action: Action::SweepFinished,
        target: target.name.clone(),
        item_key: String::new(),
        category: target.category.clone(),
        reason: ctx.job.reason().into(),
        window: target.window.retention.to_string(),
        expires_at: None,
        subject_hash: None,
        detail: format!(
            "dry_run={} found={} deleted={}{} held={} files_removed={} failed={}{}{}",
            !ctx.opts.apply,
            report.found,
            report.deleted,
            if report.redacted > 0 || report.redact_due > 0 {
                format!(
                    " redacted={}",
                    if ctx.opts.apply {
                        report.redacted
                    } else {
                        report.redact_due
                    }
                )
            } else {
                String::new()
            },
            report.held,
            report.files_removed,
            report.failed,
            if report.roots.is_empty() {
                String::new()
            } else {
                format!(" roots={}", serde_json::to_string(&report.roots)?)
            },
            report
                .error
                .as_ref()
                .map(|e| format!(" error={e}"))
                .unwrap_or_default()
        ) + if report.interrupted {
            " interrupted=true"
        } else {
            ""
        } + &if report.scheduled + report.waiting > 0 {
            format!(" scheduled={} waiting={}", report.scheduled, report.waiting)
        } else {
            String::new()
        } + &ctx
            .opts
            .by
            .as_ref()
            .map(|b| format!(" by={b}"))
            .unwrap_or_default(),
    })
}

struct RunCtx<'a> {
    base: &'a Path,
    now: Timestamp,
    run_id: &'a str,
    job: &'a Job,
    opts: &'a SweepOptions,
    progress: bool,
}

/// Sweeps a target pass by pass ([`crate::targets::passes`]: a deletion pass, a redaction
/// pass, or both), into one report.
fn sweep_one(state: &mut State, target: &Target, ctx: &RunCtx<'_>) -> Result<TargetReport> {
    let erasure = matches!(ctx.job, Job::Erasure { .. });
    let mut report: Option<TargetReport> = None;
    // The crash tests' hook counts the points reached in the whole target, not per pass.
    let mut failpoint: Option<Option<Failpoint>> = None;
    for pass in crate::targets::passes(target, erasure) {
        // A pass that was told to stop leaves the later ones to the next run.
        if report.as_ref().is_some_and(|r| r.interrupted) || ctx.opts.stopping() {
            break;
        }
        // The tags are the whole target's, whichever pass: counted once.
        let count_tags = report.is_none();
        let r = sweep_pass(state, &pass, ctx, &mut failpoint, count_tags)?;
        report = Some(match report {
            None => r,
            Some(mut sum) => {
                sum.add(r);
                sum
            }
        });
    }
    let mut report =
        report.ok_or_else(|| anyhow::anyhow!("target {} has nothing to sweep", target.name))?;
    if !report.unknown_levels.is_empty() {
        let named: Vec<String> = report
            .unknown_levels
            .iter()
            .map(|(l, n)| format!("{l:?} ({n})"))
            .collect();
        report.notes.push(format!(
            "items name a sensitivity level nobody defined, read as the strictest cap: {}; define it under [sensitivity.LEVEL] or correct the items",
            named.join(", ")
        ));
    }
    Ok(report)
}

impl TargetReport {
    /// Adds a later pass's report over the same target to this one.
    fn add(&mut self, r: TargetReport) {
        self.found += r.found;
        self.deleted += r.deleted;
        self.redacted += r.redacted;
        self.held += r.held;
        self.files_removed += r.files_removed;
        self.failed += r.failed;
        self.in_use += r.in_use;
        self.files_due += r.files_due;
        self.redact_due += r.redact_due;
        self.untagged = match (self.untagged, r.untagged) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.retries = match (self.retries, r.retries) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.error = self.error.take().or(r.error);
        self.interrupted |= r.interrupted;
        self.failures.extend(r.failures);
        self.failures.truncate(SAMPLE);
        self.due_sample.extend(r.due_sample);
        self.due_sample.truncate(SAMPLE);
        self.notes.extend(r.notes);
        // Passes judge the same items: a level is counted by the pass that saw it most.
        for (level, n) in r.unknown_levels {
            let seen = self.unknown_levels.entry(level).or_default();
            *seen = (*seen).max(n);
        }
    }
}

fn sweep_pass(
    state: &mut State,
    pass: &crate::targets::Pass,
    ctx: &RunCtx<'_>,
    failpoint: &mut Option<Option<Failpoint>>,
    count_tags: bool,
) -> Result<TargetReport> {
    let mut s = Sweeper::open(state, &pass.target, ctx)?;
    if let Some(carried) = failpoint.take() {
        s.books.failpoint = carried;
    }
    s.judge.redacts = pass.redacts.clone();
    s.judge.created_only = pass.created_only;
    s.judge.judged_before = pass.judged_before.clone();
    let batch = ctx.opts.batch.max(1);
    let rows_per_commit = if !s.store.table.capabilities().transactions {
        batch
    } else {
        ctx.opts.rows_per_commit
    };
    let ran = if pass.recover_only {
        s.recover()
    } else {
        s.run(batch, rows_per_commit, ctx.progress)
    };
    let ran = match ran {
        Ok(()) => s.keep_schedule(ctx),
        Err(e) => Err(e),
    };
    if let (Job::Erasure { .. }, Some(d)) = (ctx.job, pass.target.delete_delay) {
        s.books.report.notes.push(format!(
            "delete_delay {d} does not apply to an erasure request: its deadline is the law's, so its items are deleted now"
        ));
    }
    let table = &mut s.store.table;
    let report = &mut s.books.report;
    if count_tags {
        match table.count_untagged(&ctx.opts.required_tags) {
            Ok(n) => report.untagged = n,
            Err(e) => report
                .notes
                .push(format!("tag coverage could not be counted: {e:#}")),
        }
    }
    report.retries = table.retries();
    report.notes.extend(table.notes());
    if let Some((bulk, single)) = table.delete_stats()
        && bulk + single > 0
    {
        report.notes.push(format!(
            "{bulk} bulk delete requests, {single} single deletes"
        ));
    }
    // Whatever was deleted before an error is recorded before the error is reported.
    let flushed = s.books.auditor.flush();
    *failpoint = Some(s.books.failpoint.take());
    ran?;
    flushed?;
    Ok(s.books.report)
}

impl<'a> Sweeper<'a> {
    /// Opens the target and the run's bookkeeping on it.
    fn open(state: &'a mut State, target: &'a Target, ctx: &RunCtx<'a>) -> Result<Sweeper<'a>> {
        let table = open_with(target, ctx.base, ctx.opts.apply, &ctx.opts.required_tags)
            .ok_or_else(|| anyhow::anyhow!("target type {} is not supported", target.type_name))?
            .with_context(|| format!("target {}", target.name))?;
        let subject = match ctx.job {
            Job::Erasure { subject, .. } => Some(subject.as_str()),
            Job::Retention => None,
        };
        let (created_at_format, expires_at_format) = formats(target);
        let failpoint = Failpoint::from_env();
        let audit_kill = failpoint.as_ref().is_some_and(|f| f.is("after_append"));
        let auditor = Auditor::start(state, audit_kill)?;
        let pending = state.pending_store()?;
        let roots = roots_for(target, ctx.base);
        let resolved = roots.resolved();
        let delay = match (target.delete_delay, subject) {
            (Some(after), None) => Some(Delay {
                after: after.as_secs(),
                now: ctx.now.unix_seconds(),
                earlier: crate::guard::scheduled(state, &target.name)?,
                waiting: Vec::new(),
                new: Vec::new(),
            }),
            _ => None,
        };
        Ok(Sweeper {
            delay,
            apply: ctx.opts.apply,
            stop: ctx.opts.stop.clone(),
            subject,
            judge: Judge {
                target,
                run_id: ctx.run_id,
                now: ctx.now,
                decided_at: ctx.now.to_rfc3339(),
                window_text: target.window.retention.to_string(),
                created_at_format,
                expires_at_format,
                erasure: subject.is_some(),
                protections: Protections::default(),
                subject_hashes: HashMap::new(),
                recovering: None,
                redacts: None,
                created_only: false,
                judged_before: None,
            },
            store: Store {
                table,
                roots,
                prune: kind_of(target).prunes_empty_dirs(target),
            },
            books: Books {
                state,
                auditor,
                pending,
                identity: crate::targets::identity(target, ctx.base),
                lease_renewed: Instant::now(),
                report: TargetReport {
                    target: target.name.clone(),
                    roots: resolved,
                    ..Default::default()
                },
                failpoint,
            },
        })
    }
}

/// The interrupted run that wrote ahead a deletion of this item (by its key as the target
/// names it) and has not recorded it, if any. Files go before rows, so a file the item
/// owned may already be gone.
pub fn deletion_begun(
    state: &mut State,
    target: &Target,
    base: &std::path::Path,
    key: &str,
) -> Result<Option<String>> {
    let identity = crate::targets::identity(target, base);
    let mut store = state.pending_store()?;
    for (id, run, payload, _) in store.list(&target.name, &identity)? {
        if state.batch_done(id)? {
            continue;
        }
        // A record that cannot be read may hold it: say so rather than nothing.
        let named = serde_json::from_str::<Vec<PendingItem>>(&payload)
            .map(|items| items.iter().any(|i| i.k.to_string() == key))
            .unwrap_or(true);
        if named {
            return Ok(Some(run));
        }
    }
    Ok(None)
}

/// How a target stores its instants, when its config says.
pub fn formats(target: &Target) -> (Option<TimeFormat>, Option<TimeFormat>) {
    kind_of(target).formats(target)
}

/// Items past expiry and items that cannot be judged, for `lethe check`. Reads only.
pub fn count_due(table: &mut dyn Connector, target: &Target, now: Timestamp) -> Result<Due> {
    let none = Protections::default();
    let (created_at_format, expires_at_format) = formats(target);
    let (mut due, mut bad) = (0u64, 0u64);
    let mut oldest: Option<(String, Timestamp)> = None;
    loop {
        let rows = table.candidates(now, DEFAULT_BATCH)?;
        let full = rows.len() >= DEFAULT_BATCH;
        for row in &rows {
            if row.problem.is_some() {
                bad += 1;
                continue;
            }
            let facts = row.facts(created_at_format.as_ref(), expires_at_format.as_ref());
            match expiry::decide(now, &target.window, &target.name, "", None, &facts, &none) {
                Verdict::Invalid { .. } => bad += 1,
                Verdict::Keep { .. } => {}
                Verdict::Expired { expires_at, .. } => {
                    due += 1;
                    if oldest.as_ref().is_none_or(|(_, e)| expires_at < *e)
                        && let Ok(k) = &row.key
                    {
                        oldest = Some((k.to_string(), expires_at));
                    }
                }
                _ => due += 1,
            }
        }
        if !full {
            break;
        }
    }
    bad += table.null_keys(now, None)?;
    Ok(Due {
        due,
        unreadable: bad,
        oldest,
    })
}

/// What [`count_due`] finds.
pub struct Due {
    /// Items past expiry now.
    pub due: u64,
    /// Items whose facts cannot be read.
    pub unreadable: u64,
    /// The item longest past its expiry, and that expiry.
    pub oldest: Option<(String, Timestamp)>,
}

/// What a read-only count of a target finds past expiry.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Census {
    /// Items past expiry and neither held nor excepted, by how long past: more than 0, 1
    /// and 7 days.
    pub past_expiry: [u64; 3],
    /// The expiry of the oldest of them.
    pub oldest_expiry: Option<String>,
    pub held: u64,
    pub excepted: u64,
    /// Items that cannot be judged (never deleted).
    pub unreadable: u64,
}

/// Judges every item the target lists now, as a sweep would with these protections (a
/// subject's holds by its keyed hash), and hands each readable one to `each` with its key
/// and verdict. Returns how many items could not be read (no key, or a problem): never
/// judged. Reads only.
pub fn judge_each(
    table: &mut dyn Connector,
    target: &Target,
    now: Timestamp,
    protections: &Protections,
    key: &AuditKey,
    mut each: impl FnMut(&Row, String, Verdict),
) -> Result<u64> {
    let (created_at_format, expires_at_format) = formats(target);
    let mut unreadable = 0u64;
    let mut hashes: HashMap<String, String> = HashMap::new();
    loop {
        let rows = table.candidates(now, DEFAULT_BATCH)?;
        let full = rows.len() >= DEFAULT_BATCH;
        for row in &rows {
            let (Ok(k), None) = (&row.key, &row.problem) else {
                unreadable += 1;
                continue;
            };
            let subject_hash = match &row.subject {
                Ok(Some(s)) => Some(
                    hashes
                        .entry(s.clone())
                        .or_insert_with(|| key.subject_hash(s))
                        .clone(),
                ),
                _ => None,
            };
            let facts = row.facts(created_at_format.as_ref(), expires_at_format.as_ref());
            let key_s = k.to_string();
            let verdict = expiry::decide(
                now,
                &target.window,
                &target.name,
                &key_s,
                subject_hash.as_deref(),
                &facts,
                protections,
            );
            each(row, key_s, verdict);
        }
        if hashes.len() > SUBJECT_HASHES_MAX {
            hashes.clear();
        }
        if !full {
            break;
        }
    }
    Ok(unreadable)
}

/// Counts what is past expiry in a target, judged as a sweep would (holds, exceptions),
/// without writing anything or taking any lock.
pub fn census(
    table: &mut dyn Connector,
    target: &Target,
    now: Timestamp,
    protections: &Protections,
    key: &AuditKey,
) -> Result<Census> {
    let mut c = Census::default();
    let mut oldest: Option<Timestamp> = None;
    let day = lethe_core::time::Duration::from_days(1).as_secs() * 1_000_000;
    let not_read = judge_each(
        table,
        target,
        now,
        protections,
        key,
        |_, _, verdict| match verdict {
            Verdict::Invalid { .. } => c.unreadable += 1,
            Verdict::Keep { .. } => {}
            Verdict::Held { .. } => c.held += 1,
            Verdict::Excepted { .. } => c.excepted += 1,
            Verdict::Expired { expires_at, .. } => {
                let past = now.as_micros() - expires_at.as_micros();
                c.past_expiry[0] += 1;
                if past > day {
                    c.past_expiry[1] += 1;
                }
                if past > 7 * day {
                    c.past_expiry[2] += 1;
                }
                if oldest.is_none_or(|o| expires_at < o) {
                    oldest = Some(expires_at);
                }
            }
        },
    )?;
    c.unreadable += not_read + table.null_keys(now, None)?;
    c.oldest_expiry = oldest.map(Timestamp::to_rfc3339);
    Ok(c)
}
