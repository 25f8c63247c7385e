//! The guard against a mistyped policy ("3d" for "30d"): the state remembers the policy
//! last applied to each target; before an apply deletes anything on a target, the config's
//! policy is compared with it, and a change that would newly make more than `[guard]
//! max_new_due` of the target's items due stops the apply there until a person accepts it.
//! A target's `max_delete` bounds one run the same way. Erasure requests are never held
//! back by the guard (their deadlines are the law's).
//!
//! Judging is read-only and done as the census judges (holds and exceptions protect): a
//! held item is never counted as newly lost.

use anyhow::{Context, Result};
use lethe_core::audit::{Action, AuditKey, Body};
use lethe_core::config::{Target, Window};
use lethe_core::expiry::{self, Protections, Verdict};
use lethe_core::time::Timestamp;
use serde::Serialize;

use crate::engine;
use crate::settings::Loaded;
use crate::state::State;
use crate::targets::kind_of;
use crate::{cells, vals};

/// Item keys a plan names per target and direction, at most.
pub const SAMPLE: usize = 10;

/// A target's policy as the state keeps it: its effective window, every field of it, and
/// (`reads`) where each item's own dates, retention and level are read from. A change there
/// changes what is due as surely as a window does, but cannot be judged under the old
/// settings: the plan then counts every item due now as newly due.
pub fn policy_json(target: &Target) -> Result<String> {
    let mut v = serde_json::to_value(&target.window)
        .with_context(|| format!("target {}: its window could not be written", target.name))?;
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("reads".into(), serde_json::Value::String(reads(target)));
    }
    Ok(v.to_string())
}

/// Where a target's items say when they expire and what level they are: the settings that
/// decide what is due besides the window.
pub fn reads(target: &Target) -> String {
    use crate::targets::{objects::ObjectStoreTarget, sql::SqlTarget, vendor::VendorTarget};
    // Where the items are, as a digest (a URL may carry a user name).
    let place = |what: &str| {
        let d = lethe_core::audit::sha256_hex(what.as_bytes());
        d.get(..16).unwrap_or(&d).to_string()
    };
    if let Some(s) = target.spec::<SqlTarget>() {
        return format!(
            "sql place={} key={:?} created_at={} created_at_format={:?} expires_at={:?} expires_at_format={:?} retention_days={:?} sensitivity_column={:?} action={:?} redact={:?} redact_with={} redact_after={:?}",
            place(&format!("{}|{}", s.url, s.table)),
            s.key,
            s.created_at,
            s.created_at_format.as_ref().map(ToString::to_string),
            s.expires_at,
            s.expires_at_format.as_ref().map(ToString::to_string),
            s.retention_days,
            s.sensitivity_column,
            s.action,
            s.redact,
            s.redact_with,
            s.redact_after.map(|d| d.to_string()),
        );
    }
    if let Some(o) = target.spec::<ObjectStoreTarget>() {
        return format!(
            "objects place={} sensitivity_metadata={:?}",
            place(&o.url),
            o.sensitivity_metadata
        );
    }
    if let Some(f) = target.spec::<crate::targets::fs::FsTarget>() {
        return format!(
            "filesystem place={} suffixes={:?} include={:?} exclude={:?}",
            place(&f.root),
            f.suffixes,
            f.include,
            f.exclude
        );
    }
    if let Some(v) = target.spec::<VendorTarget>() {
        return format!("vendor sensitivity_metadata={:?}", v.sensitivity_metadata);
    }
    target.type_name.to_string()
}

/// The `reads` of a stored policy (`None`: stored before they were kept).
fn reads_of(policy: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(policy)
        .ok()?
        .get("reads")?
        .as_str()
        .map(str::to_string)
}

/// A window as a person reads it: `30d`, or `30d (max 90d)`.
pub fn window_text(w: &Window) -> String {
    match w.max {
        Some(m) => format!("{} (max {m})", w.retention),
        None => w.retention.to_string(),
    }
}

