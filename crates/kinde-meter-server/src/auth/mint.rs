//! Minting RS256 access tokens shaped like Kinde's M2M (client credentials)
//! tokens, for `/oauth2/token` and `kinde-meter token`.

use std::io;
use std::path::Path;

use jiff::{SignedDuration, Timestamp};
use jsonwebtoken::{Algorithm, Header};
use serde::Serialize;

use super::identity::IssuerIdentity;
use super::keys::{KeyError, SigningKey};

/// `azp` of tokens minted by `kinde-meter token` without `--client-id`.
pub const CLI_CLIENT_ID: &str = "kinde-meter-cli";

/// Lifetime of minted tokens unless the caller says otherwise: 24 hours, as
/// Kinde's M2M tokens default to.
pub const DEFAULT_LIFETIME: SignedDuration = SignedDuration::from_secs(86_400);

/// What to put into a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MintRequest {
    /// `iss`.
    pub issuer: String,
    /// `aud`, always serialized as an array.
    pub audience: Vec<String>,
    /// `azp`: the client the token is issued to.
    pub client_id: String,
    /// Granted scopes, serialized both as `scope` (space-separated) and `scp`
    /// (array). Duplicates are dropped, order is kept.
    pub scopes: Vec<String>,
    /// `exp` - `iat`, at least one second; sub-second parts are dropped.
    pub lifetime: SignedDuration,
    /// `iat`.
    pub now: Timestamp,
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The signing key could not be loaded, created or used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// `issuer.json` exists but could not be read.
    #[error("cannot read the issuer identity: {0}")]
    Identity(#[source] io::Error),
    /// The request itself is unusable.
    #[error("invalid token request: {0}")]
    Invalid(&'static str),
    /// The token could not be encoded or signed (not expected to happen).
    #[error("cannot encode token: {0}")]
    Encode(#[from] jsonwebtoken::errors::Error),
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a [String],
    azp: &'a str,
    exp: i64,
    iat: i64,
    jti: String,
    gty: [&'static str; 1],
    scope: String,
    scp: Vec<&'a str>,
}

/// Signs a token for `req` with `key` (header `alg: RS256`, `typ: JWT`,
/// `kid`), with claims `iss`, `aud`, `azp`, `exp`, `iat`, `jti` (random
/// 128-bit hex), `gty: ["client_credentials"]`, `scope` and `scp`.
pub fn mint_token(key: &SigningKey, req: &MintRequest) -> Result<String, MintError> {
    if req.issuer.is_empty() {
        return Err(MintError::Invalid("issuer is empty"));
    }
    if req.audience.is_empty() || req.audience.iter().any(String::is_empty) {
        return Err(MintError::Invalid("audience is empty"));
    }
    if req.client_id.is_empty() {
        return Err(MintError::Invalid("client id is empty"));
    }
    // A scope with whitespace would change meaning once joined into `scope`.
    if req
        .scopes
        .iter()
        .any(|s| s.is_empty() || s.chars().any(char::is_whitespace))
    {
        return Err(MintError::Invalid(
            "scopes must be non-empty and contain no whitespace",
        ));
    }
    let lifetime_secs = req.lifetime.as_secs();
    if lifetime_secs < 1 {
        return Err(MintError::Invalid("lifetime must be at least one second"));
    }
    let iat = req.now.as_second();
    let exp = iat
        .checked_add(lifetime_secs)
        .ok_or(MintError::Invalid("lifetime is too long"))?;

    let mut scp: Vec<&str> = Vec::with_capacity(req.scopes.len());
    for scope in &req.scopes {
        if !scp.contains(&scope.as_str()) {
            scp.push(scope);
        }
    }

    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).map_err(|_| KeyError::Generate)?;

    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid().to_owned());
    let claims = Claims {
        iss: &req.issuer,
        aud: &req.audience,
        azp: &req.client_id,
        exp,
        iat,
        jti: hex::encode(jti),
        gty: ["client_credentials"],
        scope: scp.join(" "),
        scp,
    };
    Ok(jsonwebtoken::encode(&header, &claims, key.encoding_key())?)
}

/// Mints a token the way `kinde-meter token --data-dir DIR` does: with DIR's
/// signing key (created if missing), for the identity the server in DIR last
/// started with (`public_url_override` wins; [`IssuerIdentity::default`] if
/// none was ever saved), `aud` = `[<issuer>/api]`, and `azp` = `client_id`
/// or [`CLI_CLIENT_ID`].
pub fn mint_for_data_dir(
    data_dir: &Path,
    scopes: &[String],
    client_id: Option<&str>,
    public_url_override: Option<&str>,
    lifetime: SignedDuration,
    now: Timestamp,
) -> Result<String, MintError> {
    let identity = match public_url_override {
        Some(url) => IssuerIdentity::new(url),
        // A corrupt identity file is an error rather than a silent fallback
        // to the default, which would mint tokens the server rejects.
        None => IssuerIdentity::try_load(data_dir)
            .map_err(MintError::Identity)?
            .unwrap_or_default(),
    };
    let key = SigningKey::load_or_create(data_dir)?;
    let req = MintRequest {
        issuer: identity.issuer(),
        audience: vec![identity.audience()],
        client_id: client_id.unwrap_or(CLI_CLIENT_ID).to_owned(),
        scopes: scopes.to_vec(),
        lifetime,
        now,
    };
    mint_token(&key, &req)
}

/// Splits a space-separated scope list (`--scope "a b"`, OAuth2 `scope`
/// parameter) into scopes.
pub fn split_scopes(scope: &str) -> Vec<String> {
    scope.split_whitespace().map(str::to_owned).collect()
}
