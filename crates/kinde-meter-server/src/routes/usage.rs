//! `GET /api/v1/billing/meter_usage`: usage read-back (not in Kinde), served from
//! the maintained per-period aggregates.

use axum::{extract::State, response::Response};
use kinde_meter_core::{
    ErrorCode,
    ids::{AgreementId, FeatureCode},
    timestamp::{in_billing_range, parse_rfc3339_lenient},
};
use kinde_meter_store::{ReadUsageError, UsageQuery};
use kinde_meter_wire::{ErrorResponse, GetMeterUsageResponse};

use crate::error::ApiError;
use crate::extract::{Params, QueryParams};
use crate::routes::json_answer;
use crate::state::AppState;
use crate::views;

/// Read the usage of an agreement's metered features for one billing period.
#[utoipa::path(
    get,
    path = "/api/v1/billing/meter_usage",
    tag = "Billing Meter Usage",
    operation_id = "GetMeterUsage",
    params(
        ("customer_agreement_id" = String, Query, min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$", description = "The agreement"),
        ("billing_feature_code" = Option<String>, Query, max_length = 255, pattern = r"^([^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*)?$", description = "One feature; default every metered feature"),
        ("at" = Option<String>, Query, pattern = r"^((19[7-9][0-9]|2[01][0-9]{2})-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))|(19(7[26]|8[048]|9[26])|20([02468][048]|[13579][26])|21(0[48]|[2468][048]|[13579][26]))-02-29)[Tt ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,9})?)?([Zz]|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)?$", description = "RFC 3339 instant (offset as for meter_usage_timestamp) between 1970 and 2200 in the period to read; default now"),
    ),
    responses(
        (status = 200, description = "Usage per metered feature", body = GetMeterUsageResponse),
        (status = 400, description = "Invalid request or unknown agreement/feature", body = ErrorResponse),
    ),
)]
pub async fn get_meter_usage(
    State(state): State<AppState>,
    QueryParams(params): QueryParams,
) -> Result<Response, ApiError> {
    let (agreement_id, feature_code) = agreement_and_feature(&params)?;
    let at = match params.optional("at") {
        None => state.clock.now(),
        Some(text) => parse_rfc3339_lenient(text)
            .filter(|at| in_billing_range(*at))
            .ok_or_else(|| {
                ApiError::bad_request(
                    ErrorCode::InvalidTimestamp,
                    "at must be an RFC 3339 date-time between 1970 and 2200",
                )
            })?,
    };
    let report = state
        .store
        .read_usage(UsageQuery {
            agreement_id: agreement_id.clone(),
            feature_code: feature_code.clone(),
            at,
        })
        .await
        .map_err(|e| read_error(e, &agreement_id, &feature_code))?;
    // About 200 bytes a feature.
    Ok(json_answer(
        &views::usage(&report),
        192 + 256 * report.usage.len(),
    ))
}

/// `customer_agreement_id` (required) and `billing_feature_code` (optional) of
/// a read of an agreement's usage or records.
pub(crate) fn agreement_and_feature(
    params: &Params,
) -> Result<(AgreementId, Option<FeatureCode>), ApiError> {
    let agreement_id = params
        .required("customer_agreement_id")?
        .and_then_code(AgreementId::parse)?;
    let feature_code = params
        .optional("billing_feature_code")
        .map(|f| FeatureCode::parse(f.to_owned()))
        .transpose()
        .map_err(|e| {
            ApiError::bad_request(ErrorCode::InvalidField, format!("billing_feature_code {e}"))
        })?;
    Ok((agreement_id, feature_code))
}

/// The answer to a read of an agreement's usage (or records) that failed.
pub(crate) fn read_error(
    e: ReadUsageError,
    agreement_id: &AgreementId,
    feature_code: &Option<FeatureCode>,
) -> ApiError {
    match e {
        ReadUsageError::AgreementNotFound => ApiError::bad_request(
            ErrorCode::AgreementNotFound,
            format!("customer_agreement_id: no agreement {agreement_id}"),
        ),
        ReadUsageError::FeatureNotFound => ApiError::bad_request(
            ErrorCode::FeatureNotFound,
            format!(
                "billing_feature_code: the agreement's plan has no feature {}",
                display(feature_code)
            ),
        ),
        ReadUsageError::FeatureNotMetered => ApiError::bad_request(
            ErrorCode::FeatureNotMetered,
            format!(
                "billing_feature_code: {} is not metered",
                display(feature_code)
            ),
        ),
        ReadUsageError::Store(e) => e.into(),
    }
}

fn display(code: &Option<FeatureCode>) -> &str {
    code.as_ref().map_or("", FeatureCode::as_str)
}
