//! kinde-sdk's token manager against the real `/oauth2/token`: one token
//! request however many calls need a token at once, refresh before expiry, a
//! refused token replaced once, and token failures as typed errors.
//!
//! A counting proxy between the SDK and the server sees every token request.
//! The SDK talks to the proxy's address, so it asks for the server's own
//! audience explicitly (`Auth::ClientCredentials { audience }`).

use std::time::{Duration, Instant};

use crate::proxy::{Fault, Proxy};
use crate::support::{Options, TestApp, jwt_claims};
use jiff::{SignedDuration, Timestamp};
use kinde_sdk::{
    ApiClient, Auth, BillingMeterUsageApi, Configuration, CreateMeterUsageRecordError,
    GetMeterUsageError, RetryPolicy, TokenError,
};

const TOKEN: &str = "/oauth2/token";
const METER_USAGE: &str = "/api/v1/billing/meter_usage";
const DEADLINE: Duration = Duration::from_secs(30);
/// The scopes of the M2M client each test registers.
const USAGE_SCOPES: &str = "create:meter_usage read:meter_usage";

fn api_via(proxy: &Proxy, app: &TestApp, id: &str, secret: &str) -> BillingMeterUsageApi {
    let configuration = Configuration::new(&proxy.base).with_auth(Auth::ClientCredentials {
        client_id: id.to_owned(),
        client_secret: secret.to_owned(),
        audience: Some(format!("{}/api", app.issuer)),
    });
    BillingMeterUsageApi::new(ApiClient::new(configuration).unwrap())
}

/// The `exp` claim of a JWT.
fn expiry(token: &str) -> Timestamp {
    Timestamp::from_second(jwt_claims(token)["exp"].as_i64().unwrap()).unwrap()
}

