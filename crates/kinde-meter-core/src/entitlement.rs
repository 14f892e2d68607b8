//! Entitlements: may a customer use more of a feature, may a record be stored
//! under a hard limit, and which thresholds a change of usage crosses
//! (docs/api.md, entitlements; docs/billing.md).
//!
//! Pure functions of a feature's catalog terms and usage totals the caller reads.
//! The stores decide hard limits with [`admit`] inside their commit, on the
//! aggregate states before and after the record, so the decision is taken in
//! commit order. All arithmetic is exact, in the 10⁻⁹ units of [`UsageTotal`].

use std::fmt;

use crate::aggregate::AggregateState;
use crate::catalog::Feature;
use crate::value::{MeterValue, SCALE_DIGITS, UsageTotal};

/// Units of [`UsageTotal::units`] per 1.
const SCALE: u128 = 10u128.pow(SCALE_DIGITS);

/// The answer to "may this customer use `quantity` more of this feature now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// The feature is on the customer's active plan and, for a metered feature
    /// with a limit, `consumed + quantity ≤ limit_max`.
    pub allowed: bool,
    /// The feature's `limit_max`; `None` when unlimited or not entitled.
    pub limit_max: Option<i64>,
    /// The current period's usage.
    pub consumed: UsageTotal,
    /// `max(limit_max − consumed, 0)`; `None` when the feature is on the plan
    /// without a limit; zero when it is not on the plan at all.
    pub remaining: Option<UsageTotal>,
}

/// Answers the usage check. `feature` is the feature as the customer's active
/// plan has it, `None` when there is no active agreement or the plan lacks the
/// feature; `consumed` is the current period's usage (zero for a feature that is
/// not metered).
pub fn check(feature: Option<&Feature>, consumed: UsageTotal, quantity: MeterValue) -> Check {
    let Some(feature) = feature else {
        return Check {
            allowed: false,
            limit_max: None,
            consumed,
            remaining: Some(UsageTotal::ZERO),
        };
    };
    let limit_max = feature.limit_max.filter(|_| feature.metered);
    let Some(limit) = limit_max else {
        return Check {
            allowed: true,
            limit_max: None,
            consumed,
            remaining: None,
        };
    };
    let allowed = consumed
        .checked_add(quantity)
        .is_ok_and(|wanted| wanted.units() <= limit_units(limit));
    Check {
        allowed,
        limit_max,
        consumed,
        remaining: Some(remaining(limit, consumed)),
    }
}

/// `max(limit_max − consumed, 0)`, exact.
pub fn remaining(limit_max: i64, consumed: UsageTotal) -> UsageTotal {
    total_from_units(limit_units(limit_max).saturating_sub(consumed.units()))
}

/// A record refused because it would take the period's usage beyond a feature's
/// enforced `limit_max` (`ENTITLEMENT_LIMIT_EXCEEDED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitExceeded {
    /// The enforced limit.
    pub limit_max: i64,
    /// The usage the record would have left.
    pub usage: UsageTotal,
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the record would take the period's usage to {}, beyond the entitlement limit of {}",
            self.usage, self.limit_max
        )
    }
}

impl std::error::Error for LimitExceeded {}

/// A period's usage before and after a record, as [`admit`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageChange {
    /// The usage before the record.
    pub before: UsageTotal,
    /// The usage with the record.
    pub after: UsageTotal,
}

impl UsageChange {
    /// The thresholds of `feature` this change crosses, ascending (see
    /// [`crossed_thresholds`]).
    pub fn crossed_thresholds(&self, feature: &Feature) -> Vec<u8> {
        match feature.limit_max.filter(|_| feature.metered) {
            Some(limit) => crossed_thresholds(&feature.thresholds, limit, self.before, self.after),
            None => Vec::new(),
        }
    }
}

/// The hard-limit decision for one record, taken by a store inside its commit:
/// `before` is the period's aggregate state as committed so far (including the
/// batch's earlier records), `after` what [`AggregateState::apply`] made of it
/// with the record. See [`check_hard_limit`] for the rule.
pub fn admit(
    feature: &Feature,
    before: &AggregateState,
    after: &AggregateState,
) -> Result<UsageChange, LimitExceeded> {
    let change = UsageChange {
        before: before.value(),
        after: after.value(),
    };
    check_hard_limit(feature, change.before, change.after)?;
    Ok(change)
}

