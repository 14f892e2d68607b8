//! The PostgreSQL writer's own behaviour: a batch held past its deadline, a
//! COMMIT that runs past it. The
//! writer's contract (bounded queue, group commit, failed batches) is tested on
//! every backend in `contract/writer.rs`.

use std::time::Duration;

use kinde_meter_store::{PgSettings, Store, StoreConfig, StoreError};

use crate::common::*;

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
    let held = store.hold_writes().await;
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
    held.release().await;
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

/// A batch whose COMMIT is still running when its deadline passes is waited
/// for, not answered 503: the work before COMMIT ends in time, COMMIT (slowed
/// here by a deferred trigger) takes it past the deadline, and the record is
/// both stored and acknowledged. Before, the writer gave up at the deadline and
/// answered "nothing stored" for a batch PostgreSQL then committed (found by
/// `kinde-meter bench` at 256 connections: stored usage exceeded acknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_running_past_the_deadline_is_waited_for() {
    let Some(backend) = Backend::postgres() else {
        return skip("a_commit_running_past_the_deadline_is_waited_for");
    };
    let place = Place::fresh(&backend).await;
    let Place::Schema(schema) = &place else {
        unreachable!()
    };
    let settings = PgSettings {
        operation_timeout: Duration::from_millis(1500),
        ..schema.settings()
    };
    let store = TestStore::on_with(&place, StoreConfig::default(), settings).await;
    store.load_catalog(&catalog()).await.unwrap();
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    // 0.8 s inside the INSERT (before COMMIT), 1.2 s inside COMMIT: each
    // statement within the 1.5 s statement timeout, together past the deadline.
    store
        .schema()
        .connect()
        .await
        .unwrap()
        .batch_execute(
            "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN PERFORM pg_sleep(0.8); RETURN NEW; END $$;
             CREATE TRIGGER slow_insert BEFORE INSERT ON usage_records
                 FOR EACH ROW EXECUTE FUNCTION slow_insert();
             CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN PERFORM pg_sleep(1.2); RETURN NULL; END $$;
             CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON usage_records
                 DEFERRABLE INITIALLY DEFERRED
                 FOR EACH ROW EXECUTE FUNCTION slow_commit();",
        )
        .await
        .unwrap();
    let answer = submit(
        &store,
        delta(&a, "api_calls", "7", "2024-03-02T00:00:00Z"),
        "2024-03-02T00:00:00Z",
    )
    .await;
    assert_eq!(answer, Ok(()));
    assert_eq!(store.count("SELECT count(*) FROM usage_records").await, 1);
}