/// The policy last applied to a target.
#[derive(Clone, Debug, Serialize)]
pub struct Applied {
    /// The window as stored (JSON).
    pub policy: String,
    pub applied_at: String,
    pub run_id: String,
    /// How it came to be recorded (first apply, a change under the limit, accepted by ...).
    pub how: String,
}

impl Applied {
    /// Whether the config's policy for the target is this one (every field compared).
    pub fn same_as(&self, current: &str) -> bool {
        match (
            serde_json::from_str::<serde_json::Value>(&self.policy),
            serde_json::from_str::<serde_json::Value>(current),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }

    /// The stored window, when this build can read it.
    pub fn window(&self) -> Result<Window, String> {
        serde_json::from_str(&self.policy).map_err(|e| {
            format!(
                "the policy last applied ({}) cannot be read by this build: {e}",
                self.policy
            )
        })
    }
}

/// The policy last applied to `target`, if any, checked against the trail: the register
/// is kept beside the trail, not in its chain, so a policy the last `policy_*` entry for
/// the target does not name was not applied through Lethe (the register was edited), and
/// is refused as unreadable until a person accepts the config's policy.
pub fn applied(state: &mut State, target: &str) -> Result<Option<Applied>> {
    let row = state.db().query_opt(
        "SELECT policy, applied_at, run_id, how FROM applied_policies WHERE target = ?1",
        &vals![target],
    )?;
    let Some(r) = row else {
        return Ok(None);
    };
    let mut a = Applied {
        policy: r.text(0),
        applied_at: r.text(1),
        run_id: r.text(2),
        how: r.text(3),
    };
    let last = state.db().query_opt(
        "SELECT detail FROM audit WHERE target = ?1 AND item_key = '' AND action IN ('policy_recorded', 'policy_accepted') ORDER BY seq DESC LIMIT 1",
        &vals![target],
    )?;
    let named = match last {
        Some(d) => d.text(0).starts_with(&format!("policy {}: ", a.policy)),
        // Its entry may have been pruned with the trail's oldest entries.
        None => state
            .db()
            .query_opt("SELECT 1 FROM audit_checkpoint", &[])?
            .is_some(),
    };
    if !named {
        // Unreadable on purpose: `window()` fails, so the plan cannot judge it and an
        // apply refuses the target until `plan --accept` records the policy afresh.
        a.policy = format!(
            "(the applied-policy register for {target} does not match the trail's last policy entry: it was changed outside Lethe)"
        );
    }
    Ok(Some(a))
}

/// A policy to record as applied to a target, with its trail entry.
#[derive(Clone, Debug)]
pub struct Record {
    pub target: String,
    pub category: String,
    pub policy: String,
    pub window: String,
    pub action: Action,
    /// Said in the entry and kept with the policy.
    pub how: String,
}

/// Records policies as applied, each with its trail entry, in one write: a policy is never
/// recorded without its entry.
pub fn record(state: &mut State, records: &[Record], run_id: &str, now: Timestamp) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let at = now.to_rfc3339();
    let bodies = records
        .iter()
        .map(|r| Body {
            decided_at: at.clone(),
            run_id: run_id.to_string(),
            action: r.action,
            target: r.target.clone(),
            item_key: String::new(),
            category: r.category.clone(),
            reason: "policy".into(),
            window: r.window.clone(),
            expires_at: None,
            subject_hash: None,
            detail: format!("policy {}: {}", r.policy, r.how),
        })
        .collect();
    state.append_with(bodies, |db| {
        for r in records {
            db.execute(
                "INSERT INTO applied_policies (target, policy, applied_at, run_id, how) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (target) DO UPDATE SET policy = excluded.policy, applied_at = excluded.applied_at, run_id = excluded.run_id, how = excluded.how",
                &vals![&r.target, &r.policy, &at, run_id, &r.how],
            )?;
        }
        Ok(())
    })
}

