//! Legal holds, the exception register and data-subject requests: records in the state, each
//! change written together with its audit entry in one transaction.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use lethe_core::audit::{Action, Body, Entry};
use lethe_core::expiry::{Exception, Hold, HoldScope, Protections};
use lethe_core::time::Timestamp;
use serde::Serialize;

use crate::state::{State, TrailBroken, new_id};
use crate::util::{Conflict, NotFound, UsageError};
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

/// `; by NAME` for an entry made on someone's behalf (an API token's name), else nothing.
pub fn by_text(by: Option<&str>) -> String {
    by.map(|b| format!("; by {b}")).unwrap_or_default()
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

#[derive(Clone, Debug, Serialize)]
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
        .ok_or_else(|| NotFound(format!("no hold {id} (see `lethe hold list`)")))?;
    if cur.released_at.is_some() {
        return Err(Conflict(format!("hold {id} was already released")).into());
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
    holds_in(state.db())
}

fn holds_in(db: &mut crate::db::Db) -> Result<Vec<HoldRecord>> {
    let rows = db.query(
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

#[derive(Clone, Debug, Serialize)]
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
    exceptions_in(state.db(), now)
}

fn exceptions_in(db: &mut crate::db::Db, now: Timestamp) -> Result<Vec<ExceptionRecord>> {
    let rows = db.query(
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
/// renewals per item. Anything past a bound is refused as a conflict with the register
/// (exit 2) with the bound named.
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
        return Err(Conflict(format!(
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
        return Err(Conflict(format!(
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
        .ok_or_else(|| NotFound(format!("no exception {id} (see `lethe exception list`)")))?;
    if cur.status != "active" {
        return Err(Conflict(format!("exception {id} is {}, not active", cur.status)).into());
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

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Where the trail and the tables differ on what is protected, in both directions.
#[derive(Default)]
pub struct Differences {
    /// In force in the trail, not in the tables: a sweep on the tables would delete what the
    /// trail protects. A sweep refuses to delete while there is any.
    pub trail_only: Vec<String>,
    /// In force in the tables, not in the trail: more is kept than the trail records.
    pub tables_only: Vec<String>,
    /// Holds (as id, hold) the trail has in force and the tables do not.
    holds_to_restore: Vec<(String, HoldFacts)>,
    /// Exceptions (id, exception) the trail has in force and the tables do not.
    exceptions_to_restore: Vec<(String, ExceptionFacts)>,
    /// Table holds in force the trail does not record.
    holds_to_record: Vec<HoldRecord>,
    /// Table exceptions in force the trail does not record as they are.
    exceptions_to_record: Vec<ExceptionRecord>,
}

#[derive(Clone)]
struct HoldFacts {
    scope: &'static str,
    target: Option<String>,
    item_key: Option<String>,
    subject_hash: Option<String>,
    placed_at: String,
    detail: String,
}

#[derive(Clone)]
struct ExceptionFacts {
    target: String,
    item_key: String,
    until: String,
    until_micros: i64,
    item_expires_at: String,
    granted_at: String,
    detail: String,
}

fn same_hold(h: &HoldRecord, f: &HoldFacts) -> bool {
    h.released_at.is_none()
        && h.scope == f.scope
        && h.target == f.target
        && h.item_key == f.item_key
        && h.subject_hash == f.subject_hash
}

/// What the trail has recorded, by id, each with whether it is still in force.
type Replayed<F> = BTreeMap<String, (F, bool)>;

/// Compares what protects items in the trail's hold and exception entries (`entries`, in
/// order) with the holds and exceptions tables, by what they protect: a hold in force on
/// the same thing, an exception in force on the same item until at least as late.
fn differences(
    entries: &[Entry],
    table_holds: &[HoldRecord],
    table_excs: &[ExceptionRecord],
) -> Differences {
    let mut d = Differences::default();
    let (holds, excs) = replay(entries);
    compare_holds(&mut d, &holds, table_holds);
    compare_exceptions(&mut d, &excs, table_excs);
    d
}

/// Replays the trail's hold and exception entries in order: every hold and exception it
/// records, and whether each is still in force at its end.
fn replay(entries: &[Entry]) -> (Replayed<HoldFacts>, Replayed<ExceptionFacts>) {
    let mut holds: Replayed<HoldFacts> = BTreeMap::new();
    let mut excs: Replayed<ExceptionFacts> = BTreeMap::new();
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
                let facts = HoldFacts {
                    scope,
                    target: non_empty(&b.target),
                    item_key: non_empty(&b.item_key),
                    subject_hash: b.subject_hash.clone(),
                    placed_at: b.decided_at.clone(),
                    detail: b.detail.clone(),
                };
                holds.insert(b.run_id.clone(), (facts, true));
            }
            Action::HoldReleased => {
                if let Some(h) = holds.get_mut(&b.run_id) {
                    h.1 = false;
                }
            }
            Action::ExceptionGranted | Action::ExceptionRenewed => {
                // A new exception supersedes the item's exception in force, as
                // `grant_exception` does.
                for (x, live) in excs.values_mut() {
                    if x.target == b.target && x.item_key == b.item_key {
                        *live = false;
                    }
                }
                let until = b
                    .window
                    .strip_prefix("until ")
                    .unwrap_or_default()
                    .to_string();
                let until_micros = Timestamp::parse(&until).map_or(i64::MIN, |t| t.as_micros());
                let facts = ExceptionFacts {
                    target: b.target.clone(),
                    item_key: b.item_key.clone(),
                    until,
                    until_micros,
                    item_expires_at: b.expires_at.clone().unwrap_or_default(),
                    granted_at: b.decided_at.clone(),
                    detail: b.detail.clone(),
                };
                excs.insert(b.run_id.clone(), (facts, true));
            }
            Action::ExceptionRevoked => {
                if let Some(x) = excs.get_mut(&b.run_id) {
                    x.1 = false;
                }
            }
            _ => {}
        }
    }
    (holds, excs)
}

/// Holds in force in the trail but not in the table, and the other way round.
fn compare_holds(d: &mut Differences, holds: &Replayed<HoldFacts>, table_holds: &[HoldRecord]) {
    for (id, (f, live)) in holds {
        if *live && !table_holds.iter().any(|h| same_hold(h, f)) {
            d.trail_only.push(format!(
                "hold {id} is in force in the trail but not in the holds table"
            ));
            d.holds_to_restore.push((id.clone(), f.clone()));
        }
    }
    for h in table_holds.iter().filter(|h| h.released_at.is_none()) {
        let recorded = holds.values().any(|(f, live)| *live && same_hold(h, f));
        if !recorded {
            d.tables_only.push(format!(
                "hold {} is in force in the holds table but the trail does not record it",
                h.id
            ));
            d.holds_to_record.push(h.clone());
        }
    }
}

/// Exceptions in force in the trail but not in the table (until at least as late), and the
/// other way round.
fn compare_exceptions(
    d: &mut Differences,
    excs: &Replayed<ExceptionFacts>,
    table_excs: &[ExceptionRecord],
) {
    let live_table_excs: Vec<&ExceptionRecord> = table_excs
        .iter()
        .filter(|x| x.revoked_at.is_none() && x.superseded_by.is_none())
        .collect();
    for (id, (f, live)) in excs {
        let covered = live_table_excs.iter().any(|x| {
            x.target == f.target && x.item_key == f.item_key && x.until_micros >= f.until_micros
        });
        if *live && !covered {
            d.trail_only.push(format!(
                "exception {id} is in force in the trail (until {}) but not in the exceptions table",
                f.until
            ));
            d.exceptions_to_restore.push((id.clone(), f.clone()));
        }
    }
    for x in &live_table_excs {
        let recorded = excs.values().any(|(f, live)| {
            *live
                && f.target == x.target
                && f.item_key == x.item_key
                && f.until_micros >= x.until_micros
        });
        if !recorded {
            d.tables_only.push(format!(
                "exception {} is in force in the exceptions table (until {}) but the trail does not record it",
                x.id, x.until
            ));
            d.exceptions_to_record.push((*x).clone());
        }
    }
}

/// The repair's part for holds and exceptions, which only ever adds protection: whatever
/// the trail has in force is put back in the tables (a row made again, a release or
/// revocation undone), and whatever the tables have in force that the trail does not record
/// is recorded in it (`record`: the entries to append). Nothing is released or revoked: the
/// side that protects more wins. Returns what was changed, in words.
pub fn cover_both_ways(
    db: &mut crate::db::Db,
    entries: &[Entry],
    record: &mut Vec<Body>,
    now: Timestamp,
    run_id: &str,
) -> Result<Vec<String>> {
    let table_holds = holds_in(db)?;
    let table_excs = exceptions_in(db, now)?;
    let d = differences(entries, &table_holds, &table_excs);
    let mut changed = Vec::new();
    let restored = "(restored from the trail by audit repair)";
    for (id, f) in &d.holds_to_restore {
        let free = !table_holds.iter().any(|h| &h.id == id);
        let row_id = if free { id.clone() } else { new_id("hold")? };
        db.execute(
            "INSERT INTO holds (id, scope, target, item_key, subject_hash, case_id, reason, placed_by, placed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            &vals![&row_id, f.scope, &f.target, &f.item_key, &f.subject_hash, restored, &f.detail, restored, &f.placed_at],
        )?;
        changed.push(format!(
            "hold {id}: put back in the holds table as {row_id}"
        ));
        if row_id != *id {
            let mut b = event(now, Action::HoldPlaced, &row_id);
            b.target = f.target.clone().unwrap_or_default();
            b.item_key = f.item_key.clone().unwrap_or_default();
            b.subject_hash = f.subject_hash.clone();
            b.reason = "legal_hold".into();
            b.detail = format!("hold {row_id} restores hold {id} (audit repair {run_id})");
            record.push(b);
        }
    }
    for (id, f) in &d.exceptions_to_restore {
        let free = !table_excs.iter().any(|x| &x.id == id);
        let row_id = if free { id.clone() } else { new_id("exc")? };
        db.execute(
            "INSERT INTO exceptions (id, target, item_key, until, until_micros, item_expires_at, owner, reason, granted_by, granted_at, renewal) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            &vals![&row_id, &f.target, &f.item_key, &f.until, f.until_micros, &f.item_expires_at, restored, &f.detail, restored, &f.granted_at, 0i64],
        )?;
        changed.push(format!(
            "exception {id}: put back in the exceptions table as {row_id}"
        ));
        if row_id != *id {
            let mut b = event(now, Action::ExceptionRenewed, &row_id);
            b.target = f.target.clone();
            b.item_key = f.item_key.clone();
            b.reason = "exception".into();
            b.expires_at = Some(f.item_expires_at.clone());
            b.window = format!("until {}", f.until);
            b.detail =
                format!("exception {row_id} restores exception {id} (audit repair {run_id})");
            record.push(b);
        }
    }
    for h in &d.holds_to_record {
        let mut b = event(now, Action::HoldPlaced, &h.id);
        b.target = h.target.clone().unwrap_or_default();
        b.item_key = h.item_key.clone().unwrap_or_default();
        b.subject_hash = h.subject_hash.clone();
        b.reason = "legal_hold".into();
        b.detail = format!(
            "hold {} on {}, in force in the holds table, recorded by audit repair {run_id}; case {}: {}",
            h.id, h.scope, h.case_id, h.reason
        );
        record.push(b);
        changed.push(format!(
            "hold {}: recorded in the trail as the holds table has it",
            h.id
        ));
    }
    for x in &d.exceptions_to_record {
        let mut b = event(now, Action::ExceptionRenewed, &x.id);
        b.target = x.target.clone();
        b.item_key = x.item_key.clone();
        b.reason = "exception".into();
        b.expires_at = Some(x.item_expires_at.clone());
        b.window = format!("until {}", x.until);
        b.detail = format!(
            "exception {} until {}, in force in the exceptions table, recorded by audit repair {run_id}",
            x.id, x.until
        );
        record.push(b);
        changed.push(format!(
            "exception {}: recorded in the trail as the exceptions table has it",
            x.id
        ));
    }
    Ok(changed)
}

/// Where the holds and exceptions tables and the trail's entries about them differ, both
/// ways (what verify reports). Empty when they protect the same things.
/// The registry as the state's verify and repair see it.
pub struct Registry;

impl crate::state::Registers for Registry {
    fn disagreements(&self, state: &mut State, entries: &[Entry]) -> Result<Vec<String>> {
        disagreements(state, entries)
    }

    fn cover_both_ways(
        &self,
        db: &mut crate::db::Db,
        entries: &[Entry],
        record: &mut Vec<Body>,
        now: Timestamp,
        run_id: &str,
    ) -> Result<Vec<String>> {
        cover_both_ways(db, entries, record, now, run_id)
    }
}

pub fn disagreements(state: &mut State, entries: &[Entry]) -> Result<Vec<String>> {
    let table_holds = holds(state)?;
    let table_excs = exceptions(state, Timestamp::from_micros(0))?;
    let d = differences(entries, &table_holds, &table_excs);
    let mut out = d.trail_only;
    out.extend(d.tables_only);
    Ok(out)
}

/// Active holds and live exceptions, as the decision takes them: from the tables, after
/// checking them against the trail (whose hold and exception entries are checked against
/// the seal): a hold released by editing a table, or an entry removed, stops the run.
pub fn protections(state: &mut State, now: Timestamp) -> Result<Protections> {
    let entries = state.protection_entries()?;
    let table_holds = holds(state)?;
    let table_excs = exceptions(state, now)?;
    // The decision reads the tables: refused when they protect less than the trail. (When
    // they protect more, more is kept; verify reports it.)
    let d = differences(&entries, &table_holds, &table_excs);
    if !d.trail_only.is_empty() {
        return Err(TrailBroken(format!(
            "the holds or exceptions kept beside the trail disagree with it ({}); no deletion is made on protections that cannot be trusted",
            d.trail_only.join("; ")
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

#[derive(Clone, Debug, Serialize)]
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
    by: Option<&str>,
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
        body.detail = format!("request {id} received; deadline {deadline}{}", by_text(by));
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
    by: Option<&str>,
) -> Result<()> {
    let (action, reason, what) = if req.kind == "erasure" {
        (Action::ErasureFinished, "erasure", "request")
    } else {
        (Action::AccessExported, "access", "access export")
    };
    let mut body = event(now, action, &req.id);
    body.subject_hash = Some(req.subject_hash.clone());
    body.reason = reason.into();
    body.detail = format!("{what} {} {status}; {counts}{}", req.id, by_text(by));
    let (counts_s, at) = (counts.to_string(), now.to_rfc3339());
    state.append_with(vec![body], |tx| {
        tx.execute(
            "UPDATE requests SET status = ?1, counts = ?2, updated_at = ?3 WHERE id = ?4",
            &vals![status, &counts_s, &at, &req.id],
        )?;
        Ok(())
    })
}
