//! The webhooks management API (docs/webhooks.md#management-api): Kinde's
//! shapes for webhooks, events and event types, each route's scope, field
//! validation, and the endpoint rule (private addresses refused unless the
//! server allows them).

use kinde_meter_core::webhook::EventType;
use kinde_meter_server::webhooks::worker::WebhookSettings;
use kinde_meter_wire::Scope;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Options, TestApp, assert_error, backend};

const WEBHOOKS: &str = "/api/v1/webhooks";
/// A public address (TEST-NET-3) that no test delivers to.
const PUBLIC_ENDPOINT: &str = "https://203.0.113.10/kinde/webhooks";

async fn send(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.http.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn ok_json(response: reqwest::Response) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// Creates a webhook and returns its id.
async fn create(app: &TestApp, body: Value) -> String {
    let created = ok_json(app.post(WEBHOOKS, &body).await).await;
    created["webhook"]["id"].as_str().unwrap().to_owned()
}

async fn list(app: &TestApp) -> Vec<Value> {
    let listed = ok_json(app.get(WEBHOOKS).await).await;
    assert_eq!(listed["code"], "OK");
    assert_eq!(listed["message"], "Success");
    listed["webhooks"].as_array().unwrap().clone()
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

fn private_app_options() -> Options {
    Options {
        webhooks: WebhookSettings {
            allow_private_networks: true,
            ..WebhookSettings::default()
        },
        ..Options::default()
    }
}

#[tokio::test]
async fn webhooks_are_created_listed_updated_and_deleted_in_kindes_shapes() {
    let app = TestApp::spawn_at("2026-03-04T05:06:07Z").await;
    let created = ok_json(
        app.post(
            WEBHOOKS,
            &json!({"endpoint": PUBLIC_ENDPOINT, "event_types": ["customer.agreement_created",
                "customer.meter_usage_updated"], "name": "billing", "description": "to the ledger"}),
        )
        .await,
    )
    .await;
    assert_eq!(keys(&created), ["code", "message", "webhook"]);
    assert_eq!(created["code"], "OK");
    assert_eq!(created["message"], "Success");
    assert_eq!(keys(&created["webhook"]), ["endpoint", "id"]);
    assert_eq!(created["webhook"]["endpoint"], PUBLIC_ENDPOINT);
    let id = created["webhook"]["id"].as_str().unwrap().to_owned();
    assert!(
        id.starts_with("webhook_") && id.len() == "webhook_".len() + 32,
        "{id}"
    );
    // Kinde's create request has no description: it is optional.
    let second = create(
        &app,
        json!({"endpoint": "http://203.0.113.11:8080/x?y=z", "event_types": ["customer.plan_changed"],
            "name": "second"}),
    )
    .await;

    let listed = list(&app).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed[0],
        json!({"id": id, "name": "billing", "endpoint": PUBLIC_ENDPOINT, "description": "to the ledger",
            "event_types": ["customer.agreement_created", "customer.meter_usage_updated"],
            "created_on": "2026-03-04T05:06:07Z"}),
        "oldest first, every field of Kinde's Webhook"
    );
    assert_eq!(listed[1]["id"], second);
    assert_eq!(listed[1]["description"], Value::Null);

    // PATCH changes only the fields present; "description": null clears it.
    let path = format!("{WEBHOOKS}/{id}");
    let updated = ok_json(
        send(
            &app,
            &app.token,
            Method::PATCH,
            &path,
            Some(
                json!({"name": "renamed", "event_types": ["customer.plan_assigned",
                "customer.plan_assigned"]}),
            ),
        )
        .await,
    )
    .await;
    assert_eq!(
        updated,
        json!({"message": "Success", "code": "OK", "webhook": {"id": id}})
    );
    let listed = list(&app).await;
    assert_eq!(listed[0]["name"], "renamed");
    assert_eq!(listed[0]["event_types"], json!(["customer.plan_assigned"]));
    assert_eq!(listed[0]["description"], "to the ledger");
    assert_eq!(listed[0]["endpoint"], PUBLIC_ENDPOINT);
    ok_json(
        send(
            &app,
            &app.token,
            Method::PATCH,
            &path,
            Some(json!({"description": null})),
        )
        .await,
    )
    .await;
    assert_eq!(list(&app).await[0]["description"], Value::Null);
    // The endpoint may change too (not in Kinde), under the same rule as on create.
    ok_json(
        send(
            &app,
            &app.token,
            Method::PATCH,
            &path,
            Some(json!({"endpoint": "https://203.0.113.12/new"})),
        )
        .await,
    )
    .await;
    assert_eq!(list(&app).await[0]["endpoint"], "https://203.0.113.12/new");
    let refused = send(
        &app,
        &app.token,
        Method::PATCH,
        &path,
        Some(json!({"endpoint": "http://127.0.0.1:9/"})),
    )
    .await;
    assert_error(refused, StatusCode::BAD_REQUEST, &["INVALID_FIELD"]).await;
    assert_eq!(list(&app).await[0]["endpoint"], "https://203.0.113.12/new");

    let deleted = ok_json(send(&app, &app.token, Method::DELETE, &path, None).await).await;
    assert_eq!(deleted, json!({"code": "OK", "message": "Success"}));
    let listed = list(&app).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], second);

    // Unknown, deleted and malformed ids: 400 WEBHOOK_NOT_FOUND (the SDKs
    // declare 400 ErrorResponse, no 404).
    for path in [
        path.clone(),
        format!("{WEBHOOKS}/webhook_00000000000000000000000000000000"),
        format!("{WEBHOOKS}/not-an-id"),
    ] {
        let response = send(&app, &app.token, Method::DELETE, &path, None).await;
        let body = assert_error(response, StatusCode::BAD_REQUEST, &["WEBHOOK_NOT_FOUND"]).await;
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("webhook_id")
        );
        let response = send(
            &app,
            &app.token,
            Method::PATCH,
            &path,
            Some(json!({"name": "x"})),
        )
        .await;
        assert_error(response, StatusCode::BAD_REQUEST, &["WEBHOOK_NOT_FOUND"]).await;
    }
}

