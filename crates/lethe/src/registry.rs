//! Legal holds, the exception register and data-subject requests: records in the state, each
//! change written together with its audit entry in one transaction.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use lethe_core::audit::{Action, Body, Entry};
use lethe_core::expiry::{Exception, Hold, HoldScope, Protections};
use lethe_core::time::Timestamp;
use serde::Serialize;

use crate::state::{State, TrailBroken, new_id};
use crate::util::UsageError;
use crate::vals;

/// Who is acting: `--by`, else the OS user.
pub fn actor(by: Option<&str>) -> String {
    if let Some(b) = by.filter(|b| !b.trim().is_empty()) {
        return b.trim().to_string();
    }
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", rustix::process::getuid().as_raw()))
}

fn event(now: Timestamp, action: Action, run_id: &str) -> Body {
    Body {
        decided_at: now.to_rfc3339(),
        run_id: run_id.to_string(),
        action,
        target: String::new(),
        item_key: String::new(),
        category: String::new(),
        reason: String::new(),
        window: String::new(),
        expires_at: None,
        subject_hash: None,
        detail: String::new(),
    }
}

#[derive(Debug, Serialize)]
pub struct HoldRecord {
    pub id: String,
    pub scope: String,
    pub target: Option<String>,
    pub item_key: Option<String>,
    pub subject_hash: Option<String>,
    pub case_id: String,
    pub reason: String,
    pub placed_by: String,
    pub placed_at: String,
    pub released_at: Option<String>,
    pub released_by: Option<String>,
    pub release_reason: Option<String>,
}

pub struct NewHold<'a> {
    pub target: Option<&'a str>,
    pub key: Option<&'a str>,
    pub subject_hash: Option<String>,
    pub case_id: &'a str,
    pub reason: &'a str,
    pub by: String,
}

/// Places a hold. `confirm` runs inside the state's write transaction, the one a sweep holds
/// from its last look at the holds until its deletions commit: an item confirmed there is
/// either still there once the hold is recorded, or was deleted before and the hold refused.
pub fn place_hold(
    state: &mut State,
    h: NewHold<'_>,
    now: Timestamp,
    confirm: impl FnOnce() -> Result<()>,
) -> Result<String> {
    let id = new_id("hold")?;
    let scope = match (&h.subject_hash, h.target, h.key) {
        (Some(_), None, None) => "subject",
        (None, Some(_), Some(_)) => "item",
        (None, Some(_), None) => "target",
        _ => {
            return Err(UsageError(
                "a hold is on --subject ID, on --target NAME --key KEY, or on --target NAME".into(),
            )
            .into());
        }
    };
    let mut body = event(now, Action::HoldPlaced, &id);
    body.target = h.target.unwrap_or_default().to_string();
    body.item_key = h.key.unwrap_or_default().to_string();
    body.subject_hash = h.subject_hash.clone();
    body.reason = "legal_hold".into();
    body.detail = format!(
        "hold {id} on {scope}; case {}: {}; placed by {}",
        h.case_id, h.reason, h.by
    );
    let placed_at = now.to_rfc3339();
    state.append_with(vec![body], |tx| {
        confirm()?;
        tx.execute(
            "INSERT INTO holds (id, scope, target, item_key, subject_hash, case_id, reason, placed_by, placed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            &vals![&id, scope, h.target, h.key, &h.subject_hash, h.case_id, h.reason, &h.by, &placed_at],
        )?;
        Ok(())
    })?;
    Ok(id)
}

pub fn release_hold(
    state: &mut State,
    id: &str,
    reason: &str,
    by: String,
    now: Timestamp,
) -> Result<()> {
    let cur = holds(state)?
        .into_iter()
        .find(|h| h.id == id)
        .ok_or_else(|| UsageError(format!("no hold {id} (see `lethe hold list`)")))?;
    if cur.released_at.is_some() {
        return Err(UsageError(format!("hold {id} was already released")).into());
    }
    let mut body = event(now, Action::HoldReleased, id);
    body.target = cur.target.clone().unwrap_or_default();
    body.item_key = cur.item_key.clone().unwrap_or_default();
    body.subject_hash = cur.subject_hash.clone();
    body.reason = "legal_hold".into();
    body.detail = format!(
        "hold {id} (case {}) released by {by}: {reason}",
        cur.case_id
    );
    let at = now.to_rfc3339();
    state.append_with(vec![body], |tx| {
        let n = tx.execute(
            "UPDATE holds SET released_at = ?1, released_by = ?2, release_reason = ?3 WHERE id = ?4 AND released_at IS NULL",
            &vals![at, by, reason, id],
        )?;
        if n != 1 {
            return Err(anyhow!("hold {id} was released by someone else meanwhile"));
        }
        Ok(())
    })
}

