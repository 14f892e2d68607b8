//! The routes the dashboard reads (docs/api.md#browsing): the customers
//! listing with prefix search and paging, an agreement's latest raw records,
//! every webhook's delivery state; their parameters' errors and scopes; and
//! the dashboard's page and assets with their headers (docs/dashboard.md).

use std::time::Duration;

use axum::{Router, http::StatusCode as AxumStatus, routing::post};
use jiff::SignedDuration;
use kinde_meter_server::webhooks::worker::WebhookSettings;
use kinde_meter_wire::Scope;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Options, TestApp, assert_error, eventually};

const CUSTOMERS: &str = "/api/v1/billing/customers";
const RECORDS: &str = "/api/v1/billing/meter_usage/records";
const WEBHOOK_STATUS: &str = "/api/v1/webhook_status";

/// When the records test's agreement starts (its monthly periods are anchored here).
const START: &str = "2026-03-04T05:06:07Z";

async fn ok_json(app: &TestApp, path: &str) -> Value {
    let response = app.get(path).await;
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn customers_are_listed_by_id_with_prefix_search_and_paging() {
    let app = TestApp::spawn().await;
    for customer in ["cus_b1", "cus_a2", "cus_a1", "cus_a2", "zed"] {
        app.create_agreement(customer, "pro").await;
    }

    assert_eq!(
        ok_json(&app, &format!("{CUSTOMERS}?customer_id_prefix=cus_a")).await,
        json!({"code": "OK", "message": "Success", "has_more": false, "customers": [
            {"customer_id": "cus_a1", "agreement_count": 1},
            {"customer_id": "cus_a2", "agreement_count": 2}]})
    );
    let all = ok_json(&app, CUSTOMERS).await;
    let ids: Vec<&str> = all["customers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["customer_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["cus_a1", "cus_a2", "cus_b1", "zed"]);

    let first = ok_json(
        &app,
        &format!("{CUSTOMERS}?customer_id_prefix=cus_&page_size=2"),
    )
    .await;
    assert_eq!(first["has_more"], true);
    assert_eq!(first["customers"][1]["customer_id"], "cus_a2");
    let next = ok_json(
        &app,
        &format!("{CUSTOMERS}?customer_id_prefix=cus_&page_size=2&starting_after=cus_a2"),
    )
    .await;
    assert_eq!(next["has_more"], false);
    assert_eq!(
        next["customers"],
        json!([{"customer_id": "cus_b1", "agreement_count": 1}])
    );
    // Empty parameters count as absent, except page_size.
    assert_eq!(
        ok_json(
            &app,
            &format!("{CUSTOMERS}?customer_id_prefix=&starting_after=")
        )
        .await["customers"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        ok_json(&app, &format!("{CUSTOMERS}?customer_id_prefix=nobody")).await["customers"],
        json!([])
    );

    for bad in [
        "page_size=0",
        "page_size=501",
        "page_size=",
        "page_size=two",
        "customer_id_prefix=%20%20",
        "customer_id_prefix=a%01",
        "starting_after=%0A",
    ] {
        let response = app.get(&format!("{CUSTOMERS}?{bad}")).await;
        assert_error(response, StatusCode::BAD_REQUEST, &["INVALID_FIELD"]).await;
    }
    let long = "c".repeat(256);
    let response = app
        .get(&format!("{CUSTOMERS}?customer_id_prefix={long}"))
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, &["INVALID_FIELD"]).await;

    let token = app.token_with(&[Scope::ReadMeterUsage]);
    let response = app.get_with(&token, CUSTOMERS).await;
    assert_error(response, StatusCode::FORBIDDEN, &["INSUFFICIENT_SCOPE"]).await;
    let token = app.token_with(&[Scope::ReadBillingAgreements]);
    assert_eq!(
        app.get_with(&token, CUSTOMERS).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn latest_records_are_shown_as_stored_newest_first() {
    let app = TestApp::spawn_at(START).await;
    let agreement = app.create_agreement("cus_records", "pro").await;
    let other = app.create_agreement("cus_other", "pro").await;
    assert_eq!(
        ok_json(
            &app,
            &format!("{RECORDS}?customer_agreement_id={agreement}")
        )
        .await,
        json!({"code": "OK", "message": "Success", "records": []})
    );

    app.clock().advance(SignedDuration::from_secs(60));
    app.record_ok(
        json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls",
        "meter_value": "007", "meter_usage_timestamp": "2026-03-04T16:06:07+11:00"}),
    )
    .await;
    app.clock().advance(SignedDuration::from_secs(60));
    app.record_ok(
        json!({"customer_agreement_id": agreement, "billing_feature_code": "storage_gb",
        "meter_value": "9007199254740993.5", "meter_type_code": "absolute"}),
    )
    .await;
    app.record_ok(
        json!({"customer_agreement_id": other, "billing_feature_code": "api_calls",
        "meter_value": "1"}),
    )
    .await;

    let period = json!({"period_start": START, "period_end": "2026-04-04T05:06:07Z"});
    let storage = json!({"billing_feature_code": "storage_gb", "meter_type_code": "absolute",
        "meter_value": "9007199254740993.5", "meter_usage_timestamp": null,
        "received_at": "2026-03-04T05:08:07Z",
        "period_start": period["period_start"], "period_end": period["period_end"]});
    let calls = json!({"billing_feature_code": "api_calls", "meter_type_code": "delta",
        "meter_value": "7", "meter_usage_timestamp": "2026-03-04T05:06:07Z",
        "received_at": "2026-03-04T05:07:07Z",
        "period_start": period["period_start"], "period_end": period["period_end"]});
    assert_eq!(
        ok_json(
            &app,
            &format!("{RECORDS}?customer_agreement_id={agreement}")
        )
        .await,
        json!({"code": "OK", "message": "Success", "records": [storage, calls]}),
        "every field, the decimal exactly as canonical text, newest first"
    );
    assert_eq!(
        ok_json(
            &app,
            &format!("{RECORDS}?customer_agreement_id={agreement}&limit=1")
        )
        .await["records"],
        json!([storage])
    );
    assert_eq!(
        ok_json(
            &app,
            &format!("{RECORDS}?customer_agreement_id={agreement}&billing_feature_code=api_calls")
        )
        .await["records"],
        json!([calls])
    );

    let cases = [
        ("", StatusCode::BAD_REQUEST, "MISSING_FIELD"),
        (
            "customer_agreement_id=",
            StatusCode::BAD_REQUEST,
            "MISSING_FIELD",
        ),
        (
            "customer_agreement_id=agreement_nope",
            StatusCode::BAD_REQUEST,
            "AGREEMENT_NOT_FOUND",
        ),
    ];
    for (query, status, code) in cases {
        let response = app.get(&format!("{RECORDS}?{query}")).await;
        assert_error(response, status, &[code]).await;
    }
    for (extra, code) in [
        ("billing_feature_code=sso", "FEATURE_NOT_METERED"),
        ("billing_feature_code=nope", "FEATURE_NOT_FOUND"),
        ("limit=0", "INVALID_FIELD"),
        ("limit=101", "INVALID_FIELD"),
        ("limit=", "INVALID_FIELD"),
        ("limit=-1", "INVALID_FIELD"),
    ] {
        let response = app
            .get(&format!(
                "{RECORDS}?customer_agreement_id={agreement}&{extra}"
            ))
            .await;
        assert_error(response, StatusCode::BAD_REQUEST, &[code]).await;
    }

    let token = app.token_with(&[Scope::ReadBillingAgreements]);
    let response = app
        .get_with(
            &token,
            &format!("{RECORDS}?customer_agreement_id={agreement}"),
        )
        .await;
    assert_error(response, StatusCode::FORBIDDEN, &["INSUFFICIENT_SCOPE"]).await;
}

/// A receiver on 127.0.0.1: `/ok` answers 204, `/fail` 500.
async fn receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/ok", post(|| async { AxumStatus::NO_CONTENT }))
        .route(
            "/fail",
            post(|| async { AxumStatus::INTERNAL_SERVER_ERROR }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn webhook_status_shows_each_webhooks_deliveries() {
    let app = TestApp::spawn_with(Options {
        webhooks: WebhookSettings {
            allow_private_networks: true,
            ..WebhookSettings::default()
        },
        ..Options::default()
    })
    .await;
    assert_eq!(
        ok_json(&app, WEBHOOK_STATUS).await,
        json!({"code": "OK", "message": "Success", "webhooks": []})
    );
    let receiver = receiver().await;
    let mut ids = Vec::new();
    for (name, path) in [("good", "ok"), ("bad", "fail")] {
        let created = app
            .post(
                "/api/v1/webhooks",
                &json!({"endpoint": format!("{receiver}/{path}"), "name": name,
                    "event_types": ["customer.agreement_created"]}),
            )
            .await;
        assert_eq!(created.status(), StatusCode::OK);
        let created: Value = created.json().await.unwrap();
        ids.push(created["webhook"]["id"].as_str().unwrap().to_owned());
    }
    let listed = ok_json(&app, WEBHOOK_STATUS).await;
    let fresh = &listed["webhooks"][0];
    assert_eq!(fresh["id"], ids[0].as_str());
    assert_eq!(fresh["name"], "good");
    assert_eq!(fresh["endpoint"], format!("{receiver}/ok"));
    assert_eq!(fresh["description"], Value::Null);
    assert_eq!(fresh["event_types"], json!(["customer.agreement_created"]));
    assert_eq!(fresh["last_attempt_at"], Value::Null);
    assert_eq!(fresh["last_success_at"], Value::Null);
    assert_eq!(fresh["consecutive_failures"], 0);
    assert_eq!(fresh["pending"], 0);

    app.create_agreement("cus_hooks", "pro").await;
    let mut listed = Value::Null;
    eventually(
        "a delivered and a failed attempt",
        Duration::from_secs(30),
        async || {
            listed = ok_json(&app, WEBHOOK_STATUS).await;
            listed["webhooks"][0]["last_success_at"].is_string()
                && listed["webhooks"][1]["consecutive_failures"].as_u64() >= Some(1)
        },
    )
    .await;
    let (good, bad) = (&listed["webhooks"][0], &listed["webhooks"][1]);
    assert_eq!(good["last_attempt_at"], good["last_success_at"]);
    assert_eq!(good["last_error"], Value::Null);
    assert_eq!(good["pending"], 0);
    assert_eq!(bad["id"], ids[1].as_str());
    assert_eq!(bad["last_success_at"], Value::Null);
    assert!(bad["last_attempt_at"].is_string(), "{bad}");
    assert!(bad["last_error"].as_str().unwrap().contains("500"), "{bad}");
    assert_eq!(bad["pending"], 1, "retried later: {bad}");

    let token = app.token_with(&[Scope::ReadBillingAgreements, Scope::ReadMeterUsage]);
    let response = app.get_with(&token, WEBHOOK_STATUS).await;
    assert_error(response, StatusCode::FORBIDDEN, &["INSUFFICIENT_SCOPE"]).await;
}

#[tokio::test]
async fn the_dashboard_is_served_with_strict_headers() {
    let app = TestApp::spawn().await;
    for (path, content_type, needle) in [
        ("/dashboard", "text/html; charset=utf-8", "<title>"),
        (
            "/dashboard/app.js",
            "text/javascript; charset=utf-8",
            "sessionStorage",
        ),
        ("/dashboard/app.css", "text/css; charset=utf-8", ":root"),
    ] {
        // No token: the page and its assets are public; the data is not.
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
        assert_eq!(header("content-type"), content_type);
        assert_eq!(
            header("content-security-policy"),
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("referrer-policy"), "no-referrer");
        assert_eq!(header("cache-control"), "no-cache");
        let etag = header("etag");
        assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
        assert!(response.text().await.unwrap().contains(needle), "{path}");

        let again = app
            .http
            .get(app.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
        assert_eq!(again.text().await.unwrap(), "");
    }
    let response = app.http.post(app.url("/dashboard")).send().await.unwrap();
    assert_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        &["METHOD_NOT_ALLOWED"],
    )
    .await;
    let response = app
        .http
        .get(app.url("/dashboard/other.js"))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::NOT_FOUND, &["NOT_FOUND"]).await;
}
