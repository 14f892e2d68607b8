//! `kinde-meter export` (docs/import-export.md#export): on the data directory
//! (or the database) it writes the same bytes as `--server` fetching
//! `GET /api/v1/billing/meter_usage/export` from a `kinde-meter serve` on it,
//! with a token or with client credentials, in CSV and NDJSON, for the current
//! period, the previous one and an instant; every row equals `kinde-meter
//! usage`; `--output` writes the same file; a bad period is `INVALID_FIELD`.
//! On SQLite always, and on PostgreSQL when `KINDE_METER_TEST_DATABASE_URL` is set.

use std::collections::BTreeMap;

use kinde_meter_store::postgres::scratch::ScratchSchema;
use serde_json::Value;

use crate::support::{Server, kinde_meter, run, run_ok};

/// Where the offline commands find the store: `--data-dir DIR` or `--database-url URL`.
type Store = [String; 2];

fn with(args: &[&str], store: &Store) -> Vec<String> {
    args.iter()
        .map(|a| a.to_string())
        .chain(store.iter().cloned())
        .collect()
}

fn ok(args: &[String]) -> String {
    run_ok(kinde_meter().args(args))
}

#[test]
fn on_a_data_directory_the_export_equals_the_servers_and_usage_reads() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let server = Server::start(dir.path(), &[]);
    exports_agree(&server, &["--data-dir".to_owned(), data_dir], dir.path());
}

#[test]
fn on_postgres_the_export_equals_the_servers_and_usage_reads() {
    let Ok(server_url) = std::env::var("KINDE_METER_TEST_DATABASE_URL") else {
        eprintln!("skipped: KINDE_METER_TEST_DATABASE_URL is not set");
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let schema = runtime
        .block_on(ScratchSchema::create(&server_url))
        .unwrap();
    let separator = if server_url.contains('?') { '&' } else { '?' };
    let url = format!(
        "{server_url}{separator}options=-c%20search_path%3D{}",
        schema.name()
    );
    let mut command = kinde_meter();
    command.args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url]);
    let server = Server::spawn(command);
    let dir = tempfile::tempdir().unwrap();
    exports_agree(&server, &["--database-url".to_owned(), url], dir.path());
    // The server first, then its schema (dropped with the guard).
    drop(server);
    drop(schema);
}

