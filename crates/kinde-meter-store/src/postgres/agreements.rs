//! Agreements: creating one (ending the customer's others, with its webhook
//! events), loading, listing.
//!
//! Creation takes an advisory lock on the customer, so that two servers
//! creating agreements for one customer at once serialise: the second sees the
//! first's agreement and ends it, and a customer never keeps two active ones.

use deadpool_postgres::{GenericClient, Object};
use kinde_meter_core::{
    agreement::Agreement,
    ids::{AgreementId, CustomerId, PlanCode},
};
use tokio_postgres::Row;

use super::{
    catalog,
    codec::{self, stored},
    failure::{OpError, PgResult},
    outbox, pool,
};
use crate::{
    AgreementPage, AgreementQuery, AgreementView, CreateAgreementError, Cursor,
    ListAgreementsError, NewAgreement,
};

/// First key of the per-customer advisory lock of agreement creation ("kmag"); the
/// second is the schema and customer hashed (advisory locks are per database).
const CUSTOMER_LOCK_CLASS: i32 = 0x6b6d_6167;

/// Columns [`from_row`] reads, in its order.
pub(super) const COLUMNS: &str = "id, customer_id, plan_code, interval, anchor_ns, expires_on_ns";

/// An agreement from a row of [`COLUMNS`].
pub(super) fn from_row(r: &Row) -> PgResult<Agreement> {
    from_row_at(r, 0)
}

/// An agreement from the columns [`COLUMNS`] starting at column `at`.
pub(super) fn from_row_at(r: &Row, at: usize) -> PgResult<Agreement> {
    Ok(Agreement {
        id: stored(AgreementId::parse(r.get::<_, String>(at)), "agreements.id")?,
        customer_id: stored(
            CustomerId::parse(r.get::<_, String>(at + 1)),
            "agreements.customer_id",
        )?,
        plan_code: stored(
            PlanCode::parse(r.get::<_, String>(at + 2)),
            "agreements.plan_code",
        )?,
        interval: stored(r.get::<_, &str>(at + 3).parse(), "agreements.interval")?,
        anchor: codec::timestamp(r.get(at + 4))?,
        expires_on: codec::opt_timestamp(r.get(at + 5))?,
    })
}

/// The agreement with `id`.
pub(super) async fn load(
    conn: &impl GenericClient,
    id: &AgreementId,
) -> PgResult<Option<Agreement>> {
    let stmt = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM agreements WHERE id = $1"))
        .await?;
    conn.query_opt(&stmt, &[&id.as_str()])
        .await?
        .map(|r| from_row(&r))
        .transpose()
}

/// Creates an agreement on an existing plan anchored at `new.now`, ending the
/// customer's agreements still active at that instant, in one transaction.
pub(super) async fn create(
    conn: &mut Object,
    new: &NewAgreement,
) -> Result<Agreement, OpError<CreateAgreementError>> {
    let tx = conn.transaction().await?;
    let Some(plan) = catalog::load_plan(&tx, &new.plan_code).await? else {
        return Err(CreateAgreementError::PlanNotFound.into());
    };
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(current_schema() || '/' || $2))",
        &[&CUSTOMER_LOCK_CLASS, &new.customer_id.as_str()],
    )
    .await?;
    let now = codec::ns(new.now)?;
    // Active at `now` means no end yet or an end after `now` (Agreement::is_active).
    let rows = tx
        .query(
            &format!(
                "UPDATE agreements SET expires_on_ns = $2
                 WHERE customer_id = $1 AND (expires_on_ns IS NULL OR expires_on_ns > $2)
                 RETURNING seq, {COLUMNS}"
            ),
            &[&new.customer_id.as_str(), &now],
        )
        .await?;
    // The agreements this one ends, newest first, for their webhook events.
    let mut ended = Vec::with_capacity(rows.len());
    for r in &rows {
        ended.push((r.get::<_, i64>(0), from_row_at(r, 1)?));
    }
    ended.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    let ended: Vec<Agreement> = ended.into_iter().map(|(_, a)| a).collect();
    let agreement = Agreement {
        id: AgreementId::generate(new.now, new.id_random),
        customer_id: new.customer_id.clone(),
        plan_code: plan.code,
        interval: plan.interval,
        anchor: Agreement::anchor_for(new.now),
        expires_on: None,
    };
    tx.execute(
        "INSERT INTO agreements (id, customer_id, plan_code, interval, anchor_ns)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &agreement.id.as_str(),
            &agreement.customer_id.as_str(),
            &agreement.plan_code.as_str(),
            &agreement.interval.as_str(),
            &codec::ns(agreement.anchor)?,
        ],
    )
    .await?;
    // In the same transaction: a committed agreement always has its events.
    outbox::insert(&tx, &outbox::agreement_events(&agreement, &ended, new.now)).await?;
    tx.commit().await?;
    Ok(agreement)
}

/// A page of the customer's agreements, newest first (`docs/api.md`), read in one
/// repeatable-read snapshot so cursor, page and plans agree.
pub(super) async fn list(
    conn: &mut Object,
    query: &AgreementQuery,
) -> Result<AgreementPage, OpError<ListAgreementsError>> {
    let tx = pool::read_snapshot(conn).await?;
    let customer = query.customer_id.as_str();
    let cursor_seq: Option<i64> = match &query.cursor {
        Cursor::First => None,
        Cursor::StartingAfter(id) | Cursor::EndingBefore(id) => {
            let row = tx
                .query_opt(
                    "SELECT seq FROM agreements WHERE id = $1 AND customer_id = $2",
                    &[&id.as_str(), &customer],
                )
                .await?;
            match row {
                Some(r) => Some(r.get(0)),
                None => return Err(ListAgreementsError::UnknownCursor.into()),
            }
        }
    };
    let page_size = query.page_size.max(1);
    let (sql_order, bound) = match query.cursor {
        // Older than the cursor, nearest first.
        Cursor::First | Cursor::StartingAfter(_) => {
            ("seq < $2 ORDER BY seq DESC", cursor_seq.unwrap_or(i64::MAX))
        }
        // Newer than the cursor, nearest first; reversed below to newest first.
        Cursor::EndingBefore(_) => ("seq > $2 ORDER BY seq ASC", cursor_seq.unwrap_or(i64::MIN)),
    };
    // One row more than the page tells whether more lie beyond it.
    let limit = i64::try_from(page_size).unwrap_or(i64::MAX - 1) + 1;
    let feature = query.feature_code.as_ref().map(|f| f.as_str());
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM agreements a
             WHERE customer_id = $1
               AND ($3::text IS NULL OR EXISTS (
                   SELECT 1 FROM plan_features f WHERE f.plan_code = a.plan_code AND f.code = $3))
               AND {sql_order}
             LIMIT $4"
        ))
        .await?;
    let rows = tx
        .query(&stmt, &[&customer, &bound, &feature, &limit])
        .await?;
    let mut agreements = rows.iter().map(from_row).collect::<PgResult<Vec<_>>>()?;
    let has_more = agreements.len() > page_size;
    agreements.truncate(page_size);
    if matches!(query.cursor, Cursor::EndingBefore(_)) {
        agreements.reverse();
    }
    let codes: Vec<&str> = agreements.iter().map(|a| a.plan_code.as_str()).collect();
    let plans = catalog::load_plans(&tx, &codes).await?;
    let views = agreements
        .into_iter()
        .map(|agreement| {
            let plan = plans.get(&agreement.plan_code).cloned();
            AgreementView { agreement, plan }
        })
        .collect();
    tx.commit().await?;
    Ok(AgreementPage {
        agreements: views,
        has_more,
    })
}
