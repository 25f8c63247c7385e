//! The daemon's sections: `[schedule]`, `[api]` and `[alerts]`. Every command reads them
//! (a config is checked whole), only `lethe serve` acts on them.

use std::collections::HashSet;
use std::net::SocketAddr;

use toml::de::DeValue;

use super::{Ctx, Duration, Tbl};
use crate::schedule::Cadence;

/// `[schedule]`.
#[derive(Clone, Debug)]
pub struct ScheduleConfig {
    /// `sweep`: the schedule of every target without one of its own.
    pub sweep: Option<CronSpec>,
    /// `tz`: the IANA zone the expressions are read in; UTC when absent.
    pub tz: Option<String>,
    /// `misfire_grace`: how old a missed fire may be and still run on start-up.
    pub misfire_grace: Duration,
    /// `apply`: scheduled runs delete; false (the default) makes them dry runs.
    pub apply: bool,
    /// `census_interval`: how often the daemon counts what is past expiry (read-only).
    pub census_interval: Duration,
}

impl Default for ScheduleConfig {
    fn default() -> ScheduleConfig {
        ScheduleConfig {
            sweep: None,
            tz: None,
            misfire_grace: Duration::from_secs(6 * 3600),
            apply: false,
            census_interval: Duration::from_secs(180),
        }
    }
}

/// A cron expression as the config gives it, already known to parse.
#[derive(Clone, Debug)]
pub struct CronSpec {
    pub expr: String,
    pub line: usize,
}

/// `[api]`.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// `listen`: the address the daemon's HTTP API listens on.
    pub listen: SocketAddr,
    pub tokens: Vec<ApiToken>,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8480)),
            tokens: Vec::new(),
        }
    }
}

/// One `[[api.tokens]]` entry: a named bearer token with one role. The value lives in the
/// environment variable `token_env`, never in the config.
#[derive(Clone, Debug)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    pub token_env: String,
    pub line: usize,
}

/// What a token may do. Each role may do what the roles before it in this list may, except
/// that operator and legal are side by side: neither may do the other's work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Reads runs, targets, reports, audit entries and metrics.
    Viewer,
    /// Also starts sweeps and files erasure and access requests.
    Operator,
    /// Also places and releases holds, grants and revokes exceptions.
    Legal,
    /// Everything.
    Admin,
}

impl Role {
    pub const NAMES: [&'static str; 4] = ["viewer", "operator", "legal", "admin"];

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "legal" => Some(Role::Legal),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        Role::NAMES[self as usize]
    }

    /// Whether this role may do what `needed` allows.
    pub fn allows(self, needed: Role) -> bool {
        self == needed || self == Role::Admin || needed == Role::Viewer
    }
}

/// `[alerts]`.
#[derive(Clone, Debug)]
pub struct AlertsConfig {
    /// `webhook_env`: the environment variable holding the webhook's URL.
    pub webhook_env: Option<String>,
    /// `check_interval`: how often the conditions are evaluated.
    pub check_interval: Duration,
    /// `verify_interval`: how often the trail is verified (from the last verified entry).
    pub verify_interval: Duration,
    /// `max_active_exceptions`: more active exceptions than this is a breach.
    pub max_active_exceptions: u64,
}

impl Default for AlertsConfig {
    fn default() -> AlertsConfig {
        AlertsConfig {
            webhook_env: None,
            check_interval: Duration::from_secs(60),
            verify_interval: Duration::from_secs(3600),
            max_active_exceptions: 5,
        }
    }
}

/// A cron expression under `key`, checked against the zone.
pub(super) fn cron(
    t: &mut Tbl<'_>,
    ctx: &mut Ctx,
    key: &str,
    tz: Option<&str>,
) -> Option<CronSpec> {
    let (expr, span) = t.string(ctx, key)?;
    let line = ctx.line(span.clone());
    // A zone that does not parse is reported once, under `tz`; read the expression in UTC.
    let tz = tz.filter(|z| jiff::tz::TimeZone::get(z).is_ok());
    match Cadence::parse(&expr, tz) {
        Ok(_) => Some(CronSpec { expr, line }),
        Err(e) => {
            ctx.err(Some(span), t.key(key), e);
            None
        }
    }
}

/// The `[schedule] tz` value, read before the targets (their own schedules use it).
pub(super) fn schedule_tz(root: &Tbl<'_>) -> Option<String> {
    let v = root.t.get("schedule")?;
    match v.get_ref().get("tz").map(|z| z.get_ref()) {
        Some(DeValue::String(s)) => Some(s.to_string()),
        _ => None,
    }
}

