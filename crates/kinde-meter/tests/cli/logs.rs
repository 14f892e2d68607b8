//! The log lines of `kinde-meter serve` (docs/operations.md#logs), read from
//! the stderr of a real server: one line per request naming its method,
//! matched route, status, latency, client and request id; every line JSON with
//! `--log-format json`; no token, `Authorization` header, query string or body
//! in any line; health checks at DEBUG only.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::support::{DEADLINE, Server, http, kinde_meter, run_ok};

/// Target of the per-request lines.
const REQUEST_TARGET: &str = "kinde_meter::request";

/// The complete stderr lines of `server` once one of them satisfies `done`,
/// waiting up to [`DEADLINE`].
fn lines_until(server: &Server, done: impl Fn(&str) -> bool) -> Vec<String> {
    let until = Instant::now() + DEADLINE;
    loop {
        let text = server.stderr.text();
        // A line is complete once its newline is there.
        let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
        let lines: Vec<String> = complete.lines().map(str::to_owned).collect();
        if lines.iter().any(|line| done(line)) {
            return lines;
        }
        assert!(
            Instant::now() < until,
            "no such log line within {DEADLINE:?}; stderr:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every line parsed as JSON (each must be one JSON object).
fn parse_json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(value.is_object(), "{line}");
            value
        })
        .collect()
}

/// Whether `line` is the request line of the request with id `request_id`.
fn is_request_line(line: &str, request_id: &str) -> bool {
    serde_json::from_str::<Value>(line)
        .is_ok_and(|v| v["target"] == REQUEST_TARGET && v["request_id"] == request_id)
}

/// The one request line of `request_id` among `logged`.
fn request_line<'a>(logged: &'a [Value], request_id: &str) -> &'a Value {
    let found: Vec<&Value> = logged
        .iter()
        .filter(|v| v["target"] == REQUEST_TARGET && v["request_id"] == request_id)
        .collect();
    assert_eq!(found.len(), 1, "request lines of {request_id}: {found:?}");
    found[0]
}

