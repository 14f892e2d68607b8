//! The dashboard's reads (`crate::browse`): customers from `agreements_by_customer`,
//! the latest records from the filed period order (`usage_record_order`) and the
//! unfiled tail (`record_order.rs`).

use kinde_meter_core::{
    ids::{CustomerId, FeatureCode},
    period::Period,
    value::MeterValue,
};
use rusqlite::Connection;

use super::{
    agreements, catalog,
    codec::{self, stored},
    error::OpError,
    record_order,
};
use crate::{
    CustomerPage, CustomerQuery, CustomerSummary, ReadUsageError, RecordsQuery, StoredUsageRecord,
    browse::{self, RecordOrder},
};

/// A page of customers in byte order of their ids (SQLite's `BINARY` collation
/// of UTF-8 text).
pub(super) fn customers(
    conn: &Connection,
    query: &CustomerQuery,
) -> rusqlite::Result<CustomerPage> {
    let range = query.range();
    let lower = if range.from_exclusive { ">" } else { ">=" };
    let limit = i64::try_from(query.page_size.saturating_add(1)).unwrap_or(i64::MAX);
    let mut customers = conn
        .prepare_cached(&format!(
            "SELECT customer_id, count(*) FROM agreements
             WHERE customer_id {lower} ?1 AND customer_id < ?2
             GROUP BY customer_id ORDER BY customer_id LIMIT ?3"
        ))?
        .query_map((&range.from, &range.before, limit), |r| {
            Ok(CustomerSummary {
                customer_id: stored(CustomerId::parse(r.get::<_, String>(0)?))?,
                agreement_count: stored(u64::try_from(r.get::<_, i64>(1)?))?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let has_more = customers.len() > query.page_size;
    customers.truncate(query.page_size);
    Ok(CustomerPage {
        customers,
        has_more,
    })
}

/// The statement of [`latest_records`], for one feature: the newest `limit`
/// filed records and every unfiled one (a bounded tail, `record_order.rs`),
/// which `browse::newest` merges.
pub(super) const LATEST_RECORDS: &str = concat!(
    "SELECT * FROM (
             SELECT r.feature_code, r.meter_type, r.value, r.usage_timestamp, r.received_at_ns,
                    r.period_start_ns, r.period_end_ns, r.effective_at_ns, r.seq
             FROM usage_record_order o JOIN usage_records r ON r.seq = o.seq
             WHERE o.agreement_id = ?1 AND o.feature_code = ?2 AND o.seq <= ",
    record_order::upto_sql!(),
    " ORDER BY o.period_start_ns DESC, o.effective_at_ns DESC, o.seq DESC LIMIT ?3)
         UNION ALL
         SELECT feature_code, meter_type, value, usage_timestamp, received_at_ns,
                period_start_ns, period_end_ns, effective_at_ns, seq
         FROM usage_records WHERE seq > ",
    record_order::upto_sql!(),
    " AND agreement_id = ?1 AND feature_code = ?2"
);

/// The latest records of an agreement: the newest `limit` of each feature from
/// the period order, merged.
pub(super) fn latest_records(
    conn: &mut Connection,
    query: &RecordsQuery,
) -> Result<Vec<StoredUsageRecord>, OpError<ReadUsageError>> {
    // One snapshot for agreement, plan and records.
    let tx = conn.transaction()?;
    let Some(agreement) = agreements::load(&tx, &query.agreement_id)? else {
        return Err(ReadUsageError::AgreementNotFound.into());
    };
    let plan = catalog::load_plan(&tx, &agreement.plan_code)?;
    let features =
        crate::record_checks::features_to_report(plan.as_ref(), query.feature_code.as_ref())?;
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let mut statement = tx.prepare_cached(LATEST_RECORDS)?;
    let mut found = Vec::new();
    for feature in features {
        let rows = statement.query_map(
            (query.agreement_id.as_str(), feature.code.as_str(), limit),
            |r| {
                let order = RecordOrder {
                    period_start_ns: r.get(5)?,
                    effective_at_ns: r.get(7)?,
                    seq: r.get(8)?,
                };
                let meter_type: String = r.get(1)?;
                let record = StoredUsageRecord {
                    feature_code: stored(FeatureCode::parse(r.get::<_, String>(0)?))?,
                    meter_type: browse::meter_type(&meter_type)
                        .ok_or_else(|| codec::corrupt(format!("meter type {meter_type:?}")))?,
                    value: stored(MeterValue::parse(&r.get::<_, String>(2)?))?,
                    timestamp: r
                        .get::<_, Option<String>>(3)?
                        .map(|t| stored(t.parse()))
                        .transpose()?,
                    received_at: codec::timestamp(r.get(4)?)?,
                    period: Period {
                        start: codec::timestamp(order.period_start_ns)?,
                        end: codec::timestamp(r.get(6)?)?,
                    },
                };
                Ok((order, record))
            },
        )?;
        for row in rows {
            found.push(row?);
        }
    }
    Ok(browse::newest(found, query.limit))
}
