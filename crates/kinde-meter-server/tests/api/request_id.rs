//! `X-Request-Id`: the client's is echoed, else the server makes one (a random
//! UUID), on every answer: success, 404, 405, 403, 429.

use std::collections::HashSet;

use crate::support::{HOUR, TestApp};
use kinde_meter_server::rate_limit::{Limit, RateLimitConfig};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::json;

/// Sends `request` and returns its status and `X-Request-Id`.
async fn id_of(request: RequestBuilder) -> (StatusCode, String) {
    let response = request.send().await.unwrap();
    let id = response
        .headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no X-Request-Id on {}", response.status()))
        .to_str()
        .unwrap()
        .to_owned();
    (response.status(), id)
}

fn is_uuid_v4(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && text.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
        && groups[2].starts_with('4')
}

#[tokio::test]
async fn every_answer_carries_the_clients_request_id_or_a_generated_one() {
    let app = TestApp::spawn_limited(RateLimitConfig {
        auth_failures: Limit::one_per(HOUR, 1),
        ..RateLimitConfig::default()
    })
    .await;
    let endpoint = app.url("/api/v1/billing/meter_usage");
    let cases: Vec<(RequestBuilder, StatusCode)> = vec![
        (app.http.get(app.url("/healthz")), StatusCode::OK),
        (
            app.http.get(app.url("/no/such/route")),
            StatusCode::NOT_FOUND,
        ),
        (
            app.http.put(&endpoint).bearer_auth(&app.token),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            app.http
                .get(app.url("/api/v1/billing/agreements?customer_id=c"))
                .bearer_auth(&app.token),
            StatusCode::OK,
        ),
        // Invalid credentials: this case is sent twice (with and without an
        // id), two 403s that use up the address's allowance of one; the next
        // case is refused 429 before verification.
        (
            app.http.post(&endpoint).json(&json!({})),
            StatusCode::FORBIDDEN,
        ),
        (
            app.http
                .post(&endpoint)
                .bearer_auth("garbage")
                .json(&json!({})),
            StatusCode::TOO_MANY_REQUESTS,
        ),
    ];
    let mut generated = HashSet::new();
    for (i, (request, expected)) in cases.into_iter().enumerate() {
        // Each answer with an id of the client's: echoed unchanged.
        let ours = format!("client-request-{i}");
        let (status, id) = id_of(request.try_clone().unwrap().header("x-request-id", &ours)).await;
        assert_eq!(status, expected, "case {i}");
        assert_eq!(id, ours, "case {i}");
        // Without: a fresh UUID each time.
        let (status, id) = id_of(request).await;
        assert_eq!(status, expected, "case {i}");
        assert!(is_uuid_v4(&id), "case {i}: {id}");
        assert!(generated.insert(id), "case {i}: an id repeated");
    }
}
