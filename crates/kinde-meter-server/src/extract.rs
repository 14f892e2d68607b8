//! Extractors and middleware that run before a handler: authentication with the
//! route's scope, the JSON body with its size limit, the `Idempotency-Key`
//! header, query parameters.
//!
//! Order is the contract (`docs/errors.md`): authentication and scope (403), rate
//! limit (429), body size (413), body and field validation (400), storage (503).
//! The auth middleware runs before the body is read, so an unauthenticated client
//! never gets to make the server buffer 64 KiB (what it sent is read and
//! discarded after the answer is made, to keep the connection:
//! `routes::layers`). The rate limits are in
//! [`crate::rate_limit`]; this middleware applies them.

use std::{collections::HashMap, convert::Infallible, net::SocketAddr, sync::Arc};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State},
    http::{HeaderMap, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use kinde_meter_core::{ErrorCode, idempotency::IdempotencyKey, ids::CodeError};
use kinde_meter_wire::Scope;
use serde_json::Value;

use crate::auth::{self, AuthFailure, Principal};
use crate::error::ApiError;
use crate::rate_limit::LimitKind;
use crate::state::AppState;

/// Largest request body (`docs/limits.md`).
pub const BODY_LIMIT: usize = 64 * 1024;

/// State of the authentication middleware of one route: the scope it requires.
#[derive(Clone)]
pub struct RequireScope {
    /// The application state.
    pub state: AppState,
    /// The scope the route needs.
    pub scope: Scope,
}

/// Verifies the bearer token and the route's scope, then puts the [`Principal`]
/// in the request's extensions for the handler.
pub async fn authenticate(
    State(guard): State<RequireScope>,
    mut request: Request,
    next: Next,
) -> Response {
    // A source address that sent many invalid credentials lately is refused
    // before its token is verified (the one exception to the order).
    let limits = &guard.state.limits;
    let metrics = &guard.state.metrics;
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    if let Some(ip) = peer
        && let Err(limited) = limits.auth_failures.check(ip)
    {
        metrics.rate_limited(LimitKind::SourceAddress);
        return ApiError::too_many_requests(limited.retry_after_secs()).into_response();
    }
    // Every 403 INVALID_CREDENTIALS counts against the source address.
    let refuse = |failure: AuthFailure, error: ApiError| {
        metrics.auth_failure(failure);
        if let Some(ip) = peer {
            limits.auth_failures.record_failure(ip);
        }
        error.into_response()
    };
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return refuse(
            AuthFailure::Token(auth::AuthError::MissingToken),
            ApiError::invalid_credentials("an Authorization: Bearer token is required"),
        );
    };
    let Some(token) = value.to_str().ok().and_then(auth::bearer_token) else {
        return refuse(
            AuthFailure::MalformedHeader,
            ApiError::invalid_credentials("the Authorization header must be 'Bearer <token>'"),
        );
    };
    let principal = match verify(&guard.state, token).await {
        Ok(p) => Arc::new(p),
        Err(e) => {
            tracing::info!(reason = e.reason(), "token refused");
            return refuse(
                AuthFailure::Token(e),
                ApiError::invalid_credentials(
                    "the bearer token is invalid, expired or not issued for this server",
                ),
            );
        }
    };
    // The token is genuine: whatever the answer, the request's log line names
    // its client (`docs/operations.md#logs`).
    let caller = AuthenticatedClient(principal.clone());
    let mut response = 'answer: {
        // Tokens stay valid until they expire; a revoked client's are refused here
        // (`docs/tokens.md`), checked after the signature so only genuine tokens get this far.
        if guard.state.revoked_clients.contains(&principal.client_id) {
            tracing::info!(client_id = %principal.client_id, "token refused: client revoked");
            break 'answer refuse(
                AuthFailure::RevokedClient,
                ApiError::invalid_credentials("the client of this token has been revoked"),
            );
        }
        if !principal.has_scope(guard.scope.as_str()) {
            metrics.auth_failure(AuthFailure::InsufficientScope);
            break 'answer ApiError::insufficient_scope(guard.scope).into_response();
        }
        // The caller's rate limit, before the body is read or storage is touched.
        if let Err(limited) = limits.clients.check(&principal).await {
            tracing::debug!(client_id = %principal.client_id, "rate limited");
            metrics.rate_limited(LimitKind::Client);
            break 'answer ApiError::too_many_requests(limited.retry_after_secs()).into_response();
        }
        // Shared, so that handlers take the caller without copying its scopes.
        request.extensions_mut().insert(principal);
        next.run(request).await
    };
    response.extensions_mut().insert(caller);
    response
}

