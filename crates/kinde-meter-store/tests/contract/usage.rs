//! Recording usage and reading it back from the aggregates.

use kinde_meter_core::{
    ErrorCode,
    aggregate::MeterType,
    ids::{AgreementId, CustomerId, FeatureCode},
};
use kinde_meter_store::{
    ReadUsageError, RecordFailure, Store, SubmissionKind, SubmissionOutcome, UsageQuery,
    UsageReport, UsageSubmission,
};

use crate::common::*;

async fn usage_follows_the_ordered_delta_absolute_rule(b: Backend) {
    let store = open(&b).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let steps = [
        (delta(&a, "api_calls", "10", "2024-03-02T00:00:00Z"), "10"),
        (delta(&a, "api_calls", "5", "2024-03-04T00:00:00Z"), "15"),
        // A late absolute becomes the latest: the delta after it still counts.
        (
            absolute(&a, "api_calls", "100", "2024-03-03T00:00:00Z"),
            "105",
        ),
        // A delta older than the latest absolute changes nothing.
        (delta(&a, "api_calls", "7", "2024-03-02T12:00:00Z"), "105"),
        (absolute(&a, "api_calls", "3", "2024-03-05T00:00:00Z"), "3"),
        (
            delta(&a, "api_calls", "0.000000001", "2024-03-06T00:00:00Z"),
            "3.000000001",
        ),
        // An absolute older than the latest one changes nothing either.
        (
            absolute(&a, "api_calls", "2", "2024-03-04T12:00:00Z"),
            "3.000000001",
        ),
        (
            delta(&a, "api_calls", "1500.25", "2024-03-07T00:00:00Z"),
            "1503.250000001",
        ),
    ];
    for (i, (record, expected)) in steps.into_iter().enumerate() {
        let received = format!("2024-03-10T00:00:0{i}Z");
        assert_eq!(submit(&store, record, &received).await, Ok(()));
        let u = usage(&store, &a, "api_calls", "2024-03-20T00:00:00Z").await;
        assert_eq!(u.value.to_string(), expected, "after step {i}");
        assert_eq!(u.record_count, i as u64 + 1);
        assert_eq!(u.last_recorded_at, Some(t(&received)));
    }

    // Exact ties are broken by arrival.
    let tie = "2024-03-08T00:00:00Z";
    assert_eq!(
        submit(
            &store,
            delta(&a, "storage_gb", "4", tie),
            "2024-03-10T01:00:00Z"
        )
        .await,
        Ok(())
    );
    assert_eq!(
        submit(
            &store,
            absolute(&a, "storage_gb", "1", tie),
            "2024-03-10T01:00:01Z"
        )
        .await,
        Ok(())
    );
    assert_eq!(
        usage(&store, &a, "storage_gb", tie).await.value.to_string(),
        "1"
    );
    assert_eq!(
        submit(
            &store,
            delta(&a, "storage_gb", "4", tie),
            "2024-03-10T01:00:02Z"
        )
        .await,
        Ok(())
    );
    assert_eq!(
        usage(&store, &a, "storage_gb", tie).await.value.to_string(),
        "5"
    );
    // No timestamp: the record counts at its receipt.
    let now = record(a.id.as_str(), "storage_gb", "2", MeterType::Delta, None);
    assert_eq!(submit(&store, now, "2024-03-10T01:00:03Z").await, Ok(()));
    assert_eq!(
        usage(&store, &a, "storage_gb", tie).await.value.to_string(),
        "7"
    );

    // Every metered feature, in plan order, for the period containing `at`.
    let report = store
        .read_usage(UsageQuery {
            agreement_id: a.id.clone(),
            feature_code: None,
            at: t("2024-03-31T23:59:59Z"),
        })
        .await
        .unwrap();
    assert_eq!(
        (report.period.start, report.period.end),
        (t("2024-03-01T00:00:00Z"), t("2024-04-01T00:00:00Z"))
    );
    let summary: Vec<(String, String, u64)> = report
        .usage
        .iter()
        .map(|u| {
            (
                u.feature_code.to_string(),
                u.value.to_string(),
                u.record_count,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("api_calls".to_owned(), "1503.250000001".to_owned(), 8),
            ("storage_gb".to_owned(), "7".to_owned(), 4)
        ]
    );

    // The next period has nothing yet.
    let next = usage(&store, &a, "api_calls", "2024-04-01T00:00:00Z").await;
    assert_eq!(
        (
            next.value.to_string(),
            next.record_count,
            next.last_recorded_at
        ),
        ("0".to_owned(), 0, None)
    );

    let read = |feature: &str, id: &AgreementId| UsageQuery {
        agreement_id: id.clone(),
        feature_code: Some(FeatureCode::parse(feature).unwrap()),
        at: t("2024-03-20T00:00:00Z"),
    };
    let e = store.read_usage(read("sso", &a.id)).await.unwrap_err();
    assert!(matches!(e, ReadUsageError::FeatureNotMetered), "{e:?}");
    let e = store.read_usage(read("seats", &a.id)).await.unwrap_err();
    assert!(matches!(e, ReadUsageError::FeatureNotFound), "{e:?}");
    let e = store
        .read_usage(read(
            "api_calls",
            &AgreementId::parse("agreement_x").unwrap(),
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, ReadUsageError::AgreementNotFound), "{e:?}");
}

async fn late_usage_after_a_period_closed_counts_in_the_current_period(b: Backend) {
    let store = open(&b).await;
    let a = create(&store, "cust", "pro", "2024-01-15T00:00:00Z", 1).await;
    // Usage of January's period, received after it closed on Feb 15.
    let late = delta(&a, "api_calls", "3", "2024-02-10T00:00:00Z");
    assert_eq!(submit(&store, late, "2024-02-16T00:00:00Z").await, Ok(()));

    let january = usage(&store, &a, "api_calls", "2024-02-10T00:00:00Z").await;
    assert_eq!(
        (january.value.to_string(), january.record_count),
        ("0".to_owned(), 0)
    );
    let february = usage(&store, &a, "api_calls", "2024-02-20T00:00:00Z").await;
    assert_eq!(
        (february.value.to_string(), february.record_count),
        ("3".to_owned(), 1)
    );

    // A late absolute counts at the current period's start, so a delta stamped at
    // that start but arriving later still adds to it.
    let late_abs = absolute(&a, "api_calls", "50", "2024-02-01T00:00:00Z");
    assert_eq!(
        submit(&store, late_abs, "2024-02-17T00:00:00Z").await,
        Ok(())
    );
    let at_start = delta(&a, "api_calls", "1", "2024-02-15T00:00:00Z");
    assert_eq!(
        submit(&store, at_start, "2024-02-17T00:00:01Z").await,
        Ok(())
    );
    assert_eq!(
        usage(&store, &a, "api_calls", "2024-03-01T00:00:00Z")
            .await
            .value
            .to_string(),
        "51"
    );
    // Before the agreement's start: the first period, at its start.
    let early = delta(&a, "storage_gb", "2", "2023-12-01T00:00:00Z");
    assert_eq!(submit(&store, early, "2024-01-20T00:00:00Z").await, Ok(()));
    assert_eq!(
        usage(&store, &a, "storage_gb", "2024-01-15T00:00:00Z")
            .await
            .value
            .to_string(),
        "2"
    );
}

/// A read is of the period its instant belongs to (`Agreement::period_containing`),
/// not of the latest period with usage starting at or before it: an instant
/// before the agreement's start lies in the first period, and a period after one
/// with usage has none of its own until some is recorded in it. The usage read
/// and the entitlement check (which reads the same aggregates) agree.
async fn a_read_is_of_the_period_its_instant_belongs_to(b: Backend) {
    let store = open(&b).await;
    let a = create(&store, "cust", "pro", "2024-01-15T00:00:00Z", 1).await;
    // Usage of the first period (Jan 15 to Feb 15), one record effective before
    // the agreement's start.
    let early = delta(&a, "api_calls", "2", "2023-12-01T00:00:00Z");
    assert_eq!(submit(&store, early, "2024-01-20T00:00:00Z").await, Ok(()));
    let first = delta(&a, "storage_gb", "5", "2024-01-20T00:00:00Z");
    assert_eq!(submit(&store, first, "2024-01-20T00:00:01Z").await, Ok(()));
    // And of the second (Feb 15 to Mar 15).
    let second = delta(&a, "api_calls", "7", "2024-02-20T00:00:00Z");
    assert_eq!(submit(&store, second, "2024-02-20T00:00:00Z").await, Ok(()));

    let customer = CustomerId::parse("cust").unwrap();
    let read_all = async |at: &str| {
        let summary = |r: &UsageReport| {
            let usage = r
                .usage
                .iter()
                .map(|u| {
                    (
                        u.feature_code.to_string(),
                        u.value.to_string(),
                        u.record_count,
                    )
                })
                .collect::<Vec<_>>();
            (r.period.start, r.period.end, usage)
        };
        let report = store
            .read_usage(UsageQuery {
                agreement_id: a.id.clone(),
                feature_code: None,
                at: t(at),
            })
            .await
            .unwrap();
        let check = store
            .customer_entitlements(&customer, t(at), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            summary(&check.usage),
            summary(&report),
            "read and check at {at}"
        );
        assert_eq!(report.period, a.period_containing(t(at)));
        summary(&report).2
    };
    let of = |rows: &[(&str, &str, u64)]| {
        rows.iter()
            .map(|(f, v, n)| (f.to_string(), v.to_string(), *n))
            .collect::<Vec<_>>()
    };
    let first_period = of(&[("api_calls", "2", 1), ("storage_gb", "5", 1)]);
    // Long before the start, just before it, at it and inside the first period.
    for at in [
        "1990-01-01T00:00:00Z",
        "2023-12-01T00:00:00Z",
        "2024-01-14T23:59:59.999999999Z",
        "2024-01-15T00:00:00Z",
        "2024-02-14T23:59:59Z",
    ] {
        assert_eq!(read_all(at).await, first_period, "at {at}");
    }
    let second_period = of(&[("api_calls", "7", 1), ("storage_gb", "0", 0)]);
    for at in ["2024-02-15T00:00:00Z", "2024-03-14T23:59:59Z"] {
        assert_eq!(read_all(at).await, second_period, "at {at}");
    }
    // Periods after those with usage, near and far: nothing yet.
    let nothing = of(&[("api_calls", "0", 0), ("storage_gb", "0", 0)]);
    for at in [
        "2024-03-15T00:00:00Z",
        "2024-03-20T00:00:00Z",
        "2031-07-01T00:00:00Z",
    ] {
        assert_eq!(read_all(at).await, nothing, "at {at}");
    }
    assert_eq!(
        usage(&store, &a, "storage_gb", "2023-06-01T00:00:00Z")
            .await
            .value
            .to_string(),
        "5"
    );

    // A row off the agreement's period grid (the store never writes one, and
    // no read reports it) between the second period's start and the instant
    // read does not hide the second period's row.
    let off_grid = t("2024-02-17T00:00:00Z").as_nanosecond();
    store
        .execute(&format!(
            "INSERT INTO usage_aggregates (agreement_id, feature_code, period_start_ns,
                 period_end_ns, deltas_after, value, record_count)
             VALUES ('{}', 'api_calls', {off_grid}, {}, '0', '999', 1)",
            a.id,
            off_grid + 1
        ))
        .await;
    assert_eq!(read_all("2024-02-20T00:00:00Z").await, second_period);
    assert_eq!(
        usage(&store, &a, "api_calls", "2024-02-20T00:00:00Z")
            .await
            .value
            .to_string(),
        "7"
    );
}

