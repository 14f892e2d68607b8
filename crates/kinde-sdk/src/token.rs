//! Access tokens from client credentials: the [`TokenManager`] behind
//! [`Auth::ClientCredentials`](crate::Auth::ClientCredentials), and
//! [`TokenError`]. One token request per refresh however many tasks wait, a
//! failed fetch shared by its waiters, a rejected token replaced once
//! (docs/design.md#sdk-token-manager).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::Deserialize;

/// A token is refreshed this long before it expires…
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// …or, for tokens that live less than twice that, after half their lifetime.
const MIN_LIFETIME_FRACTION: u32 = 2;
/// The lifetime assumed when the token endpoint does not say (as the Python
/// SDK assumes).
const DEFAULT_EXPIRES_IN: u64 = 3600;

/// Why no access token could be obtained from client credentials.
///
/// It appears as the `Token` variant of every operation's error. Messages never
/// contain the client secret or a token.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token endpoint refused: `invalid_client` (unknown client, wrong
    /// secret, revoked), `invalid_request` (e.g. a wrong audience),
    /// `unauthorized_client`, … or a status like 429 or 503.
    #[error("the token endpoint answered {status}: {error}{}", .description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Rejected {
        /// The HTTP status.
        status: StatusCode,
        /// The OAuth2 `error` code, or the raw body if it was not OAuth2 JSON.
        error: String,
        /// The OAuth2 `error_description`, if any.
        description: Option<String>,
        /// The delay a 429 or 503 asked for (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// No complete answer from the token endpoint (connection failure, timeout).
    #[error("could not reach the token endpoint: {0}")]
    Transport(Arc<reqwest::Error>),
    /// The token endpoint answered success with something that is not a token.
    #[error("the token endpoint answered {status} with an unreadable body: {reason}")]
    Decode {
        /// The HTTP status.
        status: StatusCode,
        /// What was wrong.
        reason: String,
    },
}