pub fn holds(state: &mut State) -> Result<Vec<HoldRecord>> {
    let rows = state.db().query(
        "SELECT id, scope, target, item_key, subject_hash, case_id, reason, placed_by, placed_at, released_at, released_by, release_reason FROM holds ORDER BY placed_at, id",
        &[],
    )?;
    Ok(rows
        .into_iter()
        .map(|r| HoldRecord {
            id: r.text(0),
            scope: r.text(1),
            target: r.opt_text(2),
            item_key: r.opt_text(3),
            subject_hash: r.opt_text(4),
            case_id: r.text(5),
            reason: r.text(6),
            placed_by: r.text(7),
            placed_at: r.text(8),
            released_at: r.opt_text(9),
            released_by: r.opt_text(10),
            release_reason: r.opt_text(11),
        })
        .collect())
}

#[derive(Debug, Serialize)]
pub struct ExceptionRecord {
    pub id: String,
    pub target: String,
    pub item_key: String,
    pub until: String,
    #[serde(skip)]
    pub until_micros: i64,
    pub item_expires_at: String,
    pub owner: String,
    pub reason: String,
    pub granted_by: String,
    pub granted_at: String,
    pub renewal: u32,
    pub superseded_by: Option<String>,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
    /// active, lapsed, revoked or superseded, as of the command's clock.
    pub status: String,
}

pub fn exceptions(state: &mut State, now: Timestamp) -> Result<Vec<ExceptionRecord>> {
    let rows = state.db().query(
        "SELECT id, target, item_key, until, until_micros, item_expires_at, owner, reason, granted_by, granted_at, renewal, superseded_by, revoked_at, revoked_by, revoke_reason FROM exceptions ORDER BY granted_at, id",
        &[],
    )?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let until_micros = r.int(4);
            let superseded_by = r.opt_text(11);
            let revoked_at = r.opt_text(12);
            let status = if revoked_at.is_some() {
                "revoked"
            } else if superseded_by.is_some() {
                "superseded"
            } else if until_micros <= now.as_micros() {
                "lapsed"
            } else {
                "active"
            };
            ExceptionRecord {
                id: r.text(0),
                target: r.text(1),
                item_key: r.text(2),
                until: r.text(3),
                until_micros,
                item_expires_at: r.text(5),
                owner: r.text(6),
                reason: r.text(7),
                granted_by: r.text(8),
                granted_at: r.text(9),
                renewal: r.int(10) as u32,
                superseded_by,
                revoked_at,
                revoked_by: r.opt_text(13),
                revoke_reason: r.opt_text(14),
                status: status.into(),
            }
        })
        .collect())
}

pub struct NewException<'a> {
    pub target: &'a str,
    pub category: &'a str,
    pub key: &'a str,
    pub until: Timestamp,
    pub item_expires_at: Timestamp,
    pub owner: &'a str,
    pub reason: &'a str,
    pub by: String,
}

