//! Usage timestamps: `parse_rfc3339_lenient` and `parse_usage_timestamp` of
//! `kinde-meter-core` (docs/api.md#record-usage), the 1970–2200 billing range
//! and the periods computed in it (docs/billing.md#billing-periods).

use jiff::Timestamp;
use jiff::tz::TimeZone;
use kinde_meter_core::period::Interval;
use kinde_meter_core::timestamp::{
    MAX_FUTURE, TimestampError, format_utc, in_billing_range, parse_rfc3339_lenient,
    parse_usage_timestamp,
};

use crate::now;

/// Anchors every in-range instant is placed in a period of: the start of the
/// range, a month end, a leap day and the last second of the range.
const ANCHORS: [&str; 4] = [
    "1970-01-01T00:00:00Z",
    "2024-01-31T10:00:00Z",
    "2024-02-29T23:59:59.5Z",
    "2199-12-31T23:59:59Z",
];

/// Parses the first line of `data` as a usage timestamp and, if there is one,
/// the second as an agreement's anchor. Properties: the usage parse refuses
/// exactly what the lenient parse does or what lies more than 5 minutes after
/// receipt; where jiff's own RFC 3339 parser reads the text too, both read the
/// same instant; the UTC form kinde-meter writes back parses to the same
/// instant; the billing range is 1970-01-01 to 2199-12-31 by the calendar; and
/// an in-range instant lies in the period computed for it from any in-range
/// anchor (period 0 before the anchor) on every interval.
pub fn timestamp(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (text, anchor) = text.split_once('\n').unwrap_or((text, ""));
    let now = now();
    let lenient = parse_rfc3339_lenient(text);
    let usage = parse_usage_timestamp(text, now);
    match lenient {
        None => assert_eq!(usage, Err(TimestampError::Invalid), "{text:?}"),
        Some(at) if at > now + MAX_FUTURE => {
            assert_eq!(usage, Err(TimestampError::InFuture), "{text:?}")
        }
        Some(at) => assert_eq!(usage, Ok(at), "{text:?}"),
    }
    let Some(at) = lenient else {
        return;
    };
    if let Ok(strict) = text.parse::<Timestamp>() {
        assert_eq!(at, strict, "{text:?} read differently by jiff");
    }
    let year = at.to_zoned(TimeZone::UTC).year();
    if year >= 0 {
        let written = format_utc(at);
        assert!(written.ends_with('Z'), "{written}");
        assert_eq!(
            parse_rfc3339_lenient(&written),
            Some(at),
            "{text:?} written as {written}"
        );
    }
    assert_eq!(
        in_billing_range(at),
        (1970..2200).contains(&year),
        "{text:?}"
    );
    if !in_billing_range(at) {
        return;
    }
    let anchors = ANCHORS
        .iter()
        .map(|a| a.parse::<Timestamp>().expect("a valid anchor"))
        .chain(parse_rfc3339_lenient(anchor).filter(|a| in_billing_range(*a)));
    for anchor in anchors {
        for interval in [
            Interval::Day,
            Interval::Week,
            Interval::Month,
            Interval::Year,
        ] {
            let period = interval.period_containing(anchor, at);
            assert!(
                period.start < period.end,
                "{interval} from {anchor}: {period:?}"
            );
            if at >= anchor {
                assert!(
                    period.contains(at),
                    "{at} not in its {interval} period {period:?} from {anchor}"
                );
            } else {
                assert_eq!(period, interval.period(anchor, 0), "{at} before {anchor}");
            }
        }
    }
}
