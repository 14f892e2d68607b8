//! Period assignment: which period a record counts in, and at which effective
//! time (late usage goes to the current period, usage before the start to the
//! first; docs/billing.md#period-assignment).

use jiff::{SignedDuration, Timestamp};

use crate::period::{Interval, Period};

/// Where and when a record counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// The period the record counts in.
    pub period: Period,
    /// The record's place in that period's order (with its arrival sequence).
    pub effective_at: Timestamp,
    /// Whether the record was moved forward out of a closed period.
    pub rolled_forward: bool,
}

/// Assigns a record with timestamp `usage_at`, received at `received_at`, to a
/// period of an agreement anchored at `anchor`.
pub fn assign(
    anchor: Timestamp,
    interval: Interval,
    usage_at: Timestamp,
    received_at: Timestamp,
    grace: SignedDuration,
) -> Assignment {
    assign_with(
        |at| interval.period_containing(anchor, at),
        anchor,
        usage_at,
        received_at,
        grace,
    )
}

/// [`assign`], with the agreement's periods from `period_containing` (the
/// period from `anchor` that contains an instant not before it): a caller
/// that remembers periods (the SQLite writer) saves the calendar arithmetic.
pub fn assign_with(
    mut period_containing: impl FnMut(Timestamp) -> Period,
    anchor: Timestamp,
    usage_at: Timestamp,
    received_at: Timestamp,
    grace: SignedDuration,
) -> Assignment {
    let effective_at = usage_at.max(anchor);
    let period = period_containing(effective_at);
    if period.end + grace < received_at {
        // `received_at` is after the period's end, so not before the anchor.
        let current = period_containing(received_at);
        return Assignment {
            period: current,
            effective_at: current.start,
            rolled_forward: true,
        };
    }
    Assignment {
        period,
        effective_at,
        rolled_forward: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn usage_in_an_open_period_stays_there() {
        let a = assign(
            t("2024-01-15T00:00:00Z"),
            Interval::Month,
            t("2024-02-20T00:00:00Z"),
            t("2024-02-21T00:00:00Z"),
            SignedDuration::ZERO,
        );
        assert_eq!(a.period.start, t("2024-02-15T00:00:00Z"));
        assert_eq!(a.effective_at, t("2024-02-20T00:00:00Z"));
        assert!(!a.rolled_forward);
    }

    #[test]
    fn late_usage_rolls_into_the_current_period_at_its_start() {
        let a = assign(
            t("2024-01-15T00:00:00Z"),
            Interval::Month,
            t("2024-02-10T00:00:00Z"),
            t("2024-02-16T00:00:00Z"),
            SignedDuration::ZERO,
        );
        assert_eq!(a.period.start, t("2024-02-15T00:00:00Z"));
        assert_eq!(a.effective_at, t("2024-02-15T00:00:00Z"));
        assert!(a.rolled_forward);
    }

    #[test]
    fn grace_keeps_a_closed_period_open_a_little_longer() {
        let a = assign(
            t("2024-01-15T00:00:00Z"),
            Interval::Month,
            t("2024-02-10T00:00:00Z"),
            t("2024-02-16T00:00:00Z"),
            SignedDuration::from_hours(48),
        );
        assert_eq!(a.period.start, t("2024-01-15T00:00:00Z"));
        assert!(!a.rolled_forward);
    }

    #[test]
    fn before_the_agreement_counts_at_its_start() {
        let a = assign(
            t("2024-01-15T00:00:00Z"),
            Interval::Month,
            t("2023-12-01T00:00:00Z"),
            t("2024-01-20T00:00:00Z"),
            SignedDuration::ZERO,
        );
        assert_eq!(a.period.start, t("2024-01-15T00:00:00Z"));
        assert_eq!(a.effective_at, t("2024-01-15T00:00:00Z"));
    }
}
