//! The usage of one (agreement, feature, period), maintained on write: [`fold`]
//! is the delta/absolute rule written plainly (docs/billing.md#usage-of-a-period),
//! [`AggregateState`] the same answer kept incrementally
//! (docs/design.md#incremental-aggregation).

use jiff::Timestamp;

use crate::value::{MeterValue, OutOfRange, UsageTotal};

pub use kinde_meter_wire::MeterTypeCode as MeterType;

/// A record's place in its period's order: effective time, then arrival sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderKey {
    /// When the record counts (see [`crate::assignment`]).
    pub effective_at: Timestamp,
    /// Arrival sequence, increasing across the whole store.
    pub seq: i64,
}

/// One record as the aggregate sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Where it sits in the order.
    pub key: OrderKey,
    /// Delta or absolute.
    pub meter_type: MeterType,
    /// Its value.
    pub value: MeterValue,
    /// When it was received.
    pub received_at: Timestamp,
}

/// The maintained state of one (agreement, feature, period).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AggregateState {
    /// The latest absolute in order, if any.
    pub latest_absolute: Option<(OrderKey, MeterValue)>,
    /// The sum of the deltas ordered after `latest_absolute` (all deltas without one).
    pub deltas_after: UsageTotal,
    /// Records assigned to the period, whether or not they changed the value.
    pub record_count: u64,
    /// When the latest of them was received.
    pub last_recorded_at: Option<Timestamp>,
}

/// Why a record could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError<E> {
    /// The usage would pass 10^27: the record is refused.
    #[error("usage total out of range")]
    OutOfRange,
    /// The store could not sum the deltas after a late absolute.
    #[error(transparent)]
    Source(E),
}

impl From<OutOfRange> for ApplyError<std::convert::Infallible> {
    fn from(_: OutOfRange) -> Self {
        ApplyError::OutOfRange
    }
}

impl AggregateState {
    /// The usage: the latest absolute plus the deltas after it.
    pub fn value(&self) -> UsageTotal {
        let base = self
            .latest_absolute
            .map_or(UsageTotal::ZERO, |(_, v)| UsageTotal::from_value(v));
        // `apply` never builds a state whose value is out of range.
        base.checked_add_total(self.deltas_after)
            .unwrap_or(UsageTotal::MAX)
    }

    /// The state after `entry`. `deltas_after(key)` must return the sum of the
    /// period's deltas ordered after `key` (it is called only for an absolute that
    /// becomes the latest while deltas may follow it). A state whose value would
    /// pass 10^27 is refused and `self` stays valid.
    pub fn apply<E>(
        &self,
        entry: Entry,
        deltas_after: impl FnOnce(OrderKey) -> Result<UsageTotal, E>,
    ) -> Result<AggregateState, ApplyError<E>> {
        let mut next = AggregateState {
            record_count: self.record_count + 1,
            last_recorded_at: Some(
                self.last_recorded_at
                    .map_or(entry.received_at, |at| at.max(entry.received_at)),
            ),
            ..*self
        };
        let after_latest = self
            .latest_absolute
            .is_none_or(|(latest, _)| entry.key > latest);
        match entry.meter_type {
            MeterType::Delta if after_latest => {
                next.deltas_after = self
                    .deltas_after
                    .checked_add(entry.value)
                    .map_err(|_| ApplyError::OutOfRange)?;
            }
            MeterType::Delta => {}
            MeterType::Absolute if after_latest => {
                next.latest_absolute = Some((entry.key, entry.value));
                next.deltas_after = deltas_after(entry.key).map_err(ApplyError::Source)?;
            }
            MeterType::Absolute => {}
        }
        UsageTotal::from_value(next.latest_absolute.map_or(MeterValue::ZERO, |(_, v)| v))
            .checked_add_total(next.deltas_after)
            .map_err(|_| ApplyError::OutOfRange)?;
        Ok(next)
    }
}