/// Grants an exception, or renews the item's current one, within the configured bounds:
/// `until` at most `max_extension` past the item's own expiry, and at most `max_renewals`
/// renewals per item. Anything past a bound is refused (exit 2) with the bound named.
pub fn grant_exception(
    state: &mut State,
    e: NewException<'_>,
    max_extension: lethe_core::time::Duration,
    max_renewals: u32,
    now: Timestamp,
) -> Result<String> {
    if e.until <= now {
        return Err(UsageError(format!("--until {} is not in the future", e.until)).into());
    }
    let limit = e
        .item_expires_at
        .checked_add(max_extension)
        .ok_or_else(|| anyhow!("expiry out of range"))?;
    if e.until > limit {
        return Err(UsageError(format!(
            "refused: --until {} is more than [exceptions] max_extension ({max_extension}) past the item's own expiry {}; the latest allowed is {limit}",
            e.until, e.item_expires_at
        ))
        .into());
    }
    let previous: Vec<ExceptionRecord> = exceptions(state, now)?
        .into_iter()
        .filter(|x| x.target == e.target && x.item_key == e.key)
        .collect();
    let renewal = previous.len() as u32;
    if renewal > max_renewals {
        return Err(UsageError(format!(
            "refused: item {} of {} already had {} exception(s); [exceptions] max_renewals = {max_renewals}",
            e.key,
            e.target,
            previous.len()
        ))
        .into());
    }
    let id = new_id("exc")?;
    let current = previous
        .iter()
        .find(|x| x.superseded_by.is_none() && x.revoked_at.is_none())
        .map(|x| x.id.clone());
    let action = if renewal == 0 {
        Action::ExceptionGranted
    } else {
        Action::ExceptionRenewed
    };
    let mut body = event(now, action, &id);
    body.target = e.target.to_string();
    body.item_key = e.key.to_string();
    body.category = e.category.to_string();
    body.reason = "exception".into();
    body.expires_at = Some(e.item_expires_at.to_rfc3339());
    body.window = format!("until {}", e.until);
    body.detail = format!(
        "exception {id} until {}; owner {}; granted by {}: {}{}",
        e.until,
        e.owner,
        e.by,
        e.reason,
        current
            .as_ref()
            .map(|c| format!("; renews {c} (renewal {renewal} of {max_renewals})"))
            .unwrap_or_default()
    );
    state.append_with(vec![body], |tx| {
        tx.execute(
            "INSERT INTO exceptions (id, target, item_key, until, until_micros, item_expires_at, owner, reason, granted_by, granted_at, renewal) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            &vals![
                &id,
                e.target,
                e.key,
                e.until.to_rfc3339(),
                e.until.as_micros(),
                e.item_expires_at.to_rfc3339(),
                e.owner,
                e.reason,
                &e.by,
                now.to_rfc3339(),
                renewal
            ],
        )?;
        if let Some(c) = &current {
            tx.execute("UPDATE exceptions SET superseded_by = ?1 WHERE id = ?2", &vals![&id, c])?;
        }
        Ok(())
    })?;
    Ok(id)
}

pub fn revoke_exception(
    state: &mut State,
    id: &str,
    reason: &str,
    by: String,
    now: Timestamp,
) -> Result<()> {
    let cur = exceptions(state, now)?
        .into_iter()
        .find(|x| x.id == id)
        .ok_or_else(|| UsageError(format!("no exception {id} (see `lethe exception list`)")))?;
    if cur.status != "active" {
        return Err(UsageError(format!("exception {id} is {}, not active", cur.status)).into());
    }
    let mut body = event(now, Action::ExceptionRevoked, id);
    body.target = cur.target.clone();
    body.item_key = cur.item_key.clone();
    body.reason = "exception".into();
    body.detail = format!("exception {id} revoked by {by}: {reason}");
    let at = now.to_rfc3339();
    state.append_with(vec![body], |tx| {
        tx.execute(
            "UPDATE exceptions SET revoked_at = ?1, revoked_by = ?2, revoke_reason = ?3 WHERE id = ?4",
            &vals![at, by, reason, id],
        )?;
        Ok(())
    })
}

/// A hold as the trail records it.
#[derive(Debug, PartialEq, Eq)]
struct ChainHold {
    scope: &'static str,
    target: Option<String>,
    item_key: Option<String>,
    subject_hash: Option<String>,
    released: bool,
}

