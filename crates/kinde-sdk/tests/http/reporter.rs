//! `UsageReporter` against refusals: a record refused with
//! `ENTITLEMENT_LIMIT_EXCEEDED` (a hard limit) goes to `<spool>.rejected` and is
//! never sent again — neither by this reporter nor by the next one on the spool.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kinde_sdk::{RejectedUsage, UsageReporter, UsageReporterBuilder};
use serde_json::Value;

use crate::support::{Canned, MockServer};

const LIMIT_EXCEEDED: &str = r#"{"errors":[{"code":"ENTITLEMENT_LIMIT_EXCEEDED","message":"api_calls would exceed its limit of 1000"}]}"#;

fn builder(server: &MockServer, spool: &Path) -> UsageReporterBuilder {
    // Deliveries only on `flush`/`shutdown`, so the test decides when.
    UsageReporter::with_spool(server.meter_usage_api(), spool)
        .flush_interval(Duration::from_secs(3600))
        .shutdown_timeout(Duration::from_secs(5))
}

fn rejected_lines(spool: &Path) -> Vec<Value> {
    let path = format!("{}.rejected", spool.display());
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn a_hard_limit_refusal_is_rejected_once_and_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("usage.spool");
    let server = MockServer::answering(Canned::new(400, LIMIT_EXCEEDED)).await;
    let seen = Arc::new(Mutex::new(Vec::<RejectedUsage>::new()));
    let callback = seen.clone();

    let reporter = builder(&server, &spool)
        .on_rejected(move |rejected| callback.lock().unwrap().push(rejected.clone()))
        .start()
        .await
        .unwrap();
    reporter.record("agreement_1", "api_calls", 2).unwrap();
    reporter.record("agreement_1", "api_calls", "0.5").unwrap();

    // A refusal is not a delivery failure: nothing is left to retry.
    reporter.flush().await.unwrap();
    assert_eq!(
        server.requests().len(),
        1,
        "the two deltas coalesce into one"
    );
    let sent = server.only_request().json();
    assert_eq!(sent["meter_value"], "2.5");
    let stats = reporter.stats();
    assert_eq!(
        (stats.rejected, stats.delivered, stats.undelivered),
        (2, 0, 0)
    );

    reporter.flush().await.unwrap();
    let report = reporter.shutdown().await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(
        server.requests().len(),
        1,
        "a refused record is never resent"
    );

    let lines = rejected_lines(&spool);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["code"], "ENTITLEMENT_LIMIT_EXCEEDED");
    assert_eq!(
        lines[0]["message"],
        "api_calls would exceed its limit of 1000"
    );
    assert_eq!(lines[0]["values"], 2);
    assert_eq!(lines[0]["record"], sent);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].code, "ENTITLEMENT_LIMIT_EXCEEDED");
    assert_eq!(seen[0].values, 2);

    // The next reporter on the spool has nothing to replay.
    let next = builder(&server, &spool).start().await.unwrap();
    next.flush().await.unwrap();
    assert_eq!(next.stats().undelivered, 0);
    assert!(next.shutdown().await.unwrap().is_complete());
    assert_eq!(server.requests().len(), 1);
    assert_eq!(rejected_lines(&spool).len(), 1);
}

#[tokio::test]
async fn a_hard_limit_refusal_in_a_batch_rejects_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("usage.spool");
    let server = MockServer::answering(Canned::new(
        200,
        r#"{"code":"OK","message":"Success","results":[
            {"index":0,"code":"OK","message":"Success"},
            {"index":1,"code":"ENTITLEMENT_LIMIT_EXCEEDED","message":"storage_gb would exceed its limit"}]}"#,
    ))
    .await;

    let reporter = builder(&server, &spool).batch(true).start().await.unwrap();
    reporter.record("agreement_1", "api_calls", 3).unwrap();
    reporter.record("agreement_1", "storage_gb", 7).unwrap();
    reporter.flush().await.unwrap();

    let sent = server.only_request();
    assert_eq!(sent.target, "/api/v1/billing/meter_usage/batch");
    let records = sent.json()["records"].as_array().unwrap().clone();
    assert_eq!(records.len(), 2, "{records:#?}");
    let stats = reporter.stats();
    assert_eq!(
        (stats.delivered, stats.rejected, stats.undelivered),
        (1, 1, 0)
    );

    reporter.flush().await.unwrap();
    assert!(reporter.shutdown().await.unwrap().is_complete());
    assert_eq!(server.requests().len(), 1, "nothing is resent");

    let lines = rejected_lines(&spool);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["code"], "ENTITLEMENT_LIMIT_EXCEEDED");
    assert_eq!(lines[0]["values"], 1);
    // The refused record is the batch's second, whichever feature that was.
    assert_eq!(lines[0]["record"], records[1]);
    let mut features: Vec<&str> = records
        .iter()
        .map(|r| r["billing_feature_code"].as_str().unwrap())
        .collect();
    features.sort_unstable();
    assert_eq!(features, ["api_calls", "storage_gb"]);
}
