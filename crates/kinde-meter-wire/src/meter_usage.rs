//! `POST /api/v1/billing/meter_usage`, its batch form and usage read-back.

use serde::{Deserialize, Serialize};

/// Kinde's `CreateMeterUsageRecordRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateMeterUsageRecordRequest {
    /// The billing agreement to record against, e.g. `agreement_0195ac80a14c2ca2cec97d026d864de0`.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 255,
            pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$"
        )
    )]
    pub customer_agreement_id: String,
    /// The code (key) of a metered feature of the agreement's plan, e.g. `api_calls`.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 255,
            pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$"
        )
    )]
    pub billing_feature_code: String,
    /// The usage value: a non-negative decimal written as a string, e.g. `"1500.25"`:
    /// 1 to 18 digits, optionally `.` and 1 to 9 digits (no sign, exponent or spaces).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[0-9]{1,18}(\.[0-9]{1,9})?$", example = "1500.25")
    )]
    pub meter_value: String,
    /// When the usage happened (RFC 3339); defaults to the time of receipt. An
    /// offset may also be written `+1100` or `+11`, or left out (UTC), as the
    /// pattern states; more than 5 minutes in the future is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^([0-9]{4}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))|([0-9]{2}(0[48]|[2468][048]|[13579][26])|([02468][048]|[13579][26])00)-02-29)[Tt ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,9})?)?([Zz]|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)?$",
            example = "2024-11-18T13:32:03+11:00"
        )
    )]
    pub meter_usage_timestamp: Option<String>,
    /// `delta` (default) adds to the usage; `absolute` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_type_code: Option<MeterTypeCode>,
}

/// How a record changes the usage: Kinde's `meter_type_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum MeterTypeCode {
    /// Adds the value to the usage.
    #[default]
    Delta,
    /// Replaces the usage with the value.
    Absolute,
}

impl MeterTypeCode {
    /// The code as written on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            MeterTypeCode::Delta => "delta",
            MeterTypeCode::Absolute => "absolute",
        }
    }
}

/// Kinde's `CreateMeterUsageRecordResponse`: `{"message":"Success","code":"OK"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateMeterUsageRecordResponse {
    /// `"Success"`.
    #[serde(default)]
    pub message: String,
    /// `"OK"`.
    #[serde(default)]
    pub code: String,
}

impl CreateMeterUsageRecordResponse {
    /// The success body.
    pub fn success() -> Self {
        CreateMeterUsageRecordResponse {
            message: crate::SUCCESS_MESSAGE.to_owned(),
            code: crate::OK_CODE.to_owned(),
        }
    }
}

/// Body of `POST /api/v1/billing/meter_usage/batch` (not in Kinde): up to 100 records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateMeterUsageRecordsBatchRequest {
    /// The records, each validated and stored on its own.
    #[cfg_attr(feature = "openapi", schema(max_items = 100))]
    pub records: Vec<CreateMeterUsageRecordRequest>,
}

/// Answer to a batch: one result per record, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateMeterUsageRecordsBatchResponse {
    /// `"OK"`.
    #[serde(default)]
    pub code: String,
    /// `"Success"`.
    #[serde(default)]
    pub message: String,
    /// One entry per record.
    #[serde(default)]
    pub results: Vec<BatchRecordResult>,
}

/// The fate of one record of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchRecordResult {
    /// Position of the record in the request, from 0.
    pub index: usize,
    /// `"OK"` for a stored record, else the record's error code.
    pub code: String,
    /// `"Success"` or what was wrong.
    pub message: String,
}

/// Answer of `GET /api/v1/billing/meter_usage` (not in Kinde): usage per metered
/// feature for one billing period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GetMeterUsageResponse {
    /// `"OK"`.
    #[serde(default)]
    pub code: String,
    /// `"Success"`.
    #[serde(default)]
    pub message: String,
    /// One entry per metered feature asked for.
    #[serde(default)]
    pub usage: Vec<MeterUsage>,
}

/// Usage of one feature in one billing period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MeterUsage {
    /// The feature's code.
    pub billing_feature_code: String,
    /// Start of the period (inclusive), RFC 3339 UTC.
    pub period_start: String,
    /// End of the period (exclusive), RFC 3339 UTC.
    pub period_end: String,
    /// The usage, an exact decimal string in canonical form (`"0"`, `"100.25"`).
    pub value: String,
    /// How many records were assigned to the period.
    pub record_count: u64,
    /// When the last of them was received, RFC 3339 UTC; null without records.
    pub last_recorded_at: Option<String>,
}
