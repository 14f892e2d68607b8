//! [`UsageReporter`]: record usage where it happens, in one cheap call, and let
//! a background task deliver it — coalesced, retried, and kept on disk until
//! the server has acknowledged it.
//!
//! The parts: [`pending`] coalesces recorded usage and cuts it into requests
//! (units); [`spool`] is the append-only log that makes recorded usage and the
//! units' idempotency keys survive a crash; [`worker`] is the background task
//! that sends units and acknowledges them in the spool.

mod pending;
mod spool;
mod worker;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::{RoundMode, Timestamp, TimestampRound, Unit};
use kinde_meter_wire::{CreateMeterUsageRecordRequest, MeterTypeCode};
use tokio::sync::{mpsc, oneshot};

use crate::apis::meter_usage::BillingMeterUsageApi;
use crate::decimal::Decimal;
use crate::models::{MeterValue, UsageTimestamp};
use pending::Group;
use spool::Spool;
#[doc(hidden)]
pub use spool::{ReplayedSpool, replay_for_fuzzing};
use worker::{Command, Shared};

/// When [`UsageReporter::record`] may return `Ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// After the usage's spool line is written *and fsynced*: it survives the
    /// process being killed and the machine losing power. Concurrent records
    /// share fsyncs (group commit), but each call waits for one: typically
    /// tens of microseconds to a few milliseconds, depending on the disk.
    #[default]
    Fsync,
    /// After the line is written to the operating system (`write(2)`), which
    /// takes microseconds; the background task fsyncs at every flush. It
    /// survives the process being killed (even with `SIGKILL`), not an
    /// operating-system crash or power loss before the next flush.
    Written,
}

/// What [`UsageReporterBuilder::on_rejected`] calls.
type RejectedCallback = Arc<dyn Fn(&RejectedUsage) + Send + Sync>;

/// The reporter's configuration (see [`UsageReporterBuilder`]).
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) flush_interval: Duration,
    pub(crate) flush_threshold: u64,
    pub(crate) coalesce_window: Duration,
    pub(crate) max_spool_bytes: u64,
    pub(crate) durability: Durability,
    pub(crate) batch: bool,
    pub(crate) max_concurrency: usize,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) max_retry_interval: Duration,
    pub(crate) on_rejected: Option<RejectedCallback>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            flush_interval: Duration::from_secs(1),
            flush_threshold: 1000,
            coalesce_window: Duration::from_secs(10),
            max_spool_bytes: 64 << 20,
            durability: Durability::Fsync,
            batch: false,
            max_concurrency: 4,
            shutdown_timeout: Duration::from_secs(10),
            max_retry_interval: Duration::from_secs(30),
            on_rejected: None,
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("flush_interval", &self.flush_interval)
            .field("flush_threshold", &self.flush_threshold)
            .field("coalesce_window", &self.coalesce_window)
            .field("max_spool_bytes", &self.max_spool_bytes)
            .field("durability", &self.durability)
            .field("batch", &self.batch)
            .field("max_concurrency", &self.max_concurrency)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("max_retry_interval", &self.max_retry_interval)
            .field("on_rejected", &self.on_rejected.is_some())
            .finish()
    }
}

/// One usage value for [`UsageReporter::record_usage`]: a delta or an absolute,
/// optionally with the time it happened (default: when it is recorded).
///
/// ```
/// use kinde_sdk::Usage;
///
/// let at: jiff::Timestamp = "2025-03-01T12:00:00Z".parse().unwrap();
/// let usage = Usage::delta("agreement_0195ac80a14c2ca2cec97d026d864de0", "api_calls", 3).at(at);
/// let seats = Usage::absolute("agreement_0195ac80a14c2ca2cec97d026d864de0", "seats", 12);
/// # let _ = (usage, seats);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    agreement_id: String,
    feature_code: String,
    value: MeterValue,
    meter_type: MeterTypeCode,
    timestamp: Option<UsageTimestamp>,
}

impl Usage {
    /// `value` more of `feature_code` on agreement `agreement_id`.
    pub fn delta(
        agreement_id: impl Into<String>,
        feature_code: impl Into<String>,
        value: impl Into<MeterValue>,
    ) -> Self {
        Usage {
            agreement_id: agreement_id.into(),
            feature_code: feature_code.into(),
            value: value.into(),
            meter_type: MeterTypeCode::Delta,
            timestamp: None,
        }
    }

