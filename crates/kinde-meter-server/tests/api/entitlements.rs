//! Entitlements (docs/entitlements.md): Kinde's listing with its nulls and
//! integers exactly, paging and its cursors, `max_value`, `expand=plans`, the
//! usage fields; the live usage check; the scope; hard limits over HTTP, single
//! and batch, replayed, and raced by concurrent writers.

use std::sync::Arc;

use crate::support::{METER_USAGE, Options, TestApp, assert_error, sum};
use kinde_meter_core::catalog::Catalog;
use kinde_meter_wire::Scope;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ENTITLEMENTS: &str = "/api/v1/billing/entitlements";
const CHECK: &str = "/api/v1/billing/entitlements/check";
const BATCH: &str = "/api/v1/billing/meter_usage/batch";

/// When the tests' agreements start (a monthly plan's periods are anchored here).
const START: &str = "2026-12-06T06:37:55Z";
const PERIOD_END: &str = "2027-01-06T06:37:55Z";

/// A catalog with every kind of entitlement: metered with a limit (recorded
/// beyond it), metered with an enforced limit, metered unlimited, not metered;
/// `wide` has more features than a default page.
fn catalog() -> Catalog {
    let mut toml = String::from(
        r#"
[[plans]]
code = "pro"
name = "Pro"
interval = "month"
group = "saas"

[[plans.features]]
code = "api_calls"
name = "API calls"
metered = true
price_name = "API requests"
unit_amount = 2
limit_max = 1000
limit_min = 0

[[plans.features]]
code = "seats"
name = "Seats"
metered = true
limit_max = 10
enforce_limit = true

[[plans.features]]
code = "tokens"
name = "Tokens"
metered = true
unit_amount = 1
limit_max = 100
enforce_limit = true

[[plans.features]]
code = "storage_gb"
name = "Storage (GB)"
metered = true
unit_amount = 10

[[plans.features]]
code = "sso"
name = "Single sign-on"
metered = false
fixed_charge = 1500

[[plans]]
code = "basic"
name = "Basic"
interval = "month"

[[plans.features]]
code = "api_calls"
name = "API calls"
metered = true
limit_max = 50

[[plans]]
code = "wide"
name = "Wide"
interval = "week"
"#,
    );
    for i in 0..12 {
        toml.push_str(&format!(
            "\n[[plans.features]]\ncode = \"f{i:02}\"\nname = \"Feature {i}\"\nmetered = false\n"
        ));
    }
    Catalog::parse(&toml, "<entitlements test catalog>").unwrap()
}

async fn spawn() -> TestApp {
    TestApp::spawn_with(Options {
        clock_at: Some(START.parse().unwrap()),
        catalog: catalog(),
        ..Options::default()
    })
    .await
}

/// The listing for `query` (after `?`), asserting 200.
async fn list(app: &TestApp, query: &str) -> Value {
    let response = app.get(&format!("{ENTITLEMENTS}?{query}")).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body
}

/// The usage check for `query` (after `?`), asserting 200.
async fn check(app: &TestApp, query: &str) -> Value {
    let response = app.get(&format!("{CHECK}?{query}")).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body
}

