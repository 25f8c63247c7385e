//! One vendor API client: the key in a header marked sensitive, a bounded timeout, retries
//! with exponential backoff and jitter on 408, 409, 429, 5xx and timeouts, `Retry-After`
//! and `retry-after-ms` honoured, and a pause for every request when the vendor's
//! rate-limit headers say no request is left until a reset.
//!
//! Every message it makes names the vendor, the method and the path, never the key: a
//! vendor's own error text is passed on with the key scrubbed from it, and a refused key
//! is reported by the variable that holds it.

use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration as StdDuration;

use anyhow::{Result, anyhow};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;

use super::{Vendor, VendorTarget};
use crate::util::UsageError;

/// The longest wait a `Retry-After` may ask for before a retry; a longer one fails the
/// request (the next run tries again) rather than stalling the sweep.
const MAX_RETRY_AFTER: StdDuration = StdDuration::from_secs(120);
/// The first backoff, and the longest.
const BACKOFF_START: StdDuration = StdDuration::from_millis(250);
const BACKOFF_MAX: StdDuration = StdDuration::from_secs(20);

/// What one request came to, after its retries.
#[derive(Debug)]
pub enum Reply {
    /// 2xx, with its JSON body.
    Ok(serde_json::Value),
    /// 404: the vendor says no such item exists.
    NotFound,
    /// The vendor refused the request for good (a 4xx other than the retried ones, or a
    /// 2xx whose body is not the JSON expected): nothing happened.
    Refused(String),
    /// No definite answer (timeouts, connection errors or 5xx every time): the request may
    /// or may not have taken effect.
    Unknown(String),
}

/// Retries made, by cause, for the report.
#[derive(Debug, Default)]
pub struct Retries {
    pub throttled: AtomicU64,
    pub server_errors: AtomicU64,
    pub timeouts: AtomicU64,
}

impl Retries {
    pub fn total(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
            + self.server_errors.load(Ordering::Relaxed)
            + self.timeouts.load(Ordering::Relaxed)
    }
}

pub struct Client {
    http: reqwest::Client,
    vendor: Vendor,
    base: String,
    key_env: String,
    key: String,
    max_retries: u32,
    pub retries: Retries,
    /// No request leaves before this instant (a rate-limit reset).
    paused_until: Mutex<Option<Instant>>,
    jitter: std::collections::hash_map::RandomState,
    jitter_n: AtomicU64,
}

impl Client {
    pub fn new(cfg: &VendorTarget) -> Result<Client> {
        let key = std::env::var(&cfg.api_key_env).map_err(|_| {
            UsageError(format!(
                "api_key_env names {}, but {} is not set",
                cfg.api_key_env, cfg.api_key_env
            ))
        })?;
        if key.trim().is_empty() {
            return Err(UsageError(format!("{} is set but empty", cfg.api_key_env)).into());
        }
        let header = |name: &'static str, value: &str, secret: bool| -> Result<_> {
            let mut v = HeaderValue::from_str(value).map_err(|_| {
                UsageError(if secret {
                    format!("{} holds characters an HTTP header cannot carry", cfg.api_key_env)
                } else {
                    format!("{name}: {value:?} cannot be sent in an HTTP header")
                })
            })?;
            v.set_sensitive(secret);
            Ok((HeaderName::from_static(name), v))
        };
        let mut headers = HeaderMap::new();
        let mut add = |(n, v)| {
            headers.insert(n, v);
        };
        match cfg.vendor {
            Vendor::OpenAi => {
                add(header("authorization", &format!("Bearer {key}"), true)?);
                if let Some(o) = &cfg.organization {
                    add(header("openai-organization", o, false)?);
                }
                if let Some(p) = &cfg.project {
                    add(header("openai-project", p, false)?);
                }
            }
            Vendor::Anthropic => {
                add(header("x-api-key", &key, true)?);
                add(header("anthropic-version", "2023-06-01", false)?);
                add(header("anthropic-beta", "files-api-2025-04-14", false)?);
            }
        }
        let timeout = StdDuration::from_secs(cfg.request_timeout.as_secs().max(1) as u64);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("lethe/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            // A redirect would carry the key's header to whatever host it names.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(StdDuration::from_secs(10)))
            .build()
            .map_err(|e| anyhow!("cannot set up the {} client: {e}", cfg.vendor.name()))?;
        Ok(Client {
            http,
            vendor: cfg.vendor,
            base: cfg.base_url.clone(),
            key_env: cfg.api_key_env.clone(),
            key,
            max_retries: cfg.max_retries,
            retries: Retries::default(),
            paused_until: Mutex::new(None),
            jitter: Default::default(),
            jitter_n: AtomicU64::new(0),
        })
    }