/// What the config's policy does to one target, against the policy last applied to it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TargetPlan {
    pub target: String,
    /// The window last applied (`None`: nothing applied yet on this state).
    pub applied: Option<String>,
    /// The config's window.
    pub window: String,
    /// Both policies as stored, every field (JSON text): a change in a field the windows
    /// above do not show is seen here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_policy: Option<String>,
    pub policy: String,
    /// The config's policy differs from the one last applied (or none was).
    pub changed: bool,
    /// How many items the target holds, when the store can count them.
    pub items: Option<u64>,
    /// Items the config makes due that the policy last applied did not (held and excepted
    /// items are not counted: they stay).
    pub newly_due: u64,
    pub newly_due_sample: Vec<String>,
    /// Items the policy last applied made due that the config does not.
    pub no_longer_due: u64,
    pub no_longer_due_sample: Vec<String>,
    /// `[guard] max_new_due`, and what it comes to for this target.
    pub limit: String,
    pub allowance: Option<u64>,
    /// More newly due than the limit lets through: an apply deletes nothing here until the
    /// change is accepted.
    pub over_limit: bool,
    /// Why the target could not be judged (an apply refuses it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The columns or metadata items are read from changed: the old settings cannot be
    /// judged with, so every item due now was counted as newly due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reads_changed: Option<String>,
}

/// Judges the target under the policy last applied and under the config's, reading only.
pub fn plan_target(
    loaded: &Loaded,
    target: &Target,
    applied: Option<&Applied>,
    now: Timestamp,
    protections: &Protections,
    key: &AuditKey,
) -> TargetPlan {
    let limit = loaded.config.guard.max_new_due;
    let mut p = TargetPlan {
        target: target.name.clone(),
        window: window_text(&target.window),
        limit: limit.to_string(),
        ..Default::default()
    };
    let current = match policy_json(target) {
        Ok(c) => c,
        Err(e) => {
            p.error = Some(format!("{e:#}"));
            p.over_limit = true;
            return p;
        }
    };
    p.policy = current.clone();
    p.applied_policy = applied.map(|a| a.policy.clone());
    let Some(applied) = applied else {
        // Nothing applied yet: the first apply records the policy; nothing to compare.
        p.changed = true;
        return p;
    };
    let old = match applied.window() {
        Ok(w) => w,
        Err(e) => {
            p.applied = Some(applied.policy.clone());
            p.changed = true;
            p.over_limit = true;
            p.error = Some(e);
            return p;
        }
    };
    p.applied = Some(window_text(&old));
    p.changed = !applied.same_as(&current);
    if !p.changed {
        return p;
    }
    let mut old_target = target.clone();
    old_target.window = old;
    // Where items are read from changed: the old settings cannot be judged with here, so
    // the change is said (plan, sweep notes) and only the window's part of it is weighed.
    if reads_of(&applied.policy) != Some(reads(target)) {
        p.reads_changed = Some(format!(
            "where its items are read from changed since the policy was last applied (was: {}; now: {}): the guard weighs only the window's part of the change; check what a dry run now finds due",
            reads_of(&applied.policy).unwrap_or_else(|| "not kept".into()),
            reads(target)
        ));
    }
    let judged = (|| -> Result<()> {
        p.items = open(loaded, target)?.count()?;
        p.newly_due = due_only_under(
            loaded,
            target,
            &old_target.window,
            now,
            protections,
            key,
            &mut p.newly_due_sample,
        )?;
        p.no_longer_due = due_only_under(
            loaded,
            &old_target,
            &target.window,
            now,
            protections,
            key,
            &mut p.no_longer_due_sample,
        )?;
        Ok(())
    })();
    match judged {
        Ok(()) => {
            p.allowance = limit.allowance(p.items);
            p.over_limit = limit.exceeded_by(p.newly_due, p.items);
        }
        Err(e) => {
            p.error = Some(format!("{e:#}"));
            p.over_limit = true;
        }
    }
    p
}

