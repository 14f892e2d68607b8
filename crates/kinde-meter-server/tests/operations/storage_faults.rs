//! What a client sees when storage refuses: VALUE_OUT_OF_RANGE for a total past
//! 10^27, and 503 SERVICE_UNAVAILABLE (nothing stored) while the database is
//! locked by someone else, recovering by itself afterwards. On either backend;
//! PostgreSQL going away altogether is in the `postgres` tests.

use crate::support::{TestApp, assert_error, backend};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_total_past_ten_to_the_27_is_refused_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let a = app.create_agreement("cust", "pro").await;
    let record = |v: &str| json!({"customer_agreement_id": a, "billing_feature_code": "api_calls", "meter_value": v});
    app.record_ok(record("1")).await;
    // Reaching 10^27 through the API takes 10^9 records of the largest value the
    // grammar admits; stand in for that history by setting the aggregate there.
    let top = "1000000000000000000000000000";
    let changed = backend::execute_sql(
        &app.data_dir,
        &format!("UPDATE usage_aggregates SET deltas_after = '{top}', value = '{top}'"),
    )
    .await;
    assert_eq!(changed, 1);
    let body = assert_error(
        app.record(record("0.000000001")).await,
        StatusCode::BAD_REQUEST,
        &["VALUE_OUT_OF_RANGE"],
    )
    .await;
    assert!(body.to_string().contains("meter_value"), "{body}");
    let usage = app.usage(&a, "api_calls", None).await;
    assert_eq!(
        (usage["value"].as_str(), usage["record_count"].as_u64()),
        (Some(top), Some(1))
    );
    // An absolute brings the total back into range; zero still fits at the top.
    app.record_ok(json!({"customer_agreement_id": a, "billing_feature_code": "api_calls", "meter_value": "5", "meter_type_code": "absolute"}))
        .await;
    assert_eq!(app.usage_value(&a, "api_calls", None).await, "5");
}

#[tokio::test]
async fn a_locked_database_answers_503_and_recovers() {
    let app = TestApp::spawn().await;
    let a = app.create_agreement("cust", "pro").await;
    let record = json!({"customer_agreement_id": a, "billing_feature_code": "api_calls", "meter_value": "1"});
    let blocker = backend::lock_writes(&app.data_dir).await;
    let started = std::time::Instant::now();
    let response = app.record(record.clone()).await;
    let retry_after = response.headers().get("retry-after").cloned();
    assert_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        &["SERVICE_UNAVAILABLE"],
    )
    .await;
    assert!(retry_after.is_some(), "503 carries Retry-After");
    // docs/limits.md#storage-outages: answered, not waited out (the bound is 5 s plus scheduling slack).
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    blocker.release().await;
    // Nothing from the refused request was stored, and the next one goes through.
    assert_eq!(app.usage(&a, "api_calls", None).await["record_count"], 0);
    app.record_ok(record).await;
    assert_eq!(app.usage_value(&a, "api_calls", None).await, "1");
}