    /// The usage of `feature_code` on agreement `agreement_id` is now `value`.
    pub fn absolute(
        agreement_id: impl Into<String>,
        feature_code: impl Into<String>,
        value: impl Into<MeterValue>,
    ) -> Self {
        Usage {
            meter_type: MeterTypeCode::Absolute,
            ..Usage::delta(agreement_id, feature_code, value)
        }
    }

    /// When the usage happened (sent as `meter_usage_timestamp`, with its offset).
    pub fn at(mut self, timestamp: impl Into<UsageTimestamp>) -> Self {
        self.timestamp = Some(timestamp.into());
        self
    }

    /// Parses the value and builds the group this usage starts as.
    fn into_group(self) -> Result<Group, RecordError> {
        if self.agreement_id.is_empty() || self.feature_code.is_empty() {
            return Err(RecordError::Invalid(
                "the agreement id and the feature code must not be empty".to_owned(),
            ));
        }
        let value = Decimal::parse(self.value.as_str()).map_err(|_| {
            RecordError::Invalid(format!(
                "meter value {:?} is not a non-negative decimal of at most 18 integer and 9 fractional digits",
                self.value.as_str()
            ))
        })?;
        // Microseconds, as Python's `isoformat()` writes: every server parses
        // them. Truncated, so that later usage never gets an earlier time.
        let timestamp = self.timestamp.unwrap_or_else(|| {
            let now = Timestamp::now();
            let rounding = TimestampRound::new()
                .smallest(Unit::Microsecond)
                .mode(RoundMode::Trunc);
            UsageTimestamp::from(now.round(rounding).unwrap_or(now))
        });
        Ok(Group {
            agreement: self.agreement_id,
            feature: self.feature_code,
            value,
            meter_type: self.meter_type,
            timestamp: timestamp.to_string(),
            earliest: timestamp.timestamp(),
            latest: timestamp.timestamp(),
            count: 1,
        })
    }
}

/// Why [`UsageReporter::record`] did not take usage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The usage is malformed (an empty id or code, a value the server would
    /// refuse, such as `-1`, `1e3` or ten fractional digits). Nothing was
    /// recorded.
    #[error("invalid usage: {0}")]
    Invalid(String),
    /// The spool holds its maximum of unsent usage (the server has been
    /// unreachable for long, or is refusing the token). Nothing was recorded;
    /// the usage is yours to keep or retry.
    #[error(
        "the usage spool is full ({max_bytes} bytes of undelivered usage); nothing was recorded"
    )]
    SpoolFull {
        /// The configured limit, [`UsageReporterBuilder::max_spool_bytes`].
        max_bytes: u64,
    },
    /// The reporter was shut down. Nothing was recorded.
    #[error("the usage reporter is shut down; nothing was recorded")]
    Closed,
    /// The spool could not be written (the disk is full, …). Nothing was
    /// recorded.
    #[error("the usage spool could not be written; nothing was recorded: {0}")]
    Io(#[source] io::Error),
    /// The usage was written to the spool, but the fsync that would make it
    /// durable failed. It stays in the reporter's memory, but the reporter
    /// stops (later records fail with [`SpoolFailed`](Self::SpoolFailed) and
    /// nothing more is sent), since the log is in doubt; whatever reached the
    /// disk is replayed by the next reporter on this spool. The outcome of this
    /// usage is unknown.
    #[error("the usage spool could not be synced; this usage may or may not be kept: {0}")]
    NotDurable(#[source] io::Error),
    /// An earlier I/O failure stopped the spool. Nothing was recorded.
    #[error("the usage spool failed earlier; no usage is recorded any more")]
    SpoolFailed,
}

/// Why a reporter could not start, flush or shut down.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReporterError {
    /// Another reporter (in this or another process) has the spool open.
    #[error("the usage spool {} is in use by another reporter", path.display())]
    SpoolInUse {
        /// The spool.
        path: PathBuf,
    },
    /// The spool holds an unreadable entry followed by readable ones, or no
    /// header: not a torn write but corruption. It is left untouched;
    /// nothing is guessed.
    #[error("the usage spool {} is corrupt at line {line}: {reason}", path.display())]
    SpoolCorrupt {
        /// The spool.
        path: PathBuf,
        /// The first bad line, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The spool could not be read, created or locked.
    #[error("usage spool {}: {source}", path.display())]
    Io {
        /// The spool.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Not everything could be delivered now (the server is unreachable,
    /// rate limiting, refusing the token, …). Nothing is lost: the usage stays
    /// in the spool and is retried.
    #[error("{undelivered} recorded usage values are not delivered yet: {reason}")]
    NotDelivered {
        /// Recorded values still waiting.
        undelivered: u64,
        /// The error that stopped delivery.
        reason: String,
    },
    /// The reporter was shut down.
    #[error("the usage reporter is shut down")]
    Closed,
}

/// Usage the server refused for good (an unknown or ended agreement, a
/// feature that is not metered, a hard entitlement limit reached —
/// `ENTITLEMENT_LIMIT_EXCEEDED` — …). It is removed from the spool, written to
/// `<spool>.rejected` (one JSON object per line) and passed to
/// [`UsageReporterBuilder::on_rejected`]; never retried, never dropped
/// silently.
///
/// A coalesced delta is refused as a whole: near a hard limit, values that
/// would have fit one by one may be refused together (see
/// [`values`](Self::values)). Where that matters, check first
/// ([`BillingEntitlementsApi::check`](crate::BillingEntitlementsApi::check)) or
/// send those records yourself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RejectedUsage {
    /// The request that was refused.
    pub record: CreateMeterUsageRecordRequest,
    /// How many recorded values it coalesced.
    pub values: u64,
    /// The server's error code, e.g. `AGREEMENT_NOT_ACTIVE`.
    pub code: String,
    /// The server's message.
    pub message: String,
}

/// A snapshot of a reporter's counters ([`UsageReporter::stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReporterStats {
    /// Values recorded through this reporter since it started.
    pub recorded: u64,
    /// Values the server acknowledged since it started (including values
    /// replayed from the spool).
    pub delivered: u64,
    /// Values the server refused for good since it started.
    pub rejected: u64,
    /// Values recorded (now or before a restart) and not yet delivered.
    pub undelivered: u64,
    /// Requests those values will take at most, as coalesced now.
    pub pending_requests: u64,
    /// The spool's size in bytes.
    pub spool_bytes: u64,
    /// Why the last delivery attempt stopped, if it did.
    pub last_error: Option<String>,
}