/// Opens a target to read.
fn open(loaded: &Loaded, target: &Target) -> Result<Box<dyn crate::targets::Connector>> {
    if !kind_of(target).can_sweep() {
        anyhow::bail!(
            "target type {} is not supported by this build yet",
            target.type_name
        );
    }
    loaded
        .open(target, false)
        .ok_or_else(|| anyhow::anyhow!("target type {} is not supported", target.type_name))?
        .with_context(|| format!("target {}", target.name))
}

/// Items due under `target`'s own window (as a sweep judges them, protections included)
/// that would not be due under `other`; a few of their keys go to `sample`.
fn due_only_under(
    loaded: &Loaded,
    target: &Target,
    other: &Window,
    now: Timestamp,
    protections: &Protections,
    key: &AuditKey,
    sample: &mut Vec<String>,
) -> Result<u64> {
    let mut table = open(loaded, target)?;
    let (created_at_format, expires_at_format) = engine::formats(target);
    let none = Protections::default();
    let mut n = 0u64;
    engine::judge_each(
        table.as_mut(),
        target,
        now,
        protections,
        key,
        |row, item, verdict| {
            // An item due under this window counts, held or excepted too: a protection
            // only hides a change until it ends, when nothing would weigh the change again.
            if !matches!(
                verdict,
                Verdict::Expired { .. } | Verdict::Held { .. } | Verdict::Excepted { .. }
            ) {
                return;
            }
            let facts = row.facts(created_at_format.as_ref(), expires_at_format.as_ref());
            let due_before = matches!(
                expiry::decide(now, other, &target.name, &item, None, &facts, &none),
                Verdict::Expired { .. }
            );
            if !due_before {
                n += 1;
                if sample.len() < SAMPLE {
                    sample.push(item);
                }
            }
        },
    )?;
    Ok(n)
}

/// Items an apply would delete on the target now (due, neither held nor excepted), and
/// how many it holds: for `max_delete`.
pub fn due_now(
    loaded: &Loaded,
    target: &Target,
    now: Timestamp,
    protections: &Protections,
    key: &AuditKey,
) -> Result<(u64, Option<u64>)> {
    let mut table = open(loaded, target)?;
    let total = table.count()?;
    let census = engine::census(table.as_mut(), target, now, protections, key)?;
    Ok((census.past_expiry[0], total))
}

/// What the guard decided for one target of a run.
#[derive(Clone, Debug, Default)]
pub struct Guarded {
    /// Why the target is not swept (an apply), or why an apply would not sweep it (a dry
    /// run: said as a note, the dry run goes on).
    pub refused: Option<String>,
    pub notes: Vec<String>,
    /// The policy to record as applied when the apply goes on.
    pub record: Option<Record>,
}

