//! The layers around every route (404s and 405s included), applied once to the
//! whole router by [`around`]: request id, metrics and the request's log line,
//! log span, panic catcher; and, outside them all, draining the rest of a
//! body an answer was given before (`drained`).
//!
//! Design: `docs/design.md#request-pipeline`; `docs/limits.md#keep-alive`;
//! the log line: `docs/operations.md#logs`.

use std::{
    any::Any,
    convert::Infallible,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes, HttpBody},
    extract::{MatchedPath, Request},
    http::{self, HeaderName, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::Route,
};
use futures::FutureExt;
use http_body::{Frame, SizeHint};
use kinde_meter_core::ErrorCode;
use tokio::sync::oneshot;
use tower::{Layer, Service};
use tower_http::request_id::{MakeRequestId, RequestId};
use tracing::{Instrument, Level, Span};

use crate::error::ApiError;
use crate::extract::{AuthenticatedClient, BODY_LIMIT};
use crate::metrics::{self, Metrics};

/// The request id header, read from requests and set on every answer.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps `router` (every route and the fallbacks) in the layers of this module.
pub fn around<S>(router: Router<S>, metrics: Arc<Metrics>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(AroundLayer { metrics })
}

/// The layers of this module as one: a hand-written service rather than a
/// stack of `from_fn` middleware and `tower-http` layers, because each of
/// those boxed the request's future or body, cloned its service or copied
/// the request id again (together about half the CPU of a `/healthz`,
/// measured with callgrind). Outermost first, what it does is what the stack
/// did (`docs/design.md#request-pipeline`): drain the unread body, set the
/// request id, count and log the answer, the request's span, copy the id
/// onto the answer, catch a panic.
#[derive(Clone)]
struct AroundLayer {
    metrics: Arc<Metrics>,
}

impl Layer<Route> for AroundLayer {
    type Service = Around;

    fn layer(&self, inner: Route) -> Around {
        Around {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// One route (or fallback) wrapped by [`AroundLayer`].
#[derive(Clone)]
struct Around {
    inner: Route,
    metrics: Arc<Metrics>,
}

type Answer = Result<Response, Infallible>;

impl Service<Request> for Around {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        // The client's id, else a fresh one (no handler reads it from the
        // request: it is in the span, the log line and the answer).
        let request_id = match request.headers().get(&REQUEST_ID) {
            Some(id) => id.clone(),
            None => uuid_v4(rand::random()),
        };
        // Shared buffers: reference counts, not copies.
        let matched = request.extensions().get::<MatchedPath>().cloned();
        let label = self
            .metrics
            .route_label(matched.as_ref().map(MatchedPath::as_str));
        let probe = PROBES.contains(&route_of(matched.as_ref()));
        let method = request.method().clone();
        let path = PathOf(request.uri().clone());
        let span = request_span(probe, &method, path.as_str(), &request_id);
        let unread = unread_body(&mut request);
        // The route's `call` only clones its service; the handler runs when
        // the future is polled. A panic in either is caught.
        let called = span
            .in_scope(|| std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))));
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let answered = match called {
                Ok(future) => AssertUnwindSafe(future.instrument(span.clone()))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| Ok(internal_error(panic))),
                Err(panic) => Ok(internal_error(panic)),
            };
            let Ok(mut response) = answered;
            if !span.is_disabled() && response.body().size_hint().exact().is_none() {
                // A streamed body (an export) is written in the request's span.
                response = response.map(|body| Body::new(InSpan { body, span }));
            }
            response
                .headers_mut()
                .insert(REQUEST_ID, request_id.clone());
            let elapsed = started.elapsed();
            let status = response.status().as_u16();
            metrics.observe(label, metrics::method_label(&method), status, elapsed);
            request_line(
                probe,
                RequestLine {
                    method: &method,
                    route: route_of(matched.as_ref()),
                    path: path.as_str(),
                    status,
                    elapsed,
                    client_id: response
                        .extensions()
                        .get::<AuthenticatedClient>()
                        .map(|AuthenticatedClient(principal)| principal.client_id.as_str()),
                    request_id: request_id.to_str().ok(),
                },
            );
            if let Some(returned) = unread
                && !drained(returned).await
            {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response)
        })
    }
}

/// The matched route's path, [`metrics::UNMATCHED`] for none.
fn route_of(matched: Option<&MatchedPath>) -> &str {
    matched.map_or(metrics::UNMATCHED, MatchedPath::as_str)
}

/// The path of a request's URI, kept by reference count.
struct PathOf(http::Uri);

impl PathOf {
    fn as_str(&self) -> &str {
        self.0.path()
    }
}

/// A response body polled inside the request's span.
struct InSpan {
    body: Body,
    span: Span,
}

