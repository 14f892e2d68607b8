//! Where the API lives and how to authenticate: [`Configuration`] and [`Auth`].
//!
//! A configuration is plain data. It is checked (the host parsed, the HTTP client
//! built) once, when an [`ApiClient`](crate::ApiClient) is made from it.

use std::fmt;
use std::time::Duration;

/// How requests are authenticated.
///
/// Today the SDK sends a bearer token you obtained yourself. The enum is
/// `#[non_exhaustive]` so that an OAuth2 client-credentials variant (the SDK
/// fetching and refreshing tokens from `/oauth2/token` itself) can be added
/// without breaking callers.
///
/// `Debug` never prints a token.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Auth {
    /// Send no `Authorization` header. Every route of the billing API answers
    /// 403 without one; this is for talking to public routes and for tests.
    #[default]
    None,
    /// Send `Authorization: Bearer <token>` with every request. For Kinde this is
    /// an M2M access token with the scopes the calls need (`create:meter_usage`,
    /// `read:billing_agreements`, …).
    AccessToken(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::AccessToken(_) => f.write_str("AccessToken(<redacted>)"),
        }
    }
}

/// Settings of an [`ApiClient`](crate::ApiClient): the host, credentials and
/// timeouts.
///
/// The counterpart of the Python SDK's
/// `Configuration(host="https://your-subdomain.kinde.com", access_token="...")`:
///
/// ```
/// use std::time::Duration;
/// use kinde_sdk::Configuration;
///
/// let configuration = Configuration::new("https://your-subdomain.kinde.com")
///     .with_access_token("eyJhbGciOi...")
///     .with_timeout(Duration::from_secs(10));
/// assert_eq!(configuration.host(), "https://your-subdomain.kinde.com");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Configuration {
    host: String,
    auth: Auth,
    timeout: Duration,
    connect_timeout: Duration,
}

