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
    /// A typed instant the store itself keeps (a PostgreSQL `timestamp` or `timestamptz`
    /// read in binary): no text to interpret.
    Instant(Timestamp),
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
    /// The item's own sensitivity level (`sensitivity_column`, a metadata entry); `None`
    /// when the target reads none. An empty one falls back to the target's level.
    pub sensitivity: Option<Raw<'a>>,
}

/// Why an item expires when it does: the rule that won.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Basis {
    /// The item's own expires_at.
    ExpiresAt,
    /// created_at plus the item's own retention, in days.
    ItemRetention(i64),
    /// created_at plus the target's or category's window.
    Window(Duration),
    /// created_at plus the category's maximum, which was shorter than what the item asked for.
    Max(Duration),
    /// created_at plus a sensitivity level's cap, shorter than anything else: the level the
    /// item (or its target) names, or, for a level nobody defined, the strictest cap.
    Cap {
        level: String,
        cap: Duration,
        unknown: bool,
    },
    /// created_at plus the category's legal minimum, which came later than every other rule.
    Min(Duration),
    /// An erasure request: due now, whatever the window.
    Erasure,
    /// An erasure request on an item still inside its category's legal minimum: the request
    /// applies, and the entry says it overrode the minimum.
    ErasureUnderMin(Duration),
}

