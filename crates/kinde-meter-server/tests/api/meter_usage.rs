//! The wire contract of POST /api/v1/billing/meter_usage (docs/api.md#record-usage),
//! every error code with its status and body shape (docs/errors.md).

use crate::support::{METER_USAGE as ENDPOINT, TestApp, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The `code` of each result of a batch answer, in order.
fn result_codes(body: &Value) -> Vec<&str> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_valid_record_is_stored_and_read_back() {
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_a", "pro").await;
    app.record_ok(json!({
        "customer_agreement_id": agreement,
        "billing_feature_code": "api_calls",
        "meter_value": "150"
    }))
    .await;
    app.record_ok(json!({
        "customer_agreement_id": agreement,
        "billing_feature_code": "api_calls",
        "meter_value": "0.25",
        "meter_type_code": "delta",
        "meter_usage_timestamp": null,
        "some_future_field": {"ignored": true}
    }))
    .await;
    let usage = app.usage(&agreement, "api_calls", None).await;
    assert_eq!(usage["value"], "150.25");
    assert_eq!(usage["record_count"], 2);
    assert!(usage["last_recorded_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn charset_in_the_content_type_is_accepted() {
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_a", "pro").await;
    let body = json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "1"});
    let response = app
        .http
        .post(app.url(ENDPOINT))
        .bearer_auth(&app.token)
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_bodies_are_invalid_json() {
    let app = TestApp::spawn().await;
    for raw in [
        "",
        "{",
        "not json",
        "[1,2]",
        "\"a string\"",
        "42",
        "null",
        "{\"a\":1}}",
    ] {
        let response = app
            .http
            .post(app.url(ENDPOINT))
            .bearer_auth(&app.token)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::BAD_REQUEST, &["INVALID_JSON"]).await;
    }
    let response = app
        .http
        .post(app.url(ENDPOINT))
        .bearer_auth(&app.token)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::BAD_REQUEST, &["INVALID_JSON"]).await;
}

