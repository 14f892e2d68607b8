//! Exact meter values and usage totals (SPEC §2).
//!
//! Both are fixed-point numbers with nine fractional digits held in a `u128` count
//! of 10⁻⁹ units. Why not `rust_decimal`: its 96-bit mantissa holds 28 digits, and a
//! total of up to 10²⁷ with nine fractional digits needs 37. Why not a big-decimal
//! type: every value the contract admits fits in 128 bits, and a fixed scale makes
//! equality, ordering and canonical printing trivial and allocation-free.

use std::fmt;

/// Fractional digits kept: `meter_value` admits at most nine.
pub const SCALE_DIGITS: u32 = 9;
const SCALE: u128 = 10u128.pow(SCALE_DIGITS);
/// Largest total, in units: 10^27 (SPEC: "running totals are exact up to 10^27").
const MAX_TOTAL_UNITS: u128 = 10u128.pow(27) * SCALE;

/// A `meter_value` as sent by a client: non-negative, at most 18 integer digits and
/// 9 fractional digits. Only [`MeterValue::parse`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MeterValue(u128);

/// Why a `meter_value` string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "meter_value must be a non-negative decimal with 1-18 digits, optionally '.' and 1-9 digits (like \"12\" or \"0.5\")"
)]
pub struct InvalidMeterValue;

impl MeterValue {
    /// Zero.
    pub const ZERO: MeterValue = MeterValue(0);

    /// Parses the SPEC grammar `[0-9]{1,18}(\.[0-9]{1,9})?` exactly; nothing is
    /// rounded, trimmed or guessed.
    pub fn parse(s: &str) -> Result<MeterValue, InvalidMeterValue> {
        let (int, frac) = match s.split_once('.') {
            Some((int, frac)) => (int, Some(frac)),
            None => (s, None),
        };
        let digits = |part: &str, max: usize| {
            !part.is_empty() && part.len() <= max && part.bytes().all(|b| b.is_ascii_digit())
        };
        if !digits(int, 18) {
            return Err(InvalidMeterValue);
        }
        let mut units = int
            .bytes()
            .fold(0u128, |acc, b| acc * 10 + u128::from(b - b'0'))
            * SCALE;
        if let Some(frac) = frac {
            if !digits(frac, SCALE_DIGITS as usize) {
                return Err(InvalidMeterValue);
            }
            let mut f = frac
                .bytes()
                .fold(0u128, |acc, b| acc * 10 + u128::from(b - b'0'));
            for _ in frac.len()..SCALE_DIGITS as usize {
                f *= 10;
            }
            units += f;
        }
        Ok(MeterValue(units))
    }

    /// The value in 10⁻⁹ units.
    pub const fn units(self) -> u128 {
        self.0
    }
}

impl fmt::Display for MeterValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_canonical(self.0, f)
    }
}

/// A usage total of one (agreement, feature, period): `0 ≤ total ≤ 10^27`, exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UsageTotal(u128);

/// A total would pass 10^27.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the usage total would exceed 10^27")]
pub struct OutOfRange;

impl UsageTotal {
    /// Zero.
    pub const ZERO: UsageTotal = UsageTotal(0);

    /// The largest total the contract admits, 10^27.
    pub const MAX: UsageTotal = UsageTotal(MAX_TOTAL_UNITS);

    /// `self + value`, refused beyond 10^27.
    pub fn checked_add(self, value: MeterValue) -> Result<UsageTotal, OutOfRange> {
        self.checked_add_total(UsageTotal(value.0))
    }

    /// `self + other`, refused beyond 10^27.
    pub fn checked_add_total(self, other: UsageTotal) -> Result<UsageTotal, OutOfRange> {
        match self.0.checked_add(other.0) {
            Some(sum) if sum <= MAX_TOTAL_UNITS => Ok(UsageTotal(sum)),
            _ => Err(OutOfRange),
        }
    }

    /// A single meter value as a total (always in range).
    pub const fn from_value(value: MeterValue) -> UsageTotal {
        UsageTotal(value.0)
    }

