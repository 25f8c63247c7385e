//! `audit reconcile`: the stores checked against the trail, read-only. Two questions, per
//! target:
//!
//! 1. Is every item the trail records deleted absent from the store? Each is looked up by
//!    key (a row, a file, a HEAD, a vendor GET). An item present again whose own creation is
//!    after the deletion is a new item under the same key, not a mismatch; one created
//!    before it, or whose creation cannot be read, is a mismatch: "recorded deleted, present".
//! 2. Is every item now past its expiry, neither held nor excepted, known to the trail? It
//!    is when the trail has an entry about it (would-delete, held, excepted, failed, in use).
//!    Otherwise a sweep passed it over in silence: a mismatch. An item no whole sweep of the
//!    target (one neither interrupted nor stopped by an error) has passed since it expired
//!    cannot be checked yet: it is counted apart (`due_unswept`), neither matched nor
//!    checked, so that a large unswept backlog cannot dilute the mismatches.
//!
//! The success rate is matched ÷ checked over both. Nothing is written or locked.

use std::collections::{BTreeMap, HashSet};

use lethe_core::audit::Action;
use lethe_core::config::Target;
use lethe_core::expiry::{self, Verdict, read_instant};
use lethe_core::time::Timestamp;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::engine::formats;
use crate::error::{Error, Result};
use crate::ops::common::open_state;
use crate::registry;
use crate::settings::Loaded;
use crate::state::{Access, Filter, State};
use crate::targets::{Connector, Key, Lookup};
use crate::util::now;

/// Keys looked up per request to the store.
const LOOKUP_CHUNK: usize = 500;

#[derive(Clone, Debug, Default)]
pub struct ReconcileRequest {
    /// Only this target.
    pub target: Option<String>,
    /// Check at most this many recorded deletions per target, a uniform sample (by a hash of
    /// the key); all of them when `None`.
    pub sample: Option<usize>,
}

/// One item the store and the trail disagree on.
#[derive(Clone, Debug, Serialize)]
pub struct Mismatch {
    pub target: String,
    pub key: String,
    pub what: String,
}

/// One target's reconciliation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TargetReconcile {
    pub target: String,
    /// Recorded deletions looked up, and those the store confirms absent.
    pub deleted_checked: u64,
    pub deleted_absent: u64,
    /// Present again but created after their deletion: new items under an old key.
    pub recreated: u64,
    /// Items past expiry now (neither held nor excepted) that a whole sweep has passed
    /// since they expired, and those the trail knows.
    pub due_checked: u64,
    pub due_known: u64,
    /// Items past expiry now that no whole sweep has passed since they expired: nothing
    /// to check them against yet; neither matched nor mismatched.
    pub due_unswept: u64,
    /// Lookups the store could not answer: neither matched nor mismatched.
    pub unanswered: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Reconciliation {
    pub at: String,
    pub targets: Vec<TargetReconcile>,
    pub mismatches: Vec<Mismatch>,
    /// Items checked (recorded deletions and items past expiry), and those that matched.
    pub checked: u64,
    pub matched: u64,
    /// matched ÷ checked (1 when nothing was checked).
    pub success_rate: f64,
    /// Everything checked matched, and every target and lookup was answered.
    pub clean: bool,
}

impl Reconciliation {
    /// Whether everything checked matched, and every target and lookup was answered.
    pub fn is_clean(&self) -> bool {
        self.mismatches.is_empty()
            && self
                .targets
                .iter()
                .all(|t| t.error.is_none() && t.unanswered == 0)
    }
}

/// A key's fingerprint: the first 16 bytes of its SHA-256, which orders the sample.
type Print = u128;

