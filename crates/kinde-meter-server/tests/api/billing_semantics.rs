//! docs/billing.md: periods, period assignment and the ordered delta/absolute
//! rule, read back exactly as strings. The billing clock is a manual one the tests move.

use crate::support::TestApp;
use jiff::SignedDuration;
use serde_json::{Value, json};

fn rec(agreement: &str, feature: &str, value: &str, kind: &str, at: &str) -> Value {
    json!({
        "customer_agreement_id": agreement,
        "billing_feature_code": feature,
        "meter_value": value,
        "meter_type_code": kind,
        "meter_usage_timestamp": at,
    })
}

#[tokio::test]
async fn an_older_delta_after_an_absolute_changes_nothing() {
    let app = TestApp::spawn_at("2024-01-10T00:00:00Z").await;
    let a = app.create_agreement("cust", "pro").await;
    app.clock().set("2024-01-20T00:00:00Z".parse().unwrap());
    app.record_ok(rec(
        &a,
        "api_calls",
        "50",
        "absolute",
        "2024-01-15T00:00:00Z",
    ))
    .await;
    app.record_ok(rec(&a, "api_calls", "7", "delta", "2024-01-12T00:00:00Z"))
        .await;
    assert_eq!(app.usage_value(&a, "api_calls", None).await, "50");
    app.record_ok(rec(&a, "api_calls", "3", "delta", "2024-01-16T00:00:00Z"))
        .await;
    assert_eq!(app.usage_value(&a, "api_calls", None).await, "53");
    let usage = app.usage(&a, "api_calls", None).await;
    assert_eq!(usage["record_count"], 3);
    assert_eq!(usage["period_start"], "2024-01-10T00:00:00Z");
    assert_eq!(usage["period_end"], "2024-02-10T00:00:00Z");
}

#[tokio::test]
async fn an_absolute_overrides_earlier_deltas_and_later_ones_add() {
    let app = TestApp::spawn_at("2024-01-10T00:00:00Z").await;
    let a = app.create_agreement("cust", "pro").await;
    app.clock().set("2024-01-20T00:00:00Z".parse().unwrap());
    app.record_ok(rec(&a, "api_calls", "10", "delta", "2024-01-12T00:00:00Z"))
        .await;
    app.record_ok(rec(
        &a,
        "api_calls",
        "3",
        "absolute",
        "2024-01-13T00:00:00+02:00",
    ))
    .await;
    assert_eq!(app.usage_value(&a, "api_calls", None).await, "3");
    app.record_ok(rec(&a, "api_calls", "0.5", "delta", "2024-01-14T00:00:00Z"))
        .await;
    assert_eq!(app.usage_value(&a, "api_calls", None).await, "3.5");
    // A late absolute between the delta of the 12th and the absolute of the 13th is
    // overridden by the later absolute: nothing changes.
    app.record_ok(rec(
        &a,
        "api_calls",
        "1000",
        "absolute",
        "2024-01-12T12:00:00Z",
    ))
    .await;
    assert_eq!(app.usage_value(&a, "api_calls", None).await, "3.5");
    // A late absolute after everything but the last delta keeps that delta.
    app.record_ok(rec(
        &a,
        "api_calls",
        "20",
        "absolute",
        "2024-01-13T23:00:00Z",
    ))
    .await;
    assert_eq!(app.usage_value(&a, "api_calls", None).await, "20.5");
}

#[tokio::test]
async fn exact_ties_are_broken_by_arrival_order() {
    let app = TestApp::spawn_at("2024-01-10T00:00:00Z").await;
    let a = app.create_agreement("cust", "pro").await;
    app.clock().set("2024-01-20T00:00:00Z".parse().unwrap());
    let t = "2024-01-15T00:00:00Z";
    app.record_ok(rec(&a, "api_calls", "4", "delta", t)).await;
    app.record_ok(rec(&a, "api_calls", "1", "absolute", t))
        .await;
    assert_eq!(app.usage_value(&a, "api_calls", None).await, "1");
    app.record_ok(rec(&a, "storage_gb", "1", "absolute", t))
        .await;
    app.record_ok(rec(&a, "storage_gb", "4", "delta", t)).await;
    assert_eq!(app.usage_value(&a, "storage_gb", None).await, "5");
}

