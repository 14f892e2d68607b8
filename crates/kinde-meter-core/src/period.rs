//! Billing intervals and the periods of an agreement: `[anchor + k·interval,
//! anchor + (k+1)·interval)` in UTC, month-end days clamped per month
//! (docs/billing.md#billing-periods, docs/design.md#periods).

use std::{fmt, str::FromStr};

use jiff::{SignedDuration, Span, Timestamp, civil::DateTime, tz::TimeZone};

/// A plan's billing interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interval {
    /// 24 hours.
    Day,
    /// 7 × 24 hours.
    Week,
    /// One calendar month, day clamped to the month's end.
    Month,
    /// One calendar year (Feb 29 clamps to Feb 28).
    Year,
}

impl Interval {
    /// The interval's name in the catalog and the store.
    pub const fn as_str(self) -> &'static str {
        match self {
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
            Interval::Year => "year",
        }
    }

    /// Start of period `k` of an agreement anchored at `anchor`.
    pub fn period_start(self, anchor: Timestamp, k: i64) -> Timestamp {
        match self {
            Interval::Day => anchor + SignedDuration::from_hours(24 * k),
            Interval::Week => anchor + SignedDuration::from_hours(24 * 7 * k),
            Interval::Month => add_calendar(anchor, Span::new().months(k)),
            Interval::Year => add_calendar(anchor, Span::new().years(k)),
        }
    }

    /// Period `k` of an agreement anchored at `anchor`.
    pub fn period(self, anchor: Timestamp, k: i64) -> Period {
        Period {
            start: self.period_start(anchor, k),
            end: self.period_start(anchor, k + 1),
        }
    }

    /// The period containing `at`; instants before the anchor fall in period 0.
    pub fn period_containing(self, anchor: Timestamp, at: Timestamp) -> Period {
        self.period(anchor, self.index_containing(anchor, at))
    }

    /// The index k of the period containing `at` (0 for instants before the anchor).
    pub fn index_containing(self, anchor: Timestamp, at: Timestamp) -> i64 {
        if at <= anchor {
            return 0;
        }
        let elapsed = at.duration_since(anchor);
        let mut k = match self {
            Interval::Day => elapsed.as_secs() / (24 * 3600),
            Interval::Week => elapsed.as_secs() / (7 * 24 * 3600),
            Interval::Month | Interval::Year => {
                let (a, t) = (utc(anchor), utc(at));
                let months = i64::from(t.year() - a.year()) * 12 + i64::from(t.month() - a.month());
                if self == Interval::Month {
                    months
                } else {
                    months / 12
                }
            }
        };
        // The estimate is off by at most one either way; settle it exactly.
        while k > 0 && self.period_start(anchor, k) > at {
            k -= 1;
        }
        while self.period_start(anchor, k + 1) <= at {
            k += 1;
        }
        k
    }
}

fn utc(at: Timestamp) -> DateTime {
    at.to_zoned(TimeZone::UTC).datetime()
}

fn add_calendar(anchor: Timestamp, span: Span) -> Timestamp {
    // Clamping to the month's last day is jiff's rule for adding months and years
    // to a civil date-time; UTC has no gaps, so the conversion back cannot fail for
    // the instants an agreement can have.
    let civil = utc(anchor)
        .checked_add(span)
        .expect("billing period beyond the year 9999");
    civil
        .to_zoned(TimeZone::UTC)
        .expect("UTC conversion of an in-range civil time")
        .timestamp()
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown interval name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("interval must be one of day, week, month, year (got {0:?})")]
pub struct UnknownInterval(pub String);

impl FromStr for Interval {
    type Err = UnknownInterval;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "day" => Ok(Interval::Day),
            "week" => Ok(Interval::Week),
            "month" => Ok(Interval::Month),
            "year" => Ok(Interval::Year),
            other => Err(UnknownInterval(other.to_owned())),
        }
    }
}

/// A billing period `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Period {
    /// First instant of the period.
    pub start: Timestamp,
    /// First instant after the period.
    pub end: Timestamp,
}

impl Period {
    /// Whether `at` lies in the period.
    pub fn contains(&self, at: Timestamp) -> bool {
        self.start <= at && at < self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn month_end_anchor_clamps_per_month_not_cumulatively() {
        let anchor = t("2023-01-31T10:00:00Z");
        let starts: Vec<String> = (0..5)
            .map(|k| Interval::Month.period_start(anchor, k).to_string())
            .collect();
        assert_eq!(
            starts,
            [
                "2023-01-31T10:00:00Z",
                "2023-02-28T10:00:00Z",
                "2023-03-31T10:00:00Z",
                "2023-04-30T10:00:00Z",
                "2023-05-31T10:00:00Z"
            ]
        );
        // Leap year.
        let anchor = t("2024-01-31T00:00:00Z");
        assert_eq!(
            Interval::Month.period_start(anchor, 1),
            t("2024-02-29T00:00:00Z")
        );
    }

    #[test]
    fn leap_day_anchor_on_yearly_plans() {
        let anchor = t("2024-02-29T12:00:00Z");
        assert_eq!(
            Interval::Year.period_start(anchor, 1),
            t("2025-02-28T12:00:00Z")
        );
        assert_eq!(
            Interval::Year.period_start(anchor, 4),
            t("2028-02-29T12:00:00Z")
        );
        let p = Interval::Year.period_containing(anchor, t("2025-03-01T00:00:00Z"));
        assert_eq!(p.start, t("2025-02-28T12:00:00Z"));
        assert_eq!(p.end, t("2026-02-28T12:00:00Z"));
    }

    #[test]
    fn day_and_week_periods() {
        let anchor = t("2024-05-01T08:30:00Z");
        let p = Interval::Day.period_containing(anchor, t("2024-05-03T08:29:59Z"));
        assert_eq!(
            (p.start, p.end),
            (t("2024-05-02T08:30:00Z"), t("2024-05-03T08:30:00Z"))
        );
        let p = Interval::Week.period_containing(anchor, t("2024-05-08T08:30:00Z"));
        assert_eq!(p.start, t("2024-05-08T08:30:00Z"));
    }

    #[test]
    fn before_the_anchor_is_period_zero() {
        let anchor = t("2024-05-01T08:30:00Z");
        assert_eq!(
            Interval::Month.index_containing(anchor, t("2020-01-01T00:00:00Z")),
            0
        );
    }

    proptest! {
        #[test]
        fn the_containing_period_contains(
            anchor_s in 946_684_800i64..4_102_444_800,
            offset_s in 0i64..400_000_000,
            which in 0usize..4,
        ) {
            let interval = [Interval::Day, Interval::Week, Interval::Month, Interval::Year][which];
            let anchor = Timestamp::from_second(anchor_s).unwrap();
            let at = Timestamp::from_second(anchor_s + offset_s).unwrap();
            let k = interval.index_containing(anchor, at);
            let p = interval.period(anchor, k);
            prop_assert!(p.contains(at), "{interval} {anchor} {at} {p:?}");
            prop_assert!(p.start < p.end);
            // Periods tile: the next one starts where this one ends.
            prop_assert_eq!(interval.period(anchor, k + 1).start, p.end);
        }
    }
}
