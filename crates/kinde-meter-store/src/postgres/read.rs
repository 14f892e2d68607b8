//! Usage reads and entitlement checks, from the maintained aggregates only.
//!
//! Each is one statement, so one round trip and one snapshot (a statement
//! outside a transaction sees everything committed before it started): the
//! agreement, its plan with its features and, per metered feature, one
//! candidate aggregate, joined ([`joined`]). The period an instant belongs
//! to is the one Rust computes (`Agreement::period_containing`), which SQL
//! cannot, so the statement fetches for each feature the aggregate with the
//! latest period start at or before a pivot (`GREATEST(instant, anchor)`), and
//! [`resolve`] decides from it whether the computed period has an aggregate
//! and which row it is, or that the candidate does not settle it. Periods of
//! an agreement do not overlap and start at or after its anchor, and an instant
//! at or before the anchor lies in the first period (which starts at the
//! anchor), so the computed period's start is never after the pivot and the
//! candidate always settles it; should a row ever not fit that grid, the read
//! is done again in a repeatable-read snapshot with the aggregates read by
//! exact key ([`in_snapshot`]), so the answer never rests on the grid.
//!
//! No answer mixes two snapshots: the common path is one statement and the
//! fallback one transaction, so a catalog load, a new agreement of the customer
//! or usage committed meanwhile is seen whole or not at all (the agreement,
//! plan and aggregates answered are those of one instant). The one-statement
//! read of 106c729 (reverted) took the latest period starting at or before the
//! instant for the instant's period, which an instant before the anchor is not in.
//!
//! Each of those statements also reads `terms_version`, and the store
//! remembers the agreement and plan it found at that version (`terms.rs`).
//! A read whose agreement and plan are remembered is one statement of
//! primary-key probes instead ([`CONFIRMED`], on a connection shared with
//! other such reads: `shared.rs`): the counter and the aggregates of the
//! period Rust computes, by exact key. When the counter is the one they were
//! read at, no agreement or plan has changed between the two snapshots, so
//! the answer is the one the joined statement would give in the second;
//! otherwise the read is done as above.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock},
};

use deadpool_postgres::{GenericClient, Object};
use jiff::Timestamp;
use kinde_meter_core::{
    agreement::Agreement,
    catalog::{Feature, Plan},
    ids::{AgreementId, CustomerId, FeatureCode},
    period::Period,
    value::UsageTotal,
};
use tokio_postgres::Row;

use super::{
    agreements::{self, COLUMNS as AGREEMENT_COLUMNS},
    catalog::{self, PLAN_COLUMNS},
    codec::{self, stored},
    failure::{OpError, PgResult},
    pool,
    terms::{Remembered, Terms},
};
use crate::{CustomerEntitlements, FeatureUsage, ReadUsageError, UsageQuery, UsageReport};

/// A trivial query on the schema: the database answers and the schema is there.
pub(super) async fn ping(conn: &Object) -> PgResult<()> {
    conn.query_opt("SELECT 1 FROM schema_migrations LIMIT 1", &[])
        .await?;
    Ok(())
}

/// The statement of a read: the agreement the subquery `a` selects (of
/// [`AGREEMENT_COLUMNS`]; parameters `$1` and the instant `$2`), its plan and
/// features, the pivot `GREATEST($2, anchor)` and, per metered feature (only
/// feature `$3` unless `$3` is NULL), the aggregate with the latest period
/// start at or before the pivot, then the feature's position and the
/// `terms_version` counter: one row per
/// feature, in no particular order ([`read_joined`] puts them in catalog
/// order: an `ORDER BY` costs PostgreSQL a sort node, whose start-up alone is
/// ~10 % of the statement's instructions). The primary key's order makes the
/// aggregate one index probe per feature.
fn joined(agreement_subquery: &str) -> String {
    format!(
        "SELECT a.*, {PLAN_COLUMNS}, GREATEST($2, a.anchor_ns),
                g.period_start_ns, g.v, g.record_count, g.last_recorded_at_ns, f.position,
                (SELECT version FROM terms_version WHERE id = 0)
         FROM ({agreement_subquery}) a
         LEFT JOIN plans p ON p.code = a.plan_code
         LEFT JOIN plan_features f ON f.plan_code = p.code
         LEFT JOIN LATERAL (
             SELECT period_start_ns, trim_scale(value)::text AS v, record_count,
                    last_recorded_at_ns
             FROM usage_aggregates
             WHERE f.metered AND ($3::text IS NULL OR f.code = $3)
               AND agreement_id = a.id AND feature_code = f.code
               AND period_start_ns <= GREATEST($2, a.anchor_ns)
             ORDER BY period_start_ns DESC LIMIT 1) g ON true"
    )
}

