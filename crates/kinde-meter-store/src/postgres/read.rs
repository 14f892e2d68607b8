//! Usage reads, from the maintained aggregates only, in one snapshot.

use deadpool_postgres::Object;
use jiff::Timestamp;
use kinde_meter_core::ids::CustomerId;

use super::{
    aggregates::{self, PeriodKey},
    agreements::{self, COLUMNS as AGREEMENT_COLUMNS},
    catalog::{self, PLAN_COLUMNS},
    codec,
    failure::{OpError, PgResult},
    pool,
};
use crate::{CustomerEntitlements, FeatureUsage, ReadUsageError, UsageQuery, UsageReport};

/// A trivial query on the schema: the database answers and the schema is there.
pub(super) async fn ping(conn: &Object) -> PgResult<()> {
    conn.query_opt("SELECT 1 FROM schema_migrations LIMIT 1", &[])
        .await?;
    Ok(())
}

/// Usage of the agreement's metered features (or the one asked for) in the
/// period containing `query.at`.
pub(super) async fn usage(
    conn: &mut Object,
    query: &UsageQuery,
) -> Result<UsageReport, OpError<ReadUsageError>> {
    // One snapshot for agreement, plan and aggregates.
    let tx = pool::read_snapshot(conn).await?;
    let Some(agreement) = agreements::load(&tx, &query.agreement_id).await? else {
        return Err(ReadUsageError::AgreementNotFound.into());
    };
    let plan = catalog::load_plan(&tx, &agreement.plan_code).await?;
    let features =
        crate::record_checks::features_to_report(plan.as_ref(), query.feature_code.as_ref())?;
    let period = agreement.period_containing(query.at);
    let mut usage = Vec::with_capacity(features.len());
    for feature in features {
        // A period beyond the instants the store holds has no aggregate.
        let found = match i64::try_from(period.start.as_nanosecond()) {
            Ok(period_start_ns) => {
                let key = PeriodKey {
                    agreement_id: agreement.id.as_str().to_owned(),
                    feature_code: feature.code.as_str().to_owned(),
                    period_start_ns,
                };
                aggregates::read(&tx, &key).await?
            }
            Err(_) => None,
        };
        let (value, record_count, last_recorded_at): (_, _, Option<Timestamp>) =
            found.unwrap_or_default();
        usage.push(FeatureUsage {
            feature_code: feature.code.clone(),
            value,
            record_count,
            last_recorded_at,
        });
    }
    tx.commit().await?;
    Ok(UsageReport { period, usage })
}

/// The customer's newest agreement active at `now`, its plan and the usage of
/// its metered features in the period containing `now`: two statements
/// (agreement with plan, then the aggregates), outside any transaction, so
/// that what any server committed before is seen.
pub(super) async fn customer_entitlements(
    conn: &Object,
    customer_id: &CustomerId,
    now: Timestamp,
) -> PgResult<Option<CustomerEntitlements>> {
    let stmt = conn
        .prepare_cached(&format!(
            "SELECT a.*, {PLAN_COLUMNS}
             FROM (SELECT {AGREEMENT_COLUMNS} FROM agreements
                   WHERE customer_id = $1 AND (expires_on_ns IS NULL OR expires_on_ns > $2)
                   ORDER BY seq DESC LIMIT 1) a
             LEFT JOIN plans p ON p.code = a.plan_code
             LEFT JOIN plan_features f ON f.plan_code = p.code
             ORDER BY f.position"
        ))
        .await?;
    let rows = conn
        .query(&stmt, &[&customer_id.as_str(), &codec::ns_clamped(now)])
        .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let agreement = agreements::from_row(first)?;
    // Six agreement columns, then the plan's.
    let Some(plan) = catalog::fold_plans(&rows, 6)?.pop() else {
        return Ok(None);
    };
    let period = agreement.period_containing(now);
    let codes: Vec<&str> = plan.metered_features().map(|f| f.code.as_str()).collect();
    let mut found = match i64::try_from(period.start.as_nanosecond()) {
        Ok(start) if !codes.is_empty() => {
            aggregates::read_features(conn, agreement.id.as_str(), &codes, start).await?
        }
        // A period beyond the instants the store holds has no aggregate.
        _ => Default::default(),
    };
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