/// The guard's decision for one target before a retention sweep. `apply`: an apply (a
/// refusal stops it; a dry run only says what an apply would do). `allow_large`: the run
/// was told to go past the limits (`--allow-large`), by `by`.
pub fn check(
    loaded: &Loaded,
    state: &mut State,
    target: &Target,
    now: Timestamp,
    apply: bool,
    allow_large: bool,
    by: &str,
) -> Result<Guarded> {
    let mut g = Guarded::default();
    if !kind_of(target).can_sweep() {
        return Ok(g);
    }
    let applied = applied(state, &target.name)?;
    let current = policy_json(target)?;
    let window = window_text(&target.window);
    let protections = crate::registry::protections_unchecked(state, now)?;
    let record = |action: Action, how: String| Record {
        target: target.name.clone(),
        category: target.category.clone(),
        policy: current.clone(),
        window: window.clone(),
        action,
        how,
    };
    let erasure_note = "erasure requests are not held back by this guard";
    match &applied {
        None => {
            g.record = Some(record(
                Action::PolicyRecorded,
                "first apply on this state: policy recorded as applied".into(),
            ));
        }
        Some(a) if a.same_as(&current) => {}
        Some(a) => {
            let p = plan_target(loaded, target, Some(a), now, &protections, &state.key);
            let was = p.applied.clone().unwrap_or_else(|| a.policy.clone());
            let change = format!(
                "the policy changed since it was last applied ({}, window {was} -> {window})",
                a.applied_at
            );
            let counted = match (&p.error, p.items) {
                (Some(e), _) => format!("it could not be judged: {e}"),
                (None, Some(items)) => format!(
                    "it makes {} of the target's {items} items due that the policy last applied did not",
                    p.newly_due
                ),
                (None, None) => format!(
                    "it makes {} items due that the policy last applied did not (the store cannot count its items)",
                    p.newly_due
                ),
            };
            let limit = format!(
                "[guard] max_new_due is {}{}",
                p.limit,
                p.allowance
                    .map(|n| format!(" ({n} items here)"))
                    .unwrap_or_default()
            );
            if !p.over_limit {
                g.record = Some(record(
                    Action::PolicyRecorded,
                    format!("{change}; {counted}, within the limit ({limit}): recorded as applied"),
                ));
                g.notes.push(format!(
                    "{change}: {counted}, within the limit ({limit}){}",
                    if apply {
                        "; the new policy is recorded as applied"
                    } else {
                        "; an apply records it as applied"
                    }
                ));
                if let Some(why) = &p.reads_changed {
                    g.notes.push(why.clone());
                }
            } else if allow_large {
                g.record = Some(record(
                    Action::PolicyAccepted,
                    format!(
                        "{change}; {counted}, past the limit ({limit}); allowed for one run with --allow-large by {by}"
                    ),
                ));
                g.notes.push(format!(
                    "{change}: {counted}, past the limit ({limit}); allowed by --allow-large ({by}) and recorded as applied"
                ));
            } else {
                let sample = if p.newly_due_sample.is_empty() {
                    String::new()
                } else {
                    format!(" (e.g. {})", p.newly_due_sample.join(", "))
                };
                g.refused = Some(format!(
                    "{}: {change}; {counted}{sample}, more than the limit ({limit}). Review it with `lethe plan`, then accept it with `lethe plan --accept --reason \"...\"` or allow it for one run with `lethe sweep --apply --allow-large`; {erasure_note}",
                    if apply {
                        "nothing was deleted on this target"
                    } else {
                        "an apply would delete nothing on this target"
                    }
                ));
                return Ok(g);
            }
        }
    }
    if let Some(limit) = target.max_delete {
        let (due, total) = due_now(loaded, target, now, &protections, &state.key)?;
        if limit.exceeded_by(due, total) {
            let what = format!(
                "{due} items are due{}, more than its max_delete ({limit}{}) lets one run delete",
                total.map(|t| format!(" of its {t}")).unwrap_or_default(),
                limit
                    .allowance(total)
                    .map(|n| format!(", {n} items"))
                    .unwrap_or_default()
            );
            if allow_large {
                g.notes.push(format!(
                    "{what}; allowed for this run by --allow-large ({by})"
                ));
            } else {
                g.refused = Some(format!(
                    "{}: {what}. Check the policy and the data (`lethe sweep` shows what is due), then run `lethe sweep --apply --allow-large` to delete them in one run, or raise max_delete; {erasure_note}",
                    if apply {
                        "nothing was deleted on this target"
                    } else {
                        "an apply would delete nothing on this target"
                    }
                ));
                // Not recorded: nothing is applied on this target.
                g.record = None;
            }
        }
    }
    Ok(g)
}

// `delete_delay`: the schedule of deletions, kept in the state.

