//! Entitlements across servers on one database (docs/entitlements.md): the
//! usage check and the listing read the database's aggregates, so a record
//! committed through one server counts at once on the other, and a hard limit
//! raced through both is never passed.

use std::sync::Arc;

use kinde_meter_core::catalog::Catalog;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{PUBLIC_URL, on_postgres};
use crate::support::{Options, TestApp, assert_error, sum};

const BATCH: &str = "/api/v1/billing/meter_usage/batch";

/// `tokens` may reach 100 per period and no more.
const CATALOG: &str = r#"
[[plans]]
code = "capped"
name = "Capped"
interval = "month"

[[plans.features]]
code = "tokens"
name = "Tokens"
metered = true
limit_max = 100
enforce_limit = true
"#;

/// Two servers on one database with the capped catalog, as behind a load balancer.
async fn two_capped_servers() -> (TestApp, TestApp) {
    let catalog = || Catalog::parse(CATALOG, "<capped catalog>").unwrap();
    let one = TestApp::spawn_with(Options {
        public_url: Some(PUBLIC_URL.to_owned()),
        catalog: catalog(),
        ..Options::default()
    })
    .await;
    let two = TestApp::spawn_with(Options {
        public_url: Some(PUBLIC_URL.to_owned()),
        data_dir: Some(one.data_dir.clone()),
        catalog: catalog(),
        ..Options::default()
    })
    .await;
    (one, two)
}

fn record(agreement: &str, value: &str) -> Value {
    json!({"customer_agreement_id": agreement, "billing_feature_code": "tokens", "meter_value": value})
}

async fn check(app: &TestApp, quantity: &str) -> Value {
    let response = app
        .get(&format!(
            "/api/v1/billing/entitlements/check?customer_id=cust&feature_code=tokens&quantity={quantity}"
        ))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Records `tokens` through `app` (singles and batches of two) until even the
/// smallest amount is refused; returns the values stored.
async fn write_until_refused(app: Arc<TestApp>, agreement: String, writer: usize) -> Vec<String> {
    let amounts = ["2", "1", "0.5"];
    let mut stored = Vec::new();
    let mut smallest_refused = false;
    let mut round = writer;
    while !smallest_refused {
        round += 1;
        let value = amounts[round % amounts.len()];
        if round.is_multiple_of(4) {
            let body = json!({"records": [record(&agreement, value), record(&agreement, "0.5")]});
            let response = app.post(BATCH, &body).await;
            assert_eq!(response.status(), StatusCode::OK);
            let answer: Value = response.json().await.unwrap();
            let results = answer["results"].as_array().unwrap();
            for (result, value) in results.iter().zip([value, "0.5"]) {
                match result["code"].as_str().unwrap() {
                    "OK" => stored.push(value.to_owned()),
                    "ENTITLEMENT_LIMIT_EXCEEDED" => smallest_refused |= value == "0.5",
                    other => panic!("unexpected {other}: {answer}"),
                }
            }
        } else {
            let response = app.record(record(&agreement, value)).await;
            if response.status() == StatusCode::OK {
                stored.push(value.to_owned());
            } else {
                assert_error(
                    response,
                    StatusCode::BAD_REQUEST,
                    &["ENTITLEMENT_LIMIT_EXCEEDED"],
                )
                .await;
                smallest_refused |= value == "0.5";
            }
        }
    }
    stored
}

/// 32 writers, half through each server, against one enforced limit: the usage
/// ends at the limit exactly, and it is what the accepted records add up to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_limit_raced_through_two_servers_is_never_passed() {
    if !on_postgres("a_hard_limit_raced_through_two_servers_is_never_passed") {
        return;
    }
    let (one, two) = two_capped_servers().await;
    let agreement = one.create_agreement("cust", "capped").await;

    // A record committed through one server is seen at once by the other's check.
    two.record_ok(record(&agreement, "40")).await;
    let answer = check(&one, "60").await;
    assert_eq!(
        (
            &answer["allowed"],
            &answer["consumed"],
            &answer["remaining"]
        ),
        (&json!(true), &json!("40"), &json!("60"))
    );
    assert_eq!(check(&one, "60.5").await["allowed"], false);

    let apps = [Arc::new(one), Arc::new(two)];
    let writers: Vec<_> = (0..32)
        .map(|writer| {
            tokio::spawn(write_until_refused(
                apps[writer % 2].clone(),
                agreement.clone(),
                writer,
            ))
        })
        .collect();
    let mut accepted = vec!["40".to_owned()];
    for writer in writers {
        accepted.extend(writer.await.unwrap());
    }
    assert_eq!(sum(&accepted), "100");
    for app in &apps {
        let usage = app.usage(&agreement, "tokens", None).await;
        assert_eq!(usage["value"], "100");
        assert_eq!(usage["record_count"].as_u64(), Some(accepted.len() as u64));
        let listed = app
            .get("/api/v1/billing/entitlements?customer_id=cust")
            .await
            .json::<Value>()
            .await
            .unwrap();
        let tokens = &listed["entitlements"][0];
        assert_eq!(
            (&tokens["consumed"], &tokens["remaining"]),
            (&json!(100), &json!(0)),
            "{listed}"
        );
        assert_eq!(check(app, "0.000000001").await["allowed"], false);
    }
}
