//! The business checks a usage record passes before it is stored (`docs/api.md`,
//! §3), with the messages clients see: one definition for every backend (the
//! contract tests compare the messages on each).

use jiff::Timestamp;
use kinde_meter_core::{
    ErrorCode,
    aggregate::AggregateState,
    agreement::Agreement,
    catalog::{Feature, Plan},
    entitlement::{self, LimitExceeded},
    ids::{AgreementId, FeatureCode},
    request::UsageRecord,
};

use crate::{ReadUsageError, RecordFailure};

/// Checks `record` against its agreement and plan as loaded (`None`: absent):
/// the agreement exists and is active at `received_at`, its plan is known, and
/// the feature is one of the plan's metered features. Returns the agreement and
/// the feature's terms (for [`hard_limit`]).
pub(crate) fn check<'a>(
    record: &UsageRecord,
    agreement: Option<&'a Agreement>,
    plan: impl FnOnce(&Agreement) -> Option<&'a Plan>,
    received_at: Timestamp,
) -> Result<(&'a Agreement, &'a Feature), RecordFailure> {
    let id: &AgreementId = &record.agreement_id;
    let feature = &record.feature_code;
    let Some(agreement) = agreement else {
        return Err(RecordFailure::new(
            ErrorCode::AgreementNotFound,
            format!("customer_agreement_id: no agreement {id}"),
        ));
    };
    if !agreement.is_active(received_at) {
        return Err(RecordFailure::new(
            ErrorCode::AgreementNotActive,
            format!("customer_agreement_id: agreement {id} has ended"),
        ));
    }
    let plan_code = &agreement.plan_code;
    let Some(plan) = plan(agreement) else {
        return Err(RecordFailure::new(
            ErrorCode::FeatureNotFound,
            format!(
                "billing_feature_code: plan {plan_code} of agreement {id} is not in the catalog"
            ),
        ));
    };
    match plan.feature(feature) {
        None => Err(RecordFailure::new(
            ErrorCode::FeatureNotFound,
            format!("billing_feature_code: plan {plan_code} has no feature {feature}"),
        )),
        Some(f) if !f.metered => Err(RecordFailure::new(
            ErrorCode::FeatureNotMetered,
            format!("billing_feature_code: feature {feature} of plan {plan_code} is not metered"),
        )),
        Some(f) => Ok((agreement, f)),
    }
}

/// The hard-limit decision for a record of `feature` that takes its period's
/// aggregate from `before` to `after` (docs/api.md, entitlements): nothing to
/// decide for a feature without an enforced limit; otherwise the core's
/// [`entitlement::admit`], with the message clients see.
pub(crate) fn hard_limit(
    feature: &Feature,
    record: &UsageRecord,
    before: &AggregateState,
    after: &AggregateState,
) -> Result<(), RecordFailure> {
    if feature.hard_limit().is_none() {
        return Ok(());
    }
    match entitlement::admit(feature, before, after) {
        Ok(_) => Ok(()),
        Err(exceeded) => Err(limit_exceeded(record, &exceeded)),
    }
}

/// The failure of a record refused by an enforced entitlement limit.
fn limit_exceeded(record: &UsageRecord, exceeded: &LimitExceeded) -> RecordFailure {
    RecordFailure::new(
        ErrorCode::EntitlementLimitExceeded,
        format!(
            "meter_value: {} {} would take the usage of {} in its billing period to {}, \
             beyond the feature's entitlement limit of {}; nothing was recorded",
            record.meter_type.as_str(),
            record.value,
            record.feature_code,
            exceeded.usage,
            exceeded.limit_max
        ),
    )
}

/// The failure of a record that would take its total beyond 10^27.
pub(crate) fn out_of_range(record: &UsageRecord) -> RecordFailure {
    RecordFailure::new(
        ErrorCode::ValueOutOfRange,
        format!(
            "meter_value: {} would take the usage of {} beyond 10^27",
            record.value, record.feature_code
        ),
    )
}

/// The features a usage read reports: the one asked for (which must be a
/// metered feature of the plan), or every metered feature of the plan in
/// catalog order; none for a plan no longer in the store.
pub(crate) fn features_to_report<'a>(
    plan: Option<&'a Plan>,
    asked: Option<&FeatureCode>,
) -> Result<Vec<&'a Feature>, ReadUsageError> {
    match (asked, plan) {
        (Some(code), plan) => match plan.and_then(|p| p.feature(code)) {
            None => Err(ReadUsageError::FeatureNotFound),
            Some(f) if !f.metered => Err(ReadUsageError::FeatureNotMetered),
            Some(f) => Ok(vec![f]),
        },
        (None, Some(plan)) => Ok(plan.metered_features().collect()),
        (None, None) => Ok(Vec::new()),
    }
}

/// The metered features whose usage a customer's entitlements carry
/// (`Store::customer_entitlements`): every one of the plan's in catalog order,
/// or only `only` (none when it is not a metered feature of the plan).
pub(crate) fn metered_features_asked<'a>(
    plan: &'a Plan,
    only: Option<&FeatureCode>,
) -> impl Iterator<Item = &'a Feature> {
    plan.metered_features()
        .filter(move |f| only.is_none_or(|code| f.code == *code))
}
