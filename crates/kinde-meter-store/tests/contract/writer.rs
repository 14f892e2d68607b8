//! The group-commit writer, on every backend: a bounded queue answered at once
//! when full, queued submissions sharing one commit, and a failed commit
//! answering every job of its batch and storing nothing of it.
//!
//! Where a test needs jobs to pile up in the queue, another session holds the
//! lock the writer's batch needs ([`TestStore::hold_writes`]) and the test
//! watches the writer's counters; nothing waits by sleeping.

use std::sync::Arc;

use kinde_meter_core::ids::{CustomerId, PlanCode};
use kinde_meter_store::{
    CreateAgreementError, NewAgreement, Store, StoreConfig, StoreError, SubmissionOutcome,
};

use crate::common::*;

contract_tests!(
    a_full_queue_answers_queue_full_and_the_rest_commits,
    queued_submissions_share_one_commit,
    a_failed_commit_answers_every_job_and_stores_nothing_of_the_batch,
);

async fn a_full_queue_answers_queue_full_and_the_rest_commits(backend: Backend) {
    let config = StoreConfig {
        queue_capacity: 1,
        ..StoreConfig::default()
    };
    let store = Arc::new(TestStore::patient(&backend, config).await);
    let a = create(&*store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let job = |value: &str| {
        single(
            delta(&a, "api_calls", value, "2024-03-02T00:00:00Z"),
            "2024-03-02T00:00:00Z",
        )
    };
    let base = store.writer_stats().received;

    let held = store.hold_writes().await;
    let first = tokio::spawn({
        let (store, job) = (store.clone(), job("1"));
        async move { store.submit_usage(job).await }
    });
    // The writer holds the first job, waiting for the lock.
    until("the writer took the first job", || {
        store.writer_stats().received == base + 1
    })
    .await;
    let second = tokio::spawn({
        let (store, job) = (store.clone(), job("2"));
        async move { store.submit_usage(job).await }
    });
    until("the second job is queued", || store.queued_writes() == 1).await;

    let third = store.submit_usage(job("4")).await;
    assert!(matches!(third, Err(StoreError::QueueFull)), "{third:?}");
    let creation = store
        .create_agreement(NewAgreement {
            customer_id: CustomerId::parse("cust2").unwrap(),
            plan_code: PlanCode::parse("pro").unwrap(),
            now: t("2024-03-03T00:00:00Z"),
            id_random: [2; 10],
        })
        .await;
    match backend {
        // Agreements go through the writer's queue on SQLite only.
        Backend::Sqlite => assert!(
            matches!(
                creation,
                Err(CreateAgreementError::Store(StoreError::QueueFull))
            ),
            "{creation:?}"
        ),
        Backend::Postgres(_) => assert!(creation.is_ok(), "{creation:?}"),
    }

    held.release().await;
    for task in [first, second] {
        assert_eq!(
            task.await.unwrap().unwrap(),
            SubmissionOutcome::Processed(vec![Ok(())])
        );
    }
    let u = usage(&*store, &a, "api_calls", "2024-03-20T00:00:00Z").await;
    assert_eq!((u.value.to_string(), u.record_count), ("3".to_owned(), 2));
}

async fn queued_submissions_share_one_commit(backend: Backend) {
    let store = Arc::new(TestStore::patient(&backend, StoreConfig::default()).await);
    let a = create(&*store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let spawn = |value: &'static str| {
        let store = store.clone();
        let job = single(
            delta(&a, "api_calls", value, "2024-03-02T00:00:00Z"),
            "2024-03-02T00:00:00Z",
        );
        tokio::spawn(async move { store.submit_usage(job).await })
    };
    let before = store.writer_stats();

    // Hold the writer on its first job while 50 more queue up behind it.
    let held = store.hold_writes().await;
    let mut tasks = vec![spawn("1")];
    until("the writer took the first job", || {
        store.writer_stats().received == before.received + 1
    })
    .await;
    tasks.extend((0..50).map(|_| spawn("1")));
    until("50 jobs are queued", || store.queued_writes() == 50).await;
    held.release().await;
    for task in tasks {
        assert_eq!(
            task.await.unwrap().unwrap(),
            SubmissionOutcome::Processed(vec![Ok(())])
        );
    }
    let stats = store.writer_stats();
    assert_eq!(stats.batches - before.batches, 2, "{stats:?}");
    assert_eq!(stats.records - before.records, 51, "{stats:?}");
    assert_eq!(stats.largest_batch, 50, "{stats:?}");

    // Free-running: many tasks at once all commit, however they are grouped.
    let tasks: Vec<_> = (0..200).map(|_| spawn("0.5")).collect();
    for task in tasks {
        assert_eq!(
            task.await.unwrap().unwrap(),
            SubmissionOutcome::Processed(vec![Ok(())])
        );
    }
    let u = usage(&*store, &a, "api_calls", "2024-03-20T00:00:00Z").await;
    assert_eq!(
        (u.value.to_string(), u.record_count),
        ("151".to_owned(), 251)
    );
    let stats = store.writer_stats();
    assert_eq!(stats.records - before.records, 251);
    assert_eq!(stats.failed_batches, 0);
}

async fn a_failed_commit_answers_every_job_and_stores_nothing_of_the_batch(backend: Backend) {
    let store = Arc::new(TestStore::patient(&backend, StoreConfig::default()).await);
    let a = create(&*store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    store.fail_inserts_of_13().await;
    let spawn = |value: &'static str| {
        let store = store.clone();
        let job = single(
            delta(&a, "api_calls", value, "2024-03-02T00:00:00Z"),
            "2024-03-02T00:00:00Z",
        );
        tokio::spawn(async move { store.submit_usage(job).await })
    };
    let before = store.writer_stats();
    let held = store.hold_writes().await;
    let first = spawn("1");
    until("the writer took the first job", || {
        store.writer_stats().received == before.received + 1
    })
    .await;
    let (good, bad) = (spawn("2"), spawn("13"));
    until("two jobs are queued", || store.queued_writes() == 2).await;
    held.release().await;

    assert_eq!(
        first.await.unwrap().unwrap(),
        SubmissionOutcome::Processed(vec![Ok(())])
    );
    for task in [good, bad] {
        let answer = task.await.unwrap();
        assert!(
            matches!(&answer, Err(StoreError::Unavailable(m)) if m.contains("simulated failure")),
            "{answer:?}"
        );
    }
    assert_eq!(
        store.writer_stats().failed_batches - before.failed_batches,
        1
    );
    let u = usage(&*store, &a, "api_calls", "2024-03-20T00:00:00Z").await;
    assert_eq!((u.value.to_string(), u.record_count), ("1".to_owned(), 1));
    // The writer carries on after the failure.
    assert_eq!(
        submit(
            &*store,
            delta(&a, "api_calls", "2", "2024-03-02T00:00:00Z"),
            "2024-03-02T00:00:01Z"
        )
        .await,
        Ok(())
    );
}
