//! Why the auth middleware refused a request (403), as the `reason` label of
//! `kinde_meter_auth_failures_total` counts it.

use super::verify::AuthError;

/// Why the auth middleware answered 403.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// The token did not verify.
    Token(AuthError),
    /// The `Authorization` header is not `Bearer <token>`.
    MalformedHeader,
    /// The token's client has been revoked.
    RevokedClient,
    /// The token lacks the route's scope.
    InsufficientScope,
}

impl AuthFailure {
    /// One of each reason (token errors with any detail).
    pub const ALL: [AuthFailure; 14] = [
        AuthFailure::Token(AuthError::MissingToken),
        AuthFailure::Token(AuthError::Malformed("")),
        AuthFailure::Token(AuthError::UnsupportedAlgorithm),
        AuthFailure::Token(AuthError::MissingKid),
        AuthFailure::Token(AuthError::UnknownKid),
        AuthFailure::Token(AuthError::BadSignature),
        AuthFailure::Token(AuthError::WrongIssuer),
        AuthFailure::Token(AuthError::WrongAudience),
        AuthFailure::Token(AuthError::MissingExpiry),
        AuthFailure::Token(AuthError::Expired),
        AuthFailure::Token(AuthError::NotYetValid),
        AuthFailure::MalformedHeader,
        AuthFailure::RevokedClient,
        AuthFailure::InsufficientScope,
    ];

    /// The metric label: a constant, never anything from the request.
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::Token(e) => match e {
                AuthError::MissingToken => "missing_token",
                AuthError::Malformed(_) => "malformed_token",
                AuthError::UnsupportedAlgorithm => "unsupported_algorithm",
                AuthError::MissingKid => "missing_kid",
                AuthError::UnknownKid => "unknown_kid",
                AuthError::BadSignature => "bad_signature",
                AuthError::WrongIssuer => "wrong_issuer",
                AuthError::WrongAudience => "wrong_audience",
                AuthError::MissingExpiry => "missing_expiry",
                AuthError::Expired => "expired",
                AuthError::NotYetValid => "not_yet_valid",
            },
            AuthFailure::MalformedHeader => "malformed_header",
            AuthFailure::RevokedClient => "revoked_client",
            AuthFailure::InsufficientScope => "insufficient_scope",
        }
    }
}
