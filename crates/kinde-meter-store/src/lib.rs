//! Storage of kinde-meter behind one trait.
//!
//! [`Store`] is everything the HTTP layer and the CLI may ask of storage; nothing
//! backend-specific leaks above it. Implementations:
//!
//! - [`sqlite::SqliteStore`]: the embedded default, one file in the data directory,
//!   WAL with `synchronous=FULL`, one writer thread with group commit.
//! - PostgreSQL: planned (issue 5), same trait, same contract.
//!
//! The write contract, shared by every implementation: a usage submission is
//! answered only after its transaction has committed; a record, its aggregate
//! update and its idempotency entry commit together or not at all; a failure
//! stores nothing partial.

mod model;
pub mod sqlite;

pub use model::*;

use async_trait::async_trait;
use jiff::Timestamp;
use kinde_meter_core::{agreement::Agreement, catalog::Catalog, ids::AgreementId};

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

    /// Records usage (SPEC §2, §3): idempotency, agreement and feature checks,
    /// period assignment, aggregate update, durable commit, then the answer.
    async fn submit_usage(
        &self,
        submission: UsageSubmission,
    ) -> Result<SubmissionOutcome, StoreError>;

    /// Usage per metered feature for the period containing `query.at`, read from the
    /// maintained aggregates.
    async fn read_usage(&self, query: UsageQuery) -> Result<UsageReport, ReadUsageError>;

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

    /// Stops taking writes, commits everything already queued, and returns when
    /// the last answer has been sent.
    async fn shutdown(&self);
}
