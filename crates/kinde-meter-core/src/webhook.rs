//! Billing webhook events in Kinde's format: event types, webhook and event ids,
//! the `data` of each event type, the JWT claims a delivery carries, and the
//! retry schedule (docs/webhooks.md, docs/design.md#webhook-outbox).
//!
//! Everything here is pure: the stores write [`Event`]s in the transaction of the
//! change that causes them, the delivery worker signs [`Event::claims`].

use std::fmt;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::{
    ids::{AgreementId, CustomerId, FeatureCode, PlanCode},
    period::Period,
    value::UsageTotal,
};

/// The kinds of event a webhook can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// An agreement was created.
    AgreementCreated,
    /// An agreement was created for a customer with no active agreement.
    PlanAssigned,
    /// An agreement replaced the customer's active one.
    PlanChanged,
    /// An agreement ended (it was replaced).
    AgreementCancelled,
    /// A feature's usage changed (coalesced per agreement and feature).
    MeterUsageUpdated,
    /// Usage first reached a threshold of the feature's `limit_max` in a period
    /// (not one of Kinde's types).
    EntitlementThresholdReached,
}

impl EventType {
    /// Every event type, in the order GET /event_types lists them.
    pub const ALL: [EventType; 6] = [
        EventType::AgreementCreated,
        EventType::PlanAssigned,
        EventType::PlanChanged,
        EventType::AgreementCancelled,
        EventType::MeterUsageUpdated,
        EventType::EntitlementThresholdReached,
    ];

    /// The type's code, e.g. `customer.meter_usage_updated`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::AgreementCreated => "customer.agreement_created",
            EventType::PlanAssigned => "customer.plan_assigned",
            EventType::PlanChanged => "customer.plan_changed",
            EventType::AgreementCancelled => "customer.agreement_cancelled",
            EventType::MeterUsageUpdated => "customer.meter_usage_updated",
            EventType::EntitlementThresholdReached => "customer.entitlement_threshold_reached",
        }
    }

    /// The type with this code, if any.
    pub fn parse(code: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == code)
    }

    /// A human name, for GET /event_types.
    pub const fn name(self) -> &'static str {
        match self {
            EventType::AgreementCreated => "Agreement created",
            EventType::PlanAssigned => "Plan assigned",
            EventType::PlanChanged => "Plan changed",
            EventType::AgreementCancelled => "Agreement cancelled",
            EventType::MeterUsageUpdated => "Meter usage updated",
            EventType::EntitlementThresholdReached => "Entitlement threshold reached",
        }
    }

    /// What raises it, for GET /event_types.
    pub const fn description(self) -> &'static str {
        match self {
            EventType::AgreementCreated => "A billing agreement was created for a customer.",
            EventType::PlanAssigned => "A customer with no active agreement was assigned a plan.",
            EventType::PlanChanged => "A new agreement replaced the customer's active one.",
            EventType::AgreementCancelled => "A billing agreement ended because it was replaced.",
            EventType::MeterUsageUpdated => {
                "A metered feature's usage changed (coalesced per agreement and feature)."
            }
            EventType::EntitlementThresholdReached => {
                "A feature's usage first reached a threshold of its limit in a billing period."
            }
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A malformed webhook or event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid id")]
pub struct InvalidId;

/// `prefix` followed by 32 lowercase hex digits.
fn check_prefixed_hex(s: &str, prefix: &str) -> Result<(), InvalidId> {
    let hex = s.strip_prefix(prefix).ok_or(InvalidId)?;
    if hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(InvalidId)
    }
}

