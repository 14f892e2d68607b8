//! Hard limits: a record that would take its period's usage beyond a feature's
//! enforced `limit_max` is refused with ENTITLEMENT_LIMIT_EXCEEDED and stores
//! nothing, decided in commit order (plan `capped`: `calls` is limited to 100
//! and enforced, `soft` is limited to 100 and not enforced).

use std::sync::Arc;

use kinde_meter_core::{ErrorCode, agreement::Agreement, request::UsageRecord};
use kinde_meter_store::{
    RecordResult, Store, StoreConfig, SubmissionKind, SubmissionOutcome, UsageSubmission,
};

use crate::common::*;

contract_tests!(
    a_delta_beyond_an_enforced_limit_is_refused_and_stores_nothing,
    an_absolute_beyond_an_enforced_limit_is_refused,
    late_records_are_decided_on_the_true_usage,
    a_batch_refuses_only_its_records_beyond_the_limit,
    a_refused_keyed_record_replays_its_refusal,
    an_accepted_keyed_record_is_never_refused_on_replay,
    submissions_in_one_group_commit_never_overshoot,
    many_concurrent_submissions_never_overshoot,
);

const AT: &str = "2024-03-02T00:00:00Z";
const READ_AT: &str = "2024-03-20T00:00:00Z";

async fn capped(store: &(impl Store + ?Sized)) -> Agreement {
    create(store, "cust", "capped", "2024-03-01T00:00:00Z", 1).await
}

/// The refusal `result` must be: the code, a message naming the feature and the limit.
fn assert_refused(result: &RecordResult) {
    let failure = result.as_ref().expect_err("refused");
    assert_eq!(
        failure.code,
        ErrorCode::EntitlementLimitExceeded,
        "{failure:?}"
    );
    assert!(
        failure.message.contains("calls") && failure.message.contains("limit of 100"),
        "{}",
        failure.message
    );
}

/// (usage, record count) of `feature`.
async fn state(store: &(impl Store + ?Sized), a: &Agreement, feature: &str) -> (String, u64) {
    let u = usage(store, a, feature, READ_AT).await;
    (u.value.to_string(), u.record_count)
}

fn pair(value: &str, count: u64) -> (String, u64) {
    (value.to_owned(), count)
}

async fn stored_records(store: &TestStore) -> i64 {
    store.count("SELECT count(*) FROM usage_records").await
}

async fn a_delta_beyond_an_enforced_limit_is_refused_and_stores_nothing(b: Backend) {
    let store = open(&b).await;
    let a = capped(&store).await;
    assert_eq!(
        submit(&store, delta(&a, "calls", "60", AT), AT).await,
        Ok(())
    );
    // Up to the limit exactly.
    assert_eq!(
        submit(&store, delta(&a, "calls", "40", AT), AT).await,
        Ok(())
    );
    let refused = submit(&store, delta(&a, "calls", "0.000000001", AT), AT).await;
    assert_refused(&refused);
    let message = refused.unwrap_err().message;
    assert!(message.contains("100.000000001"), "{message}");
    assert_eq!(state(&store, &a, "calls").await, pair("100", 2));
    assert_eq!(stored_records(&store).await, 2);
    // A zero delta leaves the usage at the limit: stored.
    assert_eq!(
        submit(&store, delta(&a, "calls", "0", AT), AT).await,
        Ok(())
    );
    assert_eq!(state(&store, &a, "calls").await, pair("100", 3));
    // Without enforcement, usage beyond the limit is recorded.
    assert_eq!(
        submit(&store, delta(&a, "soft", "150", AT), AT).await,
        Ok(())
    );
    assert_eq!(state(&store, &a, "soft").await, pair("150", 1));
    // The limit is per period: the next one starts from zero.
    let april = "2024-04-02T00:00:00Z";
    assert_eq!(
        submit(&store, delta(&a, "calls", "100", april), april).await,
        Ok(())
    );
    assert_refused(&submit(&store, delta(&a, "calls", "1", april), april).await);
    assert_eq!(
        usage(&store, &a, "calls", april).await.value.to_string(),
        "100"
    );
    store.shutdown().await;
}

async fn an_absolute_beyond_an_enforced_limit_is_refused(b: Backend) {
    let store = open(&b).await;
    let a = capped(&store).await;
    assert_refused(&submit(&store, absolute(&a, "calls", "101", AT), AT).await);
    assert_eq!(state(&store, &a, "calls").await, pair("0", 0));
    assert_eq!(
        submit(&store, absolute(&a, "calls", "100", AT), AT).await,
        Ok(())
    );
    // An absolute that lowers the usage is stored; one that raises it beyond is not.
    let later = "2024-03-03T00:00:00Z";
    assert_eq!(
        submit(&store, absolute(&a, "calls", "30", later), later).await,
        Ok(())
    );
    assert_refused(&submit(&store, absolute(&a, "calls", "100.5", later), later).await);
    assert_eq!(state(&store, &a, "calls").await, pair("30", 2));
    assert_eq!(stored_records(&store).await, 2);
    store.shutdown().await;
}

