//! What the harnesses run with, from the environment:
//!
//! - `KINDE_METER_FAULTS=1` turns them on (otherwise each test says it is
//!   skipped and passes);
//! - `KINDE_METER_FAULTS_DURATION`: seconds of overload (default 10);
//! - `KINDE_METER_FAULTS_CONNECTIONS`: concurrent keep-alive clients of the
//!   overload (default 1000);
//! - `KINDE_METER_FAULTS_KILLS`: SIGKILLs of the PostgreSQL crash harness
//!   (default 3);
//! - `KINDE_METER_TEST_DATABASE_URL`: the PostgreSQL server of the PostgreSQL
//!   harnesses (skipped without it).

use std::time::Duration;

/// The harnesses' settings.
pub struct Settings {
    pub overload: Duration,
    pub connections: usize,
    pub kills: usize,
}

/// The settings, or `None` (saying so) when the harnesses are off.
pub fn enabled(harness: &str) -> Option<Settings> {
    if std::env::var("KINDE_METER_FAULTS").as_deref() != Ok("1") {
        eprintln!("skipped {harness}: set KINDE_METER_FAULTS=1 (or run tests/faults/run.sh)");
        return None;
    }
    Some(Settings {
        overload: Duration::from_secs(number("KINDE_METER_FAULTS_DURATION", 10)),
        connections: usize::try_from(number("KINDE_METER_FAULTS_CONNECTIONS", 1000)).unwrap(),
        kills: usize::try_from(number("KINDE_METER_FAULTS_KILLS", 3)).unwrap(),
    })
}

/// The PostgreSQL server to use, or `None` (saying so).
pub fn database_url(harness: &str) -> Option<String> {
    let url = std::env::var("KINDE_METER_TEST_DATABASE_URL").ok();
    if url.is_none() {
        eprintln!("skipped {harness}: KINDE_METER_TEST_DATABASE_URL is not set");
    }
    url
}

/// Whether this process may mount filesystems (its effective user is root).
pub fn is_root() -> bool {
    // "Uid:	real	effective	saved	filesystem"
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(2).map(|uid| uid == "0")
        })
        .unwrap_or(false)
}

/// Held by each harness while it runs: they load the machine and measure it,
/// so they run one at a time whatever `--test-threads` says.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

fn number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Err(_) => default,
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a whole number")),
    }
}