/// [`joined`] for the agreement with id `$1`.
static BY_ID: LazyLock<String> = LazyLock::new(|| {
    joined(&format!(
        "SELECT {AGREEMENT_COLUMNS} FROM agreements WHERE id = $1"
    ))
});

/// [`joined`] for customer `$1`'s newest agreement active at `$2`.
static ACTIVE_OF_CUSTOMER: LazyLock<String> = LazyLock::new(|| {
    joined(&format!(
        "SELECT {AGREEMENT_COLUMNS} FROM agreements
         WHERE customer_id = $1 AND (expires_on_ns IS NULL OR expires_on_ns > $2)
         ORDER BY seq DESC LIMIT 1"
    ))
});

/// The aggregates of some features of an agreement in one period, by exact key.
const EXACT: &str =
    "SELECT feature_code, trim_scale(value)::text, record_count, last_recorded_at_ns
     FROM usage_aggregates
     WHERE agreement_id = $1 AND feature_code = ANY($2) AND period_start_ns = $3";

/// Columns of a [`joined`] row: six of the agreement, then the plan's.
const PLAN_AT: usize = 6;
/// Columns of a [`joined`] row: the pivot, after the plan's fourteen.
const PIVOT_AT: usize = PLAN_AT + 14;
/// Columns of a [`joined`] row: where the candidate aggregate's columns start.
const AGGREGATE_AT: usize = PIVOT_AT + 1;
/// Columns of a [`joined`] row: the feature's position, after the aggregate's four.
const POSITION_AT: usize = AGGREGATE_AT + 4;
/// Columns of a [`joined`] row: the `terms_version` counter, last.
const VERSION_AT: usize = POSITION_AT + 1;

/// The remembered read: the `terms_version` counter and the aggregates of
/// agreement `$1`'s features `$2` in the period starting at `$3`, one row
/// per aggregate found (one with NULL aggregate columns if none is): a
/// primary-key probe each, in one statement, so one snapshot.
const CONFIRMED: &str =
    "SELECT v.version, g.feature_code, trim_scale(g.value)::text, g.record_count,
            g.last_recorded_at_ns
     FROM terms_version v
     LEFT JOIN usage_aggregates g
         ON g.agreement_id = $1 AND g.feature_code = ANY($2) AND g.period_start_ns = $3
     WHERE v.id = 0";

/// Usage of one feature in a period: value, record count, last receipt.
type Found = (UsageTotal, u64, Option<Timestamp>);

/// What a candidate aggregate tells about the period starting at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// The candidate is that period's aggregate.
    Found,
    /// That period has no aggregate.
    Absent,
    /// The candidate does not settle it.
    Unsettled,
}