impl TokenError {
    /// Whether asking again later may succeed: connection failures, timeouts,
    /// 408, 429 and 5xx. Refusals of the credentials themselves are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            TokenError::Rejected { status, .. } => {
                status.is_server_error() || matches!(status.as_u16(), 408 | 429)
            }
            TokenError::Transport(error) => !error.is_builder(),
            TokenError::Decode { .. } => false,
        }
    }

    /// The delay the token endpoint asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TokenError::Rejected { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The OAuth2 error code (`invalid_client`, …) of a refusal.
    pub fn oauth_error(&self) -> Option<&str> {
        match self {
            TokenError::Rejected { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A token as sent, with the number of the fetch that produced it.
#[derive(Clone)]
pub(crate) struct Bearer {
    /// `Bearer <token>`, marked sensitive.
    pub(crate) header: HeaderValue,
    generation: u64,
}

impl Bearer {
    /// A token the caller configured; never invalidated.
    pub(crate) fn fixed(header: HeaderValue) -> Self {
        Bearer {
            header,
            generation: 0,
        }
    }
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bearer(<redacted>, generation {})", self.generation)
    }
}

struct Cached {
    bearer: Bearer,
    refresh_at: Instant,
}

#[derive(Default)]
struct State {
    token: Option<Cached>,
    /// The last fetch's failure, with the number of that fetch.
    failure: Option<(u64, TokenError)>,
}

/// Fetches, caches and refreshes the token of one set of client credentials.
pub(crate) struct TokenManager {
    http: reqwest::Client,
    token_url: String,
    form: [(&'static str, String); 4],
    state: tokio::sync::Mutex<State>,
    /// Fetches started so far; a fetch's number is the value after it began.
    fetches: AtomicU64,
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenManager")
            .field("token_url", &self.token_url)
            .field("client_id", &self.form[1].1)
            .field("audience", &self.form[3].1)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl TokenManager {
    pub(crate) fn new(
        http: reqwest::Client,
        token_url: String,
        client_id: String,
        client_secret: String,
        audience: String,
    ) -> Self {
        TokenManager {
            http,
            token_url,
            form: [
                ("grant_type", "client_credentials".to_owned()),
                ("client_id", client_id),
                ("client_secret", client_secret),
                ("audience", audience),
            ],
            state: tokio::sync::Mutex::new(State::default()),
            fetches: AtomicU64::new(0),
        }
    }

    /// A valid token: the cached one, or one fetched now (by one request for
    /// all the tasks that ask at the same time).
    pub(crate) async fn bearer(&self) -> Result<Bearer, TokenError> {
        // Fetches that finish after this point are ones this call waited for.
        let seen = self.fetches.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        if let Some(cached) = &state.token
            && Instant::now() < cached.refresh_at
        {
            return Ok(cached.bearer.clone());
        }
        if let Some((fetch, error)) = &state.failure
            && *fetch > seen
        {
            return Err(error.clone());
        }
        let generation = self.fetches.fetch_add(1, Ordering::AcqRel) + 1;
        match self.fetch(generation).await {
            Ok(cached) => {
                let bearer = cached.bearer.clone();
                state.token = Some(cached);
                state.failure = None;
                Ok(bearer)
            }
            Err(error) => {
                state.token = None;
                state.failure = Some((generation, error.clone()));
                Err(error)
            }
        }
    }

    /// Forgets `bearer` if it is still the cached token (the API refused it);
    /// a newer token fetched meanwhile by another task is kept.
    pub(crate) async fn invalidate(&self, bearer: &Bearer) {
        let mut state = self.state.lock().await;
        if state
            .token
            .as_ref()
            .is_some_and(|cached| cached.bearer.generation == bearer.generation)
        {
            state.token = None;
        }
    }

    async fn fetch(&self, generation: u64) -> Result<Cached, TokenError> {
        let sent_at = Instant::now();
        let response = self
            .http
            .post(&self.token_url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .form(&self.form)
            .send()
            .await
            .map_err(|error| TokenError::Transport(Arc::new(error.without_url())))?;
        let status = response.status();
        let retry_after = crate::error::retry_after(response.headers(), jiff::Timestamp::now());
        let body = response
            .text()
            .await
            .map_err(|error| TokenError::Transport(Arc::new(error.without_url())))?;
        if !status.is_success() {
            let (error, description) = match serde_json::from_str::<OAuthError>(&body) {
                Ok(parsed) => (parsed.error, parsed.error_description),
                Err(_) => (brief(&body, status), None),
            };
            return Err(TokenError::Rejected {
                status,
                error,
                description,
                retry_after,
            });
        }
        let decode = |reason: String| TokenError::Decode { status, reason };
        let token: TokenBody = serde_json::from_str(&body)
            .map_err(|error| decode(format!("not a token response: {error}")))?;
        if let Some(kind) = &token.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(decode(format!("token_type {kind:?} is not Bearer")));
        }
        let mut header = HeaderValue::from_str(&format!("Bearer {}", token.access_token))
            .map_err(|_| decode("the access token cannot be sent in a header".to_owned()))?;
        header.set_sensitive(true);
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(DEFAULT_EXPIRES_IN));
        Ok(Cached {
            bearer: Bearer { header, generation },
            refresh_at: sent_at + lifetime - refresh_margin(lifetime),
        })
    }
}

/// How long before expiry a token of `lifetime` is replaced: 60 s, or half the
/// lifetime of a token that lives less than two minutes.
fn refresh_margin(lifetime: Duration) -> Duration {
    REFRESH_MARGIN.min(lifetime / MIN_LIFETIME_FRACTION)
}

/// A non-JSON error body, shortened, or the status's reason.
fn brief(body: &str, status: StatusCode) -> String {
    let body = body.trim();
    if body.is_empty() {
        return status.canonical_reason().unwrap_or("error").to_owned();
    }
    match body.char_indices().nth(200) {
        Some((end, _)) => format!("{}…", &body[..end]),
        None => body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_refreshed_a_minute_early_or_at_half_life() {
        assert_eq!(
            refresh_margin(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(120)),
            Duration::from_secs(60)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(4)),
            Duration::from_secs(2)
        );
        assert_eq!(refresh_margin(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn which_token_errors_are_retryable() {
        let rejected = |status: u16| TokenError::Rejected {
            status: StatusCode::from_u16(status).unwrap(),
            error: "x".into(),
            description: None,
            retry_after: None,
        };
        assert!(!rejected(401).is_retryable());
        assert!(!rejected(400).is_retryable());
        assert!(rejected(429).is_retryable());
        assert!(rejected(503).is_retryable());
        assert!(rejected(500).is_retryable());
        let decode = TokenError::Decode {
            status: StatusCode::OK,
            reason: "x".into(),
        };
        assert!(!decode.is_retryable());
        assert_eq!(rejected(401).oauth_error(), Some("x"));
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let manager = TokenManager::new(
            reqwest::Client::new(),
            "https://acme.kinde.com/oauth2/token".into(),
            "client".into(),
            "the-secret".into(),
            "https://acme.kinde.com/api".into(),
        );
        let debug = format!("{manager:?}");
        assert!(!debug.contains("the-secret"), "{debug}");
        assert!(debug.contains("client"), "{debug}");
    }
}