/// The rule of docs/billing.md#usage-of-a-period written plainly: sort by order key and fold. The reference
/// the incremental [`AggregateState`] is tested against.
pub fn fold(entries: &[Entry]) -> Result<UsageTotal, OutOfRange> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by_key(|e| e.key);
    let mut value = UsageTotal::ZERO;
    for entry in sorted {
        value = match entry.meter_type {
            MeterType::Delta => value.checked_add(entry.value)?,
            MeterType::Absolute => UsageTotal::from_value(entry.value),
        };
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::convert::Infallible;

    fn entry(at_s: i64, seq: i64, meter_type: MeterType, value: &str) -> Entry {
        Entry {
            key: OrderKey {
                effective_at: Timestamp::from_second(at_s).unwrap(),
                seq,
            },
            meter_type,
            value: MeterValue::parse(value).unwrap(),
            received_at: Timestamp::from_second(1_000_000 + seq).unwrap(),
        }
    }

    /// Applies entries in arrival order, answering `deltas_after` from the entries
    /// applied so far, as the store does.
    fn incremental(entries: &[Entry]) -> AggregateState {
        let mut state = AggregateState::default();
        for (i, e) in entries.iter().enumerate() {
            let seen = &entries[..i];
            let next = state.apply(*e, |key| {
                let mut sum = UsageTotal::ZERO;
                for d in seen
                    .iter()
                    .filter(|d| d.meter_type == MeterType::Delta && d.key > key)
                {
                    sum = sum.checked_add(d.value).unwrap();
                }
                Ok::<_, Infallible>(sum)
            });
            state = next.unwrap();
        }
        state
    }

    #[test]
    fn absolute_then_older_delta_changes_nothing() {
        let es = [
            entry(100, 1, MeterType::Absolute, "50"),
            entry(90, 2, MeterType::Delta, "7"),
        ];
        assert_eq!(incremental(&es).value().to_string(), "50");
        assert_eq!(incremental(&es).record_count, 2);
    }

    #[test]
    fn delta_then_absolute_overrides() {
        let es = [
            entry(100, 1, MeterType::Delta, "10"),
            entry(110, 2, MeterType::Absolute, "3"),
            entry(120, 3, MeterType::Delta, "0.5"),
        ];
        assert_eq!(incremental(&es).value().to_string(), "3.5");
    }

    #[test]
    fn late_absolute_keeps_the_deltas_after_it() {
        let es = [
            entry(100, 1, MeterType::Delta, "10"),
            entry(300, 2, MeterType::Delta, "5"),
            entry(200, 3, MeterType::Absolute, "100"),
        ];
        assert_eq!(incremental(&es).value().to_string(), "105");
    }

    #[test]
    fn ties_are_broken_by_arrival() {
        let es = [
            entry(100, 1, MeterType::Delta, "4"),
            entry(100, 2, MeterType::Absolute, "1"),
        ];
        assert_eq!(incremental(&es).value().to_string(), "1");
        let es = [
            entry(100, 1, MeterType::Absolute, "1"),
            entry(100, 2, MeterType::Delta, "4"),
        ];
        assert_eq!(incremental(&es).value().to_string(), "5");
    }

    #[test]
    fn a_total_beyond_ten_to_the_27_is_refused() {
        let max = "999999999999999999.999999999";
        let mut state = AggregateState::default();
        let mut seq = 0;
        // 10^9 such values would pass 10^27; start from an absolute near the top.
        state = state
            .apply(entry(1, 0, MeterType::Absolute, max), |_| {
                Ok::<_, Infallible>(UsageTotal::ZERO)
            })
            .unwrap();
        let big = UsageTotal::parse("999999999000000000000000000").unwrap();
        state.deltas_after = big;
        while seq < 3 {
            seq += 1;
            let r = state.apply(entry(2, seq, MeterType::Delta, max), |_| {
                Ok::<_, Infallible>(UsageTotal::ZERO)
            });
            match r {
                Ok(next) => state = next,
                Err(ApplyError::OutOfRange) => return,
                Err(ApplyError::Source(never)) => match never {},
            }
        }
        panic!(
            "expected the total to run out of range, got {}",
            state.value()
        );
    }

    fn arb_entries() -> impl Strategy<Value = Vec<Entry>> {
        prop::collection::vec((0i64..20, any::<bool>(), 0u32..1000, 0u32..3), 0..40).prop_map(
            |raw| {
                raw.into_iter()
                    .enumerate()
                    .map(|(seq, (at, abs, int, frac))| {
                        let value = format!("{int}.{}", ["0", "5", "25"][frac as usize]);
                        let t = if abs {
                            MeterType::Absolute
                        } else {
                            MeterType::Delta
                        };
                        entry(at, seq as i64, t, &value)
                    })
                    .collect()
            },
        )
    }

    proptest! {
        #[test]
        fn incremental_equals_the_reference_fold(entries in arb_entries()) {
            let state = incremental(&entries);
            prop_assert_eq!(state.value(), fold(&entries).unwrap());
            prop_assert_eq!(state.record_count, entries.len() as u64);
        }
    }
}
