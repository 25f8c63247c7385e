//! Instants and durations as Lethe reads them from configs and from stored rows.
//! Pure: no clock is read here; callers pass `now` in.

use std::fmt;

const MICROS_PER_SEC: i64 = 1_000_000;
const SECS_PER_DAY: i64 = 86_400;
/// Numbers at or above this are read as unix milliseconds, below as unix seconds.
/// 1e11 seconds is the year 5138; 1e11 milliseconds is 1973.
pub const MILLIS_THRESHOLD: f64 = 100_000_000_000.0;

/// Unix times (seconds) that are plausible for stored data when no unit is declared:
/// 1995-01-01 to 2200-01-01. The same range in milliseconds is read as milliseconds.
pub const PLAUSIBLE_SECS: (f64, f64) = (788_918_400.0, 7_258_118_400.0);

/// How a column stores its instants, when the config says (`created_at_format`,
/// `expires_at_format`). Without one, text is read as ISO-8601 and numbers only when
/// plausible ([`Timestamp::from_plausible_unix`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    /// `unix` or `unix_s`: seconds since 1970.
    UnixSeconds,
    /// `unix_ms`: milliseconds since 1970.
    UnixMillis,
    /// `iso8601`: text only; a number is refused.
    Iso8601,
    /// A strftime-style pattern such as `%Y%m%d` (no offset in it means UTC).
    Strftime(String),
}

impl TimeFormat {
    /// Reads a config value; the error says what is accepted.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "unix" | "unix_s" => Ok(TimeFormat::UnixSeconds),
            "unix_ms" => Ok(TimeFormat::UnixMillis),
            "iso8601" | "rfc3339" => Ok(TimeFormat::Iso8601),
            f if f.contains('%') => {
                // Validate the pattern once, on a value it must at least be able to format.
                let probe = jiff::civil::date(2024, 5, 1).at(12, 0, 0, 0);
                jiff::fmt::strtime::format(f, probe)
                    .map_err(|e| format!("{f:?} is not a valid strftime pattern: {e}"))?;
                Ok(TimeFormat::Strftime(f.to_string()))
            }
            other => Err(format!(
                "{other:?} is not a time format (expected unix, unix_ms, iso8601, or a strftime pattern such as \"%Y%m%d\")"
            )),
        }
    }
}

impl fmt::Display for TimeFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeFormat::UnixSeconds => f.write_str("format unix"),
            TimeFormat::UnixMillis => f.write_str("format unix_ms"),
            TimeFormat::Iso8601 => f.write_str("format iso8601"),
            TimeFormat::Strftime(p) => write!(f, "format {p:?}"),
        }
    }
}

/// Reads `input` with a strftime pattern: a parsed offset is honoured, none means UTC, a
/// date alone means midnight UTC.
fn strftime(pattern: &str, input: &str) -> Result<Timestamp, String> {
    let bad = |e: &dyn fmt::Display| {
        format!(
            "cannot read {:?} with format {pattern:?}: {e}",
            truncate(input, 64)
        )
    };
    let tm = jiff::fmt::strtime::parse(pattern, input).map_err(|e| bad(&e))?;
    let ts = match tm.to_timestamp() {
        Ok(ts) => ts,
        Err(_) => {
            let dt = match tm.to_datetime() {
                Ok(dt) => dt,
                Err(_) => tm
                    .to_date()
                    .map_err(|e| bad(&e))?
                    .to_datetime(jiff::civil::Time::midnight()),
            };
            jiff::tz::Offset::UTC
                .to_timestamp(dt)
                .map_err(|e| bad(&e))?
        }
    };
    Ok(Timestamp(ts.as_microsecond()))
}

