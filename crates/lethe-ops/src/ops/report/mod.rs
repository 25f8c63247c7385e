//! `report`: the compliance figures the sign-off asks for, from the state (the trail and the
//! registers) and a census of the targets, read without writing or locking anything. Each
//! figure says the period it covers and how it was computed; each KPI has its goal and
//! whether it is met, overall and per target, category, owner, region and sensitivity.
//!
//! The same [`Report`] is printed as text, JSON, Markdown or CSV ([`render`]) and as the
//! dashboard's self-contained page ([`html`]).

pub mod html;
pub mod render;

use std::collections::BTreeMap;

use lethe_core::config::Target;
use lethe_core::expiry::Verdict;
use lethe_core::time::Timestamp;
use serde::{Deserialize, Serialize};

use crate::engine;
use crate::error::{Error, Result};
use crate::ops::common::open_state;
use crate::ops::reconcile::{ReconcileRequest, reconcile};
use crate::registry;
use crate::settings::Loaded;
use crate::state::Access;
use crate::util::now;
use crate::vals;

const DAY: i64 = 86_400_000_000;

/// What to report on.
#[derive(Clone, Debug, Default)]
pub struct ReportRequest {
    /// `YYYY-MM`: that calendar month (UTC).
    pub month: Option<String>,
    /// Start of the period (a date or RFC 3339); default 30 days before `until`.
    pub since: Option<String>,
    /// End of the period (exclusive); default now.
    pub until: Option<String>,
    /// Recorded deletions re-checked per target for the reconciliation figure; `Some(0)`
    /// skips reconciliation (the KPI is then not measured). Default [`DEFAULT_RECONCILE_SAMPLE`].
    pub reconcile_sample: Option<usize>,
}

/// Recorded deletions a report re-checks per target by default: enough for the figure,
/// cheap against a large store. `lethe audit reconcile` checks them all.
pub const DEFAULT_RECONCILE_SAMPLE: usize = 200;

/// The period a report covers: `[since, until)`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Period {
    pub since: String,
    pub until: String,
    /// `2026-11`, or `2026-10-28 to 2026-11-27`.
    pub label: String,
    /// Whether this is a calendar month's report (`--month`).
    pub monthly: bool,
}

/// One KPI: its value, its goal and whether it is met.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Kpi {
    pub id: String,
    pub name: String,
    /// `None` when there is nothing to measure (say why in `method`).
    pub value: Option<f64>,
    /// The value for people: `98.7%`, `3`, `2.1 h`.
    pub display: String,
    /// The goal, for people: `≥ 98%`; `None` for a figure without one.
    pub goal: Option<String>,
    /// Met, not met, or `None` (no goal, or nothing to measure).
    pub pass: Option<bool>,
    /// What the figure covers: the period, or "now" for a census figure.
    pub period: String,
    /// How it was computed.
    pub method: String,
}

/// Items past expiry now by how long past, exclusive buckets.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PastExpiry {
    /// More than 0, at most 1 day past expiry.
    pub up_to_1d: u64,
    /// More than 1, at most 7 days.
    pub d1_to_7: u64,
    /// More than 7 days.
    pub over_7d: u64,
    /// The expiry of the oldest of them.
    pub oldest_expiry: Option<String>,
}

impl PastExpiry {
    pub fn total(&self) -> u64 {
        self.up_to_1d + self.d1_to_7 + self.over_7d
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The figures of one target, or of a group of targets.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Figures {
    /// Items the targets hold now (`None` when a target cannot count them).
    pub items: Option<u64>,
    /// Items checked for the `[tags] required` entries, and how many lack one; `None` where
    /// the target's kind does not carry tags.
    pub tag_checked: Option<u64>,
    pub untagged: Option<u64>,
    pub tag_coverage: Option<f64>,
    /// Past expiry now and neither held, excepted nor in use.
    pub past_expiry: PastExpiry,
    pub held: u64,
    pub excepted: u64,
    pub in_use: u64,
    /// Items that cannot be judged (never deleted).
    pub unreadable: u64,
    /// Deletions recorded in the period (retention and erasure), redactions included: on a
    /// redacting target a redaction is how a due row is handled.
    pub deleted: u64,
    /// Of `deleted`, the rows redacted rather than deleted (they stay, their text gone).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redacted: u64,
    /// Failed deletions recorded in the period.
    pub failed: u64,
    /// `failed` entries of the period for items that could not be judged (an unreadable
    /// timestamp, a NULL key): recorded on every run, never a deletion attempted.
    pub not_judged: u64,
    /// deleted / (deleted + failed).
    pub success_rate: Option<f64>,
    /// Retention deletions in the period within 24 h of the item's expiry.
    pub deleted_within_24h: u64,
    /// Retention deletions in the period more than 24 h after expiry.
    pub deleted_late: u64,
    /// Retention deletions in the period of items a hold, an exception or running work
    /// had kept past their expiry: not timed from the expiry, not late.
    pub deleted_after_protection: u64,
    /// Items more than 24 h past expiry at the period's end and not deleted in it: those
    /// present now (unprotected), and those the trail shows deleted after the period.
    pub present_late: u64,
    /// deleted_within_24h / (deleted_within_24h + deleted_late + present_late).
    pub within_24h: Option<f64>,
    /// Time from expiry to deletion of the period's retention deletions, in seconds.
    pub time_to_delete_mean_s: Option<f64>,
    pub time_to_delete_p95_s: Option<f64>,
    /// Time from expiry to the first trail entry about the item, for items first recorded
    /// in the period, in seconds.
    pub time_to_detect_mean_s: Option<f64>,
    pub detected: u64,
}

/// One target's figures with the labels that group it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TargetFigures {
    pub target: String,
    /// `sql`, `filesystem`, ...; empty for a target no longer in the config.
    pub kind: String,
    pub category: String,
    pub owner: String,
    pub runbook: Option<String>,
    pub region: String,
    pub sensitivity: String,
    pub figures: Figures,
    /// Why the target could not be counted now (its trail figures still count).
    pub error: Option<String>,
    /// Whether the target is in the config (entries of a removed one still count).
    pub in_config: bool,
}

/// One group's figures (a category, owner, region or sensitivity).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GroupFigures {
    pub name: String,
    pub targets: Vec<String>,
    pub owner: Option<String>,
    pub runbook: Option<String>,
    pub figures: Figures,
    /// The item KPIs for this group: tag coverage, > 7 d past expiry, within 24 h,
    /// deletion success.
    pub kpis: Vec<Kpi>,
}

/// Figures grouped by each label.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Groups {
    pub by_target: Vec<GroupFigures>,
    pub by_category: Vec<GroupFigures>,
    pub by_sensitivity: Vec<GroupFigures>,
    pub by_owner: Vec<GroupFigures>,
    pub by_region: Vec<GroupFigures>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HoldLine {
    pub id: String,
    pub scope: String,
    pub target: Option<String>,
    pub item_key: Option<String>,
    pub subject_hash: Option<String>,
    pub case_id: String,
    pub reason: String,
    pub placed_by: String,
    pub placed_at: String,
    /// When it was released, if it was (after the period's start).
    pub released_at: Option<String>,
}

/// The exception register: every exception in force at some time in the period.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExceptionLine {
    pub id: String,
    pub target: String,
    pub item_key: String,
    pub owner: String,
    pub reason: String,
    pub until: String,
    pub renewals: u32,
    pub granted_by: String,
    pub granted_at: String,
    /// Where it stands now, as `lethe exception list` says it (`active`, `lapsed`,
    /// `revoked`, `superseded`).
    pub status: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestLine {
    pub id: String,
    pub kind: String,
    pub received_at: String,
    pub deadline: String,
    pub status: String,
}

