//! Several stores on one schema, standing for several servers behind a load
//! balancer: concurrent writers through all of them give exactly the answers
//! of a single process, and one idempotency key stores one record.

use std::{collections::HashMap, sync::Arc};

use jiff::{SignedDuration, Timestamp};
use kinde_meter_core::{
    aggregate::{self, Entry, MeterType, OrderKey},
    agreement::Agreement,
    request::UsageRecord,
    value::MeterValue,
};
use kinde_meter_store::{Store, SubmissionKind, SubmissionOutcome, UsageSubmission};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::common::*;

const FEATURES: [&str; 2] = ["api_calls", "storage_gb"];

/// A workload: records over a few agreements and features, deltas and
/// absolutes mixed, each with its own timestamp (so the rule's order does not
/// depend on arrival, and any correct processing gives one answer), in a
/// shuffled arrival order, grouped into single and batch submissions.
fn workload(agreements: &[Agreement], records: usize, seed: u64) -> Vec<Vec<UsageRecord>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let start: Timestamp = "2024-03-01T00:00:00Z".parse().unwrap();
    // Distinct instants spread over the period, handed out at random.
    let mut instants: Vec<i64> = (0..records as i64).map(|i| i * 997 + 13).collect();
    for i in (1..instants.len()).rev() {
        instants.swap(i, rng.random_range(0..=i));
    }
    let mut out = Vec::new();
    let mut left = instants.into_iter();
    while left.len() > 0 {
        let size = if rng.random_bool(0.7) {
            1
        } else {
            rng.random_range(2..8)
        };
        let mut submission = Vec::new();
        for secs in left.by_ref().take(size) {
            let agreement = &agreements[rng.random_range(0..agreements.len())];
            let feature = FEATURES[rng.random_range(0..FEATURES.len())];
            let value = format!(
                "{}.{:03}",
                rng.random_range(0..1000),
                rng.random_range(0..1000)
            );
            let at = start
                .checked_add(SignedDuration::from_secs(secs))
                .unwrap()
                .to_string();
            submission.push(if rng.random_bool(0.2) {
                absolute(agreement, feature, &value, &at)
            } else {
                delta(agreement, feature, &value, &at)
            });
        }
        out.push(submission);
    }
    out
}

fn submission(records: Vec<UsageRecord>, client: &str) -> UsageSubmission {
    UsageSubmission {
        client_id: client.to_owned(),
        idempotency: None,
        kind: if records.len() == 1 {
            SubmissionKind::Single
        } else {
            SubmissionKind::Batch
        },
        records: records.into_iter().map(Ok).collect(),
        received_at: t("2024-03-20T00:00:00Z"),
    }
}

/// The usage each (agreement, feature) must have: the billing rule applied by
/// the core's reference fold, in one process.
fn reference(work: &[Vec<UsageRecord>]) -> HashMap<(String, String), (String, u64)> {
    let mut entries: HashMap<(String, String), Vec<Entry>> = HashMap::new();
    for (seq, r) in work.iter().flatten().enumerate() {
        entries
            .entry((r.agreement_id.to_string(), r.feature_code.to_string()))
            .or_default()
            .push(Entry {
                key: OrderKey {
                    effective_at: r.timestamp.unwrap(),
                    seq: seq as i64,
                },
                meter_type: r.meter_type,
                value: r.value,
                received_at: t("2024-03-20T00:00:00Z"),
            });
    }
    entries
        .into_iter()
        .map(|(k, es)| {
            let value = aggregate::fold(&es).unwrap().to_string();
            (k, (value, es.len() as u64))
        })
        .collect()
}

