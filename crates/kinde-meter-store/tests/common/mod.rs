//! Helpers shared by the store tests, and the backends they run against.
//!
//! Contract tests (`tests/contract.rs`) are written once, as `async fn
//! name(b: Backend)`, and [`contract_tests!`] runs each against SQLite (in a
//! temporary directory) and PostgreSQL (in a scratch schema of its own on the
//! server named by `KINDE_METER_TEST_DATABASE_URL`; skipped when it is unset).
#![allow(dead_code, unused_macros)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use kinde_meter_core::{
    aggregate::MeterType,
    agreement::Agreement,
    catalog::Catalog,
    idempotency::{Fingerprint, IdempotencyKey},
    ids::{AgreementId, CustomerId, FeatureCode, PlanCode},
    request::UsageRecord,
    value::MeterValue,
    webhook::{Event, EventId, WebhookId},
};
use kinde_meter_store::{
    AgreementPage, AgreementQuery, Client, ClientWithSecret, CreateAgreementError, Cursor,
    CustomerEntitlements, Delivery, DeliveryId, DeliveryResult, DeliveryStats, FeatureUsage,
    IdempotencyClaim, IssuerStore, ListAgreementsError, NewAgreement, NewClient, NewWebhook,
    ReadUsageError, RecordResult, RevokedClient, Store, StoreConfig, StoreError, SubmissionKind,
    SubmissionOutcome, UsageQuery, UsageReport, UsageSubmission, Webhook, WebhookPatch,
    WebhookStatus, WriterStats,
    postgres::{PgSettings, PgStore, scratch::ScratchSchema},
    sqlite::SqliteStore,
};

/// The environment variable naming the PostgreSQL server tests may use
/// (`postgres://user@host:port/database`); PostgreSQL tests skip without it.
pub const DATABASE_URL_VAR: &str = "KINDE_METER_TEST_DATABASE_URL";

/// Where a test's store lives.
#[derive(Debug, Clone)]
pub enum Backend {
    /// SQLite in a fresh temporary directory.
    Sqlite,
    /// PostgreSQL at this URL, in a fresh scratch schema.
    Postgres(String),
}

impl Backend {
    /// PostgreSQL, if the environment names a server.
    pub fn postgres() -> Option<Backend> {
        database_url().map(Backend::Postgres)
    }
}

/// The PostgreSQL server tests may use, if any.
pub fn database_url() -> Option<String> {
    std::env::var(DATABASE_URL_VAR)
        .ok()
        .filter(|u| !u.is_empty())
}

/// Says that a PostgreSQL test did not run.
pub fn skip(test: &str) {
    eprintln!("{test}: skipped, {DATABASE_URL_VAR} is not set");
}

/// Runs each named `async fn(Backend)` as two tests, `on_sqlite::NAME` and
/// `on_postgres::NAME`.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match crate::common::Backend::postgres() {
                        Some(backend) => super::$name(backend).await,
                        None => crate::common::skip(stringify!($name)),
                    }
                }
            )*
        }
    };
}

/// What keeps a test's storage alive: its directory or its schema.
#[derive(Clone)]
pub enum Place {
    Dir(Arc<tempfile::TempDir>),
    Schema(Arc<ScratchSchema>),
}

impl Place {
    /// Fresh, empty storage of `backend`.
    pub async fn fresh(backend: &Backend) -> Place {
        match backend {
            Backend::Sqlite => Place::Dir(Arc::new(tempfile::tempdir().unwrap())),
            Backend::Postgres(url) => {
                Place::Schema(Arc::new(ScratchSchema::create(url).await.unwrap()))
            }
        }
    }
}

enum Inner {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// A store under test. It implements [`Store`] by delegation, and keeps its
/// directory or schema until the last store on it is dropped.
pub struct TestStore {
    inner: Inner,
    pub place: Place,
}

impl TestStore {
    /// A store on fresh storage of `backend`, with the test catalog loaded.
    pub async fn fresh(backend: &Backend, config: StoreConfig) -> TestStore {
        let store = TestStore::on(&Place::fresh(backend).await, config).await;
        store.load_catalog(&catalog()).await.unwrap();
        store
    }

