//! `kinde-meter serve` and the commands around it, end to end
//! (docs/operations.md): `serve` in a child process on 127.0.0.1:0 with a
//! temporary data directory, the other commands run as a user would run them,
//! and HTTP to check what the server accepts.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::support::{
    DEADLINE, EXIT_DEADLINE, SUCCESS, Server, http, kinde_meter, record, run, run_ok, usage_entry,
};

/// Waits for `condition` to hold, checking every few milliseconds, until `deadline`.
fn wait_for(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !condition() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stdout that must be exactly one line; returns it.
fn one_line(stdout: &str) -> String {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "expected exactly one line, got {stdout:?}");
    assert!(stdout.ends_with('\n'));
    lines[0].to_owned()
}

/// Reads the usage of `feature` over HTTP; returns (value, record_count).
async fn usage_over_http(url: &str, token: &str, agreement: &str, feature: &str) -> (String, u64) {
    let response = http()
        .get(format!("{url}/api/v1/billing/meter_usage"))
        .query(&[
            ("customer_agreement_id", agreement),
            ("billing_feature_code", feature),
        ])
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    usage_entry(&body, feature)
}

/// `kinde-meter usage --data-dir DIR --agreement-id A --feature-code api_calls`, parsed.
fn usage_offline(data_dir: &Path, agreement: &str) -> (String, u64) {
    let stdout = run_ok(
        kinde_meter()
            .args([
                "usage",
                "--feature-code",
                "api_calls",
                "--agreement-id",
                agreement,
            ])
            .arg("--data-dir")
            .arg(data_dir),
    );
    let body: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("usage prints JSON ({e}): {stdout}"));
    usage_entry(&body, "api_calls")
}

/// `kinde-meter token --data-dir DIR --scope SCOPE`: exactly one line, a JWT.
fn mint(data_dir: &Path, scope: &str) -> String {
    let stdout = run_ok(
        kinde_meter()
            .args(["token", "--scope", scope])
            .arg("--data-dir")
            .arg(data_dir),
    );
    let token = one_line(&stdout);
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token:?}");
    token
}

