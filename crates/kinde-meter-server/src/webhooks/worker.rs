//! The webhook delivery worker: a background task of `serve` that turns due
//! usage aggregates into events, leases due deliveries from the store's outbox
//! and POSTs each, signed, to its endpoint, recording the outcome and the next
//! attempt (`docs/webhooks.md`).
//!
//! Every delivery is its own task, bounded per webhook and overall, so a slow
//! or dead endpoint holds at most its own slots: a webhook at its cap is passed
//! to the claim as busy and its due deliveries stay in the outbox for later
//! (or for another server on the same PostgreSQL database) while the others'
//! are sent. A lease outlives any attempt, so an attempt is made by one worker
//! at a time; one that dies mid-attempt (kill -9) leaves its lease to expire,
//! and the delivery is attempted again.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use jiff::{SignedDuration, Timestamp};
use kinde_meter_core::webhook::{WebhookId, next_attempt_at};
use kinde_meter_store::{Delivery, DeliveryResult, Store};
use tokio::{sync::watch, task::JoinSet};

use super::endpoint;
use super::signing::{CONTENT_TYPE, WEBHOOK_ID_HEADER, sign_event, webhook_message_id};
use crate::auth::SigningKey;
use crate::clock::Clock;
use crate::metrics::{DeliveryOutcome, Metrics};

/// Claims made in one round at most (each may be cut short by the per-webhook
/// cap); what is left is claimed when a slot frees or at the next poll.
const MAX_CLAIMS_PER_ROUND: usize = 16;

/// How often a failing store is logged at most.
const STORE_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The longest error text kept for a delivery (`kinde-meter webhooks list`).
const MAX_ERROR_LEN: usize = 300;

/// How deliveries are made.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Deliver to loopback, private, link-local and metadata addresses too
    /// (`--webhook-allow-private-networks`); off: such an address is refused at
    /// every hop, after DNS resolution and on every redirect.
    pub allow_private_networks: bool,
    /// The time one attempt may take, connection to answer (10 s).
    pub attempt_timeout: Duration,
    /// How often the worker looks for due work (1 s).
    pub poll_interval: Duration,
    /// Attempts in flight to one webhook at most (4).
    pub per_webhook_concurrency: usize,
    /// Attempts in flight at most, all webhooks together (64).
    pub max_concurrency: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            allow_private_networks: false,
            attempt_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            per_webhook_concurrency: 4,
            max_concurrency: 64,
        }
    }
}

impl WebhookSettings {
    /// How long a claimed delivery is leased: six attempt timeouts (60 s by
    /// default), far beyond any attempt, so no other worker takes it while it
    /// is in flight; after a crash, the delivery waits this long.
    pub fn lease(&self) -> SignedDuration {
        SignedDuration::try_from(self.attempt_timeout.saturating_mul(6))
            .unwrap_or(SignedDuration::from_secs(60))
            .max(SignedDuration::from_secs(1))
    }
}

/// What the worker needs from the application.
pub struct WorkerContext {
    /// The outbox.
    pub store: Arc<dyn Store>,
    /// The time deliveries are scheduled in (the store's events are stamped in it too).
    pub clock: Clock,
    /// The key deliveries are signed with (the server's current key).
    pub key: Arc<SigningKey>,
    /// `iss` of the deliveries: the server's public URL.
    pub issuer: String,
    /// Counters and the pending gauges.
    pub metrics: Arc<Metrics>,
    /// Timeouts, caps, the private-address rule.
    pub settings: WebhookSettings,
}

/// A prepared worker: its HTTP client is built (the failure of which is a
/// start-up error); [`spawn`](Self::spawn) starts it.
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: WorkerContext,
    http: reqwest::Client,
}

impl Worker {
    /// Builds the HTTP client of the deliveries.
    pub fn new(ctx: WorkerContext) -> anyhow::Result<Worker> {
        let http = http_client(&ctx.settings)?;
        Ok(Worker {
            inner: Arc::new(Inner { ctx, http }),
        })
    }

    /// Starts the worker on the current runtime.
    pub fn spawn(self) -> RunningWorker {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(self.inner, stopped));
        RunningWorker { stop, task }
    }
}

/// A running worker; [`shutdown`](Self::shutdown) stops it.
pub struct RunningWorker {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningWorker {
    /// Stops claiming and waits for the attempts in flight (each ends within
    /// the attempt timeout) to be recorded, so that the store can be shut down
    /// after it.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await
            && e.is_panic()
        {
            tracing::error!("the webhook delivery worker panicked");
        }
    }
}