    /// Another store on the same storage, as a second server or process would
    /// open it (no catalog loaded).
    pub async fn on(place: &Place, config: StoreConfig) -> TestStore {
        let inner = match place {
            Place::Dir(dir) => Inner::Sqlite(SqliteStore::open(dir.path(), config).unwrap()),
            Place::Schema(schema) => Inner::Postgres(
                PgStore::connect(schema.url(), schema.settings(), config)
                    .await
                    .unwrap(),
            ),
        };
        TestStore {
            inner,
            place: place.clone(),
        }
    }

    /// A PostgreSQL store on `place` with other settings than the scratch
    /// schema's defaults.
    pub async fn on_with(place: &Place, config: StoreConfig, settings: PgSettings) -> TestStore {
        let Place::Schema(schema) = place else {
            panic!("settings are for PostgreSQL");
        };
        let store = PgStore::connect(schema.url(), settings, config)
            .await
            .unwrap();
        TestStore {
            inner: Inner::Postgres(store),
            place: place.clone(),
        }
    }

    /// The scratch schema of a PostgreSQL store.
    pub fn schema(&self) -> &ScratchSchema {
        match &self.place {
            Place::Schema(schema) => schema,
            Place::Dir(_) => panic!("not a PostgreSQL store"),
        }
    }

    /// Another store on the same storage with the default configuration.
    pub async fn reopen(&self) -> TestStore {
        TestStore::on(&self.place, StoreConfig::default()).await
    }

    /// [`TestStore::reopen`] once the schema is marked as at `version` (what
    /// the newer versions added already undone): the store applies the
    /// migrations since, up to this build's current version.
    pub async fn reopened_at_version(&self, version: i64) -> TestStore {
        self.execute(&format!(
            "DELETE FROM schema_migrations WHERE version > {version}"
        ))
        .await;
        let store = self.reopen().await;
        let current = match &self.place {
            Place::Dir(_) => kinde_meter_store::sqlite::CURRENT_VERSION,
            Place::Schema(_) => i64::from(kinde_meter_store::postgres::CURRENT_VERSION),
        };
        assert_eq!(
            store
                .count("SELECT max(version) FROM schema_migrations")
                .await,
            current
        );
        store
    }

    /// A store on fresh storage of `backend` with `config` and the test
    /// catalog, whose operations may wait long (PostgreSQL: 60 s), so that a
    /// slow machine cannot turn a lock a test holds into a 503 before the test
    /// lets go.
    pub async fn patient(backend: &Backend, config: StoreConfig) -> TestStore {
        let place = Place::fresh(backend).await;
        let store = match &place {
            Place::Dir(_) => TestStore::on(&place, config).await,
            Place::Schema(schema) => {
                let settings = PgSettings {
                    operation_timeout: Duration::from_secs(60),
                    ..schema.settings()
                };
                TestStore::on_with(&place, config, settings).await
            }
        };
        store.load_catalog(&catalog()).await.unwrap();
        store
    }

    /// Another session holding the lock every usage batch needs, until
    /// [`HeldWrites::release`]: it stands for another process (SQLite) or
    /// another server's long transaction (PostgreSQL), and holds the writer
    /// still so that jobs pile up in its queue.
    pub async fn hold_writes(&self) -> HeldWrites {
        match &self.place {
            Place::Dir(dir) => {
                let conn = sqlite_conn(dir.path());
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                HeldWrites::Sqlite(conn)
            }
            Place::Schema(schema) => {
                let conn = schema.connect().await.unwrap();
                conn.batch_execute("BEGIN; LOCK TABLE usage_aggregates IN EXCLUSIVE MODE")
                    .await
                    .unwrap();
                HeldWrites::Postgres(conn)
            }
        }
    }

    /// Makes the database refuse to insert a usage record of value 13: a
    /// stand-in for a disk or database error in the middle of a batch.
    pub async fn fail_inserts_of_13(&self) {
        match &self.place {
            Place::Dir(dir) => sqlite_conn(dir.path())
                .execute_batch(
                    "CREATE TRIGGER fail_13 BEFORE INSERT ON usage_records WHEN NEW.value = '13'
                     BEGIN SELECT RAISE(ABORT, 'simulated failure'); END",
                )
                .unwrap(),
            Place::Schema(schema) => schema
                .connect()
                .await
                .unwrap()
                .batch_execute(
                    "CREATE FUNCTION fail_13() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN
                         IF NEW.value = 13 THEN RAISE EXCEPTION 'simulated failure'; END IF;
                         RETURN NEW;
                     END $$;
                     CREATE TRIGGER fail_13 BEFORE INSERT ON usage_records
                         FOR EACH ROW EXECUTE FUNCTION fail_13();",
                )
                .await
                .unwrap(),
        }
    }

