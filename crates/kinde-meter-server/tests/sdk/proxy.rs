//! A small HTTP proxy for SDK tests: it stands between kinde-sdk and a real
//! server, counts what passes (requests per path, answers per status, the
//! bearer tokens sent), and on request misbehaves the way networks do —
//! losing the answer to a request the server did process, or answering in the
//! server's place.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::Response,
};
use jiff::Timestamp;

/// What the proxy does with the requests to one path.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Forward, then cut the connection instead of answering, for every
    /// `every`-th request to the path (1: all of them).
    LoseAnswer { every: u64 },
    /// Answer this status and body without forwarding, `times` times.
    Answer {
        status: u16,
        body: &'static str,
        times: u64,
    },
}

#[derive(Default)]
struct Counters {
    requests: HashMap<String, u64>,
    statuses: HashMap<u16, u64>,
    /// (when it was forwarded, the bearer token) of each request that had one.
    tokens: Vec<(Timestamp, String)>,
}

struct Inner {
    upstream: Mutex<String>,
    http: reqwest::Client,
    counters: Mutex<Counters>,
    faults: Mutex<HashMap<String, Fault>>,
}

/// A running proxy (it stops with the test's runtime).
#[derive(Clone)]
pub struct Proxy {
    pub addr: SocketAddr,
    pub base: String,
    inner: Arc<Inner>,
}

impl Proxy {
    /// A proxy on 127.0.0.1:0 in front of `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let inner = Arc::new(Inner {
            upstream: Mutex::new(upstream.to_owned()),
            http: reqwest::Client::new(),
            counters: Mutex::default(),
            faults: Mutex::default(),
        });
        let router = Router::new().fallback(forward).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Proxy {
            addr,
            base: format!("http://{addr}"),
            inner,
        }
    }

    /// Applies `fault` to the requests to `path` from now on.
    pub fn fault(&self, path: &str, fault: Fault) {
        self.inner
            .faults
            .lock()
            .unwrap()
            .insert(path.to_owned(), fault);
    }

    /// Requests received for `path`.
    pub fn requests(&self, path: &str) -> u64 {
        let counters = self.inner.counters.lock().unwrap();
        counters.requests.get(path).copied().unwrap_or(0)
    }

    /// Answers given with `status`.
    pub fn answers(&self, status: u16) -> u64 {
        let counters = self.inner.counters.lock().unwrap();
        counters.statuses.get(&status).copied().unwrap_or(0)
    }

    /// The bearer tokens forwarded, with when.
    pub fn tokens(&self) -> Vec<(Timestamp, String)> {
        self.inner.counters.lock().unwrap().tokens.clone()
    }
}

async fn forward(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let ordinal = {
        let mut counters = inner.counters.lock().unwrap();
        let count = counters.requests.entry(path.clone()).or_default();
        *count += 1;
        let ordinal = *count;
        if let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
        {
            counters.tokens.push((Timestamp::now(), token.to_owned()));
        }
        ordinal
    };
    let fault = {
        let mut faults = inner.faults.lock().unwrap();
        match faults.get_mut(&path) {
            Some(Fault::Answer { times, .. }) if *times == 0 => None,
            Some(Fault::Answer {
                status,
                body,
                times,
            }) => {
                *times -= 1;
                Some(Fault::Answer {
                    status: *status,
                    body,
                    times: 0,
                })
            }
            other => other.cloned(),
        }
    };
    if let Some(Fault::Answer { status, body, .. }) = fault {
        count_status(&inner, status);
        return Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
    }

    let upstream = inner.upstream.lock().unwrap().clone();
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut request = inner
        .http
        .request(method, format!("{upstream}{path_and_query}"))
        .body(body);
    for (name, value) in &headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            request = request.header(name, value);
        }
    }
    let Ok(answer) = request.send().await else {
        count_status(&inner, 502);
        return Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::from("upstream unreachable"))
            .unwrap();
    };
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap_or_default();
    if let Some(Fault::LoseAnswer { every }) = fault
        && ordinal % every.max(1) == 0
    {
        // The server did the work; the client never learns it.
        count_status(&inner, 0);
        let broken = futures::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other("answer lost"))
        });
        return Response::builder()
            .status(status)
            .header(header::CONTENT_LENGTH, bytes.len().max(1).to_string())
            .body(Body::from_stream(broken))
            .unwrap();
    }
    count_status(&inner, status.as_u16());
    let mut response = Response::builder().status(status);
    for (name, value) in &answer_headers {
        if name != header::TRANSFER_ENCODING && name != header::CONNECTION {
            response = response.header(name, value);
        }
    }
    response.body(Body::from(bytes)).unwrap()
}

fn count_status(inner: &Inner, status: u16) {
    *inner
        .counters
        .lock()
        .unwrap()
        .statuses
        .entry(status)
        .or_default() += 1;
}
