//! What the webhook tests share: a receiver on 127.0.0.1 that records every
//! delivery and answers as told, webhooks created through the API, bodies
//! verified against the server's JWKS, the delivery metrics.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use kinde_meter_server::webhooks::worker::WebhookSettings;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::support::TestApp;

/// How long a test waits for a delivery it expects.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Settings for a test server: loopback receivers allowed, a short timeout.
pub fn settings() -> WebhookSettings {
    WebhookSettings {
        allow_private_networks: true,
        attempt_timeout: Duration::from_secs(2),
        ..WebhookSettings::default()
    }
}

/// How the receiver answers one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// This status, at once.
    Status(u16),
    /// This status after a pause.
    Slow(u16, Duration),
    /// Never.
    Hang,
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: String,
    pub at: Instant,
    /// What it was answered (`None`: never).
    pub reply: Reply,
}

impl Received {
    /// The body's claims, not verified.
    pub fn claims(&self) -> Value {
        crate::support::jwt_claims(&self.body)
    }

    pub fn event_id(&self) -> String {
        self.claims()["event_id"].as_str().unwrap().to_owned()
    }

    pub fn event_type(&self) -> String {
        self.claims()["type"].as_str().unwrap().to_owned()
    }

    pub fn webhook_id(&self) -> String {
        self.headers["webhook-id"].to_str().unwrap().to_owned()
    }

    /// Whether it was answered 2xx.
    pub fn accepted(&self) -> bool {
        matches!(self.reply, Reply::Status(s) | Reply::Slow(s, _) if (200..300).contains(&s))
    }
}

type Policy = Box<dyn FnMut(&Received) -> Reply + Send>;

struct Inner {
    received: Mutex<Vec<Received>>,
    policy: Mutex<Policy>,
    changed: Notify,
}

/// An HTTP server on 127.0.0.1 recording what webhooks deliver.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    inner: Arc<Inner>,
}

impl Receiver {
    /// A receiver answering 200 to everything.
    pub async fn start() -> Receiver {
        Receiver::with_policy(|_| Reply::Status(200)).await
    }

    /// A receiver answering as `policy` decides.
    pub async fn with_policy(policy: impl FnMut(&Received) -> Reply + Send + 'static) -> Receiver {
        let inner = Arc::new(Inner {
            received: Mutex::new(Vec::new()),
            policy: Mutex::new(Box::new(policy)),
            changed: Notify::new(),
        });
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            inner,
        }
    }

    /// Answers as `policy` decides from now on.
    pub fn set_policy(&self, policy: impl FnMut(&Received) -> Reply + Send + 'static) {
        *self.inner.policy.lock().unwrap() = Box::new(policy);
    }

    /// What was received so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// Waits until what was received satisfies `condition`; returns it then.
    pub async fn wait_until(
        &self,
        what: &str,
        mut condition: impl FnMut(&[Received]) -> bool,
    ) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let changed = self.inner.changed.notified();
            let received = self.received();
            if condition(&received) {
                return received;
            }
            let left = DEADLINE.saturating_sub(start.elapsed());
            if tokio::time::timeout(left, changed).await.is_err() {
                let summary: Vec<String> = received
                    .iter()
                    .map(|r| format!("{} {} {:?}", r.event_type(), r.event_id(), r.reply))
                    .collect();
                panic!("timed out waiting for {what}; received: {summary:#?}");
            }
        }
    }
}

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut received = Received {
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
        at: Instant::now(),
        reply: Reply::Hang,
    };
    let reply = (inner.policy.lock().unwrap())(&received);
    received.reply = reply;
    inner.received.lock().unwrap().push(received);
    inner.changed.notify_waiters();
    match reply {
        Reply::Status(status) => StatusCode::from_u16(status).unwrap(),
        Reply::Slow(status, pause) => {
            tokio::time::sleep(pause).await;
            StatusCode::from_u16(status).unwrap()
        }
        Reply::Hang => std::future::pending().await,
    }
}

/// Creates a webhook through the API; returns its id.
pub async fn create_webhook(app: &TestApp, endpoint: &str, event_types: &[&str]) -> String {
    let response = app
        .post(
            "/api/v1/webhooks",
            &json!({"endpoint": endpoint, "event_types": event_types, "name": "test receiver"}),
        )
        .await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "creating a webhook answered {body}");
    body["webhook"]["id"].as_str().unwrap().to_owned()
}

/// Every event type.
pub const ALL_TYPES: &[&str] = &[
    "customer.agreement_created",
    "customer.plan_assigned",
    "customer.plan_changed",
    "customer.agreement_cancelled",
    "customer.meter_usage_updated",
    "customer.entitlement_threshold_reached",
];

/// Verifies a delivered body as a receiver would: RS256, its `kid` in the
/// server's `/.well-known/jwks.json` (with `"use":"sig"`), `iss` the server's
/// public URL; returns the claims.
pub async fn verify(app: &TestApp, body: &str) -> Value {
    let jwks: JwkSet = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(body).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let kid = header.kid.expect("a kid in the header");
    let jwk = jwks.find(&kid).expect("the kid is in the server's JWKS");
    assert_eq!(
        jwk.common.public_key_use,
        Some(jsonwebtoken::jwk::PublicKeyUse::Signature)
    );
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_issuer(&[&app.issuer]);
    jsonwebtoken::decode::<Value>(body, &key, &validation)
        .expect("the body verifies against the server's JWKS")
        .claims
}

/// The value of a series in the server's `/metrics` (0 if absent).
pub async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(series)?;
            rest.strip_prefix(' ')?.trim().parse().ok()
        })
        .unwrap_or(0.0)
}

/// Waits until the store behind `app` holds no pending delivery (nor an
/// event not yet fanned out); usage events not yet built do not count.
pub async fn settled(app: &TestApp) {
    let store = crate::support::backend::open_store(&app.data_dir).await;
    crate::support::eventually("no pending webhook delivery", DEADLINE, async || {
        store
            .delivery_stats(jiff::Timestamp::now())
            .await
            .unwrap()
            .pending
            == 0
    })
    .await;
    store.shutdown().await;
}
