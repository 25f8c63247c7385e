//! Scheduled runs, as the daemons that share one state see them.
//!
//! A schedule's fire is claimed once, by whichever daemon inserts its row in `fires` first;
//! that daemon lists the fire's targets in `fire_targets`. Then every daemon that is up
//! claims the next target not yet swept, one at a time, so N daemons sweep N targets at
//! once. A daemon proves it is alive by its heartbeat in `daemons`; a target claimed by one
//! silent for longer than `[state] lease_ttl` goes back to the others, and the target's own
//! lease (the engine's) keeps two sweeps off one target whatever happens. The daemon that
//! finishes a fire's last target closes the run.
//!
//! Fire times are Unix seconds; the run of a fire is `run-<schedule>-<UTC time>`, the same
//! whichever daemon claims it.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use lethe_core::audit::{Action, Body};
use serde::Serialize;

use crate::db::Db;
use crate::engine::{self, SweepOptions, TargetReport};
use crate::error::Result;
use crate::ops::common::{open_state, preflight, refuse_dropped_pending};
use crate::settings::Loaded;
use crate::state::{Access, State};
use crate::util::now;
use crate::vals;

/// The PostgreSQL advisory lock the schedule's tables are written under (SQLite's write
/// transaction excludes every other writer anyway). Not the trail's: claiming a target
/// never waits for a sweep's entries.
const SCHEDULE_LOCK: i64 = 7_415_289_563;

