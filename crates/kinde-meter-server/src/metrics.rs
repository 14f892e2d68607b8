//! What the server has done, for `GET /metrics` in the Prometheus text
//! exposition format (version 0.0.4): this module records and encodes; the
//! middleware that times requests and the handler are in `routes`.
//!
//! The metrics, the label policy and why `prometheus-client`:
//! `docs/design.md#metrics`.

use std::{
    collections::HashMap,
    fmt,
    hash::{BuildHasherDefault, Hasher},
    sync::{Arc, Mutex, OnceLock, PoisonError, RwLock},
    time::{Duration, Instant},
};

use axum::{
    http::{HeaderValue, Method, header},
    response::{IntoResponse, Response},
};
use kinde_meter_store::Store;
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

use crate::auth::AuthFailure;
use crate::rate_limit::LimitKind;

/// `route` of a request that matched no route (answered 404).
pub const UNMATCHED: &str = "unmatched";

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// How a webhook delivery attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The endpoint answered 2xx.
    Delivered,
    /// It did not; the delivery is retried.
    Failed,
    /// It did not, and the delivery had been failing for 72 h: no more attempts.
    GivenUp,
}

impl DeliveryOutcome {
    /// Every outcome.
    pub const ALL: [DeliveryOutcome; 3] = [
        DeliveryOutcome::Delivered,
        DeliveryOutcome::Failed,
        DeliveryOutcome::GivenUp,
    ];

    /// The `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Failed => "failed",
            DeliveryOutcome::GivenUp => "given_up",
        }
    }
}

/// The outbox backlog as the delivery worker last read it.
#[derive(Debug, Default)]
struct WebhookBacklog {
    pending: u64,
    /// The oldest pending event's age when read, and when that was.
    oldest: Option<(Duration, Instant)>,
}

/// The server's metrics: the registry `/metrics` encodes and the handles the
/// request path updates.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    rate_limited: Family<LimitLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    webhook_deliveries: Family<OutcomeLabels, Counter>,
    webhook_backlog: Arc<Mutex<WebhookBacklog>>,
    /// The paths of the router's routes ([`Metrics::register_routes`]).
    routes: OnceLock<Vec<&'static str>>,
    /// The request counter and latency histogram of each (route, method,
    /// status) seen: handles to the families' series, found without hashing
    /// label strings.
    series: RwLock<HashMap<SeriesKey, (Counter, Histogram), BuildHasherDefault<KeyHasher>>>,
}

/// A request series by the addresses of its `&'static str` labels, and its
/// status. Two addresses of the same text only make two entries for the same
/// series.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct SeriesKey {
    route: usize,
    method: usize,
    status: u16,
}

