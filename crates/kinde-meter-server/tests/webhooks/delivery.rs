//! What is delivered: each event type when it is raised, signed as Kinde signs
//! (RS256, `kid` in the server's JWKS, Kinde's claims), with its `webhook-id`;
//! usage updates coalesced per interval with the latest value; thresholds once
//! per period; a server on an external issuer signing with a key of its own.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use axum::{Json, Router, routing::get};
use jiff::{SignedDuration, Timestamp};
use kinde_meter_core::catalog::Catalog;
use kinde_meter_server::{
    ExternalIssuer,
    auth::{MintRequest, SigningKey, jwks, mint_token},
    webhooks::worker::WebhookSettings,
};
use kinde_meter_store::StoreConfig;
use serde_json::{Value, json};

use crate::harness::{
    ALL_TYPES, Received, Receiver, create_webhook, metric, settings, settled, verify,
};
use crate::support::{Options, TestApp};

/// A store whose usage events are built every second.
fn one_second_interval() -> StoreConfig {
    StoreConfig {
        webhook_usage_interval: SignedDuration::from_secs(1),
        ..StoreConfig::default()
    }
}

async fn spawn() -> TestApp {
    TestApp::spawn_with(Options {
        webhooks: settings(),
        store: one_second_interval(),
        ..Options::default()
    })
    .await
}

