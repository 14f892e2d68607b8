//! What survives a restart, and two stores (processes) on one directory.

use kinde_meter_core::ids::{CustomerId, PlanCode};
use kinde_meter_store::{
    CreateAgreementError, NewAgreement, Store, StoreConfig, StoreError, SubmissionOutcome,
    UsageSubmission,
};

use crate::common::*;

async fn data_survives_shutdown_and_reopening(b: Backend) {
    let store = open(&b).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let at = "2024-03-02T00:00:00Z";
    let rec = delta(&a, "api_calls", "2.5", at);
    let keyed = UsageSubmission {
        idempotency: Some(claim("k", &rec)),
        ..single(rec.clone(), "2024-03-02T00:00:00Z")
    };
    assert_eq!(
        store.submit_usage(keyed.clone()).await.unwrap(),
        SubmissionOutcome::Processed(vec![Ok(())])
    );
    store.shutdown().await;
    store.shutdown().await; // a second shutdown is harmless

    let after = store
        .submit_usage(single(rec.clone(), "2024-03-02T00:00:01Z"))
        .await;
    assert!(matches!(after, Err(StoreError::ShuttingDown)), "{after:?}");
    let after = store
        .create_agreement(NewAgreement {
            customer_id: CustomerId::parse("cust").unwrap(),
            plan_code: PlanCode::parse("pro").unwrap(),
            now: t("2024-03-03T00:00:00Z"),
            id_random: [2; 10],
        })
        .await;
    assert!(
        matches!(
            after,
            Err(CreateAgreementError::Store(StoreError::ShuttingDown))
        ),
        "{after:?}"
    );
    let place = store.place.clone();
    drop(store);

    // Reopened without loading a catalog: the plans are the ones stored.
    let store = TestStore::on(&place, StoreConfig::default()).await;
    assert_eq!(store.catalog().await.unwrap(), catalog());
    store.ping().await.unwrap();
    assert_eq!(store.agreement(&a.id).await.unwrap(), Some(a.clone()));
    let u = usage(&store, &a, "api_calls", at).await;
    assert_eq!((u.value.to_string(), u.record_count), ("2.5".to_owned(), 1));
    assert_eq!(
        store.submit_usage(keyed).await.unwrap(),
        SubmissionOutcome::Replayed(vec![Ok(())])
    );
    // Arrival order continues across the restart: an absolute at the same instant
    // arrives after the delta, so it wins the tie.
    assert_eq!(
        submit(
            &store,
            absolute(&a, "api_calls", "1", at),
            "2024-03-02T00:00:02Z"
        )
        .await,
        Ok(())
    );
    let u = usage(&store, &a, "api_calls", at).await;
    assert_eq!((u.value.to_string(), u.record_count), ("1".to_owned(), 2));
    assert_every_migration_once(&b, &store).await;
    store.shutdown().await;
}

async fn two_stores_on_one_place_share_it_safely(b: Backend) {
    // Opened at once, as a server and an offline CLI command (or two servers) might be.
    let place = Place::fresh(&b).await;
    let (one, two) = tokio::join!(
        TestStore::on(&place, StoreConfig::default()),
        TestStore::on(&place, StoreConfig::default())
    );
    assert_every_migration_once(&b, &one).await;
    one.load_catalog(&catalog()).await.unwrap();
    let a = create(&two, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    assert_eq!(one.agreement(&a.id).await.unwrap(), Some(a.clone()));

    let at = "2024-03-02T00:00:00Z";
    assert_eq!(
        submit(
            &one,
            delta(&a, "api_calls", "1", at),
            "2024-03-02T00:00:01Z"
        )
        .await,
        Ok(())
    );
    assert_eq!(
        submit(
            &two,
            delta(&a, "api_calls", "2", at),
            "2024-03-02T00:00:02Z"
        )
        .await,
        Ok(())
    );
    // Arrival order spans both writers: this absolute ties with both deltas and wins.
    assert_eq!(
        submit(
            &one,
            absolute(&a, "api_calls", "10", at),
            "2024-03-02T00:00:03Z"
        )
        .await,
        Ok(())
    );
    assert_eq!(
        submit(
            &two,
            delta(&a, "api_calls", "0.5", at),
            "2024-03-02T00:00:04Z"
        )
        .await,
        Ok(())
    );
    for store in [&one, &two] {
        let u = usage(store, &a, "api_calls", at).await;
        assert_eq!(
            (u.value.to_string(), u.record_count),
            ("10.5".to_owned(), 4)
        );
    }
    one.shutdown().await;
    two.shutdown().await;
}

/// Every migration of the backend applied exactly once (each backend has its
/// own list).
async fn assert_every_migration_once(b: &Backend, store: &TestStore) {
    let expected = match b {
        Backend::Sqlite => kinde_meter_store::sqlite::CURRENT_VERSION,
        Backend::Postgres(_) => i64::from(kinde_meter_store::postgres::CURRENT_VERSION),
    };
    assert_eq!(
        store.count("SELECT count(*) FROM schema_migrations").await,
        expected
    );
    assert_eq!(
        store
            .count("SELECT max(version) FROM schema_migrations")
            .await,
        expected
    );
}

contract_tests!(
    data_survives_shutdown_and_reopening,
    two_stores_on_one_place_share_it_safely,
);
