//! `POST /api/v1/billing/meter_usage` (Kinde's endpoint) and its batch form.

use axum::{
    extract::State,
    http::HeaderValue,
    response::{IntoResponse, Response},
};
use jiff::Timestamp;
use kinde_meter_core::{
    ErrorCode,
    idempotency::Fingerprint,
    request::{BatchBody, BatchRecord, FieldError, ParseError, UsageRecord},
};
use kinde_meter_store::{
    IdempotencyClaim, RecordFailure, RecordResult, SubmissionKind, SubmissionOutcome,
    UsageSubmission,
};
use kinde_meter_wire::{
    BatchRecordResult, CreateMeterUsageRecordResponse, CreateMeterUsageRecordsBatchResponse,
    ErrorResponse, json,
};
use serde_json::Value;

use crate::error::ApiError;
use crate::extract::{Caller, IdempotencyKeyHeader, JsonText, invalid_json};
use crate::state::AppState;

/// Most records in one batch request.
pub const MAX_BATCH_RECORDS: usize = 100;

/// Create a meter usage record (Kinde's `CreateMeterUsageRecord`).
#[utoipa::path(
    post,
    path = "/api/v1/billing/meter_usage",
    tag = "Billing Meter Usage",
    operation_id = "CreateMeterUsageRecord",
    request_body = kinde_meter_wire::CreateMeterUsageRecordRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[\x21-\x7E]{1,255}$", description = "1-255 visible ASCII characters; a retry with the same key and body returns the original response")),
    responses(
        (status = 200, description = "Usage record created (committed)", body = CreateMeterUsageRecordResponse),
        (status = 400, description = "Invalid record, or refused: unknown or ended agreement, feature not on the plan or not metered, a hard limit it would pass (ENTITLEMENT_LIMIT_EXCEEDED); nothing stored", body = ErrorResponse),
    ),
)]
pub async fn create_meter_usage_record(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    JsonText(body): JsonText,
) -> Result<Response, ApiError> {
    let now = state.clock.now();
    // Decoded straight into the record's fields, without a `Value` in between;
    // a body that is not JSON is refused before the key is, as with `JsonBody`.
    let record = match UsageRecord::from_json_slice(&body, now) {
        Err(ParseError::Json(e)) => return Err(invalid_json(e)),
        parsed => parsed,
    };
    let key = key?;
    let record = record.map_err(|error| match error {
        ParseError::Fields(problems) => ApiError::fields(problems),
        ParseError::Json(e) => invalid_json(e),
    })?;
    let idempotency = key.map(|key| IdempotencyClaim {
        key,
        fingerprint: record.fingerprint(),
    });
    let outcome = state
        .store
        .submit_usage(UsageSubmission {
            client_id: caller.client_id.clone(),
            idempotency,
            records: vec![Ok(record)],
            received_at: now,
            kind: SubmissionKind::Single,
        })
        .await?;
    let (results, replayed) = results_of(outcome)?;
    match results.into_iter().next() {
        Some(Ok(())) => Ok(replay_marked(success(), replayed)),
        // Every record failure is a 400 with its code; one remembered under the
        // key (a hard-limit refusal, `ENTITLEMENT_LIMIT_EXCEEDED`) is replayed
        // as such.
        Some(Err(failure)) => Ok(replay_marked(
            ApiError::bad_request(failure.code, failure.message).into_response(),
            replayed,
        )),
        None => Err(ApiError::unavailable(
            "storage returned no result; nothing was stored",
        )),
    }
}

