//! The usage export's read (`crate::export`): a page of agreements in id order
//! (the primary key), their plans and their aggregates, three statements in
//! one read-only snapshot.

use std::collections::HashMap;

use deadpool_postgres::Object;
use jiff::Timestamp;
use kinde_meter_core::{agreement::Agreement, ids::AgreementId, period::Period, value::UsageTotal};

use super::{
    agreements::{self, COLUMNS as AGREEMENT_COLUMNS},
    catalog,
    codec::{self, stored},
    failure::PgResult,
    pool,
};
use crate::{AgreementUsage, ExportPage, ExportQuery, FeatureUsage, UsageReport};

/// An aggregate's usage as read back: value, record count, last receipt.
type Found = (UsageTotal, u64, Option<Timestamp>);

/// One page of the export (`crate::Store::export_usage`).
pub(super) async fn page(conn: &mut Object, query: &ExportQuery) -> PgResult<ExportPage> {
    let tx = pool::read_snapshot(conn).await?;
    let page_size = query.page_size.clamp(1, crate::MAX_EXPORT_PAGE);
    let after = query.after.as_ref().map_or("", AgreementId::as_str);
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {AGREEMENT_COLUMNS} FROM agreements WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .await?;
    let found = tx
        .query(&stmt, &[&after, &(page_size as i64)])
        .await?
        .iter()
        .map(agreements::from_row)
        .collect::<PgResult<Vec<Agreement>>>()?;
    let next = (found.len() == page_size)
        .then(|| found.last().map(|a| a.id.clone()))
        .flatten();

    // The agreements active in their period, and the plans they name.
    let chosen: Vec<(Agreement, Period)> = found
        .into_iter()
        .filter_map(|a| query.period.period_of(&a, query.now).map(|p| (a, p)))
        .collect();
    let mut codes: Vec<&str> = chosen.iter().map(|(a, _)| a.plan_code.as_str()).collect();
    codes.sort_unstable();
    codes.dedup();
    let plans = catalog::load_plans(&tx, &codes).await?;

    // Every (agreement, metered feature, period start) of the page in one read;
    // a period beyond the instants the store holds has no aggregate.
    let (mut ids, mut features, mut starts) = (Vec::new(), Vec::new(), Vec::new());
    for (agreement, period) in &chosen {
        let (Some(plan), Ok(start)) = (
            plans.get(&agreement.plan_code),
            i64::try_from(period.start.as_nanosecond()),
        ) else {
            continue;
        };
        for feature in plan.metered_features() {
            ids.push(agreement.id.as_str());
            features.push(feature.code.as_str());
            starts.push(start);
        }
    }
    let stmt = tx
        .prepare_cached(
            "SELECT g.agreement_id, g.feature_code, trim_scale(g.value)::text, g.record_count,
                    g.last_recorded_at_ns
             FROM usage_aggregates g
             JOIN unnest($1::text[], $2::text[], $3::int8[]) AS k (a, f, s)
               ON g.agreement_id = k.a AND g.feature_code = k.f AND g.period_start_ns = k.s",
        )
        .await?;
    let mut usage: HashMap<(String, String), Found> = HashMap::new();
    for r in tx.query(&stmt, &[&ids, &features, &starts]).await? {
        usage.insert(
            (r.get(0), r.get(1)),
            (
                stored(UsageTotal::parse(r.get(2)), "usage_aggregates.value")?,
                stored(u64::try_from(r.get::<_, i64>(3)), "record_count")?,
                codec::opt_timestamp(r.get(4))?,
            ),
        );
    }
    tx.commit().await?;

    let mut exported = Vec::with_capacity(chosen.len());
    for (agreement, period) in chosen {
        // Plans are never dropped from the store; without one there is nothing to price.
        let Some(plan) = plans.get(&agreement.plan_code).cloned() else {
            continue;
        };
        let usage = plan
            .metered_features()
            .map(|f| {
                let key = (agreement.id.to_string(), f.code.to_string());
                let (value, record_count, last_recorded_at) =
                    usage.remove(&key).unwrap_or_default();
                FeatureUsage {
                    feature_code: f.code.clone(),
                    value,
                    record_count,
                    last_recorded_at,
                }
            })
            .collect();
        exported.push(AgreementUsage {
            agreement,
            plan,
            usage: UsageReport { period, usage },
        });
    }
    Ok(ExportPage {
        agreements: exported,
        next,
    })
}
