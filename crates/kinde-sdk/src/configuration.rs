//! Where the API lives and how to authenticate: [`Configuration`] and [`Auth`],
//! plain data checked once, when an [`ApiClient`](crate::ApiClient) is made from it.

use std::fmt;
use std::time::Duration;

use crate::retry::RetryPolicy;

/// How requests are authenticated.
///
/// Either a bearer token you obtained yourself ([`Auth::AccessToken`]), or an
/// M2M application's client id and secret ([`Auth::ClientCredentials`]), with
/// which the SDK fetches, caches and refreshes tokens itself, as the official
/// management clients do (see [the crate documentation](crate#tokens)).
///
/// `Debug` never prints a token or a secret.
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
    /// OAuth2 client credentials of an M2M application: the SDK posts
    /// `grant_type=client_credentials` with them to `{host}/oauth2/token` and
    /// sends the token it gets, cached until shortly before it expires.
    /// [`Auth::client_credentials`] builds one with the default audience.
    ClientCredentials {
        /// The M2M application's client id.
        client_id: String,
        /// The M2M application's client secret.
        client_secret: String,
        /// The `audience` to ask for; `None` means `{host}/api`, the audience
        /// of Kinde's management API (and of a kinde-meter server whose
        /// public URL is `host`).
        audience: Option<String>,
    },
}

impl Auth {
    /// [`Auth::ClientCredentials`] with the default audience, `{host}/api`.
    pub fn client_credentials(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        Auth::ClientCredentials {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            audience: None,
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::AccessToken(_) => f.write_str("AccessToken(<redacted>)"),
            Auth::ClientCredentials {
                client_id,
                audience,
                ..
            } => f
                .debug_struct("ClientCredentials")
                .field("client_id", client_id)
                .field("client_secret", &"<redacted>")
                .field("audience", audience)
                .finish(),
        }
    }
}

/// Settings of an [`ApiClient`](crate::ApiClient): the host, credentials,
/// timeouts and retry policy.
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
    retry_policy: RetryPolicy,
}

