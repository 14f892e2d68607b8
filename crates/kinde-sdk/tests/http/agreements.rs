//! `BillingAgreementsApi`: the requests it sends and the answers it reads.

use kinde_sdk::models::CreateBillingAgreementRequest;
use kinde_sdk::{CreateBillingAgreementError, GetBillingAgreementsParams};
use serde_json::json;

use crate::support::{Canned, MockServer, TOKEN};

#[tokio::test]
async fn create_posts_kindes_request_without_idempotency_key() {
    let server = MockServer::answering(Canned::ok()).await;

    let response = server
        .agreements_api()
        .create_billing_agreement(CreateBillingAgreementRequest {
            customer_id: "customer_1".to_owned(),
            plan_code: "pro".to_owned(),
            is_invoice_now: None,
            is_prorate: Some(true),
        })
        .await
        .unwrap();

    assert_eq!(response.code, "OK");
    let sent = server.only_request();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.target, "/api/v1/billing/agreements");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.header("idempotency-key"), None);
    assert_eq!(
        sent.json(),
        json!({"customer_id": "customer_1", "plan_code": "pro", "is_prorate": true})
    );
}

#[tokio::test]
async fn an_unknown_plan_is_a_bad_request() {
    let server = MockServer::answering(Canned::new(
        400,
        r#"{"errors":[{"code":"PLAN_NOT_FOUND","message":"no plan with code nope"}]}"#,
    ))
    .await;

    let error = server
        .agreements_api()
        .create_billing_agreement(CreateBillingAgreementRequest {
            customer_id: "customer_1".to_owned(),
            plan_code: "nope".to_owned(),
            is_invoice_now: None,
            is_prorate: None,
        })
        .await
        .unwrap_err();

    assert!(
        matches!(error, CreateBillingAgreementError::BadRequest(_)),
        "{error:?}"
    );
    assert_eq!(error.code(), Some("PLAN_NOT_FOUND"));
}

#[tokio::test]
async fn get_sends_every_parameter_and_reads_kindes_shape() {
    let server = MockServer::answering(Canned::new(
        200,
        r#"{"code":"OK","message":"Success","has_more":true,"agreements":[{
            "id":"agreement_2","plan_code":"pro","expires_on":null,"billing_group_id":"saas",
            "current_period_start":"2024-11-01T00:00:00Z","current_period_end":"2024-12-01T00:00:00Z",
            "entitlements":[{"feature_code":"api_calls","entitlement_id":"entitlement_1"}]},{
            "id":"agreement_1","plan_code":"free","expires_on":"2024-11-01T00:00:00Z","billing_group_id":null,
            "current_period_start":null,"current_period_end":null,"entitlements":[]}]}"#,
    ))
    .await;

    let response = server
        .agreements_api()
        .get_billing_agreements(
            "customer_1",
            GetBillingAgreementsParams {
                feature_code: Some("api_calls".to_owned()),
                page_size: Some(2),
                starting_after: Some("agreement_3".to_owned()),
                ending_before: None,
            },
        )
        .await
        .unwrap();

    assert!(response.has_more);
    assert_eq!(response.agreements.len(), 2);
    assert_eq!(
        response.agreements[0].entitlements[0].feature_code,
        "api_calls"
    );
    assert_eq!(
        response.agreements[1].expires_on.as_deref(),
        Some("2024-11-01T00:00:00Z")
    );
    assert_eq!(response.agreements[1].current_period_start, None);
    let sent = server.only_request();
    assert_eq!(sent.method, "GET");
    assert_eq!(
        sent.target,
        "/api/v1/billing/agreements?customer_id=customer_1&feature_code=api_calls\
         &page_size=2&starting_after=agreement_3"
    );
}

#[tokio::test]
async fn get_with_default_params_sends_only_the_customer() {
    let server = MockServer::answering(Canned::new(
        200,
        r#"{"code":"OK","message":"Success","has_more":false,"agreements":[]}"#,
    ))
    .await;

    server
        .agreements_api()
        .get_billing_agreements("customer 1&2", GetBillingAgreementsParams::default())
        .await
        .unwrap();

    assert_eq!(
        server.only_request().target,
        "/api/v1/billing/agreements?customer_id=customer+1%262"
    );
}
