//! Entitlements (`docs/entitlements.md`): Kinde's `GET /api/v1/billing/entitlements`
//! and kinde-meter's live usage check, `GET /api/v1/billing/entitlements/check`.
//!
//! Both answer from [`Store::customer_entitlements`](kinde_meter_store::Store::customer_entitlements):
//! the customer's active agreement, its plan and the current period's usage read
//! from the same per-period aggregates usage reads use, never by scanning
//! records. Hard limits are not decided here but by the stores, in commit order.

use axum::{Json, extract::State};
use kinde_meter_core::{
    ErrorCode, entitlement,
    ids::{CustomerId, FeatureCode},
};
use kinde_meter_wire::{
    CheckBillingEntitlementResponse, ErrorResponse, GetBillingEntitlementsResponse, MeterValue,
    OK_CODE, SUCCESS_MESSAGE,
};

use crate::error::ApiError;
use crate::extract::{Params, QueryParams};
use crate::routes::agreements::{PageStart, page_size, page_start};
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
        ("starting_after" = Option<String>, Query, description = "The page after this entitlement"),
        ("ending_before" = Option<String>, Query, description = "The page just before this entitlement"),
        ("customer_id" = String, Query, description = "The customer"),
        ("max_value" = Option<i64>, Query, description = "Answered as entitlement_limit_max where the limit is null (unlimited)"),
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
        .customer_entitlements(&customer_id, state.clock.now())
        .await?;
    let all = views::entitlements(customer.as_ref(), max_value);
    let (entitlements, has_more) =
        page(all, start, page_size, |e| e.id.as_str()).ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::NotFound,
                "starting_after/ending_before must name one of the listed entitlements",
            )
        })?;
    Ok(Json(GetBillingEntitlementsResponse {
        code: OK_CODE.to_owned(),
        message: SUCCESS_MESSAGE.to_owned(),
        has_more,
        entitlements,
        plans: expand_plans.then(|| views::entitlement_plans(customer.as_ref())),
    }))
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
        ("customer_id" = String, Query, description = "The customer"),
        ("feature_code" = String, Query, description = "The feature"),
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
) -> Result<Json<CheckBillingEntitlementResponse>, ApiError> {
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
        .customer_entitlements(&customer_id, state.clock.now())
        .await?;
    let feature = customer
        .as_ref()
        .and_then(|c| c.plan.feature(&feature_code));
    let consumed = match (&customer, feature) {
        (Some(customer), Some(feature)) if feature.metered => {
            views::consumed(customer, &feature_code)
        }
        _ => kinde_meter_wire::UsageTotal::ZERO,
    };
    let answer = entitlement::check(feature, consumed, quantity);
    Ok(Json(CheckBillingEntitlementResponse {
        code: OK_CODE.to_owned(),
        message: SUCCESS_MESSAGE.to_owned(),
        allowed: answer.allowed,
        feature_code: feature_code.to_string(),
        entitlement_limit_max: answer.limit_max,
        consumed: answer.consumed,
        remaining: answer.remaining,
        quantity,
        current_period_end: customer
            .as_ref()
            .map(|c| kinde_meter_core::timestamp::format_utc(c.usage.period.end)),
    }))
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

/// The page of `items` that `start` and `size` name, and whether more items lie
/// beyond it in the direction of travel (after it for the first page and
/// `starting_after`, before it for `ending_before`), as agreements page
/// (`docs/api.md#paging`). `None` when the cursor names no item.
fn page<T>(
    mut items: Vec<T>,
    start: PageStart<'_>,
    size: usize,
    id: impl Fn(&T) -> &str,
) -> Option<(Vec<T>, bool)> {
    let position = |cursor: &str| items.iter().position(|item| id(item) == cursor);
    let (from, to, has_more) = match start {
        PageStart::First => (0, size.min(items.len()), items.len() > size),
        PageStart::StartingAfter(cursor) => {
            let from = position(cursor)? + 1;
            let to = from.saturating_add(size).min(items.len());
            (from, to, to < items.len())
        }
        PageStart::EndingBefore(cursor) => {
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
        assert_eq!(page_of(PageStart::First, 2), some(&["a", "b"], true));
        assert_eq!(page_of(PageStart::First, 5), some(&items, false));
        assert_eq!(
            page_of(PageStart::StartingAfter("b"), 2),
            some(&["c", "d"], true)
        );
        assert_eq!(
            page_of(PageStart::StartingAfter("d"), 2),
            some(&["e"], false)
        );
        assert_eq!(page_of(PageStart::StartingAfter("e"), 2), some(&[], false));
        assert_eq!(
            page_of(PageStart::EndingBefore("e"), 2),
            some(&["c", "d"], true)
        );
        assert_eq!(
            page_of(PageStart::EndingBefore("c"), 2),
            some(&["a", "b"], false)
        );
        assert_eq!(page_of(PageStart::EndingBefore("a"), 2), some(&[], false));
        assert_eq!(page_of(PageStart::StartingAfter("x"), 2), None);
        assert_eq!(page_of(PageStart::EndingBefore("x"), 2), None);
        let empty: Vec<&str> = Vec::new();
        assert_eq!(
            page(empty.clone(), PageStart::First, 10, |s| s),
            some(&[], false)
        );
        assert_eq!(page(empty, PageStart::StartingAfter("a"), 10, |s| s), None);
    }
}
