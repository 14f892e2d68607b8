//! Overload: far more clients than the server can serve, for
//! `KINDE_METER_FAULTS_DURATION` seconds, every one on a keep-alive connection
//! sending records as fast as it is answered.
//!
//! Half the clients share one client id limited to 100 records a second
//! (burst 100), so most of their records are refused 429; the other half have
//! no rate limit, and with the first half's allowance they pile onto a write
//! queue of 16 (`--queue-capacity`), so records are refused 503 while it is
//! full (docs/limits.md). Every answer must be 200, 429 or 503 in Kinde's shape
//! with `Retry-After`, no connection may fail, the server's peak memory stays
//! bounded, a record is acknowledged again within seconds of the load
//! stopping, and exactly the acknowledged records are stored.

use std::time::Duration;

use crate::{
    ledger::{Ledger, sqlite_counts},
    load::{Load, Retry, Target},
    probe,
    settings::{self, exclusive},
    support::{Server, kinde_meter, run_ok},
};

/// The check on the server's peak resident memory (the figure is printed).
const PEAK_RSS_LIMIT_MIB: f64 = 300.0;
/// How long after the load a record may take to be acknowledged again.
const RECOVERY: Duration = Duration::from_secs(10);
const QUEUE_CAPACITY: &str = "16";
const UNLIMITED_CLIENT: &str = "overload-unlimited";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_answered_200_429_or_503_and_nothing_acknowledged_is_lost() {
    let Some(settings) = settings::enabled("overload") else {
        return;
    };
    let _turn = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = Server::start(
        &data_dir,
        &[
            "--queue-capacity",
            QUEUE_CAPACITY,
            "--rate-limit",
            "100",
            "--burst",
            "100",
            "--client-rate-limit",
            &format!("{UNLIMITED_CLIENT}=0"),
        ],
    );
    let limited_token = server.printed_token();
    let (_, agreement) = server.printed_record_line();
    let unlimited_token = run_ok(
        kinde_meter()
            .args(["token", "--client-id", UNLIMITED_CLIENT, "--data-dir"])
            .arg(&data_dir),
    );
    let unlimited_token = unlimited_token.trim();
    let pid = server.pid();
    let rss_before = probe::memory_mib(pid, "VmRSS");

    let limited = Target::new(server.addr, &limited_token, &agreement);
    let unlimited = Target::new(server.addr, unlimited_token, &agreement);
    let half = settings.connections / 2;
    let loads = [
        Load::start("limited", &limited, half, Retry::Never, one),
        Load::start(
            "unlimited",
            &unlimited,
            settings.connections - half,
            Retry::Never,
            one,
        ),
    ];
    tokio::time::sleep(settings.overload).await;
    let mut ledger = Ledger::default();
    let mut outcomes = Vec::new();
    for load in loads {
        let outcome = load.stop().await;
        ledger.merge(outcome.ledger());
        outcomes.push(outcome);
    }
    let recovery = probe::until_acknowledged(
        "after",
        server.addr,
        unlimited_token,
        &agreement,
        RECOVERY,
        &mut ledger,
    )
    .await;
    assert_eq!(probe::readyz(server.addr).await, 200);
    let peak = probe::memory_mib(pid, "VmHWM");
    let rss_after = probe::memory_mib(pid, "VmRSS");

    for (name, outcome) in ["limited client", "unlimited client"].iter().zip(&outcomes) {
        eprintln!("overload, {name}: {}", outcome.summary());
    }
    eprintln!(
        "overload: {} connections for {:?}; server RSS {rss_before:.1} MiB before, peak {peak:.1} MiB, \
         {rss_after:.1} MiB after; a record acknowledged {recovery:.2?} after the load stopped",
        settings.connections, settings.overload
    );
    for outcome in &outcomes {
        outcome.assert_clean(&[200, 429, 503]);
    }
    // Beyond the sustainable rate, both refusals must have been given.
    assert!(
        outcomes[0].count(429) > 0,
        "no 429: the rate limit was never reached"
    );
    assert!(
        outcomes.iter().any(|o| o.count(503) > 0),
        "no 503: the write queue never filled"
    );
    assert!(
        peak < PEAK_RSS_LIMIT_MIB,
        "the server's peak RSS {peak:.1} MiB is over {PEAK_RSS_LIMIT_MIB} MiB"
    );

    let (value, count) = probe::usage(server.addr, unlimited_token, &agreement).await;
    assert_eq!(
        (value, count),
        (
            ledger.acknowledged_sum().to_string(),
            ledger.acknowledged_count() as u64
        ),
        "the usage read back is not the acknowledged records"
    );
    probe::assert_no_panic(&server);
    let status = server.stop();
    assert!(status.success(), "{status}");
    let check = ledger.check(&sqlite_counts(&data_dir.join("kinde-meter.db"), &agreement));
    eprintln!("overload: {}", check.summary());
    check.assert_exact();
}

fn one(_: u64) -> String {
    "1".to_owned()
}
