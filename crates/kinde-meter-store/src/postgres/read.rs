//! Usage reads and entitlement checks, from the maintained aggregates only,
//! each in one statement: agreement, plan with its features and the
//! aggregates joined, so that one statement's snapshot (which sees everything
//! committed before it started) is the read's, with no transaction around it
//! and one round trip.

use std::collections::HashMap;

use deadpool_postgres::Object;
use jiff::Timestamp;
use kinde_meter_core::{agreement::Agreement, catalog::Plan, ids::CustomerId, value::UsageTotal};
use tokio_postgres::Row;

use super::{
    agreements::{self, COLUMNS as AGREEMENT_COLUMNS},
    catalog::{self, PLAN_COLUMNS},
    codec::{self, stored},
    failure::{OpError, PgResult},
};
use crate::{CustomerEntitlements, FeatureUsage, ReadUsageError, UsageQuery, UsageReport};

/// A trivial query on the schema: the database answers and the schema is there.
pub(super) async fn ping(conn: &Object) -> PgResult<()> {
    conn.query_opt("SELECT 1 FROM schema_migrations LIMIT 1", &[])
        .await?;
    Ok(())
}

/// The plan, its features and, per feature, the aggregate with the latest
/// period start at or before `$2`, of the agreement the subquery `a`
/// (of [`AGREEMENT_COLUMNS`]) selects: one row per feature, ordered. The
/// aggregate is the one of the period containing `$2` only if its start is that
/// period's, which [`aggregate_of`] checks (periods of one agreement do not
/// overlap, so that period's row, if any, is the latest starting at or before
/// `$2`); the primary key's order makes it one index probe per feature.
fn joined(agreement_subquery: &str) -> String {
    format!(
        "SELECT a.*, {PLAN_COLUMNS}, g.period_start_ns, g.v, g.record_count, g.last_recorded_at_ns
         FROM ({agreement_subquery}) a
         LEFT JOIN plans p ON p.code = a.plan_code
         LEFT JOIN plan_features f ON f.plan_code = p.code
         LEFT JOIN LATERAL (
             SELECT period_start_ns, trim_scale(value)::text AS v, record_count, last_recorded_at_ns
             FROM usage_aggregates
             WHERE agreement_id = a.id AND feature_code = f.code AND period_start_ns <= $2
             ORDER BY period_start_ns DESC LIMIT 1) g ON true
         ORDER BY f.position"
    )
}

/// Columns of a [`joined`] row: six of the agreement, then the plan's.
const PLAN_AT: usize = 6;
/// Columns of a [`joined`] row: where the aggregate's columns start.
const AGGREGATE_AT: usize = PLAN_AT + 14;

/// Usage of one feature in a period: value, record count, last receipt.
type Found = (UsageTotal, u64, Option<Timestamp>);

/// What [`decode`] finds: the agreement, its plan, the usage by feature code.
type Decoded = (Agreement, Option<Plan>, HashMap<String, Found>);

/// The agreement, its plan (if still in the store) and, by feature code, the
/// usage in the period containing `at` found in `rows` of
/// [`joined`]; `None` if there are no rows (no agreement).
fn decode(rows: &[Row], at: Timestamp) -> PgResult<Option<Decoded>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let agreement = agreements::from_row(first)?;
    let plan = catalog::fold_plans(rows, PLAN_AT)?.pop();
    // A period beyond the instants the store holds has no aggregate.
    let start = i64::try_from(agreement.period_containing(at).start.as_nanosecond()).ok();
    let mut usage = HashMap::new();
    for r in rows {
        if let (Some(feature), Some(usage_of)) = (
            r.get::<_, Option<&str>>(PLAN_AT + 4),
            aggregate_of(r, start)?,
        ) {
            usage.insert(feature.to_owned(), usage_of);
        }
    }
    Ok(Some((agreement, plan, usage)))
}

/// The aggregate of a [`joined`] row if it is the one of the period starting
/// at `start`.
fn aggregate_of(r: &Row, start: Option<i64>) -> PgResult<Option<Found>> {
    match r.get::<_, Option<i64>>(AGGREGATE_AT) {
        Some(found) if Some(found) == start => Ok(Some((
            stored(
                UsageTotal::parse(r.get(AGGREGATE_AT + 1)),
                "usage_aggregates.value",
            )?,
            stored(
                u64::try_from(r.get::<_, i64>(AGGREGATE_AT + 2)),
                "record_count",
            )?,
            codec::opt_timestamp(r.get(AGGREGATE_AT + 3))?,
        ))),
        _ => Ok(None),
    }
}

/// Usage of the agreement's metered features (or the one asked for) in the
/// period containing `query.at`, in one statement (so one snapshot).
pub(super) async fn usage(
    conn: &mut Object,
    query: &UsageQuery,
) -> Result<UsageReport, OpError<ReadUsageError>> {
    let stmt = conn
        .prepare_cached(&joined(&format!(
            "SELECT {AGREEMENT_COLUMNS} FROM agreements WHERE id = $1"
        )))
        .await?;
    let rows = conn
        .query(
            &stmt,
            &[&query.agreement_id.as_str(), &codec::ns_clamped(query.at)],
        )
        .await?;
    let Some((agreement, plan, mut found)) = decode(&rows, query.at)? else {
        return Err(ReadUsageError::AgreementNotFound.into());
    };
    let features =
        crate::record_checks::features_to_report(plan.as_ref(), query.feature_code.as_ref())?;
    let usage = features
        .into_iter()
        .map(|f| {
            let (value, record_count, last_recorded_at) =
                found.remove(f.code.as_str()).unwrap_or_default();
            FeatureUsage {
                feature_code: f.code.clone(),
                value,
                record_count,
                last_recorded_at,
            }
        })
        .collect();
    Ok(UsageReport {
        period: agreement.period_containing(query.at),
        usage,
    })
}

/// The customer's newest agreement active at `now`, its plan and the usage of
/// its metered features in the period containing `now`, in one statement (so
/// one snapshot), so that what any server committed before is seen.
pub(super) async fn customer_entitlements(
    conn: &Object,
    customer_id: &CustomerId,
    now: Timestamp,
) -> PgResult<Option<CustomerEntitlements>> {
    let stmt = conn
        .prepare_cached(&joined(&format!(
            "SELECT {AGREEMENT_COLUMNS} FROM agreements
             WHERE customer_id = $1 AND (expires_on_ns IS NULL OR expires_on_ns > $2)
             ORDER BY seq DESC LIMIT 1"
        )))
        .await?;
    let rows = conn
        .query(&stmt, &[&customer_id.as_str(), &codec::ns_clamped(now)])
        .await?;
    let Some((agreement, Some(plan), mut found)) = decode(&rows, now)? else {
        return Ok(None);
    };
    let period = agreement.period_containing(now);
    let usage = plan
        .metered_features()
        .map(|f| {
            let (value, record_count, last_recorded_at) =
                found.remove(f.code.as_str()).unwrap_or_default();
            FeatureUsage {
                feature_code: f.code.clone(),
                value,
                record_count,
                last_recorded_at,
            }
        })
        .collect();
    Ok(Some(CustomerEntitlements {
        agreement,
        plan,
        usage: UsageReport { period, usage },
    }))
}
