//! The load: simulated clients, each on its own keep-alive HTTP/1.1 connection
//! (hyper's client connection, so that every reset, broken pipe or silent close
//! is seen by the test, never retried behind its back), each sending usage
//! records as fast as it is answered, every record with an `Idempotency-Key`
//! of its own. Every answer is classified and tallied, with its key, into the
//! [`Ledger`] that the stored records are checked against.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Request, StatusCode,
    client::conn::http1::SendRequest,
    header::{AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST, RETRY_AFTER},
};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::ledger::Ledger;

/// How long one request may take before it counts as a transport failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause of a retrying client after a refusal or a failure (a client
/// would honour `Retry-After`; the harness keeps the pressure on instead).
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Attempts a retrying client still makes at its record once the load is stopped.
const MAX_ATTEMPTS_STOPPING: u32 = 500;

/// Where the records go: the servers (a client picks one per attempt; the
/// crash harness swaps a restarted server's address in), with what.
pub struct Target {
    pub servers: RwLock<Vec<SocketAddr>>,
    pub token: String,
    pub agreement: String,
}

impl Target {
    pub fn new(server: SocketAddr, token: &str, agreement: &str) -> Arc<Target> {
        Arc::new(Target {
            servers: RwLock::new(vec![server]),
            token: token.to_owned(),
            agreement: agreement.to_owned(),
        })
    }

    fn server(&self, turn: usize) -> SocketAddr {
        let servers = self.servers.read().unwrap();
        servers[turn % servers.len()]
    }
}

/// What a client does with a refused or failed record.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Nothing: the next record has a new key (the refused one must not be stored).
    Never,
    /// Sends it again, same key and body, until it is acknowledged (a
    /// well-behaved client: then everything sent must be stored exactly once).
    UntilAcknowledged,
}

/// A running load; [`Load::stop`] ends it and returns what it saw.
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    clients: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl Load {
    /// Starts `clients` clients; record keys are `{name}-{client}-{n}` and
    /// values `value(n)`.
    pub fn start(
        name: &str,
        target: &Arc<Target>,
        clients: usize,
        retry: Retry,
        value: fn(u64) -> String,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let clients = (0..clients)
            .map(|id| {
                let client = Client {
                    prefix: format!("{name}-{id}"),
                    turn: id,
                    target: target.clone(),
                    stop: stop.clone(),
                    tally: tally.clone(),
                    retry,
                    value,
                    connection: None,
                };
                tokio::spawn(client.run())
            })
            .collect();
        Load {
            stop,
            tally,
            clients,
            started: Instant::now(),
        }
    }

    /// What the load has seen so far.
    pub fn seen(&self) -> Seen {
        self.tally.0.lock().unwrap().seen()
    }

    /// Tells the clients to stop (a retrying client first gets its record
    /// acknowledged) and waits for them.
    pub async fn stop(self) -> Outcome {
        self.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            client.await.expect("a client panicked");
        }
        let elapsed = self.started.elapsed();
        let tally = Arc::into_inner(self.tally).unwrap().0.into_inner().unwrap();
        Outcome { elapsed, tally }
    }
}

/// Counts a running load has reached.
#[derive(Clone, Copy, Debug, Default)]
pub struct Seen {
    pub acknowledged: u64,
    pub unavailable: u64,
}

/// What a finished load saw.
pub struct Outcome {
    pub elapsed: Duration,
    pub tally: TallyState,
}

impl Outcome {
    pub fn count(&self, status: u16) -> u64 {
        self.tally.statuses.get(&status).copied().unwrap_or(0)
    }

    pub fn ledger(&self) -> &Ledger {
        &self.tally.ledger
    }