/// What [`UsageReporter::shutdown`] achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Recorded values that could not be delivered before the shutdown
    /// timeout. They are in the spool and the next reporter on it sends them
    /// (0 for a complete shutdown).
    pub undelivered: u64,
    /// Why delivery stopped, if it did.
    pub last_error: Option<String>,
}

impl ShutdownReport {
    /// Whether everything recorded was delivered.
    pub fn is_complete(&self) -> bool {
        self.undelivered == 0 && self.last_error.is_none()
    }
}

/// Where unsent usage is kept.
#[derive(Debug, Clone)]
enum SpoolLocation {
    File(PathBuf),
    Memory,
}

/// Configures and starts a [`UsageReporter`]; from
/// [`UsageReporter::with_spool`] or [`UsageReporter::in_memory`].
#[derive(Debug)]
#[must_use = "a builder does nothing until `.start().await`"]
pub struct UsageReporterBuilder {
    api: BillingMeterUsageApi,
    spool: SpoolLocation,
    settings: Settings,
}

impl UsageReporterBuilder {
    /// How often pending usage is sent (default 1 s). Recorded usage waits at
    /// most this long (plus the send) while the server is reachable.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.settings.flush_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Sends early once this many values are waiting (default 1000).
    pub fn flush_threshold(mut self, values: u64) -> Self {
        self.settings.flush_threshold = values.max(1);
        self
    }

    /// The longest stretch of time one coalesced delta may cover (default
    /// 10 s). A coalesced delta is sent with the timestamp of the latest usage
    /// in it, so at a billing-period boundary up to this much usage can be
    /// counted in the next period rather than the one it happened in;
    /// `Duration::ZERO` coalesces only usage with the very same timestamp.
    pub fn coalesce_window(mut self, window: Duration) -> Self {
        self.settings.coalesce_window = window;
        self
    }

    /// The most the spool may hold (default 64 MiB, roughly 300 000 pending
    /// values that could not be coalesced). Past it,
    /// [`record`](UsageReporter::record) fails with
    /// [`RecordError::SpoolFull`].
    pub fn max_spool_bytes(mut self, bytes: u64) -> Self {
        self.settings.max_spool_bytes = bytes;
        self
    }

