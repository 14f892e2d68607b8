//! How fast the PostgreSQL write path takes records, measured and printed (not
//! asserted: the numbers depend on the machine). Ignored by default; run with
//! `cargo test -p kinde-meter-store --test postgres -- --ignored --nocapture throughput`.

use std::{sync::Arc, time::Instant};

use kinde_meter_store::{Store, SubmissionKind, SubmissionOutcome, UsageSubmission};

use crate::common::*;

/// Records per measurement.
const RECORDS: usize = 20_000;

/// Submits `RECORDS` records over 10 agreements (both metered features of
/// `pro`, one of them with a limit and thresholds) as submissions of `size`
/// records from `lanes` concurrent submitters; returns records per second.
async fn measure(store: &Arc<TestStore>, size: usize, lanes: usize, tag: u8) -> f64 {
    let mut agreements = Vec::new();
    for i in 0..10u8 {
        agreements.push(
            create(
                &**store,
                &format!("cust_{tag}_{i}"),
                "pro",
                "2024-03-01T00:00:00Z",
                tag * 10 + i,
            )
            .await,
        );
    }
    let agreements = Arc::new(agreements);
    let per_lane = RECORDS / lanes;
    let started = Instant::now();
    let tasks: Vec<_> = (0..lanes)
        .map(|lane| {
            let store = store.clone();
            let agreements = agreements.clone();
            tokio::spawn(async move {
                let mut done = 0;
                while done < per_lane {
                    let n = size.min(per_lane - done);
                    let records = (0..n)
                        .map(|i| {
                            let k = lane * per_lane + done + i;
                            let a = &agreements[k % agreements.len()];
                            let feature = if k.is_multiple_of(3) {
                                "storage_gb"
                            } else {
                                "api_calls"
                            };
                            Ok(delta(a, feature, "0.001", "2024-03-02T00:00:00Z"))
                        })
                        .collect();
                    let s = UsageSubmission {
                        client_id: "client_a".to_owned(),
                        idempotency: None,
                        kind: if n == 1 {
                            SubmissionKind::Single
                        } else {
                            SubmissionKind::Batch
                        },
                        records,
                        received_at: t("2024-03-02T00:00:01Z"),
                    };
                    let outcome = store.submit_usage(s).await.unwrap();
                    assert_eq!(outcome, SubmissionOutcome::Processed(vec![Ok(()); n]));
                    done += n;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    RECORDS as f64 / started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored --nocapture"]
async fn throughput_of_the_write_path() {
    let Some(backend) = Backend::postgres() else {
        return skip("throughput_of_the_write_path");
    };
    let store = Arc::new(open(&backend).await);
    // Warm up connections and statements.
    measure(&store, 100, 4, 0).await;
    let batches = measure(&store, 100, 8, 1).await;
    let singles = measure(&store, 1, 64, 2).await;
    eprintln!(
        "PostgreSQL write path: {RECORDS} records in batches of 100 (8 submitters): \
         {batches:.0} records/s; single records (64 submitters): {singles:.0} records/s; {:?}",
        store.writer_stats()
    );
}