/// Two servers, eight concurrent writers each, 1500 records over three
/// agreements: the maintained usage equals the single-process reference, the
/// raw records fold to it too (with the arrival sequence the database gave),
/// and no batch failed (no deadlock between the servers' lock orders).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_with_concurrent_writers_match_a_single_process_reference() {
    let Some(backend) = Backend::postgres() else {
        return skip("two_servers_with_concurrent_writers_match_a_single_process_reference");
    };
    let one = Arc::new(open(&backend).await);
    let two = Arc::new(one.reopen().await);
    let mut agreements = Vec::new();
    for (i, store) in [&one, &two, &one].iter().enumerate() {
        let customer = format!("cust_{i}");
        agreements.push(create(&***store, &customer, "pro", "2024-03-01T00:00:00Z", i as u8).await);
    }
    let work = workload(&agreements, 1500, 7);
    let expected = reference(&work);

    let mut lanes: Vec<Vec<UsageSubmission>> = (0..16).map(|_| Vec::new()).collect();
    for (i, records) in work.iter().enumerate() {
        lanes[i % 16].push(submission(records.clone(), &format!("client_{}", i % 3)));
    }
    let tasks: Vec<_> = lanes
        .into_iter()
        .enumerate()
        .map(|(i, lane)| {
            let store = if i % 2 == 0 { one.clone() } else { two.clone() };
            tokio::spawn(async move {
                for s in lane {
                    let n = s.records.len();
                    let outcome = store.submit_usage(s).await.unwrap();
                    assert_eq!(outcome, SubmissionOutcome::Processed(vec![Ok(()); n]));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    for a in &agreements {
        for feature in FEATURES {
            let want = expected
                .get(&(a.id.to_string(), feature.to_owned()))
                .cloned()
                .unwrap_or(("0".to_owned(), 0));
            for store in [&one, &two] {
                let got = usage(&**store, a, feature, "2024-03-15T00:00:00Z").await;
                assert_eq!(
                    (got.value.to_string(), got.record_count),
                    want,
                    "{a:?} {feature}"
                );
            }
        }
    }
    assert_eq!(one.count("SELECT count(*) FROM usage_records").await, 1500);
    // The stored records, in the order the database gave them, fold to the
    // maintained aggregates: ties aside, arrival order never mattered.
    let conn = one.schema().connect().await.unwrap();
    let rows = conn
        .query(
            "SELECT agreement_id, feature_code, effective_at_ns, seq, meter_type,
                    trim_scale(value)::text FROM usage_records",
            &[],
        )
        .await
        .unwrap();
    let mut folded: HashMap<(String, String), Vec<Entry>> = HashMap::new();
    for r in rows {
        folded.entry((r.get(0), r.get(1))).or_default().push(Entry {
            key: OrderKey {
                effective_at: Timestamp::from_nanosecond(i128::from(r.get::<_, i64>(2))).unwrap(),
                seq: r.get(3),
            },
            meter_type: if r.get::<_, &str>(4) == "delta" {
                MeterType::Delta
            } else {
                MeterType::Absolute
            },
            value: MeterValue::parse(r.get(5)).unwrap(),
            received_at: t("2024-03-20T00:00:00Z"),
        });
    }
    for ((agreement, feature), entries) in folded {
        let want = aggregate::fold(&entries).unwrap().to_string();
        assert_eq!(want, expected[&(agreement, feature)].0);
    }
    for store in [&one, &two] {
        let stats = store.writer_stats();
        eprintln!("{stats:?}");
        assert_eq!(stats.failed_batches, 0, "{stats:?}");
        assert!(stats.batches > 0, "{stats:?}");
    }
}

/// The same keyed request sent through two servers at once, repeatedly: one
/// is processed, every other answer is its replay, and one record is stored
/// per key. A keyed single record that fails is stored by neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_raced_through_two_servers_stores_one_record() {
    let Some(backend) = Backend::postgres() else {
        return skip("the_same_idempotency_key_raced_through_two_servers_stores_one_record");
    };
    let one = Arc::new(open(&backend).await);
    let two = Arc::new(one.reopen().await);
    let a = create(&*one, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let rec = delta(&a, "api_calls", "2", "2024-03-02T00:00:00Z");
    const KEYS: usize = 25;
    for k in 0..KEYS {
        let key = format!("key-{k}");
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let store = if i % 2 == 0 { one.clone() } else { two.clone() };
                let s = UsageSubmission {
                    idempotency: Some(claim(&key, &rec)),
                    ..single(rec.clone(), "2024-03-02T00:00:00Z")
                };
                tokio::spawn(async move {
                    let key = s.idempotency.as_ref().unwrap().key.as_str().to_owned();
                    store
                        .submit_usage(s)
                        .await
                        .unwrap_or_else(|e| panic!("key {key}: {e}"))
                })
            })
            .collect();
        // Every answer, with the store that gave it, so that a failure says
        // what each request got.
        let mut outcomes = Vec::new();
        for (i, task) in tasks.into_iter().enumerate() {
            outcomes.push((if i % 2 == 0 { "one" } else { "two" }, task.await.unwrap()));
        }
        let count =
            |want: fn(&SubmissionOutcome) -> bool| outcomes.iter().filter(|(_, o)| want(o)).count();
        let processed =
            count(|o| matches!(o, SubmissionOutcome::Processed(r) if r == &vec![Ok(())]));
        let replayed = count(|o| matches!(o, SubmissionOutcome::Replayed(r) if r == &vec![Ok(())]));
        assert_eq!(
            (processed, replayed),
            (1, 5),
            "key {key}: {outcomes:?}; writers: {:?} {:?}",
            one.writer_stats(),
            two.writer_stats()
        );
    }
    let u = usage(&*one, &a, "api_calls", "2024-03-20T00:00:00Z").await;
    assert_eq!(
        (u.value.to_string(), u.record_count),
        ((2 * KEYS).to_string(), KEYS as u64)
    );
    assert_eq!(
        one.count("SELECT count(*) FROM idempotency_keys WHERE outcome_json IS NOT NULL")
            .await,
        KEYS as i64
    );

    // A failing single record raced: both answer the failure, no key is kept.
    let missing = record(
        "agreement_missing",
        "api_calls",
        "1",
        MeterType::Delta,
        None,
    );
    let keyed = |store: Arc<TestStore>| {
        let s = UsageSubmission {
            idempotency: Some(claim("failing", &missing)),
            ..single(missing.clone(), "2024-03-02T00:00:00Z")
        };
        tokio::spawn(async move { store.submit_usage(s).await.unwrap() })
    };
    let (x, y) = (keyed(one.clone()), keyed(two.clone()));
    for outcome in [x.await.unwrap(), y.await.unwrap()] {
        assert!(
            matches!(&outcome, SubmissionOutcome::Processed(r) if r[0].is_err()),
            "{outcome:?}"
        );
    }
    assert_eq!(
        one.count("SELECT count(*) FROM idempotency_keys WHERE key = 'failing'")
            .await,
        0
    );
    assert_eq!(
        one.count("SELECT count(*) FROM usage_records").await,
        KEYS as i64
    );
}

/// Agreements created for one customer through two servers at once: the
/// customer ends with exactly one active agreement, the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_agreements_of_one_customer_leave_one_active() {
    let Some(backend) = Backend::postgres() else {
        return skip("concurrent_agreements_of_one_customer_leave_one_active");
    };
    let one = Arc::new(open(&backend).await);
    let two = Arc::new(one.reopen().await);
    let tasks: Vec<_> = (0..10u8)
        .map(|i| {
            let store = if i % 2 == 0 { one.clone() } else { two.clone() };
            tokio::spawn(
                async move { create(&*store, "cust", "pro", "2024-03-01T00:00:00Z", i).await },
            )
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        one.count(
            "SELECT count(*) FROM agreements WHERE customer_id = 'cust' AND expires_on_ns IS NULL"
        )
        .await,
        1
    );
    assert_eq!(
        one.count(
            "SELECT count(*) FROM agreements WHERE customer_id = 'cust' AND expires_on_ns IS NULL
               AND seq = (SELECT max(seq) FROM agreements)"
        )
        .await,
        1
    );
}

/// Two servers racing on one agreement's enforced limit, each with many
/// concurrent writers (singles and batches, deltas and absolutes): the usage
/// never passes the limit, equals what the accepted records fold to, and every
/// refusal is ENTITLEMENT_LIMIT_EXCEEDED. The decision is taken under the
/// aggregate row's lock, which both servers' writers take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_racing_on_an_enforced_limit_never_overshoot() {
    let Some(backend) = Backend::postgres() else {
        return skip("two_servers_racing_on_an_enforced_limit_never_overshoot");
    };
    let one = Arc::new(open(&backend).await);
    let two = Arc::new(one.reopen().await);
    let a = create(&*one, "cust", "capped", "2024-03-01T00:00:00Z", 1).await;
    let values = ["0.5", "1", "2.25", "3", "7", "0.000000001", "4.75"];
    // Distinct instants, so that the accepted records fold to one answer.
    let at = |i: usize| {
        t("2024-03-02T00:00:00Z")
            .checked_add(SignedDuration::from_secs(i as i64))
            .unwrap()
            .to_string()
    };
    let tasks: Vec<_> = (0..16)
        .map(|lane| {
            let store = if lane % 2 == 0 {
                one.clone()
            } else {
                two.clone()
            };
            let a = a.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for j in 0..12 {
                    let i = lane * 100 + j;
                    let value = values[i % values.len()];
                    let mut records = vec![delta(&a, "calls", value, &at(i))];
                    if j % 3 == 0 {
                        records.push(delta(&a, "calls", "1.5", &at(i + 50)));
                    }
                    if lane == 5 && j == 6 {
                        // An absolute in the middle of the race lowers the usage.
                        records = vec![absolute(&a, "calls", "10", &at(i))];
                    }
                    let outcome = store
                        .submit_usage(submission(records.clone(), "client"))
                        .await
                        .unwrap();
                    let SubmissionOutcome::Processed(results) = outcome else {
                        panic!("{outcome:?}")
                    };
                    out.extend(records.into_iter().zip(results));
                }
                out
            })
        })
        .collect();
    let mut accepted: Vec<UsageRecord> = Vec::new();
    let mut refused = 0;
    for task in tasks {
        for (record, result) in task.await.unwrap() {
            match result {
                Ok(()) => accepted.push(record),
                Err(failure) => {
                    assert_eq!(
                        failure.code,
                        kinde_meter_core::ErrorCode::EntitlementLimitExceeded
                    );
                    refused += 1;
                }
            }
        }
    }
    assert!(refused > 0, "the workload passes the limit");
    let want = reference(&[accepted.clone()])[&(a.id.to_string(), "calls".to_owned())].clone();
    for store in [&one, &two] {
        let got = usage(&**store, &a, "calls", "2024-03-15T00:00:00Z").await;
        assert_eq!((got.value.to_string(), got.record_count), want);
        assert!(
            got.value <= kinde_meter_core::value::UsageTotal::parse("100").unwrap(),
            "{}",
            got.value
        );
    }
    assert_eq!(
        one.count("SELECT count(*) FROM usage_records").await,
        accepted.len() as i64
    );
    for store in [&one, &two] {
        assert_eq!(store.writer_stats().failed_batches, 0);
    }
}

