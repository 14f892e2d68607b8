//! `GET /metrics` (docs/api.md#metrics), Prometheus' text exposition format, public and not
//! rate limited; its counters move with the requests, and nothing secret or
//! per-customer ever becomes a label.

use std::collections::{BTreeMap, HashMap};

use crate::support::{HOUR, METER_USAGE as ENDPOINT, TestApp};
use kinde_meter_server::rate_limit::{Limit, RateLimitConfig};
use reqwest::StatusCode;
use serde_json::json;

/// One sample line: `name{label="value",…} value`.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed and checked against the text format (version 0.0.4).
struct Scrape {
    text: String,
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The value of the sample `name` whose labels include all of `labels`;
    /// `None` if no such sample.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(
            matching.len() <= 1,
            "{name} {labels:?} matches several samples: {matching:?}"
        );
        matching.first().map(|s| s.value)
    }

    fn value_or_zero(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> f64 {
    match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        other => other
            .parse()
            .unwrap_or_else(|_| panic!("sample value {other:?} is not a number")),
    }
}

/// Parses `{a="x",b="y\"z"}` (after the name); returns the labels and the rest.
fn parse_labels(mut rest: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let Some(after_brace) = rest.strip_prefix('{') else {
        return (labels, rest);
    };
    rest = after_brace;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let (name, after_name) = rest.split_once("=\"").expect("label=\"value\"");
        assert!(is_label_name(name), "label name {name:?}");
        let mut value = String::new();
        let mut chars = after_name.char_indices();
        let end = loop {
            match chars.next().expect("unterminated label value") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("escape").1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => panic!("bad escape \\{c}"),
                },
                (_, c) => value.push(c),
            }
        };
        assert!(
            labels.insert(name.to_owned(), value).is_none(),
            "label {name} repeated"
        );
        rest = &after_name[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The family a sample belongs to under the declared types.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let family = name.strip_suffix(suffix)?;
        (types.get(family).map(String::as_str) == Some("histogram")).then_some(family)
    })
}