#[tokio::test]
async fn every_field_problem_is_listed() {
    let app = TestApp::spawn().await;
    let body = assert_error(
        app.record(json!({})).await,
        StatusCode::BAD_REQUEST,
        &["MISSING_FIELD", "MISSING_FIELD", "MISSING_FIELD"],
    )
    .await;
    let messages = body.to_string();
    for field in [
        "customer_agreement_id",
        "billing_feature_code",
        "meter_value",
    ] {
        assert!(messages.contains(field), "{messages}");
    }
    assert_error(
        app.record(json!({"customer_agreement_id": 1, "billing_feature_code": ["api_calls"], "meter_value": 5})).await,
        StatusCode::BAD_REQUEST,
        &["INVALID_FIELD", "INVALID_FIELD", "INVALID_FIELD"],
    )
    .await;
    assert_error(
        app.record(
            json!({"customer_agreement_id": "a", "billing_feature_code": "f", "meter_value": "1",
                          "meter_usage_timestamp": 1731897123, "meter_type_code": 1}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["INVALID_FIELD", "INVALID_FIELD"],
    )
    .await;
}

#[tokio::test]
async fn meter_values_follow_the_grammar_exactly() {
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_a", "pro").await;
    for bad in [
        "-1",
        "1e3",
        ".5",
        "5.",
        " 1",
        "0.1234567891",
        "1234567890123456789",
        "",
        "NaN",
        "+2",
    ] {
        let response = app
            .record(json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": bad}))
            .await;
        let body = assert_error(response, StatusCode::BAD_REQUEST, &["INVALID_METER_VALUE"]).await;
        assert!(body.to_string().contains("meter_value"));
    }
    // Nothing of the above was stored.
    assert_eq!(
        app.usage(&agreement, "api_calls", None).await["record_count"],
        0
    );
    for (good, _) in [
        ("007", "7"),
        ("1500.000000001", ""),
        ("999999999999999999.999999999", ""),
    ] {
        app.record_ok(json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": good}))
            .await;
    }
    assert_eq!(
        app.usage_value(&agreement, "api_calls", None).await,
        "1000000000000001507.000000000"
            .trim_end_matches('0')
            .trim_end_matches('.')
    );
}

#[tokio::test]
async fn timestamps_and_meter_types_are_checked() {
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_a", "pro").await;
    let record = |extra: serde_json::Value| {
        let mut body = json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "1"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    assert_error(
        app.record(record(json!({"meter_usage_timestamp": "last tuesday"})))
            .await,
        StatusCode::BAD_REQUEST,
        &["INVALID_TIMESTAMP"],
    )
    .await;
    let future = (jiff::Timestamp::now() + jiff::SignedDuration::from_mins(10)).to_string();
    assert_error(
        app.record(record(json!({"meter_usage_timestamp": future})))
            .await,
        StatusCode::BAD_REQUEST,
        &["TIMESTAMP_IN_FUTURE"],
    )
    .await;
    assert_error(
        app.record(record(json!({"meter_type_code": "replace"})))
            .await,
        StatusCode::BAD_REQUEST,
        &["INVALID_METER_TYPE"],
    )
    .await;
    // A naive timestamp (Python's isoformat) is UTC; a near-future one is within skew.
    let naive = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string();
    app.record_ok(record(json!({"meter_usage_timestamp": naive})))
        .await;
    let soon = (jiff::Timestamp::now() + jiff::SignedDuration::from_mins(4)).to_string();
    app.record_ok(record(json!({"meter_usage_timestamp": soon})))
        .await;
    assert_eq!(
        app.usage(&agreement, "api_calls", None).await["record_count"],
        2
    );
}

#[tokio::test]
async fn unknown_agreements_and_features_are_refused() {
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_a", "pro").await;
    assert_error(
        app.record(json!({"customer_agreement_id": "agreement_nope", "billing_feature_code": "api_calls", "meter_value": "1"}))
            .await,
        StatusCode::BAD_REQUEST,
        &["AGREEMENT_NOT_FOUND"],
    )
    .await;
    assert_error(
        app.record(json!({"customer_agreement_id": agreement, "billing_feature_code": "teleports", "meter_value": "1"}))
            .await,
        StatusCode::BAD_REQUEST,
        &["FEATURE_NOT_FOUND"],
    )
    .await;
    assert_error(
        app.record(json!({"customer_agreement_id": agreement, "billing_feature_code": "sso", "meter_value": "1"}))
            .await,
        StatusCode::BAD_REQUEST,
        &["FEATURE_NOT_METERED"],
    )
    .await;
}

#[tokio::test]
async fn bodies_over_64_kib_are_refused_after_authentication() {
    let app = TestApp::spawn().await;
    let padding = "x".repeat(70 * 1024);
    let body = json!({"customer_agreement_id": "a", "billing_feature_code": "f", "meter_value": "1", "pad": padding});
    assert_error(
        app.record(body.clone()).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        &["BODY_TOO_LARGE"],
    )
    .await;
    // Authentication answers first.
    let response = app
        .http
        .post(app.url(ENDPOINT))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::FORBIDDEN, &["INVALID_CREDENTIALS"]).await;
}

#[tokio::test]
async fn batch_results_are_per_record() {
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_a", "pro").await;
    let good = json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "2"});
    let response = app
        .post(
            "/api/v1/billing/meter_usage/batch",
            &json!({"records": [good, {"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "x"},
                                good, {"customer_agreement_id": "agreement_nope", "billing_feature_code": "api_calls", "meter_value": "1"},
                                {"customer_agreement_id": agreement}]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let codes = result_codes(&body);
    assert_eq!(
        codes,
        [
            "OK",
            "INVALID_METER_VALUE",
            "OK",
            "AGREEMENT_NOT_FOUND",
            "MISSING_FIELD"
        ]
    );
    let indexes: Vec<u64> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 2, 3, 4]);
    assert_eq!(app.usage_value(&agreement, "api_calls", None).await, "4");

    let too_many: Vec<_> = (0..101).map(|_| good.clone()).collect();
    assert_error(
        app.post(
            "/api/v1/billing/meter_usage/batch",
            &json!({"records": too_many}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["BATCH_TOO_LARGE"],
    )
    .await;
    assert_error(
        app.post("/api/v1/billing/meter_usage/batch", &json!({"rows": []}))
            .await,
        StatusCode::BAD_REQUEST,
        &["MISSING_FIELD"],
    )
    .await;
    assert_eq!(app.usage_value(&agreement, "api_calls", None).await, "4");
}

/// A batch whose `records` is not an array of JSON objects is malformed as a
/// whole (docs/api.md): 400 naming every element that is not an object, and
/// nothing of it stored, its objects included.
#[tokio::test]
async fn a_batch_with_a_record_that_is_not_an_object_is_refused_whole() {
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_a", "pro").await;
    let good = json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "2"});
    for (records, named) in [
        (json!([good, 7]), vec!["records[1]"]),
        (
            json!([null, good, "x", [good], true]),
            vec!["records[0]", "records[2]", "records[3]", "records[4]"],
        ),
    ] {
        let body = assert_error(
            app.post(
                "/api/v1/billing/meter_usage/batch",
                &json!({ "records": records }),
            )
            .await,
            StatusCode::BAD_REQUEST,
            &vec!["INVALID_FIELD"; named.len()],
        )
        .await;
        for (error, field) in body["errors"].as_array().unwrap().iter().zip(&named) {
            let message = error["message"].as_str().unwrap();
            assert!(message.starts_with(&format!("{field} ")), "{message}");
        }
    }
    // Not an array at all: the whole request too.
    assert_error(
        app.post(
            "/api/v1/billing/meter_usage/batch",
            &json!({"records": {"0": good}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["INVALID_FIELD"],
    )
    .await;
    assert_eq!(app.record_count(&agreement, "api_calls").await, 0);
}

#[tokio::test]
async fn no_request_a_client_can_send_gets_a_5xx() {
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_a", "pro").await;
    let nasty = [
        json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "1".repeat(5000)}),
        json!({"customer_agreement_id": "\u{0000}", "billing_feature_code": "\n", "meter_value": "1"}),
        json!({"customer_agreement_id": "a".repeat(10_000), "billing_feature_code": "api_calls", "meter_value": "1"}),
        json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "1",
               "meter_usage_timestamp": "9999-12-31T23:59:59Z"}),
        json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "1",
               "meter_usage_timestamp": "0001-01-01T00:00:00Z"}),
        json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "1",
               "meter_usage_timestamp": "2024-02-30T00:00:00Z"}),
        json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "1",
               "meter_usage_timestamp": "2024-01-01T00:00:00+99:99"}),
        json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "١٢"}),
        json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "1", "meter_type_code": "ABSOLUTE"}),
    ];
    for body in nasty {
        let response = app.record(body.clone()).await;
        assert!(
            response.status().is_client_error() || response.status().is_success(),
            "{body}: {}",
            response.status()
        );
    }
    let deep = "[".repeat(10_000);
    for raw in [deep.as_str(), "{\"a\":\"\\ud800\"}", "\u{feff}{}"] {
        let response = app
            .http
            .post(app.url(ENDPOINT))
            .bearer_auth(&app.token)
            .header("content-type", "application/json")
            .body(raw.to_owned())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    for path in [
        "/api/v1/billing/meter_usage?customer_agreement_id=%ZZ",
        "/api/v1/billing/agreements?page_size=-1&customer_id=x",
    ] {
        let response = app.get(path).await;
        assert!(
            response.status().is_client_error(),
            "{path}: {}",
            response.status()
        );
    }
    // Unknown routes and methods answer in the error shape too.
    assert_error(
        app.get("/nope").await,
        StatusCode::NOT_FOUND,
        &["NOT_FOUND"],
    )
    .await;
    let response = app
        .http
        .delete(app.url(ENDPOINT))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        &["METHOD_NOT_ALLOWED"],
    )
    .await;
}

