//! Domain values as Kinde's wire shapes: shared by the routes and the CLI's
//! offline commands, so both print exactly the same JSON.

use jiff::Timestamp;
use kinde_meter_core::{
    catalog::Feature,
    entitlement,
    ids::{EntitlementId, FeatureCode},
    timestamp::format_utc,
};
use kinde_meter_store::{AgreementPage, AgreementView, CustomerEntitlements, UsageReport};
use kinde_meter_wire::{
    BillingAgreement, BillingEntitlement, CheckBillingEntitlementResponse, Entitlement,
    EntitlementPlan, GetBillingAgreementsResponse, GetBillingEntitlementsResponse,
    GetMeterUsageResponse, MeterUsage, MeterValue, OK_CODE, SUCCESS_MESSAGE, UsageTotal,
};

/// An agreement as Kinde shows it; `now` decides the current period.
pub fn agreement(view: &AgreementView, now: Timestamp) -> BillingAgreement {
    let agreement = &view.agreement;
    let period = agreement.current_period(now);
    BillingAgreement {
        id: agreement.id.to_string(),
        plan_code: agreement.plan_code.to_string(),
        expires_on: agreement.expires_on.map(format_utc),
        billing_group_id: view.plan.as_ref().and_then(|p| p.group.clone()),
        current_period_start: period.map(|p| format_utc(p.start)),
        current_period_end: period.map(|p| format_utc(p.end)),
        entitlements: view
            .plan
            .iter()
            .flat_map(|p| &p.features)
            .map(|f| BillingEntitlement {
                feature_code: f.code.to_string(),
                entitlement_id: EntitlementId::derive(&agreement.id, &f.code).to_string(),
            })
            .collect(),
    }
}

/// A page of agreements as Kinde's `GetBillingAgreementsResponse`.
pub fn agreements_page(page: &AgreementPage, now: Timestamp) -> GetBillingAgreementsResponse {
    GetBillingAgreementsResponse {
        code: OK_CODE.to_owned(),
        message: SUCCESS_MESSAGE.to_owned(),
        has_more: page.has_more,
        agreements: page
            .agreements
            .iter()
            .map(|view| agreement(view, now))
            .collect(),
    }
}

/// A usage report as `GetMeterUsageResponse`.
pub fn usage(report: &UsageReport) -> GetMeterUsageResponse {
    let (period_start, period_end) = (
        format_utc(report.period.start),
        format_utc(report.period.end),
    );
    GetMeterUsageResponse {
        code: OK_CODE.to_owned(),
        message: SUCCESS_MESSAGE.to_owned(),
        usage: report
            .usage
            .iter()
            .map(|u| MeterUsage {
                billing_feature_code: u.feature_code.to_string(),
                period_start: period_start.clone(),
                period_end: period_end.clone(),
                value: u.value.to_string(),
                record_count: u.record_count,
                last_recorded_at: u.last_recorded_at.map(format_utc),
            })
            .collect(),
    }
}

/// Where a page of a listing starts, as the request names it
/// (`docs/api.md#paging`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStart<'a> {
    /// The first page.
    First,
    /// The page after the item with this id (`starting_after`).
    StartingAfter(&'a str),
    /// The page just before the item with this id (`ending_before`).
    EndingBefore(&'a str),
}

/// Where a page of entitlements starts: cursors are entitlement ids.
pub type EntitlementsStart<'a> = PageStart<'a>;

/// What a listing of entitlements asks for, its parameters checked.
#[derive(Debug, Clone, Copy)]
pub struct EntitlementsQuery<'a> {
    /// Entitlements per page (1 to 500).
    pub page_size: usize,
    pub start: EntitlementsStart<'a>,
    /// Shown as `entitlement_limit_max` where the limit is null.
    pub max_value: Option<i64>,
    /// `expand=plans`.
    pub expand_plans: bool,
}