/// A [`Configuration`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigurationError {
    /// Neither `KINDE_HOST` nor `KINDE_DOMAIN` is set (from
    /// [`Configuration::from_env`]).
    #[error("KINDE_HOST (or KINDE_DOMAIN) is not set")]
    MissingHost,
    /// The host is not an `http` or `https` URL without query or fragment.
    #[error("invalid host {host:?}: {reason}")]
    InvalidHost {
        /// The host as configured.
        host: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The access token cannot be sent in an HTTP header (it contains control
    /// characters, e.g. a trailing newline read from a file).
    #[error("the access token contains characters that cannot be sent in an HTTP header")]
    InvalidAccessToken,
    /// The HTTP client could not be built (e.g. the TLS backend failed to
    /// initialise).
    #[error("could not build the HTTP client: {0}")]
    HttpClient(String),
}

impl Configuration {
    /// How long a whole request may take, from connecting to reading the last
    /// byte of the response, unless [`with_timeout`](Self::with_timeout) says
    /// otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// How long establishing a connection (TCP and TLS) may take, unless
    /// [`with_connect_timeout`](Self::with_connect_timeout) says otherwise.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    /// A configuration for the API at `host`, e.g.
    /// `https://your-subdomain.kinde.com` or `http://127.0.0.1:8080` for a local
    /// kinde-meter server, with no credentials and default timeouts.
    ///
    /// A host without a scheme (`your-subdomain.kinde.com`) is taken as `https://`;
    /// a trailing `/` is dropped. A path is kept as a prefix of every route
    /// (`https://gateway.example.com/kinde` calls
    /// `https://gateway.example.com/kinde/api/v1/…`). The URL is checked by
    /// [`ApiClient::new`](crate::ApiClient::new).
    pub fn new(host: impl Into<String>) -> Self {
        Configuration {
            host: normalize_host(host.into()),
            auth: Auth::None,
            timeout: Self::DEFAULT_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// A configuration from the environment: the host from `KINDE_HOST`, or else
    /// `KINDE_DOMAIN`; a bearer token from `KINDE_ACCESS_TOKEN` if it is set and
    /// not empty. Surrounding whitespace is trimmed from each.
    ///
    /// # Errors
    ///
    /// [`ConfigurationError::MissingHost`] when neither host variable is set.
    pub fn from_env() -> Result<Self, ConfigurationError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) with the variables read through `lookup`, so it
    /// can be tested without touching the process environment.
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigurationError> {
        let var = |name: &str| {
            lookup(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let host = var("KINDE_HOST")
            .or_else(|| var("KINDE_DOMAIN"))
            .ok_or(ConfigurationError::MissingHost)?;
        let configuration = Configuration::new(host);
        Ok(match var("KINDE_ACCESS_TOKEN") {
            Some(token) => configuration.with_access_token(token),
            None => configuration,
        })
    }

    /// Authenticates with `Authorization: Bearer <token>`.
    pub fn with_access_token(self, token: impl Into<String>) -> Self {
        self.with_auth(Auth::AccessToken(token.into()))
    }

    /// Authenticates as `auth` says.
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Limits a whole request, from connecting to reading the response body
    /// (default [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT)). A request that runs
    /// out of time fails with a `Transport` error whose
    /// [`reqwest::Error::is_timeout`] is true.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Limits establishing a connection (default
    /// [`DEFAULT_CONNECT_TIMEOUT`](Self::DEFAULT_CONNECT_TIMEOUT)).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The base URL every route is appended to, without a trailing `/`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// How requests are authenticated.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The limit on a whole request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The limit on establishing a connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
}

fn normalize_host(host: String) -> String {
    let host = host.trim();
    let (scheme, rest) = host.split_once("://").unwrap_or(("https", host));
    format!("{scheme}://{}", rest.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn host_is_normalized() {
        assert_eq!(
            Configuration::new("https://acme.kinde.com/").host(),
            "https://acme.kinde.com"
        );
        assert_eq!(
            Configuration::new("acme.kinde.com").host(),
            "https://acme.kinde.com"
        );
        assert_eq!(
            Configuration::new(" http://127.0.0.1:8080 ").host(),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn defaults() {
        let configuration = Configuration::new("https://acme.kinde.com");
        assert_eq!(configuration.auth(), &Auth::None);
        assert_eq!(configuration.timeout(), Configuration::DEFAULT_TIMEOUT);
        assert_eq!(
            configuration.connect_timeout(),
            Configuration::DEFAULT_CONNECT_TIMEOUT
        );
    }

    #[test]
    fn from_env_prefers_kinde_host() {
        let configuration = Configuration::from_lookup(env(&[
            ("KINDE_DOMAIN", "other.kinde.com"),
            ("KINDE_HOST", "https://acme.kinde.com"),
            ("KINDE_ACCESS_TOKEN", "tok\n"),
        ]))
        .unwrap();
        assert_eq!(configuration.host(), "https://acme.kinde.com");
        assert_eq!(configuration.auth(), &Auth::AccessToken("tok".to_owned()));
    }

    #[test]
    fn from_env_falls_back_to_kinde_domain_without_token() {
        let configuration = Configuration::from_lookup(env(&[
            ("KINDE_DOMAIN", "acme.kinde.com"),
            ("KINDE_ACCESS_TOKEN", ""),
        ]))
        .unwrap();
        assert_eq!(configuration.host(), "https://acme.kinde.com");
        assert_eq!(configuration.auth(), &Auth::None);
    }

    #[test]
    fn from_env_without_host_fails() {
        assert_eq!(
            Configuration::from_lookup(env(&[("KINDE_ACCESS_TOKEN", "tok")])),
            Err(ConfigurationError::MissingHost)
        );
    }

    #[test]
    fn debug_never_prints_the_token() {
        let configuration =
            Configuration::new("https://acme.kinde.com").with_access_token("secret-token");
        let debug = format!("{configuration:?}");
        assert!(!debug.contains("secret-token"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }
}
