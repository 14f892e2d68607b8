//! A customer's entitlements: the active agreement, its plan and the live usage
//! of the plan's metered features, read from the aggregates.

use kinde_meter_core::ids::{CustomerId, FeatureCode};
use kinde_meter_store::{CustomerEntitlements, Store};

use crate::common::*;

async fn entitlements(
    store: &(impl Store + ?Sized),
    customer: &str,
    now: &str,
) -> Option<CustomerEntitlements> {
    store
        .customer_entitlements(&CustomerId::parse(customer).unwrap(), t(now), None)
        .await
        .unwrap()
}

/// [`entitlements`] with the usage of `feature` only.
async fn entitlements_of(
    store: &(impl Store + ?Sized),
    customer: &str,
    now: &str,
    feature: &str,
) -> CustomerEntitlements {
    let feature = FeatureCode::parse(feature).unwrap();
    store
        .customer_entitlements(
            &CustomerId::parse(customer).unwrap(),
            t(now),
            Some(&feature),
        )
        .await
        .unwrap()
        .unwrap()
}

/// (feature, value, record count) of each reported usage.
fn summary(e: &CustomerEntitlements) -> Vec<(String, String, u64)> {
    e.usage
        .usage
        .iter()
        .map(|u| {
            (
                u.feature_code.to_string(),
                u.value.to_string(),
                u.record_count,
            )
        })
        .collect()
}

fn owned(rows: &[(&str, &str, u64)]) -> Vec<(String, String, u64)> {
    rows.iter()
        .map(|(f, v, n)| (f.to_string(), v.to_string(), *n))
        .collect()
}

async fn entitlements_of_the_active_agreement_with_live_usage(b: Backend) {
    let store = open(&b).await;
    assert!(
        entitlements(&store, "nobody", "2024-03-05T00:00:00Z")
            .await
            .is_none()
    );
    let a = create(&store, "cust", "pro", "2024-03-01T10:00:00Z", 1).await;
    let e = entitlements(&store, "cust", "2024-03-05T00:00:00Z")
        .await
        .unwrap();
    assert_eq!(*e.agreement, a);
    // Every feature of the plan, metered or not, in catalog order.
    let codes: Vec<&str> = e.plan.features.iter().map(|f| f.code.as_str()).collect();
    assert_eq!(codes, ["api_calls", "storage_gb", "sso"]);
    assert_eq!(e.plan.features[0].limit_max, Some(1000));
    assert_eq!(
        (e.usage.period.start, e.usage.period.end),
        (t("2024-03-01T10:00:00Z"), t("2024-04-01T10:00:00Z"))
    );
    assert_eq!(
        summary(&e),
        owned(&[("api_calls", "0", 0), ("storage_gb", "0", 0)])
    );

    // A record committed a moment before is in the answer.
    let received = "2024-03-05T00:00:01Z";
    for r in [
        delta(&a, "api_calls", "10.5", "2024-03-04T00:00:00Z"),
        delta(&a, "api_calls", "2", "2024-03-05T00:00:00Z"),
        absolute(&a, "storage_gb", "7", "2024-03-05T00:00:00Z"),
        // Another period: not in this one's usage.
        delta(&a, "api_calls", "100", "2024-04-02T00:00:00Z"),
    ] {
        assert_eq!(submit(&store, r, received).await, Ok(()));
    }
    let e = entitlements(&store, "cust", "2024-03-06T00:00:00Z")
        .await
        .unwrap();
    assert_eq!(
        summary(&e),
        owned(&[("api_calls", "12.5", 2), ("storage_gb", "7", 1)])
    );
    assert_eq!(e.usage.usage[0].last_recorded_at, Some(t(received)));
    // The period containing `now` decides the usage reported.
    let e = entitlements(&store, "cust", "2024-04-05T00:00:00Z")
        .await
        .unwrap();
    assert_eq!(e.usage.period.start, t("2024-04-01T10:00:00Z"));
    assert_eq!(
        summary(&e),
        owned(&[("api_calls", "100", 1), ("storage_gb", "0", 0)])
    );

    // A new agreement ends the customer's other: the new one answers.
    let b2 = create(&store, "cust", "basic", "2024-03-10T00:00:00Z", 2).await;
    let e = entitlements(&store, "cust", "2024-03-10T00:00:00Z")
        .await
        .unwrap();
    assert_eq!(e.agreement.id, b2.id);
    assert_eq!(e.plan.code.as_str(), "basic");
    assert_eq!(summary(&e), owned(&[("seats", "0", 0)]));
    // Other customers are not affected.
    assert!(
        entitlements(&store, "other", "2024-03-10T00:00:00Z")
            .await
            .is_none()
    );
}

async fn no_entitlements_once_the_agreement_has_ended(b: Backend) {
    let store = open(&b).await;
    create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    store
        .execute("UPDATE agreements SET expires_on_ns = 1710000000000000000")
        .await;
    // 1710000000 s is 2024-03-09T16:00:00Z.
    assert!(
        entitlements(&store, "cust", "2024-03-09T15:59:59Z")
            .await
            .is_some()
    );
    assert!(
        entitlements(&store, "cust", "2024-03-09T16:00:00Z")
            .await
            .is_none()
    );
}

async fn usage_of_only_the_feature_asked_for(b: Backend) {
    let store = open(&b).await;
    let a = create(&store, "cust", "pro", "2024-03-01T10:00:00Z", 1).await;
    let received = "2024-03-05T00:00:01Z";
    for r in [
        delta(&a, "api_calls", "10.5", "2024-03-04T00:00:00Z"),
        absolute(&a, "storage_gb", "7", "2024-03-05T00:00:00Z"),
    ] {
        assert_eq!(submit(&store, r, received).await, Ok(()));
    }
    let now = "2024-03-06T00:00:00Z";
    // Twice each: the first read may fill a connection's memory of the
    // agreement, the second answers from it.
    for _ in 0..2 {
        let all = entitlements(&store, "cust", now).await.unwrap();
        let api = entitlements_of(&store, "cust", now, "api_calls").await;
        assert_eq!(summary(&api), owned(&[("api_calls", "10.5", 1)]));
        assert_eq!(api.usage.usage[0], all.usage.usage[0]);
        assert_eq!(api.usage.period, all.usage.period);
        // The agreement and the whole plan are answered as without `only`.
        assert_eq!(api.agreement, all.agreement);
        assert_eq!(api.plan, all.plan);
        let storage = entitlements_of(&store, "cust", now, "storage_gb").await;
        assert_eq!(summary(&storage), owned(&[("storage_gb", "7", 1)]));
        // Not metered, or not on the plan: no usage, the rest as ever.
        for other in ["sso", "no_such_feature"] {
            let e = entitlements_of(&store, "cust", now, other).await;
            assert_eq!(summary(&e), owned(&[]));
            assert_eq!(e.usage.period, all.usage.period);
            assert_eq!(e.plan, all.plan);
        }
    }
}

contract_tests!(
    entitlements_of_the_active_agreement_with_live_usage,
    usage_of_only_the_feature_asked_for,
    no_entitlements_once_the_agreement_has_ended,
);
