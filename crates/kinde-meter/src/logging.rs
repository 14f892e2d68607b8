//! The log stream of `kinde-meter serve`: every event on stderr, as one JSON
//! object per line or as one human-readable line, at the levels `RUST_LOG`
//! asks for (default `info`). What the lines hold: `docs/operations.md#logs`.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

mod batch;
mod json;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, the event's fields at its top level.
    Json,
    /// One human-readable line per event, coloured on a terminal.
    Pretty,
}

impl LogFormat {
    /// The format asked for, else pretty when stderr is a terminal (a person
    /// reads it) and JSON otherwise (a collector does).
    pub fn resolve(asked: Option<LogFormat>) -> LogFormat {
        asked.unwrap_or_else(|| {
            if std::io::stderr().is_terminal() {
                LogFormat::Pretty
            } else {
                LogFormat::Json
            }
        })
    }
}

/// Installs the process's subscriber: events enabled by `RUST_LOG` (`info`
/// when it is unset or invalid), written to stderr in `format`.
///
/// Lines are gathered in memory and written by a thread of their own every
/// [`batch::WRITE_EVERY`] ([`batch`]): the thread that logs neither makes a
/// system call nor wakes another thread. Written to stderr line by line, the
/// request lines cost ~7 of the ~31 µs of server CPU of a single-record
/// request, and a log collector reading stderr slowly stalled the requests
/// (bench/HISTORY.md). Past [`batch::MOST_WAITING`] bytes waiting, lines are
/// dropped and counted (a line says how many) rather than stall requests.
///
/// Keep the guard returned until the process ends: dropping it writes the
/// lines still waiting.
pub fn init(format: LogFormat) -> std::io::Result<batch::Flusher> {
    let (writer, flusher) = batch::to(std::io::stderr())?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match format {
        // The lines of tracing-subscriber's JSON formatter (flattened event,
        // the current span as `span`), at a fraction of its cost ([`json`]).
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(json::JsonLayer::new(writer))
            .init(),
        LogFormat::Pretty => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
    }
    Ok(flusher)
}
