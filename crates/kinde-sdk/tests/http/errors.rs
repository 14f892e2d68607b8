//! How answers other than success become typed errors.

use std::time::Duration;

use kinde_sdk::models::CreateBillingAgreementRequest;
use kinde_sdk::models::ErrorCode;
use kinde_sdk::reqwest::StatusCode;
use kinde_sdk::{
    ApiClient, BillingAgreementsApi, BillingMeterUsageApi, Configuration,
    CreateMeterUsageRecordError,
};

use crate::support::{Canned, MockServer};

fn error_body(code: ErrorCode, message: &str) -> String {
    serde_json::json!({"errors": [{"code": code.as_str(), "message": message}]}).to_string()
}

async fn record_against(server: &MockServer) -> CreateMeterUsageRecordError {
    record_with(&server.meter_usage_api()).await
}

async fn record_with(api: &BillingMeterUsageApi) -> CreateMeterUsageRecordError {
    api.create_meter_usage_record_builder()
        .customer_agreement_id("agreement_1")
        .billing_feature_code("api_calls")
        .meter_value(1)
        .send()
        .await
        .unwrap_err()
}

fn variant(error: &CreateMeterUsageRecordError) -> &'static str {
    use CreateMeterUsageRecordError as E;
    match error {
        E::BadRequest(_) => "BadRequest",
        E::Forbidden(_) => "Forbidden",
        E::PayloadTooLarge(_) => "PayloadTooLarge",
        E::TooManyRequests { .. } => "TooManyRequests",
        E::ServiceUnavailable { .. } => "ServiceUnavailable",
        E::Unexpected { .. } => "Unexpected",
        E::Transport(_) => "Transport",
        E::Decode { .. } => "Decode",
        E::InvalidInput(_) => "InvalidInput",
        _ => "unknown",
    }
}

#[tokio::test]
async fn each_documented_status_has_its_variant() {
    let cases = [
        (400, ErrorCode::InvalidMeterValue, "BadRequest"),
        (403, ErrorCode::InsufficientScope, "Forbidden"),
        (413, ErrorCode::BodyTooLarge, "PayloadTooLarge"),
        (429, ErrorCode::TooManyRequests, "TooManyRequests"),
        (503, ErrorCode::ServiceUnavailable, "ServiceUnavailable"),
    ];
    for (status, code, expected) in cases {
        let message = format!("problem {status}");
        let server = MockServer::answering(Canned::new(status, &error_body(code, &message))).await;

        let error = record_against(&server).await;

        assert_eq!(variant(&error), expected, "{status}: {error:?}");
        assert_eq!(error.status(), Some(StatusCode::from_u16(status).unwrap()));
        assert_eq!(error.code(), Some(code.as_str()), "{status}");
        assert_eq!(error.message(), Some(message.as_str()), "{status}");
        let response = error.error_response().expect("a parsed body");
        assert_eq!(response.errors.len(), 1);
        assert_eq!(
            error.is_retryable(),
            matches!(status, 429 | 503),
            "{status}"
        );
    }
}

#[tokio::test]
async fn bad_request_lists_every_problem() {
    let body = r#"{"errors":[
        {"code":"MISSING_FIELD","message":"customer_agreement_id is required"},
        {"code":"INVALID_METER_VALUE","message":"meter_value must be a non-negative decimal"}]}"#;
    let server = MockServer::answering(Canned::new(400, body)).await;

    let error = record_against(&server).await;

    let CreateMeterUsageRecordError::BadRequest(response) = &error else {
        panic!("{error:?}");
    };
    let codes: Vec<_> = response.errors.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(codes, ["MISSING_FIELD", "INVALID_METER_VALUE"]);
    assert_eq!(error.code(), Some("MISSING_FIELD"));
    assert!(error.to_string().contains("INVALID_METER_VALUE"), "{error}");
}

#[tokio::test]
async fn rate_limit_reset_gives_the_delay() {
    let server = MockServer::answering(
        Canned::new(
            429,
            &error_body(ErrorCode::TooManyRequests, "rate limit exceeded"),
        )
        .header("RateLimit-Reset", "3")
        .header("Retry-After", "3"),
    )
    .await;

    let error = record_against(&server).await;

    let CreateMeterUsageRecordError::TooManyRequests { retry_after, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(*retry_after, Some(Duration::from_secs(3)));
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));
    assert!(error.is_retryable());
}

