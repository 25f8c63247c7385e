//! Legal holds, the exception register and data-subject requests: records in the state, each
//! change written together with its audit entry in one transaction.

use anyhow::{Result, anyhow};
use lethe_core::audit::{Action, Body};
use lethe_core::expiry::{Exception, Hold, HoldScope, Protections};
use lethe_core::time::Timestamp;
use serde::Serialize;

use crate::state::{State, new_id};
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

/// Active holds and live exceptions, as the decision takes them.
pub fn protections(state: &mut State, now: Timestamp) -> Result<Protections> {
    let holds: Vec<Hold> = holds(state)?
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
    let exc: Vec<Exception> = exceptions(state, now)?
        .into_iter()
        .filter(|x| x.status == "active")
        .map(|x| Exception {
            id: x.id,
            target: x.target,
            key: x.item_key,
            until: Timestamp::from_micros(x.until_micros),
        })
        .collect();
    Ok(Protections::new(&holds, &exc))
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
