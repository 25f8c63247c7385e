//! The schedules: fires claimed in the state, missed fires dealt with on start-up, and the
//! worker that sweeps, one target at a time, whatever target of an open fire no daemon is
//! sweeping.

use std::sync::Arc;
use std::time::Duration;

use lethe_core::config::Config;
use lethe_core::schedule::Cadence;
use lethe_ops::ops::common::open_state;
use lethe_ops::ops::schedule::{self as fires, Claim};
use lethe_ops::state::{Access, State};
use lethe_ops::{Error, Result};

use crate::metrics::{RunLabel, ScheduleLabel};
use crate::{Daemon, blocking};

/// A schedule and the targets its fires sweep.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// `sweep`, or `targets.NAME` for a target's own.
    pub name: String,
    pub cadence: Cadence,
    pub targets: Vec<String>,
}

/// The config's schedules: `[schedule] sweep` for every target without one of its own, and
/// each target's own.
pub fn schedules(c: &Config) -> Result<Vec<Schedule>> {
    let tz = c.schedule.tz.as_deref();
    let parse =
        |expr: &str| Cadence::parse(expr, tz).map_err(|e| Error::usage(format!("[schedule]: {e}")));
    let mut out = Vec::new();
    if let Some(spec) = &c.schedule.sweep {
        let targets: Vec<String> = c
            .targets
            .iter()
            .filter(|t| t.schedule.is_none())
            .map(|t| t.name.clone())
            .collect();
        if !targets.is_empty() {
            out.push(Schedule {
                name: "sweep".into(),
                cadence: parse(&spec.expr)?,
                targets,
            });
        }
    }
    for t in &c.targets {
        if let Some(spec) = &t.schedule {
            out.push(Schedule {
                name: format!("targets.{}", t.name),
                cadence: parse(&spec.expr)?,
                targets: vec![t.name.clone()],
            });
        }
    }
    Ok(out)
}

fn state(d: &Daemon) -> Result<State> {
    open_state(&d.loaded, Access::Write)
}

fn to_secs(t: jiff::Timestamp) -> i64 {
    t.as_second()
}

/// On start-up: what each schedule missed while no daemon ran is run once (coalesced)
/// when its newest missed fire is within `misfire_grace`, else recorded as a misfire. Then
/// each schedule waits for its fires.
pub async fn start(d: Arc<Daemon>) {
    let grace = d.loaded.config.schedule.misfire_grace;
    for s in d.schedules.clone() {
        // Retried until the state answers: missed fires are never dropped for an outage, and
        // the daemon is not ready before they are dealt with.
        let caught = loop {
            let (dd, sc) = (d.clone(), s.clone());
            match blocking(move || catch_up(&dd, &sc, grace)).await {
                Ok(c) => break Ok(c),
                Err(e) if d.stopping() => break Err(e),
                Err(e) => {
                    tracing::error!(schedule = %s.name, error = %e, "could not deal with the schedule's missed fires; retrying");
                    sleep_or_stop(&d, Duration::from_secs(2)).await;
                }
            }
        };
        match caught {
            Ok(CatchUp::Nothing) => {}
            Ok(CatchUp::Run {
                missed,
                newest,
                claim,
            }) => {
                tracing::info!(schedule = %s.name, missed, newest = %newest, "missed fires within misfire_grace: run once now");
                note_claim(&d, &s.name, &claim);
            }
            Ok(CatchUp::Misfire {
                missed,
                newest,
                recorded,
            }) => {
                tracing::warn!(schedule = %s.name, missed, newest = %newest, grace = %grace, "missed fires older than misfire_grace: recorded as a misfire, not run");
                // Counted by the daemon that recorded it (alerted from the state).
                if recorded {
                    count_misfire(&d, &s.name);
                }
            }
            Err(e) => {
                tracing::error!(schedule = %s.name, error = %e, "could not read the schedule's last fire")
            }
        }
    }
    d.ready.store(true, std::sync::atomic::Ordering::SeqCst);
    d.wake.notify_one();
    let mut loops = tokio::task::JoinSet::new();
    for s in d.schedules.clone() {
        loops.spawn(fire_loop(d.clone(), s));
    }
    while loops.join_next().await.is_some() {}
}

