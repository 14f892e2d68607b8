//! The request and response bodies, as in the Python SDK's
//! `kinde_sdk.management.models`.
//!
//! The JSON shapes are those of the `kinde-meter-wire` crate, re-exported here so
//! that the SDK and the kinde-meter server share one definition and cannot drift.
//! This module adds [`MeterValue`] and [`UsageTimestamp`], which turn typed Rust
//! values into the strings the wire carries. Usage read back
//! ([`Entitlement::consumed`], [`CheckBillingEntitlementResponse::consumed`]) is
//! an exact [`UsageTotal`], never a float.

use std::fmt;

use jiff::tz::Offset;
use jiff::{Timestamp, Zoned};

#[doc(inline)]
pub use kinde_meter_wire::{
    BatchRecordResult, BillingAgreement, BillingEntitlement, CheckBillingEntitlementResponse,
    CreateBillingAgreementRequest, CreateMeterUsageRecordRequest, CreateMeterUsageRecordResponse,
    CreateMeterUsageRecordsBatchRequest, CreateMeterUsageRecordsBatchResponse,
    CreateWebHookRequest, CreateWebhookResponse, CreateWebhookResponseWebhook,
    DeleteWebhookResponse, Entitlement, EntitlementPlan, Error, ErrorCode, ErrorResponse,
    EventType, ExportFormat, GetBillingAgreementsResponse, GetBillingEntitlementsResponse,
    GetEventResponse, GetEventResponseEvent, GetEventTypesResponse, GetMeterUsageResponse,
    GetWebhooksResponse, MeterTypeCode, MeterUsage, MeterUsageExportRow, SuccessResponse,
    UpdateWebHookRequest, UpdateWebhookResponse, UpdateWebhookResponseWebhook, UsageTotal, Webhook,
};

/// A usage value as Kinde wants it: a non-negative decimal written as a string.
///
/// Built from a string (sent as written, e.g. `"1500.25"`) or from any integer
/// (`150` becomes `"150"`). There is deliberately no conversion from `f32`/`f64`:
/// usage is exact decimal arithmetic, and a float cannot hold `0.1`. The SDK does
/// not check the value; the server rejects a negative or malformed one with
/// `INVALID_METER_VALUE`.
///
/// ```
/// use kinde_sdk::models::MeterValue;
///
/// assert_eq!(MeterValue::from(150).as_str(), "150");
/// assert_eq!(MeterValue::from("0.5").as_str(), "0.5");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeterValue(String);

impl MeterValue {
    /// The value as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MeterValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<MeterValue> for String {
    fn from(value: MeterValue) -> String {
        value.0
    }
}

/// The exact decimal the wire types hold (e.g.
/// [`CheckBillingEntitlementResponse::quantity`]), in its canonical form.
impl From<kinde_meter_wire::MeterValue> for MeterValue {
    fn from(value: kinde_meter_wire::MeterValue) -> Self {
        MeterValue(value.to_string())
    }
}

impl From<String> for MeterValue {
    fn from(value: String) -> Self {
        MeterValue(value)
    }
}

impl From<&str> for MeterValue {
    fn from(value: &str) -> Self {
        MeterValue(value.to_owned())
    }
}

impl From<&String> for MeterValue {
    fn from(value: &String) -> Self {
        MeterValue(value.clone())
    }
}

macro_rules! meter_value_from_integers {
    ($($int:ty),*) => {$(
        impl From<$int> for MeterValue {
            fn from(value: $int) -> Self {
                MeterValue(value.to_string())
            }
        }
    )*};
}

// Signed types too: an integer literal with no other hint is an `i32`.
meter_value_from_integers!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

/// When usage happened, written as RFC 3339 with an offset.
///
/// From a [`Timestamp`] it is written in UTC (`2024-11-18T02:32:03Z`); from a
/// [`Zoned`] with that zone's offset at the instant
/// (`2024-11-18T13:32:03+11:00`), never with the `[Australia/Sydney]` annotation
/// jiff adds, which Kinde would not accept. Fractional seconds are written only
/// when there are some.
///
/// ```
/// use jiff::Timestamp;
/// use jiff::tz::{TimeZone, offset};
/// use kinde_sdk::models::UsageTimestamp;
///
/// let at: Timestamp = "2024-11-18T02:32:03Z".parse().unwrap();
/// assert_eq!(UsageTimestamp::from(at).to_string(), "2024-11-18T02:32:03Z");
/// // Or `at.in_tz("Australia/Sydney")?`, which is +11:00 on that day.
/// let sydney = at.to_zoned(TimeZone::fixed(offset(11)));
/// assert_eq!(UsageTimestamp::from(&sydney).to_string(), "2024-11-18T13:32:03+11:00");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageTimestamp {
    timestamp: Timestamp,
    offset: Option<Offset>,
}

impl UsageTimestamp {
    /// The instant.
    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }
}

impl fmt::Display for UsageTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(offset) => write!(f, "{}", self.timestamp.display_with_offset(offset)),
            None => write!(f, "{}", self.timestamp),
        }
    }
}

impl From<Timestamp> for UsageTimestamp {
    fn from(timestamp: Timestamp) -> Self {
        UsageTimestamp {
            timestamp,
            offset: None,
        }
    }
}

impl From<&Zoned> for UsageTimestamp {
    fn from(zoned: &Zoned) -> Self {
        UsageTimestamp {
            timestamp: zoned.timestamp(),
            offset: Some(zoned.offset()),
        }
    }
}

impl From<Zoned> for UsageTimestamp {
    fn from(zoned: Zoned) -> Self {
        UsageTimestamp::from(&zoned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_become_decimal_strings() {
        assert_eq!(MeterValue::from(0u8).as_str(), "0");
        assert_eq!(MeterValue::from(u64::MAX).as_str(), "18446744073709551615");
        assert_eq!(MeterValue::from(150).as_str(), "150");
        assert_eq!(MeterValue::from(String::from("1.5")).as_str(), "1.5");
    }

    #[test]
    fn timestamps_keep_offsets_and_fractions() {
        let at: Timestamp = "2024-11-18T02:32:03.25Z".parse().unwrap();
        assert_eq!(
            UsageTimestamp::from(at).to_string(),
            "2024-11-18T02:32:03.25Z"
        );
        let zoned = at.to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(-5)));
        assert_eq!(
            UsageTimestamp::from(zoned).to_string(),
            "2024-11-17T21:32:03.25-05:00"
        );
    }
}
