//! `kinde-meter record` and `kinde-meter usage --server` through kinde-sdk,
//! against a server running in this process: with a token, with client
//! credentials, and with an idempotency key that makes re-running the command
//! count once.

use serde_json::Value;

use crate::support::{SUCCESS, agreement_and_client, ok, run_args, serve_in_process, usage_entry};

fn usage(url: &str, auth: &[&str], agreement: &str, feature: &str) -> (String, u64) {
    let mut args = vec![
        "usage",
        "--agreement-id",
        agreement,
        "--feature-code",
        feature,
        "--server",
        url,
    ];
    args.extend_from_slice(auth);
    let body: Value = serde_json::from_str(&ok(run_args(&args))).unwrap();
    usage_entry(&body, feature)
}

// Multi-threaded: the commands block this test's thread while the server runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_and_usage_work_with_a_token_or_client_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let (url, stop) = serve_in_process(dir.path(), |_| {}).await;
    let (agreement, id, secret) = agreement_and_client(
        data_dir,
        "customer_cli",
        "create:meter_usage read:meter_usage",
    );
    let credentials = ["--client-id", &id, "--client-secret", &secret];
    let token = ok(run_args(&["token", "--data-dir", data_dir]));

    let record = |extra: &[&str], auth: &[&str]| {
        let mut args = vec!["record", "--agreement-id", &agreement, "--server", &url];
        args.extend_from_slice(extra);
        args.extend_from_slice(auth);
        run_args(&args)
    };

    // With client credentials, then with a token.
    let printed = ok(record(
        &["--feature-code", "api_calls", "--value", "1.5"],
        &credentials,
    ));
    assert_eq!(printed, SUCCESS);
    ok(record(
        &[
            "--feature-code",
            "api_calls",
            "--value",
            "2",
            "--timestamp",
            &jiff::Timestamp::now().to_string(),
        ],
        &["--token", &token],
    ));
    assert_eq!(
        usage(&url, &credentials, &agreement, "api_calls"),
        ("3.5".to_owned(), 2)
    );

    // The same idempotency key twice: recorded once.
    for _ in 0..2 {
        ok(record(
            &[
                "--feature-code",
                "api_calls",
                "--value",
                "10",
                "--idempotency-key",
                "cli-run-1",
            ],
            &["--token", &token],
        ));
    }
    assert_eq!(
        usage(&url, &["--token", &token], &agreement, "api_calls"),
        ("13.5".to_owned(), 3)
    );

    // Absolute.
    ok(record(
        &["--feature-code", "storage_gb", "--value", "7", "--absolute"],
        &credentials,
    ));
    ok(record(
        &["--feature-code", "storage_gb", "--value", "4", "--absolute"],
        &credentials,
    ));
    assert_eq!(usage(&url, &credentials, &agreement, "storage_gb").0, "4");

    // Refusals are reported with their code; nothing is printed on stdout.
    let refused = record(
        &["--feature-code", "api_calls", "--value", "-1"],
        &["--token", &token],
    );
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("INVALID_METER_VALUE"), "{stderr}");

    let wrong_secret = record(
        &["--feature-code", "api_calls", "--value", "1"],
        &["--client-id", &id, "--client-secret", "wrong"],
    );
    assert!(!wrong_secret.status.success());
    let stderr = String::from_utf8_lossy(&wrong_secret.stderr);
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert!(!stderr.contains(&secret), "{stderr}");

    // A token and client credentials together are refused by the parser.
    let both = record(
        &[
            "--feature-code",
            "api_calls",
            "--value",
            "1",
            "--token",
            &token,
        ],
        &credentials,
    );
    assert_eq!(both.status.code(), Some(2));
    let _ = stop.send(());
}