/// What start-up did about a schedule's missed fires.
enum CatchUp {
    Nothing,
    Run {
        missed: u64,
        newest: jiff::Timestamp,
        claim: Claim,
    },
    Misfire {
        missed: u64,
        newest: jiff::Timestamp,
        /// This daemon recorded it (another daemon may have first).
        recorded: bool,
    },
}

fn catch_up(d: &Daemon, s: &Schedule, grace: lethe_core::time::Duration) -> Result<CatchUp> {
    let mut st = state(d)?;
    let Some(last) = fires::last_fire(&mut st, &s.name)? else {
        return Ok(CatchUp::Nothing);
    };
    let Ok(last) = jiff::Timestamp::from_second(last) else {
        return Ok(CatchUp::Nothing);
    };
    let now = jiff::Timestamp::now();
    let missed = s.cadence.missed(last, now);
    let Some(newest) = missed.newest else {
        return Ok(CatchUp::Nothing);
    };
    if now.as_second() - newest.as_second() <= grace.as_secs() {
        let claim = fires::claim_fire(
            &mut st,
            &s.name,
            to_secs(newest),
            d.loaded.config.schedule.apply,
            &s.targets,
            &d.id,
        )?;
        return Ok(CatchUp::Run {
            missed: missed.count,
            newest,
            claim,
        });
    }
    let recorded = fires::record_misfire(
        &mut st,
        &s.name,
        to_secs(newest),
        missed.count,
        &grace.to_string(),
        &d.id,
    )?;
    Ok(CatchUp::Misfire {
        missed: missed.count,
        newest,
        recorded,
    })
}

fn count_misfire(d: &Daemon, schedule: &str) {
    d.metrics
        .misfires
        .get_or_create(&ScheduleLabel {
            schedule: schedule.into(),
        })
        .inc();
}

fn note_claim(d: &Daemon, schedule: &str, claim: &Claim) {
    match claim {
        Claim::Claimed { run_id } => {
            tracing::info!(schedule, run_id = %run_id, "fire claimed");
            d.wake.notify_one();
        }
        Claim::Skipped { running } => {
            d.metrics
                .skipped_fires
                .get_or_create(&ScheduleLabel {
                    schedule: schedule.into(),
                })
                .inc();
            tracing::warn!(schedule, running = %running, "fire skipped: the schedule's previous run is still going");
        }
        Claim::Taken => tracing::debug!(schedule, "fire claimed by another daemon"),
    }
}

/// Waits for each fire of one schedule and claims it.
async fn fire_loop(d: Arc<Daemon>, s: Schedule) {
    loop {
        let now = jiff::Timestamp::now();
        let Some(next) = s.cadence.next_after(now) else {
            tracing::warn!(schedule = %s.name, "the schedule never fires again");
            return;
        };
        let wait = next
            .as_millisecond()
            .saturating_sub(now.as_millisecond())
            .max(0) as u64;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = d.stopping.notified() => return,
        }
        // The clock may wake a little early: never claim a fire before its time.
        while jiff::Timestamp::now() < next {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if d.stopping() {
            return;
        }
        // Woken long after the fire (the process was stopped, the machine suspended): a
        // fire older than misfire_grace is a misfire here too, not a run.
        let grace = d.loaded.config.schedule.misfire_grace;
        if jiff::Timestamp::now().as_second() - next.as_second() > grace.as_secs() {
            let (dd, sc) = (d.clone(), s.clone());
            let recorded = blocking(move || {
                let mut st = state(&dd)?;
                fires::record_misfire(
                    &mut st,
                    &sc.name,
                    to_secs(next),
                    1,
                    &grace.to_string(),
                    &dd.id,
                )
            })
            .await;
            if matches!(recorded, Ok(true)) {
                count_misfire(&d, &s.name);
            }
            tracing::warn!(schedule = %s.name, fire = %next, grace = %grace, "woken after misfire_grace: the fire is recorded as a misfire, not run");
            continue;
        }
        let dd = d.clone();
        let sc = s.clone();
        let claim = blocking(move || {
            let mut st = state(&dd)?;
            fires::claim_fire(
                &mut st,
                &sc.name,
                to_secs(next),
                dd.loaded.config.schedule.apply,
                &sc.targets,
                &dd.id,
            )
        })
        .await;
        match claim {
            Ok(c) => note_claim(&d, &s.name, &c),
            // The state is away: /readyz says so, and the next start-up (or fire) finds
            // the fire missed.
            Err(e) => {
                tracing::error!(schedule = %s.name, fire = %next, error = %e, "could not claim the fire")
            }
        }
    }
}