async fn failures_are_per_record_and_store_nothing(b: Backend) {
    let store = open(&b).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    let at = "2024-03-02T00:00:00Z";
    let pre_failed = RecordFailure::new(
        ErrorCode::InvalidMeterValue,
        "meter_value must be a decimal",
    );
    let submission = UsageSubmission {
        client_id: "client_a".to_owned(),
        idempotency: None,
        records: vec![
            Ok(delta(&a, "api_calls", "1", at)),
            Ok(record(
                "agreement_missing",
                "api_calls",
                "1",
                MeterType::Delta,
                Some(at),
            )),
            Ok(delta(&a, "nope", "1", at)),
            Ok(delta(&a, "sso", "1", at)),
            Err(pre_failed.clone()),
            Ok(delta(&a, "api_calls", "2", at)),
        ],
        received_at: t("2024-03-03T00:00:00Z"),
        kind: SubmissionKind::Batch,
    };
    let SubmissionOutcome::Processed(results) = store.submit_usage(submission).await.unwrap()
    else {
        panic!("not processed");
    };
    let codes: Vec<Option<ErrorCode>> = results
        .iter()
        .map(|r| r.as_ref().err().map(|f| f.code))
        .collect();
    assert_eq!(
        codes,
        [
            None,
            Some(ErrorCode::AgreementNotFound),
            Some(ErrorCode::FeatureNotFound),
            Some(ErrorCode::FeatureNotMetered),
            Some(ErrorCode::InvalidMeterValue),
            None
        ]
    );
    let message = |i: usize| results[i].as_ref().unwrap_err().message.clone();
    assert_eq!(
        message(1),
        "customer_agreement_id: no agreement agreement_missing"
    );
    assert_eq!(
        message(2),
        "billing_feature_code: plan pro has no feature nope"
    );
    assert!(
        message(3).starts_with("billing_feature_code:") && message(3).contains("sso"),
        "{}",
        message(3)
    );
    assert_eq!(results[4], Err(pre_failed));

    let u = usage(&store, &a, "api_calls", at).await;
    assert_eq!((u.value.to_string(), u.record_count), ("3".to_owned(), 2));
    assert_eq!(store.count("SELECT count(*) FROM usage_records").await, 2);
}

