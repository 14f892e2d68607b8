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

use std::{
    convert::Infallible,
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::{ConnectInfo, FromRequest, FromRequestParts, Request},
    http::{HeaderMap, HeaderName, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{Route, future::RouteFuture},
};
use kinde_meter_core::{ErrorCode, idempotency::IdempotencyKey, ids::CodeError};
use kinde_meter_wire::Scope;
use serde_json::Value;
use tower::{Layer, Service};

use crate::auth::{self, AuthFailure, Principal};
use crate::error::ApiError;
use crate::rate_limit::{LimitKind, Limited};
use crate::state::AppState;

/// Largest request body (`docs/limits.md`).
pub const BODY_LIMIT: usize = 64 * 1024;

/// The authentication of one route: a [`Layer`] checking the bearer token and
/// the route's scope, then putting the [`Principal`] in the request's
/// extensions for the handler.
///
/// Hand-written rather than `axum::middleware::from_fn`: a request whose
/// checks all decide at once (a cached token, the in-memory rate limit) is
/// passed on without boxing a future, cloning the route or extracting
/// anything (from_fn did all three, ~9 K instructions per request).
#[derive(Clone)]
pub struct RequireScope {
    /// The application state.
    pub state: AppState,
    /// The scope the route needs.
    pub scope: Scope,
}

impl Layer<Route> for RequireScope {
    type Service = Authenticate;

    fn layer(&self, inner: Route) -> Authenticate {
        Authenticate {
            guard: self.clone(),
            inner,
        }
    }
}

/// The service of [`RequireScope`] around a route.
#[derive(Clone)]
pub struct Authenticate {
    guard: RequireScope,
    inner: Route,
}

impl Service<Request> for Authenticate {
    type Response = Response;
    type Error = Infallible;
    type Future = Authenticated;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A route is always ready (`Route::poll_ready`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Authenticated {
        let guard = &self.guard;
        let peer = peer_of(&request);
        let verified = match checked_token(guard, peer, &request) {
            Ok(Token::Verified(Ok(principal))) => principal,
            Ok(Token::Verified(Err(e))) => {
                return Authenticated::answer(token_refused(guard, peer, e));
            }
            Ok(Token::Unverified(token)) => {
                match guard.state.verifier.verify_shared(token, now()) {
                    // An external issuer may have rotated its keys: refetched
                    // (throttled) before one more try, which has to wait.
                    Err(auth::AuthError::UnknownKid) if guard.state.remote_jwks.is_some() => {
                        let guard = guard.clone();
                        let inner = self.inner.clone();
                        let token = token.to_owned();
                        return Authenticated::Waiting(Box::pin(async move {
                            let verified = verify_after_refetch(&guard.state, &token).await;
                            let principal = match verified {
                                Ok(principal) => principal,
                                Err(e) => return token_refused(&guard, peer, e),
                            };
                            let Ok(answer) = Authenticate { guard, inner }
                                .admit(peer, principal, request)
                                .await;
                            answer
                        }));
                    }
                    Ok(principal) => principal,
                    Err(e) => return Authenticated::answer(token_refused(guard, peer, e)),
                }
            }
            Err(refused) => return Authenticated::answer(*refused),
        };
        self.admit(peer, verified, request)
    }
}

impl Authenticate {
    /// The rest of the checks of a request whose token is genuine, and the
    /// route's answer.
    fn admit(
        &mut self,
        peer: Option<IpAddr>,
        principal: Arc<Principal>,
        mut request: Request,
    ) -> Authenticated {
        let guard = &self.guard;
        let caller = AuthenticatedClient(principal.clone());
        if let Some(refused) = refused_caller(guard, peer, &principal) {
            return Authenticated::answer_to(caller, refused);
        }
        // The caller's rate limit, before the body is read or storage is
        // touched. The in-memory limiter decides at once; a shared one
        // (Redis) is waited for.
        let limiter = &guard.state.limits.clients;
        match limiter.check_now(&principal) {
            Some(Err(limited)) => {
                Authenticated::answer_to(caller, rate_limited(guard, &principal, limited))
            }
            Some(Ok(())) => {
                // Shared, so that handlers take the caller without copying its scopes.
                request.extensions_mut().insert(principal);
                Authenticated::Routed {
                    answer: self.inner.call(request),
                    caller: Some(caller),
                }
            }
            None => {
                let (guard, mut inner) = (guard.clone(), self.inner.clone());
                Authenticated::Waiting(Box::pin(async move {
                    let answer = match guard.state.limits.clients.check(&principal).await {
                        Ok(()) => {
                            request.extensions_mut().insert(principal);
                            let Ok(response) = inner.call(request).await;
                            response
                        }
                        Err(limited) => rate_limited(&guard, &principal, limited),
                    };
                    with_caller(caller, answer)
                }))
            }
        }
    }
}

/// The answer of [`Authenticate`].
pub enum Authenticated {
    /// Answered without the route.
    Answer(Option<Response>),
    /// The route's answer, with the caller to name on it.
    Routed {
        answer: RouteFuture<Infallible>,
        caller: Option<AuthenticatedClient>,
    },
    /// Checks that wait (a key refetch, a shared rate limit), then the route.
    Waiting(Pin<Box<dyn Future<Output = Response> + Send>>),
}

impl Authenticated {
    fn answer(response: Response) -> Authenticated {
        Authenticated::Answer(Some(response))
    }

    fn answer_to(caller: AuthenticatedClient, response: Response) -> Authenticated {
        Authenticated::answer(with_caller(caller, response))
    }
}

impl Future for Authenticated {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Authenticated::Answer(response) => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            Authenticated::Routed { answer, caller } => {
                let Ok(response) = ready!(Pin::new(answer).poll(cx));
                let caller = caller.take().expect("polled after completion");
                Poll::Ready(Ok(with_caller(caller, response)))
            }
            Authenticated::Waiting(future) => future.as_mut().poll(cx).map(Ok),
        }
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn peer_of(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// Counts a 403 `INVALID_CREDENTIALS` against the source address and makes it.
fn refuse(
    guard: &RequireScope,
    peer: Option<IpAddr>,
    failure: AuthFailure,
    error: ApiError,
) -> Response {
    guard.state.metrics.auth_failure(failure);
    if let Some(ip) = peer {
        guard.state.limits.auth_failures.record_failure(ip);
    }
    error.into_response()
}

/// What [`checked_token`] found in the Authorization header.
enum Token<'r> {
    /// Bytes the verifier has verified before (their answer: the principal,
    /// or expired).
    Verified(Result<Arc<Principal>, auth::AuthError>),
    /// A well-formed bearer token still to verify.
    Unverified(&'r str),
}

/// The request's bearer token, else the answer: a source address that sent
/// many invalid credentials lately is refused before its token is verified
/// (the one exception to the order); a missing or malformed Authorization
/// header is a 403.
fn checked_token<'r>(
    guard: &RequireScope,
    peer: Option<IpAddr>,
    request: &'r Request,
) -> Result<Token<'r>, Box<Response>> {
    if let Some(ip) = peer
        && let Err(limited) = guard.state.limits.auth_failures.check(ip)
    {
        guard.state.metrics.rate_limited(LimitKind::SourceAddress);
        return Err(Box::new(
            ApiError::too_many_requests(limited.retry_after_secs()).into_response(),
        ));
    }
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Err(Box::new(refuse(
            guard,
            peer,
            AuthFailure::Token(auth::AuthError::MissingToken),
            ApiError::invalid_credentials("an Authorization: Bearer token is required"),
        )));
    };
    // A client sends the same token again and again: its exact bytes are
    // looked up first. Only tokens the verifier accepted are cached, so a
    // hit is a well-formed token and the checks of its text below (~3.5 K
    // instructions for a 1 KB token) would pass (`Verifier::cached`).
    let bytes = value.as_bytes();
    if let Some(span) = auth::bearer_token_span(bytes)
        && let Some(answer) = guard.state.verifier.cached(&bytes[span], now())
    {
        return Ok(Token::Verified(answer));
    }
    // UTF-8 rather than `HeaderValue::to_str`'s visible ASCII, which is
    // checked a byte at a time (~3 K instructions for a 1 KB token): the
    // same headers pass, since `bearer_token` takes only visible ASCII.
    let text = std::str::from_utf8(bytes).ok();
    let Some(token) = text.and_then(auth::bearer_token) else {
        return Err(Box::new(refuse(
            guard,
            peer,
            AuthFailure::MalformedHeader,
            ApiError::invalid_credentials("the Authorization header must be 'Bearer <token>'"),
        )));
    };
    Ok(Token::Unverified(token))
}

