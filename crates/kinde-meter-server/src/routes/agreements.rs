//! Kinde's billing agreements: `POST` and `GET /api/v1/billing/agreements`.

use axum::{Json, extract::State};
use kinde_meter_core::{
    ErrorCode,
    ids::{AgreementId, CustomerId, FeatureCode, PlanCode},
};
use kinde_meter_store::{
    AgreementQuery, CreateAgreementError, Cursor, ListAgreementsError, NewAgreement,
};
use kinde_meter_wire::{ErrorResponse, GetBillingAgreementsResponse, SuccessResponse};
use serde_json::Value;

use crate::error::ApiError;
use crate::extract::{JsonBody, Params, QueryParams};
use crate::state::AppState;
use crate::views::{self, PageStart};

/// Default and largest page sizes (`docs/api.md`).
pub const DEFAULT_PAGE_SIZE: usize = 10;
/// Largest page size.
pub const MAX_PAGE_SIZE: usize = 500;

/// Create a billing agreement (Kinde's `CreateBillingAgreement`). Ends the
/// customer's other active agreements.
#[utoipa::path(
    post,
    path = "/api/v1/billing/agreements",
    tag = "Billing Agreements",
    operation_id = "CreateBillingAgreement",
    request_body = kinde_meter_wire::CreateBillingAgreementRequest,
    responses(
        (status = 200, description = "Billing agreement successfully changed", body = SuccessResponse),
        (status = 400, description = "Invalid request or unknown plan", body = ErrorResponse),
    ),
)]
pub async fn create_billing_agreement(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<SuccessResponse>, ApiError> {
    let Value::Object(object) = body else {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidJson,
            "the body must be a JSON object",
        ));
    };
    let mut problems = Vec::new();
    let mut text = |field: &str| match object.get(field) {
        None | Some(Value::Null) => {
            problems.push((ErrorCode::MissingField, format!("{field} is required")));
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            problems.push((ErrorCode::InvalidField, format!("{field} must be a string")));
            None
        }
    };
    let customer = text("customer_id");
    let plan = text("plan_code");
    for flag in ["is_invoice_now", "is_prorate"] {
        if !matches!(
            object.get(flag),
            None | Some(Value::Null) | Some(Value::Bool(_))
        ) {
            problems.push((ErrorCode::InvalidField, format!("{flag} must be a boolean")));
        }
    }
    let customer_id = customer.and_then(|c| {
        CustomerId::parse(c)
            .map_err(|e| problems.push((ErrorCode::InvalidField, format!("customer_id {e}"))))
            .ok()
    });
    let plan_code = plan.and_then(|p| {
        PlanCode::parse(p)
            .map_err(|e| problems.push((ErrorCode::InvalidField, format!("plan_code {e}"))))
            .ok()
    });
    let (Some(customer_id), Some(plan_code)) = (customer_id, plan_code) else {
        return Err(ApiError::fields(
            problems
                .into_iter()
                .map(|(code, message)| kinde_meter_core::request::FieldError::new(code, message))
                .collect(),
        ));
    };
    let created = state
        .store
        .create_agreement(NewAgreement {
            customer_id,
            plan_code: plan_code.clone(),
            now: state.clock.now(),
            id_random: rand::random(),
        })
        .await;
    match created {
        Ok(agreement) => {
            tracing::info!(agreement = %agreement.id, plan = %plan_code, "agreement created");
            Ok(Json(SuccessResponse::success()))
        }
        Err(CreateAgreementError::PlanNotFound) => Err(ApiError::bad_request(
            ErrorCode::PlanNotFound,
            format!("plan_code: no plan {plan_code} in the catalog"),
        )),
        Err(CreateAgreementError::Store(e)) => Err(e.into()),
    }
}

/// List a customer's billing agreements, newest first (Kinde's `GetBillingAgreements`).
#[utoipa::path(
    get,
    path = "/api/v1/billing/agreements",
    tag = "Billing Agreements",
    operation_id = "GetBillingAgreements",
    params(
        ("customer_id" = String, Query, min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$", description = "The customer"),
        ("feature_code" = Option<String>, Query, max_length = 255, pattern = r"^([^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*)?$", description = "Only agreements whose plan has this feature"),
        ("page_size" = Option<u32>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 10"),
        ("starting_after" = Option<String>, Query, max_length = 255, description = "The page after this agreement (an id of the listing; not with ending_before)"),
        ("ending_before" = Option<String>, Query, max_length = 255, description = "The page just before this agreement (an id of the listing; not with starting_after)"),
    ),
    responses(
        (status = 200, description = "A page of agreements", body = GetBillingAgreementsResponse),
    ),
)]
pub async fn get_billing_agreements(
    State(state): State<AppState>,
    QueryParams(params): QueryParams,
) -> Result<Json<GetBillingAgreementsResponse>, ApiError> {
    let customer_id = params
        .required("customer_id")?
        .and_then_code(CustomerId::parse)?;
    let feature_code = params
        .optional("feature_code")
        .map(|f| FeatureCode::parse(f.to_owned()))
        .transpose()
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidField, format!("feature_code {e}")))?;
    let page_size = page_size(&params)?;
    let cursor = match page_start(&params)? {
        PageStart::First => Cursor::First,
        // An id that could never be one (too long, control characters) names
        // no agreement either.
        PageStart::StartingAfter(id) => AgreementId::parse(id)
            .map(Cursor::StartingAfter)
            .map_err(|_| unknown_cursor())?,
        PageStart::EndingBefore(id) => AgreementId::parse(id)
            .map(Cursor::EndingBefore)
            .map_err(|_| unknown_cursor())?,
    };
    let now = state.clock.now();
    let page = state
        .store
        .list_agreements(AgreementQuery {
            customer_id,
            feature_code,
            page_size,
            cursor,
            now,
        })
        .await
        .map_err(|e| match e {
            ListAgreementsError::UnknownCursor => unknown_cursor(),
            ListAgreementsError::Store(e) => e.into(),
        })?;
    Ok(Json(views::agreements_page(&page, now)))
}

/// 400 `AGREEMENT_NOT_FOUND`: a paging cursor that names no agreement of the
/// listing (`docs/api.md#paging`).
fn unknown_cursor() -> ApiError {
    ApiError::bad_request(
        ErrorCode::AgreementNotFound,
        "starting_after/ending_before must name one of the listed agreements",
    )
}

/// The `page_size` of a listing (`docs/api.md#paging`): default 10, a whole
/// number from 1 to 500; anything else, empty included, is 400 `INVALID_FIELD`.
pub(crate) fn page_size(params: &Params) -> Result<usize, ApiError> {
    let Some(text) = params.raw("page_size") else {
        return Ok(DEFAULT_PAGE_SIZE);
    };
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidField,
                format!("page_size must be a whole number from 1 to {MAX_PAGE_SIZE}"),
            )
        })
}

/// The paging cursor of a listing: `starting_after` or `ending_before` (an
/// empty one counts as absent), not both (400 `INVALID_FIELD`).
pub(crate) fn page_start(params: &Params) -> Result<PageStart<'_>, ApiError> {
    match (
        params.optional("starting_after"),
        params.optional("ending_before"),
    ) {
        (None, None) => Ok(PageStart::First),
        (Some(after), None) => Ok(PageStart::StartingAfter(after)),
        (None, Some(before)) => Ok(PageStart::EndingBefore(before)),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            "give starting_after or ending_before, not both",
        )),
    }
}