/// An exception as the trail records it.
#[derive(Debug, PartialEq, Eq)]
struct ChainException {
    target: String,
    item_key: String,
    until: String,
    revoked: bool,
    superseded: bool,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Holds and exceptions, by id, as the trail's entries record them.
fn from_trail(
    entries: &[Entry],
) -> (
    BTreeMap<String, ChainHold>,
    BTreeMap<String, ChainException>,
) {
    let mut holds = BTreeMap::new();
    let mut excs: BTreeMap<String, ChainException> = BTreeMap::new();
    for e in entries {
        let b = &e.body;
        match b.action {
            Action::HoldPlaced => {
                let scope = if b.subject_hash.is_some() {
                    "subject"
                } else if !b.item_key.is_empty() {
                    "item"
                } else {
                    "target"
                };
                holds.insert(
                    b.run_id.clone(),
                    ChainHold {
                        scope,
                        target: non_empty(&b.target),
                        item_key: non_empty(&b.item_key),
                        subject_hash: b.subject_hash.clone(),
                        released: false,
                    },
                );
            }
            Action::HoldReleased => {
                if let Some(h) = holds.get_mut(&b.run_id) {
                    h.released = true;
                }
            }
            Action::ExceptionGranted | Action::ExceptionRenewed => {
                // A new exception supersedes the item's current one, as `grant_exception` does.
                if let Some(cur) = excs.values_mut().find(|x| {
                    x.target == b.target && x.item_key == b.item_key && !x.superseded && !x.revoked
                }) {
                    cur.superseded = true;
                }
                excs.insert(
                    b.run_id.clone(),
                    ChainException {
                        target: b.target.clone(),
                        item_key: b.item_key.clone(),
                        until: b
                            .window
                            .strip_prefix("until ")
                            .unwrap_or_default()
                            .to_string(),
                        revoked: false,
                        superseded: false,
                    },
                );
            }
            Action::ExceptionRevoked => {
                if let Some(x) = excs.get_mut(&b.run_id) {
                    x.revoked = true;
                }
            }
            _ => {}
        }
    }
    (holds, excs)
}

/// Makes the holds and exceptions tables say what the trail says (the repair's part for
/// them), in the caller's transaction: a hold or exception the trail records is put back
/// (or its release, revocation or renewal), and one the trail never recorded is released
/// or revoked. Returns what was changed, for the repair record.
pub fn restore_from_trail(db: &mut crate::db::Db, entries: &[Entry]) -> Result<Vec<String>> {
    let mut changed = Vec::new();
    let mut placed: BTreeMap<&str, &Entry> = BTreeMap::new();
    let mut released: BTreeMap<&str, &Entry> = BTreeMap::new();
    let mut granted: Vec<&Entry> = Vec::new();
    let mut revoked: BTreeMap<&str, &Entry> = BTreeMap::new();
    for e in entries {
        match e.body.action {
            Action::HoldPlaced => {
                placed.insert(&e.body.run_id, e);
            }
            Action::HoldReleased => {
                released.insert(&e.body.run_id, e);
            }
            Action::ExceptionGranted | Action::ExceptionRenewed => granted.push(e),
            Action::ExceptionRevoked => {
                revoked.insert(&e.body.run_id, e);
            }
            _ => {}
        }
    }
    let (chain_holds, chain_excs) = from_trail(entries);
    let table: Vec<(String, Option<String>)> = db
        .query("SELECT id, released_at FROM holds", &[])?
        .into_iter()
        .map(|r| (r.text(0), r.opt_text(1)))
        .collect();
    let restored = "(restored from the trail by audit repair)";
    for (id, h) in &chain_holds {
        let Some(p) = placed.get(id.as_str()) else {
            continue;
        };
        let rel = released.get(id.as_str());
        let n = db.execute(
            "UPDATE holds SET scope = ?2, target = ?3, item_key = ?4, subject_hash = ?5, released_at = ?6, released_by = ?7, release_reason = ?8
             WHERE id = ?1 AND NOT (scope = ?2 AND target IS NOT DISTINCT FROM ?3 AND item_key IS NOT DISTINCT FROM ?4 AND subject_hash IS NOT DISTINCT FROM ?5 AND (released_at IS NULL) = ?9)",
            &vals![
                id,
                h.scope,
                &h.target,
                &h.item_key,
                &h.subject_hash,
                rel.map(|r| r.body.decided_at.clone()),
                rel.map(|_| restored),
                rel.map(|_| restored),
                !h.released
            ],
        )?;
        if n > 0 {
            changed.push(format!("hold {id}: set back to what the trail records"));
        }
        if !table.iter().any(|(t, _)| t == id) {
            db.execute(
                "INSERT INTO holds (id, scope, target, item_key, subject_hash, case_id, reason, placed_by, placed_at, released_at, released_by, release_reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                &vals![
                    id,
                    h.scope,
                    &h.target,
                    &h.item_key,
                    &h.subject_hash,
                    restored,
                    &p.body.detail,
                    restored,
                    &p.body.decided_at,
                    rel.map(|r| r.body.decided_at.clone()),
                    rel.map(|_| restored),
                    rel.map(|_| restored)
                ],
            )?;
            changed.push(format!("hold {id}: put back from entry {}", p.seq));
        }
    }
    let at = crate::util::now().to_rfc3339();
    for (id, rel) in &table {
        if !chain_holds.contains_key(id) && rel.is_none() {
            db.execute(
                "UPDATE holds SET released_at = ?2, released_by = 'lethe audit repair', release_reason = 'never recorded in the trail' WHERE id = ?1",
                &vals![id, &at],
            )?;
            changed.push(format!("hold {id}: never recorded in the trail, released"));
        }
    }
    let table_x: Vec<String> = db
        .query("SELECT id FROM exceptions", &[])?
        .into_iter()
        .map(|r| r.text(0))
        .collect();
    for (renewal, g) in granted.iter().enumerate() {
        let id = g.body.run_id.as_str();
        let Some(x) = chain_excs.get(id) else {
            continue;
        };
        let superseded_by = granted
            .iter()
            .skip(renewal + 1)
            .find(|n| n.body.target == x.target && n.body.item_key == x.item_key)
            .filter(|_| x.superseded)
            .map(|n| n.body.run_id.clone());
        let rev = revoked.get(id);
        let until_micros = Timestamp::parse(&x.until)
            .map(|t| t.as_micros())
            .unwrap_or(0);
        if table_x.iter().any(|t| t == id) {
            let n = db.execute(
                "UPDATE exceptions SET target = ?2, item_key = ?3, until = ?4, until_micros = ?5, superseded_by = ?6, revoked_at = ?7
                 WHERE id = ?1 AND NOT (target = ?2 AND item_key = ?3 AND until = ?4 AND (superseded_by IS NULL) = ?8 AND (revoked_at IS NULL) = ?9)",
                &vals![
                    id,
                    &x.target,
                    &x.item_key,
                    &x.until,
                    until_micros,
                    &superseded_by,
                    rev.map(|r| r.body.decided_at.clone()),
                    superseded_by.is_none(),
                    rev.is_none()
                ],
            )?;
            if n > 0 {
                changed.push(format!(
                    "exception {id}: set back to what the trail records"
                ));
            }
        } else {
            db.execute(
                "INSERT INTO exceptions (id, target, item_key, until, until_micros, item_expires_at, owner, reason, granted_by, granted_at, renewal, superseded_by, revoked_at, revoked_by, revoke_reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                &vals![
                    id,
                    &x.target,
                    &x.item_key,
                    &x.until,
                    until_micros,
                    g.body.expires_at.clone().unwrap_or_default(),
                    restored,
                    &g.body.detail,
                    restored,
                    &g.body.decided_at,
                    0i64,
                    &superseded_by,
                    rev.map(|r| r.body.decided_at.clone()),
                    rev.map(|_| restored),
                    rev.map(|_| restored)
                ],
            )?;
            changed.push(format!("exception {id}: put back from entry {}", g.seq));
        }
    }
    for id in &table_x {
        if !chain_excs.contains_key(id) {
            let n = db.execute(
                "UPDATE exceptions SET revoked_at = ?2, revoked_by = 'lethe audit repair', revoke_reason = 'never recorded in the trail' WHERE id = ?1 AND revoked_at IS NULL",
                &vals![id, &at],
            )?;
            if n > 0 {
                changed.push(format!(
                    "exception {id}: never recorded in the trail, revoked"
                ));
            }
        }
    }
    Ok(changed)
}

