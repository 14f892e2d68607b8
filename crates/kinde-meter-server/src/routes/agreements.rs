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
use crate::extract::{JsonBody, QueryParams};
use crate::state::AppState;
use crate::views;

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
        ("customer_id" = String, Query, description = "The customer"),
        ("feature_code" = Option<String>, Query, description = "Only agreements whose plan has this feature"),
        ("page_size" = Option<usize>, Query, description = "1 to 500, default 10"),
        ("starting_after" = Option<String>, Query, description = "The page after this agreement"),
        ("ending_before" = Option<String>, Query, description = "The page just before this agreement"),
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
    let page_size = match params.optional("page_size") {
        None => DEFAULT_PAGE_SIZE,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    ErrorCode::InvalidField,
                    format!("page_size must be a whole number from 1 to {MAX_PAGE_SIZE}"),
                )
            })?,
    };
    let cursor_id = |field: &str| {
        params
            .optional(field)
            .map(|id| {
                AgreementId::parse(id.to_owned()).map_err(|e| {
                    ApiError::bad_request(ErrorCode::InvalidField, format!("{field} {e}"))
                })
            })
            .transpose()
    };
    let cursor = match (cursor_id("starting_after")?, cursor_id("ending_before")?) {
        (None, None) => Cursor::First,
        (Some(after), None) => Cursor::StartingAfter(after),
        (None, Some(before)) => Cursor::EndingBefore(before),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidField,
                "give starting_after or ending_before, not both",
            ));
        }
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
            ListAgreementsError::UnknownCursor => ApiError::bad_request(
                ErrorCode::InvalidField,
                "starting_after/ending_before must name one of the customer's agreements",
            ),
            ListAgreementsError::Store(e) => e.into(),
        })?;
    Ok(Json(views::agreements_page(&page, now)))
}