impl HttpBody for InSpan {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Puts a [`Tracked`] body in `request` when it has one, and where its
/// unread rest will arrive.
fn unread_body(request: &mut Request) -> Option<oneshot::Receiver<Leftover>> {
    if request.body().is_end_stream() {
        return None;
    }
    let (back, returned) = oneshot::channel();
    let body = std::mem::take(request.body_mut());
    *request.body_mut() = Body::new(Tracked {
        inner: Some(body),
        read: 0,
        broken: false,
        back: Some(back),
    });
    Some(returned)
}

/// Whether what the handler left of the body was read to its end (then the
/// connection stays open).
async fn drained(mut returned: oneshot::Receiver<Leftover>) -> bool {
    match returned.try_recv() {
        Ok(Leftover::Unread { body, read }) => drain(body, read).await,
        Ok(Leftover::Broken) => false,
        // Read to its end (nothing sent back), or still held by someone:
        // then the server decides for itself.
        Err(_) => true,
    }
}

// An answer given before the body was read: the rest of the body is read and
// discarded after the answer is made, up to [`BODY_LIMIT`] in all (a body
// arrives within the transport's request timeout or fails). A body drained to
// its end leaves the connection ready for the next request; one that is larger
// than the limit, fails or times out gets the answer with `Connection: close`.
// Without this, the HTTP server would close a connection whose body was not
// read, without saying so, and a client reusing it would get a reset instead
// of the answer.

/// Reads `body` to its end, `read` bytes of it having been read already;
/// false when it holds more than [`BODY_LIMIT`] in all or fails to arrive.
async fn drain(mut body: Body, mut read: usize) -> bool {
    loop {
        // A declared length over the limit is not worth reading.
        let announced = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX);
        if read.saturating_add(announced) > BODY_LIMIT {
            return false;
        }
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => return true,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read = read.saturating_add(data.len());
                }
            }
            Some(Err(_)) => return false,
        }
    }
}

/// What a request body left unread when it was dropped.
enum Leftover {
    /// The rest of the body, `read` bytes having been read.
    Unread { body: Body, read: usize },
    /// The body failed (a timeout, a broken connection): it cannot be drained.
    Broken,
}

/// A request body that, dropped before its end, hands itself back to
/// [`drained`].
struct Tracked {
    inner: Option<Body>,
    read: usize,
    broken: bool,
    back: Option<oneshot::Sender<Leftover>>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.back = None,
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.read = this.read.saturating_add(data.len());
                }
            }
            Poll::Ready(Some(Err(_))) => this.broken = true,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let (Some(back), Some(body)) = (self.back.take(), self.inner.take()) else {
            return;
        };
        let leftover = if self.broken {
            Leftover::Broken
        } else {
            Leftover::Unread {
                body,
                read: self.read,
            }
        };
        let _ = back.send(leftover);
    }
}

/// A fresh request id: a random (v4) UUID from the thread's generator (no
/// system call per request).
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _request: &http::Request<B>) -> Option<RequestId> {
        Some(RequestId::new(uuid_v4(rand::random())))
    }
}

/// `bits` as a version 4 (random) UUID in its hyphenated text form.
fn uuid_v4(bits: u128) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = (bits & !(0xF << 76)) | (0x4 << 76);
    let bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    let bytes = bits.to_be_bytes();
    let mut text = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0xF)];
        at += 2;
    }
    HeaderValue::from_bytes(&text).expect("hex digits and hyphens are a header value")
}

/// The span of one request, at the level of its log line: a probe's span is
/// not even built unless DEBUG is on. The path has no query string (it could
/// hold a token a client put there by mistake).
fn request_span(probe: bool, method: &Method, path: &str, request_id: &HeaderValue) -> Span {
    let id = request_id.to_str().unwrap_or("-");
    if probe {
        tracing::debug_span!("request", method = %method, path, request_id = id)
    } else {
        tracing::info_span!("request", method = %method, path, request_id = id)
    }
}

/// Target of the request lines, for `RUST_LOG` (`kinde_meter::request=debug`
/// adds the health checks' lines).
pub const REQUEST_LOG_TARGET: &str = "kinde_meter::request";

/// Routes polled by load balancers and scrapers: their lines are at DEBUG.
const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// What the request's one log line says (`docs/operations.md#logs`): method,
/// matched route, path without the query string, status, latency, the
/// caller's client id when its token was genuine, and the request id. Never a
/// header or the body.
struct RequestLine<'a> {
    method: &'a Method,
    route: &'a str,
    path: &'a str,
    status: u16,
    elapsed: Duration,
    client_id: Option<&'a str>,
    request_id: Option<&'a str>,
}

/// Writes the request's line, at DEBUG for a probe and INFO otherwise;
/// outside the request's span, the line carries its own fields.
fn request_line(probe: bool, line: RequestLine<'_>) {
    let RequestLine {
        method,
        route,
        path,
        status,
        elapsed,
        client_id,
        request_id,
    } = line;
    // Whole microseconds, so the number reads as milliseconds with 3 decimals.
    let latency_ms = elapsed.as_micros() as f64 / 1000.0;
    macro_rules! request_line {
        ($level:expr) => {
            tracing::event!(
                target: REQUEST_LOG_TARGET,
                $level,
                // A token (RFC 9110): no space or quote to forge a field with.
                method = %method,
                route,
                path,
                status,
                latency_ms,
                client_id,
                request_id,
            )
        };
    }
    if probe {
        request_line!(Level::DEBUG);
    } else {
        request_line!(Level::INFO);
    }
}

