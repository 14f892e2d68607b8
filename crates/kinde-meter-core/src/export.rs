//! The usage export for invoicing (`docs/import-export.md#export`): which
//! period of each agreement an export covers, the amount of a row, and the
//! rows written as CSV or NDJSON. No I/O: the server's route and the CLI's
//! offline export both write with these functions, so they write the same bytes.

use std::{fmt, str::FromStr};

use jiff::{SignedDuration, Timestamp};
use kinde_meter_wire::{ExportFormat, MeterUsageExportRow, SCALE_DIGITS, UsageTotal};

use crate::{
    agreement::Agreement,
    catalog::Feature,
    period::Period,
    timestamp::{format_utc, in_billing_range, parse_rfc3339_lenient},
};

/// Which billing period of each agreement an export covers: the `period`
/// parameter. Agreements have their own anchors, so the same choice picks
/// different periods for different agreements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportPeriod {
    /// The period containing now (`current`, the default).
    Current,
    /// The period just before the one containing now (`previous`).
    Previous,
    /// The period containing this instant (an RFC 3339 date-time).
    Containing(Timestamp),
}

/// A `period` that is neither `current`, `previous` nor an RFC 3339 date-time
/// between 1970 and 2200.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidExportPeriod;

impl fmt::Display for InvalidExportPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "period must be current, previous or an RFC 3339 date-time between 1970 and 2200",
        )
    }
}

impl std::error::Error for InvalidExportPeriod {}

impl FromStr for ExportPeriod {
    type Err = InvalidExportPeriod;

    /// `current`, `previous`, or an instant written as `at` of the usage read
    /// is (`docs/api.md#usage-read-back`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "current" => Ok(ExportPeriod::Current),
            "previous" => Ok(ExportPeriod::Previous),
            _ => parse_rfc3339_lenient(text)
                .filter(|at| in_billing_range(*at))
                .map(ExportPeriod::Containing)
                .ok_or(InvalidExportPeriod),
        }
    }
}

impl ExportPeriod {
    /// The period of `agreement` this export covers at `now`, `None` when the
    /// agreement was not active in it: it had not started by the instant that
    /// picks the period (so `previous` of an agreement still in its first
    /// period is none), or it ended at or before the period's start.
    pub fn period_of(self, agreement: &Agreement, now: Timestamp) -> Option<Period> {
        let at = match self {
            ExportPeriod::Current => now,
            ExportPeriod::Containing(at) => at,
            ExportPeriod::Previous => {
                let current = agreement.period_containing(now);
                // The first period has none before it.
                if current.start <= agreement.anchor {
                    return None;
                }
                current
                    .start
                    .checked_sub(SignedDuration::from_nanos(1))
                    .ok()?
            }
        };
        if at < agreement.anchor {
            return None;
        }
        let period = agreement.period_containing(at);
        agreement
            .expires_on
            .is_none_or(|end| end > period.start)
            .then_some(period)
    }
}

/// The export row of `agreement`'s usage `value` of `feature` in `period`.
pub fn row(
    agreement: &Agreement,
    feature: &Feature,
    period: Period,
    value: UsageTotal,
) -> MeterUsageExportRow {
    MeterUsageExportRow {
        customer_id: agreement.customer_id.to_string(),
        customer_agreement_id: agreement.id.to_string(),
        billing_feature_code: feature.code.to_string(),
        period_start: format_utc(period.start),
        period_end: format_utc(period.end),
        value: value.to_string(),
        amount: feature.unit_amount.and_then(|unit| amount(value, unit)),
        plan_code: agreement.plan_code.to_string(),
        unit_amount: feature.unit_amount,
    }
}

