//! The real binary on PostgreSQL (skipped unless `KINDE_METER_TEST_DATABASE_URL`
//! names a server): `migrate`, two `serve --database-url` processes sharing
//! one database and one `--public-url`, `token --database-url` minting for
//! both, and the offline commands on the database (entitlements printing what
//! either server answers).

use kinde_meter_store::postgres::scratch::ScratchSchema;
use serde_json::Value;

use crate::support::{Server, http, kinde_meter, record, request_token, run, run_ok};

const PUBLIC_URL: &str = "http://meter.test";

/// `serve` on the database behind `url` with the shared public URL.
fn serve(url: &str) -> Server {
    let mut command = kinde_meter();
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--rate-limit", "0"])
        .args(["--public-url", PUBLIC_URL, "--database-url", url]);
    let server = Server::spawn(command);
    assert!(
        server.lines[0].contains("data in PostgreSQL"),
        "{:?}",
        server.lines
    );
    assert_eq!(server.url, PUBLIC_URL);
    server
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

    let one = serve(&url);
    let two = serve(&url);
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
    let http = http();
    for (server, value) in [(&one, "2"), (&two, "3"), (&one, "0.5")] {
        let base = format!("http://{}", server.addr);
        let (status, body) = record(&http, &base, token, agreement, value).await;
        assert_eq!(status, 200, "{body}");
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

    // The entitlements on the database print what either server answers (the
    // default token may read them); the check's exit status is its answer.
    for (subcommand, extra) in [
        (None, &[][..]),
        (
            Some("check"),
            &["--feature-code", "api_calls", "--quantity", "999994.5"][..],
        ),
    ] {
        let mut args = vec!["entitlements"];
        args.extend(subcommand);
        args.extend_from_slice(&["--customer-id", "cust"]);
        args.extend_from_slice(extra);
        let on_database = run_ok(kinde_meter().args(&args).args(["--database-url", &url]));
        for server in [&one, &two] {
            let base = format!("http://{}", server.addr);
            let via_server = run_ok(
                kinde_meter()
                    .args(&args)
                    .args(["--server", &base, "--token", token]),
            );
            assert_eq!(via_server, on_database, "{args:?}");
        }
        let answer: Value = serde_json::from_str(&on_database).unwrap();
        match subcommand {
            None => assert_eq!(answer["entitlements"][0]["consumed"], 5.5, "{answer}"),
            Some(_) => assert_eq!(answer["remaining"], "999994.5", "{answer}"),
        }
    }
    let refused = run(kinde_meter().args([
        "entitlements",
        "check",
        "--customer-id",
        "cust",
        "--feature-code",
        "api_calls",
        "--quantity",
        "999994.6",
        "--database-url",
        &url,
    ]));
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");

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
    let issued: Value = request_token(
        &format!("http://{}", one.addr),
        PUBLIC_URL,
        created["client_id"].as_str().unwrap(),
        created["client_secret"].as_str().unwrap(),
    )
    .await
    .json()
    .await
    .unwrap();
    let response = http
        .get(format!("http://{}/api/v1/billing/meter_usage", two.addr))
        .query(&[("customer_agreement_id", agreement)])
        .bearer_auth(issued["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    drop((one, two));
}
