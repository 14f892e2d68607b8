//! Agreements and plans that change between writes: each record is decided on
//! them as they are when its write commits, although both writers keep them
//! cached (docs/design.md#writer-cache, docs/design.md#postgresql-store),
//! whether the change comes through the same store or through another one on
//! the same storage (another server, or the CLI on the same data directory).
//! Reads and checks, which remember the agreements they read
//! (docs/design.md#hot-read-cache), answer by them as they are too.

use kinde_meter_core::ErrorCode;
use kinde_meter_store::{Store, StoreConfig};

use crate::common::*;

contract_tests!(
    a_record_for_an_agreement_this_store_ended_is_refused,
    a_record_for_an_agreement_another_store_ended_is_refused,
    a_catalog_change_applies_to_the_next_record,
    a_check_follows_an_agreement_another_store_made,
);

/// Records to the customer's agreement, ends it by making the customer's next
/// agreement through `end_through` (a store on the same storage), then
/// records to it again after its end.
async fn record_around_the_end(store: &TestStore, end_through: &TestStore) {
    let first = create(store, "cust_1", "pro", "2024-01-15T00:00:00Z", 1).await;
    let before = "2024-01-20T00:00:00Z";
    assert_eq!(
        submit(store, delta(&first, "api_calls", "5", before), before).await,
        Ok(())
    );
    create(end_through, "cust_1", "basic", "2024-02-01T00:00:00Z", 2).await;
    let after = "2024-02-03T00:00:00Z";
    let refused = submit(store, delta(&first, "api_calls", "1", after), after).await;
    assert_eq!(
        refused.unwrap_err().code,
        ErrorCode::AgreementNotActive,
        "the writer used the agreement as it was before it ended"
    );
    let read = usage(store, &first, "api_calls", before).await;
    assert_eq!((read.value.to_string(), read.record_count), ("5".into(), 1));
}

async fn a_record_for_an_agreement_this_store_ended_is_refused(b: Backend) {
    let store = open(&b).await;
    record_around_the_end(&store, &store).await;
}

async fn a_record_for_an_agreement_another_store_ended_is_refused(b: Backend) {
    let store = open(&b).await;
    let other = TestStore::on(&store.place, StoreConfig::default()).await;
    record_around_the_end(&store, &other).await;
}

async fn a_catalog_change_applies_to_the_next_record(b: Backend) {
    let store = open(&b).await;
    let at = "2024-03-02T00:00:00Z";
    let a = create(&store, "cust", "capped", "2024-03-01T00:00:00Z", 1).await;
    assert_eq!(
        submit(&store, delta(&a, "calls", "60", at), at).await,
        Ok(())
    );
    assert_eq!(submit(&store, delta(&a, "soft", "1", at), at).await, Ok(()));

    // Another server starts with a catalog in which `capped` limits `calls`
    // to 50 and has no feature `soft` any more.
    let other = TestStore::on(&store.place, StoreConfig::default()).await;
    other.load_catalog(&changed_catalog()).await.unwrap();

    let over = submit(&store, delta(&a, "calls", "1", at), at)
        .await
        .unwrap_err();
    assert_eq!(over.code, ErrorCode::EntitlementLimitExceeded, "{over:?}");
    assert!(over.message.contains("limit of 50"), "{}", over.message);
    let gone = submit(&store, delta(&a, "soft", "1", at), at)
        .await
        .unwrap_err();
    assert_eq!(gone.code, ErrorCode::FeatureNotFound, "{gone:?}");
    let read = usage(&store, &a, "calls", at).await;
    assert_eq!(
        (read.value.to_string(), read.record_count),
        ("60".into(), 1)
    );
}

/// A customer's entitlements, read again and again through one store (so from
/// what its reads remember), follow the customer's next agreement made
/// through another store at once, for an instant at which the remembered
/// agreement would still be active.
async fn a_check_follows_an_agreement_another_store_made(b: Backend) {
    let store = open(&b).await;
    let other = TestStore::on(&store.place, StoreConfig::default()).await;
    let customer = kinde_meter_core::ids::CustomerId::parse("cust_1").unwrap();
    let first = create(&store, "cust_1", "pro", "2024-01-15T00:00:00Z", 1).await;
    let at = "2024-01-20T00:00:00Z";
    assert_eq!(
        submit(&store, delta(&first, "api_calls", "5", at), at).await,
        Ok(())
    );
    let now = t(at);
    for _ in 0..3 {
        let e = store
            .customer_entitlements(&customer, now, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.agreement.id, first.id);
        assert_eq!(e.plan.code.as_str(), "pro");
        let calls = e
            .usage
            .usage
            .iter()
            .find(|u| u.feature_code.as_str() == "api_calls");
        assert_eq!(calls.unwrap().value.to_string(), "5");
        assert_eq!(usage(&store, &first, "api_calls", at).await.record_count, 1);
    }
    let second = create(&other, "cust_1", "basic", "2024-02-01T00:00:00Z", 2).await;
    let e = store
        .customer_entitlements(&customer, now, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (&e.agreement.id, e.plan.code.as_str()),
        (&second.id, "basic"),
        "the check answered by the agreement it remembered"
    );
    assert_eq!(usage(&store, &first, "api_calls", at).await.record_count, 1);
}
