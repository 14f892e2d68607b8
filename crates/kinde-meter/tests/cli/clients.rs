//! `kinde-meter clients create|list|revoke` (docs/tokens.md#m2m-clients), run as a user runs them on
//! the data directory of a server that is running (in this process), and the
//! credentials they print used at that server's `/oauth2/token`.

use std::{
    path::Path,
    process::{Command, Output},
    time::{Duration, Instant},
};

use kinde_meter_server::{Application, ServerConfig};
use serde_json::Value;

fn kinde_meter(data_dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kinde-meter"));
    for var in [
        "KINDE_METER_DATA_DIR",
        "KINDE_METER_SCOPE",
        "KINDE_METER_SERVER",
    ] {
        command.env_remove(var);
    }
    command
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A running server on `data_dir` (revocations polled every 100 ms) and its URL.
async fn serve(data_dir: &Path) -> (String, tokio::sync::oneshot::Sender<()>) {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), data_dir);
    config.revocation_refresh = Duration::from_millis(100);
    let app = Application::build(config).await.unwrap();
    let url = app.identity().issuer();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    (url, stop)
}

async fn token(url: &str, id: &str, secret: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
            ("audience", &format!("{url}/api")),
        ])
        .send()
        .await
        .unwrap()
}

async fn read_usage(url: &str, token: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .get(format!(
            "{url}/api/v1/billing/meter_usage?customer_agreement_id=agreement_none"
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

// Multi-threaded: the commands block this test's thread while the server runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_created_listed_and_revoked_on_the_data_dir_of_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let (url, stop) = serve(dir.path()).await;

    let printed = ok(kinde_meter(
        dir.path(),
        &[
            "clients",
            "create",
            "--name",
            "billing worker",
            "--scopes",
            "create:meter_usage read:meter_usage",
        ],
    ));
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 2, "{printed}");
    let id = lines[0].strip_prefix("client_id: ").unwrap().to_owned();
    let secret = lines[1].strip_prefix("client_secret: ").unwrap().to_owned();
    assert_eq!(id.len(), 32);

    let json: Value = serde_json::from_str(&ok(kinde_meter(
        dir.path(),
        &[
            "clients",
            "create",
            "--name",
            "reader",
            "--scopes",
            "read:meter_usage",
            "--json",
        ],
    )))
    .unwrap();
    let reader_id = json["client_id"].as_str().unwrap().to_owned();
    assert!(json["client_secret"].as_str().unwrap().len() >= 64);
    assert_eq!(json["scopes"], serde_json::json!(["read:meter_usage"]));

    // The printed credentials work at the running server at once.
    let response = token(&url, &id, &secret).await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let access_token = body["access_token"].as_str().unwrap().to_owned();
    assert_ne!(
        read_usage(&url, &access_token).await,
        reqwest::StatusCode::FORBIDDEN
    );

    let table = ok(kinde_meter(dir.path(), &["clients", "list"]));
    assert!(table.starts_with("CLIENT_ID"), "{table}");
    assert!(table.contains(&id) && table.contains("billing worker") && table.contains(&reader_id));
    assert!(!table.contains(&secret));
    let listed: Value =
        serde_json::from_str(&ok(kinde_meter(dir.path(), &["clients", "list", "--json"]))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[0]["client_id"], id.as_str());
    assert_eq!(listed[0]["revoked_at"], Value::Null);
    assert!(!listed.to_string().contains(&secret));

    let revoked = ok(kinde_meter(dir.path(), &["clients", "revoke", &id]));
    assert!(
        revoked.starts_with(&format!("revoked {id} at ")),
        "{revoked}"
    );
    let again = ok(kinde_meter(dir.path(), &["clients", "revoke", &id]));
    assert!(again.contains("already revoked"), "{again}");
    let listed: Value =
        serde_json::from_str(&ok(kinde_meter(dir.path(), &["clients", "list", "--json"]))).unwrap();
    assert!(listed[0]["revoked_at"].is_string());

    assert_eq!(
        token(&url, &id, &secret).await.status(),
        reqwest::StatusCode::UNAUTHORIZED
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_usage(&url, &access_token).await != reqwest::StatusCode::FORBIDDEN {
        assert!(
            Instant::now() < deadline,
            "the revoked client's token still works"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = stop.send(());
}

#[test]
fn mistakes_fail_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    // No database yet: nothing is created by accident.
    let output = kinde_meter(
        dir.path(),
        &[
            "clients",
            "create",
            "--name",
            "n",
            "--scopes",
            "read:meter_usage",
        ],
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("holds no kinde-meter database"));

    drop(kinde_meter_store::sqlite::SqliteStore::open(dir.path(), Default::default()).unwrap());
    for (args, message) in [
        (
            &[
                "clients",
                "create",
                "--name",
                "n",
                "--scopes",
                "read:meter-usage",
            ][..],
            "unknown scope read:meter-usage",
        ),
        (
            &["clients", "create", "--name", "n", "--scopes", " "][..],
            "at least one scope",
        ),
        (
            &[
                "clients",
                "create",
                "--name",
                " ",
                "--scopes",
                "read:meter_usage",
            ][..],
            "name",
        ),
        (&["clients", "revoke", "nobody"][..], "no client nobody"),
    ] {
        let output = kinde_meter(dir.path(), args);
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}
