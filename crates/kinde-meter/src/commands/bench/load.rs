//! The load generator: a fixed number of requests over a fixed number of
//! concurrent keep-alive connections, each connection sending one request at a
//! time and taking the next number until all are taken. A fixed count, not a
//! deadline, so that the stored usage can be compared exactly with what was
//! acknowledged (a timed run stops counting while requests are still in flight).
//!
//! It is meant to cost the machine little, since it shares it with the server
//! (docs/design.md#benchmark): one hyper HTTP/1.1 client connection
//! (`hyper::client::conn::http1`) per connection over a plain TCP stream, no
//! pool, no redirects, no URL parsing per request. Every request is built from
//! parts made once ([`Prepared`]): origin-form URIs, header maps and `Bytes`
//! bodies, which a request clones (reference counts, one small header map).
//! Plain HTTP only (`http://`). The connections are made before the clock
//! starts; one that breaks is made again before its next request.
//!
//! Closed loop by default: a connection sends its next request as soon as the
//! previous one is answered. With a [`Pace`] (`--rate`) the run is open loop:
//! request `i` is due at `start + i / rate` whatever the answers do, and its
//! latency is measured from the time it was due when it is sent late (every
//! connection busy, or the generator behind), so that a slow answer shows in
//! the latency of every request it held up (no coordinated omission). Tokio's
//! timer fires on millisecond ticks: a request is released up to 1 ms before
//! it is due rather than after, and its latency then runs from when it was sent.
//!
//! A [`Workload`] has one or more kinds of request (`mixed` has three) sent in
//! a fixed cycle; each kind's latencies go into its own HDR histogram and its
//! answers are counted by status.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{
    HeaderMap, Request, Uri,
    client::conn::http1::{self, SendRequest},
    header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderName, HeaderValue},
};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

/// Longest latency a histogram holds, in microseconds (beyond the client's
/// timeout of 60 s); longer ones are recorded as this.
const MAX_LATENCY_US: u64 = 120_000_000;

/// How long one request may take before it counts as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long making a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The header that carries a request's idempotency key (`single-keyed`).
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// How early an open-loop request may be released (one tick of tokio's timer).
const TIMER_TICK: Duration = Duration::from_millis(1);

/// Key under which failures without an HTTP answer are counted.
pub const TRANSPORT_ERROR: &str = "transport error";

/// What a run sends.
pub struct Workload {
    /// The kinds of request.
    pub kinds: Vec<RequestKind>,
    /// Request `i` is of kind `cycle[i % cycle.len()]`.
    pub cycle: Vec<usize>,
}

impl Workload {
    /// A workload of one kind of request.
    pub fn uniform(kind: RequestKind) -> Workload {
        Workload {
            kinds: vec![kind],
            cycle: vec![0],
        }
    }

    /// Request `i`'s kind, and its number among the requests of that kind.
    fn pick(&self, i: usize) -> (usize, usize) {
        let kind = self.cycle[i % self.cycle.len()];
        let per_cycle = self.cycle.iter().filter(|k| **k == kind).count();
        let before = self.cycle[..i % self.cycle.len()]
            .iter()
            .filter(|k| **k == kind)
            .count();
        (kind, i / self.cycle.len() * per_cycle + before)
    }
}

/// One kind of request: request `j` of this kind is the `j % n`-th body or URL.
pub struct RequestKind {
    /// Its name in reports (`write`, `read`, `check`, or the mode's name).
    pub name: &'static str,
    pub method: Method,
    /// Whether it carries the bearer token.
    pub authorised: bool,
    /// Whether its 200 answers are batch answers whose per-record results count.
    pub batch: bool,
    /// Each request's `Idempotency-Key`, if it carries one: this prefix, `-`,
    /// and the request's number in its kind (so unique in the run).
    pub keys: Option<String>,
}

/// A request's method, with what it sends (absolute `http://` URLs).
pub enum Method {
    Post { url: String, bodies: Vec<String> },
    Get { urls: Vec<String> },
}

/// The pace of an open-loop run: `per_second` requests per second over all
/// connections together.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub per_second: f64,
}