fn error_code(body: &str) -> String {
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    body["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_flags_prints_a_ready_token_and_curl_lines_that_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let first = server.lines[0].clone();
    assert!(
        first.contains(&format!("data in {}", dir.path().display())),
        "{first}"
    );
    let token = server.printed_token();
    let (record_line, agreement) = server.printed_record_line();
    let read_line = server.printed_read_line();
    assert!(agreement.starts_with("agreement_"), "{agreement}");
    for line in [&record_line, &read_line] {
        assert!(line.starts_with("curl "), "{line}");
        assert!(line.contains(&server.url), "{line}");
        assert!(line.contains("Authorization: Bearer $TOKEN"), "{line}");
        assert!(line.contains("/api/v1/billing/meter_usage"), "{line}");
    }

    // The token and the agreement record usage and read it back exactly.
    let client = http();
    assert_eq!(
        record(&client, &server.url, &token, &agreement, "5").await,
        (200, SUCCESS.to_owned())
    );
    assert_eq!(
        record(&client, &server.url, &token, &agreement, "0.25").await,
        (200, SUCCESS.to_owned())
    );
    assert_eq!(
        usage_over_http(&server.url, &token, &agreement, "api_calls").await,
        ("5.25".to_owned(), 2)
    );

    // The printed curl lines themselves, run by a shell, do the same.
    let curl = |line: &str| {
        run_ok(
            Command::new("sh")
                .arg("-c")
                .arg(line)
                .env("TOKEN", &token)
                .current_dir(dir.path()),
        )
    };
    assert_eq!(curl(&record_line).trim(), SUCCESS);
    let body: Value = serde_json::from_str(&curl(&read_line)).unwrap();
    assert_eq!(usage_entry(&body, "api_calls"), ("10.25".to_owned(), 3));

    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_prints_only_a_token_that_the_server_accepts_within_its_scope() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let (_, agreement) = server.printed_record_line();
    let client = http();

    let writer = mint(dir.path(), "create:meter_usage");
    let reader = mint(dir.path(), "read:meter_usage");
    assert_eq!(
        record(&client, &server.url, &writer, &agreement, "3").await,
        (200, SUCCESS.to_owned())
    );
    assert_eq!(
        usage_over_http(&server.url, &reader, &agreement, "api_calls").await,
        ("3".to_owned(), 1)
    );

    // Each token is limited to its scope.
    let (status, body) = record(&client, &server.url, &reader, &agreement, "1").await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (403, "INSUFFICIENT_SCOPE")
    );
    let response = client
        .get(format!("{}/api/v1/billing/meter_usage", server.url))
        .query(&[("customer_agreement_id", agreement.as_str())])
        .bearer_auth(&writer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    assert_eq!(
        error_code(&response.text().await.unwrap()),
        "INSUFFICIENT_SCOPE"
    );
    let lister = mint(dir.path(), "read:billing_agreements");
    let response = client
        .post(format!("{}/api/v1/billing/agreements", server.url))
        .bearer_auth(&lister)
        .json(&json!({"customer_id": "c", "plan_code": "pro"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    assert_eq!(
        error_code(&response.text().await.unwrap()),
        "INSUFFICIENT_SCOPE"
    );

    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreements_and_usage_commands_work_offline_and_against_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let token = server.printed_token();
    let client = http();
    let data_dir = dir.path().to_str().unwrap().to_owned();

    // Offline, on the directory the server is running on: only an id is printed.
    let offline = one_line(&run_ok(kinde_meter().args([
        "agreements",
        "create",
        "--customer-id",
        "customer_offline",
        "--plan-code",
        "pro",
        "--data-dir",
        &data_dir,
    ])));
    assert!(offline.starts_with("agreement_"), "{offline}");
    // Through the running server.
    let remote = one_line(&run_ok(kinde_meter().args([
        "agreements",
        "create",
        "--customer-id",
        "customer_remote",
        "--plan-code",
        "starter",
        "--server",
        &server.url,
        "--token",
        &token,
    ])));
    assert!(remote.starts_with("agreement_"), "{remote}");
    assert_ne!(offline, remote);

    // The running server takes usage against both.
    for (agreement, value) in [(&offline, "7"), (&remote, "11.5")] {
        assert_eq!(
            record(&client, &server.url, &token, agreement, value).await,
            (200, SUCCESS.to_owned())
        );
    }

    // `agreements list` prints Kinde's GetBillingAgreementsResponse as JSON, both ways.
    for target in [
        vec!["--data-dir", data_dir.as_str()],
        vec!["--server", server.url.as_str(), "--token", token.as_str()],
    ] {
        for (customer, id, plan) in [
            ("customer_offline", &offline, "pro"),
            ("customer_remote", &remote, "starter"),
        ] {
            let stdout = run_ok(
                kinde_meter()
                    .args(["agreements", "list", "--customer-id", customer])
                    .args(&target),
            );
            let body: Value = serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("agreements list prints JSON ({e}): {stdout}"));
            assert_eq!(body["code"], "OK", "{body}");
            assert_eq!(body["has_more"], false, "{body}");
            let agreements = body["agreements"].as_array().unwrap();
            assert_eq!(agreements.len(), 1, "{body}");
            assert_eq!(agreements[0]["id"], id.as_str());
            assert_eq!(agreements[0]["plan_code"], plan);
            assert!(agreements[0]["expires_on"].is_null());
        }
    }

    // `usage` prints the usage JSON, both ways, with the exact values.
    assert_eq!(usage_offline(dir.path(), &offline), ("7".to_owned(), 1));
    let stdout = run_ok(kinde_meter().args([
        "usage",
        "--agreement-id",
        &remote,
        "--server",
        &server.url,
        "--token",
        &token,
    ]));
    let body: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(usage_entry(&body, "api_calls"), ("11.5".to_owned(), 1));

    // An unknown plan is an error naming it, with nothing on stdout.
    let output = run(kinde_meter().args([
        "agreements",
        "create",
        "--customer-id",
        "customer_offline",
        "--plan-code",
        "no_such_plan",
        "--data-dir",
        &data_dir,
    ]));
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("PLAN_NOT_FOUND"));

    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let token = server.printed_token();
    let (_, agreement) = server.printed_record_line();

    let output = run(kinde_meter()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path()));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already serving"), "stderr: {stderr}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("kinde-meter serving"),
        "the refused server must not claim to serve"
    );

    // The first one is unharmed.
    assert_eq!(
        record(&http(), &server.url, &token, &agreement, "1").await,
        (200, SUCCESS.to_owned())
    );
    assert!(server.stop().success());

    // Once it has stopped, the directory can be served again; and a SIGTERM sent
    // as soon as the ready line is out is a clean stop too (the handlers are
    // installed before it is printed).
    let server = Server::start(dir.path(), &[]);
    assert!(server.stop().success());
}

