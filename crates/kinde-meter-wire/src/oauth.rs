//! The OAuth2 client-credentials token endpoint (`POST /oauth2/token`).

use serde::{Deserialize, Serialize};

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    /// The bearer token (an RS256 JWT).
    pub access_token: String,
    /// Always `"Bearer"`.
    pub token_type: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// The granted scopes, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// A token error (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OAuthErrorResponse {
    /// `invalid_client`, `invalid_scope`, `unsupported_grant_type`, `invalid_request`, …
    pub error: String,
    /// What was wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}
