//! `POST /oauth2/token`: the OAuth2 client-credentials grant (RFC 6749 §4.4), as
//! Kinde's token endpoint takes it: form-encoded `grant_type=client_credentials`,
//! `client_id`, `client_secret`, `audience` and optional `scope`. The client may
//! authenticate with HTTP Basic instead (RFC 6749 §2.3.1). Answers and errors are
//! RFC 6749's (`{access_token, token_type, expires_in, scope}`,
//! `{error, error_description}`), not Kinde's API error shape, since OAuth client
//! libraries read them.
//!
//! Checks, first failure answers: the form (400 `invalid_request`), `grant_type`
//! (400 `unsupported_grant_type`), required parameters (400 `invalid_request`), the
//! audience (400 `invalid_request`), the client and its secret (401
//! `invalid_client`), the scopes (400 `invalid_scope`).

use std::{collections::HashMap, net::SocketAddr};

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{ConnectInfo, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use kinde_meter_wire::{OAuthErrorResponse, Scope, TokenResponse};

use crate::clients::{CredentialsRequest, GrantError};
use crate::state::AppState;

/// The one grant type served.
pub const CLIENT_CREDENTIALS: &str = "client_credentials";

/// The form of a token request (for the OpenAPI document; the handler reads the
/// form itself so that every problem has an RFC 6749 answer).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TokenRequestForm {
    /// Always `client_credentials`.
    #[schema(schema_with = grant_type)]
    grant_type: String,
    /// The client id (or in HTTP Basic authentication).
    #[schema(min_length = 1)]
    client_id: Option<String>,
    /// The client secret (or in HTTP Basic authentication).
    #[schema(min_length = 1)]
    client_secret: Option<String>,
    /// The API the token is for: `<public URL>/api`.
    #[schema(min_length = 1)]
    audience: String,
    /// Space-separated scopes, a subset of the client's; default (absent, empty
    /// or only spaces) all of them.
    #[schema(schema_with = scope)]
    scope: Option<String>,
}

/// The schema of `scope`: known scopes separated by whitespace, or none.
fn scope() -> utoipa::openapi::Object {
    let one = Scope::ALL
        .iter()
        .map(|scope| scope.as_str())
        .collect::<Vec<_>>()
        .join("|");
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::schema::Type::String,
            utoipa::openapi::schema::Type::Null,
        ]))
        .description(Some(
            "Space-separated scopes, a subset of the client's; default (absent, empty or only spaces) all of them.",
        ))
        .pattern(Some(format!(r"^\s*(({one})(\s+({one}))*\s*)?$")))
        .build()
}

/// The schema of `grant_type`: the one grant served.
fn grant_type() -> utoipa::openapi::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some([CLIENT_CREDENTIALS]))
        .build()
}

/// Issue an access token to a registered M2M client (client credentials).
#[utoipa::path(
    post,
    path = "/oauth2/token",
    tag = "OAuth",
    operation_id = "GetToken",
    request_body(content = TokenRequestForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A bearer token", body = TokenResponse),
        (status = 400, description = "invalid_request, unsupported_grant_type or invalid_scope", body = OAuthErrorResponse),
        (status = 401, description = "invalid_client: unknown client, wrong secret or revoked client", body = OAuthErrorResponse),
        (status = 413, description = "invalid_request: the body is over 64 KiB", body = OAuthErrorResponse),
        (status = 429, description = "too_many_requests: too many failed client authentications from this address; retry after Retry-After seconds", body = OAuthErrorResponse,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying, at least 1"), ("RateLimit-Reset" = u64, description = "Seconds until the address may try again"))),
        (status = 503, description = "temporarily_unavailable: storage unavailable", body = OAuthErrorResponse),
    ),
)]
pub async fn token(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Each secret check is a deliberately slow argon2 hash, so failed client
    // logins count against the source address like invalid bearer tokens do,
    // and an address over its limit is refused before any hashing.
    let ip = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    let failures = &state.limits.auth_failures;
    if let Some(ip) = ip
        && let Err(limited) = failures.check(ip)
    {
        return too_many_requests(limited.retry_after_secs());
    }
    match grant(&state, &headers, body).await {
        Ok(response) => response,
        Err(error) => {
            if error.status == StatusCode::UNAUTHORIZED
                && let Some(ip) = ip
            {
                failures.record_failure(ip);
            }
            error.into_response()
        }
    }
}

/// 429 in RFC 6749's error shape, with the headers of every 429 (`docs/limits.md`).
fn too_many_requests(seconds: u64) -> Response {
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(OAuthErrorResponse {
            error: "too_many_requests".to_owned(),
            error_description: Some(
                "too many failed client authentications from this address; retry later".to_owned(),
            ),
        }),
    )
        .into_response();
    let value = HeaderValue::from(seconds);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, value.clone());
    response.headers_mut().insert("ratelimit-reset", value);
    no_store(response.headers_mut());
    response
}

async fn grant(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let mut form = read_form(headers, body)?;
    match form.remove("grant_type") {
        None => return Err(OAuthError::invalid_request("grant_type is required")),
        Some(g) if g != CLIENT_CREDENTIALS => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only grant_type=client_credentials is supported",
            ));
        }
        Some(_) => {}
    }
    let basic = basic_credentials(headers)?;
    let used_basic = basic.is_some();
    let (client_id, client_secret) = client_credentials(basic, &mut form)?;
    let audience = form
        .remove("audience")
        .ok_or_else(|| OAuthError::invalid_request("audience is required"))?;
    let Some(issuer) = &state.token_issuer else {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "this server verifies an external issuer's tokens and issues none; get tokens from that issuer",
        ));
    };
    let request = CredentialsRequest {
        client_id,
        client_secret,
        audience,
        scope: form.remove("scope"),
    };
    let issued = issuer
        .issue(state.store.as_ref(), &state.revoked_clients, request)
        .await
        .map_err(|e| OAuthError::from_grant(e, used_basic))?;
    let body = TokenResponse {
        access_token: issued.access_token,
        token_type: "Bearer".to_owned(),
        expires_in: issued.expires_in,
        scope: Some(issued.scopes.join(" ")),
    };
    let mut response = Json(body).into_response();
    no_store(response.headers_mut());
    Ok(response)
}

