//! PostgreSQL only (skipped unless `KINDE_METER_TEST_DATABASE_URL` is set):
//! several servers on one database, and the database going away under load.
//! The rest of the suite runs on PostgreSQL too, unchanged, when the variable
//! is set; these tests are about what only a shared database has.

mod entitlements;
#[path = "../support/mod.rs"]
mod support;
mod tcp_proxy;

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use jiff::{SignedDuration, Timestamp};
use kinde_meter_core::{
    aggregate::{Entry, MeterType, OrderKey, fold},
    value::MeterValue,
};
use kinde_meter_server::storage::mint_for_database;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{METER_USAGE, Options, TestApp, backend};
use tcp_proxy::{Mode, TcpProxy};
use tokio::sync::Notify;

/// The load balancer's address: every server of a deployment has it as its
/// public URL, so a token from one is valid on all.
const PUBLIC_URL: &str = "http://meter.test";

/// Says a test did not run (no PostgreSQL), and whether it should go on.
fn on_postgres(test: &str) -> bool {
    if !backend::on_postgres() {
        eprintln!("{test}: skipped, {} is not set", backend::DATABASE_URL_VAR);
    }
    backend::on_postgres()
}

/// Two servers on one database, as behind a load balancer.
async fn two_servers() -> (TestApp, TestApp) {
    let one = TestApp::spawn_with(Options {
        public_url: Some(PUBLIC_URL.to_owned()),
        ..Options::default()
    })
    .await;
    let two = TestApp::spawn_with(Options {
        public_url: Some(PUBLIC_URL.to_owned()),
        data_dir: Some(one.data_dir.clone()),
        ..Options::default()
    })
    .await;
    (one, two)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_on_one_database_share_data_and_one_issuer() {
    if !on_postgres("servers_on_one_database_share_data_and_one_issuer") {
        return;
    }
    let (one, two) = two_servers().await;
    // One key, created once, served by both.
    assert_eq!(one.key.kid(), two.key.kid());
    let jwks = |app: &TestApp| {
        let url = app.url("/.well-known/jwks");
        let http = app.http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(jwks(&one).await, jwks(&two).await);

    // An agreement made through one is used and read through the other.
    let agreement = one.create_agreement("cust", "pro").await;
    two.record_ok(json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "2"}))
        .await;
    one.record_ok(json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "3"}))
        .await;
    assert_eq!(two.usage_value(&agreement, "api_calls", None).await, "5");

    // A token minted by one (its test token) works on the other, and so does
    // one from `kinde-meter token --database-url`.
    let response = two
        .post_with(
        &one.token,
        METER_USAGE,
        &json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "1"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let (url, settings) = backend::database_for(&one.data_dir).unwrap();
    let cli_token = mint_for_database(
        &url,
        &settings,
        &["read:meter_usage".to_owned()],
        None,
        None,
        SignedDuration::from_mins(5),
        Timestamp::now(),
    )
    .await
    .unwrap();
    for app in [&one, &two] {
        let response = app
            .get_with(
                &cli_token,
                &format!("{METER_USAGE}?customer_agreement_id={agreement}"),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    // An M2M client registered once gets tokens from one server for the other.
    let (id, secret) = one.register_client("worker", "create:meter_usage").await;
    assert_eq!(one.audience(), format!("{PUBLIC_URL}/api"));
    let issued: Value = one
        .request_token(&id, &secret, None)
        .await
        .json()
        .await
        .unwrap();
    let token = issued["access_token"].as_str().unwrap();
    let response = two
        .post_with(
        token,
        METER_USAGE,
        &json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "1"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(one.usage_value(&agreement, "api_calls", None).await, "7");
}

/// Concurrent clients writing through two servers, deltas and absolutes mixed,
/// each record with its own timestamp in arrival order shuffled: the usage both
/// servers report is the single-process reference, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_through_two_servers_match_a_single_process_reference() {
    if !on_postgres("writers_through_two_servers_match_a_single_process_reference") {
        return;
    }
    let (one, two) = two_servers().await;
    let agreement = one.create_agreement("cust", "pro").await;
    let listed = one.list_agreements("customer_id=cust").await;
    let start: Timestamp = listed["agreements"][0]["current_period_start"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    const RECORDS: usize = 400;
    // Distinct instants just after the period's start, in a scrambled order.
    let records: Vec<(Timestamp, MeterType, String)> = (0..RECORDS)
        .map(|i| {
            let slot = (i * 7919) % RECORDS; // 7919 is prime: a permutation
            let at = start + SignedDuration::from_micros(1 + slot as i64 * 10);
            let kind = if i % 5 == 3 {
                MeterType::Absolute
            } else {
                MeterType::Delta
            };
            (at, kind, format!("{}.{}", i % 97, i % 10))
        })
        .collect();
    let expected = fold(
        &records
            .iter()
            .enumerate()
            .map(|(seq, (at, kind, value))| Entry {
                key: OrderKey {
                    effective_at: *at,
                    seq: seq as i64,
                },
                meter_type: *kind,
                value: MeterValue::parse(value).unwrap(),
                received_at: *at,
            })
            .collect::<Vec<_>>(),
    )
    .unwrap()
    .to_string();

    let apps = [Arc::new(one), Arc::new(two)];
    let records = Arc::new(records);
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|worker| {
            let (app, records, next, agreement) = (
                apps[worker % 2].clone(),
                records.clone(),
                next.clone(),
                agreement.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((at, kind, value)) = records.get(i) else {
                        break;
                    };
                    app.record_ok(json!({
                        "customer_agreement_id": agreement,
                        "billing_feature_code": "api_calls",
                        "meter_value": value,
                        "meter_type_code": kind.as_str(),
                        "meter_usage_timestamp": at.to_string(),
                    }))
                    .await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for app in &apps {
        let usage = app.usage(&agreement, "api_calls", None).await;
        assert_eq!(usage["value"].as_str(), Some(expected.as_str()));
        assert_eq!(usage["record_count"].as_u64(), Some(RECORDS as u64));
    }
}

/// The same request with the same `Idempotency-Key` sent to two servers at
/// once, repeatedly: all answered 200, all but one as replays, one record per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_raced_through_two_servers_stores_one_record() {
    if !on_postgres("one_idempotency_key_raced_through_two_servers_stores_one_record") {
        return;
    }
    let (one, two) = two_servers().await;
    let agreement = one.create_agreement("cust", "pro").await;
    let body = json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "3"});
    let apps = [Arc::new(one), Arc::new(two)];
    const KEYS: usize = 12;
    for k in 0..KEYS {
        let key = format!("key-{k}");
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let (app, body, key) = (apps[i % 2].clone(), body.clone(), key.clone());
                tokio::spawn(async move {
                    let response = app
                        .http
                        .post(app.url(METER_USAGE))
                        .bearer_auth(&app.token)
                        .header("Idempotency-Key", key)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let replayed = response.headers().contains_key("idempotent-replayed");
                    (response.status(), replayed)
                })
            })
            .collect();
        let mut fresh = 0;
        for task in tasks {
            let (status, replayed) = task.await.unwrap();
            assert_eq!(status, StatusCode::OK);
            fresh += usize::from(!replayed);
        }
        assert_eq!(fresh, 1, "key {key}");
    }
    let usage = apps[1].usage(&agreement, "api_calls", None).await;
    assert_eq!(usage["record_count"].as_u64(), Some(KEYS as u64));
    assert_eq!(usage["value"], (3 * KEYS).to_string());
}