/// A fire's run id: the same in every daemon.
pub fn fire_run_id(schedule: &str, fire_at: i64) -> String {
    let at = jiff::Timestamp::from_second(fire_at)
        .map(|t| t.strftime("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_else(|_| fire_at.to_string());
    format!("run-{schedule}-{at}")
}

/// This daemon's id in the state: host, process and a random part (a restarted process may
/// get the same pid).
pub fn daemon_id() -> Result<String> {
    let tail = crate::state::new_id("d")?;
    Ok(format!(
        "{}:{}:{tail}",
        crate::state::hostname(),
        std::process::id()
    ))
}

fn write<T>(state: &mut State, f: impl FnOnce(&mut Db) -> anyhow::Result<T>) -> Result<T> {
    Ok(state.db().write_under(&[SCHEDULE_LOCK], f)?)
}

/// Says this daemon is alive (and registers it on the first call).
pub fn heartbeat(state: &mut State, daemon: &str) -> Result<()> {
    let t = now();
    let host = crate::state::hostname();
    write(state, |db| {
        db.execute(
            "INSERT INTO daemons (id, host, pid, started_at, heartbeat) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET heartbeat = excluded.heartbeat",
            &vals![
                daemon,
                host,
                std::process::id() as i64,
                t.to_rfc3339(),
                t.unix_seconds()
            ],
        )?;
        Ok(())
    })
}

/// Takes this daemon out: what it had claimed goes back to the others at once.
pub fn leave(state: &mut State, daemon: &str) -> Result<()> {
    write(state, |db| {
        db.execute(
            "UPDATE fire_targets SET status = 'pending', worker = NULL WHERE status = 'running' AND worker = ?1",
            &vals![daemon],
        )?;
        db.execute("DELETE FROM daemons WHERE id = ?1", &vals![daemon])?;
        Ok(())
    })
}

/// The daemons whose heartbeat is at most `stale_secs` old.
pub fn daemons_up(state: &mut State, stale_secs: i64) -> Result<u64> {
    let since = now().unix_seconds() - stale_secs;
    let r = state.db().query_opt(
        "SELECT COUNT(*) FROM daemons WHERE heartbeat >= ?1",
        &vals![since],
    )?;
    Ok(r.map_or(0, |r| r.int(0).max(0) as u64))
}

/// The newest fire of the schedule the state knows (run, skipped or misfired).
pub fn last_fire(state: &mut State, schedule: &str) -> Result<Option<i64>> {
    let r = state.db().query_opt(
        "SELECT MAX(fire_at) FROM fires WHERE schedule = ?1",
        &vals![schedule],
    )?;
    Ok(r.and_then(|r| r.opt_int(0)))
}

/// What became of a fire this daemon saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This daemon claimed it: its run is `run_id`.
    Claimed { run_id: String },
    /// The schedule's previous run is still going: the fire is recorded as skipped.
    Skipped { running: String },
    /// Another daemon saw it first.
    Taken,
}

/// Claims a fire of `schedule` at `fire_at` for `targets`, unless another daemon did.
pub fn claim_fire(
    state: &mut State,
    schedule: &str,
    fire_at: i64,
    apply: bool,
    targets: &[String],
    daemon: &str,
) -> Result<Claim> {
    let run_id = fire_run_id(schedule, fire_at);
    let t = now();
    let claim = write(state, |db| {
        if db
            .query_opt(
                "SELECT 1 FROM fires WHERE schedule = ?1 AND fire_at = ?2",
                &vals![schedule, fire_at],
            )?
            .is_some()
        {
            return Ok(Claim::Taken);
        }
        let running = db.query_opt(
            "SELECT run_id FROM fires WHERE schedule = ?1 AND finished_at IS NULL ORDER BY fire_at LIMIT 1",
            &vals![schedule],
        )?;
        if let Some(r) = running {
            db.execute(
                "INSERT INTO fires (schedule, fire_at, run_id, apply, claimed_by, claimed_at, finished_at, result) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 'skipped')",
                &vals![schedule, fire_at, &run_id, apply, daemon, t.to_rfc3339()],
            )?;
            return Ok(Claim::Skipped { running: r.text(0) });
        }
        db.execute(
            "INSERT INTO fires (schedule, fire_at, run_id, apply, claimed_by, claimed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            &vals![schedule, fire_at, &run_id, apply, daemon, t.to_rfc3339()],
        )?;
        for target in targets {
            db.execute(
                "INSERT INTO fire_targets (run_id, target, status, not_before) VALUES (?1, ?2, 'pending', 0)",
                &vals![&run_id, target],
            )?;
        }
        // The run, in the same transaction: a fire is never claimed without its run.
        db.execute(
            "INSERT INTO runs (run_id, kind, dry_run, started_at) VALUES (?1, 'retention', ?2, ?3)
             ON CONFLICT (run_id) DO NOTHING",
            &vals![&run_id, !apply, t.to_rfc3339()],
        )?;
        Ok(Claim::Claimed {
            run_id: run_id.clone(),
        })
    })?;
    Ok(claim)
}

/// Records that the schedule's fires up to `newest` were missed beyond `misfire_grace`:
/// once, by the daemon that records it first (true), with a `schedule_misfire` entry.
pub fn record_misfire(
    state: &mut State,
    schedule: &str,
    newest: i64,
    missed: u64,
    grace: &str,
    daemon: &str,
) -> Result<bool> {
    let run_id = fire_run_id(schedule, newest);
    let t = now();
    let recorded = write(state, |db| {
        let n = db.execute(
            "INSERT INTO fires (schedule, fire_at, run_id, apply, claimed_by, claimed_at, finished_at, result) VALUES (?1, ?2, ?3, 0, ?4, ?5, ?5, 'misfire')
             ON CONFLICT (schedule, fire_at) DO NOTHING",
            &vals![schedule, newest, &run_id, daemon, t.to_rfc3339()],
        )?;
        Ok(n == 1)
    })?;
    if recorded {
        let entry = misfire_entry(schedule, newest, missed, grace, &run_id, t);
        if let Err(e) = state.append(vec![entry], &[]) {
            // Unrecorded, it would be lost: the row goes, so that this or another daemon
            // records the misfire on its next try.
            let _ = write(state, |db| {
                db.execute(
                    "DELETE FROM fires WHERE schedule = ?1 AND fire_at = ?2 AND result = 'misfire'",
                    &vals![schedule, newest],
                )?;
                Ok(())
            });
            return Err(e.into());
        }
    }
    Ok(recorded)
}

fn misfire_entry(
    schedule: &str,
    newest: i64,
    missed: u64,
    grace: &str,
    run_id: &str,
    t: lethe_core::time::Timestamp,
) -> Body {
    let at = jiff::Timestamp::from_second(newest)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| newest.to_string());
    misfire_body(
        schedule,
        run_id,
        t,
        format!(
            "{missed} fire(s) of schedule {schedule} missed, the newest at {at}, older than misfire_grace ({grace}) when a daemon could run it: not run; the next fire sweeps what they would have"
        ),
    )
}