/// What earlier runs scheduled on a target: item key -> (run, when, unix seconds).
pub fn scheduled(
    state: &mut State,
    target: &str,
) -> Result<std::collections::HashMap<String, (String, i64)>> {
    let rows = state.db().query(
        "SELECT item_key, run_id, scheduled_at FROM scheduled_deletions WHERE target = ?1",
        &vals![target],
    )?;
    Ok(rows
        .iter()
        .map(|r| (r.text(0), (r.text(1), r.int(2))))
        .collect())
}

/// Writes what run `run_id` scheduled on the target, and, when the
/// run judged the whole target (`waiting` given), replaces the rest of the target's
/// schedule with what still waits: items deleted now, or no longer due, are dropped.
pub fn write_schedule(
    state: &mut State,
    target: &Target,
    run_id: &str,
    now: Timestamp,
    new: &[String],
    waiting: Option<&[(String, String, i64)]>,
) -> Result<()> {
    if new.is_empty() && waiting.is_none() {
        return Ok(());
    }
    let at = now.unix_seconds();
    let change = |db: &mut crate::db::Db| -> Result<()> {
        if let Some(waiting) = waiting {
            // Only what this run is done with goes (deleted, or no longer due); nothing it
            // read earlier is written back, so a `--cancel` made meanwhile holds.
            let still: std::collections::HashSet<&str> =
                waiting.iter().map(|(k, _, _)| k.as_str()).collect();
            let rows = db.query(
                "SELECT item_key FROM scheduled_deletions WHERE target = ?1",
                &vals![&target.name],
            )?;
            for k in rows.iter().map(|r| r.text(0)) {
                if !still.contains(k.as_str()) {
                    db.execute(
                        "DELETE FROM scheduled_deletions WHERE target = ?1 AND item_key = ?2",
                        &vals![&target.name, &k],
                    )?;
                }
            }
        }
        db.insert_many(
            "scheduled_deletions",
            &["target", "item_key", "run_id", "scheduled_at"],
            new.iter().map(|k| cells![&target.name, k, run_id, at]),
        )?;
        Ok(())
    };
    // Each item scheduled has its own `scheduled` entry, written with its batch.
    state.db().write(change)
}

/// What `lethe sweep --cancel RUN` dropped: items by target.
#[derive(Clone, Debug, Serialize)]
pub struct Cancelled {
    pub run_id: String,
    pub targets: Vec<(String, u64)>,
}

/// Drops what run `run_id` scheduled (`delete_delay`): none of it is deleted by that
/// schedule; a later run may find the items due and schedule them again. Recorded in the
/// trail, one entry per target, with who.
pub fn cancel(state: &mut State, run_id: &str, by: &str, now: Timestamp) -> Result<Cancelled> {
    let rows = state.db().query(
        "SELECT target, COUNT(*) FROM scheduled_deletions WHERE run_id = ?1 GROUP BY target ORDER BY target",
        &vals![run_id],
    )?;
    let targets: Vec<(String, u64)> = rows
        .iter()
        .map(|r| (r.text(0), r.int(1).max(0) as u64))
        .collect();
    if targets.is_empty() {
        return Ok(Cancelled {
            run_id: run_id.to_string(),
            targets,
        });
    }
    let bodies = targets
        .iter()
        .map(|(t, n)| Body {
            decided_at: now.to_rfc3339(),
            run_id: run_id.to_string(),
            action: Action::ScheduleCancelled,
            target: t.clone(),
            item_key: String::new(),
            category: String::new(),
            reason: "retention".into(),
            window: String::new(),
            expires_at: None,
            subject_hash: None,
            detail: format!("{n} scheduled deletions of run {run_id} cancelled by {by}"),
        })
        .collect();
    state.append_with(bodies, |db| {
        db.execute(
            "DELETE FROM scheduled_deletions WHERE run_id = ?1",
            &vals![run_id],
        )?;
        Ok(())
    })?;
    Ok(Cancelled {
        run_id: run_id.to_string(),
        targets,
    })
}
