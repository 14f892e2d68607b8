//! Exact `meter_value`s and usage totals: the one parser of the wire's decimal
//! strings, shared by the server (`kinde-meter-core`) and `kinde-sdk`.
//!
//! Both are fixed-point numbers with nine fractional digits held in a `u128`
//! count of 10⁻⁹ units, so arithmetic is exact and never floating point. Why not
//! `rust_decimal`: its 96-bit mantissa holds 28 digits, and a total of up to 10²⁷
//! with nine fractional digits needs 37. Why not a big-decimal type: every value
//! the contract admits fits in 128 bits, and a fixed scale makes equality,
//! ordering and canonical printing trivial and allocation-free.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Fractional digits kept: `meter_value` admits at most nine.
pub const SCALE_DIGITS: u32 = 9;
/// Units per 1.
const SCALE: u128 = 10u128.pow(SCALE_DIGITS);
const SCALE_U64: u64 = 10u64.pow(SCALE_DIGITS);
/// Most integer digits of a `meter_value`.
const VALUE_INTEGER_DIGITS: usize = 18;
/// Most integer digits of a stored total (10^27 has 28).
const TOTAL_INTEGER_DIGITS: usize = 28;
/// The largest `meter_value`, in units: 18 nines, `.`, 9 nines.
const MAX_VALUE_UNITS: u128 = 10u128.pow(VALUE_INTEGER_DIGITS as u32) * SCALE - 1;
/// The largest total, in units: 10^27 ("running totals are exact up to 10^27").
const MAX_TOTAL_UNITS: u128 = 10u128.pow(27) * SCALE;

/// A `meter_value` as the wire carries it: a non-negative decimal of 1 to 18
/// digits, optionally `.` and 1 to 9 digits. Only [`MeterValue::parse`] makes
/// one (serde too: it is written as its canonical string, in JSON as well).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct MeterValue(u128);

/// Why a `meter_value` string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidMeterValue;

impl fmt::Display for InvalidMeterValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "meter_value must be a non-negative decimal with 1-18 digits, optionally '.' and 1-9 digits (like \"12\" or \"0.5\")",
        )
    }
}

impl std::error::Error for InvalidMeterValue {}

impl MeterValue {
    /// Zero.
    pub const ZERO: MeterValue = MeterValue(0);

    /// Parses the grammar `[0-9]{1,18}(\.[0-9]{1,9})?` exactly: no sign,
    /// exponent or spaces; nothing is rounded, trimmed or guessed.
    pub fn parse(s: &str) -> Result<MeterValue, InvalidMeterValue> {
        parse_units(s, VALUE_INTEGER_DIGITS)
            .map(MeterValue)
            .ok_or(InvalidMeterValue)
    }

    /// `self + other`, or `None` if the sum is no longer a `meter_value` (19
    /// integer digits). Never rounded.
    pub fn checked_add(self, other: MeterValue) -> Option<MeterValue> {
        let sum = self.0.checked_add(other.0)?;
        (sum <= MAX_VALUE_UNITS).then_some(MeterValue(sum))
    }

    /// The value in 10⁻⁹ units.
    pub const fn units(self) -> u128 {
        self.0
    }
}

impl fmt::Display for MeterValue {
    /// The canonical form: no exponent, no superfluous leading zeros, no
    /// trailing fractional zeros (`"100"`, `"100.25"`, `"0.000001"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_canonical(self.0, f)
    }
}

impl From<MeterValue> for String {
    fn from(value: MeterValue) -> String {
        value.to_string()
    }
}

impl TryFrom<String> for MeterValue {
    type Error = InvalidMeterValue;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        MeterValue::parse(&text)
    }
}

/// A usage total of one (agreement, feature, period): `0 ≤ total ≤ 10^27`, exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UsageTotal(u128);

/// A total would pass 10^27.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange;

impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the usage total would exceed 10^27")
    }
}

impl std::error::Error for OutOfRange {}

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

    /// Parses a canonical or plain decimal string as stored by kinde-meter: the
    /// `meter_value` grammar with up to 28 integer digits, refusing anything
    /// beyond 10^27.
    pub fn parse(s: &str) -> Result<UsageTotal, InvalidMeterValue> {
        parse_units(s, TOTAL_INTEGER_DIGITS)
            .filter(|&units| units <= MAX_TOTAL_UNITS)
            .map(UsageTotal)
            .ok_or(InvalidMeterValue)
    }

    /// The total in 10⁻⁹ units.
    pub const fn units(self) -> u128 {
        self.0
    }

    /// The total of `units` 10⁻⁹ units ([`UsageTotal::units`]' inverse),
    /// refused beyond 10^27.
    pub const fn from_units(units: u128) -> Result<UsageTotal, OutOfRange> {
        if units <= MAX_TOTAL_UNITS {
            Ok(UsageTotal(units))
        } else {
            Err(OutOfRange)
        }
    }
}

