//! Kinde's webhooks management API (`WebhooksApi`): webhooks, events and event
//! types (`docs/webhooks.md#management-api`), in the shapes the official SDKs'
//! models read. Unknown ids are 400 `WEBHOOK_NOT_FOUND` / `EVENT_NOT_FOUND`:
//! those SDKs declare no 404 for these operations, only 400 `ErrorResponse`s.

use axum::{
    Json,
    extract::{Path, State},
};
use kinde_meter_core::{
    ErrorCode,
    request::FieldError,
    webhook::{EventId, EventType, WebhookId},
};
use kinde_meter_store::{NewWebhook, Webhook, WebhookPatch};
use kinde_meter_wire::{
    CreateWebHookRequest, CreateWebhookResponse, CreateWebhookResponseWebhook,
    DeleteWebhookResponse, ErrorResponse, GetEventResponse, GetEventResponseEvent,
    GetEventTypesResponse, GetWebhooksResponse, OK_CODE, SUCCESS_MESSAGE, UpdateWebHookRequest,
    UpdateWebhookResponse, UpdateWebhookResponseWebhook,
};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;
use crate::webhooks::endpoint::EndpointCheck;

/// The longest webhook name, in characters.
pub const MAX_NAME_CHARS: usize = 255;
/// The longest webhook description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;

/// The `source` of every event: changes made through the API.
pub const EVENT_SOURCE: &str = "api";

/// What raises the events of [`EventType`], as GET /event_types names it.
pub const EVENT_ORIGIN: &str = "billing";

/// Subscribe a webhook to event types (Kinde's `CreateWebHook`). The endpoint
/// must be an `http`/`https` URL whose host resolves to public addresses only
/// (unless the server runs with `--webhook-allow-private-networks`).
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    tag = "Webhooks",
    operation_id = "CreateWebHook",
    request_body = CreateWebHookRequest,
    responses(
        (status = 200, description = "Webhook successfully created", body = CreateWebhookResponse),
        (status = 400, description = "Invalid request (a field, an unknown event type, a refused endpoint)", body = ErrorResponse),
    ),
)]
pub async fn create_web_hook(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<CreateWebhookResponse>, ApiError> {
    let NewWebhookFields {
        endpoint,
        event_types,
        name,
        description,
    } = new_webhook_fields(body, &state.webhook_endpoints)
        .await
        .map_err(ApiError::fields)?;
    let webhook = state
        .store
        .create_webhook(NewWebhook {
            name,
            endpoint,
            description,
            event_types,
            now: state.clock.now(),
            id_random: rand::random(),
        })
        .await?;
    tracing::info!(webhook = %webhook.id, "webhook created");
    Ok(Json(CreateWebhookResponse {
        code: OK_CODE.to_owned(),
        message: SUCCESS_MESSAGE.to_owned(),
        webhook: Some(CreateWebhookResponseWebhook {
            id: webhook.id.to_string(),
            endpoint: webhook.endpoint,
        }),
    }))
}

/// Every webhook, oldest first (Kinde's `GetWebHooks`).
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    tag = "Webhooks",
    operation_id = "GetWebHooks",
    responses(
        (status = 200, description = "Webhook list successfully returned", body = GetWebhooksResponse),
    ),
)]
pub async fn get_web_hooks(
    State(state): State<AppState>,
) -> Result<Json<GetWebhooksResponse>, ApiError> {
    let webhooks = state.store.list_webhooks().await?;
    Ok(Json(GetWebhooksResponse {
        code: OK_CODE.to_owned(),
        message: SUCCESS_MESSAGE.to_owned(),
        webhooks: webhooks.iter().map(|s| view(&s.webhook)).collect(),
    }))
}