/// The authenticated caller of a request, put in the extensions of its answer
/// (a shared pointer, nothing copied) for the request's log line
/// (`routes::layers`): present when the bearer token was genuine, whatever
/// the status.
#[derive(Debug, Clone)]
pub struct AuthenticatedClient(pub Arc<Principal>);

/// Verifies a token; in external issuer mode a token naming an unknown `kid`
/// triggers one (throttled) refetch of the issuer's JWKS and a second try, which
/// is how a key rotation at the issuer is picked up without a restart.
async fn verify(state: &AppState, token: &str) -> Result<Principal, auth::AuthError> {
    let now = || jiff::Timestamp::now().as_second();
    match state.verifier.verify(token, now()) {
        Err(auth::AuthError::UnknownKid) => match &state.remote_jwks {
            Some(remote) if remote.refresh_if_due().await => state.verifier.verify(token, now()),
            _ => Err(auth::AuthError::UnknownKid),
        },
        other => other,
    }
}

/// A request body decoded as JSON, with Kinde's error codes for what can go wrong:
/// over 64 KiB → 413 `BODY_TOO_LARGE`; not JSON → 400 `INVALID_JSON`.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonText(bytes) = JsonText::from_request(request, state).await?;
        let value: Value = serde_json::from_slice(&bytes).map_err(invalid_json)?;
        Ok(JsonBody(value))
    }
}

/// 400 `INVALID_JSON` for a body that does not decode.
pub fn invalid_json(e: serde_json::Error) -> ApiError {
    ApiError::bad_request(
        ErrorCode::InvalidJson,
        format!("the body is not valid JSON: {e}"),
    )
}

/// A request body meant to be JSON, read but not decoded yet (for handlers
/// that decode it into their own types), with [`JsonBody`]'s errors for
/// what can go wrong before decoding.
pub struct JsonText(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonText {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type_ok = match request.headers().get(header::CONTENT_TYPE) {
            // Clients that send no Content-Type still mean JSON on a JSON API.
            None => true,
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|v| v.split(';').next())
                .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json")),
        };
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::body_too_large()
                } else {
                    ApiError::bad_request(ErrorCode::InvalidJson, "the body could not be read")
                }
            })?;
        if !content_type_ok {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidJson,
                "Content-Type must be application/json",
            ));
        }
        Ok(JsonText(bytes))
    }
}

/// The `Idempotency-Key` header, if any; a malformed one is a 400.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let parsed = value
        .to_str()
        .ok()
        .and_then(|s| IdempotencyKey::new(s).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidField,
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
        })?;
    Ok(Some(parsed))
}

/// The `Idempotency-Key` header as [`idempotency_key`] reads it, taken from the
/// request's head without copying its headers. A malformed key is left for
/// the handler to answer, after the body's own errors.
pub struct IdempotencyKeyHeader(pub Result<Option<IdempotencyKey>, ApiError>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(IdempotencyKeyHeader(idempotency_key(&parts.headers)))
    }
}

/// The authenticated caller, for handlers.
pub type Caller = axum::Extension<Arc<Principal>>;

/// Query parameters with Kinde's error codes for missing or malformed ones.
pub struct QueryParams(pub Params);

/// Decoded query parameters.
pub struct Params(HashMap<String, String>);

impl Params {
    /// A parameter that must be present and non-empty (else `MISSING_FIELD`).
    pub fn required(&self, name: &'static str) -> Result<Param<'_>, ApiError> {
        match self.0.get(name).filter(|v| !v.is_empty()) {
            Some(value) => Ok(Param { name, value }),
            None => Err(ApiError::bad_request(
                ErrorCode::MissingField,
                format!("{name} is required"),
            )),
        }
    }

    /// A parameter that may be absent (empty counts as absent).
    pub fn optional(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A parameter as sent, empty included (for parameters whose empty value
    /// is an error rather than absence, such as `page_size`).
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// A present query parameter.
pub struct Param<'a> {
    name: &'static str,
    value: &'a str,
}

impl Param<'_> {
    /// Parses the value as a code, `INVALID_FIELD` naming the parameter if it is not one.
    pub fn and_then_code<T>(
        self,
        parse: impl FnOnce(String) -> Result<T, CodeError>,
    ) -> Result<T, ApiError> {
        parse(self.value.to_owned()).map_err(|e| {
            ApiError::bad_request(ErrorCode::InvalidField, format!("{} {e}", self.name))
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // What `Query<HashMap<String, String>>` decodes (a repeated name: its
        // last value; bad percent-encoding: replaced, as serde_urlencoded does
        // too), without its deserializer's bookkeeping on every read.
        let query = parts.uri.query().unwrap_or_default();
        let map = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        Ok(QueryParams(Params(map)))
    }
}
