//! Plans and their features.
//!
//! Catalog loads are serialised by an advisory lock (several servers start at
//! once and each loads its catalog): replacing a plan's features is a delete
//! and inserts, which two concurrent loaders would otherwise collide on. A
//! plan is read with its features in one statement, so a read never mixes two
//! versions of it.

use std::collections::HashMap;

use deadpool_postgres::{GenericClient, Object};
use kinde_meter_core::{
    catalog::{Catalog, Feature, Plan},
    ids::{FeatureCode, PlanCode},
};
use tokio_postgres::Row;

use super::{codec::stored, failure::PgResult};

/// First key of the catalog loads' advisory lock ("kmct").
const CATALOG_LOCK_CLASS: i32 = 0x6b6d_6374;

/// Upserts every plan of `catalog` in one transaction: a plan with the same code
/// is replaced (its features with it); plans absent from `catalog` stay, so that
/// older agreements still resolve theirs. A plan keeps its place in the order.
pub(super) async fn upsert(conn: &mut Object, catalog: &Catalog) -> PgResult<()> {
    let tx = conn.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))",
        &[&CATALOG_LOCK_CLASS],
    )
    .await?;
    let upsert_plan = tx
        .prepare_cached(
            "INSERT INTO plans (code, name, interval, grp) VALUES ($1, $2, $3, $4)
             ON CONFLICT (code) DO UPDATE SET
                 name = excluded.name, interval = excluded.interval, grp = excluded.grp",
        )
        .await?;
    let clear = tx
        .prepare_cached("DELETE FROM plan_features WHERE plan_code = $1")
        .await?;
    let insert_feature = tx
        .prepare_cached(
            "INSERT INTO plan_features
                 (plan_code, code, position, name, metered, unit_amount, limit_max,
                  price_name, fixed_charge, limit_min, enforce_limit, thresholds)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .await?;
    for plan in &catalog.plans {
        tx.execute(
            &upsert_plan,
            &[
                &plan.code.as_str(),
                &plan.name,
                &plan.interval.as_str(),
                &plan.group,
            ],
        )
        .await?;
        tx.execute(&clear, &[&plan.code.as_str()]).await?;
        for (position, f) in (0i32..).zip(&plan.features) {
            let thresholds: Vec<i16> = f.thresholds.iter().map(|&t| i16::from(t)).collect();
            tx.execute(
                &insert_feature,
                &[
                    &plan.code.as_str(),
                    &f.code.as_str(),
                    &position,
                    &f.name,
                    &f.metered,
                    &f.unit_amount,
                    &f.limit_max,
                    &f.price_name,
                    &f.fixed_charge,
                    &f.limit_min,
                    &f.enforce_limit,
                    &thresholds,
                ],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// A plan's and its features' columns, as [`fold_plans`] reads them.
pub(super) const PLAN_COLUMNS: &str =
    "p.code, p.name, p.interval, p.grp, f.code, f.name, f.metered, f.unit_amount, f.limit_max,
     f.price_name, f.fixed_charge, f.limit_min, f.enforce_limit, f.thresholds";

/// Plans and features joined, for [`PLAN_COLUMNS`]: one row per feature (one row
/// with NULL feature columns for a plan without features).
pub(super) const PLANS_FROM: &str =
    "FROM plans p LEFT JOIN plan_features f ON f.plan_code = p.code";

/// The plans with the given codes, by code (codes without a plan are absent).
pub(super) async fn load_plans(
    conn: &impl GenericClient,
    codes: &[&str],
) -> PgResult<HashMap<PlanCode, Plan>> {
    let stmt = conn
        .prepare_cached(&format!(
            "SELECT {PLAN_COLUMNS} {PLANS_FROM} WHERE p.code = ANY($1) ORDER BY p.ord, p.code, f.position"
        ))
        .await?;
    let rows = conn.query(&stmt, &[&codes]).await?;
    Ok(fold_plans(&rows, 0)?
        .into_iter()
        .map(|p| (p.code.clone(), p))
        .collect())
}

/// The plan with `code`.
pub(super) async fn load_plan(
    conn: &impl GenericClient,
    code: &PlanCode,
) -> PgResult<Option<Plan>> {
    Ok(load_plans(conn, &[code.as_str()]).await?.remove(code))
}

/// Every plan, in the order they were first loaded.
pub(super) async fn load_all(conn: &impl GenericClient) -> PgResult<Catalog> {
    let stmt = conn
        .prepare_cached(&format!(
            "SELECT {PLAN_COLUMNS} {PLANS_FROM} ORDER BY p.ord, p.code, f.position"
        ))
        .await?;
    let rows = conn.query(&stmt, &[]).await?;
    Ok(Catalog {
        plans: fold_plans(&rows, 0)?,
    })
}

/// Rows of [`PLAN_COLUMNS`] starting at column `base` (ordered by plan, then
/// feature) as plans; rows whose plan code is NULL (an outer join that found no
/// plan) are skipped.
pub(super) fn fold_plans(rows: &[Row], base: usize) -> PgResult<Vec<Plan>> {
    let mut plans: Vec<Plan> = Vec::new();
    for r in rows {
        let Some(code) = r.get::<_, Option<&str>>(base) else {
            continue;
        };
        if plans.last().is_none_or(|p| p.code.as_str() != code) {
            plans.push(Plan {
                code: stored(PlanCode::parse(code), "plans.code")?,
                name: r.get(base + 1),
                interval: stored(r.get::<_, &str>(base + 2).parse(), "plans.interval")?,
                group: r.get(base + 3),
                features: Vec::new(),
            });
        }
        let Some(feature) = r.get::<_, Option<&str>>(base + 4) else {
            continue;
        };
        let plan = plans.last_mut().expect("pushed above");
        plan.features.push(Feature {
            code: stored(FeatureCode::parse(feature), "plan_features.code")?,
            name: r.get(base + 5),
            metered: r.get(base + 6),
            unit_amount: r.get(base + 7),
            limit_max: r.get(base + 8),
            price_name: r.get(base + 9),
            fixed_charge: r.get(base + 10),
            limit_min: r.get(base + 11),
            enforce_limit: r.get(base + 12),
            thresholds: r
                .get::<_, Vec<i16>>(base + 13)
                .into_iter()
                .map(|t| stored(u8::try_from(t), "plan_features.thresholds"))
                .collect::<PgResult<_>>()?,
        });
    }
    Ok(plans)
}
