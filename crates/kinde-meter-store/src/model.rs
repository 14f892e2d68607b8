//! The values that cross the [`crate::Store`] trait.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kinde_meter_core::{
    ErrorCode,
    agreement::Agreement,
    catalog::Plan,
    idempotency::{Fingerprint, IdempotencyKey},
    ids::{AgreementId, CustomerId, FeatureCode, PlanCode},
    period::Period,
    request::UsageRecord,
    value::UsageTotal,
    webhook::{Event, EventType, WebhookId},
};

/// Storage could not do what was asked; nothing was stored. Answered with 503.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable or failed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The write queue is full.
    #[error("the write queue is full")]
    QueueFull,
    /// The store is shutting down.
    #[error("the store is shutting down")]
    ShuttingDown,
}

/// Tuning shared by every backend.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// How long after its end a period still takes usage (`docs/billing.md`, default 0).
    pub grace: SignedDuration,
    /// How long idempotency keys are remembered (default 24 h).
    pub idempotency_retention: SignedDuration,
    /// Submissions that may wait for the writer before 503 (bounded memory).
    pub queue_capacity: usize,
    /// Most records committed in one transaction.
    pub max_batch_records: usize,
    /// At most one `customer.meter_usage_updated` event per (agreement, feature)
    /// per this interval (default 10 s).
    pub webhook_usage_interval: SignedDuration,
    /// SQLite: the writer files the records' period order once this many are
    /// unfiled (docs/design.md#record-order; default 256). Larger chunks make
    /// fewer, fuller runs where few aggregates take many records, and make the
    /// commit that files them longer where many take few; the answers are the
    /// same for every size (tests use 1 and small sizes).
    pub record_order_chunk: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            grace: SignedDuration::ZERO,
            idempotency_retention: kinde_meter_core::idempotency::DEFAULT_RETENTION,
            queue_capacity: 4096,
            max_batch_records: 1000,
            webhook_usage_interval: SignedDuration::from_secs(10),
            record_order_chunk: 256,
        }
    }
}

/// A request to create an agreement.
#[derive(Debug, Clone)]
pub struct NewAgreement {
    /// The customer.
    pub customer_id: CustomerId,
    /// The plan, which must be in the store's catalog.
    pub plan_code: PlanCode,
    /// Creation time and anchor.
    pub now: Timestamp,
    /// Randomness for the id (the store does not pick it, so tests can).
    pub id_random: [u8; 10],
}

/// Why an agreement could not be created.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CreateAgreementError {
    /// No plan with that code.
    #[error("no plan with that code")]
    PlanNotFound,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a page of agreements starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// The newest agreements.
    First,
    /// The page after this agreement (older ones).
    StartingAfter(AgreementId),
    /// The page just before this agreement (newer ones).
    EndingBefore(AgreementId),
}

/// A query for a customer's agreements.
#[derive(Debug, Clone)]
pub struct AgreementQuery {
    /// Whose agreements.
    pub customer_id: CustomerId,
    /// Only agreements whose plan has this feature.
    pub feature_code: Option<FeatureCode>,
    /// Page size, 1 to 500.
    pub page_size: usize,
    /// Where the page starts.
    pub cursor: Cursor,
    /// The time that decides `current_period_*` and activity.
    pub now: Timestamp,
}

/// A page of agreements, newest first.
#[derive(Debug, Clone)]
pub struct AgreementPage {
    /// The agreements with their plans.
    pub agreements: Vec<AgreementView>,
    /// Whether more agreements lie beyond the page in the direction of travel
    /// (older for `First`/`StartingAfter`, newer for `EndingBefore`).
    pub has_more: bool,
}

/// An agreement with its plan as the store knows it.
#[derive(Debug, Clone)]
pub struct AgreementView {
    /// The agreement.
    pub agreement: Agreement,
    /// Its plan, `None` if the plan is no longer in the store.
    pub plan: Option<Plan>,
}

/// Why agreements could not be listed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ListAgreementsError {
    /// The cursor names no agreement of the customer.
    #[error("unknown agreement in the paging cursor")]
    UnknownCursor,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An idempotency key with the fingerprint of the request that carries it.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    /// The client's key.
    pub key: IdempotencyKey,
    /// The request's fingerprint.
    pub fingerprint: Fingerprint,
}