/// Sweeps the targets of open fires, one at a time, until the daemon stops.
pub async fn worker(d: Arc<Daemon>) {
    let stale = d.loaded.config.state.lease_ttl.as_secs().max(1);
    loop {
        if d.stopping() {
            return;
        }
        let dd = d.clone();
        let next = blocking(move || {
            let mut st = state(&dd)?;
            let c = &dd.loaded.config.schedule;
            fires::next_target(&mut st, &dd.id, stale, c.misfire_grace.as_secs(), c.apply)
        })
        .await;
        match next {
            Ok(Some(a)) => {
                tracing::info!(run_id = %a.run_id, target = %a.target, apply = a.apply, "sweeping");
                let (dd, assigned) = (d.clone(), a.clone());
                let swept = blocking(move || {
                    Ok(fires::sweep_assigned(
                        &dd.loaded,
                        &assigned,
                        Some(dd.stop.clone()),
                    ))
                })
                .await;
                // A sweep that could not even report (it panicked) fails the target, rather
                // than leave it claimed by a daemon that is alive and will never finish it.
                let report = swept.unwrap_or_else(|e| lethe_ops::engine::TargetReport {
                    target: a.target.clone(),
                    error: Some(format!("the sweep failed: {e}")),
                    ..Default::default()
                });
                // Recorded before anything else is claimed: a target left claimed by a live
                // daemon would never be finished. The state may be away a while.
                let done = loop {
                    let (dd, a2, r2) = (d.clone(), a.clone(), report.clone());
                    let done = blocking(move || {
                        let mut st = state(&dd)?;
                        let done = fires::finish_target(&mut st, &a2, &r2)?;
                        Ok((a2, r2, done))
                    })
                    .await;
                    match &done {
                        Ok(_) => break done,
                        Err(_) if d.stopping() => break done,
                        Err(e) => {
                            tracing::error!(run_id = %a.run_id, target = %a.target, error = %e, "could not record the target's outcome; retrying");
                            sleep_or_stop(&d, Duration::from_secs(2)).await;
                        }
                    }
                };
                // Stopping, not recorded: the claim is given back as the daemon leaves.
                if let Ok((a, report, done)) = done {
                    if let Some(e) = &report.error {
                        tracing::warn!(run_id = %a.run_id, target = %a.target, error = %e, "target not swept");
                    } else {
                        tracing::info!(run_id = %a.run_id, target = %a.target, found = report.found, deleted = report.deleted, held = report.held, failed = report.failed, interrupted = report.interrupted, "target swept");
                    }
                    if let Some(done) = done {
                        closed(&d, &done);
                    }
                    d.recount.notify_one();
                    d.dashboard.redraw.notify_one();
                }
            }
            Ok(None) => {
                tokio::select! {
                    _ = d.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = d.stopping.notified() => return,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not reach the state for the next target");
                sleep_or_stop(&d, Duration::from_secs(2)).await;
            }
        }
    }
}

async fn sleep_or_stop(d: &Daemon, t: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(t) => {}
        _ = d.stopping.notified() => {}
    }
}

/// A run this daemon closed: counted, and alerted on when it failed.
fn closed(d: &Daemon, done: &fires::FireDone) {
    let result = if done.success { "success" } else { "failure" };
    d.metrics
        .sweep_runs
        .get_or_create(&RunLabel {
            schedule: done.schedule.clone(),
            result: result.into(),
        })
        .inc();
    d.metrics
        .sweep_duration
        .get_or_create(&ScheduleLabel {
            schedule: done.schedule.clone(),
        })
        .observe(done.seconds);
    if done.success {
        d.metrics
            .last_success
            .get_or_create(&ScheduleLabel {
                schedule: done.schedule.clone(),
            })
            .set(done.fire_at as f64);
    }
    tracing::info!(schedule = %done.schedule, run_id = %done.run_id, result, seconds = done.seconds, "run finished");
}

