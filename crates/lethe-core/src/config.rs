//! `lethe.toml`: parsed and validated in one pass that reports every problem at once, each
//! with the key and line it concerns. Pure: paths are kept as written; the caller resolves them.

use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::guard::{DEFAULT_MAX_NEW_DUE, Limit};
use crate::time::{Duration, TimeFormat};

mod serve;
pub use serve::{AlertsConfig, ApiConfig, ApiToken, CronSpec, Role, ScheduleConfig};

/// The commented example printed by `lethe default-config` and shown in the README.
pub const DEFAULT_CONFIG: &str = include_str!("default-config.toml");

/// The longest duration a config may give: 1000 years (`365250d`). Anything longer is a typo,
/// and could overflow when added to a timestamp.
pub const MAX_DURATION: Duration = Duration::from_days(365_250);

/// The longest `lock_timeout`: a day. The databases count a lock wait in milliseconds, in 32
/// bits (at most 24.8 days); a longer wait is a typo, not a policy.
pub const MAX_LOCK_TIMEOUT: Duration = Duration::from_days(1);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub state: StateConfig,
    pub categories: BTreeMap<String, Category>,
    /// The sensitivity levels and their caps: the four built in, and `[sensitivity.LEVEL]`.
    pub sensitivity: Levels,
    pub targets: Vec<Target>,
    pub tags: TagsConfig,
    pub exceptions: ExceptionsConfig,
    pub audit: AuditConfig,
    pub erasure: ErasureConfig,
    pub schedule: ScheduleConfig,
    pub api: ApiConfig,
    pub alerts: AlertsConfig,
    pub guard: GuardConfig,
}

/// `[guard]`: how much a policy change may newly make due before a person accepts it.
#[derive(Clone, Debug)]
pub struct GuardConfig {
    /// `max_new_due` (default 10%): a target whose items the config makes due, that the
    /// policy last applied did not, beyond this many is not swept by an apply until the
    /// change is accepted (`lethe plan --accept`) or the run says `--allow-large`.
    pub max_new_due: Limit,
}

impl Default for GuardConfig {
    fn default() -> GuardConfig {
        GuardConfig {
            max_new_due: DEFAULT_MAX_NEW_DUE,
        }
    }
}

#[derive(Clone, Debug)]
pub struct StateConfig {
    pub url: String,
    /// Environment variable holding the database password, never the password itself.
    pub password_env: Option<String>,
    /// How long a sweep's lease on a target lasts unless renewed (`lease_ttl`, default
    /// 120s): another sweep may take over a lease silent for longer, and a sweep that could
    /// not renew its lease within it stops before its next delete.
    pub lease_ttl: Duration,
    /// Line of the `url` value, for messages about it; `None` when the default is used.
    pub line: Option<usize>,
}

/// The default `[state] lease_ttl`.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(120);

#[derive(Clone, Debug)]
pub struct Category {
    pub name: String,
    pub retention: Option<Duration>,
    pub max: Option<Duration>,
    pub owner: Option<String>,
    pub runbook: Option<String>,
    /// `range = ["7d", "30d"]`: the approved windows. The category's window and every
    /// target's own window of this category must lie in it (bounds included), or the config
    /// is refused.
    pub range: Option<(Duration, Duration)>,
    /// `min`: the legal minimum. Nothing of the category is deleted before it, whatever an
    /// item, a cap or a tag says; an erasure request still applies, and says so.
    pub min: Option<Duration>,
}

#[derive(Clone, Debug, Default)]
pub struct TagsConfig {
    pub required: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct ExceptionsConfig {
    pub max_extension: Duration,
    pub max_renewals: u32,
}

#[derive(Clone, Debug)]
pub struct AuditConfig {
    pub retention: Option<Duration>,
    pub key_env: Option<String>,
    /// The environment variable holding the Ed25519 signing key's seed (64 hex digits);
    /// else a key file beside the state, mode 0600.
    pub signing_key_env: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ErasureConfig {
    pub deadline: Duration,
}

/// What a target says about who answers for it and where it lives; read by reports only,
/// never by a decision to delete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels {
    pub owner: Option<String>,
    pub runbook: Option<String>,
    pub region: Option<String>,
    pub sensitivity: Option<String>,
}

/// How long items of a target may live: the window, capped by the category's maximum and
/// the sensitivity caps, never shorter than the category's legal minimum.
///
/// The state stores it as JSON (the policy last applied to a target, for `lethe plan` and
/// the guard before an apply), and compares every field: a field added later must be
/// `#[serde(default)]` (or an `Option`) so that a policy stored before it can still be read.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub retention: Duration,
    pub max: Option<Duration>,
    /// The category's legal minimum (`min`): nothing of the category is deleted younger,
    /// whatever an item, a cap or a tag says; only an erasure request goes under it.
    #[serde(default)]
    pub min: Option<Duration>,
    /// The target's own sensitivity level (`sensitivity = "…"`), for items that name none.
    #[serde(default)]
    pub level: Option<String>,
    /// Every known level (the four built in and each `[sensitivity.LEVEL]`) and its cap.
    #[serde(default)]
    pub levels: Levels,
}

impl Window {
    /// A plain window: no minimum, no level, no caps.
    pub fn new(retention: Duration, max: Option<Duration>) -> Window {
        Window {
            retention,
            max,
            min: None,
            level: None,
            levels: Levels::default(),
        }
    }

    /// The shortest life any item may be given by a cap (the category's max or a level's),
    /// before the legal minimum: what a store's own filter must let through. With
    /// `item_levels`, items may name any level, an unknown one read as the strictest.
    pub fn earliest_cap(&self, item_levels: bool) -> Option<Duration> {
        let own = self.level.as_deref().and_then(|l| self.levels.cap(l));
        let any = if item_levels {
            self.levels.strictest()
        } else {
            None
        };
        [self.max, own, any].into_iter().flatten().min()
    }

    /// What in the policy gives way to the legal minimum, for `check` to say: a window or a
    /// cap shorter than it. `item_levels`: items name their own level.
    pub fn minimum_warnings(&self, category: &str, item_levels: bool) -> Vec<String> {
        let Some(min) = self.min else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if self.retention < min {
            out.push(format!(
                "the window {} is shorter than the legal minimum {min} of [categories.{category}]: items are kept until the minimum",
                self.retention
            ));
        }
        let mut levels: Vec<&str> = Vec::new();
        if let Some(l) = self.level.as_deref() {
            levels.push(l);
        }
        if item_levels {
            levels.extend(self.levels.0.keys().map(String::as_str));
        }
        levels.dedup();
        for l in levels {
            if let Some(cap) = self.levels.cap(l)
                && cap < min
            {
                out.push(format!(
                    "the {l} cap {cap} falls below the legal minimum {min} of [categories.{category}]: the minimum wins for those items"
                ));
            }
        }
        out
    }
}