    /// The first column of the first row of `sql` (portable SQL), as an integer.
    pub async fn count(&self, sql: &str) -> i64 {
        match &self.place {
            Place::Dir(dir) => {
                let conn = sqlite_conn(dir.path());
                conn.query_row(sql, [], |r| r.get(0)).unwrap()
            }
            Place::Schema(schema) => {
                let conn = schema.connect().await.unwrap();
                let row = conn.query_one(sql, &[]).await.unwrap();
                // count(*) is bigint, max(integer) integer.
                row.try_get::<_, i64>(0)
                    .unwrap_or_else(|_| i64::from(row.get::<_, i32>(0)))
            }
        }
    }

    /// Runs `sql` (portable SQL, no parameters) behind the store's back; returns
    /// the rows it changed.
    pub async fn execute(&self, sql: &str) -> u64 {
        match &self.place {
            Place::Dir(dir) => sqlite_conn(dir.path()).execute(sql, []).unwrap() as u64,
            Place::Schema(schema) => schema
                .connect()
                .await
                .unwrap()
                .execute(sql, &[])
                .await
                .unwrap(),
        }
    }

    fn store(&self) -> &dyn Store {
        match &self.inner {
            Inner::Sqlite(s) => s,
            Inner::Postgres(s) => s,
        }
    }
}

/// A session of [`TestStore::hold_writes`].
pub enum HeldWrites {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl HeldWrites {
    /// Rolls back, letting the writer go on.
    pub async fn release(self) {
        match self {
            HeldWrites::Sqlite(conn) => conn.execute_batch("ROLLBACK").unwrap(),
            HeldWrites::Postgres(conn) => conn.batch_execute("ROLLBACK").await.unwrap(),
        }
    }
}

fn sqlite_conn(dir: &std::path::Path) -> rusqlite::Connection {
    let conn =
        rusqlite::Connection::open(dir.join(kinde_meter_store::sqlite::DATABASE_FILE)).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

/// A fresh store of `backend` with the test catalog and the default configuration.
pub async fn open(backend: &Backend) -> TestStore {
    TestStore::fresh(backend, StoreConfig::default()).await
}

#[async_trait]
impl Store for TestStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.store().ping().await
    }
    async fn load_catalog(&self, catalog: &Catalog) -> Result<(), StoreError> {
        self.store().load_catalog(catalog).await
    }
    async fn catalog(&self) -> Result<Catalog, StoreError> {
        self.store().catalog().await
    }
    async fn create_agreement(&self, new: NewAgreement) -> Result<Agreement, CreateAgreementError> {
        self.store().create_agreement(new).await
    }
    async fn agreement(&self, id: &AgreementId) -> Result<Option<Agreement>, StoreError> {
        self.store().agreement(id).await
    }
    async fn list_agreements(
        &self,
        query: AgreementQuery,
    ) -> Result<AgreementPage, ListAgreementsError> {
        self.store().list_agreements(query).await
    }
    async fn submit_usage(
        &self,
        submission: UsageSubmission,
    ) -> Result<SubmissionOutcome, StoreError> {
        self.store().submit_usage(submission).await
    }
    async fn read_usage(&self, query: UsageQuery) -> Result<UsageReport, ReadUsageError> {
        self.store().read_usage(query).await
    }
    async fn export_usage(
        &self,
        query: kinde_meter_store::ExportQuery,
    ) -> Result<kinde_meter_store::ExportPage, StoreError> {
        self.store().export_usage(query).await
    }
    async fn list_customers(
        &self,
        query: kinde_meter_store::CustomerQuery,
    ) -> Result<kinde_meter_store::CustomerPage, StoreError> {
        self.store().list_customers(query).await
    }
    async fn latest_usage_records(
        &self,
        query: kinde_meter_store::RecordsQuery,
    ) -> Result<Vec<kinde_meter_store::StoredUsageRecord>, ReadUsageError> {
        self.store().latest_usage_records(query).await
    }
    async fn customer_entitlements(
        &self,
        customer_id: &CustomerId,
        now: Timestamp,
        only: Option<&FeatureCode>,
    ) -> Result<Option<CustomerEntitlements>, StoreError> {
        self.store()
            .customer_entitlements(customer_id, now, only)
            .await
    }
    async fn create_client(&self, new: NewClient) -> Result<Client, StoreError> {
        self.store().create_client(new).await
    }
    async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        self.store().list_clients().await
    }
    async fn client(&self, id: &str) -> Result<Option<ClientWithSecret>, StoreError> {
        self.store().client(id).await
    }
    async fn revoke_client(&self, id: &str, now: Timestamp) -> Result<Option<Client>, StoreError> {
        self.store().revoke_client(id, now).await
    }
    async fn revoked_clients_since(
        &self,
        since: Timestamp,
    ) -> Result<Vec<RevokedClient>, StoreError> {
        self.store().revoked_clients_since(since).await
    }
    async fn shutdown(&self) {
        self.store().shutdown().await
    }
    async fn create_webhook(&self, new: NewWebhook) -> Result<Webhook, StoreError> {
        self.store().create_webhook(new).await
    }
    async fn list_webhooks(&self) -> Result<Vec<WebhookStatus>, StoreError> {
        self.store().list_webhooks().await
    }
    async fn update_webhook(
        &self,
        id: &WebhookId,
        patch: WebhookPatch,
    ) -> Result<Option<Webhook>, StoreError> {
        self.store().update_webhook(id, patch).await
    }
    async fn delete_webhook(&self, id: &WebhookId) -> Result<bool, StoreError> {
        self.store().delete_webhook(id).await
    }
    async fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        self.store().event(id).await
    }
    async fn build_usage_events(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.store().build_usage_events(now).await
    }
    async fn claim_deliveries(
        &self,
        now: Timestamp,
        limit: usize,
        lease: SignedDuration,
        busy: &[WebhookId],
    ) -> Result<Vec<Delivery>, StoreError> {
        self.store().claim_deliveries(now, limit, lease, busy).await
    }
    async fn finish_delivery(
        &self,
        id: DeliveryId,
        result: DeliveryResult,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.store().finish_delivery(id, result, now).await
    }
    async fn delivery_stats(&self, now: Timestamp) -> Result<DeliveryStats, StoreError> {
        self.store().delivery_stats(now).await
    }
    fn issuer(&self) -> Option<&dyn IssuerStore> {
        self.store().issuer()
    }
    fn writer_stats(&self) -> WriterStats {
        self.store().writer_stats()
    }
    fn queued_writes(&self) -> usize {
        self.store().queued_writes()
    }
    fn events_raised(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.store().events_raised()
    }
}

