//! The dashboard's reads (`crate::browse`): customers, compared and ordered
//! with the `"C"` collation (code point order, as SQLite's), and the latest
//! records of an agreement from `usage_records`' primary key, walked backwards
//! per feature.

use deadpool_postgres::{GenericClient, Object};
use kinde_meter_core::{
    ids::{CustomerId, FeatureCode},
    period::Period,
    value::MeterValue,
};

use super::{
    agreements, catalog,
    codec::{self, stored},
    failure::{Failure, OpError, PgResult},
    pool,
};
use crate::{
    CustomerPage, CustomerQuery, CustomerSummary, ReadUsageError, RecordsQuery, StoredUsageRecord,
    browse::{self, RecordOrder},
};

/// A page of customers in code point order of their ids, whatever the
/// database's collation.
pub(super) async fn customers(
    conn: &impl GenericClient,
    query: &CustomerQuery,
) -> PgResult<CustomerPage> {
    let range = query.range();
    let lower = if range.from_exclusive { ">" } else { ">=" };
    let limit = i64::try_from(query.page_size.saturating_add(1)).unwrap_or(i64::MAX);
    let stmt = conn
        .prepare_cached(&format!(
            r#"SELECT customer_id, count(*) FROM agreements
               WHERE customer_id COLLATE "C" {lower} $1 AND customer_id COLLATE "C" < $2
               GROUP BY customer_id ORDER BY customer_id COLLATE "C" LIMIT $3"#
        ))
        .await?;
    let rows = conn
        .query(&stmt, &[&range.from, &range.before, &limit])
        .await?;
    let mut customers = rows
        .iter()
        .map(|r| {
            Ok(CustomerSummary {
                customer_id: stored(
                    CustomerId::parse(r.get::<_, String>(0)),
                    "agreements.customer_id",
                )?,
                agreement_count: stored(u64::try_from(r.get::<_, i64>(1)), "count")?,
            })
        })
        .collect::<PgResult<Vec<_>>>()?;
    let has_more = customers.len() > query.page_size;
    customers.truncate(query.page_size);
    Ok(CustomerPage {
        customers,
        has_more,
    })
}

/// The latest records of an agreement: the newest `limit` of each feature,
/// merged, in one snapshot with the agreement and its plan.
pub(super) async fn latest_records(
    conn: &mut Object,
    query: &RecordsQuery,
) -> Result<Vec<StoredUsageRecord>, OpError<ReadUsageError>> {
    let tx = pool::read_snapshot(conn).await?;
    let Some(agreement) = agreements::load(&tx, &query.agreement_id).await? else {
        return Err(ReadUsageError::AgreementNotFound.into());
    };
    let plan = catalog::load_plan(&tx, &agreement.plan_code).await?;
    let features =
        crate::record_checks::features_to_report(plan.as_ref(), query.feature_code.as_ref())?;
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let stmt = tx
        .prepare_cached(
            "SELECT feature_code, meter_type, trim_scale(value)::text, usage_timestamp,
                    received_at_ns, period_start_ns, period_end_ns, effective_at_ns, seq
             FROM usage_records WHERE agreement_id = $1 AND feature_code = $2
             ORDER BY period_start_ns DESC, effective_at_ns DESC, seq DESC LIMIT $3",
        )
        .await?;
    let mut found = Vec::new();
    for feature in features {
        let rows = tx
            .query(
                &stmt,
                &[&query.agreement_id.as_str(), &feature.code.as_str(), &limit],
            )
            .await?;
        for r in rows {
            let order = RecordOrder {
                period_start_ns: r.get(5),
                effective_at_ns: r.get(7),
                seq: r.get(8),
            };
            let meter_type: &str = r.get(1);
            let record = StoredUsageRecord {
                feature_code: stored(
                    FeatureCode::parse(r.get::<_, String>(0)),
                    "usage_records.feature_code",
                )?,
                meter_type: browse::meter_type(meter_type).ok_or_else(|| {
                    Failure::Data(format!("usage_records.meter_type {meter_type:?}"))
                })?,
                value: stored(MeterValue::parse(r.get(2)), "usage_records.value")?,
                timestamp: r
                    .get::<_, Option<&str>>(3)
                    .map(|t| stored(t.parse(), "usage_records.usage_timestamp"))
                    .transpose()?,
                received_at: codec::timestamp(r.get(4))?,
                period: Period {
                    start: codec::timestamp(order.period_start_ns)?,
                    end: codec::timestamp(r.get(6))?,
                },
            };
            found.push((order, record));
        }
    }
    tx.commit().await?;
    Ok(browse::newest(found, query.limit))
}