/// The accepted deliveries of `event_type` about `agreement`.
fn of(received: &[Received], event_type: &str, agreement: &str) -> Vec<Value> {
    received
        .iter()
        .filter(|r| r.accepted())
        .map(Received::claims)
        .filter(|c| c["type"] == event_type && c["data"]["agreement_id"] == agreement)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreement_events_are_delivered_signed_with_kindes_claims_and_a_webhook_id() {
    let app = spawn().await;
    let receiver = Receiver::start().await;
    create_webhook(&app, &receiver.url, ALL_TYPES).await;

    let first = app.create_agreement("cus_events", "pro").await;
    let received = receiver
        .wait_until("agreement_created and plan_assigned", |r| {
            !of(r, "customer.agreement_created", &first).is_empty()
                && !of(r, "customer.plan_assigned", &first).is_empty()
        })
        .await;
    for claims in [
        &of(&received, "customer.agreement_created", &first)[0],
        &of(&received, "customer.plan_assigned", &first)[0],
    ] {
        assert_eq!(claims["data"]["customer_id"], "cus_events", "{claims}");
        assert_eq!(claims["data"]["plan_code"], "pro", "{claims}");
    }

    let second = app.create_agreement("cus_events", "starter").await;
    let received = receiver
        .wait_until(
            "plan_changed, agreement_cancelled, agreement_created",
            |r| {
                !of(r, "customer.agreement_created", &second).is_empty()
                    && !of(r, "customer.plan_changed", &second).is_empty()
                    && !of(r, "customer.agreement_cancelled", &first).is_empty()
            },
        )
        .await;
    let changed = &of(&received, "customer.plan_changed", &second)[0];
    assert_eq!(changed["data"]["customer_id"], "cus_events");
    assert_eq!(changed["data"]["plan_code"], "starter");
    assert_eq!(changed["data"]["previous_plan_code"], "pro");
    assert_eq!(changed["data"]["previous_agreement_id"], first.as_str());
    let cancelled = &of(&received, "customer.agreement_cancelled", &first)[0];
    assert_eq!(cancelled["data"]["customer_id"], "cus_events");
    assert_eq!(cancelled["data"]["plan_code"], "pro");
    assert!(cancelled["data"]["expires_on"].is_string(), "{cancelled}");
    // Only the first agreement had no predecessor.
    assert!(of(&received, "customer.plan_assigned", &second).is_empty());
    settled(&app).await;
    let received = receiver.received();
    assert_eq!(received.len(), 5, "one delivery per event: {received:#?}");

    let mut webhook_ids = HashSet::new();
    for delivery in &received {
        assert_eq!(delivery.headers["content-type"], "application/jwt");
        let claims = verify(&app, &delivery.body).await;
        assert_eq!(claims, delivery.claims());
        let event_id = claims["event_id"].as_str().unwrap();
        assert!(event_id.starts_with("event_"), "{claims}");
        assert_eq!(claims["jti"], event_id);
        assert_eq!(claims["source"], "api");
        assert_eq!(claims["iss"], app.issuer.as_str());
        assert!(claims["iat"].is_i64(), "{claims}");
        let timestamp = claims["timestamp"].as_str().unwrap();
        timestamp.parse::<Timestamp>().unwrap();
        // Kinde's event_timestamp: RFC 3339 in UTC with milliseconds.
        let event_timestamp = claims["event_timestamp"].as_str().unwrap();
        event_timestamp.parse::<Timestamp>().unwrap();
        assert!(event_timestamp.ends_with('Z'), "{event_timestamp}");
        assert_eq!(
            event_timestamp.rsplit_once('.').map(|(_, ms)| ms.len()),
            Some(4),
            "{event_timestamp}"
        );
        let webhook_id = delivery.webhook_id();
        assert!(webhook_id.starts_with("msg_"), "{webhook_id}");
        webhook_ids.insert(webhook_id);
    }
    assert_eq!(webhook_ids.len(), 5, "a webhook-id per event");
    assert_eq!(
        metric(
            &app,
            r#"kinde_meter_webhook_deliveries_total{outcome="delivered"}"#
        )
        .await,
        5.0
    );
    assert_eq!(
        metric(
            &app,
            r#"kinde_meter_webhook_deliveries_total{outcome="failed"}"#
        )
        .await,
        0.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_webhook_gets_the_event_types_it_subscribed_to_with_its_own_webhook_id() {
    let app = spawn().await;
    let created = Receiver::start().await;
    let both = Receiver::start().await;
    create_webhook(&app, &created.url, &["customer.agreement_created"]).await;
    create_webhook(
        &app,
        &both.url,
        &["customer.agreement_created", "customer.plan_assigned"],
    )
    .await;
    let agreement = app.create_agreement("cus_subscribed", "pro").await;
    both.wait_until("both events", |r| r.len() == 2).await;
    created
        .wait_until("agreement_created", |r| r.len() == 1)
        .await;
    settled(&app).await;
    let (created, both) = (created.received(), both.received());
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].event_type(), "customer.agreement_created");
    let same = both
        .iter()
        .find(|r| r.event_type() == "customer.agreement_created")
        .unwrap();
    // The same event (event_id, jti) for both, a webhook-id of each.
    assert_eq!(same.event_id(), created[0].event_id());
    assert_eq!(same.claims()["data"]["agreement_id"], agreement.as_str());
    assert_ne!(same.webhook_id(), created[0].webhook_id());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_updates_are_coalesced_per_interval_and_carry_the_latest_value() {
    let app = spawn().await;
    let receiver = Receiver::start().await;
    create_webhook(&app, &receiver.url, &["customer.meter_usage_updated"]).await;
    let agreement = app.create_agreement("cus_usage", "pro").await;

    let started = Instant::now();
    for _ in 0..40 {
        app.record_ok(json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "1.5"}))
            .await;
    }
    let recording = started.elapsed();
    app.record_ok(json!({"customer_agreement_id": agreement, "billing_feature_code": "storage_gb", "meter_value": "7"}))
        .await;

    let is_final = |c: &Value, feature: &str, value: &str| {
        c["data"]["feature_code"] == feature && c["data"]["value"] == value
    };
    receiver
        .wait_until("the latest usage of both features", |r| {
            let events = of(r, "customer.meter_usage_updated", &agreement);
            events.iter().any(|c| is_final(c, "api_calls", "60"))
                && events.iter().any(|c| is_final(c, "storage_gb", "7"))
        })
        .await;
    settled(&app).await;
    let events = of(
        &receiver.received(),
        "customer.meter_usage_updated",
        &agreement,
    );
    let calls: Vec<&Value> = events
        .iter()
        .filter(|c| c["data"]["feature_code"] == "api_calls")
        .collect();
    // At most one per interval (1 s) while recording, and one after.
    assert!(
        calls.len() as u64 <= recording.as_secs() + 2,
        "{} events for {recording:?} of recording: {calls:#?}",
        calls.len()
    );
    let mut times: Vec<Timestamp> = calls
        .iter()
        .map(|c| c["event_timestamp"].as_str().unwrap().parse().unwrap())
        .collect();
    times.sort();
    for pair in times.windows(2) {
        assert!(
            pair[1].duration_since(pair[0]) >= SignedDuration::from_millis(999),
            "two usage events less than an interval apart: {times:?}"
        );
    }
    let last = calls
        .iter()
        .find(|c| c["data"]["value"] == "60")
        .expect("the latest value");
    let data = &last["data"];
    assert_eq!(data["customer_id"], "cus_usage");
    assert_eq!(data["meter_id"], "api_calls");
    assert_eq!(data["quantity"], json!(60));
    assert!(
        data["period_start"].is_string() && data["period_end"].is_string(),
        "{data}"
    );
    // Values only grow: no event carries a stale value after a newer one.
    let storage: Vec<&Value> = events
        .iter()
        .filter(|c| c["data"]["feature_code"] == "storage_gb")
        .collect();
    assert_eq!(storage.len(), 1, "{storage:#?}");
    assert_eq!(storage[0]["data"]["quantity"], json!(7));
    app.stop().await;
}