/// Create up to 100 meter usage records at once (not in Kinde).
#[utoipa::path(
    post,
    path = "/api/v1/billing/meter_usage/batch",
    tag = "Billing Meter Usage",
    operation_id = "CreateMeterUsageRecordsBatch",
    request_body = kinde_meter_wire::CreateMeterUsageRecordsBatchRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[\x21-\x7E]{1,255}$", description = "1-255 visible ASCII characters; applies to the whole batch")),
    responses(
        (status = 200, description = "Each record validated and stored on its own; see results", body = CreateMeterUsageRecordsBatchResponse),
        (status = 400, description = "Not a batch, or over 100 records", body = ErrorResponse),
    ),
)]
pub async fn create_meter_usage_records_batch(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    JsonText(body): JsonText,
) -> Result<Response, ApiError> {
    let now = state.clock.now();
    // Decoded straight into the records' fields, without a `Value` in between;
    // a body that is not JSON is refused before the key is, as with `JsonBody`.
    let batch = BatchBody::from_json_slice(&body).map_err(invalid_json)?;
    let key = key?;
    let records = match batch {
        BatchBody::NotObject => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidJson,
                "the body must be a JSON object",
            ));
        }
        BatchBody::RecordsMissing => {
            return Err(ApiError::bad_request(
                ErrorCode::MissingField,
                "records is required",
            ));
        }
        BatchBody::RecordsNotArray => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidField,
                "records must be an array",
            ));
        }
        BatchBody::Records(records) => records,
    };
    if records.len() > MAX_BATCH_RECORDS {
        return Err(ApiError::bad_request(
            ErrorCode::BatchTooLarge,
            format!(
                "a batch holds at most {MAX_BATCH_RECORDS} records, got {}",
                records.len()
            ),
        ));
    }
    // Per-record results are for records that are objects; anything else
    // makes the batch malformed as a whole (`docs/api.md`).
    let not_objects: Vec<FieldError> = records
        .iter()
        .enumerate()
        .filter(|(_, raw)| !raw.is_object())
        .map(|(i, _)| {
            FieldError::new(
                ErrorCode::InvalidField,
                format!("records[{i}] must be a JSON object"),
            )
        })
        .collect();
    if !not_objects.is_empty() {
        return Err(ApiError::fields(not_objects));
    }
    let parsed: Vec<Result<UsageRecord, RecordFailure>> = records
        .iter()
        .map(|raw| raw.parse(now).map_err(summarise))
        .collect();
    // Only a request with a key is fingerprinted.
    let idempotency = key.map(|key| IdempotencyClaim {
        key,
        fingerprint: batch_fingerprint(&body, &records, &parsed),
    });
    let outcome = state
        .store
        .submit_usage(UsageSubmission {
            client_id: caller.client_id.clone(),
            idempotency,
            records: parsed,
            received_at: now,
            kind: SubmissionKind::Batch,
        })
        .await?;
    let (results, replayed) = results_of(outcome)?;
    Ok(replay_marked(batch_response(&results), replayed))
}