/// Whether a submission came from the single-record endpoint or the batch one.
/// It decides when the outcome is remembered for the idempotency key: a single
/// record when stored (its answer was 200) or refused by an entitlement limit
/// (`ENTITLEMENT_LIMIT_EXCEEDED`, replayed as the same refusal), a batch always
/// (always 200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmissionKind {
    /// `POST /api/v1/billing/meter_usage`.
    Single,
    /// `POST /api/v1/billing/meter_usage/batch`.
    Batch,
}

/// Records to store, as one unit of idempotency.
#[derive(Debug, Clone)]
pub struct UsageSubmission {
    /// The caller (`azp`), the namespace of its idempotency keys.
    pub client_id: String,
    /// The `Idempotency-Key`, if sent.
    pub idempotency: Option<IdempotencyClaim>,
    /// Parsed records, or the failure the HTTP edge already found (kept so a
    /// replayed batch answers exactly as the first time).
    pub records: Vec<Result<UsageRecord, RecordFailure>>,
    /// Time of receipt.
    pub received_at: Timestamp,
    /// Single or batch.
    pub kind: SubmissionKind,
}

/// Why one record was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFailure {
    /// The error code.
    pub code: ErrorCode,
    /// A message naming the field or the problem.
    pub message: String,
}

impl RecordFailure {
    /// A failure with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RecordFailure {
        RecordFailure {
            code,
            message: message.into(),
        }
    }
}

/// One record's fate: stored, or why not.
pub type RecordResult = Result<(), RecordFailure>;

/// What happened to a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmissionOutcome {
    /// Processed now; one result per record, in order.
    Processed(Vec<RecordResult>),
    /// The key was seen with the same request: the original results, nothing new stored.
    Replayed(Vec<RecordResult>),
    /// The key was seen with another request: nothing stored.
    KeyReused,
}

/// A usage read.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    /// The agreement.
    pub agreement_id: AgreementId,
    /// One feature, or every metered feature of the plan.
    pub feature_code: Option<FeatureCode>,
    /// An instant in the period to read.
    pub at: Timestamp,
}

/// Usage of an agreement's metered features in one period.
#[derive(Debug, Clone)]
pub struct UsageReport {
    /// The period read.
    pub period: Period,
    /// One entry per metered feature asked for, in catalog order.
    pub usage: Vec<FeatureUsage>,
}

/// Usage of one feature in one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureUsage {
    /// The feature.
    pub feature_code: FeatureCode,
    /// Its usage.
    pub value: UsageTotal,
    /// Records assigned to the period.
    pub record_count: u64,
    /// Receipt time of the latest of them.
    pub last_recorded_at: Option<Timestamp>,
}

/// A customer's active agreement at an instant, its plan and the usage of the
/// plan's metered features in the period containing that instant (what the
/// entitlements listing and the usage check answer from).
#[derive(Debug, Clone)]
pub struct CustomerEntitlements {
    /// The newest agreement of the customer active at the instant (shared,
    /// as the plan: the SQLite store answers it from a read connection's
    /// remembered agreements without a copy).
    pub agreement: Arc<Agreement>,
    /// Its plan: every feature, metered or not, in catalog order (shared:
    /// the SQLite store answers it from its plan cache without a copy).
    pub plan: Arc<Plan>,
    /// Usage of the plan's metered features (or of the one asked for) in the
    /// period containing the instant, in catalog order, read from the
    /// maintained aggregates.
    pub usage: UsageReport,
}

/// Why usage could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadUsageError {
    /// No agreement with that id.
    #[error("no agreement with that id")]
    AgreementNotFound,
    /// The plan has no such feature.
    #[error("the agreement's plan has no such feature")]
    FeatureNotFound,
    /// The feature is not metered.
    #[error("the feature is not metered")]
    FeatureNotMetered,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request to register an M2M (client credentials) client.
#[derive(Clone)]
pub struct NewClient {
    /// A human name (`--name`), for listings.
    pub name: String,
    /// The scopes the client may be granted, each without whitespace.
    pub scopes: Vec<String>,
    /// The secret's hash as a PHC string (`$argon2id$…`); the secret itself never
    /// reaches the store.
    pub secret_hash: String,
    /// Creation time.
    pub now: Timestamp,
    /// Randomness for the id (the store does not pick it, so tests can).
    pub id_random: [u8; 16],
}