/// Three monthly plans: `pro` (two metered features and one that is not),
/// `basic`, and `capped`, whose features carry every entitlement term: `calls`
/// has a hard limit of 100, `soft` a limit of 100 not enforced.
pub const CATALOG: &str = r#"
[[plans]]
code = "pro"
name = "Pro"
interval = "month"
group = "saas"

[[plans.features]]
code = "api_calls"
name = "API calls"
metered = true
unit_amount = 2
limit_max = 1000

[[plans.features]]
code = "storage_gb"
metered = true

[[plans.features]]
code = "sso"
metered = false

[[plans]]
code = "basic"
interval = "month"

[[plans.features]]
code = "seats"
metered = true

[[plans]]
code = "capped"
name = "Capped"
interval = "month"

[[plans.features]]
code = "calls"
name = "Calls"
metered = true
price_name = "Calls (capped)"
unit_amount = 3
limit_max = 100
limit_min = 1
enforce_limit = true
thresholds = [50, 90, 100]

[[plans.features]]
code = "soft"
metered = true
limit_max = 100

[[plans.features]]
code = "support"
name = "Support"
metered = false
fixed_charge = 1500
"#;

pub fn catalog() -> Catalog {
    Catalog::parse(CATALOG, "test catalog").unwrap()
}

/// [`catalog`] as another server may load it later: `capped` limits `calls`
/// to 50 instead of 100 and has no feature `soft` any more (`softer` instead).
pub fn changed_catalog() -> Catalog {
    let limit = "price_name = \"Calls (capped)\"\nunit_amount = 3\nlimit_max = 100";
    let soft = "code = \"soft\"";
    assert!(CATALOG.contains(limit) && CATALOG.contains(soft));
    let changed = CATALOG
        .replace(limit, &limit.replace("100", "50"))
        .replace(soft, "code = \"softer\"");
    Catalog::parse(&changed, "changed catalog").unwrap()
}