/// Whether the period starting at `start` (`None`: beyond the instants the
/// store holds, so no aggregate) has an aggregate, given `latest`, the latest
/// period start of the feature's aggregates at or before `pivot` (`None`: no
/// aggregate starts at or before it). If `start <= pivot`, that period's
/// aggregate (if any) is among those starting at or before the pivot, so the
/// latest of them starts at `start` or later: at `start`, it is that period's;
/// before `start` (or none), there is none; after `start`, it is some other
/// row and says nothing. If `start > pivot`, nothing is known.
fn resolve(start: Option<i64>, pivot: i64, latest: Option<i64>) -> Probe {
    match (start, latest) {
        (None, _) => Probe::Absent,
        (Some(s), _) if s > pivot => Probe::Unsettled,
        (Some(s), Some(l)) if l == s => Probe::Found,
        (Some(s), Some(l)) if l > s => Probe::Unsettled,
        _ => Probe::Absent,
    }
}

/// What one [`joined`] statement read.
struct Joined {
    agreement: Agreement,
    /// `None` if the agreement's plan is no longer in the store.
    plan: Option<Plan>,
    /// Start of the period containing the instant, if the store can hold it.
    start: Option<i64>,
    /// Usage in that period, by feature code, of the metered features asked
    /// for that have an aggregate in it.
    found: HashMap<String, Found>,
    /// Metered features asked for whose candidate did not settle it.
    unsettled: Vec<String>,
    /// The `terms_version` counter in the statement's snapshot.
    version: Option<i64>,
}

/// Runs the [`joined`] statement `sql` with `$1` = `key`, `$2` = `at`,
/// `$3` = `feature`; `None` if it selects no agreement.
async fn read_joined(
    conn: &impl GenericClient,
    sql: &str,
    key: &str,
    at: Timestamp,
    feature: Option<&str>,
) -> PgResult<Option<Joined>> {
    let stmt = conn.prepare_cached(sql).await?;
    let mut rows = conn
        .query(&stmt, &[&key, &codec::ns_clamped(at), &feature])
        .await?;
    // The rows are one agreement's and one plan's: in catalog order once
    // ordered by the feature's position (a plan without features: one row).
    rows.sort_by_key(|r| r.get::<_, Option<i32>>(POSITION_AT));
    decode(&rows, at, feature)
}

/// The agreement, plan and usage of the rows of a [`joined`] statement run
/// for the instant `at` and `feature_asked` (`$3`).
fn decode(rows: &[Row], at: Timestamp, feature_asked: Option<&str>) -> PgResult<Option<Joined>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let agreement = agreements::from_row(first)?;
    let plan = catalog::fold_plans(rows, PLAN_AT)?.pop();
    let version = first.get(VERSION_AT);
    let start = i64::try_from(agreement.period_containing(at).start.as_nanosecond()).ok();
    let mut found = HashMap::new();
    let mut unsettled = Vec::new();
    for r in rows {
        // Rows without a feature (a plan without features, or none) and rows of
        // features not probed (not metered, not asked for) have no candidate.
        let Some(feature) = r.get::<_, Option<&str>>(PLAN_AT + 4) else {
            continue;
        };
        if !r.get::<_, bool>(PLAN_AT + 6) || feature_asked.is_some_and(|f| f != feature) {
            continue;
        }
        match resolve(start, r.get(PIVOT_AT), r.get(AGGREGATE_AT)) {
            Probe::Found => {
                found.insert(feature.to_owned(), aggregate(r, AGGREGATE_AT + 1)?);
            }
            Probe::Absent => {}
            Probe::Unsettled => unsettled.push(feature.to_owned()),
        }
    }
    Ok(Some(Joined {
        agreement,
        plan,
        start,
        found,
        unsettled,
        version,
    }))
}

/// Value, record count and last receipt of an aggregate, from its columns
/// starting at `at` (`trim_scale(value)::text, record_count, last_recorded_at_ns`).
fn aggregate(r: &Row, at: usize) -> PgResult<Found> {
    Ok((
        stored(UsageTotal::parse(r.get(at)), "usage_aggregates.value")?,
        stored(u64::try_from(r.get::<_, i64>(at + 1)), "record_count")?,
        codec::opt_timestamp(r.get(at + 2))?,
    ))
}