/// What one kind of request got.
pub struct KindOutcome {
    pub name: &'static str,
    pub requests: u64,
    /// Latencies of the answered requests, in microseconds.
    pub latency: Histogram<u64>,
    /// Answers by status, and failures without an answer under [`TRANSPORT_ERROR`].
    pub answers: BTreeMap<String, u64>,
    /// Per-record results of the 200 batch answers, by code.
    pub record_results: BTreeMap<String, u64>,
    pub first_transport_error: Option<String>,
}

impl KindOutcome {
    fn new(name: &'static str) -> KindOutcome {
        KindOutcome {
            name,
            requests: 0,
            latency: new_histogram(),
            answers: BTreeMap::new(),
            record_results: BTreeMap::new(),
            first_transport_error: None,
        }
    }

    /// Adds `other`'s counts to this one's.
    pub fn merge(&mut self, other: &KindOutcome) {
        self.requests += other.requests;
        self.latency
            .add(&other.latency)
            .expect("histograms of the same bounds add");
        for (status, count) in &other.answers {
            *self.answers.entry(status.clone()).or_default() += count;
        }
        for (code, count) in &other.record_results {
            *self.record_results.entry(code.clone()).or_default() += count;
        }
        if self.first_transport_error.is_none() {
            self.first_transport_error = other.first_transport_error.clone();
        }
    }

    /// The 200 answers.
    pub fn ok(&self) -> u64 {
        self.answers.get("200").copied().unwrap_or(0)
    }
}

/// What a run got.
pub struct LoadOutcome {
    /// From the first request sent (the connections made) to the last answer.
    pub elapsed: Duration,
    /// One per kind of the workload, in its order.
    pub kinds: Vec<KindOutcome>,
}

impl LoadOutcome {
    /// All kinds together.
    pub fn total(&self, name: &'static str) -> KindOutcome {
        let mut total = KindOutcome::new(name);
        for kind in &self.kinds {
            total.merge(kind);
        }
        total
    }
}

/// An empty latency histogram: 1 µs to [`MAX_LATENCY_US`], 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Where the requests go: the server's address and `Host` header, from
/// `http://HOST:PORT` (what follows is each URL's path and query).
pub struct Endpoint {
    addr: SocketAddr,
    host: HeaderValue,
}

impl Endpoint {
    /// Resolves the address of `base` (`http://HOST[:PORT][/…]`): the first
    /// of the host's addresses that takes a connection (`localhost` may
    /// resolve to `::1` for a server listening on 127.0.0.1 only).
    pub async fn resolve(base: &str) -> anyhow::Result<Endpoint> {
        let uri: Uri = base
            .parse()
            .with_context(|| format!("{base} is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("the load generator speaks plain HTTP only: {base} is not http://");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("{base} has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let mut last_error = None;
        let mut found = None;
        for addr in tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("cannot resolve {host}"))?
        {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(_)) => {
                    found = Some(addr);
                    break;
                }
                Ok(Err(e)) => last_error = Some(anyhow::Error::new(e)),
                Err(_) => last_error = Some(anyhow::anyhow!("no connection in time")),
            }
        }
        let addr = match (found, last_error) {
            (Some(addr), _) => addr,
            (None, Some(e)) => return Err(e.context(format!("cannot connect to {base}"))),
            (None, None) => bail!("{host} has no address"),
        };
        let host = HeaderValue::from_str(authority.as_str()).context("the host of the URL")?;
        Ok(Endpoint { addr, host })
    }
}

/// A [`RequestKind`] made ready to send: everything a request needs, built once.
struct Prepared {
    method: hyper::Method,
    /// Origin-form (`/path?query`), one per URL of the kind.
    uris: Vec<Uri>,
    /// `Host`, and `Content-Type` and `Authorization` where they go.
    headers: HeaderMap,
    /// One per body of a POST; one empty body for a GET.
    bodies: Vec<Bytes>,
    batch: bool,
    keys: Option<String>,
}

