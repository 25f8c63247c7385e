//! `sweep`: find what has outlived its window in the chosen targets and delete it (or, in a
//! dry run, say what would be deleted).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use std::collections::HashMap;

use lethe_core::config::Target;
use lethe_core::time::Timestamp;

use crate::engine::{self, Job, SweepOptions, SweepReport};
use crate::error::{Error, Result};
use crate::guard::{self, Guarded};
use crate::ops::common::{open_state, preflight, refuse_dropped_pending};
use crate::registry;
use crate::settings::Loaded;
use crate::state::{Access, State};
use crate::util::now;

/// What to sweep, and how.
#[derive(Clone, Debug)]
pub struct SweepRequest {
    /// Delete; without it nothing in any target changes.
    pub apply: bool,
    /// The targets to sweep, by name; empty for every target.
    pub targets: Vec<String>,
    /// Items per batch (memory and lock time grow with it).
    pub batch_size: usize,
    /// Rows deleted per transaction on the target, at most.
    pub rows_per_commit: usize,
    /// Show a progress bar on a terminal (stderr).
    pub progress: bool,
    /// Set to stop after the batch in hand (a daemon shutting down).
    pub stop: Option<Arc<AtomicBool>>,
    /// The run's id, when the caller chose it ([`new_run_id`]).
    pub run_id: Option<String>,
    /// On whose behalf (an API token's name), recorded in the run's entries.
    pub by: Option<String>,
    /// Go past the guard's limits for this one run (`--allow-large`): a policy change
    /// past `[guard] max_new_due` (then recorded as accepted), a target's `max_delete`.
    pub allow_large: bool,
}

/// A fresh run id, for a caller that must name the run before it starts.
pub fn new_run_id() -> Result<String> {
    Ok(crate::state::new_id("run")?)
}

impl Default for SweepRequest {
    /// A dry run over every target, in the default batches, without a progress bar.
    fn default() -> SweepRequest {
        SweepRequest {
            apply: false,
            targets: Vec::new(),
            batch_size: engine::DEFAULT_BATCH,
            rows_per_commit: engine::DEFAULT_ROWS_PER_COMMIT,
            progress: false,
            stop: None,
            run_id: None,
            by: None,
            allow_large: false,
        }
    }
}

/// Sweeps the chosen targets. A target that fails is reported in the report
/// ([`SweepReport::has_failures`]), not as an error: the others are swept.
pub fn sweep(loaded: &Loaded, req: &SweepRequest) -> Result<SweepReport> {
    let c = &loaded.config;
    let mut chosen = Vec::new();
    for name in &req.targets {
        match c.target(name) {
            Some(t) => chosen.push(t),
            None => {
                let known: Vec<&str> = c.targets.iter().map(|t| t.name.as_str()).collect();
                return Err(Error::not_found(format!(
                    "--target {name}: no such target in {} (targets: {})",
                    loaded.path.display(),
                    known.join(", ")
                )));
            }
        }
    }
    if chosen.is_empty() {
        chosen = c.targets.iter().collect();
    }
    preflight(loaded, &chosen, req.apply)?;
    let now = now();
    let mut state = open_state(loaded, Access::Write)?;
    refuse_dropped_pending(&state, loaded)?;
    let run_id = match &req.run_id {
        Some(id) => id.clone(),
        None => new_run_id()?,
    };
    let guard = guard_targets(loaded, &mut state, &chosen, now, req, &run_id)?;
    let opts = SweepOptions {
        apply: req.apply,
        batch: req.batch_size,
        rows_per_commit: req.rows_per_commit,
        progress: req.progress,
        required_tags: loaded.config.tags.required.clone(),
        stop: req.stop.clone(),
        run_id: Some(run_id),
        by: req.by.clone(),
        guard,
    };
    Ok(engine::sweep(
        &mut state,
        &chosen,
        &loaded.base,
        now,
        &Job::Retention,
        &opts,
    )?)
}

/// The guard's decision for each target of a retention sweep ([`guard::check`]); an apply
/// records the policies of the targets it lets through as applied, before it deletes.
pub fn guard_targets(
    loaded: &Loaded,
    state: &mut State,
    targets: &[&Target],
    now: Timestamp,
    req: &SweepRequest,
    run_id: &str,
) -> Result<HashMap<String, Guarded>> {
    let by = registry::actor(req.by.as_deref());
    let mut out = HashMap::new();
    let mut records = Vec::new();
    for t in targets {
        let g = guard::check(loaded, state, t, now, req.apply, req.allow_large, &by)?;
        if let Some(r) = &g.record
            && g.refused.is_none()
        {
            records.push(r.clone());
        }
        out.insert(t.name.clone(), g);
    }
    // A dry run never records a policy.
    if req.apply {
        guard::record(state, &records, run_id, now)?;
    }
    Ok(out)
}

/// `lethe sweep --cancel RUN`: drops what run RUN scheduled on targets with
/// `delete_delay` (those items are not deleted by it; a later run may schedule them again).
pub fn cancel(loaded: &Loaded, run_id: &str, by: Option<&str>) -> Result<guard::Cancelled> {
    let mut state = open_state(loaded, Access::Write)?;
    let by = registry::actor(by);
    let c = guard::cancel(&mut state, run_id, &by, now())?;
    if c.targets.is_empty() {
        return Err(Error::not_found(format!(
            "run {run_id} has nothing scheduled now (nothing it scheduled is left: deleted, cancelled, or never scheduled; see `lethe audit log --run {run_id}`)"
        )));
    }
    Ok(c)
}
