//! What every test binary of this crate shares (each includes it with
//! `#[path = "../support/mod.rs"] mod support;`): the harness — a real server on
//! 127.0.0.1:0 with its own data directory, talked to over HTTP, as a client
//! would — and the helpers several areas need (tokens, M2M clients, usage reads,
//! exact decimal sums, waits with deadlines; the 429 contract in `limits`). With
//! `KINDE_METER_TEST_DATABASE_URL` set, every server runs on PostgreSQL instead
//! of SQLite (see `backend`).
#![allow(dead_code)]

pub mod backend;

#[allow(unused_imports)]
pub use backend::{TestDir, on_postgres};

pub mod limits;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use jiff::{SignedDuration, Timestamp};
use kinde_meter_core::catalog::Catalog;
use kinde_meter_server::{
    Application, Clock, ManualClock, ServerConfig,
    auth::{MintRequest, SigningKey, mint_token},
    clients,
    rate_limit::RateLimitConfig,
};
use kinde_meter_store::StoreConfig;
use kinde_meter_wire::Scope;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};

/// The scopes of the default token: all of them.
pub const ALL_SCOPES: &[Scope] = Scope::ALL;

/// The usage endpoint (record with POST, read with GET).
pub const METER_USAGE: &str = "/api/v1/billing/meter_usage";

/// A refill period long enough that a bucket emptied by a test stays empty
/// for the rest of it, however slow the machine.
pub const HOUR: Duration = Duration::from_secs(3600);

/// A running server and a client for it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub issuer: String,
    pub key: Arc<SigningKey>,
    pub token: String,
    pub http: reqwest::Client,
    pub clock: Option<ManualClock>,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _tmp: Option<TestDir>,
    /// The PostgreSQL schema made for a data directory the test passed in.
    _schema: Option<Arc<kinde_meter_store::postgres::scratch::ScratchSchema>>,
}

/// How to start a test server.
pub struct Options {
    pub clock_at: Option<Timestamp>,
    pub catalog: Catalog,
    pub store: StoreConfig,
    pub data_dir: Option<PathBuf>,
    pub rate_limits: kinde_meter_server::rate_limit::RateLimitConfig,
    /// Per-client buckets in Redis (`--redis-url`) instead of in memory.
    pub redis: Option<kinde_meter_server::rate_limit::redis::RedisLimitConfig>,
    pub transport: kinde_meter_server::transport::TransportConfig,
    pub external_issuer: Option<kinde_meter_server::ExternalIssuer>,
    /// How often the server polls for revoked clients (default: the server's).
    pub revocation_refresh: Option<std::time::Duration>,
    /// Where to listen (default `127.0.0.1:0`); a restarted server can take its
    /// predecessor's address, and so its issuer identity.
    pub listen: Option<SocketAddr>,
    /// Lifetime of `/oauth2/token` tokens (default: the server's).
    pub token_lifetime: Option<SignedDuration>,
    /// The public URL (issuer identity); default `http://<bound address>`.
    pub public_url: Option<String>,
    /// On PostgreSQL: the URL the server connects to instead of the suite's
    /// (a proxy in front of it).
    pub database_url: Option<String>,
    /// Webhook deliveries (the private-address rule, timeouts, concurrency).
    pub webhooks: kinde_meter_server::webhooks::worker::WebhookSettings,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock_at: None,
            catalog: Catalog::demo(),
            store: StoreConfig::default(),
            data_dir: None,
            rate_limits: Default::default(),
            redis: None,
            transport: Default::default(),
            external_issuer: None,
            revocation_refresh: None,
            listen: None,
            token_lifetime: None,
            public_url: None,
            database_url: None,
            webhooks: Default::default(),
        }
    }
}