/// The HTTP client of the deliveries: no proxy (a proxy would resolve names
/// where the private-address rule cannot see them), no cookies, the endpoint
/// rule on every connection (the resolver) and every redirect (the policy).
fn http_client(settings: &WebhookSettings) -> anyhow::Result<reqwest::Client> {
    let allow_private = settings.allow_private_networks;
    reqwest::Client::builder()
        .user_agent(concat!("kinde-meter/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .redirect(endpoint::redirect_policy(allow_private))
        .dns_resolver(endpoint::GuardedResolver::new(allow_private))
        .connect_timeout(settings.attempt_timeout)
        .timeout(settings.attempt_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the webhook HTTP client: {e}"))
}

/// Attempts in flight: their tasks and the count per webhook.
#[derive(Default)]
struct InFlight {
    tasks: JoinSet<()>,
    webhook_of: HashMap<tokio::task::Id, WebhookId>,
    per_webhook: HashMap<WebhookId, usize>,
}

impl InFlight {
    fn total(&self) -> usize {
        self.webhook_of.len()
    }

    fn start(&mut self, inner: &Arc<Inner>, delivery: Delivery) {
        let webhook = delivery.webhook_id.clone();
        let inner = inner.clone();
        let task = self.tasks.spawn(async move {
            deliver(&inner, delivery).await;
        });
        *self.per_webhook.entry(webhook.clone()).or_default() += 1;
        self.webhook_of.insert(task.id(), webhook);
    }

    /// Forgets a finished task.
    fn finished(&mut self, task: tokio::task::Id) {
        let Some(webhook) = self.webhook_of.remove(&task) else {
            return;
        };
        if let Some(n) = self.per_webhook.get_mut(&webhook) {
            *n -= 1;
            if *n == 0 {
                self.per_webhook.remove(&webhook);
            }
        }
    }
}

/// Logs store failures at most once per [`STORE_ERROR_LOG_INTERVAL`].
#[derive(Default)]
struct ErrorLog {
    last: Option<Instant>,
}

impl ErrorLog {
    fn report(&mut self, what: &str, error: &dyn std::fmt::Display) {
        if self
            .last
            .is_none_or(|at| at.elapsed() >= STORE_ERROR_LOG_INTERVAL)
        {
            self.last = Some(Instant::now());
            tracing::warn!(error = %error, "webhooks: {what} failed; retrying");
        }
    }
}

async fn run(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let mut in_flight = InFlight::default();
    let mut errors = ErrorLog::default();
    let mut poll = tokio::time::interval(inner.ctx.settings.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Events this server's store commits wake the worker at once; the poll
    // finds due retries, usage events and other servers' events.
    let raised = inner.ctx.store.events_raised();
    // Whether the last claim left due deliveries behind (it was full, or cut
    // short by the caps): a freed slot then claims again at once.
    let mut backlog = false;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = poll.tick() => {
                if let Some(left) = round(&inner, &mut in_flight, &mut errors, true).await {
                    backlog = left;
                }
            }
            () = raised.notified() => {
                if let Some(left) = round(&inner, &mut in_flight, &mut errors, false).await {
                    backlog = left;
                }
            }
            Some(done) = in_flight.tasks.join_next_with_id() => {
                let task = match done {
                    Ok((task, ())) => task,
                    Err(e) => {
                        // A panicked attempt: its lease expires and it is retried.
                        tracing::error!(error = %e, "webhooks: a delivery task failed");
                        e.id()
                    }
                };
                in_flight.finished(task);
                if backlog {
                    backlog = claim(&inner, &mut in_flight, &mut errors).await;
                }
            }
        }
    }
    // Stop claiming; let what is in flight finish and be recorded.
    while in_flight.tasks.join_next().await.is_some() {}
}

/// One round of the worker: builds the usage events that are due (on a poll),
/// reads whether deliveries are pending and, if so, claims; returns whether
/// due work may have been left behind, `None` if it did not claim.
async fn round(
    inner: &Arc<Inner>,
    in_flight: &mut InFlight,
    errors: &mut ErrorLog,
    poll: bool,
) -> Option<bool> {
    let now = inner.ctx.clock.now();
    if poll && let Err(e) = inner.ctx.store.build_usage_events(now).await {
        errors.report("building usage events", &e);
    }
    // A read first: an idle server asks the writer for nothing.
    let pending = match inner.ctx.store.delivery_stats(now).await {
        Ok(stats) => {
            inner.ctx.metrics.set_webhook_backlog(
                stats.pending,
                stats.oldest_pending_created_at.map(|at| age(now, at)),
            );
            stats.pending > 0
        }
        Err(e) => {
            errors.report("reading delivery stats", &e);
            true
        }
    };
    if pending {
        Some(claim(inner, in_flight, errors).await)
    } else {
        None
    }
}

/// Leases due deliveries while there is room and starts an attempt for each;
/// returns whether due work may have been left behind.
async fn claim(inner: &Arc<Inner>, in_flight: &mut InFlight, errors: &mut ErrorLog) -> bool {
    let settings = &inner.ctx.settings;
    let per_webhook = settings.per_webhook_concurrency.max(1);
    let lease = settings.lease();
    for _ in 0..MAX_CLAIMS_PER_ROUND {
        let free = settings
            .max_concurrency
            .max(1)
            .saturating_sub(in_flight.total());
        if free == 0 {
            return true;
        }
        let busy: Vec<WebhookId> = in_flight
            .per_webhook
            .iter()
            .filter(|(_, n)| **n >= per_webhook)
            .map(|(id, _)| id.clone())
            .collect();
        // One claim may give all its rows to one webhook: never more than any
        // webhook not yet at its cap can still take.
        let headroom = in_flight
            .per_webhook
            .values()
            .filter(|n| **n < per_webhook)
            .map(|n| per_webhook - n)
            .min()
            .unwrap_or(per_webhook);
        let limit = free.min(headroom);
        let now = inner.ctx.clock.now();
        let claimed = match inner
            .ctx
            .store
            .claim_deliveries(now, limit, lease, &busy)
            .await
        {
            Ok(claimed) => claimed,
            Err(e) => {
                errors.report("claiming deliveries", &e);
                return false;
            }
        };
        let full = claimed.len() >= limit;
        for delivery in claimed {
            in_flight.start(inner, delivery);
        }
        if !full {
            return !busy.is_empty();
        }
    }
    true
}

/// One attempt of `delivery`, its outcome recorded in the store and the metrics.
async fn deliver(inner: &Inner, delivery: Delivery) {
    let ctx = &inner.ctx;
    let outcome = attempt(inner, &delivery).await;
    let now = ctx.clock.now();
    let (result, counted) = match outcome {
        Ok(()) => (DeliveryResult::Delivered, DeliveryOutcome::Delivered),
        Err(error) => {
            let next_attempt_at =
                next_attempt_at(delivery.first_attempt_due, delivery.attempt, now);
            let give_up = next_attempt_at.is_none();
            tracing::debug!(
                webhook = %delivery.webhook_id,
                event = %delivery.event.id,
                attempt = delivery.attempt,
                error = %error,
                given_up = give_up,
                "webhook delivery failed"
            );
            let counted = if give_up {
                tracing::warn!(
                    webhook = %delivery.webhook_id,
                    event = %delivery.event.id,
                    attempts = delivery.attempt,
                    error = %error,
                    "webhook delivery given up after 72 h of failures"
                );
                DeliveryOutcome::GivenUp
            } else {
                DeliveryOutcome::Failed
            };
            let result = DeliveryResult::Failed {
                error,
                next_attempt_at,
            };
            (result, counted)
        }
    };
    ctx.metrics.webhook_delivery(counted);
    if let Err(e) = ctx.store.finish_delivery(delivery.id, result, now).await {
        // The lease expires and the delivery is attempted again: at least once.
        tracing::warn!(error = %e, webhook = %delivery.webhook_id, event = %delivery.event.id, "webhooks: cannot record a delivery's outcome");
    }
}

/// POSTs the signed event; `Ok` for any 2xx answer, else what went wrong.
async fn attempt(inner: &Inner, delivery: &Delivery) -> Result<(), String> {
    let ctx = &inner.ctx;
    let url = reqwest::Url::parse(&delivery.endpoint)
        .map_err(|e| format!("the endpoint is not a valid URL: {e}"))?;
    // The resolver sees names only; a literal address is checked here.
    endpoint::check_url(&url, ctx.settings.allow_private_networks).map_err(|e| e.to_string())?;
    let body = sign_event(&ctx.key, &delivery.event, &ctx.issuer, ctx.clock.now())
        .map_err(|e| format!("cannot sign the event: {e}"))?;
    let response = inner
        .http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
        .header(
            WEBHOOK_ID_HEADER,
            webhook_message_id(&delivery.webhook_id, &delivery.event.id),
        )
        .body(body)
        .send()
        .await
        .map_err(|e| describe(&e, ctx.settings.attempt_timeout))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the endpoint answered {status}"))
    }
}

/// A request error as kept in the store: its causes, never the URL (which may
/// hold a secret), at most [`MAX_ERROR_LEN`] bytes.
fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    let mut text = if error.is_timeout() {
        format!("no answer within {} s", timeout.as_secs_f64())
    } else {
        let mut text = if error.is_connect() {
            "cannot connect".to_owned()
        } else if error.is_redirect() {
            "redirect refused".to_owned()
        } else {
            "request failed".to_owned()
        };
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    };
    if text.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The time from `since` to `now`, zero if negative.
fn age(now: Timestamp, since: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(since)).unwrap_or_default()
}
