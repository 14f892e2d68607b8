//! The SQLite store's migrations: databases of earlier versions upgrade in
//! place (the contracts of what they add are in `contract/`, for every backend).

use kinde_meter_store::{NewClient, Store};

use crate::common::*;

/// A well-formed argon2id PHC string (the store only stores it).
const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";

fn new_client(name: &str, scopes: &[&str], random: u8, at: &str) -> NewClient {
    NewClient {
        name: name.to_owned(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        secret_hash: HASH.to_owned(),
        now: t(at),
        id_random: [random; 16],
    }
}

/// Drops the columns version 3 added.
async fn drop_entitlement_terms(store: &TestStore) {
    for column in [
        "price_name",
        "fixed_charge",
        "limit_min",
        "enforce_limit",
        "thresholds",
    ] {
        store
            .execute(&format!("ALTER TABLE plan_features DROP COLUMN {column}"))
            .await;
    }
}

/// Drops what version 4 added (webhooks and their outbox).
async fn drop_webhooks(store: &TestStore) {
    for sql in [
        "DROP TABLE webhook_deliveries",
        "DROP TABLE events",
        "DROP TABLE webhooks",
        "DROP INDEX usage_aggregates_usage_event_due",
        "ALTER TABLE usage_aggregates DROP COLUMN usage_event_due_ns",
        "ALTER TABLE usage_aggregates DROP COLUMN usage_event_last_ns",
    ] {
        store.execute(sql).await;
    }
}

#[tokio::test]
async fn a_version_1_database_gains_the_clients_table() {
    let store = open(&Backend::Sqlite).await;
    store.shutdown().await;
    // Back to what a version-1 kinde-meter left behind.
    store.execute("DROP TABLE m2m_clients").await;
    drop_entitlement_terms(&store).await;
    drop_webhooks(&store).await;
    store
        .execute("DELETE FROM schema_migrations WHERE version > 1")
        .await;
    let store = store.reopen().await;
    assert!(store.list_clients().await.unwrap().is_empty());
    store
        .create_client(new_client(
            "c",
            &["read:meter_usage"],
            1,
            "2024-05-01T00:00:00Z",
        ))
        .await
        .unwrap();
    assert_eq!(
        store
            .count("SELECT max(version) FROM schema_migrations")
            .await,
        kinde_meter_store::sqlite::CURRENT_VERSION
    );
}

/// A version-2 database (features without their entitlement terms) gains the
/// columns in place: features keep what they had, metered ones get the default
/// thresholds, and a catalog load then stores every term.
#[tokio::test]
async fn a_version_2_database_gains_the_entitlement_terms() {
    let store = open(&Backend::Sqlite).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    store.shutdown().await;
    // Back to what a version-2 kinde-meter left behind.
    drop_entitlement_terms(&store).await;
    drop_webhooks(&store).await;
    let store = store.reopened_at_version(2).await;
    let old = store.catalog().await.unwrap();
    let pro = old.plans.iter().find(|p| p.code.as_str() == "pro").unwrap();
    let api_calls = &pro.features[0];
    assert_eq!(
        (
            api_calls.limit_max,
            api_calls.enforce_limit,
            &api_calls.thresholds[..]
        ),
        (Some(1000), false, &[80, 100][..])
    );
    assert!(pro.features[2].thresholds.is_empty(), "not metered");
    assert_eq!(api_calls.price_name, None);
    // Usage goes on, and a catalog load stores every term.
    assert_eq!(
        submit(
            &store,
            delta(&a, "api_calls", "1", "2024-03-02T00:00:00Z"),
            "2024-03-02T00:00:00Z"
        )
        .await,
        Ok(())
    );
    store.load_catalog(&catalog()).await.unwrap();
    assert_eq!(store.catalog().await.unwrap(), catalog());
    store.shutdown().await;
}

/// A version-3 database (no webhooks) gains the outbox in place: existing
/// aggregates keep their usage and have no usage event due; the next record
/// makes one due, and webhooks can be registered.
#[tokio::test]
async fn a_version_3_database_gains_webhooks() {
    let store = open(&Backend::Sqlite).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let at = "2024-03-02T00:00:00Z";
    assert_eq!(
        submit(&store, delta(&a, "api_calls", "2", at), at).await,
        Ok(())
    );
    store.shutdown().await;
    drop_webhooks(&store).await;
    let store = store.reopened_at_version(3).await;
    assert_eq!(
        store
            .count("SELECT count(*) FROM usage_aggregates WHERE usage_event_due_ns IS NULL")
            .await,
        1
    );
    assert_eq!(
        usage(&store, &a, "api_calls", at).await.value.to_string(),
        "2"
    );
    assert_eq!(
        submit(&store, delta(&a, "api_calls", "1", at), at).await,
        Ok(())
    );
    assert_eq!(
        store
            .count("SELECT count(*) FROM usage_aggregates WHERE usage_event_due_ns IS NOT NULL")
            .await,
        1
    );
    assert!(store.list_webhooks().await.unwrap().is_empty());
    store.shutdown().await;
}

#[tokio::test]
async fn a_version_5_database_files_its_records_in_period_order() {
    let store = open(&Backend::Sqlite).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    for (i, at) in ["2024-03-02", "2024-03-06", "2024-03-04"]
        .iter()
        .enumerate()
    {
        let received = format!("2024-03-10T00:00:0{i}Z");
        let at = format!("{at}T00:00:00Z");
        assert_eq!(
            submit(&store, delta(&a, "api_calls", "10", &at), &received).await,
            Ok(())
        );
    }
    store.shutdown().await;
    // Back to what a version-5 kinde-meter left behind: the period index.
    for sql in [
        "DROP TABLE usage_record_runs",
        "DROP TABLE usage_record_order_filed",
        "CREATE INDEX usage_records_by_period
             ON usage_records (agreement_id, feature_code, period_start_ns, effective_at_ns, seq)",
        "DELETE FROM schema_migrations WHERE version > 5",
    ] {
        store.execute(sql).await;
    }
    // Versions 6 and 7: the index's order filed, then moved into runs.
    let store = store.reopen().await;
    assert_eq!(store.count(RUN_ENTRIES).await, 3);
    assert_eq!(
        store
            .count("SELECT count(*) FROM sqlite_master WHERE name = 'usage_record_order'")
            .await,
        0
    );
    assert_eq!(
        store
            .count("SELECT upto_seq FROM usage_record_order_filed")
            .await,
        store.count("SELECT max(seq) FROM usage_records").await
    );
    assert_eq!(
        store
            .count("SELECT count(*) FROM sqlite_master WHERE name = 'usage_records_by_period'")
            .await,
        0
    );
    // A late absolute between the records keeps the delta after it, read
    // from the filed order.
    let late = absolute(&a, "api_calls", "100", "2024-03-05T00:00:00Z");
    assert_eq!(submit(&store, late, "2024-03-10T00:01:00Z").await, Ok(()));
    let u = usage(&store, &a, "api_calls", "2024-03-20T00:00:00Z").await;
    assert_eq!(u.value.to_string(), "110");
}

/// Entries in the runs of the record order (16 bytes each).
const RUN_ENTRIES: &str = "SELECT coalesce(sum(length(entries)), 0) / 16 FROM usage_record_runs";

#[tokio::test]
async fn a_version_6_database_moves_its_order_table_into_runs() {
    let store = open(&Backend::Sqlite).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let b = create(&store, "cust_b", "pro", "2024-03-01T00:00:00Z", 2).await;
    for (i, at) in ["2024-03-02", "2024-03-06", "2024-03-04", "2024-03-07"]
        .iter()
        .enumerate()
    {
        let received = format!("2024-03-10T00:00:0{i}Z");
        let at = format!("{at}T00:00:00Z");
        for agreement in [&a, &b] {
            let record = delta(agreement, "api_calls", "10", &at);
            assert_eq!(submit(&store, record, &received).await, Ok(()));
        }
    }
    store.shutdown().await;
    // What a version-6 kinde-meter left behind: every record in the order
    // table (as if filed one by one), its trigger, no runs.
    for sql in [
        "DROP TABLE usage_record_runs",
        "CREATE TABLE usage_record_order (
             agreement_id TEXT NOT NULL, feature_code TEXT NOT NULL,
             period_start_ns INTEGER NOT NULL, effective_at_ns INTEGER NOT NULL,
             seq INTEGER NOT NULL,
             PRIMARY KEY (agreement_id, feature_code, period_start_ns, effective_at_ns, seq)
         ) WITHOUT ROWID",
        "INSERT INTO usage_record_order
             SELECT agreement_id, feature_code, period_start_ns, effective_at_ns, seq
             FROM usage_records",
        "UPDATE usage_record_order_filed SET upto_seq = (SELECT max(seq) FROM usage_records)",
        "CREATE TRIGGER usage_record_order_on_delete AFTER DELETE ON usage_records
         BEGIN DELETE FROM usage_record_order WHERE seq = old.seq; END",
        "DELETE FROM schema_migrations WHERE version > 6",
    ] {
        store.execute(sql).await;
    }
    let store = store.reopen().await;
    assert_eq!(store.count(RUN_ENTRIES).await, 8);
    // One run per aggregate, each ending at its newest record.
    assert_eq!(
        store.count("SELECT count(*) FROM usage_record_runs").await,
        2
    );
    assert_eq!(
        store
            .count(
                "SELECT count(*) FROM usage_record_runs r JOIN usage_aggregates g
                     ON (g.agreement_id, g.feature_code, g.period_start_ns, g.period_end_ns)
                        = (r.agreement_id, r.feature_code, r.period_start_ns, r.period_end_ns)
                 WHERE r.last_effective_ns = (SELECT max(effective_at_ns) FROM usage_records u
                                              WHERE u.agreement_id = r.agreement_id)"
            )
            .await,
        2
    );
    assert_eq!(
        store
            .count(
                "SELECT count(*) FROM sqlite_master
                 WHERE name IN ('usage_record_order', 'usage_record_order_on_delete')"
            )
            .await,
        0
    );
    // A late absolute on March 5 keeps the deltas after it (March 6 and 7),
    // read from the runs.
    let late = absolute(&a, "api_calls", "100", "2024-03-05T00:00:00Z");
    assert_eq!(submit(&store, late, "2024-03-10T00:01:00Z").await, Ok(()));
    let u = usage(&store, &a, "api_calls", "2024-03-20T00:00:00Z").await;
    assert_eq!(u.value.to_string(), "120");
    let u = usage(&store, &b, "api_calls", "2024-03-20T00:00:00Z").await;
    assert_eq!(u.value.to_string(), "40");
}