/// Erasure requests: those received in the period, and those open now.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestFigures {
    pub received: u64,
    /// Of those received in the period: completed by their deadline.
    pub completed_in_time: u64,
    /// Of those received in the period: completed after their deadline.
    pub completed_late: u64,
    /// Of those received in the period: open, their deadline past.
    pub received_overdue: u64,
    /// Open now (any period), deadline past.
    pub overdue: Vec<RequestLine>,
    /// Open now, deadline not past.
    pub open: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunProblem {
    pub at: String,
    pub run_id: String,
    pub target: String,
    pub detail: String,
}

/// Runs in the period: sweeps that ended with an error, and missed scheduled runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunFigures {
    /// Target sweeps finished in the period (one per target per run), dry runs included.
    pub sweeps: u64,
    pub failed: Vec<RunProblem>,
    pub misfires: Vec<RunProblem>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReconcileFigures {
    pub checked: u64,
    pub matched: u64,
    pub success_rate: f64,
    pub mismatches: Vec<String>,
    /// Recorded deletions re-checked per target (`None`: all of them).
    pub sample: Option<usize>,
    pub errors: Vec<String>,
}

/// One day's point of a series.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DayCount {
    pub day: String,
    pub count: u64,
}

/// A target's backlog past expiry, day by day: what its last sweep of the day left due
/// (found minus deleted); `None` on a day without a sweep.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Backlog {
    pub target: String,
    pub points: Vec<Option<u64>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bucket {
    pub label: String,
    pub count: u64,
}

/// What the charts draw.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Series {
    /// Deletions per day of the period.
    pub deletions_per_day: Vec<DayCount>,
    pub backlog: Vec<Backlog>,
    /// Retention deletions of the period by time from expiry to deletion.
    pub time_to_delete: Vec<Bucket>,
}

/// One thing to fix, from a KPI not met.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Remediation {
    pub kpi: String,
    /// The target, category or request it is about.
    pub subject: String,
    pub text: String,
    pub owner: Option<String>,
    pub runbook: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub generated_at: String,
    pub config: String,
    pub period: Period,
    pub kpis: Vec<Kpi>,
    pub targets: Vec<TargetFigures>,
    pub groups: Groups,
    pub holds: Vec<HoldLine>,
    pub exceptions: Vec<ExceptionLine>,
    pub requests: RequestFigures,
    pub runs: RunFigures,
    pub reconciliation: Option<ReconcileFigures>,
    pub series: Series,
    pub remediation: Vec<Remediation>,
    /// The trail the figures come from, verified from the period's start.
    pub trail: TrailCheck,
    /// Whether every KPI with a goal and a value meets it.
    pub all_met: bool,
}

/// What verifying the trail from the period's start found.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrailCheck {
    /// Verified from the entry after this one (0: the whole trail).
    pub from_seq: i64,
    pub head_seq: i64,
    pub entries: u64,
    /// Empty when intact.
    pub problems: Vec<String>,
    /// The trail was pruned (`[audit] retention`): entries decided before this were
    /// removed, and it verifies from the checkpoint at `from_seq`.
    pub pruned_before: Option<String>,
}

/// Verifies the trail from the entry before the period's first (its protections chain
/// head recomputed up to there) to the head: the figures are only as good as the trail.
fn check_trail(
    loaded: &Loaded,
    state: &mut crate::state::State,
    since: Timestamp,
) -> Result<TrailCheck> {
    let (s, _) = text_bounds(since, since);
    // The entry before the period's first: verification resumes after it.
    let from = state
        .db()
        .query_opt(
            "SELECT seq FROM audit WHERE seq < (SELECT MIN(seq) FROM audit WHERE decided_at >= ?1) ORDER BY seq DESC LIMIT 1",
            &vals![&s],
        )?
        .map(|r| r.int(0));
    // A pruned trail starts at its checkpoint, which alone knows the protections chain's
    // head there and the entries kept below it: it is verified whole, from there.
    let pruned = state
        .db()
        .query_opt("SELECT seq, body FROM audit_checkpoint WHERE id = 1", &[])?
        .map(|r| {
            let cutoff = serde_json::from_str::<serde_json::Value>(&r.text(1))
                .ok()
                .and_then(|b| b["cutoff"].as_str().map(str::to_string));
            (r.int(0), cutoff)
        });
    let checkpoint = match from.filter(|_| pruned.is_none()) {
        Some(seq) => state.checkpoint_at(seq)?,
        None => None,
    };
    let (outcome, _) = crate::ops::audit::verify_since(loaded, checkpoint.as_ref())?;
    Ok(TrailCheck {
        from_seq: pruned
            .as_ref()
            .map(|(seq, _)| *seq)
            .or(checkpoint.as_ref().map(|c| c.seq))
            .unwrap_or(0),
        pruned_before: pruned.and_then(|(_, cutoff)| cutoff),
        head_seq: outcome.head_seq,
        entries: outcome.entries,
        problems: outcome.problems,
    })
}

/// Reads a period bound: a date (midnight UTC) or RFC 3339.
fn bound(flag: &str, s: &str) -> Result<Timestamp> {
    Timestamp::parse(s).map_err(|e| Error::usage(format!("{flag} {s:?}: {e}")))
}

fn day_of(t: Timestamp) -> String {
    t.to_rfc3339().chars().take(10).collect()
}

/// The period a request asks for.
pub fn period(req: &ReportRequest, now: Timestamp) -> Result<(Timestamp, Timestamp, Period)> {
    if let Some(m) = &req.month {
        if req.since.is_some() || req.until.is_some() {
            return Err(Error::usage(
                "--month is a whole calendar month: give it, or --since/--until, not both",
            ));
        }
        let bad = || {
            Error::usage(format!(
                "--month {m:?}: expected YYYY-MM with a year from 1970 to 9998, e.g. 2026-11"
            ))
        };
        let (y, mo) = m.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || mo.len() != 2 || !y.bytes().chain(mo.bytes()).all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let (y, mo): (i32, u32) = (
            y.parse().map_err(|_| bad())?,
            mo.parse().map_err(|_| bad())?,
        );
        if !(1970..=9998).contains(&y) || !(1..=12).contains(&mo) {
            return Err(bad());
        }
        let since = bound("--month", &format!("{y:04}-{mo:02}-01T00:00:00Z"))?;
        let (ny, nm) = if mo == 12 { (y + 1, 1) } else { (y, mo + 1) };
        let until = bound("--month", &format!("{ny:04}-{nm:02}-01T00:00:00Z"))?;
        return Ok((
            since,
            until,
            Period {
                since: since.to_rfc3339(),
                until: until.to_rfc3339(),
                label: format!("{y:04}-{mo:02}"),
                monthly: true,
            },
        ));
    }
    let until = match &req.until {
        Some(u) => bound("--until", u)?,
        None => now,
    };
    let since = match &req.since {
        Some(s) => bound("--since", s)?,
        None => Timestamp::from_micros(until.as_micros() - 30 * DAY),
    };
    if since >= until {
        return Err(Error::usage(format!(
            "the period is empty: --since {} is not before --until {}",
            since.to_rfc3339(),
            until.to_rfc3339()
        )));
    }
    Ok((
        since,
        until,
        Period {
            since: since.to_rfc3339(),
            until: until.to_rfc3339(),
            label: format!("{} to {}", day_of(since), day_of(until)),
            monthly: false,
        },
    ))
}

