//! Parsing a `CreateMeterUsageRecordRequest` into a [`UsageRecord`] (SPEC §2).
//!
//! The request arrives as a JSON value rather than a typed struct so that every
//! problem can be reported at once, with the right code: a missing field
//! (`MISSING_FIELD`), a wrong JSON type (`INVALID_FIELD`), a bad value
//! (`INVALID_METER_VALUE`, `INVALID_TIMESTAMP`, …). Unknown fields are ignored and
//! `null` means absent, as Kinde's generated clients send them.

use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::ErrorCode;
use crate::aggregate::MeterType;
use crate::idempotency::Fingerprint;
use crate::ids::{AgreementId, CodeError, FeatureCode};
use crate::timestamp::{TimestampError, parse_usage_timestamp};
use crate::value::MeterValue;

/// A usage record, parsed: everything past the HTTP edge holds this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// The agreement to record against.
    pub agreement_id: AgreementId,
    /// The metered feature.
    pub feature_code: FeatureCode,
    /// The value.
    pub value: MeterValue,
    /// When the usage happened; `None` means "at receipt".
    pub timestamp: Option<Timestamp>,
    /// Delta or absolute.
    pub meter_type: MeterType,
}

/// One problem with a request, as one entry of Kinde's `ErrorResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The error code.
    pub code: ErrorCode,
    /// A message naming the field.
    pub message: String,
}

impl FieldError {
    /// A problem with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> FieldError {
        FieldError {
            code,
            message: message.into(),
        }
    }
}

impl UsageRecord {
    /// Parses a request body already decoded as JSON. `now` is the time of receipt,
    /// used for the future-timestamp bound. Every problem is reported.
    pub fn from_json(body: &Value, now: Timestamp) -> Result<UsageRecord, Vec<FieldError>> {
        let Some(object) = body.as_object() else {
            return Err(vec![FieldError::new(
                ErrorCode::InvalidJson,
                "the body must be a JSON object",
            )]);
        };
        let mut errors = Vec::new();
        let agreement_id = required_code(
            object,
            "customer_agreement_id",
            &mut errors,
            AgreementId::parse,
        );
        let feature_code = required_code(
            object,
            "billing_feature_code",
            &mut errors,
            FeatureCode::parse,
        );
        let value = match required_string(object, "meter_value", &mut errors) {
            Some(text) => match MeterValue::parse(text) {
                Ok(v) => Some(v),
                Err(e) => {
                    errors.push(FieldError::new(ErrorCode::InvalidMeterValue, e.to_string()));
                    None
                }
            },
            None => None,
        };
        let timestamp = match optional_string(object, "meter_usage_timestamp", &mut errors) {
            Some(Some(text)) => match parse_usage_timestamp(text, now) {
                Ok(at) => Some(Some(at)),
                Err(e) => {
                    let code = match e {
                        TimestampError::Invalid => ErrorCode::InvalidTimestamp,
                        TimestampError::InFuture => ErrorCode::TimestampInFuture,
                    };
                    errors.push(FieldError::new(code, e.to_string()));
                    None
                }
            },
            Some(None) => Some(None),
            None => None,
        };
        let meter_type = match optional_string(object, "meter_type_code", &mut errors) {
            Some(None) | Some(Some("delta")) => Some(MeterType::Delta),
            Some(Some("absolute")) => Some(MeterType::Absolute),
            Some(Some(_)) => {
                errors.push(FieldError::new(
                    ErrorCode::InvalidMeterType,
                    "meter_type_code must be \"delta\" or \"absolute\"",
                ));
                None
            }
            None => None,
        };
        match (agreement_id, feature_code, value, timestamp, meter_type) {
            (
                Some(agreement_id),
                Some(feature_code),
                Some(value),
                Some(timestamp),
                Some(meter_type),
            ) if errors.is_empty() => Ok(UsageRecord {
                agreement_id,
                feature_code,
                value,
                timestamp,
                meter_type,
            }),
            _ => Err(errors),
        }
    }

    /// The canonical parts of the record, for request fingerprints.
    pub fn canonical_parts(&self) -> [String; 5] {
        [
            self.agreement_id.to_string(),
            self.feature_code.to_string(),
            self.value.to_string(),
            self.timestamp.map(|t| t.to_string()).unwrap_or_default(),
            self.meter_type.as_str().to_owned(),
        ]
    }

