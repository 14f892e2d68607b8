//! Client credentials on the wire: the token request, the token on API calls,
//! and a refused token replaced once.

use kinde_sdk::{
    ApiClient, Auth, BillingMeterUsageApi, Configuration, GetMeterUsageError, RetryPolicy,
    TokenError,
};

use crate::support::{Canned, MockServer};

fn token(access_token: &str) -> Canned {
    Canned::new(
        200,
        &format!(r#"{{"access_token":"{access_token}","token_type":"bearer","expires_in":3600}}"#),
    )
}

fn usage() -> Canned {
    Canned::new(200, r#"{"code":"OK","message":"Success","usage":[]}"#)
}

fn api(server: &MockServer, auth: Auth) -> BillingMeterUsageApi {
    BillingMeterUsageApi::new(
        ApiClient::new(
            Configuration::new(&server.url)
                .with_auth(auth)
                .with_retry_policy(RetryPolicy::none()),
        )
        .unwrap(),
    )
}

#[tokio::test]
async fn the_token_request_is_what_the_official_clients_send() {
    let server = MockServer::start(vec![token("tok-1"), usage()]).await;
    let api = api(&server, Auth::client_credentials("my id", "s3cr&t"));
    api.get_meter_usage("agreement_1", None, None)
        .await
        .unwrap();
    api.get_meter_usage("agreement_1", None, None)
        .await
        .unwrap();

    let requests = server.requests();
    assert_eq!(requests.len(), 3, "one token request, then two calls");
    let token_request = &requests[0];
    assert_eq!(
        (token_request.method.as_str(), token_request.target.as_str()),
        ("POST", "/oauth2/token")
    );
    assert_eq!(
        token_request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(
        token_request
            .header("kinde-sdk")
            .unwrap()
            .starts_with("Rust/")
    );
    let form: Vec<(String, String)> = form_urlencoded(&token_request.body);
    let audience = format!("{}/api", server.url);
    assert_eq!(
        form,
        [
            ("grant_type", "client_credentials"),
            ("client_id", "my id"),
            ("client_secret", "s3cr&t"),
            ("audience", audience.as_str()),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    for call in &requests[1..] {
        assert_eq!(call.header("authorization"), Some("Bearer tok-1"));
    }
}

#[tokio::test]
async fn a_refused_token_is_fetched_again_once() {
    let forbidden = Canned::new(
        403,
        r#"{"errors":[{"code":"INVALID_CREDENTIALS","message":"expired"}]}"#,
    );
    let server = MockServer::start(vec![
        token("tok-1"),
        forbidden.clone(),
        token("tok-2"),
        usage(),
    ])
    .await;
    let api = api(&server, Auth::client_credentials("id", "secret"));
    api.get_meter_usage("agreement_1", None, None)
        .await
        .unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[1].header("authorization"), Some("Bearer tok-1"));
    assert_eq!(requests[2].target, "/oauth2/token");
    assert_eq!(requests[3].header("authorization"), Some("Bearer tok-2"));

    // Refused again with the fresh token: that is the answer.
    let server = MockServer::start(vec![
        token("tok-1"),
        forbidden.clone(),
        token("tok-2"),
        forbidden,
    ])
    .await;
    let api = self::api(&server, Auth::client_credentials("id", "secret"));
    let error = api
        .get_meter_usage("agreement_1", None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, GetMeterUsageError::Forbidden(_)),
        "{error:?}"
    );
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn token_endpoint_failures_are_the_token_variant() {
    let server = MockServer::answering(Canned::new(
        401,
        r#"{"error":"invalid_client","error_description":"unknown client"}"#,
    ))
    .await;
    let error = api(&server, Auth::client_credentials("id", "secret"))
        .get_meter_usage("agreement_1", None, None)
        .await
        .unwrap_err();
    let GetMeterUsageError::Token(TokenError::Rejected {
        error: code,
        description,
        ..
    }) = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(code, "invalid_client");
    assert_eq!(description.as_deref(), Some("unknown client"));
    assert!(!error.is_retryable());

    let server = MockServer::answering(Canned::new(200, r#"{"token_type":"bearer"}"#)).await;
    let error = api(&server, Auth::client_credentials("id", "secret"))
        .get_meter_usage("agreement_1", None, None)
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        GetMeterUsageError::Token(TokenError::Decode { .. })
    ));

    let server = MockServer::answering(Canned::new(503, "overloaded")).await;
    let error = api(&server, Auth::client_credentials("id", "secret"))
        .get_meter_usage("agreement_1", None, None)
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "the token endpoint may recover");
}

#[test]
fn empty_credentials_are_refused_up_front() {
    let configuration =
        Configuration::new("https://acme.kinde.com").with_client_credentials("", "x");
    assert_eq!(
        ApiClient::new(configuration).unwrap_err(),
        kinde_sdk::ConfigurationError::InvalidClientCredentials
    );
}

/// Decodes `application/x-www-form-urlencoded`.
fn form_urlencoded(body: &[u8]) -> Vec<(String, String)> {
    let decode = |text: &str| {
        let text = text.replace('+', " ");
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    std::str::from_utf8(body)
        .unwrap()
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            (decode(k), decode(v))
        })
        .collect()
}
