//! Routes for looking around the stored data, which the dashboard reads (not
//! in Kinde, `docs/api.md#browsing`): the customers that have agreements, an
//! agreement's latest raw records, and every webhook's delivery state.

use axum::{Json, extract::State};
use kinde_meter_core::{ErrorCode, ids::CustomerId, timestamp::format_utc};
use kinde_meter_store::{CustomerQuery, MAX_RECORDS, RecordsQuery, WebhookStatus};
use kinde_meter_wire::{
    CustomerSummary, ErrorResponse, GetCustomersResponse, GetMeterUsageRecordsResponse,
    GetWebhookStatusResponse, MeterUsageRecord, OK_CODE, SUCCESS_MESSAGE, WebhookDeliveryStatus,
};

use crate::error::ApiError;
use crate::extract::{Params, QueryParams};
use crate::routes::{agreements, usage};
use crate::state::AppState;

/// Records answered when `limit` is absent.
pub const DEFAULT_RECORDS: usize = 20;

/// The customers that have agreements, in code point order of their ids,
/// optionally only those whose id starts with a prefix.
#[utoipa::path(
    get,
    path = "/api/v1/billing/customers",
    tag = "Browsing",
    operation_id = "GetCustomers",
    params(
        ("customer_id_prefix" = Option<String>, Query, max_length = 255, pattern = r"^([^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*)?$", description = "Only customers whose id starts with this text (case-sensitive)"),
        ("page_size" = Option<u32>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 10"),
        ("starting_after" = Option<String>, Query, max_length = 255, pattern = r"^([^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*)?$", description = "The page after this customer id (it need not name a customer)"),
    ),
    responses(
        (status = 200, description = "A page of customers", body = GetCustomersResponse),
        (status = 400, description = "Invalid parameter", body = ErrorResponse),
    ),
)]
pub async fn get_customers(
    State(state): State<AppState>,
    QueryParams(params): QueryParams,
) -> Result<Json<GetCustomersResponse>, ApiError> {
    let query = CustomerQuery {
        prefix: optional_customer(&params, "customer_id_prefix")?,
        starting_after: optional_customer(&params, "starting_after")?,
        page_size: agreements::page_size(&params)?,
    };
    let page = state.store.list_customers(query).await?;
    Ok(Json(GetCustomersResponse {
        code: OK_CODE.to_owned(),
        message: SUCCESS_MESSAGE.to_owned(),
        has_more: page.has_more,
        customers: page
            .customers
            .into_iter()
            .map(|c| CustomerSummary {
                customer_id: c.customer_id.to_string(),
                agreement_count: c.agreement_count,
            })
            .collect(),
    }))
}

/// An optional parameter holding a customer id (or a prefix of one), held to
/// the rules of ids: 400 `INVALID_FIELD` otherwise.
fn optional_customer(params: &Params, name: &str) -> Result<Option<CustomerId>, ApiError> {
    params
        .optional(name)
        .map(|text| {
            CustomerId::parse(text)
                .map_err(|e| ApiError::bad_request(ErrorCode::InvalidField, format!("{name} {e}")))
        })
        .transpose()
}

/// An agreement's latest raw usage records, newest first: by billing period,
/// then the instant they count at, then arrival.
#[utoipa::path(
    get,
    path = "/api/v1/billing/meter_usage/records",
    tag = "Browsing",
    operation_id = "GetMeterUsageRecords",
    params(
        ("customer_agreement_id" = String, Query, min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$", description = "The agreement"),
        ("billing_feature_code" = Option<String>, Query, max_length = 255, pattern = r"^([^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*)?$", description = "One metered feature; default every metered feature"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Most records to answer, 1 to 100, default 20"),
    ),
    responses(
        (status = 200, description = "The latest records", body = GetMeterUsageRecordsResponse),
        (status = 400, description = "Invalid request or unknown agreement/feature", body = ErrorResponse),
    ),
)]
pub async fn get_meter_usage_records(
    State(state): State<AppState>,
    QueryParams(params): QueryParams,
) -> Result<Json<GetMeterUsageRecordsResponse>, ApiError> {
    let (agreement_id, feature_code) = usage::agreement_and_feature(&params)?;
    let limit = limit(&params)?;
    let records = state
        .store
        .latest_usage_records(RecordsQuery {
            agreement_id: agreement_id.clone(),
            feature_code: feature_code.clone(),
            limit,
        })
        .await
        .map_err(|e| usage::read_error(e, &agreement_id, &feature_code))?;
    Ok(Json(GetMeterUsageRecordsResponse {
        code: OK_CODE.to_owned(),
        message: SUCCESS_MESSAGE.to_owned(),
        records: records
            .into_iter()
            .map(|r| MeterUsageRecord {
                billing_feature_code: r.feature_code.to_string(),
                meter_type_code: r.meter_type,
                meter_value: r.value.to_string(),
                meter_usage_timestamp: r.timestamp.map(format_utc),
                received_at: format_utc(r.received_at),
                period_start: format_utc(r.period.start),
                period_end: format_utc(r.period.end),
            })
            .collect(),
    }))
}

/// `limit`: default [`DEFAULT_RECORDS`], a whole number from 1 to
/// [`MAX_RECORDS`]; anything else, empty included, is 400 `INVALID_FIELD`.
fn limit(params: &Params) -> Result<usize, ApiError> {
    let Some(text) = params.raw("limit") else {
        return Ok(DEFAULT_RECORDS);
    };
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_RECORDS).contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidField,
                format!("limit must be a whole number from 1 to {MAX_RECORDS}"),
            )
        })
}

/// Every webhook, oldest first, with the state of its deliveries: what
/// `kinde-meter webhooks list` shows.
#[utoipa::path(
    get,
    path = "/api/v1/webhook_status",
    tag = "Browsing",
    operation_id = "GetWebhookStatus",
    responses(
        (status = 200, description = "Every webhook with its delivery state", body = GetWebhookStatusResponse),
    ),
)]
pub async fn get_webhook_status(
    State(state): State<AppState>,
) -> Result<Json<GetWebhookStatusResponse>, ApiError> {
    let webhooks = state.store.list_webhooks().await?;
    Ok(Json(GetWebhookStatusResponse {
        code: OK_CODE.to_owned(),
        message: SUCCESS_MESSAGE.to_owned(),
        webhooks: webhooks.iter().map(webhook_status).collect(),
    }))
}

fn webhook_status(status: &WebhookStatus) -> WebhookDeliveryStatus {
    let webhook = &status.webhook;
    WebhookDeliveryStatus {
        id: webhook.id.to_string(),
        name: webhook.name.clone(),
        endpoint: webhook.endpoint.clone(),
        description: webhook.description.clone(),
        event_types: webhook
            .event_types
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect(),
        created_on: format_utc(webhook.created_on),
        last_attempt_at: status.last_attempt_at.map(format_utc),
        last_success_at: status.last_success_at.map(format_utc),
        last_error: status.last_error.clone(),
        consecutive_failures: status.consecutive_failures,
        pending: status.pending,
    }
}
