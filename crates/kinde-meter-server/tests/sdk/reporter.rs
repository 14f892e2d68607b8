//! kinde-sdk's `UsageReporter` against the real server over HTTP.
//!
//! The crash test runs the reporter in a child process — this test binary,
//! re-invoked with `KINDE_SDK_REPORTER_CHILD` set and this module's
//! `reporter_child_process` as its only (`--exact`) test, which runs as the child. The child records
//! values one at a time and prints `try <n> <value>` before and `ok <n>` after
//! each `record` that returned `Ok`. The parent kills it with SIGKILL while it
//! records and sends, restarts it on the same spool, and finally checks that
//! the server's usage is exactly the sum of what was acknowledged.
//!
//! Waits are for conditions, with deadlines; there are no fixed sleeps.

use std::{path::Path, process::Stdio, sync::mpsc, time::Duration};

use crate::proxy::{Fault, Proxy};
use crate::support::{Options, TestApp, closed_addr, eventually, sum};
use kinde_sdk::{
    ApiClient, BillingMeterUsageApi, Configuration, Durability, ReporterError, RetryPolicy,
    UsageReporter,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

const DEADLINE: Duration = Duration::from_secs(60);
const CHILD_ENV: &str = "KINDE_SDK_REPORTER_CHILD";
/// Marks the child's own output lines.
const MARK: &str = "@@ ";
const BATCH: &str = "/api/v1/billing/meter_usage/batch";
const SINGLE: &str = "/api/v1/billing/meter_usage";

fn api(host: &str, token: &str) -> BillingMeterUsageApi {
    BillingMeterUsageApi::new(
        ApiClient::new(
            Configuration::new(host)
                .with_access_token(token)
                .with_timeout(Duration::from_secs(5))
                .with_retry_policy(
                    RetryPolicy::default()
                        .with_max_attempts(3)
                        .with_initial_backoff(Duration::from_millis(20))
                        .with_max_backoff(Duration::from_millis(100)),
                ),
        )
        .unwrap(),
    )
}

fn value(i: u64) -> String {
    format!("{}.{:03}", i % 5, (i * 37) % 1000)
}

#[tokio::test]
async fn deltas_are_coalesced_and_absolutes_keep_their_order() {
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_coalesce", "pro").await;
    let proxy = Proxy::start(&app.base).await;
    let dir = tempfile::tempdir().unwrap();
    let reporter =
        UsageReporter::with_spool(api(&proxy.base, &app.token), dir.path().join("spool"))
            .flush_interval(Duration::from_secs(3600))
            .start()
            .await
            .unwrap();

    for _ in 0..100 {
        reporter.record(&agreement, "api_calls", "0.01").unwrap();
    }
    reporter.flush().await.unwrap();
    assert_eq!(proxy.requests(SINGLE), 1, "100 deltas, one request");
    assert_eq!(app.usage_value(&agreement, "api_calls", None).await, "1");

    // delta, absolute, delta: three requests in order; the absolute resets.
    reporter.record(&agreement, "api_calls", 5).unwrap();
    reporter
        .record_absolute(&agreement, "api_calls", 2)
        .unwrap();
    reporter.record(&agreement, "api_calls", "0.5").unwrap();
    reporter.record(&agreement, "api_calls", "0.25").unwrap();
    reporter.flush().await.unwrap();
    assert_eq!(proxy.requests(SINGLE), 4);
    assert_eq!(app.usage_value(&agreement, "api_calls", None).await, "2.75");

    let stats = reporter.stats();
    assert_eq!(
        (stats.recorded, stats.delivered, stats.undelivered),
        (104, 104, 0)
    );
    assert!(reporter.shutdown().await.unwrap().is_complete());
}

#[tokio::test]
async fn rejected_usage_is_reported_not_retried_and_not_silently_lost() {
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_rejected", "pro").await;
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel();
    let reporter = UsageReporter::with_spool(api(&app.base, &app.token), dir.path().join("spool"))
        .on_rejected(move |rejected| tx.send(rejected.clone()).unwrap())
        .start()
        .await
        .unwrap();
    reporter.record(&agreement, "no_such_feature", 1).unwrap();
    reporter.record(&agreement, "api_calls", 3).unwrap();
    assert!(reporter.record(&agreement, "api_calls", "-1").is_err());
    assert!(reporter.record(&agreement, "api_calls", "1e3").is_err());
    reporter.flush().await.unwrap();
    let rejected = rx.try_recv().expect("reported during the flush");
    assert_eq!(rejected.code, "FEATURE_NOT_FOUND");
    assert_eq!(rejected.record.billing_feature_code, "no_such_feature");
    assert_eq!(app.usage_value(&agreement, "api_calls", None).await, "3");
    let stats = reporter.stats();
    assert_eq!(
        (stats.rejected, stats.delivered, stats.undelivered),
        (1, 1, 0)
    );
    assert!(reporter.shutdown().await.unwrap().is_complete());
    let dead_letters = std::fs::read_to_string(dir.path().join("spool.rejected")).unwrap();
    assert!(dead_letters.contains("FEATURE_NOT_FOUND"), "{dead_letters}");
}

#[tokio::test]
async fn the_reporter_rides_out_a_server_outage() {
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_outage", "pro").await;
    let (addr, data_dir, token) = (app.addr, app.data_dir.clone(), app.token.clone());
    let dir = tempfile::tempdir().unwrap();
    let reporter = UsageReporter::with_spool(api(&app.base, &token), dir.path().join("spool"))
        .flush_interval(Duration::from_millis(20))
        .max_retry_interval(Duration::from_millis(200))
        .start()
        .await
        .unwrap();

    let mut recorded = Vec::new();
    for i in 0..50 {
        recorded.push(value(i));
        reporter.record(&agreement, "api_calls", value(i)).unwrap();
    }
    reporter.flush().await.unwrap();
    let tmp = app.stop().await;

    // The server is gone: usage is still taken, and kept.
    for i in 50..120 {
        recorded.push(value(i));
        reporter.record(&agreement, "api_calls", value(i)).unwrap();
        reporter
            .record_absolute(&agreement, "storage_gb", i)
            .unwrap();
    }
    let error = reporter.flush().await.unwrap_err();
    assert!(
        matches!(error, ReporterError::NotDelivered { undelivered, .. } if undelivered >= 70),
        "{error}"
    );
    assert!(reporter.stats().last_error.is_some());

    let app = TestApp::spawn_with(Options {
        data_dir: Some(data_dir),
        listen: Some(addr),
        ..Options::default()
    })
    .await;
    eventually("the backlog to drain", DEADLINE, async || {
        reporter.stats().undelivered == 0
    })
    .await;
    let report = reporter.shutdown().await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(
        app.usage_value(&agreement, "api_calls", None).await,
        sum(&recorded)
    );
    assert_eq!(app.usage_value(&agreement, "storage_gb", None).await, "119");
    drop(tmp);
}

#[tokio::test]
async fn batches_go_to_the_batch_endpoint_and_fall_back_to_single_records() {
    let app = TestApp::spawn().await;
    let agreements: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(
                app.create_agreement(&format!("customer_batch_{i}"), "pro")
                    .await,
            );
        }
        ids
    };
    let proxy = Proxy::start(&app.base).await;
    let dir = tempfile::tempdir().unwrap();
    let reporter =
        UsageReporter::with_spool(api(&proxy.base, &app.token), dir.path().join("spool"))
            .batch(true)
            .flush_interval(Duration::from_secs(3600))
            .start()
            .await
            .unwrap();
    for (i, agreement) in agreements.iter().enumerate() {
        reporter.record(agreement, "api_calls", i + 1).unwrap();
    }
    reporter.flush().await.unwrap();
    assert_eq!((proxy.requests(BATCH), proxy.requests(SINGLE)), (1, 0));

    // A server without the batch route (real Kinde): 404, then single records.
    proxy.fault(
        BATCH,
        Fault::Answer {
            status: 404,
            body: r#"{"errors":[{"code":"NOT_FOUND","message":"no such route"}]}"#,
            times: u64::MAX,
        },
    );
    for (i, agreement) in agreements.iter().enumerate() {
        reporter.record(agreement, "api_calls", i + 1).unwrap();
    }
    reporter.flush().await.unwrap();
    assert_eq!((proxy.requests(BATCH), proxy.requests(SINGLE)), (2, 5));
    for (i, agreement) in agreements.iter().enumerate() {
        reporter.record(agreement, "api_calls", i + 1).unwrap();
    }
    reporter.flush().await.unwrap();
    assert_eq!(
        (proxy.requests(BATCH), proxy.requests(SINGLE)),
        (2, 10),
        "the fallback sticks"
    );
    for (i, agreement) in agreements.iter().enumerate() {
        assert_eq!(
            app.usage_value(agreement, "api_calls", None).await,
            (3 * (i + 1)).to_string()
        );
    }
    reporter.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_full_spool_is_an_error_from_record() {
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_full", "pro").await;
    let closed = format!("http://{}", closed_addr());
    let dir = tempfile::tempdir().unwrap();
    let reporter = UsageReporter::with_spool(api(&closed, &app.token), dir.path().join("spool"))
        .max_spool_bytes(8 * 1024)
        .coalesce_window(Duration::ZERO)
        .start()
        .await
        .unwrap();
    let mut accepted = 0;
    let error = loop {
        // Distinct timestamps never coalesce: every value needs its own line.
        let at = jiff::Timestamp::from_second(1_700_000_000 + accepted).unwrap();
        match reporter.record_usage(kinde_sdk::Usage::delta(&agreement, "api_calls", 1).at(at)) {
            Ok(()) => accepted += 1,
            Err(error) => break error,
        }
        assert!(accepted < 10_000, "the spool never filled");
    };
    assert!(
        matches!(error, kinde_sdk::RecordError::SpoolFull { max_bytes: 8192 }),
        "{error}"
    );
    assert_eq!(reporter.stats().undelivered, accepted as u64);
}

