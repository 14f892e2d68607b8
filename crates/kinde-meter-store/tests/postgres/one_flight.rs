//! Batches sent in one flight (`postgres/one_flight.rs`,
//! `docs/design.md#one-flight`): taken in the steady state, run again the
//! usual way when what the writer remembered is out of date (another server
//! moved a row, the terms changed, a row was deleted), never reordering a
//! delta against an absolute, idempotency keys stored as new or the batch run
//! the usual way, and settled when even the transaction id's answer is lost.

use std::time::Duration;

use kinde_meter_store::{
    Store, StoreConfig, StoreError, SubmissionKind, SubmissionOutcome, UsageSubmission,
};

use crate::common::*;
use crate::writer::{backend_waiting_on, block_commits_on, proxied};

/// (value, record count) of a feature's usage in March 2024.
async fn total(store: &TestStore, a: &kinde_meter_core::agreement::Agreement) -> (String, u64) {
    let u = usage(store, a, "api_calls", "2024-03-20T00:00:00Z").await;
    (u.value.to_string(), u.record_count)
}

/// Stores a delta of `value` to `api_calls` at second `s` of 2 March 2024,
/// also its time of receipt.
async fn add(store: &TestStore, a: &kinde_meter_core::agreement::Agreement, value: &str, s: u32) {
    let at = format!("2024-03-02T00:00:{s:02}Z");
    assert_eq!(
        submit(store, delta(a, "api_calls", value, &at), &at).await,
        Ok(())
    );
}

/// Stores `n` deltas of 1 to `api_calls` at second `s` of 2 March 2024 in
/// one batch submission, every one of them accepted.
async fn deltas_in_one_batch(
    store: &TestStore,
    a: &kinde_meter_core::agreement::Agreement,
    n: usize,
    s: u32,
) {
    let at = format!("2024-03-02T00:00:{s:02}Z");
    let records = (0..n)
        .map(|_| Ok(delta(a, "api_calls", "1", &at)))
        .collect();
    let answer = store
        .submit_usage(UsageSubmission {
            client_id: "client_a".to_owned(),
            idempotency: None,
            records,
            received_at: t(&at),
            kind: SubmissionKind::Batch,
        })
        .await;
    assert!(
        matches!(&answer, Ok(SubmissionOutcome::Processed(r)) if r.len() == n && r.iter().all(Result::is_ok)),
        "{answer:?}"
    );
}

/// Keyless deltas on a row the writer has just written go in one flight
/// once the first batch (the usual way) has shown the row to the writer; the
/// usage is exact and every record is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_single_records_go_in_one_flight() {
    let Some(backend) = Backend::postgres() else {
        return skip("steady_single_records_go_in_one_flight");
    };
    let store = open(&backend).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    for (s, value) in [(0, "1"), (1, "2.5"), (2, "3")] {
        add(&store, &a, value, s).await;
    }
    let stats = store.writer_stats();
    assert_eq!(stats.one_flight_batches, 2, "{stats:?}");
    assert_eq!(stats.stale_flights, 0, "{stats:?}");
    assert_eq!(total(&store, &a).await, ("6.5".to_owned(), 3));
    assert_eq!(
        store
            .count("SELECT count(DISTINCT seq) FROM usage_records")
            .await,
        3
    );
}

/// Batches larger than the first refill of sequence numbers: the stock grows
/// to four times the largest batch that asked for one flight, so that from
/// the third such batch on they go in one flight too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stock_grows_to_the_batches_that_need_it() {
    let Some(backend) = Backend::postgres() else {
        return skip("the_stock_grows_to_the_batches_that_need_it");
    };
    let store = open(&backend).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    for (i, expected) in [(0, 0), (1, 0), (2, 1), (3, 2)] {
        deltas_in_one_batch(&store, &a, 1500, i).await;
        assert_eq!(
            store.writer_stats().one_flight_batches,
            expected,
            "batch {i}"
        );
    }
    assert_eq!(total(&store, &a).await, ("6000".to_owned(), 6000));
}

/// The stock of sequence numbers is refilled by the flights themselves when
/// it runs low: after the first batch (the usual way, which learns the row),
/// every batch goes in one flight, however many records they take in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stock_is_refilled_in_flight() {
    let Some(backend) = Backend::postgres() else {
        return skip("the_stock_is_refilled_in_flight");
    };
    let store = open(&backend).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    // 30 batches of 100 records: three times the first refill (1 024).
    for i in 0..30 {
        deltas_in_one_batch(&store, &a, 100, i).await;
    }
    assert_eq!(store.writer_stats().one_flight_batches, 29);
    assert_eq!(total(&store, &a).await, ("3000".to_owned(), 3000));
    assert_eq!(
        store
            .count("SELECT count(DISTINCT seq) FROM usage_records")
            .await,
        3000
    );
}