/// Refuses a record that takes the usage from `before` to `after` iff the feature
/// enforces its limit, `after` passes it, and the record raises the usage.
///
/// The last condition only matters when the usage is already beyond the limit,
/// which happens only when a catalog lowered the limit under existing usage: a
/// record that lowers the usage (an absolute) or leaves it as it is (a zero delta,
/// a delta ordered before the latest absolute) does not take the usage beyond the
/// limit, so it is stored. Otherwise `before ≤ limit` and the rule is simply
/// `after ≤ limit`.
pub fn check_hard_limit(
    feature: &Feature,
    before: UsageTotal,
    after: UsageTotal,
) -> Result<(), LimitExceeded> {
    match feature.hard_limit() {
        Some(limit) if after.units() > limit_units(limit) && after > before => Err(LimitExceeded {
            limit_max: limit,
            usage: after,
        }),
        _ => Ok(()),
    }
}

/// The thresholds (percents of `limit_max`) that a change of usage from `before`
/// to `after` crosses, ascending: `t` is crossed when `before < t% × limit_max ≤
/// after`, so one jump may cross several and a fall crosses none. With a
/// `limit_max` of 0 no threshold is ever crossed (usage is never below 0).
pub fn crossed_thresholds(
    thresholds: &[u8],
    limit_max: i64,
    before: UsageTotal,
    after: UsageTotal,
) -> Vec<u8> {
    // `usage ≥ t% × limit` ⇔ `usage × 100 ≥ t × limit`, in units. Usage is at most
    // 10^36 units, so `× 100` stays below u128::MAX (≈ 3.4 × 10^38).
    let limit = limit_units(limit_max);
    let reached = |usage: UsageTotal, t: u8| usage.units() * 100 >= u128::from(t) * limit;
    let mut crossed: Vec<u8> = thresholds
        .iter()
        .copied()
        .filter(|&t| !reached(before, t) && reached(after, t))
        .collect();
    crossed.sort_unstable();
    crossed.dedup();
    crossed
}

/// A limit in units (a negative one, which the catalog refuses, counts as 0).
fn limit_units(limit_max: i64) -> u128 {
    u128::from(u64::try_from(limit_max).unwrap_or(0)) * SCALE
}

