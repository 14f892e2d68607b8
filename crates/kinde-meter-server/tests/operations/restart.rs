//! Durability across restarts, and one server per data directory.

use crate::support::{Options, TestApp};
use kinde_meter_server::{Application, ServerConfig};
use serde_json::json;

#[tokio::test]
async fn records_and_aggregates_survive_a_restart() {
    let app = TestApp::spawn().await;
    let a = app.create_agreement("cust", "pro").await;
    for v in ["1", "2.5", "3"] {
        app.record_ok(json!({"customer_agreement_id": a, "billing_feature_code": "api_calls", "meter_value": v}))
            .await;
    }
    let data_dir = app.data_dir.clone();
    let tmp = app.stop().await.expect("the test owns its data dir");

    let app = TestApp::spawn_with(Options {
        data_dir: Some(data_dir),
        ..Options::default()
    })
    .await;
    let usage = app.usage(&a, "api_calls", None).await;
    assert_eq!(
        (usage["value"].as_str(), usage["record_count"].as_u64()),
        (Some("6.5"), Some(3))
    );
    // The agreement and the signing key survived too: the old agreement takes usage
    // and a token from the new server's (same) key works.
    app.record_ok(json!({"customer_agreement_id": a, "billing_feature_code": "api_calls", "meter_value": "0.5"}))
        .await;
    assert_eq!(app.usage_value(&a, "api_calls", None).await, "7");
    app.stop().await;
    drop(tmp);
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    if crate::support::on_postgres() {
        // Servers on PostgreSQL share a database, not a directory: several on
        // one database is the point (the `postgres` tests).
        return;
    }
    let app = TestApp::spawn().await;
    let second = Application::build(ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        &app.data_dir,
    ))
    .await;
    let message = format!(
        "{:#}",
        second.err().expect("the second server must be refused")
    );
    assert!(message.contains("already serving"), "{message}");
    assert!(
        message.contains(&app.data_dir.display().to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn graceful_shutdown_answers_in_flight_requests() {
    let app = TestApp::spawn().await;
    let a = app.create_agreement("cust", "pro").await;
    let body = json!({"customer_agreement_id": a, "billing_feature_code": "api_calls", "meter_value": "1"});
    let http = app.http.clone();
    let url = app.url("/api/v1/billing/meter_usage");
    let token = app.token.clone();
    // Fire 50 requests, wait until they are all sent, then stop: every request that
    // got a 200 must be in the store afterwards.
    let mut handles = Vec::new();
    for _ in 0..50 {
        let (http, url, token, body) = (http.clone(), url.clone(), token.clone(), body.clone());
        handles.push(tokio::spawn(async move {
            http.post(url).bearer_auth(token).json(&body).send().await
        }));
    }
    let mut ok = 0;
    for h in handles {
        if let Ok(r) = h.await.unwrap()
            && r.status() == 200
        {
            ok += 1;
        }
    }
    let data_dir = app.data_dir.clone();
    let tmp = app.stop().await;
    let app = TestApp::spawn_with(Options {
        data_dir: Some(data_dir),
        ..Options::default()
    })
    .await;
    assert_eq!(app.usage(&a, "api_calls", None).await["record_count"], ok);
    drop(tmp);
}