/// Reads as [`read_joined`] in one statement; if a candidate did not settle a
/// feature's usage, again in a repeatable-read snapshot, with that feature's
/// aggregate read by exact key ([`EXACT`]) in the same snapshot.
async fn read(
    conn: &mut Object,
    sql: &str,
    key: &str,
    at: Timestamp,
    feature: Option<&str>,
) -> PgResult<Option<Joined>> {
    match read_joined(&*conn, sql, key, at, feature).await? {
        Some(joined) if !joined.unsettled.is_empty() => {}
        settled => return Ok(settled),
    }
    in_snapshot(conn, sql, key, at, feature).await
}

/// [`read`]'s fallback: the [`joined`] statement and the exact-key reads of
/// what it did not settle, in one snapshot.
async fn in_snapshot(
    conn: &mut Object,
    sql: &str,
    key: &str,
    at: Timestamp,
    feature: Option<&str>,
) -> PgResult<Option<Joined>> {
    let tx = pool::read_snapshot(conn).await?;
    let mut joined = read_joined(&tx, sql, key, at, feature).await?;
    if let Some(j) = &mut joined
        && let Some(start) = j.start
        && !j.unsettled.is_empty()
    {
        let stmt = tx.prepare_cached(EXACT).await?;
        let rows = tx
            .query(&stmt, &[&j.agreement.id.as_str(), &j.unsettled, &start])
            .await?;
        for r in &rows {
            j.found.insert(r.get(0), aggregate(r, 1)?);
        }
        j.unsettled.clear();
    }
    tx.commit().await?;
    Ok(joined)
}

/// Usage of the agreement's metered features (or the one asked for) in the
/// period containing `query.at`, read in one statement (see the module), and
/// the terms it read remembered in `terms`.
pub(super) async fn usage(
    conn: &mut Object,
    terms: &Terms,
    query: &UsageQuery,
) -> Result<UsageReport, OpError<ReadUsageError>> {
    let Some(Joined {
        agreement,
        plan,
        mut found,
        version,
        ..
    }) = read(
        conn,
        &BY_ID,
        query.agreement_id.as_str(),
        query.at,
        query.feature_code.as_ref().map(|f| f.as_str()),
    )
    .await?
    else {
        return Err(ReadUsageError::AgreementNotFound.into());
    };
    let (agreement, plan) = (Arc::new(agreement), plan.map(Arc::new));
    terms.remember(version, &agreement, plan.as_ref(), None);
    let features =
        crate::record_checks::features_to_report(plan.as_deref(), query.feature_code.as_ref())?;
    Ok(report(
        agreement.period_containing(query.at),
        &features,
        &mut found,
    ))
}

/// [`usage`] from a remembered agreement and plan: `None` if the counter
/// moved since they were read, or if the read would refuse (the refusal is
/// left to the joined statement).
pub(super) async fn remembered_usage(
    conn: &Object,
    remembered: Remembered,
    query: &UsageQuery,
) -> PgResult<Option<UsageReport>> {
    let Ok(features) = crate::record_checks::features_to_report(
        Some(&remembered.plan),
        query.feature_code.as_ref(),
    ) else {
        return Ok(None);
    };
    let period = remembered.agreement.period_containing(query.at);
    let id = &remembered.agreement.id;
    let Some(mut found) = confirmed(conn, remembered.version, id, &features, period).await? else {
        return Ok(None);
    };
    Ok(Some(report(period, &features, &mut found)))
}

