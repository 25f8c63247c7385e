//! `lethe.toml`: parsed and validated in one pass that reports every problem at once, each
//! with the key and line it concerns. Pure: paths are kept as written; the caller resolves them.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::time::{Duration, TimeFormat};

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
    pub targets: Vec<Target>,
    pub tags: TagsConfig,
    pub exceptions: ExceptionsConfig,
    pub audit: AuditConfig,
    pub erasure: ErasureConfig,
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
}

#[derive(Clone, Debug)]
pub struct ErasureConfig {
    pub deadline: Duration,
}

/// How long items of a target may live: the window, capped by the category's maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub retention: Duration,
    pub max: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub category: String,
    pub window: Window,
    /// Line of the `[[targets]]` entry, for messages about it.
    pub line: usize,
    pub kind: TargetKind,
}

#[derive(Clone, Debug)]
pub enum TargetKind {
    Sql(SqlTarget),
    Filesystem(FsTarget),
    ObjectStore(ObjectStoreTarget),
    VendorFiles(VendorTarget),
}

impl TargetKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            TargetKind::Sql(_) => "sql",
            TargetKind::Filesystem(_) => "filesystem",
            TargetKind::ObjectStore(_) => "object_store",
            TargetKind::VendorFiles(v) => v.vendor,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SqlTarget {
    pub url: String,
    /// Environment variable holding the database password, never the password itself.
    pub password_env: Option<String>,
    pub table: String,
    /// The columns that name one row: one (`key = "id"`) or several (`key = ["tenant", "id"]`).
    /// They must be covered by a unique index; the connector refuses them otherwise.
    pub key: Vec<String>,
    pub created_at: String,
    /// How created_at is stored, when numbers or text in it are not self-describing.
    pub created_at_format: Option<TimeFormat>,
    /// How expires_at is stored (same forms as created_at_format).
    pub expires_at_format: Option<TimeFormat>,
    /// How long a sweep waits for a lock held by someone else before it reports the table
    /// busy, or a row failed, and goes on (`lock_timeout`, default 5s).
    pub lock_timeout: Duration,
    pub retention_days: Option<String>,
    pub expires_at: Option<String>,
    pub subject: Option<String>,
    pub file: Option<String>,
    pub file_roots: Vec<String>,
}