    /// When `record` returns `Ok` (default [`Durability::Fsync`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.settings.durability = durability;
        self
    }

    /// Send up to 100 records per request to the batch endpoint (default
    /// `false`). Only kinde-meter has one; if the server answers 404 or 405 the
    /// reporter falls back to single records by itself.
    pub fn batch(mut self, batch: bool) -> Self {
        self.settings.batch = batch;
        self
    }

    /// How many (agreement, feature) keys are sent to concurrently when
    /// sending single records (default 4). Each key's records go out in order.
    pub fn max_concurrency(mut self, keys: usize) -> Self {
        self.settings.max_concurrency = keys.max(1);
        self
    }

    /// How long [`shutdown`](UsageReporter::shutdown) keeps trying to deliver
    /// (default 10 s). What is left stays in the spool.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.settings.shutdown_timeout = timeout;
        self
    }

    /// The longest wait between delivery attempts while the server is
    /// unreachable (default 30 s). Waits grow from the flush interval, with
    /// jitter, up to this.
    pub fn max_retry_interval(mut self, interval: Duration) -> Self {
        self.settings.max_retry_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Called (on the background task) for usage the server refused for good.
    pub fn on_rejected(
        mut self,
        callback: impl Fn(&RejectedUsage) + Send + Sync + 'static,
    ) -> Self {
        self.settings.on_rejected = Some(Arc::new(callback));
        self
    }

    /// Opens (or creates) the spool, takes its lock, replays what a previous
    /// reporter left in it, and starts the background task on the current
    /// Tokio runtime. Replayed usage is sent at the first flush.
    ///
    /// # Errors
    ///
    /// [`ReporterError::SpoolInUse`] if another reporter has the spool open,
    /// [`ReporterError::SpoolCorrupt`] or [`ReporterError::Io`] if it cannot
    /// be read.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub async fn start(self) -> Result<UsageReporter, ReporterError> {
        let UsageReporterBuilder {
            api,
            spool,
            settings,
        } = self;
        let (max_bytes, window) = (settings.max_spool_bytes, settings.coalesce_window);
        let spool = match spool {
            SpoolLocation::Memory => Spool::memory(max_bytes, window),
            SpoolLocation::File(path) => {
                let opening = path.clone();
                tokio::task::spawn_blocking(move || Spool::open(&opening, max_bytes, window))
                    .await
                    .map_err(|error| ReporterError::Io {
                        path,
                        source: io::Error::other(error.to_string()),
                    })??
            }
        };
        let shared = Arc::new(Shared::new(api, settings, spool));
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(worker::run(shared.clone(), receiver));
        Ok(UsageReporter { shared, commands })
    }
}

/// Reports usage in the background: [`record`](Self::record) returns as soon
/// as the usage is safe in the spool; a background task coalesces deltas and
/// delivers them, retrying until the server acknowledges them.
///
/// See [the crate documentation](crate#usagereporter) for the guarantees.
///
/// ```no_run
/// use kinde_sdk::{ApiClient, BillingMeterUsageApi, Configuration, UsageReporter};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let api = BillingMeterUsageApi::new(ApiClient::new(Configuration::from_env()?)?);
/// let reporter = UsageReporter::with_spool(api, "/var/lib/my-service/usage.spool")
///     .start()
///     .await?;
///
/// // Anywhere in the service, as often as usage happens:
/// reporter.record("agreement_0195ac80a14c2ca2cec97d026d864de0", "api_calls", 1)?;
///
/// // At exit: deliver what is pending (what cannot be delivered stays spooled).
/// let report = reporter.shutdown().await?;
/// assert!(report.is_complete());
/// # Ok(())
/// # }
/// ```
///
/// The background task runs on the Tokio runtime the reporter was started on;
/// on a single-threaded runtime, code that records in a long loop must yield
/// now and then (`tokio::task::yield_now().await`) for it to send.
///
/// Clones share the reporter. When the last clone is dropped without
/// [`shutdown`](Self::shutdown), the task makes one last delivery attempt
/// (bounded by the shutdown timeout) and stops; nothing recorded is lost
/// either way, since it is in the spool.
#[derive(Clone)]
pub struct UsageReporter {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

impl fmt::Debug for UsageReporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageReporter")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl UsageReporter {
    /// A reporter that keeps unsent usage in the spool file at `path` (created
    /// if missing, with its directory; `<path>.lock`, `<path>.tmp` and
    /// `<path>.rejected` are kept beside it). One reporter per spool at a time.
    pub fn with_spool(api: BillingMeterUsageApi, path: impl AsRef<Path>) -> UsageReporterBuilder {
        UsageReporterBuilder {
            api,
            spool: SpoolLocation::File(path.as_ref().to_owned()),
            settings: Settings::default(),
        }
    }