    /// `GET` a path under the base URL (`/files?limit=…`).
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path).await
    }

    /// Sends one request, retrying what is worth retrying.
    async fn send(&self, method: Method, path: &str) -> Reply {
        let url = format!("{}{path}", self.base);
        let what = format!("{} {method} {path}", self.vendor.name());
        let mut attempt = 0u32;
        loop {
            if let Err(wait) = self.wait_for_reset().await {
                return Reply::Unknown(format!(
                    "{what}: not sent: the vendor's rate limit has no request left for {}s, longer than Lethe waits in a run ({}s); the next run tries again",
                    wait.as_secs(),
                    MAX_RETRY_AFTER.as_secs()
                ));
            }
            let sent = self.http.request(method.clone(), &url).send().await;
            let (why, wait, retried) = match sent {
                Err(e) => {
                    let kind = if e.is_timeout() { "timed out" } else { "failed" };
                    let e = e.without_url();
                    let why = format!("{what}: the request {kind} ({})", self.scrub(&chain(&e)));
                    (why, None, &self.retries.timeouts)
                }
                Ok(resp) => {
                    let status = resp.status();
                    self.note_rate_limit(resp.headers());
                    let retry_after = retry_after(resp.headers());
                    let body = resp.bytes().await;
                    match (status, body) {
                        (s, Ok(body)) if s.is_success() => {
                            // A success whose body cannot be read says nothing definite (a
                            // DELETE may have taken effect): unknown, to be looked up.
                            return match serde_json::from_slice(&body) {
                                Ok(v) => Reply::Ok(v),
                                Err(e) => Reply::Unknown(format!(
                                    "{what}: answered {s} with a body that is not JSON ({e})"
                                )),
                            };
                        }
                        (StatusCode::NOT_FOUND, _) => return Reply::NotFound,
                        (s, _) if s.is_redirection() => {
                            return Reply::Refused(format!(
                                "{what}: answered {s}, a redirect; Lethe does not follow redirects with the API key: set base_url to where the API is"
                            ));
                        }
                        (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, body) => {
                            return Reply::Refused(format!(
                                "{what}: the API key in {} was refused ({status}{}): check the key and its permissions",
                                self.key_env,
                                body.ok().and_then(|b| error_code(&b)).map(|c| format!(", {}", self.scrub(&c))).unwrap_or_default()
                            ));
                        }
                        (s, body) => {
                            let detail = body
                                .ok()
                                .and_then(|b| error_message(&b))
                                .map(|m| format!(": {}", self.scrub(&m)))
                                .unwrap_or_default();
                            let why = format!("{what}: answered {s}{detail}");
                            let retried = match s.as_u16() {
                                429 => &self.retries.throttled,
                                408 => &self.retries.timeouts,
                                409 | 500..=599 => &self.retries.server_errors,
                                _ => return Reply::Refused(why),
                            };
                            (why, retry_after, retried)
                        }
                    }
                }
            };
            if attempt >= self.max_retries {
                let tries = attempt + 1;
                return Reply::Unknown(format!(
                    "{why}; gave up after {tries} attempt{}",
                    if tries == 1 { "" } else { "s" }
                ));
            }
            let wait = match wait {
                Some(w) if w > MAX_RETRY_AFTER => {
                    return Reply::Unknown(format!(
                        "{why}; the vendor asked to wait {}s, longer than Lethe waits in a run ({}s): the next run tries again",
                        w.as_secs(),
                        MAX_RETRY_AFTER.as_secs()
                    ));
                }
                Some(w) => w,
                None => self.backoff(attempt),
            };
            retried.fetch_add(1, Ordering::Relaxed);
            attempt += 1;
            tokio::time::sleep(wait).await;
        }
    }

    /// Exponential backoff with jitter: a random wait between half and all of
    /// `BACKOFF_START * 2^attempt`, at most `BACKOFF_MAX`.
    fn backoff(&self, attempt: u32) -> StdDuration {
        let full = BACKOFF_START
            .saturating_mul(1u32 << attempt.min(16))
            .min(BACKOFF_MAX);
        let mut h = self.jitter.build_hasher();
        h.write_u64(self.jitter_n.fetch_add(1, Ordering::Relaxed));
        let frac = (h.finish() % 1000) as f64 / 1000.0;
        full.mul_f64(0.5 + frac / 2.0)
    }

    /// Waits out a rate-limit reset, if one is pending; one further off than Lethe waits
    /// is `Err` with how far.
    async fn wait_for_reset(&self) -> Result<(), StdDuration> {
        let until = self.paused_until.lock().ok().and_then(|g| *g);
        if let Some(t) = until {
            let now = Instant::now();
            if t > now + MAX_RETRY_AFTER {
                return Err(t - now);
            }
            if t > now {
                tokio::time::sleep_until(t).await;
            }
        }
        Ok(())
    }

    /// When the vendor says no request is left until a reset, no request leaves before it.
    fn note_rate_limit(&self, h: &HeaderMap) {
        let text = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
        let wait = match self.vendor {
            Vendor::OpenAi if text("x-ratelimit-remaining-requests") == Some("0") => {
                text("x-ratelimit-reset-requests").and_then(go_duration)
            }
            Vendor::Anthropic if text("anthropic-ratelimit-requests-remaining") == Some("0") => {
                text("anthropic-ratelimit-requests-reset").and_then(until_instant)
            }
            _ => None,
        };
        if let Some(w) = wait
            && let Ok(mut g) = self.paused_until.lock()
        {
            // Far enough to refuse (see `wait_for_reset`), never so far it overflows.
            let t = Instant::now() + w.min(MAX_RETRY_AFTER * 10);
            if g.is_none_or(|old| old < t) {
                *g = Some(t);
            }
        }
    }

    /// A message without the key in it, whatever the vendor echoed: the key itself, and
    /// the masked form vendors echo (`sk-…****abcd`, `sk-…...abcd`), whose tail is enough
    /// to tell keys apart.
    pub fn scrub(&self, s: &str) -> String {
        let mut out = s.replace(&self.key, "[redacted]");
        if let Some(tail) = self.key.get(self.key.len().saturating_sub(4)..)
            && self.key.len() >= 8
        {
            for mask in ["*", ".", "…"] {
                out = out.replace(&format!("{mask}{tail}"), &format!("{mask}[redacted]"));
            }
        }
        out
    }
}

