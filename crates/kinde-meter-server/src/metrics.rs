//! `GET /metrics` (SPEC §4): what the server has done, in the Prometheus text
//! exposition format (version 0.0.4).
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `kinde_meter_http_requests_total` | `route`, `method`, `status` | answered requests |
//! | `kinde_meter_http_request_duration_seconds` | `route`, `method` | histogram, routing to answer |
//! | `kinde_meter_rate_limited_total` | `limit` (`client`, `source_address`) | 429s of the two rate limits |
//! | `kinde_meter_auth_failures_total` | `reason` | 403s of the auth middleware, by cause |
//! | `kinde_meter_usage_records_committed_total` | — | usage records in committed write transactions |
//! | `kinde_meter_commits_total` | — | committed write transactions (group-commit batches) |
//! | `kinde_meter_commits_failed_total` | — | write transactions rolled back |
//! | `kinde_meter_write_queue_depth` | — | writes waiting for the writer |
//!
//! `usage_records_committed_total / commits_total` is the average group-commit
//! batch, the figure `PERFORMANCE-NOTES.md` asks benchmarks to report. The store
//! figures are read from the writer's own counters at scrape time, so they cost
//! the write path nothing.
//!
//! Labels come only from fixed sets: `route` is the path of the matched entry of
//! [`ROUTES`] (`unmatched` for a 404), never the raw URI; `method` one of the
//! standard methods (else `OTHER`); `status` the status code; `reason` and
//! `limit` constants of this module. Tokens, client ids and secrets, agreement
//! and customer ids never become labels: they would leak through an endpoint
//! that needs no token, and each would make a new series (unbounded
//! cardinality). Label values are `&'static str`s and the status code, so
//! recording a request builds no strings; a series is inserted once, at its
//! first request.
//!
//! Why `prometheus-client`: it is the Prometheus project's own Rust client,
//! small (no HTTP server, no background thread, four dependencies), with typed
//! label sets that hash `&'static str`s rather than building strings per
//! request, and collectors that read values at scrape time (used for the
//! writer's counters). `metrics` + `metrics-exporter-prometheus` would add a
//! global recorder and an exporter built for running its own listener, which
//! this server does not want.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, Method, header},
    response::{IntoResponse, Response},
};
use kinde_meter_store::sqlite::{SqliteStore, WriterStats};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, prometheus_text},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::Histogram,
    },
    registry::{Registry, Unit},
};

use crate::auth::AuthError;
use crate::routes::ROUTES;
use crate::state::AppState;

/// `route` of a request that matched no route (answered 404).
const UNMATCHED: &str = "unmatched";

/// Upper bounds of the latency histogram's buckets, in seconds: from well under
/// a commit on a local disk to the 5 s a write may wait before a 503.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_5, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.5, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Which rate limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// The caller's per-client bucket.
    Client,
    /// The per-source-address bucket of invalid credentials.
    SourceAddress,
}

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

impl LimitKind {
    fn label(self) -> &'static str {
        match self {
            LimitKind::Client => "client",
            LimitKind::SourceAddress => "source_address",
        }
    }
}

impl AuthFailure {
    /// One of each reason (token errors with any detail).
    const ALL: [AuthFailure; 14] = [
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

    fn label(self) -> &'static str {
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

/// The write path's counters, read at each scrape. Implemented by the SQLite
/// store; another store reports the same by implementing it.
pub trait WritePathStats: Send + Sync + 'static {
    /// Group-commit counters since the store opened.
    fn writer_stats(&self) -> WriterStats;
    /// Writes waiting for the writer right now.
    fn queued_writes(&self) -> usize;
}

impl WritePathStats for SqliteStore {
    fn writer_stats(&self) -> WriterStats {
        self.stats()
    }

