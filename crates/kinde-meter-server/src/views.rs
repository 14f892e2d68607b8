//! Domain values as Kinde's wire shapes: shared by the routes and the CLI's
//! offline commands, so both print exactly the same JSON.

use jiff::Timestamp;
use kinde_meter_core::{ids::EntitlementId, timestamp::format_utc};
use kinde_meter_store::{AgreementPage, AgreementView, UsageReport};
use kinde_meter_wire::{
    BillingAgreement, BillingEntitlement, GetBillingAgreementsResponse, GetMeterUsageResponse,
    MeterUsage, OK_CODE, SUCCESS_MESSAGE,
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