/// Sends the headers of a usage POST with `Expect: 100-continue` and waits for
/// the server's `100 Continue`: proof that the request is accepted and its handler
/// is reading the body, i.e. the request is in flight.
fn start_slow_request(addr: SocketAddr, token: &str, body: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST /api/v1/billing/meter_usage HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        let n = stream
            .read(&mut byte)
            .expect("the server answers 100 Continue");
        assert_eq!(
            n,
            1,
            "connection closed; got {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&seen);
    assert!(head.starts_with("HTTP/1.1 100"), "{head}");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_in_flight_requests_exits_0_and_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let token = server.printed_token();
    let (_, agreement) = server.printed_record_line();

    // Load: four connections recording "1" each until the server goes away.
    let acknowledged = Arc::new(AtomicU64::new(0));
    let stopped = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (url, token, agreement) = (server.url.clone(), token.clone(), agreement.clone());
        let (acknowledged, stopped) = (acknowledged.clone(), stopped.clone());
        load.push(tokio::spawn(async move {
            let client = http();
            let mut refused = 0u64;
            while !stopped.load(Ordering::Relaxed) {
                let sent = client
                    .post(format!("{url}/api/v1/billing/meter_usage"))
                    .bearer_auth(&token)
                    .json(&json!({
                        "customer_agreement_id": agreement,
                        "billing_feature_code": "api_calls",
                        "meter_value": "1",
                    }))
                    .send()
                    .await;
                match sent {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let body = response.text().await;
                        if status == 200 && body.as_deref().ok() == Some(SUCCESS) {
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                        } else {
                            refused += 1;
                        }
                    }
                    // The server has closed its listener or this connection.
                    Err(_) => break,
                }
            }
            refused
        }));
    }
    let counter = acknowledged.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("200 acknowledged records", DEADLINE, || {
            counter.load(Ordering::SeqCst) >= 200
        })
    })
    .await
    .unwrap();

    // One request in flight: accepted, its handler waiting for the body.
    let slow_body = json!({
        "customer_agreement_id": agreement,
        "billing_feature_code": "api_calls",
        "meter_value": "1000",
    })
    .to_string();
    let (addr, slow_token) = (server.addr, token.clone());
    let body = slow_body.clone();
    let mut slow =
        tokio::task::spawn_blocking(move || start_slow_request(addr, &slow_token, &body))
            .await
            .unwrap();
    let acknowledged_before_signal = acknowledged.load(Ordering::SeqCst);

    server.terminate();
    // Draining: the signal is logged and new connections are refused...
    let stderr = server.stderr.clone();
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        wait_for("the shutdown to start", DEADLINE, || {
            stderr.text().contains("shutdown signal received")
        });
        wait_for("the listener to close", DEADLINE, || {
            TcpStream::connect(addr).is_err()
        });
    })
    .await
    .unwrap();
    // ...while the request in flight is still answered, and committed.
    let answer = tokio::task::spawn_blocking(move || {
        slow.write_all(slow_body.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while !String::from_utf8_lossy(&answer).ends_with(SUCCESS) {
            match slow.read(&mut byte) {
                Ok(1) => answer.push(byte[0]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(SUCCESS), "{answer}");

    let status = tokio::task::spawn_blocking(move || {
        let status = server.wait_exit(EXIT_DEADLINE);
        (status, server)
    })
    .await
    .unwrap();
    let (status, server) = status;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", server.stderr.text());
    drop(server);
    stopped.store(true, Ordering::Relaxed);
    let mut refused = 0;
    for task in load {
        refused += task.await.unwrap();
    }
    assert_eq!(refused, 0, "no request may be refused while draining");
    let acknowledged = acknowledged.load(Ordering::SeqCst);
    assert!(acknowledged >= acknowledged_before_signal);

    // Every acknowledged record is stored (and nothing else), read offline...
    let expected = ((acknowledged + 1000).to_string(), acknowledged + 1);
    let (data_dir, agreement_id) = (dir.path().to_owned(), agreement.clone());
    let stored = tokio::task::spawn_blocking(move || usage_offline(&data_dir, &agreement_id))
        .await
        .unwrap();
    assert_eq!(stored, expected);

    // ...and after a restart, offline and over HTTP.
    let mut server = Server::start(dir.path(), &[]);
    let token = server.printed_token();
    let (_, demo) = server.printed_record_line();
    assert_eq!(demo, agreement, "the demo agreement survives the restart");
    let (data_dir, agreement_id) = (dir.path().to_owned(), agreement.clone());
    let stored = tokio::task::spawn_blocking(move || usage_offline(&data_dir, &agreement_id))
        .await
        .unwrap();
    assert_eq!(stored, expected);
    assert_eq!(
        usage_over_http(&server.url, &token, &agreement, "api_calls").await,
        expected
    );
    assert!(server.stop().success());
}

#[test]
fn a_bad_catalog_fails_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // An unknown interval: the value on line 4, column 12.
        (
            "bad-interval.toml",
            "[[plans]]\ncode = \"pro\"\nname = \"Pro\"\ninterval = \"fortnight\"\n",
            "4:12: ",
        ),
        // Not TOML at all, on line 2.
        ("bad-syntax.toml", "[[plans]]\ncode = = \"pro\"\n", ":2:"),
    ];
    for (name, text, at) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let output = run(kinde_meter()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--catalog")
            .arg(&path));
        assert!(!output.status.success(), "{name} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let located = format!("{}:", path.display());
        let line = stderr
            .lines()
            .find(|l| l.contains(&located))
            .unwrap_or_else(|| panic!("{name}: no `file:line:col: message` in {stderr}"));
        let after = &line[line.find(&located).unwrap() + located.len()..];
        // `line:col: message`, both numbers known.
        let mut parts = after.splitn(3, ':');
        let (l, c, message) = (
            parts.next().unwrap(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        assert!(l.parse::<usize>().unwrap() > 0, "{line}");
        assert!(c.parse::<usize>().unwrap() > 0, "{line}");
        assert!(
            message.starts_with(' ') && message.trim().len() > 3,
            "{line}"
        );
        assert!(line.contains(at), "{name}: expected {at:?} in {line}");
        assert!(output.stdout.is_empty(), "nothing served");
    }
    let missing = run(kinde_meter()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--catalog")
        .arg(dir.path().join("missing.toml")));
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("missing.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_variables_work_instead_of_flags() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("from-env");
    let mut command = kinde_meter();
    command
        .arg("serve")
        .env("KINDE_METER_DATA_DIR", &data_dir)
        .env("KINDE_METER_LISTEN", "127.0.0.1:0")
        .current_dir(dir.path());
    let mut server = Server::spawn(command);
    assert!(
        server.lines[0].contains(&format!("data in {}", data_dir.display())),
        "{}",
        server.lines[0]
    );
    assert!(data_dir.join("kinde-meter.db").exists());
    assert!(
        !dir.path().join("kinde-meter-data").exists(),
        "the default data dir was used despite KINDE_METER_DATA_DIR"
    );
    let (_, agreement) = server.printed_record_line();

    // `token` and `agreements create` read the data dir from the environment too.
    let token = one_line(&run_ok(
        kinde_meter()
            .args(["token", "--scope", "create:meter_usage read:meter_usage"])
            .env("KINDE_METER_DATA_DIR", &data_dir)
            .current_dir(dir.path()),
    ));
    assert_eq!(
        record(&http(), &server.url, &token, &agreement, "2").await,
        (200, SUCCESS.to_owned())
    );
    let created = one_line(&run_ok(
        kinde_meter()
            .args(["agreements", "create", "--customer-id", "customer_env"])
            .args(["--plan-code", "pro"])
            .env("KINDE_METER_DATA_DIR", &data_dir)
            .current_dir(dir.path()),
    ));
    assert!(created.starts_with("agreement_"));

    // `usage` against the server named by KINDE_METER_SERVER / KINDE_METER_TOKEN.
    let stdout = run_ok(
        kinde_meter()
            .args(["usage", "--agreement-id", &agreement])
            .env("KINDE_METER_SERVER", &server.url)
            .env("KINDE_METER_TOKEN", &token)
            .current_dir(dir.path()),
    );
    let body: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(usage_entry(&body, "api_calls"), ("2".to_owned(), 1));
    assert!(server.stop().success());
}
