//! `meter_value`s and usage totals: `MeterValue` and `UsageTotal` of
//! `kinde-meter-wire` (docs/billing.md#exact-decimals).

use kinde_meter_wire::{MeterValue, UsageTotal};

/// 10⁻⁹ units per 1.
const SCALE: u128 = 1_000_000_000;
/// The largest total, 10^27, in units.
const MAX_TOTAL_UNITS: u128 = 1_000_000_000_000_000_000_000_000_000 * SCALE;
/// The largest `meter_value`, in units: 18 nines, `.`, 9 nines.
const MAX_VALUE_UNITS: u128 = 1_000_000_000_000_000_000 * SCALE - 1;

/// Parses `data` as a `meter_value` and as a usage total. Properties: each
/// accepts exactly its grammar with exactly the value of a second, separately
/// written reading below; the canonical form parses back to the same value and
/// is stable; JSON carries a value as that string; and for `a+b`, the sums are
/// exact or refused exactly at the bound.
pub fn meter_value(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let value = MeterValue::parse(text);
    assert_eq!(
        value.ok().map(MeterValue::units),
        reference_units(text, 18),
        "meter_value {text:?}"
    );
    let total = UsageTotal::parse(text);
    assert_eq!(
        total.ok().map(UsageTotal::units),
        reference_units(text, 28).filter(|&units| units <= MAX_TOTAL_UNITS),
        "total {text:?}"
    );
    let as_json = serde_json::to_string(text).expect("a string serialises");
    assert_eq!(
        serde_json::from_str::<MeterValue>(&as_json).ok(),
        value.ok()
    );
    if let Ok(value) = value {
        let canonical = value.to_string();
        check_canonical(&canonical);
        assert_eq!(MeterValue::parse(&canonical), Ok(value));
        assert_eq!(
            MeterValue::parse(&canonical).map(|v| v.to_string()),
            Ok(canonical.clone())
        );
        assert_eq!(
            UsageTotal::parse(&canonical),
            Ok(UsageTotal::from_value(value))
        );
        assert_eq!(
            serde_json::to_string(&value).expect("a value serialises"),
            format!("\"{canonical}\"")
        );
    }
    if let Ok(total) = total {
        let canonical = total.to_string();
        check_canonical(&canonical);
        assert_eq!(UsageTotal::parse(&canonical), Ok(total));
    }
    if let Some((a, b)) = text.split_once('+')
        && let (Ok(a), Ok(b)) = (MeterValue::parse(a), MeterValue::parse(b))
    {
        let sum = a.units() + b.units();
        assert_eq!(
            a.checked_add(b).map(MeterValue::units),
            (sum <= MAX_VALUE_UNITS).then_some(sum)
        );
        let total = UsageTotal::from_value(a)
            .checked_add(b)
            .map(UsageTotal::units);
        assert_eq!(total.ok(), (sum <= MAX_TOTAL_UNITS).then_some(sum));
    }
}

/// `[0-9]{1,max_integer_digits}(\.[0-9]{1,9})?` in 10⁻⁹ units, read another way
/// than the code under test: the fraction padded to nine digits, both parts by
/// the standard library.
fn reference_units(text: &str, max_integer_digits: usize) -> Option<u128> {
    let mut parts = text.splitn(2, '.');
    let integer = parts.next()?;
    let fraction = parts.next();
    let all_digits = |part: &str| part.chars().all(|c| c.is_ascii_digit());
    if integer.is_empty() || integer.len() > max_integer_digits || !all_digits(integer) {
        return None;
    }
    let fraction_units = match fraction {
        None => 0,
        Some(f) if (1..=9).contains(&f.len()) && all_digits(f) => {
            format!("{f:0<9}").parse::<u128>().ok()?
        }
        Some(_) => return None,
    };
    Some(integer.parse::<u128>().ok()? * SCALE + fraction_units)
}

/// No superfluous leading zero, no trailing fractional zero, no exponent.
fn check_canonical(canonical: &str) {
    let (integer, fraction) = canonical.split_once('.').unwrap_or((canonical, ""));
    assert!(
        integer == "0" || !integer.starts_with('0'),
        "leading zero in {canonical:?}"
    );
    assert!(!fraction.ends_with('0'), "trailing zero in {canonical:?}");
    assert!(
        canonical.bytes().all(|b| b.is_ascii_digit() || b == b'.'),
        "{canonical:?}"
    );
}
