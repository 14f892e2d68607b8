//! Helpers of the rate-limit tests (in memory and through Redis): one cheap
//! authenticated request, the 429 contract (docs/errors.md#headers-of-429-and-503),
//! and sending until refused or until let through again.

use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};

use super::{TestApp, assert_error};

/// A cheap authenticated request: list a customer's agreements.
pub async fn list(app: &TestApp, token: &str) -> Response {
    app.get_with(token, "/api/v1/billing/agreements?customer_id=customer_rl")
        .await
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

/// How long a limited client may wait to be let through again (the limits
/// under test refill within seconds).
pub const RECOVERY_DEADLINE: Duration = Duration::from_secs(20);

/// Sends `request` until it is refused, at most `max` times; returns how many
/// were answered 200 before the refusal, and the refusal.
pub async fn until_refused<F, Fut>(max: usize, mut request: F) -> (usize, Response)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Response>,
{
    for accepted in 0..max {
        let response = request().await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            return (accepted, response);
        }
        assert_eq!(response.status(), StatusCode::OK, "before the limit");
    }
    panic!("no 429 after {max} requests");
}

/// [`until_refused`] for requests answered 403 `INVALID_CREDENTIALS` before
/// the limit.
pub async fn forbidden_until_refused<F, Fut>(max: usize, mut request: F) -> (usize, Response)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Response>,
{
    for forbidden in 0..max {
        let response = request().await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            return (forbidden, response);
        }
        assert_error(response, StatusCode::FORBIDDEN, &["INVALID_CREDENTIALS"]).await;
    }
    panic!("no 429 after {max} invalid credentials");
}

/// Polls `request` until it is answered `want`, failing after
/// [`RECOVERY_DEADLINE`]; every other answer must be a proper 429.
pub async fn await_status<F, Fut>(want: StatusCode, mut request: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Response>,
{
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    loop {
        let response = request().await;
        if response.status() == want {
            return;
        }
        assert_too_many_requests(response).await;
        assert!(
            Instant::now() < deadline,
            "still limited after {RECOVERY_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
