//! `kinde-meter entitlements [list]|check`, against a server running in this
//! process through kinde-sdk and on its data directory directly (the two print
//! the same JSON): the listing with this period's usage, the check and its exit
//! status (0 allowed, 1 not allowed, 2 an error), a hard limit refusing
//! `record`, and the errors a script sees (the server's code on stderr).

use std::process::Output;

use kinde_meter_core::catalog::Catalog;
use serde_json::Value;

use crate::support::{ok, run_args, serve_in_process};

/// The demo plan's `api_calls` (limit 1 000 000, not enforced) and a `seats`
/// feature whose limit of 10 is enforced.
const CATALOG: &str = r#"
[[plans]]
code = "pro"
name = "Pro"
interval = "month"

[[plans.features]]
code = "api_calls"
name = "API calls"
metered = true
unit_amount = 2
limit_max = 1000000

[[plans.features]]
code = "seats"
name = "Seats"
metered = true
limit_max = 10
enforce_limit = true

[[plans.features]]
code = "sso"
name = "Single sign-on"
"#;

fn json(output: Output) -> Value {
    serde_json::from_str(&ok(output)).unwrap()
}

/// The stderr of a command that failed with `status`, having printed nothing.
fn failed_with(status: i32, output: Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(status),
        "stdout: {}, stderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout.is_empty(), "{output:?}");
    String::from_utf8(output.stderr).unwrap()
}

fn failed(output: Output) -> String {
    failed_with(1, output)
}