#[tokio::test]
async fn every_field_problem_is_listed_and_named() {
    let app = TestApp::spawn().await;
    let cases: Vec<(Value, &[&str], &[&str])> = vec![
        (
            json!({}),
            &["MISSING_FIELD", "MISSING_FIELD", "MISSING_FIELD"],
            &["endpoint", "event_types", "name"],
        ),
        (
            json!({"endpoint": null, "event_types": null, "name": null}),
            &["MISSING_FIELD", "MISSING_FIELD", "MISSING_FIELD"],
            &["endpoint", "event_types", "name"],
        ),
        (
            json!({"endpoint": "", "event_types": [], "name": ""}),
            &["MISSING_FIELD", "MISSING_FIELD", "MISSING_FIELD"],
            &["endpoint", "event_types", "name"],
        ),
        (
            json!({"endpoint": 7, "event_types": "customer.agreement_created", "name": ["n"],
                "description": 5}),
            &[
                "INVALID_FIELD",
                "INVALID_FIELD",
                "INVALID_FIELD",
                "INVALID_FIELD",
            ],
            &["endpoint", "event_types", "name", "description"],
        ),
        (
            json!({"endpoint": PUBLIC_ENDPOINT, "event_types": ["customer.agreement_created",
                "user.created", 3], "name": "n"}),
            &["INVALID_FIELD", "INVALID_FIELD"],
            &["user.created", "event_types"],
        ),
        (
            json!({"endpoint": "ftp://example.com/x", "event_types": ["customer.plan_changed"],
                "name": "x".repeat(256)}),
            &["INVALID_FIELD", "INVALID_FIELD"],
            &["endpoint", "name"],
        ),
    ];
    for (body, codes, named) in cases {
        let response = app.post(WEBHOOKS, &body).await;
        let answer = assert_error(response, StatusCode::BAD_REQUEST, codes).await;
        for (error, name) in answer["errors"].as_array().unwrap().iter().zip(named) {
            let message = error["message"].as_str().unwrap();
            assert!(
                message.contains(name),
                "{body}: {message} should name {name}"
            );
        }
    }
    let response = app.post(WEBHOOKS, &json!(["not", "an", "object"])).await;
    assert_error(response, StatusCode::BAD_REQUEST, &["INVALID_JSON"]).await;
    // PATCH reads its fields by the same rules.
    let id = create(
        &app,
        json!({"endpoint": PUBLIC_ENDPOINT, "event_types": ["customer.plan_changed"], "name": "n"}),
    )
    .await;
    let response = send(
        &app,
        &app.token,
        Method::PATCH,
        &format!("{WEBHOOKS}/{id}"),
        Some(json!({"event_types": ["nope"], "name": "", "description": false})),
    )
    .await;
    assert_error(
        response,
        StatusCode::BAD_REQUEST,
        &["INVALID_FIELD", "MISSING_FIELD", "INVALID_FIELD"],
    )
    .await;
    assert!(list(&app).await.iter().all(|w| w["name"] == "n"));
}