/// The total of `units` (at most a limit's, so always in range).
fn total_from_units(units: u128) -> UsageTotal {
    UsageTotal::from_units(units).expect("a limit's units are a valid total")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Entry, MeterType, OrderKey, fold};
    use crate::ids::FeatureCode;
    use jiff::Timestamp;
    use proptest::prelude::*;
    use std::convert::Infallible;

    fn feature(limit_max: Option<i64>, enforce_limit: bool) -> Feature {
        Feature {
            code: FeatureCode::parse("api_calls").unwrap(),
            name: "API calls".to_owned(),
            metered: true,
            price_name: None,
            unit_amount: None,
            fixed_charge: None,
            limit_max,
            limit_min: None,
            enforce_limit,
            thresholds: vec![50, 80, 100],
        }
    }

    fn total(s: &str) -> UsageTotal {
        UsageTotal::parse(s).unwrap()
    }

    fn value(s: &str) -> MeterValue {
        MeterValue::parse(s).unwrap()
    }

    #[test]
    fn check_allows_up_to_the_limit_exactly() {
        let f = feature(Some(1000), false);
        let c = check(Some(&f), total("999.5"), value("0.5"));
        assert_eq!(
            c,
            Check {
                allowed: true,
                limit_max: Some(1000),
                consumed: total("999.5"),
                remaining: Some(total("0.5")),
            }
        );
        let c = check(Some(&f), total("999.5"), value("0.500000001"));
        assert!(!c.allowed);
        assert_eq!(c.remaining, Some(total("0.5")));

        let c = check(Some(&f), total("1523.5"), value("0"));
        assert!(!c.allowed);
        assert_eq!(c.remaining, Some(UsageTotal::ZERO));
    }

    #[test]
    fn check_without_a_limit_or_without_the_feature() {
        let unlimited = feature(None, false);
        let c = check(Some(&unlimited), UsageTotal::MAX, value("1"));
        assert!(c.allowed, "unlimited: the sum's range does not matter");
        assert_eq!((c.limit_max, c.remaining), (None, None));

        let mut sso = feature(None, false);
        sso.metered = false;
        sso.thresholds.clear();
        assert!(check(Some(&sso), UsageTotal::ZERO, value("5")).allowed);

        let c = check(None, UsageTotal::ZERO, value("1"));
        assert!(!c.allowed);
        assert_eq!((c.limit_max, c.remaining), (None, Some(UsageTotal::ZERO)));
    }

    #[test]
    fn check_near_the_top_of_the_range_does_not_overflow() {
        let f = feature(Some(i64::MAX), false);
        let c = check(
            Some(&f),
            UsageTotal::MAX,
            value("999999999999999999.999999999"),
        );
        assert!(!c.allowed);
        assert_eq!(c.remaining, Some(UsageTotal::ZERO));
        let c = check(
            Some(&f),
            UsageTotal::ZERO,
            value("999999999999999999.999999999"),
        );
        assert!(c.allowed);
        assert_eq!(c.remaining, Some(total(&i64::MAX.to_string())));
    }

    #[test]
    fn the_hard_limit_refuses_only_what_passes_an_enforced_limit() {
        let enforced = feature(Some(100), true);
        assert_eq!(
            check_hard_limit(&enforced, total("99"), total("100")),
            Ok(())
        );
        assert_eq!(
            check_hard_limit(&enforced, total("99"), total("100.000000001")),
            Err(LimitExceeded {
                limit_max: 100,
                usage: total("100.000000001")
            })
        );
        // Not enforced: recorded beyond the limit, as in Kinde.
        assert_eq!(
            check_hard_limit(&feature(Some(100), false), total("99"), total("500")),
            Ok(())
        );
        // Already beyond a lowered limit: what does not raise the usage passes.
        assert_eq!(
            check_hard_limit(&enforced, total("150"), total("120")),
            Ok(())
        );
        assert_eq!(
            check_hard_limit(&enforced, total("150"), total("150")),
            Ok(())
        );
        assert!(check_hard_limit(&enforced, total("150"), total("151")).is_err());
        // A limit of 0 admits only records that leave the usage at 0.
        let zero = feature(Some(0), true);
        assert_eq!(check_hard_limit(&zero, total("0"), total("0")), Ok(()));
        assert!(check_hard_limit(&zero, total("0"), total("0.000000001")).is_err());
    }

    #[test]
    fn thresholds_crossed_by_one_change() {
        let t = [50, 80, 100];
        let crossed = |b: &str, a: &str| crossed_thresholds(&t, 1000, total(b), total(a));
        assert_eq!(crossed("0", "499.999999999"), Vec::<u8>::new());
        assert_eq!(crossed("0", "500"), [50]);
        assert_eq!(crossed("500", "799"), Vec::<u8>::new());
        assert_eq!(crossed("499", "1000"), [50, 80, 100]);
        assert_eq!(crossed("800", "5000"), [100]);
        assert_eq!(crossed("900", "100"), Vec::<u8>::new());
        // Exact: 1% of 3 is 0.03.
        assert_eq!(
            crossed_thresholds(&[1], 3, total("0.029999999"), total("0.03")),
            [1]
        );
        assert_eq!(
            crossed_thresholds(&[80, 100], 0, total("0"), total("7")),
            Vec::<u8>::new()
        );
        let change = UsageChange {
            before: total("0"),
            after: total("2000"),
        };
        assert_eq!(
            change.crossed_thresholds(&feature(Some(1000), false)),
            [50, 80, 100]
        );
        assert!(change.crossed_thresholds(&feature(None, false)).is_empty());
    }

    fn entry(seq: i64, at: i64, meter_type: MeterType, value: MeterValue) -> Entry {
        Entry {
            key: OrderKey {
                effective_at: Timestamp::from_second(at).unwrap(),
                seq,
            },
            meter_type,
            value,
            received_at: Timestamp::from_second(1_000_000 + seq).unwrap(),
        }
    }

    /// Applies records in arrival order as a store does, refusing those [`admit`]
    /// refuses; returns the final state and the stored entries.
    fn commit_all(f: &Feature, records: &[Entry]) -> (AggregateState, Vec<Entry>) {
        let mut state = AggregateState::default();
        let mut stored: Vec<Entry> = Vec::new();
        for e in records {
            let next = state
                .apply(*e, |key| {
                    let mut sum = UsageTotal::ZERO;
                    for d in stored
                        .iter()
                        .filter(|d| d.meter_type == MeterType::Delta && d.key > key)
                    {
                        sum = sum.checked_add(d.value).unwrap();
                    }
                    Ok::<_, Infallible>(sum)
                })
                .unwrap();
            if admit(f, &state, &next).is_ok() {
                state = next;
                stored.push(*e);
            }
        }
        (state, stored)
    }

    fn arb_value() -> impl Strategy<Value = MeterValue> {
        (
            0u32..300,
            prop_oneof![Just(0u32), Just(5), Just(250_000_000), 0u32..1_000_000_000],
        )
            .prop_map(|(int, frac)| MeterValue::parse(&format!("{int}.{frac:09}")).unwrap())
    }

    fn arb_total() -> impl Strategy<Value = UsageTotal> {
        (0u64..5_000, 0u32..1_000_000_000)
            .prop_map(|(int, frac)| UsageTotal::parse(&format!("{int}.{frac:09}")).unwrap())
    }

    fn arb_records() -> impl Strategy<Value = Vec<Entry>> {
        prop::collection::vec((0i64..10, any::<bool>(), arb_value()), 0..40).prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(seq, (at, absolute, v))| {
                    let t = if absolute {
                        MeterType::Absolute
                    } else {
                        MeterType::Delta
                    };
                    entry(seq as i64, at, t, v)
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn check_matches_the_rule_in_units(
            limit in 0i64..4_000,
            consumed in arb_total(),
            quantity in arb_value(),
        ) {
            let f = feature(Some(limit), false);
            let c = check(Some(&f), consumed, quantity);
            let limit_u = u128::try_from(limit).unwrap() * SCALE;
            prop_assert_eq!(c.allowed, consumed.units() + quantity.units() <= limit_u);
            prop_assert_eq!(
                c.remaining.unwrap().units(),
                limit_u.saturating_sub(consumed.units())
            );
            prop_assert_eq!(c.consumed, consumed);
        }

        /// However records arrive, an enforced limit is never passed, every stored
        /// record keeps the usage within it, and a record is refused only when
        /// storing it would pass the limit.
        #[test]
        fn an_enforced_limit_is_never_overshot(limit in 0i64..2_000, records in arb_records()) {
            let f = feature(Some(limit), true);
            let limit_u = u128::try_from(limit).unwrap() * SCALE;
            let (state, stored) = commit_all(&f, &records);
            prop_assert!(state.value().units() <= limit_u);
            prop_assert_eq!(state.value(), fold(&stored).unwrap());
            // Every refused record, had it been stored at its moment, would have
            // taken the usage beyond the limit.
            let mut so_far: Vec<Entry> = Vec::new();
            for e in &records {
                let stored_now = stored.iter().any(|s| s.key == e.key);
                let mut with = so_far.clone();
                with.push(*e);
                let would_be = fold(&with).unwrap();
                prop_assert_eq!(!stored_now, would_be.units() > limit_u);
                if stored_now {
                    so_far = with;
                }
            }
        }

        #[test]
        fn without_enforcement_everything_is_stored(limit in 0i64..2_000, records in arb_records()) {
            let (state, stored) = commit_all(&feature(Some(limit), false), &records);
            prop_assert_eq!(stored.len(), records.len());
            prop_assert_eq!(state.value(), fold(&records).unwrap());
        }

        #[test]
        fn crossings_follow_the_definition(
            thresholds in prop::collection::vec(1u8..=100, 0..6),
            limit in 0i64..3_000,
            before in arb_total(),
            after in arb_total(),
        ) {
            let crossed = crossed_thresholds(&thresholds, limit, before, after);
            let limit_u = u128::try_from(limit).unwrap() * SCALE;
            for t in 1u8..=100 {
                // t% of the limit, as a fraction of units: limit_u × t / 100.
                let at = |u: UsageTotal| u.units() * 100 >= limit_u * u128::from(t);
                let expected = thresholds.contains(&t) && !at(before) && at(after);
                prop_assert_eq!(crossed.contains(&t), expected, "threshold {}", t);
            }
            prop_assert!(crossed.windows(2).all(|w| w[0] < w[1]));
        }

        /// A rise split in two steps crosses the same thresholds as in one.
        #[test]
        fn crossings_of_a_rise_add_up(
            limit in 1i64..3_000,
            mut steps in prop::collection::vec(arb_total(), 3),
        ) {
            steps.sort();
            let t = [1, 25, 50, 80, 99, 100];
            let mut two = crossed_thresholds(&t, limit, steps[0], steps[1]);
            two.extend(crossed_thresholds(&t, limit, steps[1], steps[2]));
            prop_assert_eq!(two, crossed_thresholds(&t, limit, steps[0], steps[2]));
        }
    }
}