/// The fingerprint of a batch request: `batch`, then each record's canonical
/// parts, or, for a record that does not parse, its JSON text as a `Value`
/// writes it (kept as it was when the route decoded bodies into a `Value`, so
/// that keys stored before match the same request after).
fn batch_fingerprint(
    body: &[u8],
    records: &[BatchRecord<'_>],
    parsed: &[Result<UsageRecord, RecordFailure>],
) -> Fingerprint {
    let mut parts = vec!["batch".to_owned()];
    // Decoded only if some record needs its text (rare: a refused record).
    let mut as_value: Option<Value> = None;
    for (index, (raw, record)) in records.iter().zip(parsed).enumerate() {
        match record {
            Ok(record) => parts.extend(record.canonical_parts()),
            // The fingerprint must not depend on the time of receipt: a record
            // refused only for a timestamp in the future is fingerprinted by its
            // parse without that bound, so replaying the same body later still
            // matches its key (`docs/api.md`, idempotency).
            Err(_) => match raw.parse(Timestamp::MAX) {
                Ok(record) => parts.extend(record.canonical_parts()),
                Err(_) => {
                    let value = as_value
                        .get_or_insert_with(|| json::from_slice(body).unwrap_or(Value::Null));
                    parts.push(value["records"][index].to_string());
                }
            },
        }
    }
    Fingerprint::of(parts.iter().map(String::as_str))
}
/// Kinde's answer to a stored record, `CreateMeterUsageRecordResponse::success()`
/// serialized once rather than per request (a test keeps the two equal).
const SUCCESS_BODY: &str = r#"{"message":"Success","code":"OK"}"#;

fn success() -> Response {
    super::json_text(SUCCESS_BODY)
}

/// The batch's 200 answer, `CreateMeterUsageRecordsBatchResponse` serialized
/// with its `OK` entries written as one constant text each (a test keeps the
/// two equal).
fn batch_response(results: &[RecordResult]) -> Response {
    use std::fmt::Write as _;
    let mut body = String::with_capacity(64 + results.len() * 48);
    body.push_str(r#"{"code":"OK","message":"Success","results":["#);
    for (index, result) in results.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        match result {
            Ok(()) => {
                let _ = write!(
                    body,
                    r#"{{"index":{index},"code":"OK","message":"Success"}}"#
                );
            }
            Err(failure) => {
                let entry = BatchRecordResult {
                    index,
                    code: failure.code.as_str().to_owned(),
                    message: failure.message.clone(),
                };
                // Serializing a struct of strings and an integer cannot fail.
                body.push_str(&serde_json::to_string(&entry).unwrap_or_default());
            }
        }
    }
    body.push_str("]}");
    super::json_text(body)
}

/// A batch result has room for one code: the first problem's, with every
/// problem's message.
fn summarise(error: ParseError) -> RecordFailure {
    let problems = match error {
        ParseError::Fields(problems) => problems,
        // Not reached: a batch's record is parsed from a decoded body.
        ParseError::Json(e) => return RecordFailure::new(ErrorCode::InvalidJson, e.to_string()),
    };
    let code = problems.first().map_or(ErrorCode::InvalidField, |p| p.code);
    let message = problems
        .into_iter()
        .map(|p| p.message)
        .collect::<Vec<_>>()
        .join("; ");
    RecordFailure::new(code, message)
}

/// The per-record results of a submission and whether they are a replay; a key
/// reused with another body is the one outcome that answers 400 as a whole.
fn results_of(outcome: SubmissionOutcome) -> Result<(Vec<RecordResult>, bool), ApiError> {
    match outcome {
        SubmissionOutcome::Processed(results) => Ok((results, false)),
        SubmissionOutcome::Replayed(results) => Ok((results, true)),
        SubmissionOutcome::KeyReused => Err(key_reused()),
    }
}

fn key_reused() -> ApiError {
    ApiError::bad_request(
        ErrorCode::IdempotencyKeyReused,
        "this Idempotency-Key was already used with a different request body",
    )
}

/// Marks a replayed answer the way Stripe does, so clients can tell.
fn replay_marked(mut response: Response, replayed: bool) -> Response {
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

#[cfg(test)]
mod tests {
    use kinde_meter_wire::{OK_CODE, SUCCESS_MESSAGE};

    use super::*;

    #[test]
    fn the_batch_body_is_the_wire_type_serialized() {
        let results: Vec<RecordResult> = vec![
            Ok(()),
            Err(RecordFailure::new(
                ErrorCode::FeatureNotMetered,
                "billing_feature_code: \"quoted\" \u{1} é",
            )),
            Ok(()),
        ];
        let wire = CreateMeterUsageRecordsBatchResponse {
            code: OK_CODE.to_owned(),
            message: SUCCESS_MESSAGE.to_owned(),
            results: results
                .iter()
                .cloned()
                .enumerate()
                .map(|(index, r)| match r {
                    Ok(()) => BatchRecordResult {
                        index,
                        code: OK_CODE.to_owned(),
                        message: SUCCESS_MESSAGE.to_owned(),
                    },
                    Err(f) => BatchRecordResult {
                        index,
                        code: f.code.as_str().to_owned(),
                        message: f.message,
                    },
                })
                .collect(),
        };
        for results in [&results[..], &[]] {
            let wire = CreateMeterUsageRecordsBatchResponse {
                results: wire.results[..results.len()].to_vec(),
                ..wire.clone()
            };
            let response = batch_response(results);
            let body = body_text(response);
            assert_eq!(body, serde_json::to_string(&wire).unwrap());
        }
    }

    fn body_text(response: Response) -> String {
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn the_success_answer_is_the_json_body_alone() {
        let response = success();
        assert_eq!(response.status(), axum::http::StatusCode::OK);
        assert_eq!(response.headers().len(), 1);
        assert_eq!(
            response.headers()[axum::http::header::CONTENT_TYPE],
            "application/json"
        );
        assert_eq!(body_text(response), SUCCESS_BODY);
    }

    #[test]
    fn the_success_body_is_the_wire_type_serialized() {
        let serialized = serde_json::to_string(&CreateMeterUsageRecordResponse::success()).unwrap();
        assert_eq!(SUCCESS_BODY, serialized);
    }
}
