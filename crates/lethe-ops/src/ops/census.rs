//! `census`: what every target holds past expiry, with the registers' figures (holds,
//! exceptions, erasure requests), read without writing or locking anything: a daemon runs it
//! every few minutes for its metrics and alerts.

use serde::Serialize;

use crate::engine::{self, Census};
use crate::error::Result;
use crate::ops::common::open_state;
use crate::ops::erase::{days_to_deadline, is_closed};
use crate::registry;
use crate::settings::Loaded;
use crate::state::Access;
use crate::util::now;

/// Days before its deadline at which an open erasure request is due soon (and alerted on).
pub const DUE_SOON_DAYS: f64 = 3.0;

/// One target's count, or why it could not be counted.
#[derive(Clone, Debug, Serialize)]
pub struct TargetCensus {
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub census: Option<Census>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Erasure requests by where they stand.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RequestCounts {
    /// Open, deadline more than [`DUE_SOON_DAYS`] away.
    pub open: u64,
    /// Open, deadline within [`DUE_SOON_DAYS`].
    pub due_soon: u64,
    /// Open, deadline past.
    pub overdue: u64,
    pub completed: u64,
    /// The open requests at or near their deadline: (id, deadline).
    pub near_or_past: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Overview {
    pub at: String,
    pub targets: Vec<TargetCensus>,
    pub active_holds: u64,
    pub active_exceptions: u64,
    pub erasure_requests: RequestCounts,
}

/// Counts every target (one that cannot be read is reported, the others are counted) and
/// reads the registers.
pub fn census(loaded: &Loaded) -> Result<Overview> {
    let now = now();
    let mut state = open_state(loaded, Access::Read)?;
    let protections = registry::protections_unchecked(&mut state, now)?;
    let mut targets = Vec::new();
    for t in &loaded.config.targets {
        let counted = match loaded.open(t, false) {
            None => Err(anyhow::anyhow!(
                "target type {} is not supported by this build yet",
                t.type_name
            )),
            Some(Err(e)) => Err(e),
            Some(Ok(mut table)) => engine::census(table.as_mut(), t, now, &protections, &state.key),
        };
        targets.push(match counted {
            Ok(c) => TargetCensus {
                target: t.name.clone(),
                census: Some(c),
                error: None,
            },
            Err(e) => TargetCensus {
                target: t.name.clone(),
                census: None,
                error: Some(format!("{e:#}")),
            },
        });
    }
    let active_holds = registry::holds(&mut state)?
        .iter()
        .filter(|h| h.released_at.is_none())
        .count() as u64;
    let active_exceptions = registry::exceptions(&mut state, now)?
        .iter()
        .filter(|x| x.status == "active")
        .count() as u64;
    let mut requests = RequestCounts::default();
    for r in registry::requests(&mut state)?
        .into_iter()
        .filter(|r| r.kind == "erasure")
    {
        if is_closed(&r) {
            requests.completed += 1;
            continue;
        }
        match days_to_deadline(&r, now) {
            Some(d) if d < 0.0 => requests.overdue += 1,
            Some(d) if d <= DUE_SOON_DAYS => requests.due_soon += 1,
            _ => {
                requests.open += 1;
                continue;
            }
        }
        requests
            .near_or_past
            .push((r.id.clone(), r.deadline.clone()));
    }
    Ok(Overview {
        at: now.to_rfc3339(),
        targets,
        active_holds,
        active_exceptions,
        erasure_requests: requests,
    })
}

/// (target, action, how many) of the trail's entries.
pub type ActionCounts = Vec<(String, String, u64)>;

/// Deletions and failures the trail recorded after entry `after`, by target and action,
/// and the last entry counted: a reader keeps its place and reads only what is new.
pub fn trail_counts(loaded: &Loaded, after: i64) -> Result<(ActionCounts, i64)> {
    let mut state = open_state(loaded, Access::Read)?;
    let db = state.db();
    let head = db
        .query_opt("SELECT MAX(seq) FROM audit", &[])?
        .and_then(|r| r.opt_int(0))
        .unwrap_or(0);
    if head <= after {
        return Ok((Vec::new(), after));
    }
    let rows = db.query(
        "SELECT target, action, COUNT(*) FROM audit WHERE seq > ?1 AND seq <= ?2 AND action IN ('deleted', 'redacted', 'failed') GROUP BY target, action",
        &crate::vals![after, head],
    )?;
    Ok((
        rows.iter()
            .map(|r| (r.text(0), r.text(1), r.int(2).max(0) as u64))
            .collect(),
        head,
    ))
}