impl Basis {
    /// The window as written in the audit trail: "30d", "max 90d", "expires_at".
    pub fn describe(&self) -> String {
        match self {
            Basis::ExpiresAt => "expires_at".into(),
            Basis::ItemRetention(d) => format!("{d}d (item)"),
            Basis::Window(w) => w.to_string(),
            Basis::Max(m) => format!("max {m}"),
            Basis::Cap {
                level,
                cap,
                unknown: false,
            } => format!("cap {cap} (sensitivity {level})"),
            // The value an item gave is its own content: never written in the trail.
            Basis::Cap {
                cap, unknown: true, ..
            } => format!("cap {cap} (unknown sensitivity level, read as the strictest)"),
            Basis::Min(m) => format!("min {m} (legal minimum)"),
            Basis::Erasure => "erasure".into(),
            Basis::ErasureUnderMin(m) => {
                format!("erasure (overrides the legal minimum {m}: the request applies)")
            }
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
        (Raw::Instant(t), _) => plausible(t, || t.to_rfc3339()),
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
    plausible(Timestamp::parse(s)?, || s.trim().to_string())
}

/// A date before 1900 is taken for what it usually is, a placeholder (`0001-01-01`), not a
/// date.
fn plausible(t: Timestamp, shown: impl Fn() -> String) -> Result<Option<Timestamp>, String> {
    if t < Timestamp::EARLIEST_PLAUSIBLE {
        return Err(format!(
            "{:?} is before 1900, which reads as a placeholder (such as 0001-01-01), not a date; if it is one, declare the column's format as \"iso8601\"",
            shown()
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
        Raw::Instant(_) => return Err("is a timestamp, not a number of days".into()),
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
    // The caps: the category's max and the sensitivity level's, the earliest winning.
    if let Some(created) = created {
        let level = item_level(window, facts.sensitivity);
        let mut caps: Vec<(Duration, Basis)> = Vec::new();
        if let Some(max) = window.max {
            caps.push((max, Basis::Max(max)));
        }
        if let Some((cap, b)) = level {
            caps.push((cap, b));
        }
        for (cap, b) in caps {
            let capped = created.checked_add(cap).ok_or_else(too_far)?;
            if capped < at {
                at = capped;
                basis = b;
            }
        }
    }
    // The legal minimum outranks every other rule (a cap, an item's own expiry).
    if let Some(min) = window.min {
        let created = created.ok_or_else(|| {
            format!(
                "created_at is empty, so the category's legal minimum ({min}) cannot be checked"
            )
        })?;
        let floor = created.checked_add(min).ok_or_else(too_far)?;
        if at < floor {
            at = floor;
            basis = Basis::Min(min);
        }
    }
    Ok((at, basis))
}

/// The sensitivity cap that applies to an item, and its basis: the item's own level when it
/// names one, else its target's; a level nobody defined is read as the strictest cap.
pub fn item_level(window: &Window, own: Option<Raw<'_>>) -> Option<(Duration, Basis)> {
    let named = match own {
        None | Some(Raw::Null) => None,
        Some(Raw::Text(t)) if t.trim().is_empty() => None,
        Some(Raw::Text(t)) => Some(t.trim().to_string()),
        Some(Raw::Int(i)) => Some(i.to_string()),
        Some(Raw::Real(f)) => Some(f.to_string()),
        Some(Raw::Blob) => Some("(binary)".to_string()),
        Some(Raw::Instant(t)) => Some(t.to_rfc3339()),
    };
    let name = named.or_else(|| window.level.clone())?;
    match window.levels.find(&name) {
        Some(level) => {
            let cap = window.levels.cap(level)?;
            Some((
                cap,
                Basis::Cap {
                    level: level.to_string(),
                    cap,
                    unknown: false,
                },
            ))
        }
        None => {
            let cap = window.levels.strictest()?;
            Some((
                cap,
                Basis::Cap {
                    level: shown_level(&name),
                    cap,
                    unknown: true,
                },
            ))
        }
    }
}

/// An undefined level as a report may show it: a short name as given, anything else (free
/// text, which may be personal data) only by its length.
pub fn shown_level(raw: &str) -> String {
    let name_like = raw.chars().count() <= 32
        && raw
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' '));
    if name_like {
        raw.to_string()
    } else {
        format!("(not a level name: {} characters)", raw.chars().count())
    }
}

/// Whether an item names a sensitivity level nobody defined (reported, and read as the
/// strictest).
pub fn unknown_level(window: &Window, own: Option<Raw<'_>>) -> Option<String> {
    match own {
        Some(Raw::Text(t)) if !t.trim().is_empty() && window.levels.find(t).is_none() => {
            Some(shown_level(t.trim()))
        }
        Some(Raw::Int(_) | Raw::Real(_) | Raw::Blob | Raw::Instant(_)) => item_level(window, own)
            .and_then(|(_, b)| match b {
                Basis::Cap { level, .. } => Some(level),
                _ => None,
            }),
        _ => None,
    }
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
        basis.clone(),
        target,
        key,
        subject_hash,
        protections,
    )
    .unwrap_or(Verdict::Expired { expires_at, basis })
}

/// The verdict on one item of a subject under an erasure request (GDPR Art. 17): due now,
/// whatever its window; only a legal hold withholds it (Art. 17(3)(e)). Exceptions extend
/// retention, not a right to erasure, so they do not apply. An item still inside its
/// category's legal minimum (or whose age cannot be read) is erased too, and the basis says
/// the request overrode the minimum.
pub fn decide_erasure(
    now: Timestamp,
    window: &Window,
    target: &str,
    key: &str,
    subject_hash: Option<&str>,
    facts: &Facts<'_>,
    protections: &Protections,
) -> Verdict {
    let basis = match window.min {
        None => Basis::Erasure,
        Some(min) => {
            let past_min = read_instant(facts.created_at, facts.created_at_format)
                .ok()
                .flatten()
                .and_then(|c| c.checked_add(min))
                .is_some_and(|floor| floor <= now);
            if past_min {
                Basis::Erasure
            } else {
                Basis::ErasureUnderMin(min)
            }
        }
    };
    match protections.hold_for(target, key, subject_hash) {
        Some(hold_id) => Verdict::Held {
            expires_at: now,
            basis,
            hold_id: hold_id.to_string(),
        },
        None => Verdict::Expired {
            expires_at: now,
            basis,
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
        Window::new(Duration::from_days(days), max.map(Duration::from_days))
    }

    fn facts<'a>(created: Raw<'a>, days: Option<Raw<'a>>, exp: Option<Raw<'a>>) -> Facts<'a> {
        Facts {
            created_at: created,
            expires_at: exp,
            retention_days: days,
            created_at_format: None,
            expires_at_format: None,
            sensitivity: None,
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
                w30.clone(),
                facts(Text("2026-05-01 00:00:00"), None, None),
                "expired",
            ),
            (
                "29 days old",
                w30.clone(),
                facts(Text("2026-05-03 00:00:00"), None, None),
                "keep",
            ),
            (
                "exactly due",
                w30.clone(),
                facts(Text("2026-05-02T00:00:00Z"), None, None),
                "expired",
            ),
            (
                "offset puts it one hour earlier: due",
                w30.clone(),
                facts(Text("2026-05-02T00:30:00+01:00"), None, None),
                "expired",
            ),
            (
                "offset puts it later: not due",
                w30.clone(),
                facts(Text("2026-05-01T23:30:00-01:00"), None, None),
                "keep",
            ),
            (
                "item retention overrides window",
                w30.clone(),
                facts(Text("2026-05-25 00:00:00"), Some(Int(7)), None),
                "expired",
            ),
            (
                "item retention longer",
                w30.clone(),
                facts(Text("2026-04-01 00:00:00"), Some(Int(90)), None),
                "keep",
            ),
            (
                "null retention falls back to window",
                w30.clone(),
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
                w30.clone(),
                facts(Text("2020-01-01"), None, Some(Text("2027-01-01"))),
                "keep",
            ),
            (
                "explicit expires_at passed",
                w30.clone(),
                facts(Text("2026-05-30"), None, Some(Text("2026-05-31"))),
                "expired",
            ),
            (
                "null expires_at uses window",
                w30.clone(),
                facts(Text("2026-04-01"), None, Some(Null)),
                "expired",
            ),
            (
                "unix seconds",
                w30.clone(),
                facts(Int(1_700_000_000), None, None),
                "expired",
            ),
            (
                "unix millis",
                w30.clone(),
                facts(Int(1_780_000_000_000), None, None),
                "keep",
            ),
            (
                "garbage timestamp",
                w30.clone(),
                facts(Text("last tuesday"), None, None),
                "invalid",
            ),
            (
                "null timestamp",
                w30.clone(),
                facts(Null, None, None),
                "invalid",
            ),
            (
                "blob timestamp",
                w30.clone(),
                facts(Blob, None, None),
                "invalid",
            ),
            (
                "negative retention",
                w30.clone(),
                facts(Text("2020-01-01"), Some(Int(-1)), None),
                "invalid",
            ),
            (
                "fractional retention",
                w30.clone(),
                facts(Text("2020-01-01"), Some(Real(1.5)), None),
                "invalid",
            ),
            (
                "text retention",
                w30.clone(),
                facts(Text("2026-05-25"), Some(Text("3")), None),
                "expired",
            ),
            (
                "garbage expires_at",
                w30.clone(),
                facts(Text("2020-01-01"), None, Some(Text("soon"))),
                "invalid",
            ),
            (
                "huge retention does not overflow",
                w30.clone(),
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
            verdict(w.clone(), f),
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
            decide_erasure(
                now,
                &window(30, None),
                "t",
                "1",
                Some("s1"),
                &facts(Raw::Text("2026-01-01"), None, None),
                &p
            ),
            Verdict::Held { .. }
        ));
        assert!(matches!(
            decide_erasure(
                now,
                &window(30, None),
                "t",
                "2",
                Some("s2"),
                &facts(Raw::Text("2026-01-01"), None, None),
                &p
            ),
            Verdict::Expired {
                basis: Basis::Erasure,
                ..
            }
        ));
        assert!(matches!(
            decide_erasure(
                now,
                &window(30, None),
                "t",
                "3",
                Some("s2"),
                &facts(Raw::Text("2026-01-01"), None, None),
                &p
            ),
            Verdict::Expired { .. }
        ));
    }

