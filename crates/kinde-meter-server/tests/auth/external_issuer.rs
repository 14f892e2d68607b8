//! External issuer mode (docs/tokens.md#external-issuer): tokens of another issuer (standing in for real
//! Kinde: a second HTTP server on 127.0.0.1 serving its JWKS) are verified with
//! its keys, a key rotation is picked up without restart, and a flood of unknown
//! `kid`s cannot make the server hammer the issuer.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::support::{Options, TestApp, assert_error};
use axum::{Json, Router, extract::State, routing::get};
use jiff::{SignedDuration, Timestamp};
use kinde_meter_server::{
    ExternalIssuer,
    auth::{MintRequest, SigningKey, jwks, mint_token},
};
use reqwest::StatusCode;
use serde_json::Value;

/// A fake issuer: serves whatever JWKS it holds and counts the fetches.
#[derive(Clone)]
struct Issuer {
    url: String,
    jwks: Arc<RwLock<Value>>,
    fetches: Arc<AtomicUsize>,
}

impl Issuer {
    async fn start(keys: &[&SigningKey]) -> Issuer {
        let issuer_state = (
            Arc::new(RwLock::new(jwks(keys))),
            Arc::new(AtomicUsize::new(0)),
        );
        async fn serve(
            State((jwks, fetches)): State<(Arc<RwLock<Value>>, Arc<AtomicUsize>)>,
        ) -> Json<Value> {
            fetches.fetch_add(1, Ordering::SeqCst);
            Json(jwks.read().unwrap().clone())
        }
        let app = Router::new()
            .route("/.well-known/jwks", get(serve))
            .with_state(issuer_state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Issuer {
            url,
            jwks: issuer_state.0,
            fetches: issuer_state.1,
        }
    }

    fn rotate_to(&self, keys: &[&SigningKey]) {
        *self.jwks.write().unwrap() = jwks(keys);
    }

    fn token(&self, key: &SigningKey, audience: &str) -> String {
        mint_token(
            key,
            &MintRequest {
                issuer: self.url.clone(),
                audience: vec![audience.to_owned()],
                client_id: "kinde-m2m-app".into(),
                scopes: vec![
                    "create:billing_agreements".into(),
                    "read:billing_agreements".into(),
                ],
                lifetime: SignedDuration::from_hours(1),
                now: Timestamp::now(),
            },
        )
        .unwrap()
    }
}

async fn spawn_for(issuer: &Issuer, refetch_interval: Duration) -> TestApp {
    let mut external = ExternalIssuer::new(issuer.url.clone());
    external.refetch_interval = refetch_interval;
    TestApp::spawn_with(Options {
        external_issuer: Some(external),
        ..Options::default()
    })
    .await
}

async fn create_agreement(app: &TestApp, token: &str) -> reqwest::Response {
    app.create_agreement_with(token, "c").await
}

#[tokio::test]
async fn the_issuers_tokens_are_accepted_and_ours_are_not() {
    let key = SigningKey::generate().unwrap();
    let issuer = Issuer::start(&[&key]).await;
    let app = spawn_for(&issuer, Duration::from_secs(30)).await;
    let audience = format!("{}/api", issuer.url);
    assert_eq!(
        create_agreement(&app, &issuer.token(&key, &audience))
            .await
            .status(),
        StatusCode::OK
    );
    assert_error(
        create_agreement(&app, &issuer.token(&key, "https://someone-else/api")).await,
        StatusCode::FORBIDDEN,
        &["INVALID_CREDENTIALS"],
    )
    .await;
    // The server's own built-in tokens mean nothing in external mode.
    assert_error(
        create_agreement(&app, &app.token).await,
        StatusCode::FORBIDDEN,
        &["INVALID_CREDENTIALS"],
    )
    .await;
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_without_restart() {
    let old = SigningKey::generate().unwrap();
    let new = SigningKey::generate().unwrap();
    let issuer = Issuer::start(&[&old]).await;
    let app = spawn_for(&issuer, Duration::from_millis(200)).await;
    let audience = format!("{}/api", issuer.url);
    let old_token = issuer.token(&old, &audience);
    let new_token = issuer.token(&new, &audience);
    assert_eq!(
        create_agreement(&app, &old_token).await.status(),
        StatusCode::OK
    );

    issuer.rotate_to(&[&new]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = create_agreement(&app, &new_token).await.status();
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(Instant::now() < deadline, "the new key was never picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The withdrawn key no longer verifies, even for a token verified (and
    // cached) before the rotation.
    assert_error(
        create_agreement(&app, &old_token).await,
        StatusCode::FORBIDDEN,
        &["INVALID_CREDENTIALS"],
    )
    .await;
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_interval() {
    let key = SigningKey::generate().unwrap();
    let issuer = Issuer::start(&[&key]).await;
    let app = spawn_for(&issuer, Duration::from_secs(30)).await;
    let after_start = issuer.fetches.load(Ordering::SeqCst);
    assert_eq!(after_start, 1, "one fetch at start");
    let audience = format!("{}/api", issuer.url);
    let strangers: Vec<SigningKey> = (0..3).map(|_| SigningKey::generate().unwrap()).collect();
    let mut sends = Vec::new();
    for i in 0..60 {
        let token = issuer.token(&strangers[i % strangers.len()], &audience);
        let app = &app;
        sends.push(async move { create_agreement(app, &token).await.status() });
    }
    for status in futures::future::join_all(sends).await {
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let fetches = issuer.fetches.load(Ordering::SeqCst);
    assert!(
        fetches <= 2,
        "{fetches} JWKS fetches for 60 unknown-kid tokens within one interval"
    );
    // The good key still works.
    assert_eq!(
        create_agreement(&app, &issuer.token(&key, &audience))
            .await
            .status(),
        StatusCode::OK
    );
}