#[tokio::test]
async fn usage_after_a_period_closed_lands_in_the_current_period() {
    let app = TestApp::spawn_at("2024-01-10T00:00:00Z").await;
    let a = app.create_agreement("cust", "pro").await;
    app.clock().set("2024-02-15T00:00:00Z".parse().unwrap());
    app.record_ok(rec(
        &a,
        "api_calls",
        "100",
        "absolute",
        "2024-02-12T00:00:00Z",
    ))
    .await;
    // January's period ended on Feb 10: this delta counts from Feb 10, before the
    // absolute of Feb 12, so it changes nothing...
    app.record_ok(rec(&a, "api_calls", "5", "delta", "2024-01-20T00:00:00Z"))
        .await;
    assert_eq!(app.usage_value(&a, "api_calls", None).await, "100");
    let current = app.usage(&a, "api_calls", None).await;
    assert_eq!(current["record_count"], 2);
    assert_eq!(current["period_start"], "2024-02-10T00:00:00Z");
    // ...and January's usage is untouched.
    let january = app
        .usage(&a, "api_calls", Some("2024-01-20T00:00:00Z"))
        .await;
    assert_eq!(
        (january["value"].as_str(), january["record_count"].as_u64()),
        (Some("0"), Some(0))
    );
    // Without an absolute in the current period, the late delta adds there.
    app.record_ok(rec(&a, "storage_gb", "5", "delta", "2024-01-20T00:00:00Z"))
        .await;
    assert_eq!(app.usage_value(&a, "storage_gb", None).await, "5");
    assert_eq!(
        app.usage_value(&a, "storage_gb", Some("2024-01-20T00:00:00Z"))
            .await,
        "0"
    );
}

#[tokio::test]
async fn usage_before_the_agreement_counts_in_its_first_period() {
    let app = TestApp::spawn_at("2024-01-10T00:00:00Z").await;
    let a = app.create_agreement("cust", "pro").await;
    app.record_ok(rec(&a, "api_calls", "2", "delta", "2023-12-01T00:00:00Z"))
        .await;
    let usage = app.usage(&a, "api_calls", None).await;
    assert_eq!(
        (usage["value"].as_str(), usage["period_start"].as_str()),
        (Some("2"), Some("2024-01-10T00:00:00Z"))
    );
}

#[tokio::test]
async fn month_end_anchors_clamp_per_month() {
    let app = TestApp::spawn_at("2023-01-31T12:00:00Z").await;
    let a = app.create_agreement("cust", "pro").await;
    let listed = app.list_agreements("customer_id=cust").await;
    assert_eq!(
        listed["agreements"][0]["current_period_start"],
        "2023-01-31T12:00:00Z"
    );
    assert_eq!(
        listed["agreements"][0]["current_period_end"],
        "2023-02-28T12:00:00Z"
    );
    app.clock().set("2023-03-01T00:00:00Z".parse().unwrap());
    let listed = app.list_agreements("customer_id=cust").await;
    assert_eq!(
        listed["agreements"][0]["current_period_start"],
        "2023-02-28T12:00:00Z"
    );
    assert_eq!(
        listed["agreements"][0]["current_period_end"],
        "2023-03-31T12:00:00Z"
    );
    app.record_ok(rec(&a, "api_calls", "9", "delta", "2023-02-28T12:00:00Z"))
        .await;
    let usage = app
        .usage(&a, "api_calls", Some("2023-03-30T00:00:00Z"))
        .await;
    assert_eq!(usage["value"], "9");
    assert_eq!(usage["period_end"], "2023-03-31T12:00:00Z");
}