/// The answer to a panic: nothing of the panic is shown to the client.
fn internal_error(_panic: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked; answered 500 INTERNAL_ERROR");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::InternalError,
        "internal error",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, routing::get};
    use tower::ServiceExt;

    use super::*;

    fn app() -> Router {
        let router = Router::new()
            .route(
                "/panic",
                get(|| async {
                    if true {
                        panic!("secret detail of the panic");
                    }
                    "unreachable"
                }),
            )
            .route("/ok", get(|| async { "fine" }));
        around(router, Arc::new(Metrics::new(None)))
    }

    async fn call(app: &Router, path: &str) -> (StatusCode, http::HeaderMap, String) {
        let response = app
            .clone()
            .oneshot(http::Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_kindes_shape_and_the_next_request_is_served() {
        let app = app();
        let (status, headers, body) = call(&app, "/panic").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            r#"{"errors":[{"code":"INTERNAL_ERROR","message":"internal error"}]}"#
        );
        assert!(!body.contains("secret"));
        assert_eq!(headers["content-type"], "application/json");
        assert!(headers.contains_key(REQUEST_ID), "{headers:?}");
        let (status, _, body) = call(&app, "/ok").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "fine"));
    }

    /// Log lines written while `f` runs on this thread.
    fn logs_of(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_requests_log_lines_carry_its_id() {
        let logs = logs_of(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async {
                let router = Router::new().route(
                    "/logs",
                    get(|| async {
                        tracing::info!("inside the handler");
                    }),
                );
                let app = around(router, Arc::new(Metrics::new(None)));
                let request = http::Request::get("/logs?token=secret")
                    .header(REQUEST_ID, "id-from-the-client")
                    .body(Body::empty())
                    .unwrap();
                let response = app.clone().oneshot(request).await.unwrap();
                assert_eq!(response.headers()[REQUEST_ID], "id-from-the-client");
                let response = app
                    .oneshot(http::Request::get("/nowhere").body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::NOT_FOUND);
            });
        });
        let line = logs
            .lines()
            .find(|l| l.contains("inside the handler"))
            .unwrap_or_else(|| panic!("no handler log line in {logs:?}"));
        // Quoted (Debug), so that an id cannot forge the rest of a line.
        assert!(
            line.contains(r#"request_id="id-from-the-client""#),
            "{line}"
        );
        assert!(
            line.contains(r#"path="/logs""#) && !line.contains("secret"),
            "{line}"
        );
    }

    #[test]
    fn one_line_per_request_names_the_matched_route_even_after_a_panic_and_not_health_checks() {
        let logs = logs_of(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async {
                let router = Router::new()
                    .route("/items/{id}", get(|| async { "item" }))
                    .route(
                        "/panic",
                        get(|| async {
                            if true {
                                panic!("in the handler");
                            }
                            "unreachable"
                        }),
                    )
                    .route("/healthz", get(|| async { "ok" }));
                let app = around(router, Arc::new(Metrics::new(None)));
                for path in ["/items/42?secret=query", "/panic", "/healthz"] {
                    let request = http::Request::get(path)
                        .header(REQUEST_ID, format!("id-{}", path.len()))
                        .body(Body::empty())
                        .unwrap();
                    app.clone().oneshot(request).await.unwrap();
                }
            });
        });
        let lines: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains(REQUEST_LOG_TARGET))
            .collect();
        assert_eq!(lines.len(), 2, "{logs}");
        for part in [
            "INFO",
            "method=GET",
            r#"route="/items/{id}""#,
            r#"path="/items/42""#,
            "status=200",
            "latency_ms=",
            r#"request_id="id-22""#,
        ] {
            assert!(lines[0].contains(part), "{part:?} not in {}", lines[0]);
        }
        assert!(!lines[0].contains("client_id"), "{}", lines[0]);
        assert!(
            lines[1].contains(r#"route="/panic""#) && lines[1].contains("status=500"),
            "{}",
            lines[1]
        );
        assert!(!logs.contains("secret"), "{logs}");
    }

    #[test]
    fn request_ids_are_random_v4_uuids() {
        let mut make = RandomRequestId;
        let request = http::Request::new(());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = make.make_request_id(&request).unwrap();
            let text = id.header_value().to_str().unwrap().to_owned();
            let groups: Vec<&str> = text.split('-').collect();
            assert_eq!(
                groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12],
                "{text}"
            );
            assert!(groups[2].starts_with('4'), "{text}");
            assert!(matches!(&groups[3][..1], "8" | "9" | "a" | "b"), "{text}");
            assert!(text.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
            assert!(seen.insert(text));
        }
        assert_eq!(
            uuid_v4(u128::MAX).to_str().unwrap(),
            "ffffffff-ffff-4fff-bfff-ffffffffffff"
        );
        assert_eq!(
            uuid_v4(0).to_str().unwrap(),
            "00000000-0000-4000-8000-000000000000"
        );
    }
}
