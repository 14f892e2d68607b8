//! The log stream of `kinde-meter serve`: every event on stderr, as one JSON
//! object per line or as one human-readable line, at the levels `RUST_LOG`
//! asks for (default `info`). What the lines hold: `docs/operations.md#logs`.

use std::io::{BufWriter, IsTerminal};

use clap::ValueEnum;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

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
/// The lines are written by a thread of their own: a request's line is
/// formatted on the request's thread and queued, and the thread writes what
/// has queued up, flushing whenever the queue is empty. A log collector that
/// reads stderr slowly (or stops) then delays log lines, not the requests:
/// written on the request handlers' threads, a blocked stderr stalled every
/// request. It costs about what it saves in CPU (a wake-up of the log thread
/// instead of a `write` per line: ~31 µs of server CPU per single-record
/// request either way, BENCHMARKS.md). Should the queue ever hold
/// [`QUEUED_LINES`], new lines are dropped rather than stall the requests.
///
/// Keep the guard returned until the process ends: dropping it writes the
/// lines still queued.
#[must_use = "dropping the guard stops the log thread"]
pub fn init(format: LogFormat) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .lossy(true)
        .thread_name("kinde-meter-log")
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .flatten_event(true)
            // The request span (method, path, request id) of a line written
            // while a request is handled; its parents add nothing.
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Pretty => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    guard
}

/// Most log lines waiting for the log thread.
pub const QUEUED_LINES: usize = 128 * 1024;