/// A `schedule_misfire` entry: a fire (or a run) of `schedule` not run, and why.
fn misfire_body(
    schedule: &str,
    run_id: &str,
    t: lethe_core::time::Timestamp,
    detail: String,
) -> Body {
    Body {
        decided_at: t.to_rfc3339(),
        run_id: run_id.to_string(),
        action: Action::ScheduleMisfire,
        target: String::new(),
        item_key: String::new(),
        category: String::new(),
        reason: format!("schedule {schedule}"),
        window: String::new(),
        expires_at: None,
        subject_hash: None,
        detail,
    }
}

/// A target of a fire, claimed by this daemon.
#[derive(Clone, Debug)]
pub struct Assignment {
    pub schedule: String,
    pub run_id: String,
    pub target: String,
    /// Delete: the fire was claimed to, and the config still says so.
    pub apply: bool,
    /// The daemon that claimed it: only its outcome is taken.
    pub worker: String,
}

/// Claims the next target no daemon is sweeping, of the oldest open fire; first gives back
/// what a daemon silent for longer than `stale_secs` had claimed, or what was claimed that
/// long ago and whose sweep no longer renews the target's lease (a sweep that hangs), and
/// closes as misfires the open fires older than `grace_secs` that no daemon is sweeping
/// (a daemon down longer than misfire_grace does not resume a stale run).
///
/// `apply`: the config's `[schedule] apply` now: a fire claimed to delete is swept as a dry
/// run when the config no longer says to delete (and one claimed as a dry run stays one).
pub fn next_target(
    state: &mut State,
    daemon: &str,
    stale_secs: i64,
    grace_secs: i64,
    apply: bool,
) -> Result<Option<Assignment>> {
    let t = now();
    let secs = t.unix_seconds();
    let stale = secs - stale_secs;
    let (claim, expired) = write(state, |db| {
        db.execute(
            "UPDATE fire_targets SET status = 'pending', worker = NULL WHERE status = 'running'
             AND (worker NOT IN (SELECT id FROM daemons WHERE heartbeat >= ?1)
                  OR (claimed_at < ?1 AND NOT EXISTS
                      (SELECT 1 FROM leases l WHERE l.target = fire_targets.target AND l.heartbeat >= ?1)))",
            &vals![stale],
        )?;
        // Open fires too old to resume, with nothing of theirs being swept.
        let old = db.query(
            "SELECT run_id, schedule FROM fires WHERE finished_at IS NULL AND fire_at < ?1
             AND NOT EXISTS (SELECT 1 FROM fire_targets ft WHERE ft.run_id = fires.run_id AND ft.status = 'running')",
            &vals![secs - grace_secs],
        )?;
        let mut expired = Vec::new();
        for r in old {
            let (run_id, schedule) = (r.text(0), r.text(1));
            db.execute(
                "UPDATE fires SET finished_at = ?1, result = 'misfire' WHERE run_id = ?2 AND finished_at IS NULL",
                &vals![t.to_rfc3339(), &run_id],
            )?;
            db.execute(
                "UPDATE fire_targets SET status = 'done', report = ?1 WHERE run_id = ?2 AND status <> 'done'",
                &vals![
                    r#"{"error":"not swept: the run was left unfinished for longer than misfire_grace"}"#,
                    &run_id
                ],
            )?;
            db.execute(
                "UPDATE runs SET finished_at = ?1, summary = ?2 WHERE run_id = ?3 AND finished_at IS NULL",
                &vals![
                    t.to_rfc3339(),
                    r#"{"error":"left unfinished for longer than misfire_grace: closed as a misfire"}"#,
                    &run_id
                ],
            )?;
            expired.push((run_id, schedule));
        }
        let Some(r) = db.query_opt(
            "SELECT f.schedule, ft.run_id, ft.target, f.apply FROM fire_targets ft JOIN fires f ON f.run_id = ft.run_id
             WHERE ft.status = 'pending' AND ft.not_before <= ?1 AND f.finished_at IS NULL ORDER BY f.fire_at, ft.target LIMIT 1",
            &vals![secs],
        )?
        else {
            return Ok((None, expired));
        };
        let a = Assignment {
            schedule: r.text(0),
            run_id: r.text(1),
            target: r.text(2),
            apply: r.int(3) != 0 && apply,
            worker: daemon.to_string(),
        };
        db.execute(
            "UPDATE fire_targets SET status = 'running', worker = ?1, claimed_at = ?2 WHERE run_id = ?3 AND target = ?4",
            &vals![daemon, secs, &a.run_id, &a.target],
        )?;
        Ok((Some(a), expired))
    })?;
    for (run_id, schedule) in expired {
        let body = misfire_body(
            &schedule,
            &run_id,
            t,
            format!(
                "a run of schedule {schedule} was left unfinished (its daemons stopped) for longer than misfire_grace: closed as a misfire, not resumed; the next fire sweeps what it would have"
            ),
        );
        state.append(vec![body], &[])?;
    }
    Ok(claim)
}

