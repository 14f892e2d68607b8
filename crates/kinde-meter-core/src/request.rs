//! Parsing a `CreateMeterUsageRecordRequest` into a [`UsageRecord`] (docs/api.md).
//!
//! One parser for a single request's body and for each record of a batch. It
//! decodes the JSON itself rather than into a typed struct so that every problem
//! can be reported at once, with the right code: a missing field
//! (`MISSING_FIELD`), a wrong JSON type (`INVALID_FIELD`), a bad value
//! (`INVALID_METER_VALUE`, `INVALID_TIMESTAMP`, …). Unknown fields are ignored and
//! `null` means absent, as Kinde's generated clients send them.

use std::{borrow::Cow, fmt};

use jiff::Timestamp;
use kinde_meter_wire::json::Skip;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

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

/// Why a body is not a usage record.
#[derive(Debug)]
pub enum ParseError {
    /// The body is not JSON (exactly the texts a [`Value`] refuses, with its
    /// error). Never the answer for a body already decoded as a [`Value`].
    Json(serde_json::Error),
    /// The body is JSON but not a valid record: every problem, in field order.
    Fields(Vec<FieldError>),
}

impl UsageRecord {
    /// Parses a request body straight from its JSON text, without building a
    /// [`Value`] (a map, and a string per field), which is most of the cost of
    /// a request body on the hot path. `now` is the time of receipt, used for
    /// the future-timestamp bound. Every problem is reported.
    pub fn from_json_slice(body: &[u8], now: Timestamp) -> Result<UsageRecord, ParseError> {
        UsageRecord::parse(serde_json::from_slice(body), now)
    }

    /// Parses a request body already decoded as JSON (a record of a batch),
    /// with the same parser: the same records, problems and messages as
    /// [`from_json_slice`](UsageRecord::from_json_slice) on its text.
    pub fn from_json(body: &Value, now: Timestamp) -> Result<UsageRecord, ParseError> {
        UsageRecord::parse(RawBody::deserialize(body), now)
    }

    fn parse(
        body: Result<RawBody<'_>, serde_json::Error>,
        now: Timestamp,
    ) -> Result<UsageRecord, ParseError> {
        match body.map_err(ParseError::Json)? {
            RawBody::Object(fields) => UsageRecord::from_fields(&fields, now),
            RawBody::NotObject => Err(vec![not_an_object()]),
        }
        .map_err(ParseError::Fields)
    }

    fn from_fields(object: &RawFields<'_>, now: Timestamp) -> Result<UsageRecord, Vec<FieldError>> {
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

/// A batch request body (`{"records": [...]}`, docs/api.md#batch) decoded
/// straight from its text, without a [`Value`] in between: what the batch
/// route checks before it parses each record.
#[derive(Debug)]
pub enum BatchBody<'a> {
    /// The body is JSON but not an object.
    NotObject,
    /// `records` is absent or `null`.
    RecordsMissing,
    /// `records` is neither an array nor `null`.
    RecordsNotArray,
    /// `records`, each element as it arrived.
    Records(Vec<BatchRecord<'a>>),
}

/// One element of a batch's `records`, not parsed into a record yet.
#[derive(Debug)]
pub struct BatchRecord<'a>(RawBody<'a>);

impl<'a> BatchBody<'a> {
    /// Decodes a batch body. Exactly the texts a [`Value`] refuses are
    /// refused, with its error (everything not kept is decoded as a
    /// [`Value`] and dropped, as for a single record); a repeated key keeps
    /// its last value, as a [`Map`](serde_json::Map) does.
    pub fn from_json_slice(body: &'a [u8]) -> Result<BatchBody<'a>, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

impl BatchRecord<'_> {
    /// Whether the element is a JSON object (anything else makes the batch
    /// malformed as a whole).
    pub fn is_object(&self) -> bool {
        matches!(self.0, RawBody::Object(_))
    }

    /// The record, or every problem with it: the same record, problems and
    /// messages as [`UsageRecord::from_json`] on the element (never
    /// [`ParseError::Json`]). `now` as there.
    pub fn parse(&self, now: Timestamp) -> Result<UsageRecord, ParseError> {
        match &self.0 {
            RawBody::Object(fields) => UsageRecord::from_fields(fields, now),
            RawBody::NotObject => Err(vec![not_an_object()]),
        }
        .map_err(ParseError::Fields)
    }
}

impl<'de> Deserialize<'de> for BatchBody<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BatchVisitor)
    }
}

struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = BatchBody<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut body = BatchBody::RecordsMissing;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if key == "records" {
                body = map.next_value::<RecordsField<'de>>()?.0;
            } else {
                map.next_value::<Skip>()?;
            }
        }
        Ok(body)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(BatchBody::NotObject)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(BatchBody::NotObject)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(BatchBody::NotObject)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(BatchBody::NotObject)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(BatchBody::NotObject)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(BatchBody::NotObject)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(BatchBody::NotObject)
    }
}

/// The value of a batch's `records`, of whatever JSON type.
struct RecordsField<'a>(BatchBody<'a>);

impl<'de> Deserialize<'de> for RecordsField<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(RecordsVisitor)
            .map(RecordsField)
    }
}

struct RecordsVisitor;

impl<'de> Visitor<'de> for RecordsVisitor {
    type Value = BatchBody<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut records = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(128));
        while let Some(record) = seq.next_element::<RawBody<'de>>()? {
            records.push(BatchRecord(record));
        }
        Ok(BatchBody::Records(records))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(BatchBody::RecordsNotArray)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(BatchBody::RecordsMissing)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(BatchBody::RecordsNotArray)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(BatchBody::RecordsNotArray)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(BatchBody::RecordsNotArray)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(BatchBody::RecordsNotArray)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(BatchBody::RecordsNotArray)
    }
}

fn not_an_object() -> FieldError {
    FieldError::new(ErrorCode::InvalidJson, "the body must be a JSON object")
}

/// `Some(Some(s))` for a string, `Some(None)` for absent or null, `None` (with an
/// error recorded) for another JSON type.
fn optional_string<'a>(
    object: &'a RawFields<'_>,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Option<&'a str>> {
    match object.get(field) {
        RawField::Absent => Some(None),
        RawField::Text(s) => Some(Some(s)),
        RawField::Other(json_type) => {
            errors.push(FieldError::new(
                ErrorCode::InvalidField,
                format!("{field} must be a string, not {json_type}"),
            ));
            None
        }
    }
}

fn required_string<'a>(
    object: &'a RawFields<'_>,
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
    object: &RawFields<'_>,
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

/// The fields a record is parsed from, as they arrived.
#[derive(Debug, Default)]
struct RawFields<'a> {
    customer_agreement_id: RawField<'a>,
    billing_feature_code: RawField<'a>,
    meter_value: RawField<'a>,
    meter_usage_timestamp: RawField<'a>,
    meter_type_code: RawField<'a>,
}

/// One field: absent or `null`, a string, or another JSON type (its name, as
/// the messages say it: "a number", "an array", …).
#[derive(Debug, Default)]
enum RawField<'a> {
    #[default]
    Absent,
    Text(Cow<'a, str>),
    Other(&'static str),
}

/// The fields of a record request.
#[derive(Clone, Copy)]
enum FieldName {
    AgreementId,
    FeatureCode,
    Value,
    Timestamp,
    MeterType,
}

impl FieldName {
    fn parse(name: &str) -> Option<FieldName> {
        Some(match name {
            "customer_agreement_id" => FieldName::AgreementId,
            "billing_feature_code" => FieldName::FeatureCode,
            "meter_value" => FieldName::Value,
            "meter_usage_timestamp" => FieldName::Timestamp,
            "meter_type_code" => FieldName::MeterType,
            _ => return None,
        })
    }
}

impl<'a> RawFields<'a> {
    fn field_mut(&mut self, name: FieldName) -> &mut RawField<'a> {
        match name {
            FieldName::AgreementId => &mut self.customer_agreement_id,
            FieldName::FeatureCode => &mut self.billing_feature_code,
            FieldName::Value => &mut self.meter_value,
            FieldName::Timestamp => &mut self.meter_usage_timestamp,
            FieldName::MeterType => &mut self.meter_type_code,
        }
    }

    fn get(&self, field: &str) -> &RawField<'a> {
        match FieldName::parse(field) {
            Some(FieldName::AgreementId) => &self.customer_agreement_id,
            Some(FieldName::FeatureCode) => &self.billing_feature_code,
            Some(FieldName::Value) => &self.meter_value,
            Some(FieldName::Timestamp) => &self.meter_usage_timestamp,
            Some(FieldName::MeterType) => &self.meter_type_code,
            None => &RawField::Absent,
        }
    }
}