/// An error and its causes, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// `retry-after-ms` (milliseconds), else `Retry-After` (seconds, or an HTTP date).
fn retry_after(h: &HeaderMap) -> Option<StdDuration> {
    let text = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|t| t.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(StdDuration::try_from_secs_f64(ms / 1000.0).unwrap_or(StdDuration::MAX));
    }
    let v = text("retry-after")?;
    if let Ok(s) = v.parse::<f64>() {
        return (s.is_finite() && s >= 0.0)
            .then(|| StdDuration::try_from_secs_f64(s).unwrap_or(StdDuration::MAX));
    }
    let when = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    let secs = when.as_second() - jiff::Timestamp::now().as_second();
    Some(StdDuration::from_secs(secs.max(0) as u64))
}

/// A Go duration as OpenAI's rate-limit headers write it: `1s`, `6m0s`, `20ms`, `1h2m3.5s`.
fn go_duration(s: &str) -> Option<StdDuration> {
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..n_end].parse().ok()?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += n * unit;
        rest = &rest[u_end..];
    }
    (total.is_finite() && total >= 0.0)
        .then(|| StdDuration::try_from_secs_f64(total).unwrap_or(StdDuration::MAX))
}

/// How long until an RFC 3339 instant (Anthropic's reset headers).
fn until_instant(s: &str) -> Option<StdDuration> {
    let t: jiff::Timestamp = s.parse().ok()?;
    let ms = t.as_millisecond() - jiff::Timestamp::now().as_millisecond();
    Some(StdDuration::from_millis(ms.max(0) as u64))
}

/// The vendor's error message (`{"error": {"message": …}}`, both vendors).
fn error_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let m = v.get("error")?.get("message")?.as_str()?;
    Some(m.chars().take(300).collect())
}

/// The vendor's error code or type, which names the problem without echoing anything.
fn error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    e.get("code")
        .and_then(|c| c.as_str())
        .or_else(|| e.get("type").and_then(|c| c.as_str()))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_read_as_openai_writes_them() {
        assert_eq!(go_duration("1s"), Some(StdDuration::from_secs(1)));
        assert_eq!(go_duration("6m0s"), Some(StdDuration::from_secs(360)));
        assert_eq!(go_duration("20ms"), Some(StdDuration::from_millis(20)));
        assert_eq!(go_duration("1h2m3.5s"), Some(StdDuration::from_secs_f64(3723.5)));
        assert_eq!(go_duration("soon"), None);
        assert_eq!(go_duration("5x"), None);
    }

    #[test]
    fn retry_after_prefers_milliseconds_and_reads_seconds() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(StdDuration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&h), Some(StdDuration::from_millis(150)));
        let mut bad = HeaderMap::new();
        bad.insert("retry-after", HeaderValue::from_static("-3"));
        assert_eq!(retry_after(&bad), None);
    }
}