#[tokio::test]
async fn retry_after_alone_gives_the_delay() {
    let server = MockServer::answering(
        Canned::new(
            503,
            &error_body(ErrorCode::ServiceUnavailable, "storage unavailable"),
        )
        .header("Retry-After", "7"),
    )
    .await;

    let error = record_against(&server).await;

    assert!(matches!(
        error,
        CreateMeterUsageRecordError::ServiceUnavailable { retry_after: Some(d), .. } if d == Duration::from_secs(7)
    ));
}

#[tokio::test]
async fn a_body_that_is_not_an_error_response_is_kept() {
    let server = MockServer::answering(
        Canned::new(403, "<html><body>Forbidden by proxy</body></html>")
            .header("Content-Type", "text/html"),
    )
    .await;

    let error = record_against(&server).await;

    let CreateMeterUsageRecordError::Forbidden(response) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(
        response.errors[0].message,
        "<html><body>Forbidden by proxy</body></html>"
    );
    assert_eq!(error.code(), None);
}

#[tokio::test]
async fn other_statuses_are_unexpected() {
    let server = MockServer::answering(Canned::new(
        404,
        &error_body(
            ErrorCode::NotFound,
            "no route for GET /api/v1/billing/meter_usage",
        ),
    ))
    .await;

    let error = server
        .meter_usage_api()
        .get_meter_usage("agreement_1", None, None)
        .await
        .unwrap_err();

    let kinde_sdk::GetMeterUsageError::Unexpected {
        status,
        body,
        error: parsed,
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(*status, StatusCode::NOT_FOUND);
    assert!(body.contains("NOT_FOUND"));
    assert!(parsed.is_some());
    assert_eq!(error.code(), Some("NOT_FOUND"));
    assert!(!error.is_retryable());

    let server = MockServer::answering(Canned::new(500, "oops")).await;
    let error = record_against(&server).await;
    assert!(
        matches!(
            &error,
            CreateMeterUsageRecordError::Unexpected { error: None, .. }
        ),
        "{error:?}"
    );
    assert!(error.is_retryable(), "usage writes are idempotent");
}

#[tokio::test]
async fn an_undecodable_success_is_a_decode_error() {
    let server = MockServer::answering(Canned::new(200, "not json")).await;

    let error = record_against(&server).await;

    let CreateMeterUsageRecordError::Decode { status, body, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!((*status, body.as_str()), (StatusCode::OK, "not json"));
    assert!(std::error::Error::source(&error).is_some());
    assert!(!error.is_retryable(), "the record was stored");
}

#[tokio::test]
async fn a_timeout_is_a_transport_error() {
    let server = MockServer::hanging().await;
    let client = ApiClient::new(
        server
            .configuration()
            .with_timeout(Duration::from_millis(300)),
    )
    .unwrap();

    let error = record_with(&BillingMeterUsageApi::new(client.clone())).await;

    let CreateMeterUsageRecordError::Transport(transport) = &error else {
        panic!("{error:?}");
    };
    assert!(transport.is_timeout(), "{transport:?}");
    assert!(
        error.is_retryable(),
        "the key makes the write safe to send again"
    );
    assert_eq!(server.requests().len(), 1);

    let agreement = BillingAgreementsApi::new(client)
        .create_billing_agreement(CreateBillingAgreementRequest {
            customer_id: "customer_1".to_owned(),
            plan_code: "pro".to_owned(),
            is_invoice_now: None,
            is_prorate: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(
        agreement,
        kinde_sdk::CreateBillingAgreementError::Transport(_)
    ));
    assert!(!agreement.is_retryable(), "it may have been created");
}

#[tokio::test]
async fn a_refused_connection_is_a_retryable_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let client = ApiClient::new(Configuration::new(format!("http://{address}"))).unwrap();

    let error = record_with(&BillingMeterUsageApi::new(client)).await;

    let CreateMeterUsageRecordError::Transport(transport) = &error else {
        panic!("{error:?}");
    };
    assert!(transport.is_connect(), "{transport:?}");
    assert!(error.is_retryable());
}