    /// A reporter that keeps unsent usage in memory only: coalescing, retries
    /// and ordering as with a spool file, but usage not yet delivered is lost
    /// if the process dies. `max_spool_bytes` still bounds the memory.
    pub fn in_memory(api: BillingMeterUsageApi) -> UsageReporterBuilder {
        UsageReporterBuilder {
            api,
            spool: SpoolLocation::Memory,
            settings: Settings::default(),
        }
    }

    /// Records `value` more of `feature_code` on agreement `agreement_id`,
    /// happening now. See [`record_usage`](Self::record_usage).
    ///
    /// # Errors
    ///
    /// See [`RecordError`].
    pub fn record(
        &self,
        agreement_id: impl Into<String>,
        feature_code: impl Into<String>,
        value: impl Into<MeterValue>,
    ) -> Result<(), RecordError> {
        self.record_usage(Usage::delta(agreement_id, feature_code, value))
    }

    /// Records that the usage of `feature_code` on agreement `agreement_id` is
    /// now `value` (an absolute). See [`record_usage`](Self::record_usage).
    ///
    /// # Errors
    ///
    /// See [`RecordError`].
    pub fn record_absolute(
        &self,
        agreement_id: impl Into<String>,
        feature_code: impl Into<String>,
        value: impl Into<MeterValue>,
    ) -> Result<(), RecordError> {
        self.record_usage(Usage::absolute(agreement_id, feature_code, value))
    }

    /// Records usage. Synchronous and cheap: it appends one line to the spool
    /// and, with [`Durability::Fsync`], waits for it to be fsynced (shared with
    /// concurrent calls) — no network. `Ok` means the usage will be delivered:
    /// by this reporter, or, after a crash, by the next one on the spool.
    ///
    /// # Errors
    ///
    /// See [`RecordError`]: invalid usage, a full spool and a shut-down
    /// reporter record nothing; [`RecordError::NotDurable`] leaves the outcome
    /// unknown.
    pub fn record_usage(&self, usage: Usage) -> Result<(), RecordError> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(RecordError::Closed);
        }
        let group = usage.into_group()?;
        let (position, waiting) = {
            let mut spool = self.shared.spool();
            let position = spool.record(group)?;
            (position, spool.pending().values())
        };
        self.shared.count_recorded();
        if self.shared.settings.durability == Durability::Fsync {
            self.shared.sync_to(position)?;
        }
        if waiting >= self.shared.settings.flush_threshold {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Sends everything recorded so far now, and waits for the answer.
    ///
    /// # Errors
    ///
    /// [`ReporterError::NotDelivered`] if something could not be delivered
    /// (it stays spooled and is retried); [`ReporterError::Closed`] after a
    /// shutdown.
    pub async fn flush(&self) -> Result<(), ReporterError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Flush(reply))
            .map_err(|_| ReporterError::Closed)?;
        answer.await.map_err(|_| ReporterError::Closed)?
    }

    /// Stops taking usage, delivers what is pending for up to the shutdown
    /// timeout, syncs and compacts the spool and releases it. Clones of this
    /// reporter fail with [`RecordError::Closed`] from now on.
    ///
    /// What could not be delivered stays in the spool for the next reporter;
    /// the report says how much.
    ///
    /// # Errors
    ///
    /// [`ReporterError::Closed`] if the reporter was already shut down.
    pub async fn shutdown(self) -> Result<ShutdownReport, ReporterError> {
        if self.shared.closed.swap(true, Ordering::SeqCst) {
            return Err(ReporterError::Closed);
        }
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Shutdown(reply))
            .map_err(|_| ReporterError::Closed)?;
        answer.await.map_err(|_| ReporterError::Closed)
    }

    /// The reporter's counters.
    pub fn stats(&self) -> ReporterStats {
        self.shared.stats()
    }
}
