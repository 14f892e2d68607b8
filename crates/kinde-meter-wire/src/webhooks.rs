//! Webhook management shapes: Kinde's `WebhooksApi` (webhooks, events, event
//! types; `docs/webhooks.md#management-api`). Names and fields mirror the
//! official SDKs' models (`CreateWebHookRequest`, `GetWebhooksResponse`,
//! `UpdateWebHookRequest`, `GetEventResponse`, `GetEventTypesResponse`, …).
//!
//! Design: `docs/design.md#wire-types`.

use serde::{Deserialize, Deserializer, Serialize};

/// Kinde's `CreateWebHookRequest` (`POST /api/v1/webhooks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateWebHookRequest {
    /// The URL events are POSTed to (`http` or `https`, at most 2048 bytes), whose
    /// host resolves to public addresses only unless the server allows private
    /// networks.
    #[cfg_attr(
        feature = "openapi",
        schema(
            format = "uri",
            min_length = 1,
            max_length = 2048,
            pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$"
        )
    )]
    pub endpoint: String,
    /// The event types to deliver, e.g. `["customer.agreement_created"]`.
    #[cfg_attr(feature = "openapi", schema(schema_with = openapi::event_types))]
    pub event_types: Vec<String>,
    /// The webhook's name: 1 to 255 characters, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 255,
            pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
        )
    )]
    pub name: String,
    /// A description of at most 1024 characters, or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub description: Option<String>,
}

/// Kinde's `CreateWebhookResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateWebhookResponse {
    /// `"OK"`.
    #[serde(default)]
    pub code: String,
    /// `"Success"`.
    #[serde(default)]
    pub message: String,
    /// The webhook created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<CreateWebhookResponseWebhook>,
}

/// The webhook of a [`CreateWebhookResponse`] (Kinde's
/// `CreateWebhookResponseWebhook`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateWebhookResponseWebhook {
    /// The new webhook's id, e.g. `webhook_0195ac80a14c2ca2cec97d026d864de0`.
    #[serde(default)]
    pub id: String,
    /// Its endpoint, as given.
    #[serde(default)]
    pub endpoint: String,
}

/// Kinde's `GetWebhooksResponse` (`GET /api/v1/webhooks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GetWebhooksResponse {
    /// `"OK"`.
    #[serde(default)]
    pub code: String,
    /// `"Success"`.
    #[serde(default)]
    pub message: String,
    /// Every webhook, oldest first.
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

/// One webhook of a [`GetWebhooksResponse`] (Kinde's `Webhook`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Webhook {
    /// The webhook's id (`webhook_…`).
    #[serde(default)]
    pub id: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// The URL events are POSTed to.
    #[serde(default)]
    pub endpoint: String,
    /// Its description; `null` when it has none.
    #[serde(default)]
    pub description: Option<String>,
    /// The event types it receives.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// When it was created (RFC 3339).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_on: String,
}

/// Kinde's `UpdateWebHookRequest` (`PATCH /api/v1/webhooks/{webhook_id}`): only
/// the fields present change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateWebHookRequest {
    /// The new set of event types, replacing the old one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = openapi::optional_event_types))]
    pub event_types: Option<Vec<String>>,
    /// The new name: 1 to 255 characters, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 255,
            pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"
        )
    )]
    pub name: Option<String>,
    /// The new description: absent (`None`) leaves it, `null` (`Some(None)`)
    /// clears it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, max_length = 1024))]
    pub description: Option<Option<String>>,
    /// kinde-meter (not in Kinde's model): a new endpoint, checked as on create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            format = "uri",
            min_length = 1,
            max_length = 2048,
            pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$"
        )
    )]
    pub endpoint: Option<String>,
}

/// Kinde's `UpdateWebhookResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateWebhookResponse {
    /// `"Success"`.
    #[serde(default)]
    pub message: String,
    /// `"OK"`.
    #[serde(default)]
    pub code: String,
    /// The webhook updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<UpdateWebhookResponseWebhook>,
}

/// The webhook of an [`UpdateWebhookResponse`] (Kinde's
/// `UpdateWebhookResponseWebhook`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateWebhookResponseWebhook {
    /// The webhook's id.
    #[serde(default)]
    pub id: String,
}

/// Kinde's `DeleteWebhookResponse` (`DELETE /api/v1/webhooks/{webhook_id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeleteWebhookResponse {
    /// `"OK"`.
    #[serde(default)]
    pub code: String,
    /// `"Success"`.
    #[serde(default)]
    pub message: String,
}

/// Kinde's `GetEventResponse` (`GET /api/v1/events/{event_id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GetEventResponse {
    /// `"OK"`.
    #[serde(default)]
    pub code: String,
    /// `"Success"`.
    #[serde(default)]
    pub message: String,
    /// The event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<GetEventResponseEvent>,
}

