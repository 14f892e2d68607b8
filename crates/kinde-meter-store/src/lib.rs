//! Storage of kinde-meter behind one trait.
//!
//! [`Store`] is everything the HTTP layer and the CLI may ask of storage, and
//! [`open`] the one way to get one ([`StoreLocation`] picks the backend); nothing
//! backend-specific leaks above it. Implementations, each behind a cargo feature:
//!
//! - `sqlite` (default), `sqlite::SqliteStore`: the embedded store, one file in
//!   the data directory, WAL with `synchronous=FULL`, one writer thread with
//!   group commit.
//! - `postgres`, `postgres::PgStore`: PostgreSQL, for several servers sharing
//!   one database; a writer task per server with group commit, row locks taken
//!   in one order across servers, idempotency held by a primary key. It also
//!   holds the built-in issuer's keys and identity ([`IssuerStore`]).
//!
//! `test-support` adds `postgres::scratch` (throwaway schemas) for this
//! workspace's tests; enable it only as a dev-dependency feature.
//!
//! The write contract, shared by every implementation: a usage submission is
//! answered only after its transaction has committed; a record, its aggregate
//! update and its idempotency entry commit together or not at all; a failure
//! stores nothing partial.

// A build without any backend (`--no-default-features`) keeps the trait and
// types; the helpers the backends share are then unused.
#![cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]

mod browse;
mod export;
mod model;
mod new_events;
mod open;
mod outcome;
#[cfg(feature = "postgres")]
pub mod postgres;
mod record_checks;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod remembered;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod writer_queue;

pub use open::{OpenError, PgSettings, StoreLocation, open};

pub use writer_queue::WriterStats;

/// The name of the SQLite store's writer thread, e.g. for a benchmark to account
/// its CPU time (Linux keeps the first 15 bytes of a thread name).
pub const SQLITE_WRITER_THREAD: &str = "kinde-meter-sqlite-writer";

pub use browse::{
    CustomerPage, CustomerQuery, CustomerSummary, MAX_RECORDS, RecordsQuery, StoredUsageRecord,
};
pub use export::{AgreementUsage, ExportPage, ExportQuery, MAX_EXPORT_PAGE};
pub use model::*;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use kinde_meter_core::{
    agreement::Agreement,
    catalog::Catalog,
    ids::{AgreementId, CustomerId, FeatureCode},
    webhook::{Event, EventId, WebhookId},
};