    fn queued_writes(&self) -> usize {
        self.queued_jobs()
    }
}

/// The server's metrics: the registry `/metrics` encodes and the handles the
/// request path updates.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    rate_limited: Family<LimitLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Fresh metrics; `store` reports the write path (`None`: not exported).
    pub fn new(store: Option<Arc<dyn WritePathStats>>) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "kinde_meter_http_requests",
            "HTTP requests answered, by matched route, method and status",
            requests.clone(),
        );
        let latency: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        registry.register_with_unit(
            "kinde_meter_http_request_duration",
            "Time from routing to the answer, by matched route and method",
            Unit::Seconds,
            latency.clone(),
        );
        let rate_limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "kinde_meter_rate_limited",
            "Requests refused 429 by a rate limit: client (per azp) or source_address (invalid credentials)",
            rate_limited.clone(),
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "kinde_meter_auth_failures",
            "Requests refused 403 by authentication or authorization, by reason",
            auth_failures.clone(),
        );
        if let Some(store) = store {
            registry.register_collector(Box::new(StoreCollector(store)));
        }
        let metrics = Metrics {
            registry,
            requests,
            latency,
            rate_limited,
            auth_failures,
        };
        metrics.create_known_series();
        metrics
    }

    /// Creates the series whose labels are known in advance, at zero, so that
    /// they are scraped (and `rate()` works) before their first event.
    fn create_known_series(&self) {
        for route in ROUTES {
            let method = Method::from_bytes(route.method.as_bytes()).unwrap_or_default();
            drop(self.latency.get_or_create(&RouteLabels {
                route: route.path,
                method: method_label(&method),
            }));
        }
        for limit in [LimitKind::Client, LimitKind::SourceAddress] {
            drop(self.rate_limited.get_or_create(&LimitLabels {
                limit: limit.label(),
            }));
        }
        for failure in AuthFailure::ALL {
            drop(self.auth_failures.get_or_create(&ReasonLabels {
                reason: failure.label(),
            }));
        }
    }

    /// Counts a 429 of `limit`.
    pub fn rate_limited(&self, limit: LimitKind) {
        self.rate_limited
            .get_or_create(&LimitLabels {
                limit: limit.label(),
            })
            .inc();
    }

    /// Counts a 403 of the auth middleware.
    pub fn auth_failure(&self, failure: AuthFailure) {
        let reason = failure.label();
        self.auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    fn observe(&self, route: &'static str, method: &'static str, status: u16, started: Instant) {
        let seconds = started.elapsed().as_secs_f64();
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route, method })
            .observe(seconds);
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }

    /// The layer that counts and times every request of a router.
    pub fn layer(self: &Arc<Self>) -> MetricsLayer {
        MetricsLayer(self.clone())
    }
}

/// Reads the writer's counters at scrape time.
struct StoreCollector(Arc<dyn WritePathStats>);

impl fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = self.0.writer_stats();
        let counters = [
            (
                "kinde_meter_usage_records_committed",
                "Usage records in committed write transactions (each stored, or refused on its own with a 400 code); divided by kinde_meter_commits_total, the average group-commit batch",
                stats.records,
            ),
            (
                "kinde_meter_commits",
                "Write transactions committed (group-commit batches)",
                stats.batches,
            ),
            (
                "kinde_meter_commits_failed",
                "Write transactions rolled back; their writes were answered 503",
                stats.failed_batches,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let queued = i64::try_from(self.0.queued_writes()).unwrap_or(i64::MAX);
        let gauge = ConstGauge::new(queued);
        let metric = encoder.encode_descriptor(
            "kinde_meter_write_queue_depth",
            "Writes queued for the writer and not yet taken into a transaction",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "Operations", responses(
    (status = 200, description = "Prometheus text exposition format, version 0.0.4", content_type = "text/plain", body = String),
))]
pub async fn serve(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// The `route` label of a matched path: the static path of its [`ROUTES`] entry.
fn route_label(request: &Request) -> &'static str {
    let Some(matched) = request.extensions().get::<MatchedPath>() else {
        return UNMATCHED;
    };
    let path = matched.as_str();
    ROUTES
        .iter()
        .find(|r| r.path == path)
        .map_or("other", |r| r.path)
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Counts and times every request of the router it wraps (after routing, so
/// the matched path is known).
#[derive(Clone)]
pub struct MetricsLayer(Arc<Metrics>);

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service of [`MetricsLayer`].
#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> tower::Service<Request> for MetricsService<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = route_label(&request);
        let method = method_label(request.method());
        MetricsFuture {
            inner: self.inner.call(request),
            record: Some(Record {
                metrics: self.metrics.clone(),
                route,
                method,
                started: Instant::now(),
            }),
        }
    }
}

struct Record {
    metrics: Arc<Metrics>,
    route: &'static str,
    method: &'static str,
    started: Instant,
}

pin_project_lite::pin_project! {
    /// The response future of [`MetricsService`].
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        record: Option<Record>,
    }
}

impl<F, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some(record)) = (&output, this.record.take()) {
            record.metrics.observe(
                record.route,
                record.method,
                response.status().as_u16(),
                record.started,
            );
        }
        Poll::Ready(output)
    }
}