/// Another server's record on the same row makes the next flight stale: it
/// is rolled back and run again the usual way, and no record is lost or
/// counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_moved_by_another_server_makes_the_flight_stale() {
    let Some(backend) = Backend::postgres() else {
        return skip("a_row_moved_by_another_server_makes_the_flight_stale");
    };
    let one = open(&backend).await;
    let two = one.reopen().await;
    let a = create(&one, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    add(&one, &a, "1", 1).await;
    add(&one, &a, "2", 2).await;
    assert_eq!(one.writer_stats().one_flight_batches, 1);
    add(&two, &a, "10", 3).await;
    add(&one, &a, "100", 4).await;
    let stats = one.writer_stats();
    assert_eq!(stats.stale_flights, 1, "{stats:?}");
    assert_eq!(stats.one_flight_batches, 1, "{stats:?}");
    assert_eq!(stats.failed_batches, 0, "{stats:?}");
    assert_eq!(total(&one, &a).await, ("113".to_owned(), 4));
    assert_eq!(one.count("SELECT count(*) FROM usage_records").await, 4);
}

/// A change to agreements or plans anywhere (here a new agreement made
/// through another server) makes the next flight stale, as it makes the
/// writer's cache stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terms_changed_elsewhere_make_the_flight_stale() {
    let Some(backend) = Backend::postgres() else {
        return skip("terms_changed_elsewhere_make_the_flight_stale");
    };
    let one = open(&backend).await;
    let two = one.reopen().await;
    let a = create(&one, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    add(&one, &a, "1", 1).await;
    create(&two, "other", "pro", "2024-03-01T00:00:00Z", 2).await;
    add(&one, &a, "2", 2).await;
    let stats = one.writer_stats();
    assert_eq!(stats.stale_flights, 1, "{stats:?}");
    assert_eq!(total(&one, &a).await, ("3".to_owned(), 2));
}

/// A record of 3, `edit` made to the aggregates behind the writer's back,
/// then a record of 4 that would go in one flight: it is stale, and the
/// batch run the usual way ends at `expected` (usage, record count).
async fn an_edit_makes_the_flight_stale(name: &str, edit: &str, expected: (&str, u64)) {
    let Some(backend) = Backend::postgres() else {
        return skip(name);
    };
    let store = open(&backend).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    add(&store, &a, "3", 1).await;
    assert_eq!(store.execute(edit).await, 1);
    add(&store, &a, "4", 2).await;
    let stats = store.writer_stats();
    assert_eq!(stats.stale_flights, 1, "{stats:?}");
    assert_eq!(total(&store, &a).await, (expected.0.to_owned(), expected.1));
}

/// An aggregate row deleted behind the writer's back: the flight updates no
/// row, and the batch run the usual way creates the row again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_deleted_behind_the_writer_s_back_makes_the_flight_stale() {
    an_edit_makes_the_flight_stale(
        "a_row_deleted_behind_the_writer_s_back_makes_the_flight_stale",
        "DELETE FROM usage_aggregates",
        ("4", 1),
    )
    .await;
}

/// An aggregate's usage edited behind the writer's back, its record count
/// unchanged: the row differs from what the writer remembered, and the batch
/// run the usual way adds to the edited usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_edited_behind_the_writer_s_back_makes_the_flight_stale() {
    an_edit_makes_the_flight_stale(
        "a_usage_edited_behind_the_writer_s_back_makes_the_flight_stale",
        "UPDATE usage_aggregates SET value = 50, deltas_after = 50",
        ("54", 2),
    )
    .await;
}

/// The usage the records alone give, in the order their instants and
/// sequence numbers put them: the latest absolute, plus the deltas after it.
async fn folded(store: &TestStore) -> i64 {
    store
        .count(
            "WITH a AS (SELECT effective_at_ns, seq, value FROM usage_records
                        WHERE meter_type = 'absolute'
                        ORDER BY effective_at_ns DESC, seq DESC LIMIT 1)
             SELECT (coalesce((SELECT value FROM a), 0)
                     + coalesce((SELECT sum(r.value) FROM usage_records r
                                 WHERE r.meter_type = 'delta'
                                   AND (NOT EXISTS (SELECT 1 FROM a)
                                        OR (r.effective_at_ns, r.seq)
                                           > (SELECT effective_at_ns, seq FROM a))), 0))::int8",
        )
        .await
}