/// Tells the state this daemon is alive, every quarter of `[state] lease_ttl` (at least
/// every second, at most every 30 s).
pub async fn heartbeat(d: Arc<Daemon>) {
    let every = (d.loaded.config.state.lease_ttl.as_secs() / 4).clamp(1, 30) as u64;
    loop {
        let dd = d.clone();
        let ok = blocking(move || {
            let mut st = state(&dd)?;
            fires::heartbeat(&mut st, &dd.id)
        })
        .await;
        if let Err(e) = &ok {
            tracing::error!(error = %e, "heartbeat: the state cannot be reached");
        }
        d.state_ok
            .store(ok.is_ok(), std::sync::atomic::Ordering::SeqCst);
        sleep_or_stop(&d, Duration::from_secs(every)).await;
        if d.stopping() {
            return;
        }
    }
}

/// Counts every target every `census_interval` (and after each run), read-only, for the
/// metrics and the alerts; and the trail's new deletions for the counters (and, when the
/// trail moved, for the dashboard).
pub async fn census(d: Arc<Daemon>) {
    let every =
        Duration::from_secs(d.loaded.config.schedule.census_interval.as_secs().max(1) as u64);
    let mut first = true;
    loop {
        let dd = d.clone();
        let counted = blocking(move || {
            let after = dd.metrics.counted_to.lock().map(|c| *c).unwrap_or(0);
            let (counts, to) = lethe_ops::ops::census::trail_counts(&dd.loaded, after)?;
            dd.metrics.count_trail(&counts, to);
            // New entries someone else wrote (a sweep from the CLI, another daemon): the
            // dashboard shows them (its own first rendering covers what was there before).
            let moved = to > after;
            let mut st = lethe_ops::ops::common::open_state(&dd.loaded, Access::Read)?;
            for (schedule, at) in fires::last_successes(&mut st)? {
                dd.metrics
                    .last_success
                    .get_or_create(&ScheduleLabel { schedule })
                    .set(at as f64);
            }
            drop(st);
            Ok((lethe_ops::ops::census::census(&dd.loaded)?, moved))
        })
        .await;
        match counted {
            Ok((o, moved)) => {
                if moved && !first {
                    d.dashboard.redraw.notify_one();
                }
                first = false;
                d.metrics.census(&o);
                d.alerts.census(&o);
                if let Ok(mut slot) = d.overview.lock() {
                    *slot = Some(o);
                }
            }
            Err(e) => tracing::error!(error = %e, "census failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = d.recount.notified() => {}
            _ = d.stopping.notified() => return,
        }
    }
}

/// How often the daemon prunes the trail past `[audit] retention`.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// The trail's own retention, when `[audit] retention` is set: pruned at start-up, then
/// once a day, as `lethe audit prune` does. Daemons sharing a state may each try; the
/// prune is one write transaction, so the later one finds nothing left to remove.
pub async fn prune(d: Arc<Daemon>) {
    if d.loaded.config.audit.retention.is_none() {
        return;
    }
    loop {
        let dd = d.clone();
        let pruned =
            blocking(move || lethe_ops::ops::prune(&dd.loaded, false, Some("lethe serve"))).await;
        match pruned {
            Ok(o) if o.removed > 0 => tracing::info!(
                removed = o.removed,
                kept = o.kept,
                checkpoint = ?o.checkpoint_seq,
                cutoff = %o.cutoff,
                "pruned the audit trail past [audit] retention"
            ),
            Ok(o) => tracing::debug!(cutoff = %o.cutoff, "no audit entry past [audit] retention"),
            Err(e) => tracing::error!(error = %e, "could not prune the audit trail"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = d.stopping.notified() => return,
        }
    }
}