fn ids(page: &Value) -> Vec<String> {
    page["entitlements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

fn codes(page: &Value) -> Vec<String> {
    page["entitlements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["feature_code"].as_str().unwrap().to_owned())
        .collect()
}

/// The entitlement of `feature` in a listing.
fn entitlement<'a>(page: &'a Value, feature: &str) -> &'a Value {
    page["entitlements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["feature_code"] == feature)
        .unwrap_or_else(|| panic!("no {feature} in {page}"))
}

/// `feature_code → entitlement_id` as the agreements listing shows them for the
/// customer's newest agreement.
async fn agreement_entitlement_ids(app: &TestApp, customer: &str) -> Vec<(String, String)> {
    let page = app
        .list_agreements(&format!("customer_id={customer}&page_size=1"))
        .await;
    page["agreements"][0]["entitlements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["feature_code"].as_str().unwrap().to_owned(),
                e["entitlement_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn record(agreement: &str, feature: &str, value: &str) -> Value {
    json!({"customer_agreement_id": agreement, "billing_feature_code": feature, "meter_value": value})
}

fn absolute(agreement: &str, feature: &str, value: &str) -> Value {
    json!({"customer_agreement_id": agreement, "billing_feature_code": feature, "meter_value": value, "meter_type_code": "absolute"})
}

#[tokio::test]
async fn the_listing_is_kindes_response_with_nulls_and_integers_exactly() {
    let app = spawn().await;
    let agreement = app.create_agreement("cust", "pro").await;
    app.record_ok(record(&agreement, "api_calls", "1500.25"))
        .await;
    app.record_ok(record(&agreement, "api_calls", "23.25"))
        .await;
    app.record_ok(record(&agreement, "tokens", "7")).await;

    let response = app
        .get(&format!("{ENTITLEMENTS}?customer_id=cust&expand=plans"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    let id: std::collections::HashMap<String, String> = agreement_entitlement_ids(&app, "cust")
        .await
        .into_iter()
        .collect();
    let period = json!({"current_period_start": START, "current_period_end": PERIOD_END});
    let metered = |fields: Value| {
        let mut fields = fields;
        let object = fields.as_object_mut().unwrap();
        object.extend(period.as_object().unwrap().clone());
        fields
    };
    // Every field of Kinde's models is present; integers are JSON integers and a
    // term the catalog leaves out is null, never a default. kinde-meter's usage
    // fields are on metered entitlements only.
    let expected = json!({
        "code": "OK",
        "message": "Success",
        "has_more": false,
        "entitlements": [
            metered(json!({"id": id["api_calls"], "fixed_charge": null, "price_name": "API requests",
                "unit_amount": 2, "feature_code": "api_calls", "feature_name": "API calls",
                "entitlement_limit_max": 1000, "entitlement_limit_min": 0,
                "consumed": 1523.5, "remaining": 0})),
            metered(json!({"id": id["seats"], "fixed_charge": null, "price_name": "Seats",
                "unit_amount": null, "feature_code": "seats", "feature_name": "Seats",
                "entitlement_limit_max": 10, "entitlement_limit_min": null,
                "consumed": 0, "remaining": 10})),
            metered(json!({"id": id["tokens"], "fixed_charge": null, "price_name": "Tokens",
                "unit_amount": 1, "feature_code": "tokens", "feature_name": "Tokens",
                "entitlement_limit_max": 100, "entitlement_limit_min": null,
                "consumed": 7, "remaining": 93})),
            metered(json!({"id": id["storage_gb"], "fixed_charge": null, "price_name": "Storage (GB)",
                "unit_amount": 10, "feature_code": "storage_gb", "feature_name": "Storage (GB)",
                "entitlement_limit_max": null, "entitlement_limit_min": null,
                "consumed": 0, "remaining": null})),
            {"id": id["sso"], "fixed_charge": 1500, "price_name": "Single sign-on",
                "unit_amount": null, "feature_code": "sso", "feature_name": "Single sign-on",
                "entitlement_limit_max": null, "entitlement_limit_min": null},
        ],
        "plans": [{"code": "pro", "subscribed_on": START}],
    });
    assert_eq!(body, expected, "{text}");
    // Usage is written as the exact decimal: an integer stays an integer.
    assert!(
        text.contains(r#""consumed":1523.5,"remaining":0,"#),
        "{text}"
    );
    assert!(text.contains(r#""consumed":7,"remaining":93,"#), "{text}");
    // The ids are the agreements listing's, in the catalog's order.
    let from_agreements = agreement_entitlement_ids(&app, "cust").await;
    assert_eq!(
        ids(&body),
        from_agreements
            .iter()
            .map(|(_, id)| id.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        codes(&body),
        from_agreements
            .iter()
            .map(|(code, _)| code.clone())
            .collect::<Vec<_>>()
    );
    // Without expand=plans there is no `plans` at all.
    let plain = list(&app, "customer_id=cust").await;
    assert!(plain.get("plans").is_none(), "{plain}");
    assert_eq!(plain["entitlements"], body["entitlements"]);
}

#[tokio::test]
async fn customers_without_an_active_agreement_have_no_entitlements() {
    let app = spawn().await;
    for query in [
        "customer_id=nobody",
        "customer_id=nobody&expand=plans&max_value=5&page_size=500",
    ] {
        let body = list(&app, query).await;
        assert_eq!(body["entitlements"], json!([]), "{body}");
        assert_eq!(body["has_more"], false);
    }
    assert_eq!(
        list(&app, "customer_id=nobody&expand=plans").await["plans"],
        json!([])
    );
    // A new agreement replaces the old plan's entitlements with the new plan's,
    // under new ids.
    let old = app.create_agreement("cust", "pro").await;
    let before = list(&app, "customer_id=cust").await;
    let new = app.create_agreement("cust", "basic").await;
    assert_ne!(old, new);
    let after = list(&app, "customer_id=cust&expand=plans").await;
    assert_eq!(codes(&after), ["api_calls"]);
    assert!(!ids(&before).contains(&ids(&after)[0]));
    assert_eq!(
        after["plans"],
        json!([{"code": "basic", "subscribed_on": START}])
    );
    assert_eq!(
        ids(&after),
        agreement_entitlement_ids(&app, "cust")
            .await
            .into_iter()
            .map(|(_, id)| id)
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn paging_goes_forward_and_back_by_entitlement_id() {
    let app = spawn().await;
    app.create_agreement("cust", "pro").await;
    let all = ids(&list(&app, "customer_id=cust").await);
    assert_eq!(all.len(), 5);
    let page = |query: String| {
        let app = &app;
        async move { list(app, &format!("customer_id=cust&page_size=2&{query}")).await }
    };
    let first = page(String::new()).await;
    assert_eq!(
        (ids(&first), &first["has_more"]),
        (all[0..2].to_vec(), &json!(true))
    );
    let second = page(format!("starting_after={}", all[1])).await;
    assert_eq!(
        (ids(&second), &second["has_more"]),
        (all[2..4].to_vec(), &json!(true))
    );
    let last = page(format!("starting_after={}", all[3])).await;
    assert_eq!(
        (ids(&last), &last["has_more"]),
        (all[4..].to_vec(), &json!(false))
    );
    let beyond = page(format!("starting_after={}", all[4])).await;
    assert_eq!((ids(&beyond), &beyond["has_more"]), (vec![], &json!(false)));
    // Back: the page just before an entitlement; has_more says whether newer
    // (earlier) ones remain, as for agreements.
    let back = page(format!("ending_before={}", all[4])).await;
    assert_eq!(
        (ids(&back), &back["has_more"]),
        (all[2..4].to_vec(), &json!(true))
    );
    let back = page(format!("ending_before={}", all[2])).await;
    assert_eq!(
        (ids(&back), &back["has_more"]),
        (all[0..2].to_vec(), &json!(false))
    );
    let back = page(format!("ending_before={}", all[0])).await;
    assert_eq!((ids(&back), &back["has_more"]), (vec![], &json!(false)));
    assert_eq!(
        ids(&list(&app, "customer_id=cust&page_size=1").await),
        all[0..1]
    );

    // The default page is 10; 500 is the most.
    app.create_agreement("wide", "wide").await;
    let default = list(&app, "customer_id=wide").await;
    assert_eq!(ids(&default).len(), 10);
    assert_eq!(default["has_more"], true);
    let rest = list(
        &app,
        &format!("customer_id=wide&starting_after={}", ids(&default)[9]),
    )
    .await;
    assert_eq!(codes(&rest), ["f10", "f11"]);
    assert_eq!(rest["has_more"], false);
    assert_eq!(
        ids(&list(&app, "customer_id=wide&page_size=500").await).len(),
        12
    );
}

#[tokio::test]
async fn bad_listing_requests_are_named() {
    let app = spawn().await;
    let old = app.create_agreement("cust", "basic").await;
    let old_ids = ids(&list(&app, "customer_id=cust").await);
    let new = app.create_agreement("cust", "pro").await;
    assert_ne!(old, new);
    app.create_agreement("other", "pro").await;
    let others = ids(&list(&app, "customer_id=other").await);
    assert_error(
        app.get(ENTITLEMENTS).await,
        StatusCode::BAD_REQUEST,
        &["MISSING_FIELD"],
    )
    .await;
    assert_error(
        app.get(&format!("{ENTITLEMENTS}?customer_id=")).await,
        StatusCode::BAD_REQUEST,
        &["MISSING_FIELD"],
    )
    .await;
    for query in [
        "page_size=0",
        "page_size=501",
        "page_size=ten",
        "page_size=",
        "page_size=2.0",
        "max_value=ten",
        "max_value=1.5",
        "max_value=",
        "max_value=99999999999999999999",
        "expand=agreements",
        "expand=",
        "starting_after=a&ending_before=b",
    ] {
        assert_error(
            app.get(&format!("{ENTITLEMENTS}?customer_id=cust&{query}"))
                .await,
            StatusCode::BAD_REQUEST,
            &["INVALID_FIELD"],
        )
        .await;
    }
    // A cursor that names no entitlement of this listing: unknown, another
    // customer's, the customer's ended agreement's, not an id at all.
    for cursor in [
        "entitlement_00000000000000000000000000000000".to_owned(),
        others[0].clone(),
        old_ids[0].clone(),
        "x".repeat(300),
    ] {
        for direction in ["starting_after", "ending_before"] {
            assert_error(
                app.get(&format!(
                    "{ENTITLEMENTS}?customer_id=cust&{direction}={cursor}"
                ))
                .await,
                StatusCode::BAD_REQUEST,
                &["NOT_FOUND"],
            )
            .await;
        }
    }
    // Any cursor names nothing for a customer without entitlements.
    assert_error(
        app.get(&format!(
            "{ENTITLEMENTS}?customer_id=nobody&starting_after={}",
            others[0]
        ))
        .await,
        StatusCode::BAD_REQUEST,
        &["NOT_FOUND"],
    )
    .await;
}

#[tokio::test]
async fn max_value_stands_in_for_unlimited_only() {
    let app = spawn().await;
    app.create_agreement("cust", "pro").await;
    let body = list(&app, "customer_id=cust&max_value=777").await;
    let limits: Vec<(String, Value, Value)> = body["entitlements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["feature_code"].as_str().unwrap().to_owned(),
                e["entitlement_limit_max"].clone(),
                e["entitlement_limit_min"].clone(),
            )
        })
        .collect();
    assert_eq!(
        limits,
        [
            ("api_calls".to_owned(), json!(1000), json!(0)),
            ("seats".to_owned(), json!(10), json!(null)),
            ("tokens".to_owned(), json!(100), json!(null)),
            ("storage_gb".to_owned(), json!(777), json!(null)),
            ("sso".to_owned(), json!(777), json!(null)),
        ]
    );
    // What is shown as the limit, not a limit: unlimited usage remains unlimited.
    assert_eq!(entitlement(&body, "storage_gb")["remaining"], json!(null));
    assert_eq!(
        entitlement(&list(&app, "customer_id=cust&max_value=-3").await, "sso")["entitlement_limit_max"],
        -3
    );
}

#[tokio::test]
async fn consumed_and_remaining_follow_deltas_absolutes_and_periods() {
    let app = spawn().await;
    let a = app.create_agreement("cust", "pro").await;
    let usage = |feature: &'static str| {
        let app = &app;
        async move {
            let body = list(app, "customer_id=cust").await;
            let e = entitlement(&body, feature);
            (e["consumed"].clone(), e["remaining"].clone())
        }
    };
    assert_eq!(usage("api_calls").await, (json!(0), json!(1000)));
    app.record_ok(record(&a, "api_calls", "5")).await;
    app.record_ok(record(&a, "api_calls", "2.5")).await;
    assert_eq!(usage("api_calls").await, (json!(7.5), json!(992.5)));
    app.record_ok(absolute(&a, "api_calls", "100")).await;
    assert_eq!(usage("api_calls").await, (json!(100), json!(900)));
    app.record_ok(record(&a, "api_calls", "0.000000001")).await;
    let text = app
        .get(&format!("{ENTITLEMENTS}?customer_id=cust"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#""consumed":100.000000001,"remaining":899.999999999,"#),
        "{text}"
    );
    // Beyond a limit that is not enforced: recorded, nothing remains.
    app.record_ok(absolute(&a, "api_calls", "1200")).await;
    assert_eq!(usage("api_calls").await, (json!(1200), json!(0)));
    // Unlimited.
    app.record_ok(record(&a, "storage_gb", "123456789.5")).await;
    assert_eq!(usage("storage_gb").await, (json!(123456789.5), json!(null)));
    // The next period starts from nothing.
    app.clock().set(PERIOD_END.parse().unwrap());
    let body = list(&app, "customer_id=cust").await;
    let e = entitlement(&body, "api_calls");
    assert_eq!((&e["consumed"], &e["remaining"]), (&json!(0), &json!(1000)));
    assert_eq!(e["current_period_start"], PERIOD_END);
    assert_eq!(e["current_period_end"], "2027-02-06T06:37:55Z");
    // The listing agrees with the usage read-back.
    app.record_ok(record(&a, "api_calls", "3")).await;
    assert_eq!(app.usage_value(&a, "api_calls", None).await, "3");
    assert_eq!(usage("api_calls").await, (json!(3), json!(997)));
}

#[tokio::test]
async fn the_check_answers_live_from_the_current_period() {
    let app = spawn().await;
    let a = app.create_agreement("cust", "pro").await;
    let body = check(&app, "customer_id=cust&feature_code=api_calls").await;
    assert_eq!(
        body,
        json!({"code": "OK", "message": "Success", "allowed": true, "feature_code": "api_calls",
            "entitlement_limit_max": 1000, "consumed": "0", "remaining": "1000", "quantity": "1",
            "current_period_end": PERIOD_END})
    );
    // A record committed a moment before counts at once.
    app.record_ok(record(&a, "api_calls", "998.5")).await;
    let body = check(&app, "customer_id=cust&feature_code=api_calls&quantity=1.5").await;
    assert_eq!(
        (
            &body["allowed"],
            &body["consumed"],
            &body["remaining"],
            &body["quantity"]
        ),
        (&json!(true), &json!("998.5"), &json!("1.5"), &json!("1.5"))
    );
    let body = check(
        &app,
        "customer_id=cust&feature_code=api_calls&quantity=1.500000001",
    )
    .await;
    assert_eq!(body["allowed"], false, "{body}");
    assert_eq!(body["quantity"], "1.500000001");
    // Quantity 0 asks whether the feature is usable at all.
    app.record_ok(absolute(&a, "api_calls", "1000")).await;
    let body = check(&app, "customer_id=cust&feature_code=api_calls&quantity=0").await;
    assert_eq!(
        (&body["allowed"], &body["remaining"]),
        (&json!(true), &json!("0"))
    );
    assert_eq!(
        check(&app, "customer_id=cust&feature_code=api_calls").await["allowed"],
        false
    );
    // Unlimited: allowed, limit and remaining null.
    app.record_ok(record(&a, "storage_gb", "5")).await;
    let body = check(
        &app,
        "customer_id=cust&feature_code=storage_gb&quantity=999999999999999999",
    )
    .await;
    assert_eq!(
        body,
        json!({"code": "OK", "message": "Success", "allowed": true, "feature_code": "storage_gb",
            "entitlement_limit_max": null, "consumed": "5", "remaining": null,
            "quantity": "999999999999999999", "current_period_end": PERIOD_END})
    );
    // A feature on the plan that is not metered.
    let body = check(&app, "customer_id=cust&feature_code=sso").await;
    assert_eq!(
        (
            &body["allowed"],
            &body["entitlement_limit_max"],
            &body["consumed"],
            &body["remaining"]
        ),
        (&json!(true), &json!(null), &json!("0"), &json!(null))
    );
    // Not on the plan, and no agreement: 200 with allowed false.
    let body = check(&app, "customer_id=cust&feature_code=f01").await;
    assert_eq!(
        body,
        json!({"code": "OK", "message": "Success", "allowed": false, "feature_code": "f01",
            "entitlement_limit_max": null, "consumed": "0", "remaining": "0", "quantity": "1",
            "current_period_end": PERIOD_END})
    );
    let body = check(&app, "customer_id=nobody&feature_code=api_calls").await;
    assert_eq!(
        body,
        json!({"code": "OK", "message": "Success", "allowed": false, "feature_code": "api_calls",
            "entitlement_limit_max": null, "consumed": "0", "remaining": "0", "quantity": "1",
            "current_period_end": null})
    );
    // The next period starts from nothing.
    app.clock().set(PERIOD_END.parse().unwrap());
    let body = check(
        &app,
        "customer_id=cust&feature_code=api_calls&quantity=1000",
    )
    .await;
    assert_eq!(
        (&body["allowed"], &body["consumed"]),
        (&json!(true), &json!("0"))
    );
    assert_eq!(body["current_period_end"], "2027-02-06T06:37:55Z");
}

#[tokio::test]
async fn bad_checks_are_named() {
    let app = spawn().await;
    app.create_agreement("cust", "pro").await;
    for (query, code) in [
        ("feature_code=api_calls", "MISSING_FIELD"),
        ("customer_id=cust", "MISSING_FIELD"),
        ("customer_id=cust&feature_code=", "MISSING_FIELD"),
    ] {
        assert_error(
            app.get(&format!("{CHECK}?{query}")).await,
            StatusCode::BAD_REQUEST,
            &[code],
        )
        .await;
    }
    for quantity in [
        "-1",
        "1e3",
        ".5",
        "5.",
        "1.0000000001",
        "%201",
        "",
        "abc",
        "1000000000000000000",
    ] {
        let body = assert_error(
            app.get(&format!(
                "{CHECK}?customer_id=cust&feature_code=api_calls&quantity={quantity}"
            ))
            .await,
            StatusCode::BAD_REQUEST,
            &["INVALID_METER_VALUE"],
        )
        .await;
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("quantity"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn both_routes_need_read_billing_entitlements() {
    let app = spawn().await;
    app.create_agreement("cust", "pro").await;
    let others: Vec<Scope> = Scope::ALL
        .iter()
        .copied()
        .filter(|s| *s != Scope::ReadBillingEntitlements)
        .collect();
    let without = app.token_with(&others.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let only = app.token_with(&[Scope::ReadBillingEntitlements.as_str()]);
    for path in [
        format!("{ENTITLEMENTS}?customer_id=cust"),
        format!("{CHECK}?customer_id=cust&feature_code=api_calls"),
    ] {
        let body = assert_error(
            app.get_with(&without, &path).await,
            StatusCode::FORBIDDEN,
            &["INSUFFICIENT_SCOPE"],
        )
        .await;
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("read:billing_entitlements"),
            "{body}"
        );
        assert_error(
            app.get_with("not-a-token", &path).await,
            StatusCode::FORBIDDEN,
            &["INVALID_CREDENTIALS"],
        )
        .await;
        assert_eq!(app.get_with(&only, &path).await.status(), StatusCode::OK);
    }
}

/// The usage value of `feature` on `agreement` now, and its record count.
async fn stored(app: &TestApp, agreement: &str, feature: &str) -> (String, u64) {
    let usage = app.usage(agreement, feature, None).await;
    (
        usage["value"].as_str().unwrap().to_owned(),
        usage["record_count"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn a_hard_limit_refuses_single_records_that_would_pass_it() {
    let app = spawn().await;
    let a = app.create_agreement("cust", "pro").await;
    app.record_ok(record(&a, "seats", "9.5")).await;
    let body = assert_error(
        app.record(record(&a, "seats", "0.500000001")).await,
        StatusCode::BAD_REQUEST,
        &["ENTITLEMENT_LIMIT_EXCEEDED"],
    )
    .await;
    assert!(!body["errors"][0]["message"].as_str().unwrap().is_empty());
    assert_eq!(stored(&app, &a, "seats").await, ("9.5".to_owned(), 1));
    // Up to the limit exactly is fine; then nothing more, however small.
    app.record_ok(record(&a, "seats", "0.5")).await;
    for value in ["0.000000001", "1", "999999999999999999"] {
        assert_error(
            app.record(record(&a, "seats", value)).await,
            StatusCode::BAD_REQUEST,
            &["ENTITLEMENT_LIMIT_EXCEEDED"],
        )
        .await;
    }
    // A zero delta takes the usage nowhere; an absolute above the limit is refused,
    // one below it lowers the usage.
    app.record_ok(record(&a, "seats", "0")).await;
    assert_error(
        app.record(absolute(&a, "seats", "10.5")).await,
        StatusCode::BAD_REQUEST,
        &["ENTITLEMENT_LIMIT_EXCEEDED"],
    )
    .await;
    app.record_ok(absolute(&a, "seats", "4")).await;
    assert_eq!(stored(&app, &a, "seats").await, ("4".to_owned(), 4));
    let check_body = check(&app, "customer_id=cust&feature_code=seats&quantity=6").await;
    assert_eq!(
        (&check_body["allowed"], &check_body["remaining"]),
        (&json!(true), &json!("6"))
    );
    // Other features and limits that are not enforced are untouched.
    app.record_ok(record(&a, "api_calls", "5000")).await;
    // A refusal under an Idempotency-Key is remembered: its retry answers the
    // same refusal, marked as a replay, even once the usage would admit it, and
    // stores nothing.
    app.record_ok(record(&a, "seats", "6")).await;
    let keyed = |key: &'static str| {
        app.http
            .post(app.url(METER_USAGE))
            .bearer_auth(&app.token)
            .header("Idempotency-Key", key)
            .json(&record(&a, "seats", "1"))
            .send()
    };
    let refused = keyed("refused-seat").await.unwrap();
    assert!(refused.headers().get("idempotent-replayed").is_none());
    let first = assert_error(
        refused,
        StatusCode::BAD_REQUEST,
        &["ENTITLEMENT_LIMIT_EXCEEDED"],
    )
    .await;
    app.record_ok(absolute(&a, "seats", "9")).await;
    let replayed = keyed("refused-seat").await.unwrap();
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    let again = assert_error(
        replayed,
        StatusCode::BAD_REQUEST,
        &["ENTITLEMENT_LIMIT_EXCEEDED"],
    )
    .await;
    assert_eq!(again, first);
    assert_eq!(stored(&app, &a, "seats").await, ("9".to_owned(), 6));
    // The same record under a new key is decided afresh.
    let admitted = keyed("another-seat").await.unwrap();
    assert_eq!(admitted.status(), StatusCode::OK);
    assert_eq!(stored(&app, &a, "seats").await, ("10".to_owned(), 7));
    // In the next period the limit starts over.
    app.clock().set(PERIOD_END.parse().unwrap());
    app.record_ok(record(&a, "seats", "10")).await;
}

#[tokio::test]
async fn a_hard_limit_refuses_batch_records_one_by_one_and_replays_the_refusal() {
    let app = spawn().await;
    let a = app.create_agreement("cust", "pro").await;
    let batch = json!({"records": [
        record(&a, "seats", "4"),
        record(&a, "seats", "7"),
        record(&a, "api_calls", "1"),
        record(&a, "seats", "6"),
        record(&a, "seats", "0.5"),
    ]});
    let send = || {
        app.http
            .post(app.url(BATCH))
            .bearer_auth(&app.token)
            .header("Idempotency-Key", "seat-batch")
            .json(&batch)
            .send()
    };
    let response = send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("idempotent-replayed").is_none());
    let body: Value = response.json().await.unwrap();
    let results: Vec<(u64, &str)> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["code"].as_str().unwrap()))
        .collect();
    // Each record is decided against the records before it, the batch's own included.
    assert_eq!(
        results,
        [
            (0, "OK"),
            (1, "ENTITLEMENT_LIMIT_EXCEEDED"),
            (2, "OK"),
            (3, "OK"),
            (4, "ENTITLEMENT_LIMIT_EXCEEDED"),
        ]
    );
    assert!(!body["results"][1]["message"].as_str().unwrap().is_empty());
    assert_eq!(stored(&app, &a, "seats").await, ("10".to_owned(), 2));
    // Lowered, the usage would admit record 1 now; the replay still answers what
    // the batch got and stores nothing.
    app.record_ok(absolute(&a, "seats", "0")).await;
    let replay = send().await.unwrap();
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replayed: Value = replay.json().await.unwrap();
    assert_eq!(replayed, body);
    assert_eq!(stored(&app, &a, "seats").await, ("0".to_owned(), 3));
}

/// One writer of [`writers_never_take_a_hard_limit_beyond_it`]: records amounts
/// of `tokens` (singles and batches of two) until even the smallest is refused;
/// returns the values stored.
async fn write_until_refused(app: Arc<TestApp>, agreement: String, writer: usize) -> Vec<String> {
    let amounts = ["2", "1", "0.5"];
    let mut stored = Vec::new();
    let mut smallest_refused = false;
    let mut round = writer;
    while !smallest_refused {
        round += 1;
        let value = if stored.len() % 4 == 3 {
            "0.5"
        } else {
            amounts[round % amounts.len()]
        };
        if round.is_multiple_of(3) {
            let response = app
                .post(
                    BATCH,
                    &json!({"records": [record(&agreement, "tokens", value), record(&agreement, "tokens", "0.5")]}),
                )
                .await;
            assert_eq!(response.status(), StatusCode::OK);
            let body: Value = response.json().await.unwrap();
            for (result, value) in body["results"]
                .as_array()
                .unwrap()
                .iter()
                .zip([value, "0.5"])
            {
                match result["code"].as_str().unwrap() {
                    "OK" => stored.push(value.to_owned()),
                    "ENTITLEMENT_LIMIT_EXCEEDED" => smallest_refused |= value == "0.5",
                    other => panic!("unexpected {other}: {body}"),
                }
            }
        } else {
            let response = app.record(record(&agreement, "tokens", value)).await;
            match response.status() {
                StatusCode::OK => stored.push(value.to_owned()),
                StatusCode::BAD_REQUEST => {
                    assert_error(
                        response,
                        StatusCode::BAD_REQUEST,
                        &["ENTITLEMENT_LIMIT_EXCEEDED"],
                    )
                    .await;
                    smallest_refused |= value == "0.5";
                }
                other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
            }
        }
    }
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_never_take_a_hard_limit_beyond_it() {
    let app = Arc::new(spawn().await);
    let a = app.create_agreement("cust", "pro").await;
    let writers: Vec<_> = (0..32)
        .map(|writer| tokio::spawn(write_until_refused(app.clone(), a.clone(), writer)))
        .collect();
    let mut accepted = Vec::new();
    for writer in writers {
        accepted.extend(writer.await.unwrap());
    }
    // Every amount is a multiple of 0.5 and the last 0.5 was refused: the usage
    // is the limit exactly, and it is what the 200s added up to.
    assert_eq!(sum(&accepted), "100");
    assert_eq!(
        stored(&app, &a, "tokens").await,
        ("100".to_owned(), accepted.len() as u64)
    );
    let body = list(&app, "customer_id=cust").await;
    let tokens = entitlement(&body, "tokens");
    assert_eq!(
        (&tokens["consumed"], &tokens["remaining"]),
        (&json!(100), &json!(0))
    );
    let body = check(
        &app,
        "customer_id=cust&feature_code=tokens&quantity=0.000000001",
    )
    .await;
    assert_eq!(
        (&body["allowed"], &body["consumed"]),
        (&json!(false), &json!("100"))
    );
}