/// serde_json's private `$serde_json::private::RawValue` key is an ordinary
/// key in a usage body too: in an unknown field's value (skipped, the record
/// stored), and as a record's own first key (an object without its fields),
/// never `INVALID_JSON` for a body that is JSON.
#[tokio::test]
async fn the_raw_value_key_is_an_ordinary_key() {
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_a", "pro").await;
    let raw = "$serde_json::private::RawValue";
    app.record_ok(json!({
        "customer_agreement_id": agreement,
        "billing_feature_code": "api_calls",
        "meter_value": "3",
        "some_future_field": {raw: "not json", "and": [{raw: "2", "more": 1}]}
    }))
    .await;
    let inner = json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "5"});
    assert_error(
        app.record(json!({raw: inner.to_string()})).await,
        StatusCode::BAD_REQUEST,
        &["MISSING_FIELD", "MISSING_FIELD", "MISSING_FIELD"],
    )
    .await;
    let response = app
        .post(
            "/api/v1/billing/meter_usage/batch",
            &json!({"records": [{raw: inner.to_string(), "meter_value": "5"}, inner]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let codes = result_codes(&body);
    assert_eq!(codes, ["MISSING_FIELD", "OK"]);
    assert_eq!(app.usage_value(&agreement, "api_calls", None).await, "8");
}
