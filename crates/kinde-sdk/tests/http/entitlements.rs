//! `BillingEntitlementsApi`: the requests it sends (as the official SDKs send
//! them) and the answers it reads; the `ENTITLEMENT_LIMIT_EXCEEDED` refusal of a
//! usage write.

use std::time::Duration;

use kinde_sdk::models::{ErrorCode, MeterValue, UsageTotal};
use kinde_sdk::{
    ApiClient, BillingEntitlementsApi, BillingMeterUsageApi, CheckBillingEntitlementError,
    CreateMeterUsageRecordError, CreateMeterUsageRecordsBatchError, GetBillingEntitlementsError,
    GetBillingEntitlementsParams, RetryPolicy,
};

use crate::support::{Canned, MockServer, TOKEN};

const LISTING: &str = r#"{"code":"OK","message":"Success","has_more":true,
 "entitlements":[
  {"id":"entitlement_0195ac80a14c2ca2cec97d026d864de0","fixed_charge":null,"price_name":"API calls","unit_amount":2,
   "feature_code":"api_calls","feature_name":"API calls","entitlement_limit_max":1000000,"entitlement_limit_min":0,
   "consumed":1523.5,"remaining":998476.5,
   "current_period_start":"2026-12-01T00:00:00Z","current_period_end":"2027-01-01T00:00:00Z"},
  {"id":"entitlement_0195ac80a14c2ca2cec97d026d864de1","fixed_charge":null,"price_name":"Storage","unit_amount":null,
   "feature_code":"storage_gb","feature_name":"Storage","entitlement_limit_max":null,"entitlement_limit_min":null,
   "consumed":123456789012345678901234567.000000001,"remaining":null,
   "current_period_start":"2026-12-01T00:00:00Z","current_period_end":"2027-01-01T00:00:00Z"},
  {"id":"entitlement_0195ac80a14c2ca2cec97d026d864de2","fixed_charge":1500,"price_name":"Single sign-on","unit_amount":null,
   "feature_code":"sso","feature_name":"Single sign-on","entitlement_limit_max":null,"entitlement_limit_min":null}],
 "plans":[{"code":"pro","subscribed_on":"2026-12-06T06:37:55Z"}]}"#;

const LIMIT_EXCEEDED: &str = r#"{"errors":[{"code":"ENTITLEMENT_LIMIT_EXCEEDED","message":"api_calls: 999999 of 1000000 used; 2 more would exceed the limit"}]}"#;

fn total(text: &str) -> UsageTotal {
    UsageTotal::parse(text).unwrap()
}

#[tokio::test]
async fn listing_sends_every_parameter_in_the_official_sdks_order() {
    let server = MockServer::answering(Canned::new(200, LISTING)).await;

    server
        .entitlements_api()
        .get_billing_entitlements(
            "customer_1",
            GetBillingEntitlementsParams {
                page_size: Some(2),
                starting_after: Some("entitlement_a".to_owned()),
                ending_before: Some("entitlement_b".to_owned()),
                max_value: Some(9999),
                expand: Some("plans".to_owned()),
            },
        )
        .await
        .unwrap();

    let sent = server.only_request();
    assert_eq!(sent.method, "GET");
    // kinde-python-sdk's `_get_billing_entitlements_serialize` appends the
    // query parameters in this order.
    assert_eq!(
        sent.target,
        "/api/v1/billing/entitlements?page_size=2&starting_after=entitlement_a\
         &ending_before=entitlement_b&customer_id=customer_1&max_value=9999&expand=plans"
    );
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(sent.header("idempotency-key"), None);
    assert!(sent.body.is_empty());
}

#[tokio::test]
async fn listing_with_default_params_sends_only_the_customer() {
    let server = MockServer::answering(Canned::new(
        200,
        r#"{"code":"OK","message":"Success","has_more":false,"entitlements":[]}"#,
    ))
    .await;

    let page = server
        .entitlements_api()
        .get_billing_entitlements("customer 1&2", GetBillingEntitlementsParams::default())
        .await
        .unwrap();

    assert_eq!(
        server.only_request().target,
        "/api/v1/billing/entitlements?customer_id=customer+1%262"
    );
    assert!(!page.has_more);
    assert!(page.entitlements.is_empty());
    assert_eq!(page.plans, None, "plans are there only with expand=plans");
}

