//! kinde-sdk against the real server over HTTP: success, and each error class
//! matched as its typed variant.

use crate::support::{TestApp, closed_addr};
use kinde_sdk::{
    ApiClient, BillingAgreementsApi, BillingMeterUsageApi, Configuration,
    CreateMeterUsageRecordError, GetBillingAgreementsParams,
    models::{CreateBillingAgreementRequest, ErrorCode, MeterTypeCode},
};

fn client(app: &TestApp, token: &str) -> ApiClient {
    ApiClient::new(Configuration::new(&app.base).with_access_token(token)).unwrap()
}

#[tokio::test]
async fn the_sdk_records_and_reads_back_usage() {
    let app = TestApp::spawn().await;
    let agreements = BillingAgreementsApi::new(client(&app, &app.token));
    let created = agreements
        .create_billing_agreement(CreateBillingAgreementRequest {
            customer_id: "customer_sdk".into(),
            plan_code: "pro".into(),
            is_invoice_now: None,
            is_prorate: Some(false),
        })
        .await
        .unwrap();
    assert_eq!(
        (created.code.as_str(), created.message.as_str()),
        ("OK", "Success")
    );
    let page = agreements
        .get_billing_agreements("customer_sdk", GetBillingAgreementsParams::default())
        .await
        .unwrap();
    let agreement = page.agreements[0].id.clone();

    let api = BillingMeterUsageApi::new(client(&app, &app.token));
    let response = api
        .create_meter_usage_record_builder()
        .customer_agreement_id(&agreement)
        .billing_feature_code("api_calls")
        .meter_value(150)
        .send()
        .await
        .unwrap();
    assert_eq!(response.code, "OK");
    api.create_meter_usage_record_builder()
        .customer_agreement_id(&agreement)
        .billing_feature_code("api_calls")
        .meter_value("0.5")
        .meter_usage_timestamp(
            jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(11))),
        )
        .meter_type_code(MeterTypeCode::Delta)
        .idempotency_key("sdk-once")
        .send()
        .await
        .unwrap();
    let usage = api
        .get_meter_usage(&agreement, Some("api_calls"), None)
        .await
        .unwrap();
    assert_eq!(usage.usage[0].value, "150.5");
    assert_eq!(usage.usage[0].record_count, 2);
}

#[tokio::test]
async fn each_error_class_is_its_own_variant() {
    let app = TestApp::spawn().await;
    let a = app.create_agreement("cust", "pro").await;
    let api = BillingMeterUsageApi::new(client(&app, &app.token));

    let bad = api
        .create_meter_usage_record_builder()
        .customer_agreement_id(&a)
        .billing_feature_code("api_calls")
        .meter_value("1e3")
        .send()
        .await
        .unwrap_err();
    match &bad {
        CreateMeterUsageRecordError::BadRequest(body) => {
            assert_eq!(body.errors[0].code, ErrorCode::InvalidMeterValue.as_str());
        }
        other => panic!("expected BadRequest, got {other:?}"),
    }
    assert!(!bad.is_retryable());

    let not_active = {
        app.create_agreement("cust", "starter").await;
        api.create_meter_usage_record_builder()
            .customer_agreement_id(&a)
            .billing_feature_code("api_calls")
            .meter_value(1)
            .send()
            .await
            .unwrap_err()
    };
    assert_eq!(not_active.code(), Some("AGREEMENT_NOT_ACTIVE"));

    let forbidden = BillingMeterUsageApi::new(client(&app, "not-a-token"))
        .create_meter_usage_record_builder()
        .customer_agreement_id(&a)
        .billing_feature_code("api_calls")
        .meter_value(1)
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(&forbidden, CreateMeterUsageRecordError::Forbidden(body) if body.errors[0].code == "INVALID_CREDENTIALS"),
        "{forbidden:?}"
    );

    let read_only = app.token_with(&["read:meter_usage"]);
    let scope = BillingMeterUsageApi::new(client(&app, &read_only))
        .create_meter_usage_record_builder()
        .customer_agreement_id(&a)
        .billing_feature_code("api_calls")
        .meter_value(1)
        .send()
        .await
        .unwrap_err();
    assert!(matches!(&scope, CreateMeterUsageRecordError::Forbidden(_)));
    assert_eq!(scope.code(), Some("INSUFFICIENT_SCOPE"));

    let too_large = api
        .create_meter_usage_record_builder()
        .customer_agreement_id("x".repeat(70 * 1024))
        .billing_feature_code("api_calls")
        .meter_value(1)
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(&too_large, CreateMeterUsageRecordError::PayloadTooLarge(_)),
        "{too_large:?}"
    );

    // Nothing listens here any more: a transport error, retryable.
    let closed = format!("http://{}", closed_addr());
    let transport = BillingMeterUsageApi::new(
        ApiClient::new(Configuration::new(closed).with_access_token("t")).unwrap(),
    )
    .create_meter_usage_record_builder()
    .customer_agreement_id(&a)
    .billing_feature_code("api_calls")
    .meter_value(1)
    .send()
    .await
    .unwrap_err();
    assert!(
        matches!(&transport, CreateMeterUsageRecordError::Transport(_)),
        "{transport:?}"
    );
    assert!(transport.is_retryable());
}