impl fmt::Display for UsageTotal {
    /// The canonical form, as for [`MeterValue`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_canonical(self.0, f)
    }
}

/// The one parser: `[0-9]{1,max_integer_digits}(\.[0-9]{1,9})?` in 10⁻⁹ units.
/// 28 integer digits and 9 fractional ones stay below 10^38 < `u128::MAX`, so
/// nothing here can overflow.
fn parse_units(s: &str, max_integer_digits: usize) -> Option<u128> {
    let (integer, fraction) = match s.split_once('.') {
        Some((integer, fraction)) => (integer, Some(fraction)),
        None => (s, None),
    };
    let digits = |part: &str, max: usize| {
        (1..=max).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit())
    };
    let number = |part: &str| {
        part.bytes()
            .fold(0u128, |acc, b| acc * 10 + u128::from(b - b'0'))
    };
    if !digits(integer, max_integer_digits) {
        return None;
    }
    let mut units = number(integer) * SCALE;
    if let Some(fraction) = fraction {
        if !digits(fraction, SCALE_DIGITS as usize) {
            return None;
        }
        units += number(fraction) * 10u128.pow(SCALE_DIGITS - fraction.len() as u32);
    }
    Some(units)
}

/// Canonical form: no exponent, no superfluous leading zeros, no trailing
/// fractional zeros (`"100"`, `"100.25"`, `"0.000001"`).
///
/// Written from the right into a buffer on the stack and passed on in one
/// piece: no `format!` of the fraction, and `u64` arithmetic for every value
/// below 1.8 × 10^10 (`u128` division is a library call). The writer binds
/// values as this text on every record and aggregate.
fn write_canonical(units: u128, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let mut buffer = [0u8; CANONICAL_MAX];
    f.write_str(canonical(units, &mut buffer))
}

/// The longest canonical text: 39 integer digits (`u128::MAX / 10^9` has 30),
/// a point and 9 fractional digits.
const CANONICAL_MAX: usize = 49;