#[tokio::test]
async fn listing_reads_nulls_and_exact_usage() {
    let server = MockServer::answering(Canned::new(200, LISTING)).await;

    let page = server
        .entitlements_api()
        .get_billing_entitlements("customer_1", GetBillingEntitlementsParams::default())
        .await
        .unwrap();

    assert_eq!(
        (page.code.as_str(), page.message.as_str()),
        ("OK", "Success")
    );
    assert!(page.has_more);
    let [api_calls, storage, sso] = &page.entitlements[..] else {
        panic!("{page:#?}");
    };

    assert_eq!(api_calls.id, "entitlement_0195ac80a14c2ca2cec97d026d864de0");
    assert_eq!(api_calls.fixed_charge, None);
    assert_eq!(api_calls.unit_amount, Some(2));
    assert_eq!(api_calls.price_name.as_deref(), Some("API calls"));
    assert_eq!(api_calls.entitlement_limit_max, Some(1_000_000));
    assert_eq!(api_calls.entitlement_limit_min, Some(0));
    assert_eq!(api_calls.consumed, Some(total("1523.5")));
    assert_eq!(api_calls.remaining, Some(Some(total("998476.5"))));
    assert_eq!(
        api_calls.current_period_end.as_deref(),
        Some("2027-01-01T00:00:00Z")
    );

    // Unlimited: the limits are null, `remaining` is present and null; a usage
    // total beyond what a float holds is read exactly.
    assert_eq!(
        (storage.entitlement_limit_max, storage.entitlement_limit_min),
        (None, None)
    );
    assert_eq!(storage.unit_amount, None);
    assert_eq!(
        storage.consumed.map(|c| c.to_string()).as_deref(),
        Some("123456789012345678901234567.000000001")
    );
    assert_eq!(storage.remaining, Some(None));

    // Not metered: no usage fields at all.
    assert_eq!(sso.fixed_charge, Some(1500));
    assert_eq!((sso.consumed, sso.remaining), (None, None));
    assert_eq!(sso.current_period_start, None);

    let plans = page.plans.as_deref().unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].code, "pro");
    assert_eq!(
        plans[0].subscribed_on.as_deref(),
        Some("2026-12-06T06:37:55Z")
    );
}

#[tokio::test]
async fn listing_reads_real_kindes_answer_without_usage() {
    // What real Kinde sends: no kinde-meter fields.
    let server = MockServer::answering(Canned::new(
        200,
        r#"{"code":"OK","message":"Success","has_more":false,"entitlements":[
            {"id":"entitlement_1","fixed_charge":null,"price_name":"API calls","unit_amount":2,
             "feature_code":"api_calls","feature_name":"API calls","entitlement_limit_max":1000,
             "entitlement_limit_min":null}]}"#,
    ))
    .await;

    let page = server
        .entitlements_api()
        .get_billing_entitlements("customer_1", GetBillingEntitlementsParams::default())
        .await
        .unwrap();

    let entitlement = &page.entitlements[0];
    assert_eq!(entitlement.entitlement_limit_max, Some(1000));
    assert_eq!((entitlement.consumed, entitlement.remaining), (None, None));
    assert_eq!(entitlement.current_period_start, None);
}

#[tokio::test]
async fn listing_errors_are_typed() {
    let server = MockServer::answering(Canned::new(
        403,
        r#"{"errors":[{"code":"INSUFFICIENT_SCOPE","message":"the token lacks read:billing_entitlements"}]}"#,
    ))
    .await;
    let error = server
        .entitlements_api()
        .get_billing_entitlements("customer_1", GetBillingEntitlementsParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, GetBillingEntitlementsError::Forbidden(_)),
        "{error:?}"
    );
    assert_eq!(error.error_code(), Some(ErrorCode::InsufficientScope));

    let server = MockServer::answering(Canned::new(
        400,
        r#"{"errors":[{"code":"INVALID_FIELD","message":"max_value must be an integer"}]}"#,
    ))
    .await;
    let error = server
        .entitlements_api()
        .get_billing_entitlements("customer_1", GetBillingEntitlementsParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, GetBillingEntitlementsError::BadRequest(_)),
        "{error:?}"
    );
    assert_eq!(error.error_code(), Some(ErrorCode::InvalidField));
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn reads_are_retried_like_the_other_reads() {
    let server = MockServer::start(vec![
        Canned::new(
            503,
            r#"{"errors":[{"code":"SERVICE_UNAVAILABLE","message":"later"}]}"#,
        ),
        Canned::new(502, "bad gateway"),
        Canned::new(200, LISTING),
    ])
    .await;
    let policy = RetryPolicy::default()
        .with_initial_backoff(Duration::from_millis(10))
        .with_max_backoff(Duration::from_millis(50));
    let api = BillingEntitlementsApi::new(
        ApiClient::new(server.configuration().with_retry_policy(policy)).unwrap(),
    );

    let page = api
        .get_billing_entitlements("customer_1", GetBillingEntitlementsParams::default())
        .await
        .unwrap();

    assert_eq!(page.entitlements.len(), 3);
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.target == requests[0].target));
}