    /// Asserts that every answer was one of `allowed`, in Kinde's shape
    /// (`Retry-After` on each 429 and 503), and that no connection failed.
    pub fn assert_clean(&self, allowed: &[u16]) {
        let t = &self.tally;
        let others: Vec<_> = t
            .statuses
            .iter()
            .filter(|(status, _)| !allowed.contains(status))
            .collect();
        assert!(
            others.is_empty(),
            "answers other than {allowed:?}: {others:?}; first: {:?}",
            t.first_unexpected
        );
        assert_eq!(
            t.malformed, 0,
            "answers not in Kinde's shape (or 429/503 without Retry-After); first: {:?}",
            t.first_malformed
        );
        assert_eq!(
            t.transport_errors, 0,
            "transport errors; first: {:?}",
            t.first_transport_error
        );
    }

    /// One line for the log and the docs.
    pub fn summary(&self) -> String {
        let t = &self.tally;
        let secs = self.elapsed.as_secs_f64();
        let mut line = format!(
            "{:.1} s, {} requests ({:.0}/s)",
            secs,
            t.requests,
            t.requests as f64 / secs
        );
        for (status, count) in &t.statuses {
            let _ = write!(line, ", {status}: {count}");
        }
        let _ = write!(line, ", transport errors {}", t.transport_errors);
        if !t.latencies_us.is_empty() {
            let mut l = t.latencies_us.clone();
            l.sort_unstable();
            let at = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)] as f64 / 1000.0;
            let _ = write!(
                line,
                ", latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                at(0.5),
                at(0.99),
                at(1.0)
            );
        }
        line
    }
}

/// Everything the clients saw.
#[derive(Default)]
pub struct TallyState {
    pub requests: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub first_transport_error: Option<String>,
    /// Answers not in the documented shape, or 429/503 without `Retry-After`.
    pub malformed: u64,
    pub first_malformed: Option<String>,
    pub first_unexpected: Option<String>,
    pub latencies_us: Vec<u32>,
    pub ledger: Ledger,
}

impl TallyState {
    /// `key`'s request got no answer.
    fn failed(&mut self, key: &str, error: String) {
        self.transport_errors += 1;
        self.ledger.in_doubt(key);
        if self.first_transport_error.is_none() {
            self.first_transport_error = Some(error);
        }
    }

    fn seen(&self) -> Seen {
        Seen {
            acknowledged: self.statuses.get(&200).copied().unwrap_or(0),
            unavailable: self.statuses.get(&503).copied().unwrap_or(0),
        }
    }
}

#[derive(Default)]
struct Tally(Mutex<TallyState>);

/// How one attempt went.
enum Attempt {
    /// An answer.
    Answered(StatusCode),
    /// No answer: the connection failed (or the request timed out).
    Failed,
}

struct Client {
    prefix: String,
    /// Which server this client's next attempt goes to.
    turn: usize,
    target: Arc<Target>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    retry: Retry,
    value: fn(u64) -> String,
    connection: Option<(SocketAddr, SendRequest<Full<Bytes>>)>,
}

impl Client {
    async fn run(mut self) {
        let mut n = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            let key = format!("{}-{n}", self.prefix);
            let value = (self.value)(n);
            n += 1;
            for attempt in 1.. {
                let answer = self.send(&key, &value).await;
                let acknowledged = matches!(answer, Attempt::Answered(StatusCode::OK));
                // A stopped load gives up on a record that does not get through
                // (it stays refused or in doubt in the ledger).
                let give_up = self.stop.load(Ordering::SeqCst) && attempt >= MAX_ATTEMPTS_STOPPING;
                if acknowledged || self.retry == Retry::Never || give_up {
                    break;
                }
                // A different server next time, if there are several.
                self.turn += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }

    /// One attempt at `key`, tallied.
    async fn send(&mut self, key: &str, value: &str) -> Attempt {
        let server = self.target.server(self.turn);
        let started = Instant::now();
        let result = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(server, key, value)).await;
        let elapsed = started.elapsed();
        let mut tally = self.tally.0.lock().unwrap();
        tally.requests += 1;
        match result {
            Ok(Ok((status, close, retry_after, body))) => {
                tally
                    .latencies_us
                    .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
                *tally.statuses.entry(status.as_u16()).or_default() += 1;
                match status.as_u16() {
                    200 => tally.ledger.acknowledged(key, value),
                    429 | 503 => tally.ledger.refused(key),
                    _ => {
                        tally.ledger.refused(key);
                        if tally.first_unexpected.is_none() {
                            tally.first_unexpected = Some(format!("{status} {body}"));
                        }
                    }
                }
                if let Some(problem) = malformed(status, retry_after.as_deref(), &body) {
                    tally.malformed += 1;
                    if tally.first_malformed.is_none() {
                        tally.first_malformed = Some(format!("{status}: {problem}: {body}"));
                    }
                }
                drop(tally);
                if close {
                    self.connection = None;
                }
                Attempt::Answered(status)
            }
            Ok(Err(Failure(error))) => {
                tally.failed(key, error);
                drop(tally);
                self.connection = None;
                Attempt::Failed
            }
            Err(_) => {
                tally.failed(key, format!("no answer within {REQUEST_TIMEOUT:?}"));
                drop(tally);
                self.connection = None;
                Attempt::Failed
            }
        }
    }