/// The built-in sensitivity levels, known whatever the config says (uncapped unless a
/// `[sensitivity.LEVEL]` table gives a `max`).
pub const BUILTIN_LEVELS: [&str; 4] = ["public", "internal", "confidential", "restricted"];

/// Sensitivity levels and their caps (`[sensitivity.LEVEL] max`), by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Levels(pub BTreeMap<String, Option<Duration>>);

impl Levels {
    /// The level a name means: matched whole, ignoring ASCII case and surrounding space.
    pub fn find(&self, name: &str) -> Option<&str> {
        let name = name.trim();
        self.0
            .keys()
            .find(|k| k.eq_ignore_ascii_case(name))
            .map(String::as_str)
    }

    /// A known level's cap (`None`: uncapped or unknown).
    pub fn cap(&self, name: &str) -> Option<Duration> {
        self.find(name)
            .and_then(|k| self.0.get(k).copied().flatten())
    }

    /// The shortest cap of any level, and its level: what an unknown level is read as.
    pub fn strictest(&self) -> Option<Duration> {
        self.0.values().flatten().min().copied()
    }
}

#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub category: String,
    pub window: Window,
    /// Line of the `[[targets]]` entry, for messages about it.
    pub line: usize,
    /// The `type`, as its connector names it.
    pub type_name: &'static str,
    /// What names an item's data subject (a column, a metadata entry), for the kinds of
    /// target that map one: the items erasure, export and subject holds reach.
    pub subject: Option<String>,
    /// `schedule`: the target's own cron, instead of `[schedule] sweep`.
    pub schedule: Option<CronSpec>,
    /// Who answers for the target and where it lives, for reports and the dashboard:
    /// `owner` and `runbook` (each falling back to the category's), `region`, `sensitivity`.
    pub labels: Labels,
    /// Everything else the target says, as the connector of its type read it.
    pub spec: Arc<dyn TargetSpec>,
    /// `max_delete`: an apply that would delete more of the target's items in one run
    /// deletes none of them (unless the run says `--allow-large`).
    pub max_delete: Option<Limit>,
    /// `delete_delay`: an apply only schedules what it finds due; a run at least this much
    /// later deletes it, if it is still due then. Erasure requests are not delayed.
    pub delete_delay: Option<Duration>,
}

impl Target {
    /// The target's own settings, when they are of this connector's type.
    pub fn spec<T: TargetSpec>(&self) -> Option<&T> {
        // Through the Arc: the Arc itself is a TargetSpec too (any plain type is).
        (*self.spec).as_any().downcast_ref::<T>()
    }
}

/// A target's own settings, as the connector of its `type` parsed them: any plain type
/// (`Debug`, `Send`, `Sync`) is one.
pub trait TargetSpec: fmt::Debug + Send + Sync + 'static {
    /// For the connector that made it, to read it back ([`Target::spec`]).
    fn as_any(&self) -> &dyn Any;
}

impl<T: fmt::Debug + Send + Sync + 'static> TargetSpec for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A `type` of target: its connector reads its own keys, purely (no IO), through a
/// [`Section`] that reports every problem with its key and line. The config keeps only
/// what every target has: name, type, category, window and subject.
pub trait TargetParser: Sync {
    /// The `type` value that selects it.
    fn type_name(&self) -> &'static str;
    /// Whether `subject` means something for this kind of target.
    fn maps_subject(&self) -> bool {
        false
    }
    /// The target's own settings; `None` when a problem was reported.
    fn parse(&self, section: &mut Section<'_, '_>) -> Option<Arc<dyn TargetSpec>>;
    /// For a target that names another (a vendor target's `subject_map.source`), once every
    /// target is read: its settings with the other's resolved, or the key and what is wrong.
    /// `Ok(None)` keeps the settings as parsed.
    fn link(
        &self,
        _target: &Target,
        _all: &[Target],
    ) -> Result<Option<Arc<dyn TargetSpec>>, (String, String)> {
        Ok(None)
    }
}

/// An option key that names a secret (a key, token, password or signature): such values
/// must come from the environment, so a config file can be shared and committed.
fn looks_like_credential(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "secret",
        "access_key",
        "account_key",
        "token",
        "password",
        "sas",
        "credential",
        "service_account",
    ]
    .iter()
    .any(|w| k.contains(w))
}

impl Config {
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }
}

struct Ctx {
    src: String,
    errors: Vec<ConfigError>,
}

impl Ctx {
    fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.src.len());
        self.src.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }
    fn err(&mut self, span: Option<Range<usize>>, key: impl Into<String>, msg: impl Into<String>) {
        let line = span.map(|s| self.line(s));
        self.errors.push(ConfigError {
            line,
            key: key.into(),
            message: msg.into(),
        });
    }
}

/// One TOML table being read: remembers which keys were taken, so the rest are unknown.
struct Tbl<'a> {
    path: String,
    span: Range<usize>,
    t: &'a DeTable<'a>,
    seen: HashSet<String>,
}

