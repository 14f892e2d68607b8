//! The revoked M2M clients whose tokens a server refuses (`docs/tokens.md`: within 60 s).
//!
//! Tokens are verified without touching storage, so a revocation made elsewhere
//! (the CLI on the data directory, another server on a shared database) reaches
//! this server by polling: a background task asks the store for clients revoked
//! since its previous poll every `interval` and adds them to an in-memory set the
//! auth middleware consults. Revocation is permanent, so the set only grows, and
//! it holds revoked *registered* clients only: tokens for other `azp`s (those of
//! `kinde-meter token`) are unaffected.

use std::{
    collections::HashSet,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use jiff::{SignedDuration, Timestamp};
use kinde_meter_store::{Store, StoreError};
use tokio::task::JoinHandle;

/// How often a server polls for revocations unless configured otherwise: well
/// inside the 60 s the contract allows, cheap for the store (one indexed query).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(15);

/// How far each poll reaches back before the previous one started. `revoked_at`
/// is the revoking process's clock and becomes visible only at its commit, so
/// windows overlap by more than commit delays and clock skew between the
/// machines sharing a database; re-reading a few rows costs nothing.
const POLL_OVERLAP: SignedDuration = SignedDuration::from_mins(5);

/// The set of revoked client ids, and where the next poll starts.
#[derive(Debug, Default)]
pub struct RevokedClients {
    ids: RwLock<HashSet<String>>,
    /// Start of the last successful poll; `None` until the first, which reads all.
    polled_at: tokio::sync::Mutex<Option<Timestamp>>,
}

impl RevokedClients {
    /// An empty set that has never polled.
    pub fn new() -> RevokedClients {
        RevokedClients::default()
    }

    /// Whether `client_id` is a revoked registered client.
    pub fn contains(&self, client_id: &str) -> bool {
        self.ids
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(client_id)
    }

    /// Adds a client this server revoked itself, so it is refused at once rather
    /// than at the next poll.
    pub fn insert(&self, client_id: impl Into<String>) {
        self.ids
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(client_id.into());
    }

    /// How many revoked clients are known.
    pub fn len(&self) -> usize {
        self.ids
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no revoked client is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Polls the store: every revoked client the first time, afterwards those
    /// revoked since shortly before the previous poll. Returns how many clients
    /// the poll reported. On failure the next poll reaches back as far again.
    pub async fn refresh(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let mut polled_at = self.polled_at.lock().await;
        let started = Timestamp::now();
        let since = polled_at
            .and_then(|at| at.checked_sub(POLL_OVERLAP).ok())
            .unwrap_or(Timestamp::MIN);
        let revoked = store.revoked_clients_since(since).await?;
        let reported = revoked.len();
        if reported > 0 {
            let mut ids = self.ids.write().unwrap_or_else(PoisonError::into_inner);
            ids.extend(revoked.into_iter().map(|c| c.id));
        }
        *polled_at = Some(started);
        Ok(reported)
    }
}

/// The background poll; stops when dropped.
#[derive(Debug)]
pub struct Refresher(JoinHandle<()>);

impl Drop for Refresher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts polling `store` into `revoked` every `interval` (at least 10 ms). A
/// failed poll is logged and retried at the next tick.
pub fn spawn_refresher(
    revoked: Arc<RevokedClients>,
    store: Arc<dyn Store>,
    interval: Duration,
) -> Refresher {
    let interval = interval.max(Duration::from_millis(10));
    Refresher(tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match revoked.refresh(store.as_ref()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(reported = n, "revoked clients refreshed"),
                Err(e) => tracing::warn!(error = %e, "cannot refresh the revoked clients"),
            }
        }
    }))
}