/// The exit status and the JSON answer of a check (allowed or not).
fn checked(output: Output) -> (i32, Value) {
    let status = output.status.code().unwrap();
    assert!(
        matches!(status, 0 | 1),
        "status {status}, stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["allowed"], status == 0, "{answer:#}");
    (status, answer)
}

/// Runs `kinde-meter ARGS` through the server (`--server` and a token) and on
/// the server's data directory; both must exit alike and print the same
/// thing. Returns the server's run.
fn both(args: &[&str], url: &str, token: &str, data_dir: &str) -> Output {
    let mut remote = args.to_vec();
    remote.extend_from_slice(&["--server", url, "--token", token]);
    let remote = run_args(&remote);
    let mut local = args.to_vec();
    local.extend_from_slice(&["--data-dir", data_dir]);
    let local = run_args(&local);
    assert_eq!(
        (remote.status.code(), &remote.stdout),
        (local.status.code(), &local.stdout),
        "{args:?}: --server {remote:?}, --data-dir {local:?}"
    );
    // Errors: the same code, whichever way (the data directory has no HTTP status).
    for code in ["INVALID_METER_VALUE", "NOT_FOUND", "INVALID_FIELD"] {
        let has = |o: &Output| String::from_utf8_lossy(&o.stderr).contains(code);
        assert_eq!(has(&remote), has(&local), "{code}: {remote:?} {local:?}");
    }
    remote
}

// Multi-threaded: the commands block this test's thread while the server runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_check_show_live_usage_and_a_hard_limit_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let (url, stop) = serve_in_process(dir.path(), |config| {
        config.catalog = Catalog::parse(CATALOG, "test catalog").unwrap();
    })
    .await;
    let agreement = ok(run_args(&[
        "agreements",
        "create",
        "--customer-id",
        "customer_ent",
        "--plan-code",
        "pro",
        "--data-dir",
        data_dir,
    ]));
    // The default scopes include read:billing_entitlements.
    let token = ok(run_args(&["token", "--data-dir", data_dir]));
    let run = |args: &[&str]| both(args, &url, &token, data_dir);
    let record = |feature: &str, value: &str| {
        run_args(&[
            "record",
            "--agreement-id",
            &agreement,
            "--feature-code",
            feature,
            "--value",
            value,
            "--server",
            &url,
            "--token",
            &token,
        ])
    };
    let check = |feature: &str, quantity: Option<&str>| {
        let mut args = vec![
            "entitlements",
            "check",
            "--customer-id",
            "customer_ent",
            "--feature-code",
            feature,
        ];
        if let Some(quantity) = quantity {
            args.extend_from_slice(&["--quantity", quantity]);
        }
        run(&args)
    };

    ok(record("api_calls", "1.5"));
    ok(record("seats", "8"));

    // The listing: Kinde's fields with their nulls, and the usage; `list` is
    // the same as no subcommand.
    let page = json(run(&[
        "entitlements",
        "--customer-id",
        "customer_ent",
        "--expand-plans",
    ]));
    assert_eq!(
        page,
        json(run(&[
            "entitlements",
            "list",
            "--customer-id",
            "customer_ent",
            "--expand-plans",
        ]))
    );
    assert_eq!(page["code"], "OK");
    assert_eq!(page["has_more"], false);
    assert_eq!(page["plans"][0]["code"], "pro");
    let entitlements = page["entitlements"].as_array().unwrap();
    let features: Vec<&str> = entitlements
        .iter()
        .map(|e| e["feature_code"].as_str().unwrap())
        .collect();
    assert_eq!(features, ["api_calls", "seats", "sso"], "{page:#}");
    let (api_calls, seats, sso) = (&entitlements[0], &entitlements[1], &entitlements[2]);
    assert_eq!(api_calls["entitlement_limit_max"], 1_000_000);
    assert_eq!(api_calls["unit_amount"], 2);
    assert_eq!(api_calls["consumed"], 1.5);
    assert_eq!(api_calls["remaining"], 999_998.5);
    assert_eq!(seats["consumed"], 8);
    assert_eq!(seats["remaining"], 2);
    assert_eq!(seats["unit_amount"], Value::Null);
    assert_eq!(sso["entitlement_limit_max"], Value::Null);
    assert!(sso.get("consumed").is_none(), "{sso:#}");

    // Paging and max_value, as the official SDK sends them.
    let first = json(run(&[
        "entitlements",
        "--customer-id",
        "customer_ent",
        "--page-size",
        "1",
        "--max-value",
        "77",
    ]));
    assert!(first.get("plans").is_none(), "{first:#}");
    assert_eq!(first["has_more"], true);
    assert_eq!(first["entitlements"][0]["id"], api_calls["id"]);
    let next = json(run(&[
        "entitlements",
        "--customer-id",
        "customer_ent",
        "--page-size",
        "5",
        "--starting-after",
        api_calls["id"].as_str().unwrap(),
        "--max-value",
        "77",
    ]));
    assert_eq!(next["has_more"], false);
    assert_eq!(next["entitlements"][0]["id"], seats["id"]);
    assert_eq!(next["entitlements"][1]["entitlement_limit_max"], 77);
    let back = json(run(&[
        "entitlements",
        "list",
        "--customer-id",
        "customer_ent",
        "--ending-before",
        seats["id"].as_str().unwrap(),
    ]));
    assert_eq!(back["entitlements"][0]["id"], api_calls["id"]);
    let stderr = failed(run(&[
        "entitlements",
        "--customer-id",
        "customer_ent",
        "--starting-after",
        "entitlement_unknown",
    ]));
    assert!(stderr.contains("NOT_FOUND"), "{stderr}");
    let stderr = failed(run(&[
        "entitlements",
        "--customer-id",
        "customer_ent",
        "--page-size",
        "501",
    ]));
    assert!(stderr.contains("INVALID_FIELD"), "{stderr}");
    // An unknown customer has no entitlements.
    let none = json(run(&["entitlements", "--customer-id", "nobody"]));
    assert_eq!(none["entitlements"], Value::Array(Vec::new()), "{none:#}");

    // The check, with decimals as strings; its exit status says the answer.
    let (status, answer) = checked(check("api_calls", None));
    assert_eq!(status, 0);
    assert_eq!(answer["consumed"], "1.5");
    assert_eq!(answer["remaining"], "999998.5");
    assert_eq!(answer["quantity"], "1");
    assert_eq!(checked(check("seats", Some("2"))).0, 0);
    let (status, answer) = checked(check("seats", Some("2.5")));
    assert_eq!(status, 1);
    assert_eq!(answer["remaining"], "2");
    assert_eq!(checked(check("sso", None)).0, 0);
    let (status, answer) = checked(check("nothing_like_it", None));
    assert_eq!(status, 1);
    assert_eq!(answer["remaining"], "0");

    // The hard limit refuses what the check refused, and stores nothing.
    let stderr = failed(record("seats", "2.5"));
    assert!(stderr.contains("ENTITLEMENT_LIMIT_EXCEEDED"), "{stderr}");
    assert_eq!(checked(check("seats", None)).1["consumed"], "8");
    ok(record("seats", "2"));
    let (status, answer) = checked(check("seats", Some("0.000000001")));
    assert_eq!((status, &answer["remaining"]), (1, &Value::from("0")));
    assert_eq!(checked(check("seats", Some("0"))).0, 0);

    // An error is status 2, not "not allowed".
    let stderr = failed_with(2, check("api_calls", Some("1.0000000001")));
    assert!(stderr.contains("INVALID_METER_VALUE"), "{stderr}");

    // A token without the scope is refused.
    let writer = ok(run_args(&[
        "token",
        "--data-dir",
        data_dir,
        "--scope",
        "create:meter_usage",
    ]));
    let with_writer = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--server", &url, "--token", &writer]);
        run_args(&all)
    };
    let stderr = failed(with_writer(&[
        "entitlements",
        "--customer-id",
        "customer_ent",
    ]));
    assert!(stderr.contains("403"), "{stderr}");
    let stderr = failed_with(
        2,
        with_writer(&[
            "entitlements",
            "check",
            "--customer-id",
            "customer_ent",
            "--feature-code",
            "api_calls",
        ]),
    );
    assert!(stderr.contains("403"), "{stderr}");

    // Client credentials work as well as a token.
    let client = json(run_args(&[
        "clients",
        "create",
        "--name",
        "entitlements",
        "--scopes",
        "read:billing_entitlements",
        "--json",
        "--data-dir",
        data_dir,
    ]));
    let (status, answer) = checked(run_args(&[
        "entitlements",
        "check",
        "--customer-id",
        "customer_ent",
        "--feature-code",
        "api_calls",
        "--quantity",
        "2",
        "--server",
        &url,
        "--client-id",
        client["client_id"].as_str().unwrap(),
        "--client-secret",
        client["client_secret"].as_str().unwrap(),
    ]));
    assert_eq!((status, &answer["quantity"]), (0, &Value::from("2")));

    let _ = stop.send(());
}

#[test]
fn the_command_line_lists_without_a_subcommand_and_refuses_mixing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    // Listing flags before `check` are a usage error (clap's status 2).
    let output = run_args(&[
        "entitlements",
        "--customer-id",
        "c",
        "check",
        "--customer-id",
        "c",
        "--feature-code",
        "f",
    ]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    // No database in the directory: an error, 2 for the check, 1 for the listing.
    let check = run_args(&[
        "entitlements",
        "check",
        "--customer-id",
        "c",
        "--feature-code",
        "f",
        "--data-dir",
        data_dir,
    ]);
    let stderr = failed_with(2, check);
    assert!(stderr.contains("holds no kinde-meter database"), "{stderr}");
    let list = run_args(&["entitlements", "--customer-id", "c", "--data-dir", data_dir]);
    assert!(failed(list).contains("holds no kinde-meter database"));
    let help = ok(run_args(&["entitlements", "check", "--help"]));
    assert!(
        help.contains("exits 0 when allowed, 1 when not allowed, 2 on an error"),
        "{help}"
    );
}