/// Hashes the few integers of a [`SeriesKey`] (a multiply and a rotate each):
/// the keys are not chosen by clients, labels are a closed set.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Fresh metrics; `store` reports the write path (`None`: not exported).
    pub fn new(store: Option<Arc<dyn Store>>) -> Metrics {
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
        let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "kinde_meter_webhook_deliveries",
            "Webhook delivery attempts by outcome: delivered (2xx), failed (to be retried), given_up (failing for 72 h)",
            webhook_deliveries.clone(),
        );
        let webhook_backlog = Arc::new(Mutex::new(WebhookBacklog::default()));
        registry.register_collector(Box::new(WebhookCollector(webhook_backlog.clone())));
        if let Some(store) = store {
            registry.register_collector(Box::new(StoreCollector(store)));
        }
        let metrics = Metrics {
            registry,
            requests,
            latency,
            rate_limited,
            auth_failures,
            webhook_deliveries,
            webhook_backlog,
            routes: OnceLock::new(),
            series: RwLock::default(),
        };
        metrics.create_known_series();
        metrics
    }

    /// Creates the series whose labels are known in advance, at zero, so that
    /// they are scraped (and `rate()` works) before their first event.
    fn create_known_series(&self) {
        for limit in LimitKind::ALL {
            drop(self.rate_limited.get_or_create(&LimitLabels {
                limit: limit.label(),
            }));
        }
        for failure in AuthFailure::ALL {
            drop(self.auth_failures.get_or_create(&ReasonLabels {
                reason: failure.label(),
            }));
        }
        for outcome in DeliveryOutcome::ALL {
            drop(self.webhook_deliveries.get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            }));
        }
    }

    /// Makes the router's routes known, as `(method, path)`: their latency
    /// series exist at zero from now on, and [`route_label`](Self::route_label)
    /// labels requests with their paths. Only the first call's paths label.
    pub fn register_routes(&self, routes: impl IntoIterator<Item = (&'static str, &'static str)>) {
        let mut paths = Vec::new();
        for (method, route) in routes {
            drop(self.latency.get_or_create(&RouteLabels { route, method }));
            if !paths.contains(&route) {
                paths.push(route);
            }
        }
        let _ = self.routes.set(paths);
    }

    /// The `route` label of a request: the path of its matched route (axum's
    /// `MatchedPath`), [`UNMATCHED`] for none, `other` for a route not
    /// registered; never the request's URI.
    pub fn route_label(&self, matched: Option<&str>) -> &'static str {
        let Some(matched) = matched else {
            return UNMATCHED;
        };
        self.routes
            .get()
            .and_then(|paths| paths.iter().find(|path| **path == matched))
            .copied()
            .unwrap_or("other")
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

    /// Counts a webhook delivery attempt.
    pub fn webhook_delivery(&self, outcome: DeliveryOutcome) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
    }

    /// The outbox backlog just read by the delivery worker: `pending`
    /// deliveries, the oldest of their events `oldest_age` old. Scrapes report
    /// it (the age growing with time since) without asking the store.
    pub fn set_webhook_backlog(&self, pending: u64, oldest_age: Option<Duration>) {
        let mut backlog = self
            .webhook_backlog
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *backlog = WebhookBacklog {
            pending,
            oldest: oldest_age.map(|age| (age, Instant::now())),
        };
    }

    /// Counts and times one answered request: `route` is the matched route's
    /// path (or [`UNMATCHED`]), `method` from [`method_label`], `elapsed` the
    /// time it took.
    pub fn observe(
        &self,
        route: &'static str,
        method: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        let key = SeriesKey {
            route: route.as_ptr() as usize,
            method: method.as_ptr() as usize,
            status,
        };
        let seconds = elapsed.as_secs_f64();
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        if let Some((requests, latency)) = series.get(&key) {
            requests.inc();
            latency.observe(seconds);
            return;
        }
        drop(series);
        let requests = self
            .requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .clone();
        let latency = self
            .latency
            .get_or_create(&RouteLabels { route, method })
            .clone();
        requests.inc();
        latency.observe(seconds);
        self.series
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, (requests, latency));
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

/// Reads the writer's counters at scrape time.
struct StoreCollector(Arc<dyn Store>);

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
            (
                "kinde_meter_commits_one_flight",
                "Of kinde_meter_commits_total, those sent in one flight without reading their aggregates first (PostgreSQL)",
                stats.one_flight_batches,
            ),
            (
                "kinde_meter_one_flights_stale",
                "Batches sent in one flight that found another writer had moved their aggregates, rolled back and run again (PostgreSQL)",
                stats.stale_flights,
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

/// Reports the webhook backlog the worker last read (zero before it has).
struct WebhookCollector(Arc<Mutex<WebhookBacklog>>);

impl fmt::Debug for WebhookCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookCollector")
    }
}

impl Collector for WebhookCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let (pending, oldest) = {
            let backlog = self.0.lock().unwrap_or_else(|e| e.into_inner());
            (backlog.pending, backlog.oldest)
        };
        let gauge = ConstGauge::new(i64::try_from(pending).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "kinde_meter_webhook_pending",
            "Webhook deliveries neither delivered nor given up yet (read from the store every second or so)",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)?;
        let age = oldest.map_or(0.0, |(age, read_at)| {
            (age + read_at.elapsed()).as_secs_f64()
        });
        let gauge = ConstGauge::new(age);
        let metric = encoder.encode_descriptor(
            "kinde_meter_webhook_oldest_pending",
            "Age of the oldest event with a pending webhook delivery (0 when none)",
            Some(&Unit::Seconds),
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

/// The `GET /metrics` answer: [`Metrics::encode`] with its content type.
pub fn exposition(metrics: &Metrics) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
        )],
        metrics.encode(),
    )
        .into_response()
}

/// The `method` label: one of the standard methods, else `OTHER`.
pub fn method_label(method: &Method) -> &'static str {
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