/// The paging cursor names none of the listed entitlements (400 `NOT_FOUND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("starting_after/ending_before must name one of the listed entitlements")]
pub struct UnknownEntitlementCursor;

/// A page of a customer's entitlements as Kinde's
/// `GetBillingEntitlementsResponse` (`docs/entitlements.md#list-entitlements`):
/// what the route answers and `kinde-meter entitlements --data-dir` prints.
pub fn entitlements_page(
    customer: Option<&CustomerEntitlements>,
    query: EntitlementsQuery<'_>,
) -> Result<GetBillingEntitlementsResponse, UnknownEntitlementCursor> {
    let all = entitlements(customer, query.max_value);
    let (entitlements, has_more) = page(all, query.start, query.page_size, |e| e.id.as_str())
        .ok_or(UnknownEntitlementCursor)?;
    Ok(GetBillingEntitlementsResponse {
        code: OK_CODE.to_owned(),
        message: SUCCESS_MESSAGE.to_owned(),
        has_more,
        entitlements,
        plans: query.expand_plans.then(|| entitlement_plans(customer)),
    })
}

/// The live usage check (`docs/entitlements.md#check-an-entitlement`): may the
/// customer use `quantity` more of `feature_code` now? A feature not on the
/// active plan, or no active agreement, is `allowed: false`.
pub fn entitlement_check(
    customer: Option<&CustomerEntitlements>,
    feature_code: &FeatureCode,
    quantity: MeterValue,
) -> CheckBillingEntitlementResponse {
    let feature = customer.and_then(|c| c.plan.feature(feature_code));
    let consumed = match (customer, feature) {
        (Some(customer), Some(feature)) if feature.metered => consumed(customer, feature_code),
        _ => UsageTotal::ZERO,
    };
    let answer = entitlement::check(feature, consumed, quantity);
    CheckBillingEntitlementResponse {
        code: OK_CODE.to_owned(),
        message: SUCCESS_MESSAGE.to_owned(),
        allowed: answer.allowed,
        feature_code: feature_code.to_string(),
        entitlement_limit_max: answer.limit_max,
        consumed: answer.consumed,
        remaining: answer.remaining,
        quantity,
        current_period_end: customer.map(|c| format_utc(c.usage.period.end)),
    }
}

/// Every entitlement of a customer, one per feature of the active agreement's
/// plan in catalog order, as Kinde's `GetBillingEntitlementsResponse` lists them
/// (`docs/entitlements.md`); none without an active agreement. `max_value`
/// stands in for a null `entitlement_limit_max`. Metered features carry the
/// current period's usage, read from the aggregates.
fn entitlements(
    customer: Option<&CustomerEntitlements>,
    max_value: Option<i64>,
) -> Vec<Entitlement> {
    let Some(customer) = customer else {
        return Vec::new();
    };
    let period = customer.usage.period;
    customer
        .plan
        .features
        .iter()
        .map(|feature| {
            let mut entitlement = Entitlement {
                id: EntitlementId::derive(&customer.agreement.id, &feature.code).to_string(),
                fixed_charge: feature.fixed_charge,
                price_name: Some(feature.price_name().to_owned()),
                unit_amount: feature.unit_amount,
                feature_code: feature.code.to_string(),
                feature_name: feature.name.clone(),
                entitlement_limit_max: feature.limit_max.or(max_value),
                entitlement_limit_min: feature.limit_min,
                ..Entitlement::default()
            };
            if feature.metered {
                let consumed = consumed(customer, &feature.code);
                entitlement.consumed = Some(consumed);
                // Unlimited stays unlimited: `max_value` changes what is shown
                // as the limit, not what remains.
                entitlement.remaining = Some(remaining(feature, consumed));
                entitlement.current_period_start = Some(format_utc(period.start));
                entitlement.current_period_end = Some(format_utc(period.end));
            }
            entitlement
        })
        .collect()
}