    /// Sends the record on this client's connection to `server` (connecting
    /// first if it has none): status, `Connection: close`, `Retry-After` and body.
    async fn exchange(
        &mut self,
        server: SocketAddr,
        key: &str,
        value: &str,
    ) -> Result<(StatusCode, bool, Option<String>, String), Failure> {
        if self
            .connection
            .as_ref()
            .is_some_and(|(addr, sender)| *addr != server || sender.is_closed())
        {
            let (addr, sender) = self.connection.take().unwrap();
            if addr == server && sender.is_closed() {
                return Err(Failure(
                    "the server closed a keep-alive connection without Connection: close".into(),
                ));
            }
        }
        if self.connection.is_none() {
            self.connection = Some((server, connect(server).await?));
        }
        let (_, sender) = self.connection.as_mut().unwrap();
        sender
            .ready()
            .await
            .map_err(|e| Failure(format!("connection not ready: {e}")))?;
        let body = serde_json::json!({
            "customer_agreement_id": self.target.agreement,
            "billing_feature_code": "api_calls",
            "meter_value": value,
        })
        .to_string();
        let request = Request::post("/api/v1/billing/meter_usage")
            .header(HOST, server.to_string())
            .header(AUTHORIZATION, format!("Bearer {}", self.target.token))
            .header(CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Failure(format!("sending: {e}")))?;
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let close = header(CONNECTION).is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let retry_after = header(RETRY_AFTER);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure(format!("reading the body: {e}")))?
            .to_bytes();
        Ok((
            status,
            close,
            retry_after,
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }
}

/// Why a connection gave no answer.
struct Failure(String);

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure(format!("connecting: {e}"))
    }
}

async fn connect(server: SocketAddr) -> Result<SendRequest<Full<Bytes>>, Failure> {
    let stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure(format!("handshake: {e}")))?;
    // Its failures reach the sender; nothing to do with its result here.
    tokio::spawn(connection);
    Ok(sender)
}

/// What is wrong with an answer, if anything: 200 is `{"code":"OK",…}`; 429 and
/// 503 carry `Retry-After` (whole seconds, at least 1) and Kinde's error shape
/// with their documented code (docs/errors.md).
fn malformed(status: StatusCode, retry_after: Option<&str>, body: &str) -> Option<String> {
    let json: Value = match serde_json::from_str(body) {
        Ok(json) => json,
        Err(_) => return Some("not JSON".to_owned()),
    };
    let code = match status.as_u16() {
        200 => return (json["code"] != "OK").then(|| "no code OK".to_owned()),
        429 => "TOO_MANY_REQUESTS",
        503 => "SERVICE_UNAVAILABLE",
        _ => return None,
    };
    if !retry_after.is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)) {
        return Some(format!("Retry-After is {retry_after:?}"));
    }
    let errors = json["errors"].as_array();
    if !errors.is_some_and(|e| e.len() == 1 && e[0]["code"] == code && e[0]["message"].is_string())
    {
        return Some(format!(
            "not {{\"errors\":[{{\"code\":\"{code}\",\"message\":…}}]}}"
        ));
    }
    None
}
