//! M2M clients of the built-in issuer (`docs/tokens.md`): registering one with a
//! secret shown once, the client-credentials grant behind `/oauth2/token`, and
//! the set of revoked clients whose tokens the auth middleware refuses.
//!
//! - [`secret`]: generating, hashing (argon2id) and checking secrets,
//! - [`token`]: the grant itself ([`TokenIssuer`]),
//! - [`revocation`]: [`RevokedClients`] and its background poll.

pub mod revocation;
pub mod secret;
pub mod token;

pub use revocation::{DEFAULT_REFRESH_INTERVAL, RevokedClients};
pub use secret::{ClientSecret, SecretError};
pub use token::{CredentialsRequest, DEFAULT_TOKEN_LIFETIME, GrantError, IssuedToken, TokenIssuer};

use jiff::Timestamp;
use kinde_meter_store::{Client, NewClient, Store, StoreError};

use kinde_meter_wire::Scope;

/// Longest client name accepted.
pub const MAX_NAME_LEN: usize = 255;

/// A client just registered, with the secret in the clear: the only time it
/// exists outside the client's hands.
#[derive(Debug)]
pub struct Registration {
    /// The client.
    pub client: Client,
    /// Its secret, to be shown once.
    pub secret: ClientSecret,
}

/// Why a client could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The name is empty, too long or holds control characters.
    #[error("the name must be 1 to 255 characters without control characters")]
    InvalidName,
    /// No scope was given.
    #[error("give at least one scope")]
    NoScopes,
    /// A scope no route of the API needs (a typo, most likely).
    #[error("unknown scope {scope}; the scopes are: {known}")]
    UnknownScope {
        /// The scope given.
        scope: String,
        /// The scopes the API knows, space-separated.
        known: String,
    },
    /// Making or hashing the secret failed.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Every scope of the API ([`Scope::ALL`]).
pub fn known_scopes() -> Vec<&'static str> {
    Scope::ALL.iter().map(|s| s.as_str()).collect()
}

/// Registers a client named `name` that may be granted `scopes` (space-separated,
/// each one some route needs): a fresh id and secret, the secret stored only as
/// its argon2id hash.
pub async fn register(
    store: &dyn Store,
    name: &str,
    scopes: &str,
    now: Timestamp,
) -> Result<Registration, RegisterError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control)
    {
        return Err(RegisterError::InvalidName);
    }
    let known = known_scopes();
    let mut granted: Vec<String> = Vec::new();
    for scope in scopes.split_whitespace() {
        if !known.contains(&scope) {
            return Err(RegisterError::UnknownScope {
                scope: scope.to_owned(),
                known: known.join(" "),
            });
        }
        if !granted.iter().any(|g| g == scope) {
            granted.push(scope.to_owned());
        }
    }
    if granted.is_empty() {
        return Err(RegisterError::NoScopes);
    }
    let secret = ClientSecret::generate()?;
    let hashing = secret.clone();
    let secret_hash = tokio::task::spawn_blocking(move || hashing.hash())
        .await
        .map_err(|e| SecretError::Hash(e.to_string()))??;
    let mut id_random = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id_random).map_err(|_| SecretError::Random)?;
    let client = store
        .create_client(NewClient {
            name: name.to_owned(),
            scopes: granted,
            secret_hash,
            now,
            id_random,
        })
        .await?;
    Ok(Registration { client, secret })
}
