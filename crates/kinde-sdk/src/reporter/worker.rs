//! The reporter's background task: turns pending usage into units, sends them,
//! acknowledges them in the spool, and backs off while the server is away.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kinde_meter_wire::{CreateMeterUsageRecordRequest, OK_CODE};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::pending::Unit;
use super::spool::Spool;
use super::{RecordError, RejectedUsage, ReporterError, ReporterStats, Settings, ShutdownReport};
use crate::apis::meter_usage::BillingMeterUsageApi;
use crate::error::{CreateMeterUsageRecordError, CreateMeterUsageRecordsBatchError};
use crate::idempotency::IdempotencyKey;
use crate::retry::jitter;

/// What the handles ask of the task.
pub(crate) enum Command {
    /// Send everything now; answer whether it all got through.
    Flush(oneshot::Sender<Result<(), ReporterError>>),
    /// Deliver what can be delivered before the deadline, then close the spool.
    Shutdown(oneshot::Sender<ShutdownReport>),
}

/// State shared by the handles and the task.
pub(crate) struct Shared {
    pub(crate) api: BillingMeterUsageApi,
    pub(crate) settings: Settings,
    spool: Mutex<Spool>,
    /// Serialises fsyncs for group commit.
    sync_lock: Mutex<()>,
    /// Wakes the task early (the size bound was reached).
    pub(crate) wake: Notify,
    pub(crate) closed: AtomicBool,
    /// Cleared when the server turns out to have no batch endpoint.
    batch_supported: AtomicBool,
    recorded: AtomicU64,
    delivered: AtomicU64,
    rejected: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// Why a send stopped: the units stay pending and are sent again later.
type Blocked = String;

impl Shared {
    pub(crate) fn new(api: BillingMeterUsageApi, settings: Settings, spool: Spool) -> Self {
        Shared {
            batch_supported: AtomicBool::new(settings.batch),
            api,
            settings,
            spool: Mutex::new(spool),
            sync_lock: Mutex::new(()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            recorded: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub(crate) fn spool(&self) -> MutexGuard<'_, Spool> {
        // A panic while holding the lock cannot leave the spool half-updated in
        // a way the log does not describe; keep going.
        self.spool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes everything up to `position` durable, sharing one fsync among the
    /// records that wait for it (group commit).
    pub(crate) fn sync_to(&self, position: u64) -> Result<(), RecordError> {
        let _turn = self
            .sync_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some((file, target)) = self.spool().sync_target(position) else {
            return Ok(());
        };
        if let Err(error) = file.sync_data() {
            self.spool().fail();
            return Err(RecordError::NotDurable(error));
        }
        self.spool().mark_durable(target);
        Ok(())
    }

    pub(crate) fn count_recorded(&self) {
        self.recorded.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> ReporterStats {
        let spool = self.spool();
        ReporterStats {
            recorded: self.recorded.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            undelivered: spool.undelivered(),
            pending_requests: spool.units().count() as u64 + spool.pending().groups() as u64,
            spool_bytes: spool.len(),
            last_error: self.last_error().clone(),
        }
    }

    fn last_error(&self) -> MutexGuard<'_, Option<String>> {
        self.last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `unit` is done; `rejected` of its values were refused (and reported).
    fn ack(&self, unit: &Unit, rejected: u64) {
        let delivered = unit.counts.iter().sum::<u64>().saturating_sub(rejected);
        // A failed ack write only means the unit may be sent again after a
        // restart, with the same key.
        let _ = self.spool().ack(unit.id);
        self.delivered.fetch_add(delivered, Ordering::Relaxed);
    }

    /// The server refused a record for good: report it, never drop it silently.
    fn reject(
        &self,
        record: &CreateMeterUsageRecordRequest,
        values: u64,
        code: &str,
        message: &str,
    ) {
        let rejected = RejectedUsage {
            record: record.clone(),
            values,
            code: code.to_owned(),
            message: message.to_owned(),
        };
        let path = self.spool().rejected_path();
        if let Some(path) = path {
            let line = serde_json::json!({
                "rejected_at": jiff::Timestamp::now().to_string(),
                "code": rejected.code,
                "message": rejected.message,
                "values": rejected.values,
                "record": rejected.record,
            });
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut file| {
                    use std::io::Write;
                    writeln!(file, "{line}")?;
                    file.sync_data()
                });
            if let Err(error) = written {
                *self.last_error() = Some(format!(
                    "could not write rejected usage to {}: {error}",
                    path.display()
                ));
            }
        }
        self.rejected.fetch_add(values, Ordering::Relaxed);
        if let Some(callback) = &self.settings.on_rejected {
            callback(&rejected);
        }
    }
}

/// How a record's failure is handled.
enum Verdict {
    /// The server has it (a 2xx whose body did not decode is applied too).
    Applied,
    /// Refused for good (400, 413, …): reported and dropped from the spool.
    /// This includes `ENTITLEMENT_LIMIT_EXCEEDED`: a hard limit stored nothing,
    /// and the same record is refused again for the rest of the period.
    Rejected { code: String, message: String },
    /// Might go through later (outage, rate limit, refused token): kept.
    Blocked(String),
}

fn verdict_single(result: Result<(), CreateMeterUsageRecordError>) -> Verdict {
    use CreateMeterUsageRecordError as E;
    match result {
        Ok(()) | Err(E::Decode { .. }) => Verdict::Applied,
        Err(error @ (E::BadRequest(_) | E::PayloadTooLarge(_) | E::InvalidInput(_))) => {
            Verdict::Rejected {
                code: error.code().unwrap_or_default().to_owned(),
                message: error.message().unwrap_or_default().to_owned(),
            }
        }
        Err(error) => Verdict::Blocked(error.to_string()),
    }
}

/// Sends every pending unit: per (agreement, feature) in order, up to
/// `max_concurrency` keys at a time. Returns why it stopped, if it did.
async fn send_units(shared: &Arc<Shared>) -> Result<(), Blocked> {
    let units: Vec<Unit> = {
        let spool = shared.spool();
        if spool.is_failed() {
            return Err("the spool failed; nothing more is sent".to_owned());
        }
        spool.units().cloned().collect()
    };
    if units.is_empty() {
        return Ok(());
    }
    let queue = Arc::new(Mutex::new(chains(units)));
    let workers = shared
        .settings
        .max_concurrency
        .clamp(1, queue.lock().map_or(1, |queue| queue.len().max(1)));
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let shared = shared.clone();
        let queue = queue.clone();
        tasks.spawn(async move {
            loop {
                let Some(chain) = queue.lock().ok().and_then(|mut queue| queue.pop_front()) else {
                    return Ok(());
                };
                for unit in chain {
                    send_unit(&shared, &unit).await?;
                }
            }
        });
    }
    let mut blocked = None;
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                blocked.get_or_insert(reason);
            }
            Err(error) => {
                blocked.get_or_insert(format!("a send task failed: {error}"));
            }
        }
    }
    blocked.map_or(Ok(()), Err)
}