/// What the trail says about one target in the period.
#[derive(Default)]
struct TrailAcc {
    category: String,
    deleted: u64,
    redacted: u64,
    failed: u64,
    /// `failed` entries for items that could not be judged (no deletion was attempted).
    not_judged: u64,
    within_24h: u64,
    late: u64,
    /// Retention deletions of items a hold, an exception or running work kept past their
    /// expiry: not timed from the expiry.
    after_protection: u64,
    /// Items deleted after the period that were more than 24 h past expiry at its end.
    late_at_end: u64,
    /// Seconds from expiry to deletion, for the mean and p95.
    ttd: Vec<f64>,
    detect_sum: f64,
    detected: u64,
    /// Day index -> (time of the day's last sweep, backlog it left).
    backlog: BTreeMap<i64, (Timestamp, u64)>,
}

/// What a census of one target finds now.
#[derive(Default)]
struct CensusAcc {
    items: Option<u64>,
    tag_checked: Option<u64>,
    untagged: Option<u64>,
    past: PastExpiry,
    held: u64,
    excepted: u64,
    in_use: u64,
    unreadable: u64,
    present_late: u64,
}

/// `key=value` tokens of a `sweep_finished` entry's detail; `error=` runs to the end (or to
/// the tokens written after it).
fn detail_field<'a>(detail: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("{key}=");
    let at = if detail.starts_with(&pat) {
        0
    } else {
        detail.find(&format!(" {pat}"))? + 1
    };
    let rest = &detail[at + pat.len()..];
    if key == "error" {
        let end = [" interrupted=true", " by="]
            .iter()
            .filter_map(|m| rest.find(m))
            .min()
            .unwrap_or(rest.len());
        return Some(&rest[..end]);
    }
    Some(rest.split(' ').next().unwrap_or(""))
}

/// The days a period's series covers: from the UTC midnight at or before `since` to the
/// one at or after `until`, at most [`MAX_DAYS`].
fn day_zero(since: Timestamp) -> Timestamp {
    Timestamp::from_micros(since.as_micros().div_euclid(DAY) * DAY)
}

/// Days a series covers at most (ten years); a longer period's series stops there, and
/// says so.
pub const MAX_DAYS: usize = 3660;

/// A `failed` entry for an item that could not be judged (an unreadable timestamp, a key
/// that is NULL): recorded each run, but no deletion was attempted.
fn not_judged(item_key: &str, detail: &str) -> bool {
    item_key == "(NULL key)" || detail.ends_with("not deleted on a guess")
}

/// Text bounds one second wider than the period: the trail's times are RFC 3339 text,
/// whose order is not the instants' within a second (`…:00.5Z` sorts before `…:00Z`), so
/// the SQL takes a little more and each entry is then kept by its parsed time.
fn text_bounds(since: Timestamp, until: Timestamp) -> (String, String) {
    (
        Timestamp::from_micros(since.as_micros() - 1_000_000).to_rfc3339(),
        Timestamp::from_micros(until.as_micros() + 1_000_000).to_rfc3339(),
    )
}

/// Reads the trail's entries of the period, per target.
fn read_trail(
    state: &mut crate::state::State,
    since: Timestamp,
    until: Timestamp,
    per_day: &mut [u64],
    runs: &mut RunFigures,
) -> Result<BTreeMap<String, TrailAcc>> {
    let (s, u) = text_bounds(since, until);
    let in_period = |t: Timestamp| t >= since && t < until;
    let zero = day_zero(since);
    let mut acc: BTreeMap<String, TrailAcc> = BTreeMap::new();
    let day_index =
        |t: Timestamp| usize::try_from((t.as_micros() - zero.as_micros()).div_euclid(DAY)).ok();
    // Items a hold, an exception or running work kept past their expiry (by target, key
    // and expiry): their deletion is not late, whenever it comes.
    let mut protected: std::collections::HashSet<(String, String, String)> =
        std::collections::HashSet::new();
    state.db().query_each(
        "SELECT target, item_key, expires_at FROM audit
         WHERE action IN ('held', 'excepted', 'in_use') AND reason = 'retention' AND expires_at IS NOT NULL",
        &[],
        |r| {
            protected.insert((r.text(0), r.text(1), r.text(2)));
            Ok(())
        },
    )?;
    // Dry runs attempt nothing: their `failed` entries say what would fail, and are not
    // counted against the deletion success rate.
    let mut dry_runs: std::collections::HashSet<String> = std::collections::HashSet::new();
    state.db().query_each(
        "SELECT DISTINCT run_id FROM audit WHERE action = 'sweep_finished' AND decided_at >= ?1 AND detail LIKE 'dry_run=true%'",
        &vals![&s],
        |r| {
            dry_runs.insert(r.text(0));
            Ok(())
        },
    )?;
    state.db().query_each(
        "SELECT target, action, reason, decided_at, expires_at, category, run_id, detail, item_key FROM audit
         WHERE decided_at >= ?1
           AND action IN ('deleted', 'redacted', 'failed', 'sweep_finished', 'schedule_misfire')
         ORDER BY seq",
        &vals![&s],
        |r| {
            let (target, action, reason, at_text) = (r.text(0), r.text(1), r.text(2), r.text(3));
            let Ok(at) = Timestamp::parse(&at_text) else {
                return Ok(());
            };
            if at < since {
                return Ok(());
            }
            if !in_period(at) {
                // After the period: a retention deletion of an item already more than a
                // day past expiry at the period's end was late then, though gone now.
                if (action == "deleted" || action == "redacted") && reason == "retention" {
                    let key = (target.clone(), r.text(8), r.text(4));
                    if let Some(e) = r.opt_text(4).and_then(|e| Timestamp::parse(&e).ok())
                        && e.as_micros() + DAY <= until.as_micros()
                        && !protected.contains(&key)
                    {
                        acc.entry(target).or_default().late_at_end += 1;
                    }
                }
                return Ok(());
            }
            if action == "schedule_misfire" {
                runs.misfires.push(RunProblem {
                    at: at_text,
                    run_id: r.text(6),
                    target,
                    detail: r.text(7),
                });
                return Ok(());
            }
            let a = acc.entry(target.clone()).or_default();
            if a.category.is_empty() {
                a.category = r.text(5);
            }
            match action.as_str() {
                // A redaction handles a due row as a deletion does: timed and counted alike.
                "deleted" | "redacted" => {
                    a.deleted += 1;
                    if action == "redacted" {
                        a.redacted += 1;
                    }
                    if let Some(i) = day_index(at)
                        && let Some(c) = per_day.get_mut(i)
                    {
                        *c += 1;
                    }
                    let expires = r.opt_text(4);
                    if reason == "retention"
                        && let Some(e) = expires.as_deref().and_then(|e| Timestamp::parse(e).ok())
                    {
                        if protected.contains(&(target.clone(), r.text(8), r.text(4))) {
                            a.after_protection += 1;
                            return Ok(());
                        }
                        let secs = (at.as_micros() - e.as_micros()) as f64 / 1e6;
                        if secs <= 86_400.0 {
                            a.within_24h += 1;
                        } else {
                            a.late += 1;
                        }
                        a.ttd.push(secs.max(0.0));
                    }
                }
                "failed" => {
                    if dry_runs.contains(&r.text(6)) {
                        return Ok(());
                    }
                    if not_judged(&r.text(8), &r.text(7)) {
                        a.not_judged += 1;
                    } else {
                        a.failed += 1;
                    }
                }
                _ => {
                    let detail = r.text(7);
                    runs.sweeps += 1;
                    if let Some(e) = detail_field(&detail, "error") {
                        runs.failed.push(RunProblem {
                            at: at_text,
                            run_id: r.text(6),
                            target: target.clone(),
                            detail: e.to_string(),
                        });
                    }
                    let num = |k| {
                        detail_field(&detail, k)
                            .and_then(|v| v.parse::<u64>().ok())
                            .unwrap_or(0)
                    };
                    // what the run left past expiry: a dry run deletes nothing
                    if let Some(i) = day_index(at) {
                        let left = num("found")
                            .saturating_sub(num("deleted"))
                            .saturating_sub(num("redacted"));
                        a.backlog.insert(i as i64, (at, left));
                    }
                }
            }
            Ok(())
        },
    )?;
    // Time to detect: for each item (by target, key and expiry, so that an item made again
    // under an old key is a new item) whose first entry past expiry is in the period, that
    // entry's time minus the item's expiry.
    state.db().query_each(
        "SELECT target, MIN(decided_at), expires_at FROM audit
         WHERE action IN ('deleted', 'redacted', 'failed', 'would_delete', 'would_redact', 'held', 'excepted', 'in_use')
           AND reason = 'retention' AND expires_at IS NOT NULL
         GROUP BY target, item_key, expires_at
         HAVING MIN(decided_at) >= ?1 AND MIN(decided_at) < ?2",
        &vals![&s, &u],
        |r| {
            if let (Some(e), Some(at)) = (
                r.opt_text(2).and_then(|e| Timestamp::parse(&e).ok()),
                r.opt_text(1).and_then(|a| Timestamp::parse(&a).ok()),
            ) && in_period(at)
            {
                let secs = (at.as_micros() - e.as_micros()) as f64 / 1e6;
                let a = acc.entry(r.text(0)).or_default();
                a.detect_sum += secs.max(0.0);
                a.detected += 1;
            }
            Ok(())
        },
    )?;
    Ok(acc)
}

