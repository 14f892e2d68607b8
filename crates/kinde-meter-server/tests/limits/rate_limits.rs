//! Rate limits against a real server (docs/limits.md#rate-limits): per client
//! (`azp`), per-client overrides, `--rate-limit 0`, public routes, and the
//! per-source-address limit on invalid credentials.
//!
//! Buckets that must stay empty during a test refill once an hour, so a slow
//! machine cannot refill them between two requests; the recovery tests use one
//! request a second and poll for the recovery with a deadline.

use std::{collections::HashMap, net::IpAddr};

use crate::support::limits::{
    assert_too_many_requests, await_status, forbidden_until_refused, list, until_refused,
};
use crate::support::{HOUR, TestApp, assert_error};
use kinde_meter_server::{
    rate_limit::{Limit, RateLimitConfig},
    routes::ROUTES,
};
use reqwest::{Response, StatusCode};
use serde_json::json;

async fn spawn(clients: Limit, auth_failures: Limit) -> TestApp {
    TestApp::spawn_limited(RateLimitConfig {
        default: clients,
        clients: HashMap::new(),
        auth_failures,
    })
    .await
}

#[tokio::test]
async fn a_burst_over_the_limit_is_answered_429_before_body_and_storage() {
    let app = spawn(Limit::one_per(HOUR, 3), Limit::per_second(10, 100)).await;
    // The default client sets up (2 of its 3 requests).
    let agreement = app.create_agreement("customer_rl", "pro").await;
    let meter = app.token_for_client("meter");
    let record = |value: &str| {
        json!({
            "customer_agreement_id": agreement,
            "billing_feature_code": "api_calls",
            "meter_value": value,
        })
    };
    let post = |body: String| {
        app.http
            .post(app.url("/api/v1/billing/meter_usage"))
            .bearer_auth(&meter)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for _ in 0..3 {
        let response = post(record("1").to_string()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let refused = post(record("100").to_string()).await.unwrap();
    let seconds = assert_too_many_requests(refused).await;
    assert!(seconds > 1 && seconds <= 3600, "{seconds}");
    // The rate limit comes before the body size (413) and validation (400).
    let oversized = format!(r#"{{"pad":"{}"}}"#, "x".repeat(100 * 1024));
    assert_too_many_requests(post(oversized).await.unwrap()).await;
    assert_too_many_requests(post("{not json".to_owned()).await.unwrap()).await;
    // ...and after authentication and scope (403).
    let read_only = app.mint(app.mint_request("meter", &["read:meter_usage"]));
    let response = app
        .http
        .post(app.url("/api/v1/billing/meter_usage"))
        .bearer_auth(&read_only)
        .json(&record("1"))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::FORBIDDEN, &["INSUFFICIENT_SCOPE"]).await;
    let response = app
        .http
        .post(app.url("/api/v1/billing/meter_usage"))
        .bearer_auth(format!("{meter}x"))
        .json(&record("1"))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::FORBIDDEN, &["INVALID_CREDENTIALS"]).await;
    // Nothing refused was stored: the default client reads 3, not 103.
    assert_eq!(app.usage_value(&agreement, "api_calls", None).await, "3");
}

#[tokio::test]
async fn a_client_under_its_limit_is_unaffected_by_another_clients_flood() {
    let app = spawn(Limit::one_per(HOUR, 5), Limit::per_second(10, 100)).await;
    let flooder = app.token_for_client("flooder");
    let quiet = app.token_for_client("quiet");
    // The flood, concurrent: exactly the burst gets through.
    let sends = (0..40).map(|_| list(&app, &flooder));
    let statuses: Vec<StatusCode> = futures::future::join_all(sends)
        .await
        .iter()
        .map(Response::status)
        .collect();
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((ok, limited), (5, 35), "{statuses:?}");
    assert_too_many_requests(list(&app, &flooder).await).await;
    // The quiet client has its whole burst.
    for _ in 0..5 {
        assert_eq!(list(&app, &quiet).await.status(), StatusCode::OK);
    }
    assert_too_many_requests(list(&app, &quiet).await).await;
}

#[tokio::test]
async fn the_limit_recovers_after_the_reset() {
    let app = spawn(Limit::per_second(1, 2), Limit::per_second(10, 100)).await;
    let token = app.token_for_client("steady");
    let (accepted, refused) = until_refused(100, || list(&app, &token)).await;
    assert!(accepted >= 2, "the burst of 2 goes through: {accepted}");
    let seconds = assert_too_many_requests(refused).await;
    assert_eq!(seconds, 1, "one request a second: the next fits within 1 s");
    await_status(StatusCode::OK, || list(&app, &token)).await;
}

#[tokio::test]
async fn per_client_overrides_replace_the_default() {
    let mut config = RateLimitConfig {
        default: Limit::one_per(HOUR, 2),
        ..RateLimitConfig::default()
    };
    config
        .clients
        .insert("bulk".to_owned(), Limit::one_per(HOUR, 6));
    config.clients.insert("internal".to_owned(), Limit::OFF);
    let app = TestApp::spawn_limited(config).await;
    let (bulk, internal, other) = (
        app.token_for_client("bulk"),
        app.token_for_client("internal"),
        app.token_for_client("other"),
    );
    let (accepted, refused) = until_refused(50, || list(&app, &other)).await;
    assert_eq!(accepted, 2);
    assert_too_many_requests(refused).await;
    let (accepted, refused) = until_refused(50, || list(&app, &bulk)).await;
    assert_eq!(accepted, 6);
    assert_too_many_requests(refused).await;
    for _ in 0..50 {
        assert_eq!(list(&app, &internal).await.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn rate_limit_zero_never_limits() {
    let app = spawn(Limit::per_second(0, 2000), Limit::per_second(10, 100)).await;
    assert!(Limit::per_second(0, 2000).is_off());
    let token = app.token_for_client("unlimited");
    for _ in 0..5 {
        let sends = (0..60).map(|_| list(&app, &token));
        for response in futures::future::join_all(sends).await {
            assert_eq!(response.status(), StatusCode::OK);
        }
    }
}

#[tokio::test]
async fn public_routes_are_not_limited() {
    let app = spawn(Limit::one_per(HOUR, 1), Limit::one_per(HOUR, 1)).await;
    // Empty both buckets of this address: the client's and the failures'.
    let token = app.token_for_client("busy");
    assert_eq!(list(&app, &token).await.status(), StatusCode::OK);
    assert_too_many_requests(list(&app, &token).await).await;
    let (_, refused) = forbidden_until_refused(10, || list(&app, "garbage")).await;
    assert_too_many_requests(refused).await;
    let public: Vec<_> = ROUTES
        .iter()
        .filter(|r| r.scope.is_none() && r.method == "GET")
        .collect();
    assert!(public.iter().any(|r| r.path == "/healthz"));
    for route in public {
        for _ in 0..20 {
            let response = app
                .http
                .get(app.url(route.path))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{}", route.path);
        }
    }
}

#[tokio::test]
async fn invalid_credentials_from_one_address_get_429_before_verification() {
    // All test traffic comes from 127.0.0.1, so this server is on its own.
    let app = spawn(Limit::per_second(1000, 2000), Limit::one_per(HOUR, 5)).await;
    let garbage = |token: &'static str| list(&app, token);
    let mut forbidden = 0;
    let refused = loop {
        let response = garbage("not-a-jwt").await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            break response;
        }
        assert_error(response, StatusCode::FORBIDDEN, &["INVALID_CREDENTIALS"]).await;
        forbidden += 1;
        assert!(forbidden <= 6, "no 429 after {forbidden} invalid tokens");
    };
    // The burst of 5, then the failure that emptied the bucket: 6 answered 403.
    assert_eq!(forbidden, 6);
    let seconds = assert_too_many_requests(refused).await;
    assert!(seconds > 1 && seconds <= 3600, "{seconds}");
    // A good token from the same address is refused too: it is not verified.
    assert_too_many_requests(list(&app, &app.token).await).await;
    // So is a request with no credentials at all.
    let response = app
        .http
        .get(app.url("/api/v1/billing/agreements?customer_id=c"))
        .send()
        .await
        .unwrap();
    assert_too_many_requests(response).await;
    // Another source address is not affected.
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let elsewhere = reqwest::Client::builder()
        .local_address(other)
        .build()
        .unwrap();
    let response = elsewhere
        .get(app.url("/api/v1/billing/agreements?customer_id=c"))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_invalid_credentials_limit_recovers() {
    let app = spawn(Limit::per_second(1000, 2000), Limit::per_second(1, 3)).await;
    let (_, refused) = forbidden_until_refused(100, || list(&app, "not-a-jwt")).await;
    assert_eq!(assert_too_many_requests(refused).await, 1);
    await_status(StatusCode::OK, || list(&app, &app.token)).await;
}

#[tokio::test]
async fn valid_requests_and_missing_scopes_never_count_as_invalid_credentials() {
    let app = spawn(Limit::per_second(1000, 2000), Limit::one_per(HOUR, 2)).await;
    for _ in 0..20 {
        assert_eq!(list(&app, &app.token).await.status(), StatusCode::OK);
    }
    // A genuine token without the scope is a 403, but not a bad credential.
    let no_scope = app.token_with(&["read:meter_usage"]);
    for _ in 0..20 {
        assert_error(
            list(&app, &no_scope).await,
            StatusCode::FORBIDDEN,
            &["INSUFFICIENT_SCOPE"],
        )
        .await;
    }
    assert_eq!(list(&app, &app.token).await.status(), StatusCode::OK);
}