/// The form's parameters. Parameters without a value count as absent (RFC 6749
/// §3.2); a repeated one is an error.
fn read_form(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<HashMap<String, String>, OAuthError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            OAuthError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "the body is over 64 KiB",
            )
        } else {
            OAuthError::invalid_request("the body could not be read")
        }
    })?;
    let form_typed = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_typed {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut form = HashMap::new();
    for (name, value) in form_urlencoded::parse(&body) {
        if value.is_empty() {
            continue;
        }
        if form
            .insert(name.clone().into_owned(), value.into_owned())
            .is_some()
        {
            return Err(OAuthError::invalid_request(format!(
                "the parameter {} is repeated",
                printable(&name)
            )));
        }
    }
    Ok(form)
}

/// Credentials from `Authorization: Basic`, if that header is sent: base64 of
/// `form-encoded id ":" form-encoded secret` (RFC 6749 §2.3.1). Any other
/// scheme is an authentication method this endpoint does not support.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || OAuthError::invalid_client(true, "the Basic credentials are malformed");
    let value = value.to_str().map_err(|_| malformed())?;
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return Err(malformed());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            true,
            "authenticate the client with HTTP Basic or client_id and client_secret in the form",
        ));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    Ok(Some((form_decode(id), form_decode(secret))))
}

/// The client id and secret from Basic or else the form; both methods at once is
/// an error (RFC 6749 §2.3), though a form `client_id` equal to Basic's is allowed.
fn client_credentials(
    basic: Option<(String, String)>,
    form: &mut HashMap<String, String>,
) -> Result<(String, String), OAuthError> {
    let form_id = form.remove("client_id");
    let form_secret = form.remove("client_secret");
    match basic {
        Some((id, secret)) => {
            if form_secret.is_some() || form_id.as_ref().is_some_and(|f| *f != id) {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method: HTTP Basic or the form, not both",
                ));
            }
            if id.is_empty() || secret.is_empty() {
                return Err(OAuthError::invalid_request(
                    "the Basic credentials need a client id and a secret",
                ));
            }
            Ok((id, secret))
        }
        None => match (form_id, form_secret) {
            (Some(id), Some(secret)) => Ok((id, secret)),
            (None, _) => Err(OAuthError::invalid_request("client_id is required")),
            (Some(_), None) => Err(OAuthError::invalid_request("client_secret is required")),
        },
    }
}

/// `application/x-www-form-urlencoded` decoding of one value (`+` is a space).
fn form_decode(s: &str) -> String {
    // Parsed as the name of a one-parameter form: no '&' or '=' can split it,
    // since they would have been percent-encoded.
    let escaped = s.replace('&', "%26").replace('=', "%3D");
    form_urlencoded::parse(escaped.as_bytes())
        .next()
        .map(|(name, _)| name.into_owned())
        .unwrap_or_default()
}

/// A parameter name fit for an error message: short, no control characters.
fn printable(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// `Cache-Control: no-store` and `Pragma: no-cache`, which RFC 6749 §5.1 requires
/// on answers that carry tokens and which errors carry too.
fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// An RFC 6749 §5.2 error answer.
#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// Ask for Basic authentication (`WWW-Authenticate`), as RFC 6749 requires
    /// when a 401 answers a request that used it.
    challenge: bool,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError {
            status,
            error,
            description: description.into(),
            challenge: false,
        }
    }

    fn invalid_request(description: impl Into<String>) -> OAuthError {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_client(challenge: bool, description: &str) -> OAuthError {
        OAuthError {
            challenge,
            ..OAuthError::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
        }
    }

    fn from_grant(error: GrantError, used_basic: bool) -> OAuthError {
        match error {
            GrantError::InvalidClient => OAuthError::invalid_client(
                used_basic,
                "client authentication failed: unknown client, wrong secret or revoked client",
            ),
            e @ GrantError::WrongAudience { .. } => OAuthError::invalid_request(e.to_string()),
            e @ GrantError::ScopeNotGranted(_) => {
                OAuthError::new(StatusCode::BAD_REQUEST, "invalid_scope", e.to_string())
            }
            GrantError::Store(e) => {
                tracing::warn!(error = %e, "token endpoint: storage unavailable");
                OAuthError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "storage is unavailable; retry later",
                )
            }
            GrantError::Mint(e) => {
                tracing::error!(error = %e, "token endpoint: cannot sign a token");
                OAuthError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "the token could not be signed",
                )
            }
        }
    }

    /// The RFC 6749 error code.
    pub fn error(&self) -> &'static str {
        self.error
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = OAuthErrorResponse {
            error: self.error.to_owned(),
            error_description: Some(self.description),
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        no_store(headers);
        if self.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"kinde-meter\""),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        assert_eq!(form_decode("a%3Ab+c%2B"), "a:b c+");
        assert_eq!(form_decode("x&y=z"), "x&y=z");
        let mut headers = HeaderMap::new();
        let encoded = STANDARD.encode("my%20id:s%3Aecret");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("basic {encoded}")).unwrap(),
        );
        assert_eq!(
            basic_credentials(&headers).unwrap(),
            Some(("my id".to_owned(), "s:ecret".to_owned()))
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(
            basic_credentials(&headers).unwrap_err().error(),
            "invalid_client"
        );
    }
}
