//! The decision at the heart of Lethe: is this item expired, held, or kept by an exception,
//! and why. Pure and table-tested: the clock, the window and the protections are passed in.

use std::collections::HashMap;

use crate::config::Window;
use crate::time::{Duration, TimeFormat, Timestamp};

/// A value as read from a store, before Lethe has interpreted it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Raw<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob,
}

/// What one item says about its own lifetime.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub created_at: Raw<'a>,
    /// `None` when the target has no expires_at column.
    pub expires_at: Option<Raw<'a>>,
    /// `None` when the target has no per-item retention column.
    pub retention_days: Option<Raw<'a>>,
    /// How created_at is stored, when the config says (`created_at_format`).
    pub created_at_format: Option<&'a TimeFormat>,
    /// How expires_at is stored, when the config says (`expires_at_format`).
    pub expires_at_format: Option<&'a TimeFormat>,
}

/// Why an item expires when it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    /// The item's own expires_at.
    ExpiresAt,
    /// created_at plus the item's own retention, in days.
    ItemRetention(i64),
    /// created_at plus the target's or category's window.
    Window(Duration),
    /// created_at plus the category's maximum, which was shorter than what the item asked for.
    Max(Duration),
    /// An erasure request: due now, whatever the window.
    Erasure,
}

impl Basis {
    /// The window as written in the audit trail: "30d", "max 90d", "expires_at".
    pub fn describe(&self) -> String {
        match self {
            Basis::ExpiresAt => "expires_at".into(),
            Basis::ItemRetention(d) => format!("{d}d (item)"),
            Basis::Window(w) => w.to_string(),
            Basis::Max(m) => format!("max {m}"),
            Basis::Erasure => "erasure".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not yet due.
    Keep { expires_at: Timestamp },
    /// Due: delete it.
    Expired { expires_at: Timestamp, basis: Basis },
    /// Due, but a legal hold keeps it.
    Held {
        expires_at: Timestamp,
        basis: Basis,
        hold_id: String,
    },
    /// Due, but an approved exception keeps it until `until`.
    Excepted {
        expires_at: Timestamp,
        basis: Basis,
        exception_id: String,
        until: Timestamp,
    },
    /// The item cannot be judged (an unreadable timestamp, a nonsense retention). Never deleted.
    Invalid { reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldScope {
    /// Every item of a subject, identified by its keyed hash.
    Subject(String),
    Item {
        target: String,
        key: String,
    },
    Target(String),
}

#[derive(Clone, Debug)]
pub struct Hold {
    pub id: String,
    pub scope: HoldScope,
}

#[derive(Clone, Debug)]
pub struct Exception {
    pub id: String,
    pub target: String,
    pub key: String,
    pub until: Timestamp,
}

/// Active holds and exceptions, indexed for the per-item lookups a sweep makes.
#[derive(Clone, Debug, Default)]
pub struct Protections {
    by_subject: HashMap<String, String>,
    by_item: HashMap<(String, String), String>,
    by_target: HashMap<String, String>,
    exceptions: HashMap<(String, String), (String, Timestamp)>,
}

impl Protections {
    pub fn new(holds: &[Hold], exceptions: &[Exception]) -> Self {
        let mut p = Protections::default();
        for h in holds {
            match &h.scope {
                HoldScope::Subject(s) => p.by_subject.insert(s.clone(), h.id.clone()),
                HoldScope::Item { target, key } => p
                    .by_item
                    .insert((target.clone(), key.clone()), h.id.clone()),
                HoldScope::Target(t) => p.by_target.insert(t.clone(), h.id.clone()),
            };
        }
        for e in exceptions {
            let k = (e.target.clone(), e.key.clone());
            // Two exceptions on one item: the later `until` is the one in force.
            let keep = p.exceptions.get(&k).is_none_or(|(_, u)| *u < e.until);
            if keep {
                p.exceptions.insert(k, (e.id.clone(), e.until));
            }
        }
        p
    }

    pub fn hold_for(&self, target: &str, key: &str, subject_hash: Option<&str>) -> Option<&str> {
        if let Some(id) = self.by_target.get(target) {
            return Some(id);
        }
        if !self.by_item.is_empty()
            && let Some(id) = self.by_item.get(&(target.to_string(), key.to_string()))
        {
            return Some(id);
        }
        subject_hash
            .and_then(|s| self.by_subject.get(s))
            .map(String::as_str)
    }

    pub fn exception_for(&self, target: &str, key: &str) -> Option<(&str, Timestamp)> {
        if self.exceptions.is_empty() {
            return None;
        }
        self.exceptions
            .get(&(target.to_string(), key.to_string()))
            .map(|(id, until)| (id.as_str(), *until))
    }

    pub fn is_empty(&self) -> bool {
        self.by_subject.is_empty()
            && self.by_item.is_empty()
            && self.by_target.is_empty()
            && self.exceptions.is_empty()
    }
}

/// Reads a stored instant: SQL timestamps arrive as text, unix times as numbers. Without a
/// declared format a number is read only when it is a plausible unix time; never guessed.
pub fn read_instant(v: Raw<'_>, format: Option<&TimeFormat>) -> Result<Option<Timestamp>, String> {
    match (v, format) {
        (Raw::Null, _) => Ok(None),
        (Raw::Blob, _) => Err("is binary, not a timestamp".into()),
        (Raw::Int(i), None) => Timestamp::from_plausible_unix(i as f64).map(Some),
        (Raw::Real(f), None) => Timestamp::from_plausible_unix(f).map(Some),
        (Raw::Text(s), None) => read_text(s),
        (Raw::Int(i), Some(f @ TimeFormat::Strftime(_))) => {
            Timestamp::parse_as(&i.to_string(), f).map(Some)
        }
        (Raw::Int(i), Some(f @ (TimeFormat::UnixSeconds | TimeFormat::UnixMillis))) => {
            Timestamp::from_unix_unit(i as f64, *f == TimeFormat::UnixMillis).map(Some)
        }
        (Raw::Real(x), Some(f @ (TimeFormat::UnixSeconds | TimeFormat::UnixMillis))) => {
            Timestamp::from_unix_unit(x, *f == TimeFormat::UnixMillis).map(Some)
        }
        (Raw::Int(_) | Raw::Real(_), Some(f)) => {
            Err(format!("is a number, but the column's {f} says otherwise"))
        }
        (Raw::Text(s), Some(f)) => match infinity(s) {
            Some(read) => read,
            None => Timestamp::parse_as(s, f).map(Some),
        },
    }
}

/// PostgreSQL's infinities, as its typed columns read as text, whatever format is declared:
/// `infinity` is never (kept), `-infinity` is no date.
fn infinity(s: &str) -> Option<Result<Option<Timestamp>, String>> {
    match s.trim() {
        "infinity" | "+infinity" => Some(Ok(Some(Timestamp::MAX))),
        "-infinity" => Some(Err("is -infinity, not a date".into())),
        _ => None,
    }
}

/// Reads undeclared text: the infinities as [`infinity`] reads them, and a date before 1900
/// is taken for what it usually is, a placeholder (`0001-01-01`), not a date.
fn read_text(s: &str) -> Result<Option<Timestamp>, String> {
    if let Some(read) = infinity(s) {
        return read;
    }
    let t = Timestamp::parse(s)?;
    if t < Timestamp::EARLIEST_PLAUSIBLE {
        return Err(format!(
            "{:?} is before 1900, which reads as a placeholder (such as 0001-01-01), not a date; if it is one, declare the column's format as \"iso8601\"",
            s.trim()
        ));
    }
    Ok(Some(t))
}

/// Reads a per-item retention in whole days (integer, integral real, or digits as text).
pub fn read_days(v: Raw<'_>) -> Result<Option<i64>, String> {
    let days = match v {
        Raw::Null => return Ok(None),
        Raw::Int(i) => i,
        Raw::Real(f) if f.fract() == 0.0 && f.abs() < 1e12 => f as i64,
        Raw::Text(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("{s:?} is not a whole number of days"))?,
        Raw::Real(f) => return Err(format!("{f} is not a whole number of days")),
        Raw::Blob => return Err("is binary, not a number of days".into()),
    };
    if days < 0 {
        return Err(format!("{days} is negative"));
    }
    Ok(Some(days))
}

/// When an item expires, and why; or why it cannot be judged.
pub fn expiry(window: &Window, facts: &Facts<'_>) -> Result<(Timestamp, Basis), String> {
    // An implausible number says how to declare what the column really holds.
    let hint = |col: &str, e: String, declared: Option<&TimeFormat>| {
        if declared.is_none() && e.contains("plausible") {
            format!(
                "{col} {e}; if the column holds another unit, or dates written as digits, set {col}_format"
            )
        } else {
            format!("{col} {e}")
        }
    };
    let created = read_instant(facts.created_at, facts.created_at_format)
        .map_err(|e| hint("created_at", e, facts.created_at_format))?;
    let explicit = match facts.expires_at {
        Some(v) => read_instant(v, facts.expires_at_format)
            .map_err(|e| hint("expires_at", e, facts.expires_at_format))?,
        None => None,
    };
    let too_far = || "expiry is out of range".to_string();
    let (mut at, mut basis) = match explicit {
        Some(e) => (e, Basis::ExpiresAt),
        None => {
            let created = created.ok_or("created_at is empty")?;
            let item_days = match facts.retention_days {
                Some(v) => read_days(v).map_err(|e| format!("retention_days {e}"))?,
                None => None,
            };
            match item_days {
                Some(d) => {
                    let dur = Duration::checked_from_days(d).ok_or_else(too_far)?;
                    (
                        created.checked_add(dur).ok_or_else(too_far)?,
                        Basis::ItemRetention(d),
                    )
                }
                None => (
                    created.checked_add(window.retention).ok_or_else(too_far)?,
                    Basis::Window(window.retention),
                ),
            }
        }
    };
    if let (Some(max), Some(created)) = (window.max, created) {
        let cap = created.checked_add(max).ok_or_else(too_far)?;
        if cap < at {
            at = cap;
            basis = Basis::Max(max);
        }
    }
    Ok((at, basis))
}

/// The verdict on one item at `now`. Holds outrank exceptions; both only matter once due.
pub fn decide(
    now: Timestamp,
    window: &Window,
    target: &str,
    key: &str,
    subject_hash: Option<&str>,
    facts: &Facts<'_>,
    protections: &Protections,
) -> Verdict {
    let (expires_at, basis) = match expiry(window, facts) {
        Ok(x) => x,
        Err(reason) => return Verdict::Invalid { reason },
    };
    if expires_at > now {
        return Verdict::Keep { expires_at };
    }
    protected(
        now,
        expires_at,
        basis,
        target,
        key,
        subject_hash,
        protections,
    )
    .unwrap_or(Verdict::Expired { expires_at, basis })
}

/// The verdict on one item of a subject under an erasure request (GDPR Art. 17): due now,
/// whatever its window; only a legal hold withholds it (Art. 17(3)(e)). Exceptions extend
/// retention, not a right to erasure, so they do not apply.
pub fn decide_erasure(
    now: Timestamp,
    target: &str,
    key: &str,
    subject_hash: Option<&str>,
    protections: &Protections,
) -> Verdict {
    match protections.hold_for(target, key, subject_hash) {
        Some(hold_id) => Verdict::Held {
            expires_at: now,
            basis: Basis::Erasure,
            hold_id: hold_id.to_string(),
        },
        None => Verdict::Expired {
            expires_at: now,
            basis: Basis::Erasure,
        },
    }
}

/// The hold or live exception that keeps a due item, if any.
pub fn protected(
    now: Timestamp,
    expires_at: Timestamp,
    basis: Basis,
    target: &str,
    key: &str,
    subject_hash: Option<&str>,
    protections: &Protections,
) -> Option<Verdict> {
    if let Some(hold_id) = protections.hold_for(target, key, subject_hash) {
        return Some(Verdict::Held {
            expires_at,
            basis,
            hold_id: hold_id.to_string(),
        });
    }
    match protections.exception_for(target, key) {
        Some((id, until)) if until > now => Some(Verdict::Excepted {
            expires_at,
            basis,
            exception_id: id.to_string(),
            until,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap_or(Timestamp::from_micros(i64::MIN))
    }

    const NOW: &str = "2026-06-01T00:00:00Z";

    fn window(days: i64, max: Option<i64>) -> Window {
        Window {
            retention: Duration::from_days(days),
            max: max.map(Duration::from_days),
        }
    }

    fn facts<'a>(created: Raw<'a>, days: Option<Raw<'a>>, exp: Option<Raw<'a>>) -> Facts<'a> {
        Facts {
            created_at: created,
            expires_at: exp,
            retention_days: days,
            created_at_format: None,
            expires_at_format: None,
        }
    }

    fn verdict(w: Window, f: Facts<'_>) -> Verdict {
        decide(t(NOW), &w, "t", "1", None, &f, &Protections::default())
    }

    #[test]
    fn table_of_verdicts() {
        use Raw::*;
        let w30 = window(30, None);
        let cases: Vec<(&str, Window, Facts, &str)> = vec![
            (
                "31 days old, 30d window",
                w30,
                facts(Text("2026-05-01 00:00:00"), None, None),
                "expired",
            ),
            (
                "29 days old",
                w30,
                facts(Text("2026-05-03 00:00:00"), None, None),
                "keep",
            ),
            (
                "exactly due",
                w30,
                facts(Text("2026-05-02T00:00:00Z"), None, None),
                "expired",
            ),
            (
                "offset puts it one hour earlier: due",
                w30,
                facts(Text("2026-05-02T00:30:00+01:00"), None, None),
                "expired",
            ),
            (
                "offset puts it later: not due",
                w30,
                facts(Text("2026-05-01T23:30:00-01:00"), None, None),
                "keep",
            ),
            (
                "item retention overrides window",
                w30,
                facts(Text("2026-05-25 00:00:00"), Some(Int(7)), None),
                "expired",
            ),
            (
                "item retention longer",
                w30,
                facts(Text("2026-04-01 00:00:00"), Some(Int(90)), None),
                "keep",
            ),
            (
                "null retention falls back to window",
                w30,
                facts(Text("2026-04-01 00:00:00"), Some(Null), None),
                "expired",
            ),
            (
                "max caps a long item retention",
                window(30, Some(60)),
                facts(Text("2026-03-01 00:00:00"), Some(Int(365)), None),
                "expired",
            ),
            (
                "max caps expires_at",
                window(30, Some(60)),
                facts(Text("2026-03-01 00:00:00"), None, Some(Text("2027-01-01"))),
                "expired",
            ),
            (
                "explicit expires_at in the future",
                w30,
                facts(Text("2020-01-01"), None, Some(Text("2027-01-01"))),
                "keep",
            ),
            (
                "explicit expires_at passed",
                w30,
                facts(Text("2026-05-30"), None, Some(Text("2026-05-31"))),
                "expired",
            ),
            (
                "null expires_at uses window",
                w30,
                facts(Text("2026-04-01"), None, Some(Null)),
                "expired",
            ),
            (
                "unix seconds",
                w30,
                facts(Int(1_700_000_000), None, None),
                "expired",
            ),
            (
                "unix millis",
                w30,
                facts(Int(1_780_000_000_000), None, None),
                "keep",
            ),
            (
                "garbage timestamp",
                w30,
                facts(Text("last tuesday"), None, None),
                "invalid",
            ),
            ("null timestamp", w30, facts(Null, None, None), "invalid"),
            ("blob timestamp", w30, facts(Blob, None, None), "invalid"),
            (
                "negative retention",
                w30,
                facts(Text("2020-01-01"), Some(Int(-1)), None),
                "invalid",
            ),
            (
                "fractional retention",
                w30,
                facts(Text("2020-01-01"), Some(Real(1.5)), None),
                "invalid",
            ),
            (
                "text retention",
                w30,
                facts(Text("2026-05-25"), Some(Text("3")), None),
                "expired",
            ),
            (
                "garbage expires_at",
                w30,
                facts(Text("2020-01-01"), None, Some(Text("soon"))),
                "invalid",
            ),
            (
                "huge retention does not overflow",
                w30,
                facts(Text("2020-01-01"), Some(Int(i64::MAX)), None),
                "invalid",
            ),
        ];
        for (name, w, f, want) in cases {
            let got = match verdict(w, f) {
                Verdict::Keep { .. } => "keep",
                Verdict::Expired { .. } => "expired",
                Verdict::Invalid { .. } => "invalid",
                other => panic!("{name}: {other:?}"),
            };
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn basis_says_why() {
        let w = window(30, Some(60));
        let f = facts(Raw::Text("2026-03-01"), Some(Raw::Int(365)), None);
        assert!(matches!(
            verdict(w, f),
            Verdict::Expired {
                basis: Basis::Max(_),
                ..
            }
        ));
        let f = facts(Raw::Text("2026-03-01"), Some(Raw::Int(7)), None);
        assert!(matches!(
            verdict(w, f),
            Verdict::Expired {
                basis: Basis::ItemRetention(7),
                ..
            }
        ));
    }

    #[test]
    fn erasure_ignores_windows_and_exceptions_but_not_holds() {
        let now = t(NOW);
        let holds = vec![Hold {
            id: "h".into(),
            scope: HoldScope::Subject("s1".into()),
        }];
        let exc = vec![Exception {
            id: "e".into(),
            target: "t".into(),
            key: "2".into(),
            until: t("2027-01-01"),
        }];
        let p = Protections::new(&holds, &exc);
        assert!(matches!(
            decide_erasure(now, "t", "1", Some("s1"), &p),
            Verdict::Held { .. }
        ));
        assert!(matches!(
            decide_erasure(now, "t", "2", Some("s2"), &p),
            Verdict::Expired {
                basis: Basis::Erasure,
                ..
            }
        ));
        assert!(matches!(
            decide_erasure(now, "t", "3", Some("s2"), &p),
            Verdict::Expired { .. }
        ));
    }

    #[test]
    fn holds_and_exceptions() {
        let now = t(NOW);
        let w = window(30, None);
        let f = facts(Raw::Text("2026-01-01"), None, None);
        let holds = vec![
            Hold {
                id: "h-subj".into(),
                scope: HoldScope::Subject("abc".into()),
            },
            Hold {
                id: "h-item".into(),
                scope: HoldScope::Item {
                    target: "t".into(),
                    key: "7".into(),
                },
            },
            Hold {
                id: "h-tgt".into(),
                scope: HoldScope::Target("other".into()),
            },
        ];
        let exc = vec![
            Exception {
                id: "e-live".into(),
                target: "t".into(),
                key: "8".into(),
                until: t("2026-07-01"),
            },
            Exception {
                id: "e-lapsed".into(),
                target: "t".into(),
                key: "9".into(),
                until: t("2026-05-01"),
            },
            Exception {
                id: "e-held".into(),
                target: "t".into(),
                key: "7".into(),
                until: t("2026-07-01"),
            },
        ];
        let p = Protections::new(&holds, &exc);
        let d = |target: &str, key: &str, subj: Option<&str>| {
            decide(now, &w, target, key, subj, &f, &p)
        };
        assert!(
            matches!(d("t", "1", Some("abc")), Verdict::Held { hold_id, .. } if hold_id == "h-subj")
        );
        assert!(matches!(d("t", "7", None), Verdict::Held { hold_id, .. } if hold_id == "h-item"));
        assert!(
            matches!(d("other", "1", None), Verdict::Held { hold_id, .. } if hold_id == "h-tgt")
        );
        assert!(
            matches!(d("t", "8", None), Verdict::Excepted { exception_id, .. } if exception_id == "e-live")
        );
        assert!(
            matches!(d("t", "9", None), Verdict::Expired { .. }),
            "a lapsed exception no longer protects"
        );
        assert!(matches!(d("t", "1", Some("xyz")), Verdict::Expired { .. }));
        // a hold on an item that is not due changes nothing
        let young = facts(Raw::Text("2026-05-30"), None, None);
        assert!(matches!(
            decide(now, &w, "t", "7", None, &young, &p),
            Verdict::Keep { .. }
        ));
    }

    /// Issue 10, item 15: the infinities read the same whatever format is declared.
    #[test]
    fn infinities_whatever_the_declared_format() {
        let formats = [
            None,
            Some(TimeFormat::Iso8601),
            Some(TimeFormat::UnixSeconds),
            Some(TimeFormat::Strftime("%Y-%m-%d".into())),
        ];
        for f in &formats {
            assert_eq!(
                read_instant(Raw::Text(" infinity"), f.as_ref()),
                Ok(Some(Timestamp::MAX)),
                "{f:?}"
            );
            let minus = read_instant(Raw::Text("-infinity"), f.as_ref());
            assert_eq!(minus, Err("is -infinity, not a date".to_string()), "{f:?}");
        }
    }
}
