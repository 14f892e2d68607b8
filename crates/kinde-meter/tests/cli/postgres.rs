//! The real binary on PostgreSQL (skipped unless `KINDE_METER_TEST_DATABASE_URL`
//! names a server): `migrate`, two `serve --database-url` processes sharing
//! one database and one `--public-url`, `token --database-url` minting for
//! both, and the offline commands on the database.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

use kinde_meter_store::postgres::scratch::ScratchSchema;
use serde_json::{Value, json};

const PUBLIC_URL: &str = "http://meter.test";

fn kinde_meter() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kinde-meter"));
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("KINDE_METER_") {
            command.env_remove(var);
        }
    }
    command
}

fn run_ok(command: &mut Command) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = command.stdin(Stdio::null()).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8(stdout).unwrap(),
        String::from_utf8_lossy(&stderr),
    );
    assert!(status.success(), "{command:?} failed: {stdout}\n{stderr}");
    stdout
}

/// A `serve` child, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(url: &str) -> Server {
        let mut child = kinde_meter()
            .args(["serve", "--listen", "127.0.0.1:0", "--rate-limit", "0"])
            .args(["--public-url", PUBLIC_URL, "--database-url", url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Drains stdout for the child's whole life: a closed pipe would make
        // its next line fail.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let first = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        // "kinde-meter serving http://meter.test (listening on ADDR, data in PostgreSQL)"
        assert!(first.contains("data in PostgreSQL"), "{first}");
        let addr = first
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap()
            .to_owned();
        Server {
            child,
            addr: format!("http://{addr}"),
        }
    }
}

/// The suite's database URL with `schema` as the search path.
fn url_with_schema(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{schema}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_and_the_cli_share_one_database() {
    let Ok(server_url) = std::env::var("KINDE_METER_TEST_DATABASE_URL") else {
        eprintln!("skipped: KINDE_METER_TEST_DATABASE_URL is not set");
        return;
    };
    let schema = ScratchSchema::create(&server_url).await.unwrap();
    let url = url_with_schema(&server_url, schema.name());

    let migrated = run_ok(kinde_meter().args(["migrate", "--database-url", &url]));
    assert!(migrated.starts_with("applied migrations 1"), "{migrated}");
    let again = run_ok(kinde_meter().args(["migrate", "--database-url", &url]));
    assert!(again.contains("nothing to apply"), "{again}");

    let one = Server::start(&url);
    let two = Server::start(&url);
    let token = run_ok(kinde_meter().args(["token", "--database-url", &url]));
    let token = token.trim();
    assert_eq!(token.lines().count(), 1);

    let agreement = run_ok(kinde_meter().args([
        "agreements",
        "create",
        "--customer-id",
        "cust",
        "--plan-code",
        "pro",
        "--database-url",
        &url,
    ]));
    let agreement = agreement.trim();
    let http = reqwest::Client::new();
    for (server, value) in [(&one, "2"), (&two, "3"), (&one, "0.5")] {
        let response = http
            .post(format!("{}/api/v1/billing/meter_usage", server.addr))
            .bearer_auth(token)
            .json(&json!({"customer_agreement_id": agreement, "billing_feature_code": "api_calls", "meter_value": value}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    let usage = run_ok(kinde_meter().args([
        "usage",
        "--agreement-id",
        agreement,
        "--feature-code",
        "api_calls",
        "--database-url",
        &url,
    ]));
    let usage: Value = serde_json::from_str(&usage).unwrap();
    assert_eq!(usage["usage"][0]["value"], "5.5", "{usage}");

    // An M2M client registered on the database gets a token from one server
    // that the other accepts.
    let created = run_ok(kinde_meter().args([
        "clients",
        "create",
        "--name",
        "worker",
        "--scopes",
        "read:meter_usage",
        "--json",
        "--database-url",
        &url,
    ]));
    let created: Value = serde_json::from_str(&created).unwrap();
    let issued: Value = http
        .post(format!("{}/oauth2/token", one.addr))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", created["client_id"].as_str().unwrap()),
            ("client_secret", created["client_secret"].as_str().unwrap()),
            ("audience", &format!("{PUBLIC_URL}/api")),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = http
        .get(format!("{}/api/v1/billing/meter_usage", two.addr))
        .query(&[("customer_agreement_id", agreement)])
        .bearer_auth(issued["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    drop((one, two));
}