/// Where the holds and exceptions tables disagree with the trail's entries about them
/// (`entries`: the trail's protection entries, in order). Empty when they agree.
pub fn disagreements(state: &mut State, entries: &[Entry]) -> Result<Vec<String>> {
    let table_holds = holds(state)?;
    let table_excs = exceptions(state, Timestamp::from_micros(0))?;
    Ok(disagreements_with(entries, &table_holds, &table_excs))
}

fn disagreements_with(
    entries: &[Entry],
    table_holds: &[HoldRecord],
    table_excs: &[ExceptionRecord],
) -> Vec<String> {
    let (chain_holds, chain_excs) = from_trail(entries);
    let mut out = Vec::new();
    for h in table_holds {
        let row = ChainHold {
            scope: match h.scope.as_str() {
                "subject" => "subject",
                "item" => "item",
                _ => "target",
            },
            target: h.target.clone(),
            item_key: h.item_key.clone(),
            subject_hash: h.subject_hash.clone(),
            released: h.released_at.is_some(),
        };
        match chain_holds.get(&h.id) {
            None => out.push(format!(
                "hold {} is in the holds table but was never recorded in the trail",
                h.id
            )),
            Some(c) if c.released != row.released => out.push(format!(
                "hold {} is {} in the holds table but {} in the trail",
                h.id,
                if row.released { "released" } else { "in force" },
                if c.released { "released" } else { "in force" },
            )),
            Some(c) if *c != row => out.push(format!(
                "hold {} covers something else in the holds table than in the trail",
                h.id
            )),
            Some(_) => {}
        }
    }
    for id in chain_holds.keys() {
        if !table_holds.iter().any(|h| &h.id == id) {
            out.push(format!(
                "hold {id} is recorded in the trail but missing from the holds table"
            ));
        }
    }
    for x in table_excs {
        let row = ChainException {
            target: x.target.clone(),
            item_key: x.item_key.clone(),
            until: x.until.clone(),
            revoked: x.revoked_at.is_some(),
            superseded: x.superseded_by.is_some(),
        };
        match chain_excs.get(&x.id) {
            None => out.push(format!(
                "exception {} is in the exceptions table but was never recorded in the trail",
                x.id
            )),
            Some(c) if *c != row => out.push(format!(
                "exception {} differs between the exceptions table and the trail (item, until, revoked or renewed)",
                x.id
            )),
            Some(_) => {}
        }
    }
    for id in chain_excs.keys() {
        if !table_excs.iter().any(|x| &x.id == id) {
            out.push(format!(
                "exception {id} is recorded in the trail but missing from the exceptions table"
            ));
        }
    }
    out
}