/// The live usage one server answers includes what another server committed
/// a moment before: it reads the database, not a cache of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entitlements_through_one_server_see_another_server_s_records_at_once() {
    let Some(backend) = Backend::postgres() else {
        return skip("entitlements_through_one_server_see_another_server_s_records_at_once");
    };
    let one = Arc::new(open(&backend).await);
    let two = Arc::new(one.reopen().await);
    let a = create(&*one, "cust", "capped", "2024-03-01T00:00:00Z", 1).await;
    let customer = kinde_meter_core::ids::CustomerId::parse("cust").unwrap();
    let now = t("2024-03-05T00:00:00Z");
    for (i, value) in ["5", "2.5", "90"].iter().enumerate() {
        let received = format!("2024-03-04T00:00:0{i}Z");
        assert_eq!(
            submit(&*two, delta(&a, "calls", value, &received), &received).await,
            Ok(())
        );
        let e = one
            .customer_entitlements(&customer, now, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.usage.usage[0].record_count, i as u64 + 1);
    }
    let e = one
        .customer_entitlements(&customer, now, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.usage.usage[0].value.to_string(), "97.5");
    // And a refusal through one server is decided on the other's records.
    let refused = submit(
        &*one,
        delta(&a, "calls", "3", "2024-03-04T00:00:09Z"),
        "2024-03-04T00:00:09Z",
    )
    .await;
    assert_eq!(
        refused.unwrap_err().code,
        kinde_meter_core::ErrorCode::EntitlementLimitExceeded
    );
}

