//! Exact decimal arithmetic on Kinde's `meter_value` strings, for coalescing
//! deltas in the [`UsageReporter`](crate::UsageReporter).
//!
//! A value is what the wire accepts: 1 to 18 digits, optionally `.` and 1 to 9
//! digits, no sign or exponent. It is held as an integer count of 10⁻⁹ units in
//! a `u128`, so addition is exact; a sum that would no longer fit the wire format
//! (19 integer digits) is refused, never rounded. Floating point is never used.

use std::fmt;

use serde::{Deserialize, Serialize};

/// 10⁹: units per 1.
const SCALE: u128 = 1_000_000_000;
/// The largest value the wire accepts: 18 nines, `.`, 9 nines.
const MAX: u128 = 1_000_000_000_000_000_000 * SCALE - 1;
const MAX_INTEGER_DIGITS: usize = 18;
const MAX_FRACTION_DIGITS: usize = 9;

/// A non-negative decimal with at most 18 integer and 9 fractional digits,
/// written as its canonical string (in JSON too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub(crate) struct Decimal(u128);

impl From<Decimal> for String {
    fn from(value: Decimal) -> String {
        value.to_string()
    }
}

impl TryFrom<String> for Decimal {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Decimal::parse(&text).ok_or_else(|| format!("{text:?} is not a meter value"))
    }
}

impl Decimal {
    /// Parses the wire format; `None` for anything the server would reject
    /// with `INVALID_METER_VALUE`.
    pub(crate) fn parse(text: &str) -> Option<Decimal> {
        let (integer, fraction) = match text.split_once('.') {
            Some((integer, fraction)) => (integer, Some(fraction)),
            None => (text, None),
        };
        let digits = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
        };
        if !digits(integer, MAX_INTEGER_DIGITS) {
            return None;
        }
        let mut units = integer.parse::<u128>().ok()? * SCALE;
        if let Some(fraction) = fraction {
            if !digits(fraction, MAX_FRACTION_DIGITS) {
                return None;
            }
            let padding = MAX_FRACTION_DIGITS - fraction.len();
            units += fraction.parse::<u128>().ok()? * 10u128.pow(padding as u32);
        }
        Some(Decimal(units))
    }

    /// `self + other`, or `None` if the sum has more than 18 integer digits.
    pub(crate) fn checked_add(self, other: Decimal) -> Option<Decimal> {
        let sum = self.0.checked_add(other.0)?;
        (sum <= MAX).then_some(Decimal(sum))
    }
}

impl fmt::Display for Decimal {
    /// The canonical form: no leading zeros, no trailing fractional zeros.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let integer = self.0 / SCALE;
        let fraction = self.0 % SCALE;
        if fraction == 0 {
            return write!(f, "{integer}");
        }
        let fraction = format!("{fraction:09}");
        write!(f, "{integer}.{}", fraction.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap_or_else(|| panic!("{text} should parse"))
    }

    #[test]
    fn parses_what_the_wire_accepts() {
        for good in [
            "0",
            "12",
            "007",
            "0.5",
            "1500.000000001",
            "999999999999999999.999999999",
        ] {
            assert!(Decimal::parse(good).is_some(), "{good}");
        }
        for bad in [
            "",
            "-1",
            "+1",
            "1e3",
            ".5",
            "5.",
            " 1",
            "1 ",
            "1.0000000001",
            "1,5",
            "1000000000000000000",
            "0x10",
            "١",
        ] {
            assert!(Decimal::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn displays_canonically() {
        assert_eq!(d("007").to_string(), "7");
        assert_eq!(d("100.2500").to_string(), "100.25");
        assert_eq!(d("0.000001").to_string(), "0.000001");
        assert_eq!(d("0").to_string(), "0");
        assert_eq!(d("0.0").to_string(), "0");
    }

    #[test]
    fn adds_exactly() {
        assert_eq!(d("0.1").checked_add(d("0.2")).unwrap().to_string(), "0.3");
        assert_eq!(
            d("1500.000000001")
                .checked_add(d("0.999999999"))
                .unwrap()
                .to_string(),
            "1501"
        );
        let mut sum = Decimal::default();
        for _ in 0..1000 {
            sum = sum.checked_add(d("0.001")).unwrap();
        }
        assert_eq!(sum.to_string(), "1");
    }

    #[test]
    fn refuses_sums_the_wire_cannot_carry() {
        let max = d("999999999999999999.999999999");
        assert_eq!(max.checked_add(d("0")), Some(max));
        assert_eq!(max.checked_add(d("0.000000001")), None);
        assert_eq!(
            d("500000000000000000").checked_add(d("500000000000000000")),
            None
        );
    }
}
