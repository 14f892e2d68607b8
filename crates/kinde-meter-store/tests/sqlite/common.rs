//! Helpers shared by the SQLite store tests.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use jiff::Timestamp;
use kinde_meter_core::{
    aggregate::MeterType,
    agreement::Agreement,
    catalog::Catalog,
    idempotency::{Fingerprint, IdempotencyKey},
    ids::{AgreementId, CustomerId, FeatureCode, PlanCode},
    request::UsageRecord,
    value::MeterValue,
};
use kinde_meter_store::{
    AgreementQuery, Cursor, FeatureUsage, IdempotencyClaim, NewAgreement, RecordResult, Store,
    StoreConfig, SubmissionKind, SubmissionOutcome, UsageQuery, UsageSubmission,
    sqlite::SqliteStore,
};

/// Two monthly plans: `pro` (two metered features and one that is not) and `basic`.
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
"#;

pub fn catalog() -> Catalog {
    Catalog::parse(CATALOG, "test catalog").unwrap()
}

pub fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Opens a store in `dir` with `config` and loads the test catalog.
pub async fn open_with(dir: &Path, config: StoreConfig) -> SqliteStore {
    let store = SqliteStore::open(dir, config).unwrap();
    store.load_catalog(&catalog()).await.unwrap();
    store
}

pub async fn open(dir: &Path) -> SqliteStore {
    open_with(dir, StoreConfig::default()).await
}

pub async fn create(
    store: &impl Store,
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
pub async fn submit(store: &impl Store, record: UsageRecord, received: &str) -> RecordResult {
    match store.submit_usage(single(record, received)).await.unwrap() {
        SubmissionOutcome::Processed(mut results) if results.len() == 1 => results.remove(0),
        other => panic!("expected one processed result, got {other:?}"),
    }
}

/// A claim on `key` whose fingerprint is that of `record`.
pub fn claim(key: &str, record: &UsageRecord) -> IdempotencyClaim {
    IdempotencyClaim {
        key: IdempotencyKey::parse(key).unwrap(),
        fingerprint: record.fingerprint(),
    }
}

/// A claim on `key` with an arbitrary fingerprint.
pub fn claim_of(key: &str, fingerprint: &str) -> IdempotencyClaim {
    IdempotencyClaim {
        key: IdempotencyKey::parse(key).unwrap(),
        fingerprint: Fingerprint::of([fingerprint]),
    }
}

pub async fn usage(
    store: &impl Store,
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
    store: &impl Store,
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

/// A second connection to the store's database, holding SQLite's write lock until
/// `ROLLBACK`: it stands for another process writing, and holds the writer
/// still so that jobs pile up in its queue.
pub fn lock_database(store: &SqliteStore) -> rusqlite::Connection {
    let conn = raw(store);
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    conn
}

/// A plain connection to the store's database.
pub fn raw(store: &SqliteStore) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(store.database_path()).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

pub fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}
