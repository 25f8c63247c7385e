//! Cron schedules (`[schedule]`): when one fires next, and what a daemon that was stopped
//! missed. Pure: the caller says what time it is.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// The most missed fires counted one by one: a per-second schedule stopped for a week
/// would otherwise take a while to count, and "at least this many" says enough.
pub const MISSED_COUNT_CAP: u64 = 10_000;

/// A cron expression in a time zone.
#[derive(Clone, Debug)]
pub struct Cadence {
    cron: Cron,
    tz: TimeZone,
    /// The expression as written.
    pub expr: String,
}

/// What a stopped daemon missed between its last fire and now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missed {
    /// Fires missed (at most [`MISSED_COUNT_CAP`]).
    pub count: u64,
    /// The newest of them, when there is one.
    pub newest: Option<Timestamp>,
}

impl Cadence {
    /// Parses a cron expression of 5 fields (minute first) or 6 (second first), in the
    /// IANA zone `tz` (UTC when absent).
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Cadence, String> {
        let fields = expr.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!(
                "{expr:?} has {fields} fields: a cron expression has 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)"
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(expr)
            .map_err(|e| format!("{expr:?} is not a cron expression: {e}"))?;
        let tz = match tz {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|_| {
                format!("{name:?} is not an IANA time zone (e.g. \"Europe/Paris\")")
            })?,
        };
        let cadence = Cadence {
            cron,
            tz,
            expr: expr.to_string(),
        };
        // A pattern that can never match (30 February) would leave a daemon idle forever.
        if cadence.next_after(Timestamp::UNIX_EPOCH).is_none() {
            return Err(format!("{expr:?} never fires"));
        }
        Ok(cadence)
    }

    /// The first fire strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let z = t.to_zoned(self.tz.clone());
        self.cron
            .find_next_occurrence(&z, false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The newest fire at or before `t`.
    pub fn latest_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        let z = t.to_zoned(self.tz.clone());
        self.cron
            .find_previous_occurrence(&z, true)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The fires after `last` and at or before `now`.
    pub fn missed(&self, last: Timestamp, now: Timestamp) -> Missed {
        let newest = self.latest_at_or_before(now).filter(|n| *n > last);
        let mut count = 0;
        if newest.is_some() {
            let mut t = last;
            while count < MISSED_COUNT_CAP {
                match self.next_after(t) {
                    Some(n) if n <= now => {
                        count += 1;
                        t = n;
                    }
                    _ => break,
                }
            }
        }
        Missed { count, newest }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn five_fields_fire_on_the_minute_and_six_on_the_second() {
        let daily = Cadence::parse("0 2 * * *", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            daily.next_after(ts("2026-11-27T01:59:59Z")),
            Some(ts("2026-11-27T02:00:00Z"))
        );
        assert_eq!(
            daily.next_after(ts("2026-11-27T02:00:00Z")),
            Some(ts("2026-11-28T02:00:00Z"))
        );
        let every2 = Cadence::parse("*/2 * * * * *", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            every2.next_after(ts("2026-11-27T02:00:01Z")),
            Some(ts("2026-11-27T02:00:02Z"))
        );
    }

    #[test]
    fn a_zone_moves_the_fire() {
        let paris =
            Cadence::parse("0 2 * * *", Some("Europe/Paris")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            paris.next_after(ts("2026-11-27T00:00:00Z")),
            Some(ts("2026-11-27T01:00:00Z"))
        );
    }

    #[test]
    fn missed_fires_are_counted_with_the_newest() {
        let hourly = Cadence::parse("0 * * * *", None).unwrap_or_else(|e| panic!("{e}"));
        let m = hourly.missed(ts("2026-11-27T02:00:00Z"), ts("2026-11-27T05:30:00Z"));
        assert_eq!(m.count, 3);
        assert_eq!(m.newest, Some(ts("2026-11-27T05:00:00Z")));
        let none = hourly.missed(ts("2026-11-27T05:00:00Z"), ts("2026-11-27T05:30:00Z"));
        assert_eq!(
            none,
            Missed {
                count: 0,
                newest: None
            }
        );
    }

    #[test]
    fn bad_expressions_and_zones_say_what_is_wrong() {
        let e = Cadence::parse("0 2 * *", None).err().unwrap_or_default();
        assert!(e.contains("4 fields"), "{e}");
        let e = Cadence::parse("0 25 * * *", None).err().unwrap_or_default();
        assert!(e.contains("not a cron expression"), "{e}");
        let e = Cadence::parse("0 2 * * *", Some("Mars/Olympus"))
            .err()
            .unwrap_or_default();
        assert!(e.contains("IANA"), "{e}");
        let e = Cadence::parse("0 0 30 2 *", None).err().unwrap_or_default();
        assert!(e.contains("never fires"), "{e}");
    }
}