/// An instant in UTC, with microsecond precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// 9999-12-31T23:59:59Z: the latest instant Lethe prints; what `infinity` reads as.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_000_000);
    /// 1900-01-01T00:00:00Z: undeclared text before it is a placeholder, not a date.
    pub const EARLIEST_PLAUSIBLE: Timestamp = Timestamp(-2_208_988_800_000_000);

    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    pub fn from_unix_seconds(secs: i64) -> Option<Self> {
        secs.checked_mul(MICROS_PER_SEC).map(Timestamp)
    }

    pub fn unix_seconds(self) -> i64 {
        self.0.div_euclid(MICROS_PER_SEC)
    }

    /// `self + d`, or `None` past the representable range.
    pub fn checked_add(self, d: Duration) -> Option<Self> {
        d.0.checked_mul(MICROS_PER_SEC)
            .and_then(|m| self.0.checked_add(m))
            .map(Timestamp)
    }

    pub fn checked_sub(self, d: Duration) -> Option<Self> {
        d.0.checked_mul(MICROS_PER_SEC)
            .and_then(|m| self.0.checked_sub(m))
            .map(Timestamp)
    }

    /// Reads a number stored in a timestamp column: unix seconds, or unix milliseconds when
    /// at or above [`MILLIS_THRESHOLD`] in magnitude.
    pub fn from_unix_number(v: f64) -> Result<Self, String> {
        if !v.is_finite() {
            return Err(format!("{v} is not a unix time"));
        }
        let micros = if v.abs() >= MILLIS_THRESHOLD {
            v * 1_000.0
        } else {
            v * 1_000_000.0
        };
        // Years -9999..=9999 are the range we print; anything outside is a typo, not a date.
        if !(-377_705_116_800_000_000.0..=253_402_300_799_000_000.0).contains(&micros) {
            return Err(format!("{v} is out of range for a unix time"));
        }
        Ok(Timestamp(micros.round() as i64))
    }

    /// Reads a number whose unit nobody declared: unix seconds or milliseconds, but only
    /// where the instant it names is plausible for stored data (1995 to 2200). Anything else
    /// (`20991231` written as a date, `0` meaning "never", a typo) is refused, never guessed
    /// into 1970.
    pub fn from_plausible_unix(v: f64) -> Result<Self, String> {
        if (PLAUSIBLE_SECS.0..PLAUSIBLE_SECS.1).contains(&v) {
            return Self::from_unix_number(v);
        }
        if (PLAUSIBLE_SECS.0 * 1000.0..PLAUSIBLE_SECS.1 * 1000.0).contains(&v) {
            return Self::from_unix_number(v);
        }
        Err(format!(
            "{v} is a number but not a plausible unix time (seconds or milliseconds between 1995 and 2200)"
        ))
    }

    /// A number in a declared unit, within the printable range.
    pub fn from_unix_unit(v: f64, millis: bool) -> Result<Self, String> {
        let micros = if millis { v * 1_000.0 } else { v * 1_000_000.0 };
        if !micros.is_finite()
            || !(-377_705_116_800_000_000.0..=253_402_300_799_000_000.0).contains(&micros)
        {
            return Err(format!("{v} is out of range for a unix time"));
        }
        Ok(Timestamp(micros.round() as i64))
    }

    /// Reads a stored text in a declared format (see [`TimeFormat`]).
    pub fn parse_as(s: &str, fmt: &TimeFormat) -> Result<Self, String> {
        let t = s.trim();
        match fmt {
            TimeFormat::UnixSeconds | TimeFormat::UnixMillis => {
                let v: f64 = t
                    .parse()
                    .ok()
                    .filter(|_| looks_numeric(t))
                    .ok_or_else(|| format!("{:?} is not a number ({fmt})", truncate(t, 64)))?;
                Self::from_unix_unit(v, *fmt == TimeFormat::UnixMillis)
            }
            TimeFormat::Iso8601 => {
                if looks_numeric(t) {
                    return Err(format!(
                        "{:?} is a number, not ISO-8601 text ({fmt})",
                        truncate(t, 64)
                    ));
                }
                Self::parse(t)
            }
            TimeFormat::Strftime(f) => strftime(f, t),
        }
    }

    /// Parses the timestamp forms found in application tables: ISO-8601 / RFC 3339 with `T` or
    /// a space, optional seconds and fractions, `Z`, `+hh:mm`, `+hhmm` or `+hh` offsets (none
    /// means UTC), a bare date (midnight UTC), or a plausible unix number in seconds or
    /// milliseconds ([`Timestamp::from_plausible_unix`]).
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("empty timestamp".into());
        }
        if looks_numeric(t) {
            let v: f64 = t
                .parse()
                .map_err(|_| format!("cannot read {t:?} as a unix time"))?;
            return Self::from_plausible_unix(v);
        }
        parse_iso(t).ok_or_else(|| {
            format!(
                "cannot read {:?} as a timestamp (expected ISO-8601 such as 2024-05-01T12:00:00Z, or unix seconds)",
                truncate(t, 64)
            )
        })
    }

    /// RFC 3339 in UTC: seconds, plus microseconds only when there are any.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(MICROS_PER_SEC);
        let micros = self.0.rem_euclid(MICROS_PER_SEC);
        let days = secs.div_euclid(SECS_PER_DAY);
        let sod = secs.rem_euclid(SECS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (sod / 3600, (sod % 3600) / 60, sod % 60);
        if micros == 0 {
            format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
        } else {
            format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{micros:06}Z")
        }
    }

    /// Julian day number, as SQLite's `julianday()` returns it.
    pub fn julian_day(self) -> f64 {
        self.0 as f64 / (MICROS_PER_SEC as f64 * SECS_PER_DAY as f64) + 2_440_587.5
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn looks_numeric(t: &str) -> bool {
    let body = t.strip_prefix(['-', '+']).unwrap_or(t);
    !body.is_empty()
        && body.bytes().any(|b| b.is_ascii_digit())
        && body.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && body.bytes().filter(|&b| b == b'.').count() <= 1
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        let s = self.b.get(self.i..self.i + n)?;
        let mut v = 0u32;
        for &c in s {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (c - b'0') as u32;
        }
        self.i += n;
        Some(v)
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn done(&self) -> bool {
        self.i == self.b.len()
    }
}

fn parse_iso(t: &str) -> Option<Timestamp> {
    let mut c = Cursor {
        b: t.as_bytes(),
        i: 0,
    };
    let y = c.digits(4)? as i64;
    if !c.eat(b'-') {
        return None;
    }
    let mo = c.digits(2)?;
    if !c.eat(b'-') {
        return None;
    }
    let d = c.digits(2)?;
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
        return None;
    }
    let (mut hh, mut mi, mut ss, mut micros) = (0u32, 0u32, 0u32, 0i64);
    let mut offset_secs: i64 = 0;
    if !c.done() {
        if !(c.eat(b'T') || c.eat(b't') || c.eat(b' ')) {
            return None;
        }
        hh = c.digits(2)?;
        if !c.eat(b':') {
            return None;
        }
        mi = c.digits(2)?;
        if c.eat(b':') {
            ss = c.digits(2)?;
            if c.eat(b'.') || c.eat(b',') {
                let start = c.i;
                let mut scale = 100_000i64;
                while let Some(ch) = c.peek().filter(u8::is_ascii_digit) {
                    micros += (ch - b'0') as i64 * scale;
                    scale /= 10;
                    c.i += 1;
                }
                if c.i == start {
                    return None;
                }
            }
        }
        if hh > 23 || mi > 59 || ss > 59 {
            return None;
        }
        // SQLite accepts one space before the zone; so do we.
        if c.peek() == Some(b' ') && c.b.len() > c.i + 1 {
            c.i += 1;
        }
        if !c.done() {
            if c.eat(b'Z') || c.eat(b'z') {
            } else {
                let sign = if c.eat(b'+') {
                    1
                } else if c.eat(b'-') {
                    -1
                } else {
                    return None;
                };
                let oh = c.digits(2)?;
                let om = if c.eat(b':') {
                    c.digits(2)?
                } else if c.done() {
                    0
                } else {
                    c.digits(2)?
                };
                if oh > 23 || om > 59 {
                    return None;
                }
                offset_secs = sign * (oh as i64 * 3600 + om as i64 * 60);
            }
        }
        if !c.done() {
            return None;
        }
    }
    let secs =
        days_from_civil(y, mo, d) * SECS_PER_DAY + hh as i64 * 3600 + mi as i64 * 60 + ss as i64
            - offset_secs;
    Some(Timestamp(secs * MICROS_PER_SEC + micros))
}