/// A run the daemon closed: its fire's last target is done.
#[derive(Clone, Debug, Serialize)]
pub struct FireDone {
    pub schedule: String,
    pub run_id: String,
    pub fire_at: i64,
    pub success: bool,
    /// Seconds from the claim of the fire to its end.
    pub seconds: f64,
}

/// Sweeps a target this daemon claimed, as part of its fire's run.
pub fn sweep_assigned(
    loaded: &Loaded,
    a: &Assignment,
    stop: Option<Arc<AtomicBool>>,
) -> TargetReport {
    let failed = |error: String| TargetReport {
        target: a.target.clone(),
        error: Some(error),
        ..Default::default()
    };
    let Some(target) = loaded.config.target(&a.target) else {
        return failed(format!(
            "target {} is no longer in {}: not swept",
            a.target,
            loaded.path.display()
        ));
    };
    let run = || -> Result<TargetReport> {
        preflight(loaded, &[target], a.apply)?;
        let mut state = open_state(loaded, Access::Write)?;
        refuse_dropped_pending(&state, loaded)?;
        // A scheduled run is guarded as an apply from the command line is; nobody is
        // there to say --allow-large: a refused target fails the run, which alerts.
        let guard = crate::ops::sweep::guard_targets(
            loaded,
            &mut state,
            &[target],
            now(),
            &crate::ops::SweepRequest {
                apply: a.apply,
                by: Some("lethe serve (scheduled run)".into()),
                ..Default::default()
            },
            &a.run_id,
        )?;
        let opts = SweepOptions {
            apply: a.apply,
            batch: engine::DEFAULT_BATCH,
            rows_per_commit: engine::DEFAULT_ROWS_PER_COMMIT,
            progress: false,
            required_tags: loaded.config.tags.required.clone(),
            stop,
            run_id: Some(a.run_id.clone()),
            by: None,
            guard,
        };
        Ok(engine::sweep_in_run(
            &mut state,
            target,
            &loaded.base,
            now(),
            &a.run_id,
            &opts,
        )?)
    };
    run().unwrap_or_else(|e| failed(e.to_string()))
}

