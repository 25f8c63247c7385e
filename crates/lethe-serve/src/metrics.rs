//! `/metrics`: the daemon's figures in the Prometheus text format.
//!
//! The deletion and failure counters are the trail's own counts (read from it, the new
//! entries only, after each run and each census), so every daemon sharing a state reports the
//! same totals: aggregate them with `max`, not `sum`. The run, skip and misfire counters are
//! this daemon's own.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use lethe_ops::ops::census::Overview;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PastLabel {
    pub target: String,
    pub over: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabel {
    pub schedule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabel {
    pub schedule: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

pub struct Metrics {
    registry: Registry,
    pub items_deleted: Family<TargetLabel, Counter>,
    /// Rows whose personal columns were redacted (the rows stay), on redacting targets.
    pub items_redacted: Family<TargetLabel, Counter>,
    pub delete_failures: Family<TargetLabel, Counter>,
    pub items_past_expiry: Family<PastLabel, Gauge>,
    pub sweep_duration: Family<ScheduleLabel, Histogram>,
    pub sweep_runs: Family<RunLabel, Counter>,
    pub skipped_fires: Family<ScheduleLabel, Counter>,
    pub misfires: Family<ScheduleLabel, Counter>,
    pub last_success: Family<ScheduleLabel, Gauge<f64, AtomicU64>>,
    pub active_holds: Gauge,
    pub active_exceptions: Gauge,
    pub erasure_requests: Family<StatusLabel, Gauge>,
    pub trail_verified: Gauge,
    pub target_up: Family<TargetLabel, Gauge>,
    /// The trail's entry up to which the deletion counters have counted.
    pub counted_to: Mutex<i64>,
}

fn histogram() -> Histogram {
    // 0.5 s to about 9 h.
    Histogram::new(exponential_buckets(0.5, 2.0, 16))
}

impl Metrics {
    /// The metrics, with a series for every target and schedule the config names, at zero:
    /// a series that first appears at 1 is not counted by `increase()`.
    pub fn new(targets: &[String], schedules: &[String]) -> Metrics {
        let mut registry = Registry::with_prefix("lethe");
        let m = Metrics {
            items_deleted: Family::default(),
            items_redacted: Family::default(),
            delete_failures: Family::default(),
            items_past_expiry: Family::default(),
            sweep_duration: Family::new_with_constructor(histogram),
            sweep_runs: Family::default(),
            skipped_fires: Family::default(),
            misfires: Family::default(),
            last_success: Family::default(),
            active_holds: Gauge::default(),
            active_exceptions: Gauge::default(),
            erasure_requests: Family::default(),
            trail_verified: Gauge::default(),
            target_up: Family::default(),
            counted_to: Mutex::new(0),
            registry: Registry::default(),
        };
        registry.register(
            "items_deleted",
            "Items deleted, as the audit trail records them",
            m.items_deleted.clone(),
        );
        registry.register(
            "items_redacted",
            "Rows redacted instead of deleted (their named columns overwritten), as the audit trail records them",
            m.items_redacted.clone(),
        );
        registry.register(
            "delete_failures",
            "Items a sweep failed to delete (or would not delete on a guess), as the audit trail records them",
            m.delete_failures.clone(),
        );
        registry.register(
            "items_past_expiry",
            "Items past expiry and neither held nor excepted, by how long past (over 0d, 1d, 7d), at the last census",
            m.items_past_expiry.clone(),
        );
        registry.register_with_unit(
            "sweep_duration",
            "Duration of this daemon's scheduled runs, from the fire's claim to its last target",
            prometheus_client::registry::Unit::Seconds,
            m.sweep_duration.clone(),
        );
        registry.register(
            "sweep_runs",
            "Scheduled runs this daemon closed, by result",
            m.sweep_runs.clone(),
        );
        registry.register(
            "schedule_skipped_fires",
            "Fires skipped because the schedule's previous run was still going",
            m.skipped_fires.clone(),
        );
        registry.register(
            "schedule_misfires",
            "Missed fires older than misfire_grace at start-up (recorded, not run)",
            m.misfires.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Fire time of the schedule's newest successful run, Unix seconds (0: none yet)",
            m.last_success.clone(),
        );
        registry.register(
            "active_holds",
            "Legal holds in force",
            m.active_holds.clone(),
        );
        registry.register(
            "active_exceptions",
            "Approved exceptions in force",
            m.active_exceptions.clone(),
        );
        registry.register(
            "erasure_requests",
            "Erasure requests by status (open, due_soon, overdue, completed)",
            m.erasure_requests.clone(),
        );
        registry.register(
            "trail_verified",
            "1 when the last verification of the audit trail passed, 0 when it failed",
            m.trail_verified.clone(),
        );
        registry.register(
            "target_up",
            "1 when the last census reached the target, 0 when it could not",
            m.target_up.clone(),
        );
        let build: Family<VersionLabel, Gauge> = Family::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register("build_info", "The running build (always 1)", build);
        for t in targets {
            let l = TargetLabel { target: t.clone() };
            let _ = m.items_deleted.get_or_create(&l);
            let _ = m.delete_failures.get_or_create(&l);
        }
        for s in schedules {
            let l = ScheduleLabel {
                schedule: s.clone(),
            };
            let _ = m.skipped_fires.get_or_create(&l);
            let _ = m.misfires.get_or_create(&l);
            let _ = m.last_success.get_or_create(&l);
            let _ = m.sweep_duration.get_or_create(&l);
            for result in ["success", "failure"] {
                let _ = m.sweep_runs.get_or_create(&RunLabel {
                    schedule: s.clone(),
                    result: result.into(),
                });
            }
        }
        for status in ["open", "due_soon", "overdue", "completed"] {
            let _ = m.erasure_requests.get_or_create(&StatusLabel {
                status: status.into(),
            });
        }
        m.trail_verified.set(1);
        Metrics { registry, ..m }
    }

    /// The exposition in the Prometheus text format (0.0.4), which every scraper and
    /// `promtool check metrics` read.
    pub fn encode(&self) -> String {
        let mut open = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut open, &self.registry);
        to_prometheus_text(&open)
    }

    /// Takes in a census's figures.
    pub fn census(&self, o: &Overview) {
        for t in &o.targets {
            let up = TargetLabel {
                target: t.target.clone(),
            };
            self.target_up
                .get_or_create(&up)
                .set(i64::from(t.census.is_some()));
            if let Some(c) = &t.census {
                for (i, over) in ["0d", "1d", "7d"].iter().enumerate() {
                    self.items_past_expiry
                        .get_or_create(&PastLabel {
                            target: t.target.clone(),
                            over: (*over).into(),
                        })
                        .set(c.past_expiry[i] as i64);
                }
            }
        }
        self.active_holds.set(o.active_holds as i64);
        self.active_exceptions.set(o.active_exceptions as i64);
        let r = &o.erasure_requests;
        for (status, n) in [
            ("open", r.open),
            ("due_soon", r.due_soon),
            ("overdue", r.overdue),
            ("completed", r.completed),
        ] {
            self.erasure_requests
                .get_or_create(&StatusLabel {
                    status: status.into(),
                })
                .set(n as i64);
        }
    }

    /// Adds the trail's deletions and failures recorded since it last counted.
    pub fn count_trail(&self, counts: &[(String, String, u64)], to_seq: i64) {
        for (target, action, n) in counts {
            let l = TargetLabel {
                target: target.clone(),
            };
            match action.as_str() {
                "deleted" => self.items_deleted.get_or_create(&l).inc_by(*n),
                "redacted" => self.items_redacted.get_or_create(&l).inc_by(*n),
                "failed" => self.delete_failures.get_or_create(&l).inc_by(*n),
                _ => 0,
            };
        }
        if let Ok(mut c) = self.counted_to.lock() {
            *c = (*c).max(to_seq);
        }
    }
}

/// OpenMetrics (what the crate writes) to the Prometheus text format: a counter's HELP and
/// TYPE name its `_total` samples, and there is no UNIT or EOF line.
fn to_prometheus_text(open: &str) -> String {
    let counters: Vec<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_and_nothing_is_openmetrics_only() {
        let m = Metrics::new(&["t".into()], &["sweep".into()]);
        m.count_trail(&[("t".into(), "deleted".into(), 3)], 7);
        let text = m.encode();
        assert!(
            text.contains("# TYPE lethe_items_deleted_total counter"),
            "{text}"
        );
        assert!(text.contains("# HELP lethe_items_deleted_total "), "{text}");
        assert!(
            text.contains("lethe_items_deleted_total{target=\"t\"} 3"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE lethe_sweep_duration_seconds histogram"),
            "{text}"
        );
    }
}