/// Counts one target now: items, tags, and what is past expiry, judged as a sweep would.
fn census_target(
    loaded: &Loaded,
    t: &Target,
    now: Timestamp,
    until: Timestamp,
    protections: &lethe_core::expiry::Protections,
    key: &lethe_core::audit::AuditKey,
) -> Result<CensusAcc> {
    let mut table = match loaded.open(t, false) {
        None => {
            return Err(anyhow::anyhow!(
                "target type {} is not supported by this build yet",
                t.type_name
            )
            .into());
        }
        Some(Err(e)) => return Err(e.into()),
        Some(Ok(table)) => table,
    };
    let mut c = CensusAcc::default();
    let late_by = until.min(now).as_micros() - DAY;
    let mut oldest: Option<Timestamp> = None;
    let not_read = engine::judge_each(
        table.as_mut(),
        t,
        now,
        protections,
        key,
        |row, _, verdict| match verdict {
            Verdict::Invalid { .. } => c.unreadable += 1,
            Verdict::Keep { .. } => {}
            Verdict::Held { .. } => c.held += 1,
            Verdict::Excepted { .. } => c.excepted += 1,
            Verdict::Expired { .. } if row.in_use.is_some() => c.in_use += 1,
            Verdict::Expired { expires_at, .. } => {
                let past = now.as_micros() - expires_at.as_micros();
                if past > 7 * DAY {
                    c.past.over_7d += 1;
                } else if past > DAY {
                    c.past.d1_to_7 += 1;
                } else {
                    c.past.up_to_1d += 1;
                }
                if expires_at.as_micros() <= late_by {
                    c.present_late += 1;
                }
                if oldest.is_none_or(|o| expires_at < o) {
                    oldest = Some(expires_at);
                }
            }
        },
    )?;
    c.unreadable += not_read + table.null_keys(now, None)?;
    c.past.oldest_expiry = oldest.map(Timestamp::to_rfc3339);
    c.items = table.count()?;
    c.untagged = table.count_untagged(&loaded.config.tags.required)?;
    c.tag_checked = c.untagged.and(c.items);
    Ok(c)
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// The 95th percentile (nearest rank) of `v`, which it sorts.
fn p95(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((0.95 * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

fn add_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x + y),
        (x, None) | (None, x) => x,
    }
}

/// Figures of a group: sums, and the rates and times recomputed from the sums (and from
/// every deletion's time, for the p95).
fn combine<'a>(parts: impl Iterator<Item = (&'a Figures, &'a [f64])>) -> Figures {
    let mut f = Figures::default();
    let mut ttd: Vec<f64> = Vec::new();
    let mut detect_sum = 0.0;
    let mut oldest: Option<String> = None;
    let mut any_items = false;
    for (p, times) in parts {
        if p.items.is_some() {
            any_items = true;
        }
        f.items = add_opt(f.items, p.items);
        f.tag_checked = add_opt(f.tag_checked, p.tag_checked);
        f.untagged = add_opt(f.untagged, p.untagged);
        f.past_expiry.up_to_1d += p.past_expiry.up_to_1d;
        f.past_expiry.d1_to_7 += p.past_expiry.d1_to_7;
        f.past_expiry.over_7d += p.past_expiry.over_7d;
        if let Some(o) = &p.past_expiry.oldest_expiry
            && oldest.as_ref().is_none_or(|x| earlier(o, x))
        {
            oldest = Some(o.clone());
        }
        f.held += p.held;
        f.excepted += p.excepted;
        f.in_use += p.in_use;
        f.unreadable += p.unreadable;
        f.deleted += p.deleted;
        f.redacted += p.redacted;
        f.failed += p.failed;
        f.not_judged += p.not_judged;
        f.deleted_after_protection += p.deleted_after_protection;
        f.deleted_within_24h += p.deleted_within_24h;
        f.deleted_late += p.deleted_late;
        f.present_late += p.present_late;
        detect_sum += p.time_to_detect_mean_s.unwrap_or(0.0) * p.detected as f64;
        f.detected += p.detected;
        ttd.extend_from_slice(times);
    }
    if !any_items {
        f.items = None;
    }
    f.past_expiry.oldest_expiry = oldest;
    finish(&mut f, &mut ttd, detect_sum);
    f
}

/// Whether RFC 3339 time `a` is before `b` (parsed; text as a fallback).
fn earlier(a: &str, b: &str) -> bool {
    match (Timestamp::parse(a), Timestamp::parse(b)) {
        (Ok(x), Ok(y)) => x < y,
        _ => a < b,
    }
}

/// The rates and times from the counts.
fn finish(f: &mut Figures, ttd: &mut [f64], detect_sum: f64) {
    f.tag_coverage = match (f.tag_checked, f.untagged) {
        (Some(n), Some(u)) => ratio(n.saturating_sub(u), n),
        _ => None,
    };
    f.success_rate = ratio(f.deleted, f.deleted + f.failed);
    f.within_24h = ratio(
        f.deleted_within_24h,
        f.deleted_within_24h + f.deleted_late + f.present_late,
    );
    f.time_to_delete_mean_s = (!ttd.is_empty()).then(|| ttd.iter().sum::<f64>() / ttd.len() as f64);
    f.time_to_delete_p95_s = p95(ttd);
    f.time_to_detect_mean_s = (f.detected > 0).then(|| detect_sum / f.detected as f64);
}

fn pct(v: Option<f64>) -> String {
    match v {
        Some(v) => {
            let p = v * 100.0;
            if p > 99.0 && p < 100.0 {
                format!("{p:.2}%")
            } else {
                format!("{p:.1}%")
            }
        }
        None => "not measured".into(),
    }
}

/// A duration in seconds for people.
pub fn human_secs(s: Option<f64>) -> String {
    match s {
        None => "not measured".into(),
        Some(s) if s < 60.0 => format!("{s:.0} s"),
        Some(s) if s < 3600.0 => format!("{:.1} min", s / 60.0),
        Some(s) if s < 86_400.0 => format!("{:.1} h", s / 3600.0),
        Some(s) => format!("{:.1} d", s / 86_400.0),
    }
}