impl std::fmt::Debug for NewClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewClient")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("secret_hash", &"<redacted>")
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// A registered M2M client, without its secret hash (what listings show).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The client id (`azp` of its tokens): 32 lowercase hex digits, like Kinde's.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The scopes it may be granted.
    pub scopes: Vec<String>,
    /// When it was registered.
    pub created_at: Timestamp,
    /// When it was revoked; a revoked client gets no tokens and its tokens are refused.
    pub revoked_at: Option<Timestamp>,
}

impl Client {
    /// The client id of [`NewClient::id_random`]: its 16 bytes in lowercase hex.
    pub fn id_from_random(random: &[u8; 16]) -> String {
        hex::encode(random)
    }

    /// Whether the client has been revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// A client with the hash of its secret, for the token endpoint to check a
/// presented secret against.
#[derive(Clone)]
pub struct ClientWithSecret {
    /// The client.
    pub client: Client,
    /// The secret's hash as a PHC string.
    pub secret_hash: String,
}

impl std::fmt::Debug for ClientWithSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientWithSecret")
            .field("client", &self.client)
            .field("secret_hash", &"<redacted>")
            .finish()
    }
}

/// A revoked client as [`crate::Store::revoked_clients_since`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedClient {
    /// The client id.
    pub id: String,
    /// When it was revoked.
    pub revoked_at: Timestamp,
}

/// A request to register a webhook.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    /// A human name.
    pub name: String,
    /// The URL deliveries are POSTed to (checked by the caller).
    pub endpoint: String,
    /// An optional description.
    pub description: Option<String>,
    /// The event types it receives.
    pub event_types: Vec<EventType>,
    /// Creation time.
    pub now: Timestamp,
    /// Randomness for the id ([`WebhookId::generate`]; the store does not pick it,
    /// so tests can).
    pub id_random: [u8; 10],
}

/// A registered webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Its id.
    pub id: WebhookId,
    /// Its name.
    pub name: String,
    /// Where deliveries go.
    pub endpoint: String,
    /// Its description.
    pub description: Option<String>,
    /// The event types it receives.
    pub event_types: Vec<EventType>,
    /// When it was registered.
    pub created_on: Timestamp,
}

/// Changes to a webhook; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    /// A new name.
    pub name: Option<String>,
    /// A new description (`Some(None)` clears it).
    pub description: Option<Option<String>>,
    /// New event types (events already fanned out keep their deliveries).
    pub event_types: Option<Vec<EventType>>,
    /// A new endpoint (pending deliveries go to it).
    pub endpoint: Option<String>,
}

/// A webhook with the state of its deliveries (for `kinde-meter webhooks list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookStatus {
    /// The webhook.
    pub webhook: Webhook,
    /// When a delivery to it was last attempted.
    pub last_attempt_at: Option<Timestamp>,
    /// When a delivery to it last succeeded.
    pub last_success_at: Option<Timestamp>,
    /// The error of the last failed attempt, if the last attempt failed.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// Deliveries still to be made (pending, not given up).
    pub pending: u64,
}

/// A delivery's id in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeliveryId(pub i64);

/// One attempt to deliver an event to a webhook, leased to the worker that
/// claimed it ([`crate::Store::claim_deliveries`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Its id, for [`crate::Store::finish_delivery`].
    pub id: DeliveryId,
    /// The webhook.
    pub webhook_id: WebhookId,
    /// The webhook's endpoint now.
    pub endpoint: String,
    /// The event.
    pub event: Event,
    /// Which attempt this is, 1 for the first.
    pub attempt: u32,
    /// When the first attempt was due (retries stop [`GIVE_UP_AFTER`] later).
    ///
    /// [`GIVE_UP_AFTER`]: kinde_meter_core::webhook::GIVE_UP_AFTER
    pub first_attempt_due: Timestamp,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryResult {
    /// The endpoint answered 2xx: done.
    Delivered,
    /// It did not; retry at `next_attempt_at`, or give up when `None`.
    Failed {
        /// What went wrong (status or transport error), shown in listings.
        error: String,
        /// When to try again; `None` gives up.
        next_attempt_at: Option<Timestamp>,
    },
}

/// The outbox at a glance (for `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryStats {
    /// Deliveries not yet made nor given up, plus events not yet fanned out.
    pub pending: u64,
    /// When the oldest of them was created.
    pub oldest_pending_created_at: Option<Timestamp>,
}