/// A length of time, in whole seconds; written `30d`, `12h`, `90m`, `45s` or `2w`. Stored
/// (the policy last applied to a target) as its number of seconds.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Duration(i64);

impl Duration {
    pub const fn from_secs(secs: i64) -> Self {
        Duration(secs)
    }
    pub const fn from_days(days: i64) -> Self {
        Duration(days * SECS_PER_DAY)
    }
    pub fn checked_from_days(days: i64) -> Option<Self> {
        days.checked_mul(SECS_PER_DAY).map(Duration)
    }
    pub const fn as_secs(self) -> i64 {
        self.0
    }
    pub fn as_days_f64(self) -> f64 {
        self.0 as f64 / SECS_PER_DAY as f64
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
            format!("{t:?} has no unit: write it like \"30d\", \"12h\" or \"90m\"")
        })?;
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(format!(
                "{t:?} is not a duration: write it like \"30d\", \"12h\" or \"90m\""
            ));
        }
        let n: i64 = num
            .parse()
            .map_err(|_| format!("{t:?}: {num} is too large"))?;
        let mult = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => SECS_PER_DAY,
            "w" => 7 * SECS_PER_DAY,
            _ => {
                return Err(format!(
                    "{t:?}: unknown unit {unit:?} (use s, m, h, d or w)"
                ));
            }
        };
        n.checked_mul(mult)
            .map(Duration)
            .ok_or_else(|| format!("{t:?} is too large"))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s != 0 && s % SECS_PER_DAY == 0 {
            write!(f, "{}d", s / SECS_PER_DAY)
        } else if s != 0 && s % 3600 == 0 {
            write!(f, "{}h", s / 3600)
        } else if s != 0 && s % 60 == 0 {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> i64 {
        Timestamp::parse(s)
            .map(|t| t.unix_seconds())
            .unwrap_or(i64::MIN)
    }

    #[test]
    fn reads_the_forms_applications_store() {
        let base = 1_714_564_800; // 2024-05-01T12:00:00Z
        for s in [
            "2024-05-01T12:00:00Z",
            "2024-05-01 12:00:00",
            "2024-05-01 12:00:00.123456",
            "2024-05-01T12:00:00.5",
            "2024-05-01T14:00:00+02:00",
            "2024-05-01T14:00:00+0200",
            "2024-05-01T14:00:00+02",
            "2024-05-01T07:30:00-04:30",
            "2024-05-01 14:00:00 +02:00",
            "2024-05-01t12:00:00z",
            "1714564800",
            "1714564800000",
            "1714564800.25",
        ] {
            assert_eq!(ts(s), base, "{s}");
        }
        assert_eq!(ts("2024-05-01T12:00"), base);
        assert_eq!(ts("2024-05-01"), base - 12 * 3600);
    }

    #[test]
    fn fractions_are_kept() {
        let t = Timestamp::parse("2024-05-01 12:00:00.123456").map(Timestamp::as_micros);
        assert_eq!(t, Ok(1_714_564_800_123_456));
        let t = Timestamp::parse("2024-05-01 12:00:00.1234567891").map(Timestamp::as_micros);
        assert_eq!(t, Ok(1_714_564_800_123_456));
    }

    #[test]
    fn rejects_what_is_not_a_date() {
        for s in [
            "",
            "yesterday",
            "2024-13-01",
            "2024-02-30",
            "2023-02-29",
            "2024-05-01T25:00:00",
            "2024-05-01T12:00:00+25:00",
            "2024-05-01T12:00:00 garbage",
            "2024-05-01T12:00:00.",
            "2024/05/01",
            "1e400",
            "99999999999999999999999",
            "--5",
        ] {
            assert!(Timestamp::parse(s).is_err(), "{s:?} should not parse");
        }
        assert!(Timestamp::parse("2024-02-29").is_ok());
    }

    #[test]
    fn round_trips_through_rfc3339() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2024-02-29T23:59:59.000001Z",
            "1969-12-31T23:59:59Z",
            "9999-12-31T23:59:59Z",
        ] {
            let t = Timestamp::parse(s).map(Timestamp::to_rfc3339);
            assert_eq!(t.as_deref(), Ok(s));
        }
    }

    #[test]
    fn julian_day_matches_sqlite() {
        // sqlite> select julianday('2024-05-01 12:00:00'); -> 2460432.0
        let t = Timestamp::parse("2024-05-01 12:00:00").map(Timestamp::julian_day);
        assert_eq!(t, Ok(2_460_432.0));
    }

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("30d"), Ok(Duration::from_days(30)));
        assert_eq!(Duration::parse("12h").map(Duration::as_secs), Ok(43_200));
        assert_eq!(Duration::parse("90m").map(Duration::as_secs), Ok(5_400));
        assert_eq!(Duration::parse("2w"), Ok(Duration::from_days(14)));
        for bad in ["30", "d", "30x", "-1d", "3.5d", "", "99999999999999999999d"] {
            assert!(Duration::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Duration::from_days(30).to_string(), "30d");
        assert_eq!(Duration::from_secs(5_400).to_string(), "90m");
    }
}