/// Records a claimed target's outcome: done, or back to the others (busy: another sweep
/// holds it, retried a little later; interrupted: this daemon is stopping). Closes the run
/// when it was the fire's last target.
pub fn finish_target(
    state: &mut State,
    a: &Assignment,
    report: &TargetReport,
) -> Result<Option<FireDone>> {
    let t = now();
    let json = serde_json::to_string(report)?;
    let done = write(state, |db| {
        // Only the daemon that holds the claim records it: a daemon that was given up on
        // (silent too long) and reports late changes nothing.
        let mine = "run_id = ?2 AND target = ?3 AND status = 'running' AND worker = ?4";
        if report.busy || report.interrupted {
            let wait = if report.busy { 5 } else { 0 };
            db.execute(
                &format!("UPDATE fire_targets SET status = 'pending', worker = NULL, not_before = ?1 WHERE {mine}"),
                &vals![t.unix_seconds() + wait, &a.run_id, &a.target, &a.worker],
            )?;
            return Ok(None);
        }
        let n = db.execute(
            &format!("UPDATE fire_targets SET status = 'done', report = ?1 WHERE {mine}"),
            &vals![&json, &a.run_id, &a.target, &a.worker],
        )?;
        if n != 1 {
            return Ok(None);
        }
        let open = db.query_opt(
            "SELECT COUNT(*) FROM fire_targets WHERE run_id = ?1 AND status <> 'done'",
            &vals![&a.run_id],
        )?;
        if open.map_or(0, |r| r.int(0)) > 0 {
            return Ok(None);
        }
        let mut reports = Vec::new();
        for r in db.query(
            "SELECT report FROM fire_targets WHERE run_id = ?1 ORDER BY target",
            &vals![&a.run_id],
        )? {
            reports.push(serde_json::from_str::<serde_json::Value>(&r.text(0))?);
        }
        let success = reports.iter().all(|r| {
            r.get("error").is_none() && r.get("failed").and_then(|f| f.as_u64()) == Some(0)
        });
        let result = if success { "success" } else { "failure" };
        let n = db.execute(
            "UPDATE fires SET finished_at = ?1, result = ?2 WHERE run_id = ?3 AND finished_at IS NULL",
            &vals![t.to_rfc3339(), result, &a.run_id],
        )?;
        if n != 1 {
            return Ok(None);
        }
        let f = db.query_opt(
            "SELECT fire_at, claimed_at, apply FROM fires WHERE run_id = ?1",
            &vals![&a.run_id],
        )?;
        let (fire_at, claimed_at, apply) = f
            .map(|r| (r.int(0), r.text(1), r.int(2) != 0))
            .unwrap_or_default();
        let seconds = lethe_core::time::Timestamp::parse(&claimed_at)
            .map(|c| (t.as_micros() - c.as_micros()) as f64 / 1e6)
            .unwrap_or(0.0);
        let summary = serde_json::json!({
            "run_id": a.run_id,
            "dry_run": !apply,
            "schedule": a.schedule,
            "targets": reports,
        });
        // The run closes in the same transaction as its fire.
        db.execute(
            "UPDATE runs SET finished_at = ?1, summary = ?2 WHERE run_id = ?3",
            &vals![t.to_rfc3339(), summary.to_string(), &a.run_id],
        )?;
        Ok(Some(FireDone {
            schedule: a.schedule.clone(),
            run_id: a.run_id.clone(),
            fire_at,
            success,
            seconds,
        }))
    })?;
    Ok(done)
}

/// Per schedule: the newest fire's end that succeeded, in Unix seconds.
pub fn last_successes(state: &mut State) -> Result<Vec<(String, i64)>> {
    let rows = state.db().query(
        "SELECT schedule, MAX(fire_at) FROM fires WHERE result = 'success' GROUP BY schedule",
        &[],
    )?;
    Ok(rows.iter().map(|r| (r.text(0), r.int(1))).collect())
}

