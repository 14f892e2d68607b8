//! `kinde-meter entitlements list|check` through kinde-sdk, against a server
//! running in this process: the listing with this period's usage, the check,
//! a hard limit refusing `record`, and the errors a script sees (exit status 1,
//! the server's code on stderr).

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

/// The stderr of a command that failed with status 1.
fn failed(output: Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
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
    let token = ok(run_args(&[
        "token",
        "--data-dir",
        data_dir,
        "--scope",
        "create:meter_usage read:billing_entitlements",
    ]));
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--server", &url, "--token", &token]);
        run_args(&all)
    };
    let record = |feature: &str, value: &str| {
        run(&[
            "record",
            "--agreement-id",
            &agreement,
            "--feature-code",
            feature,
            "--value",
            value,
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

    // The listing: Kinde's fields with their nulls, and the usage.
    let page = json(run(&[
        "entitlements",
        "list",
        "--customer-id",
        "customer_ent",
        "--expand-plans",
    ]));
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
        "list",
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
        "list",
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

    // The check, with decimals as strings.
    let answer = json(check("api_calls", None));
    assert_eq!(answer["allowed"], true);
    assert_eq!(answer["consumed"], "1.5");
    assert_eq!(answer["remaining"], "999998.5");
    assert_eq!(answer["quantity"], "1");
    assert_eq!(json(check("seats", Some("2")))["allowed"], true);
    let answer = json(check("seats", Some("2.5")));
    assert_eq!(answer["allowed"], false);
    assert_eq!(answer["remaining"], "2");
    assert_eq!(json(check("sso", None))["allowed"], true);
    assert_eq!(json(check("nothing_like_it", None))["allowed"], false);

    // The hard limit refuses what the check refused, and stores nothing.
    let stderr = failed(record("seats", "2.5"));
    assert!(stderr.contains("ENTITLEMENT_LIMIT_EXCEEDED"), "{stderr}");
    assert_eq!(json(check("seats", None))["consumed"], "8");
    ok(record("seats", "2"));
    let answer = json(check("seats", Some("0.000000001")));
    assert_eq!(
        (&answer["allowed"], &answer["remaining"]),
        (&Value::Bool(false), &Value::from("0"))
    );

    let stderr = failed(check("api_calls", Some("1.0000000001")));
    assert!(stderr.contains("INVALID_METER_VALUE"), "{stderr}");

    // A token without the scope is refused.
    let writer = ok(run_args(&[
        "token",
        "--data-dir",
        data_dir,
        "--scope",
        "create:meter_usage",
    ]));
    let stderr = failed(run_args(&[
        "entitlements",
        "list",
        "--customer-id",
        "customer_ent",
        "--server",
        &url,
        "--token",
        &writer,
    ]));
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
    let answer = json(run_args(&[
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
    assert_eq!(answer["allowed"], true);
    assert_eq!(answer["quantity"], "2");

    let _ = stop.send(());
}
