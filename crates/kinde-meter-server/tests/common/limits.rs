//! Helpers of the rate-limit tests (in memory and through Redis): one cheap
//! authenticated request, and the 429 contract (docs/errors.md#headers-of-429-and-503).

use reqwest::{Response, StatusCode};

use super::{TestApp, assert_error};

/// A cheap authenticated request: list a customer's agreements.
pub async fn list(app: &TestApp, token: &str) -> Response {
    app.http
        .get(app.url("/api/v1/billing/agreements?customer_id=customer_rl"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("a 429 carries {name}"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Asserts the 429 contract and returns the seconds to wait.
pub async fn assert_too_many_requests(response: Response) -> u64 {
    let retry_after = header(&response, "retry-after");
    let reset = header(&response, "ratelimit-reset");
    assert_eq!(retry_after, reset, "both headers give the same wait");
    let seconds: u64 = retry_after.parse().expect("whole seconds");
    assert!(seconds >= 1);
    assert_error(
        response,
        StatusCode::TOO_MANY_REQUESTS,
        &["TOO_MANY_REQUESTS"],
    )
    .await;
    seconds
}
