//! The dashboard's reads: customers by id prefix, page by page, and the latest
//! raw records of an agreement.

use kinde_meter_core::{
    aggregate::MeterType,
    ids::{CustomerId, FeatureCode},
};
use kinde_meter_store::{CustomerQuery, ReadUsageError, RecordsQuery, Store, StoredUsageRecord};

use crate::common::*;

/// Ids and agreement counts of one page, and `has_more`.
async fn customers(
    store: &TestStore,
    prefix: Option<&str>,
    after: Option<&str>,
    page_size: usize,
) -> (Vec<(String, u64)>, bool) {
    let page = store
        .list_customers(CustomerQuery {
            prefix: prefix.map(|p| CustomerId::parse(p).unwrap()),
            starting_after: after.map(|a| CustomerId::parse(a).unwrap()),
            page_size,
        })
        .await
        .unwrap();
    let ids = page
        .customers
        .into_iter()
        .map(|c| (c.customer_id.as_str().to_owned(), c.agreement_count))
        .collect();
    (ids, page.has_more)
}

fn names(page: &(Vec<(String, u64)>, bool)) -> Vec<&str> {
    page.0.iter().map(|(id, _)| id.as_str()).collect()
}

async fn customers_are_listed_by_id_with_prefix_search_and_paging(b: Backend) {
    let store = open(&b).await;
    let top = "cus_\u{10FFFF}x";
    let ids = [
        "cus_b", "cus_a", "Cus_z", "cus_ab", "cusx", "cus_é", "other", top, "cus_b",
    ];
    for (i, id) in ids.into_iter().enumerate() {
        let at = format!("2024-03-0{}T00:00:00Z", i + 1);
        create(&store, id, "pro", &at, i as u8).await;
    }

    // Code point order, whatever the database's collation: upper case first,
    // "é" after every ASCII letter.
    let all = customers(&store, None, None, 100).await;
    assert_eq!(
        names(&all),
        [
            "Cus_z", "cus_a", "cus_ab", "cus_b", "cus_é", top, "cusx", "other"
        ]
    );
    assert!(!all.1);
    let count = |id: &str| all.0.iter().find(|(c, _)| c == id).unwrap().1;
    assert_eq!(count("cus_b"), 2, "ended agreements count too");
    assert_eq!(count("cus_a"), 1);

    // A prefix is case-sensitive and matches from the start only.
    let prefixed = customers(&store, Some("cus_"), None, 100).await;
    assert_eq!(names(&prefixed), ["cus_a", "cus_ab", "cus_b", "cus_é", top]);
    assert_eq!(
        names(&customers(&store, Some("cus_\u{10FFFF}"), None, 100).await),
        [top]
    );
    assert_eq!(
        names(&customers(&store, Some("cus_a"), None, 100).await),
        ["cus_a", "cus_ab"]
    );
    assert_eq!(
        customers(&store, Some("us_"), None, 100).await,
        (vec![], false)
    );

    // Pages: has_more says whether more match after the page.
    let first = customers(&store, Some("cus_"), None, 2).await;
    assert_eq!((names(&first), first.1), (vec!["cus_a", "cus_ab"], true));
    let second = customers(&store, Some("cus_"), Some("cus_ab"), 2).await;
    assert_eq!((names(&second), second.1), (vec!["cus_b", "cus_é"], true));
    let third = customers(&store, Some("cus_"), Some("cus_é"), 2).await;
    assert_eq!((names(&third), third.1), (vec![top], false));
    // The cursor need not name a customer; one before the prefix starts at it,
    // one past it leaves nothing.
    assert_eq!(
        names(&customers(&store, None, Some("cus_a0"), 1).await),
        ["cus_ab"]
    );
    assert_eq!(
        names(&customers(&store, Some("cus_b"), Some("a"), 10).await),
        ["cus_b"]
    );
    assert_eq!(
        customers(&store, Some("cus_a"), Some("cus_b"), 10).await,
        (vec![], false)
    );
}

async fn records(
    store: &TestStore,
    agreement: &kinde_meter_core::agreement::Agreement,
    feature: Option<&str>,
    limit: usize,
) -> Result<Vec<StoredUsageRecord>, ReadUsageError> {
    store
        .latest_usage_records(RecordsQuery {
            agreement_id: agreement.id.clone(),
            feature_code: feature.map(|f| FeatureCode::parse(f).unwrap()),
            limit,
        })
        .await
}