/// The answer to a token that is not genuine.
fn token_refused(guard: &RequireScope, peer: Option<IpAddr>, e: auth::AuthError) -> Response {
    tracing::info!(reason = e.reason(), "token refused");
    refuse(
        guard,
        peer,
        AuthFailure::Token(e),
        ApiError::invalid_credentials(
            "the bearer token is invalid, expired or not issued for this server",
        ),
    )
}

/// The answer to a genuine token that may not call the route now, if any:
/// its client revoked, the scope missing.
fn refused_caller(
    guard: &RequireScope,
    peer: Option<IpAddr>,
    principal: &Principal,
) -> Option<Response> {
    // Tokens stay valid until they expire; a revoked client's are refused here
    // (`docs/tokens.md`), checked after the signature so only genuine tokens get this far.
    if guard.state.revoked_clients.contains(&principal.client_id) {
        tracing::info!(client_id = %principal.client_id, "token refused: client revoked");
        return Some(refuse(
            guard,
            peer,
            AuthFailure::RevokedClient,
            ApiError::invalid_credentials("the client of this token has been revoked"),
        ));
    }
    if !principal.has_scope(guard.scope.as_str()) {
        guard
            .state
            .metrics
            .auth_failure(AuthFailure::InsufficientScope);
        return Some(ApiError::insufficient_scope(guard.scope).into_response());
    }
    None
}