/// `prefix`, 12 hex digits of `now` in milliseconds (so ids sort by creation),
/// then the 10 bytes in hex: 32 hex digits, like agreement ids.
fn time_ordered(prefix: &str, now: Timestamp, random: [u8; 10]) -> String {
    let millis = now.as_millisecond().max(0) as u64 & 0xffff_ffff_ffff;
    let mut id = format!("{prefix}{millis:012x}");
    for b in random {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The id's prefix.
            pub const PREFIX: &'static str = $prefix;

            /// Accepts the prefix followed by 32 lowercase hex digits.
            pub fn parse(s: impl Into<String>) -> Result<Self, InvalidId> {
                let s = s.into();
                check_prefixed_hex(&s, $prefix)?;
                Ok($name(s))
            }

            /// A new id: the prefix, 12 hex digits of `now` in milliseconds (ids
            /// sort by creation), then `random` in hex. The caller supplies the
            /// randomness; this crate does no I/O.
            pub fn generate(now: Timestamp, random: [u8; 10]) -> Self {
                $name(time_ordered($prefix, now, random))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

prefixed_id!(
    /// A webhook id, e.g. `webhook_0195ac80a14c2ca2cec97d026d864de0`.
    WebhookId,
    "webhook_"
);
prefixed_id!(
    /// An event id, e.g. `event_0195ac80a14c2ca2cec97d026d864de0`: the same for
    /// every webhook that receives the event and on every retry.
    EventId,
    "event_"
);

impl EventId {
    /// An id derived from `key`, which must be unique to the event (e.g. a dedupe
    /// key, or the agreement and the event type): time-ordered by `now` like
    /// [`EventId::generate`], the rest the first 10 bytes of SHA-256 of `key`. A
    /// store needs no randomness to name events, and a retried transaction names
    /// the same event the same way.
    pub fn derive(now: Timestamp, key: &str) -> EventId {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(key.as_bytes());
        let mut random = [0u8; 10];
        random.copy_from_slice(&digest[..10]);
        EventId::generate(now, random)
    }
}

/// One event as stored in the outbox and delivered to every webhook subscribed to
/// its type.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its id (`jti` and `event_id` of the delivered JWT).
    pub id: EventId,
    /// Its type.
    pub event_type: EventType,
    /// When it was raised (the commit of the change that caused it).
    pub created_at: Timestamp,
    /// The type's data, built by the functions of [`data`].
    pub data: Value,
}

impl Event {
    /// The JWT claims Kinde sends for the event: `type`, `event_id`, `source`,
    /// `timestamp` (RFC 3339), `event_timestamp` (RFC 3339 with milliseconds and
    /// `Z`), `data`, plus `iss` (the server's public URL), `iat` (`now`, the time
    /// of signing) and `jti` (the event id, the same on every retry).
    pub fn claims(&self, issuer: &str, now: Timestamp) -> Value {
        json!({
            "type": self.event_type.as_str(),
            "event_id": self.id.as_str(),
            "source": "api",
            "timestamp": self.created_at.to_string(),
            "event_timestamp": event_timestamp(self.created_at),
            "data": self.data,
            "iss": issuer,
            "iat": now.as_second(),
            "jti": self.id.as_str(),
        })
    }
}

/// RFC 3339 in UTC with exactly three fractional digits and `Z`.
fn event_timestamp(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The `data` of each event type (docs/webhooks.md). Every one carries
/// `customer_id` and `agreement_id`.
pub mod data {
    use super::*;

    fn base(
        customer_id: &CustomerId,
        agreement_id: &AgreementId,
    ) -> serde_json::Map<String, Value> {
        let mut map = serde_json::Map::new();
        map.insert("customer_id".into(), customer_id.as_str().into());
        map.insert("agreement_id".into(), agreement_id.as_str().into());
        map
    }

    fn with_plan(
        customer_id: &CustomerId,
        agreement_id: &AgreementId,
        plan_code: &PlanCode,
    ) -> serde_json::Map<String, Value> {
        let mut map = base(customer_id, agreement_id);
        map.insert("plan_code".into(), plan_code.as_str().into());
        map
    }

    /// `customer.agreement_created`.
    pub fn agreement_created(
        customer_id: &CustomerId,
        agreement_id: &AgreementId,
        plan_code: &PlanCode,
    ) -> Value {
        Value::Object(with_plan(customer_id, agreement_id, plan_code))
    }

    /// `customer.plan_assigned`: the new agreement's plan.
    pub fn plan_assigned(
        customer_id: &CustomerId,
        agreement_id: &AgreementId,
        plan_code: &PlanCode,
    ) -> Value {
        Value::Object(with_plan(customer_id, agreement_id, plan_code))
    }

    /// `customer.plan_changed`: the new agreement, its plan, and the active
    /// agreement it replaced with that one's plan.
    pub fn plan_changed(
        customer_id: &CustomerId,
        agreement_id: &AgreementId,
        plan_code: &PlanCode,
        previous_plan_code: &PlanCode,
        previous_agreement_id: &AgreementId,
    ) -> Value {
        let mut map = with_plan(customer_id, agreement_id, plan_code);
        map.insert(
            "previous_plan_code".into(),
            previous_plan_code.as_str().into(),
        );
        map.insert(
            "previous_agreement_id".into(),
            previous_agreement_id.as_str().into(),
        );
        Value::Object(map)
    }

    /// `customer.agreement_cancelled`: the agreement that ended, its plan, and when.
    pub fn agreement_cancelled(
        customer_id: &CustomerId,
        agreement_id: &AgreementId,
        plan_code: &PlanCode,
        expires_on: Timestamp,
    ) -> Value {
        let mut map = with_plan(customer_id, agreement_id, plan_code);
        map.insert("expires_on".into(), expires_on.to_string().into());
        Value::Object(map)
    }

    /// `customer.meter_usage_updated`: the feature's usage in `period`.
    pub fn meter_usage_updated(
        customer_id: &CustomerId,
        agreement_id: &AgreementId,
        feature_code: &FeatureCode,
        value: UsageTotal,
        period: Period,
    ) -> Value {
        let mut map = base(customer_id, agreement_id);
        map.insert("feature_code".into(), feature_code.as_str().into());
        map.insert("meter_id".into(), feature_code.as_str().into());
        map.insert("value".into(), value.to_string().into());
        map.insert("quantity".into(), quantity(value));
        insert_period(&mut map, period);
        Value::Object(map)
    }

    /// `customer.entitlement_threshold_reached`: `value` is the usage that reached
    /// `threshold_percent` of `limit_max` in `period`.
    pub fn entitlement_threshold_reached(
        customer_id: &CustomerId,
        agreement_id: &AgreementId,
        feature_code: &FeatureCode,
        threshold_percent: u8,
        limit_max: i64,
        value: UsageTotal,
        period: Period,
    ) -> Value {
        let mut map = base(customer_id, agreement_id);
        map.insert("feature_code".into(), feature_code.as_str().into());
        map.insert("threshold_percent".into(), threshold_percent.into());
        map.insert("entitlement_limit_max".into(), limit_max.into());
        map.insert("value".into(), value.to_string().into());
        insert_period(&mut map, period);
        Value::Object(map)
    }

    fn insert_period(map: &mut serde_json::Map<String, Value>, period: Period) {
        map.insert("period_start".into(), period.start.to_string().into());
        map.insert("period_end".into(), period.end.to_string().into());
    }

    /// The usage as a JSON number. Exact for whole numbers up to 2^64 and for
    /// every value of at most 15 significant digits (an `f64` holds those, and
    /// JSON writes its shortest form, which is the decimal itself); a value
    /// beyond both is the nearest `f64` (`value`, the decimal string, is always
    /// exact).
    pub fn quantity(value: UsageTotal) -> Value {
        let units = value.units();
        let scale = 10u128.pow(crate::value::SCALE_DIGITS);
        if units.is_multiple_of(scale)
            && let Ok(whole) = u64::try_from(units / scale)
        {
            return whole.into();
        }
        let text = value.to_string();
        text.parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number)
    }
}

/// How long after a failed attempt the next one is due: 1 s after the first,
/// doubling with each attempt (`attempt` is the one that failed, 1 for the
/// first), capped at 1 h.
pub fn backoff(attempt: u32) -> SignedDuration {
    const CAP_SECS: i64 = 3600;
    let exponent = attempt.saturating_sub(1).min(12);
    SignedDuration::from_secs((1i64 << exponent).min(CAP_SECS))
}

/// How long a delivery is retried, counted from its first attempt's due time.
pub const GIVE_UP_AFTER: SignedDuration = SignedDuration::from_hours(72);

/// When to retry a delivery whose attempt number `attempt` failed at `now`:
/// `now + backoff(attempt)`, or `None` (give up) when that lies more than
/// [`GIVE_UP_AFTER`] after `first_attempt_due`.
pub fn next_attempt_at(
    first_attempt_due: Timestamp,
    attempt: u32,
    now: Timestamp,
) -> Option<Timestamp> {
    let next = now + backoff(attempt);
    (next <= first_attempt_due + GIVE_UP_AFTER).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::MeterValue;

    fn utc(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn event_types_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert!(t.as_str().starts_with("customer."));
            assert!(!t.name().is_empty() && !t.description().is_empty());
        }
        assert_eq!(EventType::parse("customer.unknown"), None);
        assert_eq!(
            EventType::MeterUsageUpdated.to_string(),
            "customer.meter_usage_updated"
        );
    }

    #[test]
    fn ids_are_prefixed_hex() {
        let now = utc("2025-03-18T00:00:00Z");
        let id = WebhookId::generate(now, [0xab; 10]);
        assert_eq!(id.as_str().len(), "webhook_".len() + 32);
        assert!(id.as_str().starts_with("webhook_0195a"));
        assert_eq!(WebhookId::parse(id.as_str()), Ok(id.clone()));
        assert_eq!(WebhookId::parse("webhook_0195A"), Err(InvalidId));
        assert_eq!(
            WebhookId::parse(format!("event_{}", &id.as_str()[8..])),
            Err(InvalidId)
        );
        let event = EventId::derive(now, "threshold:a:f:0:80");
        assert_eq!(EventId::parse(event.as_str()), Ok(event.clone()));
        assert_eq!(event, EventId::derive(now, "threshold:a:f:0:80"));
        assert_ne!(event, EventId::derive(now, "threshold:a:f:0:90"));
        assert!(EventId::generate(now + SignedDuration::from_millis(1), [0; 10]) > event);
    }

    #[test]
    fn data_carries_what_each_type_names() {
        let customer = CustomerId::parse("customer_1").unwrap();
        let agreement = AgreementId::parse("agreement_1").unwrap();
        let previous = AgreementId::parse("agreement_0").unwrap();
        let pro = PlanCode::parse("pro").unwrap();
        let free = PlanCode::parse("free").unwrap();
        let feature = FeatureCode::parse("api_calls").unwrap();
        let period = Period {
            start: utc("2025-03-01T00:00:00Z"),
            end: utc("2025-04-01T00:00:00Z"),
        };
        assert_eq!(
            data::plan_changed(&customer, &agreement, &pro, &free, &previous),
            json!({"customer_id": "customer_1", "agreement_id": "agreement_1", "plan_code": "pro",
                   "previous_plan_code": "free", "previous_agreement_id": "agreement_0"})
        );
        assert_eq!(
            data::agreement_cancelled(&customer, &previous, &free, utc("2025-03-18T10:00:00Z")),
            json!({"customer_id": "customer_1", "agreement_id": "agreement_0", "plan_code": "free",
                   "expires_on": "2025-03-18T10:00:00Z"})
        );
        let value = UsageTotal::parse("1234.5").unwrap();
        assert_eq!(
            data::meter_usage_updated(&customer, &agreement, &feature, value, period),
            json!({"customer_id": "customer_1", "agreement_id": "agreement_1",
                   "feature_code": "api_calls", "meter_id": "api_calls", "value": "1234.5",
                   "quantity": 1234.5, "period_start": "2025-03-01T00:00:00Z",
                   "period_end": "2025-04-01T00:00:00Z"})
        );
        assert_eq!(
            data::entitlement_threshold_reached(
                &customer,
                &agreement,
                &feature,
                80,
                1000,
                UsageTotal::parse("800").unwrap(),
                period
            ),
            json!({"customer_id": "customer_1", "agreement_id": "agreement_1",
                   "feature_code": "api_calls", "threshold_percent": 80,
                   "entitlement_limit_max": 1000, "value": "800",
                   "period_start": "2025-03-01T00:00:00Z", "period_end": "2025-04-01T00:00:00Z"})
        );
    }

    #[test]
    fn quantity_is_the_value_as_a_number() {
        let text = |s: &str| {
            serde_json::to_string(&data::quantity(UsageTotal::parse(s).unwrap())).unwrap()
        };
        assert_eq!(text("0"), "0");
        assert_eq!(text("18446744073709551615"), "18446744073709551615");
        assert_eq!(text("1234.5"), "1234.5");
        assert_eq!(text("0.1"), "0.1");
        assert_eq!(text("123456.123456789"), "123456.123456789");
        let v = UsageTotal::from_value(MeterValue::parse("2.5").unwrap());
        assert_eq!(data::quantity(v), json!(2.5));
    }

    #[test]
    fn claims_are_kindes() {
        let event = Event {
            id: EventId::parse("event_0195ac80a14c2ca2cec97d026d864de0").unwrap(),
            event_type: EventType::AgreementCreated,
            created_at: utc("2025-03-18T10:00:00.123456Z"),
            data: json!({"customer_id": "c", "agreement_id": "a", "plan_code": "pro"}),
        };
        let claims = event.claims("https://meter.example.com", utc("2025-03-18T10:00:05Z"));
        assert_eq!(
            claims,
            json!({
                "type": "customer.agreement_created",
                "event_id": "event_0195ac80a14c2ca2cec97d026d864de0",
                "source": "api",
                "timestamp": "2025-03-18T10:00:00.123456Z",
                "event_timestamp": "2025-03-18T10:00:00.123Z",
                "data": {"customer_id": "c", "agreement_id": "a", "plan_code": "pro"},
                "iss": "https://meter.example.com",
                "iat": utc("2025-03-18T10:00:05Z").as_second(),
                "jti": "event_0195ac80a14c2ca2cec97d026d864de0",
            })
        );
        let whole = Event {
            created_at: utc("2025-03-18T10:00:00Z"),
            ..event
        };
        assert_eq!(
            whole.claims("x", utc("2025-03-18T10:00:00Z"))["event_timestamp"],
            "2025-03-18T10:00:00.000Z"
        );
    }

    #[test]
    fn backoff_doubles_from_one_second_to_an_hour() {
        let secs: Vec<i64> = (1..=14).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(
            secs,
            [
                1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600
            ]
        );
        assert_eq!(backoff(0).as_secs(), 1);
        assert_eq!(backoff(u32::MAX).as_secs(), 3600);
    }

    #[test]
    fn retries_stop_after_72_hours() {
        let first = utc("2025-03-18T00:00:00Z");
        assert_eq!(
            next_attempt_at(first, 1, first),
            Some(first + SignedDuration::from_secs(1))
        );
        let late = first + GIVE_UP_AFTER - SignedDuration::from_secs(3600);
        assert_eq!(
            next_attempt_at(first, 20, late),
            Some(first + GIVE_UP_AFTER)
        );
        assert_eq!(
            next_attempt_at(first, 20, late + SignedDuration::from_secs(1)),
            None
        );
    }
}
