//! The dashboard's reads (`crate::browse`): customers from `agreements_by_customer`,
//! the latest records from the filed period order (`usage_record_runs`) and the
//! unfiled tail (`record_order.rs`).

use kinde_meter_core::{
    ids::{CustomerId, FeatureCode},
    period::Period,
    value::MeterValue,
};
use rusqlite::{Connection, OptionalExtension};

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

/// The columns of a record [`latest_records`] reads, after which
/// [`record_row`] takes them.
macro_rules! record_columns {
    () => {
        "feature_code, meter_type, value, usage_timestamp, received_at_ns,
         period_start_ns, period_end_ns, effective_at_ns, seq"
    };
}

/// The unfiled records of an agreement's feature (after the filed mark `?3`),
/// a bounded tail (`record_order.rs`), which `browse::newest` merges with the
/// filed ones.
pub(super) const LATEST_TAIL: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM usage_records WHERE seq > ?3 AND agreement_id = ?1 AND feature_code = ?2"
);

/// A record read by [`record_columns`], with its place in the order.
fn record_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(RecordOrder, StoredUsageRecord)> {
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
}

/// The newest `limit` filed records of an agreement's feature, newest first:
/// the newest order keys of its runs, each record read by seq. A record
/// deleted since it was filed (retention) is left out and the runs read
/// again without it, so that `limit` are found while there are.
fn filed_newest_records(
    conn: &Connection,
    agreement_id: &str,
    feature_code: &str,
    limit: usize,
) -> rusqlite::Result<Vec<(RecordOrder, StoredUsageRecord)>> {
    let mut by_seq = conn.prepare_cached(concat!(
        "SELECT ",
        record_columns!(),
        " FROM usage_records WHERE seq = ?1"
    ))?;
    let mut gone = Vec::new();
    'again: loop {
        let newest = record_order::filed_newest(conn, agreement_id, feature_code, limit, &gone)?;
        let mut found = Vec::with_capacity(newest.len());
        for order in newest {
            match by_seq.query_row([order.seq], record_row).optional()? {
                Some(record) => found.push(record),
                None => {
                    gone.push(order.seq);
                    continue 'again;
                }
            }
        }
        return Ok(found);
    }
}

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
    let upto = record_order::filed_upto(&tx)?;
    let mut tail = tx.prepare_cached(LATEST_TAIL)?;
    let mut found = Vec::new();
    for feature in features {
        found.extend(filed_newest_records(
            &tx,
            query.agreement_id.as_str(),
            feature.code.as_str(),
            query.limit,
        )?);
        let rows = tail.query_map(
            (query.agreement_id.as_str(), feature.code.as_str(), upto),
            record_row,
        )?;
        for row in rows {
            found.push(row?);
        }
    }
    Ok(browse::newest(found, query.limit))
}
