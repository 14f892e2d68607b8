//! Tokens: the built-in issuer's signing key and identity, minting of
//! Kinde-shaped M2M access tokens, and verification of bearer tokens.
//!
//! This module owns everything about *what a token is* (`docs/tokens.md`): the key
//! file in the data directory ([`keys`]), the issuer URL tokens are minted
//! for ([`identity`]), the claims of minted tokens ([`mint`]) and the rules a
//! presented token must pass ([`verify`]). It knows nothing about HTTP, M2M
//! client registration or rate limits; those build on [`Verifier`] and
//! [`Principal`].

pub mod failure;
pub mod identity;
pub mod keys;
pub mod mint;
pub mod remote_jwks;
pub mod verify;

pub use failure::AuthFailure;
pub use identity::{DEFAULT_PUBLIC_URL, IDENTITY_FILE_NAME, IssuerIdentity};
pub use keys::{KEY_FILE_NAME, KeyError, SigningKey, jwks};
pub use mint::{
    CLI_CLIENT_ID, DEFAULT_LIFETIME, MintError, MintRequest, mint_for_data_dir, mint_token,
    split_scopes,
};
pub use remote_jwks::{DEFAULT_REFETCH_INTERVAL, RemoteJwks, check_issuer_url};
pub use verify::{
    AuthError, DEFAULT_CACHE_CAPACITY, DEFAULT_LEEWAY_SECS, KeySet, MAX_LEEWAY_SECS, MAX_TOKEN_LEN,
    Principal, Verifier, VerifierConfig, bearer_token, bearer_token_span, parse_jwks,
};

#[cfg(test)]
mod tests;