/// The aggregates of `features` of agreement `id` in `period`, read with
/// [`CONFIRMED`]: `None` unless the counter is still `version`, or for a
/// period beyond the instants the store holds.
async fn confirmed(
    conn: &Object,
    version: i64,
    id: &AgreementId,
    features: &[&Feature],
    period: Period,
) -> PgResult<Option<HashMap<String, Found>>> {
    let Ok(start) = i64::try_from(period.start.as_nanosecond()) else {
        return Ok(None);
    };
    let codes: Vec<&str> = features.iter().map(|f| f.code.as_str()).collect();
    let stmt = conn.prepare_cached(CONFIRMED).await?;
    let rows = conn.query(&stmt, &[&id.as_str(), &codes, &start]).await?;
    if rows.first().map(|r| r.get::<_, i64>(0)) != Some(version) {
        return Ok(None);
    }
    let mut found = HashMap::with_capacity(rows.len());
    for r in &rows {
        if let Some(code) = r.get::<_, Option<String>>(1) {
            found.insert(code, aggregate(r, 2)?);
        }
    }
    Ok(Some(found))
}

/// The usage report of `features` in `period`, from the aggregates `found`
/// (a feature without one has no usage yet).
fn report(
    period: Period,
    features: &[&Feature],
    found: &mut HashMap<String, Found>,
) -> UsageReport {
    UsageReport {
        period,
        usage: features
            .iter()
            .map(|f| feature_usage(f.code.clone(), found))
            .collect(),
    }
}

/// A feature's usage as found, zero if it has no aggregate in the period.
fn feature_usage(feature_code: FeatureCode, found: &mut HashMap<String, Found>) -> FeatureUsage {
    let (value, record_count, last_recorded_at) =
        found.remove(feature_code.as_str()).unwrap_or_default();
    FeatureUsage {
        feature_code,
        value,
        record_count,
        last_recorded_at,
    }
}

/// [`customer_entitlements`] from the customer's newest active agreement and
/// its plan as remembered: `None` if the counter moved since they were read.
pub(super) async fn remembered_entitlements(
    conn: &Object,
    remembered: Remembered,
    now: Timestamp,
    only: Option<&FeatureCode>,
) -> PgResult<Option<CustomerEntitlements>> {
    let Remembered {
        version,
        agreement,
        plan,
    } = remembered;
    let features: Vec<&Feature> =
        crate::record_checks::metered_features_asked(&plan, only).collect();
    let period = agreement.period_containing(now);
    let Some(mut found) = confirmed(conn, version, &agreement.id, &features, period).await? else {
        return Ok(None);
    };
    let usage = report(period, &features, &mut found);
    Ok(Some(CustomerEntitlements {
        agreement,
        plan,
        usage,
    }))
}