#[tokio::test]
async fn check_sends_the_question_and_reads_decimal_strings() {
    let server = MockServer::answering(Canned::new(
        200,
        r#"{"code":"OK","message":"Success","allowed":true,"feature_code":"api_calls",
            "entitlement_limit_max":1000000,"consumed":"1523.5","remaining":"998476.5",
            "quantity":"2.5","current_period_end":"2027-01-01T00:00:00Z"}"#,
    ))
    .await;

    let check = server
        .entitlements_api()
        .check("customer_1", "api_calls", Some(MeterValue::from("2.5")))
        .await
        .unwrap();

    let sent = server.only_request();
    assert_eq!(sent.method, "GET");
    assert_eq!(
        sent.target,
        "/api/v1/billing/entitlements/check?customer_id=customer_1&feature_code=api_calls&quantity=2.5"
    );
    assert!(check.allowed);
    assert_eq!(check.feature_code, "api_calls");
    assert_eq!(check.entitlement_limit_max, Some(1_000_000));
    assert_eq!(check.consumed, total("1523.5"));
    assert_eq!(check.remaining, Some(total("998476.5")));
    assert_eq!(MeterValue::from(check.quantity).as_str(), "2.5");
    assert_eq!(
        check.current_period_end.as_deref(),
        Some("2027-01-01T00:00:00Z")
    );
}

#[tokio::test]
async fn check_without_quantity_leaves_it_to_the_server() {
    // Not on the plan (or no active agreement): refused with a 200.
    let server = MockServer::answering(Canned::new(
        200,
        r#"{"code":"OK","message":"Success","allowed":false,"feature_code":"sso",
            "entitlement_limit_max":null,"consumed":"0","remaining":null,
            "quantity":"1","current_period_end":null}"#,
    ))
    .await;

    let check = server
        .entitlements_api()
        .check("customer_1", "sso", None)
        .await
        .unwrap();

    assert_eq!(
        server.only_request().target,
        "/api/v1/billing/entitlements/check?customer_id=customer_1&feature_code=sso"
    );
    assert!(!check.allowed);
    assert_eq!(check.entitlement_limit_max, None);
    assert_eq!(check.consumed, UsageTotal::ZERO);
    assert_eq!(check.remaining, None);
    assert_eq!(check.quantity.to_string(), "1");
    assert_eq!(check.current_period_end, None);
}

#[tokio::test]
async fn check_with_an_invalid_quantity_is_a_bad_request() {
    let server = MockServer::answering(Canned::new(
        400,
        r#"{"errors":[{"code":"INVALID_METER_VALUE","message":"quantity must be a non-negative decimal"}]}"#,
    ))
    .await;

    let error = server
        .entitlements_api()
        .check("customer_1", "api_calls", Some(MeterValue::from("-1")))
        .await
        .unwrap_err();

    assert!(
        matches!(error, CheckBillingEntitlementError::BadRequest(_)),
        "{error:?}"
    );
    assert_eq!(error.error_code(), Some(ErrorCode::InvalidMeterValue));
    assert!(!error.is_entitlement_limit_exceeded());
    assert!(server.only_request().target.ends_with("&quantity=-1"));
}

#[tokio::test]
async fn a_hard_limit_refusal_is_a_typed_error_and_never_retried() {
    let server = MockServer::answering(Canned::new(400, LIMIT_EXCEEDED)).await;
    // The default policy retries what is retryable; this must not be.
    let api = BillingMeterUsageApi::new(
        ApiClient::new(
            server
                .configuration()
                .with_retry_policy(RetryPolicy::default()),
        )
        .unwrap(),
    );

    let error = api
        .create_meter_usage_record_builder()
        .customer_agreement_id("agreement_1")
        .billing_feature_code("api_calls")
        .meter_value(2)
        .send()
        .await
        .unwrap_err();

    let CreateMeterUsageRecordError::BadRequest(body) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(body.errors[0].code, "ENTITLEMENT_LIMIT_EXCEEDED");
    assert_eq!(
        error.error_code(),
        Some(ErrorCode::EntitlementLimitExceeded)
    );
    assert_eq!(
        error.code(),
        Some(ErrorCode::EntitlementLimitExceeded.as_str())
    );
    assert!(error.is_entitlement_limit_exceeded());
    assert!(!error.is_retryable());
    assert_eq!(error.status().map(|s| s.as_u16()), Some(400));
    assert!(
        error
            .to_string()
            .starts_with("400 Bad Request: ENTITLEMENT_LIMIT_EXCEEDED: api_calls"),
        "{error}"
    );
    assert_eq!(server.requests().len(), 1, "a refusal is not retried");
}

#[tokio::test]
async fn other_refusals_are_not_hard_limits() {
    let server = MockServer::answering(Canned::new(
        400,
        r#"{"errors":[{"code":"AGREEMENT_NOT_ACTIVE","message":"ended"}]}"#,
    ))
    .await;
    let error = server
        .meter_usage_api()
        .create_meter_usage_records_batch(Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        CreateMeterUsageRecordsBatchError::BadRequest(_)
    ));
    assert_eq!(error.error_code(), Some(ErrorCode::AgreementNotActive));
    assert!(!error.is_entitlement_limit_exceeded());

    // A code this SDK does not know (real Kinde's own) has no `ErrorCode`.
    let server = MockServer::answering(Canned::new(
        400,
        r#"{"errors":[{"code":"SOMETHING_NEW","message":"?"}]}"#,
    ))
    .await;
    let error = server
        .entitlements_api()
        .check("customer_1", "api_calls", None)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("SOMETHING_NEW"));
    assert_eq!(error.error_code(), None);
}
