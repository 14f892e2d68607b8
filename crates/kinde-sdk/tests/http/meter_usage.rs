//! `BillingMeterUsageApi`: the requests it sends and the answers it reads.

use jiff::Timestamp;
use jiff::tz::{TimeZone, offset};
use kinde_sdk::models::{CreateMeterUsageRecordRequest, MeterTypeCode};
use kinde_sdk::{
    ApiClient, BillingMeterUsageApi, Configuration, CreateMeterUsageRecordError,
    CreateMeterUsageRecordsBatchError, IdempotencyKey,
};
use serde_json::json;

use crate::support::{Canned, MockServer, TOKEN};

const AGREEMENT: &str = "agreement_0195ac80a14c2ca2cec97d026d864de0";

fn is_generated_key(key: &str) -> bool {
    key.len() == 32 && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[tokio::test]
async fn create_sends_what_kinde_expects() {
    let server = MockServer::answering(Canned::ok()).await;
    let request = CreateMeterUsageRecordRequest {
        customer_agreement_id: AGREEMENT.to_owned(),
        billing_feature_code: "api_calls".to_owned(),
        meter_value: "150".to_owned(),
        meter_usage_timestamp: None,
        meter_type_code: Some(MeterTypeCode::Delta),
    };

    let response = server
        .meter_usage_api()
        .create_meter_usage_record(request)
        .await
        .unwrap();

    assert_eq!(
        (response.code.as_str(), response.message.as_str()),
        ("OK", "Success")
    );
    let sent = server.only_request();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.target, "/api/v1/billing/meter_usage");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(
        sent.header("kinde-sdk"),
        Some(format!("Rust/{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert_eq!(
        sent.header("user-agent"),
        Some(format!("kinde-sdk-rust/{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.header("accept"), Some("application/json"));
    let key = sent.header("idempotency-key").expect("an idempotency key");
    assert!(is_generated_key(key), "{key}");
    assert_eq!(
        sent.json(),
        json!({
            "customer_agreement_id": AGREEMENT,
            "billing_feature_code": "api_calls",
            "meter_value": "150",
            "meter_type_code": "delta",
        })
    );
}

#[tokio::test]
async fn builder_leaves_unset_optional_fields_out() {
    let server = MockServer::answering(Canned::ok()).await;

    server
        .meter_usage_api()
        .create_meter_usage_record_builder()
        .customer_agreement_id(AGREEMENT)
        .billing_feature_code("api_calls")
        .meter_value("0.5")
        .send()
        .await
        .unwrap();

    assert_eq!(
        server.only_request().json(),
        json!({
            "customer_agreement_id": AGREEMENT,
            "billing_feature_code": "api_calls",
            "meter_value": "0.5",
        })
    );
}

#[tokio::test]
async fn builder_writes_typed_values() {
    let server = MockServer::answering(Canned::ok()).await;
    let at: Timestamp = "2024-11-18T02:32:03Z".parse().unwrap();

    server
        .meter_usage_api()
        .create_meter_usage_record_builder()
        .customer_agreement_id(AGREEMENT)
        .billing_feature_code("api_calls")
        .meter_value(150)
        .meter_usage_timestamp(at.to_zoned(TimeZone::fixed(offset(11))))
        .meter_type_code(MeterTypeCode::Absolute)
        .idempotency_key("order-42-usage")
        .send()
        .await
        .unwrap();

    let sent = server.only_request();
    assert_eq!(sent.header("idempotency-key"), Some("order-42-usage"));
    assert_eq!(
        sent.json(),
        json!({
            "customer_agreement_id": AGREEMENT,
            "billing_feature_code": "api_calls",
            "meter_value": "150",
            "meter_usage_timestamp": "2024-11-18T13:32:03+11:00",
            "meter_type_code": "absolute",
        })
    );
}

#[tokio::test]
async fn a_caller_key_is_sent_as_given_on_every_attempt() {
    let server = MockServer::answering(Canned::ok()).await;
    let api = server.meter_usage_api();
    let key = IdempotencyKey::generate();

    for _ in 0..2 {
        api.create_meter_usage_record_builder()
            .customer_agreement_id(AGREEMENT)
            .billing_feature_code("api_calls")
            .meter_value(1)
            .idempotency_key(key.clone())
            .send()
            .await
            .unwrap();
    }

    let keys: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_owned())
        .collect();
    assert_eq!(keys, [key.as_str(), key.as_str()]);
}

#[tokio::test]
async fn each_call_gets_its_own_generated_key() {
    let server = MockServer::answering(Canned::ok()).await;
    let api = server.meter_usage_api();
    let record = CreateMeterUsageRecordRequest {
        customer_agreement_id: AGREEMENT.to_owned(),
        billing_feature_code: "api_calls".to_owned(),
        meter_value: "1".to_owned(),
        meter_usage_timestamp: None,
        meter_type_code: None,
    };

    api.create_meter_usage_record(record.clone()).await.unwrap();
    api.create_meter_usage_record(record).await.unwrap();

    let requests = server.requests();
    let first = requests[0].header("idempotency-key").unwrap();
    let second = requests[1].header("idempotency-key").unwrap();
    assert_ne!(first, second, "two calls are two records, not a retry");
}

#[tokio::test]
async fn missing_required_fields_are_refused_without_sending() {
    let server = MockServer::answering(Canned::ok()).await;

    let error = server
        .meter_usage_api()
        .create_meter_usage_record_builder()
        .customer_agreement_id(AGREEMENT)
        .billing_feature_code("api_calls")
        .send()
        .await
        .unwrap_err();

    assert!(
        matches!(&error, CreateMeterUsageRecordError::InvalidInput(_)),
        "{error:?}"
    );
    assert_eq!(error.message(), Some("meter_value is required"));
    assert_eq!(error.code(), None);
    assert!(!error.is_retryable());
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn invalid_idempotency_keys_are_refused_without_sending() {
    let server = MockServer::answering(Canned::ok()).await;

    let error = server
        .meter_usage_api()
        .create_meter_usage_record_builder()
        .customer_agreement_id(AGREEMENT)
        .billing_feature_code("api_calls")
        .meter_value(1)
        .idempotency_key("not a valid key")
        .send()
        .await
        .unwrap_err();

    assert!(
        matches!(error, CreateMeterUsageRecordError::InvalidInput(_)),
        "{error:?}"
    );
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn batch_posts_all_records_under_one_key() {
    let server = MockServer::answering(Canned::new(
        200,
        r#"{"code":"OK","message":"Success","results":[
            {"index":0,"code":"OK","message":"Success"},
            {"index":1,"code":"INVALID_METER_VALUE","message":"meter_value must be a decimal"}]}"#,
    ))
    .await;
    let record = |value: &str| CreateMeterUsageRecordRequest {
        customer_agreement_id: AGREEMENT.to_owned(),
        billing_feature_code: "api_calls".to_owned(),
        meter_value: value.to_owned(),
        meter_usage_timestamp: None,
        meter_type_code: None,
    };

    let response = server
        .meter_usage_api()
        .create_meter_usage_records_batch(vec![record("1"), record("-1")])
        .await
        .unwrap();

    assert_eq!(response.results.len(), 2);
    assert_eq!(response.results[1].code, "INVALID_METER_VALUE");
    let sent = server.only_request();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.target, "/api/v1/billing/meter_usage/batch");
    assert!(is_generated_key(sent.header("idempotency-key").unwrap()));
    assert_eq!(
        sent.json(),
        json!({"records": [
            {"customer_agreement_id": AGREEMENT, "billing_feature_code": "api_calls", "meter_value": "1"},
            {"customer_agreement_id": AGREEMENT, "billing_feature_code": "api_calls", "meter_value": "-1"},
        ]})
    );
}

#[tokio::test]
async fn batch_builder_takes_a_key() {
    let server = MockServer::answering(Canned::new(
        200,
        r#"{"code":"OK","message":"Success","results":[]}"#,
    ))
    .await;

    server
        .meter_usage_api()
        .create_meter_usage_records_batch_builder()
        .idempotency_key("batch-7")
        .send()
        .await
        .unwrap();

    let sent = server.only_request();
    assert_eq!(sent.header("idempotency-key"), Some("batch-7"));
    assert_eq!(sent.json(), json!({"records": []}));

    let error = server
        .meter_usage_api()
        .create_meter_usage_records_batch_builder()
        .idempotency_key("")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        CreateMeterUsageRecordsBatchError::InvalidInput(_)
    ));
}

#[tokio::test]
async fn get_meter_usage_sends_a_query_and_reads_usage() {
    let server = MockServer::answering(Canned::new(
        200,
        r#"{"code":"OK","message":"Success","usage":[{
            "billing_feature_code":"api_calls",
            "period_start":"2024-11-01T00:00:00Z",
            "period_end":"2024-12-01T00:00:00Z",
            "value":"1500.25",
            "record_count":3,
            "last_recorded_at":"2024-11-18T02:32:03Z"}]}"#,
    ))
    .await;
    let at: Timestamp = "2024-11-18T02:32:03Z".parse().unwrap();

    let response = server
        .meter_usage_api()
        .get_meter_usage(AGREEMENT, Some("api_calls"), Some(at))
        .await
        .unwrap();

    assert_eq!(response.usage[0].value, "1500.25");
    assert_eq!(response.usage[0].record_count, 3);
    let sent = server.only_request();
    assert_eq!(sent.method, "GET");
    assert_eq!(
        sent.target,
        format!(
            "/api/v1/billing/meter_usage?customer_agreement_id={AGREEMENT}\
             &billing_feature_code=api_calls&at=2024-11-18T02%3A32%3A03Z"
        )
    );
    assert_eq!(sent.header("idempotency-key"), None);
    assert_eq!(sent.header("content-type"), None);
    assert!(sent.body.is_empty());
}

#[tokio::test]
async fn get_meter_usage_leaves_out_unset_parameters() {
    let server = MockServer::answering(Canned::new(
        200,
        r#"{"code":"OK","message":"Success","usage":[]}"#,
    ))
    .await;

    server
        .meter_usage_api()
        .get_meter_usage(AGREEMENT, None, None)
        .await
        .unwrap();

    assert_eq!(
        server.only_request().target,
        format!("/api/v1/billing/meter_usage?customer_agreement_id={AGREEMENT}")
    );
}

#[tokio::test]
async fn a_host_path_prefixes_every_route_and_no_token_sends_no_authorization() {
    let server = MockServer::answering(Canned::ok()).await;
    let client = ApiClient::new(Configuration::new(format!("{}/kinde/", server.url))).unwrap();

    BillingMeterUsageApi::new(client)
        .create_meter_usage_record_builder()
        .customer_agreement_id(AGREEMENT)
        .billing_feature_code("api_calls")
        .meter_value(1)
        .send()
        .await
        .unwrap();

    let sent = server.only_request();
    assert_eq!(sent.target, "/kinde/api/v1/billing/meter_usage");
    assert_eq!(sent.header("authorization"), None);
}
