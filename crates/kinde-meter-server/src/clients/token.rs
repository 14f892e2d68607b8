//! The client-credentials grant without HTTP: who may have a token, with which
//! scopes, and minting it. `routes::oauth` turns requests and errors into RFC 6749
//! wire form.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kinde_meter_store::{Store, StoreError};

use super::{revocation::RevokedClients, secret::SecretChecker};
use crate::auth::{IssuerIdentity, MintError, MintRequest, SigningKey, mint_token};

/// Lifetime of tokens from `/oauth2/token` unless configured (`--token-lifetime`).
pub const DEFAULT_TOKEN_LIFETIME: SignedDuration = SignedDuration::from_hours(1);

/// A client-credentials token request, its parameters already read.
#[derive(Clone)]
pub struct CredentialsRequest {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: String,
    /// `audience`.
    pub audience: String,
    /// `scope`: space-separated; `None` (or empty) asks for all the client's scopes.
    pub scope: Option<String>,
}

impl std::fmt::Debug for CredentialsRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsRequest")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("audience", &self.audience)
            .field("scope", &self.scope)
            .finish()
    }
}

/// A minted token.
#[derive(Clone)]
pub struct IssuedToken {
    /// The JWT.
    pub access_token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// The scopes granted.
    pub scopes: Vec<String>,
}

/// Why no token was issued; each maps to one RFC 6749 error.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// Unknown client, wrong secret or revoked client (`invalid_client`, 401);
    /// deliberately one variant, so the answer does not tell which.
    #[error("client authentication failed")]
    InvalidClient,
    /// `audience` is not this server's API (`invalid_request`).
    #[error("the audience must be {expected}")]
    WrongAudience {
        /// The audience this server issues for.
        expected: String,
    },
    /// A requested scope is not granted to the client (`invalid_scope`).
    #[error("the scope {0} is not granted to this client")]
    ScopeNotGranted(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signing failed.
    #[error(transparent)]
    Mint(#[from] MintError),
}

/// Issues tokens of the built-in issuer to registered clients.
pub struct TokenIssuer {
    key: Arc<SigningKey>,
    issuer: String,
    audience: String,
    lifetime: SignedDuration,
    checker: SecretChecker,
}

impl TokenIssuer {
    /// An issuer signing with `key` for `identity`, tokens valid `lifetime`.
    pub fn new(
        key: Arc<SigningKey>,
        identity: &IssuerIdentity,
        lifetime: SignedDuration,
    ) -> TokenIssuer {
        let checker = SecretChecker::per_core();
        checker.prepare();
        TokenIssuer {
            key,
            issuer: identity.issuer(),
            audience: identity.audience(),
            lifetime,
            checker,
        }
    }

    /// Secret checks run so far, a request naming no usable client included.
    pub fn secret_checks(&self) -> u64 {
        self.checker.checks()
    }

    /// The only `audience` tokens are issued for: `<public URL>/api`.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Runs the grant: audience, then the client's standing and secret, then the
    /// scopes, then mints. The audience is checked first because it is cheap and
    /// public; the scopes after authentication, so that they tell a stranger
    /// nothing about a client. A client in `revoked` is refused even before the
    /// store says so (a revocation this server learned of first).
    pub async fn issue(
        &self,
        store: &dyn Store,
        revoked: &RevokedClients,
        request: CredentialsRequest,
    ) -> Result<IssuedToken, GrantError> {
        if request.audience != self.audience {
            return Err(GrantError::WrongAudience {
                expected: self.audience.clone(),
            });
        }
        // Every request naming a client costs one secret check, whether the
        // client exists, is revoked or not (`docs/tokens.md`): answering an
        // unknown client sooner would tell which client ids exist.
        let found = match store.client(&request.client_id).await? {
            Some(f) if !f.client.is_revoked() && !revoked.contains(&f.client.id) => f,
            other => {
                self.checker.verify_nothing(request.client_secret).await;
                let why = if other.is_some() {
                    "revoked"
                } else {
                    "unknown"
                };
                tracing::info!(client_id = %request.client_id, "token refused: {why} client");
                return Err(GrantError::InvalidClient);
            }
        };
        if !self
            .checker
            .verify(request.client_secret, found.secret_hash)
            .await
        {
            tracing::info!(client_id = %found.client.id, "token refused: wrong secret");
            return Err(GrantError::InvalidClient);
        }
        let scopes = granted_scopes(&found.client.scopes, request.scope.as_deref())?;
        let access_token = mint_token(
            &self.key,
            &MintRequest {
                issuer: self.issuer.clone(),
                audience: vec![self.audience.clone()],
                client_id: found.client.id,
                scopes: scopes.clone(),
                lifetime: self.lifetime,
                now: Timestamp::now(),
            },
        )?;
        Ok(IssuedToken {
            access_token,
            expires_in: u64::try_from(self.lifetime.as_secs()).unwrap_or(0),
            scopes,
        })
    }
}

/// The scopes to grant: those requested (without repeats, in request order), each
/// of which the client must have; all of the client's if none is requested.
pub fn granted_scopes(
    allowed: &[String],
    requested: Option<&str>,
) -> Result<Vec<String>, GrantError> {
    let requested: Vec<&str> = requested.unwrap_or("").split_whitespace().collect();
    if requested.is_empty() {
        return Ok(allowed.to_vec());
    }
    let mut granted: Vec<String> = Vec::with_capacity(requested.len());
    for scope in requested {
        if !allowed.iter().any(|a| a == scope) {
            return Err(GrantError::ScopeNotGranted(scope.to_owned()));
        }
        if !granted.iter().any(|g| g == scope) {
            granted.push(scope.to_owned());
        }
    }
    Ok(granted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_scope_requested_grants_all_and_a_subset_is_granted_as_asked() {
        let allowed = scopes(&["create:meter_usage", "read:meter_usage"]);
        assert_eq!(granted_scopes(&allowed, None).unwrap(), allowed);
        assert_eq!(granted_scopes(&allowed, Some("  ")).unwrap(), allowed);
        assert_eq!(
            granted_scopes(&allowed, Some("read:meter_usage read:meter_usage")).unwrap(),
            scopes(&["read:meter_usage"])
        );
        assert!(matches!(
            granted_scopes(&allowed, Some("read:meter_usage create:billing_agreements")),
            Err(GrantError::ScopeNotGranted(s)) if s == "create:billing_agreements"
        ));
    }
}
