//! The OAuth scopes of the API: what a token must carry for each route
//! (`docs/api.md` lists which route needs which).
//!
//! One enum, so that the server's route table, its OpenAPI document, the CLI and
//! the SDK name scopes by value rather than by repeated strings. On the wire (in
//! a token's `scope`/`scp` claims, in serde) a scope is its string, e.g.
//! `"create:meter_usage"`.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! scopes {
    ($($(#[$doc:meta])* $variant:ident => $text:literal,)*) => {
        /// A scope a token may carry.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Scope {
            $($(#[$doc])* $variant,)*
        }

        impl Scope {
            /// Every scope, in documentation order.
            pub const ALL: &'static [Scope] = &[$(Scope::$variant,)*];

            /// The scope as written in tokens, e.g. `"create:meter_usage"`.
            pub const fn as_str(self) -> &'static str {
                match self { $(Scope::$variant => $text,)* }
            }

            /// The scope for a string, `None` for one this crate does not know.
            pub fn parse(text: &str) -> Option<Scope> {
                match text { $($text => Some(Scope::$variant),)* _ => None }
            }
        }
    };
}

scopes! {
    /// Record usage: `POST /api/v1/billing/meter_usage` and its batch form.
    CreateMeterUsage => "create:meter_usage",
    /// Read usage back: `GET /api/v1/billing/meter_usage`.
    ReadMeterUsage => "read:meter_usage",
    /// Create agreements: `POST /api/v1/billing/agreements`.
    CreateBillingAgreements => "create:billing_agreements",
    /// List agreements: `GET /api/v1/billing/agreements`.
    ReadBillingAgreements => "read:billing_agreements",
    /// Entitlements and the usage check: `GET /api/v1/billing/entitlements[/check]`.
    ReadBillingEntitlements => "read:billing_entitlements",
    /// Subscribe a webhook: `POST /api/v1/webhooks`.
    CreateWebhooks => "create:webhooks",
    /// List webhooks: `GET /api/v1/webhooks`.
    ReadWebhooks => "read:webhooks",
    /// Change a webhook: `PATCH /api/v1/webhooks/{id}`.
    UpdateWebhooks => "update:webhooks",
    /// Delete a webhook: `DELETE /api/v1/webhooks/{id}`.
    DeleteWebhooks => "delete:webhooks",
    /// Read an event: `GET /api/v1/events/{event_id}`.
    ReadEvents => "read:events",
    /// List event types: `GET /api/v1/event_types`.
    ReadEventTypes => "read:event_types",
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is no [`Scope`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownScope(pub String);

impl fmt::Display for UnknownScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown scope {}; the scopes are:", self.0)?;
        for scope in Scope::ALL {
            write!(f, " {scope}")?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownScope {}

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(text: &str) -> Result<Scope, UnknownScope> {
        Scope::parse(text).ok_or_else(|| UnknownScope(text.to_owned()))
    }
}

impl AsRef<str> for Scope {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scope, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// In the OpenAPI document a scope is a string with one of the known values.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Scope {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(Scope::ALL.iter().map(|s| s.as_str())))
            .description(Some("An OAuth scope a token carries"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Scope {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_round_trips_as_text_and_json() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(*scope));
            assert_eq!(scope.to_string(), scope.as_str());
            let json = serde_json::to_string(scope).unwrap();
            assert_eq!(json, format!("\"{}\"", scope.as_str()));
            assert_eq!(serde_json::from_str::<Scope>(&json).unwrap(), *scope);
        }
        assert_eq!(Scope::ALL.len(), 11);
    }

    #[test]
    fn an_unknown_scope_is_refused_naming_the_known_ones() {
        let error = "read:meter-usage".parse::<Scope>().unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("unknown scope read:meter-usage;"),
            "{text}"
        );
        assert!(text.contains("create:meter_usage"), "{text}");
        assert!(serde_json::from_str::<Scope>("\"create:everything\"").is_err());
    }
}
