//! The exception register: approved, time-limited extensions for single expired items.

use lethe_core::expiry;
use lethe_core::time::{Duration, Timestamp};
use serde::Serialize;

use crate::engine;
use crate::error::{Error, Result};
use crate::ops::common::{find_item, open_state, target};
use crate::registry::{self, ExceptionRecord, NewException};
use crate::settings::Loaded;
use crate::state::Access;
use crate::util::now;

/// An exception to grant: keep one item until a time, within `[exceptions] max_extension`
/// and `max_renewals`.
#[derive(Clone, Debug)]
pub struct ExceptionRequest {
    pub target: String,
    pub key: String,
    /// A date (kept through the end of that day, UTC) or an RFC 3339 time.
    pub until: String,
    /// Who answers for this exception.
    pub owner: String,
    pub reason: String,
    /// Who grants it [default: the OS user].
    pub by: Option<String>,
}

/// An exception granted.
#[derive(Clone, Debug, Serialize)]
pub struct ExceptionGranted {
    pub id: String,
    pub target: String,
    /// The item's key, as the target names it.
    pub key: String,
    /// Until when the item is kept.
    pub until: String,
}

/// `until`: a date means through the end of that day (UTC); a time means that instant.
pub fn parse_until(s: &str) -> Result<Timestamp> {
    let t = Timestamp::parse(s).map_err(|e| Error::usage(format!("--until: {e}")))?;
    if s.trim().len() == 10 {
        return t
            .checked_add(Duration::from_days(1))
            .ok_or_else(|| Error::usage("--until is out of range"));
    }
    Ok(t)
}

/// Grants an exception for an item that exists and whose expiry can be determined.
pub fn grant(loaded: &Loaded, req: &ExceptionRequest) -> Result<ExceptionGranted> {
    let now = now();
    if req.owner.trim().is_empty() || req.reason.trim().is_empty() {
        return Err(Error::usage("--owner and --reason must not be empty"));
    }
    let until = parse_until(&req.until)?;
    if until <= now {
        return Err(Error::usage(format!("--until {until} is in the past")));
    }
    let t = target(loaded, &req.target)?;
    let row = find_item(loaded, t, &req.key)?;
    let item_key = match &row.key {
        Ok(k) => k.to_string(),
        Err(_) => req.key.clone(),
    };
    let key = item_key.as_str();
    let (created_at_format, expires_at_format) = engine::formats(t);
    let facts = row.facts(created_at_format.as_ref(), expires_at_format.as_ref());
    let (item_expires_at, _) = expiry::expiry(&t.window, &facts).map_err(|e| {
        Error::conflict(format!(
            "item {key} of {}: its expiry cannot be determined ({e})",
            t.name
        ))
    })?;
    let mut state = open_state(loaded, Access::Write)?;
    let ex = &loaded.config.exceptions;
    let id = registry::grant_exception(
        &mut state,
        NewException {
            target: &t.name,
            category: &t.category,
            key,
            until,
            item_expires_at,
            owner: &req.owner,
            reason: &req.reason,
            by: registry::actor(req.by.as_deref()),
        },
        ex.max_extension,
        ex.max_renewals,
        now,
    )?;
    Ok(ExceptionGranted {
        id,
        target: t.name.clone(),
        key: item_key,
        until: until.to_string(),
    })
}

/// Active, lapsed, superseded and revoked exceptions.
pub fn list(loaded: &Loaded) -> Result<Vec<ExceptionRecord>> {
    let now = now();
    let mut state = open_state(loaded, Access::Read)?;
    Ok(registry::exceptions(&mut state, now)?)
}

/// An exception to end early, and why.
#[derive(Clone, Debug)]
pub struct Revocation {
    pub id: String,
    pub reason: String,
    /// Who revokes it [default: the OS user].
    pub by: Option<String>,
}

/// Ends an exception early. An unknown id is [`Error::NotFound`]; one no longer active is
/// [`Error::Conflict`].
pub fn revoke(loaded: &Loaded, req: &Revocation) -> Result<()> {
    let now = now();
    let mut state = open_state(loaded, Access::Write)?;
    registry::revoke_exception(
        &mut state,
        &req.id,
        &req.reason,
        registry::actor(req.by.as_deref()),
        now,
    )?;
    Ok(())
}