const CAPPED: &str = r#"
[[plans]]
code = "capped"
name = "Capped"
interval = "month"

[[plans.features]]
code = "calls"
name = "Calls"
metered = true
limit_max = 100
thresholds = [50, 80, 100]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_are_raised_once_per_period_and_threshold() {
    let app = TestApp::spawn_with(Options {
        webhooks: settings(),
        store: one_second_interval(),
        catalog: Catalog::parse(CAPPED, "test catalog").unwrap(),
        clock_at: Some("2026-03-10T12:00:00Z".parse().unwrap()),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    create_webhook(
        &app,
        &receiver.url,
        &["customer.entitlement_threshold_reached"],
    )
    .await;
    let agreement = app.create_agreement("cus_thresholds", "capped").await;
    let record = async |value: &str| {
        app.record_ok(json!({"customer_agreement_id": agreement, "billing_feature_code": "calls", "meter_value": value}))
            .await;
    };
    let percents = |r: &[Received]| -> Vec<(i64, String)> {
        let mut seen: Vec<(i64, String)> =
            of(r, "customer.entitlement_threshold_reached", &agreement)
                .iter()
                .map(|c| {
                    (
                        c["data"]["threshold_percent"].as_i64().unwrap(),
                        c["data"]["period_start"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
        seen.sort();
        seen
    };

    record("60").await; // 50 %
    record("10").await; // 70: none
    record("40").await; // 110: 80 % and 100 % at once
    record("5").await; // none
    receiver
        .wait_until("three thresholds", |r| percents(r).len() >= 3)
        .await;
    settled(&app).await;
    let received = receiver.received();
    let events = of(
        &received,
        "customer.entitlement_threshold_reached",
        &agreement,
    );
    assert_eq!(events.len(), 3, "{events:#?}");
    let by_percent = |p: i64| {
        events
            .iter()
            .find(|c| c["data"]["threshold_percent"] == p)
            .unwrap_or_else(|| panic!("no {p} % event in {events:#?}"))
    };
    assert_eq!(by_percent(50)["data"]["value"], "60");
    assert_eq!(by_percent(80)["data"]["value"], "110");
    assert_eq!(by_percent(100)["data"]["value"], "110");
    for event in &events {
        let data = &event["data"];
        assert_eq!(data["customer_id"], "cus_thresholds");
        assert_eq!(data["feature_code"], "calls");
        assert_eq!(data["entitlement_limit_max"], json!(100), "{data}");
        assert_eq!(data["period_start"], "2026-03-10T12:00:00Z", "{data}");
    }

    // The next period raises them again.
    app.clock().set("2026-04-10T12:00:01Z".parse().unwrap());
    record("100").await;
    receiver
        .wait_until("the next period's thresholds", |r| percents(r).len() >= 6)
        .await;
    settled(&app).await;
    let next: Vec<(i64, String)> = percents(&receiver.received())
        .into_iter()
        .filter(|(_, start)| start != "2026-03-10T12:00:00Z")
        .collect();
    assert_eq!(
        next.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        [50, 80, 100]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_external_issuer_the_server_signs_with_its_own_key_served_in_its_jwks() {
    // A stand-in for Kinde serving the key its tokens are signed with.
    let issuer_key = SigningKey::generate().unwrap();
    let issuer_jwks = jwks(&[&issuer_key]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let router = Router::new().route(
        "/.well-known/jwks",
        get(move || {
            let jwks = issuer_jwks.clone();
            async move { Json(jwks) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let mut app = TestApp::spawn_with(Options {
        webhooks: settings(),
        external_issuer: Some(ExternalIssuer::new(&issuer)),
        ..Options::default()
    })
    .await;
    app.token = mint_token(
        &issuer_key,
        &MintRequest {
            issuer: issuer.clone(),
            audience: vec![format!("{issuer}/api")],
            client_id: "kinde-m2m-app".into(),
            scopes: vec![
                "create:webhooks".into(),
                "create:billing_agreements".into(),
                "read:billing_agreements".into(),
            ],
            lifetime: SignedDuration::from_hours(1),
            now: Timestamp::now(),
        },
    )
    .unwrap();

    let receiver = Receiver::start().await;
    create_webhook(&app, &receiver.url, &["customer.agreement_created"]).await;
    app.create_agreement("cus_external", "pro").await;
    let received = receiver.wait_until("a delivery", |r| !r.is_empty()).await;
    // Signed with the server's own key, not the issuer's, and verifiable
    // from the server's JWKS with the server's public URL as `iss`.
    let header = jsonwebtoken::decode_header(&received[0].body).unwrap();
    assert_ne!(header.kid.as_deref(), Some(issuer_key.kid()));
    let claims = verify(&app, &received[0].body).await;
    assert_eq!(claims["type"], "customer.agreement_created");
    assert_eq!(claims["iss"], app.issuer.as_str());
    app.stop().await;
}

/// An agreement's events and a threshold crossed are delivered without
/// waiting for the worker's poll: the store wakes the worker when it commits
/// them. The poll here is an hour away, so only that wake-up delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raised_events_are_delivered_without_waiting_for_the_poll() {
    let app = TestApp::spawn_with(Options {
        webhooks: WebhookSettings {
            poll_interval: Duration::from_secs(3600),
            ..settings()
        },
        catalog: Catalog::parse(CAPPED, "test catalog").unwrap(),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    create_webhook(&app, &receiver.url, ALL_TYPES).await;
    let agreement = app.create_agreement("cus_woken", "capped").await;
    receiver
        .wait_until("agreement_created", |r| {
            !of(r, "customer.agreement_created", &agreement).is_empty()
        })
        .await;
    app.record_ok(json!({"customer_agreement_id": agreement, "billing_feature_code": "calls", "meter_value": "60"}))
        .await;
    let received = receiver
        .wait_until("the 50 % threshold", |r| {
            !of(r, "customer.entitlement_threshold_reached", &agreement).is_empty()
        })
        .await;
    let threshold = &of(
        &received,
        "customer.entitlement_threshold_reached",
        &agreement,
    )[0];
    assert_eq!(threshold["data"]["threshold_percent"], 50);
    app.stop().await;
}
