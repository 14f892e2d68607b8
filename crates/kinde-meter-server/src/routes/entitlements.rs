//! Entitlements (`docs/entitlements.md`): Kinde's `GET /api/v1/billing/entitlements`
//! and kinde-meter's live usage check, `GET /api/v1/billing/entitlements/check`.
//!
//! Both answer from [`Store::customer_entitlements`](kinde_meter_store::Store::customer_entitlements):
//! the customer's active agreement, its plan and the current period's usage read
//! from the same per-period aggregates usage reads use, never by scanning
//! records. Hard limits are not decided here but by the stores, in commit order.

use axum::{Json, extract::State, response::Response};
use kinde_meter_core::{
    ErrorCode,
    ids::{CustomerId, FeatureCode},
};
use kinde_meter_wire::{
    CheckBillingEntitlementResponse, ErrorResponse, GetBillingEntitlementsResponse, MeterValue,
};

use crate::error::ApiError;
use crate::extract::{Params, QueryParams};
use crate::routes::{
    agreements::{page_size, page_start},
    json_answer,
};
use crate::state::AppState;
use crate::views;

/// List a customer's entitlements: one per feature of the active agreement's
/// plan, in catalog order (Kinde's `GetBillingEntitlements`). On kinde-meter,
/// metered entitlements also carry the current period's usage.
#[utoipa::path(
    get,
    path = "/api/v1/billing/entitlements",
    tag = "Billing Entitlements",
    operation_id = "GetBillingEntitlements",
    params(
        ("page_size" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Entitlements per page, default 10"),
        ("starting_after" = Option<String>, Query, description = "The page after this entitlement (an id of the listing; not with ending_before)"),
        ("ending_before" = Option<String>, Query, description = "The page just before this entitlement (an id of the listing; not with starting_after)"),
        ("customer_id" = String, Query, min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$", description = "The customer"),
        ("max_value" = Option<i64>, Query, minimum = -9223372036854775808i64, maximum = 9223372036854775807i64, description = "Answered as entitlement_limit_max where the limit is null (unlimited)"),
        ("expand" = Option<String>, Query, pattern = "^plans$", description = "`plans` adds the active agreement's plan"),
    ),
    responses(
        (status = 200, description = "A page of entitlements", body = GetBillingEntitlementsResponse),
        (status = 400, description = "Invalid request, or a paging cursor that names no entitlement (NOT_FOUND)", body = ErrorResponse),
    ),
)]
pub async fn get_billing_entitlements(
    State(state): State<AppState>,
    QueryParams(params): QueryParams,
) -> Result<Json<GetBillingEntitlementsResponse>, ApiError> {
    let customer_id = params
        .required("customer_id")?
        .and_then_code(CustomerId::parse)?;
    let page_size = page_size(&params)?;
    let start = page_start(&params)?;
    let max_value = max_value(&params)?;
    let expand_plans = expand_plans(&params)?;
    let customer = state
        .store
        .customer_entitlements(&customer_id, state.clock.now(), None)
        .await?;
    let query = views::EntitlementsQuery {
        page_size,
        start,
        max_value,
        expand_plans,
    };
    views::entitlements_page(customer.as_ref(), query)
        .map(Json)
        .map_err(|e| ApiError::bad_request(ErrorCode::NotFound, e.to_string()))
}

/// May this customer use `quantity` (default 1) more of a feature now? Not in
/// Kinde. Reads live usage, including records committed a moment before; a
/// feature not on the customer's active plan, or no active agreement, is
/// `allowed: false`, not an error.
#[utoipa::path(
    get,
    path = "/api/v1/billing/entitlements/check",
    tag = "Billing Entitlements",
    operation_id = "CheckBillingEntitlement",
    params(
        ("customer_id" = String, Query, min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$", description = "The customer"),
        ("feature_code" = String, Query, min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$", description = "The feature"),
        ("quantity" = Option<String>, Query, pattern = r"^[0-9]{1,18}(\.[0-9]{1,9})?$", description = "A meter value, default 1"),
    ),
    responses(
        (status = 200, description = "Whether the customer may use that much more now", body = CheckBillingEntitlementResponse),
        (status = 400, description = "Invalid request (a quantity that is no meter value: INVALID_METER_VALUE)", body = ErrorResponse),
    ),
)]
pub async fn check_billing_entitlement(
    State(state): State<AppState>,
    QueryParams(params): QueryParams,
) -> Result<Response, ApiError> {
    let customer_id = params
        .required("customer_id")?
        .and_then_code(CustomerId::parse)?;
    let feature_code = params
        .required("feature_code")?
        .and_then_code(FeatureCode::parse)?;
    let quantity = match params.raw("quantity") {
        None => MeterValue::parse("1").expect("1 is a meter value"),
        Some(text) => MeterValue::parse(text).map_err(|e| {
            ApiError::bad_request(ErrorCode::InvalidMeterValue, format!("quantity {e}"))
        })?,
    };
    let customer = state
        .store
        .customer_entitlements(&customer_id, state.clock.now(), Some(&feature_code))
        .await?;
    let answer = views::entitlement_check(customer.as_ref(), &feature_code, quantity);
    // About 250 bytes.
    Ok(json_answer(&answer, 384))
}

/// `max_value`: an integer, else 400 `INVALID_FIELD` (empty included).
fn max_value(params: &Params) -> Result<Option<i64>, ApiError> {
    params
        .raw("max_value")
        .map(|text| {
            text.parse::<i64>().map_err(|_| {
                ApiError::bad_request(ErrorCode::InvalidField, "max_value must be an integer")
            })
        })
        .transpose()
}

/// `expand`: absent, or `plans` (Kinde's one value); anything else is 400
/// `INVALID_FIELD`.
fn expand_plans(params: &Params) -> Result<bool, ApiError> {
    match params.raw("expand") {
        None => Ok(false),
        Some("plans") => Ok(true),
        Some(_) => Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            "expand must be plans",
        )),
    }
}