/// A [`Configuration`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigurationError {
    /// Neither `KINDE_HOST` nor `KINDE_DOMAIN` is set (from
    /// [`Configuration::from_env`]).
    #[error("KINDE_HOST (or KINDE_DOMAIN) is not set")]
    MissingHost,
    /// A client id is set without its secret, or a secret without its id (from
    /// [`Configuration::from_env`]; the variable named is the one missing).
    #[error("{0} is not set (a client id and its secret go together)")]
    MissingCredential(&'static str),
    /// [`Auth::ClientCredentials`] with an empty client id or secret.
    #[error("client credentials need a non-empty client id and secret")]
    InvalidClientCredentials,
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
    /// otherwise. Shorter than the default retry budget
    /// ([`RetryPolicy::default`], 30 s), so that a request that timed out can
    /// still be retried.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// How long establishing a connection (TCP and TLS) may take, unless
    /// [`with_connect_timeout`](Self::with_connect_timeout) says otherwise.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    /// A configuration for the API at `host`, e.g.
    /// `https://your-subdomain.kinde.com` or `http://127.0.0.1:8080` for a local
    /// kinde-meter server, with no credentials, default timeouts and the default
    /// [`RetryPolicy`].
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
            retry_policy: RetryPolicy::default(),
        }
    }

    /// A configuration from the environment, with the variable names the
    /// official SDKs read:
    ///
    /// | what | variables, first set wins |
    /// |---|---|
    /// | host | `KINDE_HOST` (Python SDK), `KINDE_DOMAIN` (`@kinde/management-api-js`) |
    /// | bearer token | `KINDE_ACCESS_TOKEN` |
    /// | client credentials | `KINDE_MANAGEMENT_CLIENT_ID` + `KINDE_MANAGEMENT_CLIENT_SECRET` (`@kinde/management-api-js`, the Python SDK's management examples), else `KINDE_CLIENT_ID` + `KINDE_CLIENT_SECRET` (Python SDK) |
    ///
    /// A token, when set, is used as is; otherwise client credentials become
    /// [`Auth::ClientCredentials`] with the default audience `{host}/api`
    /// (`KINDE_AUDIENCE` is deliberately not read: the Python SDK uses it for
    /// *user* tokens, and the management API needs `{host}/api`). Empty
    /// variables count as unset; surrounding whitespace is trimmed.
    ///
    /// # Errors
    ///
    /// [`ConfigurationError::MissingHost`] when neither host variable is set;
    /// [`ConfigurationError::MissingCredential`] for a client id without its
    /// secret or the reverse.
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
        if let Some(token) = var("KINDE_ACCESS_TOKEN") {
            return Ok(configuration.with_access_token(token));
        }
        for (id_var, secret_var) in [
            (
                "KINDE_MANAGEMENT_CLIENT_ID",
                "KINDE_MANAGEMENT_CLIENT_SECRET",
            ),
            ("KINDE_CLIENT_ID", "KINDE_CLIENT_SECRET"),
        ] {
            match (var(id_var), var(secret_var)) {
                (Some(id), Some(secret)) => {
                    return Ok(configuration.with_client_credentials(id, secret));
                }
                (Some(_), None) => return Err(ConfigurationError::MissingCredential(secret_var)),
                (None, Some(_)) => return Err(ConfigurationError::MissingCredential(id_var)),
                (None, None) => {}
            }
        }
        Ok(configuration)
    }

    /// Authenticates with `Authorization: Bearer <token>`.
    pub fn with_access_token(self, token: impl Into<String>) -> Self {
        self.with_auth(Auth::AccessToken(token.into()))
    }

    /// Authenticates with an M2M application's client credentials: the SDK gets
    /// tokens from `{host}/oauth2/token` for the audience `{host}/api` and
    /// refreshes them itself. Use [`with_auth`](Self::with_auth) and
    /// [`Auth::ClientCredentials`] for another audience.
    pub fn with_client_credentials(
        self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        self.with_auth(Auth::client_credentials(client_id, client_secret))
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

    /// How failed calls are retried (default [`RetryPolicy::default`];
    /// [`RetryPolicy::none`] sends every request once).
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = policy;
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

    /// How failed calls are retried.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry_policy
    }

    /// Where client credentials are exchanged for tokens: `{host}/oauth2/token`.
    pub fn token_url(&self) -> String {
        format!("{}/oauth2/token", self.host)
    }

    /// The audience tokens are requested for: the one of
    /// [`Auth::ClientCredentials`] if set, else `{host}/api`.
    pub fn token_audience(&self) -> String {
        match &self.auth {
            Auth::ClientCredentials {
                audience: Some(audience),
                ..
            } => audience.clone(),
            _ => format!("{}/api", self.host),
        }
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
    fn from_env_reads_client_credentials_with_the_official_names() {
        let management = Configuration::from_lookup(env(&[
            ("KINDE_DOMAIN", "https://acme.kinde.com"),
            ("KINDE_MANAGEMENT_CLIENT_ID", "m2m"),
            ("KINDE_MANAGEMENT_CLIENT_SECRET", "s3cret"),
            ("KINDE_CLIENT_ID", "frontend"),
            ("KINDE_CLIENT_SECRET", "other"),
        ]))
        .unwrap();
        assert_eq!(
            management.auth(),
            &Auth::client_credentials("m2m", "s3cret")
        );
        assert_eq!(
            management.token_url(),
            "https://acme.kinde.com/oauth2/token"
        );
        assert_eq!(management.token_audience(), "https://acme.kinde.com/api");

        let python = Configuration::from_lookup(env(&[
            ("KINDE_HOST", "acme.kinde.com"),
            ("KINDE_CLIENT_ID", "id"),
            ("KINDE_CLIENT_SECRET", "secret"),
        ]))
        .unwrap();
        assert_eq!(python.auth(), &Auth::client_credentials("id", "secret"));

        let token_wins = Configuration::from_lookup(env(&[
            ("KINDE_HOST", "acme.kinde.com"),
            ("KINDE_ACCESS_TOKEN", "tok"),
            ("KINDE_CLIENT_ID", "id"),
            ("KINDE_CLIENT_SECRET", "secret"),
        ]))
        .unwrap();
        assert_eq!(token_wins.auth(), &Auth::AccessToken("tok".to_owned()));

        assert_eq!(
            Configuration::from_lookup(env(&[
                ("KINDE_HOST", "acme.kinde.com"),
                ("KINDE_MANAGEMENT_CLIENT_ID", "id"),
            ])),
            Err(ConfigurationError::MissingCredential(
                "KINDE_MANAGEMENT_CLIENT_SECRET"
            ))
        );
    }

    #[test]
    fn an_explicit_audience_wins() {
        let configuration =
            Configuration::new("http://127.0.0.1:9000").with_auth(Auth::ClientCredentials {
                client_id: "id".into(),
                client_secret: "secret".into(),
                audience: Some("http://meter.internal/api".into()),
            });
        assert_eq!(configuration.token_audience(), "http://meter.internal/api");
        assert_eq!(
            configuration.token_url(),
            "http://127.0.0.1:9000/oauth2/token"
        );
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

        let credentials = Configuration::new("https://acme.kinde.com")
            .with_client_credentials("visible-id", "client-secret-value");
        let debug = format!("{credentials:?}");
        assert!(!debug.contains("client-secret-value"), "{debug}");
        assert!(debug.contains("visible-id"), "{debug}");
    }
}
