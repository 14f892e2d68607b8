//! The usage export for invoicing, `GET /api/v1/billing/meter_usage/export` (not
//! in Kinde): one row per agreement and metered feature of its plan, as CSV or
//! NDJSON (`docs/import-export.md#export`).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// One row of the usage export: an agreement's usage of one metered feature in
/// one billing period, and what it costs where the catalog prices the feature.
///
/// As NDJSON it is this JSON object, one per line, keys in this order; as CSV
/// the same fields in the same order ([`MeterUsageExportRow::FIELDS`], the
/// header row), an absent `amount` or `unit_amount` written as an empty field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MeterUsageExportRow {
    /// The agreement's customer.
    pub customer_id: String,
    /// The agreement, e.g. `agreement_0195ac80a14c2ca2cec97d026d864de0`.
    pub customer_agreement_id: String,
    /// The metered feature's code.
    pub billing_feature_code: String,
    /// Start of the billing period (inclusive), RFC 3339 UTC.
    pub period_start: String,
    /// End of the billing period (exclusive), RFC 3339 UTC.
    pub period_end: String,
    /// The period's usage, an exact decimal in canonical form, exactly as usage
    /// read-back writes it (`"0"`, `"1523.5"`).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^(0|[1-9][0-9]{0,27})(\.[0-9]{0,8}[1-9])?$")
    )]
    pub value: String,
    /// `value` × `unit_amount`, in cents, an exact decimal in canonical form (up
    /// to 9 fractional digits, never rounded); null when the catalog gives the
    /// feature no `unit_amount`.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^(0|[1-9][0-9]*)(\.[0-9]{0,8}[1-9])?$")
    )]
    pub amount: Option<String>,
    /// The agreement's plan.
    pub plan_code: String,
    /// The catalog's price per unit of the feature, in cents; null without one.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub unit_amount: Option<i64>,
}

impl MeterUsageExportRow {
    /// The field names in row order: the CSV header and the NDJSON keys.
    pub const FIELDS: [&'static str; 9] = [
        "customer_id",
        "customer_agreement_id",
        "billing_feature_code",
        "period_start",
        "period_end",
        "value",
        "amount",
        "plan_code",
        "unit_amount",
    ];
}

/// How the export is written: the `format` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// Comma-separated values with a header row (RFC 4180 quoting), `text/csv`.
    #[default]
    Csv,
    /// One JSON object per line, `application/x-ndjson`.
    Ndjson,
}

impl ExportFormat {
    /// The format as the query parameter names it.
    pub const fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Ndjson => "ndjson",
        }
    }

    /// The `Content-Type` of an export in this format.
    pub const fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Ndjson => "application/x-ndjson",
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `format` other than `csv` or `ndjson`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownExportFormat;

impl fmt::Display for UnknownExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("format must be csv or ndjson")
    }
}

impl std::error::Error for UnknownExportFormat {}

impl FromStr for ExportFormat {
    type Err = UnknownExportFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "csv" => Ok(ExportFormat::Csv),
            "ndjson" => Ok(ExportFormat::Ndjson),
            _ => Err(UnknownExportFormat),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keys_are_the_fields_in_order() {
        let row = MeterUsageExportRow {
            customer_id: "c".into(),
            customer_agreement_id: "a".into(),
            billing_feature_code: "f".into(),
            period_start: "s".into(),
            period_end: "e".into(),
            value: "1".into(),
            amount: None,
            plan_code: "p".into(),
            unit_amount: None,
        };
        let json = serde_json::to_value(&row).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        // serde_json's map is sorted unless preserve_order; compare as sets and
        // check the order on the text.
        let mut fields = MeterUsageExportRow::FIELDS.to_vec();
        fields.sort_unstable();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, fields);
        let text = serde_json::to_string(&row).unwrap();
        let positions: Vec<usize> = MeterUsageExportRow::FIELDS
            .iter()
            .map(|f| text.find(&format!("\"{f}\":")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn formats_parse_and_print() {
        for format in [ExportFormat::Csv, ExportFormat::Ndjson] {
            assert_eq!(format.as_str().parse::<ExportFormat>(), Ok(format));
        }
        assert!("CSV".parse::<ExportFormat>().is_err());
        assert!("".parse::<ExportFormat>().is_err());
    }
}