/// The 429 to a caller over its rate limit.
fn rate_limited(guard: &RequireScope, principal: &Principal, limited: Limited) -> Response {
    tracing::debug!(client_id = %principal.client_id, "rate limited");
    guard.state.metrics.rate_limited(LimitKind::Client);
    ApiError::too_many_requests(limited.retry_after_secs()).into_response()
}

/// The token is genuine: whatever the answer, the request's log line names
/// its client (`docs/operations.md#logs`).
fn with_caller(caller: AuthenticatedClient, mut response: Response) -> Response {
    response.extensions_mut().insert(caller);
    response
}

/// The authenticated caller of a request, put in the extensions of its answer
/// (a shared pointer, nothing copied) for the request's log line
/// (`routes::layers`): present when the bearer token was genuine, whatever
/// the status.
#[derive(Debug, Clone)]
pub struct AuthenticatedClient(pub Arc<Principal>);

/// Verifies the request's token again after one (throttled) refetch of
/// the external issuer's JWKS: a token naming an unknown `kid` is how a key
/// rotation at the issuer is picked up without a restart.
async fn verify_after_refetch(
    state: &AppState,
    token: &str,
) -> Result<Arc<Principal>, auth::AuthError> {
    match &state.remote_jwks {
        Some(remote) if remote.refresh_if_due().await => state.verifier.verify_shared(token, now()),
        _ => Err(auth::AuthError::UnknownKid),
    }
}

/// A request body decoded as JSON, with Kinde's error codes for what can go wrong:
/// over 64 KiB → 413 `BODY_TOO_LARGE`; not JSON → 400 `INVALID_JSON`.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonText(bytes) = JsonText::from_request(request, state).await?;
        let value = kinde_meter_wire::json::from_slice(&bytes).map_err(invalid_json)?;
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

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let content_type_ok = match request.headers().get(header::CONTENT_TYPE) {
            // Clients that send no Content-Type still mean JSON on a JSON API.
            None => true,
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|v| v.split(';').next())
                .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json")),
        };
        let bytes = read_body(request.into_body(), BODY_LIMIT).await?;
        if !content_type_ok {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidJson,
                "Content-Type must be application/json",
            ));
        }
        Ok(JsonText(bytes))
    }
}

