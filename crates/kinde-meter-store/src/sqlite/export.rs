//! The usage export's read (`crate::export`): a page of agreements in id order
//! (the unique index on `agreements.id`), their plans and their aggregates, in
//! one read transaction.

use std::collections::HashMap;

use kinde_meter_core::{
    agreement::Agreement,
    catalog::{Feature, Plan},
    ids::{AgreementId, PlanCode},
};
use rusqlite::Connection;

use super::{agreements, catalog, read};
use crate::{AgreementUsage, ExportPage, ExportQuery};

/// One page of the export (`crate::Store::export_usage`).
pub(super) fn page(conn: &mut Connection, query: &ExportQuery) -> rusqlite::Result<ExportPage> {
    // One snapshot for agreements, plans and aggregates.
    let tx = conn.transaction()?;
    let page_size = query.page_size.clamp(1, crate::MAX_EXPORT_PAGE);
    let after = query.after.as_ref().map_or("", AgreementId::as_str);
    let found = tx
        .prepare_cached(&format!(
            "SELECT {} FROM agreements WHERE id > ?1 ORDER BY id LIMIT ?2",
            agreements::COLUMNS
        ))?
        .query_map((after, page_size as i64), agreements::from_row)?
        .collect::<rusqlite::Result<Vec<Agreement>>>()?;
    let next = (found.len() == page_size)
        .then(|| found.last().map(|a| a.id.clone()))
        .flatten();
    let mut plans: HashMap<PlanCode, Option<Plan>> = HashMap::new();
    let mut exported = Vec::new();
    for agreement in found {
        let Some(period) = query.period.period_of(&agreement, query.now) else {
            continue;
        };
        let plan = match plans.get(&agreement.plan_code) {
            Some(plan) => plan.clone(),
            None => {
                let plan = catalog::load_plan(&tx, &agreement.plan_code)?;
                plans.insert(agreement.plan_code.clone(), plan.clone());
                plan
            }
        };
        // Plans are never dropped from the store; without one there is nothing to price.
        let Some(plan) = plan else { continue };
        let features: Vec<&Feature> = plan.metered_features().collect();
        let usage = read::report(&tx, &agreement, &features, period.start)?;
        exported.push(AgreementUsage {
            agreement,
            plan,
            usage,
        });
    }
    Ok(ExportPage {
        agreements: exported,
        next,
    })
}