/// Groups units into chains that must go out in order: one per (agreement,
/// feature) for single records; one for everything when batches are pending.
fn chains(units: Vec<Unit>) -> VecDeque<Vec<Unit>> {
    if units.iter().any(|unit| unit.single_key().is_none()) {
        return VecDeque::from([units]);
    }
    let mut chains: Vec<((String, String), Vec<Unit>)> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for unit in units {
        let (agreement, feature) = unit.single_key().expect("checked above");
        let key = (agreement.to_owned(), feature.to_owned());
        let slot = *index.entry(key.clone()).or_insert_with(|| {
            chains.push((key, Vec::new()));
            chains.len() - 1
        });
        chains[slot].1.push(unit);
    }
    chains.into_iter().map(|(_, chain)| chain).collect()
}

/// Sends one unit until it is done or blocked.
async fn send_unit(shared: &Arc<Shared>, unit: &Unit) -> Result<(), Blocked> {
    if unit.batch && !unit.split && shared.batch_supported.load(Ordering::Relaxed) {
        let result = shared
            .api
            .create_meter_usage_records_batch_builder()
            .records(unit.records.clone())
            .idempotency_key(unit.key.clone())
            .send()
            .await;
        match result {
            Ok(response) => {
                let mut rejected = 0;
                for result in response.results.iter().filter(|r| r.code != OK_CODE) {
                    if let Some(record) = unit.records.get(result.index) {
                        let values = unit.counts[result.index];
                        shared.reject(record, values, &result.code, &result.message);
                        rejected += values;
                    }
                }
                shared.ack(unit, rejected);
                return Ok(());
            }
            Err(CreateMeterUsageRecordsBatchError::Decode { .. }) => {
                // Applied, but which records were refused is unknown.
                *shared.last_error() = Some(
                    "a batch answer could not be decoded; its records count as delivered"
                        .to_owned(),
                );
                shared.ack(unit, 0);
                return Ok(());
            }
            Err(error) if matches!(error.status().map(|s| s.as_u16()), Some(404 | 405)) => {
                // No batch route (real Kinde): record by record from now on.
                shared.batch_supported.store(false, Ordering::Relaxed);
                shared
                    .spool()
                    .split(unit.id)
                    .map_err(|error| format!("could not write the spool: {error}"))?;
            }
            Err(
                error @ (CreateMeterUsageRecordsBatchError::BadRequest(_)
                | CreateMeterUsageRecordsBatchError::PayloadTooLarge(_)
                | CreateMeterUsageRecordsBatchError::InvalidInput(_)),
            ) => {
                let code = error.code().unwrap_or_default().to_owned();
                let message = error.message().unwrap_or_default().to_owned();
                for (record, &values) in unit.records.iter().zip(&unit.counts) {
                    shared.reject(record, values, &code, &message);
                }
                shared.ack(unit, unit.counts.iter().sum());
                return Ok(());
            }
            Err(error) => return Err(error.to_string()),
        }
    } else if unit.batch && !unit.split {
        shared
            .spool()
            .split(unit.id)
            .map_err(|error| format!("could not write the spool: {error}"))?;
    }
    let mut rejected = 0;
    for (index, (record, &values)) in unit.records.iter().zip(&unit.counts).enumerate() {
        let key: IdempotencyKey = unit.record_key(index);
        let result = shared.api.send_record(record, &key).await.map(drop);
        match verdict_single(result) {
            Verdict::Applied => {}
            Verdict::Rejected { code, message } => {
                shared.reject(record, values, &code, &message);
                rejected += values;
            }
            Verdict::Blocked(reason) => return Err(reason),
        }
    }
    shared.ack(unit, rejected);
    Ok(())
}