#[tokio::test]
async fn a_hundred_concurrent_calls_share_one_token_request() {
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_tokens", "pro").await;
    let (id, secret) = app.register_client("sdk tests", USAGE_SCOPES).await;
    let proxy = Proxy::start(&app.base).await;
    let api = api_via(&proxy, &app, &id, &secret);

    let calls: Vec<_> = (0..100)
        .map(|i| {
            let (api, agreement) = (api.clone(), agreement.clone());
            tokio::spawn(async move {
                if i % 2 == 0 {
                    api.create_meter_usage_record_builder()
                        .customer_agreement_id(&agreement)
                        .billing_feature_code("api_calls")
                        .meter_value(1)
                        .send()
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string())
                } else {
                    api.get_meter_usage(&agreement, Some("api_calls"), None)
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(proxy.requests(TOKEN), 1, "one token request for 100 calls");
    assert_eq!(proxy.requests(METER_USAGE), 100);
    let tokens = proxy.tokens();
    assert_eq!(tokens.len(), 100);
    assert!(tokens.iter().all(|(_, token)| token == &tokens[0].1));
    assert_eq!(app.usage_value(&agreement, "api_calls", None).await, "50");
}

#[tokio::test]
async fn tokens_are_refreshed_before_they_expire() {
    // Tokens live 4 s: the SDK replaces them after half their life (for long
    // lived ones, 60 s before expiry).
    let app = TestApp::spawn_with(Options {
        token_lifetime: Some(SignedDuration::from_secs(4)),
        ..Options::default()
    })
    .await;
    let agreement = app.create_agreement("customer_refresh", "pro").await;
    let (id, secret) = app.register_client("sdk tests", USAGE_SCOPES).await;
    let proxy = Proxy::start(&app.base).await;
    let api = api_via(&proxy, &app, &id, &secret);

    let start = Instant::now();
    while proxy.requests(TOKEN) < 3 {
        assert!(start.elapsed() < DEADLINE, "no refresh within {DEADLINE:?}");
        api.get_meter_usage(&agreement, None, None).await.unwrap();
        // Pace the calls; this is load, not synchronisation.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tokens = proxy.tokens();
    let distinct: std::collections::HashSet<_> = tokens.iter().map(|(_, t)| t).collect();
    assert!(distinct.len() >= 3, "the token was replaced");
    for (sent, token) in &tokens {
        let left = expiry(token).duration_since(*sent);
        assert!(
            left >= SignedDuration::from_millis(500),
            "a token was still used {left} before its expiry"
        );
    }
    assert_eq!(
        proxy.answers(403),
        0,
        "no call was refused for an old token"
    );
}

#[tokio::test]
async fn a_refused_token_is_replaced_once_and_the_call_retried() {
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_refused", "pro").await;
    let (id, secret) = app.register_client("sdk tests", USAGE_SCOPES).await;
    let proxy = Proxy::start(&app.base).await;
    let api = api_via(&proxy, &app, &id, &secret);
    api.get_meter_usage(&agreement, None, None).await.unwrap();
    assert_eq!(proxy.requests(TOKEN), 1);

    // The API refuses the cached token once (as after a key rotation).
    proxy.fault(
        METER_USAGE,
        Fault::Answer {
            status: 403,
            body: r#"{"errors":[{"code":"INVALID_CREDENTIALS","message":"token expired"}]}"#,
            times: 1,
        },
    );
    api.get_meter_usage(&agreement, None, None).await.unwrap();
    assert_eq!(proxy.requests(TOKEN), 2, "a fresh token was fetched");

    // Refused every time: replaced once, then the 403 is the answer.
    proxy.fault(
        METER_USAGE,
        Fault::Answer {
            status: 403,
            body: r#"{"errors":[{"code":"INVALID_CREDENTIALS","message":"no"}]}"#,
            times: 100,
        },
    );
    let before = proxy.requests(METER_USAGE);
    let error = api
        .get_meter_usage(&agreement, None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, GetMeterUsageError::Forbidden(_)),
        "{error:?}"
    );
    assert_eq!(proxy.requests(METER_USAGE) - before, 2);
    assert_eq!(proxy.requests(TOKEN), 3);
}

#[tokio::test]
async fn token_failures_are_typed_and_never_show_the_secret() {
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_badsecret", "pro").await;
    let (id, _) = app.register_client("sdk tests", USAGE_SCOPES).await;
    let proxy = Proxy::start(&app.base).await;
    let api = api_via(&proxy, &app, &id, "not-the-secret-at-all");
    let error = api
        .create_meter_usage_record_builder()
        .customer_agreement_id(&agreement)
        .billing_feature_code("api_calls")
        .meter_value(1)
        .send()
        .await
        .unwrap_err();
    let CreateMeterUsageRecordError::Token(token_error) = &error else {
        panic!("expected a token error, got {error:?}");
    };
    assert_eq!(token_error.oauth_error(), Some("invalid_client"));
    assert!(matches!(token_error, TokenError::Rejected { status, .. } if status.as_u16() == 401));
    assert!(!error.is_retryable());
    assert_eq!(proxy.requests(TOKEN), 1, "a refusal is not retried");
    assert_eq!(
        proxy.requests(METER_USAGE),
        0,
        "nothing was sent without a token"
    );
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("not-the-secret-at-all"), "{shown}");

    // The default audience is `{host}/api`: here the proxy's, which the server
    // refuses as another audience.
    let default_audience = BillingMeterUsageApi::new(
        ApiClient::new(
            Configuration::new(&proxy.base)
                .with_client_credentials(&id, "whatever")
                .with_retry_policy(RetryPolicy::none()),
        )
        .unwrap(),
    );
    let error = default_audience
        .get_meter_usage(&agreement, None, None)
        .await
        .unwrap_err();
    assert!(matches!(error, GetMeterUsageError::Token(_)), "{error:?}");
}

#[tokio::test]
async fn client_credentials_work_directly_with_the_default_audience() {
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_direct", "pro").await;
    let (id, secret) = app.register_client("sdk tests", USAGE_SCOPES).await;
    // Talking to the server itself, `{host}/api` is the server's audience.
    let api = BillingMeterUsageApi::new(
        ApiClient::new(Configuration::new(&app.base).with_client_credentials(id, secret)).unwrap(),
    );
    api.create_meter_usage_record_builder()
        .customer_agreement_id(&agreement)
        .billing_feature_code("api_calls")
        .meter_value("2.5")
        .send()
        .await
        .unwrap();
    assert_eq!(app.usage_value(&agreement, "api_calls", None).await, "2.5");
}