async fn late_records_are_decided_on_the_true_usage(b: Backend) {
    let store = open(&b).await;
    let a = capped(&store).await;
    let received = "2024-03-10T00:00:00Z";
    let at = |day: &str| format!("2024-03-{day}T00:00:00Z");
    assert_eq!(
        submit(&store, absolute(&a, "calls", "50", &at("04")), received).await,
        Ok(())
    );
    assert_eq!(
        submit(&store, delta(&a, "calls", "40", &at("06")), received).await,
        Ok(())
    );
    assert_eq!(state(&store, &a, "calls").await, pair("90", 2));
    // Older than the latest absolute: changes nothing, so stored even though
    // its value alone would pass the limit.
    assert_eq!(
        submit(&store, delta(&a, "calls", "500", &at("03")), received).await,
        Ok(())
    );
    assert_eq!(
        submit(&store, absolute(&a, "calls", "999", &at("02")), received).await,
        Ok(())
    );
    assert_eq!(state(&store, &a, "calls").await, pair("90", 4));
    // A late absolute that becomes the latest: the delta after it (40) still
    // counts, read from the stored records, so 65 would make 105.
    assert_refused(&submit(&store, absolute(&a, "calls", "65", &at("05")), received).await);
    assert_eq!(state(&store, &a, "calls").await, pair("90", 4));
    assert_eq!(
        submit(&store, absolute(&a, "calls", "60", &at("05")), received).await,
        Ok(())
    );
    assert_eq!(state(&store, &a, "calls").await, pair("100", 5));
    assert_eq!(stored_records(&store).await, 5);
    store.shutdown().await;
}

fn batch(records: Vec<UsageRecord>, key: Option<&str>) -> UsageSubmission {
    UsageSubmission {
        client_id: "client_a".to_owned(),
        idempotency: key.map(|k| claim_of(k, &format!("batch {k}"))),
        records: records.into_iter().map(Ok).collect(),
        received_at: t(AT),
        kind: SubmissionKind::Batch,
    }
}

async fn a_batch_refuses_only_its_records_beyond_the_limit(b: Backend) {
    let store = open(&b).await;
    let a = capped(&store).await;
    let later = "2024-03-03T00:00:00Z";
    let records = vec![
        delta(&a, "calls", "50", AT),
        // 50 + 60 > 100: refused; the next records see 50.
        delta(&a, "calls", "60", AT),
        delta(&a, "calls", "50", AT),
        delta(&a, "calls", "1", AT),
        delta(&a, "soft", "500", AT),
        // The batch's own earlier records count: 100 → 30, then 30 + 70 = 100.
        absolute(&a, "calls", "30", later),
        delta(&a, "calls", "70", later),
        absolute(&a, "calls", "100.1", later),
    ];
    let outcome = store
        .submit_usage(batch(records.clone(), Some("b1")))
        .await
        .unwrap();
    let SubmissionOutcome::Processed(results) = outcome else {
        panic!("{outcome:?}")
    };
    let accepted: Vec<bool> = results.iter().map(Result::is_ok).collect();
    assert_eq!(
        accepted,
        [true, false, true, false, true, true, true, false],
        "{results:?}"
    );
    for i in [1, 3, 7] {
        assert_refused(&results[i]);
    }
    assert_eq!(state(&store, &a, "calls").await, pair("100", 4));
    assert_eq!(state(&store, &a, "soft").await, pair("500", 1));
    assert_eq!(stored_records(&store).await, 5);
    // The batch is remembered whole: its replay answers the same.
    assert_eq!(
        store
            .submit_usage(batch(records, Some("b1")))
            .await
            .unwrap(),
        SubmissionOutcome::Replayed(results)
    );
    assert_eq!(stored_records(&store).await, 5);
    store.shutdown().await;
}

fn keyed(record: UsageRecord, key: &str, received: &str) -> UsageSubmission {
    UsageSubmission {
        idempotency: Some(claim(key, &record)),
        ..single(record, received)
    }
}

async fn a_refused_keyed_record_replays_its_refusal(b: Backend) {
    let store = open(&b).await;
    let a = capped(&store).await;
    assert_eq!(
        submit(&store, delta(&a, "calls", "90", AT), AT).await,
        Ok(())
    );
    let over = keyed(delta(&a, "calls", "20", AT), "k1", AT);
    let first = store.submit_usage(over.clone()).await.unwrap();
    let SubmissionOutcome::Processed(results) = &first else {
        panic!("{first:?}")
    };
    assert_refused(&results[0]);
    // The usage drops meanwhile: the replay still answers the refusal, and stores nothing.
    let later = "2024-03-03T00:00:00Z";
    assert_eq!(
        submit(&store, absolute(&a, "calls", "0", later), later).await,
        Ok(())
    );
    let replay = keyed(delta(&a, "calls", "20", AT), "k1", later);
    assert_eq!(
        store.submit_usage(replay).await.unwrap(),
        SubmissionOutcome::Replayed(results.clone())
    );
    assert_eq!(state(&store, &a, "calls").await, pair("0", 2));
    // The same key with another body is a reused key.
    assert_eq!(
        store
            .submit_usage(keyed(delta(&a, "calls", "21", AT), "k1", later))
            .await
            .unwrap(),
        SubmissionOutcome::KeyReused
    );
    // A single record failing for another reason still leaves no trace: its
    // retry is processed afresh.
    let unmetered = keyed(delta(&a, "support", "1", AT), "k2", AT);
    for _ in 0..2 {
        let outcome = store.submit_usage(unmetered.clone()).await.unwrap();
        assert!(
            matches!(&outcome, SubmissionOutcome::Processed(r)
                if r[0].as_ref().unwrap_err().code == ErrorCode::FeatureNotMetered),
            "{outcome:?}"
        );
    }
    store.shutdown().await;
}