/// A KPI's goal: as people read it, and the test a value must pass.
type Goal<'a> = Option<(&'a str, fn(f64) -> bool)>;

struct KpiArgs<'a> {
    period: &'a str,
}

impl KpiArgs<'_> {
    #[allow(clippy::too_many_arguments)]
    fn kpi(
        &self,
        id: &str,
        name: &str,
        value: Option<f64>,
        display: String,
        goal: Goal<'_>,
        now_figure: bool,
        method: &str,
    ) -> Kpi {
        Kpi {
            id: id.into(),
            name: name.into(),
            value,
            display,
            goal: goal.map(|(g, _)| g.to_string()),
            pass: goal.and_then(|(_, ok)| value.map(ok)),
            period: if now_figure {
                "now".into()
            } else {
                self.period.into()
            },
            method: method.into(),
        }
    }
}

/// The item KPIs, for the whole deployment or one group. `uncounted` names the targets
/// (of the config) that could not be counted now: a figure a census makes cannot be shown
/// met without them, so it is not met, and says why.
fn item_kpis(f: &Figures, k: &KpiArgs<'_>, uncounted: &[String]) -> Vec<Kpi> {
    let mut kpis = vec![
        k.kpi(
            "tag_coverage",
            "Assets tagged",
            f.tag_coverage,
            pct(f.tag_coverage),
            Some(("≥ 98%", |v| v >= 0.98)),
            true,
            "items carrying every [tags] required entry / items checked, over the targets whose kind carries tags (object stores, vendor stores); other targets are not counted",
        ),
        k.kpi(
            "overdue_7d",
            "Items > 7 d past expiry without an approved exception",
            Some(f.past_expiry.over_7d as f64),
            f.past_expiry.over_7d.to_string(),
            Some(("= 0", |v| v == 0.0)),
            true,
            "items present now more than 7 days past their expiry, judged as a sweep would, not under a legal hold, an approved exception or running vendor work",
        ),
        k.kpi(
            "deleted_within_24h",
            "Expired items deleted within 24 h",
            f.within_24h,
            pct(f.within_24h),
            Some(("> 99%", |v| v > 0.99)),
            false,
            "retention deletions in the period made at most 24 h after the item's expiry (trail: expires_at and decided_at) / (those deletions + items more than 24 h past expiry at the period's end and not deleted in it: present now and unprotected, or deleted after the period); deletions of items a hold, an exception or running work kept past expiry are not timed",
        ),
        k.kpi(
            "deletion_success",
            "Deletion success rate",
            f.success_rate,
            pct(f.success_rate),
            Some(("≥ 99%", |v| v >= 0.99)),
            false,
            "deleted / (deleted + failed) trail entries in the period, retention and erasure; failed entries of dry runs and of items that could not be judged (neither attempted a deletion) are not counted",
        ),
    ];
    if !uncounted.is_empty() {
        for kpi in kpis.iter_mut().filter(|x| {
            ["tag_coverage", "overdue_7d", "deleted_within_24h"].contains(&x.id.as_str())
        }) {
            kpi.pass = Some(false);
            kpi.display = format!(
                "{} ({} target(s) not counted)",
                kpi.display,
                uncounted.len()
            );
            kpi.method = format!(
                "{}. Not counted now: {}: the figure cannot be shown met without them",
                kpi.method,
                uncounted.join(", ")
            );
        }
    }
    kpis
}

/// Builds the report. The trail's verification reads on its own connection, in its own
/// thread, while the trail's figures and the census are made; the reconciliation follows
/// (run beside them too, the three together pass 64 MB on a 550k-entry trail).
pub fn report(loaded: &Loaded, req: &ReportRequest) -> Result<Report> {
    let now = now();
    let (since, until, period) = period(req, now)?;
    let sample = req.reconcile_sample.unwrap_or(DEFAULT_RECONCILE_SAMPLE);
    std::thread::scope(|scope| {
        let verifying = scope.spawn(move || -> Result<TrailCheck> {
            let mut state = open_state(loaded, Access::Read)?;
            check_trail(loaded, &mut state, since)
        });
        let stopped = |what: &str| Error::from(anyhow::anyhow!("{what} stopped unexpectedly"));
        assemble(
            loaded,
            now,
            (since, until, period),
            || {
                verifying
                    .join()
                    .map_err(|_| stopped("the trail's verification"))?
            },
            || reconcile_figures(loaded, sample),
        )
    })
}

/// `audit reconcile` over a sample, as the report gives it; `None` for a sample of 0.
fn reconcile_figures(loaded: &Loaded, sample: usize) -> Result<Option<ReconcileFigures>> {
    if sample == 0 {
        return Ok(None);
    }
    let r = reconcile(
        loaded,
        &ReconcileRequest {
            target: None,
            sample: Some(sample),
        },
    )?;
    Ok(Some(ReconcileFigures {
        checked: r.checked,
        matched: r.matched,
        success_rate: r.success_rate,
        mismatches: r
            .mismatches
            .iter()
            .map(|m| format!("{}: {}: {}", m.target, m.key, m.what))
            .collect(),
        sample: Some(sample),
        errors: r
            .targets
            .iter()
            .filter_map(|t| t.error.as_ref().map(|e| format!("{}: {e}", t.target)))
            .collect(),
    }))
}

