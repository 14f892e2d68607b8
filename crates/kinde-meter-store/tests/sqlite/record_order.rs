//! The records' period order, filed in chunks (docs/design.md#record-order):
//! every chunk size gives the right answers (the core's plain fold), whether
//! the records a read needs are filed, in the unfiled tail or split between
//! both.

use kinde_meter_core::{
    aggregate::{Entry, MeterType, OrderKey, fold},
    agreement::Agreement,
    ids::FeatureCode,
    value::MeterValue,
};
use kinde_meter_store::{RecordsQuery, Store, StoreConfig, StoredUsageRecord};

use crate::common::*;

/// 1: everything filed at every commit; 1 000 000: nothing ever filed.
const CHUNKS: [usize; 5] = [1, 2, 3, 7, 1_000_000];

async fn store_with_chunk(chunk: usize) -> TestStore {
    TestStore::fresh(
        &Backend::Sqlite,
        StoreConfig {
            record_order_chunk: chunk,
            ..StoreConfig::default()
        },
    )
    .await
}

/// A history of deltas and absolutes of two features in which most absolutes
/// arrive late, stamped a few hours before the records just stored, so that
/// each needs the sum of the deltas after it: the last few records, filed,
/// unfiled or both (xorshift, so every run replays it).
fn history() -> Vec<(bool, &'static str, String, String)> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let start = t("2024-03-02T00:00:00Z");
    (0..RECORDS)
        .map(|i| {
            let is_absolute = next() % 4 == 0;
            let feature = if next() % 3 == 0 {
                "storage_gb"
            } else {
                "api_calls"
            };
            let value = format!("{}.{}", next() % 50, next() % 10);
            let late = if is_absolute { next() % 8 } else { 0 };
            let hours = i64::try_from(i).unwrap() - i64::try_from(late).unwrap();
            let at = start + jiff::SignedDuration::from_hours(hours);
            (is_absolute, feature, value, at.to_string())
        })
        .collect()
}

/// Records in the history: 200 hours, all in March.
const RECORDS: usize = 200;