    /// Levels as a config with `[sensitivity.restricted] max = "7d"` and
    /// `[sensitivity.confidential] max = "14d"` has them (public and internal uncapped).
    fn levels() -> crate::config::Levels {
        let mut l = std::collections::BTreeMap::new();
        l.insert("public".to_string(), None);
        l.insert("internal".to_string(), None);
        l.insert("confidential".to_string(), Some(Duration::from_days(14)));
        l.insert("restricted".to_string(), Some(Duration::from_days(7)));
        crate::config::Levels(l)
    }

    /// The policy's rules, one verdict per row: window 30d unless said, the winning rule in
    /// the basis.
    #[test]
    fn table_of_policy_rules() {
        use Raw::*;
        let now = t(NOW);
        let d = Duration::from_days;
        let ts = |days: i64| Timestamp::from_micros(now.as_micros() - days * 86_400_000_000);
        let win = |max: Option<i64>, min: Option<i64>, level: Option<&str>| Window {
            min: min.map(d),
            level: level.map(str::to_string),
            levels: levels(),
            ..Window::new(d(30), max.map(d))
        };
        struct Case<'a> {
            what: &'a str,
            w: Window,
            age: i64,
            days: Option<i64>,
            /// expires_at, in days after created_at.
            exp: Option<i64>,
            item_level: Option<&'a str>,
            want: &'a str,
            basis: Option<Basis>,
        }
        let c = |what, w, age, days, exp, item_level, want, basis| Case {
            what,
            w,
            age,
            days,
            exp,
            item_level,
            want,
            basis,
        };
        let cases = vec![
            c(
                "window alone, due",
                win(None, None, None),
                31,
                None,
                None,
                None,
                "expired",
                Some(Basis::Window(d(30))),
            ),
            c(
                "window alone, young",
                win(None, None, None),
                29,
                None,
                None,
                None,
                "keep",
                None,
            ),
            c(
                "max under the row's own 365 days",
                win(Some(60), None, None),
                61,
                Some(365),
                None,
                None,
                "expired",
                Some(Basis::Max(d(60))),
            ),
            c(
                "row's own 7 days under the window",
                win(None, None, None),
                8,
                Some(7),
                None,
                None,
                "expired",
                Some(Basis::ItemRetention(7)),
            ),
            c(
                "explicit expiry wins over the window",
                win(None, None, None),
                5,
                None,
                Some(3),
                None,
                "expired",
                Some(Basis::ExpiresAt),
            ),
            c(
                "explicit expiry later than max: max",
                win(Some(60), None, None),
                61,
                None,
                Some(200),
                None,
                "expired",
                Some(Basis::Max(d(60))),
            ),
            c(
                "min keeps what the window made due",
                win(None, Some(45), None),
                31,
                None,
                None,
                None,
                "keep",
                None,
            ),
            c(
                "min passed: due, and min is the basis",
                win(None, Some(45), None),
                46,
                None,
                None,
                None,
                "expired",
                Some(Basis::Min(d(45))),
            ),
            c(
                "min outranks an explicit expiry",
                win(None, Some(45), None),
                10,
                None,
                Some(3),
                None,
                "keep",
                None,
            ),
            c(
                "min outranks a row's own retention",
                win(None, Some(45), None),
                40,
                Some(5),
                None,
                None,
                "keep",
                None,
            ),
            c(
                "min under the window changes nothing",
                win(None, Some(10), None),
                31,
                None,
                None,
                None,
                "expired",
                Some(Basis::Window(d(30))),
            ),
            c(
                "target level cap",
                win(None, None, Some("restricted")),
                8,
                None,
                None,
                None,
                "expired",
                Some(Basis::Cap {
                    level: "restricted".into(),
                    cap: d(7),
                    unknown: false,
                }),
            ),
            c(
                "target level uncapped",
                win(None, None, Some("public")),
                8,
                None,
                None,
                None,
                "keep",
                None,
            ),
            c(
                "item level outranks the target's",
                win(None, None, Some("restricted")),
                8,
                None,
                None,
                Some("public"),
                "keep",
                None,
            ),
            c(
                "item level cap",
                win(None, None, None),
                15,
                None,
                None,
                Some("confidential"),
                "expired",
                Some(Basis::Cap {
                    level: "confidential".into(),
                    cap: d(14),
                    unknown: false,
                }),
            ),
            c(
                "item level in another case",
                win(None, None, None),
                15,
                None,
                None,
                Some(" Confidential "),
                "expired",
                Some(Basis::Cap {
                    level: "confidential".into(),
                    cap: d(14),
                    unknown: false,
                }),
            ),
            c(
                "empty item level: the target's",
                win(None, None, Some("restricted")),
                8,
                None,
                None,
                Some(""),
                "expired",
                Some(Basis::Cap {
                    level: "restricted".into(),
                    cap: d(7),
                    unknown: false,
                }),
            ),
            c(
                "unknown item level: the strictest cap",
                win(None, None, None),
                8,
                None,
                None,
                Some("secrett"),
                "expired",
                Some(Basis::Cap {
                    level: "secrett".into(),
                    cap: d(7),
                    unknown: true,
                }),
            ),
            c(
                "unknown level, young: kept",
                win(None, None, None),
                6,
                None,
                None,
                Some("secrett"),
                "keep",
                None,
            ),
            c(
                "cap under min: the minimum wins",
                win(None, Some(10), Some("restricted")),
                8,
                None,
                None,
                None,
                "keep",
                None,
            ),
            c(
                "cap under min, past min",
                win(None, Some(10), Some("restricted")),
                11,
                None,
                None,
                None,
                "expired",
                Some(Basis::Min(d(10))),
            ),
            c(
                "cap under the explicit expiry",
                win(None, None, Some("restricted")),
                8,
                None,
                Some(200),
                None,
                "expired",
                Some(Basis::Cap {
                    level: "restricted".into(),
                    cap: d(7),
                    unknown: false,
                }),
            ),
            c(
                "max under the cap",
                win(Some(5), None, Some("restricted")),
                6,
                None,
                None,
                None,
                "expired",
                Some(Basis::Max(d(5))),
            ),
        ];
        for case in cases {
            let cr = ts(case.age).to_rfc3339();
            let ex = case.exp.map(|e| {
                Timestamp::from_micros(ts(case.age).as_micros() + e * 86_400_000_000).to_rfc3339()
            });
            let f = Facts {
                created_at: Text(&cr),
                expires_at: Some(ex.as_deref().map_or(Null, Text)),
                retention_days: Some(case.days.map_or(Null, Int)),
                created_at_format: None,
                expires_at_format: None,
                sensitivity: Some(case.item_level.map_or(Null, Text)),
            };
            let v = decide(now, &case.w, "t", "1", None, &f, &Protections::default());
            let got = match &v {
                Verdict::Keep { .. } => "keep",
                Verdict::Expired { .. } => "expired",
                Verdict::Held { .. } => "held",
                Verdict::Excepted { .. } => "excepted",
                Verdict::Invalid { .. } => "invalid",
            };
            assert_eq!(got, case.want, "{}: {v:?}", case.what);
            if let (Some(want), Verdict::Expired { basis, .. }) = (&case.basis, &v) {
                assert_eq!(basis, want, "{}", case.what);
            }
        }
    }

    /// Every combination of window, max, min, level cap (target's, item's, unknown),
    /// per-row retention, explicit expiry, hold and exception, at ages either side of each
    /// bound, against the rule written out in days.
    #[test]
    fn every_combination_of_rules_matches_the_rule_in_days() {
        use Raw::*;
        let now = t(NOW);
        let d = Duration::from_days;
        let day = 86_400_000_000i64;
        let holds = vec![Hold {
            id: "h".into(),
            scope: HoldScope::Item {
                target: "t".into(),
                key: "held".into(),
            },
        }];
        let excs = vec![
            Exception {
                id: "x".into(),
                target: "t".into(),
                key: "excepted".into(),
                until: Timestamp::from_micros(now.as_micros() + day),
            },
            Exception {
                id: "old".into(),
                target: "t".into(),
                key: "lapsed".into(),
                until: Timestamp::from_micros(now.as_micros() - day),
            },
        ];
        let p = Protections::new(&holds, &excs);
        let mut checked = 0;
        for max in [None, Some(60), Some(20)] {
            for min in [None, Some(45), Some(10)] {
                if matches!((min, max), (Some(lo), Some(hi)) if lo > hi) {
                    continue; // refused by the config
                }
                for target_level in [None, Some("restricted"), Some("public")] {
                    for item_level in [None, Some("confidential"), Some("secrett"), Some("")] {
                        for row_days in [None, Some(5), Some(100)] {
                            for exp in [None, Some(3), Some(200)] {
                                for key in ["plain", "held", "excepted", "lapsed"] {
                                    for age in [2, 4, 6, 8, 12, 16, 25, 35, 50, 70, 150, 250] {
                                        let w = Window {
                                            min: min.map(d),
                                            level: target_level.map(str::to_string),
                                            levels: levels(),
                                            ..Window::new(d(30), max.map(d))
                                        };
                                        let created = now.as_micros() - age * day;
                                        let cr = Timestamp::from_micros(created).to_rfc3339();
                                        let ex = exp.map(|e: i64| {
                                            Timestamp::from_micros(created + e * day).to_rfc3339()
                                        });
                                        let f = Facts {
                                            created_at: Text(&cr),
                                            expires_at: Some(ex.as_deref().map_or(Null, Text)),
                                            retention_days: Some(row_days.map_or(Null, Int)),
                                            created_at_format: None,
                                            expires_at_format: None,
                                            sensitivity: Some(item_level.map_or(Null, Text)),
                                        };
                                        // The rule, in days after created_at.
                                        let mut life = exp.or(row_days).unwrap_or(30);
                                        let level = match item_level {
                                            Some(l) if !l.is_empty() => Some(l),
                                            _ => target_level,
                                        };
                                        let cap = match level {
                                            Some("restricted") | Some("secrett") => Some(7),
                                            Some("confidential") => Some(14),
                                            _ => None,
                                        };
                                        for c in [max, cap].into_iter().flatten() {
                                            life = life.min(c);
                                        }
                                        if let Some(m) = min {
                                            life = life.max(m);
                                        }
                                        let want = if age < life {
                                            "keep"
                                        } else {
                                            match key {
                                                "held" => "held",
                                                "excepted" => "excepted",
                                                _ => "expired",
                                            }
                                        };
                                        let v = decide(now, &w, "t", key, None, &f, &p);
                                        let (got, at) = match &v {
                                            Verdict::Keep { expires_at } => ("keep", *expires_at),
                                            Verdict::Expired { expires_at, .. } => {
                                                ("expired", *expires_at)
                                            }
                                            Verdict::Held { expires_at, .. } => {
                                                ("held", *expires_at)
                                            }
                                            Verdict::Excepted { expires_at, .. } => {
                                                ("excepted", *expires_at)
                                            }
                                            Verdict::Invalid { .. } => ("invalid", now),
                                        };
                                        let case = format!(
                                            "max {max:?} min {min:?} target {target_level:?} item {item_level:?} row {row_days:?} exp {exp:?} {key} age {age}: {v:?}"
                                        );
                                        assert_eq!(got, want, "{case}");
                                        assert_eq!(at.as_micros(), created + life * day, "{case}");
                                        // The basis names the rule that set the expiry.
                                        if let Verdict::Expired { basis, .. }
                                        | Verdict::Held { basis, .. }
                                        | Verdict::Excepted { basis, .. } = &v
                                        {
                                            let named = match basis {
                                                Basis::Min(m) => Some(m.as_secs() / 86_400) == min,
                                                Basis::Max(m) => {
                                                    Some(m.as_secs() / 86_400) == max
                                                        && Some(life) == max
                                                }
                                                Basis::Cap {
                                                    cap: c, unknown, ..
                                                } => {
                                                    Some(c.as_secs() / 86_400) == cap
                                                        && Some(life) == cap
                                                        && *unknown == (level == Some("secrett"))
                                                }
                                                Basis::ExpiresAt => exp == Some(life),
                                                Basis::ItemRetention(n) => {
                                                    exp.is_none()
                                                        && row_days == Some(*n)
                                                        && *n == life
                                                }
                                                Basis::Window(w) => {
                                                    exp.is_none()
                                                        && row_days.is_none()
                                                        && w.as_secs() / 86_400 == life
                                                }
                                                _ => false,
                                            };
                                            assert!(
                                                named,
                                                "the basis does not name the winning rule: {case}"
                                            );
                                        }
                                        checked += 1;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    #[test]
    fn an_erasure_under_the_legal_minimum_applies_and_says_so() {
        let now = t(NOW);
        let w = Window {
            min: Some(Duration::from_days(45)),
            ..window(30, None)
        };
        let young = facts(Raw::Text("2026-05-20"), None, None);
        let old = facts(Raw::Text("2026-01-01"), None, None);
        let none = Protections::default();
        assert_eq!(
            decide_erasure(now, &w, "t", "1", None, &young, &none),
            Verdict::Expired {
                expires_at: now,
                basis: Basis::ErasureUnderMin(Duration::from_days(45))
            }
        );
        assert!(
            Basis::ErasureUnderMin(Duration::from_days(45))
                .describe()
                .contains("overrides the legal minimum 45d")
        );
        assert_eq!(
            decide_erasure(now, &w, "t", "1", None, &old, &none),
            Verdict::Expired {
                expires_at: now,
                basis: Basis::Erasure
            }
        );
        // A retention sweep keeps the young one.
        assert!(matches!(
            decide(now, &w, "t", "1", None, &young, &none),
            Verdict::Keep { .. }
        ));
        // Without created_at the minimum cannot be checked: never deleted by a sweep.
        let blank = facts(Raw::Null, None, Some(Raw::Text("2026-01-01")));
        assert!(matches!(
            decide(now, &w, "t", "1", None, &blank, &none),
            Verdict::Invalid { .. }
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
