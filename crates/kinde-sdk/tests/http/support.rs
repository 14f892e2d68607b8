//! A tiny HTTP/1.1 server on 127.0.0.1:0 that records every request and answers
//! with canned responses, one per connection (`Connection: close`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kinde_sdk::{
    ApiClient, BillingAgreementsApi, BillingEntitlementsApi, BillingMeterUsageApi, Configuration,
    RetryPolicy,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const TOKEN: &str = "test-token";

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        let mut values = self.headers.iter().filter(|(key, _)| *key == name);
        let value = values.next().map(|(_, value)| value.as_str());
        assert!(values.next().is_none(), "header {name} sent twice");
        value
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// A canned answer.
#[derive(Debug, Clone)]
pub struct Canned {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Canned {
    pub fn new(status: u16, body: &str) -> Self {
        Canned {
            status,
            headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
            body: body.to_owned(),
        }
    }

    pub fn ok() -> Self {
        Canned::new(200, r#"{"message":"Success","code":"OK"}"#)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// What the server does with a connection.
#[derive(Clone)]
enum Behaviour {
    /// Answer with these in order, repeating the last.
    Answer(Vec<Canned>),
    /// Read the request and never answer.
    Hang,
}

pub struct MockServer {
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl MockServer {
    /// A server answering `responses` in order, repeating the last.
    pub async fn start(responses: Vec<Canned>) -> Self {
        assert!(!responses.is_empty());
        Self::spawn(Behaviour::Answer(responses)).await
    }

    /// A server that always answers `response`.
    pub async fn answering(response: Canned) -> Self {
        Self::start(vec![response]).await
    }

    /// A server that reads requests and never answers.
    pub async fn hanging() -> Self {
        Self::spawn(Behaviour::Hang).await
    }

    async fn spawn(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            let mut served = 0usize;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let answer = match &behaviour {
                    Behaviour::Answer(responses) => {
                        Some(responses[served.min(responses.len() - 1)].clone())
                    }
                    Behaviour::Hang => None,
                };
                served += 1;
                tokio::spawn(serve(stream, answer, recorded.clone()));
            }
        });
        MockServer {
            url,
            requests,
            task,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The one request the server received.
    pub fn only_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "{requests:#?}");
        requests.into_iter().next().unwrap()
    }

    /// A configuration for this server that sends every request once, so that
    /// one canned answer is one error (`tests/http/retries.rs` retries).
    pub fn configuration(&self) -> Configuration {
        Configuration::new(&self.url)
            .with_access_token(TOKEN)
            .with_retry_policy(RetryPolicy::none())
    }

    pub fn client(&self) -> ApiClient {
        ApiClient::new(self.configuration()).unwrap()
    }

    pub fn meter_usage_api(&self) -> BillingMeterUsageApi {
        BillingMeterUsageApi::new(self.client())
    }

    pub fn agreements_api(&self) -> BillingAgreementsApi {
        BillingAgreementsApi::new(self.client())
    }

    pub fn entitlements_api(&self) -> BillingEntitlementsApi {
        BillingEntitlementsApi::new(self.client())
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, answer: Option<Canned>, requests: Arc<Mutex<Vec<Recorded>>>) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    requests.lock().unwrap().push(request);
    let Some(answer) = answer else {
        // Hold the connection open, unanswered, until the client gives up.
        tokio::time::sleep(Duration::from_secs(60)).await;
        return;
    };
    let mut head = format!(
        "HTTP/1.1 {} Canned\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.status,
        answer.body.len()
    );
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(answer.body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn read_request(stream: &mut TcpStream) -> Option<Recorded> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    Some(Recorded {
        method,
        target,
        headers,
        body,
    })
}