#[tokio::test]
async fn endpoints_at_private_addresses_are_refused() {
    let app = TestApp::spawn().await;
    for endpoint in [
        "http://127.0.0.1:9/hook",
        "http://127.1/hook",
        "http://0x7f000001/hook",
        "http://localhost/hook",
        "http://0.0.0.0/hook",
        "http://10.1.2.3/hook",
        "http://172.16.0.1/hook",
        "http://192.168.1.1/hook",
        "http://100.64.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://224.0.0.1/hook",
        "http://255.255.255.255/hook",
        "http://[::1]/hook",
        "http://[::]/hook",
        "http://[fe80::1]/hook",
        "http://[fc00::1]/hook",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:169.254.169.254]/hook",
        "http://[ff02::1]/hook",
    ] {
        let response = app
            .post(
                WEBHOOKS,
                &json!({"endpoint": endpoint, "event_types": ["customer.plan_changed"], "name": "n"}),
            )
            .await;
        let body = assert_error(response, StatusCode::BAD_REQUEST, &["INVALID_FIELD"]).await;
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.starts_with("endpoint") && message.contains("--webhook-allow-private-networks"),
            "{endpoint}: {message}"
        );
    }
    for (endpoint, why) in [
        ("ftp://203.0.113.10/hook", "http or https"),
        (
            "https://user:secret@203.0.113.10/hook",
            "user name or password",
        ),
        ("not a url", "whitespace"),
        ("https://no-such-host.invalid/hook", "does not resolve"),
    ] {
        let response = app
            .post(
                WEBHOOKS,
                &json!({"endpoint": endpoint, "event_types": ["customer.plan_changed"], "name": "n"}),
            )
            .await;
        let body = assert_error(response, StatusCode::BAD_REQUEST, &["INVALID_FIELD"]).await;
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(why), "{endpoint}: {message}");
        assert!(
            !message.contains("secret"),
            "the message echoes a password: {message}"
        );
    }
    assert!(list(&app).await.is_empty());
}

#[tokio::test]
async fn the_flag_allows_private_endpoints() {
    let app = TestApp::spawn_with(private_app_options()).await;
    for endpoint in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://10.0.0.1/hook",
    ] {
        let created = ok_json(
            app.post(
                WEBHOOKS,
                &json!({"endpoint": endpoint, "event_types": ["customer.plan_changed"], "name": "n"}),
            )
            .await,
        )
        .await;
        assert_eq!(created["webhook"]["endpoint"], endpoint);
    }
    // The rest of the rule still holds.
    let response = app
        .post(
            WEBHOOKS,
            &json!({"endpoint": "file:///etc/passwd", "event_types": ["customer.plan_changed"], "name": "n"}),
        )
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, &["INVALID_FIELD"]).await;
    assert_eq!(list(&app).await.len(), 4);
}