impl TestApp {
    /// A server with the demo catalog and the system clock.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(Options::default()).await
    }

    /// A server whose billing clock starts at `at` and moves only when told.
    pub async fn spawn_at(at: &str) -> TestApp {
        TestApp::spawn_with(Options {
            clock_at: Some(at.parse().unwrap()),
            ..Options::default()
        })
        .await
    }

    /// A server with these rate limits.
    pub async fn spawn_limited(rate_limits: RateLimitConfig) -> TestApp {
        TestApp::spawn_with(Options {
            rate_limits,
            ..Options::default()
        })
        .await
    }

    pub async fn spawn_with(options: Options) -> TestApp {
        let (mut tmp, data_dir) = match options.data_dir {
            Some(dir) => (None, dir),
            None => {
                let tmp = TestDir::new();
                let dir = tmp.path().to_owned();
                (Some(tmp), dir)
            }
        };
        let listen = options
            .listen
            .unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let mut config = ServerConfig::new(listen, &data_dir);
        let mut schema = backend::configure(&mut config, &data_dir, options.database_url).await;
        if let Some(tmp) = &mut tmp {
            tmp.schema = schema.take();
        }
        config.public_url = options.public_url;
        config.catalog = options.catalog;
        config.store = options.store;
        config.rate_limits = options.rate_limits;
        config.redis = options.redis;
        config.transport = options.transport;
        config.external_issuer = options.external_issuer;
        config.webhooks = options.webhooks;
        if let Some(refresh) = options.revocation_refresh {
            config.revocation_refresh = refresh;
        }
        if let Some(lifetime) = options.token_lifetime {
            config.token_lifetime = lifetime;
        }
        let clock = options.clock_at.map(ManualClock::new);
        if let Some(c) = &clock {
            config.clock = Clock::Manual(c.clone());
        }
        let app = Application::build(config).await.expect("the server starts");
        let addr = app.local_addr();
        let issuer = app.identity().issuer().to_owned();
        let key = app.signing_key().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        let mut test = TestApp {
            addr,
            base: format!("http://{addr}"),
            issuer,
            key,
            token: String::new(),
            http: reqwest::Client::new(),
            clock,
            data_dir,
            stop: Some(stop),
            task: Some(task),
            _tmp: tmp,
            _schema: schema,
        };
        test.token = test.token_with(ALL_SCOPES);
        test
    }

    /// Stops the server gracefully and waits until it has drained. Keeps the data
    /// directory (a [`TestApp`] that owns a temporary one hands it back).
    pub async fn stop(mut self) -> Option<TestDir> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        self._tmp.take()
    }

    /// The audience of this server's tokens: `{issuer}/api`.
    pub fn audience(&self) -> String {
        format!("{}/api", self.issuer)
    }

    /// What a valid one-hour token of this server for `client_id` with
    /// `scopes` says, issued now; tests bend one field of it.
    pub fn mint_request<S: AsRef<str>>(&self, client_id: &str, scopes: &[S]) -> MintRequest {
        MintRequest {
            issuer: self.issuer.clone(),
            audience: vec![self.audience()],
            client_id: client_id.to_owned(),
            scopes: scopes.iter().map(|s| s.as_ref().to_owned()).collect(),
            lifetime: SignedDuration::from_hours(1),
            now: Timestamp::now(),
        }
    }

    /// A token for this server with `scopes`, from client `test-client`.
    pub fn token_with<S: AsRef<str>>(&self, scopes: &[S]) -> String {
        self.mint(self.mint_request("test-client", scopes))
    }

    /// A token with every scope for another client id (another idempotency namespace).
    pub fn token_for_client(&self, client_id: &str) -> String {
        self.mint(self.mint_request(client_id, ALL_SCOPES))
    }

    pub fn mint(&self, request: MintRequest) -> String {
        mint_token(&self.key, &request).unwrap()
    }

    /// The billing clock (panics for a server on the system clock).
    pub fn clock(&self) -> &ManualClock {
        self.clock.as_ref().expect("spawned with spawn_at")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON with the default token.
    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.post_with(&self.token, path, body).await
    }

    /// POSTs JSON with `token`.
    pub async fn post_with(&self, token: &str, path: &str, body: &Value) -> Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// GETs with the default token.
    pub async fn get(&self, path: &str) -> Response {
        self.get_with(&self.token, path).await
    }

    /// GETs with `token`.
    pub async fn get_with(&self, token: &str, path: &str) -> Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Records one usage record.
    pub async fn record(&self, body: Value) -> Response {
        self.post(METER_USAGE, &body).await
    }

    /// Records and asserts 200.
    pub async fn record_ok(&self, body: Value) {
        let response = self.record(body.clone()).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "recording {body} answered {text}");
        assert_eq!(text, r#"{"message":"Success","code":"OK"}"#);
    }

    /// Asks for a `pro` agreement for `customer_id` with `token`; the answer as is.
    pub async fn create_agreement_with(&self, token: &str, customer_id: &str) -> Response {
        self.post_with(
            token,
            "/api/v1/billing/agreements",
            &json!({"customer_id": customer_id, "plan_code": "pro"}),
        )
        .await
    }

    /// Creates an agreement over HTTP and returns its id (the newest of the customer's).
    pub async fn create_agreement(&self, customer_id: &str, plan_code: &str) -> String {
        let response = self
            .post(
                "/api/v1/billing/agreements",
                &json!({"customer_id": customer_id, "plan_code": plan_code}),
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{}",
            response.text().await.unwrap()
        );
        let list = self
            .list_agreements(&format!("customer_id={customer_id}&page_size=1"))
            .await;
        list["agreements"][0]["id"].as_str().unwrap().to_owned()
    }

    pub async fn list_agreements(&self, query: &str) -> Value {
        let response = self
            .get(&format!("/api/v1/billing/agreements?{query}"))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Reads usage (`query` after `?`) and asserts 200; the whole answer.
    pub async fn read_usage(&self, query: &str) -> Value {
        let response = self.get(&format!("{METER_USAGE}?{query}")).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// The usage of one feature of an agreement, for the period containing `at` (default now).
    pub async fn usage(&self, agreement: &str, feature: &str, at: Option<&str>) -> Value {
        let mut query = format!("customer_agreement_id={agreement}&billing_feature_code={feature}");
        if let Some(at) = at {
            query.push_str(&format!("&at={}", urlencode(at)));
        }
        self.read_usage(&query).await["usage"][0].clone()
    }

    /// Just the record count.
    pub async fn record_count(&self, agreement: &str, feature: &str) -> u64 {
        self.usage(agreement, feature, None).await["record_count"]
            .as_u64()
            .unwrap()
    }

    /// Just the value string.
    pub async fn usage_value(&self, agreement: &str, feature: &str, at: Option<&str>) -> String {
        self.usage(agreement, feature, at).await["value"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Registers an M2M client through a second store on the server's data
    /// (directory or database), as `kinde-meter clients create` does while a
    /// server runs; returns its id and secret.
    pub async fn register_client(&self, name: &str, scopes: &str) -> (String, String) {
        let store = backend::open_store(&self.data_dir).await;
        let registration = clients::register(store.as_ref(), name, scopes, Timestamp::now())
            .await
            .unwrap();
        store.shutdown().await;
        (
            registration.client.id,
            registration.secret.expose().to_owned(),
        )
    }

    /// `POST /oauth2/token`: the client-credentials grant for this server's
    /// audience, with the secret in the form, and `scope` if given.
    pub async fn request_token(&self, id: &str, secret: &str, scope: Option<&str>) -> Response {
        let audience = self.audience();
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
            ("audience", audience.as_str()),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        self.http
            .post(self.url("/oauth2/token"))
            .form(&form)
            .send()
            .await
            .unwrap()
    }
}

pub fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

/// Asserts an error answer: status, and the codes of `errors[]` in order.
pub async fn assert_error(response: Response, status: StatusCode, codes: &[&str]) -> Value {
    let got = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.expect("error bodies are JSON");
    assert_eq!(got, status, "body: {body}");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let errors = body["errors"].as_array().expect("errors[]");
    let got_codes: Vec<&str> = errors.iter().map(|e| e["code"].as_str().unwrap()).collect();
    assert_eq!(got_codes, codes, "body: {body}");
    for e in errors {
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    body
}

/// The claims of a JWT, decoded without verification.
pub fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The exact sum of non-negative decimals with at most 3 fractional digits,
/// canonical as the server writes it (`"2.75"`, `"3"`).
pub fn sum<S: AsRef<str>>(values: impl IntoIterator<Item = S>) -> String {
    let thousandths: u64 = values
        .into_iter()
        .map(|v| {
            let v = v.as_ref();
            let (int, frac) = v.split_once('.').unwrap_or((v, "0"));
            int.parse::<u64>().unwrap() * 1000 + format!("{frac:0<3}").parse::<u64>().unwrap()
        })
        .sum();
    let (int, frac) = (thousandths / 1000, thousandths % 1000);
    if frac == 0 {
        int.to_string()
    } else {
        format!("{int}.{}", format!("{frac:03}").trim_end_matches('0'))
    }
}

/// Waits until `condition` holds, checking every 20 ms; fails after `deadline`.
pub async fn eventually(what: &str, deadline: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !condition().await {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An address on 127.0.0.1 that nothing listens on (any more).
pub fn closed_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}
