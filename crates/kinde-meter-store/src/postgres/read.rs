//! Usage reads, from the maintained aggregates only, in one snapshot.

use deadpool_postgres::Object;
use jiff::Timestamp;
use tokio_postgres::IsolationLevel;

use super::{
    aggregates::{self, PeriodKey},
    agreements, catalog,
    failure::{OpError, PgResult},
};
use crate::{FeatureUsage, ReadUsageError, UsageQuery, UsageReport};

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
    let tx = conn
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
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
