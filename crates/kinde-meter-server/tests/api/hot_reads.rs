//! Read-your-writes of the hot reads (the entitlement check, the usage read):
//! they may answer from agreements they remember (SQLite keeps them with each
//! read connection, docs/design.md#hot-read-cache), but never once an
//! agreement has changed: an agreement created over HTTP and answered 200,
//! one created by another store on the same data (the CLI beside a running
//! server), or a row changed behind the server's back.

use std::sync::Arc;

use crate::support::{Options, TestApp, backend};
use jiff::Timestamp;
use kinde_meter_core::{
    catalog::Catalog,
    ids::{CustomerId, PlanCode},
};
use kinde_meter_store::NewAgreement;
use reqwest::StatusCode;
use serde_json::{Value, json};

const CHECK: &str = "/api/v1/billing/entitlements/check";
const START: &str = "2026-12-06T06:37:55Z";

fn catalog() -> Catalog {
    Catalog::parse(
        r#"
[[plans]]
code = "pro"
name = "Pro"
interval = "month"

[[plans.features]]
code = "api_calls"
name = "API calls"
metered = true
limit_max = 1000

[[plans.features]]
code = "storage_gb"
name = "Storage (GB)"
metered = true

[[plans]]
code = "basic"
name = "Basic"
interval = "month"

[[plans.features]]
code = "api_calls"
name = "API calls"
metered = true
limit_max = 50
"#,
        "test.toml",
    )
    .unwrap()
}

async fn spawn() -> Arc<TestApp> {
    Arc::new(
        TestApp::spawn_with(Options {
            clock_at: Some(START.parse().unwrap()),
            catalog: catalog(),
            ..Options::default()
        })
        .await,
    )
}

/// `(entitlement_limit_max, consumed)` of `api_calls` for `customer`, from
/// several checks at once (so that several of the server's read connections
/// answer), asserting that they all agree.
async fn checks(app: &Arc<TestApp>, customer: &str) -> (Value, Value) {
    let answers = futures::future::join_all((0..8).map(|_| {
        let app = app.clone();
        let path = format!("{CHECK}?customer_id={customer}&feature_code=api_calls");
        async move {
            let response = app.get(&path).await;
            assert_eq!(response.status(), StatusCode::OK);
            let body: Value = response.json().await.unwrap();
            (
                body["entitlement_limit_max"].clone(),
                body["consumed"].clone(),
            )
        }
    }))
    .await;
    for answer in &answers {
        assert_eq!(answer, &answers[0]);
    }
    answers[0].clone()
}

/// The metered features a usage read of `agreement` reports, from several
/// reads at once, asserting that they all agree.
async fn reported_features(app: &Arc<TestApp>, agreement: &str) -> Vec<String> {
    let answers = futures::future::join_all((0..8).map(|_| {
        let app = app.clone();
        let query = format!("customer_agreement_id={agreement}");
        async move {
            app.read_usage(&query).await["usage"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["billing_feature_code"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    }))
    .await;
    for answer in &answers {
        assert_eq!(answer, &answers[0]);
    }
    answers[0].clone()
}

fn record(agreement: &str, value: &str) -> Value {
    json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": value})
}

/// Each agreement answered 200 is the one the next checks answer from, with
/// its own usage, however often the customer's agreement changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_answers_from_the_agreement_created_before_it() {
    let app = spawn().await;
    let mut previous = None;
    for round in 0..6 {
        let plan = if round % 2 == 0 { "pro" } else { "basic" };
        let agreement = app.create_agreement("cust", plan).await;
        let limit = if plan == "pro" { 1000 } else { 50 };
        assert_eq!(checks(&app, "cust").await, (json!(limit), json!("0")));
        app.record_ok(record(&agreement, &format!("{}", round + 1)))
            .await;
        let usage = json!(format!("{}", round + 1));
        assert_eq!(checks(&app, "cust").await, (json!(limit), usage.clone()));
        assert_eq!(checks(&app, "cust").await, (json!(limit), usage));
        assert_ne!(previous.as_ref(), Some(&agreement));
        previous = Some(agreement);
    }
}

/// An agreement another store creates on the same data while the server
/// runs (`kinde-meter agreements create --data-dir`) is answered from by the
/// server's next check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_answers_from_an_agreement_another_process_created() {
    let app = spawn().await;
    app.create_agreement("cust", "pro").await;
    assert_eq!(checks(&app, "cust").await, (json!(1000), json!("0")));
    assert_eq!(checks(&app, "cust").await, (json!(1000), json!("0")));

    let cli = backend::open_store(&app.data_dir).await;
    cli.create_agreement(NewAgreement {
        customer_id: CustomerId::parse("cust".to_owned()).unwrap(),
        plan_code: PlanCode::parse("basic".to_owned()).unwrap(),
        now: START.parse::<Timestamp>().unwrap(),
        id_random: [7; 10],
    })
    .await
    .unwrap();
    cli.shutdown().await;
    assert_eq!(checks(&app, "cust").await, (json!(50), json!("0")));
}

/// Agreements changed behind the server's back are seen by the next check
/// and usage read: one ended, one moved to another plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reads_see_agreement_rows_changed_behind_the_server() {
    let app = spawn().await;
    let agreement = app.create_agreement("cust", "pro").await;
    for _ in 0..2 {
        assert_eq!(checks(&app, "cust").await, (json!(1000), json!("0")));
        assert_eq!(
            reported_features(&app, &agreement).await,
            ["api_calls", "storage_gb"]
        );
    }

    let changed = backend::execute_sql(
        &app.data_dir,
        &format!("UPDATE agreements SET plan_code = 'basic' WHERE id = '{agreement}'"),
    )
    .await;
    assert_eq!(changed, 1);
    assert_eq!(reported_features(&app, &agreement).await, ["api_calls"]);
    assert_eq!(checks(&app, "cust").await, (json!(50), json!("0")));

    // Ended at the instant of the checks: no active agreement.
    let start_ns = START.parse::<Timestamp>().unwrap().as_nanosecond();
    backend::execute_sql(
        &app.data_dir,
        &format!("UPDATE agreements SET expires_on_ns = {start_ns}"),
    )
    .await;
    assert_eq!(checks(&app, "cust").await, (json!(null), json!("0")));
}
