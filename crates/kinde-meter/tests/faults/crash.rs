//! Servers killed under load: `kinde-meter serve` processes (two on one
//! PostgreSQL scratch database, or one on a SQLite data directory), 32 clients
//! that send each record with its own `Idempotency-Key` and send it again
//! (same key, same body, any server) until it is acknowledged, and
//! `KINDE_METER_FAULTS_KILLS` times a server killed with SIGKILL mid-load and
//! started again on the same storage. At the end every record is stored
//! exactly once: none lost, none counted twice.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    ledger::{Ledger, sqlite_counts},
    load::{Load, Retry, Target},
    pg::{self, ScratchDatabase},
    probe::{self, eventually},
    settings::{self, Settings, exclusive},
    support::{Server, kinde_meter, run_ok},
};

const CLIENTS: usize = 32;
/// One issuer whatever port a restarted server gets, so tokens stay valid.
const PUBLIC_URL: &str = "http://meter.test";
/// Records acknowledged between two kills (and after the last restart).
const BETWEEN_KILLS: u64 = 300;
const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_on_postgresql_killed_under_load_store_every_record_exactly_once() {
    let Some(settings) = settings::enabled("PostgreSQL crash") else {
        return;
    };
    let Some(url) = settings::database_url("PostgreSQL crash") else {
        return;
    };
    let _turn = exclusive().await;
    let db = ScratchDatabase::create(&url).await;
    let serve = || serve(&["--database-url", db.url()]);
    let servers = vec![serve(), serve()];
    let token = run_ok(kinde_meter().args(["token", "--database-url", db.url()]));
    let agreement = run_ok(kinde_meter().args([
        "agreements",
        "create",
        "--customer-id",
        "crash",
        "--plan-code",
        "pro",
        "--database-url",
        db.url(),
    ]));
    let agreement = agreement.trim();
    let ledger = kill_under_load(
        "PostgreSQL crash",
        &settings,
        servers,
        serve,
        token.trim(),
        agreement,
    )
    .await;
    let stored = pg::counts(&db.connect().await, agreement).await;
    check("PostgreSQL crash", &settings, &ledger, &stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_sqlite_killed_under_load_stores_every_record_exactly_once() {
    let Some(settings) = settings::enabled("SQLite crash") else {
        return;
    };
    let _turn = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let serve = || serve(&["--data-dir", data_dir.to_str().unwrap()]);
    let mut first = serve();
    let token = first.printed_token();
    let (_, agreement) = first.printed_record_line();
    let ledger = kill_under_load(
        "SQLite crash",
        &settings,
        vec![first],
        serve,
        &token,
        &agreement,
    )
    .await;
    let stored = sqlite_counts(&data_dir.join("kinde-meter.db"), &agreement);
    check("SQLite crash", &settings, &ledger, &stored);
}

/// Runs the load on `servers`, kills one after another (SIGKILL) and starts
/// it again with `restart`, then stops the load and the servers; checks every
/// answer and the usage each server reads back. The ledger's check against the
/// stored records is left to [`check`].
async fn kill_under_load(
    name: &str,
    settings: &Settings,
    mut servers: Vec<Server>,
    restart: impl Fn() -> Server,
    token: &str,
    agreement: &str,
) -> Ledger {
    let target = Target::new(servers[0].addr, token, agreement);
    target
        .servers
        .write()
        .unwrap()
        .extend(servers[1..].iter().map(|s| s.addr));
    let load = Load::start("crash", &target, CLIENTS, Retry::UntilAcknowledged, value);
    for kill in 0..=settings.kills {
        let before = load.seen().acknowledged;
        eventually("records to be acknowledged", DEADLINE, async || {
            load.seen().acknowledged >= before + BETWEEN_KILLS
        })
        .await;
        if kill == settings.kills {
            break;
        }
        let victim = kill % servers.len();
        let child = &mut servers[victim].guard.0;
        child.kill().unwrap();
        child.wait().unwrap();
        servers[victim] = restart();
        target.servers.write().unwrap()[victim] = servers[victim].addr;
    }
    let outcome = load.stop().await;
    eprintln!(
        "{name}: {} kills (SIGKILL) of {} server(s), {CLIENTS} retrying clients: {}",
        settings.kills,
        servers.len(),
        outcome.summary()
    );
    // Connections fail when their server is killed (so transport errors are
    // expected); every answer given is a 200, or a 503 in Kinde's shape.
    let tally = &outcome.tally;
    assert_eq!(tally.malformed, 0, "{:?}", tally.first_malformed);
    let others: Vec<_> = tally
        .statuses
        .keys()
        .filter(|s| ![200, 503].contains(*s))
        .collect();
    assert!(
        others.is_empty(),
        "{others:?}: {:?}",
        tally.first_unexpected
    );
    let ledger = outcome.tally.ledger;
    for server in &servers {
        assert_eq!(
            probe::usage(server.addr, token, agreement).await,
            (
                ledger.acknowledged_sum().to_string(),
                ledger.acknowledged_count() as u64
            ),
            "the usage read back"
        );
    }
    for server in servers {
        probe::assert_no_panic(&server);
        let status = server.stop();
        assert!(status.success(), "{status}");
    }
    ledger
}

/// The exactly-once check of what [`kill_under_load`] left stored.
fn check(name: &str, settings: &Settings, ledger: &Ledger, stored: &BTreeMap<String, u64>) {
    let check = ledger.check(stored);
    eprintln!(
        "{name}: kills survived {}, {}",
        settings.kills,
        check.summary()
    );
    check.assert_exact();
    assert_eq!(
        (check.refused, check.in_doubt),
        (0, 0),
        "every record was retried until acknowledged"
    );
}

/// `serve` with the shared public URL and no rate limit, on `storage`.
fn serve(storage: &[&str]) -> Server {
    let mut command = kinde_meter();
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--rate-limit", "0"])
        .args(["--public-url", PUBLIC_URL])
        .args(storage);
    Server::spawn(command)
}

/// Record `n`'s value: 1 to 9, so that a record lost and another doubled
/// would not cancel out in the sum either.
fn value(n: u64) -> String {
    (n % 9 + 1).to_string()
}