fn print(key: &str) -> Print {
    let d = Sha256::digest(key.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    Print::from_be_bytes(b)
}

/// A key's short fingerprint, for the sets [`Recorded`] keeps: some 9 bytes per item the
/// trail names, not the keys. A key found in a set is then read back from the trail by its
/// own index ([`key_history`]), so a fingerprint two keys share never decides anything.
fn short(key: &str) -> u64 {
    (print(key) >> 64) as u64
}

/// What the trail says about one target.
#[derive(Default)]
struct Recorded {
    /// Keys with a deletion recorded.
    deleted: HashSet<u64>,
    /// Keys with an entry other than a deletion (may be before a later deletion: only a
    /// filter; [`key_history`] tells).
    mentioned: HashSet<u64>,
    /// When the target's last whole sweep finished.
    last_swept: Option<Timestamp>,
    /// The recorded deletions to look up, by fingerprint, each with its latest deletion:
    /// every one, or a uniform sample of `n` (those whose fingerprint is smallest), kept
    /// to `n` as the trail is read.
    to_check: BTreeMap<Print, (String, Timestamp)>,
}

fn recorded(state: &mut State, target: &Target, sample: Option<usize>) -> Result<Recorded> {
    let mut r = Recorded::default();
    let window = target.window.retention.to_string();
    state.entries(
        &Filter {
            target: Some(target.name.clone()),
            ..Filter::default()
        },
        |e| {
            let at = Timestamp::parse(&e.body.decided_at).ok();
            match e.body.action {
                Action::Deleted => {
                    if let Some(at) = at {
                        r.deleted.insert(short(&e.body.item_key));
                        let p = print(&e.body.item_key);
                        if let Some(seen) = r.to_check.get_mut(&p) {
                            seen.1 = at;
                        } else if sample.is_none_or(|n| {
                            r.to_check.len() < n
                                || r.to_check.last_key_value().is_some_and(|(max, _)| p < *max)
                        }) {
                            r.to_check.insert(p, (e.body.item_key.clone(), at));
                            if sample.is_some_and(|n| r.to_check.len() > n) {
                                r.to_check.pop_last();
                            }
                        }
                    }
                }
                // Only a retention sweep that went through the whole target, under the
                // window the target has now, judged every item as it would be judged now:
                // not an erasure (it reads one subject's items), not one interrupted or
                // stopped on an error, not one under another window.
                Action::SweepFinished
                    if e.body.reason == "retention"
                        && e.body.window == window
                        && !e.body.detail.contains(" error=")
                        && !e.body.detail.contains(" interrupted=true") =>
                {
                    r.last_swept = at.or(r.last_swept);
                }
                a if mentions(a) => {
                    r.mentioned.insert(short(&e.body.item_key));
                }
                _ => {}
            }
            Ok(())
        },
    )?;
    Ok(r)
}

/// Entries that show the trail knew of an item past expiry that it did not delete.
fn mentions(a: Action) -> bool {
    matches!(
        a,
        Action::WouldDelete
            | Action::Held
            | Action::Excepted
            | Action::Failed
            | Action::InUse
            | Action::Scheduled
            | Action::Redacted
            | Action::WouldRedact
    )
}

/// What the trail says about one key, read by its index: its latest deletion, and whether
/// an entry that [`mentions`] it came after that (or ever, if never deleted).
fn key_history(state: &mut State, target: &str, key: &str) -> Result<(Option<Timestamp>, bool)> {
    let (mut deleted, mut mentioned) = (None, false);
    state.entries(
        &Filter {
            target: Some(target.to_string()),
            key: Some(key.to_string()),
            ..Filter::default()
        },
        |e| {
            if e.body.action == Action::Deleted {
                if let Ok(at) = Timestamp::parse(&e.body.decided_at) {
                    deleted = Some(at);
                    mentioned = false;
                }
            } else if mentions(e.body.action) {
                mentioned = true;
            }
            Ok(())
        },
    )?;
    Ok((deleted, mentioned))
}

/// The recorded deletions to look up, with when each was deleted, in key order.
fn to_look_up(rec: &Recorded) -> Vec<(String, Timestamp)> {
    let mut keys: Vec<(String, Timestamp)> = rec.to_check.values().cloned().collect();
    keys.sort();
    keys
}

/// Reconciles every target (or the one asked for) against the trail.
pub fn reconcile(loaded: &Loaded, req: &ReconcileRequest) -> Result<Reconciliation> {
    if req.sample == Some(0) {
        return Err(Error::usage(
            "--sample 0 would check nothing; give at least 1, or leave it out to check every recorded deletion",
        ));
    }
    let targets: Vec<&Target> = match &req.target {
        Some(name) => vec![loaded.config.target(name).ok_or_else(|| {
            Error::usage(format!(
                "no target named {name} in {}",
                loaded.path.display()
            ))
        })?],
        None => loaded.config.targets.iter().collect(),
    };
    let now = now();
    let mut state = open_state(loaded, Access::Read)?;
    let protections = registry::protections_unchecked(&mut state, now)?;
    let mut out = Vec::new();
    let mut mismatches = Vec::new();
    for t in targets {
        let mut tr = TargetReconcile {
            target: t.name.clone(),
            ..TargetReconcile::default()
        };
        let done = recorded(&mut state, t, req.sample).and_then(|rec| {
            let mut table = match loaded.open(t, false) {
                None => {
                    return Err(anyhow::anyhow!(
                        "target type {} is not supported by this build yet",
                        t.type_name
                    )
                    .into());
                }
                Some(opened) => opened?,
            };
            check_deleted(
                table.as_mut(),
                t,
                to_look_up(&rec),
                &mut tr,
                &mut mismatches,
            )?;
            check_due(
                table.as_mut(),
                t,
                now,
                &protections,
                &mut state,
                &rec,
                &mut tr,
                &mut mismatches,
            )?;
            Ok(())
        });
        if let Err(e) = done {
            tr.error = Some(format!("{e:#}"));
        }
        out.push(tr);
    }
    let checked: u64 = out.iter().map(|t| t.deleted_checked + t.due_checked).sum();
    let matched: u64 = out
        .iter()
        .map(|t| t.deleted_absent + t.recreated + t.due_known)
        .sum();
    let mut r = Reconciliation {
        at: now.to_rfc3339(),
        targets: out,
        mismatches,
        checked,
        matched,
        success_rate: if checked == 0 {
            1.0
        } else {
            matched as f64 / checked as f64
        },
        clean: false,
    };
    r.clean = r.is_clean();
    Ok(r)
}

/// Every way a key written in the trail may be stored: a plain key as an integer and as
/// text, and a composite key (a JSON array) with each part either way.
fn all_readings(k: &str) -> Vec<Key> {
    match Key::readings(k).as_slice() {
        [Key::Composite(parts)] => {
            let mut combos: Vec<Vec<Key>> = vec![Vec::new()];
            for p in parts {
                let options = Key::readings(&p.to_string());
                combos = combos
                    .into_iter()
                    .flat_map(|c| {
                        options.iter().map(move |o| {
                            let mut c = c.clone();
                            c.push(o.clone());
                            c
                        })
                    })
                    .collect();
            }
            combos.into_iter().map(Key::from_parts).collect()
        }
        other => other.to_vec(),
    }
}

/// Looks every recorded deletion up: gone, recreated since, or a mismatch.
fn check_deleted(
    table: &mut dyn Connector,
    t: &Target,
    deleted: Vec<(String, Timestamp)>,
    tr: &mut TargetReconcile,
    mismatches: &mut Vec<Mismatch>,
) -> Result<()> {
    let (created_at_format, _) = formats(t);
    for chunk in deleted.chunks(LOOKUP_CHUNK) {
        // A key as written in the trail may be stored as an integer or as text (each part
        // of a composite key too): every reading is asked, and only a row whose own key
        // reads back exactly as the trail's is the item.
        let readings: Vec<Vec<Key>> = chunk.iter().map(|(k, _)| all_readings(k)).collect();
        let keys: Vec<Key> = readings.iter().flatten().cloned().collect();
        let answers = crate::targets::answers("lookup", &keys, table.lookup(&keys)?)?;
        let mut answers = answers.into_iter();
        for ((key, deleted_at), ks) in chunk.iter().zip(&readings) {
            tr.deleted_checked += 1;
            let mut found = None;
            let mut unknown = false;
            for l in answers.by_ref().take(ks.len()) {
                match l {
                    Lookup::Found(row) if row.key.as_ref().is_ok_and(|k| k.to_string() == *key) => {
                        found = Some(row);
                    }
                    Lookup::Found(_) | Lookup::Gone => {}
                    Lookup::Unknown(_) => unknown = true,
                }
            }
            let l = match (found, unknown) {
                (Some(row), _) => Lookup::Found(row),
                (None, true) => Lookup::Unknown(String::new()),
                (None, false) => Lookup::Gone,
            };
            match l {
                Lookup::Gone => tr.deleted_absent += 1,
                Lookup::Unknown(_) => tr.unanswered += 1,
                Lookup::Found(row) => {
                    let created = read_instant(row.created_at.raw(), created_at_format.as_ref());
                    match created {
                        Ok(Some(c)) if c > *deleted_at => tr.recreated += 1,
                        _ => mismatches.push(Mismatch {
                            target: t.name.clone(),
                            key: key.clone(),
                            what: format!(
                                "recorded deleted at {}, but present in the store{}",
                                deleted_at.to_rfc3339(),
                                match created {
                                    Ok(Some(c)) => format!(" (created {})", c.to_rfc3339()),
                                    _ => String::new(),
                                }
                            ),
                        }),
                    }
                }
            }
        }
    }
    Ok(())
}

/// Judges what the store holds now: each item past expiry (neither held nor excepted) must
/// be known to the trail, or not yet swept since it expired.
#[allow(clippy::too_many_arguments)]
fn check_due(
    table: &mut dyn Connector,
    t: &Target,
    now: Timestamp,
    protections: &expiry::Protections,
    state: &mut State,
    rec: &Recorded,
    tr: &mut TargetReconcile,
    mismatches: &mut Vec<Mismatch>,
) -> Result<()> {
    let (created_at_format, _) = formats(t);
    let key = state.key.clone();
    let mut failed: Option<crate::error::Error> = None;
    crate::engine::judge_each(table, t, now, protections, &key, |row, key_s, verdict| {
        let Verdict::Expired { expires_at, .. } = verdict else {
            return;
        };
        if failed.is_some() {
            return;
        }
        let p = short(&key_s);
        let (deleted_at, mentioned) = if rec.deleted.contains(&p) || rec.mentioned.contains(&p) {
            match key_history(state, &t.name, &key_s) {
                Ok(h) => h,
                Err(e) => {
                    failed = Some(e);
                    return;
                }
            }
        } else {
            (None, false)
        };
        // Under a key the trail records deleted: the item itself present again is the
        // first question's; a new item created since is judged like any other, by what
        // the trail says after the deletion.
        if let Some(at) = deleted_at {
            let created = read_instant(row.created_at.raw(), created_at_format.as_ref());
            if !matches!(created, Ok(Some(c)) if c > at) {
                return;
            }
        }
        if rec.last_swept.is_none_or(|s| s < expires_at) {
            tr.due_unswept += 1;
            return;
        }
        tr.due_checked += 1;
        if mentioned {
            tr.due_known += 1;
        } else {
            mismatches.push(Mismatch {
                target: t.name.clone(),
                key: key_s,
                what: format!(
                    "past its expiry ({}) and present, yet the trail has no entry about it though the target was swept since ({})",
                    expires_at.to_rfc3339(),
                    rec.last_swept.map(Timestamp::to_rfc3339).unwrap_or_default()
                ),
            });
        }
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
