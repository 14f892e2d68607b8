//! Shapes of the routes for looking around the stored data, which the
//! dashboard reads (not in Kinde, `docs/api.md#browsing`): the customers
//! listing, an agreement's latest raw records and the webhooks' delivery state.
//! They follow Kinde's conventions: `code` and `message`, snake_case fields,
//! RFC 3339 instants in UTC, decimals as canonical strings.

use serde::{Deserialize, Serialize};

use crate::MeterTypeCode;

/// Answer of `GET /api/v1/billing/customers`: a page of the customers that have
/// agreements, in code point order of their ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GetCustomersResponse {
    /// `"OK"`.
    #[serde(default)]
    pub code: String,
    /// `"Success"`.
    #[serde(default)]
    pub message: String,
    /// Whether more customers match after this page.
    #[serde(default)]
    pub has_more: bool,
    /// The page.
    #[serde(default)]
    pub customers: Vec<CustomerSummary>,
}

/// One customer of a [`GetCustomersResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CustomerSummary {
    /// The customer's id.
    pub customer_id: String,
    /// How many agreements it has, ended ones included.
    pub agreement_count: u64,
}

/// Answer of `GET /api/v1/billing/meter_usage/records`: an agreement's latest
/// raw usage records, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GetMeterUsageRecordsResponse {
    /// `"OK"`.
    #[serde(default)]
    pub code: String,
    /// `"Success"`.
    #[serde(default)]
    pub message: String,
    /// The records: by billing period, then the instant they count at, then
    /// arrival, newest first.
    #[serde(default)]
    pub records: Vec<MeterUsageRecord>,
}

/// One stored usage record, in the request's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MeterUsageRecord {
    /// The feature.
    pub billing_feature_code: String,
    /// `delta` or `absolute`.
    pub meter_type_code: MeterTypeCode,
    /// The value, an exact decimal string in canonical form (`"007"` was stored as `"7"`).
    pub meter_value: String,
    /// The record's `meter_usage_timestamp`, RFC 3339 UTC; null when it had
    /// none (it counts at its receipt).
    pub meter_usage_timestamp: Option<String>,
    /// When it was received, RFC 3339 UTC.
    pub received_at: String,
    /// Start of the billing period it counts in (inclusive), RFC 3339 UTC.
    pub period_start: String,
    /// End of that period (exclusive), RFC 3339 UTC.
    pub period_end: String,
}

/// Answer of `GET /api/v1/webhook_status`: every webhook with the state of its
/// deliveries, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GetWebhookStatusResponse {
    /// `"OK"`.
    #[serde(default)]
    pub code: String,
    /// `"Success"`.
    #[serde(default)]
    pub message: String,
    /// Every webhook.
    #[serde(default)]
    pub webhooks: Vec<WebhookDeliveryStatus>,
}

/// A webhook (Kinde's `Webhook` fields) and the state of its deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookDeliveryStatus {
    /// The webhook's id (`webhook_…`).
    pub id: String,
    /// Its name.
    pub name: String,
    /// The URL events are POSTed to.
    pub endpoint: String,
    /// Its description; `null` when it has none.
    pub description: Option<String>,
    /// The event types it receives.
    pub event_types: Vec<String>,
    /// When it was created (RFC 3339).
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_on: String,
    /// When a delivery to it was last attempted; null if never.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub last_attempt_at: Option<String>,
    /// When a delivery to it last succeeded; null if never.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub last_success_at: Option<String>,
    /// The error of the last attempt, if it failed (a status, or the error
    /// without the URL); null otherwise.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// Deliveries neither made nor given up.
    pub pending: u64,
}
