//! Who may call the API: the built-in issuer's tokens and route scopes, forged
//! and tampered JWTs, M2M clients and `POST /oauth2/token`, and an external
//! issuer's JWKS (docs/tokens.md). One test binary, one module per topic.

#[path = "../support/mod.rs"]
mod support;

mod external_issuer;
mod jwt_attacks;
mod oauth_clients;
mod tokens;
