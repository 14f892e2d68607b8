//! External issuer mode (`docs/tokens.md`): the keys of a real Kinde business, fetched from
//! `<issuer>/.well-known/jwks`, cached, and refetched when a token names a `kid`
//! we do not know — at most once per interval (30 s by default), so a flood of
//! tokens with made-up `kid`s costs the issuer one request per interval, not one
//! per token. Key rotation therefore needs no restart.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::Mutex;

use super::verify::{KeySet, parse_jwks};

/// The default least time between two fetches.
pub const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// Whether an external issuer URL is acceptable: `https://`, or `http://` on a
/// loopback address (for tests), with a host and no query or fragment.
pub fn check_issuer_url(issuer: &str) -> Result<(), String> {
    let rest = if let Some(rest) = issuer.strip_prefix("https://") {
        rest
    } else if let Some(rest) = issuer.strip_prefix("http://") {
        let host = rest.split(['/', ':']).next().unwrap_or("");
        let loopback = host == "localhost"
            || host == "[::1]"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback && !rest.starts_with("[::1]") {
            return Err(format!(
                "--issuer {issuer}: an http:// issuer is accepted only on a loopback address; use https://"
            ));
        }
        rest
    } else {
        return Err(format!("--issuer {issuer}: must start with https://"));
    };
    if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#']) {
        return Err(format!("--issuer {issuer}: not a usable issuer URL"));
    }
    Ok(())
}

/// The JWKS of an external issuer, kept in a [`KeySet`] the verifier reads.
#[derive(Debug)]
pub struct RemoteJwks {
    url: String,
    http: reqwest::Client,
    keys: Arc<KeySet>,
    min_interval: Duration,
    /// When the last fetch was started; the lock also makes concurrent refreshes
    /// wait for one fetch instead of each starting their own.
    last_fetch: Mutex<Option<Instant>>,
}

impl RemoteJwks {
    /// A source for `issuer` (without trailing slash) filling `keys`.
    pub fn new(
        issuer: &str,
        keys: Arc<KeySet>,
        min_interval: Duration,
    ) -> Result<RemoteJwks, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(3))
            .user_agent(concat!("kinde-meter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the JWKS client: {e}"))?;
        Ok(RemoteJwks {
            url: format!("{}/.well-known/jwks", issuer.trim_end_matches('/')),
            http,
            keys,
            min_interval,
            last_fetch: Mutex::new(None),
        })
    }

    /// The JWKS URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fetches now, whatever the interval (used at start).
    pub async fn fetch(&self) -> Result<usize, String> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch_locked().await
    }

    /// Fetches if the last fetch is at least the interval old; returns whether a
    /// fetch happened and succeeded (so a caller knows a retry may now pass).
    pub async fn refresh_if_due(&self) -> bool {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.min_interval) {
            return false;
        }
        *last = Some(Instant::now());
        match self.fetch_locked().await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "cannot refresh the issuer's JWKS");
                false
            }
        }
    }

    async fn fetch_locked(&self) -> Result<usize, String> {
        let response = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| format!("GET {}: {e}", self.url))?;
        if !response.status().is_success() {
            return Err(format!("GET {}: status {}", self.url, response.status()));
        }
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| format!("GET {}: not JSON: {e}", self.url))?;
        let keys = parse_jwks(&body).map_err(|e| format!("GET {}: {e}", self.url))?;
        let kept = self.keys.replace(keys);
        tracing::info!(url = %self.url, keys = kept, "loaded the issuer's signing keys");
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::check_issuer_url;

    #[test]
    fn issuers_must_be_https_or_loopback() {
        assert!(check_issuer_url("https://acme.kinde.com").is_ok());
        assert!(check_issuer_url("http://127.0.0.1:9000").is_ok());
        assert!(check_issuer_url("http://localhost:9000").is_ok());
        assert!(check_issuer_url("http://[::1]:9000").is_ok());
        assert!(check_issuer_url("http://acme.kinde.com").is_err());
        assert!(check_issuer_url("http://10.0.0.1").is_err());
        assert!(check_issuer_url("ftp://acme.kinde.com").is_err());
        assert!(check_issuer_url("https://").is_err());
    }
}