/// Change a webhook's name, description or event types (Kinde's
/// `UpdateWebHook`); only the fields present change, `"description": null`
/// clears it. `endpoint` (not in Kinde) is accepted and checked as on create.
#[utoipa::path(
    patch,
    path = "/api/v1/webhooks/{webhook_id}",
    tag = "Webhooks",
    operation_id = "UpdateWebHook",
    params(("webhook_id" = String, Path, pattern = "^webhook_[0-9a-f]{32}$", description = "The webhook id")),
    request_body = UpdateWebHookRequest,
    responses(
        (status = 200, description = "Webhook successfully updated", body = UpdateWebhookResponse),
        (status = 400, description = "Invalid request or unknown webhook (WEBHOOK_NOT_FOUND)", body = ErrorResponse),
    ),
)]
pub async fn update_web_hook(
    State(state): State<AppState>,
    Path(webhook_id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<UpdateWebhookResponse>, ApiError> {
    let object = object(body).map_err(|e| ApiError::fields(vec![e]))?;
    let mut fields = Fields::default();
    let event_types = fields.event_types(&object, false);
    let name = fields.name(&object, false);
    let description = fields.description(&object);
    let endpoint = match object.get("endpoint") {
        None | Some(Value::Null) => None,
        Some(_) => fields.required_text(&object, "endpoint"),
    };
    if let Some(endpoint) = &endpoint {
        fields.endpoint(&state.webhook_endpoints, endpoint).await;
    }
    fields.finish()?;
    let id = webhook_id_of(webhook_id)?;
    let patch = WebhookPatch {
        name,
        description,
        event_types,
        endpoint,
    };
    let Some(webhook) = state.store.update_webhook(&id, patch).await? else {
        return Err(webhook_not_found(&id));
    };
    tracing::info!(webhook = %webhook.id, "webhook updated");
    Ok(Json(UpdateWebhookResponse {
        message: SUCCESS_MESSAGE.to_owned(),
        code: OK_CODE.to_owned(),
        webhook: Some(UpdateWebhookResponseWebhook {
            id: webhook.id.to_string(),
        }),
    }))
}

/// Delete a webhook; its pending deliveries are dropped (Kinde's `DeleteWebHook`).
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{webhook_id}",
    tag = "Webhooks",
    operation_id = "DeleteWebHook",
    params(("webhook_id" = String, Path, pattern = "^webhook_[0-9a-f]{32}$", description = "The webhook id")),
    responses(
        (status = 200, description = "Webhook successfully deleted", body = DeleteWebhookResponse),
        (status = 400, description = "Unknown webhook (WEBHOOK_NOT_FOUND)", body = ErrorResponse),
    ),
)]
pub async fn delete_web_hook(
    State(state): State<AppState>,
    Path(webhook_id): Path<String>,
) -> Result<Json<DeleteWebhookResponse>, ApiError> {
    let id = webhook_id_of(webhook_id)?;
    if !state.store.delete_webhook(&id).await? {
        return Err(webhook_not_found(&id));
    }
    tracing::info!(webhook = %id, "webhook deleted");
    Ok(Json(DeleteWebhookResponse {
        code: OK_CODE.to_owned(),
        message: SUCCESS_MESSAGE.to_owned(),
    }))
}

/// One event by id, as its deliveries carry it, with `timestamp` in Unix
/// seconds (Kinde's `GetEvent`).
#[utoipa::path(
    get,
    path = "/api/v1/events/{event_id}",
    tag = "Webhooks",
    operation_id = "GetEvent",
    params(("event_id" = String, Path, pattern = "^event_[0-9a-f]{32}$", description = "The event id")),
    responses(
        (status = 200, description = "Event successfully retrieved", body = GetEventResponse),
        (status = 400, description = "Unknown event (EVENT_NOT_FOUND)", body = ErrorResponse),
    ),
)]
pub async fn get_event(
    State(state): State<AppState>,
    Path(event_id): Path<String>,
) -> Result<Json<GetEventResponse>, ApiError> {
    let not_found =
        || ApiError::bad_request(ErrorCode::EventNotFound, "event_id: no event has this id");
    let id = EventId::parse(event_id).map_err(|_| not_found())?;
    let Some(event) = state.store.event(&id).await? else {
        return Err(not_found());
    };
    Ok(Json(GetEventResponse {
        code: OK_CODE.to_owned(),
        message: SUCCESS_MESSAGE.to_owned(),
        event: Some(GetEventResponseEvent {
            event_type: event.event_type.as_str().to_owned(),
            source: EVENT_SOURCE.to_owned(),
            event_id: event.id.to_string(),
            timestamp: event.created_at.as_second(),
            data: event.data,
        }),
    }))
}

/// The event types a webhook may subscribe to, each with a JSON schema of
/// its `data` (Kinde's `GetEventTypes`).
#[utoipa::path(
    get,
    path = "/api/v1/event_types",
    tag = "Webhooks",
    operation_id = "GetEventTypes",
    responses(
        (status = 200, description = "Event types successfully retrieved", body = GetEventTypesResponse),
    ),
)]
pub async fn get_event_types() -> Json<GetEventTypesResponse> {
    Json(GetEventTypesResponse {
        code: OK_CODE.to_owned(),
        message: SUCCESS_MESSAGE.to_owned(),
        event_types: EventType::ALL
            .into_iter()
            .map(|t| kinde_meter_wire::EventType {
                id: t.as_str().to_owned(),
                code: t.as_str().to_owned(),
                name: t.name().to_owned(),
                origin: EVENT_ORIGIN.to_owned(),
                schema: data_schema(t),
            })
            .collect(),
    })
}

