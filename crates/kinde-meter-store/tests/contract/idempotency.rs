//! Idempotency keys: replays, reuse, expiry and concurrent duplicates.

use std::sync::Arc;

use kinde_meter_core::{ErrorCode, aggregate::MeterType, request::UsageRecord};
use kinde_meter_store::{Store, SubmissionKind, SubmissionOutcome, UsageSubmission};

use crate::common::*;

async fn idempotency_replays_refuses_reuse_and_expires(b: Backend) {
    let store = open(&b).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let rec = delta(&a, "api_calls", "5", "2024-03-02T00:00:00Z");
    let keyed = |client: &str, key: &str, record: &UsageRecord, received: &str| UsageSubmission {
        client_id: client.to_owned(),
        idempotency: Some(claim(key, record)),
        ..single(record.clone(), received)
    };
    let count_now = || async {
        usage(&store, &a, "api_calls", "2024-03-20T00:00:00Z")
            .await
            .record_count
    };

    let first = store
        .submit_usage(keyed("client_a", "k1", &rec, "2024-03-02T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(first, SubmissionOutcome::Processed(vec![Ok(())]));
    let again = store
        .submit_usage(keyed("client_a", "k1", &rec, "2024-03-02T00:01:00Z"))
        .await
        .unwrap();
    assert_eq!(again, SubmissionOutcome::Replayed(vec![Ok(())]));
    assert_eq!(count_now().await, 1);

    let changed = delta(&a, "api_calls", "6", "2024-03-02T00:00:00Z");
    let reused = store
        .submit_usage(keyed("client_a", "k1", &changed, "2024-03-02T00:02:00Z"))
        .await
        .unwrap();
    assert_eq!(reused, SubmissionOutcome::KeyReused);
    // The same key on the batch endpoint is another request too.
    let as_batch = UsageSubmission {
        kind: SubmissionKind::Batch,
        ..keyed("client_a", "k1", &rec, "2024-03-02T00:02:00Z")
    };
    assert_eq!(
        store.submit_usage(as_batch).await.unwrap(),
        SubmissionOutcome::KeyReused
    );
    assert_eq!(count_now().await, 1);

    // Keys are per client.
    let other_client = store
        .submit_usage(keyed("client_b", "k1", &rec, "2024-03-02T00:03:00Z"))
        .await
        .unwrap();
    assert_eq!(other_client, SubmissionOutcome::Processed(vec![Ok(())]));
    assert_eq!(count_now().await, 2);

    // A failed single record is not remembered: its retry is processed again.
    let unknown = record(
        "agreement_missing",
        "api_calls",
        "1",
        MeterType::Delta,
        None,
    );
    for _ in 0..2 {
        let outcome = store
            .submit_usage(keyed("client_a", "f1", &unknown, "2024-03-02T00:04:00Z"))
            .await
            .unwrap();
        assert!(
            matches!(&outcome, SubmissionOutcome::Processed(r) if r[0].as_ref().unwrap_err().code == ErrorCode::AgreementNotFound),
            "{outcome:?}"
        );
    }

    // A batch is remembered with every record's result, failures included.
    let batch = UsageSubmission {
        client_id: "client_a".to_owned(),
        idempotency: Some(claim_of("b1", "batch-1")),
        records: vec![Ok(rec.clone()), Ok(unknown.clone())],
        received_at: t("2024-03-02T00:05:00Z"),
        kind: SubmissionKind::Batch,
    };
    let SubmissionOutcome::Processed(results) = store.submit_usage(batch.clone()).await.unwrap()
    else {
        panic!("batch not processed");
    };
    assert!(results[0].is_ok() && results[1].is_err());
    let replayed = store.submit_usage(batch).await.unwrap();
    assert_eq!(replayed, SubmissionOutcome::Replayed(results));
    assert_eq!(count_now().await, 3);

    // Past the retention window (24 h) the key counts as unused.
    let late = store
        .submit_usage(keyed("client_a", "k1", &rec, "2024-03-03T00:00:01Z"))
        .await
        .unwrap();
    assert_eq!(late, SubmissionOutcome::Processed(vec![Ok(())]));
    let replay_of_late = store
        .submit_usage(keyed("client_a", "k1", &rec, "2024-03-03T00:00:02Z"))
        .await
        .unwrap();
    assert_eq!(replay_of_late, SubmissionOutcome::Replayed(vec![Ok(())]));
    assert_eq!(count_now().await, 4);
}

async fn twenty_concurrent_duplicates_store_one_record(b: Backend) {
    let store = Arc::new(open(&b).await);
    let a = create(&*store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let rec = delta(&a, "api_calls", "5", "2024-03-02T00:00:00Z");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            let submission = UsageSubmission {
                idempotency: Some(claim("dup", &rec)),
                ..single(rec.clone(), "2024-03-02T00:00:00Z")
            };
            tokio::spawn(async move { store.submit_usage(submission).await })
        })
        .collect();
    let (mut processed, mut replayed) = (0, 0);
    for task in tasks {
        match task.await.unwrap().unwrap() {
            SubmissionOutcome::Processed(r) => {
                assert_eq!(r, vec![Ok(())]);
                processed += 1;
            }
            SubmissionOutcome::Replayed(r) => {
                assert_eq!(r, vec![Ok(())]);
                replayed += 1;
            }
            SubmissionOutcome::KeyReused => panic!("the same request was called a reuse"),
        }
    }
    assert_eq!((processed, replayed), (1, 19));
    let u = usage(&*store, &a, "api_calls", "2024-03-20T00:00:00Z").await;
    assert_eq!((u.value.to_string(), u.record_count), ("5".to_owned(), 1));
}

/// Found by the model test: keys are stored and checked by the billing clock
/// (the submissions' time of receipt), so the writer's periodic purge must use it
/// too; by the system clock, a key received on a clock behind the real date was
/// purged within minutes of billing time and its replay counted twice.
async fn keys_are_purged_by_the_billing_clock(b: Backend) {
    let store = open(&b).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let rec = delta(&a, "api_calls", "5", "2024-03-02T00:00:00Z");
    let keyed = |received: &str| UsageSubmission {
        idempotency: Some(claim("kept", &rec)),
        ..single(rec.clone(), received)
    };
    let first = store
        .submit_usage(keyed("2024-03-02T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(first, SubmissionOutcome::Processed(vec![Ok(())]));
    // More write batches than the purge interval (256), one at a time.
    for _ in 0..300 {
        let other = delta(&a, "other_feature", "1", "2024-03-02T00:00:00Z");
        store
            .submit_usage(single(other, "2024-03-02T00:01:00Z"))
            .await
            .unwrap();
    }
    let replay = store
        .submit_usage(keyed("2024-03-02T00:02:00Z"))
        .await
        .unwrap();
    assert_eq!(replay, SubmissionOutcome::Replayed(vec![Ok(())]));
    let u = usage(&store, &a, "api_calls", "2024-03-20T00:00:00Z").await;
    assert_eq!(u.record_count, 1);
}

contract_tests!(
    idempotency_replays_refuses_reuse_and_expires,
    twenty_concurrent_duplicates_store_one_record,
    keys_are_purged_by_the_billing_clock,
);