/// Active holds and live exceptions, as the decision takes them: from the tables, after
/// checking them against the trail (whose hold and exception entries are checked against
/// the seal): a hold released by editing a table, or an entry removed, stops the run.
pub fn protections(state: &mut State, now: Timestamp) -> Result<Protections> {
    let entries = state.protection_entries()?;
    let table_holds = holds(state)?;
    let table_excs = exceptions(state, now)?;
    let disagree = disagreements_with(&entries, &table_holds, &table_excs);
    if !disagree.is_empty() {
        return Err(TrailBroken(format!(
            "the holds or exceptions kept beside the trail disagree with it ({}); no deletion is made on protections that cannot be trusted",
            disagree.join("; ")
        ))
        .into());
    }
    Ok(from_records(table_holds, table_excs))
}

/// The holds and exceptions in force as the tables say, not checked against the trail: for
/// planning only, never for the last look before a deletion.
pub fn protections_unchecked(state: &mut State, now: Timestamp) -> Result<Protections> {
    let table_holds = holds(state)?;
    let table_excs = exceptions(state, now)?;
    Ok(from_records(table_holds, table_excs))
}

fn from_records(table_holds: Vec<HoldRecord>, table_excs: Vec<ExceptionRecord>) -> Protections {
    let holds: Vec<Hold> = table_holds
        .into_iter()
        .filter(|h| h.released_at.is_none())
        .filter_map(|h| {
            let scope = match h.scope.as_str() {
                "subject" => HoldScope::Subject(h.subject_hash?),
                "item" => HoldScope::Item {
                    target: h.target?,
                    key: h.item_key?,
                },
                _ => HoldScope::Target(h.target?),
            };
            Some(Hold { id: h.id, scope })
        })
        .collect();
    let exc: Vec<Exception> = table_excs
        .into_iter()
        .filter(|x| x.status == "active")
        .map(|x| Exception {
            id: x.id,
            target: x.target,
            key: x.item_key,
            until: Timestamp::from_micros(x.until_micros),
        })
        .collect();
    Protections::new(&holds, &exc)
}

