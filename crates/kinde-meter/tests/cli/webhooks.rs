//! `kinde-meter webhooks create|list|delete` (docs/webhooks.md#from-the-command-line):
//! on the data directory of a running server (with each webhook's delivery
//! state, from a receiver that fails), and through a server's API.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::support::{Server, http, kinde_meter, ok, run, run_args, run_ok, serve_in_process};

/// `kinde-meter ARGS --data-dir DIR`.
fn on(data_dir: &Path, args: &[&str]) -> Command {
    let mut command = kinde_meter();
    command.args(args).arg("--data-dir").arg(data_dir);
    command
}

/// A receiver on 127.0.0.1 that answers every request 500; its URL and the
/// number of requests it received.
fn failing_receiver() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            count.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope",
            );
        }
    });
    (url, received)
}

fn list_json(data_dir: &Path) -> Vec<Value> {
    let printed = run_ok(&mut on(data_dir, &["webhooks", "list", "--json"]));
    serde_json::from_str::<Value>(&printed)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

// Multi-threaded: the commands block this test's thread while the server runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_on_the_data_dir_of_a_running_server_show_their_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let (_url, stop) = serve_in_process(dir.path(), |config| {
        config.webhooks.allow_private_networks = true;
    })
    .await;
    let (endpoint, received) = failing_receiver();

    // The API's rules apply on a data directory too: private addresses need the flag.
    let refused = run(&mut on(
        dir.path(),
        &[
            "webhooks",
            "create",
            "--endpoint",
            &endpoint,
            "--event-types",
            "customer.agreement_created",
            "--name",
            "ledger",
        ],
    ));
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("INVALID_FIELD") && stderr.contains("--webhook-allow-private-networks"),
        "{stderr}"
    );
    let refused = run(&mut on(
        dir.path(),
        &[
            "webhooks",
            "create",
            "--endpoint",
            "https://203.0.113.10/x",
            "--event-types",
            "customer.agreement_created,user.created",
            "--name",
            "ledger",
        ],
    ));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("INVALID_FIELD") && stderr.contains("user.created"),
        "{stderr}"
    );
    assert!(list_json(dir.path()).is_empty());

    let id = run_ok(&mut on(
        dir.path(),
        &[
            "webhooks",
            "create",
            "--endpoint",
            &endpoint,
            "--event-types",
            "customer.agreement_created",
            "--event-types",
            "customer.plan_assigned",
            "--name",
            "ledger",
            "--description",
            "failing on purpose",
            "--webhook-allow-private-networks",
        ],
    ))
    .trim()
    .to_owned();
    assert!(id.starts_with("webhook_"), "{id}");
    let listed = list_json(dir.path());
    assert_eq!(listed.len(), 1);
    let webhook = &listed[0];
    assert_eq!(webhook["id"], id.as_str());
    assert_eq!(webhook["endpoint"], endpoint.as_str());
    assert_eq!(webhook["description"], "failing on purpose");
    assert_eq!(
        webhook["event_types"],
        serde_json::json!(["customer.agreement_created", "customer.plan_assigned"])
    );
    assert_eq!(webhook["last_attempt_at"], Value::Null);
    assert_eq!(webhook["consecutive_failures"], 0);

    // An agreement raises both events; the server's worker delivers them to the
    // receiver, which fails them: the listing shows it.
    run_ok(&mut on(
        dir.path(),
        &[
            "agreements",
            "create",
            "--customer-id",
            "cus_hooks",
            "--plan-code",
            "pro",
        ],
    ));
    let until = Instant::now() + Duration::from_secs(30);
    let webhook = loop {
        let listed = list_json(dir.path());
        if listed[0]["consecutive_failures"].as_u64().unwrap_or(0) >= 1 {
            break listed[0].clone();
        }
        assert!(
            Instant::now() < until,
            "no failed delivery listed after 30 s ({} requests received): {listed:?}",
            received.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(received.load(Ordering::SeqCst) >= 1);
    assert!(webhook["last_attempt_at"].is_string(), "{webhook}");
    assert_eq!(webhook["last_success_at"], Value::Null);
    assert!(
        webhook["last_error"].as_str().unwrap().contains("500"),
        "{webhook}"
    );
    assert!(webhook["pending"].as_u64().unwrap() >= 1, "{webhook}");

    let table = run_ok(&mut on(dir.path(), &["webhooks", "list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    for column in [
        "ID",
        "ENDPOINT",
        "LAST_ATTEMPT",
        "FAILURES",
        "PENDING",
        "LAST_ERROR",
    ] {
        assert!(lines[0].contains(column), "{table}");
    }
    assert!(
        lines[1].starts_with(&id) && lines[1].contains(&endpoint),
        "{table}"
    );

    let deleted = run_ok(&mut on(dir.path(), &["webhooks", "delete", &id]));
    assert_eq!(deleted.trim(), format!("deleted {id}"));
    assert!(list_json(dir.path()).is_empty());
    let again = run(&mut on(dir.path(), &["webhooks", "delete", &id]));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("WEBHOOK_NOT_FOUND"));

    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_through_a_servers_api() {
    let dir = tempfile::tempdir().unwrap();
    let (url, stop) = serve_in_process(dir.path(), |_| {}).await;
    let data_dir = dir.path().to_str().unwrap();
    let token = ok(run_args(&[
        "token",
        "--data-dir",
        data_dir,
        "--scope",
        "create:webhooks read:webhooks delete:webhooks",
    ]));
    let remote = |args: &[&str]| {
        let mut command = kinde_meter();
        command
            .args(args)
            .args(["--server", &url, "--token", &token]);
        run(&mut command)
    };

    let created = remote(&[
        "webhooks",
        "create",
        "--endpoint",
        "https://203.0.113.10/hook",
        "--event-types",
        "customer.plan_changed,customer.plan_assigned",
        "--name",
        "remote",
    ]);
    let id = ok(created);
    assert!(id.starts_with("webhook_"), "{id}");

    // The server decides about addresses (and has not allowed private ones).
    let refused = remote(&[
        "webhooks",
        "create",
        "--endpoint",
        "http://127.0.0.1:9/hook",
        "--event-types",
        "customer.plan_changed",
        "--name",
        "local",
        "--webhook-allow-private-networks",
    ]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("INVALID_FIELD"), "{stderr}");

    let listed: Value = serde_json::from_str(&ok(remote(&["webhooks", "list", "--json"]))).unwrap();
    assert_eq!(listed["code"], "OK");
    let webhooks = listed["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 1);
    assert_eq!(webhooks[0]["id"], id.as_str());
    assert_eq!(
        webhooks[0]["event_types"],
        serde_json::json!(["customer.plan_changed", "customer.plan_assigned"])
    );
    let table = ok(remote(&["webhooks", "list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].contains("EVENT_TYPES") && lines[1].starts_with(&id),
        "{table}"
    );

    assert_eq!(
        ok(remote(&["webhooks", "delete", &id])),
        format!("deleted {id}")
    );
    let again = remote(&["webhooks", "delete", &id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("WEBHOOK_NOT_FOUND"));
    let listed: Value = serde_json::from_str(&ok(remote(&["webhooks", "list", "--json"]))).unwrap();
    assert!(listed["webhooks"].as_array().unwrap().is_empty());

    let _ = stop.send(());
}

/// Creates a webhook at a loopback endpoint on a `serve` child; the status.
async fn create_local(server: &mut Server) -> reqwest::StatusCode {
    let token = server.printed_token();
    http()
        .post(format!("{}/api/v1/webhooks", server.url))
        .bearer_auth(token)
        .json(&serde_json::json!({"endpoint": "http://127.0.0.1:9/hook",
            "event_types": ["customer.plan_changed"], "name": "local"}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn serve_refuses_private_endpoints_unless_told_to_allow_them() {
    let strict_dir = tempfile::tempdir().unwrap();
    let mut strict = Server::start(strict_dir.path(), &["--webhook-usage-interval", "1"]);
    assert_eq!(
        create_local(&mut strict).await,
        reqwest::StatusCode::BAD_REQUEST
    );
    assert!(strict.stop().success());

    let lax_dir = tempfile::tempdir().unwrap();
    let mut lax = Server::start(lax_dir.path(), &["--webhook-allow-private-networks"]);
    assert_eq!(create_local(&mut lax).await, reqwest::StatusCode::OK);
    assert!(lax.stop().success());

    let env_dir = tempfile::tempdir().unwrap();
    let mut command = kinde_meter();
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(env_dir.path())
        .env("KINDE_METER_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true");
    let mut from_env = Server::spawn(command);
    assert_eq!(create_local(&mut from_env).await, reqwest::StatusCode::OK);
    assert!(from_env.stop().success());

    let zero = run(kinde_meter().args(["serve", "--webhook-usage-interval", "0"]));
    assert!(!zero.status.success());
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--webhook-usage-interval"));
}