/// The fields of a valid `CreateWebHookRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhookFields {
    /// The endpoint, as given (it passed [`EndpointCheck::check`]).
    pub endpoint: String,
    /// The event types, each once.
    pub event_types: Vec<EventType>,
    /// The name.
    pub name: String,
    /// The description.
    pub description: Option<String>,
}

/// Reads a `CreateWebHookRequest` body as the API does, every problem listed
/// (`INVALID_JSON`, `MISSING_FIELD`, `INVALID_FIELD` naming the field); the
/// CLI applies the same rules to a data directory.
pub async fn new_webhook_fields(
    body: Value,
    endpoints: &EndpointCheck,
) -> Result<NewWebhookFields, Vec<FieldError>> {
    let object = object(body).map_err(|e| vec![e])?;
    let mut fields = Fields::default();
    let endpoint = fields.required_text(&object, "endpoint");
    if let Some(endpoint) = &endpoint {
        fields.endpoint(endpoints, endpoint).await;
    }
    let event_types = fields.event_types(&object, true);
    let name = fields.name(&object, true);
    let description = fields.description(&object).flatten();
    match (fields.problems.is_empty(), endpoint, event_types, name) {
        (true, Some(endpoint), Some(event_types), Some(name)) => Ok(NewWebhookFields {
            endpoint,
            event_types,
            name,
            description,
        }),
        _ => Err(fields.problems),
    }
}

/// A webhook as Kinde's `Webhook` model has it.
pub fn view(webhook: &Webhook) -> kinde_meter_wire::Webhook {
    kinde_meter_wire::Webhook {
        id: webhook.id.to_string(),
        name: webhook.name.clone(),
        endpoint: webhook.endpoint.clone(),
        description: webhook.description.clone(),
        event_types: webhook
            .event_types
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect(),
        created_on: webhook.created_on.to_string(),
    }
}

/// A JSON schema of the `data` of events of type `event_type`
/// (`docs/webhooks.md#event-types`).
pub fn data_schema(event_type: EventType) -> Value {
    let text = json!({"type": "string"});
    let instant = json!({"type": "string", "format": "date-time"});
    let decimal = json!({"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"});
    let mut properties = Map::new();
    properties.insert("customer_id".into(), text.clone());
    properties.insert("agreement_id".into(), text.clone());
    let more: Vec<(&str, Value)> = match event_type {
        EventType::AgreementCreated | EventType::PlanAssigned => vec![("plan_code", text)],
        EventType::PlanChanged => vec![
            ("plan_code", text.clone()),
            ("previous_plan_code", text.clone()),
            ("previous_agreement_id", text),
        ],
        EventType::AgreementCancelled => vec![("plan_code", text), ("expires_on", instant)],
        EventType::MeterUsageUpdated => vec![
            ("feature_code", text.clone()),
            ("meter_id", text),
            ("value", decimal),
            ("quantity", json!({"type": "number"})),
            ("period_start", instant.clone()),
            ("period_end", instant),
        ],
        EventType::EntitlementThresholdReached => vec![
            ("feature_code", text),
            ("threshold_percent", json!({"type": "integer"})),
            ("entitlement_limit_max", json!({"type": "integer"})),
            ("value", decimal),
            ("period_start", instant.clone()),
            ("period_end", instant),
        ],
    };
    properties.extend(more.into_iter().map(|(k, v)| (k.to_owned(), v)));
    let required: Vec<&String> = properties.keys().collect();
    json!({
        "type": "object",
        "description": event_type.description(),
        "required": required,
        "properties": properties,
    })
}

fn object(body: Value) -> Result<Map<String, Value>, FieldError> {
    match body {
        Value::Object(object) => Ok(object),
        _ => Err(FieldError::new(
            ErrorCode::InvalidJson,
            "the body must be a JSON object",
        )),
    }
}

/// A path's webhook id; one that could never be an id names no webhook.
fn webhook_id_of(text: String) -> Result<WebhookId, ApiError> {
    WebhookId::parse(text.clone()).map_err(|_| {
        ApiError::bad_request(
            ErrorCode::WebhookNotFound,
            format!("webhook_id: no webhook has the id {}", printable(&text)),
        )
    })
}

