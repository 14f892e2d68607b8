//! The HTTP side: [`ApiClient`] holds one connection pool per configuration and
//! turns an operation's [`Call`] into a typed result; every request, and every
//! retry of it unchanged, goes through [`ApiClient::execute`]
//! (docs/design.md#sdk-calls-and-retries).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::configuration::{Auth, Configuration, ConfigurationError};
use crate::error::{InvalidInput, OperationError, RawResponse};
use crate::idempotency::IdempotencyKey;
use crate::token::{Bearer, TokenManager};

/// The `User-Agent` of every request: `kinde-sdk-rust/<version>`.
pub const USER_AGENT: &str = concat!("kinde-sdk-rust/", env!("CARGO_PKG_VERSION"));

/// The value of the `Kinde-SDK` header of every request, `Rust/<version>`, as the
/// official SDKs send `Kinde-SDK: Python/<version>` and so on.
pub const KINDE_SDK_HEADER_VALUE: &str = concat!("Rust/", env!("CARGO_PKG_VERSION"));

/// How long an idle pooled connection is kept for reuse.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A client for the API described by a [`Configuration`]: one pooled HTTP
/// client (HTTP/1.1 or HTTP/2 over rustls) with the configured timeouts, the
/// token cache of its client credentials, and its retry policy.
///
/// Cloning is cheap and shares the connection pool and the token cache; make
/// one per host and credentials and hand clones to the API structs
/// ([`BillingMeterUsageApi`](crate::BillingMeterUsageApi),
/// [`BillingAgreementsApi`](crate::BillingAgreementsApi)).
///
/// ```
/// use kinde_sdk::{ApiClient, BillingMeterUsageApi, Configuration};
///
/// let configuration =
///     Configuration::new("https://your-subdomain.kinde.com").with_access_token("eyJhbGciOi...");
/// let api_client = ApiClient::new(configuration)?;
/// let api = BillingMeterUsageApi::new(api_client.clone());
/// # Ok::<(), kinde_sdk::ConfigurationError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ApiClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    configuration: Configuration,
    /// The host, parsed once: each request's URL is this with the call's path,
    /// so a call does not parse the scheme and host (IDNA included) again.
    base_url: Url,
    authorization: Authorization,
}

/// The name of the `Idempotency-Key` header, made once.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Where the `Authorization` header comes from.
#[derive(Debug)]
enum Authorization {
    None,
    /// `Bearer <token>`, marked sensitive so it never shows in `Debug`.
    Static(HeaderValue),
    /// Fetched from client credentials, cached, refreshed.
    Managed(Box<TokenManager>),
}