#[tokio::test]
async fn leap_years_give_february_its_29th() {
    let app = TestApp::spawn_at("2024-01-31T00:00:00Z").await;
    let a = app.create_agreement("cust", "pro").await;
    let usage = app
        .usage(&a, "api_calls", Some("2024-02-15T00:00:00Z"))
        .await;
    assert_eq!(usage["period_end"], "2024-02-29T00:00:00Z");
    let usage = app
        .usage(&a, "api_calls", Some("2024-03-01T00:00:00Z"))
        .await;
    assert_eq!(usage["period_start"], "2024-02-29T00:00:00Z");
    assert_eq!(usage["period_end"], "2024-03-31T00:00:00Z");
}

#[tokio::test]
async fn yearly_plans_from_a_leap_day() {
    let app = TestApp::spawn_at("2024-02-29T08:00:00Z").await;
    let a = app.create_agreement("cust", "annual").await;
    app.clock().set("2024-07-01T00:00:00Z".parse().unwrap());
    app.record_ok(rec(&a, "seats", "12", "absolute", "2024-06-01T00:00:00Z"))
        .await;
    let usage = app.usage(&a, "seats", Some("2024-12-31T00:00:00Z")).await;
    assert_eq!(usage["value"], "12");
    assert_eq!(usage["period_end"], "2025-02-28T08:00:00Z");
    let next = app.usage(&a, "seats", Some("2025-03-01T00:00:00Z")).await;
    assert_eq!(
        (next["value"].as_str(), next["period_start"].as_str()),
        (Some("0"), Some("2025-02-28T08:00:00Z"))
    );
}

#[tokio::test]
async fn daily_plans_roll_over_each_day() {
    let app = TestApp::spawn_at("2024-05-01T08:30:00Z").await;
    let a = app.create_agreement("cust", "daily").await;
    app.clock().set("2024-05-01T09:30:00Z".parse().unwrap());
    app.record_ok(rec(&a, "api_calls", "1", "delta", "2024-05-01T09:00:00Z"))
        .await;
    app.clock()
        .advance(SignedDuration::from_hours(23) + SignedDuration::from_secs(1));
    // Yesterday's period has closed: a record stamped yesterday counts today.
    app.record_ok(rec(&a, "api_calls", "2", "delta", "2024-05-01T10:00:00Z"))
        .await;
    assert_eq!(
        app.usage_value(&a, "api_calls", Some("2024-05-01T12:00:00Z"))
            .await,
        "1"
    );
    let today = app.usage(&a, "api_calls", None).await;
    assert_eq!(today["value"], "2");
    assert_eq!(today["period_start"], "2024-05-02T08:30:00Z");
}

#[tokio::test]
async fn reads_list_every_metered_feature_with_zero_for_unused_ones() {
    let app = TestApp::spawn_at("2024-01-10T00:00:00Z").await;
    let a = app.create_agreement("cust", "pro").await;
    app.clock().set("2024-01-10T02:00:00Z".parse().unwrap());
    app.record_ok(rec(
        &a,
        "api_calls",
        "1.50",
        "delta",
        "2024-01-10T01:00:00Z",
    ))
    .await;
    let body = app.read_usage(&format!("customer_agreement_id={a}")).await;
    let usage = body["usage"].as_array().unwrap();
    assert_eq!(usage.len(), 2, "sso is not metered: {body}");
    assert_eq!(usage[0]["billing_feature_code"], "api_calls");
    assert_eq!(usage[0]["value"], "1.5");
    assert_eq!(usage[1]["billing_feature_code"], "storage_gb");
    assert_eq!(usage[1]["value"], "0");
    assert_eq!(usage[1]["record_count"], 0);
    assert!(usage[1]["last_recorded_at"].is_null());
    assert_eq!(body["code"], "OK");
}