impl SqlTarget {
    /// Every column the target reads, with the config key that names it.
    pub fn columns(&self) -> Vec<(&'static str, &str)> {
        let mut v: Vec<(&'static str, &str)> =
            self.key.iter().map(|k| ("key", k.as_str())).collect();
        v.push(("created_at", &self.created_at));
        for (k, c) in [
            ("retention_days", &self.retention_days),
            ("expires_at", &self.expires_at),
            ("subject", &self.subject),
            ("file", &self.file),
        ] {
            if let Some(c) = c {
                v.push((k, c.as_str()));
            }
        }
        v
    }
}

#[derive(Clone, Debug)]
pub struct FsTarget {
    pub root: String,
    pub suffixes: Vec<String>,
    /// Globs over a file's path relative to the root (see [`path_glob`]).
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub prune_empty_dirs: bool,
}

/// An `include`/`exclude` pattern of a `filesystem` target, matched against a file's path
/// relative to the root: `*` and `?` stay within one path segment, `**` crosses segments,
/// `[...]` is a character class. Patterns are anchored at the root: a leading `/` means the
/// root, so `/runs/**` and `runs/**` are the same pattern.
pub fn path_glob(pattern: &str) -> Result<globset::Glob, String> {
    globset::GlobBuilder::new(pattern.trim_start_matches('/'))
        .literal_separator(true)
        .build()
        .map_err(|e| format!("{pattern:?} is not a valid pattern: {}", e.kind()))
}

#[derive(Clone, Debug)]
pub struct ObjectStoreTarget {
    pub url: String,
    pub options: BTreeMap<String, String>,
    pub subject: Option<String>,
    /// `[tags] required`, copied here: objects lacking one are counted as untagged.
    pub required_tags: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct VendorTarget {
    pub vendor: &'static str,
    pub api_key_env: String,
    pub base_url: Option<String>,
    pub purpose: Option<String>,
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

struct Ctx<'s> {
    src: &'s str,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
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
struct Tbl<'a, 'i> {
    path: String,
    span: Range<usize>,
    t: &'a DeTable<'i>,
    seen: HashSet<String>,
}

impl<'a, 'i> Tbl<'a, 'i> {
    fn new(path: impl Into<String>, v: &'a Spanned<DeValue<'i>>, ctx: &mut Ctx) -> Option<Self> {
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

    fn raw(&mut self, k: &str) -> Option<&'a Spanned<DeValue<'i>>> {
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

/// Parses and validates a whole config. Returns every problem found, not just the first.
pub fn parse(src: &str) -> Result<Config, Vec<ConfigError>> {
    let mut ctx = Ctx {
        src,
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

    let state = match root.raw("state") {
        Some(v) => Tbl::new("state", v, &mut ctx).and_then(|mut t| {
            let line = t.t.get("url").map(|u| ctx.line(u.span()));
            let url = t.req_str(&mut ctx, "url");
            let password_env = t.opt_str(&mut ctx, "password_env");
            let lease_ttl = t
                .duration(&mut ctx, "lease_ttl")
                .unwrap_or(DEFAULT_LEASE_TTL);
            t.finish(&mut ctx);
            url.map(|url| StateConfig {
                url,
                password_env,
                lease_ttl,
                line,
            })
        }),
        None => Some(StateConfig {
            url: "sqlite://lethe-state.db".into(),
            password_env: None,
            lease_ttl: DEFAULT_LEASE_TTL,
            line: None,
        }),
    };

    let mut categories = BTreeMap::new();
    if let Some(v) = root.raw("categories")
        && let Some(cats) = Tbl::new("categories", v, &mut ctx)
    {
        for (name, cv) in cats.t.iter() {
            let name = name.get_ref().to_string();
            let Some(mut t) = Tbl::new(format!("categories.{name}"), cv, &mut ctx) else {
                continue;
            };
            let retention = t.duration(&mut ctx, "retention");
            let max = t.duration(&mut ctx, "max");
            let owner = t.opt_str(&mut ctx, "owner");
            let runbook = t.opt_str(&mut ctx, "runbook");
            t.finish(&mut ctx);
            categories.insert(
                name.clone(),
                Category {
                    name,
                    retention,
                    max,
                    owner,
                    runbook,
                },
            );
        }
    }

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
                    if let Some(t) = parse_target(&mut ctx, i, item, &categories) {
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

    let tags = match root.raw("tags") {
        Some(v) => Tbl::new("tags", v, &mut ctx).map(|mut t| {
            let required = t.strings(&mut ctx, "required");
            t.finish(&mut ctx);
            TagsConfig { required }
        }),
        None => Some(TagsConfig::default()),
    };

    let mut exceptions = ExceptionsConfig {
        max_extension: Duration::from_days(30),
        max_renewals: 1,
    };
    if let Some(v) = root.raw("exceptions")
        && let Some(mut t) = Tbl::new("exceptions", v, &mut ctx)
    {
        if let Some(d) = t.duration(&mut ctx, "max_extension") {
            exceptions.max_extension = d;
        }
        if let Some(n) = t.integer(&mut ctx, "max_renewals") {
            match u32::try_from(n) {
                Ok(n) => exceptions.max_renewals = n,
                Err(_) => ctx.err(
                    Some(t.span.clone()),
                    "exceptions.max_renewals",
                    "must be zero or more",
                ),
            }
        }
        t.finish(&mut ctx);
    }

    let mut audit = AuditConfig {
        retention: None,
        key_env: None,
    };
    if let Some(v) = root.raw("audit")
        && let Some(mut t) = Tbl::new("audit", v, &mut ctx)
    {
        audit.retention = t.duration(&mut ctx, "retention");
        audit.key_env = t.opt_str(&mut ctx, "key_env");
        t.finish(&mut ctx);
    }

    let mut erasure = ErasureConfig {
        deadline: Duration::from_days(30),
    };
    if let Some(v) = root.raw("erasure")
        && let Some(mut t) = Tbl::new("erasure", v, &mut ctx)
    {
        if let Some(d) = t.duration(&mut ctx, "deadline") {
            erasure.deadline = d;
        }
        t.finish(&mut ctx);
    }

    root.finish(&mut ctx);

    if !ctx.errors.is_empty() {
        ctx.errors.sort_by_key(|e| e.line.unwrap_or(0));
        return Err(ctx.errors);
    }
    if let Some(tags) = &tags {
        for t in &mut targets {
            if let TargetKind::ObjectStore(o) = &mut t.kind {
                o.required_tags = tags.required.clone();
            }
        }
    }
    match (state, tags) {
        (Some(state), Some(tags)) => Ok(Config {
            state,
            categories,
            targets,
            tags,
            exceptions,
            audit,
            erasure,
        }),
        _ => Err(ctx.errors),
    }
}

const TARGET_TYPES: &str = "sql, filesystem, object_store, openai_files, anthropic_files";

fn parse_target(
    ctx: &mut Ctx,
    i: usize,
    v: &Spanned<DeValue>,
    categories: &BTreeMap<String, Category>,
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
    let retention = t.duration(ctx, "retention");

    let cat = category.as_ref().and_then(|c| {
        let found = categories.get(c);
        if found.is_none() {
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
        }
        found
    });
    let window = cat.and_then(|c| match retention.or(c.retention) {
        Some(r) => Some(Window {
            retention: r,
            max: c.max,
        }),
        None => {
            ctx.err(
                Some(t.span.clone()),
                t.key("retention"),
                format!(
                    "no window: set retention here or in [categories.{}]",
                    c.name
                ),
            );
            None
        }
    });

    let kind = match ty.as_deref() {
        Some("sql") => {
            let url = t.req_str(ctx, "url");
            let password_env = t.opt_str(ctx, "password_env");
            let table = t.req_str(ctx, "table");
            let key = t.key_columns(ctx);
            let created_at = t.req_str(ctx, "created_at");
            let created_at_format = t.time_format(ctx, "created_at_format");
            let expires_at_format = t.time_format(ctx, "expires_at_format");
            let lock_timeout = if t.t.get("lock_timeout").is_some() {
                t.duration_at_most(ctx, "lock_timeout", MAX_LOCK_TIMEOUT, "a day")
            } else {
                Some(Duration::from_secs(5))
            };
            let retention_days = t.opt_str(ctx, "retention_days");
            let expires_at = t.opt_str(ctx, "expires_at");
            let subject = t.opt_str(ctx, "subject");
            let file = t.opt_str(ctx, "file");
            let file_roots = t.strings(ctx, "file_roots");
            if file.is_some() && file_roots.is_empty() {
                ctx.err(
                    Some(t.span.clone()),
                    t.key("file_roots"),
                    "a target with `file` needs file_roots: files outside them are never deleted",
                );
            }
            if let Some(u) = &url
                && !(u.starts_with("sqlite:")
                    || u.starts_with("postgres://")
                    || u.starts_with("postgresql://"))
            {
                ctx.err(
                    Some(t.span.clone()),
                    t.key("url"),
                    "expected sqlite://PATH or postgres://...",
                );
            }
            match (url, table, key, created_at, lock_timeout) {
                (Some(url), Some(table), Some(key), Some(created_at), Some(lock_timeout)) => {
                    Some(TargetKind::Sql(SqlTarget {
                        url,
                        password_env,
                        table,
                        key,
                        created_at,
                        created_at_format,
                        expires_at_format,
                        lock_timeout,
                        retention_days,
                        expires_at,
                        subject,
                        file,
                        file_roots,
                    }))
                }
                _ => None,
            }
        }
        Some("filesystem") => {
            let root = t.req_str(ctx, "root");
            let suffixes = t.strings(ctx, "suffixes");
            let is_glob = |p: &str| path_glob(p).map(|_| ());
            let include = t.strings_checked(ctx, "include", is_glob);
            let exclude = t.strings_checked(ctx, "exclude", is_glob);
            let prune_empty_dirs = t.boolean(ctx, "prune_empty_dirs").unwrap_or(false);
            root.map(|root| {
                TargetKind::Filesystem(FsTarget {
                    root,
                    suffixes,
                    include,
                    exclude,
                    prune_empty_dirs,
                })
            })
        }
        Some("object_store") => {
            let url = t.req_str(ctx, "url");
            let options = t.string_map(ctx, "options");
            let subject = t.opt_str(ctx, "subject");
            url.map(|url| {
                TargetKind::ObjectStore(ObjectStoreTarget {
                    url,
                    options,
                    subject,
                    required_tags: Vec::new(),
                })
            })
        }
        Some(v @ ("openai_files" | "anthropic_files")) => {
            let vendor = if v == "openai_files" {
                "openai_files"
            } else {
                "anthropic_files"
            };
            let api_key_env = t.req_str(ctx, "api_key_env");
            let base_url = t.opt_str(ctx, "base_url");
            let purpose = t.opt_str(ctx, "purpose");
            api_key_env.map(|api_key_env| {
                TargetKind::VendorFiles(VendorTarget {
                    vendor,
                    api_key_env,
                    base_url,
                    purpose,
                })
            })
        }
        Some(other) => {
            ctx.err(
                Some(t.span.clone()),
                t.key("type"),
                format!("unknown target type {other:?} (expected one of: {TARGET_TYPES})"),
            );
            None
        }
        None => None,
    };
    t.finish(ctx);
    Some(Target {
        name: name?,
        category: category?,
        window: window?,
        line,
        kind: kind?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_parses() {
        let c = parse(DEFAULT_CONFIG).map_err(|e| format!("{e:?}"));
        let c = c.as_ref().map(|c| c.targets.len());
        assert!(matches!(c, Ok(n) if n >= 2), "{c:?}");
    }

    #[test]
    fn the_design_example_parses() {
        let src = r#"
[state]
url = "sqlite://lethe-state.db"
[categories.inference_log]
retention = "30d"
max = "90d"
owner = "platform-sre"
[categories.finetune_dataset]
retention = "90d"
[categories.model_artifact]
retention = "60d"
[[targets]]
name = "inference_logs"
type = "sql"
url = "sqlite://ai_data.db"
table = "inference_logs"
category = "inference_log"
key = "id"
created_at = "created_at"
retention_days = "retention_days"
subject = "user_id"
[[targets]]
name = "checkpoints"
type = "filesystem"
root = "/data/models/checkpoints"
category = "model_artifact"
retention = "60d"
suffixes = [".pt", ".pth"]
[[targets]]
name = "finetune-blobs"
type = "object_store"
url = "s3://datasets/finetune/"
category = "finetune_dataset"
[targets.options]
aws_endpoint = "http://127.0.0.1:9000"
aws_allow_http = "true"
[tags]
required = ["expires_at", "data_type", "owner", "sensitivity"]
[exceptions]
max_extension = "30d"
max_renewals = 1
[audit]
retention = "2555d"
key_env = "LETHE_AUDIT_KEY"
"#;
        let c = match parse(src) {
            Ok(c) => c,
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(c.targets.len(), 3);
        assert_eq!(
            c.targets[0].window,
            Window {
                retention: Duration::from_days(30),
                max: Some(Duration::from_days(90))
            }
        );
        assert_eq!(c.targets[0].line, 12);
        match &c.targets[2].kind {
            TargetKind::ObjectStore(o) => assert_eq!(o.options.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reports_every_problem_with_key_and_line() {
        let src = "[state]\nurl = \"sqlite://x.db\"\ncolour = 1\n\n[categories.log]\nretention = \"30x\"\n\n[[targets]]\nname = \"logs\"\ntype = \"sql\"\nurl = \"sqlite://a.db\"\ncategory = \"nope\"\nkey = \"id\"\ncreated_at = \"ts\"\n";
        let errs = match parse(src) {
            Err(e) => e,
            Ok(_) => panic!("should fail"),
        };
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let has = |needle: &str| text.iter().any(|t| t.contains(needle));
        assert!(has("line 3: state.colour: unknown key"), "{text:#?}");
        assert!(has("line 6: categories.log.retention"), "{text:#?}");
        assert!(has("targets.logs.table: is required"), "{text:#?}");
        assert!(
            has("targets.logs.category: no [categories.nope]"),
            "{text:#?}"
        );
        assert!(errs.len() >= 4);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let errs = parse("[state]\nurl = \n").err().unwrap_or_default();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, Some(2));
    }

    #[test]
    fn file_without_roots_is_refused() {
        let src = "[categories.d]\nretention = \"1d\"\n[[targets]]\nname = \"t\"\ntype = \"sql\"\nurl = \"sqlite://a.db\"\ntable = \"t\"\ncategory = \"d\"\nkey = \"id\"\ncreated_at = \"c\"\nfile = \"path\"\n";
        let errs = parse(src).err().unwrap_or_default();
        assert!(
            errs.iter().any(|e| e.key == "targets.t.file_roots"),
            "{errs:?}"
        );
    }

    #[test]
    fn bad_patterns_are_refused_by_key() {
        let src = "[categories.d]\nretention = \"1d\"\n[[targets]]\nname = \"m\"\ntype = \"filesystem\"\nroot = \"x\"\ncategory = \"d\"\ninclude = [\"/ok/**\", \"run[1\"]\nexclude = [\"a{b\"]\n";
        let errs = parse(src).err().unwrap_or_default();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["targets.m.include[1]", "targets.m.exclude[0]"],
            "{errs:?}"
        );
        assert_eq!(errs[0].line, Some(8));
    }

    #[test]
    fn credentials_in_store_options_are_refused() {
        let src = "[categories.d]\nretention = \"1d\"\n[[targets]]\nname = \"b\"\ntype = \"object_store\"\nurl = \"s3://bucket/p/\"\ncategory = \"d\"\n[targets.options]\naws_region = \"eu-west-1\"\naws_secret_access_key = \"hunter2\"\n";
        let errs = parse(src).err().unwrap_or_default();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, "targets.b.options.aws_secret_access_key");
        assert_eq!(errs[0].line, Some(10));
        assert!(!errs[0].to_string().contains("hunter2"));
    }

    /// Issue 10, item 11: a duration too long to compute with is refused by key and line.
    #[test]
    fn durations_longer_than_1000_years_are_refused() {
        let src = "[categories.d]\nretention = \"999999999999d\"\nmax = \"365251d\"\n\
                   [categories.ok]\nretention = \"365250d\"\n\
                   [[targets]]\nname = \"t\"\ntype = \"sql\"\nurl = \"sqlite://a.db\"\ntable = \"t\"\n\
                   category = \"ok\"\nkey = \"id\"\ncreated_at = \"c\"\nretention = \"52180w\"\n\
                   lock_timeout = \"25h\"\n\
                   [exceptions]\nmax_extension = \"9999999999h\"\n\
                   [erasure]\ndeadline = \"99999999999999m\"\n\
                   [audit]\nretention = \"999999999999999s\"\n";
        let errs = parse(src).err().unwrap_or_default();
        let found: Vec<(&str, Option<usize>)> =
            errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(
            found,
            [
                ("categories.d.retention", Some(2)),
                ("categories.d.max", Some(3)),
                ("targets.t.retention", Some(14)),
                ("targets.t.lock_timeout", Some(15)),
                ("exceptions.max_extension", Some(17)),
                ("erasure.deadline", Some(19)),
                ("audit.retention", Some(21)),
            ],
            "{errs:#?}"
        );
        assert!(errs[0].message.contains("1000 years"), "{errs:?}");
        assert!(errs[3].message.contains("a day"), "{errs:?}");
        // At the bounds, all is well: 1000 years, a one-day lock wait.
        let src = src
            .replace("999999999999d", "365250d")
            .replace("365251d", "365250d")
            .replace("52180w", "52178w")
            .replace("25h", "1d")
            .replace("9999999999h", "30d")
            .replace("99999999999999m", "30d")
            .replace("999999999999999s", "2555d");
        let c = parse(&src).map_err(|e| format!("{e:?}"));
        assert_eq!(
            c.map(|c| c.targets[0].window.retention),
            Ok(Duration::from_days(365_246))
        );
    }

    /// Issue 10, item 11: an empty config, or one without targets, says what is missing.
    #[test]
    fn a_config_without_targets_says_what_is_missing() {
        for src in ["", "  \n# nothing yet\n"] {
            let errs = parse(src).err().unwrap_or_default();
            assert_eq!(errs.len(), 1, "{src:?}: {errs:?}");
            assert_eq!(errs[0].key, "targets");
            assert!(errs[0].message.contains("the config is empty"), "{errs:?}");
            assert!(errs[0].message.contains("[[targets]]"), "{errs:?}");
        }
        let errs = parse("[state]\nurl = \"sqlite://s.db\"\n[categories.d]\nretention = \"1d\"\n")
            .err()
            .unwrap_or_default();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, "targets");
        assert!(errs[0].message.contains("no [[targets]] entry"), "{errs:?}");
        let errs = parse("\ntargets = []\n[categories.d]\nretention = \"1d\"\n")
            .err()
            .unwrap_or_default();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!((errs[0].key.as_str(), errs[0].line), ("targets", Some(2)));
    }
}
