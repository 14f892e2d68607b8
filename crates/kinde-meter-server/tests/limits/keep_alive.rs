//! Answers given before the body is read (403, 429, 413) on a keep-alive
//! connection (issue 12, docs/limits.md#keep-alive): the server drains the body
//! and keeps the connection, or says `Connection: close` before it closes;
//! never a silent close, which a pooled client sees as a reset instead of the
//! answer.
//!
//! HTTP/1.1 is written by hand on a raw TCP connection, so no client library
//! hides a reset or retries on a fresh connection.

use std::{collections::HashMap, time::Duration};

use crate::support::{HOUR, TestApp};
use kinde_meter_server::rate_limit::{Limit, RateLimitConfig};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const DEADLINE: Duration = Duration::from_secs(20);

/// One answer as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// A connection and the bytes read past the last answer.
struct Connection {
    stream: TcpStream,
    buffered: Vec<u8>,
}

impl Connection {
    async fn open(app: &TestApp) -> Connection {
        Connection {
            stream: TcpStream::connect(app.addr).await.unwrap(),
            buffered: Vec::new(),
        }
    }

    /// Reads more bytes; `Err` says how the connection ended.
    async fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(DEADLINE, self.stream.read(&mut chunk)).await {
            Err(_) => Err("no answer within the deadline".to_owned()),
            Ok(Ok(0)) => Err("the server closed the connection".to_owned()),
            Ok(Ok(n)) => {
                self.buffered.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("the connection broke: {e}")),
        }
    }

    /// Reads one complete answer (head and `Content-Length` body).
    async fn answer(&mut self) -> Result<Answer, String> {
        let head_end = loop {
            if let Some(at) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            self.fill().await?;
        };
        let head = String::from_utf8(self.buffered[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .expect("every answer has a Content-Length");
        let body_start = head_end + 4;
        while self.buffered.len() < body_start + length {
            self.fill().await?;
        }
        let body =
            String::from_utf8(self.buffered[body_start..body_start + length].to_vec()).unwrap();
        self.buffered.drain(..body_start + length);
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// After `Connection: close`: nothing more arrives, then the server
    /// closes (a clean end or a reset, either is fine now).
    async fn expect_close(&mut self) {
        let mut rest = [0u8; 1024];
        match tokio::time::timeout(DEADLINE, self.stream.read(&mut rest)).await {
            Err(_) => panic!("the server said Connection: close but kept the connection"),
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!(
                "bytes after a closing answer: {:?}",
                String::from_utf8_lossy(&rest[..n])
            ),
        }
        assert!(self.buffered.is_empty(), "{:?}", self.buffered);
    }
}

/// How a request's bytes are sent.
#[derive(Debug, Clone, Copy)]
enum Delivery {
    /// Head and body in one write.
    Together,
    /// The body in a second write, right after the head.
    Split,
    /// The body a moment after the head (it arrives after the server answered).
    Late,
    /// The body in two halves, the second a moment later.
    Trickled,
}

const DELIVERIES: [Delivery; 4] = [
    Delivery::Together,
    Delivery::Split,
    Delivery::Late,
    Delivery::Trickled,
];

/// What a request is meant to get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Valid,
    BadToken,
    BadTokenChunked,
    RateLimited,
    TooLarge,
}

const KINDS: [Kind; 5] = [
    Kind::Valid,
    Kind::BadToken,
    Kind::RateLimited,
    Kind::BadTokenChunked,
    Kind::TooLarge,
];

impl Kind {
    fn status(self) -> u16 {
        match self {
            Kind::Valid => 200,
            Kind::BadToken | Kind::BadTokenChunked => 403,
            Kind::RateLimited => 429,
            Kind::TooLarge => 413,
        }
    }
}

/// Sends a request; a write that fails is a failure of the test too (a
/// client such as Python's `http.client` gives up on a failed send without
/// reading the answer).
async fn send(conn: &mut Connection, head: &str, body: &[u8], delivery: Delivery) {
    let stream = &mut conn.stream;
    let moment = Duration::from_millis(3);
    let written = async {
        match delivery {
            Delivery::Together => {
                let mut bytes = head.as_bytes().to_vec();
                bytes.extend_from_slice(body);
                stream.write_all(&bytes).await
            }
            Delivery::Split => {
                stream.write_all(head.as_bytes()).await?;
                tokio::task::yield_now().await;
                stream.write_all(body).await
            }
            Delivery::Late => {
                stream.write_all(head.as_bytes()).await?;
                tokio::time::sleep(moment).await;
                stream.write_all(body).await
            }
            Delivery::Trickled => {
                let (first, second) = body.split_at(body.len() / 2);
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(first).await?;
                tokio::time::sleep(moment).await;
                stream.write_all(second).await
            }
        }
    };
    if let Err(e) = written.await {
        panic!("{delivery:?}: sending failed: {e}");
    }
}

#[tokio::test]
async fn early_answers_keep_the_connection_or_say_connection_close() {
    let app = TestApp::spawn_limited(RateLimitConfig {
        default: Limit::OFF,
        clients: HashMap::from([("spent".to_owned(), Limit::one_per(HOUR, 1))]),
        auth_failures: Limit::OFF,
    })
    .await;
    let agreement = app.create_agreement("customer_keep_alive", "pro").await;
    let meter = app.token_for_client("meter");
    let spent = app.token_for_client("spent");
    let record = json!({
        "customer_agreement_id": agreement,
        "billing_feature_code": "api_calls",
        "meter_value": "1",
    })
    .to_string();
    // The spent client's one request.
    let first = app
        .http
        .post(app.url("/api/v1/billing/meter_usage"))
        .bearer_auth(&spent)
        .header("content-type", "application/json")
        .body(record.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let large = format!(r#"{{"pad":"{}"}}"#, "x".repeat(70 * 1024));

    let mut conn = Connection::open(&app).await;
    let (mut requests, mut kept, mut closed, mut valid) = (0, 0, 0, 0);
    for round in 0..40 {
        for (k, kind) in KINDS.into_iter().enumerate() {
            let delivery = DELIVERIES[(round + k) % DELIVERIES.len()];
            let id = format!("keep-alive-{round}-{k}");
            let token = match kind {
                Kind::Valid | Kind::TooLarge => meter.as_str(),
                Kind::RateLimited => spent.as_str(),
                Kind::BadToken | Kind::BadTokenChunked => "not.a.token",
            };
            let body: Vec<u8> = match kind {
                Kind::TooLarge => large.clone().into_bytes(),
                Kind::BadTokenChunked => {
                    let half = record.len() / 2;
                    format!(
                        "{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                        half,
                        &record[..half],
                        record.len() - half,
                        &record[half..]
                    )
                    .into_bytes()
                }
                _ => record.clone().into_bytes(),
            };
            let framing = if kind == Kind::BadTokenChunked {
                "Transfer-Encoding: chunked".to_owned()
            } else {
                format!("Content-Length: {}", body.len())
            };
            let head = format!(
                "POST /api/v1/billing/meter_usage HTTP/1.1\r\nHost: x\r\n\
                 Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
                 X-Request-Id: {id}\r\n{framing}\r\n\r\n"
            );
            send(&mut conn, &head, &body, delivery).await;
            let answer = conn.answer().await.unwrap_or_else(|e| {
                panic!(
                    "request {requests} ({kind:?}, {delivery:?}): no complete answer: {e} \
                     (the previous answer did not say Connection: close)"
                )
            });
            requests += 1;
            assert_eq!(
                answer.status,
                kind.status(),
                "{kind:?} {delivery:?}: {answer:?}"
            );
            assert_eq!(answer.header("x-request-id"), Some(id.as_str()), "in order");
            assert!(answer.body.starts_with('{'), "{answer:?}");
            if kind == Kind::Valid {
                valid += 1;
            }
            if answer.closes() {
                closed += 1;
                // Only a body over the limit is not worth draining.
                assert_eq!(kind, Kind::TooLarge, "{delivery:?}: {answer:?}");
                conn.expect_close().await;
                conn = Connection::open(&app).await;
            } else {
                kept += 1;
                assert_ne!(kind, Kind::TooLarge, "413 without Connection: close");
            }
        }
    }
    eprintln!("{requests} requests: {kept} kept the connection, {closed} closed it");
    assert_eq!(closed, 40);
    // Every valid record was stored, none of the refused ones.
    assert_eq!(
        app.record_count(&agreement, "api_calls").await,
        valid + 1,
        "records stored"
    );
}

/// A body far over the limit is answered 413 with `Connection: close` at once,
/// and the server reads and discards what the client still sends until the
/// client closes: closing on unread bytes would reset the connection, and the
/// client, still sending, would get a broken pipe instead of the 413.
#[tokio::test]
async fn a_client_still_sending_a_large_body_gets_the_413_not_a_reset() {
    let app = TestApp::spawn().await;
    for delivery in DELIVERIES {
        let mut conn = Connection::open(&app).await;
        let body = vec![b'x'; 8 << 20];
        let head = format!(
            "POST /api/v1/billing/meter_usage HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            app.token,
            body.len()
        );
        send(&mut conn, &head, &body, delivery).await;
        let answer = conn.answer().await.unwrap();
        assert_eq!(answer.status, 413, "{answer:?}");
        assert!(answer.closes(), "{answer:?}");
        conn.expect_close().await;
    }
}
