//! `plan`: what the config's policy would newly make due on each target, against the
//! policy last applied there (a plan before an apply); `--accept` records a change as
//! applied, with who and why in the trail.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::guard::{self, Record, TargetPlan};
use crate::ops::common::{open_state, target};
use crate::registry;
use crate::settings::Loaded;
use crate::state::Access;
use crate::util::now;
use lethe_core::audit::Action;

/// What to plan, and whether to accept it.
#[derive(Clone, Debug, Default)]
pub struct PlanRequest {
    /// The targets to plan, by name; empty for every target.
    pub targets: Vec<String>,
    /// Record the config's policy as applied on every planned target where it changed.
    pub accept: bool,
    /// Why (required with `accept`).
    pub reason: Option<String>,
    /// Who accepts [default: the OS user].
    pub by: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PlanReport {
    /// When the items were judged.
    pub at: String,
    /// `[guard] max_new_due`.
    pub max_new_due: String,
    pub targets: Vec<TargetPlan>,
    /// Some target would newly lose more than the limit (or could not be judged): an apply
    /// deletes nothing there until the change is accepted.
    pub over_limit: bool,
    /// With `--accept`: the targets whose policy was recorded as applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Vec<String>>,
    /// With `--accept`: the entries' run id (`lethe audit log --run ID`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_id: Option<String>,
}

/// Plans every chosen target; with `accept`, records the changed policies as applied.
pub fn plan(loaded: &Loaded, req: &PlanRequest) -> Result<PlanReport> {
    let reason = req.reason.as_deref().map(str::trim).unwrap_or_default();
    if req.accept && reason.is_empty() {
        return Err(Error::usage(
            "--accept needs --reason \"...\": why the change is right is recorded in the trail",
        ));
    }
    if !req.accept && req.reason.is_some() {
        return Err(Error::usage("--reason goes with --accept"));
    }
    let c = &loaded.config;
    let chosen: Vec<_> = if req.targets.is_empty() {
        c.targets.iter().collect()
    } else {
        req.targets
            .iter()
            .map(|n| target(loaded, n))
            .collect::<Result<_>>()?
    };
    let now = now();
    let access = if req.accept {
        Access::Write
    } else {
        Access::Read
    };
    let mut state = open_state(loaded, access)?;
    let protections = registry::protections_unchecked(&mut state, now)?;
    let mut plans = Vec::new();
    let mut records = Vec::new();
    let by = registry::actor(req.by.as_deref());
    for t in &chosen {
        let applied = guard::applied(&mut state, &t.name)?;
        let p = guard::plan_target(loaded, t, applied.as_ref(), now, &protections, &state.key);
        if req.accept && p.changed {
            let policy = guard::policy_json(t)?;
            let counted = match (&p.error, p.items) {
                (Some(e), _) => format!("not judged: {e}"),
                (None, Some(n)) => format!("{} of {n} items newly due", p.newly_due),
                (None, None) => format!("{} items newly due", p.newly_due),
            };
            records.push(Record {
                target: t.name.clone(),
                category: t.category.clone(),
                policy,
                window: p.window.clone(),
                action: Action::PolicyAccepted,
                how: format!(
                    "accepted with `lethe plan --accept` by {by}: {reason} (window {} -> {}; {counted})",
                    p.applied.as_deref().unwrap_or("none applied"),
                    p.window
                ),
            });
        }
        plans.push(p);
    }
    let over_limit = plans.iter().any(|p| p.over_limit);
    let (accepted, accept_id) = if req.accept {
        let id = crate::state::new_id("plan")?;
        guard::record(&mut state, &records, &id, now)?;
        (
            Some(records.iter().map(|r| r.target.clone()).collect()),
            Some(id),
        )
    } else {
        (None, None)
    };
    Ok(PlanReport {
        at: now.to_rfc3339(),
        max_new_due: c.guard.max_new_due.to_string(),
        targets: plans,
        over_limit,
        accepted,
        accept_id,
    })
}