/// Sequence numbers of one-flight records come from a stock taken in
/// advance. A delta sent in one flight, then another server's absolute at the
/// same instant: the absolute, arrived later, has a number above the stock's
/// and overrides the delta, in the aggregate and in the records alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_absolute_at_a_flights_instant_still_comes_after() {
    let Some(backend) = Backend::postgres() else {
        return skip("a_later_absolute_at_a_flights_instant_still_comes_after");
    };
    let one = open(&backend).await;
    let two = one.reopen().await;
    let a = create(&one, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let instant = "2024-03-02T12:00:00Z";
    let early = "2024-03-02T00:00:00Z";
    let at = |s: u32| format!("2024-03-03T00:00:{s:02}Z");
    assert_eq!(
        submit(&one, delta(&a, "api_calls", "1", early), &at(0)).await,
        Ok(())
    );
    assert_eq!(
        submit(&one, delta(&a, "api_calls", "7", instant), &at(1)).await,
        Ok(())
    );
    assert_eq!(one.writer_stats().one_flight_batches, 1);
    assert_eq!(
        submit(&two, absolute(&a, "api_calls", "100", instant), &at(2)).await,
        Ok(())
    );
    assert_eq!(total(&one, &a).await, ("100".to_owned(), 3));
    assert_eq!(folded(&one).await, 100);
}

/// A delta at the instant of its row's latest absolute goes the usual way: its
/// number, fresh, is above the absolute's, so it counts after it in the
/// records too (one from the stock, taken before the absolute's, would fold
/// before it while the aggregate counted it after). Deltas at other instants
/// go in one flight on either side of the absolute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_at_its_rows_latest_absolute_goes_the_usual_way() {
    let Some(backend) = Backend::postgres() else {
        return skip("a_delta_at_its_rows_latest_absolute_goes_the_usual_way");
    };
    let store = open(&backend).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let instant = "2024-03-02T12:00:00Z";
    let at = |s: u32| format!("2024-03-03T00:00:{s:02}Z");
    // The stock is taken here, before the absolute's number.
    assert_eq!(
        submit(
            &store,
            delta(&a, "api_calls", "2", "2024-03-02T00:00:00Z"),
            &at(0)
        )
        .await,
        Ok(())
    );
    assert_eq!(
        submit(&store, absolute(&a, "api_calls", "100", instant), &at(1)).await,
        Ok(())
    );
    assert_eq!(
        submit(&store, delta(&a, "api_calls", "1", instant), &at(2)).await,
        Ok(())
    );
    assert_eq!(store.writer_stats().one_flight_batches, 0);
    for (value, when, received) in [
        ("5", "2024-03-02T06:00:00Z", 3),
        ("3", "2024-03-02T18:00:00Z", 4),
    ] {
        assert_eq!(
            submit(&store, delta(&a, "api_calls", value, when), &at(received)).await,
            Ok(())
        );
    }
    assert_eq!(store.writer_stats().one_flight_batches, 2);
    assert_eq!(total(&store, &a).await, ("104".to_owned(), 5));
    assert_eq!(folded(&store).await, 104);
}

/// A single record on `api_calls` of `a` at second `s` of 2 March 2024 with
/// the idempotency key `key`.
fn keyed(
    a: &kinde_meter_core::agreement::Agreement,
    key: &str,
    value: &str,
    s: u32,
) -> UsageSubmission {
    let at = format!("2024-03-02T00:00:{s:02}Z");
    let record = delta(a, "api_calls", value, &at);
    UsageSubmission {
        idempotency: Some(claim(key, &record)),
        ..single(record, &at)
    }
}