/// `kinde-meter token --data-dir DIR --scope SCOPE`.
fn mint(data_dir: &Path, scope: &str) -> String {
    run_ok(
        kinde_meter()
            .args(["token", "--scope", scope])
            .arg("--data-dir")
            .arg(data_dir),
    )
    .trim()
    .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_name_each_request_and_never_its_token_query_or_body() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--log-format", "json"]);
    let token = server.printed_token();
    let (_, agreement) = server.printed_record_line();
    let read_only = mint(dir.path(), "read:meter_usage");
    let client = http();
    let url = server.url.clone();
    // A value no other line could hold by chance.
    let value = "314.159265";

    let response = client
        .post(format!("{url}/api/v1/billing/meter_usage"))
        .bearer_auth(&token)
        .header("x-request-id", "logs-record")
        .json(&json!({
            "customer_agreement_id": agreement,
            "billing_feature_code": "storage_gb",
            "meter_value": value,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["x-request-id"], "logs-record");

    // A token without the scope: 403, the client still known.
    let response = client
        .post(format!("{url}/api/v1/billing/meter_usage"))
        .bearer_auth(&read_only)
        .header("x-request-id", "logs-forbidden")
        .json(&json!({
            "customer_agreement_id": agreement,
            "billing_feature_code": "storage_gb",
            "meter_value": value,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);

    // A token that is not one: 403, no client.
    let forged = "not.a-token.forged-for-the-logs-test";
    let response = client
        .get(format!("{url}/api/v1/billing/meter_usage"))
        .bearer_auth(forged)
        .header("x-request-id", "logs-bad-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);

    // A secret in a query string (a client's mistake) and a path parameter.
    let response = client
        .get(format!(
            "{url}/api/v1/billing/meter_usage?customer_agreement_id={agreement}&access_token=query-secret-123"
        ))
        .bearer_auth(&token)
        .header("x-request-id", "logs-query")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let response = client
        .delete(format!("{url}/api/v1/webhooks/webhook_0123456789abcdef"))
        .bearer_auth(&token)
        .header("x-request-id", "logs-webhook")
        .send()
        .await
        .unwrap();
    let webhook_status = response.status().as_u16();

    // Health checks are logged at DEBUG, which RUST_LOG=info leaves out.
    let response = client
        .get(format!("{url}/healthz"))
        .header("x-request-id", "logs-healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    // Last: no route. Lines are written in order, so once this one is in,
    // every earlier request's line is too.
    let response = client
        .get(format!("{url}/api/v1/no-such-route"))
        .header("x-request-id", "logs-not-found")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let lines = lines_until(&server, |line| is_request_line(line, "logs-not-found"));
    let logged = parse_json_lines(&lines);

    let record = request_line(&logged, "logs-record");
    assert_eq!(record["level"], "INFO", "{record}");
    assert_eq!(record["method"], "POST", "{record}");
    assert_eq!(record["route"], "/api/v1/billing/meter_usage", "{record}");
    assert_eq!(record["path"], "/api/v1/billing/meter_usage", "{record}");
    assert_eq!(record["status"], 200, "{record}");
    assert_eq!(record["client_id"], "kinde-meter-demo", "{record}");
    let latency = record["latency_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no latency_ms number: {record}"));
    assert!(latency >= 0.0, "{record}");

    let forbidden = request_line(&logged, "logs-forbidden");
    assert_eq!(forbidden["status"], 403, "{forbidden}");
    assert_eq!(forbidden["client_id"], "kinde-meter-cli", "{forbidden}");

    let bad_token = request_line(&logged, "logs-bad-token");
    assert_eq!(
        (&bad_token["method"], &bad_token["status"]),
        (&json!("GET"), &json!(403)),
        "{bad_token}"
    );
    assert!(bad_token.get("client_id").is_none(), "{bad_token}");

    let query = request_line(&logged, "logs-query");
    assert_eq!(query["path"], "/api/v1/billing/meter_usage", "{query}");

    let webhook = request_line(&logged, "logs-webhook");
    assert_eq!(
        webhook["route"], "/api/v1/webhooks/{webhook_id}",
        "{webhook}"
    );
    assert_eq!(
        webhook["path"], "/api/v1/webhooks/webhook_0123456789abcdef",
        "{webhook}"
    );
    assert_eq!(webhook["status"], webhook_status, "{webhook}");

    let not_found = request_line(&logged, "logs-not-found");
    assert_eq!(not_found["route"], "unmatched", "{not_found}");
    assert_eq!(not_found["status"], 404, "{not_found}");
    assert!(not_found.get("client_id").is_none(), "{not_found}");

    assert!(
        !logged.iter().any(|v| v["request_id"] == "logs-healthz"),
        "a health check logged at INFO: {lines:#?}"
    );
    // One line per request: every request id above is on one line only
    // (`request_line` checks it), and no line is any other request's.
    let request_lines = logged
        .iter()
        .filter(|v| v["target"] == REQUEST_TARGET)
        .count();
    assert_eq!(request_lines, 6, "{lines:#?}");

    let all = lines.join("\n");
    for secret in [
        token.as_str(),
        read_only.as_str(),
        forged,
        "Bearer",
        "query-secret-123",
        "access_token",
        value,
        agreement.as_str(),
    ] {
        assert!(!all.contains(secret), "{secret:?} is in the logs:\n{all}");
    }
    // The signature alone (a line could cut a token).
    let signature = token.rsplit('.').next().unwrap();
    assert!(!all.contains(signature), "a token signature is in the logs");

    assert!(server.stop().success());
}

/// `serve` with RUST_LOG=`filter` and `extra` arguments or environment.
fn start(data_dir: &Path, filter: &str, configure: impl FnOnce(&mut Command)) -> Server {
    let mut command = kinde_meter();
    command
        .env("RUST_LOG", filter)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir);
    configure(&mut command);
    Server::spawn(command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pretty_lines_when_asked_json_by_default_off_a_terminal_health_checks_at_debug() {
    let dir = tempfile::tempdir().unwrap();
    let client = http();

    // Asked for with the flag, health checks enabled.
    let server = start(dir.path(), "info,kinde_meter::request=debug", |c| {
        c.args(["--log-format", "pretty"]);
    });
    let response = client
        .get(format!("{}/healthz", server.url))
        .header("x-request-id", "pretty-healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let lines = lines_until(&server, |line| line.contains("pretty-healthz"));
    let line = lines
        .iter()
        .find(|line| line.contains("pretty-healthz"))
        .unwrap();
    assert!(
        serde_json::from_str::<Value>(line).is_err(),
        "a JSON line: {line}"
    );
    for part in [
        "DEBUG",
        REQUEST_TARGET,
        "method=GET",
        r#"route="/healthz""#,
        "status=200",
        "latency_ms=",
        r#"request_id="pretty-healthz""#,
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }
    assert!(
        lines
            .iter()
            .all(|line| serde_json::from_str::<Value>(line).is_err()),
        "{lines:#?}"
    );
    assert!(server.stop().success());

    // Asked for with the environment variable.
    let server = start(dir.path(), "info", |c| {
        c.env("KINDE_METER_LOG_FORMAT", "pretty");
    });
    let lines = lines_until(&server, |line| line.contains("serving"));
    assert!(
        lines
            .iter()
            .all(|line| serde_json::from_str::<Value>(line).is_err()),
        "{lines:#?}"
    );
    assert!(server.stop().success());

    // Not asked for, stderr a pipe: JSON, from the first line on.
    let server = start(dir.path(), "info", |_| {});
    let lines = lines_until(&server, |line| line.contains("serving"));
    let logged = parse_json_lines(&lines);
    let started = logged
        .iter()
        .find(|v| v["message"] == "serving")
        .unwrap_or_else(|| panic!("no start-up line: {lines:#?}"));
    assert_eq!(started["url"], server.url.as_str(), "{started}");
    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_written_while_a_request_is_handled_has_the_request_as_span() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--log-format", "json"]);
    // An id needing escapes in JSON (a header value may hold `"` and `\`).
    let request_id = r#"span-"quoted"\id"#;
    let response = http()
        .get(format!(
            "{}/api/v1/billing/meter_usage?access_token=query-secret-456",
            server.url
        ))
        .bearer_auth("not.a-token.for-the-span-test")
        .header("x-request-id", request_id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let lines = lines_until(&server, |line| is_request_line(line, request_id));
    let logged = parse_json_lines(&lines);

    // The refused token's line, written inside the request's span.
    let (line, refused) = lines
        .iter()
        .zip(&logged)
        .find(|(_, v)| v["message"] == "token refused")
        .unwrap_or_else(|| panic!("no token refused line: {lines:#?}"));
    assert_eq!(refused["level"], "INFO", "{line}");
    assert!(refused["reason"].is_string(), "{line}");
    assert_eq!(
        refused["span"],
        json!({
            "method": "GET",
            "path": "/api/v1/billing/meter_usage",
            "request_id": request_id,
            "name": "request",
        }),
        "{line}"
    );
    // Timestamp and level first, the event's fields, target, then span.
    assert!(line.starts_with(r#"{"timestamp":""#), "{line}");
    let at = |key: &str| {
        line.find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("no {key}: {line}"))
    };
    assert!(
        at("timestamp") < at("level")
            && at("level") < at("message")
            && at("message") < at("target")
            && at("target") < at("span"),
        "{line}"
    );

    // The request line is written once the answer is made, outside the span.
    let request = request_line(&logged, request_id);
    assert!(request.get("span").is_none(), "{request}");
    assert_eq!(request["status"], 403, "{request}");
    assert!(!lines.join("\n").contains("query-secret-456"), "{lines:#?}");
    assert!(server.stop().success());
}
