//! Alerts without Prometheus: the daemon evaluates its conditions every `check_interval`
//! and posts each firing and each resolution once, Alertmanager-webhook-shaped (with a
//! `text` field for Slack-style hooks), to the URL in `[alerts] webhook_env`.
//!
//! An alert in force is a row of the state's `alerts` table: the daemon that inserts the
//! row posts the firing and the one that deletes it posts the resolution, so daemons that
//! share a state post each once. Both are recorded in the trail.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lethe_core::config::AlertsConfig;
use lethe_ops::ops::census::Overview;
use lethe_ops::ops::common::open_state;
use lethe_ops::ops::schedule as fires;
use lethe_ops::state::Access;
use serde_json::json;

use crate::{Daemon, blocking};

/// An alert the conditions call for now.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub name: &'static str,
    pub severity: &'static str,
    /// Labels besides the name: which target, schedule or request.
    pub labels: BTreeMap<String, String>,
    pub summary: String,
}

impl Alert {
    /// The alert's identity: its name and labels.
    pub fn key(&self) -> String {
        let mut k = self.name.to_string();
        for (l, v) in &self.labels {
            k.push_str(&format!(",{l}={v}"));
        }
        k
    }
}

/// What the conditions have seen: the latest census, how each schedule's newest fire
/// ended (from the state, so every daemon sharing it sees the same), the trail.
#[derive(Default)]
struct Seen {
    census: Option<Overview>,
    /// (schedule, result, run id, fire time) of each schedule's newest fire.
    outcomes: Vec<(String, String, String, i64)>,
    /// The last verification's problem, if it failed.
    trail: Option<String>,
}

pub struct Alerts {
    cfg: AlertsConfig,
    seen: Mutex<Seen>,
}

impl Alerts {
    pub fn new(cfg: &AlertsConfig) -> Alerts {
        Alerts {
            cfg: cfg.clone(),
            seen: Mutex::new(Seen::default()),
        }
    }

    pub fn census(&self, o: &Overview) {
        if let Ok(mut s) = self.seen.lock() {
            s.census = Some(o.clone());
        }
    }

    fn trail(&self, problem: Option<String>) {
        if let Ok(mut s) = self.seen.lock() {
            s.trail = problem;
        }
    }

    /// The alerts the conditions call for now.
    pub fn wanted(&self) -> Vec<Alert> {
        let Ok(s) = self.seen.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let one = |name, severity, label: &str, value: &str, summary: String| Alert {
            name,
            severity,
            labels: BTreeMap::from([(label.to_string(), value.to_string())]),
            summary,
        };
        for (schedule, result, run_id, fire_at) in &s.outcomes {
            let at = jiff::Timestamp::from_second(*fire_at)
                .map(|t| t.to_string())
                .unwrap_or_default();
            match result.as_str() {
                "failure" => out.push(one(
                    "LetheRunFailed",
                    "critical",
                    "schedule",
                    schedule,
                    format!("run {run_id} of schedule {schedule} (fire {at}) failed: see GET /v1/runs/{run_id}"),
                )),
                "misfire" => out.push(one(
                    "LetheScheduleMisfire",
                    "warning",
                    "schedule",
                    schedule,
                    format!("schedule {schedule} missed its fire at {at} by more than misfire_grace: not run (see the schedule_misfire entry)"),
                )),
                _ => {}
            }
        }
        if let Some(problem) = &s.trail {
            out.push(Alert {
                name: "LetheTrailVerificationFailed",
                severity: "critical",
                labels: BTreeMap::new(),
                summary: format!("the audit trail does not verify: {problem}"),
            });
        }
        if let Some(o) = &s.census {
            for t in &o.targets {
                match (&t.census, &t.error) {
                    (_, Some(e)) => out.push(one(
                        "LetheTargetUnreachable",
                        "critical",
                        "target",
                        &t.target,
                        format!("target {} cannot be read: {e}", t.target),
                    )),
                    (Some(c), None) if c.past_expiry[1] > 0 => out.push(one(
                        "LetheItemsPastExpiry",
                        "warning",
                        "target",
                        &t.target,
                        format!(
                            "target {}: {} item(s) more than 24 h past expiry, neither held nor excepted (oldest expired {})",
                            t.target,
                            c.past_expiry[1],
                            c.oldest_expiry.as_deref().unwrap_or("?")
                        ),
                    )),
                    _ => {}
                }
            }
            for (id, deadline) in &o.erasure_requests.near_or_past {
                out.push(one(
                    "LetheErasureRequestDeadline",
                    "critical",
                    "request",
                    id,
                    format!("erasure request {id} is open with its deadline at {deadline} (past, or within 3 days)"),
                ));
            }
            if o.active_exceptions > self.cfg.max_active_exceptions {
                out.push(Alert {
                    name: "LetheTooManyExceptions",
                    severity: "warning",
                    labels: BTreeMap::new(),
                    summary: format!(
                        "{} exceptions are active, more than [alerts] max_active_exceptions ({})",
                        o.active_exceptions, self.cfg.max_active_exceptions
                    ),
                });
            }
        }
        out
    }
}