/// One round: pending units first (they are older), then everything recorded
/// since, converted into units durably before it is sent; then the spool is
/// synced and, if worthwhile, compacted — whether sending got through or not.
async fn cycle(shared: &Arc<Shared>) -> Result<(), Blocked> {
    let sent = send_all(shared).await;
    if !shared.spool().needs_tidying() {
        return sent;
    }
    let tidying = shared.clone();
    let tidied = tokio::task::spawn_blocking(move || {
        let mut spool = tidying.spool();
        spool.sync().and_then(|()| spool.maybe_compact())
    })
    .await
    .map_err(|error| error.to_string())
    .and_then(|result| result.map_err(|error| format!("could not write the spool: {error}")));
    sent.and(tidied)
}

async fn send_all(shared: &Arc<Shared>) -> Result<(), Blocked> {
    send_units(shared).await?;
    if shared.spool().pending().is_empty() {
        return Ok(());
    }
    let converting = shared.clone();
    let converted = tokio::task::spawn_blocking(move || {
        let batch = converting.batch_supported.load(Ordering::Relaxed);
        converting.spool().convert(batch)
    })
    .await
    .map_err(|error| error.to_string())?
    .map_err(|error| format!("could not write the spool: {error}"))?;
    if converted > 0 {
        send_units(shared).await?;
    }
    Ok(())
}

/// Runs a cycle and records its outcome.
async fn cycle_and_note(shared: &Arc<Shared>) -> Result<(), Blocked> {
    let result = cycle(shared).await;
    match &result {
        Ok(()) => *shared.last_error() = None,
        Err(reason) => *shared.last_error() = Some(reason.clone()),
    }
    result
}

/// The wait after `failures` failed cycles in a row: full jitter between the
/// flush interval and a doubling ceiling, capped.
fn backoff(settings: &Settings, failures: u32) -> Duration {
    let ceiling = settings
        .flush_interval
        .max(Duration::from_millis(100))
        .saturating_mul(1u32 << failures.min(16))
        .min(settings.max_retry_interval);
    settings.flush_interval.min(ceiling) + jitter(ceiling.saturating_sub(settings.flush_interval))
}