fn assemble(
    loaded: &Loaded,
    now: Timestamp,
    (since, until, period): (Timestamp, Timestamp, Period),
    verified: impl FnOnce() -> Result<TrailCheck>,
    reconciled: impl FnOnce() -> Result<Option<ReconcileFigures>>,
) -> Result<Report> {
    let zero = day_zero(since);
    let days = usize::try_from((until.as_micros() - zero.as_micros() + DAY - 1) / DAY)
        .unwrap_or(0)
        .min(MAX_DAYS);
    let mut per_day = vec![0u64; days];
    let mut runs = RunFigures::default();
    let mut state = open_state(loaded, Access::Read)?;
    let mut trail_acc = read_trail(&mut state, since, until, &mut per_day, &mut runs)?;
    let protections = registry::protections_unchecked(&mut state, now)?;

    // Registers.
    let all_holds = registry::holds(&mut state)?;
    let active_holds = all_holds.iter().filter(|h| h.released_at.is_none()).count() as u64;
    // in force at some time in the period: placed before its end, not released before
    // its start
    let holds: Vec<HoldLine> = all_holds
        .into_iter()
        .filter(|h| {
            Timestamp::parse(&h.placed_at).is_ok_and(|p| p < until)
                && h.released_at
                    .as_deref()
                    .is_none_or(|r| Timestamp::parse(r).is_ok_and(|r| r > since))
        })
        .map(|h| HoldLine {
            id: h.id,
            scope: h.scope,
            target: h.target,
            item_key: h.item_key,
            subject_hash: h.subject_hash,
            case_id: h.case_id,
            reason: h.reason,
            placed_by: h.placed_by,
            placed_at: h.placed_at,
            released_at: h.released_at,
        })
        .collect();
    let all_excs = registry::exceptions(&mut state, now)?;
    let active_exceptions = all_excs.iter().filter(|e| e.status == "active").count() as u64;
    let in_period = |start: &str, end: Option<&str>| {
        let starts_before_end = Timestamp::parse(start).is_ok_and(|s| s < until);
        let ends_after_start = end.is_none_or(|e| Timestamp::parse(e).is_ok_and(|e| e > since));
        starts_before_end && ends_after_start
    };
    // A renewal ends the exception it supersedes when it is granted.
    let granted: std::collections::HashMap<String, String> = all_excs
        .iter()
        .map(|e| (e.id.clone(), e.granted_at.clone()))
        .collect();
    let exceptions: Vec<ExceptionLine> = all_excs
        .into_iter()
        .filter(|e| {
            let mut end = e.until.as_str();
            for cut in [
                e.revoked_at.as_deref(),
                e.superseded_by
                    .as_ref()
                    .and_then(|id| granted.get(id))
                    .map(String::as_str),
            ]
            .into_iter()
            .flatten()
            {
                if earlier(cut, end) {
                    end = cut;
                }
            }
            in_period(&e.granted_at, Some(end))
        })
        .map(|e| ExceptionLine {
            id: e.id,
            target: e.target,
            item_key: e.item_key,
            owner: e.owner,
            reason: e.reason,
            until: e.until,
            renewals: e.renewal,
            granted_by: e.granted_by,
            granted_at: e.granted_at,
            status: e.status,
        })
        .collect();
    let mut requests = RequestFigures::default();
    for r in registry::requests(&mut state)? {
        if r.kind != "erasure" {
            continue;
        }
        let received = Timestamp::parse(&r.received_at).ok();
        let deadline = Timestamp::parse(&r.deadline).ok();
        let closed = crate::ops::erase::is_closed(&r);
        if received.is_some_and(|t| t >= since && t < until) {
            requests.received += 1;
            if closed {
                let done = Timestamp::parse(&r.updated_at).ok();
                match (done, deadline) {
                    (Some(d), Some(dl)) if d <= dl => requests.completed_in_time += 1,
                    _ => requests.completed_late += 1,
                }
            } else if deadline.is_none_or(|d| d < now) {
                requests.received_overdue += 1;
            }
        }
        if !closed {
            if deadline.is_some_and(|d| d < now) {
                requests.overdue.push(RequestLine {
                    id: r.id,
                    kind: r.kind,
                    received_at: r.received_at,
                    deadline: r.deadline,
                    status: r.status,
                });
            } else {
                requests.open += 1;
            }
        }
    }

    // Census of each target, now.
    let mut targets: Vec<TargetFigures> = Vec::new();
    let mut times: Vec<Vec<f64>> = Vec::new();
    let mut backlogs: Vec<BTreeMap<i64, (Timestamp, u64)>> = Vec::new();
    let categories = &loaded.config.categories;
    let mut names: Vec<String> = loaded
        .config
        .targets
        .iter()
        .map(|t| t.name.clone())
        .collect();
    for gone in trail_acc.keys() {
        if !names.contains(gone) && !gone.is_empty() {
            names.push(gone.clone());
        }
    }
    for name in &names {
        let t = loaded.config.target(name);
        let mut acc = trail_acc.remove(name).unwrap_or_default();
        let (census, error) = match t {
            Some(t) => match census_target(loaded, t, now, until, &protections, &state.key) {
                Ok(c) => (c, None),
                Err(e) => (CensusAcc::default(), Some(format!("{e:#}"))),
            },
            None => (CensusAcc::default(), None),
        };
        let category = t
            .map(|t| t.category.clone())
            .unwrap_or(acc.category.clone());
        let cat = categories.get(&category);
        let labels = t.map(|t| t.labels.clone()).unwrap_or_default();
        let mut f = Figures {
            items: census.items,
            tag_checked: census.tag_checked,
            untagged: census.untagged,
            past_expiry: census.past,
            held: census.held,
            excepted: census.excepted,
            in_use: census.in_use,
            unreadable: census.unreadable,
            deleted: acc.deleted,
            redacted: acc.redacted,
            failed: acc.failed,
            not_judged: acc.not_judged,
            deleted_within_24h: acc.within_24h,
            deleted_late: acc.late,
            deleted_after_protection: acc.after_protection,
            present_late: census.present_late + acc.late_at_end,
            detected: acc.detected,
            ..Figures::default()
        };
        finish(&mut f, &mut acc.ttd, acc.detect_sum);
        targets.push(TargetFigures {
            target: name.clone(),
            kind: t.map(|t| t.type_name.to_string()).unwrap_or_default(),
            category,
            owner: labels
                .owner
                .or_else(|| cat.and_then(|c| c.owner.clone()))
                .unwrap_or_else(|| "unassigned".into()),
            runbook: labels
                .runbook
                .or_else(|| cat.and_then(|c| c.runbook.clone())),
            region: labels.region.unwrap_or_else(|| "unset".into()),
            sensitivity: labels.sensitivity.unwrap_or_else(|| "unset".into()),
            figures: f,
            error,
            in_config: t.is_some(),
        });
        times.push(std::mem::take(&mut acc.ttd));
        backlogs.push(std::mem::take(&mut acc.backlog));
    }

    // Series.
    let deletions_per_day = per_day
        .iter()
        .enumerate()
        .map(|(i, c)| DayCount {
            day: day_of(Timestamp::from_micros(zero.as_micros() + i as i64 * DAY)),
            count: *c,
        })
        .collect();
    let backlog = targets
        .iter()
        .zip(&backlogs)
        .map(|(t, b)| Backlog {
            target: t.target.clone(),
            points: (0..days as i64)
                .map(|i| b.get(&i).map(|(_, n)| *n))
                .collect(),
        })
        .collect();
    let edges: [(&str, f64); 5] = [
        ("≤ 1 h", 3600.0),
        ("1-6 h", 6.0 * 3600.0),
        ("6-24 h", 86_400.0),
        ("1-7 d", 7.0 * 86_400.0),
        ("> 7 d", f64::INFINITY),
    ];
    let mut ttd_buckets = vec![0u64; edges.len()];
    for v in times.iter().flatten() {
        let i = edges
            .iter()
            .position(|(_, e)| v <= e)
            .unwrap_or(edges.len() - 1);
        ttd_buckets[i] += 1;
    }
    let series = Series {
        deletions_per_day,
        backlog,
        time_to_delete: edges
            .iter()
            .zip(ttd_buckets)
            .map(|((l, _), count)| Bucket {
                label: (*l).into(),
                count,
            })
            .collect(),
    };

    drop(state);
    let trail = verified()?;
    let reconciliation = reconciled()?;

    // Groups and KPIs.
    let k = KpiArgs {
        period: &period.label,
    };
    let uncounted_of = |members: &[usize]| -> Vec<String> {
        members
            .iter()
            .filter(|i| targets[**i].error.is_some())
            .map(|i| targets[*i].target.clone())
            .collect()
    };
    let group = |label: &dyn Fn(&TargetFigures) -> String| -> Vec<GroupFigures> {
        let mut names: Vec<String> = targets.iter().map(label).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let members: Vec<usize> = (0..targets.len())
                    .filter(|i| label(&targets[*i]) == name)
                    .collect();
                let figures = combine(
                    members
                        .iter()
                        .map(|i| (&targets[*i].figures, times[*i].as_slice())),
                );
                let first = &targets[members[0]];
                let same = |f: &dyn Fn(&TargetFigures) -> Option<String>| {
                    let v = f(first);
                    members
                        .iter()
                        .all(|i| f(&targets[*i]) == v)
                        .then_some(v)
                        .flatten()
                };
                GroupFigures {
                    kpis: item_kpis(&figures, &k, &uncounted_of(&members)),
                    name,
                    targets: members.iter().map(|i| targets[*i].target.clone()).collect(),
                    owner: same(&|t| Some(t.owner.clone())),
                    runbook: same(&|t| t.runbook.clone()),
                    figures,
                }
            })
            .collect()
    };
    let groups = Groups {
        by_target: group(&|t| t.target.clone()),
        by_category: group(&|t| t.category.clone()),
        by_sensitivity: group(&|t| t.sensitivity.clone()),
        by_owner: group(&|t| t.owner.clone()),
        by_region: group(&|t| t.region.clone()),
    };
    let total = combine(
        targets
            .iter()
            .zip(&times)
            .map(|(t, v)| (&t.figures, v.as_slice())),
    );
    let all: Vec<usize> = (0..targets.len()).collect();
    let mut kpis = item_kpis(&total, &k, &uncounted_of(&all));
    kpis.push(k.kpi(
        "time_to_delete_mean",
        "Average time to delete",
        total.time_to_delete_mean_s,
        human_secs(total.time_to_delete_mean_s),
        None,
        false,
        "mean of (decided_at − expires_at) over the period's retention deletions",
    ));
    kpis.push(k.kpi(
        "time_to_delete_p95",
        "Time to delete, 95th percentile",
        total.time_to_delete_p95_s,
        human_secs(total.time_to_delete_p95_s),
        None,
        false,
        "nearest-rank 95th percentile of (decided_at − expires_at) over the period's retention deletions",
    ));
    kpis.push(k.kpi(
        "active_exceptions",
        "Active exceptions",
        Some(active_exceptions as f64),
        active_exceptions.to_string(),
        Some(("≤ 5", |v| v <= 5.0)),
        true,
        "exceptions in force now (granted, not revoked, superseded or past their end)",
    ));
    kpis.push(k.kpi(
        "active_holds",
        "Active legal holds",
        Some(active_holds as f64),
        active_holds.to_string(),
        None,
        true,
        "legal holds placed and not released",
    ));
    kpis.push(k.kpi(
        "time_to_detect_mean",
        "Mean time to detect a violation",
        total.time_to_detect_mean_s,
        human_secs(total.time_to_detect_mean_s),
        Some(("< 1 h", |v| v < 3600.0)),
        false,
        "for each item whose first trail entry past expiry (deleted, failed, would_delete, held, excepted, in_use) falls in the period: that entry's time − the item's expiry; the mean",
    ));
    let rec_rate = reconciliation
        .as_ref()
        .and_then(|r| (r.checked > 0).then_some(r.success_rate));
    let rec_errors = reconciliation
        .as_ref()
        .is_some_and(|r| !r.errors.is_empty());
    kpis.push(k.kpi(
        "reconciliation",
        "Audit reconciliation success",
        rec_rate,
        pct(rec_rate),
        Some(("> 99.5%", |v| v > 0.995)),
        true,
        &match &reconciliation {
            Some(r) => format!(
                "lethe audit reconcile over a sample of {} recorded deletions per target, and every item past expiry that a whole sweep has passed since it expired: matched / checked ({} / {}){}",
                r.sample.unwrap_or(0),
                r.matched,
                r.checked,
                if r.errors.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; not reconciled: {}: cannot be shown met",
                        r.errors.join("; ")
                    )
                }
            ),
            None => "not run (--reconcile-sample 0)".into(),
        },
    ));
    if rec_errors && let Some(last) = kpis.last_mut() {
        last.pass = Some(false);
    }
    kpis.push(k.kpi(
        "trail_verified",
        "Audit trail verified",
        Some(if trail.problems.is_empty() { 1.0 } else { 0.0 }),
        if trail.problems.is_empty() {
            match &trail.pruned_before {
                Some(_) => format!(
                    "intact from the prune checkpoint at entry {} to {}",
                    trail.from_seq, trail.head_seq
                ),
                None => format!("intact (entries {} to {})", trail.from_seq + 1, trail.head_seq),
            }
        } else {
            format!("BROKEN: {}", trail.problems[0])
        },
        Some(("intact", |v| v == 1.0)),
        true,
        "the hash chain recomputed from the entry before the period's first to the head, the seal over the head and the head anchor checked (lethe audit verify, from there); every figure above is read from this trail",
    ));
    let due = requests.completed_in_time + requests.completed_late + requests.received_overdue;
    let in_time = ratio(requests.completed_in_time, due);
    kpis.push(k.kpi(
        "erasure_in_time",
        "Erasure requests completed in time",
        in_time,
        format!(
            "{} of {} ({})",
            requests.completed_in_time,
            due,
            pct(in_time)
        ),
        Some(("= 100%", |v| v >= 1.0)),
        false,
        "of the erasure requests received in the period that are completed or past their deadline: those completed (status completed, its last update) by their deadline; open requests not yet due are not counted",
    ));
    kpis.push(k.kpi(
        "erasure_overdue",
        "Erasure requests overdue",
        Some(requests.overdue.len() as f64),
        requests.overdue.len().to_string(),
        Some(("= 0", |v| v == 0.0)),
        true,
        "erasure requests open now whose deadline has passed",
    ));
    kpis.push(k.kpi(
        "failed_runs",
        "Failed runs",
        Some(runs.failed.len() as f64),
        runs.failed.len().to_string(),
        Some(("= 0", |v| v == 0.0)),
        false,
        "target sweeps in the period that ended with an error (sweep_finished entries with error=)",
    ));
    kpis.push(k.kpi(
        "misfires",
        "Missed scheduled runs",
        Some(runs.misfires.len() as f64),
        runs.misfires.len().to_string(),
        Some(("= 0", |v| v == 0.0)),
        false,
        "schedule_misfire entries in the period (a daemon found a scheduled run missed by more than misfire_grace)",
    ));
    // A trail pruned inside or after the period no longer holds what the period's figures
    // would be read from: they say so, and a period wholly before the cut is not measured.
    if let Some(cut) = trail
        .pruned_before
        .as_deref()
        .and_then(|c| Timestamp::parse(c).ok())
        .filter(|c| *c > since)
    {
        for k in kpis.iter_mut().filter(|k| k.period != "now") {
            if cut >= until {
                k.value = None;
                k.pass = None;
                k.display = "pruned".into();
            }
            k.method = format!(
                "{}. The trail's entries before {} were pruned ([audit] retention): the figure covers only what it still holds",
                k.method,
                cut.to_rfc3339()
            );
        }
    }
    let all_met = kpis.iter().all(|k| k.pass != Some(false));

    let mut remediation = remediation(&groups, &kpis, &requests, &runs, reconciliation.as_ref());
    for t in targets.iter().filter(|t| t.error.is_some()) {
        remediation.insert(
            0,
            Remediation {
                kpi: "overdue_7d".into(),
                subject: t.target.clone(),
                text: format!(
                    "{}: could not be counted now ({}): its items past expiry are unknown",
                    t.target,
                    t.error.as_deref().unwrap_or("")
                ),
                owner: Some(t.owner.clone()),
                runbook: t.runbook.clone(),
            },
        );
    }
    if !trail.problems.is_empty() {
        remediation.insert(
            0,
            Remediation {
                kpi: "trail_verified".into(),
                subject: "audit trail".into(),
                text: format!(
                    "the audit trail does not verify ({}): every figure here is read from it; find out what happened with lethe audit verify",
                    trail.problems.join("; ")
                ),
                owner: None,
                runbook: None,
            },
        );
    }
    Ok(Report {
        generated_at: now.to_rfc3339(),
        config: loaded.path.display().to_string(),
        period,
        kpis,
        targets,
        groups,
        holds,
        exceptions,
        requests,
        runs,
        reconciliation,
        series,
        remediation,
        trail,
        all_met,
    })
}

