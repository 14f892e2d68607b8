//! Retries on the wire: which answers are retried, after how long, and that
//! every attempt of a usage write carries the same key and body.

use std::time::{Duration, Instant};

use kinde_sdk::models::CreateBillingAgreementRequest;
use kinde_sdk::{
    ApiClient, BillingAgreementsApi, BillingMeterUsageApi, CreateBillingAgreementError,
    CreateMeterUsageRecordError, RetryPolicy,
};

use crate::support::{Canned, MockServer};

const UNAVAILABLE: &str = r#"{"errors":[{"code":"SERVICE_UNAVAILABLE","message":"later"}]}"#;
const LIMITED: &str = r#"{"errors":[{"code":"TOO_MANY_REQUESTS","message":"slow down"}]}"#;

fn quick() -> RetryPolicy {
    RetryPolicy::default()
        .with_initial_backoff(Duration::from_millis(10))
        .with_max_backoff(Duration::from_millis(50))
}

fn api(server: &MockServer, policy: RetryPolicy) -> BillingMeterUsageApi {
    BillingMeterUsageApi::new(
        ApiClient::new(server.configuration().with_retry_policy(policy)).unwrap(),
    )
}

async fn record(api: &BillingMeterUsageApi) -> Result<(), CreateMeterUsageRecordError> {
    api.create_meter_usage_record_builder()
        .customer_agreement_id("agreement_1")
        .billing_feature_code("api_calls")
        .meter_value("1.5")
        .send()
        .await
        .map(drop)
}

#[tokio::test]
async fn every_attempt_carries_the_same_key_and_body() {
    let server = MockServer::start(vec![
        Canned::new(503, UNAVAILABLE),
        Canned::new(502, "bad gateway"),
        Canned::new(500, ""),
        Canned::ok(),
    ])
    .await;
    record(&api(&server, quick())).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    let key = requests[0].header("idempotency-key").unwrap().to_owned();
    assert_eq!(key.len(), 32);
    for request in &requests {
        assert_eq!(request.header("idempotency-key"), Some(key.as_str()));
        assert_eq!(request.body, requests[0].body);
    }
}

#[tokio::test]
async fn a_429_waits_for_the_reset() {
    let server = MockServer::start(vec![
        Canned::new(429, LIMITED).header("RateLimit-Reset", "1"),
        Canned::ok(),
    ])
    .await;
    let started = Instant::now();
    record(&api(&server, quick())).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn attempts_and_time_are_bounded() {
    let server = MockServer::answering(Canned::new(503, UNAVAILABLE)).await;
    let error = record(&api(&server, quick().with_max_attempts(3)))
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        CreateMeterUsageRecordError::ServiceUnavailable { .. }
    ));
    assert_eq!(server.requests().len(), 3);

    // A reset beyond the budget is not waited for: the 429 is the answer.
    let server =
        MockServer::answering(Canned::new(429, LIMITED).header("Retry-After", "3600")).await;
    let started = Instant::now();
    let error = record(&api(&server, quick())).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3600)));
    assert_eq!(server.requests().len(), 1);

    let server = MockServer::answering(Canned::new(503, UNAVAILABLE)).await;
    record(&api(&server, RetryPolicy::none()))
        .await
        .unwrap_err();
    assert_eq!(server.requests().len(), 1, "RetryPolicy::none sends once");
}

#[tokio::test]
async fn refusals_are_not_retried() {
    for status in [400, 403, 413] {
        let server = MockServer::answering(Canned::new(
            status,
            r#"{"errors":[{"code":"X","message":"no"}]}"#,
        ))
        .await;
        record(&api(&server, quick())).await.unwrap_err();
        assert_eq!(server.requests().len(), 1, "{status}");
    }
}

#[tokio::test]
async fn creating_an_agreement_is_retried_only_when_nothing_happened() {
    let request = CreateBillingAgreementRequest {
        customer_id: "customer_1".to_owned(),
        plan_code: "pro".to_owned(),
        is_invoice_now: None,
        is_prorate: None,
    };
    let agreements = |server: &MockServer| {
        BillingAgreementsApi::new(
            ApiClient::new(server.configuration().with_retry_policy(quick())).unwrap(),
        )
    };

    let server = MockServer::start(vec![
        Canned::new(503, UNAVAILABLE),
        Canned::new(429, LIMITED).header("Retry-After", "0"),
        Canned::ok(),
    ])
    .await;
    agreements(&server)
        .create_billing_agreement(request.clone())
        .await
        .unwrap();
    assert_eq!(server.requests().len(), 3);

    // A 502 or a timeout leaves the outcome unknown: a second agreement would
    // end the first, so the error is returned.
    let server = MockServer::answering(Canned::new(502, "bad gateway")).await;
    let error = agreements(&server)
        .create_billing_agreement(request.clone())
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        CreateBillingAgreementError::Unexpected { .. }
    ));
    assert_eq!(server.requests().len(), 1);

    let server = MockServer::hanging().await;
    let client = ApiClient::new(
        server
            .configuration()
            .with_retry_policy(quick())
            .with_timeout(Duration::from_millis(200)),
    )
    .unwrap();
    let error = BillingAgreementsApi::new(client)
        .create_billing_agreement(request)
        .await
        .unwrap_err();
    assert!(matches!(error, CreateBillingAgreementError::Transport(_)));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_timed_out_usage_write_is_retried_with_its_key() {
    let server = MockServer::hanging().await;
    let client = ApiClient::new(
        server
            .configuration()
            .with_retry_policy(quick().with_max_attempts(3))
            .with_timeout(Duration::from_millis(200)),
    )
    .unwrap();
    let error = record(&BillingMeterUsageApi::new(client))
        .await
        .unwrap_err();
    assert!(matches!(error, CreateMeterUsageRecordError::Transport(_)));
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    let key = requests[0].header("idempotency-key");
    assert!(requests.iter().all(|r| r.header("idempotency-key") == key));
}