impl<'a> Tbl<'a> {
    fn new(path: impl Into<String>, v: &'a Spanned<DeValue<'a>>, ctx: &mut Ctx) -> Option<Self> {
        let path = path.into();
        match v.get_ref() {
            DeValue::Table(t) => Some(Tbl {
                path,
                span: v.span(),
                t,
                seen: HashSet::new(),
            }),
            other => {
                ctx.err(
                    Some(v.span()),
                    path,
                    format!("expected a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn key(&self, k: &str) -> String {
        if self.path.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", self.path)
        }
    }

    fn raw(&mut self, k: &str) -> Option<&'a Spanned<DeValue<'a>>> {
        self.seen.insert(k.to_string());
        self.t.get(k)
    }

    fn string(&mut self, ctx: &mut Ctx, k: &str) -> Option<(String, Range<usize>)> {
        let v = self.raw(k)?;
        match v.get_ref() {
            DeValue::String(s) if s.trim().is_empty() => {
                ctx.err(Some(v.span()), self.key(k), "must not be empty");
                None
            }
            DeValue::String(s) => Some((s.to_string(), v.span())),
            other => {
                ctx.err(
                    Some(v.span()),
                    self.key(k),
                    format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn opt_str(&mut self, ctx: &mut Ctx, k: &str) -> Option<String> {
        self.string(ctx, k).map(|(s, _)| s)
    }

    fn req_str(&mut self, ctx: &mut Ctx, k: &str) -> Option<String> {
        if self.t.get(k).is_none() {
            ctx.err(Some(self.span.clone()), self.key(k), "is required");
            self.seen.insert(k.to_string());
            return None;
        }
        self.opt_str(ctx, k)
    }

    /// A [`Limit`]: `"10%"`, `"500"` or `500`.
    fn limit(&mut self, ctx: &mut Ctx, k: &str) -> Option<Limit> {
        let v = self.raw(k)?;
        let parsed = match v.get_ref() {
            DeValue::String(s) => Limit::parse(s),
            DeValue::Integer(i) => u64::from_str_radix(i.as_str(), i.radix())
                .map(Limit::Count)
                .map_err(|_| format!("{} is not a number of items", i.as_str())),
            other => Err(format!(
                "expected a percentage (\"10%\") or a number of items, found {}",
                other.type_str()
            )),
        };
        match parsed {
            Ok(l) => Some(l),
            Err(e) => {
                ctx.err(Some(v.span()), self.key(k), e);
                None
            }
        }
    }

    /// A duration, longer than zero and at most [`MAX_DURATION`].
    fn duration(&mut self, ctx: &mut Ctx, k: &str) -> Option<Duration> {
        self.duration_at_most(ctx, k, MAX_DURATION, "1000 years")
    }

    fn duration_at_most(
        &mut self,
        ctx: &mut Ctx,
        k: &str,
        max: Duration,
        max_text: &str,
    ) -> Option<Duration> {
        let (s, span) = self.string(ctx, k)?;
        match Duration::parse(&s) {
            Ok(d) if d.as_secs() <= 0 => {
                ctx.err(Some(span), self.key(k), "must be longer than zero");
                None
            }
            Ok(d) if d > max => {
                ctx.err(
                    Some(span),
                    self.key(k),
                    format!("{:?} is too long: at most {max} ({max_text})", s.trim()),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                ctx.err(Some(span), self.key(k), e);
                None
            }
        }
    }

    fn integer(&mut self, ctx: &mut Ctx, k: &str) -> Option<i64> {
        let v = self.raw(k)?;
        let parsed = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            _ => None,
        };
        if parsed.is_none() {
            ctx.err(
                Some(v.span()),
                self.key(k),
                format!("expected an integer, found {}", v.get_ref().type_str()),
            );
        }
        parsed
    }

    fn boolean(&mut self, ctx: &mut Ctx, k: &str) -> Option<bool> {
        let v = self.raw(k)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                ctx.err(
                    Some(v.span()),
                    self.key(k),
                    format!("expected true or false, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// `key`: one column name, or a list of them for a composite key.
    fn key_columns(&mut self, ctx: &mut Ctx) -> Option<Vec<String>> {
        let Some(v) = self.t.get("key") else {
            ctx.err(Some(self.span.clone()), self.key("key"), "is required");
            self.seen.insert("key".into());
            return None;
        };
        let cols = match v.get_ref() {
            DeValue::String(_) => vec![self.opt_str(ctx, "key")?],
            DeValue::Array(_) => {
                let cols = self.strings(ctx, "key");
                if cols.is_empty() {
                    ctx.err(
                        Some(v.span()),
                        self.key("key"),
                        "must name at least one column",
                    );
                    return None;
                }
                cols
            }
            other => {
                self.seen.insert("key".into());
                ctx.err(
                    Some(v.span()),
                    self.key("key"),
                    format!(
                        "expected a column name or a list of them, found {}",
                        other.type_str()
                    ),
                );
                return None;
            }
        };
        let mut seen = HashSet::new();
        if let Some(dup) = cols.iter().find(|c| !seen.insert(c.as_str())) {
            ctx.err(
                Some(v.span()),
                self.key("key"),
                format!("names column {dup:?} twice"),
            );
            return None;
        }
        Some(cols)
    }

    fn time_format(&mut self, ctx: &mut Ctx, k: &str) -> Option<TimeFormat> {
        let (s, span) = self.string(ctx, k)?;
        match TimeFormat::parse(&s) {
            Ok(f) => Some(f),
            Err(e) => {
                ctx.err(Some(span), self.key(k), e);
                None
            }
        }
    }

    fn strings(&mut self, ctx: &mut Ctx, k: &str) -> Vec<String> {
        self.strings_checked(ctx, k, |_| Ok(()))
    }

    /// A list of strings, each also checked by `check` (its error names the item's key).
    fn strings_checked(
        &mut self,
        ctx: &mut Ctx,
        k: &str,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Vec<String> {
        let Some(v) = self.raw(k) else {
            return Vec::new();
        };
        let DeValue::Array(items) = v.get_ref() else {
            ctx.err(
                Some(v.span()),
                self.key(k),
                format!(
                    "expected a list of strings, found {}",
                    v.get_ref().type_str()
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::String(s) if !s.trim().is_empty() => match check(s) {
                    Ok(()) => out.push(s.to_string()),
                    Err(e) => ctx.err(Some(item.span()), format!("{}[{i}]", self.key(k)), e),
                },
                _ => ctx.err(
                    Some(item.span()),
                    format!("{}[{i}]", self.key(k)),
                    "expected a non-empty string",
                ),
            }
        }
        out
    }

    fn string_map(&mut self, ctx: &mut Ctx, k: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(v) = self.raw(k) else {
            return out;
        };
        let path = self.key(k);
        let Some(t) = Tbl::new(path.clone(), v, ctx) else {
            return out;
        };
        for (name, val) in t.t.iter() {
            if looks_like_credential(name.get_ref()) {
                ctx.err(
                    Some(name.span()),
                    format!("{path}.{}", name.get_ref()),
                    "credentials come from the store's environment variables, never from the config file",
                );
                continue;
            }
            match val.get_ref() {
                DeValue::String(s) => {
                    out.insert(name.get_ref().to_string(), s.to_string());
                }
                DeValue::Boolean(b) => {
                    out.insert(name.get_ref().to_string(), b.to_string());
                }
                DeValue::Integer(i) => {
                    out.insert(name.get_ref().to_string(), i.as_str().to_string());
                }
                other => ctx.err(
                    Some(val.span()),
                    format!("{path}.{}", name.get_ref()),
                    format!("expected a string, found {}", other.type_str()),
                ),
            }
        }
        out
    }

    /// Every key not taken is an error: a typo must never silently change a policy.
    fn finish(self, ctx: &mut Ctx) {
        for (k, v) in self.t.iter() {
            if !self.seen.contains(k.get_ref().as_ref()) {
                let mut expected: Vec<&str> = self.seen.iter().map(String::as_str).collect();
                expected.sort_unstable();
                ctx.err(
                    Some(k.span().start.min(v.span().start)..v.span().end),
                    self.key(k.get_ref()),
                    format!("unknown key (expected one of: {})", expected.join(", ")),
                );
            }
        }
    }
}

/// One `[[targets]]` entry's own keys, for the connector of its `type` to read. Every
/// getter reports what is wrong with its key (by name and line) and returns `None` (or an
/// empty value); a key no getter asked for is reported unknown once the connector is done.
pub struct Section<'c, 'a> {
    ctx: &'c mut Ctx,
    t: &'c mut Tbl<'a>,
    subject: Option<&'c str>,
}

impl Section<'_, '_> {
    /// The target's `subject`, read by the config itself (it is common to every kind).
    pub fn subject(&self) -> Option<&str> {
        self.subject
    }
    /// Whether the entry has this key at all.
    pub fn has(&self, key: &str) -> bool {
        self.t.t.get(key).is_some()
    }
    /// The full name of a key of this entry, as messages show it (`targets.NAME.key`).
    pub fn key(&self, key: &str) -> String {
        self.t.key(key)
    }
    /// Reports a problem with a key of this entry, on the key's own line (the entry's when
    /// the key is absent). A dotted key (`subject_map.source`) is found through its table.
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        let full = self.t.key(key);
        let span = key_span(self.t, key).unwrap_or_else(|| self.t.span.clone());
        self.ctx.err(Some(span), full, message);
    }
    pub fn required_str(&mut self, key: &str) -> Option<String> {
        self.t.req_str(self.ctx, key)
    }
    pub fn optional_str(&mut self, key: &str) -> Option<String> {
        self.t.opt_str(self.ctx, key)
    }
    pub fn boolean(&mut self, key: &str) -> Option<bool> {
        self.t.boolean(self.ctx, key)
    }
    /// An integer, within `range` (its error names the bounds).
    pub fn integer_in(&mut self, key: &str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
        let v = self.t.integer(self.ctx, key)?;
        if !range.contains(&v) {
            self.error(
                key,
                format!(
                    "must be from {} to {}, found {v}",
                    range.start(),
                    range.end()
                ),
            );
            return None;
        }
        Some(v)
    }
    /// A duration, longer than zero and at most `max` (described as `max_text`).
    pub fn duration_at_most(
        &mut self,
        key: &str,
        max: Duration,
        max_text: &str,
    ) -> Option<Duration> {
        self.t.duration_at_most(self.ctx, key, max, max_text)
    }
    /// `key`: one column name, or a list of them for a composite key.
    pub fn key_columns(&mut self) -> Option<Vec<String>> {
        self.t.key_columns(self.ctx)
    }
    pub fn time_format(&mut self, key: &str) -> Option<TimeFormat> {
        self.t.time_format(self.ctx, key)
    }
    /// A list of strings, each also checked by `check` (its error names the item's key).
    pub fn strings(
        &mut self,
        key: &str,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Vec<String> {
        self.t.strings_checked(self.ctx, key, check)
    }
    /// A table of strings (`[targets.options]`); a key that names a credential is refused.
    pub fn string_map(&mut self, key: &str) -> BTreeMap<String, String> {
        self.t.string_map(self.ctx, key)
    }
}

/// Where a key (dotted through inline or nested tables) is written in an entry.
fn key_span(t: &Tbl<'_>, key: &str) -> Option<Range<usize>> {
    let mut parts = key.split('.');
    let mut v = t.t.get(parts.next()?)?;
    for part in parts {
        match v.get_ref() {
            DeValue::Table(inner) => match inner.get(part) {
                Some(next) => v = next,
                None => break,
            },
            _ => break,
        }
    }
    Some(v.span())
}

/// Parses and validates a whole config, with the targets of the types `kinds` read (each
/// connector's parser). Returns every problem found, not just the first.
pub fn parse(src: &str, kinds: &[&dyn TargetParser]) -> Result<Config, Vec<ConfigError>> {
    let mut ctx = Ctx {
        src: src.to_string(),
        errors: Vec::new(),
    };
    let doc = match DeTable::parse(src) {
        Ok(d) => d,
        Err(e) => {
            let span = e.span();
            ctx.err(span, "(syntax)", e.message().to_string());
            return Err(ctx.errors);
        }
    };
    let doc_span = doc.span();
    let doc_val = Spanned::new(doc_span, DeValue::Table(doc.into_inner()));
    let Some(mut root) = Tbl::new("", &doc_val, &mut ctx) else {
        return Err(ctx.errors);
    };

    let state = parse_state(&mut root, &mut ctx);
    let categories = parse_categories(&mut root, &mut ctx);
    let sensitivity = parse_sensitivity(&mut root, &mut ctx);
    let tz = serve::schedule_tz(&root);
    let mut targets = parse_targets(
        &mut root,
        &mut ctx,
        (&categories, &sensitivity),
        kinds,
        tz.as_deref(),
    );
    link_targets(&mut targets, &mut ctx, kinds);
    let tags = parse_tags(&mut root, &mut ctx);
    let exceptions = parse_exceptions(&mut root, &mut ctx);
    let audit = parse_audit(&mut root, &mut ctx);
    let erasure = parse_erasure(&mut root, &mut ctx);
    let schedule = serve::parse_schedule(&mut root, &mut ctx);
    let api = serve::parse_api(&mut root, &mut ctx);
    let alerts = serve::parse_alerts(&mut root, &mut ctx);
    let guard = parse_guard(&mut root, &mut ctx);
    root.finish(&mut ctx);

    if !ctx.errors.is_empty() {
        ctx.errors.sort_by_key(|e| e.line.unwrap_or(0));
        return Err(ctx.errors);
    }
    match (state, tags) {
        (Some(state), Some(tags)) => Ok(Config {
            state,
            categories,
            sensitivity,
            targets,
            tags,
            exceptions,
            audit,
            erasure,
            schedule,
            api,
            alerts,
            guard,
        }),
        _ => Err(ctx.errors),
    }
}

/// `[state]`, or the default SQLite state beside the config.
fn parse_state(root: &mut Tbl<'_>, ctx: &mut Ctx) -> Option<StateConfig> {
    let Some(v) = root.raw("state") else {
        return Some(StateConfig {
            url: "sqlite://lethe-state.db".into(),
            password_env: None,
            lease_ttl: DEFAULT_LEASE_TTL,
            line: None,
        });
    };
    let mut t = Tbl::new("state", v, ctx)?;
    let line = t.t.get("url").map(|u| ctx.line(u.span()));
    let url = t.req_str(ctx, "url");
    let password_env = t.opt_str(ctx, "password_env");
    let lease_ttl = t.duration(ctx, "lease_ttl").unwrap_or(DEFAULT_LEASE_TTL);
    t.finish(ctx);
    url.map(|url| StateConfig {
        url,
        password_env,
        lease_ttl,
        line,
    })
}

/// `[categories.NAME]`, by name.
fn parse_categories(root: &mut Tbl<'_>, ctx: &mut Ctx) -> BTreeMap<String, Category> {
    let mut categories = BTreeMap::new();
    let Some(v) = root.raw("categories") else {
        return categories;
    };
    let Some(cats) = Tbl::new("categories", v, ctx) else {
        return categories;
    };
    for (name, cv) in cats.t.iter() {
        let name = name.get_ref().to_string();
        let Some(mut t) = Tbl::new(format!("categories.{name}"), cv, ctx) else {
            continue;
        };
        let retention_span = t.raw("retention").map(|v| v.span());
        let retention = t.duration(ctx, "retention");
        let max = t.duration(ctx, "max");
        let min_span = t.raw("min").map(|v| v.span());
        let min = t.duration(ctx, "min");
        if let (Some(lo), Some(hi)) = (min, max)
            && lo > hi
        {
            ctx.err(
                min_span.clone(),
                t.key("min"),
                format!("the legal minimum {lo} is longer than the category's max {hi}: no item could be both kept and deleted in time"),
            );
        }
        let owner = t.opt_str(ctx, "owner");
        let runbook = t.opt_str(ctx, "runbook");
        let range = approved_range(&mut t, ctx);
        if let (Some(lo), Some((_, hi))) = (min, range)
            && lo > hi
        {
            ctx.err(
                min_span.clone(),
                t.key("min"),
                format!("the legal minimum {lo} is longer than the longest approved window {hi} (range): items would live outside the approved range"),
            );
        }
        if let (Some((lo, hi)), Some(r)) = (range, retention)
            && (r < lo || r > hi)
        {
            ctx.err(
                retention_span,
                t.key("retention"),
                format!("{r} is outside the category's approved range, {lo} to {hi}"),
            );
        }
        t.finish(ctx);
        categories.insert(
            name.clone(),
            Category {
                name,
                retention,
                max,
                owner,
                runbook,
                range,
                min,
            },
        );
    }
    categories
}

/// `[sensitivity.LEVEL]`: a level's `max` caps the window of every item of that level. The
/// four built-in levels are known whether or not they are listed.
fn parse_sensitivity(root: &mut Tbl<'_>, ctx: &mut Ctx) -> Levels {
    let mut levels: BTreeMap<String, Option<Duration>> = BUILTIN_LEVELS
        .iter()
        .map(|l| (l.to_string(), None))
        .collect();
    let Some(v) = root.raw("sensitivity") else {
        return Levels(levels);
    };
    let Some(all) = Tbl::new("sensitivity", v, ctx) else {
        return Levels(levels);
    };
    // Each level defined once, whatever its case: which of two spellings won would depend
    // on their order, and one of the caps would be silently dropped.
    let mut defined: BTreeMap<String, String> = BTreeMap::new();
    for (name, lv) in all.t.iter() {
        let raw = name.get_ref().to_string();
        let Some(mut t) = Tbl::new(format!("sensitivity.{raw}"), lv, ctx) else {
            continue;
        };
        let max = t.duration(ctx, "max");
        let span = Some(t.span.clone());
        t.finish(ctx);
        if raw.is_empty()
            || !raw
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            ctx.err(
                span,
                format!("sensitivity.{raw}"),
                "a level's name uses letters, digits, '_', '-' and '.' only",
            );
            continue;
        }
        if let Some(first) = defined.insert(raw.to_ascii_lowercase(), raw.clone()) {
            ctx.err(
                span,
                format!("sensitivity.{raw}"),
                format!("the level is defined twice ([sensitivity.{first}] and [sensitivity.{raw}]): levels are matched ignoring case"),
            );
            continue;
        }
        // One spelling per level: `Confidential` is the built-in `confidential`.
        let name = levels
            .keys()
            .find(|k| k.eq_ignore_ascii_case(&raw))
            .cloned()
            .unwrap_or(raw);
        levels.insert(name, max);
    }
    Levels(levels)
}

/// A category's `range = ["SHORTEST", "LONGEST"]`, both bounds included.
fn approved_range(t: &mut Tbl<'_>, ctx: &mut Ctx) -> Option<(Duration, Duration)> {
    let span = t.raw("range").map(|v| v.span())?;
    let errors = ctx.errors.len();
    let items = t.strings_checked(ctx, "range", |s| Duration::parse(s).map(|_| ()));
    if ctx.errors.len() > errors {
        return None;
    }
    let parsed: Vec<Duration> = items
        .iter()
        .filter_map(|s| Duration::parse(s).ok())
        .collect();
    match parsed.as_slice() {
        [lo, hi] if lo <= hi => Some((*lo, *hi)),
        [lo, hi] => {
            ctx.err(
                Some(span),
                t.key("range"),
                format!("the shortest window comes first: {lo} is longer than {hi}"),
            );
            None
        }
        _ => {
            ctx.err(
                Some(span),
                t.key("range"),
                "expected two windows, the shortest and the longest approved, e.g. [\"7d\", \"30d\"]",
            );
            None
        }
    }
}

/// `[[targets]]`: at least one, each with a name of its own.
fn parse_targets(
    root: &mut Tbl<'_>,
    ctx: &mut Ctx,
    policy: (&BTreeMap<String, Category>, &Levels),
    kinds: &[&dyn TargetParser],
    tz: Option<&str>,
) -> Vec<Target> {
    let mut targets = Vec::new();
    let nothing_else = root.t.keys().all(|k| k.get_ref() == "targets");
    match root.raw("targets") {
        // A config without targets would run, find nothing, and say all is well.
        None if nothing_else => ctx.err(
            None,
            "targets",
            "the config is empty: it needs at least one [[targets]] entry (a place where data \
             lives) and the [categories.NAME] its targets use; `lethe default-config` prints a \
             commented example",
        ),
        None => ctx.err(
            None,
            "targets",
            "no [[targets]] entry: the config names no place where data lives, so there is \
             nothing to sweep or erase; add one (`lethe default-config` prints an example)",
        ),
        Some(v) if matches!(v.get_ref(), DeValue::Array(items) if items.is_empty()) => ctx.err(
            Some(v.span()),
            "targets",
            "is empty: the config names no place where data lives; add a [[targets]] entry",
        ),
        Some(_) => {}
    }
    if let Some(v) = root.t.get("targets") {
        match v.get_ref() {
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(t) = parse_target(ctx, i, item, policy, kinds, tz) {
                        targets.push(t);
                    }
                }
            }
            other => ctx.err(
                Some(v.span()),
                "targets",
                format!("expected [[targets]] entries, found {}", other.type_str()),
            ),
        }
    }
    let mut names = HashSet::new();
    for t in &targets {
        if !names.insert(t.name.clone()) {
            ctx.err(
                Some(0..0),
                format!("targets.{}", t.name),
                "target names must be unique",
            );
            if let Some(e) = ctx.errors.last_mut() {
                e.line = Some(t.line);
            }
        }
    }
    targets
}

/// `[tags]`.
fn parse_tags(root: &mut Tbl<'_>, ctx: &mut Ctx) -> Option<TagsConfig> {
    match root.raw("tags") {
        Some(v) => Tbl::new("tags", v, ctx).map(|mut t| {
            let required = t.strings(ctx, "required");
            t.finish(ctx);
            TagsConfig { required }
        }),
        None => Some(TagsConfig::default()),
    }
}

/// `[exceptions]`, each key defaulted.
fn parse_exceptions(root: &mut Tbl<'_>, ctx: &mut Ctx) -> ExceptionsConfig {
    let mut exceptions = ExceptionsConfig {
        max_extension: Duration::from_days(30),
        max_renewals: 1,
    };
    if let Some(v) = root.raw("exceptions")
        && let Some(mut t) = Tbl::new("exceptions", v, ctx)
    {
        if let Some(d) = t.duration(ctx, "max_extension") {
            exceptions.max_extension = d;
        }
        if let Some(n) = t.integer(ctx, "max_renewals") {
            match u32::try_from(n) {
                Ok(n) => exceptions.max_renewals = n,
                Err(_) => ctx.err(
                    Some(t.span.clone()),
                    "exceptions.max_renewals",
                    "must be zero or more",
                ),
            }
        }
        t.finish(ctx);
    }
    exceptions
}

/// `[audit]`.
fn parse_audit(root: &mut Tbl<'_>, ctx: &mut Ctx) -> AuditConfig {
    let mut audit = AuditConfig {
        retention: None,
        key_env: None,
        signing_key_env: None,
    };
    if let Some(v) = root.raw("audit")
        && let Some(mut t) = Tbl::new("audit", v, ctx)
    {
        audit.retention = t.duration(ctx, "retention");
        audit.key_env = t.opt_str(ctx, "key_env");
        audit.signing_key_env = t.opt_str(ctx, "signing_key_env");
        t.finish(ctx);
    }
    audit
}

/// `[guard]`, each key defaulted.
fn parse_guard(root: &mut Tbl<'_>, ctx: &mut Ctx) -> GuardConfig {
    let mut guard = GuardConfig::default();
    if let Some(v) = root.raw("guard")
        && let Some(mut t) = Tbl::new("guard", v, ctx)
    {
        if let Some(l) = t.limit(ctx, "max_new_due") {
            guard.max_new_due = l;
        }
        t.finish(ctx);
    }
    guard
}

/// `[erasure]`.
fn parse_erasure(root: &mut Tbl<'_>, ctx: &mut Ctx) -> ErasureConfig {
    let mut erasure = ErasureConfig {
        deadline: Duration::from_days(30),
    };
    if let Some(v) = root.raw("erasure")
        && let Some(mut t) = Tbl::new("erasure", v, ctx)
    {
        if let Some(d) = t.duration(ctx, "deadline") {
            erasure.deadline = d;
        }
        t.finish(ctx);
    }
    erasure
}

/// One `[[targets]]` entry: the keys every target has, its window, and the rest as the
/// connector of its type reads them.
fn parse_target(
    ctx: &mut Ctx,
    i: usize,
    v: &Spanned<DeValue>,
    (categories, levels): (&BTreeMap<String, Category>, &Levels),
    kinds: &[&dyn TargetParser],
    tz: Option<&str>,
) -> Option<Target> {
    let line = ctx.line(v.span());
    // Messages name the target by its name once known: "targets[1]" means little to a reader.
    let label = match v.get_ref().get("name").map(|n| n.get_ref()) {
        Some(DeValue::String(n)) => format!("targets.{n}"),
        _ => format!("targets[{i}]"),
    };
    let mut t = Tbl::new(label.clone(), v, ctx)?;
    let name = t.req_str(ctx, "name");
    if let Some(n) = &name
        && !n
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        ctx.err(
            Some(t.span.clone()),
            t.key("name"),
            "use letters, digits, '_', '-' and '.' only",
        );
    }
    let ty = t.req_str(ctx, "type");
    let category = t.req_str(ctx, "category");
    let retention_span = t.raw("retention").map(|v| v.span());
    let retention = t.duration(ctx, "retention");
    let mut window = target_window(
        ctx,
        &t,
        category.as_deref(),
        (retention, retention_span),
        categories,
    );
    let subject = t.opt_str(ctx, "subject");
    let max_delete = t.limit(ctx, "max_delete");
    let delete_delay = t.duration(ctx, "delete_delay");
    let schedule = serve::cron(&mut t, ctx, "schedule", tz);
    let level_span = t.raw("sensitivity").map(|v| v.span());
    let mut labels = Labels {
        owner: t.opt_str(ctx, "owner"),
        runbook: t.opt_str(ctx, "runbook"),
        region: t.opt_str(ctx, "region"),
        sensitivity: t.opt_str(ctx, "sensitivity"),
    };
    if let Some(l) = labels.sensitivity.clone() {
        match levels.find(&l) {
            Some(known) => labels.sensitivity = Some(known.to_string()),
            None => {
                let known: Vec<&str> = levels.0.keys().map(String::as_str).collect();
                ctx.err(
                    level_span.or(Some(t.span.clone())),
                    t.key("sensitivity"),
                    format!(
                        "unknown sensitivity level {l:?} (known: {}; add [sensitivity.{l}] to define it)",
                        known.join(", ")
                    ),
                );
            }
        }
    }
    if let Some(w) = &mut window {
        w.level = labels.sensitivity.clone();
        w.levels = levels.clone();
    }
    let kind = ty.as_deref().and_then(|ty| target_kind(ctx, &t, ty, kinds));
    let spec = kind.and_then(|kind| {
        if subject.is_some() && !kind.maps_subject() {
            ctx.err(
                Some(t.span.clone()),
                t.key("subject"),
                format!(
                    "a {} target has no subject to map; erase and export reach the targets that do",
                    kind.type_name()
                ),
            );
        }
        let mut section = Section {
            ctx: &mut *ctx,
            t: &mut t,
            subject: subject.as_deref(),
        };
        kind.parse(&mut section)
    });
    t.finish(ctx);
    Some(Target {
        name: name?,
        category: category?,
        window: window?,
        line,
        type_name: kind?.type_name(),
        subject,
        schedule,
        labels,
        spec: spec?,
        max_delete,
        delete_delay,
    })
}

/// Lets each target resolve the others it names ([`TargetParser::link`]).
fn link_targets(targets: &mut [Target], ctx: &mut Ctx, kinds: &[&dyn TargetParser]) {
    for i in 0..targets.len() {
        let Some(kind) = kinds.iter().find(|k| k.type_name() == targets[i].type_name) else {
            continue;
        };
        match kind.link(&targets[i], targets) {
            Ok(Some(spec)) => targets[i].spec = spec,
            Ok(None) => {}
            Err((key, message)) => ctx.errors.push(ConfigError {
                line: Some(targets[i].line),
                key: format!("targets.{}.{key}", targets[i].name),
                message,
            }),
        }
    }
}

/// A target's window: its own retention or its category's, capped by the category's max.
fn target_window(
    ctx: &mut Ctx,
    t: &Tbl<'_>,
    category: Option<&str>,
    (retention, retention_span): (Option<Duration>, Option<Range<usize>>),
    categories: &BTreeMap<String, Category>,
) -> Option<Window> {
    let c = category?;
    let Some(cat) = categories.get(c) else {
        let known: Vec<&str> = categories.keys().map(String::as_str).collect();
        ctx.err(
            Some(t.span.clone()),
            t.key("category"),
            format!(
                "no [categories.{c}] is defined (defined: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        );
        return None;
    };
    if let (Some((lo, hi)), Some(r)) = (cat.range, retention)
        && (r < lo || r > hi)
    {
        ctx.err(
            retention_span.or(Some(t.span.clone())),
            t.key("retention"),
            format!(
                "{r} is outside the approved range of [categories.{}], {lo} to {hi}",
                cat.name
            ),
        );
        return None;
    }
    match retention.or(cat.retention) {
        Some(r) => Some(Window {
            min: cat.min,
            ..Window::new(r, cat.max)
        }),
        None => {
            ctx.err(
                Some(t.span.clone()),
                t.key("retention"),
                format!(
                    "no window: set retention here or in [categories.{}]",
                    cat.name
                ),
            );
            None
        }
    }
}

/// The connector that reads targets of type `ty`.
fn target_kind<'k>(
    ctx: &mut Ctx,
    t: &Tbl<'_>,
    ty: &str,
    kinds: &[&'k dyn TargetParser],
) -> Option<&'k dyn TargetParser> {
    let found = kinds.iter().find(|k| k.type_name() == ty).copied();
    if found.is_none() {
        let known: Vec<&str> = kinds.iter().map(|k| k.type_name()).collect();
        ctx.err(
            Some(t.span.clone()),
            t.key("type"),
            format!(
                "unknown target type {ty:?} (expected one of: {})",
                known.join(", ")
            ),
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kind of target with one key of its own, as a connector would read it.
    #[derive(Debug)]
    struct Spot {
        place: String,
    }

    struct SpotKind;

    impl TargetParser for SpotKind {
        fn type_name(&self) -> &'static str {
            "spot"
        }
        fn parse(&self, s: &mut Section<'_, '_>) -> Option<Arc<dyn TargetSpec>> {
            let place = s.required_str("place");
            Some(Arc::new(Spot { place: place? }))
        }
    }

    fn parse_spots(src: &str) -> Result<Config, Vec<ConfigError>> {
        parse(src, &[&SpotKind])
    }

    const HEAD: &str =
        "[categories.d]\nretention = \"1d\"\n[[targets]]\nname = \"t\"\ncategory = \"d\"\n";

    #[test]
    fn a_window_outside_its_categorys_approved_range_is_refused_with_key_and_line() {
        let target =
            "[[targets]]\nname = \"t\"\ncategory = \"p\"\ntype = \"spot\"\nplace = \"x\"\n";
        // in range, bounds included, on the category and on a target: accepted
        for (cat, own) in [("7d", ""), ("30d", ""), ("14d", "retention = \"7d\"\n")] {
            let src = format!(
                "[categories.p]\nretention = \"{cat}\"\nrange = [\"7d\", \"30d\"]\n{target}{own}"
            );
            assert!(parse_spots(&src).is_ok(), "{src}");
        }
        // the category's own window outside: its retention key, on its line
        let e = problem(&format!(
            "[categories.p]\nretention = \"3d\"\nrange = [\"7d\", \"30d\"]\n{target}"
        ));
        assert_eq!(e.key, "categories.p.retention");
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("outside"), "{}", e.message);
        // a target's own window outside: the target's retention key, on its line
        let e = problem(&format!(
            "[categories.p]\nretention = \"14d\"\nrange = [\"7d\", \"30d\"]\n{target}retention = \"31d\"\n"
        ));
        assert_eq!(e.key, "targets.t.retention");
        assert_eq!(e.line, Some(9));
        // a range that is not two windows, shortest first
        for (range, says) in [
            ("[\"30d\", \"7d\"]", "shortest window comes first"),
            ("[\"7d\"]", "expected two windows"),
            ("[\"7d\", \"30d\", \"90d\"]", "expected two windows"),
            ("\"7d\"", "expected a list"),
        ] {
            let e = problem(&format!(
                "[categories.p]\nretention = \"14d\"\nrange = {range}\n{target}"
            ));
            assert_eq!(e.key, "categories.p.range", "{range}");
            assert_eq!(e.line, Some(3), "{range}");
            assert!(e.message.contains(says), "{range}: {}", e.message);
        }
        let e = problem(&format!(
            "[categories.p]\nretention = \"14d\"\nrange = [\"7d\", \"soon\"]\n{target}"
        ));
        assert_eq!(e.key, "categories.p.range[1]");
    }

    #[test]
    fn a_kind_reads_its_own_keys_and_the_config_the_rest() {
        let c = parse_spots(&format!("{HEAD}type = \"spot\"\nplace = \"here\"\n"));
        let c = c.map_err(|e| format!("{e:?}"));
        let t = c.as_ref().map(|c| &c.targets[0]);
        assert_eq!(t.map(|t| t.type_name), Ok("spot"));
        assert_eq!(
            t.ok()
                .and_then(|t| t.spec::<Spot>())
                .map(|s| s.place.as_str()),
            Some("here")
        );
    }

    #[test]
    fn problems_of_a_kind_come_with_key_and_line_like_any_other() {
        let errs = parse_spots(&format!("{HEAD}type = \"spot\"\nplaec = \"here\"\n"))
            .err()
            .unwrap_or_default();
        let found: Vec<(&str, Option<usize>)> =
            errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(
            found,
            [("targets.t.place", Some(3)), ("targets.t.plaec", Some(7))],
            "{errs:?}"
        );
    }

    #[test]
    fn an_unknown_type_names_the_known_ones_and_a_subject_needs_a_kind_that_maps_one() {
        let errs = parse_spots(&format!("{HEAD}type = \"sopt\"\n"))
            .err()
            .unwrap_or_default();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, "targets.t.type");
        assert!(
            errs[0].message.contains("expected one of: spot"),
            "{errs:?}"
        );
        let errs = parse_spots(&format!(
            "{HEAD}type = \"spot\"\nplace = \"x\"\nsubject = \"user\"\n"
        ))
        .err()
        .unwrap_or_default();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, "targets.t.subject");
    }

    /// The one problem of a config that has exactly one.
    fn problem(src: &str) -> ConfigError {
        match parse_spots(src) {
            Ok(_) => panic!("accepted: {src}"),
            Err(mut e) => {
                assert_eq!(e.len(), 1, "{e:?}");
                e.remove(0)
            }
        }
    }

    #[test]
    fn the_daemons_sections_are_read_with_their_defaults() {
        let src = format!(
            "{HEAD}type = \"spot\"\nplace = \"p\"\nschedule = \"*/15 * * * *\"\n[[targets]]\nname = \"u\"\ncategory = \"d\"\ntype = \"spot\"\nplace = \"q\"\n\
             [schedule]\nsweep = \"0 2 * * *\"\ntz = \"Europe/Paris\"\napply = true\n\
             [api]\nlisten = \"0.0.0.0:9000\"\n[[api.tokens]]\nname = \"desk\"\nrole = \"operator\"\ntoken_env = \"DESK\"\n\
             [alerts]\nwebhook_env = \"HOOK\"\nmax_active_exceptions = 2\n"
        );
        let c = parse_spots(&src).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            c.schedule.sweep.as_ref().map(|s| s.expr.as_str()),
            Some("0 2 * * *")
        );
        assert!(c.schedule.apply);
        assert_eq!(c.schedule.misfire_grace, Duration::from_secs(6 * 3600));
        assert_eq!(
            c.targets[0].schedule.as_ref().map(|s| s.expr.as_str()),
            Some("*/15 * * * *")
        );
        assert!(c.targets[1].schedule.is_none());
        assert_eq!(c.api.listen.port(), 9000);
        assert_eq!(c.api.tokens[0].role, Role::Operator);
        assert_eq!(c.alerts.max_active_exceptions, 2);
        // Without the sections: no schedule, dry runs, loopback, no tokens.
        let plain = parse_spots(&format!("{HEAD}type = \"spot\"\nplace = \"p\"\n"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(plain.schedule.sweep.is_none() && !plain.schedule.apply);
        assert!(plain.api.listen.ip().is_loopback() && plain.api.tokens.is_empty());
    }

    #[test]
    fn a_bad_schedule_api_or_alert_setting_names_its_key_and_line() {
        let t = format!("{HEAD}type = \"spot\"\nplace = \"p\"\n");
        let cases = [
            (
                "[schedule]\nsweep = \"0 25 * * *\"\n",
                "schedule.sweep",
                "not a cron expression",
            ),
            (
                "[schedule]\nsweep = \"0 2 * *\"\n",
                "schedule.sweep",
                "4 fields",
            ),
            (
                "[schedule]\nsweep = \"0 2 * * *\"\ntz = \"Mars/Base\"\n",
                "schedule.tz",
                "IANA",
            ),
            (
                "[schedule]\nsweep = \"0 2 * * *\"\napply = \"yes\"\n",
                "schedule.apply",
                "true or false",
            ),
            (
                "[schedule]\nswep = \"0 2 * * *\"\n",
                "schedule.swep",
                "unknown key",
            ),
            (
                "[api]\nlisten = \"localhost\"\n",
                "api.listen",
                "address and port",
            ),
            (
                "[[api.tokens]]\nname = \"a\"\nrole = \"root\"\ntoken_env = \"A\"\n",
                "api.tokens[0].role",
                "viewer, operator, legal, admin",
            ),
            (
                "[[api.tokens]]\nname = \"a\"\nrole = \"admin\"\n",
                "api.tokens[0].token_env",
                "required",
            ),
            (
                "[[api.tokens]]\nname = \"a\"\nrole = \"admin\"\ntoken_env = \"A\"\n[[api.tokens]]\nname = \"a\"\nrole = \"viewer\"\ntoken_env = \"B\"\n",
                "api.tokens.a",
                "unique",
            ),
            (
                "[alerts]\nmax_active_exceptions = -1\n",
                "alerts.max_active_exceptions",
                "zero or more",
            ),
            (
                "[alerts]\ncheck_interval = \"soon\"\n",
                "alerts.check_interval",
                "",
            ),
        ];
        for (section, key, says) in cases {
            let src = format!("{t}{section}");
            let e = problem(&src);
            assert_eq!(e.key, key, "{src}\n{e}");
            assert!(e.message.contains(says), "{src}\n{e}");
            assert!(e.line.is_some_and(|l| l > 7), "{src}\n{e}");
        }
        let e = problem(&format!(
            "{HEAD}type = \"spot\"\nplace = \"p\"\nschedule = \"every day\"\n"
        ));
        assert_eq!(
            (e.key.as_str(), e.line),
            ("targets.t.schedule", Some(8)),
            "{e}"
        );
    }
}