pub fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub async fn create(
    store: &(impl Store + ?Sized),
    customer: &str,
    plan: &str,
    at: &str,
    random: u8,
) -> Agreement {
    store
        .create_agreement(NewAgreement {
            customer_id: CustomerId::parse(customer).unwrap(),
            plan_code: PlanCode::parse(plan).unwrap(),
            now: t(at),
            id_random: [random; 10],
        })
        .await
        .unwrap()
}

pub fn record(
    agreement: &str,
    feature: &str,
    value: &str,
    meter_type: MeterType,
    at: Option<&str>,
) -> UsageRecord {
    UsageRecord {
        agreement_id: AgreementId::parse(agreement).unwrap(),
        feature_code: FeatureCode::parse(feature).unwrap(),
        value: MeterValue::parse(value).unwrap(),
        timestamp: at.map(t),
        meter_type,
    }
}

pub fn delta(agreement: &Agreement, feature: &str, value: &str, at: &str) -> UsageRecord {
    record(
        agreement.id.as_str(),
        feature,
        value,
        MeterType::Delta,
        Some(at),
    )
}

pub fn absolute(agreement: &Agreement, feature: &str, value: &str, at: &str) -> UsageRecord {
    record(
        agreement.id.as_str(),
        feature,
        value,
        MeterType::Absolute,
        Some(at),
    )
}

/// A single-record submission from `client_a` without an idempotency key.
pub fn single(record: UsageRecord, received: &str) -> UsageSubmission {
    UsageSubmission {
        client_id: "client_a".to_owned(),
        idempotency: None,
        records: vec![Ok(record)],
        received_at: t(received),
        kind: SubmissionKind::Single,
    }
}

/// Submits one record and returns its result, which must have been processed.
pub async fn submit(
    store: &(impl Store + ?Sized),
    record: UsageRecord,
    received: &str,
) -> RecordResult {
    match store.submit_usage(single(record, received)).await.unwrap() {
        SubmissionOutcome::Processed(mut results) if results.len() == 1 => results.remove(0),
        other => panic!("expected one processed result, got {other:?}"),
    }
}

/// A claim on `key` whose fingerprint is that of `record`.
pub fn claim(key: &str, record: &UsageRecord) -> IdempotencyClaim {
    IdempotencyClaim {
        key: IdempotencyKey::new(key).unwrap(),
        fingerprint: record.fingerprint(),
    }
}

/// A claim on `key` with an arbitrary fingerprint.
pub fn claim_of(key: &str, fingerprint: &str) -> IdempotencyClaim {
    IdempotencyClaim {
        key: IdempotencyKey::new(key).unwrap(),
        fingerprint: Fingerprint::of([fingerprint]),
    }
}

pub async fn usage(
    store: &(impl Store + ?Sized),
    agreement: &Agreement,
    feature: &str,
    at: &str,
) -> FeatureUsage {
    let mut report = store
        .read_usage(UsageQuery {
            agreement_id: agreement.id.clone(),
            feature_code: Some(FeatureCode::parse(feature).unwrap()),
            at: t(at),
        })
        .await
        .unwrap();
    assert_eq!(report.usage.len(), 1);
    report.usage.remove(0)
}

/// One page of a customer's agreements: their ids and `has_more`.
pub async fn page(
    store: &(impl Store + ?Sized),
    customer: &str,
    feature: Option<&str>,
    page_size: usize,
    cursor: Cursor,
) -> (Vec<AgreementId>, bool) {
    let page = store
        .list_agreements(AgreementQuery {
            customer_id: CustomerId::parse(customer).unwrap(),
            feature_code: feature.map(|f| FeatureCode::parse(f).unwrap()),
            page_size,
            cursor,
            now: t("2025-01-01T00:00:00Z"),
        })
        .await
        .unwrap();
    let ids = page
        .agreements
        .into_iter()
        .map(|v| v.agreement.id)
        .collect();
    (ids, page.has_more)
}

/// Waits (yielding, not sleeping) until `condition` holds; fails after 30 s.
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::task::yield_now().await;
    }
}