/// A request body as the parser sees it, decoded from JSON text or from a
/// [`Value`] (whose strings it borrows). Everything it does not keep (other
/// fields, a field of the wrong type, a body that is not an object) is decoded
/// as a [`Value`] and dropped, so that exactly the texts [`Value`] refuses are
/// refused, with its errors; a repeated key keeps its last value, as a [`Map`](serde_json::Map)
/// does.
#[derive(Debug)]
enum RawBody<'a> {
    Object(RawFields<'a>),
    NotObject,
}

impl<'de> Deserialize<'de> for RawBody<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BodyVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = RawBody<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = RawFields::default();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match FieldName::parse(&key) {
                Some(name) => *fields.field_mut(name) = map.next_value::<FieldValue<'de>>()?.0,
                None => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(RawBody::Object(fields))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(RawBody::NotObject)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(RawBody::NotObject)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(RawBody::NotObject)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(RawBody::NotObject)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(RawBody::NotObject)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(RawBody::NotObject)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(RawBody::NotObject)
    }
}

/// An object key, borrowed from the text when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor).map(Key)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
}

/// The value of a known field, of whatever JSON type.
struct FieldValue<'a>(RawField<'a>);

impl<'de> Deserialize<'de> for FieldValue<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor).map(FieldValue)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = RawField<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(RawField::Text(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(RawField::Text(Cow::Owned(s.to_owned())))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(RawField::Absent)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(RawField::Other("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(RawField::Other("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(RawField::Other("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(RawField::Other("a number"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(RawField::Other("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(RawField::Other("an object"))
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
        match UsageRecord::from_json(&body, now()) {
            Err(ParseError::Fields(problems)) => problems.into_iter().map(|e| e.code).collect(),
            other => panic!("{body}: {other:?}"),
        }
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

    /// `from_json_slice` answers what decoding into a `Value` and `from_json`
    /// answer: the record, or the same problems, or the same decoding error,
    /// whether the parser reads the text or a `Value`.
    #[test]
    fn parsing_the_text_directly_answers_as_parsing_a_value() {
        let bodies = [
            r#"{"customer_agreement_id": "agreement_1", "billing_feature_code": "api_calls", "meter_value": "5"}"#,
            r#"{"customer_agreement_id":"a","billing_feature_code":"f","meter_value":"007","meter_type_code":"absolute","meter_usage_timestamp":"2024-11-17T13:32:03+11:00"}"#,
            r#"{"customer_agreement_id":"a","billing_feature_code":"f","meter_value":"1","meter_usage_timestamp":null,"meter_type_code":null,"extra":{"deep":[1,2,{"x":null}]}}"#,
            // Escapes in keys and values; duplicate keys keep the last value.
            r#"{"customer_agreement_\u0069d":"a\u0062","billing_feature_code":"f","meter_value":"1","meter_value":"2"}"#,
            r#"{"meter_value":"1","meter_value":3,"customer_agreement_id":"a","billing_feature_code":"f"}"#,
            // Every kind of problem, and every JSON type in a string field.
            r#"{}"#,
            r#"{"customer_agreement_id": 5, "billing_feature_code": ["x"], "meter_value": 1.5, "meter_usage_timestamp": {"a": 1}, "meter_type_code": true}"#,
            r#"{"customer_agreement_id": -1, "billing_feature_code": 18446744073709551615, "meter_value": false}"#,
            r#"{"customer_agreement_id": "", "billing_feature_code": "f", "meter_value": "1e3", "meter_usage_timestamp": "soon", "meter_type_code": "set"}"#,
            r#"{"customer_agreement_id": "a", "billing_feature_code": "f", "meter_value": "1", "meter_usage_timestamp": "2030-01-01T00:00:00Z"}"#,
            // Not an object.
            r#"[]"#,
            r#"[1, {"a": [2]}]"#,
            r#""text""#,
            r#"12"#,
            r#"-1.5"#,
            r#"true"#,
            r#"null"#,
            // Not JSON, or refused by Value: the same error, word for word.
            r#""#,
            r#"{"#,
            r#"not json"#,
            r#"{"customer_agreement_id": "a",}"#,
            r#"{"a": 1} trailing"#,
            r#"{"extra": 1e400, "customer_agreement_id": "a"}"#,
            r#"{"meter_value": [1e400]}"#,
            r#"{"meter_value": "\ud800"}"#,
            r#"{"meter_value": "a"#,
        ];
        let nested = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let deep_field = format!(
            r#"{{"meter_value": {}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let all = bodies.iter().map(|b| b.as_bytes().to_vec()).chain([
            nested.into_bytes(),
            deep_field.into_bytes(),
            b"{\"meter_value\": \"\xff\"}".to_vec(),
            b"{\"k\xff\": 1}".to_vec(),
        ]);
        for body in all {
            let outcome = |parsed: Result<UsageRecord, ParseError>| match parsed {
                Ok(record) => Ok(Ok(record)),
                Err(ParseError::Fields(problems)) => Ok(Err(problems)),
                Err(ParseError::Json(e)) => Err(e.to_string()),
            };
            let via_value = kinde_meter_wire::json::from_slice(&body)
                .map_err(|e| e.to_string())
                .and_then(|value| outcome(UsageRecord::from_json(&value, now())));
            let direct = outcome(UsageRecord::from_json_slice(&body, now()));
            assert_eq!(direct, via_value, "{}", String::from_utf8_lossy(&body));
        }
    }

    /// What the batch route made of a body when it decoded it into a `Value`
    /// first, and what it makes of it with [`BatchBody`]: the same JSON
    /// errors word for word, the same whole-request refusals, the same
    /// elements, records and problems.
    #[derive(Debug, PartialEq)]
    enum BatchOutcome {
        NotJson(String),
        NotObject,
        RecordsMissing,
        RecordsNotArray,
        Records(Vec<(bool, Result<UsageRecord, Vec<FieldError>>)>),
    }

    fn fields(parsed: Result<UsageRecord, ParseError>) -> Result<UsageRecord, Vec<FieldError>> {
        parsed.map_err(|e| match e {
            ParseError::Fields(problems) => problems,
            ParseError::Json(e) => panic!("a record of a decoded body: {e}"),
        })
    }

    fn batch_via_value(body: &[u8]) -> BatchOutcome {
        let value: Value = match serde_json::from_slice(body) {
            Ok(value) => value,
            Err(e) => return BatchOutcome::NotJson(e.to_string()),
        };
        let Value::Object(mut object) = value else {
            return BatchOutcome::NotObject;
        };
        match object.remove("records") {
            None | Some(Value::Null) => BatchOutcome::RecordsMissing,
            Some(Value::Array(records)) => BatchOutcome::Records(
                records
                    .iter()
                    .map(|r| (r.is_object(), fields(UsageRecord::from_json(r, now()))))
                    .collect(),
            ),
            Some(_) => BatchOutcome::RecordsNotArray,
        }
    }

    fn batch_direct(body: &[u8]) -> BatchOutcome {
        match BatchBody::from_json_slice(body) {
            Err(e) => BatchOutcome::NotJson(e.to_string()),
            Ok(BatchBody::NotObject) => BatchOutcome::NotObject,
            Ok(BatchBody::RecordsMissing) => BatchOutcome::RecordsMissing,
            Ok(BatchBody::RecordsNotArray) => BatchOutcome::RecordsNotArray,
            Ok(BatchBody::Records(records)) => BatchOutcome::Records(
                records
                    .iter()
                    .map(|r| (r.is_object(), fields(r.parse(now()))))
                    .collect(),
            ),
        }
    }

    #[test]
    fn a_batch_parsed_from_its_text_answers_as_one_decoded_as_a_value() {
        let ok = r#"{"customer_agreement_id":"a","billing_feature_code":"f","meter_value":"5"}"#;
        let bodies = [
            format!(r#"{{"records":[{ok},{ok}]}}"#),
            format!(r#"{{"extra":{{"deep":[1,{{"x":null}}]}},"records":[{ok}],"more":1}}"#),
            r#"{"records":[]}"#.to_owned(),
            // Every kind of problem in a record, and records that are not objects.
            r#"{"records":[{}, {"customer_agreement_id": 5, "billing_feature_code": ["x"], "meter_value": 1.5, "meter_usage_timestamp": {"a": 1}, "meter_type_code": true}]}"#.to_owned(),
            r#"{"records":[{"customer_agreement_id": "", "billing_feature_code": "f", "meter_value": "1e3", "meter_usage_timestamp": "soon", "meter_type_code": "set"}]}"#.to_owned(),
            r#"{"records":[{"customer_agreement_id": "a", "billing_feature_code": "f", "meter_value": "1", "meter_usage_timestamp": "2030-01-01T00:00:00Z"}]}"#.to_owned(),
            format!(r#"{{"records":[{ok}, 1, "x", null, [], true, -2, 1.5]}}"#),
            // Escaped keys; the last of repeated keys wins.
            format!(r#"{{"r\u0065cords":[{ok}]}}"#),
            format!(r#"{{"records":5,"records":[{ok}]}}"#),
            format!(r#"{{"records":[{ok}],"records":null}}"#),
            format!(r#"{{"records":[{ok}],"records":{{"a":[1]}}}}"#),
            // Whole-request refusals.
            r#"{}"#.to_owned(),
            r#"{"records":null}"#.to_owned(),
            r#"{"records":{}}"#.to_owned(),
            r#"{"records":"x"}"#.to_owned(),
            r#"{"records":1}"#.to_owned(),
            r#"{"records":-1}"#.to_owned(),
            r#"{"records":1.5}"#.to_owned(),
            r#"{"records":false}"#.to_owned(),
            r#"[]"#.to_owned(),
            r#"[{"records":[]}]"#.to_owned(),
            r#""records""#.to_owned(),
            r#"12"#.to_owned(),
            r#"-3"#.to_owned(),
            r#"0.5"#.to_owned(),
            r#"true"#.to_owned(),
            r#"null"#.to_owned(),
            // Not JSON, or refused by Value.
            r#""#.to_owned(),
            r#"{"#.to_owned(),
            r#"{"records":[{"#.to_owned(),
            format!(r#"{{"records":[{ok},]}}"#),
            format!(r#"{{"records":[{ok}]}} trailing"#),
            r#"{"records":[{"meter_value": 1e400}]}"#.to_owned(),
            r#"{"x": 1e400, "records":[]}"#.to_owned(),
            r#"{"records": 1e400}"#.to_owned(),
            r#"{"records":[{"meter_value": "\ud800"}]}"#.to_owned(),
            r#"{"records":[1e400]}"#.to_owned(),
        ];
        let deep = |prefix: &str, suffix: &str| {
            format!("{prefix}{}{}{suffix}", "[".repeat(200), "]".repeat(200))
        };
        let all = bodies.iter().map(|b| b.as_bytes().to_vec()).chain([
            deep("", "").into_bytes(),
            deep(r#"{"records":"#, "}").into_bytes(),
            deep(r#"{"records":["#, "]}").into_bytes(),
            deep(r#"{"records":[{"meter_value":"#, "}]}").into_bytes(),
            deep(r#"{"other":"#, "}").into_bytes(),
            b"{\"records\":[{\"meter_value\": \"\xff\"}]}".to_vec(),
            b"{\"rec\xff\": 1}".to_vec(),
        ]);
        for body in all {
            assert_eq!(
                batch_direct(&body),
                batch_via_value(&body),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
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
