//! Entitlement shapes: Kinde's `GetBillingEntitlementsResponse` (fields as in
//! the official SDKs' models, `…EntitlementsInner` and `…PlansInner`) and
//! kinde-meter's usage check (`docs/entitlements.md`).
//!
//! Design: `docs/design.md#wire-types`.

use serde::{Deserialize, Serialize};

use crate::{MeterValue, UsageTotal};

/// Kinde's `GetBillingEntitlementsResponse`: a customer's entitlements, one per
/// feature of the active agreement's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GetBillingEntitlementsResponse {
    /// `"OK"`.
    #[serde(default)]
    pub code: String,
    /// `"Success"`.
    #[serde(default)]
    pub message: String,
    /// Whether more entitlements follow this page.
    #[serde(default)]
    pub has_more: bool,
    /// The page, in the catalog's order of the plan's features.
    #[serde(default)]
    pub entitlements: Vec<Entitlement>,
    /// The active agreement's plan; present only with `expand=plans`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plans: Option<Vec<EntitlementPlan>>,
}

/// One entitlement of [`GetBillingEntitlementsResponse`] (Kinde's
/// `GetBillingEntitlementsResponseEntitlementsInner`), with kinde-meter's usage
/// fields on metered features.
///
/// Kinde's integer fields are always written, `null` when the catalog leaves them
/// out, never a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Entitlement {
    /// The entitlement id, e.g. `entitlement_0195ac80a14c2ca2cec97d026d864de0`: the
    /// `entitlement_id` the agreements listing shows for the feature.
    pub id: String,
    /// Fixed charge in cents, or null.
    pub fixed_charge: Option<i64>,
    /// The price's name (the feature's name unless the catalog names it).
    pub price_name: Option<String>,
    /// Price per unit in cents, or null.
    pub unit_amount: Option<i64>,
    /// The feature's code.
    pub feature_code: String,
    /// The feature's name.
    pub feature_name: String,
    /// The most units the customer is entitled to per period; null when unlimited
    /// (unless the request's `max_value` stands in).
    pub entitlement_limit_max: Option<i64>,
    /// The least units, or null.
    pub entitlement_limit_min: Option<i64>,
    /// kinde-meter: the current period's usage, a JSON number written exactly as
    /// the canonical decimal. Only on metered features.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "json_number::optional"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, example = 1523.5))]
    pub consumed: Option<UsageTotal>,
    /// kinde-meter: `entitlement_limit_max − consumed`, at least 0, exact; `null`
    /// (`Some(None)`) when unlimited. Only on metered features (absent: `None`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "json_number::nullable"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, example = 998476.5))]
    pub remaining: Option<Option<UsageTotal>>,
    /// kinde-meter: start of the current billing period (RFC 3339). Only on
    /// metered features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub current_period_start: Option<String>,
    /// kinde-meter: end of the current billing period (RFC 3339). Only on metered
    /// features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub current_period_end: Option<String>,
}

/// A plan of [`GetBillingEntitlementsResponse`] (Kinde's
/// `GetBillingEntitlementsResponsePlansInner`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EntitlementPlan {
    /// The plan's code.
    pub code: String,
    /// When the customer's agreement on it started (RFC 3339).
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub subscribed_on: Option<String>,
}

/// kinde-meter's usage check (not in Kinde): may the customer use `quantity` more
/// of `feature_code` now? Decimals are strings here, as `meter_value` is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckBillingEntitlementResponse {
    /// `"OK"`.
    #[serde(default)]
    pub code: String,
    /// `"Success"`.
    #[serde(default)]
    pub message: String,
    /// Whether the feature is on the customer's active plan and, for a metered
    /// feature with a limit, `consumed + quantity ≤ entitlement_limit_max`.
    pub allowed: bool,
    /// The feature asked about.
    pub feature_code: String,
    /// The limit; null when unlimited or not on the plan.
    pub entitlement_limit_max: Option<i64>,
    /// The current period's usage, e.g. `"1523.5"`.
    #[serde(with = "decimal_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "1523.5"))]
    pub consumed: UsageTotal,
    /// `entitlement_limit_max − consumed`, at least 0; null when unlimited.
    #[serde(with = "decimal_string::nullable")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "998476.5"))]
    pub remaining: Option<UsageTotal>,
    /// The quantity asked about (default `"1"`).
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "1"))]
    pub quantity: MeterValue,
    /// End of the current billing period (RFC 3339); null without an active
    /// agreement.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub current_period_end: Option<String>,
}

/// A [`UsageTotal`] as a JSON number written exactly as its canonical decimal
/// (`1523.5`, never `1.5235e3`). Reading accepts a plain decimal number or, for
/// leniency, a decimal string.
mod json_number {
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::value::RawValue;

    use crate::UsageTotal;

    fn write<S: Serializer>(total: &UsageTotal, serializer: S) -> Result<S::Ok, S::Error> {
        RawValue::from_string(total.to_string())
            .map_err(S::Error::custom)?
            .serialize(serializer)
    }