/// `value` × `unit_amount` (cents per unit), exactly, in canonical form: no
/// exponent, no superfluous zeros, up to nine fractional digits (`value` has
/// at most nine and `unit_amount` none), never rounded. `None` for a negative
/// `unit_amount` (the catalog refuses those).
///
/// The product can pass `u128` (a total up to 10^27 times a price up to
/// 2^63), so it is computed in two 18-digit halves.
pub fn amount(value: UsageTotal, unit_amount: i64) -> Option<String> {
    const HALF: u128 = 10u128.pow(18);
    const SCALE: u128 = 10u128.pow(SCALE_DIGITS);
    let unit = u128::from(u64::try_from(unit_amount).ok()?);
    let units = value.units();
    // units = high·10^18 + low; both halves times a price below 2^63 stay
    // below 10^37, well inside u128.
    let (high, low) = (units / HALF, units % HALF);
    let low_product = low * unit;
    let high_product = high * unit + low_product / HALF;
    let low_digits = low_product % HALF;
    // The product in 10^-9 cents is high_product·10^18 + low_digits.
    let (upper, fraction) = (low_digits / SCALE, low_digits % SCALE);
    let mut text = if high_product > 0 {
        format!("{high_product}{upper:09}")
    } else {
        upper.to_string()
    };
    if fraction > 0 {
        let digits = format!("{fraction:09}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    Some(text)
}

/// What comes before the rows: the CSV header row, nothing for NDJSON.
pub fn write_header(format: ExportFormat, out: &mut Vec<u8>) {
    if format == ExportFormat::Csv {
        out.extend_from_slice(MeterUsageExportRow::FIELDS.join(",").as_bytes());
        out.push(b'\n');
    }
}

/// Appends `row` to `out` as one line of `format`: CSV fields in
/// [`MeterUsageExportRow::FIELDS`] order (RFC 4180 quoting, absent values
/// empty), or the row's JSON object.
pub fn write_row(format: ExportFormat, row: &MeterUsageExportRow, out: &mut Vec<u8>) {
    match format {
        ExportFormat::Csv => {
            let unit_amount = row.unit_amount.map(|u| u.to_string());
            let fields = [
                row.customer_id.as_str(),
                &row.customer_agreement_id,
                &row.billing_feature_code,
                &row.period_start,
                &row.period_end,
                &row.value,
                row.amount.as_deref().unwrap_or(""),
                &row.plan_code,
                unit_amount.as_deref().unwrap_or(""),
            ];
            for (i, field) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_csv_field(field, out);
            }
        }
        ExportFormat::Ndjson => {
            // Strings and integers only: serialising cannot fail.
            serde_json::to_writer(&mut *out, row).expect("an export row serialises");
        }
    }
    out.push(b'\n');
}

/// One CSV field, quoted (quotes doubled) when it holds a comma, a quote or a
/// line break (RFC 4180 §2).
fn write_csv_field(field: &str, out: &mut Vec<u8>) {
    if field.contains([',', '"', '\r', '\n']) {
        out.push(b'"');
        out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(field.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ids::{AgreementId, CustomerId, FeatureCode, PlanCode},
        period::Interval,
    };
    use proptest::prelude::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn total(s: &str) -> UsageTotal {
        UsageTotal::parse(s).unwrap()
    }

    fn agreement(anchor: &str, expires_on: Option<&str>) -> Agreement {
        Agreement {
            id: AgreementId::parse("agreement_1".to_owned()).unwrap(),
            customer_id: CustomerId::parse("customer, \"one\"".to_owned()).unwrap(),
            plan_code: PlanCode::parse("pro".to_owned()).unwrap(),
            interval: Interval::Month,
            anchor: t(anchor),
            expires_on: expires_on.map(t),
        }
    }

    fn feature(unit_amount: Option<i64>) -> Feature {
        Feature {
            code: FeatureCode::parse("api_calls".to_owned()).unwrap(),
            name: "API calls".to_owned(),
            metered: true,
            unit_amount,
            limit_max: None,
            price_name: None,
            fixed_charge: None,
            limit_min: None,
            enforce_limit: false,
            thresholds: Vec::new(),
        }
    }

    fn period(start: &str, end: &str) -> Option<Period> {
        Some(Period {
            start: t(start),
            end: t(end),
        })
    }

    #[test]
    fn periods_parse() {
        assert_eq!("current".parse(), Ok(ExportPeriod::Current));
        assert_eq!("previous".parse(), Ok(ExportPeriod::Previous));
        assert_eq!(
            "2026-03-05T10:00:00+01:00".parse(),
            Ok(ExportPeriod::Containing(t("2026-03-05T09:00:00Z")))
        );
        for bad in [
            "",
            "Current",
            "last",
            "2026-02-30T00:00:00Z",
            "2200-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-03-05",
        ] {
            assert_eq!(
                bad.parse::<ExportPeriod>(),
                Err(InvalidExportPeriod),
                "{bad}"
            );
        }
    }

    #[test]
    fn current_previous_and_an_instant_follow_the_agreement_anchor() {
        let a = agreement("2026-01-31T10:00:00Z", None);
        let now = t("2026-03-05T00:00:00Z");
        assert_eq!(
            ExportPeriod::Current.period_of(&a, now),
            period("2026-02-28T10:00:00Z", "2026-03-31T10:00:00Z")
        );
        assert_eq!(
            ExportPeriod::Previous.period_of(&a, now),
            period("2026-01-31T10:00:00Z", "2026-02-28T10:00:00Z")
        );
        assert_eq!(
            ExportPeriod::Containing(t("2026-02-28T10:00:00Z")).period_of(&a, now),
            period("2026-02-28T10:00:00Z", "2026-03-31T10:00:00Z")
        );
        // Exactly at a period's start, "previous" is the period that just ended.
        assert_eq!(
            ExportPeriod::Previous.period_of(&a, t("2026-02-28T10:00:00Z")),
            period("2026-01-31T10:00:00Z", "2026-02-28T10:00:00Z")
        );
    }

    #[test]
    fn agreements_not_active_in_the_period_are_left_out() {
        let a = agreement("2026-01-31T10:00:00Z", None);
        // In its first period there is no previous one.
        assert_eq!(
            ExportPeriod::Previous.period_of(&a, t("2026-02-01T00:00:00Z")),
            None
        );
        // Before the start.
        assert_eq!(
            ExportPeriod::Containing(t("2026-01-31T09:59:59Z"))
                .period_of(&a, t("2026-02-01T00:00:00Z")),
            None
        );
        assert_eq!(
            ExportPeriod::Current.period_of(&a, t("2026-01-01T00:00:00Z")),
            None
        );
        // Ended during the period: still exported for it, not for later ones.
        let ended = agreement("2026-01-31T10:00:00Z", Some("2026-03-10T00:00:00Z"));
        let now = t("2026-03-20T00:00:00Z");
        assert_eq!(
            ExportPeriod::Current.period_of(&ended, now),
            period("2026-02-28T10:00:00Z", "2026-03-31T10:00:00Z")
        );
        assert_eq!(
            ExportPeriod::Current.period_of(&ended, t("2026-04-01T00:00:00Z")),
            None
        );
        assert_eq!(
            ExportPeriod::Previous.period_of(&ended, t("2026-04-01T00:00:00Z")),
            period("2026-02-28T10:00:00Z", "2026-03-31T10:00:00Z")
        );
        // Ended exactly when the period started: not active in it.
        let at_start = agreement("2026-01-31T10:00:00Z", Some("2026-02-28T10:00:00Z"));
        assert_eq!(ExportPeriod::Current.period_of(&at_start, now), None);
    }

    #[test]
    fn amounts_are_exact() {
        for (value, unit, expected) in [
            ("0", 2, "0"),
            ("5", 0, "0"),
            ("1523.5", 2, "3047"),
            ("1.25", 3, "3.75"),
            ("0.000000001", 1, "0.000000001"),
            ("0.000000001", 7, "0.000000007"),
            ("123456789.123456789", 1000, "123456789123.456789"),
            (
                "999999999999999999.999999999",
                10,
                "9999999999999999999.99999999",
            ),
            (
                "1000000000000000000000000000",
                i64::MAX,
                "9223372036854775807000000000000000000000000000",
            ),
            (
                "999999999999999999999999999.999999999",
                i64::MAX,
                "9223372036854775806999999999999999990776627963.145224193",
            ),
        ] {
            assert_eq!(
                amount(total(value), unit).as_deref(),
                Some(expected),
                "{value} × {unit}"
            );
        }
        assert_eq!(amount(total("1"), -1), None);
    }

    proptest! {
        #[test]
        fn amounts_match_plain_arithmetic_where_it_fits(
            units in 0u128..10u128.pow(27),
            unit in 0i64..1_000_000_000,
        ) {
            let value = total(&format_units(units));
            let product = units * unit as u128;
            prop_assert_eq!(amount(value, unit), Some(format_units(product)));
        }
    }

    /// A count of 10^-9 units in canonical form (the reference for the test).
    fn format_units(units: u128) -> String {
        let (int, frac) = (units / 1_000_000_000, units % 1_000_000_000);
        if frac == 0 {
            int.to_string()
        } else {
            format!("{int}.{}", format!("{frac:09}").trim_end_matches('0'))
        }
    }

    #[test]
    fn rows_as_csv_and_ndjson() {
        let a = agreement("2026-01-31T10:00:00Z", None);
        let p = Period {
            start: t("2026-02-28T10:00:00Z"),
            end: t("2026-03-31T10:00:00Z"),
        };
        let priced = row(&a, &feature(Some(2)), p, total("1.25"));
        let unpriced = row(&a, &feature(None), p, total("0"));
        let mut csv = Vec::new();
        write_header(ExportFormat::Csv, &mut csv);
        write_row(ExportFormat::Csv, &priced, &mut csv);
        write_row(ExportFormat::Csv, &unpriced, &mut csv);
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "customer_id,customer_agreement_id,billing_feature_code,period_start,period_end,value,amount,plan_code,unit_amount\n\
             \"customer, \"\"one\"\"\",agreement_1,api_calls,2026-02-28T10:00:00Z,2026-03-31T10:00:00Z,1.25,2.5,pro,2\n\
             \"customer, \"\"one\"\"\",agreement_1,api_calls,2026-02-28T10:00:00Z,2026-03-31T10:00:00Z,0,,pro,\n"
        );
        let mut ndjson = Vec::new();
        write_header(ExportFormat::Ndjson, &mut ndjson);
        write_row(ExportFormat::Ndjson, &priced, &mut ndjson);
        write_row(ExportFormat::Ndjson, &unpriced, &mut ndjson);
        assert_eq!(
            String::from_utf8(ndjson).unwrap(),
            "{\"customer_id\":\"customer, \\\"one\\\"\",\"customer_agreement_id\":\"agreement_1\",\
             \"billing_feature_code\":\"api_calls\",\"period_start\":\"2026-02-28T10:00:00Z\",\
             \"period_end\":\"2026-03-31T10:00:00Z\",\"value\":\"1.25\",\"amount\":\"2.5\",\
             \"plan_code\":\"pro\",\"unit_amount\":2}\n\
             {\"customer_id\":\"customer, \\\"one\\\"\",\"customer_agreement_id\":\"agreement_1\",\
             \"billing_feature_code\":\"api_calls\",\"period_start\":\"2026-02-28T10:00:00Z\",\
             \"period_end\":\"2026-03-31T10:00:00Z\",\"value\":\"0\",\"amount\":null,\
             \"plan_code\":\"pro\",\"unit_amount\":null}\n"
        );
    }
}