#[tokio::test]
async fn each_route_needs_its_scope() {
    let app = TestApp::spawn_at("2026-03-04T05:06:07Z").await;
    let id = create(
        &app,
        json!({"endpoint": PUBLIC_ENDPOINT, "event_types": ["customer.plan_changed"], "name": "n"}),
    )
    .await;
    let webhook = format!("{WEBHOOKS}/{id}");
    let unknown_event = "/api/v1/events/event_00000000000000000000000000000000";
    let routes: Vec<(Scope, Method, String, Option<Value>, StatusCode)> = vec![
        (
            Scope::CreateWebhooks,
            Method::POST,
            WEBHOOKS.to_owned(),
            Some(
                json!({"endpoint": PUBLIC_ENDPOINT, "event_types": ["customer.plan_changed"], "name": "m"}),
            ),
            StatusCode::OK,
        ),
        (
            Scope::ReadWebhooks,
            Method::GET,
            WEBHOOKS.to_owned(),
            None,
            StatusCode::OK,
        ),
        (
            Scope::UpdateWebhooks,
            Method::PATCH,
            webhook.clone(),
            Some(json!({"name": "o"})),
            StatusCode::OK,
        ),
        (
            Scope::ReadEvents,
            Method::GET,
            unknown_event.to_owned(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Scope::ReadEventTypes,
            Method::GET,
            "/api/v1/event_types".to_owned(),
            None,
            StatusCode::OK,
        ),
        (
            Scope::DeleteWebhooks,
            Method::DELETE,
            webhook.clone(),
            None,
            StatusCode::OK,
        ),
    ];
    for (scope, method, path, body, status) in routes {
        let others: Vec<&str> = Scope::ALL
            .iter()
            .filter(|s| **s != scope)
            .map(|s| s.as_str())
            .collect();
        let without = app.token_with(&others);
        let response = send(&app, &without, method.clone(), &path, body.clone()).await;
        let answer = assert_error(response, StatusCode::FORBIDDEN, &["INSUFFICIENT_SCOPE"]).await;
        assert!(
            answer["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(scope.as_str())
        );
        let response = send(&app, "not-a-token", method.clone(), &path, body.clone()).await;
        assert_error(response, StatusCode::FORBIDDEN, &["INVALID_CREDENTIALS"]).await;
        let only = app.token_with(&[scope.as_str()]);
        let response = send(&app, &only, method, &path, body).await;
        assert_eq!(response.status(), status, "{path} with only {scope}");
    }
}

#[tokio::test]
async fn event_types_are_listed_with_a_schema_of_their_data() {
    let app = TestApp::spawn().await;
    let answer = ok_json(app.get("/api/v1/event_types").await).await;
    assert_eq!(keys(&answer), ["code", "event_types", "message"]);
    let types = answer["event_types"].as_array().unwrap();
    let codes: Vec<&str> = types.iter().map(|t| t["code"].as_str().unwrap()).collect();
    let all: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(codes, all);
    assert!(codes.contains(&"customer.meter_usage_updated"));
    for t in types {
        assert_eq!(keys(t), ["code", "id", "name", "origin", "schema"]);
        assert!(!t["id"].as_str().unwrap().is_empty());
        assert!(!t["name"].as_str().unwrap().is_empty());
        assert_eq!(t["origin"], "billing");
        assert_eq!(t["schema"]["type"], "object");
        for field in ["customer_id", "agreement_id"] {
            assert!(t["schema"]["properties"].get(field).is_some(), "{t}");
        }
    }
    let usage = &types[all
        .iter()
        .position(|c| *c == "customer.meter_usage_updated")
        .unwrap()];
    assert_eq!(usage["schema"]["properties"]["quantity"]["type"], "number");
    assert_eq!(usage["schema"]["properties"]["value"]["type"], "string");
}

#[tokio::test]
async fn an_event_is_read_back_by_id_with_a_unix_seconds_timestamp() {
    let app = TestApp::spawn_at("2026-03-04T05:06:07Z").await;
    let agreement = app.create_agreement("cus_events", "pro").await;
    let event_id = backend::query_text(
        &app.data_dir,
        "SELECT id FROM events WHERE type = 'customer.agreement_created'",
    )
    .await;
    assert!(event_id.starts_with("event_"), "{event_id}");
    let answer = ok_json(app.get(&format!("/api/v1/events/{event_id}")).await).await;
    assert_eq!(keys(&answer), ["code", "event", "message"]);
    assert_eq!(answer["code"], "OK");
    let event = &answer["event"];
    assert_eq!(
        keys(event),
        ["data", "event_id", "source", "timestamp", "type"]
    );
    assert_eq!(event["type"], "customer.agreement_created");
    assert_eq!(event["source"], "api");
    assert_eq!(event["event_id"], event_id.as_str());
    let at: jiff::Timestamp = "2026-03-04T05:06:07Z".parse().unwrap();
    assert_eq!(
        event["timestamp"],
        json!(at.as_second()),
        "an integer of Unix seconds"
    );
    assert_eq!(
        event["data"],
        json!({"customer_id": "cus_events", "agreement_id": agreement, "plan_code": "pro"})
    );
    for missing in [
        "/api/v1/events/event_00000000000000000000000000000000".to_owned(),
        "/api/v1/events/not-an-event".to_owned(),
        format!("/api/v1/events/{agreement}"),
    ] {
        let response = app.get(&missing).await;
        assert_error(response, StatusCode::BAD_REQUEST, &["EVENT_NOT_FOUND"]).await;
    }
}
