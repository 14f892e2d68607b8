//! docs/tokens.md for the built-in issuer: tokens that are not ours, not for us, expired
//! or without the route's scope get 403; the route table's scopes hold route by route.

use crate::support::{METER_USAGE, TestApp, assert_error};
use jiff::{SignedDuration, Timestamp};
use kinde_meter_server::{
    auth::{MintRequest, SigningKey, mint_token},
    routes::ROUTES,
};
use kinde_meter_wire::Scope;
use reqwest::StatusCode;
use serde_json::json;

/// A valid token's claims for client `c`, allowed to record usage.
fn request(app: &TestApp) -> MintRequest {
    app.mint_request("c", &[Scope::CreateMeterUsage])
}

#[tokio::test]
async fn foreign_expired_and_misaddressed_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let stranger = SigningKey::generate().unwrap();
    let cases = [
        (
            "signed by another key",
            mint_token(&stranger, &request(&app)).unwrap(),
        ),
        (
            "expired",
            app.mint(MintRequest {
                now: Timestamp::now() - SignedDuration::from_hours(3),
                ..request(&app)
            }),
        ),
        (
            "wrong audience",
            app.mint(MintRequest {
                audience: vec!["https://elsewhere/api".into()],
                ..request(&app)
            }),
        ),
        (
            "wrong issuer",
            app.mint(MintRequest {
                issuer: "https://evil.kinde.com".into(),
                ..request(&app)
            }),
        ),
        ("garbage", "not-a-jwt".to_owned()),
    ];
    for (what, token) in cases {
        let record =
            json!({"customer_agreement_id": "a", "billing_feature_code": "f", "meter_value": "1"});
        let body = assert_error(
            app.post_with(&token, METER_USAGE, &record).await,
            StatusCode::FORBIDDEN,
            &["INVALID_CREDENTIALS"],
        )
        .await;
        assert!(
            !body.to_string().contains(&token),
            "{what}: the token is echoed"
        );
    }
    // No header, the wrong scheme, a token in the query string.
    let response = app
        .http
        .post(app.url("/api/v1/billing/meter_usage"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::FORBIDDEN, &["INVALID_CREDENTIALS"]).await;
    let response = app
        .http
        .post(app.url("/api/v1/billing/meter_usage"))
        .header("authorization", format!("Basic {}", app.token))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::FORBIDDEN, &["INVALID_CREDENTIALS"]).await;
    let response = app
        .http
        .post(app.url(&format!(
            "/api/v1/billing/meter_usage?access_token={}",
            app.token
        )))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::FORBIDDEN, &["INVALID_CREDENTIALS"]).await;
}

#[tokio::test]
async fn every_route_needs_its_scope_and_no_other() {
    let app = TestApp::spawn().await;
    assert!(ROUTES.iter().any(|r| r.scope.is_some()));
    for route in ROUTES.iter() {
        let send = |token: Option<String>| {
            let url = app.url(route.path);
            let mut builder = match route.method {
                "GET" => app.http.get(url),
                "POST" => app.http.post(url).json(&json!({})),
                "PATCH" => app.http.patch(url).json(&json!({})),
                "DELETE" => app.http.delete(url),
                other => panic!("method {other}"),
            };
            if let Some(token) = token {
                builder = builder.bearer_auth(token);
            }
            builder.send()
        };
        match route.scope {
            None => {
                let response = send(None).await.unwrap();
                // Public: answered without a token. The token endpoint answers
                // this empty JSON request with its RFC 6749 invalid_request.
                let expected = match route.path {
                    "/oauth2/token" => StatusCode::BAD_REQUEST,
                    _ => StatusCode::OK,
                };
                assert!(
                    response.status() == expected,
                    "{} {} is public: {}",
                    route.method,
                    route.path,
                    response.status()
                );
            }
            Some(scope) => {
                let others: Vec<Scope> = crate::support::ALL_SCOPES
                    .iter()
                    .copied()
                    .filter(|s| *s != scope)
                    .collect();
                let response = send(Some(app.token_with(&others))).await.unwrap();
                assert_error(response, StatusCode::FORBIDDEN, &["INSUFFICIENT_SCOPE"]).await;
                let response = send(Some(app.token_with(&[scope]))).await.unwrap();
                assert_ne!(
                    response.status(),
                    StatusCode::FORBIDDEN,
                    "{} {} with {scope}",
                    route.method,
                    route.path
                );
                let response = send(None).await.unwrap();
                assert_error(response, StatusCode::FORBIDDEN, &["INVALID_CREDENTIALS"]).await;
            }
        }
    }
}

#[tokio::test]
async fn the_jwks_verifies_our_tokens() {
    let app = TestApp::spawn().await;
    for path in ["/.well-known/jwks", "/.well-known/jwks.json"] {
        let jwks: serde_json::Value = app
            .http
            .get(app.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = &jwks["keys"][0];
        assert_eq!(
            (key["kty"].as_str(), key["alg"].as_str()),
            (Some("RSA"), Some("RS256"))
        );
        let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
            key["n"].as_str().unwrap(),
            key["e"].as_str().unwrap(),
        )
        .unwrap();
        let header = jsonwebtoken::decode_header(&app.token).unwrap();
        assert_eq!(header.kid.as_deref(), key["kid"].as_str());
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[format!("{}/api", app.issuer)]);
        validation.set_issuer(&[&app.issuer]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(&app.token, &decoding, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims["gty"], json!(["client_credentials"]));
        assert_eq!(claims["azp"], "test-client");
        assert!(claims["scp"].is_array() && claims["scope"].is_string());
    }
}