impl Prepared {
    fn new(kind: &RequestKind, endpoint: &Endpoint, auth: &HeaderValue) -> anyhow::Result<Self> {
        let origin_form = |url: &str| -> anyhow::Result<Uri> {
            let uri: Uri = url.parse().with_context(|| format!("{url} is not a URL"))?;
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            Uri::from_maybe_shared(Bytes::copy_from_slice(path.as_bytes()))
                .with_context(|| format!("the path of {url}"))
        };
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(HOST, endpoint.host.clone());
        if kind.authorised {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        let (method, uris, bodies) = match &kind.method {
            Method::Post { url, bodies } => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                (
                    hyper::Method::POST,
                    vec![origin_form(url)?],
                    bodies.iter().map(|b| Bytes::from(b.clone())).collect(),
                )
            }
            Method::Get { urls } => (
                hyper::Method::GET,
                urls.iter()
                    .map(|u| origin_form(u))
                    .collect::<anyhow::Result<_>>()?,
                vec![Bytes::new()],
            ),
        };
        if uris.is_empty() || bodies.is_empty() {
            bail!("request kind {} has nothing to send", kind.name);
        }
        Ok(Prepared {
            method,
            uris,
            headers,
            bodies,
            batch: kind.batch,
            keys: kind.keys.clone(),
        })
    }

    /// The `j`-th request of this kind.
    fn request(&self, j: usize) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.bodies[j % self.bodies.len()].clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uris[j % self.uris.len()].clone();
        *request.headers_mut() = self.headers.clone();
        if let Some(prefix) = &self.keys
            && let Ok(key) = HeaderValue::try_from(format!("{prefix}-{j}"))
        {
            request.headers_mut().insert(IDEMPOTENCY_KEY, key);
        }
        request
    }
}

/// What one connection saw: `(kind, latency µs)` per answer, and the counts.
struct ConnectionLog {
    latencies: Vec<(usize, u64)>,
    kinds: Vec<KindTally>,
}

/// One connection's counts of one kind of request.
#[derive(Default)]
struct KindTally {
    requests: u64,
    /// Answers by status code (a handful of codes: a list beats a map).
    statuses: Vec<(u16, u64)>,
    transport_errors: u64,
    record_results: BTreeMap<String, u64>,
    first_transport_error: Option<String>,
}

impl KindTally {
    fn answered(&mut self, status: u16) {
        match self.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, count)) => *count += 1,
            None => self.statuses.push((status, 1)),
        }
    }

    fn failed(&mut self, error: impl FnOnce() -> String) {
        self.transport_errors += 1;
        if self.first_transport_error.is_none() {
            self.first_transport_error = Some(error());
        }
    }
}