/// A server behind a proxy to PostgreSQL.
async fn server_behind(proxy: &TcpProxy) -> TestApp {
    TestApp::spawn_with(Options {
        database_url: backend::database_url_via(proxy.addr()),
        ..Options::default()
    })
    .await
}

async fn readyz(app: &TestApp) -> StatusCode {
    app.http
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
}

/// While the database is unreachable (`mode`), a write is answered 503 with
/// `Retry-After` within 5 s and stores nothing, `/readyz` turns 503 within
/// 5 s; once it is back, both recover by themselves.
async fn outage_is_answered_and_recovered(mode: Mode) {
    let proxy = TcpProxy::start(backend::database_addr().unwrap()).await;
    let app = server_behind(&proxy).await;
    let agreement = app.create_agreement("cust", "pro").await;
    let body = json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "1"});
    app.record_ok(body.clone()).await;
    assert_eq!(readyz(&app).await, StatusCode::OK);

    proxy.set(mode);
    let started = Instant::now();
    let response = app.record(body.clone()).await;
    let elapsed = started.elapsed();
    assert!(response.headers().contains_key("retry-after"));
    support::assert_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        &["SERVICE_UNAVAILABLE"],
    )
    .await;
    assert!(
        elapsed < Duration::from_secs(5),
        "answered after {elapsed:?}"
    );
    let started = Instant::now();
    assert_eq!(readyz(&app).await, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    proxy.set(Mode::Open);
    // No restart: the next request finds its way to the database again.
    app.record_ok(body.clone()).await;
    assert_eq!(readyz(&app).await, StatusCode::OK);
    let usage = app.usage(&agreement, "api_calls", None).await;
    assert_eq!(
        usage["record_count"], 2,
        "the refused record was not stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_database_answers_503_in_time_and_recovers() {
    if on_postgres("a_refused_database_answers_503_in_time_and_recovers") {
        outage_is_answered_and_recovered(Mode::Refuse).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_database_answers_503_in_time_and_recovers() {
    if on_postgres("a_silent_database_answers_503_in_time_and_recovers") {
        outage_is_answered_and_recovered(Mode::Blackhole).await;
    }
}

/// Clients that retry a 503 with the same `Idempotency-Key` (as the SDK's
/// reporter does) until it is acknowledged, while the database goes away
/// mid-load and comes back: every record is acknowledged once the database is
/// back, and the usage counts each exactly once.
async fn load_through_an_outage(
    outage: impl AsyncFnOnce(),
    restore: impl AsyncFnOnce(),
    proxy_url: Option<String>,
) {
    let app = Arc::new(
        TestApp::spawn_with(Options {
            database_url: proxy_url,
            ..Options::default()
        })
        .await,
    );
    let agreement = app.create_agreement("cust", "pro").await;
    const WORKERS: usize = 8;
    const PER_WORKER: usize = 30;
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let tasks: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (app, agreement, acknowledged, refused, progress) = (
                app.clone(),
                agreement.clone(),
                acknowledged.clone(),
                refused.clone(),
                progress.clone(),
            );
            tokio::spawn(async move {
                let mut keys = HashSet::new();
                for i in 0..PER_WORKER {
                    let key = format!("w{w}-r{i}");
                    let body = json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": "2"});
                    let deadline = Instant::now() + Duration::from_secs(90);
                    loop {
                        assert!(Instant::now() < deadline, "{key} never acknowledged");
                        let response = app
                            .http
                            .post(app.url(METER_USAGE))
                            .bearer_auth(&app.token)
                            .header("Idempotency-Key", &key)
                            .json(&body)
                            .send()
                            .await
                            .unwrap();
                        match response.status() {
                            StatusCode::OK => break,
                            StatusCode::SERVICE_UNAVAILABLE => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                progress.notify_waiters();
                                // Like a client honouring Retry-After, but
                                // without making the test slow.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            other => panic!("{key}: {other}"),
                        }
                    }
                    keys.insert(key);
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                    progress.notify_waiters();
                }
                keys
            })
        })
        .collect();
    let wait_for = |what: &'static str, done: Box<dyn Fn() -> bool + Send>| {
        let progress = progress.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !done() {
                assert!(Instant::now() < deadline, "timed out waiting until {what}");
                let _ = tokio::time::timeout(Duration::from_millis(200), progress.notified()).await;
            }
        }
    };
    let total = WORKERS * PER_WORKER;
    let ack = acknowledged.clone();
    wait_for(
        "a third is acknowledged",
        Box::new(move || ack.load(Ordering::Relaxed) >= total / 3),
    )
    .await;
    outage().await;
    let r = refused.clone();
    wait_for(
        "writes are refused",
        Box::new(move || r.load(Ordering::Relaxed) >= WORKERS),
    )
    .await;
    restore().await;
    let mut keys = HashSet::new();
    for task in tasks {
        keys.extend(task.await.unwrap());
    }
    assert_eq!(keys.len(), total);
    let usage = app.usage(&agreement, "api_calls", None).await;
    assert_eq!(usage["record_count"].as_u64(), Some(total as u64));
    assert_eq!(usage["value"], (2 * total).to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_through_a_database_outage_loses_nothing_and_counts_nothing_twice() {
    if !on_postgres("load_through_a_database_outage_loses_nothing_and_counts_nothing_twice") {
        return;
    }
    let proxy = Arc::new(TcpProxy::start(backend::database_addr().unwrap()).await);
    let url = backend::database_url_via(proxy.addr());
    let (cut, open) = (proxy.clone(), proxy.clone());
    load_through_an_outage(
        async move || cut.set(Mode::Refuse),
        async move || open.set(Mode::Open),
        url,
    )
    .await;
}

/// The same with PostgreSQL itself stopped and started again (`pg_ctlcluster`),
/// which disturbs every other user of the server: it runs only when
/// `KINDE_METER_TEST_PG_RESTART=1` says that is fine (never in shared CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_through_a_postgresql_restart_loses_nothing_and_counts_nothing_twice() {
    if !on_postgres("load_through_a_postgresql_restart_loses_nothing_and_counts_nothing_twice") {
        return;
    }
    if std::env::var("KINDE_METER_TEST_PG_RESTART").as_deref() != Ok("1") {
        eprintln!("skipped: set KINDE_METER_TEST_PG_RESTART=1 to stop and start PostgreSQL");
        return;
    }
    let version = std::fs::read_dir("/etc/postgresql")
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    let pg_ctlcluster = |args: &'static [&'static str]| {
        let version = version.clone();
        async move || {
            let status = tokio::process::Command::new("pg_ctlcluster")
                .arg("--skip-systemctl-redirect")
                .arg(&version)
                .arg("main")
                .args(args)
                .status()
                .await
                .unwrap();
            assert!(status.success(), "pg_ctlcluster {args:?}");
        }
    };
    load_through_an_outage(
        pg_ctlcluster(&["stop", "-m", "fast"]),
        pg_ctlcluster(&["start"]),
        None,
    )
    .await;
}
