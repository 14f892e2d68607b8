//! The usage export's read: every customer's agreements in id order, page by
//! page, each with its usage in the period the export covers for it, equal to
//! what usage read-back answers for that period.

use jiff::Timestamp;
use kinde_meter_core::{agreement::Agreement, export::ExportPeriod, ids::AgreementId};
use kinde_meter_store::{AgreementUsage, ExportQuery, Store, UsageQuery};

use crate::common::*;

/// Every page of the export with `page_size`, and how many pages it took.
async fn export_all(
    store: &TestStore,
    period: ExportPeriod,
    now: Timestamp,
    page_size: usize,
) -> (Vec<AgreementUsage>, usize) {
    let (mut all, mut pages, mut after) = (Vec::new(), 0, None);
    loop {
        let page = store
            .export_usage(ExportQuery {
                after: after.take(),
                page_size,
                period,
                now,
            })
            .await
            .unwrap();
        pages += 1;
        assert!(page.agreements.len() <= page_size);
        all.extend(page.agreements);
        match page.next {
            Some(next) => after = Some(next),
            None => return (all, pages),
        }
    }
}

fn ids(rows: &[AgreementUsage]) -> Vec<&str> {
    rows.iter().map(|r| r.agreement.id.as_str()).collect()
}

fn sorted_ids(agreements: &[&Agreement]) -> Vec<String> {
    let mut ids: Vec<String> = agreements.iter().map(|a| a.id.to_string()).collect();
    ids.sort();
    ids
}

/// Each exported agreement's usage equals usage read-back at its period's start.
async fn assert_equals_reads(store: &TestStore, rows: &[AgreementUsage]) {
    for row in rows {
        let read = store
            .read_usage(UsageQuery {
                agreement_id: row.agreement.id.clone(),
                feature_code: None,
                at: row.usage.period.start,
            })
            .await
            .unwrap();
        assert_eq!(row.usage.period, read.period, "{}", row.agreement.id);
        assert_eq!(row.usage.usage, read.usage, "{}", row.agreement.id);
    }
}

async fn the_export_pages_through_every_agreement_active_in_its_period(b: Backend) {
    let store = open(&b).await;
    // Monthly plans anchored on different days.
    let a = create(&store, "cus_a", "pro", "2024-01-10T08:00:00Z", 1).await;
    let b2 = create(&store, "cus_b", "basic", "2024-02-20T00:00:00Z", 2).await;
    let c = create(&store, "cus_c", "capped", "2024-03-01T00:00:00Z", 3).await;
    // cus_d changes plans on 2024-03-08: its first agreement ends in its
    // current period, [03-05, 04-05).
    let d_old = create(&store, "cus_d", "pro", "2024-01-05T00:00:00Z", 4).await;
    let d_new = create(&store, "cus_d", "basic", "2024-03-08T00:00:00Z", 5).await;
    let late = create(&store, "cus_e", "pro", "2024-03-15T00:00:00Z", 6).await;

    for (agreement, feature, value, at) in [
        (&a, "api_calls", "10.5", "2024-02-11T00:00:00Z"),
        (&a, "api_calls", "4", "2024-03-11T00:00:00Z"),
        (&a, "storage_gb", "0.000000001", "2024-03-12T00:00:00Z"),
        (&b2, "seats", "3", "2024-02-21T00:00:00Z"),
        (&b2, "seats", "2", "2024-03-21T00:00:00Z"),
        (&c, "calls", "7", "2024-03-02T00:00:00Z"),
        (&d_old, "api_calls", "100", "2024-03-06T00:00:00Z"),
        (&d_old, "api_calls", "1", "2024-03-01T00:00:00Z"),
        (&d_new, "seats", "1", "2024-03-09T00:00:00Z"),
        (&late, "api_calls", "9", "2024-03-16T00:00:00Z"),
    ] {
        assert_eq!(
            submit(&store, delta(agreement, feature, value, at), at).await,
            Ok(())
        );
    }
    assert_eq!(
        submit(
            &store,
            absolute(&a, "api_calls", "2", "2024-03-12T00:00:00Z"),
            "2024-03-12T00:00:00Z"
        )
        .await,
        Ok(())
    );

    let now = t("2024-03-25T00:00:00Z");
    for page_size in [1, 2, 1000] {
        // Current: every agreement active at some point of its current period.
        let (rows, pages) = export_all(&store, ExportPeriod::Current, now, page_size).await;
        assert_eq!(
            ids(&rows),
            sorted_ids(&[&a, &b2, &c, &d_old, &d_new, &late]),
            "page size {page_size}"
        );
        assert_eq!(pages, 6 / page_size + 1);
        assert_equals_reads(&store, &rows).await;
        let of = |agreement: &Agreement| {
            rows.iter()
                .find(|r| r.agreement.id == agreement.id)
                .unwrap()
        };
        let a_row = of(&a);
        assert_eq!(
            (a_row.usage.period.start, a_row.usage.period.end),
            (t("2024-03-10T08:00:00Z"), t("2024-04-10T08:00:00Z"))
        );
        let values: Vec<(String, String)> = a_row
            .usage
            .usage
            .iter()
            .map(|u| (u.feature_code.to_string(), u.value.to_string()))
            .collect();
        assert_eq!(
            values,
            [
                ("api_calls".to_owned(), "2".to_owned()),
                ("storage_gb".to_owned(), "0.000000001".to_owned())
            ]
        );
        assert_eq!(a_row.plan.code.as_str(), "pro");
        assert_eq!(of(&d_old).usage.usage[0].value.to_string(), "100");

        // Previous: agreements still in their first period have none.
        let (rows, _) = export_all(&store, ExportPeriod::Previous, now, page_size).await;
        assert_eq!(ids(&rows), sorted_ids(&[&a, &b2, &d_old]));
        assert_equals_reads(&store, &rows).await;
        let of = |agreement: &Agreement| {
            rows.iter()
                .find(|r| r.agreement.id == agreement.id)
                .unwrap()
        };
        assert_eq!(of(&a).usage.usage[0].value.to_string(), "10.5");
        assert_eq!(of(&b2).usage.usage[0].value.to_string(), "3");
        assert_eq!(of(&d_old).usage.usage[0].value.to_string(), "1");
        assert_eq!(
            of(&b2).usage.period.start,
            t("2024-02-20T00:00:00Z"),
            "b's previous period is its first"
        );

        // An instant: agreements that had started by then and had not ended
        // before its period.
        let at = ExportPeriod::Containing(t("2024-02-25T00:00:00Z"));
        let (rows, _) = export_all(&store, at, now, page_size).await;
        assert_eq!(ids(&rows), sorted_ids(&[&a, &b2, &d_old]));
        assert_equals_reads(&store, &rows).await;
    }

    // A cursor past every id (in any collation): an empty last page.
    let page = store
        .export_usage(ExportQuery {
            after: Some(AgreementId::parse("agreement_zzzz").unwrap()),
            page_size: 10,
            period: ExportPeriod::Current,
            now,
        })
        .await
        .unwrap();
    assert!(page.agreements.is_empty() && page.next.is_none());
}

contract_tests!(the_export_pages_through_every_agreement_active_in_its_period);