/// Sends `requests` requests of `workload` to `endpoint` over `connections`
/// concurrent keep-alive connections (HTTP/1.1), closed loop, or open loop at
/// `pace`. Runs on the load generator's runtime.
pub async fn drive(
    endpoint: Arc<Endpoint>,
    workload: Arc<Workload>,
    auth: HeaderValue,
    requests: usize,
    connections: usize,
    pace: Option<Pace>,
) -> anyhow::Result<LoadOutcome> {
    let prepared: Arc<Vec<Prepared>> = Arc::new(
        workload
            .kinds
            .iter()
            .map(|kind| Prepared::new(kind, &endpoint, &auth))
            .collect::<anyhow::Result<_>>()?,
    );
    // Every connection is made before the clock starts.
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let endpoint = endpoint.clone();
        opening.spawn(async move { connect(&endpoint).await });
    }
    let mut senders = Vec::with_capacity(connections);
    while let Some(opened) = opening.join_next().await {
        senders.push(opened.context("a connection task panicked")??);
    }

    let next = Arc::new(AtomicUsize::new(0));
    let interval = pace
        .map(|p| Duration::try_from_secs_f64(1.0 / p.per_second))
        .transpose()
        .map_err(|_| anyhow::anyhow!("no fixed rate of {:?} requests per second", pace))?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for sender in senders {
        let (endpoint, workload, prepared, next) = (
            endpoint.clone(),
            workload.clone(),
            prepared.clone(),
            next.clone(),
        );
        tasks.spawn(async move {
            let (sender, io) = sender;
            let (mut sender, mut io) = (Some(sender), Some(io));
            let mut log = ConnectionLog {
                latencies: Vec::with_capacity(requests / connections + 1),
                kinds: workload
                    .kinds
                    .iter()
                    .map(|_| KindTally::default())
                    .collect(),
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let (k, j) = workload.pick(i);
                let kind = &prepared[k];
                let due = interval.map(|interval| started + interval.mul_f64(i as f64));
                if let Some(due) = due
                    && let Some(release) = due.checked_sub(TIMER_TICK)
                    && release > Instant::now()
                {
                    tokio::time::sleep_until(release.into()).await;
                }
                let tally = &mut log.kinds[k];
                tally.requests += 1;
                // A connection the server closed (after an answer with
                // `Connection: close`, or idle) or that broke is made again.
                let usable = match sender.as_mut() {
                    Some(connection) => with_io(connection.ready(), &mut io).await.is_ok(),
                    None => false,
                };
                if !usable {
                    sender = None;
                    match connect(&endpoint).await {
                        Ok((new, new_io)) => (sender, io) = (Some(new), Some(new_io)),
                        Err(e) => {
                            tally.failed(|| format!("{e:#}"));
                            continue;
                        }
                    }
                }
                let connection = sender.as_mut().expect("connected above");
                let sent = Instant::now();
                let answer = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    with_io(exchange(connection, kind.request(j), kind.batch), &mut io),
                )
                .await;
                let done = Instant::now();
                match answer {
                    Ok(Ok((status, body))) => {
                        // Open loop: from when it was due, unless sent early.
                        let from = due.map_or(sent, |due| due.min(sent));
                        log.latencies
                            .push((k, done.duration_since(from).as_micros() as u64));
                        tally.answered(status);
                        if let Some(body) = body
                            && (200..300).contains(&status)
                        {
                            count_record_results(&body, &mut tally.record_results);
                        }
                    }
                    Ok(Err(e)) => {
                        sender = None;
                        tally.failed(|| format!("{e:#}"));
                    }
                    Err(_) => {
                        sender = None;
                        tally
                            .failed(|| format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()));
                    }
                }
            }
            log
        });
    }
    let mut kinds: Vec<KindOutcome> = workload
        .kinds
        .iter()
        .map(|k| KindOutcome::new(k.name))
        .collect();
    while let Some(joined) = tasks.join_next().await {
        let log = joined.context("a connection task panicked")?;
        for (k, latency) in log.latencies {
            kinds[k].latency.saturating_record(latency.max(1));
        }
        for (outcome, tally) in kinds.iter_mut().zip(log.kinds) {
            outcome.requests += tally.requests;
            for (status, count) in tally.statuses {
                *outcome.answers.entry(status.to_string()).or_default() += count;
            }
            if tally.transport_errors > 0 {
                *outcome
                    .answers
                    .entry(TRANSPORT_ERROR.to_owned())
                    .or_default() += tally.transport_errors;
            }
            for (code, count) in tally.record_results {
                *outcome.record_results.entry(code).or_default() += count;
            }
            if outcome.first_transport_error.is_none() {
                outcome.first_transport_error = tally.first_transport_error;
            }
        }
    }
    Ok(LoadOutcome {
        elapsed: started.elapsed(),
        kinds,
    })
}

/// The future that does a connection's I/O (hyper's `Connection`), polled by
/// the connection's own task together with its requests ([`with_io`]).
type Io = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A new keep-alive connection to `endpoint`: the handle requests are sent
/// with, and the future doing its I/O, to be polled by the same task as the
/// requests ([`with_io`]).
async fn connect(endpoint: &Endpoint) -> anyhow::Result<(SendRequest<Full<Bytes>>, Io)> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint.addr))
        .await
        .map_err(|_| anyhow::anyhow!("cannot connect to {} in time", endpoint.addr))?
        .with_context(|| format!("cannot connect to {}", endpoint.addr))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .context("the HTTP/1.1 handshake")?;
    // Its end (the server closed, or the run is over) shows to the requests,
    // as a sender no longer ready or a failed exchange.
    let io: Io = Box::pin(async move {
        let _ = connection.await;
    });
    Ok((sender, io))
}

