//! What the harnesses ask a server outside the load: one keyed record, the
//! stored usage, readiness, a condition awaited with a deadline, and the
//! server process's memory.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::{
    ledger::Ledger,
    support::{Server, usage_entry},
};

/// How often an awaited condition is looked at again.
const POLL: Duration = Duration::from_millis(50);

/// POSTs one record of `value` under `key` to `server`; the status (0 for no
/// answer) and the body. Its outcome goes into `ledger`.
pub async fn record(
    server: SocketAddr,
    token: &str,
    agreement: &str,
    key: &str,
    value: &str,
    ledger: &mut Ledger,
) -> (u16, String) {
    let answer = reqwest::Client::new()
        .post(format!("http://{server}/api/v1/billing/meter_usage"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&serde_json::json!({
            "customer_agreement_id": agreement,
            "billing_feature_code": "api_calls",
            "meter_value": value,
        }))
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    match answer {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            match status {
                200 => ledger.acknowledged(key, value),
                _ => ledger.refused(key),
            }
            (status, body)
        }
        Err(e) => {
            ledger.in_doubt(key);
            (0, e.to_string())
        }
    }
}

/// Records fresh keys `{name}-{n}` (value 1) until one is acknowledged, by
/// `deadline`; how long it took. Panics, with the last answer, past the deadline.
pub async fn until_acknowledged(
    name: &str,
    server: SocketAddr,
    token: &str,
    agreement: &str,
    deadline: Duration,
    ledger: &mut Ledger,
) -> Duration {
    let started = Instant::now();
    for n in 0.. {
        let (status, body) = record(
            server,
            token,
            agreement,
            &format!("{name}-{n}"),
            "1",
            ledger,
        )
        .await;
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < deadline,
            "no record acknowledged within {deadline:?}; the last answer: {status} {body}"
        );
        tokio::time::sleep(POLL).await;
    }
    started.elapsed()
}

/// Waits until `condition` holds, by `deadline` (panics naming `what` after it).
pub async fn eventually(what: &str, deadline: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The status of `GET /readyz`.
pub async fn readyz(server: SocketAddr) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{server}/readyz"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// The stored usage of `api_calls` on `agreement`: value and record count.
pub async fn usage(server: SocketAddr, token: &str, agreement: &str) -> (String, u64) {
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "http://{server}/api/v1/billing/meter_usage?customer_agreement_id={agreement}"
        ))
        .bearer_auth(token)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    usage_entry(&body, "api_calls")
}

/// A field of `/proc/<pid>/status` in MiB: `VmRSS` (resident now) or `VmHWM`
/// (the peak resident set since the process started).
pub fn memory_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kib / 1024.0
}

/// Asserts that the server logged no panic (a handler's panic is answered 500
/// and logged; none may happen under any fault).
pub fn assert_no_panic(server: &Server) {
    let log = server.stderr.text();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}
