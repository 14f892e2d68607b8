//! `WebhooksApi`: the requests it sends and the answers it reads; and
//! `webhooks::decode` against a local JWKS with tokens signed here.

use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kinde_sdk::models::{CreateWebHookRequest, UpdateWebHookRequest};
use kinde_sdk::webhooks::{self, DecodeError, EventData, WebhookDecoder};
use kinde_sdk::{CreateWebHookError, DeleteWebHookError, GetEventError, WebhooksApi};
use serde_json::{Value, json};

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

/// An RSA key made for the test, with its JWK.
struct TestKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    fn generate(kid: &str) -> TestKey {
        let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let der = pair.as_der().unwrap();
        let body = STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        let public = pair.public_key();
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        TestKey {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            jwk: json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": b64(public.modulus().big_endian_without_leading_zero()),
                "e": b64(public.exponent().big_endian_without_leading_zero()),
            }),
        }
    }

    /// `claims` signed with this key, under `kid`.
    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }
}

fn jwks(keys: &[&TestKey]) -> Canned {
    let keys: Vec<&Value> = keys.iter().map(|key| &key.jwk).collect();
    Canned::new(200, &json!({ "keys": keys }).to_string())
}

/// The claims of a kinde-meter `customer.plan_changed` delivery.
fn plan_changed(issuer: &str) -> Value {
    json!({
        "type": "customer.plan_changed",
        "event_id": "event_0195ac80a14c2ca2cec97d026d864de0",
        "source": "api",
        "timestamp": "2025-01-02T03:04:05Z",
        "event_timestamp": "2025-01-02T03:04:05.000Z",
        "data": {
            "customer_id": "customer_1", "agreement_id": "agreement_2", "plan_code": "pro",
            "previous_plan_code": "free", "previous_agreement_id": "agreement_1"
        },
        "iss": issuer,
        "iat": 1735787045,
        "jti": "event_0195ac80a14c2ca2cec97d026d864de0"
    })
}

