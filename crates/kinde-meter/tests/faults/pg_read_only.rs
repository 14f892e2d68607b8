//! PostgreSQL refusing writes: a server on a scratch database whose sessions
//! are made read-only (`ALTER DATABASE … SET default_transaction_read_only =
//! on`, then its sessions terminated, so that the server's pool reconnects into
//! read-only sessions), as after a failover onto a standby. Writes must be
//! answered 503 with `Retry-After` (never 500); once the database takes writes
//! again (`= off`) the same server process must acknowledge them again,
//! without a restart. Exactly the acknowledged records are stored.

use std::time::Duration;

use crate::{
    ledger::Ledger,
    load::{Load, Outcome, Retry, Target},
    pg::{self, ScratchDatabase},
    probe::{self, eventually},
    settings::{self, exclusive},
    support::{Server, kinde_meter},
};

const CLIENTS: usize = 8;
/// How long each phase may take to show what it waits for.
const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_refusing_writes_is_answered_503_and_writes_resume_without_a_restart() {
    if settings::enabled("PostgreSQL read-only").is_none() {
        return;
    }
    let Some(url) = settings::database_url("PostgreSQL read-only") else {
        return;
    };
    let _turn = exclusive().await;
    let db = ScratchDatabase::create(&url).await;
    let mut command = kinde_meter();
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--rate-limit", "0"])
        .args(["--database-url", db.url()]);
    let mut server = Server::spawn(command);
    let token = server.printed_token();
    let (_, agreement) = server.printed_record_line();
    let target = Target::new(server.addr, &token, &agreement);
    let admin = db.admin().await;
    let mut ledger = Ledger::default();

    let writable = phase(&target, "writable", &mut ledger, |seen| {
        seen.acknowledged >= 200
    })
    .await;

    // Read-only from now on, for every new session; the current ones end.
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} SET default_transaction_read_only = on",
            db.name()
        ))
        .await
        .unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&db.name()],
        )
        .await
        .unwrap();
    let read_only = phase(&target, "readonly", &mut ledger, |seen| {
        seen.unavailable >= 50
    })
    .await;
    let readyz_read_only = probe::readyz(server.addr).await;

    // Writable again; nothing else is done to the server or its sessions.
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} SET default_transaction_read_only = off",
            db.name()
        ))
        .await
        .unwrap();
    let recovery = probe::until_acknowledged(
        "resumed-probe",
        server.addr,
        &token,
        &agreement,
        DEADLINE,
        &mut ledger,
    )
    .await;
    let resumed = phase(&target, "resumed", &mut ledger, |seen| {
        seen.acknowledged >= 200
    })
    .await;

    eprintln!("PostgreSQL read-only: writable: {}", writable.summary());
    eprintln!(
        "PostgreSQL read-only: read-only: {}; /readyz {readyz_read_only}",
        read_only.summary()
    );
    eprintln!(
        "PostgreSQL read-only: writable again (first record acknowledged {recovery:.2?} after `= off`): {}",
        resumed.summary()
    );
    for outcome in [&writable, &read_only, &resumed] {
        outcome.assert_clean(&[200, 503]);
    }
    assert_eq!(writable.count(503), 0);
    let (value, count) = probe::usage(server.addr, &token, &agreement).await;
    assert_eq!(
        (value, count),
        (
            ledger.acknowledged_sum().to_string(),
            ledger.acknowledged_count() as u64
        )
    );
    probe::assert_no_panic(&server);
    let status = server.stop();
    assert!(status.success(), "{status}");
    let check = ledger.check(&pg::counts(&db.connect().await, &agreement).await);
    eprintln!("PostgreSQL read-only: {}", check.summary());
    check.assert_exact();
}

/// Runs the load until `reached` holds for what it has seen; what it saw.
async fn phase(
    target: &std::sync::Arc<Target>,
    name: &str,
    ledger: &mut Ledger,
    reached: impl Fn(crate::load::Seen) -> bool,
) -> Outcome {
    let load = Load::start(name, target, CLIENTS, Retry::Never, one);
    eventually(&format!("the {name} phase"), DEADLINE, async || {
        reached(load.seen())
    })
    .await;
    let outcome = load.stop().await;
    ledger.merge(outcome.ledger());
    outcome
}

fn one(_: u64) -> String {
    "1".to_owned()
}
