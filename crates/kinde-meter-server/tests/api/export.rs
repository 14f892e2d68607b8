//! The usage export (docs/import-export.md#export): `GET
//! /api/v1/billing/meter_usage/export` as CSV and NDJSON for the current and
//! previous periods and the period containing an instant, each row equal to
//! what usage read-back answers for its agreement, feature and period, the
//! amounts exact; its scope and its errors.

use std::collections::BTreeMap;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_error, urlencode};

const EXPORT: &str = "/api/v1/billing/meter_usage/export";

fn rec(agreement: &str, feature: &str, value: &str, kind: &str, at: &str) -> Value {
    json!({
        "customer_agreement_id": agreement,
        "billing_feature_code": feature,
        "meter_value": value,
        "meter_type_code": kind,
        "meter_usage_timestamp": at,
    })
}

/// A row as field name → text (an NDJSON null or a CSV empty field is "").
type Row = BTreeMap<String, String>;

/// The export's body with `query`, after checking status and content type.
async fn export(app: &TestApp, query: &str, content_type: &str) -> String {
    let response = app.get(&format!("{EXPORT}?{query}")).await;
    let status = response.status();
    let got_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    assert_eq!(got_type, content_type, "{query}");
    body
}

/// RFC 4180 CSV (the test's own reader): the header and the records, each a
/// row keyed by the header.
fn parse_csv(text: &str) -> (Vec<String>, Vec<Row>) {
    let mut records: Vec<Vec<String>> = Vec::new();
    let (mut record, mut field) = (Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(
        field.is_empty() && record.is_empty(),
        "the CSV ends with a line break"
    );
    let header = records.remove(0);
    let rows = records
        .into_iter()
        .map(|r| {
            assert_eq!(r.len(), header.len(), "{r:?}");
            header.iter().cloned().zip(r).collect()
        })
        .collect();
    (header, rows)
}

fn parse_ndjson(text: &str) -> Vec<Row> {
    assert!(text.is_empty() || text.ends_with('\n'));
    text.lines()
        .map(|line| {
            let object: Value = serde_json::from_str(line).unwrap();
            object
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::Null => String::new(),
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        other => panic!("{k}: {other}"),
                    };
                    (k.clone(), text)
                })
                .collect()
        })
        .collect()
}

/// The CSV and NDJSON exports of `period`, checked to hold the same rows in the
/// same order, ordered by agreement id; the rows.
async fn export_both(app: &TestApp, period: &str) -> Vec<Row> {
    let period = urlencode(period);
    let csv = export(
        app,
        &format!("period={period}&format=csv"),
        "text/csv; charset=utf-8",
    )
    .await;
    let (header, csv_rows) = parse_csv(&csv);
    assert_eq!(
        header,
        [
            "customer_id",
            "customer_agreement_id",
            "billing_feature_code",
            "period_start",
            "period_end",
            "value",
            "amount",
            "plan_code",
            "unit_amount"
        ]
    );
    let ndjson = export(
        app,
        &format!("period={period}&format=ndjson"),
        "application/x-ndjson",
    )
    .await;
    let ndjson_rows = parse_ndjson(&ndjson);
    assert_eq!(csv_rows, ndjson_rows);
    let ids: Vec<&str> = csv_rows
        .iter()
        .map(|r| r["customer_agreement_id"].as_str())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{ids:?}");
    csv_rows
}

/// Every row's value and period equal usage read-back's for its agreement and
/// feature at the period's start.
async fn assert_rows_equal_reads(app: &TestApp, rows: &[Row]) {
    for row in rows {
        let read = app
            .usage(
                &row["customer_agreement_id"],
                &row["billing_feature_code"],
                Some(&row["period_start"]),
            )
            .await;
        assert_eq!(read["value"], row["value"].as_str(), "{row:?}");
        assert_eq!(read["period_start"], row["period_start"].as_str());
        assert_eq!(read["period_end"], row["period_end"].as_str());
    }
}

/// (agreement, feature) → (value, amount, unit_amount) of each row.
fn by_key(rows: &[Row]) -> BTreeMap<(String, String), (String, String, String)> {
    rows.iter()
        .map(|r| {
            (
                (
                    r["customer_agreement_id"].clone(),
                    r["billing_feature_code"].clone(),
                ),
                (
                    r["value"].clone(),
                    r["amount"].clone(),
                    r["unit_amount"].clone(),
                ),
            )
        })
        .collect()
}

fn key(agreement: &str, feature: &str) -> (String, String) {
    (agreement.to_owned(), feature.to_owned())
}

fn expect(value: &str, amount: &str, unit: &str) -> (String, String, String) {
    (value.to_owned(), amount.to_owned(), unit.to_owned())
}