async fn an_accepted_keyed_record_is_never_refused_on_replay(b: Backend) {
    let store = open(&b).await;
    let a = capped(&store).await;
    let first = keyed(delta(&a, "calls", "60", AT), "k1", AT);
    assert_eq!(
        store.submit_usage(first.clone()).await.unwrap(),
        SubmissionOutcome::Processed(vec![Ok(())])
    );
    // Its value again would pass the limit, but a replay is answered from the
    // stored outcome and stores nothing.
    assert_eq!(
        store.submit_usage(first.clone()).await.unwrap(),
        SubmissionOutcome::Replayed(vec![Ok(())])
    );
    assert_eq!(
        submit(&store, delta(&a, "calls", "40", AT), AT).await,
        Ok(())
    );
    assert_eq!(
        store.submit_usage(first).await.unwrap(),
        SubmissionOutcome::Replayed(vec![Ok(())])
    );
    assert_eq!(state(&store, &a, "calls").await, pair("100", 2));
    store.shutdown().await;
}

/// Submissions queued behind a held writer commit in one group: each is decided
/// after the ones before it in the same transaction.
async fn submissions_in_one_group_commit_never_overshoot(b: Backend) {
    let store = Arc::new(TestStore::patient(&b, StoreConfig::default()).await);
    let a = capped(&*store).await;
    let spawn = |value: &'static str| {
        let store = store.clone();
        let job = single(delta(&a, "calls", value, AT), AT);
        tokio::spawn(async move { store.submit_usage(job).await })
    };
    let before = store.writer_stats();
    let held = store.hold_writes().await;
    let mut tasks = vec![spawn("7")];
    until("the writer took the first job", || {
        store.writer_stats().received == before.received + 1
    })
    .await;
    tasks.extend((0..30).map(|_| spawn("7")));
    until("30 jobs are queued", || store.queued_writes() == 30).await;
    held.release().await;
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            SubmissionOutcome::Processed(results) if results[0].is_ok() => accepted += 1,
            SubmissionOutcome::Processed(results) => assert_refused(&results[0]),
            other => panic!("{other:?}"),
        }
    }
    // 14 × 7 = 98 ≤ 100 < 105.
    assert_eq!(accepted, 14);
    assert_eq!(state(&*store, &a, "calls").await, pair("98", 14));
    assert_eq!(store.writer_stats().failed_batches, 0);
    store.shutdown().await;
}

/// Many writers at once, singles and batches, deltas of different sizes: the
/// usage never passes the limit and is the sum of what was accepted.
async fn many_concurrent_submissions_never_overshoot(b: Backend) {
    let store = Arc::new(open(&b).await);
    let a = capped(&*store).await;
    let values = ["0.5", "1", "2.25", "3", "7", "0.000000001"];
    let tasks: Vec<_> = (0..120)
        .map(|i| {
            let store = store.clone();
            let value = values[i % values.len()];
            let records = if i % 4 == 0 {
                vec![delta(&a, "calls", value, AT), delta(&a, "calls", "1.5", AT)]
            } else {
                vec![delta(&a, "calls", value, AT)]
            };
            let job = if records.len() == 1 {
                single(records[0].clone(), AT)
            } else {
                batch(records.clone(), None)
            };
            tokio::spawn(async move {
                let outcome = store.submit_usage(job).await.unwrap();
                (records, outcome)
            })
        })
        .collect();
    let mut sum = kinde_meter_core::value::UsageTotal::ZERO;
    let (mut accepted, mut refused) = (0u64, 0u64);
    for task in tasks {
        let (records, outcome) = task.await.unwrap();
        let SubmissionOutcome::Processed(results) = outcome else {
            panic!("{outcome:?}")
        };
        for (record, result) in records.iter().zip(&results) {
            match result {
                Ok(()) => {
                    accepted += 1;
                    sum = sum.checked_add(record.value).unwrap();
                }
                Err(_) => {
                    assert_refused(result);
                    refused += 1;
                }
            }
        }
    }
    assert!(refused > 0, "the workload passes the limit");
    let (value, count) = state(&*store, &a, "calls").await;
    assert_eq!((value.clone(), count), (sum.to_string(), accepted));
    assert!(
        sum <= kinde_meter_core::value::UsageTotal::parse("100").unwrap(),
        "{value}"
    );
    store.shutdown().await;
}
