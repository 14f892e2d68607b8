//! When and how often a failed call is sent again: [`RetryPolicy`], the numbers
//! of the loop in [`ApiClient::execute`](crate::ApiClient); what may be retried
//! at all is each operation error's `is_retryable()`
//! (docs/design.md#sdk-calls-and-retries).

use std::time::Duration;

/// How a call that failed with a retryable error is tried again.
///
/// - A 429 or 503 waits the delay the server asked for (`RateLimit-Reset`, else
///   `Retry-After`), plus a little jitter so that callers rate limited together
///   do not come back together.
/// - Other retryable failures (connection errors, timeouts, 500/502/504 — for
///   operations that are safe to replay) back off exponentially with *full
///   jitter*: before retry `n` (1, 2, …) the call sleeps a random time between
///   zero and `min(max_backoff, initial_backoff · 2^(n-1))`.
/// - At most [`max_attempts`](Self::max_attempts) requests are sent, and no
///   retry is started whose wait would end later than
///   [`max_elapsed`](Self::max_elapsed) after the first attempt began: the call
///   then fails with the last error. (A single attempt is bounded by the
///   request timeout, [`Configuration::with_timeout`](crate::Configuration::with_timeout).)
///
/// The default is 5 attempts within 30 s, backing off from 100 ms up to 5 s.
///
/// ```
/// use std::time::Duration;
/// use kinde_sdk::{Configuration, RetryPolicy};
///
/// let patient = RetryPolicy::default()
///     .with_max_attempts(10)
///     .with_max_elapsed(Duration::from_secs(120));
/// let configuration = Configuration::new("https://your-subdomain.kinde.com")
///     .with_retry_policy(patient);
/// assert_eq!(configuration.retry_policy().max_attempts(), 10);
///
/// // Every request sent once, errors returned as they come.
/// assert_eq!(RetryPolicy::none().max_attempts(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    max_elapsed: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// No retries: every call sends one request.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Sends at most `attempts` requests per call (the first one included; 0
    /// is taken as 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Starts no retry whose wait would end later than `elapsed` after the
    /// call's first attempt began.
    pub fn with_max_elapsed(mut self, elapsed: Duration) -> Self {
        self.max_elapsed = elapsed;
        self
    }

    /// The ceiling of the first backoff (doubled for each further retry).
    pub fn with_initial_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = backoff;
        self
    }

    /// The largest ceiling a backoff grows to.
    pub fn with_max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    /// Requests sent at most per call.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The time budget of a call's retries.
    pub fn max_elapsed(&self) -> Duration {
        self.max_elapsed
    }

    /// The ceiling of the first backoff.
    pub fn initial_backoff(&self) -> Duration {
        self.initial_backoff
    }

    /// The largest backoff ceiling.
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// The ceiling of the backoff before retry `retry` (1 for the first).
    pub(crate) fn ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }

    /// The wait before retry `retry` (1 for the first): full jitter, or the
    /// server's delay plus a little jitter.
    pub(crate) fn delay(&self, retry: u32, server_delay: Option<Duration>) -> Duration {
        match server_delay {
            Some(delay) => delay + jitter(self.initial_backoff.min(delay)),
            None => jitter(self.ceiling(retry)),
        }
    }
}

/// A uniformly random duration in `[0, ceiling]`.
pub(crate) fn jitter(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rand::random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let ceilings: Vec<_> = (1..=8).map(|retry| policy.ceiling(retry)).collect();
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000].map(Duration::from_millis)
        );
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(5));
        for retry in 1..=8 {
            for _ in 0..50 {
                assert!(policy.delay(retry, None) <= policy.ceiling(retry));
            }
        }
    }

    #[test]
    fn a_server_delay_is_waited_in_full() {
        let policy = RetryPolicy::default();
        for _ in 0..50 {
            let delay = policy.delay(1, Some(Duration::from_secs(2)));
            assert!(delay >= Duration::from_secs(2), "{delay:?}");
            assert!(delay <= Duration::from_millis(2100), "{delay:?}");
        }
        assert_eq!(policy.delay(3, Some(Duration::ZERO)), Duration::ZERO);
    }

    #[test]
    fn none_sends_once() {
        assert_eq!(RetryPolicy::none().max_attempts(), 1);
        assert_eq!(
            RetryPolicy::default().with_max_attempts(0).max_attempts(),
            1
        );
    }
}