/// The active agreement's plan for `expand=plans`: `subscribed_on` is the
/// agreement's start.
fn entitlement_plans(customer: Option<&CustomerEntitlements>) -> Vec<EntitlementPlan> {
    customer
        .map(|customer| EntitlementPlan {
            code: customer.plan.code.to_string(),
            subscribed_on: Some(format_utc(customer.agreement.anchor)),
        })
        .into_iter()
        .collect()
}

/// The current period's usage of `feature` (zero for a feature without usage,
/// such as one that is not metered).
fn consumed(customer: &CustomerEntitlements, feature: &FeatureCode) -> UsageTotal {
    customer
        .usage
        .usage
        .iter()
        .find(|u| &u.feature_code == feature)
        .map_or(UsageTotal::ZERO, |u| u.value)
}

/// `max(limit_max − consumed, 0)`, `None` when unlimited.
fn remaining(feature: &Feature, consumed: UsageTotal) -> Option<UsageTotal> {
    feature
        .limit_max
        .map(|limit| entitlement::remaining(limit, consumed))
}

/// The page of `items` that `start` and `size` name, and whether more items lie
/// beyond it in the direction of travel (after it for the first page and
/// `starting_after`, before it for `ending_before`), as agreements page
/// (`docs/api.md#paging`). `None` when the cursor names no item.
fn page<T>(
    mut items: Vec<T>,
    start: EntitlementsStart<'_>,
    size: usize,
    id: impl Fn(&T) -> &str,
) -> Option<(Vec<T>, bool)> {
    let position = |cursor: &str| items.iter().position(|item| id(item) == cursor);
    let (from, to, has_more) = match start {
        EntitlementsStart::First => (0, size.min(items.len()), items.len() > size),
        EntitlementsStart::StartingAfter(cursor) => {
            let from = position(cursor)? + 1;
            let to = from.saturating_add(size).min(items.len());
            (from, to, to < items.len())
        }
        EntitlementsStart::EndingBefore(cursor) => {
            let to = position(cursor)?;
            let from = to.saturating_sub(size);
            (from, to, from > 0)
        }
    };
    items.truncate(to);
    items.drain(..from);
    Some((items, has_more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_go_forward_and_back_like_agreements() {
        let items = vec!["a", "b", "c", "d", "e"];
        let page_of = |start, size| page(items.clone(), start, size, |s| s);
        let some = |ids: &[&'static str], more| Some((ids.to_vec(), more));
        assert_eq!(
            page_of(EntitlementsStart::First, 2),
            some(&["a", "b"], true)
        );
        assert_eq!(page_of(EntitlementsStart::First, 5), some(&items, false));
        assert_eq!(
            page_of(EntitlementsStart::StartingAfter("b"), 2),
            some(&["c", "d"], true)
        );
        assert_eq!(
            page_of(EntitlementsStart::StartingAfter("d"), 2),
            some(&["e"], false)
        );
        assert_eq!(
            page_of(EntitlementsStart::StartingAfter("e"), 2),
            some(&[], false)
        );
        assert_eq!(
            page_of(EntitlementsStart::EndingBefore("e"), 2),
            some(&["c", "d"], true)
        );
        assert_eq!(
            page_of(EntitlementsStart::EndingBefore("c"), 2),
            some(&["a", "b"], false)
        );
        assert_eq!(
            page_of(EntitlementsStart::EndingBefore("a"), 2),
            some(&[], false)
        );
        assert_eq!(page_of(EntitlementsStart::StartingAfter("x"), 2), None);
        assert_eq!(page_of(EntitlementsStart::EndingBefore("x"), 2), None);
        let empty: Vec<&str> = Vec::new();
        assert_eq!(
            page(empty.clone(), EntitlementsStart::First, 10, |s| s),
            some(&[], false)
        );
        assert_eq!(
            page(empty, EntitlementsStart::StartingAfter("a"), 10, |s| s),
            None
        );
    }
}