fn webhook_not_found(id: &WebhookId) -> ApiError {
    ApiError::bad_request(
        ErrorCode::WebhookNotFound,
        format!("webhook_id: no webhook has the id {id}"),
    )
}

/// `text` shortened and stripped of control characters, for a message.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(80).collect()
}

/// The fields of a request body, with every problem found collected so that
/// the answer lists them all.
#[derive(Default)]
struct Fields {
    problems: Vec<FieldError>,
}

impl Fields {
    fn problem(&mut self, code: ErrorCode, message: impl Into<String>) {
        self.problems.push(FieldError::new(code, message.into()));
    }

    /// A string that must be present and not empty.
    fn required_text(&mut self, object: &Map<String, Value>, field: &str) -> Option<String> {
        match object.get(field) {
            None | Some(Value::Null) => {
                self.problem(ErrorCode::MissingField, format!("{field} is required"));
                None
            }
            Some(Value::String(s)) if s.is_empty() => {
                self.problem(
                    ErrorCode::MissingField,
                    format!("{field} must not be empty"),
                );
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.problem(ErrorCode::InvalidField, format!("{field} must be a string"));
                None
            }
        }
    }

    /// `name`: required on create; 1 to 255 characters, no control characters.
    fn name(&mut self, object: &Map<String, Value>, required: bool) -> Option<String> {
        if !required && matches!(object.get("name"), None | Some(Value::Null)) {
            return None;
        }
        let name = self.required_text(object, "name")?;
        if name.chars().count() > MAX_NAME_CHARS {
            self.problem(
                ErrorCode::InvalidField,
                format!("name must be at most {MAX_NAME_CHARS} characters"),
            );
            return None;
        }
        if name.chars().any(char::is_control) {
            self.problem(
                ErrorCode::InvalidField,
                "name must not contain control characters",
            );
            return None;
        }
        Some(name)
    }

    /// `description`: absent (`None`), `null` (`Some(None)`) or a string of at
    /// most 1024 characters.
    fn description(&mut self, object: &Map<String, Value>) -> Option<Option<String>> {
        match object.get("description") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(s)) if s.chars().count() > MAX_DESCRIPTION_CHARS => {
                self.problem(
                    ErrorCode::InvalidField,
                    format!("description must be at most {MAX_DESCRIPTION_CHARS} characters"),
                );
                None
            }
            Some(Value::String(s)) => Some(Some(s.clone())),
            Some(_) => {
                self.problem(
                    ErrorCode::InvalidField,
                    "description must be a string or null",
                );
                None
            }
        }
    }

    /// `event_types`: a non-empty array of known event type codes (duplicates
    /// count once); required on create.
    fn event_types(
        &mut self,
        object: &Map<String, Value>,
        required: bool,
    ) -> Option<Vec<EventType>> {
        let items = match object.get("event_types") {
            None | Some(Value::Null) if !required => return None,
            None | Some(Value::Null) => {
                self.problem(ErrorCode::MissingField, "event_types is required");
                return None;
            }
            Some(Value::Array(items)) if items.is_empty() => {
                self.problem(
                    ErrorCode::MissingField,
                    "event_types must name at least one event type",
                );
                return None;
            }
            Some(Value::Array(items)) => items,
            Some(_) => {
                self.problem(
                    ErrorCode::InvalidField,
                    "event_types must be an array of event type codes",
                );
                return None;
            }
        };
        let mut types = Vec::new();
        let mut ok = true;
        for item in items {
            match item.as_str().map(|code| (code, EventType::parse(code))) {
                Some((_, Some(t))) => {
                    if !types.contains(&t) {
                        types.push(t);
                    }
                }
                Some((code, None)) => {
                    ok = false;
                    let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                    self.problem(
                        ErrorCode::InvalidField,
                        format!(
                            "event_types: unknown event type {}; the types are {}",
                            printable(code),
                            known.join(", ")
                        ),
                    );
                }
                None => {
                    ok = false;
                    self.problem(
                        ErrorCode::InvalidField,
                        "event_types must be an array of strings",
                    );
                }
            }
        }
        ok.then_some(types)
    }

    /// The endpoint rule (`docs/webhooks.md#endpoints`), resolving its host.
    async fn endpoint(&mut self, endpoints: &EndpointCheck, endpoint: &str) {
        if let Err(e) = endpoints.check(endpoint).await {
            self.problem(ErrorCode::InvalidField, e.message());
        }
    }

    fn finish(self) -> Result<(), ApiError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ApiError::fields(self.problems))
        }
    }
}