/// Keyed single records go in one flight too, their keys stored with their
/// outcomes; a retry of a stored key makes its flight fail and run the usual
/// way, which replays the outcome (or refuses the key reused for another
/// record); nothing is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_go_in_one_flight_and_a_retry_is_replayed() {
    let Some(backend) = Backend::postgres() else {
        return skip("keyed_records_go_in_one_flight_and_a_retry_is_replayed");
    };
    let store = open(&backend).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    add(&store, &a, "1", 0).await;
    let processed = SubmissionOutcome::Processed(vec![Ok(())]);
    assert_eq!(
        store.submit_usage(keyed(&a, "k1", "2", 1)).await.unwrap(),
        processed
    );
    assert_eq!(store.writer_stats().one_flight_batches, 1);
    assert_eq!(
        store.submit_usage(keyed(&a, "k1", "2", 1)).await.unwrap(),
        SubmissionOutcome::Replayed(vec![Ok(())])
    );
    assert_eq!(
        store.submit_usage(keyed(&a, "k1", "3", 1)).await.unwrap(),
        SubmissionOutcome::KeyReused
    );
    // After a key that was not new the writer relearns its rows (the reuse,
    // the usual way), then flies again.
    for (key, value, s) in [("k2", "4", 2), ("k3", "5", 3)] {
        assert_eq!(
            store.submit_usage(keyed(&a, key, value, s)).await.unwrap(),
            processed
        );
    }
    let stats = store.writer_stats();
    assert_eq!(stats.one_flight_batches, 3, "{stats:?}");
    assert_eq!(stats.stale_flights, 0, "{stats:?}");
    assert_eq!(stats.failed_batches, 0, "{stats:?}");
    assert_eq!(total(&store, &a).await, ("12".to_owned(), 4));
    assert_eq!(
        store
            .count("SELECT count(*) FROM idempotency_keys WHERE outcome_json IS NOT NULL")
            .await,
        3
    );
    assert_eq!(
        store.submit_usage(keyed(&a, "k3", "5", 3)).await.unwrap(),
        SubmissionOutcome::Replayed(vec![Ok(())])
    );
    assert_eq!(total(&store, &a).await, ("12".to_owned(), 4));
}

/// Answers `first`, sent while the advisory lock `key` is held on `holder`
/// (so that its COMMIT waits, `block_commits_on`), and then `queued`, sent
/// while it waits: they go together in the writer's next batch once the lock
/// is let go.
async fn behind(
    store: &TestStore,
    holder: &tokio_postgres::Client,
    key: i64,
    first: UsageSubmission,
    queued: Vec<UsageSubmission>,
) -> (SubmissionOutcome, Vec<SubmissionOutcome>) {
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .await
        .unwrap();
    let n = queued.len();
    let rest = async {
        backend_waiting_on(holder, key).await;
        let answers = futures::future::join_all(queued.into_iter().map(|s| store.submit_usage(s)));
        let release = async {
            until("the submissions queued", || store.queued_writes() == n).await;
            holder
                .execute("SELECT pg_advisory_unlock($1)", &[&key])
                .await
                .unwrap();
        };
        tokio::join!(answers, release).0
    };
    let (first, rest) = tokio::join!(store.submit_usage(first), rest);
    (
        first.unwrap(),
        rest.into_iter().map(Result::unwrap).collect(),
    )
}

/// A keyed single record that fails, in a batch sent in one flight, leaves
/// no key (its retry is processed again, as the usual way's); a key already
/// stored makes a batch that would have refused its record fall back to the
/// usual way, which answers that the key was reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_keyed_record_in_a_flight_leaves_no_key() {
    let Some(backend) = Backend::postgres() else {
        return skip("a_failed_keyed_record_in_a_flight_leaves_no_key");
    };
    let store = open(&backend).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    add(&store, &a, "1", 0).await;
    let processed = SubmissionOutcome::Processed(vec![Ok(())]);
    assert_eq!(
        store
            .submit_usage(keyed(&a, "stored", "2", 1))
            .await
            .unwrap(),
        processed
    );
    let failing = |k: &str| {
        let record = delta(&a, "no_such_feature", "1", "2024-03-02T00:00:05Z");
        UsageSubmission {
            idempotency: Some(claim(k, &record)),
            ..single(record, "2024-03-02T00:00:05Z")
        }
    };
    let key = 0x6b6d_7434;
    let holder = block_commits_on(&store, key).await;
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .unwrap();
    let (first, rest) = behind(
        &store,
        &holder,
        key,
        keyed(&a, "k4", "4", 4),
        vec![failing("fails"), keyed(&a, "k6", "6", 6)],
    )
    .await;
    assert_eq!(first, processed);
    let failed = rest[0].clone();
    assert!(
        matches!(&failed, SubmissionOutcome::Processed(r) if r.len() == 1 && r[0].is_err()),
        "{failed:?}"
    );
    assert_eq!(rest[1], processed);
    assert_eq!(store.writer_stats().one_flight_batches, 3);
    assert_eq!(
        store
            .count("SELECT count(*) FROM idempotency_keys WHERE key = 'fails'")
            .await,
        0
    );
    assert_eq!(
        store.submit_usage(failing("fails")).await.unwrap(),
        failed,
        "a failed record's key is not remembered"
    );

    let (first, rest) = behind(
        &store,
        &holder,
        key,
        keyed(&a, "k7", "7", 7),
        vec![failing("stored"), keyed(&a, "k8", "8", 8)],
    )
    .await;
    assert_eq!(first, processed);
    assert_eq!(rest, [SubmissionOutcome::KeyReused, processed]);
    let stats = store.writer_stats();
    assert_eq!(stats.one_flight_batches, 4, "{stats:?}");
    assert_eq!(stats.failed_batches, 0, "{stats:?}");
    assert_eq!(total(&store, &a).await, ("28".to_owned(), 6));
}