async fn latest(store: &TestStore, agreement: &Agreement, limit: usize) -> Vec<StoredUsageRecord> {
    store
        .latest_usage_records(RecordsQuery {
            agreement_id: agreement.id.clone(),
            feature_code: None,
            limit,
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn every_chunk_size_gives_the_folded_usage_and_the_same_latest_records() {
    let mut stores = Vec::new();
    for chunk in CHUNKS {
        let store = store_with_chunk(chunk).await;
        let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
        stores.push((chunk, store, a));
    }
    // Each feature's records so far, for the core's plain fold (the rule of
    // docs/billing.md): the reference every store must agree with.
    let mut entries: [Vec<Entry>; 2] = Default::default();
    for (i, (is_absolute, feature, value, at)) in history().into_iter().enumerate() {
        let received = format!("2024-03-25T00:{:02}:{:02}Z", i / 60, i % 60);
        entries[usize::from(feature == "storage_gb")].push(Entry {
            key: OrderKey {
                effective_at: t(&at),
                seq: i64::try_from(i).unwrap(),
            },
            meter_type: if is_absolute {
                MeterType::Absolute
            } else {
                MeterType::Delta
            },
            value: MeterValue::parse(&value).unwrap(),
            received_at: t(&received),
        });
        let expected: Vec<Option<String>> = entries
            .iter()
            .map(|e| Some(fold(e).unwrap().to_string()))
            .collect();
        let mut values = Vec::new();
        for (chunk, store, a) in &stores {
            let record = if is_absolute {
                absolute(a, feature, &value, &at)
            } else {
                delta(a, feature, &value, &at)
            };
            assert_eq!(submit(store, record, &received).await, Ok(()));
            let mut both = Vec::new();
            for f in ["api_calls", "storage_gb"] {
                let read = store
                    .read_usage(kinde_meter_store::UsageQuery {
                        agreement_id: a.id.clone(),
                        feature_code: Some(FeatureCode::parse(f).unwrap()),
                        at: t("2024-03-26T00:00:00Z"),
                    })
                    .await
                    .unwrap();
                both.push(read.usage.first().map(|u| u.value.to_string()));
            }
            values.push((*chunk, both));
        }
        for (chunk, both) in &values {
            assert_eq!(both, &expected, "record {i}: chunk {chunk}");
        }
    }
    // The reference is the store that never files (chunk 1 000 000): its
    // latest records come from the tail alone, not from runs.
    for limit in [1, 5, 17, 100, 500] {
        let (_, reference_store, reference_agreement) = &stores[CHUNKS.len() - 1];
        let reference = latest(reference_store, reference_agreement, limit).await;
        assert_eq!(reference.len(), limit.min(RECORDS));
        for (chunk, store, a) in &stores[..CHUNKS.len() - 1] {
            assert_eq!(
                latest(store, a, limit).await,
                reference,
                "limit {limit}: chunk {chunk}"
            );
        }
    }
    // Chunk 1 filed everything; chunk 1 000 000 nothing; the others some
    // (16 bytes a record in the runs' blobs).
    const FILED: &str = "SELECT coalesce(sum(length(entries)), 0) / 16 FROM usage_record_runs";
    assert_eq!(stores[0].1.count(FILED).await, RECORDS as i64);
    assert_eq!(stores[4].1.count(FILED).await, 0);
    let by_7 = stores[3].1.count(FILED).await;
    assert!(by_7 > 0 && by_7 < RECORDS as i64, "{by_7}");
}

/// Ten deltas of 1 to `api_calls`, the `i`-th stamped `at(i)`.
async fn ten_deltas_of_1(store: &TestStore, a: &Agreement, at: impl Fn(usize) -> String) {
    for i in 0..10 {
        let received = format!("2024-03-10T00:00:0{i}Z");
        let record = delta(a, "api_calls", "1", &at(i));
        assert_eq!(submit(store, record, &received).await, Ok(()));
    }
}

/// Records deleted after they were filed (the retention procedure in
/// docs/operations.md deletes from `usage_records` alone) are skipped by both
/// reads: runs name records by seq, and each is read by it.
#[tokio::test]
async fn deleted_records_are_skipped_by_both_reads() {
    let store = store_with_chunk(1).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    // Seqs 1 to 10 on March 2, 3, 4, 5, 6, 7, 8, 2, 3, 4.
    ten_deltas_of_1(&store, &a, |i| format!("2024-03-0{}T00:00:00Z", 2 + i % 7)).await;
    store.shutdown().await;
    store
        .execute("DELETE FROM usage_records WHERE seq % 2 = 0")
        .await;
    let store = store.reopen().await;
    // Left: seqs 1, 3, 5, 7, 9 on March 2, 4, 6, 8, 3; newest first 7, 5, 3, 9, 1.
    let days = |records: Vec<StoredUsageRecord>| -> Vec<i8> {
        records
            .iter()
            .map(|r| r.timestamp.unwrap().in_tz("UTC").unwrap().day())
            .collect()
    };
    assert_eq!(days(latest(&store, &a, 10).await), [8, 6, 4, 3, 2]);
    assert_eq!(days(latest(&store, &a, 3).await), [8, 6, 4]);
    // A late absolute on March 5: the deltas after it that are left count
    // (March 6 and 8), the deleted one after it (March 7, seq 6) does not.
    let late = absolute(&a, "api_calls", "100", "2024-03-05T00:00:00Z");
    assert_eq!(submit(&store, late, "2024-03-10T00:01:00Z").await, Ok(()));
    let u = usage(&store, &a, "api_calls", "2024-03-20T00:00:00Z").await;
    assert_eq!(u.value.to_string(), "102");
}

/// Records numbered after the newest ones were deleted are never taken for
/// filed ones: the arrival sequence goes on above the filed mark.
#[tokio::test]
async fn records_after_deleted_newest_ones_are_not_taken_for_filed() {
    let store = store_with_chunk(1).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    ten_deltas_of_1(&store, &a, |i| format!("2024-03-02T00:00:0{i}Z")).await;
    store.shutdown().await;
    // Every record filed (chunk 1); then the newest five go.
    store
        .execute("DELETE FROM usage_records WHERE seq > 5")
        .await;
    // Nothing filed from now on: new records stay in the tail.
    let store = TestStore::on(
        &store.place,
        StoreConfig {
            record_order_chunk: 1_000_000,
            ..StoreConfig::default()
        },
    )
    .await;
    let later = delta(&a, "api_calls", "7", "2024-03-09T00:00:00Z");
    assert_eq!(submit(&store, later, "2024-03-10T00:01:00Z").await, Ok(()));
    // A late absolute before it: the delta after it must still count.
    let late = absolute(&a, "api_calls", "100", "2024-03-05T00:00:00Z");
    assert_eq!(submit(&store, late, "2024-03-10T00:01:01Z").await, Ok(()));
    let u = usage(&store, &a, "api_calls", "2024-03-20T00:00:00Z").await;
    assert_eq!(u.value.to_string(), "107");
    assert_eq!(
        store
            .count("SELECT min(seq) FROM usage_records WHERE seq > 5")
            .await,
        11
    );
}

/// A run read first (its last record the newest) can hold older records than
/// a run read after it: the newest records are merged across runs, not taken
/// from the first runs that hold enough.
#[tokio::test]
async fn the_latest_records_are_merged_across_overlapping_runs() {
    let days = |records: Vec<StoredUsageRecord>| -> Vec<i8> {
        records
            .iter()
            .map(|r| r.timestamp.unwrap().in_tz("UTC").unwrap().day())
            .collect()
    };
    // Filed in runs of four (arrival order): March 10 to 13, then March 1,
    // 2, 3 and 20. The second run ends newest but holds the oldest records.
    for chunk in [4, 1_000_000] {
        let store = store_with_chunk(chunk).await;
        let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
        for (i, day) in [10, 11, 12, 13, 1, 2, 3, 20].iter().enumerate() {
            let record = delta(&a, "api_calls", "1", &format!("2024-03-{day:02}T00:00:00Z"));
            let received = format!("2024-03-21T00:00:0{i}Z");
            assert_eq!(submit(&store, record, &received).await, Ok(()));
        }
        assert_eq!(
            days(latest(&store, &a, 3).await),
            [20, 13, 12],
            "chunk {chunk}"
        );
        assert_eq!(
            days(latest(&store, &a, 6).await),
            [20, 13, 12, 11, 10, 3],
            "chunk {chunk}"
        );
    }
}

/// (the filed mark, the runs) of `store`.
async fn filed_and_runs(store: &TestStore) -> (i64, i64) {
    (
        store
            .count("SELECT upto_seq FROM usage_record_order_filed")
            .await,
        store.count("SELECT count(*) FROM usage_record_runs").await,
    )
}

/// Where every record of the tail is another aggregate's (many customers,
/// one record each), a filing files what it must to keep the tail under a
/// chunk and then stops at a quarter of a chunk of runs, instead of writing
/// a run per record of the whole tail in one commit; where the tail is one
/// aggregate's, it is filed whole, as one run.
#[tokio::test]
async fn a_filing_writes_a_bounded_number_of_runs() {
    // Chunk 8: filed at 8 unfiled, at least 1 of them, and at most 2 runs.
    let store = store_with_chunk(8).await;
    let mut agreements = Vec::new();
    for i in 0..12u8 {
        agreements.push(
            create(
                &store,
                &format!("cust_{i}"),
                "pro",
                "2024-03-01T00:00:00Z",
                i,
            )
            .await,
        );
    }
    let mut marks = Vec::new();
    for (i, a) in agreements.iter().enumerate() {
        let at = format!("2024-03-02T00:00:{i:02}Z");
        let record = delta(a, "api_calls", "1", &at);
        assert_eq!(submit(&store, record, &at).await, Ok(()));
        marks.push(filed_and_runs(&store).await);
    }
    // Nothing filed below 8 unfiled; then two records in two runs at the
    // 8th, 10th and 12th record.
    let expected: Vec<(i64, i64)> = [0, 0, 0, 0, 0, 0, 0, 2, 2, 4, 4, 6]
        .into_iter()
        .map(|n| (n, n))
        .collect();
    assert_eq!(marks, expected);
    for a in &agreements {
        let u = usage(&store, a, "api_calls", "2024-03-20T00:00:00Z").await;
        assert_eq!((u.value.to_string(), u.record_count), ("1".to_owned(), 1));
    }

    // One aggregate's 8 records: all filed, in one run.
    let store = store_with_chunk(8).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    for i in 0..8 {
        let at = format!("2024-03-02T00:00:0{i}Z");
        assert_eq!(
            submit(&store, delta(&a, "api_calls", "1", &at), &at).await,
            Ok(())
        );
    }
    assert_eq!(filed_and_runs(&store).await, (8, 1));
}
