//! The PostgreSQL writer: bounded queue, group commit, failed batches.
//!
//! Where a test needs submissions to pile up, another session holds a lock
//! the writer's batch needs (as another server's long transaction would), and
//! the test watches the writer's counters; nothing waits by sleeping. These
//! stores get a long operation timeout so that a slow machine cannot turn the
//! held lock into a 503 before the test lets go.

use std::{sync::Arc, time::Duration};

use kinde_meter_store::{Store, StoreConfig, StoreError, SubmissionOutcome, postgres::PgSettings};

use crate::common::*;

/// A store on fresh storage with `config` and a 60 s operation timeout.
async fn patient_store(backend: &Backend, config: StoreConfig) -> Arc<TestStore> {
    let place = Place::fresh(backend).await;
    let Place::Schema(schema) = &place else {
        unreachable!()
    };
    let settings = PgSettings {
        operation_timeout: Duration::from_secs(60),
        ..schema.settings()
    };
    let store = TestStore::on_with(&place, config, settings).await;
    store.load_catalog(&catalog()).await.unwrap();
    Arc::new(store)
}

/// Holds the lock every usage batch needs (writes to `usage_aggregates`) until
/// the returned connection rolls back.
async fn hold_writes(store: &TestStore) -> tokio_postgres::Client {
    let conn = store.schema().connect().await.unwrap();
    conn.batch_execute("BEGIN; LOCK TABLE usage_aggregates IN EXCLUSIVE MODE")
        .await
        .unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_queue_full_and_the_rest_commits() {
    let Some(backend) = Backend::postgres() else {
        return skip("a_full_queue_answers_queue_full_and_the_rest_commits");
    };
    let config = StoreConfig {
        queue_capacity: 1,
        ..StoreConfig::default()
    };
    let store = patient_store(&backend, config).await;
    let a = create(&*store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let job = |value: &str| {
        single(
            delta(&a, "api_calls", value, "2024-03-02T00:00:00Z"),
            "2024-03-02T00:00:00Z",
        )
    };
    let base = store.pg().writer_stats().received;
    let lock = hold_writes(&store).await;
    let first = tokio::spawn({
        let (store, job) = (store.clone(), job("1"));
        async move { store.submit_usage(job).await }
    });
    until("the writer took the first job", || {
        store.pg().writer_stats().received == base + 1
    })
    .await;
    let second = tokio::spawn({
        let (store, job) = (store.clone(), job("2"));
        async move { store.submit_usage(job).await }
    });
    until("the second job is queued", || {
        store.pg().queued_writes() == 1
    })
    .await;
    let third = store.submit_usage(job("4")).await;
    assert!(matches!(third, Err(StoreError::QueueFull)), "{third:?}");
    // Agreements do not go through the usage queue on PostgreSQL.
    create(&*store, "cust2", "pro", "2024-03-03T00:00:00Z", 2).await;

    lock.batch_execute("ROLLBACK").await.unwrap();
    for task in [first, second] {
        assert_eq!(
            task.await.unwrap().unwrap(),
            SubmissionOutcome::Processed(vec![Ok(())])
        );
    }
    let u = usage(&*store, &a, "api_calls", "2024-03-20T00:00:00Z").await;
    assert_eq!((u.value.to_string(), u.record_count), ("3".to_owned(), 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_submissions_share_one_commit() {
    let Some(backend) = Backend::postgres() else {
        return skip("queued_submissions_share_one_commit");
    };
    let store = patient_store(&backend, StoreConfig::default()).await;
    let a = create(&*store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let spawn = |value: &'static str| {
        let store = store.clone();
        let job = single(
            delta(&a, "api_calls", value, "2024-03-02T00:00:00Z"),
            "2024-03-02T00:00:00Z",
        );
        tokio::spawn(async move { store.submit_usage(job).await })
    };
    let before = store.pg().writer_stats();
    let lock = hold_writes(&store).await;
    let mut tasks = vec![spawn("1")];
    until("the writer took the first job", || {
        store.pg().writer_stats().received == before.received + 1
    })
    .await;
    tasks.extend((0..50).map(|_| spawn("1")));
    until("50 jobs are queued", || store.pg().queued_writes() == 50).await;
    lock.batch_execute("ROLLBACK").await.unwrap();
    for task in tasks {
        assert_eq!(
            task.await.unwrap().unwrap(),
            SubmissionOutcome::Processed(vec![Ok(())])
        );
    }
    let stats = store.pg().writer_stats();
    assert_eq!(stats.batches - before.batches, 2, "{stats:?}");
    assert_eq!(stats.records - before.records, 51, "{stats:?}");
    assert_eq!(stats.largest_batch, 50, "{stats:?}");
    let u = usage(&*store, &a, "api_calls", "2024-03-20T00:00:00Z").await;
    assert_eq!((u.value.to_string(), u.record_count), ("51".to_owned(), 51));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_answers_every_job_and_stores_nothing_of_it() {
    let Some(backend) = Backend::postgres() else {
        return skip("a_failed_batch_answers_every_job_and_stores_nothing_of_it");
    };
    let store = patient_store(&backend, StoreConfig::default()).await;
    let a = create(&*store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    // A value of 13 makes the insert fail: a stand-in for a database error.
    store
        .schema()
        .connect()
        .await
        .unwrap()
        .batch_execute(
            "CREATE FUNCTION fail_13() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.value = 13 THEN RAISE EXCEPTION 'simulated failure'; END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER fail_13 BEFORE INSERT ON usage_records
                 FOR EACH ROW EXECUTE FUNCTION fail_13();",
        )
        .await
        .unwrap();
    let spawn = |value: &'static str| {
        let store = store.clone();
        let job = single(
            delta(&a, "api_calls", value, "2024-03-02T00:00:00Z"),
            "2024-03-02T00:00:00Z",
        );
        tokio::spawn(async move { store.submit_usage(job).await })
    };
    let before = store.pg().writer_stats();
    let lock = hold_writes(&store).await;
    let first = spawn("1");
    until("the writer took the first job", || {
        store.pg().writer_stats().received == before.received + 1
    })
    .await;
    let (good, bad) = (spawn("2"), spawn("13"));
    until("two jobs are queued", || store.pg().queued_writes() == 2).await;
    lock.batch_execute("ROLLBACK").await.unwrap();

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
        store.pg().writer_stats().failed_batches - before.failed_batches,
        1
    );
    let u = usage(&*store, &a, "api_calls", "2024-03-20T00:00:00Z").await;
    assert_eq!((u.value.to_string(), u.record_count), ("1".to_owned(), 1));
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

/// A batch that cannot get the locks it needs in time is answered 503 within
/// the operation timeout, stores nothing, and the writer goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_held_past_its_deadline_answers_unavailable_in_time() {
    let Some(backend) = Backend::postgres() else {
        return skip("a_batch_held_past_its_deadline_answers_unavailable_in_time");
    };
    let place = Place::fresh(&backend).await;
    let Place::Schema(schema) = &place else {
        unreachable!()
    };
    let settings = PgSettings {
        operation_timeout: Duration::from_millis(800),
        ..schema.settings()
    };
    let store = TestStore::on_with(&place, StoreConfig::default(), settings).await;
    store.load_catalog(&catalog()).await.unwrap();
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let lock = hold_writes(&store).await;
    let started = std::time::Instant::now();
    let answer = store
        .submit_usage(single(
            delta(&a, "api_calls", "1", "2024-03-02T00:00:00Z"),
            "2024-03-02T00:00:00Z",
        ))
        .await;
    assert!(
        matches!(answer, Err(StoreError::Unavailable(_))),
        "{answer:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    lock.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(store.count("SELECT count(*) FROM usage_records").await, 0);
    assert_eq!(
        submit(
            &store,
            delta(&a, "api_calls", "2", "2024-03-02T00:00:00Z"),
            "2024-03-02T00:00:01Z"
        )
        .await,
        Ok(())
    );
}