    fn read<E: serde::de::Error>(raw: &RawValue) -> Result<UsageTotal, E> {
        let text = raw.get();
        let number = match serde_json::from_str::<String>(text) {
            Ok(string) => string,
            Err(_) => text.to_owned(),
        };
        UsageTotal::parse(&number).map_err(|_| {
            E::custom(format!(
                "expected a non-negative decimal usage total, found {text}"
            ))
        })
    }

    /// `Option<UsageTotal>`, omitted when `None` (with `skip_serializing_if`).
    pub mod optional {
        use super::*;

        pub fn serialize<S: Serializer>(
            total: &Option<UsageTotal>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match total {
                Some(total) => write(total, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<UsageTotal>, D::Error> {
            Option::<Box<RawValue>>::deserialize(deserializer)?
                .map(|raw| read(&raw))
                .transpose()
        }
    }

    /// `Option<Option<UsageTotal>>`: `None` omitted (with `skip_serializing_if`),
    /// `Some(None)` written as `null`.
    pub mod nullable {
        use super::*;

        pub fn serialize<S: Serializer>(
            total: &Option<Option<UsageTotal>>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match total {
                Some(Some(total)) => write(total, serializer),
                Some(None) | None => serializer.serialize_none(),
            }
        }

        /// Called only when the field is present (`default` covers absence).
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Option<UsageTotal>>, D::Error> {
            super::optional::deserialize(deserializer).map(Some)
        }
    }
}

/// A [`UsageTotal`] as its canonical decimal string (`"1523.5"`).
mod decimal_string {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::UsageTotal;

    fn parse<E: serde::de::Error>(text: &str) -> Result<UsageTotal, E> {
        UsageTotal::parse(text).map_err(|_| {
            E::custom(format!(
                "expected a non-negative decimal usage total, found {text:?}"
            ))
        })
    }

    pub fn serialize<S: Serializer>(total: &UsageTotal, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(total)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<UsageTotal, D::Error> {
        parse(&String::deserialize(deserializer)?)
    }

    /// `Option<UsageTotal>`, `None` written as `null`.
    pub mod nullable {
        use super::*;

        pub fn serialize<S: Serializer>(
            total: &Option<UsageTotal>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match total {
                Some(total) => serializer.collect_str(total),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<UsageTotal>, D::Error> {
            Option::<String>::deserialize(deserializer)?
                .map(|text| parse(&text))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn total(s: &str) -> UsageTotal {
        UsageTotal::parse(s).unwrap()
    }

    fn api_calls() -> Entitlement {
        Entitlement {
            id: "entitlement_0195ac80a14c2ca2cec97d026d864de0".to_owned(),
            fixed_charge: None,
            price_name: Some("API calls".to_owned()),
            unit_amount: Some(2),
            feature_code: "api_calls".to_owned(),
            feature_name: "API calls".to_owned(),
            entitlement_limit_max: Some(1_000_000),
            entitlement_limit_min: Some(0),
            consumed: Some(total("1523.5")),
            remaining: Some(Some(total("998476.5"))),
            current_period_start: Some("2026-12-01T00:00:00Z".to_owned()),
            current_period_end: Some("2027-01-01T00:00:00Z".to_owned()),
        }
    }

    fn sso() -> Entitlement {
        Entitlement {
            id: "entitlement_0195ac80a14c2ca2cec97d026d864de1".to_owned(),
            fixed_charge: Some(1500),
            price_name: Some("Single sign-on".to_owned()),
            unit_amount: None,
            feature_code: "sso".to_owned(),
            feature_name: "Single sign-on".to_owned(),
            entitlement_limit_max: None,
            entitlement_limit_min: None,
            consumed: None,
            remaining: None,
            current_period_start: None,
            current_period_end: None,
        }
    }

    fn round_trip<T>(value: &T) -> String
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let text = serde_json::to_string(value).unwrap();
        let back: T = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, value, "{text}");
        text
    }

    #[test]
    fn entitlements_are_written_as_kinde_and_the_sdk_read_them() {
        let response = GetBillingEntitlementsResponse {
            code: "OK".to_owned(),
            message: "Success".to_owned(),
            has_more: false,
            entitlements: vec![api_calls(), sso()],
            plans: Some(vec![EntitlementPlan {
                code: "pro".to_owned(),
                subscribed_on: Some("2026-12-06T06:37:55Z".to_owned()),
            }]),
        };
        let text = round_trip(&response);
        assert_eq!(
            text,
            concat!(
                r#"{"code":"OK","message":"Success","has_more":false,"entitlements":["#,
                r#"{"id":"entitlement_0195ac80a14c2ca2cec97d026d864de0","fixed_charge":null,"price_name":"API calls","unit_amount":2,"#,
                r#""feature_code":"api_calls","feature_name":"API calls","entitlement_limit_max":1000000,"entitlement_limit_min":0,"#,
                r#""consumed":1523.5,"remaining":998476.5,"current_period_start":"2026-12-01T00:00:00Z","current_period_end":"2027-01-01T00:00:00Z"},"#,
                r#"{"id":"entitlement_0195ac80a14c2ca2cec97d026d864de1","fixed_charge":1500,"price_name":"Single sign-on","unit_amount":null,"#,
                r#""feature_code":"sso","feature_name":"Single sign-on","entitlement_limit_max":null,"entitlement_limit_min":null}],"#,
                r#""plans":[{"code":"pro","subscribed_on":"2026-12-06T06:37:55Z"}]}"#
            )
        );

        let without_plans = GetBillingEntitlementsResponse {
            plans: None,
            entitlements: Vec::new(),
            ..response
        };
        let text = round_trip(&without_plans);
        assert!(!text.contains("plans"), "{text}");
    }

    #[test]
    fn usage_is_an_exact_json_number_and_unlimited_is_null() {
        let big = Entitlement {
            consumed: Some(UsageTotal::MAX),
            remaining: Some(None),
            entitlement_limit_max: None,
            ..api_calls()
        };
        let text = round_trip(&big);
        assert!(
            text.contains(r#""consumed":1000000000000000000000000000,"remaining":null"#),
            "{text}"
        );
        let tiny = Entitlement {
            consumed: Some(total("123456789012345678901234567.000000001")),
            remaining: Some(Some(total("0.1"))),
            ..api_calls()
        };
        let text = round_trip(&tiny);
        assert!(
            text.contains(r#""consumed":123456789012345678901234567.000000001,"remaining":0.1"#),
            "{text}"
        );
    }

    #[test]
    fn reading_is_lenient_on_absent_fields_and_strict_on_numbers() {
        let e: Entitlement = serde_json::from_value(json!({
            "id": "entitlement_x", "feature_code": "sso", "feature_name": "SSO"
        }))
        .unwrap();
        assert_eq!(
            (e.fixed_charge, e.consumed, e.remaining),
            (None, None, None)
        );
        let e: Entitlement = serde_json::from_str(
            r#"{"id":"e","feature_code":"f","feature_name":"F","consumed":"2.5","remaining":null}"#,
        )
        .unwrap();
        assert_eq!((e.consumed, e.remaining), (Some(total("2.5")), Some(None)));
        for bad in [r#"-1"#, r#"1e3"#, r#"true"#, r#""x""#] {
            let text =
                format!(r#"{{"id":"e","feature_code":"f","feature_name":"F","consumed":{bad}}}"#);
            assert!(serde_json::from_str::<Entitlement>(&text).is_err(), "{bad}");
        }
        // Kinde's integers are integers.
        let text = r#"{"id":"e","feature_code":"f","feature_name":"F","unit_amount":2.5}"#;
        assert!(serde_json::from_str::<Entitlement>(text).is_err());
    }

    #[test]
    fn the_check_answer_writes_decimals_as_strings() {
        let answer = CheckBillingEntitlementResponse {
            code: "OK".to_owned(),
            message: "Success".to_owned(),
            allowed: true,
            feature_code: "api_calls".to_owned(),
            entitlement_limit_max: Some(1_000_000),
            consumed: total("1523.5"),
            remaining: Some(total("998476.5")),
            quantity: MeterValue::parse("1").unwrap(),
            current_period_end: Some("2027-01-01T00:00:00Z".to_owned()),
        };
        assert_eq!(
            round_trip(&answer),
            concat!(
                r#"{"code":"OK","message":"Success","allowed":true,"feature_code":"api_calls","#,
                r#""entitlement_limit_max":1000000,"consumed":"1523.5","remaining":"998476.5","#,
                r#""quantity":"1","current_period_end":"2027-01-01T00:00:00Z"}"#
            )
        );
        let denied = CheckBillingEntitlementResponse {
            allowed: false,
            entitlement_limit_max: None,
            consumed: UsageTotal::ZERO,
            remaining: Some(UsageTotal::ZERO),
            current_period_end: None,
            ..answer
        };
        let text = round_trip(&denied);
        assert!(
            text.contains(r#""entitlement_limit_max":null,"consumed":"0","remaining":"0""#),
            "{text}"
        );
        assert!(text.ends_with(r#""current_period_end":null}"#), "{text}");
        let unlimited = CheckBillingEntitlementResponse {
            remaining: None,
            ..denied
        };
        assert!(round_trip(&unlimited).contains(r#""remaining":null"#));
    }
}

#[cfg(all(test, feature = "openapi"))]
mod schema_tests {
    use utoipa::PartialSchema;

    #[test]
    fn usage_is_a_number_in_the_listing_and_a_string_in_the_check() {
        let listing = serde_json::to_value(super::Entitlement::schema()).unwrap();
        let props = &listing["properties"];
        assert_eq!(
            props["consumed"]["type"],
            serde_json::json!(["number", "null"])
        );
        assert_eq!(
            props["remaining"]["type"],
            serde_json::json!(["number", "null"])
        );
        assert_eq!(
            props["fixed_charge"]["type"],
            serde_json::json!(["integer", "null"])
        );
        let check = serde_json::to_value(super::CheckBillingEntitlementResponse::schema()).unwrap();
        let props = &check["properties"];
        assert_eq!(props["consumed"]["type"], "string");
        assert_eq!(
            props["remaining"]["type"],
            serde_json::json!(["string", "null"])
        );
        assert_eq!(props["quantity"]["type"], "string");
    }
}