/// The event of a [`GetEventResponse`] (Kinde's `GetEventResponseEvent`): the
/// claims a delivery carries, less the JWT's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GetEventResponseEvent {
    /// The event type, e.g. `customer.agreement_created`.
    #[serde(rename = "type", default)]
    pub event_type: String,
    /// Where it came from: `"api"`.
    #[serde(default)]
    pub source: String,
    /// The event's id (`event_…`), the `event_id` of its deliveries.
    #[serde(default)]
    pub event_id: String,
    /// When it happened, in Unix seconds (an integer, as the SDKs' model types it).
    #[serde(default)]
    pub timestamp: i64,
    /// The event's data (always `customer_id` and `agreement_id`, more per type).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: serde_json::Value,
}

/// Kinde's `GetEventTypesResponse` (`GET /api/v1/event_types`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GetEventTypesResponse {
    /// `"OK"`.
    #[serde(default)]
    pub code: String,
    /// `"Success"`.
    #[serde(default)]
    pub message: String,
    /// The event types a webhook may subscribe to.
    #[serde(default)]
    pub event_types: Vec<EventType>,
}

/// One event type of a [`GetEventTypesResponse`] (Kinde's `EventType`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventType {
    /// A stable id of the type.
    #[serde(default)]
    pub id: String,
    /// The type's code, the value of `event_types` and of an event's `type`, e.g.
    /// `customer.meter_usage_updated`.
    #[serde(default)]
    pub code: String,
    /// A human name.
    #[serde(default)]
    pub name: String,
    /// What raises it, e.g. `"billing"`.
    #[serde(default)]
    pub origin: String,
    /// A JSON schema of the event's `data`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub schema: serde_json::Value,
}

/// Schemas the derive cannot state.
#[cfg(feature = "openapi")]
mod openapi {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};

    /// The event types a webhook may subscribe to (the server's tests keep
    /// this list equal to its own).
    const EVENT_TYPES: [&str; 6] = [
        "customer.agreement_created",
        "customer.plan_assigned",
        "customer.plan_changed",
        "customer.agreement_cancelled",
        "customer.meter_usage_updated",
        "customer.entitlement_threshold_reached",
    ];

    fn array(nullable: bool) -> utoipa::openapi::schema::Array {
        let schema_type = if nullable {
            SchemaType::from_iter([Type::Array, Type::Null])
        } else {
            SchemaType::new(Type::Array)
        };
        ArrayBuilder::new()
            .schema_type(schema_type)
            .items(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(EVENT_TYPES)),
            )
            .min_items(Some(1))
            .build()
    }

    /// `event_types` of a new webhook: at least one known type.
    pub fn event_types() -> utoipa::openapi::schema::Array {
        array(false)
    }

    /// `event_types` of an update: absent, null or at least one known type.
    pub fn optional_event_types() -> utoipa::openapi::schema::Array {
        array(true)
    }
}

/// Reads a field that is present (possibly `null`) as `Some(_)`; with
/// `#[serde(default)]` an absent one stays `None`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_request_tells_absent_from_null_description() {
        let absent: UpdateWebHookRequest = serde_json::from_str(r#"{"name":"n"}"#).unwrap();
        assert_eq!(absent.description, None);
        assert_eq!(absent.name.as_deref(), Some("n"));
        let null: UpdateWebHookRequest = serde_json::from_str(r#"{"description":null}"#).unwrap();
        assert_eq!(null.description, Some(None));
        let set: UpdateWebHookRequest = serde_json::from_str(r#"{"description":"d"}"#).unwrap();
        assert_eq!(set.description, Some(Some("d".to_owned())));
        assert_eq!(
            serde_json::to_string(&null).unwrap(),
            r#"{"description":null}"#
        );
        assert_eq!(serde_json::to_string(&absent).unwrap(), r#"{"name":"n"}"#);
    }

    #[test]
    fn event_reads_kinde_shape() {
        let body = r#"{"code":"OK","message":"Success","event":{"type":"customer.agreement_created",
            "source":"api","event_id":"event_0195","timestamp":1700000000,
            "data":{"customer_id":"c","agreement_id":"a","plan_code":"p"}}}"#;
        let r: GetEventResponse = serde_json::from_str(body).unwrap();
        let e = r.event.unwrap();
        assert_eq!(e.event_type, "customer.agreement_created");
        assert_eq!(e.timestamp, 1_700_000_000);
        assert_eq!(e.data["plan_code"], "p");
        assert!(serde_json::to_string(&e).unwrap().contains(r#""type":"#));
    }

    #[test]
    fn create_request_requires_kinde_fields() {
        assert!(serde_json::from_str::<CreateWebHookRequest>(r#"{"endpoint":"x"}"#).is_err());
        let r: CreateWebHookRequest =
            serde_json::from_str(r#"{"endpoint":"e","event_types":["t"],"name":"n"}"#).unwrap();
        assert_eq!(r.description, None);
    }
}
