//! [`WebhooksApi`]: subscribing endpoints to events (`/api/v1/webhooks`) and
//! looking events and event types up (`/api/v1/events`, `/api/v1/event_types`).

use kinde_meter_wire::{
    CreateWebHookRequest, CreateWebhookResponse, DeleteWebhookResponse, GetEventResponse,
    GetEventTypesResponse, GetWebhooksResponse, UpdateWebHookRequest, UpdateWebhookResponse,
};

use crate::client::{ApiClient, Call};
use crate::error::{
    CreateWebHookError, DeleteWebHookError, GetEventError, GetEventTypesError, GetWebHooksError,
    InvalidInput, UpdateWebHookError,
};

const WEBHOOKS: &str = "/api/v1/webhooks";
const EVENTS: &str = "/api/v1/events";
const EVENT_TYPES: &str = "/api/v1/event_types";

/// Kinde's `WebhooksApi`: which endpoints receive which events, and the events
/// themselves. The methods carry the official SDKs' names (`create_web_hook`,
/// `get_web_hooks`, …, as Python's `WebhooksApi` and the JavaScript management
/// client's `createWebHook` spell them) and take their request models.
///
/// Scopes: `create:webhooks`, `read:webhooks`, `update:webhooks`,
/// `delete:webhooks`, `read:events`, `read:event_types`. Every delivery is a
/// signed JWT; verify it with `kinde_sdk::webhooks::decode` (feature
/// `webhooks`, on by default).
///
/// ```no_run
/// use kinde_sdk::models::{CreateWebHookRequest, UpdateWebHookRequest};
/// use kinde_sdk::{ApiClient, Configuration, WebhooksApi};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let api = WebhooksApi::new(ApiClient::new(Configuration::from_env()?)?);
/// let created = api
///     .create_web_hook(CreateWebHookRequest {
///         endpoint: "https://billing.example.com/kinde/webhooks".to_owned(),
///         event_types: vec![
///             "customer.agreement_created".to_owned(),
///             "customer.meter_usage_updated".to_owned(),
///         ],
///         name: "billing".to_owned(),
///         description: None,
///     })
///     .await?;
/// let id = created.webhook.map(|webhook| webhook.id).unwrap_or_default();
///
/// for webhook in api.get_web_hooks().await?.webhooks {
///     println!("{} {} -> {} {:?}", webhook.id, webhook.name, webhook.endpoint, webhook.event_types);
/// }
/// api.update_web_hook(
///     &id,
///     UpdateWebHookRequest { name: Some("billing (prod)".to_owned()), ..Default::default() },
/// )
/// .await?;
/// for event_type in api.get_event_types().await?.event_types {
///     println!("{}: {}", event_type.code, event_type.name);
/// }
/// api.delete_web_hook(&id).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct WebhooksApi {
    client: ApiClient,
}

impl WebhooksApi {
    /// The API, over `client`.
    pub fn new(client: ApiClient) -> Self {
        WebhooksApi { client }
    }

    /// The client this API sends through.
    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    /// Subscribes an endpoint to event types: `POST /api/v1/webhooks`
    /// (scope `create:webhooks`). The answer carries the new webhook's id.
    ///
    /// kinde-meter refuses endpoints that are not `http`/`https` URLs, and
    /// loopback, private and link-local addresses unless the server allows them
    /// (`--webhook-allow-private-networks`), with 400 `INVALID_FIELD`.
    ///
    /// Not idempotent (a second call makes a second webhook), so it is retried
    /// only after answers that prove nothing happened (429, 503, no connection).
    ///
    /// # Errors
    ///
    /// See [`CreateWebHookError`].
    #[doc(alias = "create_webhook")]
    pub async fn create_web_hook(
        &self,
        create_web_hook_request: CreateWebHookRequest,
    ) -> Result<CreateWebhookResponse, CreateWebHookError> {
        let call = Call::post_json(WEBHOOKS, &create_web_hook_request)?;
        self.client.execute(&call).await
    }

