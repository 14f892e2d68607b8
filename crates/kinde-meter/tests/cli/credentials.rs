//! Which credentials a client command uses when they come both from flags and
//! from the environment (`Credentials` in cli.rs): a flag on the command line
//! beats the environment, and two given the same way conflict. Against a
//! server running in this process, so that the credentials used are proven by
//! the server accepting them.

use std::process::Command;

use serde_json::Value;

use crate::support::{agreement_and_client, kinde_meter, ok, run, run_args, serve_in_process};

/// `kinde-meter usage --server URL --agreement-id A ARGS` with `env` set.
fn usage(url: &str, agreement: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = kinde_meter();
    command
        .args(["usage", "--server", url, "--agreement-id", agreement])
        .args(args)
        .envs(env.iter().copied());
    command
}

/// The `code` of the JSON answer `usage` printed.
fn answer_code(printed: &str) -> String {
    let answer: Value = serde_json::from_str(printed).unwrap();
    answer["code"].as_str().unwrap().to_owned()
}

/// The exit status and stderr of a command that must fail with a usage error.
fn usage_error(command: &mut Command) -> String {
    let output = run(command);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    String::from_utf8(output.stderr).unwrap()
}

// Multi-threaded: the commands block this test's thread while the server runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_beats_the_environment_and_two_of_a_kind_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let (url, stop) = serve_in_process(dir.path(), |_| {}).await;
    let (agreement, id, secret) =
        agreement_and_client(data_dir, "customer_credentials", "read:meter_usage");
    let (id, secret) = (id.as_str(), secret.as_str());
    let token = ok(run_args(&["token", "--data-dir", data_dir]));
    let wrong_client = [
        ("KINDE_METER_CLIENT_ID", "0123456789abcdef0123456789abcdef"),
        ("KINDE_METER_CLIENT_SECRET", "not-the-secret"),
    ];

    // --token on the command line, an unknown client in the environment: the
    // token is used (the unknown client would be refused by /oauth2/token).
    let read = ok(run(&mut usage(
        &url,
        &agreement,
        &["--token", &token],
        &wrong_client,
    )));
    assert_eq!(answer_code(&read), "OK", "{read}");
    // A secret left in the environment without its client id is ignored too.
    ok(run(&mut usage(
        &url,
        &agreement,
        &["--token", &token],
        &wrong_client[1..],
    )));

    // Client credentials on the command line, a token the server refuses in
    // the environment: the credentials are used.
    let read = ok(run(&mut usage(
        &url,
        &agreement,
        &["--client-id", id, "--client-secret", secret],
        &[("KINDE_METER_TOKEN", "not.a.token")],
    )));
    assert_eq!(answer_code(&read), "OK", "{read}");

    // Without the precedence, the same command with the unknown client alone
    // fails: the environment's credentials are really read.
    let refused = run(&mut usage(&url, &agreement, &[], &wrong_client));
    assert!(!refused.status.success(), "{refused:?}");

    // Both as flags, or both from the environment: a usage error, nothing sent.
    let stderr = usage_error(&mut usage(
        &url,
        &agreement,
        &[
            "--token",
            &token,
            "--client-id",
            id,
            "--client-secret",
            secret,
        ],
        &[],
    ));
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let stderr = usage_error(&mut usage(
        &url,
        &agreement,
        &[],
        &[
            ("KINDE_METER_TOKEN", token.as_str()),
            ("KINDE_METER_CLIENT_ID", id),
            ("KINDE_METER_CLIENT_SECRET", secret),
        ],
    ));
    assert!(
        stderr.contains("KINDE_METER_TOKEN and KINDE_METER_CLIENT_ID are both set"),
        "{stderr}"
    );
    // A client id needs its secret; a secret given as a flag needs its id.
    let stderr = usage_error(&mut usage(&url, &agreement, &["--client-id", id], &[]));
    assert!(
        stderr.contains("--client-id needs --client-secret"),
        "{stderr}"
    );
    let stderr = usage_error(&mut usage(
        &url,
        &agreement,
        &["--token", &token, "--client-secret", secret],
        &[],
    ));
    assert!(
        stderr.contains("--client-secret needs --client-id"),
        "{stderr}"
    );
    stop.send(()).unwrap();
}
