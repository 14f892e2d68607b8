//! Plans and their features.
//!
//! A plan is a row of `plans` and its features rows of `plan_features`, so that
//! "agreements whose plan has feature F" is a join the listing can page through.

use kinde_meter_core::{
    catalog::{Catalog, Feature, Plan},
    ids::{FeatureCode, PlanCode},
};
use rusqlite::{Connection, OptionalExtension};

use super::codec::stored;

/// Upserts every plan of `catalog`: a plan with the same code is replaced (its
/// features with it); plans absent from `catalog` stay, so that older agreements
/// still resolve theirs. A plan keeps its place in [`load_all`]'s order.
pub(super) fn upsert(conn: &Connection, catalog: &Catalog) -> rusqlite::Result<()> {
    let mut upsert_plan = conn.prepare_cached(
        "INSERT INTO plans (code, ord, name, interval, grp)
         VALUES (?1, (SELECT coalesce(max(ord), 0) + 1 FROM plans), ?2, ?3, ?4)
         ON CONFLICT (code) DO UPDATE SET
             name = excluded.name, interval = excluded.interval, grp = excluded.grp",
    )?;
    let mut clear_features =
        conn.prepare_cached("DELETE FROM plan_features WHERE plan_code = ?1")?;
    let mut insert_feature = conn.prepare_cached(
        "INSERT INTO plan_features (plan_code, code, position, name, metered, unit_amount,
             limit_max, price_name, fixed_charge, limit_min, enforce_limit, thresholds)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    for plan in &catalog.plans {
        upsert_plan.execute((
            plan.code.as_str(),
            &plan.name,
            plan.interval.as_str(),
            &plan.group,
        ))?;
        clear_features.execute([plan.code.as_str()])?;
        for (position, f) in (0i64..).zip(&plan.features) {
            insert_feature.execute((
                plan.code.as_str(),
                f.code.as_str(),
                position,
                &f.name,
                f.metered,
                f.unit_amount,
                f.limit_max,
                &f.price_name,
                f.fixed_charge,
                f.limit_min,
                f.enforce_limit,
                serde_json::to_string(&f.thresholds).expect("numbers serialise"),
            ))?;
        }
    }
    Ok(())
}

/// The plan with `code`, with its features in catalog order.
pub(super) fn load_plan(conn: &Connection, code: &PlanCode) -> rusqlite::Result<Option<Plan>> {
    let head = conn
        .prepare_cached("SELECT name, interval, grp FROM plans WHERE code = ?1")?
        .query_row([code.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })
        .optional()?;
    let Some((name, interval, group)) = head else {
        return Ok(None);
    };
    let mut features = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT code, name, metered, unit_amount, limit_max, price_name, fixed_charge,
                limit_min, enforce_limit, thresholds
         FROM plan_features WHERE plan_code = ?1 ORDER BY position",
    )?;
    let mut rows = stmt.query([code.as_str()])?;
    while let Some(r) = rows.next()? {
        features.push(Feature {
            code: stored(FeatureCode::parse(r.get::<_, String>(0)?))?,
            name: r.get(1)?,
            metered: r.get(2)?,
            unit_amount: r.get(3)?,
            limit_max: r.get(4)?,
            price_name: r.get(5)?,
            fixed_charge: r.get(6)?,
            limit_min: r.get(7)?,
            enforce_limit: r.get(8)?,
            thresholds: stored(serde_json::from_str(&r.get::<_, String>(9)?))?,
        });
    }
    Ok(Some(Plan {
        code: code.clone(),
        name,
        interval: stored(interval.parse())?,
        group,
        features,
    }))
}

/// Every plan, in the order they were first loaded.
pub(super) fn load_all(conn: &Connection) -> rusqlite::Result<Catalog> {
    let codes: Vec<String> = conn
        .prepare_cached("SELECT code FROM plans ORDER BY ord")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut plans = Vec::with_capacity(codes.len());
    for code in codes {
        // Read inside one transaction by the caller, so the plan cannot vanish.
        if let Some(plan) = load_plan(conn, &stored(PlanCode::parse(code))?)? {
            plans.push(plan);
        }
    }
    Ok(Catalog { plans })
}