#[tokio::test]
async fn the_export_equals_usage_reads_for_current_previous_and_an_instant() {
    // The demo catalog: pro (api_calls 2 cents, storage_gb 10 cents, sso not
    // metered, monthly), starter (api_calls 3 cents, monthly), daily (api_calls
    // without a price).
    let app = TestApp::spawn_at("2024-01-10T00:00:00Z").await;
    let clock = |at: &str| app.clock().set(at.parse().unwrap());
    let a = app.create_agreement("cus_a", "pro").await;
    clock("2024-01-12T00:00:00Z");
    let e = app.create_agreement("cus_e", "pro").await;
    clock("2024-01-15T00:00:00Z");
    for body in [
        rec(&a, "api_calls", "10.5", "delta", "2024-01-15T00:00:00Z"),
        rec(&a, "storage_gb", "3.5", "absolute", "2024-01-15T00:00:00Z"),
        rec(&e, "api_calls", "5", "delta", "2024-01-14T00:00:00Z"),
    ] {
        app.record_ok(body).await;
    }
    clock("2024-01-20T00:00:00Z");
    let b = app.create_agreement("cus_b", "starter").await;
    clock("2024-01-21T00:00:00Z");
    app.record_ok(rec(&b, "api_calls", "100", "delta", "2024-01-21T00:00:00Z"))
        .await;
    app.record_ok(rec(
        &a,
        "api_calls",
        "0.25",
        "delta",
        "2024-01-21T00:00:00Z",
    ))
    .await;
    clock("2024-01-25T00:00:00Z");
    let c = app.create_agreement("cus_c", "daily").await;
    clock("2024-02-11T02:00:00Z");
    app.record_ok(rec(&a, "api_calls", "7", "delta", "2024-02-11T00:00:00Z"))
        .await;
    app.record_ok(rec(
        &a,
        "api_calls",
        "2.000000001",
        "absolute",
        "2024-02-11T01:00:00Z",
    ))
    .await;
    // cus_e changes plans mid-period: its pro agreement ends.
    clock("2024-02-14T00:00:00Z");
    let e2 = app.create_agreement("cus_e", "starter").await;
    app.record_ok(rec(&e2, "api_calls", "1", "delta", "2024-02-14T00:00:00Z"))
        .await;
    clock("2024-02-20T00:00:00Z");
    // A customer id CSV must quote.
    let d = app.create_agreement("cus,d", "pro").await;
    app.record_ok(rec(
        &d,
        "storage_gb",
        "0.000000001",
        "delta",
        "2024-02-20T00:00:00Z",
    ))
    .await;
    clock("2024-02-21T00:00:00Z");
    app.record_ok(rec(&b, "api_calls", "0.5", "delta", "2024-02-21T00:00:00Z"))
        .await;
    app.record_ok(rec(&a, "api_calls", "1", "delta", "2024-02-21T00:00:00Z"))
        .await;
    clock("2024-02-24T12:00:00Z");
    app.record_ok(rec(&c, "api_calls", "4", "delta", "2024-02-24T12:00:00Z"))
        .await;
    clock("2024-02-25T12:00:00Z");
    app.record_ok(rec(&c, "api_calls", "6", "delta", "2024-02-25T01:00:00Z"))
        .await;

    // Current: every agreement active at some time in its current period,
    // each metered feature of its plan, zero usage included.
    let current = export_both(&app, "current").await;
    assert_rows_equal_reads(&app, &current).await;
    assert_eq!(
        by_key(&current),
        BTreeMap::from([
            (
                key(&a, "api_calls"),
                expect("3.000000001", "6.000000002", "2")
            ),
            (key(&a, "storage_gb"), expect("0", "0", "10")),
            (key(&b, "api_calls"), expect("0.5", "1.5", "3")),
            (key(&c, "api_calls"), expect("6", "", "")),
            (key(&d, "api_calls"), expect("0", "0", "2")),
            (
                key(&d, "storage_gb"),
                expect("0.000000001", "0.00000001", "10")
            ),
            (key(&e, "api_calls"), expect("0", "0", "2")),
            (key(&e, "storage_gb"), expect("0", "0", "10")),
            (key(&e2, "api_calls"), expect("1", "3", "3")),
        ])
    );
    let row_of = |rows: &[Row], agreement: &str| {
        rows.iter()
            .find(|r| r["customer_agreement_id"] == agreement)
            .unwrap()
            .clone()
    };
    let a_row = row_of(&current, &a);
    assert_eq!(
        (
            a_row["customer_id"].as_str(),
            a_row["plan_code"].as_str(),
            a_row["period_start"].as_str(),
            a_row["period_end"].as_str()
        ),
        (
            "cus_a",
            "pro",
            "2024-02-10T00:00:00Z",
            "2024-03-10T00:00:00Z"
        )
    );
    assert_eq!(row_of(&current, &d)["customer_id"], "cus,d");
    assert_eq!(row_of(&current, &c)["period_start"], "2024-02-25T00:00:00Z");
    // The default period is the current one, the default format CSV.
    assert_eq!(
        export(&app, "", "text/csv; charset=utf-8").await,
        export(&app, "period=current&format=csv", "text/csv; charset=utf-8").await
    );

    // Previous: per agreement, the period before its current one; agreements
    // in their first period have none.
    let previous = export_both(&app, "previous").await;
    assert_rows_equal_reads(&app, &previous).await;
    assert_eq!(
        by_key(&previous),
        BTreeMap::from([
            (key(&a, "api_calls"), expect("10.75", "21.5", "2")),
            (key(&a, "storage_gb"), expect("3.5", "35", "10")),
            (key(&b, "api_calls"), expect("100", "300", "3")),
            (key(&c, "api_calls"), expect("4", "", "")),
            (key(&e, "api_calls"), expect("5", "10", "2")),
            (key(&e, "storage_gb"), expect("0", "0", "10")),
        ])
    );
    assert_eq!(
        (
            row_of(&previous, &b)["period_start"].as_str(),
            row_of(&previous, &b)["period_end"].as_str()
        ),
        ("2024-01-20T00:00:00Z", "2024-02-20T00:00:00Z")
    );

    // An instant (any offset): the period containing it, for the agreements
    // that had started by then.
    let instant = export_both(&app, "2024-01-15T09:00:00+09:00").await;
    assert_rows_equal_reads(&app, &instant).await;
    assert_eq!(
        by_key(&instant),
        BTreeMap::from([
            (key(&a, "api_calls"), expect("10.75", "21.5", "2")),
            (key(&a, "storage_gb"), expect("3.5", "35", "10")),
            (key(&e, "api_calls"), expect("5", "10", "2")),
            (key(&e, "storage_gb"), expect("0", "0", "10")),
        ])
    );
}