/// (feature, value) of each record.
fn values(records: &[StoredUsageRecord]) -> Vec<(&str, String)> {
    records
        .iter()
        .map(|r| (r.feature_code.as_str(), r.value.to_string()))
        .collect()
}

async fn latest_records_are_newest_first_across_features(b: Backend) {
    let store = open(&b).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let other = create(&store, "cust_other", "pro", "2024-03-01T00:00:00Z", 2).await;
    let steps = [
        (
            delta(&a, "api_calls", "5", "2024-03-02T00:00:00Z"),
            "2024-03-10T00:00:00Z",
        ),
        (
            absolute(&a, "storage_gb", "1.5", "2024-03-05T00:00:00Z"),
            "2024-03-10T00:00:01Z",
        ),
        // No timestamp: it counts at its receipt, the newest instant of March.
        (
            record(
                a.id.as_str(),
                "api_calls",
                "0.000000001",
                MeterType::Delta,
                None,
            ),
            "2024-03-10T00:00:02Z",
        ),
        // Received last, but it counts at an earlier instant.
        (
            delta(&a, "api_calls", "7", "2024-03-03T00:00:00Z"),
            "2024-03-10T00:00:03Z",
        ),
        (
            delta(&a, "api_calls", "2", "2024-04-02T00:00:00Z"),
            "2024-04-02T01:00:00Z",
        ),
        (
            delta(&other, "api_calls", "99", "2024-04-03T00:00:00Z"),
            "2024-04-03T00:00:00Z",
        ),
    ];
    for (record, received) in steps {
        assert_eq!(submit(&store, record, received).await, Ok(()));
    }
    // A refused record is not stored: it never shows.
    let refused = submit(
        &store,
        delta(&a, "sso", "1", "2024-04-02T00:00:00Z"),
        "2024-04-02T02:00:00Z",
    )
    .await;
    assert!(refused.is_err());

    let latest = records(&store, &a, None, 100).await.unwrap();
    assert_eq!(
        values(&latest),
        [
            ("api_calls", "2".to_owned()),
            ("api_calls", "0.000000001".to_owned()),
            ("storage_gb", "1.5".to_owned()),
            ("api_calls", "7".to_owned()),
            ("api_calls", "5".to_owned()),
        ],
        "the April period first, then March by the instant each record counts at"
    );
    let storage = &latest[2];
    assert_eq!(storage.meter_type, MeterType::Absolute);
    assert_eq!(storage.timestamp, Some(t("2024-03-05T00:00:00Z")));
    assert_eq!(storage.received_at, t("2024-03-10T00:00:01Z"));
    assert_eq!(storage.period.start, t("2024-03-01T00:00:00Z"));
    assert_eq!(storage.period.end, t("2024-04-01T00:00:00Z"));
    assert_eq!(latest[1].timestamp, None);
    assert_eq!(latest[1].meter_type, MeterType::Delta);
    assert_eq!(latest[0].period.start, t("2024-04-01T00:00:00Z"));

    assert_eq!(
        values(&records(&store, &a, None, 2).await.unwrap()).len(),
        2
    );
    assert_eq!(
        records(&store, &a, None, 3).await.unwrap(),
        latest[..3].to_vec()
    );
    assert_eq!(
        values(&records(&store, &a, Some("storage_gb"), 10).await.unwrap()),
        [("storage_gb", "1.5".to_owned())]
    );
    assert_eq!(
        values(&records(&store, &other, None, 10).await.unwrap()),
        [("api_calls", "99".to_owned())]
    );
    let none = create(&store, "cust_new", "basic", "2024-04-01T00:00:00Z", 3).await;
    assert_eq!(records(&store, &none, None, 10).await.unwrap(), vec![]);

    assert!(matches!(
        records(&store, &a, Some("sso"), 10).await,
        Err(ReadUsageError::FeatureNotMetered)
    ));
    assert!(matches!(
        records(&store, &a, Some("seats"), 10).await,
        Err(ReadUsageError::FeatureNotFound)
    ));
    let mut unknown = a.clone();
    unknown.id = kinde_meter_core::ids::AgreementId::parse("agreement_nope").unwrap();
    assert!(matches!(
        records(&store, &unknown, None, 10).await,
        Err(ReadUsageError::AgreementNotFound)
    ));
}

contract_tests!(
    customers_are_listed_by_id_with_prefix_search_and_paging,
    latest_records_are_newest_first_across_features,
);