pub(super) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What to fix, from what fails: per target for the item KPIs, then the rest.
fn remediation(
    groups: &Groups,
    kpis: &[Kpi],
    requests: &RequestFigures,
    runs: &RunFigures,
    rec: Option<&ReconcileFigures>,
) -> Vec<Remediation> {
    let mut out = Vec::new();
    for g in &groups.by_target {
        let f = &g.figures;
        let mut add = |kpi: &str, text: String| {
            out.push(Remediation {
                kpi: kpi.into(),
                subject: g.name.clone(),
                text,
                owner: g.owner.clone(),
                runbook: g.runbook.clone(),
            })
        };
        if f.past_expiry.over_7d > 0 {
            add(
                "overdue_7d",
                format!(
                    "{}: {} items > 7 d past expiry (oldest expired {}): sweep it with --apply, or grant exceptions for what must stay",
                    g.name,
                    thousands(f.past_expiry.over_7d),
                    f.past_expiry.oldest_expiry.as_deref().unwrap_or("?")
                ),
            );
        }
        if f.within_24h.is_some_and(|v| v <= 0.99) {
            add(
                "deleted_within_24h",
                format!(
                    "{}: {} of {} expired items deleted within 24 h ({}): sweep more often (the schedule) or look at its failures",
                    g.name,
                    thousands(f.deleted_within_24h),
                    thousands(f.deleted_within_24h + f.deleted_late + f.present_late),
                    pct(f.within_24h)
                ),
            );
        }
        if f.success_rate.is_some_and(|v| v < 0.99) {
            add(
                "deletion_success",
                format!(
                    "{}: {} failed deletions in the period ({} success): read them with lethe audit log --target {}",
                    g.name,
                    thousands(f.failed),
                    pct(f.success_rate),
                    g.name
                ),
            );
        }
        if f.tag_coverage.is_some_and(|v| v < 0.98) {
            add(
                "tag_coverage",
                format!(
                    "{}: {} of {} items lack a required tag ({} tagged)",
                    g.name,
                    thousands(f.untagged.unwrap_or(0)),
                    thousands(f.tag_checked.unwrap_or(0)),
                    pct(f.tag_coverage)
                ),
            );
        }
    }
    let failing = |id: &str| kpis.iter().any(|k| k.id == id && k.pass == Some(false));
    if failing("active_exceptions") {
        out.push(Remediation {
            kpi: "active_exceptions".into(),
            subject: "exceptions".into(),
            text: "more than 5 exceptions are active: review the register, revoke what is no longer needed".into(),
            owner: None,
            runbook: None,
        });
    }
    for r in &requests.overdue {
        out.push(Remediation {
            kpi: "erasure_overdue".into(),
            subject: r.id.clone(),
            text: format!(
                "erasure request {} is past its deadline ({}), status {}: lethe erase status {}",
                r.id, r.deadline, r.status, r.id
            ),
            owner: None,
            runbook: None,
        });
    }
    let mut failed_targets: BTreeMap<&str, u64> = BTreeMap::new();
    for f in &runs.failed {
        *failed_targets.entry(f.target.as_str()).or_default() += 1;
    }
    for (t, n) in failed_targets {
        let g = groups.by_target.iter().find(|g| g.name == t);
        out.push(Remediation {
            kpi: "failed_runs".into(),
            subject: t.into(),
            text: format!("{t}: {n} sweep(s) ended with an error in the period"),
            owner: g.and_then(|g| g.owner.clone()),
            runbook: g.and_then(|g| g.runbook.clone()),
        });
    }
    if !runs.misfires.is_empty() {
        out.push(Remediation {
            kpi: "misfires".into(),
            subject: "schedule".into(),
            text: format!(
                "{} scheduled run(s) were missed: check that lethe serve runs and is not overloaded",
                runs.misfires.len()
            ),
            owner: None,
            runbook: None,
        });
    }
    if let Some(r) = rec
        && failing("reconciliation")
    {
        out.push(Remediation {
            kpi: "reconciliation".into(),
            subject: "audit trail".into(),
            text: format!(
                "{} mismatch(es) between the stores and the trail: lethe audit reconcile lists them",
                r.checked - r.matched
            ),
            owner: None,
            runbook: None,
        });
    }
    if failing("time_to_detect_mean") {
        out.push(Remediation {
            kpi: "time_to_detect_mean".into(),
            subject: "schedule".into(),
            text: "expired items wait more than an hour on average before a run sees them: sweep (or dry-run) more often".into(),
            owner: None,
            runbook: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(month: Option<&str>, since: Option<&str>, until: Option<&str>) -> ReportRequest {
        ReportRequest {
            month: month.map(str::to_string),
            since: since.map(str::to_string),
            until: until.map(str::to_string),
            reconcile_sample: Some(0),
        }
    }

    fn now() -> Timestamp {
        Timestamp::parse("2026-11-27T12:00:00Z").unwrap_or(Timestamp::MAX)
    }

    #[test]
    fn a_month_is_its_calendar_days_and_december_ends_in_january() {
        for (m, since, until) in [
            ("2026-12", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            ("2028-02", "2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z"),
            ("2026-01", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),
        ] {
            let (_, _, p) =
                period(&req(Some(m), None, None), now()).unwrap_or_else(|e| panic!("{m}: {e}"));
            assert_eq!((p.since.as_str(), p.until.as_str()), (since, until), "{m}");
            assert!(p.monthly);
            assert_eq!(p.label, m);
        }
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-01",
            "2026/01",
            "+2026-01",
            "2026-01-01",
            "",
        ] {
            assert!(period(&req(Some(bad), None, None), now()).is_err(), "{bad}");
        }
        assert!(period(&req(Some("2026-01"), Some("2026-01-01"), None), now()).is_err());
    }

    #[test]
    fn the_default_period_is_the_thirty_days_up_to_now() {
        let (s, u, p) = period(&req(None, None, None), now()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u, now());
        assert_eq!(u.as_micros() - s.as_micros(), 30 * DAY);
        assert!(!p.monthly);
        assert!(period(&req(None, Some("2026-11-02"), Some("2026-11-01")), now()).is_err());
        assert!(period(&req(None, Some("2026-11-01"), Some("2026-11-01")), now()).is_err());
    }

    #[test]
    fn a_sweeps_detail_gives_its_fields_and_the_whole_error() {
        let d = "dry_run=false found=12 deleted=10 held=0 files_removed=0 failed=2 error=database is locked: busy interrupted=true by=ops";
        assert_eq!(detail_field(d, "dry_run"), Some("false"));
        assert_eq!(detail_field(d, "found"), Some("12"));
        assert_eq!(detail_field(d, "deleted"), Some("10"));
        assert_eq!(detail_field(d, "error"), Some("database is locked: busy"));
        assert_eq!(detail_field("dry_run=true found=1", "error"), None);
        // a field name inside another's value is not the field
        assert_eq!(detail_field("dry_run=false xfound=3", "found"), None);
    }

    #[test]
    fn p95_is_the_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(p95(&mut v), Some(95.0));
        let mut one = vec![7.0];
        assert_eq!(p95(&mut one), Some(7.0));
        assert_eq!(p95(&mut []), None);
        let mut twenty: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        assert_eq!(p95(&mut twenty), Some(19.0));
    }

    #[test]
    fn a_group_recomputes_its_rates_from_the_sums() {
        let a = Figures {
            deleted: 9,
            failed: 1,
            deleted_within_24h: 9,
            ..Figures::default()
        };
        let b = Figures {
            deleted: 1,
            failed: 9,
            deleted_late: 1,
            present_late: 10,
            ..Figures::default()
        };
        let g = combine([(&a, &[1.0][..]), (&b, &[3.0][..])].into_iter());
        assert_eq!(g.success_rate, Some(0.5));
        assert_eq!(g.within_24h, Some(9.0 / 20.0));
        assert_eq!(g.time_to_delete_mean_s, Some(2.0));
        assert_eq!(g.items, None);
    }
}