    /// Parses a canonical or plain decimal string as stored by kinde-meter (up to 28
    /// integer digits, up to 9 fractional), refusing anything beyond 10^27.
    pub fn parse(s: &str) -> Result<UsageTotal, InvalidMeterValue> {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        let ok = |p: &str, max: usize| p.len() <= max && p.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !ok(int, 28) || !ok(frac, 9) || (s.contains('.') && frac.is_empty()) {
            return Err(InvalidMeterValue);
        }
        let mut units = int
            .bytes()
            .fold(0u128, |acc, b| acc * 10 + u128::from(b - b'0'))
            .checked_mul(SCALE)
            .ok_or(InvalidMeterValue)?;
        let mut f = frac
            .bytes()
            .fold(0u128, |acc, b| acc * 10 + u128::from(b - b'0'));
        for _ in frac.len()..SCALE_DIGITS as usize {
            f *= 10;
        }
        units += f;
        if units > MAX_TOTAL_UNITS {
            return Err(InvalidMeterValue);
        }
        Ok(UsageTotal(units))
    }

    /// The total in 10⁻⁹ units.
    pub const fn units(self) -> u128 {
        self.0
    }
}

impl fmt::Display for UsageTotal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_canonical(self.0, f)
    }
}

/// Canonical form: no exponent, no superfluous leading zeros, no trailing
/// fractional zeros (`"100"`, `"100.25"`, `"0.000001"`).
fn write_canonical(units: u128, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let int = units / SCALE;
    let frac = units % SCALE;
    if frac == 0 {
        return write!(f, "{int}");
    }
    let digits = format!("{frac:09}");
    write!(f, "{int}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_spec_examples_and_prints_them_canonically() {
        for (input, canonical) in [
            ("0", "0"),
            ("12", "12"),
            ("007", "7"),
            ("0.5", "0.5"),
            ("1500.000000001", "1500.000000001"),
            ("100.250", "100.25"),
            ("0.000001", "0.000001"),
            (
                "999999999999999999.999999999",
                "999999999999999999.999999999",
            ),
        ] {
            assert_eq!(
                MeterValue::parse(input).unwrap().to_string(),
                canonical,
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_everything_else() {
        for input in [
            "",
            "-1",
            "+1",
            "1e3",
            "1E3",
            " 1",
            "1 ",
            ".5",
            "5.",
            "0.1234567891",
            "1234567890123456789",
            "1,5",
            "0x10",
            "NaN",
            "inf",
            "1.2.3",
            "١",
            "1_000",
        ] {
            assert_eq!(
                MeterValue::parse(input),
                Err(InvalidMeterValue),
                "{input:?}"
            );
        }
    }

    #[test]
    fn totals_stop_at_ten_to_the_27() {
        let max = UsageTotal::parse("1000000000000000000000000000").unwrap();
        assert_eq!(max, UsageTotal::MAX);
        assert_eq!(max.checked_add(MeterValue::parse("0").unwrap()), Ok(max));
        assert_eq!(
            max.checked_add(MeterValue::parse("0.000000001").unwrap()),
            Err(OutOfRange)
        );
        assert!(UsageTotal::parse("1000000000000000000000000000.000000001").is_err());
    }

    proptest! {
        #[test]
        fn canonical_form_round_trips(int in 0u64..=999_999_999_999_999_999, frac in 0u32..1_000_000_000) {
            let text = format!("{int}.{frac:09}");
            let value = MeterValue::parse(&text).unwrap();
            let canonical = value.to_string();
            prop_assert_eq!(MeterValue::parse(&canonical).unwrap(), value);
            prop_assert!(!canonical.ends_with('0') || !canonical.contains('.'));
            prop_assert_eq!(UsageTotal::parse(&canonical).unwrap(), UsageTotal::from_value(value));
        }

        #[test]
        fn addition_is_exact(a in 0u64..=999_999_999_999_999_999, b in 0u64..=999_999_999_999_999_999) {
            let va = MeterValue::parse(&format!("0.{:09}", a % 1_000_000_000)).unwrap();
            let vb = MeterValue::parse(&b.to_string()).unwrap();
            let sum = UsageTotal::from_value(va).checked_add(vb).unwrap();
            prop_assert_eq!(sum.units(), va.units() + vb.units());
        }
    }
}
