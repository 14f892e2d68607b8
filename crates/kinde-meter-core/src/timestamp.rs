//! Usage timestamps as Kinde's clients write them: RFC 3339 with `Z` or an offset
//! (also `+1100` and `+11`), or without one (read as UTC, as Python's naive
//! `isoformat()` writes it); docs/api.md#record-usage, docs/design.md#timestamps.

use jiff::{SignedDuration, Timestamp, civil::DateTime, tz};

/// How far in the future a usage timestamp may lie (clock skew allowance).
pub const MAX_FUTURE: SignedDuration = SignedDuration::from_secs(5 * 60);

/// Why a timestamp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// Not an RFC 3339 date-time.
    #[error(
        "meter_usage_timestamp must be an RFC 3339 date-time such as 2024-11-18T13:32:03Z or 2024-11-18T13:32:03+11:00"
    )]
    Invalid,
    /// More than [`MAX_FUTURE`] after the time of receipt.
    #[error("meter_usage_timestamp is more than 5 minutes in the future")]
    InFuture,
}

/// Parses a usage timestamp and checks it is not more than 5 minutes after `now`.
pub fn parse_usage_timestamp(text: &str, now: Timestamp) -> Result<Timestamp, TimestampError> {
    let at = parse_rfc3339_lenient(text).ok_or(TimestampError::Invalid)?;
    // `checked_add`: a `now` near the end of time (a bound that cannot be
    // exceeded) must not overflow.
    if now.checked_add(MAX_FUTURE).is_ok_and(|bound| at > bound) {
        return Err(TimestampError::InFuture);
    }
    Ok(at)
}

/// Parses RFC 3339 leniently as described in the module docs; `None` if it is not one.
pub fn parse_rfc3339_lenient(text: &str) -> Option<Timestamp> {
    // YYYY-MM-DD, a separator, then at least HH:MM.
    if !text.is_ascii() || text.len() < 16 || text.len() > 64 {
        return None;
    }
    if !matches!(text.as_bytes()[10], b'T' | b't' | b' ') {
        return None;
    }
    let (civil, offset) = split_offset(text)?;
    let datetime: DateTime = civil.replace(['t', ' '], "T").parse().ok()?;
    let zoned = datetime.to_zoned(tz::TimeZone::fixed(offset)).ok()?;
    Some(zoned.timestamp())
}

/// Splits `text` into the civil date-time and its offset (UTC when absent).
fn split_offset(text: &str) -> Option<(&str, tz::Offset)> {
    if let Some(civil) = text.strip_suffix(['Z', 'z']) {
        return Some((civil, tz::Offset::UTC));
    }
    // An offset sign can only appear in the time part (after the date's dashes).
    let time_start = 11;
    let Some(pos) = text[time_start..].rfind(['+', '-']).map(|p| p + time_start) else {
        return Some((text, tz::Offset::UTC));
    };
    let (civil, offset) = text.split_at(pos);
    let sign: i32 = if offset.starts_with('-') { -1 } else { 1 };
    let digits = &offset[1..];
    let (hours, minutes) = match digits.len() {
        2 => (digits, "00"),
        4 => (&digits[..2], &digits[2..]),
        5 if digits.as_bytes()[2] == b':' => (&digits[..2], &digits[3..]),
        _ => return None,
    };
    let two_digits = |s: &str| -> Option<i32> {
        (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let (hours, minutes) = (two_digits(hours)?, two_digits(minutes)?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    let offset = tz::Offset::from_seconds(sign * (hours * 3600 + minutes * 60)).ok()?;
    Some((civil, offset))
}

/// Whether an instant lies in the range billing periods are computed for
/// (1970 to 2200): wide enough for any real agreement, narrow enough that period
/// arithmetic never leaves what the calendar and the store can represent.
pub fn in_billing_range(at: Timestamp) -> bool {
    const MIN: i64 = 0; // 1970-01-01T00:00:00Z
    const MAX: i64 = 7_258_118_400; // 2200-01-01T00:00:00Z
    (MIN..MAX).contains(&at.as_second())
}

/// Formats an instant as RFC 3339 UTC with `Z`, the way kinde-meter writes them
/// back (`2024-11-18T02:32:03Z`, fractional seconds only when present).
pub fn format_utc(at: Timestamp) -> String {
    at.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn accepts_every_offset_form() {
        let expected = utc("2024-11-18T02:32:03Z");
        for text in [
            "2024-11-18T13:32:03+11:00",
            "2024-11-18T13:32:03+1100",
            "2024-11-18T13:32:03+11",
            "2024-11-18T02:32:03Z",
            "2024-11-18t02:32:03z",
            "2024-11-18T02:32:03",
            "2024-11-18 02:32:03",
            "2024-11-17T22:32:03-04:00",
            "2024-11-18T02:32:03+00:00",
            "2024-11-18T02:32:03-00:00",
        ] {
            assert_eq!(parse_rfc3339_lenient(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn keeps_fractional_seconds() {
        let at = parse_rfc3339_lenient("2024-11-18T02:32:03.123456Z").unwrap();
        assert_eq!(at, utc("2024-11-18T02:32:03.123456Z"));
        // Python's isoformat() of a naive datetime with microseconds.
        let at = parse_rfc3339_lenient("2024-11-18T02:32:03.500000").unwrap();
        assert_eq!(at, utc("2024-11-18T02:32:03.5Z"));
    }

    #[test]
    fn refuses_non_timestamps() {
        for text in [
            "",
            "yesterday",
            "2024-11-18",
            "2024-13-18T02:32:03Z",
            "2024-11-31T02:32:03Z",
            "2024-11-18T25:32:03Z",
            "2024-11-18T02:32:03+24:00",
            "2024-11-18T02:32:03+1",
            "2024-11-18T02:32:03+11:0",
            "2024-11-18T02:32:03 +11:00",
            "1731897123",
            "2024-11-18T02:32:03ZZ",
        ] {
            assert_eq!(parse_rfc3339_lenient(text), None, "{text:?}");
        }
    }

    #[test]
    fn the_billing_range_is_1970_to_2200() {
        assert!(in_billing_range(utc("1970-01-01T00:00:00Z")));
        assert!(in_billing_range(utc("2199-12-31T23:59:59Z")));
        assert!(!in_billing_range(utc("2200-01-01T00:00:00Z")));
        assert!(!in_billing_range(utc("1969-12-31T23:59:59Z")));
    }

    #[test]
    fn five_minutes_of_skew_and_no_more() {
        let now = utc("2024-11-18T02:00:00Z");
        assert!(parse_usage_timestamp("2024-11-18T02:05:00Z", now).is_ok());
        assert_eq!(
            parse_usage_timestamp("2024-11-18T02:05:00.001Z", now),
            Err(TimestampError::InFuture)
        );
    }
}