// ---------------------------------------------------------------------------
// The crash test.

/// What the parent knows from a child's output.
#[derive(Default)]
struct Acknowledged {
    /// Values whose `record` returned `Ok`.
    ok: Vec<String>,
    /// The value of a `try` without its `ok`: recorded or not, unknown.
    in_doubt: Option<String>,
}

impl Acknowledged {
    fn read(&mut self, line: &str) {
        // libtest may print its own text before the child's on a line.
        let Some((_, line)) = line.split_once(MARK) else {
            return;
        };
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("try"), Some(_), Some(value)) => self.in_doubt = Some(value.to_owned()),
            (Some("ok"), Some(_), None) => {
                let value = self.in_doubt.take().expect("ok follows try");
                self.ok.push(value);
            }
            _ => {}
        }
    }
}

/// A child reporter and its output.
struct ChildReporter {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl ChildReporter {
    /// Starts the child on `spool`; it records `count` values from `first`,
    /// then shuts down cleanly if `finish`, else keeps delivering until killed.
    fn spawn(
        app: &TestApp,
        agreement: &str,
        spool: &Path,
        first: u64,
        count: u64,
        finish: bool,
        durability: &str,
    ) -> Self {
        // The test's name in this binary: its module path without the crate.
        let (_, module) = module_path!().split_once("::").unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &format!("{module}::reporter_child_process")])
            .args(["--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .env("CHILD_SERVER", &app.base)
            .env("CHILD_TOKEN", &app.token)
            .env("CHILD_AGREEMENT", agreement)
            .env("CHILD_SPOOL", spool)
            .env("CHILD_FIRST", first.to_string())
            .env("CHILD_COUNT", count.to_string())
            .env("CHILD_FINISH", if finish { "1" } else { "0" })
            .env("CHILD_DURABILITY", durability)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        ChildReporter { child, lines }
    }

    /// Reads lines into `acknowledged` until `stop` holds after one.
    async fn follow(
        &mut self,
        acknowledged: &mut Acknowledged,
        mut stop: impl FnMut(&Acknowledged, &str) -> bool,
    ) {
        loop {
            let line = tokio::time::timeout(DEADLINE, self.lines.next_line())
                .await
                .expect("the child went quiet")
                .unwrap()
                .expect("the child ended early");
            acknowledged.read(&line);
            if stop(acknowledged, &line) {
                return;
            }
        }
    }

    /// SIGKILL, then read what it printed before it died.
    async fn kill(mut self, acknowledged: &mut Acknowledged) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
        while let Ok(Some(line)) = self.lines.next_line().await {
            acknowledged.read(&line);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reporter_killed_mid_stream_and_restarted_delivers_exactly_what_it_acknowledged() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let app = TestApp::spawn().await;
    let agreement = app.create_agreement("customer_crash", "pro").await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("usage.spool");
    let mut acknowledged = Acknowledged::default();
    let mut doubts = Vec::new();

    // Three runs killed with SIGKILL while recording and sending, each after
    // more values were acknowledged and the server received some of them. The
    // second run acknowledges after write(2) rather than fsync, which survives
    // the process being killed too.
    let rounds = [
        (0u64, 150usize, "fsync"),
        (1, 400, "written"),
        (2, 650, "fsync"),
    ];
    for (round, kill_after, durability) in rounds {
        let mut child = ChildReporter::spawn(
            &app,
            &agreement,
            &spool,
            round * 1_000_000,
            1_000_000,
            false,
            durability,
        );
        child
            .follow(&mut acknowledged, |ack, _| ack.ok.len() >= kill_after)
            .await;
        let before = app.record_count(&agreement, "api_calls").await;
        eventually(
            "the server to receive this run's usage",
            DEADLINE,
            async || app.record_count(&agreement, "api_calls").await > before,
        )
        .await;
        child.kill(&mut acknowledged).await;
        if let Some(value) = acknowledged.in_doubt.take() {
            doubts.push(value);
        }
    }

    // A last run replays the spool, records a few more and shuts down cleanly.
    let mut child = ChildReporter::spawn(&app, &agreement, &spool, 9_000_000, 50, true, "fsync");
    child
        .follow(&mut acknowledged, |_, line| {
            line.ends_with("shutdown complete")
        })
        .await;
    let status = child.child.wait().await.unwrap();
    assert!(status.success(), "{status}");
    assert!(acknowledged.in_doubt.is_none());
    assert!(acknowledged.ok.len() >= 700);

    let acknowledged_sum = sum(&acknowledged.ok);
    let usage = app.usage_value(&agreement, "api_calls", None).await;
    // A value whose `record` the kill interrupted may or may not have reached
    // the spool: the only freedom allowed. Everything else counts exactly once.
    let mut allowed = vec![acknowledged_sum.clone()];
    for doubt in &doubts {
        let more: Vec<String> = allowed
            .iter()
            .map(|base| sum([base.as_str(), doubt.as_str()]))
            .collect();
        allowed.extend(more);
    }
    assert!(
        allowed.contains(&usage),
        "the server has {usage}, the child acknowledged {acknowledged_sum} (in doubt: {doubts:?})"
    );
    // The clean shutdown delivered everything and emptied the spool.
    let spool_text = std::fs::read_to_string(&spool).unwrap();
    assert_eq!(
        spool_text.lines().count(),
        1,
        "only the header: {spool_text}"
    );
}

/// The child process of the crash test (does nothing in a normal test run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reporter_child_process() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let env = |name: &str| std::env::var(name).unwrap();
    let api = api(&env("CHILD_SERVER"), &env("CHILD_TOKEN"));
    let reporter = UsageReporter::with_spool(api, env("CHILD_SPOOL"))
        .flush_interval(Duration::from_millis(5))
        .durability(match env("CHILD_DURABILITY").as_str() {
            "written" => Durability::Written,
            _ => Durability::Fsync,
        })
        .start()
        .await
        .unwrap();
    let agreement = env("CHILD_AGREEMENT");
    let first: u64 = env("CHILD_FIRST").parse().unwrap();
    let count: u64 = env("CHILD_COUNT").parse().unwrap();
    for n in first..first + count {
        let v = value(n);
        println!("{MARK}try {n} {v}");
        reporter
            .record(&agreement, "api_calls", v.as_str())
            .unwrap();
        println!("{MARK}ok {n}");
        if n.is_multiple_of(16) {
            tokio::task::yield_now().await;
        }
    }
    if env("CHILD_FINISH") == "1" {
        let report = reporter.shutdown().await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        println!("{MARK}shutdown complete");
    } else {
        // Keep delivering until killed.
        std::future::pending::<()>().await;
    }
}