#[tokio::test]
async fn an_empty_store_exports_a_header_only() {
    let app = TestApp::spawn().await;
    assert_eq!(
        export(&app, "format=csv", "text/csv; charset=utf-8").await,
        "customer_id,customer_agreement_id,billing_feature_code,period_start,period_end,value,amount,plan_code,unit_amount\n"
    );
    assert_eq!(
        export(&app, "format=ndjson", "application/x-ndjson").await,
        ""
    );
}

#[tokio::test]
async fn many_agreements_stream_in_pages() {
    // More agreements than one page of the export (500).
    let app = TestApp::spawn().await;
    let count = 520;
    let ids: Vec<String> = futures::stream::iter(0..count)
        .map(|i| {
            let app = &app;
            async move { app.create_agreement(&format!("cus_{i:04}"), "pro").await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    app.record_ok(json!({
        "customer_agreement_id": ids[7],
        "billing_feature_code": "api_calls",
        "meter_value": "12.5",
    }))
    .await;
    let rows = parse_ndjson(&export(&app, "format=ndjson", "application/x-ndjson").await);
    assert_eq!(rows.len(), count * 2, "two metered features each");
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort_unstable();
    let exported: Vec<&str> = rows
        .iter()
        .step_by(2)
        .map(|r| r["customer_agreement_id"].as_str())
        .collect();
    assert_eq!(exported, expected);
    let total: Vec<&Row> = rows.iter().filter(|r| r["value"] != "0").collect();
    assert_eq!(total.len(), 1);
    assert_eq!(
        (
            total[0]["customer_agreement_id"].as_str(),
            total[0]["amount"].as_str()
        ),
        (ids[7].as_str(), "25")
    );
}

#[tokio::test]
async fn the_export_needs_read_meter_usage() {
    let app = TestApp::spawn().await;
    let without = app.token_with(&[
        "create:meter_usage",
        "read:billing_agreements",
        "read:billing_entitlements",
    ]);
    assert_error(
        app.get_with(&without, EXPORT).await,
        StatusCode::FORBIDDEN,
        &["INSUFFICIENT_SCOPE"],
    )
    .await;
    let response = app.http.get(app.url(EXPORT)).send().await.unwrap();
    assert_error(response, StatusCode::FORBIDDEN, &["INVALID_CREDENTIALS"]).await;
    let only = app.token_with(&["read:meter_usage"]);
    let response = app.get_with(&only, EXPORT).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_bad_period_or_format_is_invalid_field() {
    let app = TestApp::spawn().await;
    for query in [
        "period=yesterday",
        "period=",
        "period=Current",
        "period=2024-02-30T00:00:00Z",
        "period=2200-01-01T00:00:00Z",
        "period=2024-02-01",
        "format=xml",
        "format=",
        "format=CSV",
    ] {
        let body = assert_error(
            app.get(&format!("{EXPORT}?{query}")).await,
            StatusCode::BAD_REQUEST,
            &["INVALID_FIELD"],
        )
        .await;
        let name = query.split('=').next().unwrap();
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .starts_with(name),
            "{query}: {body}"
        );
    }
}
