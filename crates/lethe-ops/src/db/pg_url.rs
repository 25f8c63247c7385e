//! PostgreSQL URLs taken apart: the parameters Lethe reads itself (`sslmode`, `sslrootcert`),
//! the text handed to the driver, and the text shown in messages, in which every password (in
//! the user part, or a `password=` parameter in any case) reads `***`.
//!
//! The URL is read by the `url` crate, as a browser would: the user part ends at the last `@`
//! before the host, so a password holding an `@`, written plainly or percent-encoded, is
//! hidden whole (and reaches the server whole). A URL that cannot be read so, and may hold a
//! password, is never shown: only `<url hidden: it may hold a password>`.

use percent_encoding::percent_decode_str;

/// What a password is replaced with in messages.
pub const HIDDEN: &str = "***";

/// Parameters Lethe reads itself and does not hand the driver, which knows no `sslrootcert`
/// and no `sslmode` beyond `require`.
const OWN_PARAMS: [&str; 2] = ["sslmode", "sslrootcert"];

/// A PostgreSQL URL taken apart.
#[derive(Debug)]
pub struct PgUrl {
    /// For the driver: the URL less [`OWN_PARAMS`].
    pub driver: String,
    /// For messages: the URL with every password hidden.
    pub shown: String,
    /// `sslmode`, as given.
    pub sslmode: Option<String>,
    /// `sslrootcert`, as given: a file, or `system`.
    pub sslrootcert: Option<String>,
    /// Every password the URL holds, as written and decoded: none may appear in a message,
    /// whatever the driver says.
    pub secrets: Vec<String>,
}

impl PgUrl {
    /// Takes a URL apart; `Err` is a message for the user, naming no password.
    pub fn parse(url: &str) -> Result<PgUrl, String> {
        match url::Url::parse(url) {
            Ok(u) => Ok(from_parsed(&u)),
            Err(e) if might_hold_secret(url) => Err(format!(
                "{} is not a valid PostgreSQL URL ({e}): percent-encode the password's special \
                 characters, or better, give it through password_env",
                hidden(url)
            )),
            // Nothing secret in it (several hosts, say, which a URL parser does not read):
            // the driver reads it as written.
            Err(_) => Ok(from_raw(url)),
        }
    }
}

fn from_parsed(u: &url::Url) -> PgUrl {
    let mut secrets = Vec::new();
    if let Some(p) = u.password() {
        secrets.push(p.to_string());
        secrets.push(decode(p));
    }
    if let Some(f) = u.fragment() {
        // `#` cuts a `password=` value short: what follows it is secret too.
        secrets.push(f.to_string());
        secrets.push(decode(f));
    }
    for (_, key, value) in pieces(u.query().unwrap_or("")) {
        if is_password_key(key) {
            secrets.push(value.to_string());
            secrets.push(decode(value));
        }
    }
    let (query, [sslmode, sslrootcert]) = take_own(u.query().unwrap_or(""));
    let mut driver = u.clone();
    driver.set_query((!query.is_empty()).then_some(query.as_str()));
    secrets.retain(|s| !s.is_empty());
    // Longest first, so that no shorter secret leaves part of a longer one behind.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    PgUrl {
        driver: driver.to_string(),
        shown: redact_parsed(u).unwrap_or_else(|| hidden(u.as_str())),
        sslmode,
        sslrootcert,
        secrets,
    }
}

/// A URL with no `@` and no password parameter: shown as written.
fn from_raw(url: &str) -> PgUrl {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (query, [sslmode, sslrootcert]) = take_own(query);
    let driver = if query.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{query}")
    };
    PgUrl {
        driver,
        shown: url.to_string(),
        sslmode,
        sslrootcert,
        secrets: Vec::new(),
    }
}

/// A query less [`OWN_PARAMS`] (the rest as written), and their values (the last given).
fn take_own(query: &str) -> (String, [Option<String>; OWN_PARAMS.len()]) {
    let mut own = [None, None];
    let mut kept = Vec::new();
    for (piece, key, value) in pieces(query) {
        let key = decode(key);
        match OWN_PARAMS.iter().position(|p| *p == key) {
            Some(i) => own[i] = Some(decode(value)),
            None => kept.push(piece),
        }
    }
    (kept.join("&"), own)
}

/// A query's `key=value` pieces, as written: (piece, key, value).
fn pieces(query: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    query.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (p, k, v)
    })
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn is_password_key(raw_key: &str) -> bool {
    decode(raw_key).trim().eq_ignore_ascii_case("password")
}