async fn a_value_out_of_range_is_refused_and_stores_nothing(b: Backend) {
    let store = open(&b).await;
    let a = create(&store, "cust", "pro", "2024-03-01T00:00:00Z", 1).await;
    assert_eq!(
        submit(
            &store,
            delta(&a, "api_calls", "1", "2024-03-02T00:00:00Z"),
            "2024-03-03T00:00:00Z"
        )
        .await,
        Ok(())
    );
    // Reaching 10^27 through the API takes 10^9 records; set the aggregate there.
    let top = "1000000000000000000000000000";
    let set = format!("UPDATE usage_aggregates SET deltas_after = '{top}', value = '{top}'");
    assert_eq!(store.execute(&set).await, 1);

    let over = delta(&a, "api_calls", "0.000000001", "2024-03-04T00:00:00Z");
    let failure = submit(&store, over, "2024-03-05T00:00:00Z")
        .await
        .unwrap_err();
    assert_eq!(failure.code, ErrorCode::ValueOutOfRange);
    assert!(
        failure.message.starts_with("meter_value"),
        "{}",
        failure.message
    );
    let u = usage(&store, &a, "api_calls", "2024-03-20T00:00:00Z").await;
    assert_eq!((u.value.to_string(), u.record_count), (top.to_owned(), 1));
    assert_eq!(store.count("SELECT count(*) FROM usage_records").await, 1);

    // Zero still fits, and an absolute brings the total back down.
    assert_eq!(
        submit(
            &store,
            delta(&a, "api_calls", "0", "2024-03-04T00:00:00Z"),
            "2024-03-05T00:00:01Z"
        )
        .await,
        Ok(())
    );
    assert_eq!(
        submit(
            &store,
            absolute(&a, "api_calls", "5", "2024-03-06T00:00:00Z"),
            "2024-03-06T00:00:01Z"
        )
        .await,
        Ok(())
    );
    let u = usage(&store, &a, "api_calls", "2024-03-20T00:00:00Z").await;
    assert_eq!((u.value.to_string(), u.record_count), ("5".to_owned(), 3));
}

contract_tests!(
    usage_follows_the_ordered_delta_absolute_rule,
    late_usage_after_a_period_closed_counts_in_the_current_period,
    a_read_is_of_the_period_its_instant_belongs_to,
    failures_are_per_record_and_store_nothing,
    a_value_out_of_range_is_refused_and_stores_nothing,
);
