//! Legal holds, the exception register and data-subject requests: records in the state, each
//! change written together with its audit entry in one transaction.

use anyhow::{Result, anyhow};
use lethe_core::audit::{Action, Body};
use lethe_core::expiry::{Exception, Hold, HoldScope, Protections};
use lethe_core::time::Timestamp;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::state::{State, new_id};
use crate::util::UsageError;

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

pub fn place_hold(state: &mut State, h: NewHold<'_>, now: Timestamp) -> Result<String> {
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
        tx.execute(
            "INSERT INTO holds (id, scope, target, item_key, subject_hash, case_id, reason, placed_by, placed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![id, scope, h.target, h.key, h.subject_hash, h.case_id, h.reason, h.by, placed_at],
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
            params![at, by, reason, id],
        )?;
        if n != 1 {
            return Err(anyhow!("hold {id} was released by someone else meanwhile"));
        }
        Ok(())
    })
}

pub fn holds(state: &State) -> Result<Vec<HoldRecord>> {
    let mut st = state.conn().prepare(
        "SELECT id, scope, target, item_key, subject_hash, case_id, reason, placed_by, placed_at, released_at, released_by, release_reason FROM holds ORDER BY placed_at, id",
    )?;
    let rows = st
        .query_map([], |r| {
            Ok(HoldRecord {
                id: r.get(0)?,
                scope: r.get(1)?,
                target: r.get(2)?,
                item_key: r.get(3)?,
                subject_hash: r.get(4)?,
                case_id: r.get(5)?,
                reason: r.get(6)?,
                placed_by: r.get(7)?,
                placed_at: r.get(8)?,
                released_at: r.get(9)?,
                released_by: r.get(10)?,
                release_reason: r.get(11)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
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

pub fn exceptions(state: &State, now: Timestamp) -> Result<Vec<ExceptionRecord>> {
    let mut st = state.conn().prepare(
        "SELECT id, target, item_key, until, until_micros, item_expires_at, owner, reason, granted_by, granted_at, renewal, superseded_by, revoked_at, revoked_by, revoke_reason FROM exceptions ORDER BY granted_at, id",
    )?;
    let rows = st
        .query_map([], |r| {
            let until_micros: i64 = r.get(4)?;
            let superseded_by: Option<String> = r.get(11)?;
            let revoked_at: Option<String> = r.get(12)?;
            let status = if revoked_at.is_some() {
                "revoked"
            } else if superseded_by.is_some() {
                "superseded"
            } else if until_micros <= now.as_micros() {
                "lapsed"
            } else {
                "active"
            };
            Ok(ExceptionRecord {
                id: r.get(0)?,
                target: r.get(1)?,
                item_key: r.get(2)?,
                until: r.get(3)?,
                until_micros,
                item_expires_at: r.get(5)?,
                owner: r.get(6)?,
                reason: r.get(7)?,
                granted_by: r.get(8)?,
                granted_at: r.get(9)?,
                renewal: r.get(10)?,
                superseded_by,
                revoked_at,
                revoked_by: r.get(13)?,
                revoke_reason: r.get(14)?,
                status: status.into(),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
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
            params![
                id,
                e.target,
                e.key,
                e.until.to_rfc3339(),
                e.until.as_micros(),
                e.item_expires_at.to_rfc3339(),
                e.owner,
                e.reason,
                e.by,
                now.to_rfc3339(),
                renewal
            ],
        )?;
        if let Some(c) = &current {
            tx.execute("UPDATE exceptions SET superseded_by = ?1 WHERE id = ?2", params![id, c])?;
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
            params![at, by, reason, id],
        )?;
        Ok(())
    })
}

/// Active holds and live exceptions, as the decision takes them.
pub fn protections(state: &State, now: Timestamp) -> Result<Protections> {
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
                params![id, kind, subject_hash, received, deadline],
            )?;
            Ok(())
        })?;
    } else {
        state.conn().execute(
            "INSERT INTO requests (id, kind, subject_hash, received_at, deadline, status, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'received', ?4)",
            params![id, kind, subject_hash, received, deadline],
        )?;
    }
    request(state, &id)?.ok_or_else(|| anyhow!("request {id} vanished"))
}

/// The open erasure request of a subject (received or previewed), to be carried on.
pub fn open_request(state: &State, subject_hash: &str) -> Result<Option<Request>> {
    let id: Option<String> = state
        .conn()
        .query_row(
            "SELECT id FROM requests WHERE kind = 'erasure' AND subject_hash = ?1 AND status IN ('received', 'previewed', 'failed') ORDER BY received_at DESC LIMIT 1",
            [subject_hash],
            |r| r.get(0),
        )
        .optional()?;
    match id {
        Some(id) => request(state, &id),
        None => Ok(None),
    }
}

pub fn request(state: &State, id: &str) -> Result<Option<Request>> {
    Ok(state
        .conn()
        .query_row(
            "SELECT id, kind, subject_hash, received_at, deadline, status, counts, updated_at FROM requests WHERE id = ?1",
            [id],
            read_request,
        )
        .optional()?)
}

pub fn requests(state: &State) -> Result<Vec<Request>> {
    let mut st = state.conn().prepare(
        "SELECT id, kind, subject_hash, received_at, deadline, status, counts, updated_at FROM requests ORDER BY deadline, id",
    )?;
    let rows = st
        .query_map([], read_request)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

fn read_request(r: &rusqlite::Row<'_>) -> rusqlite::Result<Request> {
    let counts: String = r.get(6)?;
    Ok(Request {
        id: r.get(0)?,
        kind: r.get(1)?,
        subject_hash: r.get(2)?,
        received_at: r.get(3)?,
        deadline: r.get(4)?,
        status: r.get(5)?,
        counts: serde_json::from_str(&counts).unwrap_or(serde_json::Value::Null),
        updated_at: r.get(7)?,
    })
}

/// Records how a request run ended, with its audit entry.
pub fn finish_request(
    state: &mut State,
    req: &Request,
    status: &str,
    counts: &serde_json::Value,
    now: Timestamp,
) -> Result<()> {
    let mut body = event(now, Action::ErasureFinished, &req.id);
    body.subject_hash = Some(req.subject_hash.clone());
    body.reason = "erasure".into();
    body.detail = format!("request {} {status}; {counts}", req.id);
    let (counts_s, at) = (counts.to_string(), now.to_rfc3339());
    state.append_with(vec![body], |tx| {
        tx.execute(
            "UPDATE requests SET status = ?1, counts = ?2, updated_at = ?3 WHERE id = ?4",
            params![status, counts_s, at, req.id],
        )?;
        Ok(())
    })
}

/// Records an Art. 15 export (not its contents) in the trail.
pub fn record_access(
    state: &mut State,
    req: &Request,
    counts: &serde_json::Value,
    now: Timestamp,
) -> Result<()> {
    let mut body = event(now, Action::AccessExported, &req.id);
    body.subject_hash = Some(req.subject_hash.clone());
    body.reason = "access".into();
    body.detail = format!("access export {}; {counts}", req.id);
    let (counts_s, at) = (counts.to_string(), now.to_rfc3339());
    state.append_with(vec![body], |tx| {
        tx.execute(
            "UPDATE requests SET status = 'completed', counts = ?1, updated_at = ?2 WHERE id = ?3",
            params![counts_s, at, req.id],
        )?;
        Ok(())
    })
}
