//! Agreements: creating one (ending the customer's others, with its webhook
//! events), loading, listing.

use std::collections::HashMap;

use kinde_meter_core::{
    agreement::Agreement,
    catalog::Plan,
    ids::{AgreementId, CustomerId, PlanCode},
};
use rusqlite::{Connection, OptionalExtension, Row};

use super::{
    catalog,
    codec::{self, stored},
    error::OpError,
    outbox,
};
use crate::{
    AgreementPage, AgreementQuery, AgreementView, CreateAgreementError, Cursor,
    ListAgreementsError, NewAgreement,
};

/// Columns [`from_row`] reads, in its order, as a literal for `concat!`: the
/// hot reads' SQL is then a constant, not formatted anew on every read.
macro_rules! columns {
    () => {
        "id, customer_id, plan_code, interval, anchor_ns, expires_on_ns"
    };
}

/// Columns [`from_row`] reads, in its order.
pub(super) const COLUMNS: &str = columns!();

pub(super) fn from_row(r: &Row<'_>) -> rusqlite::Result<Agreement> {
    Ok(Agreement {
        id: stored(AgreementId::parse(r.get::<_, String>(0)?))?,
        customer_id: stored(CustomerId::parse(r.get::<_, String>(1)?))?,
        plan_code: stored(PlanCode::parse(r.get::<_, String>(2)?))?,
        interval: stored(r.get::<_, String>(3)?.parse())?,
        anchor: codec::timestamp(r.get(4)?)?,
        expires_on: codec::opt_timestamp(r.get(5)?)?,
    })
}

/// The agreement with `?1` as its id (`load`).
pub(super) const LOAD: &str = concat!("SELECT ", columns!(), " FROM agreements WHERE id = ?1");

/// The customer `?1`'s newest agreement active at `?2` (nanoseconds; see
/// [`Agreement::is_active`]), for the hot reads (`read.rs`), which keep
/// the statement.
pub(super) const ACTIVE_OF_CUSTOMER: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM agreements
     WHERE customer_id = ?1 AND (expires_on_ns IS NULL OR expires_on_ns > ?2)
     ORDER BY seq DESC LIMIT 1"
);

/// The agreement with `id`.
pub(super) fn load(conn: &Connection, id: &AgreementId) -> rusqlite::Result<Option<Agreement>> {
    conn.prepare_cached(LOAD)?
        .query_row([id.as_str()], from_row)
        .optional()
}

/// Creates an agreement on an existing plan anchored at `new.now`, ending the
/// customer's agreements still active at that instant. Runs inside the writer's
/// transaction, so both happen or neither.
pub(super) fn create(
    conn: &Connection,
    new: &NewAgreement,
) -> Result<Agreement, OpError<CreateAgreementError>> {
    let Some(plan) = catalog::load_plan(conn, &new.plan_code)? else {
        return Err(CreateAgreementError::PlanNotFound.into());
    };
    let now = codec::ns(new.now)?;
    // The agreements this one ends, newest first, for their webhook events.
    let ended = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM agreements
             WHERE customer_id = ?1 AND (expires_on_ns IS NULL OR expires_on_ns > ?2)
             ORDER BY seq DESC"
        ))?
        .query_map((new.customer_id.as_str(), now), from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // Active at `now` means no end yet or an end after `now` (Agreement::is_active).
    conn.prepare_cached(
        "UPDATE agreements SET expires_on_ns = ?2
         WHERE customer_id = ?1 AND (expires_on_ns IS NULL OR expires_on_ns > ?2)",
    )?
    .execute((new.customer_id.as_str(), now))?;
    let agreement = Agreement {
        id: AgreementId::generate(new.now, new.id_random),
        customer_id: new.customer_id.clone(),
        plan_code: plan.code,
        interval: plan.interval,
        anchor: Agreement::anchor_for(new.now),
        expires_on: None,
    };
    conn.prepare_cached(
        "INSERT INTO agreements (id, customer_id, plan_code, interval, anchor_ns, expires_on_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
    )?
    .execute((
        agreement.id.as_str(),
        agreement.customer_id.as_str(),
        agreement.plan_code.as_str(),
        agreement.interval.as_str(),
        codec::ns(agreement.anchor)?,
    ))?;
    // In the same transaction: a committed agreement always has its events.
    outbox::agreement_events(conn, &agreement, &ended, new.now)?;
    Ok(agreement)
}

/// A page of the customer's agreements, newest first (`docs/api.md`). The caller runs it
/// in one read transaction so cursor, page and plans come from one snapshot.
pub(super) fn list(
    conn: &Connection,
    query: &AgreementQuery,
) -> Result<AgreementPage, OpError<ListAgreementsError>> {
    let customer = query.customer_id.as_str();
    let cursor_seq = match &query.cursor {
        Cursor::First => None,
        Cursor::StartingAfter(id) | Cursor::EndingBefore(id) => match seq_of(conn, customer, id)? {
            Some(seq) => Some(seq),
            None => return Err(ListAgreementsError::UnknownCursor.into()),
        },
    };
    let page_size = query.page_size.max(1);
    let (sql_order, bound) = match query.cursor {
        // Older than the cursor, nearest first.
        Cursor::First | Cursor::StartingAfter(_) => {
            ("seq < ?2 ORDER BY seq DESC", cursor_seq.unwrap_or(i64::MAX))
        }
        // Newer than the cursor, nearest first; reversed below to newest first.
        Cursor::EndingBefore(_) => ("seq > ?2 ORDER BY seq ASC", cursor_seq.unwrap_or(i64::MIN)),
    };
    // One row more than the page tells whether more lie beyond it.
    let limit = i64::try_from(page_size).unwrap_or(i64::MAX - 1) + 1;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM agreements a
         WHERE customer_id = ?1
           AND (?3 IS NULL OR EXISTS (
               SELECT 1 FROM plan_features f WHERE f.plan_code = a.plan_code AND f.code = ?3))
           AND {sql_order}
         LIMIT ?4"
    ))?;
    let feature = query.feature_code.as_ref().map(|f| f.as_str());
    let mut agreements = stmt
        .query_map((customer, bound, feature, limit), from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let has_more = agreements.len() > page_size;
    agreements.truncate(page_size);
    if matches!(query.cursor, Cursor::EndingBefore(_)) {
        agreements.reverse();
    }
    let mut plans: HashMap<PlanCode, Option<Plan>> = HashMap::new();
    let mut views = Vec::with_capacity(agreements.len());
    for agreement in agreements {
        let plan = match plans.get(&agreement.plan_code) {
            Some(plan) => plan.clone(),
            None => {
                let plan = catalog::load_plan(conn, &agreement.plan_code)?;
                plans.insert(agreement.plan_code.clone(), plan.clone());
                plan
            }
        };
        views.push(AgreementView { agreement, plan });
    }
    Ok(AgreementPage {
        agreements: views,
        has_more,
    })
}

/// The listing position of the customer's agreement `id`.
fn seq_of(conn: &Connection, customer: &str, id: &AgreementId) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT seq FROM agreements WHERE id = ?1 AND customer_id = ?2")?
        .query_row((id.as_str(), customer), |r| r.get(0))
        .optional()
}