/// Checks and usage reads through one server, which remember the agreements
/// and plans they read (`postgres/terms.rs`), follow a catalog another server
/// loads and a plan changed by hand in the database, at once: every change
/// to those tables moves `terms_version`, which each remembered read checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_through_one_server_follow_plans_changed_elsewhere() {
    let Some(backend) = Backend::postgres() else {
        return skip("checks_through_one_server_follow_plans_changed_elsewhere");
    };
    let one = open(&backend).await;
    let two = one.reopen().await;
    let a = create(&one, "cust", "capped", "2024-03-01T00:00:00Z", 1).await;
    let customer = kinde_meter_core::ids::CustomerId::parse("cust").unwrap();
    let now = t("2024-03-05T00:00:00Z");
    let limit_of_calls = |e: &kinde_meter_store::CustomerEntitlements| {
        e.plan
            .features
            .iter()
            .find(|f| f.code.as_str() == "calls")
            .and_then(|f| f.limit_max)
    };
    let check = || async {
        one.customer_entitlements(&customer, now, None)
            .await
            .unwrap()
            .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(limit_of_calls(&check().await), Some(100));
        assert_eq!(
            usage(&one, &a, "soft", "2024-03-05T00:00:00Z")
                .await
                .record_count,
            0
        );
    }

    two.load_catalog(&changed_catalog()).await.unwrap();
    assert_eq!(
        limit_of_calls(&check().await),
        Some(50),
        "another server's catalog"
    );
    let gone = one
        .read_usage(kinde_meter_store::UsageQuery {
            agreement_id: a.id.clone(),
            feature_code: Some(kinde_meter_core::ids::FeatureCode::parse("soft").unwrap()),
            at: now,
        })
        .await;
    assert!(
        matches!(
            gone,
            Err(kinde_meter_store::ReadUsageError::FeatureNotFound)
        ),
        "{gone:?}"
    );

    assert_eq!(limit_of_calls(&check().await), Some(50));
    one.execute(
        "UPDATE plan_features SET limit_max = 70 WHERE plan_code = 'capped' AND code = 'calls'",
    )
    .await;
    assert_eq!(
        limit_of_calls(&check().await),
        Some(70),
        "a change made by hand"
    );
}