/// Runs `work` (a request on the connection) while polling the connection's
/// I/O `io` in the same task, until `work` is done; `io` is set to `None`
/// when the connection ends. One task per connection instead of two (the
/// request's and hyper's connection task) saves a wake-up of another task,
/// often on the other core, at every step of every request: ~0.4 ms of an
/// idle machine's latency at low open-loop rates (BENCHMARKS.md).
async fn with_io<F: std::future::Future>(work: F, io: &mut Option<Io>) -> F::Output {
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        if let Some(running) = io.as_mut()
            && running.as_mut().poll(cx).is_ready()
        {
            *io = None;
        }
        work.as_mut().poll(cx)
    })
    .await
}

/// Sends `request` on a ready connection and reads its answer to the end (so
/// that the connection can carry the next one): the status, and the body
/// when `keep_body`.
async fn exchange(
    connection: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
    keep_body: bool,
) -> anyhow::Result<(u16, Option<Vec<u8>>)> {
    let response = connection.send_request(request).await?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut kept = keep_body.then(Vec::new);
    while let Some(frame) = body.frame().await {
        if let (Ok(data), Some(kept)) = (frame?.into_data(), kept.as_mut()) {
            kept.extend_from_slice(&data);
        }
    }
    Ok((status, kept))
}

/// Adds a batch answer's per-record results to `into`, by code (an answer that
/// is not a batch answer counts under `"unreadable answer"`).
fn count_record_results(body: &[u8], into: &mut BTreeMap<String, u64>) {
    /// The part of a batch answer counted (kinde_meter_wire's
    /// `CreateMeterUsageRecordsBatchResponse`, its codes borrowed).
    #[derive(Deserialize)]
    struct BatchAnswer<'a> {
        #[serde(borrow, default)]
        results: Vec<RecordResult<'a>>,
    }
    #[derive(Deserialize)]
    struct RecordResult<'a> {
        #[serde(borrow)]
        code: Cow<'a, str>,
    }
    match serde_json::from_slice::<BatchAnswer>(body) {
        Ok(answer) => {
            for result in answer.results {
                match into.get_mut(result.code.as_ref()) {
                    Some(count) => *count += 1,
                    None => {
                        into.insert(result.code.into_owned(), 1);
                    }
                }
            }
        }
        Err(_) => *into.entry("unreadable answer".to_owned()).or_default() += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &'static str) -> RequestKind {
        RequestKind {
            name,
            method: Method::Get { urls: Vec::new() },
            authorised: true,
            batch: false,
            keys: None,
        }
    }

    #[test]
    fn a_cycle_numbers_each_kinds_requests_in_turn() {
        let workload = Workload {
            kinds: vec![kind("write"), kind("read")],
            cycle: vec![0, 0, 1],
        };
        let picked: Vec<_> = (0..7).map(|i| workload.pick(i)).collect();
        assert_eq!(
            picked,
            [(0, 0), (0, 1), (1, 0), (0, 2), (0, 3), (1, 1), (0, 4)]
        );
        let uniform = Workload::uniform(kind("single"));
        assert_eq!(uniform.pick(5), (0, 5));
    }

    #[test]
    fn merged_outcomes_add_counts_and_latencies() {
        let mut a = KindOutcome::new("write");
        a.requests = 2;
        a.answers.insert("200".into(), 2);
        a.latency.record(100).unwrap();
        a.latency.record(300).unwrap();
        let mut b = KindOutcome::new("read");
        b.requests = 1;
        b.answers.insert("503".into(), 1);
        b.latency.record(10_000).unwrap();
        let total = LoadOutcome {
            elapsed: Duration::from_secs(1),
            kinds: vec![a, b],
        }
        .total("mixed");
        assert_eq!(total.requests, 3);
        assert_eq!(total.ok(), 2);
        assert_eq!(total.answers.get("503"), Some(&1));
        assert_eq!(total.latency.len(), 3);
        assert_eq!(
            total.latency.max(),
            total.latency.highest_equivalent(10_000)
        );
    }

    #[test]
    fn batch_answers_are_counted_by_record_result() {
        let mut into = BTreeMap::new();
        count_record_results(
            br#"{"code":"OK","message":"Success","results":[{"index":0,"code":"OK","message":"Success"},{"index":1,"code":"FEATURE_NOT_FOUND","message":"x"},{"index":2,"code":"OK","message":"Success"}]}"#,
            &mut into,
        );
        count_record_results(b"not json", &mut into);
        assert_eq!(into.get("OK"), Some(&2), "{into:?}");
        assert_eq!(into.get("FEATURE_NOT_FOUND"), Some(&1), "{into:?}");
        assert_eq!(into.get("unreadable answer"), Some(&1));
    }

    /// A server answering every request `200 ok` with `Connection: close`,
    /// so that every request needs a new connection.
    async fn closing_server() -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        base
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_the_server_closes_are_made_again_and_a_rate_is_kept() {
        let base = closing_server().await;
        let endpoint = Arc::new(Endpoint::resolve(&base).await.unwrap());
        let workload = Arc::new(Workload::uniform(RequestKind {
            name: "healthz",
            method: Method::Get {
                urls: vec![format!("{base}/healthz")],
            },
            authorised: false,
            batch: false,
            keys: None,
        }));
        let auth = HeaderValue::from_static("Bearer t");
        for pace in [None, Some(Pace { per_second: 2000.0 })] {
            let outcome = drive(
                endpoint.clone(),
                workload.clone(),
                auth.clone(),
                100,
                4,
                pace,
            )
            .await
            .unwrap();
            let total = outcome.total("healthz");
            assert_eq!(total.requests, 100);
            assert_eq!(total.ok(), 100, "{:?}", total.first_transport_error);
            assert_eq!(total.latency.len(), 100);
            if pace.is_some() {
                // Request 99 is due 49.5 ms in, and released at most 1 ms early.
                assert!(outcome.elapsed >= Duration::from_micros(48_500));
            }
        }
    }

    #[tokio::test]
    async fn only_plain_http_is_spoken_to_an_address_that_answers() {
        let refused = Endpoint::resolve("https://127.0.0.1:1")
            .await
            .err()
            .unwrap();
        assert!(refused.to_string().contains("plain HTTP only"), "{refused}");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // localhost's addresses tried in turn: the one listening is kept.
        let endpoint = Endpoint::resolve(&format!("http://localhost:{port}/"))
            .await
            .unwrap();
        assert_eq!(endpoint.addr, listener.local_addr().unwrap());
        assert_eq!(endpoint.host, format!("localhost:{port}").as_str());
        drop(listener);
        let closed = Endpoint::resolve(&format!("http://127.0.0.1:{port}"))
            .await
            .err()
            .unwrap();
        assert!(
            format!("{closed:#}").contains("cannot connect"),
            "{closed:#}"
        );
    }

    #[test]
    fn requests_are_origin_form_with_the_prepared_headers() {
        let endpoint = Endpoint {
            addr: ([127, 0, 0, 1], 8080).into(),
            host: HeaderValue::from_static("127.0.0.1:8080"),
        };
        let auth = HeaderValue::from_static("Bearer t");
        let post = Prepared::new(
            &RequestKind {
                name: "single",
                method: Method::Post {
                    url: "http://127.0.0.1:8080/api/v1/billing/meter_usage".into(),
                    bodies: vec!["{\"a\":1}".into(), "{\"b\":2}".into()],
                },
                authorised: true,
                batch: false,
                keys: Some("run-1".into()),
            },
            &endpoint,
            &auth,
        )
        .unwrap();
        let request = post.request(3);
        assert_eq!(request.method(), hyper::Method::POST);
        assert_eq!(request.uri(), "/api/v1/billing/meter_usage");
        assert_eq!(request.headers()[HOST], "127.0.0.1:8080");
        assert_eq!(request.headers()[AUTHORIZATION], "Bearer t");
        assert_eq!(request.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(request.headers()[IDEMPOTENCY_KEY], "run-1-3");
        assert_eq!(post.request(4).headers()[IDEMPOTENCY_KEY], "run-1-4");
        let get = Prepared::new(
            &RequestKind {
                name: "healthz",
                method: Method::Get {
                    urls: vec!["http://127.0.0.1:8080/healthz?a=b%20c".into()],
                },
                authorised: false,
                batch: false,
                keys: None,
            },
            &endpoint,
            &auth,
        )
        .unwrap();
        let request = get.request(7);
        assert_eq!(request.uri(), "/healthz?a=b%20c");
        assert!(!request.headers().contains_key(AUTHORIZATION));
        assert!(!request.headers().contains_key(CONTENT_TYPE));
    }
}
