//! Idempotency (docs/api.md#idempotency): same key and body → one record and the same answer;
//! another body → IDEMPOTENCY_KEY_REUSED; concurrent duplicates → one record.

use crate::support::{TestApp, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn post_with_key(app: &TestApp, token: &str, key: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(app.url("/api/v1/billing/meter_usage"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retry_returns_the_original_answer_and_records_nothing_new() {
    let app = TestApp::spawn().await;
    let a = app.create_agreement("cust", "pro").await;
    let body = json!({"customer_agreement_id": a, "billing_feature_code": "api_calls", "meter_value": "5"});
    let first = post_with_key(&app, &app.token, "key-1", &body).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body = first.text().await.unwrap();
    let retry = post_with_key(&app, &app.token, "key-1", &body).await;
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.text().await.unwrap(), first_body);
    let usage = app.usage(&a, "api_calls", None).await;
    assert_eq!(
        (usage["value"].as_str(), usage["record_count"].as_u64()),
        (Some("5"), Some(1))
    );

    // The same body written differently is the same request.
    let same = json!({"meter_value": "005", "billing_feature_code": "api_calls", "customer_agreement_id": a, "meter_type_code": "delta"});
    assert_eq!(
        post_with_key(&app, &app.token, "key-1", &same)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(app.usage_value(&a, "api_calls", None).await, "5");
}

#[tokio::test]
async fn the_same_key_with_another_body_is_refused() {
    let app = TestApp::spawn().await;
    let a = app.create_agreement("cust", "pro").await;
    let body = json!({"customer_agreement_id": a, "billing_feature_code": "api_calls", "meter_value": "5"});
    assert_eq!(
        post_with_key(&app, &app.token, "key-2", &body)
            .await
            .status(),
        StatusCode::OK
    );
    let other = json!({"customer_agreement_id": a, "billing_feature_code": "api_calls", "meter_value": "6"});
    assert_error(
        post_with_key(&app, &app.token, "key-2", &other).await,
        StatusCode::BAD_REQUEST,
        &["IDEMPOTENCY_KEY_REUSED"],
    )
    .await;
    assert_eq!(app.usage_value(&a, "api_calls", None).await, "5");
}

#[tokio::test]
async fn keys_belong_to_one_client() {
    let app = TestApp::spawn().await;
    let a = app.create_agreement("cust", "pro").await;
    let body = json!({"customer_agreement_id": a, "billing_feature_code": "api_calls", "meter_value": "5"});
    assert_eq!(
        post_with_key(&app, &app.token, "shared", &body)
            .await
            .status(),
        StatusCode::OK
    );
    let other_client = app.token_for_client("another-client");
    assert_eq!(
        post_with_key(&app, &other_client, "shared", &body)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(app.usage_value(&a, "api_calls", None).await, "10");
}

#[tokio::test]
async fn twenty_concurrent_duplicates_store_one_record() {
    let app = TestApp::spawn().await;
    let a = app.create_agreement("cust", "pro").await;
    let body = json!({"customer_agreement_id": a, "billing_feature_code": "api_calls", "meter_value": "7"});
    let sends = (0..20).map(|_| post_with_key(&app, &app.token, "concurrent-key", &body));
    let responses = futures::future::join_all(sends).await;
    for r in responses {
        assert_eq!(r.status(), StatusCode::OK);
    }
    let usage = app.usage(&a, "api_calls", None).await;
    assert_eq!(
        (usage["value"].as_str(), usage["record_count"].as_u64()),
        (Some("7"), Some(1))
    );
}

#[tokio::test]
async fn a_failed_request_does_not_claim_its_key() {
    let app = TestApp::spawn().await;
    let a = app.create_agreement("cust", "pro").await;
    let wrong = json!({"customer_agreement_id": a, "billing_feature_code": "teleports", "meter_value": "1"});
    assert_error(
        post_with_key(&app, &app.token, "k", &wrong).await,
        StatusCode::BAD_REQUEST,
        &["FEATURE_NOT_FOUND"],
    )
    .await;
    let right = json!({"customer_agreement_id": a, "billing_feature_code": "api_calls", "meter_value": "1"});
    assert_eq!(
        post_with_key(&app, &app.token, "k", &right).await.status(),
        StatusCode::OK
    );
    assert_eq!(app.usage_value(&a, "api_calls", None).await, "1");
}

#[tokio::test]
async fn batches_replay_whole() {
    let app = TestApp::spawn().await;
    let a = app.create_agreement("cust", "pro").await;
    let body = json!({"records": [
        {"customer_agreement_id": a, "billing_feature_code": "api_calls", "meter_value": "1"},
        {"customer_agreement_id": a, "billing_feature_code": "nope", "meter_value": "1"},
    ]});
    let send = || {
        app.http
            .post(app.url("/api/v1/billing/meter_usage/batch"))
            .bearer_auth(&app.token)
            .header("Idempotency-Key", "batch-1")
            .json(&body)
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    let second: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(first["results"][1]["code"], "FEATURE_NOT_FOUND");
    assert_eq!(app.usage(&a, "api_calls", None).await["record_count"], 1);
}

#[tokio::test]
async fn malformed_keys_are_refused() {
    let app = TestApp::spawn().await;
    let body = json!({"customer_agreement_id": "a", "billing_feature_code": "api_calls", "meter_value": "1"});
    let long = "k".repeat(256);
    for key in ["", "with space", long.as_str()] {
        assert_error(
            post_with_key(&app, &app.token, key, &body).await,
            StatusCode::BAD_REQUEST,
            &["INVALID_FIELD"],
        )
        .await;
    }
}

/// Found by the model test: a batch's fingerprint must not depend on the time of
/// receipt. A record refused as `TIMESTAMP_IN_FUTURE` is no longer in the future
/// two minutes later; the same body under the same key is still a replay.
#[tokio::test]
async fn a_batch_replay_matches_after_its_future_record_comes_due() {
    let app = TestApp::spawn_at("2030-03-01T12:00:00Z").await;
    let a = app.create_agreement("cust", "pro").await;
    let body = json!({"records": [
        {"customer_agreement_id": a, "billing_feature_code": "api_calls", "meter_value": "1",
         "meter_usage_timestamp": "2030-03-01T12:05:01Z"},
    ]});
    let send = || {
        app.http
            .post(app.url("/api/v1/billing/meter_usage/batch"))
            .bearer_auth(&app.token)
            .header("Idempotency-Key", "batch-future")
            .json(&body)
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["results"][0]["code"], "TIMESTAMP_IN_FUTURE");
    app.clock().advance(jiff::SignedDuration::from_mins(2));
    let second = send().await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(second.headers()["Idempotent-Replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(app.usage(&a, "api_calls", None).await["record_count"], 0);
}
