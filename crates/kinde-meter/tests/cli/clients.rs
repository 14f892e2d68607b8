//! `kinde-meter clients create|list|revoke` (docs/tokens.md#m2m-clients), run as a user runs them on
//! the data directory of a server that is running (in this process), and the
//! credentials they print used at that server's `/oauth2/token`.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::support::{kinde_meter, request_token, run, run_ok, serve_in_process};

/// `kinde-meter ARGS --data-dir DIR`.
fn on(data_dir: &Path, args: &[&str]) -> Command {
    let mut command = kinde_meter();
    command.args(args).arg("--data-dir").arg(data_dir);
    command
}

/// A running server on `data_dir` (revocations polled every 100 ms) and its URL.
async fn serve(data_dir: &Path) -> (String, tokio::sync::oneshot::Sender<()>) {
    serve_in_process(data_dir, |config| {
        config.revocation_refresh = Duration::from_millis(100);
    })
    .await
}

async fn token(url: &str, id: &str, secret: &str) -> reqwest::Response {
    request_token(url, url, id, secret).await
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

    let printed = run_ok(&mut on(
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

    let json: Value = serde_json::from_str(&run_ok(&mut on(
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

    let table = run_ok(&mut on(dir.path(), &["clients", "list"]));
    assert!(table.starts_with("CLIENT_ID"), "{table}");
    assert!(table.contains(&id) && table.contains("billing worker") && table.contains(&reader_id));
    assert!(!table.contains(&secret));
    let listed: Value =
        serde_json::from_str(&run_ok(&mut on(dir.path(), &["clients", "list", "--json"]))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[0]["client_id"], id.as_str());
    assert_eq!(listed[0]["revoked_at"], Value::Null);
    assert!(!listed.to_string().contains(&secret));

    let revoked = run_ok(&mut on(dir.path(), &["clients", "revoke", &id]));
    assert!(
        revoked.starts_with(&format!("revoked {id} at ")),
        "{revoked}"
    );
    let again = run_ok(&mut on(dir.path(), &["clients", "revoke", &id]));
    assert!(again.contains("already revoked"), "{again}");
    let listed: Value =
        serde_json::from_str(&run_ok(&mut on(dir.path(), &["clients", "list", "--json"]))).unwrap();
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
    let output = run(&mut on(
        dir.path(),
        &[
            "clients",
            "create",
            "--name",
            "n",
            "--scopes",
            "read:meter_usage",
        ],
    ));
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
        let output = run(&mut on(dir.path(), args));
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}