/// The customer's newest agreement active at `now`, its plan and the usage of
/// its metered features in the period containing `now`, read in one statement
/// (see the module), so that what any server committed before is seen; the
/// terms it read remembered in `terms`.
pub(super) async fn customer_entitlements(
    conn: &mut Object,
    terms: &Terms,
    customer_id: &CustomerId,
    now: Timestamp,
    only: Option<&FeatureCode>,
) -> PgResult<Option<CustomerEntitlements>> {
    let Some(Joined {
        agreement,
        plan,
        mut found,
        version,
        ..
    }) = read(
        conn,
        &ACTIVE_OF_CUSTOMER,
        customer_id.as_str(),
        now,
        only.map(FeatureCode::as_str),
    )
    .await?
    else {
        return Ok(None);
    };
    let (agreement, plan) = (Arc::new(agreement), plan.map(Arc::new));
    terms.remember(version, &agreement, plan.as_ref(), Some(now));
    let Some(plan) = plan else {
        return Ok(None);
    };
    let features: Vec<&Feature> =
        crate::record_checks::metered_features_asked(&plan, only).collect();
    let usage = report(agreement.period_containing(now), &features, &mut found);
    Ok(Some(CustomerEntitlements {
        usage,
        agreement,
        plan,
    }))
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use kinde_meter_core::{catalog::Catalog, ids::CustomerId};

    use super::{
        AGGREGATE_AT, BY_ID, PIVOT_AT, PLAN_AT, PLAN_COLUMNS, POSITION_AT, Probe, VERSION_AT,
        resolve,
    };
    use crate::{
        NewAgreement, Store, StoreConfig,
        postgres::{PgStore, scratch::ScratchSchema},
    };

    #[test]
    fn the_pivot_follows_the_plan_columns() {
        assert_eq!(PLAN_AT + PLAN_COLUMNS.split(',').count(), PIVOT_AT);
    }

    #[test]
    fn the_position_follows_the_aggregate_columns() {
        let select = BY_ID.split("FROM (").next().expect("a select list");
        assert!(select.trim_end().ends_with(
            "g.last_recorded_at_ns, f.position,
                (SELECT version FROM terms_version WHERE id = 0)"
        ));
        assert_eq!(AGGREGATE_AT + 4, POSITION_AT);
        assert_eq!(POSITION_AT + 1, VERSION_AT);
    }

    #[test]
    fn a_candidate_settles_only_a_period_starting_at_or_before_the_pivot() {
        // The candidate is the period's row.
        assert_eq!(resolve(Some(10), 15, Some(10)), Probe::Found);
        assert_eq!(resolve(Some(15), 15, Some(15)), Probe::Found);
        // No row at or before the pivot, or only rows of earlier periods.
        assert_eq!(resolve(Some(10), 15, None), Probe::Absent);
        assert_eq!(resolve(Some(10), 15, Some(5)), Probe::Absent);
        // A period beyond the instants the store holds.
        assert_eq!(resolve(None, 15, Some(5)), Probe::Absent);
        // A row between the period's start and the pivot hides the period's.
        assert_eq!(resolve(Some(10), 15, Some(12)), Probe::Unsettled);
        // A period after the pivot: its row, if any, is not a candidate.
        assert_eq!(resolve(Some(20), 15, None), Probe::Unsettled);
        assert_eq!(resolve(Some(20), 15, Some(15)), Probe::Unsettled);
    }

    /// A check remembers the agreement and plan it read at the counter's
    /// value; the next check is answered from them; a plan changed behind the
    /// store's back moves the counter, and the check after it reads again.
    #[tokio::test]
    async fn checks_remember_their_terms_while_the_counter_stays() {
        let Some(url) = std::env::var("KINDE_METER_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            return eprintln!("skipped: KINDE_METER_TEST_DATABASE_URL is not set");
        };
        let schema = ScratchSchema::create(&url).await.unwrap();
        let store = PgStore::connect(&url, schema.settings(), StoreConfig::default())
            .await
            .unwrap();
        store.load_catalog(&Catalog::demo()).await.unwrap();
        let customer = CustomerId::parse("cust").unwrap();
        let now: Timestamp = "2025-01-10T00:00:00Z".parse().unwrap();
        let agreement = store
            .create_agreement(NewAgreement {
                customer_id: customer.clone(),
                plan_code: kinde_meter_core::ids::PlanCode::parse("starter").unwrap(),
                now,
                id_random: [1; 10],
            })
            .await
            .unwrap();
        assert!(store.terms.newest_of_customer(&customer, now).is_none());

        let limit = async || {
            let e = store
                .customer_entitlements(&customer, now, None)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(e.agreement.id, agreement.id);
            e.plan.features[0].limit_max
        };
        assert_eq!(limit().await, Some(10_000));
        let remembered = store.terms.newest_of_customer(&customer, now).unwrap();
        assert_eq!(remembered.agreement.id, agreement.id);
        assert_eq!(limit().await, Some(10_000));
        let again = store.terms.newest_of_customer(&customer, now).unwrap();
        assert!(
            std::sync::Arc::ptr_eq(&again.plan, &remembered.plan),
            "the second check read the plan again"
        );

        let conn = schema.connect().await.unwrap();
        conn.execute(
            "UPDATE plan_features SET limit_max = 7 WHERE plan_code = 'starter'",
            &[],
        )
        .await
        .unwrap();
        assert_eq!(limit().await, Some(7));
        let after = store.terms.newest_of_customer(&customer, now).unwrap();
        assert!(after.version > remembered.version);
        store.shutdown().await;
    }
}