pub(super) fn parse_schedule(root: &mut Tbl<'_>, ctx: &mut Ctx) -> ScheduleConfig {
    let mut s = ScheduleConfig::default();
    let Some(v) = root.raw("schedule") else {
        return s;
    };
    let Some(mut t) = Tbl::new("schedule", v, ctx) else {
        return s;
    };
    if let Some((tz, span)) = t.string(ctx, "tz") {
        if jiff::tz::TimeZone::get(&tz).is_err() {
            ctx.err(
                Some(span),
                "schedule.tz",
                format!("{tz:?} is not an IANA time zone (e.g. \"Europe/Paris\", \"UTC\")"),
            );
        }
        s.tz = Some(tz);
    }
    s.sweep = cron(&mut t, ctx, "sweep", s.tz.as_deref());
    if let Some(d) = t.duration(ctx, "misfire_grace") {
        s.misfire_grace = d;
    }
    if let Some(b) = t.boolean(ctx, "apply") {
        s.apply = b;
    }
    if let Some(d) = t.duration(ctx, "census_interval") {
        s.census_interval = d;
    }
    t.finish(ctx);
    s
}

pub(super) fn parse_api(root: &mut Tbl<'_>, ctx: &mut Ctx) -> ApiConfig {
    let mut api = ApiConfig::default();
    let Some(v) = root.raw("api") else {
        return api;
    };
    let Some(mut t) = Tbl::new("api", v, ctx) else {
        return api;
    };
    if let Some((listen, span)) = t.string(ctx, "listen") {
        match listen.trim().parse::<SocketAddr>() {
            Ok(a) => api.listen = a,
            Err(_) => ctx.err(
                Some(span),
                "api.listen",
                format!("{listen:?} is not an address and port (e.g. \"127.0.0.1:8480\")"),
            ),
        }
    }
    if let Some(v) = t.raw("tokens") {
        match v.get_ref() {
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let line = ctx.line(item.span());
                    let Some(mut tt) = Tbl::new(format!("api.tokens[{i}]"), item, ctx) else {
                        continue;
                    };
                    let name = tt.req_str(ctx, "name");
                    let role = tt.string(ctx, "role");
                    let token_env = tt.req_str(ctx, "token_env");
                    let role = match role {
                        None => {
                            ctx.err(Some(tt.span.clone()), tt.key("role"), "is required");
                            None
                        }
                        Some((r, span)) => {
                            let parsed = Role::parse(r.trim());
                            if parsed.is_none() {
                                ctx.err(
                                    Some(span),
                                    tt.key("role"),
                                    format!(
                                        "{r:?} is not a role (expected one of: {})",
                                        Role::NAMES.join(", ")
                                    ),
                                );
                            }
                            parsed
                        }
                    };
                    tt.finish(ctx);
                    if let (Some(name), Some(role), Some(token_env)) = (name, role, token_env) {
                        api.tokens.push(ApiToken {
                            name,
                            role,
                            token_env,
                            line,
                        });
                    }
                }
            }
            other => ctx.err(
                Some(v.span()),
                "api.tokens",
                format!(
                    "expected [[api.tokens]] entries, found {}",
                    other.type_str()
                ),
            ),
        }
    }
    t.finish(ctx);
    let mut names = HashSet::new();
    let mut envs = HashSet::new();
    for tok in &api.tokens {
        if !names.insert(tok.name.clone()) {
            ctx.errors.push(super::ConfigError {
                line: Some(tok.line),
                key: format!("api.tokens.{}", tok.name),
                message: "token names must be unique: the trail names the actor by it".into(),
            });
        }
        if !envs.insert(tok.token_env.clone()) {
            ctx.errors.push(super::ConfigError {
                line: Some(tok.line),
                key: format!("api.tokens.{}.token_env", tok.name),
                message: format!(
                    "{} is the token_env of another token too: two names for one token would make the trail's actor a guess",
                    tok.token_env
                ),
            });
        }
    }
    api
}

pub(super) fn parse_alerts(root: &mut Tbl<'_>, ctx: &mut Ctx) -> AlertsConfig {
    let mut a = AlertsConfig::default();
    let Some(v) = root.raw("alerts") else {
        return a;
    };
    let Some(mut t) = Tbl::new("alerts", v, ctx) else {
        return a;
    };
    a.webhook_env = t.opt_str(ctx, "webhook_env");
    if let Some(d) = t.duration(ctx, "check_interval") {
        a.check_interval = d;
    }
    if let Some(d) = t.duration(ctx, "verify_interval") {
        a.verify_interval = d;
    }
    if let Some(n) = t.integer(ctx, "max_active_exceptions") {
        match u64::try_from(n) {
            Ok(n) => a.max_active_exceptions = n,
            Err(_) => ctx.err(
                Some(t.span.clone()),
                "alerts.max_active_exceptions",
                "must be zero or more",
            ),
        }
    }
    t.finish(ctx);
    a
}