/// The webhook's URL, read once from the variable the config names (its value, which may
/// carry a secret, is never shown).
fn webhook_url(cfg: &AlertsConfig) -> Option<String> {
    let var = cfg.webhook_env.as_deref()?;
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// Checks at start-up that a configured webhook's variable is set.
pub fn check_config(cfg: &AlertsConfig) -> lethe_ops::Result<()> {
    if let Some(var) = &cfg.webhook_env
        && webhook_url(cfg).is_none()
    {
        return Err(lethe_ops::Error::usage(format!(
            "[alerts] webhook_env names {var}, but {var} is not set (or empty): set it to the webhook's URL, or remove webhook_env"
        )));
    }
    Ok(())
}

/// Evaluates the conditions every `check_interval`, verifies the trail every
/// `verify_interval`, and posts what changed.
pub async fn watch(d: Arc<Daemon>) {
    let every = Duration::from_secs(d.alerts.cfg.check_interval.as_secs().max(1) as u64);
    let verify_every = d.alerts.cfg.verify_interval.as_secs().max(1) as u64;
    let url = webhook_url(&d.alerts.cfg);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok();
    let mut last_verify: Option<std::time::Instant> = None;
    let mut last_full: Option<std::time::Instant> = None;
    let mut checkpoint: Option<lethe_ops::state::Checkpoint> = None;
    loop {
        if last_verify.is_none_or(|t| t.elapsed().as_secs() >= verify_every) {
            last_verify = Some(std::time::Instant::now());
            // From the last head verified; the whole trail at start and once a day (what
            // came before a checkpoint, and the registers against the trail).
            let full = last_full.is_none_or(|t| t.elapsed().as_secs() >= 86_400);
            if full {
                last_full = Some(std::time::Instant::now());
            }
            let (dd, from) = (d.clone(), if full { None } else { checkpoint.clone() });
            match blocking(move || lethe_ops::ops::audit::verify_since(&dd.loaded, from.as_ref()))
                .await
            {
                Ok((v, next)) if v.ok => {
                    checkpoint = next;
                    d.metrics.trail_verified.set(1);
                    d.alerts.trail(None);
                }
                Ok((v, _)) => {
                    checkpoint = None;
                    d.metrics.trail_verified.set(0);
                    d.alerts.trail(Some(
                        v.problem.unwrap_or_else(|| "verification failed".into()),
                    ));
                }
                // Could not verify (the state is away): not evidence of a break.
                Err(e) => {
                    tracing::error!(error = %e, "could not verify the trail; trying again at the next interval")
                }
            }
        }
        if d.ready.load(std::sync::atomic::Ordering::SeqCst) {
            evaluate(&d, url.as_deref(), client.as_ref()).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = d.stopping.notified() => return,
        }
    }
}

async fn evaluate(d: &Arc<Daemon>, url: Option<&str>, client: Option<&reqwest::Client>) {
    let dd = d.clone();
    let read = blocking(move || {
        let mut st = open_state(&dd.loaded, Access::Read)?;
        Ok((
            fires::alerts_firing(&mut st)?,
            fires::latest_outcomes(&mut st)?,
        ))
    })
    .await;
    let firing = match read {
        Ok((f, outcomes)) => {
            if let Ok(mut s) = d.alerts.seen.lock() {
                s.outcomes = outcomes;
            }
            f
        }
        Err(e) => {
            tracing::error!(error = %e, "alerts: the state cannot be read");
            return;
        }
    };
    // Event-based alerts (a run's failure) are known to the daemon that saw the event: only
    // the census-based ones are resolved by a daemon that does not want them.
    let census_based = |key: &str| {
        [
            "LetheTargetUnreachable,",
            "LetheItemsPastExpiry,",
            "LetheErasureRequestDeadline,",
            "LetheTooManyExceptions",
            "LetheTrailVerificationFailed",
        ]
        .iter()
        .any(|p| key.starts_with(p))
    };
    let wanted = d.alerts.wanted();
    let wanted_keys: Vec<String> = wanted.iter().map(Alert::key).collect();
    // The census this daemon has, and when it was taken: a census-based alert is resolved
    // only on a census taken after it fired (a daemon just started has none yet).
    let census_at = d
        .alerts
        .seen
        .lock()
        .ok()
        .and_then(|s| s.census.as_ref().map(|c| c.at.clone()));
    for a in &wanted {
        let key = a.key();
        if firing.iter().any(|(k, _, _)| *k == key) {
            continue;
        }
        let (dd, k, s) = (d.clone(), key.clone(), a.summary.clone());
        let mine = blocking(move || {
            let mut st = open_state(&dd.loaded, Access::Write)?;
            fires::alert_fire(&mut st, &k, &s)
        })
        .await;
        if matches!(mine, Ok(true)) {
            let started = jiff::Timestamp::now().to_string();
            let (took, delivered) = post(url, client, "firing", a, &started, None).await;
            tracing::warn!(alert = a.name, key = %key, summary = %a.summary, delivered = %delivered, "alert firing");
            if took {
                mark_delivered(d, &key, false).await;
            }
            record(d, true, &key, &format!("{}; {delivered}", a.summary)).await;
        }
    }
    for (key, fired_at, summary) in firing {
        if wanted_keys.contains(&key) {
            continue;
        }
        if census_based(&key) && census_at.as_deref().is_none_or(|c| later(&fired_at, c)) {
            continue;
        }
        let (dd, k) = (d.clone(), key.clone());
        let mine = blocking(move || {
            let mut st = open_state(&dd.loaded, Access::Write)?;
            fires::alert_resolve(&mut st, &k)
        })
        .await;
        if let Ok(Some(fired)) = mine {
            let a = alert_from_key(&key, &summary);
            let delivered = post(
                url,
                client,
                "resolved",
                &a,
                &fired,
                Some(&jiff::Timestamp::now().to_string()),
            )
            .await;
            let (took, delivered) = delivered;
            tracing::info!(alert = a.name, key = %key, delivered = %delivered, "alert resolved");
            if took {
                mark_delivered(d, &key, true).await;
            }
            record(d, false, &key, &format!("resolved: {summary}; {delivered}")).await;
        }
    }
    // What the webhook did not take (it was down past the retries, or a daemon died while
    // posting) is posted again, two check intervals after the last attempt, by whichever
    // daemon claims it.
    let retry = (2 * d.alerts.cfg.check_interval.as_secs()).max(2);
    let dd = d.clone();
    let again = blocking(move || {
        let mut st = open_state(&dd.loaded, Access::Write)?;
        fires::claim_undelivered(&mut st, retry)
    })
    .await
    .unwrap_or_default();
    for u in again {
        let a = alert_from_key(&u.key, &u.summary);
        let (status, ends) = match &u.resolved_at {
            Some(r) => ("resolved", Some(r.as_str())),
            None => ("firing", None),
        };
        let (took, delivered) = post(url, client, status, &a, &u.fired_at, ends).await;
        tracing::info!(alert = a.name, key = %u.key, status, delivered = %delivered, "alert posted again");
        if took {
            mark_delivered(d, &u.key, u.resolved_at.is_some()).await;
            record(
                d,
                u.resolved_at.is_none(),
                &u.key,
                &format!("{status} (posted again): {}; {delivered}", u.summary),
            )
            .await;
        }
    }
}

async fn mark_delivered(d: &Arc<Daemon>, key: &str, resolved: bool) {
    let (dd, k) = (d.clone(), key.to_string());
    if let Err(e) = blocking(move || {
        let mut st = open_state(&dd.loaded, Access::Write)?;
        fires::alert_delivered(&mut st, &k, resolved)
    })
    .await
    {
        tracing::error!(error = %e, "could not record that the webhook took the alert; it may be posted again");
    }
}

/// Whether instant `a` is after instant `b` (RFC 3339); unreadable ones are not.
fn later(a: &str, b: &str) -> bool {
    match (a.parse::<jiff::Timestamp>(), b.parse::<jiff::Timestamp>()) {
        (Ok(a), Ok(b)) => a > b,
        _ => true,
    }
}

fn alert_from_key(key: &str, summary: &str) -> Alert {
    let mut parts = key.split(',');
    let name = parts.next().unwrap_or("LetheAlert");
    let labels = parts
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Alert {
        name: leak_name(name),
        severity: "critical",
        labels,
        summary: summary.to_string(),
    }
}

/// The alert names are a fixed set: map a stored name back to it.
fn leak_name(name: &str) -> &'static str {
    [
        "LetheRunFailed",
        "LetheScheduleMisfire",
        "LetheTrailVerificationFailed",
        "LetheTargetUnreachable",
        "LetheItemsPastExpiry",
        "LetheErasureRequestDeadline",
        "LetheTooManyExceptions",
    ]
    .into_iter()
    .find(|n| *n == name)
    .unwrap_or("LetheAlert")
}