#[tokio::test]
async fn a_valid_delivery_decodes_to_its_typed_event() {
    let key = TestKey::generate("key-a");
    let server = MockServer::answering(jwks(&[&key])).await;
    let body = key.sign(&plan_changed(&server.url));

    // The issuer as configured, with a trailing slash, and the body as received,
    // with a trailing newline.
    let event = webhooks::decode(&format!("{body}\n"), &format!("{}/", server.url))
        .await
        .unwrap();

    assert_eq!(event.event_id, "event_0195ac80a14c2ca2cec97d026d864de0");
    assert_eq!(event.event_type(), "customer.plan_changed");
    assert_eq!(event.source, "api");
    let EventData::PlanChanged(change) = &event.data else {
        panic!("{event:?}");
    };
    assert_eq!(
        (
            change.customer_id.as_str(),
            change.agreement_id.as_str(),
            change.plan_code.as_str(),
            change.previous_plan_code.as_str(),
            change.previous_agreement_id.as_str()
        ),
        ("customer_1", "agreement_2", "pro", "free", "agreement_1")
    );
    assert_eq!(event.claims["jti"], event.event_id.as_str());
    let fetch = server.only_request();
    assert_eq!(
        (fetch.method.as_str(), fetch.target.as_str()),
        ("GET", "/.well-known/jwks.json")
    );

    // Cached: a second delivery fetches nothing.
    webhooks::decode(&body, &server.url).await.unwrap();
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn every_billing_type_is_typed_and_others_stay_raw() {
    let key = TestKey::generate("key-a");
    let server = MockServer::answering(jwks(&[&key])).await;
    let decoder = WebhookDecoder::new(&server.url);
    let period =
        json!({"period_start": "2025-01-01T00:00:00Z", "period_end": "2025-02-01T00:00:00Z"});
    let cases = [
        ("customer.agreement_created", json!({"plan_code": "pro"})),
        ("customer.plan_assigned", json!({"plan_code": "pro"})),
        (
            "customer.agreement_cancelled",
            json!({"plan_code": "free", "expires_on": "2025-01-02T03:04:05Z"}),
        ),
        (
            "customer.meter_usage_updated",
            json!({"feature_code": "api_calls", "meter_id": "api_calls",
            "value": "0.000000001", "quantity": 0.000000001}),
        ),
        (
            "customer.entitlement_threshold_reached",
            json!({"feature_code": "api_calls",
            "threshold_percent": 80, "entitlement_limit_max": 1000, "value": "800"}),
        ),
        ("user.created", json!({"user": {"id": "kp_1"}})),
    ];
    for (event_type, extra) in cases {
        let mut data = json!({"customer_id": "customer_1", "agreement_id": "agreement_1"});
        data.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        if event_type.contains("usage") || event_type.contains("threshold") {
            data.as_object_mut()
                .unwrap()
                .extend(period.as_object().unwrap().clone());
        }
        let mut claims = plan_changed(&server.url);
        claims["type"] = event_type.into();
        claims["data"] = data.clone();
        let event = decoder.decode(&key.sign(&claims)).await.unwrap();
        assert_eq!(event.event_type(), event_type);
        match &event.data {
            EventData::AgreementCreated(created) => assert_eq!(created.plan_code, "pro"),
            EventData::PlanAssigned(assigned) => assert_eq!(assigned.agreement_id, "agreement_1"),
            EventData::AgreementCancelled(cancelled) => {
                assert_eq!(
                    cancelled.expires_on,
                    "2025-01-02T03:04:05Z".parse().unwrap()
                )
            }
            EventData::MeterUsageUpdated(usage) => {
                assert_eq!(usage.value.to_string(), "0.000000001");
                assert_eq!(usage.period_end, "2025-02-01T00:00:00Z".parse().unwrap());
            }
            EventData::EntitlementThresholdReached(reached) => {
                assert_eq!(
                    (
                        reached.threshold_percent,
                        reached.entitlement_limit_max,
                        reached.value.to_string()
                    ),
                    (80, 1000, "800".to_owned())
                );
            }
            EventData::Other {
                event_type,
                data: raw,
            } => {
                assert_eq!((event_type.as_str(), raw), ("user.created", &data));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_wrong_signature_is_refused() {
    let key = TestKey::generate("key-a");
    let forger = TestKey::generate("forger");
    let server = MockServer::answering(jwks(&[&key])).await;

    let forged = forger.sign_as("key-a", &plan_changed(&server.url));
    let error = webhooks::decode(&forged, &server.url).await.unwrap_err();
    assert!(matches!(error, DecodeError::InvalidSignature), "{error:?}");

    // A valid token whose claims were altered after signing.
    let token = key.sign(&plan_changed(&server.url));
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut claims = plan_changed(&server.url);
    claims["data"]["plan_code"] = "enterprise".into();
    let altered = URL_SAFE_NO_PAD.encode(claims.to_string());
    parts[1] = &altered;
    let error = webhooks::decode(&parts.join("."), &server.url)
        .await
        .unwrap_err();
    assert!(matches!(error, DecodeError::InvalidSignature), "{error:?}");
}

#[tokio::test]
async fn a_wrong_or_missing_issuer_is_refused() {
    let key = TestKey::generate("key-a");
    let server = MockServer::answering(jwks(&[&key])).await;
    let decoder = WebhookDecoder::new(&server.url);

    let other = key.sign(&plan_changed("https://someone-else.example.com"));
    let error = decoder.decode(&other).await.unwrap_err();
    let DecodeError::WrongIssuer { expected, found } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(expected, &server.url);
    assert_eq!(found.as_deref(), Some("https://someone-else.example.com"));

    let mut claims = plan_changed(&server.url);
    claims.as_object_mut().unwrap().remove("iss");
    let error = decoder.decode(&key.sign(&claims)).await.unwrap_err();
    assert!(
        matches!(error, DecodeError::WrongIssuer { found: None, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_jwks_at_most_once_per_cooldown() {
    let old = TestKey::generate("key-old");
    let new = TestKey::generate("key-new");
    // The sender rotates its key after the first fetch.
    let server = MockServer::start(vec![jwks(&[&old]), jwks(&[&new, &old])]).await;
    let decoder = WebhookDecoder::new(&server.url).with_refetch_cooldown(Duration::ZERO);

    decoder
        .decode(&old.sign(&plan_changed(&server.url)))
        .await
        .unwrap();
    assert_eq!(server.requests().len(), 1);
    let event = decoder
        .decode(&new.sign(&plan_changed(&server.url)))
        .await
        .unwrap();
    assert_eq!(event.event_type(), "customer.plan_changed");
    assert_eq!(
        server.requests().len(),
        2,
        "the unknown kid fetched the JWKS again"
    );

    // A kid the fresh set lacks either: one more fetch, then refused.
    let error = decoder
        .decode(&new.sign_as("key-made-up", &plan_changed(&server.url)))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, DecodeError::UnknownKeyId(kid) if kid == "key-made-up"),
        "{error:?}"
    );
    assert_eq!(server.requests().len(), 3);

    // With the default 30 s cooldown, made-up kids cannot make it fetch again.
    let cooled = WebhookDecoder::new(&server.url);
    cooled
        .decode(&old.sign(&plan_changed(&server.url)))
        .await
        .unwrap();
    for _ in 0..5 {
        let error = cooled
            .decode(&new.sign_as("key-made-up", &plan_changed(&server.url)))
            .await
            .unwrap_err();
        assert!(matches!(error, DecodeError::UnknownKeyId(_)), "{error:?}");
    }
    assert_eq!(
        server.requests().len(),
        4,
        "one fetch for the cooled decoder"
    );
}

#[tokio::test]
async fn alg_none_and_hmac_are_refused_before_any_key_is_fetched() {
    let key = TestKey::generate("key-a");
    let server = MockServer::answering(jwks(&[&key])).await;
    let claims = URL_SAFE_NO_PAD.encode(plan_changed(&server.url).to_string());

    for alg in ["none", "None", "HS256", "RS512", "PS256"] {
        let header =
            URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": "key-a", "typ": "JWT"}).to_string());
        for signature in ["", "c2lnbmF0dXJl"] {
            let token = format!("{header}.{claims}.{signature}");
            let error = webhooks::decode(&token, &server.url).await.unwrap_err();
            assert!(
                matches!(&error, DecodeError::UnsupportedAlgorithm(found) if found == alg),
                "{alg}: {error:?}"
            );
        }
    }
    // HS256 keyed with the public key's JWK text, the classic confusion.
    let hmac = jsonwebtoken::encode(
        &Header {
            kid: Some("key-a".to_owned()),
            ..Header::new(Algorithm::HS256)
        },
        &plan_changed(&server.url),
        &EncodingKey::from_secret(key.jwk.to_string().as_bytes()),
    )
    .unwrap();
    let error = webhooks::decode(&hmac, &server.url).await.unwrap_err();
    assert!(
        matches!(error, DecodeError::UnsupportedAlgorithm(_)),
        "{error:?}"
    );
    assert!(server.requests().is_empty());

    let no_kid = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &plan_changed(&server.url),
        &key.encoding,
    )
    .unwrap();
    let error = webhooks::decode(&no_kid, &server.url).await.unwrap_err();
    assert!(matches!(error, DecodeError::MissingKeyId), "{error:?}");
    for garbage in ["", "not a token", "a.b.c.d"] {
        let error = webhooks::decode(garbage, &server.url).await.unwrap_err();
        assert!(
            matches!(error, DecodeError::Malformed(_)),
            "{garbage:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_jwks_that_cannot_be_read_is_an_error_and_not_cached() {
    let key = TestKey::generate("key-a");
    let server = MockServer::start(vec![
        Canned::new(500, "oops"),
        Canned::new(200, "<html>"),
        jwks(&[&key]),
    ])
    .await;
    let decoder = WebhookDecoder::new(&server.url);
    let token = key.sign(&plan_changed(&server.url));
    for _ in 0..2 {
        let error = decoder.decode(&token).await.unwrap_err();
        assert!(matches!(error, DecodeError::Jwks { .. }), "{error:?}");
    }
    decoder.decode(&token).await.unwrap();
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let key = TestKey::generate("key-a");
    let server = MockServer::answering(jwks(&[&key])).await;
    let mut claims = plan_changed(&server.url);
    claims["exp"] = 1_000_000_000.into();
    let error = webhooks::decode(&key.sign(&claims), &server.url)
        .await
        .unwrap_err();
    assert!(matches!(error, DecodeError::Expired), "{error:?}");
}
