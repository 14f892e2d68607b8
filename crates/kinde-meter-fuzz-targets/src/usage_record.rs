//! The usage record parser, `UsageRecord::from_json_slice` (docs/api.md#record-usage).

use kinde_meter_core::request::{ParseError, UsageRecord};
use kinde_meter_core::timestamp::{MAX_FUTURE, format_utc};
use kinde_meter_wire::CreateMeterUsageRecordRequest;

use crate::now;

/// Parses `data` as a request body. Properties: the parse of the text and of
/// the same text decoded as a JSON value (`kinde_meter_wire::json`, every key
/// an ordinary key, as the server decodes bodies) agree (records and every
/// problem); the body is refused as JSON exactly when it is not JSON; a
/// refusal names at least one problem; an accepted record lies at most 5
/// minutes after receipt, and written back as a request it parses to the same
/// record.
pub fn usage_record(data: &[u8]) {
    let now = now();
    let parsed = UsageRecord::from_json_slice(data, now);
    match kinde_meter_wire::json::from_slice(data) {
        Err(_) => assert!(
            matches!(parsed, Err(ParseError::Json(_))),
            "a text serde_json refuses must be refused as JSON, got {parsed:?}"
        ),
        Ok(value) => match (&parsed, UsageRecord::from_json(&value, now)) {
            (Ok(from_text), Ok(from_value)) => assert_eq!(from_text, &from_value),
            (Err(ParseError::Fields(from_text)), Err(ParseError::Fields(from_value))) => {
                assert_eq!(from_text, &from_value)
            }
            (from_text, from_value) => {
                panic!(
                    "the text and its JSON value parse differently: {from_text:?} vs {from_value:?}"
                )
            }
        },
    }
    let record = match parsed {
        Ok(record) => record,
        Err(ParseError::Fields(problems)) => {
            assert!(!problems.is_empty(), "a refusal without a problem");
            return;
        }
        Err(ParseError::Json(_)) => return,
    };
    if let Some(at) = record.timestamp {
        assert!(
            at <= now + MAX_FUTURE,
            "accepted a timestamp past the bound: {at}"
        );
    }
    // Written back the way a client would send it. Instants before year 0
    // print with a six-digit year, which no client writes; those stay out.
    let year_zero: jiff::Timestamp = "0000-01-01T00:00:00Z".parse().expect("an instant");
    if record.timestamp.is_some_and(|at| at < year_zero) {
        return;
    }
    let request = CreateMeterUsageRecordRequest {
        customer_agreement_id: record.agreement_id.to_string(),
        billing_feature_code: record.feature_code.to_string(),
        meter_value: record.value.to_string(),
        meter_usage_timestamp: record.timestamp.map(format_utc),
        meter_type_code: Some(record.meter_type),
    };
    let body = serde_json::to_vec(&request).expect("a request serialises");
    match UsageRecord::from_json_slice(&body, now) {
        Ok(again) => {
            assert_eq!(
                again,
                record,
                "written back: {}",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(again.fingerprint(), record.fingerprint());
        }
        Err(error) => panic!(
            "the record written back is refused: {error:?}, body {}",
            String::from_utf8_lossy(&body)
        ),
    }
}