/// [`write_canonical`]'s text, in `buffer`.
fn canonical(units: u128, buffer: &mut [u8; CANONICAL_MAX]) -> &str {
    let (mut integer, mut fraction) = match u64::try_from(units) {
        Ok(units) => (u128::from(units / SCALE_U64), units % SCALE_U64),
        Err(_) => (units / SCALE, (units % SCALE) as u64),
    };
    let mut at = buffer.len();
    let mut push = |buffer: &mut [u8; CANONICAL_MAX], digit: u8| {
        at -= 1;
        buffer[at] = digit;
    };
    if fraction != 0 {
        let mut digits = SCALE_DIGITS;
        while fraction % 10 == 0 {
            fraction /= 10;
            digits -= 1;
        }
        for _ in 0..digits {
            push(buffer, b'0' + (fraction % 10) as u8);
            fraction /= 10;
        }
        push(buffer, b'.');
    }
    match u64::try_from(integer) {
        Ok(mut small) => loop {
            push(buffer, b'0' + (small % 10) as u8);
            small /= 10;
            if small == 0 {
                break;
            }
        },
        Err(_) => loop {
            push(buffer, b'0' + (integer % 10) as u8);
            integer /= 10;
            if integer == 0 {
                break;
            }
        },
    }
    std::str::from_utf8(&buffer[at..]).expect("ASCII digits and a point")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The canonical text as it was written with `format!` before.
    fn canonical_by_format(units: u128) -> String {
        let integer = units / SCALE;
        let fraction = units % SCALE;
        if fraction == 0 {
            return format!("{integer}");
        }
        let digits = format!("{fraction:09}");
        format!("{integer}.{}", digits.trim_end_matches('0'))
    }

    #[test]
    fn the_canonical_text_is_the_formatted_one_at_the_edges() {
        let edges = [
            0,
            1,
            9,
            10,
            SCALE - 1,
            SCALE,
            SCALE + 1,
            u128::from(u64::MAX) - 1,
            u128::from(u64::MAX),
            u128::from(u64::MAX) + 1,
            10u128.pow(27) * SCALE,
            10u128.pow(27) * SCALE + 1,
            u128::MAX - 1,
            u128::MAX,
        ];
        for units in edges {
            let mut buffer = [0u8; CANONICAL_MAX];
            assert_eq!(canonical(units, &mut buffer), canonical_by_format(units));
            assert_eq!(UsageTotal(units).to_string(), canonical_by_format(units));
        }
    }

    #[test]
    fn a_total_from_units_is_refused_only_beyond_the_maximum() {
        assert_eq!(UsageTotal::from_units(0), Ok(UsageTotal::ZERO));
        assert_eq!(UsageTotal::from_units(MAX_TOTAL_UNITS), Ok(UsageTotal::MAX));
        assert_eq!(UsageTotal::from_units(MAX_TOTAL_UNITS + 1), Err(OutOfRange));
        assert_eq!(UsageTotal::from_units(u128::MAX), Err(OutOfRange));
    }

    proptest! {
        /// `from_units` is `units`' inverse, and agrees with the parser.
        #[test]
        fn a_total_from_units_is_the_parsed_text(units in 0..=MAX_TOTAL_UNITS) {
            let total = UsageTotal::from_units(units).unwrap();
            prop_assert_eq!(total.units(), units);
            prop_assert_eq!(UsageTotal::parse(&canonical_by_format(units)), Ok(total));
        }
    }

    proptest! {
        #[test]
        fn the_canonical_text_is_the_formatted_one(units in any::<u128>(), shift in 0u32..128) {
            // Every magnitude, not only huge numbers.
            let units = units >> shift;
            let mut buffer = [0u8; CANONICAL_MAX];
            prop_assert_eq!(canonical(units, &mut buffer), canonical_by_format(units));
        }
    }

    fn v(text: &str) -> MeterValue {
        MeterValue::parse(text).unwrap_or_else(|_| panic!("{text} should parse"))
    }

    #[test]
    fn accepts_the_contract_examples_and_prints_them_canonically() {
        for (input, canonical) in [
            ("0", "0"),
            ("0.0", "0"),
            ("12", "12"),
            ("007", "7"),
            ("0.5", "0.5"),
            ("1500.000000001", "1500.000000001"),
            ("100.250", "100.25"),
            ("100.2500", "100.25"),
            ("0.000001", "0.000001"),
            (
                "999999999999999999.999999999",
                "999999999999999999.999999999",
            ),
        ] {
            assert_eq!(v(input).to_string(), canonical, "{input}");
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
            "1.0000000001",
            "1234567890123456789",
            "1000000000000000000",
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
    fn values_add_exactly() {
        assert_eq!(v("0.1").checked_add(v("0.2")).unwrap().to_string(), "0.3");
        assert_eq!(
            v("1500.000000001")
                .checked_add(v("0.999999999"))
                .unwrap()
                .to_string(),
            "1501"
        );
        let mut sum = MeterValue::default();
        for _ in 0..1000 {
            sum = sum.checked_add(v("0.001")).unwrap();
        }
        assert_eq!(sum.to_string(), "1");
    }

    #[test]
    fn value_sums_stop_where_the_wire_format_does() {
        let max = v("999999999999999999.999999999");
        assert_eq!(max.checked_add(v("0")), Some(max));
        assert_eq!(max.checked_add(v("0.000000001")), None);
        assert_eq!(
            v("500000000000000000").checked_add(v("500000000000000000")),
            None
        );
    }

    #[test]
    fn values_are_canonical_strings_in_json() {
        assert_eq!(serde_json::to_string(&v("007.50")).unwrap(), r#""7.5""#);
        assert_eq!(
            serde_json::from_str::<MeterValue>(r#""1.25""#).unwrap(),
            v("1.25")
        );
        assert!(serde_json::from_str::<MeterValue>(r#""1e3""#).is_err());
        assert!(serde_json::from_str::<MeterValue>("12").is_err());
    }

    #[test]
    fn totals_stop_at_ten_to_the_27() {
        let max = UsageTotal::parse("1000000000000000000000000000").unwrap();
        assert_eq!(max, UsageTotal::MAX);
        assert_eq!(max.checked_add(v("0")), Ok(max));
        assert_eq!(max.checked_add(v("0.000000001")), Err(OutOfRange));
        assert!(UsageTotal::parse("1000000000000000000000000000.000000001").is_err());
        assert!(UsageTotal::parse("9999999999999999999999999999").is_err());
        assert!(UsageTotal::parse("10000000000000000000000000000").is_err());
        assert_eq!(
            UsageTotal::parse("999999999999999999999999999.999999999")
                .unwrap()
                .to_string(),
            "999999999999999999999999999.999999999"
        );
    }

    #[test]
    fn totals_refuse_what_values_refuse() {
        for input in ["", ".5", "5.", "-1", "1e3", " 1", "0.1234567891", "1.2.3"] {
            assert_eq!(
                UsageTotal::parse(input),
                Err(InvalidMeterValue),
                "{input:?}"
            );
        }
        assert_eq!(UsageTotal::parse("12.500").unwrap().to_string(), "12.5");
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
            prop_assert_eq!(va.checked_add(vb).map(MeterValue::units), Some(va.units() + vb.units()));
        }
    }
}
