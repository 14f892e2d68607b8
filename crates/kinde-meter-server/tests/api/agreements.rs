//! Agreements (docs/api.md#agreements): create, list with paging both ways, the feature filter, and
//! a new agreement ending the customer's old one.

use crate::support::{TestApp, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn ids(page: &Value) -> Vec<String> {
    page["agreements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_new_agreement_ends_the_old_one_which_then_refuses_usage() {
    let app = TestApp::spawn().await;
    let old = app.create_agreement("cust", "starter").await;
    let new = app.create_agreement("cust", "pro").await;
    assert_ne!(old, new);
    let page = app.list_agreements("customer_id=cust").await;
    assert_eq!(ids(&page), [new.clone(), old.clone()]);
    let (newest, ended) = (&page["agreements"][0], &page["agreements"][1]);
    assert!(newest["expires_on"].is_null());
    assert!(newest["current_period_start"].is_string());
    assert_eq!(newest["billing_group_id"], "saas");
    assert!(ended["expires_on"].is_string());
    assert!(ended["current_period_start"].is_null() && ended["current_period_end"].is_null());
    let features: Vec<&str> = newest["entitlements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["feature_code"].as_str().unwrap())
        .collect();
    assert_eq!(features, ["api_calls", "storage_gb", "sso"]);
    assert!(
        newest["entitlements"][0]["entitlement_id"]
            .as_str()
            .unwrap()
            .starts_with("entitlement_")
    );

    assert_error(
        app.record(json!({"customer_agreement_id": old, "billing_feature_code": "api_calls", "meter_value": "1"})).await,
        StatusCode::BAD_REQUEST,
        &["AGREEMENT_NOT_ACTIVE"],
    )
    .await;
    app.record_ok(json!({"customer_agreement_id": new, "billing_feature_code": "api_calls", "meter_value": "1"})).await;
    // Other customers are untouched.
    let other = app.create_agreement("someone-else", "pro").await;
    app.record_ok(json!({"customer_agreement_id": other, "billing_feature_code": "api_calls", "meter_value": "1"})).await;
    app.record_ok(json!({"customer_agreement_id": new, "billing_feature_code": "api_calls", "meter_value": "1"})).await;
}

#[tokio::test]
async fn paging_works_both_ways() {
    let app = TestApp::spawn().await;
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(app.create_agreement("cust", "pro").await);
    }
    created.reverse(); // newest first
    let first = app.list_agreements("customer_id=cust&page_size=3").await;
    assert_eq!(ids(&first), created[0..3]);
    assert_eq!(first["has_more"], true);
    let second = app
        .list_agreements(&format!(
            "customer_id=cust&page_size=3&starting_after={}",
            created[2]
        ))
        .await;
    assert_eq!(ids(&second), created[3..6]);
    assert_eq!(second["has_more"], true);
    let third = app
        .list_agreements(&format!(
            "customer_id=cust&page_size=3&starting_after={}",
            created[5]
        ))
        .await;
    assert_eq!(ids(&third), created[6..7]);
    assert_eq!(third["has_more"], false);
    let back = app
        .list_agreements(&format!(
            "customer_id=cust&page_size=3&ending_before={}",
            created[6]
        ))
        .await;
    assert_eq!(ids(&back), created[3..6]);
    assert_eq!(back["has_more"], true);
    let back = app
        .list_agreements(&format!(
            "customer_id=cust&page_size=3&ending_before={}",
            created[2]
        ))
        .await;
    assert_eq!(ids(&back), created[0..2]);
    assert_eq!(back["has_more"], false);
    let all = app.list_agreements("customer_id=cust&page_size=500").await;
    assert_eq!(ids(&all), created);
    assert_eq!(
        app.list_agreements("customer_id=nobody").await["agreements"],
        json!([])
    );
}

#[tokio::test]
async fn the_feature_filter_keeps_plans_with_that_feature() {
    let app = TestApp::spawn().await;
    let starter = app.create_agreement("cust", "starter").await;
    let pro = app.create_agreement("cust", "pro").await;
    assert_eq!(
        ids(&app
            .list_agreements("customer_id=cust&feature_code=storage_gb")
            .await),
        std::slice::from_ref(&pro)
    );
    assert_eq!(
        ids(&app
            .list_agreements("customer_id=cust&feature_code=api_calls")
            .await),
        [pro, starter]
    );
    assert_eq!(
        app.list_agreements("customer_id=cust&feature_code=nothing")
            .await["agreements"],
        json!([])
    );
}

#[tokio::test]
async fn bad_requests_are_named() {
    let app = TestApp::spawn().await;
    assert_error(
        app.post(
            "/api/v1/billing/agreements",
            &json!({"customer_id": "c", "plan_code": "platinum"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["PLAN_NOT_FOUND"],
    )
    .await;
    assert_error(
        app.post("/api/v1/billing/agreements", &json!({"plan_code": 3}))
            .await,
        StatusCode::BAD_REQUEST,
        &["MISSING_FIELD", "INVALID_FIELD"],
    )
    .await;
    assert_error(
        app.get("/api/v1/billing/agreements").await,
        StatusCode::BAD_REQUEST,
        &["MISSING_FIELD"],
    )
    .await;
    for q in [
        "page_size=0",
        "page_size=501",
        "page_size=ten",
        "page_size=",
        "page_size=-1",
        "starting_after=a&ending_before=b",
    ] {
        assert_error(
            app.get(&format!("/api/v1/billing/agreements?customer_id=c&{q}"))
                .await,
            StatusCode::BAD_REQUEST,
            &["INVALID_FIELD"],
        )
        .await;
    }
    // A paging cursor that names no agreement of the listing (docs/api.md#paging),
    // another customer's included.
    let others = app.create_agreement("someone-else", "pro").await;
    for q in [
        "starting_after=agreement_x".to_owned(),
        "ending_before=agreement_00000000000000000000000000000000".to_owned(),
        format!("starting_after={others}"),
        format!("starting_after={}", "x".repeat(300)),
    ] {
        assert_error(
            app.get(&format!("/api/v1/billing/agreements?customer_id=c&{q}"))
                .await,
            StatusCode::BAD_REQUEST,
            &["AGREEMENT_NOT_FOUND"],
        )
        .await;
    }
    // Kinde's optional flags are accepted.
    let response = app
        .post("/api/v1/billing/agreements", &json!({"customer_id": "c", "plan_code": "pro", "is_invoice_now": true, "is_prorate": false}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"message":"Success","code":"OK"}"#
    );
}

#[tokio::test]
async fn usage_reads_name_unknown_agreements_and_features() {
    let app = TestApp::spawn().await;
    let a = app.create_agreement("cust", "pro").await;
    let app = &app;
    let get = |q: String| {
        let path = format!("/api/v1/billing/meter_usage?{q}");
        async move { app.get(&path).await }
    };
    assert_error(
        get("customer_agreement_id=agreement_x".into()).await,
        StatusCode::BAD_REQUEST,
        &["AGREEMENT_NOT_FOUND"],
    )
    .await;
    assert_error(
        get(format!("customer_agreement_id={a}&billing_feature_code=x")).await,
        StatusCode::BAD_REQUEST,
        &["FEATURE_NOT_FOUND"],
    )
    .await;
    assert_error(
        get(format!(
            "customer_agreement_id={a}&billing_feature_code=sso"
        ))
        .await,
        StatusCode::BAD_REQUEST,
        &["FEATURE_NOT_METERED"],
    )
    .await;
    for at in ["9999-12-31T23%3A59%3A59Z", "0001-01-01T00%3A00%3A00Z"] {
        assert_error(
            get(format!("customer_agreement_id={a}&at={at}")).await,
            StatusCode::BAD_REQUEST,
            &["INVALID_TIMESTAMP"],
        )
        .await;
    }
    assert_error(
        get(format!("customer_agreement_id={a}&at=never")).await,
        StatusCode::BAD_REQUEST,
        &["INVALID_TIMESTAMP"],
    )
    .await;
    assert_error(
        get(String::new()).await,
        StatusCode::BAD_REQUEST,
        &["MISSING_FIELD"],
    )
    .await;
}

/// serde_json's `Value` (with the `raw_value` feature the workspace turns on)
/// reads an object whose first key is `$serde_json::private::RawValue` as the
/// JSON text of its string: this body would have created an agreement. Bodies
/// are decoded with every key an ordinary key, so it is an object without
/// `customer_id` and `plan_code`; with another key after it, it is still JSON.
#[tokio::test]
async fn the_raw_value_key_is_an_ordinary_key() {
    let app = TestApp::spawn().await;
    let inner = json!({"customer_id": "smuggled", "plan_code": "pro"}).to_string();
    for (body, codes) in [
        (
            json!({"$serde_json::private::RawValue": inner}),
            &["MISSING_FIELD", "MISSING_FIELD"][..],
        ),
        (
            json!({"$serde_json::private::RawValue": inner, "plan_code": "pro"}),
            &["MISSING_FIELD"],
        ),
    ] {
        assert_error(
            app.post("/api/v1/billing/agreements", &body).await,
            StatusCode::BAD_REQUEST,
            codes,
        )
        .await;
    }
    let page = app.list_agreements("customer_id=smuggled").await;
    assert_eq!(ids(&page), Vec::<String>::new());
}
