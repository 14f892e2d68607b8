//! A server killed with SIGKILL after committing a change and before its
//! event was delivered: the server restarted on the same data delivers it,
//! the same event under the same `webhook-id`.
//!
//! The killed server is a child process: this test binary re-invoked with
//! `KINDE_METER_WEBHOOK_CRASH_CHILD` set and this module's
//! `crashing_server_process` as the only test, serving the data directory it
//! is given until it is killed.

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

use crate::harness::{DEADLINE, Receiver, Reply, create_webhook, settings, verify};
use crate::support::{Options, TestApp};

const CHILD_ENV: &str = "KINDE_METER_WEBHOOK_CRASH_CHILD";

/// What the child prints once it serves.
const READY: &str = "WEBHOOK-CRASH-CHILD-SERVING ";

/// The public URL every server of the test shares, so one token and one
/// issuer serve them all.
const PUBLIC_URL: &str = "http://webhooks-crash.test";

fn options(data_dir: Option<std::path::PathBuf>) -> Options {
    Options {
        data_dir,
        public_url: Some(PUBLIC_URL.to_owned()),
        // A short timeout, so the lease a killed attempt leaves (six
        // timeouts) expires soon.
        webhooks: kinde_meter_server::webhooks::worker::WebhookSettings {
            attempt_timeout: Duration::from_secs(1),
            ..settings()
        },
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_before_a_kill_is_delivered_after_the_restart() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    // The receiver takes the first attempt and never answers it.
    let receiver = Receiver::with_policy(|_| Reply::Hang).await;

    // A first server makes the data (and owns it: on PostgreSQL its schema
    // lives as long as `dir`), with the webhook.
    let app = TestApp::spawn_with(options(None)).await;
    let token = app.token.clone();
    create_webhook(&app, &receiver.url, &["customer.agreement_created"]).await;
    let dir = app.stop().await.expect("the test owns the directory");

    // The child serves it; the agreement is committed there.
    let (_, module) = module_path!().split_once("::").unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &format!("{module}::crashing_server_process")])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("the child went quiet")
            .unwrap()
            .expect("the child ended before serving");
        if let Some((_, addr)) = line.split_once(READY) {
            break format!("http://{}", addr.trim());
        }
    };
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{base}/api/v1/billing/agreements"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"customer_id": "cus_crash", "plan_code": "pro"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    // Its delivery is under way, unanswered: kill -9.
    let first = receiver
        .wait_until("the first attempt", |r| !r.is_empty())
        .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert!(!first[0].accepted());

    // Restarted on the same data, the server delivers the event.
    receiver.set_policy(|_| Reply::Status(200));
    let app = TestApp::spawn_with(options(Some(dir.path().to_owned()))).await;
    let received = receiver
        .wait_until("the delivery after the restart", |r| {
            r.iter().any(|r| r.accepted())
        })
        .await;
    let delivered = received.iter().find(|r| r.accepted()).unwrap();
    assert_eq!(delivered.event_id(), first[0].event_id());
    assert_eq!(delivered.webhook_id(), first[0].webhook_id());
    let claims = verify(&app, &delivered.body).await;
    assert_eq!(claims["type"], "customer.agreement_created");
    assert_eq!(claims["data"]["customer_id"], "cus_crash");
    app.stop().await;
    drop(dir);
}

/// The child: serves the directory named by [`CHILD_ENV`] until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_server_process() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let app = TestApp::spawn_with(options(Some(dir.into()))).await;
    println!("{READY}{}", app.addr);
    std::future::pending::<()>().await;
}