fn exports_agree(server: &Server, store: &Store, work: &std::path::Path) {
    let base = format!("http://{}", server.addr);
    let token = ok(&with(&["token"], store));
    let token = token.trim();
    let mut agreements = BTreeMap::new();
    for (customer, plan) in [("cus_a", "pro"), ("cus,b", "starter"), ("cus_c", "daily")] {
        let id = ok(&with(
            &[
                "agreements",
                "create",
                "--customer-id",
                customer,
                "--plan-code",
                plan,
            ],
            store,
        ));
        agreements.insert(id.trim().to_owned(), customer);
    }
    let ids: Vec<&str> = agreements.keys().map(String::as_str).collect();
    let record = |agreement: &str, feature: &str, value: &str, absolute: bool| {
        let mut args = vec![
            "record",
            "--agreement-id",
            agreement,
            "--feature-code",
            feature,
            "--value",
            value,
            "--server",
            &base,
            "--token",
            token,
        ];
        if absolute {
            args.push("--absolute");
        }
        run_ok(kinde_meter().args(&args));
    };
    let by_customer = |customer: &str| {
        agreements
            .iter()
            .find(|(_, c)| **c == customer)
            .map(|(id, _)| id.as_str())
            .unwrap()
    };
    let (a, b, c) = (
        by_customer("cus_a"),
        by_customer("cus,b"),
        by_customer("cus_c"),
    );
    record(a, "api_calls", "10.5", false);
    record(a, "api_calls", "0.000000001", false);
    record(a, "storage_gb", "7", true);
    record(a, "storage_gb", "2.25", false);
    record(b, "api_calls", "3", false);
    record(c, "api_calls", "1.5", false);

    // An M2M client that may only read usage.
    let client: Value = serde_json::from_str(&ok(&with(
        &[
            "clients",
            "create",
            "--name",
            "billing",
            "--scopes",
            "read:meter_usage",
            "--json",
        ],
        store,
    )))
    .unwrap();
    let (client_id, secret) = (
        client["client_id"].as_str().unwrap(),
        client["client_secret"].as_str().unwrap(),
    );

    let now = jiff::Timestamp::now().to_string();
    for period in ["current", "previous", now.as_str()] {
        for format in ["csv", "ndjson"] {
            let args = ["export", "--period", period, "--format", format];
            let offline = ok(&with(&args, store));
            let with_token = run_ok(
                kinde_meter()
                    .args(args)
                    .args(["--server", &base, "--token", token]),
            );
            assert_eq!(offline, with_token, "{period} {format}");
            let with_client = run_ok(kinde_meter().args(args).args([
                "--server",
                &base,
                "--client-id",
                client_id,
                "--client-secret",
                secret,
            ]));
            assert_eq!(offline, with_client, "{period} {format}");

            let file = work.join(format!("export-{format}"));
            let mut to_file = with(&args, store);
            to_file.extend(["--output".to_owned(), file.to_str().unwrap().to_owned()]);
            assert_eq!(ok(&to_file), "", "nothing on stdout with --output");
            assert_eq!(std::fs::read_to_string(&file).unwrap(), offline);

            let mut rows = rows(&offline, format);
            if period == "previous" {
                // Every agreement is in its first period.
                assert!(rows.is_empty(), "{offline}");
                continue;
            }
            // The server's demo agreement (pro, no usage) is exported too.
            let demo = |r: &BTreeMap<String, String>| r["customer_id"] == "customer_demo";
            let demo_values: Vec<&str> = rows
                .iter()
                .filter(|r| demo(r))
                .map(|r| r["value"].as_str())
                .collect();
            assert_eq!(demo_values, ["0", "0"], "{offline}");
            rows.retain(|r| !demo(r));
            // One row per agreement and metered feature, in id order.
            let keys: Vec<(&str, &str)> = rows
                .iter()
                .map(|r| {
                    (
                        r["customer_agreement_id"].as_str(),
                        r["billing_feature_code"].as_str(),
                    )
                })
                .collect();
            let mut expected: Vec<(&str, &str)> = ids
                .iter()
                .flat_map(|id| {
                    let features: &[&str] = if *id == a {
                        &["api_calls", "storage_gb"]
                    } else {
                        &["api_calls"]
                    };
                    features.iter().map(move |f| (*id, *f))
                })
                .collect();
            expected.sort();
            assert_eq!(keys, expected, "{offline}");
            for row in &rows {
                let id = row["customer_agreement_id"].as_str();
                assert_eq!(row["customer_id"], agreements[id]);
                let usage: Value = serde_json::from_str(&ok(&with(
                    &[
                        "usage",
                        "--agreement-id",
                        id,
                        "--feature-code",
                        &row["billing_feature_code"],
                        "--at",
                        &row["period_start"],
                    ],
                    store,
                )))
                .unwrap();
                let read = &usage["usage"][0];
                assert_eq!(read["value"], row["value"].as_str(), "{row:?}");
                assert_eq!(read["period_start"], row["period_start"].as_str());
                assert_eq!(read["period_end"], row["period_end"].as_str());
            }
            let amounts: Vec<(&str, &str, &str)> = rows
                .iter()
                .map(|r| {
                    (
                        r["value"].as_str(),
                        r["amount"].as_str(),
                        r["unit_amount"].as_str(),
                    )
                })
                .collect();
            let of = |id: &str, feature: &str| {
                let i = keys.iter().position(|k| *k == (id, feature)).unwrap();
                amounts[i]
            };
            assert_eq!(of(a, "api_calls"), ("10.500000001", "21.000000002", "2"));
            assert_eq!(of(a, "storage_gb"), ("9.25", "92.5", "10"));
            assert_eq!(of(b, "api_calls"), ("3", "9", "3"));
            assert_eq!(of(c, "api_calls"), ("1.5", "", ""));
        }
    }

    // A bad period: the server's code, before anything is read or sent.
    for target in [
        store.to_vec(),
        vec![
            "--server".into(),
            base.clone(),
            "--token".into(),
            token.into(),
        ],
    ] {
        let output = run(kinde_meter()
            .args(["export", "--period", "yesterday"])
            .args(&target));
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        assert!(output.stdout.is_empty());
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("INVALID_FIELD: --period must be"),
            "{output:?}"
        );
    }
    // A token without read:meter_usage: the server's 403, nothing written.
    let weak = ok(&with(&["token", "--scope", "create:meter_usage"], store));
    let output = run(kinde_meter().args(["export", "--server", &base, "--token", weak.trim()]));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("INSUFFICIENT_SCOPE"));
}

/// The rows of an export as field → text (null and empty alike), CSV read by
/// a reader of the test's own.
fn rows(text: &str, format: &str) -> Vec<BTreeMap<String, String>> {
    if format == "ndjson" {
        return text
            .lines()
            .map(|line| {
                let object: Value = serde_json::from_str(line).unwrap();
                object
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::Null => String::new(),
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (k.clone(), v)
                    })
                    .collect()
            })
            .collect();
    }
    let mut lines = text.lines().map(split_csv);
    let header = lines.next().expect("a header row");
    lines
        .map(|fields| header.iter().cloned().zip(fields).collect())
        .collect()
}

/// One CSV line's fields (RFC 4180 quotes; the test's data has no line breaks).
fn split_csv(line: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    fields.push(field);
    fields
}