/// A request body, whole: its one data frame as it arrived (the usual body,
/// a small JSON text read with its head), else its frames copied into one
/// buffer. What `Bytes::from_request` under `DefaultBodyLimit::max(limit)`
/// reads, with the same errors (over `limit`: 413 `BODY_TOO_LARGE`; a body
/// that fails to arrive: 400 `INVALID_JSON`), without its limiting wrapper,
/// boxed body and list of buffers (~2 K instructions of a single record).
async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|_| {
            ApiError::bad_request(ErrorCode::InvalidJson, "the body could not be read")
        })?;
        // Trailers are not part of the body.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(ApiError::body_too_large());
        }
        if data.is_empty() {
            continue;
        }
        match &first {
            None => first = Some(data),
            Some(first) => {
                if joined.is_empty() {
                    joined.reserve(total);
                    joined.extend_from_slice(first);
                }
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(if joined.is_empty() {
        first.unwrap_or_default()
    } else {
        Bytes::from(joined)
    })
}

/// The name of the `Idempotency-Key` header, made once (a name given as text
/// is parsed on every lookup).
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The `Idempotency-Key` header, if any; a malformed one is a 400.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get(&IDEMPOTENCY_KEY) else {
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

/// Decoded query parameters, in their order (a handful: a list searched
/// from the end finds a repeated name's last value, as a map built from
/// them would, without hashing every name).
pub struct Params(Vec<(String, String)>);

impl Params {
    /// The last value of `name`, if any.
    fn get(&self, name: &str) -> Option<&String> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value)
    }

    /// A parameter that must be present and non-empty (else `MISSING_FIELD`).
    pub fn required(&self, name: &'static str) -> Result<Param<'_>, ApiError> {
        match self.get(name).filter(|v| !v.is_empty()) {
            Some(value) => Ok(Param { name, value }),
            None => Err(ApiError::bad_request(
                ErrorCode::MissingField,
                format!("{name} is required"),
            )),
        }
    }

    /// A parameter that may be absent (empty counts as absent).
    pub fn optional(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// A parameter as sent, empty included (for parameters whose empty value
    /// is an error rather than absence, such as `page_size`).
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
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
        Ok(QueryParams(Params(query_pairs(query))))
    }
}

/// The name and value pairs of `query`, as `form_urlencoded::parse` decodes
/// them. A query with nothing to decode (no `%`, no `+`: the usual one) is
/// only split, as that parser splits it, without its decoding a byte at a
/// time (~2 K instructions of a usage read).
fn query_pairs(query: &str) -> Vec<(String, String)> {
    if query.bytes().any(|b| b == b'%' || b == b'+') {
        return form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
    }
    query
        .split('&')
        .filter(|sequence| !sequence.is_empty())
        .map(|sequence| {
            let (name, value) = sequence.split_once('=').unwrap_or((sequence, ""));
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use axum::{
        body::{Body, Bytes},
        http::StatusCode,
        response::IntoResponse,
    };

    use super::{query_pairs, read_body};

    fn frames(parts: &[&'static str]) -> Body {
        let parts: Vec<Result<Bytes, std::io::Error>> = parts
            .iter()
            .map(|p| Ok(Bytes::from_static(p.as_bytes())))
            .collect();
        Body::from_stream(futures::stream::iter(parts))
    }

    async fn status_of(body: Body, limit: usize) -> StatusCode {
        match read_body(body, limit).await {
            Ok(_) => StatusCode::OK,
            Err(e) => e.into_response().status(),
        }
    }

    /// Whole bodies from one frame, none or several (empty ones included),
    /// up to the limit; over it a 413, a body that fails a 400.
    #[tokio::test]
    async fn bodies_are_read_whole_from_any_frames() {
        for (parts, whole) in [
            (&[][..], ""),
            (&[""][..], ""),
            (&["abc"][..], "abc"),
            (&["ab", "", "cd", "efgh"][..], "abcdefgh"),
            (&["", "abcdefgh"][..], "abcdefgh"),
        ] {
            let read = read_body(frames(parts), 8).await.ok().unwrap();
            assert_eq!(read, whole, "{parts:?}");
        }
        assert_eq!(
            status_of(frames(&["abcdefghi"]), 8).await,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status_of(frames(&["abcd", "efgh", "i"]), 8).await,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let failing: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"ab")),
            Err(std::io::Error::other("reset")),
        ];
        let failing = Body::from_stream(futures::stream::iter(failing));
        assert_eq!(status_of(failing, 8).await, StatusCode::BAD_REQUEST);
    }

    /// The same pairs as `form_urlencoded::parse`, decoding or not.
    #[test]
    fn query_pairs_are_form_urlencoded_s() {
        for query in [
            "",
            "&",
            "a",
            "a=",
            "=b",
            "a=b",
            "a=b=c",
            "a=1&b=2&a=3",
            "&&a=1&&b&=&c=",
            "customer_id=customer_1&feature_code=api_calls&quantity=1.5",
            "a=%41%zz&b=x+y",
            "a+b=c%20d&e=%E2%82%AC",
            "a=%FF",
        ] {
            let expected: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
            assert_eq!(query_pairs(query), expected, "{query:?}");
        }
    }
}