async fn record(d: &Arc<Daemon>, fired: bool, key: &str, detail: &str) {
    let (dd, k, det) = (d.clone(), key.to_string(), detail.to_string());
    if let Err(e) = blocking(move || {
        let mut st = open_state(&dd.loaded, Access::Write)?;
        fires::record_alert(&mut st, fired, &k, &det)
    })
    .await
    {
        tracing::error!(error = %e, "could not record the alert in the trail");
    }
}

/// Posts one alert's firing or resolution, retrying with backoff (1 s, 2 s, 4 s, 8 s):
/// whether the webhook took it, and how it went, without the URL.
async fn post(
    url: Option<&str>,
    client: Option<&reqwest::Client>,
    status: &str,
    a: &Alert,
    starts_at: &str,
    ends_at: Option<&str>,
) -> (bool, String) {
    let (Some(url), Some(client)) = (url, client) else {
        return (true, "no webhook configured".into());
    };
    let mut labels = serde_json::Map::new();
    labels.insert("alertname".into(), json!(a.name));
    labels.insert("severity".into(), json!(a.severity));
    for (k, v) in &a.labels {
        labels.insert(k.clone(), json!(v));
    }
    let key = a.key();
    let fingerprint: String = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        format!("{:016x}", h.finish())
    };
    let word = if status == "firing" {
        "FIRING"
    } else {
        "RESOLVED"
    };
    let body = json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\"}}", a.name),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "lethe",
        "groupLabels": {"alertname": a.name},
        "commonLabels": labels,
        "commonAnnotations": {"summary": a.summary},
        "externalURL": "",
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": {"summary": a.summary},
            "startsAt": starts_at,
            "endsAt": ends_at.unwrap_or("0001-01-01T00:00:00Z"),
            "generatorURL": "",
            "fingerprint": fingerprint,
        }],
        "text": format!("[{word}] {}: {}", a.name, a.summary),
    });
    let mut wait = Duration::from_secs(1);
    let mut last = String::new();
    for attempt in 1..=5 {
        let req = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                return (
                    true,
                    format!("delivered to the webhook (attempt {attempt})"),
                );
            }
            Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
            // The error names the URL, which may carry a secret: say only its kind.
            Err(e) => {
                last = if e.is_timeout() {
                    "timed out".into()
                } else if e.is_connect() {
                    "could not connect".into()
                } else {
                    "request failed".into()
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(8));
    }
    (
        false,
        format!("the webhook failed after 5 attempts ({last}); posted again later"),
    )
}