    /// The fingerprint of a single-record request.
    pub fn fingerprint(&self) -> Fingerprint {
        let parts = self.canonical_parts();
        Fingerprint::of(parts.iter().map(String::as_str))
    }
}

/// `Some(Some(s))` for a string, `Some(None)` for absent or null, `None` (with an
/// error recorded) for another JSON type.
fn optional_string<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Option<&'a str>> {
    match object.get(field) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s)),
        Some(other) => {
            errors.push(FieldError::new(
                ErrorCode::InvalidField,
                format!("{field} must be a string, not {}", json_type(other)),
            ));
            None
        }
    }
}

fn required_string<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<&'a str> {
    match optional_string(object, field, errors)? {
        Some(s) => Some(s),
        None => {
            errors.push(FieldError::new(
                ErrorCode::MissingField,
                format!("{field} is required"),
            ));
            None
        }
    }
}

fn required_code<T>(
    object: &Map<String, Value>,
    field: &str,
    errors: &mut Vec<FieldError>,
    parse: impl FnOnce(String) -> Result<T, CodeError>,
) -> Option<T> {
    let text = required_string(object, field, errors)?;
    match parse(text.to_owned()) {
        Ok(code) => Some(code),
        Err(e) => {
            errors.push(FieldError::new(
                ErrorCode::InvalidField,
                format!("{field} {e}"),
            ));
            None
        }
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2024-11-18T00:00:00Z".parse().unwrap()
    }

    fn codes(body: Value) -> Vec<ErrorCode> {
        UsageRecord::from_json(&body, now())
            .unwrap_err()
            .into_iter()
            .map(|e| e.code)
            .collect()
    }

    #[test]
    fn a_minimal_record_defaults_to_a_delta_at_receipt() {
        let r = UsageRecord::from_json(
            &json!({"customer_agreement_id": "agreement_1", "billing_feature_code": "api_calls", "meter_value": "5", "extra": 1, "meter_type_code": null}),
            now(),
        )
        .unwrap();
        assert_eq!(r.meter_type, MeterType::Delta);
        assert_eq!(r.timestamp, None);
        assert_eq!(r.value.to_string(), "5");
    }

    #[test]
    fn every_problem_is_listed_with_its_code() {
        assert_eq!(codes(json!([])), [ErrorCode::InvalidJson]);
        assert_eq!(
            codes(json!({})),
            [
                ErrorCode::MissingField,
                ErrorCode::MissingField,
                ErrorCode::MissingField
            ]
        );
        assert_eq!(
            codes(
                json!({"customer_agreement_id": 5, "billing_feature_code": ["x"], "meter_value": 1.5,
                         "meter_usage_timestamp": 17, "meter_type_code": true})
            ),
            [ErrorCode::InvalidField; 5]
        );
        assert_eq!(
            codes(
                json!({"customer_agreement_id": "", "billing_feature_code": "f", "meter_value": "1e3",
                         "meter_usage_timestamp": "soon", "meter_type_code": "set"})
            ),
            [
                ErrorCode::InvalidField,
                ErrorCode::InvalidMeterValue,
                ErrorCode::InvalidTimestamp,
                ErrorCode::InvalidMeterType
            ]
        );
        assert_eq!(
            codes(
                json!({"customer_agreement_id": "a", "billing_feature_code": "f", "meter_value": "1",
                         "meter_usage_timestamp": "2030-01-01T00:00:00Z"})
            ),
            [ErrorCode::TimestampInFuture]
        );
    }

    #[test]
    fn fingerprints_compare_parsed_values() {
        let a = UsageRecord::from_json(&json!({"customer_agreement_id": "a", "billing_feature_code": "f", "meter_value": "007"}), now()).unwrap();
        let b = UsageRecord::from_json(&json!({"meter_value": "7", "billing_feature_code": "f", "customer_agreement_id": "a", "meter_type_code": "delta"}), now()).unwrap();
        let c = UsageRecord::from_json(
            &json!({"customer_agreement_id": "a", "billing_feature_code": "f", "meter_value": "8"}),
            now(),
        )
        .unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