#[derive(Debug, Serialize)]
pub struct Request {
    pub id: String,
    pub kind: String,
    pub subject_hash: String,
    pub received_at: String,
    pub deadline: String,
    pub status: String,
    pub counts: serde_json::Value,
    pub updated_at: String,
}

pub fn new_request(
    state: &mut State,
    kind: &str,
    subject_hash: &str,
    deadline: lethe_core::time::Duration,
    now: Timestamp,
) -> Result<Request> {
    let id = new_id(if kind == "erasure" {
        "erasure"
    } else {
        "access"
    })?;
    let deadline = now
        .checked_add(deadline)
        .ok_or_else(|| anyhow!("deadline out of range"))?
        .to_rfc3339();
    let received = now.to_rfc3339();
    if kind == "erasure" {
        let mut body = event(now, Action::ErasureReceived, &id);
        body.subject_hash = Some(subject_hash.to_string());
        body.reason = "erasure".into();
        body.detail = format!("request {id} received; deadline {deadline}");
        state.append_with(vec![body], |tx| {
            tx.execute(
                "INSERT INTO requests (id, kind, subject_hash, received_at, deadline, status, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'received', ?4)",
                &vals![&id, kind, subject_hash, &received, &deadline],
            )?;
            Ok(())
        })?;
    } else {
        state.db().execute(
            "INSERT INTO requests (id, kind, subject_hash, received_at, deadline, status, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'received', ?4)",
            &vals![&id, kind, subject_hash, &received, &deadline],
        )?;
    }
    request(state, &id)?.ok_or_else(|| anyhow!("request {id} vanished"))
}

const REQUEST_COLS: &str =
    "id, kind, subject_hash, received_at, deadline, status, counts, updated_at";

fn read_request(r: &crate::db::DbRow) -> Request {
    Request {
        id: r.text(0),
        kind: r.text(1),
        subject_hash: r.text(2),
        received_at: r.text(3),
        deadline: r.text(4),
        status: r.text(5),
        counts: serde_json::from_str(&r.text(6)).unwrap_or(serde_json::Value::Null),
        updated_at: r.text(7),
    }
}

/// The open erasure request of a subject (received, previewed or failed), to be carried on.
pub fn open_request(state: &mut State, subject_hash: &str) -> Result<Option<Request>> {
    let sql = format!(
        "SELECT {REQUEST_COLS} FROM requests WHERE kind = 'erasure' AND subject_hash = ?1 AND status IN ('received', 'previewed', 'failed') ORDER BY received_at DESC LIMIT 1"
    );
    Ok(state
        .db()
        .query_opt(&sql, &vals![subject_hash])?
        .map(|r| read_request(&r)))
}

pub fn request(state: &mut State, id: &str) -> Result<Option<Request>> {
    let sql = format!("SELECT {REQUEST_COLS} FROM requests WHERE id = ?1");
    Ok(state
        .db()
        .query_opt(&sql, &vals![id])?
        .map(|r| read_request(&r)))
}

pub fn requests(state: &mut State) -> Result<Vec<Request>> {
    let sql = format!("SELECT {REQUEST_COLS} FROM requests ORDER BY deadline, id");
    Ok(state
        .db()
        .query(&sql, &[])?
        .iter()
        .map(read_request)
        .collect())
}

/// Records how a request run ended (its status and per-target counts), with its audit
/// entry: `erasure_finished` for an erasure, `access_exported` for an access export (the
/// export's counts, never its contents).
pub fn finish_request(
    state: &mut State,
    req: &Request,
    status: &str,
    counts: &serde_json::Value,
    now: Timestamp,
) -> Result<()> {
    let (action, reason, what) = if req.kind == "erasure" {
        (Action::ErasureFinished, "erasure", "request")
    } else {
        (Action::AccessExported, "access", "access export")
    };
    let mut body = event(now, action, &req.id);
    body.subject_hash = Some(req.subject_hash.clone());
    body.reason = reason.into();
    body.detail = format!("{what} {} {status}; {counts}", req.id);
    let (counts_s, at) = (counts.to_string(), now.to_rfc3339());
    state.append_with(vec![body], |tx| {
        tx.execute(
            "UPDATE requests SET status = ?1, counts = ?2, updated_at = ?3 WHERE id = ?4",
            &vals![status, &counts_s, &at, &req.id],
        )?;
        Ok(())
    })
}
