//! The guard against a mistyped policy: how much one change or one run may delete before a
//! person has to say yes (`[guard] max_new_due`, a target's `max_delete`). Pure: the
//! counting is done elsewhere; this says whether a count passes a limit.

use std::fmt;

/// A limit on how many of a target's items one policy change or one run may delete: a
/// share of the items the target holds (`"10%"`) or a number of them (`"500"`, or `500`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    /// Percent of the target's items, 0 to 100.
    Percent(f64),
    Count(u64),
}

/// `[guard] max_new_due` when the config does not say.
pub const DEFAULT_MAX_NEW_DUE: Limit = Limit::Percent(10.0);

impl Limit {
    /// `"10%"`, `"2.5%"` or `"500"`.
    pub fn parse(s: &str) -> Result<Limit, String> {
        let t = s.trim();
        let bad =
            || format!("{t:?} is neither a percentage (\"10%\") nor a number of items (\"500\")");
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            if !v.is_finite() || !(0.0..=100.0).contains(&v) {
                return Err(format!("{t:?}: a percentage is from 0% to 100%"));
            }
            return Ok(Limit::Percent(v));
        }
        t.parse::<u64>().map(Limit::Count).map_err(|_| bad())
    }

    /// The most items of `total` that pass: `None` when the limit is a share and the total
    /// is unknown.
    pub fn allowance(&self, total: Option<u64>) -> Option<u64> {
        match *self {
            Limit::Count(n) => Some(n),
            Limit::Percent(p) => total.map(|t| (t as f64 * p / 100.0).floor() as u64),
        }
    }

    /// Whether `n` items (of a target holding `total`) are more than the limit lets
    /// through. A share of an unknown total lets nothing through: when unsure, refuse.
    pub fn exceeded_by(&self, n: u64, total: Option<u64>) -> bool {
        match self.allowance(total) {
            Some(max) => n > max,
            None => n > 0,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Percent(p) => write!(f, "{p}%"),
            Limit::Count(n) => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shares_and_counts() {
        assert_eq!(Limit::parse("10%"), Ok(Limit::Percent(10.0)));
        assert_eq!(Limit::parse(" 2.5 % "), Ok(Limit::Percent(2.5)));
        assert_eq!(Limit::parse("500"), Ok(Limit::Count(500)));
        for bad in ["", "ten", "-1", "101%", "-5%", "NaN%", "10 items"] {
            assert!(Limit::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn more_than_the_limit_exceeds_it() {
        let ten = Limit::Percent(10.0);
        assert!(!ten.exceeded_by(10, Some(100)));
        assert!(ten.exceeded_by(11, Some(100)));
        assert!(!ten.exceeded_by(0, Some(0)));
        assert!(ten.exceeded_by(1, None), "unknown total: refuse");
        assert!(!ten.exceeded_by(0, None));
        let count = Limit::Count(3);
        assert!(!count.exceeded_by(3, None));
        assert!(count.exceeded_by(4, Some(1_000_000)));
    }
}
