//! Reads from remembered terms on the connections they share
//! (`postgres/shared.rs`): a broken shared connection costs no answer.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use kinde_meter_core::ids::CustomerId;
use kinde_meter_store::{
    Store, StoreConfig,
    postgres::{PgStore, scratch::ScratchSchema},
};

use crate::common::*;

/// The backends of the store's connections named `application` that ran the
/// remembered read's statement last.
async fn shared_backends(conn: &tokio_postgres::Client, application: &str) -> Vec<i32> {
    conn.query(
        "SELECT pid FROM pg_stat_activity
         WHERE application_name = $1 AND query LIKE '%FROM terms_version v%'",
        &[&application],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Checks go on being answered, with the usage recorded, when the backend of
/// the connection they share is terminated (a PostgreSQL restart, an
/// administrator's `pg_terminate_backend`): the check that finds it broken is
/// read on a pooled connection, and the next ones on a fresh shared one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_survive_the_loss_of_their_shared_connection() {
    let Some(url) = database_url() else {
        return skip("checks_survive_the_loss_of_their_shared_connection");
    };
    let schema = ScratchSchema::create(&url).await.unwrap();
    let application = format!("{}_reads", schema.name());
    let separator = if url.contains('?') { '&' } else { '?' };
    let store = PgStore::connect(
        &format!("{url}{separator}application_name={application}"),
        schema.settings(),
        StoreConfig::default(),
    )
    .await
    .unwrap();
    store.load_catalog(&catalog()).await.unwrap();
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    assert_eq!(
        submit(
            &store,
            delta(&a, "api_calls", "7", "2024-03-02T00:00:00Z"),
            "2024-03-02T00:00:00Z"
        )
        .await,
        Ok(())
    );
    let store = Arc::new(store);
    let customer = CustomerId::parse("cust").unwrap();
    let now = t("2024-03-05T00:00:00Z");
    let done = Arc::new(AtomicUsize::new(0));
    // Checks in flight from several tasks at once while the backend dies.
    let mut checks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (store, customer, done) = (store.clone(), customer.clone(), done.clone());
        checks.spawn(async move {
            for _ in 0..200 {
                let e = store
                    .customer_entitlements(&customer, now, None)
                    .await
                    .expect("a check is answered")
                    .unwrap();
                assert_eq!(e.usage.usage[0].value.to_string(), "7");
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    until("checks under way", || done.load(Ordering::Relaxed) >= 100).await;
    let admin = schema.connect().await.unwrap();
    let before = shared_backends(&admin, &application).await;
    assert!(!before.is_empty(), "the checks read on shared connections");
    for pid in &before {
        admin
            .execute("SELECT pg_terminate_backend($1)", &[pid])
            .await
            .unwrap();
    }
    let killed_at = done.load(Ordering::Relaxed);
    while let Some(finished) = checks.join_next().await {
        finished.unwrap();
    }
    assert!(killed_at < 1600, "the backend died while checks ran");
    let after = shared_backends(&admin, &application).await;
    assert!(!after.is_empty(), "checks read on shared connections again");
    assert!(
        after.iter().all(|pid| !before.contains(pid)),
        "fresh shared connections: {before:?} then {after:?}"
    );
    store.shutdown().await;
}
