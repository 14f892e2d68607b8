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
    BillingAgreement, BillingEntitlement, Entitlement, EntitlementPlan,
    GetBillingAgreementsResponse, GetMeterUsageResponse, MeterUsage, OK_CODE, SUCCESS_MESSAGE,
    UsageTotal,
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

/// Every entitlement of a customer, one per feature of the active agreement's
/// plan in catalog order, as Kinde's `GetBillingEntitlementsResponse` lists them
/// (`docs/entitlements.md`); none without an active agreement. `max_value`
/// stands in for a null `entitlement_limit_max`. Metered features carry the
/// current period's usage, read from the aggregates.
pub fn entitlements(
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
pub fn entitlement_plans(customer: Option<&CustomerEntitlements>) -> Vec<EntitlementPlan> {
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
pub fn consumed(customer: &CustomerEntitlements, feature: &FeatureCode) -> UsageTotal {
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
