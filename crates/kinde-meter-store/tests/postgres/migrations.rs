//! Migrations applied by several servers (and `kinde-meter migrate`) at once.

use kinde_meter_store::{
    Store, StoreConfig,
    postgres::{CURRENT_VERSION, PgSettings, PgStore, scratch::ScratchSchema},
};

use crate::common::*;

/// Four servers and a `migrate` start on a fresh database at the same moment:
/// all succeed, every migration is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_raced_by_several_stores_are_applied_once() {
    let Some(url) = database_url() else {
        return skip("migrations_raced_by_several_stores_are_applied_once");
    };
    let schema = ScratchSchema::create(&url).await.unwrap();
    // A schema that does not exist yet: the migrations create it too.
    let fresh = format!("{}_new", schema.name());
    let settings = PgSettings {
        schema: Some(fresh.clone()),
        ..schema.settings()
    };
    let connect = || PgStore::connect(&url, settings.clone(), StoreConfig::default());
    let (a, b, c, d, applied) = tokio::join!(
        connect(),
        connect(),
        connect(),
        connect(),
        PgStore::migrate(&url, &settings)
    );
    let stores = [a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()];
    let applied = applied.unwrap();
    assert!(applied.len() <= CURRENT_VERSION as usize, "{applied:?}");

    let conn = schema.connect().await.unwrap();
    let row = conn
        .query_one(
            &format!("SELECT count(*), max(version) FROM {fresh}.schema_migrations"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), i64::from(CURRENT_VERSION));
    assert_eq!(row.get::<_, i32>(1), CURRENT_VERSION);
    // Up to date: a later migrate applies nothing.
    assert_eq!(
        PgStore::migrate(&url, &settings).await.unwrap(),
        Vec::<i32>::new()
    );
    for store in &stores {
        kinde_meter_store::Store::shutdown(store).await;
    }
    drop(stores);
    conn.batch_execute(&format!("DROP SCHEMA {fresh} CASCADE"))
        .await
        .unwrap();
}

/// A version-1 schema (features without their entitlement terms) gains the
/// columns in place when a server starts on it: features keep what they had,
/// metered ones get the default thresholds, and a catalog load then stores
/// every term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_schema_gains_the_entitlement_terms() {
    let Some(backend) = Backend::postgres() else {
        return skip("a_version_1_schema_gains_the_entitlement_terms");
    };
    let store = open(&backend).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    store.shutdown().await;
    // Back to what a version-1 kinde-meter left behind.
    undo_version_4(&store).await;
    undo_version_3(&store).await;
    store
        .execute(
            "ALTER TABLE plan_features DROP COLUMN price_name, DROP COLUMN fixed_charge,
                 DROP COLUMN limit_min, DROP COLUMN enforce_limit, DROP COLUMN thresholds",
        )
        .await;
    let store = store.reopened_at_version(1).await;
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

/// Runs each of `statements` behind the store's back, in order.
async fn execute_all(store: &TestStore, statements: &[&str]) {
    for sql in statements {
        store.execute(sql).await;
    }
}

/// Drops what version 4 (the terms counter and its triggers) added.
async fn undo_version_4(store: &TestStore) {
    execute_all(
        store,
        &[
            "DROP TRIGGER agreements_terms_version ON agreements",
            "DROP TRIGGER plans_terms_version ON plans",
            "DROP TRIGGER plan_features_terms_version ON plan_features",
            "DROP FUNCTION terms_version_bump()",
            "DROP TABLE terms_version",
        ],
    )
    .await;
}

/// A version-3 schema gains `terms_version` in place when a server starts on
/// it, and from then on every agreement or catalog change moves it, also one
/// made behind the servers' backs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_3_schema_gains_the_terms_counter() {
    let Some(backend) = Backend::postgres() else {
        return skip("a_version_3_schema_gains_the_terms_counter");
    };
    let store = open(&backend).await;
    create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    store.shutdown().await;
    undo_version_4(&store).await;
    let store = store.reopened_at_version(3).await;
    let version = async || {
        store
            .count("SELECT version FROM terms_version WHERE id = 0")
            .await
    };
    let mut last = version().await;
    assert_eq!(last, 0, "a fresh counter");
    create(&store, "cust", "basic", "2024-03-05T00:00:00Z", 2).await;
    store.load_catalog(&catalog()).await.unwrap();
    for change in [
        None,
        Some("UPDATE plans SET name = 'Pro!' WHERE code = 'pro'"),
        Some("UPDATE plan_features SET limit_max = 5 WHERE plan_code = 'pro'"),
        Some("UPDATE agreements SET expires_on_ns = NULL WHERE false"),
    ] {
        if let Some(sql) = change {
            store.execute(sql).await;
        }
        let now = version().await;
        // Each moves it (the agreement and the catalog load: more than once).
        assert!(now > last, "{change:?}: {last} -> {now}");
        last = now;
    }
}

/// Drops what version 3 (the webhook outbox) added.
async fn undo_version_3(store: &TestStore) {
    execute_all(
        store,
        &[
            "DROP TABLE webhook_deliveries",
            "DROP TABLE events",
            "DROP TABLE webhooks",
            "ALTER TABLE usage_aggregates DROP COLUMN usage_event_due_ns,
             DROP COLUMN usage_event_last_ns",
        ],
    )
    .await;
}

/// A version-2 schema gains the webhook outbox in place when a server starts
/// on it: its usage is kept, its aggregates are not due (no event for usage
/// recorded before), and the writer then marks changed ones due and raises
/// agreement events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_schema_gains_the_webhook_outbox() {
    let Some(backend) = Backend::postgres() else {
        return skip("a_version_2_schema_gains_the_webhook_outbox");
    };
    let store = open(&backend).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    submit(
        &store,
        delta(&a, "api_calls", "5", "2024-03-02T00:00:00Z"),
        "2024-03-02T00:00:00Z",
    )
    .await
    .unwrap();
    store.shutdown().await;
    undo_version_4(&store).await;
    undo_version_3(&store).await;
    let store = store.reopened_at_version(2).await;
    assert_eq!(
        usage(&store, &a, "api_calls", "2024-03-15T00:00:00Z")
            .await
            .value
            .to_string(),
        "5"
    );
    assert_eq!(
        store
            .count("SELECT count(*) FROM usage_aggregates WHERE usage_event_due_ns IS NOT NULL")
            .await,
        0
    );
    submit(
        &store,
        delta(&a, "api_calls", "1", "2024-03-02T00:00:01Z"),
        "2024-03-02T00:00:01Z",
    )
    .await
    .unwrap();
    assert_eq!(
        store
            .count("SELECT count(*) FROM usage_aggregates WHERE usage_event_due_ns IS NOT NULL")
            .await,
        1
    );
    create(&store, "cust", "basic", "2024-03-03T00:00:00Z", 2).await;
    // agreement_created, plan_changed, agreement_cancelled.
    assert_eq!(store.count("SELECT count(*) FROM events").await, 3);
    store.shutdown().await;
}