/// Could this text, which no URL parser reads, hold a password: a user part, or a password
/// parameter?
fn might_hold_secret(url: &str) -> bool {
    let d = decode(url).to_ascii_lowercase();
    d.contains('@') || d.contains("password")
}

/// The text shown for a URL that cannot be shown.
fn hidden(url: &str) -> String {
    let scheme = url
        .split_once("://")
        .map(|(s, _)| s)
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '+'));
    match scheme {
        Some(s) => format!("{s}://<url hidden: it may hold a password>"),
        None => "<url hidden: it may hold a password>".to_string(),
    }
}

/// The URL with its password, its password parameters and any fragment replaced; `None` if
/// that cannot be done.
fn redact_parsed(u: &url::Url) -> Option<String> {
    let mut r = u.clone();
    if r.password().is_some() {
        r.set_password(Some(HIDDEN)).ok()?;
    }
    if let Some(q) = u.query() {
        let q: Vec<String> = pieces(q)
            .map(|(piece, key, _)| {
                if is_password_key(key) {
                    format!("{key}={HIDDEN}")
                } else {
                    piece.to_string()
                }
            })
            .collect();
        r.set_query(Some(&q.join("&")));
    }
    if r.fragment().is_some() {
        r.set_fragment(Some(HIDDEN));
    }
    Some(r.to_string())
}

/// A connection URL with every password replaced, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => redact_parsed(&u).unwrap_or_else(|| hidden(url)),
        Err(_) if might_hold_secret(url) => hidden(url),
        Err(_) => url.to_string(),
    }
}

/// `text` with each of `secrets` replaced by `***` (a secret of one or two characters would
/// blank out every match in an ordinary message, and protects nothing worth it).
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut t = text.to_string();
    for s in secrets.iter().filter(|s| s.chars().count() >= 3) {
        t = t.replace(s.as_str(), HIDDEN);
    }
    t
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        for (url, shown) in [
            (
                "postgres://lethe:s3cret@db:5432/x",
                "postgres://lethe:***@db:5432/x",
            ),
            ("postgres://lethe@db/x", "postgres://lethe@db/x"),
            ("sqlite://a.db", "sqlite://a.db"),
            ("postgres://u:p@SECRET@db/x", "postgres://u:***@db/x"),
            ("postgres://u:p%40SECRET@db/x", "postgres://u:***@db/x"),
            (
                "postgresql://u@db/x?application_name=a&password=SECRET&PassWord=SECRET2",
                "postgresql://u@db/x?application_name=a&password=***&PassWord=***",
            ),
            (
                "postgres://db/x?p%61ssword=SECRET",
                "postgres://db/x?p%61ssword=***",
            ),
            (
                "postgres://db/x?password=ab#SECRET",
                "postgres://db/x?password=***#***",
            ),
            // Not a URL the parser reads, and it may hold a password: hidden whole.
            (
                "postgres://u:SECRET@h1:5432,h2:5433/x",
                "postgres://<url hidden: it may hold a password>",
            ),
            // Not a URL the parser reads, and no password: as written.
            (
                "postgres://h1:5432,h2:5433/x",
                "postgres://h1:5432,h2:5433/x",
            ),
        ] {
            assert_eq!(redact(url), shown, "{url}");
            assert!(!redact(url).contains("SECRET"), "{url}");
        }
    }

    #[test]
    fn own_parameters_are_taken_out_and_the_password_kept_whole() {
        let u = PgUrl::parse(
            "postgres://u:p@SECRET@db:5433/x?sslmode=verify-full&application_name=a&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .unwrap();
        assert_eq!(u.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(u.sslrootcert.as_deref(), Some("/tmp/ca.pem"));
        assert_eq!(
            u.driver,
            "postgres://u:p%40SECRET@db:5433/x?application_name=a"
        );
        assert_eq!(u.shown.matches("SECRET").count(), 0);
        let cfg: postgres::Config = u.driver.parse().unwrap();
        assert_eq!(cfg.get_password(), Some(&b"p@SECRET"[..]));
        assert_eq!(cfg.get_user(), Some("u"));
        assert_eq!(
            scrub("failed: p@SECRET and p%40SECRET", &u.secrets),
            "failed: *** and ***"
        );
        let raw = PgUrl::parse("postgres://h1:5432,h2:5433/x?sslmode=require").unwrap();
        assert_eq!(raw.driver, "postgres://h1:5432,h2:5433/x");
        assert_eq!(raw.sslmode.as_deref(), Some("require"));
        let bad = PgUrl::parse("postgres://u:SECRET@h1:5432,h2:5433/x").unwrap_err();
        assert!(
            !bad.contains("SECRET") && bad.contains("password_env"),
            "{bad}"
        );
    }
}
