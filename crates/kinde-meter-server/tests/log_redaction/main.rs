//! Nothing secret leaks into logs (issue 3, item 6): every event of this test
//! binary, at every level and from every crate, is captured in a buffer while
//! a real server answers good, bad and rate-limited requests and issues a token
//! for a registered client; the buffer must contain no token, no client secret
//! and no part of the signing key.
//!
//! The subscriber is process-global, so this binary holds this one test.

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use jiff::{SignedDuration, Timestamp};
use kinde_meter_server::{
    Application, ServerConfig,
    auth::{KEY_FILE_NAME, MintRequest, SigningKey, mint_token},
    clients,
    rate_limit::{Limit, RateLimitConfig},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tracing_subscriber::fmt::format::FmtSpan;

const ALL_SCOPES: &str =
    "create:meter_usage read:meter_usage create:billing_agreements read:billing_agreements";

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Installs the capturing subscriber at TRACE, once.
fn capture() -> Buffer {
    static LOGS: OnceLock<Buffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_span_events(FmtSpan::FULL)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        buffer
    })
    .clone()
}

fn mint(key: &SigningKey, issuer: &str, client_id: &str, now: Timestamp) -> String {
    mint_token(
        key,
        &MintRequest {
            issuer: issuer.to_owned(),
            audience: vec![format!("{issuer}/api")],
            client_id: client_id.to_owned(),
            scopes: ALL_SCOPES.split(' ').map(str::to_owned).collect(),
            lifetime: SignedDuration::from_hours(1),
            now,
        },
    )
    .unwrap()
}

#[tokio::test]
async fn no_token_secret_or_key_appears_in_logs_at_any_level() {
    let logs = capture();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), tmp.path());
    config.rate_limits = RateLimitConfig {
        default: Limit::one_per(Duration::from_secs(3600), 30),
        auth_failures: Limit::one_per(Duration::from_secs(3600), 12),
        ..RateLimitConfig::default()
    };
    let app = Application::build(config).await.unwrap();
    let registration = clients::register(
        app.store().as_ref(),
        "log-test",
        ALL_SCOPES,
        Timestamp::now(),
    )
    .await
    .unwrap();
    let client_id = registration.client.id.clone();
    let client_secret = registration.secret.expose().to_owned();
    let base = format!("http://{}", app.local_addr());
    let issuer = app.identity().issuer().to_owned();
    let key = app.signing_key().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{base}{path}");

    let good = mint(&key, &issuer, "log-client", Timestamp::now());
    let expired = mint(
        &key,
        &issuer,
        "log-client",
        Timestamp::now() - SignedDuration::from_hours(3),
    );
    let foreign = mint(
        &SigningKey::generate().unwrap(),
        &issuer,
        "log-client",
        Timestamp::now(),
    );
    let tampered = format!("{good}x");
    let mut secrets = vec![
        good.clone(),
        expired.clone(),
        foreign.clone(),
        tampered.clone(),
        client_secret.clone(),
    ];

    // Good requests: an agreement, usage, a batch, read-backs.
    let response = http
        .post(url("/api/v1/billing/agreements"))
        .bearer_auth(&good)
        .json(&json!({"customer_id": "customer_logs", "plan_code": "pro"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let list: Value = http
        .get(url("/api/v1/billing/agreements?customer_id=customer_logs"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let agreement = list["agreements"][0]["id"].as_str().unwrap().to_owned();
    let record = json!({
        "customer_agreement_id": agreement,
        "billing_feature_code": "api_calls",
        "meter_value": "5",
    });
    let response = http
        .post(url("/api/v1/billing/meter_usage"))
        .bearer_auth(&good)
        .header("idempotency-key", "log-test-1")
        .json(&record)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = http
        .post(url("/api/v1/billing/meter_usage/batch"))
        .bearer_auth(&good)
        .json(&json!({"records": [record, {"meter_value": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = http
        .get(url(&format!(
            "/api/v1/billing/meter_usage?customer_agreement_id={agreement}"
        )))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // The client-credentials grant, right and wrong.
    let response = http
        .post(url("/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.as_str()),
            ("audience", &format!("{issuer}/api")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let issued: Value = response.json().await.unwrap();
    let issued = issued["access_token"].as_str().unwrap().to_owned();
    secrets.push(issued.clone());
    let wrong_secret = format!("{client_secret}-wrong");
    secrets.push(wrong_secret.clone());
    let response = http
        .post(url("/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            ("client_secret", wrong_secret.as_str()),
            ("audience", &format!("{issuer}/api")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = http
        .get(url("/api/v1/billing/agreements?customer_id=customer_logs"))
        .bearer_auth(&issued)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Bad credentials of every kind, until the source address is refused.
    let bad = [
        format!("Bearer {expired}"),
        format!("Bearer {foreign}"),
        format!("Bearer {tampered}"),
        format!("Basic {good}"),
        "Bearer not-a-jwt".to_owned(),
        format!("Bearer {}", client_secret),
    ];
    let mut refused = false;
    for authorization in bad.iter().cycle().take(40) {
        let response = http
            .post(url("/api/v1/billing/meter_usage"))
            .header("authorization", authorization)
            .json(&record)
            .send()
            .await
            .unwrap();
        match response.status() {
            StatusCode::FORBIDDEN => {}
            StatusCode::TOO_MANY_REQUESTS => {
                refused = true;
                break;
            }
            other => panic!("{other}"),
        }
    }
    assert!(refused, "the invalid-credentials limit answered 429");
    // A token in the query string instead of the header (refused: 429 now).
    let response = http
        .get(url(&format!(
            "/api/v1/billing/agreements?customer_id=c&access_token={good}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();

    let text = logs.text();
    assert!(
        text.contains("token refused"),
        "the capture sees the server's events:\n{text}"
    );
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "a secret is in the logs");
        // No part of a token either: its signature alone is a credential's tail.
        if let Some(signature) = secret.rsplit('.').next().filter(|s| s.len() >= 20) {
            assert!(
                !text.contains(signature),
                "a token signature is in the logs"
            );
        }
    }
    let pem = std::fs::read_to_string(tmp.path().join(KEY_FILE_NAME)).unwrap();
    assert!(!text.contains(pem.trim()), "the signing key is in the logs");
    for line in pem
        .lines()
        .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
    {
        assert!(
            !text.contains(line),
            "a line of the signing key is in the logs"
        );
    }
}
