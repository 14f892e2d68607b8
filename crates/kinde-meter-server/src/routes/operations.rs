//! The operator's routes, all public: liveness, readiness, the public signing
//! keys and the metrics. (`/openapi.json` is served next to the route table it
//! is generated from, in [`crate::routes`].)

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::error::ApiError;
use crate::metrics;
use crate::state::AppState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "Operations", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> Response {
    // The same bytes as `Json(json!({"status": "ok"}))`, without building and
    // serialising a map on every probe.
    super::json_text(r#"{"status":"ok"}"#)
}

/// Readiness: storage answers too.
#[utoipa::path(get, path = "/readyz", tag = "Operations", responses(
    (status = 200, description = "Ready"),
    (status = 503, description = "Storage unavailable", body = kinde_meter_wire::ErrorResponse),
))]
pub async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    state.store.ping().await?;
    Ok((StatusCode::OK, Json(json!({"status": "ready"}))))
}

/// The server's public signing keys (JWKS).
#[utoipa::path(get, path = "/.well-known/jwks", tag = "Operations", responses((status = 200, description = "JSON Web Key Set")))]
pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.jwks.as_ref().clone())
}

/// The same keys at the path most JWT libraries look for.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "Operations", responses((status = 200, description = "JSON Web Key Set")))]
pub async fn jwks_json(state: State<AppState>) -> impl IntoResponse {
    jwks(state).await
}

/// What the server has done, for Prometheus.
#[utoipa::path(get, path = "/metrics", tag = "Operations", responses(
    (status = 200, description = "Prometheus text exposition format, version 0.0.4", content_type = "text/plain", body = String),
))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    metrics::exposition(&state.metrics)
}