    /// Lists every webhook, oldest first: `GET /api/v1/webhooks` (scope
    /// `read:webhooks`).
    ///
    /// # Errors
    ///
    /// See [`GetWebHooksError`].
    #[doc(alias = "get_webhooks")]
    pub async fn get_web_hooks(&self) -> Result<GetWebhooksResponse, GetWebHooksError> {
        self.client.execute(&Call::get(WEBHOOKS)).await
    }

    /// Changes a webhook's name, description or event types (the fields set in
    /// the request; the description is cleared with `Some(None)`):
    /// `PATCH /api/v1/webhooks/{webhook_id}` (scope `update:webhooks`).
    ///
    /// # Errors
    ///
    /// See [`UpdateWebHookError`]; kinde-meter answers an unknown id with a
    /// `BadRequest` of code `WEBHOOK_NOT_FOUND`.
    #[doc(alias = "update_webhook")]
    pub async fn update_web_hook(
        &self,
        webhook_id: &str,
        update_web_hook_request: UpdateWebHookRequest,
    ) -> Result<UpdateWebhookResponse, UpdateWebHookError> {
        let call = Call::patch_json(item(WEBHOOKS, webhook_id)?, &update_web_hook_request)?;
        self.client.execute(&call).await
    }

    /// Deletes a webhook; deliveries to it that are still pending are dropped:
    /// `DELETE /api/v1/webhooks/{webhook_id}` (scope `delete:webhooks`).
    ///
    /// # Errors
    ///
    /// See [`DeleteWebHookError`]; kinde-meter answers an unknown id with a
    /// `BadRequest` of code `WEBHOOK_NOT_FOUND`.
    #[doc(alias = "delete_webhook")]
    pub async fn delete_web_hook(
        &self,
        webhook_id: &str,
    ) -> Result<DeleteWebhookResponse, DeleteWebHookError> {
        self.client
            .execute(&Call::delete(item(WEBHOOKS, webhook_id)?))
            .await
    }

    /// Looks an event up by the `event_id` its deliveries carry:
    /// `GET /api/v1/events/{event_id}` (scope `read:events`). The event's
    /// `timestamp` is in Unix seconds.
    ///
    /// # Errors
    ///
    /// See [`GetEventError`]; kinde-meter answers an unknown id with a
    /// `BadRequest` of code `EVENT_NOT_FOUND`.
    pub async fn get_event(&self, event_id: &str) -> Result<GetEventResponse, GetEventError> {
        self.client
            .execute(&Call::get(item(EVENTS, event_id)?))
            .await
    }

    /// Lists the event types a webhook may subscribe to:
    /// `GET /api/v1/event_types` (scope `read:event_types`).
    ///
    /// # Errors
    ///
    /// See [`GetEventTypesError`].
    pub async fn get_event_types(&self) -> Result<GetEventTypesResponse, GetEventTypesError> {
        self.client.execute(&Call::get(EVENT_TYPES)).await
    }
}

/// `collection/segment`, the segment percent-encoded so that an id cannot
/// reach another path (`/`, `?`, `#`); an empty id, `.` or `..` (which URLs
/// resolve, encoded or not) is refused.
fn item(collection: &str, segment: &str) -> Result<String, InvalidInput> {
    if matches!(segment, "" | "." | "..") {
        return Err(InvalidInput(format!("{segment:?} is not an id")));
    }
    let mut path = String::with_capacity(collection.len() + 1 + segment.len());
    path.push_str(collection);
    path.push('/');
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~' | b'.') {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::item;

    #[test]
    fn ids_are_one_path_segment() {
        assert_eq!(
            item(super::WEBHOOKS, "webhook_0195ac80a14c2ca2cec97d026d864de0").unwrap(),
            "/api/v1/webhooks/webhook_0195ac80a14c2ca2cec97d026d864de0"
        );
        assert_eq!(
            item(super::EVENTS, "../x?y#z é").unwrap(),
            "/api/v1/events/..%2Fx%3Fy%23z%20%C3%A9"
        );
        for refused in ["", ".", ".."] {
            assert!(item(super::EVENTS, refused).is_err());
        }
    }
}