/// The background task.
pub(crate) async fn run(shared: Arc<Shared>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut failures = 0u32;
    let mut next = Instant::now() + shared.settings.flush_interval;
    loop {
        let command = tokio::select! {
            () = tokio::time::sleep_until(next) => None,
            // While the server is away, a full buffer does not hurry retries.
            () = shared.wake.notified(), if failures == 0 => None,
            command = commands.recv() => match command {
                Some(command) => Some(command),
                // Every handle is gone: deliver what we can, then stop.
                None => {
                    finish(&shared).await;
                    return;
                }
            },
        };
        let reply = match command {
            Some(Command::Shutdown(reply)) => {
                let _ = reply.send(finish(&shared).await);
                return;
            }
            Some(Command::Flush(reply)) => Some(reply),
            None => None,
        };
        let result = cycle_and_note(&shared).await;
        if result.is_ok() {
            failures = 0;
            next = Instant::now() + shared.settings.flush_interval;
        } else {
            failures = failures.saturating_add(1);
            next = Instant::now() + backoff(&shared.settings, failures);
        }
        if let Some(reply) = reply {
            let _ = reply.send(result.map_err(|reason| ReporterError::NotDelivered {
                undelivered: shared.spool().undelivered(),
                reason,
            }));
        }
    }
}

/// Delivers what it can before the shutdown deadline, then closes the spool.
async fn finish(shared: &Arc<Shared>) -> ShutdownReport {
    shared.closed.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + shared.settings.shutdown_timeout;
    let mut failures = 0;
    let mut last_error = None;
    loop {
        match tokio::time::timeout_at(deadline, cycle_and_note(shared)).await {
            Ok(Ok(())) if shared.spool().is_idle() => {
                last_error = None;
                break;
            }
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                last_error = Some(reason);
                failures += 1;
                let wake = Instant::now() + backoff(&shared.settings, failures);
                if wake >= deadline {
                    break;
                }
                tokio::time::sleep_until(wake).await;
            }
            Err(_) => {
                last_error.get_or_insert_with(|| "the shutdown timeout passed".to_owned());
                break;
            }
        }
    }
    let closing = shared.clone();
    let closed = tokio::task::spawn_blocking(move || {
        let mut spool = closing.spool();
        let result = spool.close();
        (spool.undelivered(), result)
    })
    .await;
    let (undelivered, result) = match closed {
        Ok(closed) => closed,
        Err(error) => (0, Err(std::io::Error::other(error.to_string()))),
    };
    if let Err(error) = result {
        last_error = Some(format!("could not close the spool: {error}"));
    }
    ShutdownReport {
        undelivered,
        last_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(interval_ms: u64, max_s: u64) -> Settings {
        Settings {
            flush_interval: Duration::from_millis(interval_ms),
            max_retry_interval: Duration::from_secs(max_s),
            ..Settings::default()
        }
    }

    fn answer(status: u16, code: &str) -> CreateMeterUsageRecordError {
        use crate::error::{OperationError, RawResponse};
        let body = format!(r#"{{"errors":[{{"code":"{code}","message":"m"}}]}}"#);
        CreateMeterUsageRecordError::from_response(RawResponse {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            headers: reqwest::header::HeaderMap::new(),
            body,
        })
    }

    #[test]
    fn a_hard_limit_refusal_is_rejected_for_good() {
        let verdict = verdict_single(Err(answer(400, "ENTITLEMENT_LIMIT_EXCEEDED")));
        assert!(
            matches!(&verdict, Verdict::Rejected { code, .. } if code == "ENTITLEMENT_LIMIT_EXCEEDED"),
            "a refused record is not retried"
        );
        for status in [429, 503] {
            assert!(matches!(
                verdict_single(Err(answer(status, "TOO_MANY_REQUESTS"))),
                Verdict::Blocked(_)
            ));
        }
    }

    #[test]
    fn backoff_grows_from_the_interval_to_the_cap() {
        let s = settings(1000, 30);
        for failures in 1..40 {
            let wait = backoff(&s, failures);
            assert!(wait >= Duration::from_secs(1), "{failures}: {wait:?}");
            assert!(wait <= Duration::from_secs(30), "{failures}: {wait:?}");
        }
        let fast = settings(10, 1);
        assert!(backoff(&fast, 1) <= Duration::from_millis(200));
        assert!(backoff(&fast, 30) <= Duration::from_secs(1));
    }
}