impl ApiClient {
    /// Checks `configuration` and builds the HTTP client.
    ///
    /// # Errors
    ///
    /// [`ConfigurationError::InvalidHost`] for a host that is not an `http` or
    /// `https` URL, [`ConfigurationError::InvalidAccessToken`] for a token that
    /// cannot be sent in a header,
    /// [`ConfigurationError::InvalidClientCredentials`] for an empty client id or
    /// secret, [`ConfigurationError::HttpClient`] if the TLS backend cannot be
    /// initialised.
    pub fn new(configuration: Configuration) -> Result<Self, ConfigurationError> {
        let base_url = check_host(configuration.host())?;
        let static_token = match configuration.auth() {
            Auth::AccessToken(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| ConfigurationError::InvalidAccessToken)?;
                value.set_sensitive(true);
                Some(value)
            }
            Auth::ClientCredentials {
                client_id,
                client_secret,
                ..
            } if client_id.is_empty() || client_secret.is_empty() => {
                return Err(ConfigurationError::InvalidClientCredentials);
            }
            _ => None,
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("kinde-sdk"),
            HeaderValue::from_static(KINDE_SDK_HEADER_VALUE),
        );
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .timeout(configuration.timeout())
            .connect_timeout(configuration.connect_timeout())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build()
            .map_err(|error| ConfigurationError::HttpClient(error.to_string()))?;
        let authorization = match (configuration.auth(), static_token) {
            (_, Some(header)) => Authorization::Static(header),
            (
                Auth::ClientCredentials {
                    client_id,
                    client_secret,
                    ..
                },
                None,
            ) => Authorization::Managed(Box::new(TokenManager::new(
                http.clone(),
                configuration.token_url(),
                client_id.clone(),
                client_secret.clone(),
                configuration.token_audience(),
            ))),
            _ => Authorization::None,
        };
        Ok(ApiClient {
            inner: Arc::new(Inner {
                http,
                configuration,
                base_url,
                authorization,
            }),
        })
    }

    /// The configuration this client was built from.
    pub fn configuration(&self) -> &Configuration {
        &self.inner.configuration
    }

    /// Sends `call` until it succeeds, fails for good or the
    /// [`RetryPolicy`](crate::RetryPolicy) is spent, and returns the last
    /// answer: a 2xx body decoded as `T`, or the operation's error `E`.
    ///
    /// Every attempt sends the same `Call` — the same body and the same
    /// idempotency key. A managed token the API refuses (401, 403) is
    /// invalidated and the call sent once more with a fresh token; that extra
    /// attempt is not counted against the policy.
    pub(crate) async fn execute<T, E>(&self, call: &Call<'_>) -> Result<T, E>
    where
        T: DeserializeOwned,
        E: OperationError,
    {
        self.execute_with(call, |status, body| match serde_json::from_str(&body) {
            Ok(value) => Ok(value),
            Err(source) => Err(E::decode(status, body, source)),
        })
        .await
    }

    /// [`execute`](Self::execute) for an operation whose 2xx body is text
    /// (the usage export's CSV or NDJSON), returned as it came.
    pub(crate) async fn execute_text<E>(&self, call: &Call<'_>) -> Result<String, E>
    where
        E: OperationError,
    {
        self.execute_with(call, |_, body| Ok(body)).await
    }

    /// [`execute`](Self::execute) with the decoding of a 2xx body.
    async fn execute_with<T, E>(
        &self,
        call: &Call<'_>,
        decode: impl Fn(reqwest::StatusCode, String) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: OperationError,
    {
        let policy = self.inner.configuration.retry_policy();
        let started = Instant::now();
        let mut attempt = 1;
        let mut token_renewed = false;
        loop {
            let (bearer, result) = match self.bearer().await {
                Ok(bearer) => {
                    let result = self.execute_once(call, bearer.as_ref(), &decode).await;
                    (bearer, result)
                }
                Err(error) => (None, Err(E::token(error))),
            };
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if let (Some(bearer), Authorization::Managed(manager)) =
                (&bearer, &self.inner.authorization)
                && error.token_refused()
                && !token_renewed
            {
                manager.invalidate(bearer).await;
                token_renewed = true;
                continue;
            }
            if !error.retryable() || attempt >= policy.max_attempts() {
                return Err(error);
            }
            let delay = policy.delay(attempt, error.server_delay());
            if started.elapsed() + delay > policy.max_elapsed() {
                return Err(error);
            }
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// The token to send: the static one, a managed one, or none.
    async fn bearer(&self) -> Result<Option<Bearer>, crate::token::TokenError> {
        match &self.inner.authorization {
            Authorization::None => Ok(None),
            Authorization::Static(header) => Ok(Some(Bearer::fixed(header.clone()))),
            Authorization::Managed(manager) => manager.bearer().await.map(Some),
        }
    }

    /// Sends `call` once.
    async fn execute_once<T, E>(
        &self,
        call: &Call<'_>,
        bearer: Option<&Bearer>,
        decode: &impl Fn(reqwest::StatusCode, String) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: OperationError,
    {
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), self.url(&call.path));
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        if let Some(bearer) = bearer {
            request = request.header(AUTHORIZATION, bearer.header.clone());
        }
        if let Some(key) = call.idempotency_key {
            request = request.header(IDEMPOTENCY_KEY, key.as_str());
        }
        if let Some(body) = &call.body {
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body.clone());
        }

        let response = request.send().await.map_err(E::transport)?;
        let status = response.status();
        if status.is_success() {
            let body = response.text().await.map_err(E::transport)?;
            return decode(status, body);
        }
        // Only an error keeps the headers (`Retry-After`, the request id).
        let headers = response.headers().clone();
        let body = response.text().await.map_err(E::transport)?;
        Err(E::from_response(RawResponse {
            status,
            headers,
            body,
        }))
    }

    /// The URL of `path` (which starts with `/`) under the configured host,
    /// keeping the host's own path as a prefix (`https://gateway.example.com/kinde`
    /// gives `https://gateway.example.com/kinde/api/v1/…`).
    fn url(&self, path: &str) -> Url {
        let mut url = self.inner.base_url.clone();
        let prefix = url.path().trim_end_matches('/');
        if prefix.is_empty() {
            url.set_path(path);
        } else {
            let joined = format!("{prefix}{path}");
            url.set_path(&joined);
        }
        url
    }
}

/// One request of an operation, ready to be sent (and sent again).
pub(crate) struct Call<'a> {
    method: Method,
    path: Cow<'static, str>,
    query: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    idempotency_key: Option<&'a IdempotencyKey>,
}

impl<'a> Call<'a> {
    /// A `GET` of `path` (which starts with `/`).
    pub(crate) fn get(path: impl Into<Cow<'static, str>>) -> Self {
        Call {
            method: Method::GET,
            path: path.into(),
            query: Vec::new(),
            body: None,
            idempotency_key: None,
        }
    }

    /// A `POST` of `body` as JSON to `path`.
    pub(crate) fn post_json(
        path: impl Into<Cow<'static, str>>,
        body: &impl Serialize,
    ) -> Result<Self, InvalidInput> {
        Self::with_json(Method::POST, path.into(), body)
    }

    /// A `PATCH` of `body` as JSON to `path`.
    pub(crate) fn patch_json(
        path: impl Into<Cow<'static, str>>,
        body: &impl Serialize,
    ) -> Result<Self, InvalidInput> {
        Self::with_json(Method::PATCH, path.into(), body)
    }

    /// A `DELETE` of `path`.
    pub(crate) fn delete(path: impl Into<Cow<'static, str>>) -> Self {
        Call {
            method: Method::DELETE,
            ..Self::get(path)
        }
    }

    fn with_json(
        method: Method,
        path: Cow<'static, str>,
        body: &impl Serialize,
    ) -> Result<Self, InvalidInput> {
        let body = serde_json::to_vec(body)
            .map_err(|error| InvalidInput(format!("the body cannot be serialized: {error}")))?;
        Ok(Call {
            method,
            path,
            query: Vec::new(),
            body: Some(body),
            idempotency_key: None,
        })
    }

    /// Adds `name=value` to the query string if `value` is present.
    pub(crate) fn query(mut self, name: &'static str, value: Option<impl ToString>) -> Self {
        if let Some(value) = value {
            self.query.push((name, value.to_string()));
        }
        self
    }

    /// Sends `key` as the `Idempotency-Key` header.
    pub(crate) fn idempotency_key(mut self, key: &'a IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }
}

/// Parses the configured host, refusing what cannot be the base of every route.
fn check_host(host: &str) -> Result<Url, ConfigurationError> {
    let invalid = |reason: &str| ConfigurationError::InvalidHost {
        host: host.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(host).map_err(|error| invalid(&error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("there is no host name"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a host cannot have a query or fragment"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_checked() {
        for good in [
            "https://acme.kinde.com",
            "http://127.0.0.1:8080",
            "https://gateway.example.com/kinde",
        ] {
            assert!(ApiClient::new(Configuration::new(good)).is_ok(), "{good}");
        }
        for bad in [
            "ftp://acme.kinde.com",
            "https://",
            "https://acme.kinde.com?x=1",
        ] {
            assert!(
                matches!(
                    ApiClient::new(Configuration::new(bad)),
                    Err(ConfigurationError::InvalidHost { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn urls_join_the_host_and_its_path_prefix_with_the_route() {
        let url = |host: &str, path: &str| {
            ApiClient::new(Configuration::new(host))
                .unwrap()
                .url(path)
                .to_string()
        };
        assert_eq!(
            url("http://127.0.0.1:8080", "/api/v1/billing/meter_usage"),
            "http://127.0.0.1:8080/api/v1/billing/meter_usage"
        );
        assert_eq!(
            url(
                "https://gateway.example.com/kinde/",
                "/api/v1/webhooks/a%2Fb"
            ),
            "https://gateway.example.com/kinde/api/v1/webhooks/a%2Fb"
        );
        assert_eq!(
            url("acme.kinde.com", "/api/v1/events/x?y"),
            "https://acme.kinde.com/api/v1/events/x%3Fy"
        );
    }

    #[test]
    fn tokens_must_fit_in_a_header() {
        let configuration = Configuration::new("https://acme.kinde.com").with_access_token("a\nb");
        assert_eq!(
            ApiClient::new(configuration).unwrap_err(),
            ConfigurationError::InvalidAccessToken
        );
    }

    #[test]
    fn debug_never_prints_the_token() {
        let client = ApiClient::new(
            Configuration::new("https://acme.kinde.com").with_access_token("secret-token"),
        )
        .unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains("secret-token"), "{debug}");
    }

    #[test]
    fn version_headers() {
        assert_eq!(
            USER_AGENT,
            format!("kinde-sdk-rust/{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            KINDE_SDK_HEADER_VALUE,
            format!("Rust/{}", env!("CARGO_PKG_VERSION"))
        );
    }
}