/// Whether the schedule has a run still going (claimed, not finished).
pub fn running(state: &mut State, schedule: &str) -> Result<bool> {
    Ok(state
        .db()
        .query_opt(
            "SELECT 1 FROM fires WHERE schedule = ?1 AND finished_at IS NULL",
            &vals![schedule],
        )?
        .is_some())
}

/// Marks the alert `key` as firing (again, if its resolution is still undelivered): true
/// when this call did, and the caller posts it.
pub fn alert_fire(state: &mut State, key: &str, summary: &str) -> Result<bool> {
    let t = now();
    write(state, |db| {
        let n = db.execute(
            "INSERT INTO alerts (key, fired_at, summary, delivered, attempt_at) VALUES (?1, ?2, ?3, 0, ?4)
             ON CONFLICT (key) DO UPDATE SET fired_at = excluded.fired_at, summary = excluded.summary,
                 resolved_at = NULL, delivered = 0, attempt_at = excluded.attempt_at
             WHERE alerts.resolved_at IS NOT NULL",
            &vals![key, t.to_rfc3339(), summary, t.unix_seconds()],
        )?;
        Ok(n == 1)
    })
}

/// Marks the alert `key` as resolved: the time it fired when this call did (the caller
/// posts the resolution).
pub fn alert_resolve(state: &mut State, key: &str) -> Result<Option<String>> {
    let t = now();
    write(state, |db| {
        let fired = db.query_opt(
            "SELECT fired_at FROM alerts WHERE key = ?1 AND resolved_at IS NULL",
            &vals![key],
        )?;
        let Some(fired) = fired else {
            return Ok(None);
        };
        db.execute(
            "UPDATE alerts SET resolved_at = ?1, delivered = 0, attempt_at = ?2 WHERE key = ?3",
            &vals![t.to_rfc3339(), t.unix_seconds(), key],
        )?;
        Ok(Some(fired.text(0)))
    })
}

/// The webhook took the alert's last news: a firing stays in force, a resolution goes.
pub fn alert_delivered(state: &mut State, key: &str, resolved: bool) -> Result<()> {
    write(state, |db| {
        if resolved {
            db.execute(
                "DELETE FROM alerts WHERE key = ?1 AND resolved_at IS NOT NULL",
                &vals![key],
            )?;
        } else {
            db.execute(
                "UPDATE alerts SET delivered = 1 WHERE key = ?1 AND resolved_at IS NULL",
                &vals![key],
            )?;
        }
        Ok(())
    })
}

/// An alert whose last news the webhook has not taken yet.
#[derive(Clone, Debug)]
pub struct Undelivered {
    pub key: String,
    pub fired_at: String,
    pub summary: String,
    /// Its resolution, when that is the news.
    pub resolved_at: Option<String>,
}

/// Claims the undelivered alerts whose last attempt is older than `retry_secs`, for this
/// caller to post again.
pub fn claim_undelivered(state: &mut State, retry_secs: i64) -> Result<Vec<Undelivered>> {
    let t = now().unix_seconds();
    write(state, |db| {
        let rows = db.query(
            "SELECT key, fired_at, summary, resolved_at FROM alerts WHERE delivered = 0 AND attempt_at < ?1 ORDER BY key",
            &vals![t - retry_secs],
        )?;
        let mut out = Vec::new();
        for r in rows {
            db.execute(
                "UPDATE alerts SET attempt_at = ?1 WHERE key = ?2",
                &vals![t, r.text(0)],
            )?;
            out.push(Undelivered {
                key: r.text(0),
                fired_at: r.text(1),
                summary: r.text(2),
                resolved_at: r.opt_text(3),
            });
        }
        Ok(out)
    })
}

/// The alerts in force (not resolved): (key, fired at, summary).
pub fn alerts_firing(state: &mut State) -> Result<Vec<(String, String, String)>> {
    let rows = state.db().query(
        "SELECT key, fired_at, summary FROM alerts WHERE resolved_at IS NULL ORDER BY key",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| (r.text(0), r.text(1), r.text(2)))
        .collect())
}

