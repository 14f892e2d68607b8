//! The PostgreSQL writer's own behaviour: a batch held past its deadline. The
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