/// An agreement on `store`, a store through a proxy on the same schema
/// ([`proxied`]), and one record through it (the usual way), so that the
/// next record goes in one flight.
async fn proxied_after_one_record(
    store: &TestStore,
) -> Option<(
    kinde_meter_core::agreement::Agreement,
    crate::writer::Proxy,
    kinde_meter_store::postgres::PgStore,
)> {
    let a = create(store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let (proxy, proxied) = proxied(store).await?;
    let first = delta(&a, "api_calls", "1", "2024-03-02T00:00:00Z");
    assert!(matches!(
        proxied.submit_usage(single(first, "2024-03-02T00:00:00Z")).await,
        Ok(SubmissionOutcome::Processed(r)) if r == [Ok(())]
    ));
    Some((a, proxy, proxied))
}

/// A flight that committed while everything PostgreSQL said about it was
/// lost (the transaction id too): the writer ends the backend, finds the
/// batch's first record, and acknowledges it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flight_committed_with_every_answer_lost_is_acknowledged() {
    let Some(backend) = Backend::postgres() else {
        return skip("a_flight_committed_with_every_answer_lost_is_acknowledged");
    };
    let store = TestStore::fresh(&backend, StoreConfig::default()).await;
    let Some((a, proxy, proxied)) = proxied_after_one_record(&store).await else {
        return skip("a_flight_committed_with_every_answer_lost_is_acknowledged (not TCP)");
    };
    proxy.swallow_all();
    let answer = {
        let record = delta(&a, "api_calls", "7", "2024-03-02T00:00:01Z");
        let submitted = proxied.submit_usage(single(record, "2024-03-02T00:00:01Z"));
        let lost = async {
            while store.count("SELECT count(*) FROM usage_records").await < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            proxy.cut_swallowing();
        };
        tokio::join!(submitted, lost).0
    };
    assert!(
        matches!(&answer, Ok(SubmissionOutcome::Processed(r)) if r == &[Ok(())]),
        "{answer:?}"
    );
    assert_eq!(proxied.writer_stats().one_flight_batches, 1);
    assert_eq!(store.count("SELECT count(*) FROM usage_records").await, 2);
    assert_eq!(total(&store, &a).await, ("8".to_owned(), 2));
}

/// A flight whose every answer is lost while its COMMIT waits (a deferred
/// trigger holds it): the writer ends the backend, which aborts the
/// transaction, finds no record, and answers 503 with nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flight_lost_before_committing_answers_unavailable() {
    let Some(backend) = Backend::postgres() else {
        return skip("a_flight_lost_before_committing_answers_unavailable");
    };
    let store = TestStore::fresh(&backend, StoreConfig::default()).await;
    let Some((a, proxy, proxied)) = proxied_after_one_record(&store).await else {
        return skip("a_flight_lost_before_committing_answers_unavailable (not TCP)");
    };
    let key = 0x6b6d_7433;
    let holder = block_commits_on(&store, key).await;
    proxy.swallow_all();
    let answer = {
        let record = delta(&a, "api_calls", "7", "2024-03-02T00:00:01Z");
        let submitted = proxied.submit_usage(single(record, "2024-03-02T00:00:01Z"));
        let lost = async {
            backend_waiting_on(&holder, key).await;
            proxy.cut_swallowing();
        };
        tokio::join!(submitted, lost).0
    };
    assert!(
        matches!(answer, Err(StoreError::Unavailable(_))),
        "{answer:?}"
    );
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .unwrap();
    assert_eq!(store.count("SELECT count(*) FROM usage_records").await, 1);
    assert_eq!(total(&store, &a).await, ("1".to_owned(), 1));
}