/// Parses the exposition text, asserting its rules on the way: comment lines
/// are `# HELP name …` or `# TYPE name <type>`, one TYPE per family, before
/// its samples; every sample belongs to a declared family and has a numeric
/// value; histogram buckets carry `le`, and the `+Inf` bucket equals `_count`.
fn parse(text: String) -> Scrape {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let keyword = parts.next().unwrap();
            let name = parts.next().expect("a metric name after HELP/TYPE");
            assert!(is_metric_name(name), "metric name {name:?}");
            match keyword {
                "HELP" => {}
                "TYPE" => {
                    let kind = parts.next().expect("a type");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "type {kind}"
                    );
                    assert!(
                        !samples.iter().any(|s: &Sample| {
                            s.name == name
                                || ["_bucket", "_sum", "_count"]
                                    .iter()
                                    .any(|suffix| s.name.strip_suffix(suffix) == Some(name))
                        }),
                        "TYPE of {name} after its samples"
                    );
                    assert!(
                        types.insert(name.to_owned(), kind.to_owned()).is_none(),
                        "TYPE {name} twice"
                    );
                }
                other => panic!("unknown comment {other}: {line}"),
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("a sample line");
        let name = &line[..name_end];
        assert!(is_metric_name(name), "sample name {name:?} in {line}");
        let (labels, rest) = parse_labels(&line[name_end..]);
        let mut fields = rest.split_whitespace();
        let value = parse_value(fields.next().expect("a value"));
        if let Some(timestamp) = fields.next() {
            timestamp.parse::<i64>().expect("a millisecond timestamp");
        }
        assert!(fields.next().is_none(), "trailing text in {line}");
        let family = family_of(name, &types)
            .unwrap_or_else(|| panic!("sample {name} has no # TYPE line before it"));
        if name.ends_with("_bucket") && types[family] == "histogram" {
            assert!(labels.contains_key("le"), "bucket without le: {line}");
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    let scrape = Scrape {
        text,
        types,
        samples,
    };
    // Every histogram series: the +Inf bucket counts every observation.
    for sample in scrape.samples.iter().filter(|s| s.name.ends_with("_count")) {
        let family = sample.name.strip_suffix("_count").unwrap();
        if scrape.types.get(family).map(String::as_str) != Some("histogram") {
            continue;
        }
        let mut labels: Vec<(&str, &str)> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        labels.push(("le", "+Inf"));
        assert_eq!(
            scrape.value(&format!("{family}_bucket"), &labels),
            Some(sample.value),
            "{family} {labels:?}"
        );
    }
    scrape
}

/// The token with one character of its signature changed: well formed, but
/// its signature does not verify.
fn forge(token: &str) -> String {
    let at = token.rfind('.').unwrap() + 10;
    let replacement = if &token[at..=at] == "A" { "B" } else { "A" };
    format!("{}{replacement}{}", &token[..at], &token[at + 1..])
}

async fn scrape(app: &TestApp) -> Scrape {
    // No token: the endpoint is public.
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse(response.text().await.unwrap())
}

#[tokio::test]
async fn metrics_count_requests_commits_and_refusals_without_secrets_in_labels() {
    let mut rate_limits = RateLimitConfig {
        // Two invalid credentials per address; the third blocks it, so the
        // fourth request is 429 (tested last).
        auth_failures: Limit::one_per(HOUR, 2),
        ..RateLimitConfig::default()
    };
    rate_limits.clients.insert(
        "client-with-one-request".to_owned(),
        Limit::one_per(HOUR, 1),
    );
    let app = TestApp::spawn_limited(rate_limits).await;

    // The families whose series exist before any request; the request
    // counter appears with the first answer.
    let before = scrape(&app).await;
    for (family, kind) in [
        ("kinde_meter_http_request_duration_seconds", "histogram"),
        ("kinde_meter_rate_limited_total", "counter"),
        ("kinde_meter_auth_failures_total", "counter"),
        ("kinde_meter_usage_records_committed_total", "counter"),
        ("kinde_meter_commits_total", "counter"),
        ("kinde_meter_commits_failed_total", "counter"),
        ("kinde_meter_commits_one_flight_total", "counter"),
        ("kinde_meter_one_flights_stale_total", "counter"),
        ("kinde_meter_write_queue_depth", "gauge"),
    ] {
        assert_eq!(
            before.types.get(family).map(String::as_str),
            Some(kind),
            "# TYPE {family} {kind} in:\n{}",
            before.text
        );
    }
    let records_before = before
        .value("kinde_meter_usage_records_committed_total", &[])
        .unwrap();
    let commits_before = before.value("kinde_meter_commits_total", &[]).unwrap();

    // Three records stored, one refused by the store (unknown agreement).
    let agreement = app.create_agreement("customer-for-metrics", "pro").await;
    for value in ["1", "2", "3"] {
        app.record_ok(json!({
            "customer_agreement_id": agreement,
            "billing_feature_code": "api_calls",
            "meter_value": value,
        }))
        .await;
    }
    let missing = app
        .record(json!({
            "customer_agreement_id": "agreement_0000000000000000000000000000dead",
            "billing_feature_code": "api_calls",
            "meter_value": "1",
        }))
        .await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.usage_value(&agreement, "api_calls", None).await, "6");
    // A 404, and a token lacking the scope.
    let nowhere = app.get("/no/such/route/agreement_in_the_path").await;
    assert_eq!(nowhere.status(), StatusCode::NOT_FOUND);
    let read_only = app.token_with(&["read:meter_usage"]);
    let response = app
        .http
        .post(app.url(ENDPOINT))
        .bearer_auth(&read_only)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // A client over its own limit.
    let limited = app.token_for_client("client-with-one-request");
    for expected in [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS] {
        let response = app
            .get_with(
                &limited,
                &format!(
                    "{ENDPOINT}?customer_agreement_id={agreement}&billing_feature_code=api_calls"
                ),
            )
            .await;
        assert_eq!(response.status(), expected);
    }
    // Invalid credentials: none, not Bearer, a forged token; then the source
    // address is out of its allowance and gets 429 before verification.
    let forged = forge(&app.token);
    let statuses = [
        (None, StatusCode::FORBIDDEN),
        (Some("Basic dXNlcjpwYXNz".to_owned()), StatusCode::FORBIDDEN),
        (Some(format!("Bearer {forged}")), StatusCode::FORBIDDEN),
        (
            Some(format!("Bearer {}", app.token)),
            StatusCode::TOO_MANY_REQUESTS,
        ),
    ];
    for (authorization, expected) in statuses {
        let mut request = app.http.post(app.url(ENDPOINT)).json(&json!({}));
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        assert_eq!(request.send().await.unwrap().status(), expected);
    }

    let after = scrape(&app).await;
    assert_eq!(
        after
            .types
            .get("kinde_meter_http_requests_total")
            .map(String::as_str),
        Some("counter")
    );
    let requests = |route: &str, method: &str, status: &str| {
        after.value_or_zero(
            "kinde_meter_http_requests_total",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(requests(ENDPOINT, "POST", "200"), 3.0);
    assert_eq!(requests(ENDPOINT, "POST", "400"), 1.0);
    // Auth refusals are counted on the route they were refused on.
    assert_eq!(requests(ENDPOINT, "POST", "403"), 4.0);
    assert_eq!(requests(ENDPOINT, "POST", "429"), 1.0);
    // The matched route, not the URI with its query string.
    assert_eq!(requests(ENDPOINT, "GET", "200"), 2.0);
    assert_eq!(requests(ENDPOINT, "GET", "429"), 1.0);
    assert_eq!(requests("/api/v1/billing/agreements", "POST", "200"), 1.0);
    assert_eq!(requests("unmatched", "GET", "404"), 1.0);
    // This scrape is answered after it is counted; the first one is.
    assert_eq!(requests("/metrics", "GET", "200"), 1.0);
    let latency_count = after
        .value(
            "kinde_meter_http_request_duration_seconds_count",
            &[("route", ENDPOINT), ("method", "POST")],
        )
        .unwrap();
    assert_eq!(latency_count, 9.0);
    let latency_sum = after
        .value(
            "kinde_meter_http_request_duration_seconds_sum",
            &[("route", ENDPOINT), ("method", "POST")],
        )
        .unwrap();
    assert!(latency_sum > 0.0 && latency_sum < 60.0, "{latency_sum}");

    let rate_limited =
        |limit: &str| after.value_or_zero("kinde_meter_rate_limited_total", &[("limit", limit)]);
    assert_eq!(rate_limited("client"), 1.0);
    assert_eq!(rate_limited("source_address"), 1.0);
    let auth_failures = |reason: &str| {
        after.value_or_zero("kinde_meter_auth_failures_total", &[("reason", reason)])
    };
    assert_eq!(auth_failures("insufficient_scope"), 1.0);
    assert_eq!(auth_failures("missing_token"), 1.0);
    assert_eq!(auth_failures("malformed_header"), 1.0);
    assert_eq!(auth_failures("bad_signature"), 1.0);

    // The write path: the four records (three stored, one refused) were in
    // committed transactions; nothing waits once every answer is in.
    let records = after
        .value("kinde_meter_usage_records_committed_total", &[])
        .unwrap();
    let commits = after.value("kinde_meter_commits_total", &[]).unwrap();
    assert_eq!(records - records_before, 4.0);
    assert!(
        commits - commits_before >= 1.0 && commits - commits_before <= 5.0,
        "{commits_before} -> {commits}"
    );
    assert_eq!(
        after.value("kinde_meter_commits_failed_total", &[]),
        Some(0.0)
    );
    assert_eq!(after.value("kinde_meter_write_queue_depth", &[]), Some(0.0));

    // Nothing secret or per-customer in the exposition.
    for secret in [
        app.token.as_str(),
        forged.as_str(),
        read_only.as_str(),
        limited.as_str(),
        "dXNlcjpwYXNz",
        agreement.as_str(),
        "agreement_0000000000000000000000000000dead",
        "agreement_in_the_path",
        "customer-for-metrics",
        "client-with-one-request",
        "test-client",
    ] {
        assert!(
            !after.text.contains(secret),
            "{secret:?} appears in /metrics:\n{}",
            after.text
        );
    }
    // Every label of every sample is one of the fixed names.
    for sample in &after.samples {
        for name in sample.labels.keys() {
            assert!(
                [
                    "route", "method", "status", "le", "limit", "reason", "outcome"
                ]
                .contains(&name.as_str()),
                "label {name} on {}",
                sample.name
            );
        }
    }
}

#[tokio::test]
async fn metrics_are_public_and_not_rate_limited() {
    // A source address that has used up its invalid-credential allowance is
    // still answered by /metrics, as by /healthz.
    let app = TestApp::spawn_limited(RateLimitConfig {
        auth_failures: Limit::one_per(HOUR, 1),
        ..RateLimitConfig::default()
    })
    .await;
    let expected = [
        StatusCode::FORBIDDEN,
        StatusCode::FORBIDDEN,
        StatusCode::TOO_MANY_REQUESTS,
    ];
    for expected in expected {
        let response = app
            .http
            .post(app.url(ENDPOINT))
            .bearer_auth("not-a-token")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected);
    }
    for _ in 0..5 {
        let scraped = scrape(&app).await;
        assert_eq!(
            scraped.value_or_zero(
                "kinde_meter_rate_limited_total",
                &[("limit", "source_address")]
            ),
            1.0
        );
    }
    // Listed as public in the route table and documented in the OpenAPI document.
    let route = kinde_meter_server::routes::ROUTES
        .iter()
        .find(|r| r.path == "/metrics")
        .expect("/metrics in ROUTES");
    assert_eq!((route.method, route.scope), ("GET", None));
    let doc: serde_json::Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/metrics"]["get"].is_object(), "{doc}");
}
