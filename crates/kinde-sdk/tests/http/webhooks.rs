//! `WebhooksApi`: the requests it sends and the answers it reads; and
//! `webhooks::decode` against a local JWKS.

use kinde_sdk::models::{CreateWebHookRequest, UpdateWebHookRequest};
use kinde_sdk::{CreateWebHookError, DeleteWebHookError, GetEventError, WebhooksApi};
use serde_json::json;

use crate::support::{Canned, MockServer, TOKEN};

fn api(server: &MockServer) -> WebhooksApi {
    WebhooksApi::new(server.client())
}

#[tokio::test]
async fn create_posts_kindes_request() {
    let server = MockServer::answering(Canned::new(
        200,
        r#"{"code":"OK","message":"Success","webhook":{"id":"webhook_01","endpoint":"https://e.example/h"}}"#,
    ))
    .await;

    let response = api(&server)
        .create_web_hook(CreateWebHookRequest {
            endpoint: "https://e.example/h".to_owned(),
            event_types: vec!["customer.agreement_created".to_owned()],
            name: "billing".to_owned(),
            description: None,
        })
        .await
        .unwrap();

    let webhook = response.webhook.unwrap();
    assert_eq!(
        (webhook.id.as_str(), webhook.endpoint.as_str()),
        ("webhook_01", "https://e.example/h")
    );
    let sent = server.only_request();
    assert_eq!(
        (sent.method.as_str(), sent.target.as_str()),
        ("POST", "/api/v1/webhooks")
    );
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(
        sent.json(),
        json!({"endpoint": "https://e.example/h", "event_types": ["customer.agreement_created"], "name": "billing"})
    );
}

#[tokio::test]
async fn a_refused_endpoint_is_a_bad_request_and_create_is_not_replayed() {
    let server = MockServer::answering(Canned::new(
        400,
        r#"{"errors":[{"code":"INVALID_FIELD","message":"endpoint: loopback addresses are not allowed"}]}"#,
    ))
    .await;
    let error = api(&server)
        .create_web_hook(CreateWebHookRequest {
            endpoint: "http://127.0.0.1/h".to_owned(),
            event_types: vec![],
            name: "n".to_owned(),
            description: Some("d".to_owned()),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(error, CreateWebHookError::BadRequest(_)),
        "{error:?}"
    );
    assert_eq!(error.code(), Some("INVALID_FIELD"));

    let unknown = CreateWebHookError::Unexpected {
        status: kinde_sdk::reqwest::StatusCode::BAD_GATEWAY,
        body: String::new(),
        error: None,
    };
    assert!(
        !unknown.is_retryable(),
        "a second create makes a second webhook"
    );
}

#[tokio::test]
async fn list_reads_kindes_webhooks() {
    let server = MockServer::answering(Canned::new(
        200,
        r#"{"code":"OK","message":"Success","webhooks":[{"id":"webhook_01","name":"n","endpoint":"https://e.example/h",
            "description":null,"event_types":["customer.plan_changed"],"created_on":"2025-01-02T03:04:05Z"}]}"#,
    ))
    .await;
    let response = api(&server).get_web_hooks().await.unwrap();
    let sent = server.only_request();
    assert_eq!(
        (sent.method.as_str(), sent.target.as_str()),
        ("GET", "/api/v1/webhooks")
    );
    assert_eq!(response.webhooks.len(), 1);
    let webhook = &response.webhooks[0];
    assert_eq!(webhook.description, None);
    assert_eq!(webhook.event_types, ["customer.plan_changed"]);
    assert_eq!(webhook.created_on, "2025-01-02T03:04:05Z");
}

#[tokio::test]
async fn update_patches_only_the_fields_set() {
    let server = MockServer::answering(Canned::new(
        200,
        r#"{"message":"Success","code":"OK","webhook":{"id":"webhook_01"}}"#,
    ))
    .await;
    let response = api(&server)
        .update_web_hook(
            "webhook_01",
            UpdateWebHookRequest {
                name: Some("renamed".to_owned()),
                description: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(response.webhook.unwrap().id, "webhook_01");
    let sent = server.only_request();
    assert_eq!(
        (sent.method.as_str(), sent.target.as_str()),
        ("PATCH", "/api/v1/webhooks/webhook_01")
    );
    assert_eq!(sent.json(), json!({"name": "renamed", "description": null}));
}

#[tokio::test]
async fn delete_and_unknown_ids() {
    let server = MockServer::answering(Canned::ok()).await;
    let response = api(&server).delete_web_hook("webhook_01").await.unwrap();
    assert_eq!(response.code, "OK");
    let sent = server.only_request();
    assert_eq!(
        (sent.method.as_str(), sent.target.as_str(), sent.body.len()),
        ("DELETE", "/api/v1/webhooks/webhook_01", 0)
    );

    let missing = MockServer::answering(Canned::new(
        400,
        r#"{"errors":[{"code":"WEBHOOK_NOT_FOUND","message":"no webhook webhook_02"}]}"#,
    ))
    .await;
    let error = api(&missing)
        .delete_web_hook("webhook_02")
        .await
        .unwrap_err();
    assert!(matches!(error, DeleteWebHookError::BadRequest(_)));
    assert_eq!(error.code(), Some("WEBHOOK_NOT_FOUND"));

    // An id is one path segment: nothing is sent for one that is not.
    let error = api(&missing).get_event("..").await.unwrap_err();
    assert!(matches!(error, GetEventError::InvalidInput(_)), "{error:?}");
    assert_eq!(missing.requests().len(), 1);
}

#[tokio::test]
async fn get_event_reads_kindes_event() {
    let server = MockServer::answering(Canned::new(
        200,
        r#"{"code":"OK","message":"Success","event":{"type":"customer.agreement_created","source":"api",
            "event_id":"event_01","timestamp":1735787045,
            "data":{"customer_id":"customer_1","agreement_id":"agreement_1","plan_code":"pro"}}}"#,
    ))
    .await;
    let response = api(&server).get_event("event_01").await.unwrap();
    let sent = server.only_request();
    assert_eq!(
        (sent.method.as_str(), sent.target.as_str()),
        ("GET", "/api/v1/events/event_01")
    );
    let event = response.event.unwrap();
    assert_eq!(event.event_type, "customer.agreement_created");
    assert_eq!(event.timestamp, 1_735_787_045);
    assert_eq!(event.data["plan_code"], "pro");
}

#[tokio::test]
async fn get_event_types_reads_the_list() {
    let server = MockServer::answering(Canned::new(
        200,
        r#"{"code":"OK","message":"Success","event_types":[{"id":"customer.plan_assigned","code":"customer.plan_assigned",
            "name":"Plan assigned","origin":"billing","schema":{"type":"object"}}]}"#,
    ))
    .await;
    let response = api(&server).get_event_types().await.unwrap();
    assert_eq!(server.only_request().target, "/api/v1/event_types");
    assert_eq!(response.event_types[0].code, "customer.plan_assigned");
    assert_eq!(response.event_types[0].schema, json!({"type": "object"}));
}
