//! Creating agreements, and listing them page by page.

use kinde_meter_core::{
    ErrorCode,
    ids::{AgreementId, CustomerId, PlanCode},
    period::Interval,
};
use kinde_meter_store::{
    AgreementQuery, CreateAgreementError, Cursor, ListAgreementsError, NewAgreement, Store,
};

use crate::common::*;

async fn creating_an_agreement_ends_the_customers_previous_one(b: Backend) {
    let store = open(&b).await;
    let first = create(&store, "cust_1", "pro", "2024-01-15T00:00:00Z", 1).await;
    let second = create(&store, "cust_1", "basic", "2024-02-01T00:00:00Z", 2).await;
    let other = create(&store, "cust_2", "pro", "2024-02-02T00:00:00Z", 3).await;

    assert!(first.id.as_str().starts_with("agreement_"), "{}", first.id);
    assert_eq!(second.interval, Interval::Month);
    assert_eq!(second.anchor, t("2024-02-01T00:00:00Z"));
    let first = store.agreement(&first.id).await.unwrap().unwrap();
    assert_eq!(first.expires_on, Some(t("2024-02-01T00:00:00Z")));
    assert_eq!(store.agreement(&second.id).await.unwrap().unwrap(), second);
    assert_eq!(
        store
            .agreement(&other.id)
            .await
            .unwrap()
            .unwrap()
            .expires_on,
        None
    );

    let ended = submit(
        &store,
        delta(&first, "api_calls", "1", "2024-02-03T00:00:00Z"),
        "2024-02-03T00:00:00Z",
    )
    .await;
    assert_eq!(ended.unwrap_err().code, ErrorCode::AgreementNotActive);
    let ok = submit(
        &store,
        delta(&second, "seats", "1", "2024-02-03T00:00:00Z"),
        "2024-02-03T00:00:00Z",
    )
    .await;
    assert_eq!(ok, Ok(()));

    let missing = store
        .create_agreement(NewAgreement {
            customer_id: CustomerId::parse("cust_1").unwrap(),
            plan_code: PlanCode::parse("enterprise").unwrap(),
            now: t("2024-03-01T00:00:00Z"),
            id_random: [9; 10],
        })
        .await;
    assert!(
        matches!(missing, Err(CreateAgreementError::PlanNotFound)),
        "{missing:?}"
    );
    // The refused creation ended nothing.
    assert_eq!(
        store
            .agreement(&second.id)
            .await
            .unwrap()
            .unwrap()
            .expires_on,
        None
    );
    let unknown = AgreementId::parse("agreement_unknown").unwrap();
    assert_eq!(store.agreement(&unknown).await.unwrap(), None);
}