/// Records an alert's firing or resolution in the trail.
pub fn record_alert(state: &mut State, fired: bool, key: &str, detail: &str) -> Result<()> {
    let t = now();
    state.append(
        vec![Body {
            decided_at: t.to_rfc3339(),
            run_id: String::new(),
            action: if fired {
                Action::AlertFired
            } else {
                Action::AlertResolved
            },
            target: String::new(),
            item_key: key.to_string(),
            category: String::new(),
            reason: "alert".into(),
            window: String::new(),
            expires_at: None,
            subject_hash: None,
            detail: detail.to_string(),
        }],
        &[],
    )?;
    Ok(())
}

/// A run as the state keeps it: a sweep (scheduled or not) or an erasure.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    /// retention or erasure.
    pub kind: String,
    pub dry_run: bool,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// The run's report as it closed (per target: found, deleted, held, failed, error), when
    /// it did.
    pub report: Option<serde_json::Value>,
}

fn run_record(r: &crate::db::DbRow) -> RunRecord {
    RunRecord {
        run_id: r.text(0),
        kind: r.text(1),
        dry_run: r.int(2) != 0,
        started_at: r.text(3),
        finished_at: r.opt_text(4),
        report: r
            .opt_text(5)
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok()),
    }
}

/// The newest runs, newest first.
pub fn runs(loaded: &Loaded, limit: usize) -> Result<Vec<RunRecord>> {
    let mut state = open_state(loaded, Access::Read)?;
    let rows = state.db().query(
        "SELECT run_id, kind, dry_run, started_at, finished_at, summary FROM runs ORDER BY started_at DESC, run_id DESC LIMIT ?1",
        &vals![limit as i64],
    )?;
    Ok(rows.iter().map(run_record).collect())
}

/// One run.
pub fn run(loaded: &Loaded, run_id: &str) -> Result<RunRecord> {
    let mut state = open_state(loaded, Access::Read)?;
    let r = state.db().query_opt(
        "SELECT run_id, kind, dry_run, started_at, finished_at, summary FROM runs WHERE run_id = ?1",
        &vals![run_id],
    )?;
    r.map(|r| run_record(&r))
        .ok_or_else(|| crate::error::Error::not_found(format!("no run {run_id} in the state")))
}

/// Who holds a target's lease (a sweep working on it), when someone does.
#[derive(Clone, Debug, Serialize)]
pub struct LeaseHolder {
    pub target: String,
    pub holder: String,
    pub since: String,
}

/// The targets whose lease a live sweep holds (renewed within `[state] lease_ttl`).
pub fn leases(loaded: &Loaded) -> Result<Vec<LeaseHolder>> {
    let mut state = open_state(loaded, Access::Read)?;
    let since = now().unix_seconds() - loaded.config.state.lease_ttl.as_secs().max(1);
    let rows = state.db().query(
        "SELECT target, pid, host, acquired_at FROM leases WHERE heartbeat >= ?1 ORDER BY target",
        &vals![since],
    )?;
    Ok(rows
        .iter()
        .map(|r| LeaseHolder {
            target: r.text(0),
            holder: format!("pid {} on {}", r.int(1), r.text(2)),
            since: r.text(3),
        })
        .collect())
}

/// Per schedule, how its newest fire ended (success, failure or misfire; skipped fires
/// aside): (schedule, result, run id, fire time).
pub fn latest_outcomes(state: &mut State) -> Result<Vec<(String, String, String, i64)>> {
    let rows = state.db().query(
        "SELECT f.schedule, f.result, f.run_id, f.fire_at FROM fires f
         WHERE f.result IN ('success', 'failure', 'misfire') AND f.fire_at = (
             SELECT MAX(g.fire_at) FROM fires g WHERE g.schedule = f.schedule AND g.result IN ('success', 'failure', 'misfire'))
         ORDER BY f.schedule",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| (r.text(0), r.text(1), r.text(2), r.int(3)))
        .collect())
}