/// Everything kinde-meter stores, behind one interface.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Whether storage answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Loads a catalog into the store: plans with the same code are replaced, plans
    /// absent from it are kept so that older agreements still resolve their plan.
    async fn load_catalog(&self, catalog: &Catalog) -> Result<(), StoreError>;

    /// Every plan the store knows.
    async fn catalog(&self) -> Result<Catalog, StoreError>;

    /// Creates an agreement anchored at `new.now`, ending (`expires_on = now`) the
    /// customer's other active agreements in the same transaction.
    async fn create_agreement(&self, new: NewAgreement) -> Result<Agreement, CreateAgreementError>;

    /// One agreement by id.
    async fn agreement(&self, id: &AgreementId) -> Result<Option<Agreement>, StoreError>;

    /// A page of a customer's agreements, newest first.
    async fn list_agreements(
        &self,
        query: AgreementQuery,
    ) -> Result<AgreementPage, ListAgreementsError>;

    /// Records usage (`docs/api.md`, `docs/billing.md`): idempotency, agreement and feature checks,
    /// period assignment, aggregate update, durable commit, then the answer.
    async fn submit_usage(
        &self,
        submission: UsageSubmission,
    ) -> Result<SubmissionOutcome, StoreError>;

    /// Usage per metered feature for the period containing `query.at`, read from the
    /// maintained aggregates.
    async fn read_usage(&self, query: UsageQuery) -> Result<UsageReport, ReadUsageError>;

    /// One page of the usage export (`docs/import-export.md#export`): up to
    /// `query.page_size` agreements of every customer after `query.after`, in
    /// order of their ids, each with its plan and the usage of the plan's metered
    /// features in the period `query.period` covers for it, read from the
    /// maintained aggregates in one snapshot. Agreements not active in that
    /// period are left out (they still move [`ExportPage::next`]).
    async fn export_usage(&self, query: ExportQuery) -> Result<ExportPage, StoreError>;

    /// A page of the customers that have agreements, in byte order of their ids
    /// (`docs/dashboard.md`).
    async fn list_customers(&self, query: CustomerQuery) -> Result<CustomerPage, StoreError>;

    /// The latest raw records of an agreement (of one metered feature, or of
    /// every metered feature of its plan), at most `query.limit`, newest first:
    /// by billing period, then the instant they count at, then arrival. Errors
    /// as [`Store::read_usage`]'s for an unknown agreement or feature.
    async fn latest_usage_records(
        &self,
        query: RecordsQuery,
    ) -> Result<Vec<StoredUsageRecord>, ReadUsageError>;

    /// A customer's active agreement at `now` (the newest one, if ever several),
    /// its plan (every feature, metered or not, in catalog order) and the usage
    /// of the plan's metered features in the period containing `now`, read from
    /// the maintained aggregates, never by scanning records. `None` when the
    /// customer has no agreement active at `now` (or is unknown), or when the
    /// agreement's plan is no longer in the store.
    ///
    /// `only`: `Some(code)` reads the usage of that one feature (what a usage
    /// check needs; the aggregates of the others are not read), so `usage`
    /// holds it alone, or nothing when it is not a metered feature of the
    /// plan; `None` reads every metered feature's (the listing).
    async fn customer_entitlements(
        &self,
        customer_id: &CustomerId,
        now: Timestamp,
        only: Option<&FeatureCode>,
    ) -> Result<Option<CustomerEntitlements>, StoreError>;

    /// Registers an M2M client with the id derived from `new.id_random`
    /// ([`Client::id_from_random`]).
    async fn create_client(&self, new: NewClient) -> Result<Client, StoreError>;

    /// Every registered client, revoked ones too, oldest first; never secret hashes.
    async fn list_clients(&self) -> Result<Vec<Client>, StoreError>;

    /// One client with its secret hash, for the token endpoint; `None` if no
    /// client has that id.
    async fn client(&self, id: &str) -> Result<Option<ClientWithSecret>, StoreError>;

    /// Revokes a client at `now` (a second revocation keeps the first time);
    /// returns the client as it is afterwards, `None` if no client has that id.
    async fn revoke_client(&self, id: &str, now: Timestamp) -> Result<Option<Client>, StoreError>;

    /// Clients revoked at or after `since`, so that a server can keep its set of
    /// revoked clients current by polling cheaply. `revoked_at` is the revoking
    /// writer's clock and becomes visible at its commit, so a poller should let
    /// each window overlap the previous one by more than commit delay plus clock
    /// skew between writers.
    async fn revoked_clients_since(
        &self,
        since: Timestamp,
    ) -> Result<Vec<RevokedClient>, StoreError>;

    /// Registers a webhook with the id derived from `new.id_random`
    /// ([`WebhookId::generate`]). It receives the events raised after it:
    /// events still waiting to be fanned out go to the other webhooks first.
    async fn create_webhook(&self, new: NewWebhook) -> Result<Webhook, StoreError>;

    /// Every webhook, oldest first, with the state of its deliveries.
    async fn list_webhooks(&self) -> Result<Vec<WebhookStatus>, StoreError>;

    /// Changes a webhook; returns it as it is afterwards, `None` if no webhook has
    /// that id.
    async fn update_webhook(
        &self,
        id: &WebhookId,
        patch: WebhookPatch,
    ) -> Result<Option<Webhook>, StoreError>;

    /// Deletes a webhook and drops its deliveries, pending ones included (an
    /// attempt in flight may still finish, harmlessly); `false` if no webhook
    /// has that id.
    async fn delete_webhook(&self, id: &WebhookId) -> Result<bool, StoreError>;

    /// One event of the outbox by id.
    async fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError>;

    /// Turns aggregates whose usage event is due (at most one per agreement and
    /// feature per [`StoreConfig::webhook_usage_interval`]) into
    /// `customer.meter_usage_updated` events carrying the usage now; returns how
    /// many were written. When no webhook subscribes to the type, the due marks
    /// are only cleared. Cheap when nothing is due (the worker calls it every
    /// second or so).
    async fn build_usage_events(&self, now: Timestamp) -> Result<usize, StoreError>;

    /// Fans out events not yet fanned out to the webhooks subscribed to their type
    /// (one delivery each), then leases up to `limit` due deliveries (due at or
    /// before `now`, not leased or their lease expired), skipping webhooks in
    /// `busy`, each for `lease`, so that no other worker (or server) takes the
    /// same attempt before it is finished or the lease expires. Fanned-out
    /// deliveries are first due at `now` ([`Delivery::first_attempt_due`]); due
    /// deliveries are taken in turns across webhooks (each one's oldest first),
    /// so that one webhook's backlog does not fill a claim. Cheap when there is
    /// nothing to claim.
    async fn claim_deliveries(
        &self,
        now: Timestamp,
        limit: usize,
        lease: SignedDuration,
        busy: &[WebhookId],
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Records how a claimed attempt ended: delivered, retried at
    /// `next_attempt_at` (the next attempt's number one more), or given up
    /// (`next_attempt_at` `None`); and the webhook's delivery state
    /// ([`WebhookStatus`]). A delivery that no longer exists is no error.
    async fn finish_delivery(
        &self,
        id: DeliveryId,
        result: DeliveryResult,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Pending deliveries (and events not yet fanned out while webhooks
    /// exist) and when the oldest of their events was raised (for `/metrics`).
    async fn delivery_stats(&self, now: Timestamp) -> Result<DeliveryStats, StoreError>;

    /// Stops taking writes, commits everything already queued, and returns when
    /// the last answer has been sent.
    async fn shutdown(&self);

    /// The group-commit writer's counters since the store opened (for `/metrics`
    /// and benchmarks).
    fn writer_stats(&self) -> WriterStats;

    /// Writes waiting for the writer right now (0 after shutdown).
    fn queued_writes(&self) -> usize;

    /// Notified (`notify_one`, so a wake-up is kept until it is awaited) after
    /// this store commits events the delivery worker fans out: an agreement's,
    /// a threshold crossed. The worker then claims at once instead of at its
    /// next poll; events of other processes on the same database, and usage
    /// events (built by the worker itself), wait for the poll
    /// (`docs/webhooks.md#isolation`).
    fn events_raised(&self) -> std::sync::Arc<tokio::sync::Notify>;

    /// The built-in issuer's state, when this store holds it: servers sharing a
    /// database share their issuer through it (`docs/tokens.md`). `None` for a store whose
    /// server keeps its signing key and identity in its data directory (SQLite).
    fn issuer(&self) -> Option<&dyn IssuerStore> {
        None
    }
}

/// Makes a new private key (PKCS#8 PEM) for [`IssuerStore::load_or_create_signing_keys`];
/// called only when the store holds no key, off the async threads.
pub type NewKeyPem = Box<dyn FnOnce() -> Result<String, KeyGenerationError> + Send>;

/// Why a [`NewKeyPem`] made no key: the generator's own error.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct KeyGenerationError(Box<dyn std::error::Error + Send + Sync>);

impl KeyGenerationError {
    /// Wraps the generator's error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        KeyGenerationError(Box::new(e))
    }
}

/// The built-in issuer's state kept in a shared store: its RS256 signing keys
/// and its identity (the public URL tokens carry as `iss`).
#[async_trait]
pub trait IssuerStore: Send + Sync {
    /// The private keys (PKCS#8 PEM) in use, newest first: sign with the first,
    /// accept all. When there is none yet, stores the one `generate` makes;
    /// several servers doing this at once end up with one key.
    async fn load_or_create_signing_keys(
        &self,
        generate: NewKeyPem,
    ) -> Result<Vec<String>, StoreError>;

    /// The public URL the servers last started with, if any did.
    async fn public_url(&self) -> Result<Option<String>, StoreError>;

    /// Records the public URL a server starts with; returns the different one
    /// it replaced, if any (servers sharing a database should agree on it).
    async fn set_public_url(&self, url: &str) -> Result<Option<String>, StoreError>;
}