async fn pages_walk_both_ways_with_has_more(b: Backend) {
    let store = open(&b).await;
    let mut ids = Vec::new();
    for i in 0..5u8 {
        let at = format!("2024-01-0{}T00:00:00Z", i + 1);
        ids.push(create(&store, "cust", "pro", &at, i).await.id);
    }
    let foreign = create(&store, "someone_else", "pro", "2024-01-09T00:00:00Z", 9)
        .await
        .id;
    let ids_at = |is: &[usize]| is.iter().map(|&i| ids[i].clone()).collect::<Vec<_>>();

    assert_eq!(
        page(&store, "cust", None, 2, Cursor::First).await,
        (ids_at(&[4, 3]), true)
    );
    assert_eq!(
        page(&store, "cust", None, 10, Cursor::First).await,
        (ids_at(&[4, 3, 2, 1, 0]), false)
    );
    assert_eq!(
        page(&store, "cust", None, 5, Cursor::First).await,
        (ids_at(&[4, 3, 2, 1, 0]), false)
    );
    let after = |i: usize| Cursor::StartingAfter(ids[i].clone());
    let before = |i: usize| Cursor::EndingBefore(ids[i].clone());
    assert_eq!(
        page(&store, "cust", None, 2, after(3)).await,
        (ids_at(&[2, 1]), true)
    );
    assert_eq!(
        page(&store, "cust", None, 2, after(1)).await,
        (ids_at(&[0]), false)
    );
    assert_eq!(
        page(&store, "cust", None, 2, after(0)).await,
        (vec![], false)
    );
    assert_eq!(
        page(&store, "cust", None, 2, before(0)).await,
        (ids_at(&[2, 1]), true)
    );
    assert_eq!(
        page(&store, "cust", None, 2, before(2)).await,
        (ids_at(&[4, 3]), false)
    );
    assert_eq!(
        page(&store, "cust", None, 2, before(4)).await,
        (vec![], false)
    );
    assert_eq!(
        page(&store, "cust", None, 3, before(1)).await,
        (ids_at(&[4, 3, 2]), false)
    );

    // Only the newest is active; each older one ended when the next was made.
    let older = store.agreement(&ids[3]).await.unwrap().unwrap();
    assert_eq!(older.expires_on, Some(t("2024-01-05T00:00:00Z")));

    // Every view carries its plan.
    let listed = store
        .list_agreements(AgreementQuery {
            customer_id: CustomerId::parse("cust").unwrap(),
            feature_code: None,
            page_size: 1,
            cursor: Cursor::First,
            now: t("2024-02-01T00:00:00Z"),
        })
        .await
        .unwrap();
    let plan = listed.agreements[0].plan.as_ref().unwrap();
    assert_eq!(
        (plan.code.as_str(), plan.group.as_deref()),
        ("pro", Some("saas"))
    );
    assert_eq!(plan.features.len(), 3);

    for cursor in [
        Cursor::StartingAfter(foreign.clone()),
        Cursor::EndingBefore(foreign),
        Cursor::StartingAfter(AgreementId::parse("agreement_nope").unwrap()),
    ] {
        let result = store
            .list_agreements(AgreementQuery {
                customer_id: CustomerId::parse("cust").unwrap(),
                feature_code: None,
                page_size: 2,
                cursor,
                now: t("2024-02-01T00:00:00Z"),
            })
            .await;
        assert!(
            matches!(result, Err(ListAgreementsError::UnknownCursor)),
            "{result:?}"
        );
    }
}

async fn the_feature_filter_keeps_paging_correct(b: Backend) {
    let store = open(&b).await;
    // 0 pro, 1 basic, 2 pro, 3 basic, 4 pro, 5 basic.
    let mut ids = Vec::new();
    for i in 0..6u8 {
        let plan = if i % 2 == 0 { "pro" } else { "basic" };
        let at = format!("2024-01-0{}T00:00:00Z", i + 1);
        ids.push(create(&store, "cust", plan, &at, i).await.id);
    }
    let ids_at = |is: &[usize]| is.iter().map(|&i| ids[i].clone()).collect::<Vec<_>>();
    let f = Some("storage_gb");

    assert_eq!(
        page(&store, "cust", f, 2, Cursor::First).await,
        (ids_at(&[4, 2]), true)
    );
    assert_eq!(
        page(&store, "cust", f, 2, Cursor::StartingAfter(ids[2].clone())).await,
        (ids_at(&[0]), false)
    );
    assert_eq!(
        page(&store, "cust", f, 1, Cursor::EndingBefore(ids[0].clone())).await,
        (ids_at(&[2]), true)
    );
    assert_eq!(
        page(&store, "cust", f, 2, Cursor::EndingBefore(ids[0].clone())).await,
        (ids_at(&[4, 2]), false)
    );
    // A cursor on an agreement the filter leaves out still places the page.
    assert_eq!(
        page(&store, "cust", f, 5, Cursor::StartingAfter(ids[3].clone())).await,
        (ids_at(&[2, 0]), false)
    );
    assert_eq!(
        page(&store, "cust", Some("seats"), 5, Cursor::First).await,
        (ids_at(&[5, 3, 1]), false)
    );
    // A non-metered feature is a feature of the plan too.
    assert_eq!(
        page(&store, "cust", Some("sso"), 5, Cursor::First).await,
        (ids_at(&[4, 2, 0]), false)
    );
    assert_eq!(
        page(&store, "cust", Some("nothing"), 5, Cursor::First).await,
        (vec![], false)
    );
}

contract_tests!(
    creating_an_agreement_ends_the_customers_previous_one,
    pages_walk_both_ways_with_has_more,
    the_feature_filter_keeps_paging_correct,
);
